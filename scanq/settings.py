"""All settings in one place, read from the environment with safe local defaults
(cookiecutter-flask style). Nothing here names a path of any particular machine: the
data directory defaults to `var/` under the current directory.

With no REDIS_URL, the URL of the private Redis that `scanq up` started is read from
`<data dir>/run/redis.url`, which is how a `scanq worker` started beside it finds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

DEFAULT_SECRET = "scanq-local-development-secret"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None
    port: int
    secret_key: str
    batch_size: int = 32  # images per queued task (a Batch row, one Celery message)
    # Rows per model call; None lets the worker pick by backbone and device
    # (models.batching). The last call of a job is padded up to it.
    model_batch_size: int | None = None
    # Model calls in flight at once in one worker process; None: 2 on a CPU, 1 on a GPU.
    model_streams: int | None = None
    # Which runtime scores on this worker (models.runtimes): "auto" is ONNX Runtime on a
    # CPU (a version's checked export) and TensorFlow on a GPU; "tensorflow" or "onnx".
    runtime: str = "auto"
    # ONNX Runtime's intra-op threads per call in flight; None shares the cores out.
    onnx_threads: int | None = None
    max_upload_bytes: int = 512 * 1024 * 1024
    max_files_per_job: int = 10_000
    max_archive_ratio: int = 100  # refuse archives that expand far beyond their size
    model_dir: Path = field(
        default_factory=lambda: Path(__file__).resolve().parent.parent / "models" / "default"
    )
    visibility_timeout: int = 3600
    # A scoring task still running after this many seconds (a file whose read never
    # ends, a stuck model call) ends its worker process: the batch is delivered again,
    # and the file in hand is left out as one that crashes would be. It includes the
    # first load of a model in a new process.
    batch_time_limit: int = 300
    environment: str = "development"  # SCANQ_ENV; "production" refuses unsafe defaults
    # A training run that has not reported for this long is taken for dead and failed.
    training_stall_seconds: int = 1800
    # An upload that has stored nothing for this long is taken for broken off.
    upload_stall_seconds: int = 600
    # Server folders a training request may name as its data (besides uploaded sets).
    dataset_roots: tuple[Path, ...] = ()
    # Beat looks for new or changed schedules at least this often (seconds).
    beat_interval: int = 5
    # Site monitoring (#21, models.drift): a day or week of at least `drift_min_images`
    # scored images alerts when its share flagged out of distribution passes
    # `drift_ood_share`, or its scores' or OOD scores' PSI passes `drift_psi` beyond
    # the level expected by chance. Recalibration needs `recalibrate_min` confirmed labels.
    drift_psi: float = 0.25
    drift_ood_share: float = 0.10
    drift_min_images: int = 30
    recalibrate_min: int = 50
    # DICOM in (issue #19): the listener's port (0: no listener), AE title and bind
    # address, and how long a study must stay without a new instance before it is
    # screened (seconds; Orthanc's StableAge, the MONAI gateway's grouping timeout).
    dicom_port: int = 11112
    dicom_ae: str = "SCANQ"
    dicom_host: str = "127.0.0.1"
    study_settle: int = 30
    # DICOM out (issue #19, pacs.dispatch): heat-map Secondary Captures per delivery (the
    # highest-scoring images; 0: the SR only), how long to wait for the heat maps, how
    # often a delivery is retried before it is marked failed, and the first retry's delay
    # (seconds; it doubles, up to ten minutes).
    results_heatmaps: int = 8
    results_heatmap_wait: int = 600
    delivery_retries: int = 8
    delivery_backoff: int = 10
    # A STOW-RS request is stored as it arrives, so it may be larger than an upload.
    stow_max_bytes: int = 4096 * 1024 * 1024
    # Failed logins allowed per client address and, separately, per account name
    # (Flask-Limiter's notation, limits separated by ';'); web.rate_limits.
    login_rate_limit: str = "5 per minute;20 per hour"
    # Reverse proxies in front of the web process that set X-Forwarded-For, -Proto and
    # -Host (web.app applies werkzeug's ProxyFix): with 0, the client address a login
    # limit counts is the proxy's, shared by every user behind it.
    proxy_hops: int = 0

    @property
    def study_sweep_seconds(self) -> float:
        """How often beat looks for settled studies: a fraction of the settle time, so
        a study waits at most a little longer than SCANQ_STUDY_SETTLE."""
        return float(min(10, max(1, self.study_settle // 4)))

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def scans_dir(self) -> Path:
        return self.data_dir / "scans"

    @property
    def versions_dir(self) -> Path:
        return self.data_dir / "model_versions"

    @property
    def datasets_dir(self) -> Path:
        """Uploaded training sets, one folder per archive content hash."""
        return self.data_dir / "datasets"

    @property
    def metrics_dir(self) -> Path:
        """prometheus_client's multiprocess files (PROMETHEUS_MULTIPROC_DIR) of gunicorn's
        workers (web.gunicorn_conf empties it when the server starts)."""
        return self.run_dir / "prometheus"

    @property
    def redis_url_file(self) -> Path:
        return self.run_dir / "redis.url"

    def version_dir(self, stored: str) -> Path:
        """A model version's folder: `builtin/<modality>` names a shipped model, anything
        else is relative to the data dir (shared by every machine that mounts it)."""
        if stored.startswith("builtin/"):
            return self.model_dir / stored.split("/", 1)[1]
        return self.data_dir / stored

    @property
    def admin_token_file(self) -> Path:
        """The first admin's token, written by the first `scanq up` for local commands."""
        return self.run_dir / "admin.token"

    def heatmap_path(self, version_id: int, sha256: str) -> Path:
        """Where the Grad-CAM picture of one image under one model version is kept."""
        return self.data_dir / "heatmaps" / f"v{version_id}" / f"{sha256}.png"

    def resolved_redis_url(self) -> str:
        """REDIS_URL, or the embedded server's URL; a clear error when neither exists."""
        if self.redis_url:
            return self.redis_url
        if self.redis_url_file.exists():
            return self.redis_url_file.read_text().strip()
        raise RuntimeError(
            "no Redis: set REDIS_URL, or start the local stack with `scanq up` "
            f"(which writes {self.redis_url_file})"
        )


