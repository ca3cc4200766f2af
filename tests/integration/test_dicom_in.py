"""DICOM in with real parts (issue #19): a pynetdicom SCU against the `scanq
dicom-listener` process (unknown AE rejected at association, C-ECHO, C-STORE), STOW-RS
with dicomweb-client against gunicorn, Orthanc pushing to ScanQ (POST
/modalities/<name>/store) and a pull through Orthanc's QIDO-RS and WADO-RS; each study
settles (beat), becomes a job scored by the real worker, and gets its verdict. Studies
are written from the development images at test time (tests/dicom_factory.py)."""

from __future__ import annotations

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from tests.conftest import Stack, free_port, screened_study, started_dicom_stack
from tests.dicom_factory import CT_IMAGE_STORAGE, DX_IMAGE_STORAGE, upload
from tests.helpers import wait_until

SCU_AE = "TESTSCU"


@pytest.fixture(scope="module")
def dicom_stack(tmp_path_factory, redis_url):
    """A stack with the DICOM listener and beat running, and SCU_AE as a known peer."""
    with started_dicom_stack(tmp_path_factory.mktemp("dicom-stack"), redis_url) as s:
        added = s.scanq("dicom", "peer", "add", SCU_AE, "--host", "127.0.0.1",
                        "--port", str(free_port()), "--user", "tester")  # fmt: skip
        assert added.returncode == 0, added.stderr
        wait_until(
            lambda: _echo(s.dicom_port, SCU_AE) is not None,
            "the listener to answer",
            s.log("listener"),
        )
        yield s


def _associate(port: int, calling: str, contexts=()):
    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    for sop in contexts:
        ae.add_requested_context(sop, ExplicitVRLittleEndian)
    return ae.associate("127.0.0.1", port, ae_title="SCANQ")


def _echo(port: int, calling: str):
    try:
        assoc = _associate(port, calling)
    except OSError:
        return None
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return status


def _scores(stack: Stack, study: dict) -> list[float]:
    scores = []
    for job in study["jobs"]:
        assert job["status"] == "succeeded", job
        items = stack.http.get(f"{stack.url}/api/v1/jobs/{job['id']}/results").json()["items"]
        scores += [r["probability"] for r in items if r["probability"] is not None]
    return scores


def test_an_unknown_ae_title_is_rejected_at_association(dicom_stack):
    assoc = _associate(dicom_stack.dicom_port, "STRANGER")
    assert assoc.is_rejected and not assoc.is_established
    trail = dicom_stack.http.get(f"{dicom_stack.url}/api/v1/audit").json()["items"]
    assert any(e["action"] == "dicom_reject" and e["target"] == "ae:STRANGER" for e in trail)


def test_c_store_of_a_ct_study_settles_into_a_scored_job_with_a_verdict(dicom_stack, shared_data):
    from tests.dicom_factory import sample_ct_study, sample_xray_study

    assert _echo(dicom_stack.dicom_port, SCU_AE).Status == 0x0000
    ct = sample_ct_study(shared_data, n=3, patient_id="PID-CSTORE")
    lateral = sample_xray_study(shared_data, views=("LL",))
    lateral.instances[0].StudyInstanceUID = ct.study_uid  # a view that is not screened
    assoc = _associate(dicom_stack.dicom_port, SCU_AE, [CT_IMAGE_STORAGE, DX_IMAGE_STORAGE])
    assert assoc.is_established
    statuses = [assoc.send_c_store(ds).Status for ds in [*ct.instances, *lateral.instances]]
    assoc.release()
    assert statuses == [0x0000] * 4  # the lateral view is accepted too: the push never fails
    study = screened_study(dicom_stack, ct.study_uid)
    assert study["source"] == f"dicom:{SCU_AE}" and study["peer"] == SCU_AE
    assert study["results_to"] == SCU_AE
    assert study["instances"] == 4 and study["not_screened"] == 1
    assert study["patient"]["patient_id"] == "PID-CSTORE"
    (job,) = study["jobs"]
    assert job["modality"] == "ct" and job["total"] == 3
    scores = _scores(dicom_stack, study)
    assert len(scores) == 3 and study["score"] == pytest.approx(max(scores))
    reasons = [r["reason"] for r in study["instances_by_route"] if r["route"] is None]
    assert reasons and "LL view" in reasons[0]


