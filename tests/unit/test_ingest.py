import io

import pytest
from PIL import Image

from models.readers import check_header
from tests.helpers import png, zip_of
from web.ingest import Limits, UploadError, ingest

LIMITS = Limits(max_files=50, max_archive_ratio=100, max_member_bytes=10 * 1024 * 1024)


def by_name(scans):
    return {s.filename: s for s in scans}


def test_images_are_stored_by_content_once(tmp_path):
    scans = ingest([("a.png", png(1)), ("b.png", png(1)), ("c.png", png(2))], tmp_path, LIMITS)
    assert [s.error for s in scans] == [None, None, None]
    assert scans[0].stored_path == scans[1].stored_path != scans[2].stored_path
    stored = list((tmp_path / "scans").rglob("*"))
    assert len([p for p in stored if p.is_file()]) == 2
    assert (tmp_path / scans[0].stored_path).read_bytes() == png(1)


def test_file_names_never_become_paths(tmp_path):
    scans = ingest([("../../etc/passwd.png", png(3))], tmp_path, LIMITS)
    assert scans[0].error is None
    assert scans[0].stored_path.startswith("scans/")
    assert ".." not in scans[0].stored_path
    assert all(tmp_path in p.parents for p in tmp_path.rglob("*"))


def test_archive_members_get_their_own_verdicts(tmp_path):
    archive = zip_of(
        {
            "good/one.png": png(4),
            "good/two.png": png(5),
            "../escape.png": png(6),
            "/abs.png": png(7),
            "inner.zip": zip_of({"x.png": png(8)}),
            "notes.txt": b"hello",
            "__MACOSX/._one.png": b"junk",
            "folder/": b"",
        },
        links={"link.png": "/etc/passwd"},
    )
    scans = by_name(ingest([("batch.zip", archive)], tmp_path, LIMITS))
    assert scans["batch.zip/good/one.png"].error is None
    assert scans["batch.zip/good/two.png"].error is None
    assert "escapes" in scans["batch.zip/../escape.png"].error
    assert "escapes" in scans["batch.zip//abs.png"].error
    assert "nested" in scans["batch.zip/inner.zip"].error
    assert "not a readable image" in scans["batch.zip/notes.txt"].error
    assert "links" in scans["batch.zip/link.png"].error
    assert not any("MACOSX" in n for n in scans)
    assert len(scans) == 7


def test_zip_bomb_member_is_refused(tmp_path):
    archive = zip_of({"bomb.png": b"\0" * (5 * 1024 * 1024)})
    (scan,) = ingest([("bomb.zip", archive)], tmp_path, LIMITS)
    assert "expands far beyond" in scan.error


def test_broken_archive_is_one_error(tmp_path):
    (scan,) = ingest([("broken.zip", b"PK\x03\x04garbage")], tmp_path, LIMITS)
    assert scan.error == "not a readable zip archive"


def test_too_many_files_rejects_the_request(tmp_path):
    with pytest.raises(UploadError):
        ingest([(f"{i}.png", png(i)) for i in range(3)], tmp_path, Limits(2, 100, 10**7))


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"GIF89a-not-really", "not a readable image"),
        (png(size=8), "smaller than 16"),
    ],
)
def test_check_header_reasons(data, reason):
    with pytest.raises(ValueError, match=reason):
        check_header(data)


def test_decompression_bomb_header_is_refused():
    # A PNG header that claims 20000 x 20000 pixels (400 MP) without the data.
    im = Image.new("L", (20000, 20000))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=9)
    with pytest.raises(ValueError, match="pixels"):
        check_header(buf.getvalue())
