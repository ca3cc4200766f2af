"""A small client of the JSON API, used by `scanq submit/status/results/models`."""

from __future__ import annotations

import io
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cli.upload_body import StreamedMultipart
from models.readers import has_input_suffix, is_archive

FINAL_STATUSES = ("succeeded", "failed", "cancelled")

# Reads ride out a server whose database is briefly away (503 with Retry-After, which
# ScanQ's web sends then) or a proxy in front of a restarting web: about a minute in
# all. No server at all still fails within seconds (two connect retries). Submissions
# are not repeated: a streamed body cannot be sent twice, and a job may already exist.
READ_RETRY = Retry(
    total=12,
    connect=2,
    read=2,
    backoff_factor=0.5,
    backoff_max=10,
    status_forcelist=(502, 503, 504),
    allowed_methods=frozenset({"GET", "HEAD"}),
    respect_retry_after_header=True,
    raise_on_status=False,
)


class ApiError(RuntimeError):
    pass


def default_url() -> str:
    return os.environ.get("SCANQ_URL") or f"http://127.0.0.1:{os.environ.get('SCANQ_PORT', '5000')}"


def default_token() -> str | None:
    """$SCANQ_TOKEN, else the local admin token the first `scanq up` wrote."""
    if os.environ.get("SCANQ_TOKEN"):
        return os.environ["SCANQ_TOKEN"]
    from scanq.settings import load_settings

    path = load_settings().admin_token_file
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def zip_labelled_folder(root: Path) -> bytes:
    """The covid/ and non_covid/ images of a folder, and its labels.csv, as a .zip."""
    buf = io.BytesIO()
    n = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # images are compressed
        if (root / "labels.csv").is_file():
            zf.write(root / "labels.csv", "labels.csv")
        for label in ("covid", "non_covid"):
            for f in sorted((root / label).rglob("*")) if (root / label).is_dir() else []:
                if f.is_file() and has_input_suffix(f):
                    zf.write(f, f.relative_to(root).as_posix())
                    n += 1
    if n == 0:
        raise FileNotFoundError(f"{root} has no images in covid/ or non_covid/")
    return buf.getvalue()


def expand_paths(paths: list[str]) -> Iterator[Path]:
    """Files as given, and input files (models.readers) and zip archives found under
    given folders (sorted)."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and (has_input_suffix(f) or is_archive(f.name)):
                    yield f
        elif p.is_file():
            yield p
        else:
            raise FileNotFoundError(f"no such file or folder: {raw}")


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a connection error ("Connection refused"), not urllib3's
    whole chain of wrappers."""
    for _ in range(20):  # a chain can loop back on itself
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    text = str(exc)
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else text or type(exc).__name__


class Client:
    def __init__(self, base_url: str | None = None, timeout: float = 600, token: str | None = None):
        self.base = (base_url or default_url()).rstrip("/")
        self.http = requests.Session()
        for scheme in ("http://", "https://"):
            self.http.mount(scheme, HTTPAdapter(max_retries=READ_RETRY))
        token = token or default_token()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def _send(self, method: str, path: str, **kw) -> requests.Response:
        """One request; a server that cannot be reached is an ApiError that says where
        the client looked, like any refusal, so every command reports it the same way."""
        kw.setdefault("timeout", 60)
        try:
            resp = self.http.request(method, f"{self.base}{path}", **kw)
        except requests.ConnectionError as exc:
            reason = _root_cause(exc)
            raise ApiError(f"cannot reach ScanQ at {self.base} ({reason}); is it running? "
                           "Set SCANQ_URL or --url to where it is") from None  # fmt: skip
        except requests.Timeout:
            raise ApiError(f"ScanQ at {self.base} gave no answer in {kw['timeout']} s") from None
        return self._check(resp)

    def _check(self, resp: requests.Response) -> requests.Response:
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                msg = f"{err['code']}: {err['message']}"
            except (ValueError, KeyError, TypeError):
                msg = resp.text[:300]
            raise ApiError(f"HTTP {resp.status_code}: {msg}")
        return resp

    def submit(
        self,
        files: list[Path],
        modality: str,
        model_version: int | None = None,
        skip_out_of_distribution: bool = False,
    ) -> dict:
        fields = {"modality": modality}
        if model_version is not None:
            fields["model_version"] = str(model_version)
        if skip_out_of_distribution:
            fields["skip_out_of_distribution"] = "true"
        body = StreamedMultipart(fields, files)
        return self._send("POST", "/api/v1/jobs", data=body, timeout=self.timeout,
                          headers={"Content-Type": body.content_type}).json()  # fmt: skip

    def train(self, fields: dict, archive: bytes | None) -> dict:
        files = {"dataset": ("dataset.zip", archive)} if archive is not None else None
        return self._send(
            "POST", "/api/v1/training-jobs", data=fields, files=files, timeout=self.timeout
        ).json()

    def get(self, path: str, **params) -> requests.Response:
        return self._send("GET", path, params=params)

    def post(self, path: str) -> dict:
        return self._send("POST", path).json()

    def delete(self, path: str) -> None:
        self._send("DELETE", path)

    def job(self, job_id: str) -> dict:
        return self.get(f"/api/v1/jobs/{job_id}").json()

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        on_poll: Callable[[dict], None] | None = None,
    ) -> dict:
        """Poll a job until it ends; TimeoutError (with the last state) after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_poll:
                on_poll(job)
            if job["status"] in FINAL_STATUSES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not finish: {job}")
            time.sleep(interval)
