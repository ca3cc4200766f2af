"""The champion is compared only on held-back patients it never saw: same image bytes
under another name, another image of the same patient, or one joined to it by
dup_group all count as seen."""

from __future__ import annotations

import json

from models.dataset import Example
from models.gate import MIN_UNSEEN_PATIENTS, SEEN_FILE, comparison_set, unseen_by, write_seen
from tests.helpers import png


def _example(tmp_path, name: str, seed: int, patient: str, label: int = 1, dup: str = ""):
    path = tmp_path / name
    path.write_bytes(png(seed))
    return Example(path=path, label=label, patient_id=patient, dup_group=dup)


def test_held_back_images_the_champion_saw_are_left_out(tmp_path):
    champion = tmp_path / "champion"
    champion.mkdir()
    seen = [
        _example(tmp_path, "a.png", 1, "p1", dup="g1"),
        _example(tmp_path, "b.png", 2, "p2"),
        _example(tmp_path, "c.png", 3, "image:c.png"),  # no patient id: the image alone
    ]
    write_seen(champion, seen)
    record = json.loads((champion / SEEN_FILE).read_text())
    assert len(record["images"]) == 3 and len(record["patients"]) == 2
    assert len(record["dup_groups"]) == 1
    assert "p1" not in json.dumps(record)  # ids are kept as hashes only

    held_out = [
        _example(tmp_path, "copy-of-b.png", 2, "p9"),  # b's bytes, renamed
        _example(tmp_path, "p2-later.png", 20, "p2"),  # another image of p2
        _example(tmp_path, "p8.png", 21, "p8", dup="g1"),  # p8 is p1's dup group
        _example(tmp_path, "p8-other.png", 22, "p8"),  # ... and so all of p8
        _example(tmp_path, "fresh.png", 23, "p7", label=0),
        _example(tmp_path, "c-like.png", 24, "image:c.png"),  # same default id, new bytes
    ]
    unseen = unseen_by(champion, held_out)
    assert [ex.path.name for ex in unseen] == ["fresh.png", "c-like.png"]
    assert unseen_by(tmp_path / "older-version", held_out) is None  # no record: unknown


def test_the_comparison_falls_back_to_every_held_back_patient_only_when_too_few_are_new(
    tmp_path,
):
    champion = tmp_path / "champion"
    champion.mkdir()
    old = [_example(tmp_path, f"old{i}.png", i, f"old{i}", label=i % 2) for i in range(10)]
    write_seen(champion, old)
    new = [
        _example(tmp_path, f"new{i}.png", 100 + i, f"new{i}", label=i % 2)
        for i in range(MIN_UNSEEN_PATIENTS)
    ]

    chosen, note = comparison_set(champion, old + new)
    assert chosen == new and note["compared_on"] == "held-back patients the champion never saw"
    assert note["unseen_by_champion"] == {"patients": MIN_UNSEEN_PATIENTS, "images": len(new)}
    assert (note["patients"], note["images"]) == (len(old) + len(new), len(old) + len(new))

    chosen, note = comparison_set(champion, old + new[:-1])
    assert chosen == old + new[:-1] and "champion is favoured" in note["compared_on"]

    one_label = [ex for ex in new if ex.label == 1]
    chosen, note = comparison_set(champion, old + one_label * 3)
    assert "champion is favoured" in note["compared_on"]

    chosen, note = comparison_set(None, new)  # no champion
    assert chosen == new and note["compared_on"] == "all held-back patients"
