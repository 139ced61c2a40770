"""Parallel PostgreSQL restores: pg_restore runs several jobs (`--jobs=N`) only from a seekable file, so a large
archive is first written to a temporary file in a scratch folder, restored from there, and removed.

This module decides whether a restore takes that path (the archive is large, the scratch folder has room) and
holds the temporary file; postgres_restore builds and runs the pg_restore command either way. When the file
cannot be used the restore streams into one pg_restore as before: the parallel path never fails a restore.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from shutil import disk_usage

from backup_pipelines.engines.base import Feed
from backup_pipelines.system_user import SCRATCH_DIR_ENV
from backup_pipelines.units import human_bytes

LOG = logging.getLogger("backup_pipelines")
# Archives up to this raw size stream into one pg_restore: writing them to disk first would not pay off.
PARALLEL_THRESHOLD = 256 * 1024 * 1024
# The scratch folder must have room for the raw archive plus this share of it.
FREE_SPACE_MARGIN = 0.10
MAX_JOBS = 8


def parallel_jobs() -> int:
    """Return the number of pg_restore jobs for a parallel restore: the machine's cores, at least 2, at most 8."""
    return min(MAX_JOBS, max(2, os.cpu_count() or 1))


def raw_size_of(feed: Feed) -> int | None:
    """Return the raw archive size a restore's `feed` announces: its `bytes_raw` attribute, else the
    `bytes_raw` of the backup record it carries (`objects.DecodingFeed.record`), else None (unknown). None as
    well when the record says the database has fewer than two tables (see splittable_size)."""
    size = getattr(feed, "bytes_raw", None)
    record = getattr(feed, "record", None)
    if size is None:
        size = getattr(record, "bytes_raw", None)
    size = size if isinstance(size, int) and not isinstance(size, bool) else None
    return splittable_size(size, getattr(record, "source_stats", {}).get("table_count"))


def splittable_size(raw_size: int | None, table_count: int | None) -> int | None:
    """Return the raw size a parallel restore can share between its jobs: None (stream it) when the archive
    holds fewer than two tables, since pg_restore gives one table's data to one job: on a one-table database of
    1.4 GB the parallel path measured no faster and first spends seconds writing the file."""
    return None if table_count is not None and table_count < 2 else raw_size


def restore_jobs(raw_size: int | None, folder: str) -> int:
    """Given the raw archive size (None: unknown) and the scratch `folder`, return how many pg_restore jobs to
    run: 1 (stream the archive into one pg_restore) when the size is unknown or not above PARALLEL_THRESHOLD,
    or when `folder` lacks room for the archive plus FREE_SPACE_MARGIN (said at INFO); else parallel_jobs().
    Never raises: a folder that cannot be inspected means streaming."""
    if raw_size is None or raw_size <= PARALLEL_THRESHOLD:
        return 1
    needed = int(raw_size * (1 + FREE_SPACE_MARGIN))
    try:
        free = disk_usage(folder).free
    except OSError as error:
        LOG.info(f"pg_restore streams the archive with one job: cannot inspect scratch folder {folder}: {error}")
        return 1
    if free < needed:
        LOG.info(
            f"pg_restore streams the archive with one job: scratch folder {folder} has {human_bytes(free)} free, "
            f"a parallel restore needs {human_bytes(needed)} (the {human_bytes(raw_size)} archive plus "
            f"{FREE_SPACE_MARGIN:.0%}); set {SCRATCH_DIR_ENV} to a folder with room"
        )
        return 1
    return parallel_jobs()


def create_archive_file(folder: str) -> tuple[int, str] | None:
    """Create a new empty file in `folder`, readable and writable by its owner only (it will hold decrypted
    data); return its open descriptor and path, or None (said at INFO) if it cannot be created."""
    try:
        return tempfile.mkstemp(prefix="bp-restore-", suffix=".dump", dir=folder)
    except OSError as error:
        LOG.info(f"pg_restore streams the archive with one job: cannot create a file in {folder}: {error}")
        return None


@contextmanager
def archive_file(descriptor: int, path: str, feed: Feed) -> Iterator[str]:
    """Given a file made by create_archive_file, let `feed` write the raw archive into it and yield its path;
    remove the file afterwards whatever happens. Raise what `feed` or the writing raised."""
    try:
        with os.fdopen(descriptor, "wb") as file:
            feed(file)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
