"""Labelled image sets and patient-level splits.

A set is either a folder with `covid/` and `non_covid/` subfolders (what users upload;
any input format of models.readers, DICOM files of one frame included),
optionally with a `labels.csv` naming `patient_id`, `source` and `dup_group`, or the
project's development data (`<set>/labels.csv` with paths relative to its parent).
Images without a patient id are their own patient, which is the conservative choice.
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.readers import has_input_suffix

LABELS = {"covid": 1, "non_covid": 0}


@dataclass(frozen=True)
class Example:
    path: Path
    label: int
    patient_id: str
    source: str = "unknown"
    dup_group: str = ""
    finding: str = ""  # the source's own label, e.g. "Pneumocystis" or "No finding"


def load_examples(root: Path | str, modality: str | None = None) -> list[Example]:
    """Examples of a labelled set; `modality` picks `<root>/<modality>/` when it exists."""
    root = Path(root)
    if modality and (root / modality / "labels.csv").exists():
        return _from_labels_csv(root / modality / "labels.csv", base=root)
    if (root / "labels.csv").exists():
        rows = _from_labels_csv(root / "labels.csv", base=root)
        if rows:
            return rows
    return _from_folders(root)


def _from_labels_csv(csv_path: Path, base: Path) -> list[Example]:
    out = []
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            rel = row.get("path") or row.get("filename") or ""
            path = base / rel
            if not path.exists():
                path = csv_path.parent / rel
            if not path.exists() and row.get("label"):
                path = csv_path.parent / row["label"] / Path(rel).name
            if row.get("label") not in LABELS or not path.exists():
                continue
            out.append(
                Example(
                    path=path,
                    label=LABELS[row["label"]],
                    patient_id=row.get("patient_id") or f"image:{path.name}",
                    source=row.get("source_repo") or row.get("source") or "unknown",
                    dup_group=row.get("dup_group") or "",
                    finding=row.get("orig_label") or row.get("finding") or "",
                )
            )
    return out


def _from_folders(root: Path) -> list[Example]:
    out = []
    for name, label in LABELS.items():
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if has_input_suffix(path) and path.is_file():
                rel = path.relative_to(root).as_posix()
                out.append(Example(path=path, label=label, patient_id=f"image:{rel}"))
    if not out:
        raise FileNotFoundError(f"{root} has no covid/ or non_covid/ images")
    return out


def split_groups(examples: list[Example]) -> list[str]:
    """One group id per example: patients joined by shared near-duplicate groups, so a
    re-encoded copy or an adjacent slice never sits on both sides of a split."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for ex in examples:
        find("p:" + ex.patient_id)
        if ex.dup_group:
            parent[find("d:" + ex.dup_group)] = find("p:" + ex.patient_id)
    return [find("p:" + ex.patient_id) for ex in examples]


def grouped_folds(examples: list[Example], k: int, seed: int = 0) -> list[np.ndarray]:
    """Stratified group k-fold: indices of each fold's examples. Groups are dealt to the
    fold that most lacks their label, largest groups first, so folds stay balanced."""
    groups = split_groups(examples)
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    rng = np.random.default_rng(seed)
    keys = list(members)
    rng.shuffle(keys)
    keys.sort(key=lambda g: -len(members[g]))
    fold_pos = np.zeros(k)
    fold_n = np.zeros(k)
    assignment: list[list[int]] = [[] for _ in range(k)]
    for g in keys:
        idx = members[g]
        pos = sum(examples[i].label for i in idx)
        # prefer the fold with fewest examples of the majority label of this group
        load = fold_pos if pos * 2 >= len(idx) else fold_n - fold_pos
        f = int(np.argmin(load + 1e-3 * fold_n))
        assignment[f].extend(idx)
        fold_pos[f] += pos
        fold_n[f] += len(idx)
    return [np.asarray(sorted(a), dtype=int) for a in assignment]


def train_val_test(
    examples: list[Example], seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient-level split into train/val/test index arrays (test touched once)."""
    k = max(2, round(1 / test_fraction))
    folds = grouped_folds(examples, k, seed)
    test = folds[0]
    rest = np.concatenate(folds[1:])
    sub = [examples[i] for i in rest]
    kv = max(2, round(1 / val_fraction))
    vfolds = grouped_folds(sub, kv, seed + 1)
    val = rest[vfolds[0]]
    train = np.setdiff1d(rest, val)
    return np.sort(train), np.sort(val), np.sort(test)


def fingerprint(examples: list[Example]) -> str:
    """A short hash of the labelled content, so a model version names the data it saw."""
    h = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: e.path.name):
        h.update(hashlib.sha256(ex.path.read_bytes()).digest())
        h.update(f"{ex.label}|{ex.patient_id}".encode())
    return h.hexdigest()[:16]
