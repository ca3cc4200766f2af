"""The screening result of one study as a DICOM Comprehensive Structured Report
(highdicom), filed in the same study in a series of its own, which any PACS viewer
lists beside the images.

The document's tree: the disclaimer, the algorithm (name, model version), the study
verdict (score, label, threshold, flagged, how the score was made), then one container
per screened image with its reference, probability, label, threshold and
out-of-distribution flag (or why it could not be scored), and one per received image
that was not screened, with the reason. Every screened image is listed in the Current
Requested Procedure Evidence Sequence. Concepts with no standard code use the private
coding scheme 99SCANQ (PS3.16 8.2: "99" designators are local)."""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from pacs.results import (
    MANUFACTURER,
    RESEARCH_ONLY,
    SR_SERIES_NUMBER,
    ImageResult,
    NotScreened,
    StudyHeader,
    StudyResults,
)

SCHEME = "99SCANQ"
TITLE = Code("18748-4", "LN", "Diagnostic imaging report")
COMMENT = Code("121106", "DCM", "Comment")
ALGORITHM_NAME = Code("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = Code("111003", "DCM", "Algorithm Version")
SOURCE_IMAGE = Code("121112", "DCM", "Source of Measurement")
YES = Code("373066001", "SCT", "Yes")
NO = Code("373067005", "SCT", "No")
NO_UNITS = Code("1", "UCUM", "no units")

STUDY_VERDICT = Code("study-verdict", SCHEME, "Study verdict")
STUDY_SCORE = Code("study-score", SCHEME, "Study score")
VERDICT_BASIS = Code("verdict-basis", SCHEME, "How the study score was made")
FLAGGED = Code("flagged", SCHEME, "Flagged for review")
IMAGE_RESULT = Code("image-result", SCHEME, "Image result")
NOT_SCREENED = Code("not-screened", SCHEME, "Image not screened")
NOT_SCREENED_REASON = Code("not-screened-reason", SCHEME, "Reason not screened")
PROBABILITY = Code("covid-probability", SCHEME, "COVID-19 probability")
THRESHOLD = Code("threshold", SCHEME, "Decision threshold")
LABEL = Code("label", SCHEME, "Model label")
OUT_OF_DISTRIBUTION = Code("ood", SCHEME, "Out of distribution")
OOD_REASON = Code("ood-reason", SCHEME, "Out-of-distribution reason")
SCORING_ERROR = Code("scoring-error", SCHEME, "Scoring error")

_CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS


def label_code(label: str) -> Code:
    """The model's label (e.g. "covid", "non_covid") as a code of the private scheme."""
    return Code(label, SCHEME, label)


def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=_CONTAINS)


def _num(name: Code, value: float) -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(
        name=name, value=float(value), unit=NO_UNITS, relationship_type=_CONTAINS
    )


def _code(name: Code, value: Code) -> hd.sr.CodeContentItem:
    return hd.sr.CodeContentItem(name=name, value=value, relationship_type=_CONTAINS)


def _yes_no(name: Code, value: bool) -> hd.sr.CodeContentItem:
    return _code(name, YES if value else NO)


def _container(name: Code, items: list) -> hd.sr.ContainerContentItem:
    item = hd.sr.ContainerContentItem(name=name, relationship_type=_CONTAINS)
    item.ContentSequence = hd.sr.ContentSequence(items)
    return item


def _image_ref(series_sop: ImageResult | NotScreened, frame: int | None = None):
    return hd.sr.ImageContentItem(
        name=SOURCE_IMAGE,
        referenced_sop_class_uid=series_sop.sop_class_uid,
        referenced_sop_instance_uid=series_sop.sop_instance_uid,
        referenced_frame_numbers=frame,
        relationship_type=_CONTAINS,
    )


