"""A multipart/form-data body that reads each file only when its turn comes.

`requests` builds a `files=` body whole in memory, with every file open at once: a
10,000-file job (the server's default limit) would need up to the server's 512 MB
upload limit in client memory and 10,000 open files, more than the usual limit of
1,024. This body knows its length up front (so it goes with Content-Length, not
chunked), sends the form fields first (the server then scores files while later ones
are still on the wire, web/multipart.py), and holds one file open at a time.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20


class StreamedMultipart:
    """Iterate it for the bytes; `len()` is the exact body size."""

    def __init__(self, fields: dict[str, str], files: list[Path], file_field: str = "files"):
        self.boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self._fields = [
            (self._header(name, None), value.encode()) for name, value in fields.items()
        ]
        self._files = [(self._header(file_field, path.name), path) for path in files]
        self._sizes = [os.stat(path).st_size for path in files]  # missing files fail here
        self._end = f"--{self.boundary}--\r\n".encode()

    def _header(self, name: str, filename: str | None) -> bytes:
        disposition = f'form-data; name="{_quote(name)}"'
        if filename is not None:
            disposition += f'; filename="{_quote(filename)}"'
            return (f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\n"
                    "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
        return f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()

    def __len__(self) -> int:
        fields = sum(len(h) + len(v) + 2 for h, v in self._fields)
        files = sum(
            len(h) + size + 2 for (h, _p), size in zip(self._files, self._sizes, strict=True)
        )
        return fields + files + len(self._end)

    def __iter__(self) -> Iterator[bytes]:
        for header, value in self._fields:
            yield header + value + b"\r\n"
        for (header, path), size in zip(self._files, self._sizes, strict=True):
            yield header
            sent = 0
            with open(path, "rb") as fh:
                while chunk := fh.read(min(CHUNK, size - sent)):
                    sent += len(chunk)
                    yield chunk
            if sent != size:  # the file changed while the job was being sent
                raise OSError(f"{path} changed size while it was being uploaded")
            yield b"\r\n"
        yield self._end


def _quote(value: str) -> str:
    """As browsers do: the quote and line breaks escaped, the rest as UTF-8."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
