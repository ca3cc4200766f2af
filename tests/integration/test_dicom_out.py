"""Results back into the PACS with real parts (issue #19): Orthanc pushes a study to the
ScanQ listener, a real worker scores it, and the dicom_out task stores a Comprehensive
SR and heat-map Secondary Captures back into Orthanc's copy of the study, found there
and parsed (values against the API's results, references, disclaimer). Orthanc is
stopped while the results are due and started again: they arrive once, not twice, and
so do resends. A PACS that stays down: retries, then failed with the reason; a resend
once it is back delivers. A CT study's results also go by STOW-RS to a DICOMweb
server named in the request."""

from __future__ import annotations

import io

import pydicom
import pytest

from pacs.results import RESEARCH_ONLY
from tests.conftest import Stack, screened_study, started_dicom_stack
from tests.dicom_factory import sample_ct_study, sample_xray_study, upload
from tests.helpers import wait_until

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
RETRIES, BACKOFF_S = 4, 1  # attempts at +1, +2, +4, +8 s: failed some 15 s after the first


@pytest.fixture(scope="module")
def out_stack(tmp_path_factory, redis_url):
    """A stack with the DICOM listener and beat, quick study settling and retries."""
    with started_dicom_stack(
        tmp_path_factory.mktemp("dicom-out"),
        redis_url,
        SCANQ_DELIVERY_RETRIES=str(RETRIES),
        SCANQ_DELIVERY_BACKOFF=str(BACKOFF_S),
        SCANQ_RESULTS_HEATMAPS="4",
    ) as s:
        yield s


def _add_peer(stack: Stack, pacs) -> None:
    added = stack.scanq("dicom", "peer", "add", pacs.aet, "--host", "127.0.0.1",
                        "--port", str(pacs.dicom_port), "--user", "tester")  # fmt: skip
    assert added.returncode == 0, added.stderr


def _study_id(stack: Stack, study_uid: str) -> int:
    return screened_study(stack, study_uid)["id"]


def _delivery(stack: Stack, study_id: int, check, what: str, timeout: float = 240) -> dict:
    def state():
        rows = stack.http.get(f"{stack.url}/api/v1/studies/{study_id}/deliveries").json()
        rows = rows["deliveries"]
        return rows[0] if len(rows) == 1 and check(rows[0]) else None

    return wait_until(state, what, stack.log("worker"), timeout)


def _results_in(pacs, study_uid: str) -> tuple[list, list]:
    """The SR and Secondary Capture datasets Orthanc holds for the study."""
    srs, scs = [], []
    for inst in pacs.instances_of_study(study_uid):
        ds = pydicom.dcmread(io.BytesIO(pacs.file(inst["ID"])))
        if ds.SOPClassUID == SR_CLASS:
            srs.append(ds)
        elif ds.SOPClassUID == SC_CLASS:
            scs.append(ds)
    return srs, scs


