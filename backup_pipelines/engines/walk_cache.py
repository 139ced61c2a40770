"""The last walk of each file-tree dataset, kept on the machine that took it.

Its digests spare re-reading files that did not change (`file_walk.hash_entries` trusts a digest only when
path, inode, size, mtime and ctime are equal, as restic trusts its parent snapshot), so an unchanged tree costs
stat calls only. It lives under `$XDG_CACHE_HOME/backup-pipelines/walks` (default `~/.cache/...`), one file
per dataset and repository. A missing or unreadable cache only costs time: the engine then reads the
previous walk from the repository, or hashes again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def cache_path(dataset: str, location: str) -> Path:
    """Return where the last walk of `dataset` backed up to repository `location` is kept."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "backup-pipelines" / "walks"
    return root / f"{dataset}-{hashlib.sha1(location.encode(), usedforsecurity=False).hexdigest()[:12]}.jsonl"


def read_cached_walk(dataset: str, location: str) -> bytes | None:
    """Return the cached walk, or None when there is none or it cannot be read."""
    try:
        return cache_path(dataset, location).read_bytes()
    except OSError:
        return None


def write_cached_walk(dataset: str, location: str, data: bytes) -> None:
    """Replace the cached walk atomically (a temporary file renamed); a failure is ignored (a cache)."""
    path = cache_path(dataset, location)
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".walk-", delete=False) as stream:
            temporary = Path(stream.name)
            stream.write(data)
        os.replace(temporary, path)
    except OSError:
        return
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)  # gone after a successful rename