# The values of SCANQ_RUNTIME (what each means: models.runtimes).
RUNTIMES = ("auto", "tensorflow", "onnx")


def _runtime(raw: str) -> str:
    value = raw.strip().lower() or "auto"
    if value not in RUNTIMES:
        raise ValueError(f"SCANQ_RUNTIME must be one of {', '.join(RUNTIMES)}, got {raw!r}")
    return value


def load_settings() -> Settings:
    data_dir = Path(os.environ.get("SCANQ_DATA_DIR", "var")).absolute()
    db_url = os.environ.get("DATABASE_URL") or f"sqlite:///{data_dir / 'scanq.sqlite3'}"
    # Heroku-style URLs name the driver "postgres"; SQLAlchemy wants psycopg 3 spelled out.
    if db_url.startswith("postgres://"):
        db_url = "postgresql+psycopg://" + db_url[len("postgres://") :]
    elif db_url.startswith("postgresql://"):
        db_url = "postgresql+psycopg://" + db_url[len("postgresql://") :]
    kwargs = {}
    if os.environ.get("SCANQ_MODEL_DIR"):
        kwargs["model_dir"] = Path(os.environ["SCANQ_MODEL_DIR"]).absolute()
    return Settings(
        data_dir=data_dir,
        database_url=db_url,
        redis_url=os.environ.get("REDIS_URL") or None,
        port=_int("SCANQ_PORT", 5000),
        secret_key=os.environ.get("SECRET_KEY", DEFAULT_SECRET),
        batch_size=_int("SCANQ_BATCH_SIZE", 32),
        model_batch_size=_int("SCANQ_MODEL_BATCH_SIZE", 0) or None,
        model_streams=_int("SCANQ_MODEL_STREAMS", 0) or None,
        runtime=_runtime(os.environ.get("SCANQ_RUNTIME", "auto")),
        onnx_threads=_int("SCANQ_ONNX_THREADS", 0) or None,
        max_upload_bytes=_int("SCANQ_MAX_UPLOAD_MB", 512) * 1024 * 1024,
        max_files_per_job=_int("SCANQ_MAX_FILES", 10_000),
        visibility_timeout=_int("SCANQ_VISIBILITY_TIMEOUT", 3600),
        batch_time_limit=_int("SCANQ_BATCH_TIME_LIMIT", 300),
        training_stall_seconds=_int("SCANQ_TRAINING_STALL", 1800),
        upload_stall_seconds=_int("SCANQ_UPLOAD_STALL", 600),
        beat_interval=_int("SCANQ_BEAT_INTERVAL", 5),
        drift_psi=_float("SCANQ_DRIFT_PSI", 0.25),
        drift_ood_share=_float("SCANQ_DRIFT_OOD_SHARE", 0.10),
        drift_min_images=_int("SCANQ_DRIFT_MIN_IMAGES", 30),
        recalibrate_min=_int("SCANQ_RECALIBRATE_MIN", 50),
        dicom_port=_int("SCANQ_DICOM_PORT", 11112),
        dicom_ae=os.environ.get("SCANQ_DICOM_AE", "SCANQ").strip() or "SCANQ",
        dicom_host=os.environ.get("SCANQ_DICOM_HOST", "127.0.0.1").strip() or "127.0.0.1",
        study_settle=_int("SCANQ_STUDY_SETTLE", 30),
        results_heatmaps=_int("SCANQ_RESULTS_HEATMAPS", 8),
        results_heatmap_wait=_int("SCANQ_RESULTS_HEATMAP_WAIT", 600),
        delivery_retries=_int("SCANQ_DELIVERY_RETRIES", 8),
        delivery_backoff=_int("SCANQ_DELIVERY_BACKOFF", 10),
        stow_max_bytes=_int("SCANQ_STOW_MAX_MB", 4096) * 1024 * 1024,
        login_rate_limit=os.environ.get("SCANQ_LOGIN_RATE_LIMIT", "").strip()
        or "5 per minute;20 per hour",
        proxy_hops=_int("SCANQ_PROXY_HOPS", 0),
        environment=os.environ.get("SCANQ_ENV", "development").strip().lower(),
        dataset_roots=tuple(
            Path(p).absolute()
            for p in os.environ.get("SCANQ_DATASET_ROOTS", "").split(os.pathsep)
            if p.strip()
        ),
        **kwargs,
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests that change the environment call `cache_clear()`."""
    return load_settings()