def _image_items(sr) -> dict[str, dict]:
    out = {}
    for container in sr.ContentSequence:
        if container.ConceptNameCodeSequence[0].CodeMeaning != "Image result":
            continue
        items = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in container.ContentSequence}
        uid = items["Source of Measurement"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        out[uid] = items
    return out


def test_results_survive_a_pacs_restart_and_arrive_once(out_stack, make_orthanc, shared_data):
    pacs = make_orthanc(scanq_port=out_stack.dicom_port)
    _add_peer(out_stack, pacs)
    study = sample_xray_study(shared_data, views=("PA", "AP", "LL"), patient_id="PID-OUT")
    pacs.store_to("scanq", upload(pacs, study))
    pacs.stop()  # down before the results are due (the study settles, then is scored)

    study_id = _study_id(out_stack, study.study_uid)
    failing = _delivery(out_stack, study_id, lambda d: d["attempts"] >= 1 and d["reason"],
                        "a failed attempt while the PACS is down")  # fmt: skip
    assert failing["status"] == "pending" and "no association" in failing["reason"]
    assert failing["destination"].startswith(f"C-STORE {pacs.aet}@")
    pacs.start()
    sent = _delivery(out_stack, study_id, lambda d: d["status"] != "pending", "the delivery")
    assert sent["status"] == "sent", sent
    assert sent["objects"] == 3  # the SR and two heat maps (the lateral view is not screened)

    srs, scs = _results_in(pacs, study.study_uid)
    assert len(srs) == 1 and len(scs) == 2
    (sr,) = srs
    assert {sr.SOPInstanceUID, *(sc.SOPInstanceUID for sc in scs)} == set(sent["sop_instance_uids"])
    assert sr.PatientID == "PID-OUT" and sr.StudyInstanceUID == study.study_uid
    assert any(i.get("TextValue") == RESEARCH_ONLY for i in sr.ContentSequence)
    # The values are the worker's, image by image.
    job = out_stack.http.get(f"{out_stack.url}/api/v1/studies/{study_id}").json()["jobs"][0]
    results = out_stack.http.get(f"{out_stack.url}/api/v1/jobs/{job['id']}/results").json()
    by_name = {r["filename"]: r for r in results["items"]}
    items = _image_items(sr)
    frontal, lateral = study.sop_instance_uids[:2], study.sop_instance_uids[2]
    assert set(items) == set(frontal)
    for uid in frontal:
        mine = items[uid]
        theirs = next(r for name, r in by_name.items() if uid in name)
        value = float(mine["COVID-19 probability"].MeasuredValueSequence[0].NumericValue)
        assert value == pytest.approx(theirs["probability"], abs=1e-6)
        assert mine["Model label"].ConceptCodeSequence[0].CodeValue == theirs["label"]
        if theirs["out_of_distribution"] is None:  # a version without OOD calibration
            assert "Out of distribution" not in mine
        else:
            flag = mine["Out of distribution"].ConceptCodeSequence[0].CodeMeaning
            assert flag == ("Yes" if theirs["out_of_distribution"] else "No")
    evidence = {
        sop.ReferencedSOPInstanceUID
        for series in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert evidence == {*frontal, lateral}  # the lateral one, listed as not screened
    for sc in scs:
        assert sc.BurnedInAnnotation == "YES" and RESEARCH_ONLY in sc.ImageComments
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID in frontal
        assert sc.pixel_array.shape[-1] == 3

    # Sent again: replaced, never duplicated.
    assert out_stack.http.post(f"{out_stack.url}/api/v1/studies/{study_id}/send").status_code == 202
    again = _delivery(out_stack, study_id,
                      lambda d: d["status"] == "sent" and d["sent_at"] != sent["sent_at"],
                      "the resend")  # fmt: skip
    assert again["sop_instance_uids"] == sent["sop_instance_uids"]
    assert len(pacs.instances_of_study(study.study_uid)) == 3 + 3

    # Down for good: retries, then failed with the reason; back: a resend delivers.
    pacs.stop()
    assert out_stack.http.post(f"{out_stack.url}/api/v1/studies/{study_id}/send").status_code == 202
    failed = _delivery(out_stack, study_id, lambda d: d["status"] == "failed", "failed", 120)
    assert failed["attempts"] == RETRIES + 1 and "no association" in failed["reason"]
    pacs.start()
    assert out_stack.http.post(f"{out_stack.url}/api/v1/studies/{study_id}/send").status_code == 202
    _delivery(out_stack, study_id, lambda d: d["status"] == "sent", "the resend after the outage")
    assert len(pacs.instances_of_study(study.study_uid)) == 3 + 3

    trail = out_stack.http.get(f"{out_stack.url}/api/v1/audit").json()["items"]
    sends = [e for e in trail if e["action"] == "dicom_send" and e["target"] == f"study:{study_id}"]
    outcomes = {e["detail"]["outcome"] for e in sends}
    assert outcomes == {"retrying", "sent", "failed"}
    assert all("PID-OUT" not in str(e["detail"]) for e in sends)  # no patient data in the trail


def test_results_go_by_stow_rs_to_a_named_dicomweb_server(out_stack, make_orthanc, shared_data):
    pacs = make_orthanc(scanq_port=out_stack.dicom_port)
    _add_peer(out_stack, pacs)
    archive = make_orthanc()
    source = out_stack.scanq("dicom", "source", "add", "archive", "--url", archive.dicomweb_url)
    assert source.returncode == 0, source.stderr
    study = sample_ct_study(shared_data, n=2, label="non_covid")  # a CT series this time
    pacs.store_to("scanq", upload(pacs, study))
    study_id = _study_id(out_stack, study.study_uid)
    first = _delivery(out_stack, study_id, lambda d: d["status"] == "sent", "C-STORE")
    assert first["objects"] == 3 and first["model_version"].startswith("ct-v")
    srs, scs = _results_in(pacs, study.study_uid)
    assert len(srs) == 1 and len(scs) == 2
    assert set(_image_items(srs[0])) == set(study.sop_instance_uids)

    answer = out_stack.http.post(f"{out_stack.url}/api/v1/studies/{study_id}/send",
                                 json={"dicomweb": "archive"})  # fmt: skip
    assert answer.status_code == 202
    by_stow = lambda d: d["status"] == "sent" and d["protocol"] == "stow"  # noqa: E731
    sent = _delivery(out_stack, study_id, by_stow, "the STOW-RS delivery")
    from dicomweb_client.api import DICOMwebClient

    found = DICOMwebClient(archive.dicomweb_url).search_for_instances(
        study_instance_uid=study.study_uid
    )
    assert {f["00080018"]["Value"][0] for f in found} == set(sent["sop_instance_uids"])
    assert sent["sop_instance_uids"] == first["sop_instance_uids"]  # the same objects
    refused = out_stack.http.post(f"{out_stack.url}/api/v1/studies/{study_id}/send",
                                  json={"peer": "NOSUCHPEER"})  # fmt: skip
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "no_destination"
