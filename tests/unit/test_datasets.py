"""Training sets from uploaded archives and server folders: every file gets a verdict,
names from the archive never become paths, and a set too small to split is refused."""

import csv
import os

import numpy as np
import pytest

from models.dataset import load_examples, split_groups
from tests.helpers import dicom_bytes, png, zip_of
from web.datasets import DatasetError, load_dataset, resolve_server_folder, unpack_archive
from web.ingest import Limits

LIMITS = Limits(max_files=100, max_archive_ratio=100, max_member_bytes=10 * 1024 * 1024)


def _set(n=5, extra=None, labels=None):
    entries = {f"myset/covid/c{i}.png": png(i) for i in range(n)}
    entries |= {f"myset/non_covid/sub/n{i}.png": png(100 + i) for i in range(n)}
    if labels is not None:
        entries["myset/labels.csv"] = labels.encode()
    return zip_of(entries | (extra or {}))


def test_archive_is_stored_by_content_with_patients_and_rejections(tmp_path):
    labels = "filename,label,patient_id,source\n"
    labels += "".join(f"covid/c{i}.png,covid,p{i // 2},paper\n" for i in range(5))
    labels += "n0.png,non_covid,q0,hospital\n"
    archive = _set(extra={"myset/readme.png": png(7), "myset/covid/notes.png": b"text"},
                   labels=labels)  # fmt: skip
    ds = unpack_archive(archive, tmp_path / "datasets", LIMITS)
    summary = ds.summary()
    assert (summary["n_covid"], summary["n_non_covid"]) == (5, 5)
    rejected = {r["filename"]: r["error"] for r in summary["rejected"]}
    assert "not inside a covid/ or non_covid/ folder" in rejected["myset/readme.png"]
    assert "not a readable image" in rejected["myset/covid/notes.png"]
    by_patient = {e.patient_id for e in ds.examples if e.label == 1}
    assert by_patient == {"p0", "p1", "p2"}  # five images, three patients
    n0 = next(e for e in ds.examples if e.patient_id == "q0")
    assert n0.source == "hospital" and n0.label == 0
    # names in the archive never become paths: files are named by their content hash
    for path in (tmp_path / "datasets").rglob("*.png"):
        assert path.stem not in {"c0", "n0", "readme"} and len(path.stem) == 32
    # the same archive is stored once
    again = unpack_archive(archive, tmp_path / "datasets", LIMITS)
    assert again.path == ds.path
    assert len([p for p in (tmp_path / "datasets").iterdir()]) == 1
    assert {r["filename"] for r in again.summary()["rejected"]} == set(rejected)


def test_label_that_contradicts_its_folder_is_rejected(tmp_path):
    labels = "filename,label,patient_id\ncovid/c0.png,non_covid,p0\n"
    ds = unpack_archive(_set(labels=labels), tmp_path, LIMITS)
    rejected = {r["filename"]: r["error"] for r in ds.summary()["rejected"]}
    assert "labels.csv says non_covid, its folder says covid" in rejected["myset/covid/c0.png"]
    assert ds.summary()["n_covid"] == 4


def test_hostile_members_are_refused_not_followed(tmp_path):
    archive = _set(extra={"../covid/escape.png": png(9), "myset/covid/inner.zip": _set(1)})
    ds = unpack_archive(archive, tmp_path / "datasets", LIMITS)
    rejected = {r["filename"]: r["error"] for r in ds.summary()["rejected"]}
    assert "escapes" in rejected["../covid/escape.png"]
    assert "nested" in rejected["myset/covid/inner.zip"]
    assert all(tmp_path in p.parents for p in tmp_path.rglob("*"))


def test_too_small_a_set_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="at least 4 of each label"):
        unpack_archive(_set(n=2), tmp_path, LIMITS)
    with pytest.raises(DatasetError):
        unpack_archive(b"PK\x03\x04 not a zip", tmp_path, LIMITS)


def test_bad_labels_csv_header_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="labels.csv needs a header"):
        unpack_archive(_set(labels="name;label\n"), tmp_path, LIMITS)


