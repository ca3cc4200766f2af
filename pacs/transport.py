"""Sending result objects to a PACS, by DIMSE C-STORE (pynetdicom) or by DICOMweb
STOW-RS (dicomweb-client). Each send is all or nothing as far as the caller is told:
any refusal, network error or partial failure raises DeliveryError with a reason fit
for a person, and the caller (pacs.dispatch) retries the whole set, which is safe
because the objects' SOP Instance UIDs are fixed (a PACS replaces or ignores a copy)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import requests
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0  # connect, association, and each DIMSE message or HTTP request
# C-STORE statuses that mean stored: success, and the warnings of PS3.4 B.2.3 (0xB000
# coercion of data elements, 0xB007 data set does not match SOP class, 0xB006 elements
# discarded; also 0x0107 and 0x0116 from PS3.7 C.4, attribute list error / value out of
# range), all of which leave the instance in the archive.
_STORED = {0x0000, 0x0107, 0x0116}


class DeliveryError(Exception):
    """The destination did not take the results; str(e) says why."""


@dataclass(frozen=True)
class DimseDestination:
    """A DICOM node that takes C-STORE: its AE title, host and port, and the calling AE
    title ScanQ presents."""

    ae_title: str
    host: str
    port: int
    calling_ae: str = "SCANQ"

    def describe(self) -> str:
        return f"C-STORE {self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class StowDestination:
    """A DICOMweb server's base URL (…/dicom-web), with optional basic-auth credentials."""

    url: str
    username: str | None = None
    password: str | None = None

    def describe(self) -> str:
        return f"STOW-RS {self.url}"


Destination = DimseDestination | StowDestination


def send(datasets: Sequence[Dataset], destination: Destination) -> int:
    """Send every dataset; the number stored. DeliveryError if any is not."""
    if not datasets:
        return 0
    if isinstance(destination, DimseDestination):
        return send_c_store(datasets, destination)
    return send_stow(datasets, destination)


def _stored_ok(status: int) -> bool:
    return status in _STORED or 0xB000 <= status <= 0xBFFF


def send_c_store(datasets: Sequence[Dataset], dest: DimseDestination) -> int:
    """One association, one C-STORE per dataset, released at the end."""
    from pynetdicom import AE

    ae = AE(ae_title=dest.calling_ae)
    ae.connection_timeout = ae.acse_timeout = TIMEOUT_S
    ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    for sop_class in sorted({ds.SOPClassUID for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    if not assoc.is_established:
        if assoc.is_rejected:
            raise DeliveryError(f"{dest.describe()}: association rejected")
        raise DeliveryError(
            f"{dest.describe()}: no association (destination unreachable or aborted)"
        )
    stored = 0
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if not status or "Status" not in status:
                raise DeliveryError(f"{dest.describe()}: no answer to C-STORE (connection lost)")
            if not _stored_ok(int(status.Status)):
                raise DeliveryError(
                    f"{dest.describe()}: C-STORE of a {ds.SOPClassUID.name} refused "
                    f"with status 0x{int(status.Status):04X}"
                )
            stored += 1
    finally:
        if assoc.is_established:
            assoc.release()
    return stored


def dicomweb_client(
    url: str, username: str | None = None, password: str | None = None, timeout=TIMEOUT_S
):
    """A dicomweb-client for a DICOMweb server (basic auth when a user is given): the one
    maker of clients, for pulls (pacs.pull) and STOW-RS results."""
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if username:
        session.auth = (username, password or "")
    return DICOMwebClient(url=url, session=session, timeout=timeout)


def send_stow(datasets: Sequence[Dataset], dest: StowDestination) -> int:
    """One STOW-RS request with every dataset (multipart/related), checked against the
    PS3.18 response's Failed SOP Sequence."""
    client = dicomweb_client(dest.url, dest.username, dest.password)
    client.set_http_retry_params(retry=False)  # retries are the Celery task's, with backoff
    study_uids = {ds.StudyInstanceUID for ds in datasets}
    try:
        answer = client.store_instances(
            list(datasets),
            study_instance_uid=next(iter(study_uids)) if len(study_uids) == 1 else None,
        )
    except requests.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else "?"
        raise DeliveryError(f"{dest.describe()}: HTTP {code}") from exc
    except requests.RequestException as exc:
        raise DeliveryError(f"{dest.describe()}: {type(exc).__name__} (unreachable)") from exc
    failed = answer.get("FailedSOPSequence") or []
    if failed:
        reasons = {int(f.get("FailureReason", 0)) for f in failed}
        raise DeliveryError(
            f"{dest.describe()}: {len(failed)} of {len(datasets)} refused "
            f"(reasons {', '.join(f'0x{r:04X}' for r in sorted(reasons))})"
        )
    return len(datasets)
