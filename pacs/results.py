"""What ScanQ puts back into a PACS for one screened study, as plain values: the study's
header, each screened image's result, the images it did not screen and why, and the
study verdict. The DICOM builders (pacs.sr, pacs.secondary_capture) are pure functions
of these, so they are tested without a database, and pacs.dispatch fills them from SQL.

The UIDs of everything built here are derived, not random (`result_uid`): the same
study, job, model version and image always give the same SOP Instance UID, so sending
a result again replaces it in the PACS and never adds a second copy."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

# Burned into every Secondary Capture and written into every result object's header.
RESEARCH_ONLY = "Research use only, not for diagnostic use"
MANUFACTURER = "ScanQ"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902

# A private namespace for UUID-derived UIDs (PS3.5 B.2: "2.25." + the UUID as an integer).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/scanq/scanq/dicom-results")


def result_uid(study_uid: str, job_id: str, model_version: str, *parts: str) -> str:
    """A UID that depends only on its inputs: the study, the job that scored it, the
    model version and what the object is (e.g. "sr", "sc", an image's SOP Instance UID)."""
    key = "\x1f".join((study_uid, job_id, model_version, *parts))
    return f"2.25.{uuid.uuid5(_NAMESPACE, key).int}"


@dataclass(frozen=True)
class StudyHeader:
    """The patient and study module values copied from the screened study's instances,
    so the results file under the same patient and study in the PACS."""

    study_uid: str
    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    accession: str = ""
    study_id: str = ""
    study_date: str = ""
    study_time: str = ""
    referring_physician: str = ""
    specific_character_set: str | None = None


@dataclass(frozen=True)
class ImageResult:
    """One screened image (a frame, for a multi-frame instance) and what the model said."""

    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    frame: int | None = None  # 1-based frame number in a multi-frame instance
    probability: float | None = None
    label: str | None = None
    threshold: float | None = None
    out_of_distribution: bool | None = None
    ood_reason: str | None = None
    error: str | None = None  # why it could not be scored, if it was not
    patient_orientation: tuple[str, str] | None = None

    @property
    def key(self) -> str:
        """Names the image among the study's: its SOP Instance UID and frame."""
        return self.sop_instance_uid + (f"/{self.frame}" if self.frame else "")


@dataclass(frozen=True)
class NotScreened:
    """An instance of the study that was received but not screened, with the reason
    (a lateral view, an SR, another modality)."""

    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    reason: str


@dataclass(frozen=True)
class StudyVerdict:
    """The study-level result: a score over its images, the label at the threshold,
    whether it was flagged (out of distribution, or not enough to judge), and a short
    sentence saying how the score was made."""

    score: float | None
    label: str | None
    threshold: float | None = None
    flagged: bool = False
    basis: str = ""


@dataclass(frozen=True)
class StudyResults:
    """Everything one delivery sends back for a study: made by job `job_id` with
    `model_version` (a name such as "xray-v3")."""

    header: StudyHeader
    job_id: str
    model_version: str
    verdict: StudyVerdict
    images: tuple[ImageResult, ...]
    not_screened: tuple[NotScreened, ...] = ()
    modality: str = ""  # "ct" | "xray", the model's modality

    def uid(self, *parts: str) -> str:
        return result_uid(self.header.study_uid, self.job_id, self.model_version, *parts)

    @property
    def sr_series_uid(self) -> str:
        return self.uid("sr-series")

    @property
    def sr_instance_uid(self) -> str:
        return self.uid("sr")

    @property
    def sc_series_uid(self) -> str:
        return self.uid("sc-series")

    def sc_instance_uid(self, image: ImageResult) -> str:
        return self.uid("sc", image.key)
