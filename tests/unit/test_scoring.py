"""Scoring a batch one file at a time: one file that breaks the model fails alone."""

import numpy as np

from models.ood import Verdict
from tests.helpers import png
from worker.scoring import ScanRef, ScoringContext, score_one_by_one


class Picky:
    """A stand-in model that fails on one kind of input (a uniform image), as a model or
    decoder bug would on one odd file."""

    input_size = 32

    def predict_and_judge(self, images: np.ndarray):
        if any(np.ptp(im) == 0 for im in images):
            raise FloatingPointError("cannot score a uniform image")
        return np.full(len(images), 0.7), [Verdict(None, None, None)] * len(images)


def test_one_bad_file_fails_alone(tmp_path):
    refs = []
    for i, content in enumerate([png(1), _flat(), png(3), b"broken"]):
        path = tmp_path / f"{i}.png"
        path.write_bytes(content)
        refs.append(ScanRef(i, path))
    seen, stored = [], []
    rows = score_one_by_one(
        refs, ScoringContext(Picky(), 0.5, "job", 1), seen.append, stored.append
    )
    assert [r.scan_id for r in seen] == [0, 1, 2, 3]  # each file marked before scoring
    assert stored == rows and [r.scan_id for r in rows] == [0, 1, 2, 3]
    assert rows[0].probability == rows[2].probability == 0.7
    assert rows[0].label == "covid" and rows[1].probability is None
    assert "FloatingPointError: cannot score a uniform image" in rows[1].error
    assert "not a readable image" in rows[3].error


def _flat() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (40, 40), 90).save(buf, "PNG")
    return buf.getvalue()


def test_next_batch_decoded_ahead_is_used_once_and_only_for_its_size(tmp_path):
    from worker.scoring import DecodeAhead, decode_batch

    refs = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        path.write_bytes(png(10 + i))
        refs.append(ScanRef(i, path))
    ahead = DecodeAhead()
    ahead.start(7, refs[:3], 32)
    assert ahead.take(7, 64) == {}  # decoded at another size: not usable
    ahead.start(7, refs[:3], 32)
    ready = ahead.take(7, 32)
    assert sorted(ready) == [0, 1, 2] and ahead.take(7, 32) == {}  # taken once
    out = decode_batch(refs, 32, ready)  # scan 3 was not ahead: decoded now
    assert [a.shape for a in out] == [(32, 32, 1)] * 4
    assert all(out[i] is ready[i].result() for i in range(3))
    np.testing.assert_array_equal(out[3], decode_batch([refs[3]], 32)[0])