def _image_result(image: ImageResult) -> hd.sr.ContainerContentItem:
    items: list = [_image_ref(image, image.frame)]
    if image.error is not None or image.probability is None:
        items.append(_text(SCORING_ERROR, image.error or "not scored"))
        return _container(IMAGE_RESULT, items)
    items.append(_num(PROBABILITY, image.probability))
    if image.label:
        items.append(_code(LABEL, label_code(image.label)))
    if image.threshold is not None:
        items.append(_num(THRESHOLD, image.threshold))
    if image.out_of_distribution is not None:
        items.append(_yes_no(OUT_OF_DISTRIBUTION, image.out_of_distribution))
    if image.ood_reason:
        items.append(_text(OOD_REASON, image.ood_reason))
    return _container(IMAGE_RESULT, items)


def _not_screened(item: NotScreened) -> hd.sr.ContainerContentItem:
    return _container(NOT_SCREENED, [_image_ref(item), _text(NOT_SCREENED_REASON, item.reason)])


def _verdict(results: StudyResults) -> hd.sr.ContainerContentItem:
    verdict = results.verdict
    items: list = []
    if verdict.score is not None:
        items.append(_num(STUDY_SCORE, verdict.score))
    if verdict.label:
        items.append(_code(LABEL, label_code(verdict.label)))
    if verdict.threshold is not None:
        items.append(_num(THRESHOLD, verdict.threshold))
    items.append(_yes_no(FLAGGED, verdict.flagged))
    if verdict.basis:
        items.append(_text(VERDICT_BASIS, verdict.basis))
    return _container(STUDY_VERDICT, items)


def evidence_of(header: StudyHeader, refs: list[ImageResult | NotScreened]) -> list[Dataset]:
    """The referenced instances as the minimal datasets highdicom takes for evidence:
    their UIDs and the patient and study values the report copies."""
    out, seen = [], set()
    for ref in refs:
        if ref.sop_instance_uid in seen:
            continue
        seen.add(ref.sop_instance_uid)
        ds = Dataset()
        if header.specific_character_set:
            ds.SpecificCharacterSet = header.specific_character_set
        ds.StudyInstanceUID = header.study_uid
        ds.SeriesInstanceUID = ref.series_uid
        ds.SOPClassUID = ref.sop_class_uid
        ds.SOPInstanceUID = ref.sop_instance_uid
        ds.PatientID = header.patient_id
        ds.PatientName = header.patient_name
        ds.PatientBirthDate = header.patient_birth_date
        ds.PatientSex = header.patient_sex
        ds.AccessionNumber = header.accession
        ds.StudyID = header.study_id
        ds.StudyDate = header.study_date
        ds.StudyTime = header.study_time
        ds.ReferringPhysicianName = header.referring_physician
        out.append(ds)
    return out


def build_sr(results: StudyResults) -> hd.sr.ComprehensiveSR:
    """The study's Comprehensive SR; its SOP Instance UID is results.sr_instance_uid."""
    if not results.images and not results.not_screened:
        raise ValueError("a result report needs at least one image of the study")
    content: list = [
        *hd.sr.LanguageOfContentItemAndDescendants(Code("en-US", "RFC5646", "English (US)")),
        _text(COMMENT, RESEARCH_ONLY),
        _text(ALGORITHM_NAME, f"{MANUFACTURER} COVID-19 screening ({results.modality or 'model'})"),
        _text(ALGORITHM_VERSION, results.model_version),
        _verdict(results),
        *(_image_result(image) for image in results.images),
        *(_not_screened(item) for item in results.not_screened),
    ]
    root = hd.sr.ContainerContentItem(name=TITLE)
    root.ContentSequence = hd.sr.ContentSequence(content)
    evidence = evidence_of(results.header, [*results.images, *results.not_screened])
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=root,
        series_instance_uid=results.sr_series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=results.sr_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # a research screening, never the definitive report
        is_verified=False,
        series_description=f"ScanQ screening ({RESEARCH_ONLY})"[:64],
    )
    return sr
