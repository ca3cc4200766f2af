"""Content-addressed file store under the data directory. Files are named by their
SHA-256, never by anything from the upload, so a name cannot escape the store and the
same file sent twice is stored once."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def store_bytes(root: Path, data: bytes) -> tuple[str, str]:
    """Write `data` once; returns (sha256, path relative to the data directory)."""
    digest = hashlib.sha256(data).hexdigest()
    rel = Path("scans") / digest[:2] / digest[2:4] / digest
    target = root / rel
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)  # atomic: a reader never sees half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return digest, rel.as_posix()