def test_stow_rs_from_dicomweb_client_is_screened_and_listed_by_score(dicom_stack, shared_data):
    from dicomweb_client.api import DICOMwebClient

    from tests.dicom_factory import sample_xray_study

    xray = sample_xray_study(shared_data, views=("PA", "AP"), patient_id="PID-STOW")
    client = DICOMwebClient(
        url=f"{dicom_stack.url}/dicomweb", headers={"Authorization": f"Bearer {dicom_stack.token}"}
    )
    client.set_chunk_size(64 * 1024)  # chunked transfer encoding, as a large study is sent
    answer = client.store_instances(xray.instances)
    stored = [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence]
    assert stored == xray.sop_instance_uids and "FailedSOPSequence" not in answer
    study = screened_study(dicom_stack, xray.study_uid)
    assert study["source"] == "stow" and study["jobs"][0]["modality"] == "xray"
    assert len(_scores(dicom_stack, study)) == 2
    listed = dicom_stack.http.get(f"{dicom_stack.url}/api/v1/studies?sort=score").json()["items"]
    scores = [s["score"] for s in listed if s["score"] is not None]
    assert scores == sorted(scores, reverse=True)
    trail = dicom_stack.http.get(f"{dicom_stack.url}/api/v1/audit").json()["items"]
    assert any(
        e["action"] == "dicom_receive" and e["detail"].get("via") == "stow-rs" for e in trail
    )


def test_orthanc_pushes_to_scanq_and_scanq_pulls_from_orthanc(
    dicom_stack, shared_data, make_orthanc
):
    from tests.dicom_factory import sample_ct_study, sample_xray_study

    pacs = make_orthanc(scanq_port=dicom_stack.dicom_port)
    added = dicom_stack.scanq(
        "dicom",
        "peer",
        "add",
        pacs.aet,
        "--host",
        "127.0.0.1",
        "--port",
        str(pacs.dicom_port),
        "--user",
        "tester",
    )
    assert added.returncode == 0, added.stderr
    pushed = sample_xray_study(shared_data, views=("PA",), label="non_covid")
    pacs.store_to("scanq", upload(pacs, pushed))
    study = screened_study(dicom_stack, pushed.study_uid)
    assert study["source"] == f"dicom:{pacs.aet}" and study["results_to"] == pacs.aet

    source = dicom_stack.scanq("dicom", "source", "add", "orthanc", "--url", pacs.dicomweb_url)
    assert source.returncode == 0, source.stderr
    kept = sample_ct_study(shared_data, n=2, label="non_covid", patient_id="PID-PULL")
    upload(pacs, kept)
    pulled = dicom_stack.scanq(
        "pull",
        "--source",
        "orthanc",
        "--modality",
        "CT",
        "--since",
        "2000-01-01",
        "--results-to",
        pacs.aet,
        "--wait",
    )
    assert pulled.returncode == 0, pulled.stderr + dicom_stack.log("worker")
    assert "2 instances in 1 studies, 0 failed" in pulled.stderr
    study = screened_study(dicom_stack, kept.study_uid)
    assert study["source"] == "pull:orthanc" and study["results_to"] == pacs.aet
    assert study["instances"] == 2 and len(_scores(dicom_stack, study)) == 2


def test_no_log_prints_the_patient_data_of_the_headers(dicom_stack):
    """Patient ids, names and accession numbers of every study above stay out of the
    logs of the listener, the web and the worker (issue #19 point 8)."""
    for name in ("listener", "web", "worker", "beat"):
        text = (dicom_stack.logs / f"{name}.log").read_text(errors="replace")
        for secret in (
            "PID-CSTORE",
            "PID-STOW",
            "PID-PULL",
            "Test^Ct",
            "Test^Dx",
            "ACC-CT-1",
            "ACC-DX-1",
        ):
            assert secret not in text, f"{secret} in the {name} log"
