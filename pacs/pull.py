"""Pull studies from a configured DICOMweb source (`scanq pull`, POST /api/v1/pulls):
QIDO-RS finds the studies (by modality and date, or one StudyInstanceUID), WADO-RS
retrieves them instance by instance (dicomweb-client streams the multipart answer), and
every instance goes through the same store as C-STORE and STOW-RS receipts
(pacs.instances). A study is screened as soon as it is retrieved whole: there is no
need to wait for it to settle. Runs as a Celery task; the pull's outcome is its audit
row (action dicom_pull, target pull:<id>)."""

from __future__ import annotations

import io
import logging
from datetime import date

from db.accounts import audit
from db.peers import get_source, source_credentials
from db.session import session_scope
from db.studies import Origin
from pacs.instances import InstanceError, audit_receipts, store_instance
from pacs.transport import dicomweb_client
from scanq.settings import Settings

log = logging.getLogger(__name__)
MAX_STUDIES = 1000  # per pull; a query matching more is refused with the count


class PullError(ValueError):
    """A pull that cannot run; the message says why."""


def check_query(modality: str | None, since: str | None, study_uid: str | None) -> dict:
    """The QIDO-RS query of a pull, checked: a study UID, or a modality and/or a date."""
    query: dict = {}
    if study_uid:
        study_uid = study_uid.strip()
        if (
            not study_uid
            or len(study_uid) > 64
            or not all(c.isdigit() or c == "." for c in study_uid)
        ):
            raise PullError("a StudyInstanceUID is digits and dots, at most 64 characters")
        query["study_uid"] = study_uid
    if modality:
        modality = modality.strip().upper()
        if not modality.isalnum() or len(modality) > 16:
            raise PullError("a modality is a DICOM modality code such as DX, CR or CT")
        query["modality"] = modality
    if since:
        try:
            query["since"] = date.fromisoformat(since.strip()).isoformat()
        except ValueError:
            raise PullError("since is a date, YYYY-MM-DD") from None
    if not query:
        raise PullError("say what to pull: --study UID, or --modality and/or --since")
    return query


PAGE = 100


def find_studies(client, query: dict) -> list[str]:
    """StudyInstanceUIDs matching the query, paged with limit and offset. Paging stops
    at a short page, and also when a page brings nothing new: a server that ignores
    `offset` (Orthanc's DICOMweb plugin 1.7 does) would otherwise answer the same page
    for ever, which dicomweb-client's own get_remaining does not guard against."""
    if "study_uid" in query:
        return [query["study_uid"]]
    filters = {}
    if "modality" in query:
        filters["ModalitiesInStudy"] = query["modality"]
    if "since" in query:
        filters["StudyDate"] = query["since"].replace("-", "") + "-"
    uids: dict[str, None] = {}
    offset = 0
    while True:
        page = client.search_for_studies(
            search_filters=filters, fields=["StudyInstanceUID"], limit=PAGE, offset=offset
        )
        found = [s["0020000D"]["Value"][0] for s in page if s.get("0020000D", {}).get("Value")]
        new = [uid for uid in found if uid not in uids]
        uids.update(dict.fromkeys(new))
        if len(uids) > MAX_STUDIES:
            raise PullError(f"the query matches over {MAX_STUDIES} studies; narrow it")
        if len(page) < PAGE or not new:
            return list(uids)
        offset += len(page)


def pull_outcome(pull_id: str, source_name: str, errors: list[str] | None = None) -> dict:
    """What a pull did, as its closing audit row (dicom_pull, pull:<id>) keeps it and GET
    /api/v1/pulls/<id> shows it: studies {id: instances}, counts and the first errors."""
    return {
        "pull": pull_id,
        "source": source_name,
        "studies": {},
        "instances": 0,
        "failed": 0,
        "errors": list(errors or []),
    }


def run_pull(
    settings: Settings,
    pull_id: str,
    source_name: str,
    query: dict,
    owner: str,
    results_to_peer_id: int | None = None,
) -> dict:
    """Retrieve every matching study; a study or instance that fails is counted with
    its reason and the pull goes on."""
    import pydicom
    from celery import current_app

    from pacs.settle import screen_study

    def _send(name: str, args: list) -> None:
        current_app.send_task(name, args=args)

    with session_scope(settings.database_url) as session:
        source = get_source(session, source_name)
        if source is not None:
            session.expunge(source)
    outcome = pull_outcome(pull_id, source_name)
    try:
        if source is None:
            raise PullError(f"no DICOMweb source {source_name!r}")
        client = dicomweb_client(source.url, *source_credentials(source), timeout=60)
        uids = find_studies(client, query)
    except Exception as exc:
        outcome["errors"].append(f"search: {type(exc).__name__}: {exc}"[:300])
        uids = []
    origin = Origin(
        owner=owner, source=f"pull:{source_name}"[:80], results_to_peer_id=results_to_peer_id
    )
    for uid in uids:
        study_ids: dict[int, int] = {}
        try:
            for ds in client.iter_study(uid):
                buf = io.BytesIO()
                pydicom.dcmwrite(buf, ds, enforce_file_format=True)
                data, buf, ds = buf.getvalue(), None, None  # one instance in memory
                try:
                    rec = store_instance(settings.database_url, settings.data_dir, [data], origin)
                except InstanceError as exc:
                    outcome["failed"] += 1
                    outcome["errors"].append(str(exc)[:300])
                    continue
                study_ids[rec.study_id] = study_ids.get(rec.study_id, 0) + 1
                outcome["instances"] += 1
        except Exception as exc:  # the source failed part-way: what arrived is kept
            outcome["failed"] += 1
            outcome["errors"].append(f"retrieve: {type(exc).__name__}: {exc}"[:300])
        for study_id, n in study_ids.items():
            outcome["studies"][str(study_id)] = n
        audit_receipts(settings.database_url, owner, study_ids, via="pull", pull=pull_id,
                       source=source_name)  # fmt: skip
        for study_id in study_ids:
            screen_study(settings, study_id, _send)
    outcome["errors"] = outcome["errors"][:20]
    with session_scope(settings.database_url) as session:
        audit(session, owner, "dicom_pull", f"pull:{pull_id}", outcome)
    log.info(
        "pull %s from %s: %d instances in %d studies, %d failed",
        pull_id,
        source_name,
        outcome["instances"],
        len(outcome["studies"]),
        outcome["failed"],
    )
    return outcome
