"""Result objects into a real Orthanc: the SR and Secondary Captures built for a study
that Orthanc holds (written from the development images) are stored by C-STORE and by
STOW-RS, found back in the same study through Orthanc's REST API and QIDO-RS, parsed,
and stored a second time without a second copy. A destination that is down is a
DeliveryError with the reason, not a hang."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from pacs.results import RESEARCH_ONLY, ImageResult, StudyHeader, StudyResults, StudyVerdict
from pacs.secondary_capture import build_secondary_capture
from pacs.sr import build_sr
from pacs.transport import DeliveryError, DimseDestination, StowDestination, send
from tests.dicom_factory import sample_xray_study, upload

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def _objects(study, job_id: str):
    first = study.instances[0]
    header = StudyHeader(
        study_uid=study.study_uid, patient_id=study.patient_id, patient_name=study.patient_name,
        accession=study.accession, study_date=study.study_date, study_time="080000",
    )  # fmt: skip
    images = tuple(
        ImageResult(
            ds.SeriesInstanceUID,
            ds.SOPClassUID,
            ds.SOPInstanceUID,
            probability=p,
            label="covid" if p >= 0.5 else "non_covid",
            threshold=0.5,
            out_of_distribution=False,
        )  # fmt: skip
        for ds, p in zip(study.instances, (0.8, 0.3), strict=True)
    )
    results = StudyResults(header, job_id, "xray-v1", StudyVerdict(0.8, "covid", 0.5),
                           images, modality="xray")  # fmt: skip
    from models.gradcam import overlay

    grey = first.pixel_array.astype(np.float64) / 16
    yy, xx = np.mgrid[0 : grey.shape[0], 0 : grey.shape[1]]
    cam = np.exp(-(((yy - grey.shape[0] / 2) ** 2 + (xx - grey.shape[1] / 3) ** 2) / 800.0))
    picture = np.asarray(overlay(grey.astype(np.uint8), cam))
    scs = [build_secondary_capture(results, img, picture, i)
           for i, img in enumerate(images, start=1)]  # fmt: skip
    return results, [build_sr(results), *scs]


def _dataset(orthanc, orthanc_id: str) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(orthanc.file(orthanc_id)))


def test_results_by_c_store_land_in_the_study_once(orthanc, shared_data):
    study = sample_xray_study(shared_data, views=("PA", "AP"))
    upload(orthanc, study)
    results, objects = _objects(study, "job-dimse")
    dest = DimseDestination(orthanc.aet, "127.0.0.1", orthanc.dicom_port)
    assert send(objects, dest) == 3
    assert send(objects, dest) == 3  # a resend: same UIDs

    stored = orthanc.instances_of_study(study.study_uid)
    assert len(stored) == 2 + 3  # the two images, one SR, two SCs: no copy
    by_uid = {i["MainDicomTags"]["SOPInstanceUID"]: i["ID"] for i in stored}
    sr = _dataset(orthanc, by_uid[results.sr_instance_uid])
    assert sr.SOPClassUID == SR_CLASS and sr.StudyInstanceUID == study.study_uid
    evidence = {
        sop.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for sop in s.ReferencedSOPSequence
    }
    assert evidence == set(study.sop_instance_uids)
    assert any(i.get("TextValue") == RESEARCH_ONLY for i in sr.ContentSequence)
    sc = _dataset(orthanc, by_uid[results.sc_instance_uid(results.images[0])])
    assert sc.SOPClassUID == SC_CLASS and RESEARCH_ONLY in sc.ImageComments
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == study.sop_instance_uids[0]
    # The SR and the heat maps are series of their own in the study.
    series = {i["ParentSeries"] for i in stored}
    assert len(series) == 2 + 2


def test_results_by_stow_rs_are_found_by_qido(orthanc, shared_data):
    study = sample_xray_study(shared_data, views=("PA", "AP"))
    upload(orthanc, study)
    results, objects = _objects(study, "job-stow")
    dest = StowDestination(orthanc.dicomweb_url)
    assert send(objects, dest) == 3
    assert send(objects, dest) == 3

    client = DICOMwebClient(orthanc.dicomweb_url)
    srs = client.search_for_instances(study_instance_uid=study.study_uid,
                                      search_filters={"Modality": "SR"})  # fmt: skip
    assert [s["00080018"]["Value"][0] for s in srs] == [results.sr_instance_uid]
    got = client.retrieve_instance(study.study_uid, results.sr_series_uid, results.sr_instance_uid)
    assert got.SOPClassUID == SR_CLASS
    scs = client.search_for_instances(study_instance_uid=study.study_uid,
                                      series_instance_uid=results.sc_series_uid)  # fmt: skip
    assert len(scs) == 2


def test_a_destination_that_is_down_is_a_delivery_error(make_orthanc, shared_data):
    server = make_orthanc()
    study = sample_xray_study(shared_data, views=("PA", "AP"))
    _results, objects = _objects(study, "job-down")
    server.stop()
    with pytest.raises(DeliveryError, match="no association"):
        send(objects, DimseDestination(server.aet, "127.0.0.1", server.dicom_port))
    with pytest.raises(DeliveryError, match="unreachable"):
        send(objects, StowDestination(server.dicomweb_url))
