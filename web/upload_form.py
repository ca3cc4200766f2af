"""An upload's form fields, known and CSRF-checked before any of its files is stored.

Shared by the upload page and `POST /api/v1/jobs`: both store files as they arrive
(web.multipart), so their settings, and a cookie request's CSRF token, must come from
the fields sent before the files; when a client sends them after, the whole upload is
read first (not stored) to find them.
"""

from __future__ import annotations

from flask import Request

from web.auth import check_streamed_csrf, csrf_token_pending
from web.multipart import BufferedUpload, UploadParts


def open_upload(request: Request) -> UploadParts | BufferedUpload:
    """The upload, its fields read and checked; MalformedUpload for an unreadable body."""
    upload = UploadParts(request)
    if upload.has_files and (
        "modality" not in upload.fields or csrf_token_pending(upload.fields)
    ):  # the fields came after the files
        upload = BufferedUpload(upload)
    check_streamed_csrf(upload.fields)
    return upload
