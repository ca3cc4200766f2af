from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.dataset import Example, load_examples, split_groups, train_val_test


def _ex(i, label, patient, dup=""):
    return Example(Path(f"{i}.png"), label, patient, "src", dup)


def test_dup_groups_join_patients():
    exs = [_ex(0, 1, "a", "d1"), _ex(1, 1, "b", "d1"), _ex(2, 0, "c"), _ex(3, 0, "b")]
    g = split_groups(exs)
    assert g[0] == g[1] == g[3]
    assert g[2] != g[0]


def test_split_keeps_groups_on_one_side():
    rng = np.random.default_rng(0)
    exs = [_ex(i, int(rng.integers(0, 2)), f"p{i // 3}", f"d{i // 7}" if i % 5 == 0 else "")
           for i in range(300)]  # fmt: skip
    tr, va, te = train_val_test(exs, seed=3)
    assert len(tr) + len(va) + len(te) == len(exs)
    groups = np.asarray(split_groups(exs))
    assert not set(groups[tr]) & set(groups[va])
    assert not set(groups[tr]) & set(groups[te])
    assert not set(groups[va]) & set(groups[te])


def test_real_data_split_has_both_labels_everywhere(shared_data):
    for modality in ("xray", "ct"):
        exs = load_examples(shared_data, modality)
        assert len(exs) > 300
        tr, va, te = train_val_test(exs, seed=0)
        labels = np.asarray([e.label for e in exs])
        for part in (tr, va, te):
            assert 0 < labels[part].mean() < 1
        patients = np.asarray([e.patient_id for e in exs])
        assert not set(patients[tr]) & set(patients[te])


def test_folder_layout_without_labels_csv(tmp_path):
    for name in ("covid", "non_covid"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(b"x")
    exs = load_examples(tmp_path)
    assert sorted(e.label for e in exs) == [0, 1]
    assert len({e.patient_id for e in exs}) == 2


examples_strategy = st.lists(
    st.tuples(
        st.integers(0, 1),  # label
        st.integers(0, 25),  # patient
        st.one_of(st.just(""), st.integers(0, 8).map(lambda d: f"d{d}")),  # near-dup group
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(rows=examples_strategy, seed=st.integers(0, 2**16))
def test_split_never_puts_a_patient_or_duplicate_group_on_two_sides(rows, seed):
    exs = [_ex(i, label, f"p{patient}", dup) for i, (label, patient, dup) in enumerate(rows)]
    parts = train_val_test(exs, seed=seed)
    every = np.concatenate(parts)
    assert sorted(every.tolist()) == list(range(len(exs)))  # each image exactly once
    side = {}
    for name, part in zip(("train", "val", "test"), parts, strict=True):
        for i in part:
            for key in (f"p:{exs[i].patient_id}", f"d:{exs[i].dup_group}"):
                if key != "d:":
                    assert side.setdefault(key, name) == name, key
