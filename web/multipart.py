"""Read a multipart upload part by part, while it is still arriving.

Flask's `request.files` reads the whole body before the view runs, so a bulk job's
first batch would wait for its last file. `UploadParts` reads `request.stream` with
Werkzeug's own incremental decoder instead: form fields sent before the files (as
`scanq submit`, `requests` and browsers do) are known at once, and files come out one at
a time. Only one file is held in memory at a time. When something read the body
already (a CSRF check reads the form of a cookie request), it serves what was parsed.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData


class MalformedUpload(ValueError):
    """The body is not a readable multipart/form-data message."""


READ_BYTES = 64 * 1024  # a read waits until this much has come (or the end)
MAX_FIELD_BYTES = 64 * 1024  # form fields are short; files have no limit here


class UploadParts:
    """Form fields and files of one multipart request, in arrival order."""

    def __init__(self, request: Request, file_field: str = "files"):
        self.file_field = file_field
        self.fields: dict[str, str] = {}
        if "form" in request.__dict__ or not request.mimetype.startswith("multipart/"):
            parts = _parsed(request)
        else:
            parts = _streamed(request)
        self._files = self._file_parts(parts)
        # Reading up to the first file makes the fields sent before it known.
        self._first_file = next(self._files, None)

    def _file_parts(self, parts) -> Iterator[tuple[str, bytes]]:
        """(filename, bytes) of each file of `file_field`; fields met on the way go into
        `fields`, other file fields are skipped."""
        for name, filename, data in parts:
            if filename is None:
                self.fields.setdefault(name, data.decode("utf-8", "replace"))
            elif name == self.file_field:
                yield filename or "upload", data

    @property
    def has_files(self) -> bool:
        return self._first_file is not None

    def files(self) -> Iterator[tuple[str, bytes]]:
        """Each file as it arrives, the first one included."""
        if self._first_file is None:
            return
        first, self._first_file = self._first_file, None
        yield first
        yield from self._files


def _parsed(request: Request) -> Iterator[tuple[str, str | None, bytes]]:
    for name, value in request.form.items(multi=True):
        yield name, None, value.encode()
    for name, storage in request.files.items(multi=True):
        yield name, storage.filename or "", storage.read()


def _streamed(request: Request) -> Iterator[tuple[str, str | None, bytes]]:
    """(field name, filename or None for a plain field, bytes) per part."""
    boundary = request.mimetype_params.get("boundary", "").encode("ascii", "replace")
    if not boundary:
        raise MalformedUpload("multipart request without a boundary")
    # The decoder's own limit is on its buffer (one read plus an unfinished boundary).
    decoder = MultipartDecoder(boundary, 4 * READ_BYTES, max_parts=request.max_form_parts)
    stream = request.stream  # bounded by Content-Length and MAX_CONTENT_LENGTH
    part: Field | File | None = None
    chunks: list[bytes] = []
    while True:
        data = stream.read(READ_BYTES)
        decoder.receive_data(data or None)
        event = _next_event(decoder)
        while not isinstance(event, (NeedData, Epilogue)):
            if isinstance(event, (Field, File)):
                part, chunks = event, []
            elif isinstance(event, Data):
                chunks.append(event.data)
                if isinstance(part, Field) and sum(map(len, chunks)) > MAX_FIELD_BYTES:
                    raise RequestEntityTooLarge("a form field is too long")
                if not event.more_data and part is not None:
                    filename = part.filename if isinstance(part, File) else None
                    yield part.name, filename, b"".join(chunks)
                    part, chunks = None, []
            event = _next_event(decoder)
        if isinstance(event, Epilogue) or not data:
            return


def _next_event(decoder: MultipartDecoder):
    try:
        return decoder.next_event()
    except ValueError as exc:  # Werkzeug's word for a truncated or mangled body
        raise MalformedUpload(f"the body is not readable multipart data: {exc}") from None


class BufferedUpload:
    """Every file read before any is used: for clients that send the form fields after
    the files, whose settings are unknown until the end."""

    def __init__(self, upload: UploadParts):
        self._files = list(upload.files())
        self.fields = upload.fields
        self.has_files = bool(self._files)

    def files(self) -> Iterator[tuple[str, bytes]]:
        return iter(self._files)
