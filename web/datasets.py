"""Labelled training sets: an uploaded .zip unpacked into the data directory, or a
folder on the server under an allowed root.

An archive holds `covid/` and `non_covid/` folders (at any depth) and optionally a
`labels.csv` with `filename,label,patient_id` (and `source`, `dup_group`). Members are
read with the same limits and refusals as scan uploads, and take any input format of
the registry (models.readers); each image is stored under its content hash, never under
a name from the archive, and a `labels.csv` of our own maps the stored files to labels,
patients and sources. A DICOM file becomes a PNG per frame, windowed by its own
Modality (CT through the lung window), its frames and the slices of its series kept in
one split group so that neighbouring slices never sit on both sides of a split. The
same archive sent twice is stored once. Files that cannot be used are listed with their
reason, not dropped silently.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from models import readers
from models.dataset import LABELS, Example, load_examples, split_groups
from models.readers import DICOM, ImageError
from web.ingest import Limits, archive_members

LABELS_FILE = "labels.csv"
MIN_PER_LABEL = 4
PNG_SUFFIX = readers.PNG.suffixes[0]  # decoded DICOM frames are stored as PNG
STORED_COLUMNS = ["path", "label", "patient_id", "source", "dup_group", "original_name"]


class DatasetError(ValueError):
    """The set as a whole cannot be trained on; the message says why."""


@dataclass
class Dataset:
    path: Path
    examples: list[Example]
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> dict:
        labels = [e.label for e in self.examples]
        return {
            "n": len(labels),
            "n_covid": sum(labels),
            "n_non_covid": len(labels) - sum(labels),
            "n_patients": len(set(split_groups(self.examples))),
            "rejected": [{"filename": n, "error": e} for n, e in self.rejected],
        }


def _label_of(parts: tuple[str, ...]) -> str | None:
    """The label folder nearest to the file: `set/covid/a.png` -> covid."""
    for part in reversed(parts[:-1]):
        if part.lower() in LABELS:
            return part.lower()
    return None


def _read_user_labels(content: bytes) -> dict[str, dict]:
    """Rows of the uploaded labels.csv keyed by file name (as given, and base name)."""
    text = content.decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "filename" not in [f.strip() for f in reader.fieldnames]:
        raise DatasetError("labels.csv needs a header with at least `filename,label,patient_id`")
    rows: dict[str, dict] = {}
    for row in reader:
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        name = row.get("filename", "").replace("\\", "/")
        if name:
            rows[name] = row
            rows.setdefault("base:" + PurePosixPath(name).name, row)
    return rows


class _Image(NamedTuple):
    name: str  # as the archive names it; a DICOM frame's with its number
    content: bytes  # what is stored
    suffix: str
    group: str  # a split group of its own ("" for none): a DICOM file's series


def _images(inner: str, content: bytes) -> list[_Image]:
    """The trainable images of one archive member: itself, or a DICOM file's frames."""
    if readers.sniff(content) is not DICOM:
        header = readers.check_header(content)
        return [_Image(inner, content, readers.reader_named(header.format).suffixes[0], "")]
    image = readers.decode(content)  # windowed by the file's own Modality
    tags, n = image.header.dicom, len(image.frames)
    group = f"dicom:{tags.series_uid or hashlib.sha256(content).hexdigest()[:24]}"
    return [
        _Image(f"{inner} [frame {i}/{n}]" if n > 1 else inner, readers.png_bytes(frame),
               PNG_SUFFIX, group)
        for i, frame in enumerate(image.frames, start=1)
    ]  # fmt: skip


def unpack_archive(archive: bytes, root: Path, limits: Limits) -> Dataset:
    """Store an uploaded training archive under `root/<hash>/`; reuse it if present."""
    digest = hashlib.sha256(archive).hexdigest()[:24]
    target = root / digest
    if (target / LABELS_FILE).exists():
        return load_dataset(target)
    images: list[tuple[str, str, _Image]] = []  # (inner name, label, image)
    rejected: list[tuple[str, str]] = []
    user_labels: dict[str, dict] = {}
    for name, content in archive_members("dataset.zip", archive, limits):
        inner = name.split("/", 1)[1] if "/" in name else name
        parts = PurePosixPath(inner).parts
        if isinstance(content, str):
            rejected.append((inner, content))
        elif parts and parts[-1].lower() == LABELS_FILE:
            user_labels = _read_user_labels(content)
        elif (label := _label_of(parts)) is None:
            rejected.append((inner, "not inside a covid/ or non_covid/ folder"))
        else:
            try:
                images += [(inner, label, image) for image in _images(inner, content)]
            except ImageError as exc:
                rejected.append((inner, str(exc)))
                continue
        if len(images) + len(rejected) > limits.max_files:
            raise DatasetError(f"more than {limits.max_files} files in the archive")
    rows = []
    for inner, label, image in images:
        given = user_labels.get(inner) or user_labels.get("base:" + PurePosixPath(inner).name, {})
        if given.get("label") and given["label"] != label:
            rejected.append(
                (image.name, f"labels.csv says {given['label']}, its folder says {label}")
            )
            continue
        name = hashlib.sha256(image.content).hexdigest()[:32] + image.suffix
        rows.append((f"{label}/{name}", label, given, image))
    tmp = Path(tempfile.mkdtemp(dir=_ensure(root), prefix=".incoming-"))
    try:
        with open(tmp / LABELS_FILE, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(STORED_COLUMNS)
            for rel, label, given, image in rows:
                (tmp / label).mkdir(exist_ok=True)
                (tmp / rel).write_bytes(image.content)
                writer.writerow(
                    [rel, label, given.get("patient_id", ""), given.get("source", "upload"),
                     given.get("dup_group") or image.group, image.name]
                )  # fmt: skip
        with open(tmp / "rejected.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["filename", "error"])
            writer.writerows(rejected)
        try:
            os.rename(tmp, target)  # atomic; a concurrent upload of the same set wins
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    dataset = load_dataset(target)
    dataset.rejected = rejected
    return dataset


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_dataset(path: Path, modality: str | None = None) -> Dataset:
    """Read a labelled folder and check that it can be split and trained on."""
    try:
        examples = load_examples(path, modality)
    except FileNotFoundError as exc:
        raise DatasetError(str(exc)) from None
    rejected = []
    if (path / "rejected.csv").exists():
        with open(path / "rejected.csv", newline="") as fh:
            rejected = [(r["filename"], r["error"]) for r in csv.DictReader(fh)]
    counts = {label: sum(e.label == value for e in examples) for label, value in LABELS.items()}
    short = [f"{n} {label}" for label, n in counts.items() if n < MIN_PER_LABEL]
    if short:
        raise DatasetError(
            f"too few images to train and validate: {', '.join(short)} "
            f"(at least {MIN_PER_LABEL} of each label)"
        )
    return Dataset(path, examples, rejected)


def resolve_server_folder(raw: str, allowed: list[Path]) -> Path:
    """A folder the server may read, or DatasetError. Links are resolved first, so a
    link inside an allowed root cannot lead outside it."""
    path = Path(raw).expanduser().resolve()
    roots = [r.resolve() for r in allowed]
    if not any(path == r or r in path.parents for r in roots):
        names = ", ".join(str(r) for r in roots) or "none configured (SCANQ_DATASET_ROOTS)"
        raise DatasetError(f"{raw} is not under an allowed dataset folder: {names}")
    if not path.is_dir():
        raise DatasetError(f"no such folder on the server: {raw}")
    return path
