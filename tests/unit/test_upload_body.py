"""`scanq submit`'s streamed request body: what Werkzeug reads back from it is exactly
what was sent, its length is exact, and it holds one file open at a time."""

import contextlib
import io
import os
from pathlib import Path

from werkzeug.formparser import parse_form_data

from cli.upload_body import StreamedMultipart
from tests.helpers import png


def _open_files_under(folder: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # an fd closed while listing
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder))
    return count


def test_body_parses_back_to_the_fields_and_files_in_order(tmp_path):
    names = ["a.png", 'quote"d.png', "ünï code.png", "big.png"]
    contents = [png(1), png(2), b"", os.urandom(3 * (1 << 20) + 17)]  # one over 3 chunks
    paths = []
    for name, data in zip(names, contents, strict=True):
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    body = StreamedMultipart({"modality": "xray", "model_version": "3"}, paths)
    open_at_once = []
    chunks = []
    for chunk in body:
        chunks.append(chunk)
        open_at_once.append(_open_files_under(tmp_path))
    raw = b"".join(chunks)
    assert len(raw) == len(body)
    assert max(open_at_once) == 1 and open_at_once[-1] == 0

    environ = {"wsgi.input": io.BytesIO(raw), "CONTENT_LENGTH": str(len(raw)),
               "CONTENT_TYPE": body.content_type, "REQUEST_METHOD": "POST"}  # fmt: skip
    _stream, form, files = parse_form_data(environ)
    assert form.to_dict() == {"modality": "xray", "model_version": "3"}
    got = files.getlist("files")
    assert [f.read() for f in got] == contents
    assert [f.filename for f in got] == names
    assert raw.index(b'name="modality"') < raw.index(b'filename="a.png"')  # fields first