def test_stored_labels_are_readable_by_the_trainer(tmp_path):
    ds = unpack_archive(_set(), tmp_path, LIMITS)
    with open(ds.path / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10
    assert len(load_examples(ds.path)) == 10


def test_server_folders_only_under_allowed_roots(tmp_path, shared_data):
    root = tmp_path / "allowed"
    (root / "set").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, root / "link")
    assert resolve_server_folder(str(root / "set"), [root]) == (root / "set").resolve()
    for bad in (str(outside), str(root / "link"), str(root / "set" / ".." / ".." / "elsewhere")):
        with pytest.raises(DatasetError, match="not under an allowed"):
            resolve_server_folder(bad, [root])
    with pytest.raises(DatasetError, match="no such folder"):
        resolve_server_folder(str(root / "missing"), [root])
    ds = load_dataset(resolve_server_folder(str(shared_data), [shared_data]), "ct")
    assert ds.summary()["n_covid"] > 200


def test_rejection_reasons_survive_odd_file_names(tmp_path):
    odd = 'myset/covid/say "hi", then\nleave.png'
    ds = unpack_archive(_set(extra={odd: b"text"}), tmp_path / "datasets", LIMITS)
    again = load_dataset(ds.path)  # read back from rejected.csv
    assert {r["filename"] for r in again.summary()["rejected"]} == {odd}


def _slices(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 2500, (40, 40)).astype(np.uint16) for _ in range(n)]


def test_dicom_in_a_training_archive_or_folder_trains(tmp_path):
    """DICOM files in covid/ and non_covid/: an archive's become a PNG per frame, each
    file's frames (and a series' slices) in one split group; a folder's single-frame
    files are read as they are. A tiny run trains on the archive's."""
    from models.train import TrainConfig, train

    entries = {f"set/covid/vol{v}.dcm": dicom_bytes(_slices(v, 3), series_uid=f"1.2.{v}")
               for v in range(4)}  # fmt: skip
    entries |= {f"set/covid/s{k}.dcm": dicom_bytes(one, modality="DX", instance=k)
                for k, one in enumerate(_slices(9, 4))}  # fmt: skip
    entries |= {f"set/non_covid/n{i}.png": png(300 + i) for i in range(12)}
    entries["set/non_covid/cut.dcm"] = dicom_bytes(_slices(10, 1)[0])[:-600]  # truncated
    ds = unpack_archive(zip_of(entries), tmp_path / "datasets", LIMITS)
    summary = ds.summary()
    assert (summary["n_covid"], summary["n_non_covid"]) == (16, 12)
    assert "cannot decode DICOM pixel data" in dict(ds.rejected)["set/non_covid/cut.dcm"]
    assert all(e.path.suffix == ".png" for e in ds.examples)
    groups = dict(zip((e.path for e in ds.examples), split_groups(ds.examples), strict=True))
    with open(ds.path / "labels.csv", newline="") as fh:
        names = {ds.path / r["path"]: r["original_name"] for r in csv.DictReader(fh)}
    volume = {groups[p] for p, name in names.items() if name.startswith("set/covid/vol0.dcm [")}
    assert len(volume) == 1 and summary["n_patients"] == 4 + 4 + 12
    result = train(TrainConfig(modality="ct", backbone="smallcnn", input_size=32, epochs=1,
                               finetune_epochs=0, weights=None), ds.examples)  # fmt: skip
    assert result.card["skipped_unreadable"] == []
    assert sum(result.card["split"][part] for part in ("train", "val", "test")) == 28

    folder = tmp_path / "folder"
    for label, seed in (("covid", 20), ("non_covid", 30)):
        (folder / label).mkdir(parents=True)
        for k, one in enumerate(_slices(seed, 4)):
            (folder / label / f"{k}.dcm").write_bytes(dicom_bytes(one))
    from models.decode import decode_examples

    examples, x, skipped = decode_examples(load_dataset(folder).examples, 32)
    assert len(examples) == 8 and x.shape == (8, 32, 32, 1) and skipped == []
