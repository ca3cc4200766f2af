"""The PACS of the DICOM tests itself: a real Orthanc takes the studies that
tests/dicom_factory.py writes from the development images, answers QIDO-RS through its
DICOMweb plugin, and keeps its storage across a stop and a start."""

from __future__ import annotations

import io

import pydicom
from dicomweb_client.api import DICOMwebClient

from tests.dicom_factory import (
    CT_IMAGE_STORAGE,
    DX_IMAGE_STORAGE,
    sample_ct_study,
    sample_xray_study,
    upload,
)


def test_orthanc_stores_written_studies_and_keeps_them_over_a_restart(make_orthanc, shared_data):
    server = make_orthanc()
    ct = sample_ct_study(shared_data, n=3)
    dx = sample_xray_study(shared_data, views=("PA", "LL"))
    upload(server, ct)
    upload(server, dx)

    stored = server.instances_of_study(ct.study_uid)
    assert sorted(i["MainDicomTags"]["SOPInstanceUID"] for i in stored) == sorted(
        ct.sop_instance_uids
    )
    first = pydicom.dcmread(io.BytesIO(server.file(stored[0]["ID"])))
    assert first.SOPClassUID == CT_IMAGE_STORAGE and first.RescaleIntercept == -1024
    assert len({i["ParentSeries"] for i in stored}) == 1  # one series of slices

    client = DICOMwebClient(server.dicomweb_url)
    found = client.search_for_instances(study_instance_uid=dx.study_uid)
    assert {f["00080016"]["Value"][0] for f in found} == {DX_IMAGE_STORAGE}
    assert len(found) == 2

    server.stop()
    assert not server.running
    server.start()
    assert server.instance_count() == 5
    series = client.search_for_series(study_instance_uid=dx.study_uid)
    assert len(series) == 2  # one series per X-ray view
