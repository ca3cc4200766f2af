"""The DICOM listener: a pynetdicom C-STORE and C-ECHO SCP.

Only known peers may associate (`scanq dicom peer add`): the calling AE title is looked
up when the association is requested (so a peer added or removed while the listener runs
counts at once), and an unknown one is rejected with "calling AE title not recognised".
Every storage SOP class and transfer syntax is accepted, and every instance that can be
placed in a study is answered with success, screened or not: the router (pacs.router)
records why an instance is not screened instead of failing the sender's push. pynetdicom
writes each received dataset to a temporary file as it arrives
(STORE_RECV_CHUNKED_DATASET), which pacs.instances copies into the content-hashed store,
so large instances never sit whole in memory. Each association's receipts are audited
per study when it closes, with the refused instances and their reasons. Logs name AE
titles, internal ids and exception types, never a message that may quote a header
(patient data)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification

from db.accounts import audit
from db.peers import get_peer_by_ae
from db.session import session_scope
from db.studies import Origin
from pacs.instances import InstanceError, audit_receipts, store_instance_file
from scanq.settings import Settings

log = logging.getLogger(__name__)

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000  # not a DICOM instance ScanQ can place in a study
OUT_OF_RESOURCES = 0xA700  # the database or the disk failed: the sender should retry
REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED = 0x01, 0x01, 0x03

_config.STORE_RECV_CHUNKED_DATASET = True
_config.LOG_HANDLER_LEVEL = "none"  # pynetdicom's own event logging stays off
logging.getLogger("pynetdicom").setLevel(logging.WARNING)


class Listener:
    """The listener's AE and its handlers; `start` runs it in the background."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ae = AE(ae_title=settings.dicom_ae)
        self.ae.require_called_aet = True
        contexts = [*AllStoragePresentationContexts]
        for context in contexts:
            self.ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        self._peers: dict[int, tuple[int, str, str]] = {}  # id(assoc) -> peer
        self._received: dict[int, dict[int, int]] = {}  # id(assoc) -> study id -> count
        self._refused: dict[int, list[str]] = {}  # id(assoc) -> reasons
        self._lock = threading.Lock()
        self.handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
        self.server = None

    def start(self, block: bool = False):
        address = (self.settings.dicom_host, self.settings.dicom_port)
        log.info("DICOM listener %s on %s:%d", self.settings.dicom_ae, *address)
        if block:
            self.ae.start_server(address, block=True, evt_handlers=self.handlers)
            return None
        self.server = self.ae.start_server(address, block=False, evt_handlers=self.handlers)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
        self.ae.shutdown()

    def _on_requested(self, event) -> None:
        calling = event.assoc.requestor.primitive.calling_ae_title
        calling = calling.strip() if isinstance(calling, str) else str(calling)
        address = event.assoc.requestor.address
        with session_scope(self.settings.database_url) as session:
            peer = get_peer_by_ae(session, calling)
            if peer is None:
                audit(
                    session,
                    None,
                    "dicom_reject",
                    f"ae:{calling[:40]}",
                    {"address": address, "reason": "calling AE title not recognised"},
                )
            else:
                info = (peer.id, peer.owner, peer.ae_title)
        if peer is None:
            log.warning("association from %r (%s) rejected: not a known peer", calling, address)
            event.assoc.acse.send_reject(
                REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED
            )
            # As pynetdicom's own rejections do: let the DUL send the A-ASSOCIATE-RJ
            # before the connection is closed (else the peer sees an abort).
            event.assoc.kill()
            return
        with self._lock:
            self._peers[id(event.assoc)] = info

    def _on_echo(self, event) -> int:
        return SUCCESS

    def _on_store(self, event) -> int:
        with self._lock:
            peer = self._peers.get(id(event.assoc))
        if peer is None:  # cannot happen: unknown peers never get an association
            return OUT_OF_RESOURCES
        peer_id, owner, ae_title = peer
        origin = Origin(
            owner=owner, source=f"dicom:{ae_title}", peer_id=peer_id, results_to_peer_id=peer_id
        )
        try:
            path = event.dataset_path
            recorded = store_instance_file(
                self.settings.database_url, self.settings.data_dir, Path(path), origin
            )
        except InstanceError as exc:
            log.warning("C-STORE from %s refused (the reason is in the audit trail)", ae_title)
            with self._lock:
                self._refused.setdefault(id(event.assoc), []).append(str(exc))
            return CANNOT_UNDERSTAND
        except Exception as exc:  # the type only: a database error may quote a header value
            log.error("C-STORE from %s not stored (%s); the sender may retry", ae_title,
                      type(exc).__name__)  # fmt: skip
            return OUT_OF_RESOURCES
        with self._lock:
            counts = self._received.setdefault(id(event.assoc), {})
            counts[recorded.study_id] = counts.get(recorded.study_id, 0) + 1
        return SUCCESS

    def _on_close(self, event) -> None:
        with self._lock:
            peer = self._peers.pop(id(event.assoc), None)
            counts = self._received.pop(id(event.assoc), {})
            refused = self._refused.pop(id(event.assoc), [])
        if not (counts or refused) or peer is None:
            return
        _peer_id, owner, ae_title = peer
        try:
            audit_receipts(self.settings.database_url, owner, counts, refused, f"ae:{ae_title}",
                           via="c-store", peer=ae_title)  # fmt: skip
        except Exception as exc:
            log.error("could not audit the receipts of an association from %s (%s)", ae_title,
                      type(exc).__name__)  # fmt: skip
        log.info(
            "association from %s closed: %d instances in %d studies, %d refused",
            ae_title,
            sum(counts.values()),
            len(counts),
            len(refused),
        )


def run_listener(settings: Settings) -> None:
    """`scanq dicom-listener`: serve in the foreground until stopped."""
    if not settings.dicom_port:
        raise SystemExit("SCANQ_DICOM_PORT is 0: the DICOM listener is turned off")
    try:
        Listener(settings).start(block=True)
    except OSError as exc:  # the port is taken, or the address is not this host's
        raise SystemExit(
            f"the DICOM listener cannot listen on {settings.dicom_host}:{settings.dicom_port}: "
            f"{exc.strerror or exc} (SCANQ_DICOM_HOST, SCANQ_DICOM_PORT)"
        ) from None
