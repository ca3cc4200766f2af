"""A real Orthanc for the PACS tests: Debian's `orthanc` binary and `orthanc-dicomweb`
plugin (installed by .ci/services.sh), started on loopback with a configuration written
by the test, its own free HTTP and DICOM ports and its own storage folder. It can be
stopped and started again on the same storage (results that fall due while the PACS
is down must arrive once it is back, and once only), and it is found or skipped by
`orthanc_or_skip`, which fails instead where CI demands every test (SCANQ_STRICT)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import requests

# Where Debian installs them; the environment may point elsewhere.
DEFAULT_BINARY = "/usr/sbin/Orthanc"
DEFAULT_DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DICOMWEB_ROOT = "/dicom-web/"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def _free_port() -> int:
    from scanq.embedded_redis import free_port

    return free_port()


def find_orthanc() -> tuple[str | None, str | None, str]:
    """The Orthanc binary and DICOMweb plugin, or None and the reason each is missing.
    SCANQ_TEST_ORTHANC and SCANQ_TEST_ORTHANC_DICOMWEB override Debian's paths."""
    binary = os.environ.get("SCANQ_TEST_ORTHANC") or shutil.which("Orthanc") or DEFAULT_BINARY
    plugin = os.environ.get("SCANQ_TEST_ORTHANC_DICOMWEB") or DEFAULT_DICOMWEB_PLUGIN
    if not (Path(binary).is_file() and os.access(binary, os.X_OK)):
        return (
            None,
            None,
            f"no Orthanc binary at {binary} (apt-get install orthanc; .ci/services.sh)",
        )
    if not Path(plugin).is_file():
        return (
            binary,
            None,
            (
                f"no Orthanc DICOMweb plugin at {plugin} "
                "(apt-get install orthanc-dicomweb; .ci/services.sh)"
            ),
        )
    return binary, plugin, ""


class Orthanc:
    """One Orthanc server on loopback. `modalities` are the DICOM peers it may send to
    (name -> (AE title, port), all on 127.0.0.1); `scanq_port` is a free port chosen up
    front for a ScanQ DICOM listener, declared as modality "scanq" (AE `scanq_aet`)."""

    def __init__(
        self,
        root: Path,
        *,
        aet: str = "ORTHANC",
        scanq_aet: str = "SCANQ",
        scanq_port: int | None = None,
        modalities: dict[str, tuple[str, int]] | None = None,
        users: dict[str, str] | None = None,
        binary: str | None = None,
        plugin: str | None = None,
    ):
        found_binary, found_plugin, reason = find_orthanc()
        self.binary = binary or found_binary
        self.plugin = plugin or found_plugin
        if not (self.binary and self.plugin):
            raise RuntimeError(reason)
        self.root = Path(root)
        self.storage = self.root / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.http_port = _free_port()
        self.dicom_port = _free_port()
        self.scanq_aet = scanq_aet
        self.scanq_port = scanq_port or _free_port()
        self.modalities = {"scanq": (scanq_aet, self.scanq_port), **(modalities or {})}
        self.users = users  # HTTP basic auth when given; none on loopback otherwise
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb_url = self.url + DICOMWEB_ROOT.rstrip("/")
        self.config_path = self.root / "orthanc.json"
        self.log_path = self.root / "orthanc.log"
        self.proc: subprocess.Popen | None = None
        self.http = requests.Session()
        if users:
            self.http.auth = next(iter(users.items()))

    # -- life cycle -------------------------------------------------------------------

    def config(self) -> dict:
        return {
            "Name": f"scanq-test-{self.http_port}",
            "StorageDirectory": str(self.storage),
            "IndexDirectory": str(self.storage),
            "TemporaryDirectory": str(self.root),
            "Plugins": [self.plugin],
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,  # binds every interface, answers loopback only
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users or {},
            "DicomModalities": {
                name: [aet, "127.0.0.1", port] for name, (aet, port) in self.modalities.items()
            },
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            # A resend of a result with the same SOP Instance UID replaces the stored one
            # (Orthanc keeps one instance per SOP Instance UID either way).
            "OverwriteInstances": True,
            "UnknownSopClassAccepted": False,
            "DicomAssociationCloseDelay": 0,
            "DicomScuTimeout": 10,
            "StableAge": 2,
            "SaveJobs": False,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
            "DicomThreadsCount": 2,
            "HttpDescribeErrors": True,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "MetricsEnabled": False,
            "DicomWeb": {
                "Enable": True,
                "Root": DICOMWEB_ROOT,
                "EnableWado": True,
                "Ssl": False,
            },
        }

    def start(self, timeout: float = START_TIMEOUT_S) -> Orthanc:
        """Start (again, on the same storage and ports) and wait until /system answers."""
        if self.running:
            return self
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [self.binary, str(self.config_path)],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.http.get(self.url + "/system", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass  # not listening yet
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer /system within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        """Stop it (its storage stays) and wait until its ports are closed."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.storage, ignore_errors=True)

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # -- REST -------------------------------------------------------------------------

    def get(self, path: str, **kw) -> requests.Response:
        r = self.http.get(self.url + path, timeout=30, **kw)
        r.raise_for_status()
        return r

    def post(self, path: str, **kw) -> requests.Response:
        r = self.http.post(self.url + path, timeout=120, **kw)
        r.raise_for_status()
        return r

    def upload(self, data: bytes) -> str:
        """Store one Part-10 file (POST /instances); its Orthanc id."""
        return self.post("/instances", data=data,
                         headers={"Content-Type": "application/dicom"}).json()["ID"]  # fmt: skip

    def set_modality(self, name: str, aet: str, port: int, host: str = "127.0.0.1") -> None:
        """Declare (or change) a DICOM peer at run time (PUT /modalities/<name>)."""
        r = self.http.put(f"{self.url}/modalities/{name}",
                          json={"AET": aet, "Host": host, "Port": port}, timeout=30)  # fmt: skip
        r.raise_for_status()
        self.modalities[name] = (aet, port)

    def store_to(self, modality: str, resources: list[str], synchronous: bool = True) -> dict:
        """Push stored resources (Orthanc ids of instances, series or studies) to a peer
        by C-STORE (POST /modalities/<name>/store)."""
        body = {"Resources": resources, "Synchronous": synchronous}
        return self.post(f"/modalities/{modality}/store", json=body).json()

    def find(self, level: str, query: dict[str, str], expand: bool = False) -> list:
        """Orthanc ids (or, expanded, their descriptions) of the resources at `level`
        (Patient, Study, Series, Instance) that match a DICOM query."""
        body = {"Level": level, "Query": query, "Expand": expand}
        return self.post("/tools/find", json=body).json()

    def instances_of_study(self, study_uid: str) -> list[dict]:
        """Every stored instance of a study, with its MainDicomTags and ParentSeries."""
        (study,) = self.find("Study", {"StudyInstanceUID": study_uid}) or [None]
        if study is None:
            return []
        return self.get(f"/studies/{study}/instances").json()

    def file(self, orthanc_id: str) -> bytes:
        """The stored Part-10 file of one instance."""
        return self.get(f"/instances/{orthanc_id}/file").content

    def instance_count(self) -> int:
        return int(self.get("/statistics").json()["CountInstances"])
