"""Content-addressed file store under the data directory: uploads (web.ingest) and
received DICOM instances (pacs.instances) are both kept here, by ONE writer.

Files are named by their SHA-256, never by anything from the sender, so a name cannot
escape the store and the same content sent twice is stored once. The writer takes the
content in chunks, hashing each as it is written to a temporary file inside the store,
and only then moves the file to its name (atomically: a reader never sees half a
file), so content of any size is never held whole in memory. It lives here, below
web/ and pacs/, because both write into the store and neither may import the other's
receiving code."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

STORE = "scans"  # the folder of the data directory that holds stored files


def stored_path(digest: str) -> str:
    """Where content of this SHA-256 is kept, relative to the data directory."""
    return f"{STORE}/{digest[:2]}/{digest[2:4]}/{digest}"


class ContentWriter:
    """A file written into the store as its content arrives: `write` chunks, then
    `commit` (names it by its hash) or `discard`. As a context manager it discards
    whatever was not committed when the block ends."""

    def __init__(self, root: Path):
        self.root = Path(root)
        folder = self.root / STORE
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".incoming-")
        self.path = Path(name)
        self._fh: BinaryIO = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self) -> tuple[str, str]:
        """(sha256, path relative to the data directory); the same content is kept once."""
        self._fh.close()
        self._done = True
        digest = self._hash.hexdigest()
        rel = stored_path(digest)
        target = self.root / rel
        if target.exists():
            self.path.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path, target)
        return digest, rel

    def discard(self) -> None:
        self._fh.close()
        self._done = True
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ContentWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self._done:
            self.discard()


def store_chunks(root: Path, chunks: Iterable[bytes]) -> tuple[str, str]:
    """Store the content `chunks` make; (sha256, path relative to the data directory)."""
    with ContentWriter(root) as writer:
        for chunk in chunks:
            writer.write(chunk)
        return writer.commit()


def store_bytes(root: Path, data: bytes) -> tuple[str, str]:
    """Store `data` (already in memory: an upload's file, a PNG frame)."""
    return store_chunks(root, (data,))
