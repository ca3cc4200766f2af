"""STOW-RS (PS3.18 10.5): `POST /dicomweb/studies[/<StudyInstanceUID>]` with a
`multipart/related; type="application/dicom"` body of Part-10 instances, bearer token.

The body is read part by part as it arrives, with Werkzeug's incremental multipart
decoder, and each part is written straight into the content-hashed store
(pacs.instances.IncomingFile), so neither the body nor an instance is ever held whole
in memory. Each instance is recorded in its study as C-STORE receipts are; the answer
is the PS3.18 response, a DICOM JSON dataset with the Referenced SOP Sequence and the
Failed SOP Sequence (with failure reasons). 200: all stored; 202: some failed; 409:
none could be stored. A body that is not `multipart/related` of `application/dicom`
is a 415, one in which no part is a DICOM instance a 400, each with the reason."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from db.peers import get_peer_by_ae
from db.studies import Origin
from pacs.instances import IncomingFile, InstanceError, audit_receipts, record_stored
from web.access import owner_name
from web.http import db_session, settings

log = logging.getLogger(__name__)
bp = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")

READ_BYTES = 256 * 1024
DICOM_TYPE = "application/dicom"
# PS3.18 Table 10.5.3-1 / PS3.4 failure reasons
PROCESSING_FAILURE = 0x0110
CANNOT_UNDERSTAND = 0xC000
NOT_IN_STUDY = 0xA900


class _RelatedDecoder(MultipartDecoder):
    """Werkzeug's decoder wants a Content-Disposition header on every part (as
    multipart/form-data has); parts of multipart/related carry none, so one is
    supplied."""

    def _parse_headers(self, data):
        headers = super()._parse_headers(data)
        if "content-disposition" not in headers:
            headers.add("Content-Disposition", 'attachment; name="instance"; filename="part"')
        return headers


def _error(status: int, code: str, message: str):
    return jsonify(error={"code": code, "message": message}), status


def _parts(boundary: bytes):
    """(content type, IncomingFile) per part, each part's bytes written to the store as
    they arrive."""
    decoder = _RelatedDecoder(boundary, 4 * READ_BYTES)
    stream = request.stream
    current: IncomingFile | None = None
    content_type = None
    cfg = settings()
    try:
        while True:
            chunk = stream.read(READ_BYTES)
            decoder.receive_data(chunk or None)
            event = decoder.next_event()
            while not isinstance(event, (NeedData, Epilogue)):
                if isinstance(event, (Field, File)):
                    content_type = (event.headers.get("Content-Type") or "").split(";")[0]
                    current = IncomingFile(cfg.data_dir)
                elif isinstance(event, Data) and current is not None:
                    current.write(event.data)
                    if not event.more_data:
                        part, current = current, None
                        yield content_type.strip().lower(), part
                event = decoder.next_event()
            if isinstance(event, Epilogue) or not chunk:
                return
    finally:
        if current is not None:
            current.discard()


def _uid_item(tag_class: str, tag_instance: str, cls: str | None, uid: str | None) -> dict:
    return {
        tag_class: {"vr": "UI", "Value": [cls]} if cls else {"vr": "UI"},
        tag_instance: {"vr": "UI", "Value": [uid]} if uid else {"vr": "UI"},
    }


def _response(referenced: list[dict], failed: list[dict], status: int) -> Response:
    body = {}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}  # Referenced SOP Sequence
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}  # Failed SOP Sequence
    import json

    return Response(json.dumps(body), status, content_type="application/dicom+json")


@bp.post("/studies")
@bp.post("/studies/<study_uid>")
def stow(study_uid: str | None = None):
    cfg = settings()
    mimetype = request.mimetype
    if mimetype != "multipart/related":
        return _error(
            415,
            "unsupported_media_type",
            f'STOW-RS takes multipart/related; type="{DICOM_TYPE}", not '
            f"{mimetype or 'a body without Content-Type'}",
        )
    part_type = (request.mimetype_params.get("type") or DICOM_TYPE).strip().lower()
    if part_type != DICOM_TYPE:
        return _error(
            415,
            "unsupported_media_type",
            f"only {DICOM_TYPE} parts are accepted (Part-10 instances), not {part_type}",
        )
    boundary = request.mimetype_params.get("boundary", "").encode("ascii", "replace")
    if not boundary:
        return _error(400, "bad_request", "multipart/related body without a boundary")
    results_to = None
    if request.args.get("results_to"):
        with db_session() as session:
            peer = get_peer_by_ae(session, request.args["results_to"])
            if peer is None:
                return _error(400, "unknown_peer", f"no DICOM peer {request.args['results_to']!r}")
            results_to = peer.id
    request.max_content_length = cfg.stow_max_bytes
    owner = owner_name()
    origin = Origin(owner=owner, source="stow", results_to_peer_id=results_to)
    referenced, failed, reasons, studies = [], [], [], {}
    parts = not_dicom = 0
    try:
        for content_type, incoming in _parts(boundary):
            parts += 1
            if content_type and content_type != DICOM_TYPE:
                incoming.discard()
                not_dicom += 1
                reasons.append(f"part {parts}: {content_type} is not {DICOM_TYPE}")
                failed.append(
                    {
                        **_uid_item("00081150", "00081155", None, None),
                        "00081197": {"vr": "US", "Value": [CANNOT_UNDERSTAND]},
                    }
                )
                continue
            try:
                rec = record_stored(cfg.database_url, cfg.data_dir, incoming, origin, study_uid)
            except InstanceError as exc:
                reasons.append(f"part {parts}: {exc}")
                not_dicom += exc.not_dicom
                code = NOT_IN_STUDY if exc.not_in_study else CANNOT_UNDERSTAND
                failed.append(
                    {
                        **_uid_item(
                            "00081150", "00081155", exc.sop_class_uid, exc.sop_instance_uid
                        ),
                        "00081197": {"vr": "US", "Value": [code]},
                    }
                )
                continue
            studies[rec.study_id] = studies.get(rec.study_id, 0) + 1
            referenced.append(
                _uid_item("00081150", "00081155", rec.sop_class_uid, rec.sop_instance_uid)
            )
    except ValueError as exc:  # Werkzeug's word for a truncated or mangled body
        return _error(400, "bad_request", f"the body is not readable multipart data: {exc}")
    except HTTPException:
        raise
    finally:
        if studies or reasons:
            audit_receipts(cfg.database_url, owner, studies, reasons, f"user:{owner}",
                           via="stow-rs")  # fmt: skip
    if parts == 0:
        return _error(400, "no_instances", "the body holds no parts")
    if not referenced and not_dicom == parts:
        return _error(400, "not_dicom", "no part is a DICOM instance: " + "; ".join(reasons[:5]))
    log.info("STOW-RS from %s: %d stored, %d failed", owner, len(referenced), len(failed))
    status = 200 if not failed else (202 if referenced else 409)
    response = _response(referenced, failed, status)
    for reason in reasons[:20]:
        text = reason[:200].replace('"', "'").replace("\r", " ").replace("\n", " ")
        response.headers.add("Warning", f'299 scanq "{text}"')
    return response
