"""Results back as DICOM, built from plain values (pacs.results): a Comprehensive SR
that carries every image's probability, label, threshold and out-of-distribution flag,
the study verdict, the model version and the disclaimer, with the screened images as
evidence; and heat-map Secondary Captures with the disclaimer burned into the pixels.
Each is written as a Part-10 file and read back with pydicom. UIDs are derived, so a
rebuild gives the same objects and another job or model version gives new ones."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from pacs.results import (
    RESEARCH_ONLY,
    ImageResult,
    NotScreened,
    StudyHeader,
    StudyResults,
    StudyVerdict,
    result_uid,
)
from pacs.secondary_capture import build_secondary_capture, burn_in
from pacs.sr import build_sr

CT = "1.2.840.10008.5.1.4.1.1.2"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def _results(job_id: str = "job-1", version: str = "ct-v7") -> StudyResults:
    series = generate_uid()
    header = StudyHeader(
        study_uid="1.2.3.4.5", patient_id="PID-9", patient_name="Doe^Jane",
        patient_sex="F", accession="ACC-1", study_id="7", study_date="20261130",
        study_time="101500",
    )  # fmt: skip
    images = (
        ImageResult(series, CT, "1.2.3.4.5.1", probability=0.91, label="covid",
                    threshold=0.42, out_of_distribution=False),
        ImageResult(series, CT, "1.2.3.4.5.2", probability=0.12, label="non_covid",
                    threshold=0.42, out_of_distribution=True, ood_reason="far from training"),
        ImageResult(series, CT, "1.2.3.4.5.3", error="pixel data cannot be decoded"),
    )  # fmt: skip
    lateral = NotScreened(generate_uid(), DX, "1.2.3.4.5.9", "lateral view (LL)")
    verdict = StudyVerdict(0.77, "covid", 0.42, flagged=True, basis="mean of the top 3 slices")
    return StudyResults(header, job_id, version, verdict, images, (lateral,), modality="ct")


def _roundtrip(ds) -> pydicom.Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def _items(container) -> dict[str, list]:
    out: dict[str, list] = {}
    for item in container.ContentSequence:
        out.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item)
    return out


def test_sr_carries_every_result_the_verdict_and_the_disclaimer():
    results = _results()
    ds = _roundtrip(build_sr(results))
    assert ds.SOPClassUID == SR_CLASS and ds.Modality == "SR"
    assert ds.StudyInstanceUID == "1.2.3.4.5"  # same study ...
    assert ds.SeriesInstanceUID == results.sr_series_uid  # ... a series of its own
    assert ds.SeriesInstanceUID not in {i.series_uid for i in results.images}
    assert (ds.PatientID, str(ds.PatientName), ds.AccessionNumber) == ("PID-9", "Doe^Jane", "ACC-1")
    assert ds.VerificationFlag == "UNVERIFIED" and ds.CompletionFlag == "COMPLETE"
    assert RESEARCH_ONLY in ds.SeriesDescription

    top = _items(ds)
    assert top["Comment"][0].TextValue == RESEARCH_ONLY
    assert top["Algorithm Version"][0].TextValue == "ct-v7"
    verdict = _items(top["Study verdict"][0])
    assert verdict["Study score"][0].MeasuredValueSequence[0].NumericValue == pytest.approx(0.77)
    assert verdict["Model label"][0].ConceptCodeSequence[0].CodeValue == "covid"
    assert verdict["Flagged for review"][0].ConceptCodeSequence[0].CodeMeaning == "Yes"
    assert verdict["How the study score was made"][0].TextValue == "mean of the top 3 slices"

    found = {}
    for container in top["Image result"]:
        items = _items(container)
        uid = items["Source of Measurement"][0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        found[uid] = items
    assert set(found) == {"1.2.3.4.5.1", "1.2.3.4.5.2", "1.2.3.4.5.3"}
    first, second, broken = found["1.2.3.4.5.1"], found["1.2.3.4.5.2"], found["1.2.3.4.5.3"]
    num = lambda items, k: float(items[k][0].MeasuredValueSequence[0].NumericValue)  # noqa: E731
    assert num(first, "COVID-19 probability") == pytest.approx(0.91)
    assert num(first, "Decision threshold") == pytest.approx(0.42)
    assert first["Model label"][0].ConceptCodeSequence[0].CodeValue == "covid"
    assert first["Out of distribution"][0].ConceptCodeSequence[0].CodeMeaning == "No"
    assert second["Out of distribution"][0].ConceptCodeSequence[0].CodeMeaning == "Yes"
    assert second["Out-of-distribution reason"][0].TextValue == "far from training"
    assert broken["Scoring error"][0].TextValue == "pixel data cannot be decoded"
    assert "COVID-19 probability" not in broken

    (lateral,) = top["Image not screened"]
    assert _items(lateral)["Reason not screened"][0].TextValue == "lateral view (LL)"

    # Evidence: every referenced instance of this study, grouped by series.
    (evidence,) = ds.CurrentRequestedProcedureEvidenceSequence
    assert evidence.StudyInstanceUID == "1.2.3.4.5"
    referenced = {
        sop.ReferencedSOPInstanceUID: sop.ReferencedSOPClassUID
        for series in evidence.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert referenced == {"1.2.3.4.5.1": CT, "1.2.3.4.5.2": CT, "1.2.3.4.5.3": CT,
                          "1.2.3.4.5.9": DX}  # fmt: skip
    # highdicom reads its own output back as a Comprehensive SR.
    assert hd.sr.ComprehensiveSR.from_dataset(ds).SOPInstanceUID == results.sr_instance_uid


def test_uids_are_derived_so_a_resend_replaces_and_a_new_job_adds():
    a, again = build_sr(_results()), build_sr(_results())
    assert (
        a.SOPInstanceUID == again.SOPInstanceUID and a.SeriesInstanceUID == again.SeriesInstanceUID
    )
    other_job, other_model = build_sr(_results(job_id="job-2")), build_sr(_results(version="ct-v8"))
    assert len({a.SOPInstanceUID, other_job.SOPInstanceUID, other_model.SOPInstanceUID}) == 3
    assert pydicom.uid.UID(a.SOPInstanceUID).is_valid
    assert result_uid("1.2", "j", "v", "sc", "x") == result_uid("1.2", "j", "v", "sc", "x")
    assert result_uid("1.2", "j", "v", "sc", "x") != result_uid("1.2", "j", "v", "sc", "y")
    r = _results()
    assert len({r.sc_instance_uid(i) for i in r.images}) == 3


def _overlay(h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(40, 200, (h, w, 3), dtype=np.uint8)


def test_secondary_capture_burns_the_disclaimer_in_and_says_it_in_the_header():
    results = _results()
    image = results.images[1]
    ds = _roundtrip(build_secondary_capture(results, image, _overlay()))
    assert ds.SOPClassUID == SC_CLASS and ds.StudyInstanceUID == "1.2.3.4.5"
    assert ds.SOPInstanceUID == results.sc_instance_uid(image)
    assert ds.SeriesInstanceUID == results.sc_series_uid != results.sr_series_uid
    assert ds.PhotometricInterpretation == "RGB" and ds.BurnedInAnnotation == "YES"
    assert RESEARCH_ONLY in ds.ImageComments and RESEARCH_ONLY in ds.DerivationDescription
    assert "p=0.120" in ds.ImageComments and "OUT OF DISTRIBUTION" in ds.ImageComments
    (source,) = ds.SourceImageSequence
    assert source.ReferencedSOPInstanceUID == image.sop_instance_uid
    assert ds.PatientID == "PID-9"

    pixels = ds.pixel_array
    assert pixels.shape[1] == 512  # enlarged from 128 px so the text stays legible
    picture = 96 * 4
    top_band = pixels.shape[0] - picture
    assert top_band > 20
    # The text is in the pixels: the bands hold white strokes on black, and another
    # text gives other pixels.
    upper = pixels[: top_band // 2]
    assert (upper == 255).all(axis=-1).sum() > 200
    other = burn_in(_overlay(), "something else", "x")
    assert not np.array_equal(
        other[: top_band // 2], burn_in(_overlay(), RESEARCH_ONLY, "x")[: top_band // 2]
    )


def test_secondary_capture_refuses_a_picture_that_is_not_rgb():
    with pytest.raises(ValueError, match="RGB uint8"):
        build_secondary_capture(_results(), _results().images[0], np.zeros((8, 8), np.uint8))


def test_a_report_needs_an_image():
    r = _results()
    empty = StudyResults(r.header, r.job_id, r.model_version, r.verdict, ())
    with pytest.raises(ValueError, match="at least one image"):
        build_sr(empty)
