"""DICOM studies written at test time from the development images (../shared/data), as
a scanner or an X-ray system would send them: a CT series (CT Image Storage, stored
values with a Hounsfield rescale, several slices of one patient in one series) and
X-ray studies as DX (DX Image Storage, ViewPosition PA/AP, and a lateral view that is
not to be screened). Nothing written here is ever committed; the files live in memory
or in the test's temporary folder."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # For Presentation
CT_SIDE = 256
# The lung window that the development CT slices were rendered with: grey g stands for
# g / 255 * 1500 - 1350 HU, so reading the DICOM back through the lung window gives g.
LUNG_WINDOW = (-600.0, 1500.0)
CT_INTERCEPT = -1024.0
XRAY_BITS = 12


@dataclass
class Study:
    """One study's header values and its instances (pydicom datasets)."""

    study_uid: str
    patient_id: str
    patient_name: str
    accession: str
    study_date: str
    instances: list[Dataset] = field(default_factory=list)

    def files(self) -> list[bytes]:
        return [to_bytes(ds) for ds in self.instances]

    @property
    def sop_instance_uids(self) -> list[str]:
        return [ds.SOPInstanceUID for ds in self.instances]

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for ds in self.instances:
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            path.write_bytes(to_bytes(ds))
            paths.append(path)
        return paths


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _grey(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("L")
        if size:
            im = im.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def _new_study(patient_id: str, patient_name: str, accession: str, study_date: str) -> Study:
    return Study(generate_uid(), patient_id, patient_name, accession, study_date)


def _base(study: Study, sop_class: str, modality: str, series_uid: str, series_number: int,
          instance_number: int, pixels: np.ndarray, bits: int) -> Dataset:  # fmt: skip
    """The patient, study, series, equipment and image pixel modules shared by CT and DX."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID = study.patient_name, study.patient_id
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.StudyInstanceUID, ds.StudyID = study.study_uid, "1"
    ds.AccessionNumber, ds.StudyDate, ds.StudyTime = study.accession, study.study_date, "080000"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Chest"
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = modality, series_uid, series_number
    ds.BodyPartExamined = "CHEST"
    ds.Manufacturer = "ScanQ test factory"
    ds.InstanceNumber = instance_number
    ds.ContentDate, ds.ContentTime = study.study_date, "080000"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def _hounsfield(path: Path) -> np.ndarray:
    """A development slice's greys mapped back to Hounsfield units through the lung window."""
    centre, width = LUNG_WINDOW
    grey = _grey(path, (CT_SIDE, CT_SIDE)).astype(np.float64)
    return np.round(grey / 255.0 * width + centre - width / 2)


def _screened(path: Path) -> bool:
    """Whether ScanQ screens this slice written as scanner DICOM. A figure crop in a wide
    black surround reads as a small body in air, with too little lung to screen, and is
    set aside by design (tests/unit/test_ct_slice.py); studies meant to be scored use
    slices that are screened."""
    from models.ct_slice import prepare

    return prepare(_hounsfield(path)).reason is None


def ct_series(paths: list[Path], *, patient_id: str = "CT-TEST-1",
              patient_name: str = "Test^Ct", accession: str = "ACC-CT-1",
              study_date: str | None = None) -> Study:  # fmt: skip
    """One CT study with one axial series: each PNG a slice, its greys mapped back to
    Hounsfield units through the lung window and stored with intercept -1024."""
    study = _new_study(patient_id, patient_name, accession,
                       study_date or date.today().strftime("%Y%m%d"))  # fmt: skip
    series_uid, frame_of_reference = generate_uid(), generate_uid()
    centre, width = LUNG_WINDOW
    for i, path in enumerate(paths, start=1):
        hu = _hounsfield(path)
        stored = np.clip(hu - CT_INTERCEPT, 0, 4095)
        ds = _base(study, CT_IMAGE_STORAGE, "CT", series_uid, 1, i, stored, 12)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = CT_INTERCEPT, 1.0, "HU"
        ds.WindowCenter, ds.WindowWidth = centre, width
        ds.KVP, ds.SliceThickness = 120, 5.0
        ds.PixelSpacing = [0.7, 0.7]
        ds.ImagePositionPatient = [0.0, 0.0, -5.0 * i]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceLocation = -5.0 * i
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        study.instances.append(ds)
    return study


def dx_study(paths: list[Path], views: list[str], *, patient_id: str = "DX-TEST-1",
             patient_name: str = "Test^Dx", accession: str = "ACC-DX-1",
             study_date: str | None = None) -> Study:  # fmt: skip
    """One DX study, one series per image as X-ray systems send them, each with its
    ViewPosition (PA, AP, or LL for a lateral view), 12-bit stored values and a window."""
    if len(paths) != len(views):
        raise ValueError("one view per image")
    study = _new_study(patient_id, patient_name, accession,
                       study_date or date.today().strftime("%Y%m%d"))  # fmt: skip
    top = 2**XRAY_BITS - 1
    for i, (path, view) in enumerate(zip(paths, views, strict=True), start=1):
        stored = np.round(_grey(path).astype(np.float64) / 255.0 * top)
        ds = _base(study, DX_IMAGE_STORAGE, "DX", generate_uid(), i, 1, stored, XRAY_BITS)
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ViewPosition = view
        ds.PatientOrientation = ["A", "F"] if view == "LL" else ["L", "F"]
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0.0, 1.0, "US"
        ds.WindowCenter, ds.WindowWidth = (top + 1) / 2, top + 1
        ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
        ds.ImagerPixelSpacing = [0.15, 0.15]
        ds.DetectorType = "DIRECT"
        ds.BurnedInAnnotation = "NO"
        study.instances.append(ds)
    return study


def _labels(shared_data: Path, modality: str) -> list[dict]:
    with open(shared_data / modality / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def sample_ct_study(shared_data: Path, n: int = 4, label: str = "covid", **kw) -> Study:
    """A CT series of `n` screened slices of one development patient (the first with as many)."""
    rows = [r for r in _labels(shared_data, "ct") if r["label"] == label]
    by_patient: dict[str, list[str]] = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], []).append(r["path"])
    for paths in by_patient.values():
        screened = [shared_data / p for p in sorted(paths) if _screened(shared_data / p)]
        if len(screened) >= n:
            return ct_series(screened[:n], **kw)
    raise LookupError(f"no {label} CT patient with {n} slices that ScanQ screens")


def sample_xray_study(shared_data: Path, views: tuple[str, ...] = ("PA", "AP", "LL"),
                      label: str = "covid", **kw) -> Study:  # fmt: skip
    """A DX study of development X-rays, one per view ("LL" is a lateral view)."""
    rows = [r for r in _labels(shared_data, "xray") if r["label"] == label]
    paths = [shared_data / r["path"] for r in rows[: len(views)]]
    return dx_study(paths, list(views), **kw)


def upload(orthanc, study: Study) -> list[str]:
    """Store every instance of a study in Orthanc through its REST API (POST /instances);
    the Orthanc ids of the instances."""
    return [orthanc.upload(data) for data in study.files()]
