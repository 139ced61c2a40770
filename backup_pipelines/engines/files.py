"""File trees through restic: one partition is one restic snapshot plus the walk recorded with it.

Backup walks the tree first (`file_walk`: every entry's path bytes, type, mode, owner, size, mtime, link
target, device numbers, xattrs, hard links, and the sha256 of regular files within the dataset's
`hash_budget_bytes`; digests of files unchanged since the previous walk are reused, not re-read), stores that
walk as its own restic snapshot (`repository.restic_walk`), then runs `restic backup` with a fixed host and
the same paths every time, so restic finds the parent snapshot and an unchanged tree costs a scan. The tree
snapshot's tags keep the old numbers (file count, bytes, sample digest). Fifos, sockets and devices are
reported in the log and the metadata: restic keeps fifos and devices, and drops sockets at restore.

Verify runs `restic check --read-data-subset`. The restore test restores the snapshot into a temporary
folder, repairs what restic 0.14 alters (`files_fingerprint.repair_restored`), walks the restored copy the same
way and compares the old numbers plus, with `verification.fingerprint`, every item of the fingerprint
(`files_fingerprint.tree_fingerprint`), naming each differing one. Files that change while the backup runs
can make the restore test disagree with the walk: the tree is meant to change slowly (configuration,
certificates, uploads); a busy tree belongs on a filesystem snapshot first.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from backup_pipelines.engines.base import CheckOutcome, RestoreReport
from backup_pipelines.engines.file_walk import Entry, Walk, decode_walk, encode_walk, hash_entries, walk
from backup_pipelines.engines.files_fingerprint import (
    fingerprint_method,
    legacy_numbers,
    legacy_sample,
    paths_to_hash,
    repair_restored,
    special_report,
    tree_fingerprint,
)
from backup_pipelines.engines.fingerprint import FINGERPRINT, FINGERPRINT_METHOD, compare_fingerprints
from backup_pipelines.engines.walk_cache import read_cached_walk, write_cached_walk
from backup_pipelines.errors import CommandFailedError, SourceUnavailableError, StorageError
from backup_pipelines.execute import Command, run
from backup_pipelines.file_names import escape_name
from backup_pipelines.manifest import FilesDataset, Manifest
from backup_pipelines.repository.base import BackupRecord, new_backup_id
from backup_pipelines.repository.restic import (
    HOST,
    TAG_BYTES,
    TAG_DATASET,
    TAG_FILES,
    TAG_ID,
    TAG_PARTITION,
    TAG_SAMPLE,
    ResticRepository,
)
from backup_pipelines.repository.restic_walk import (
    TAG_WALKED,
    declares_walk,
    read_latest_walk,
    read_walk,
    store_walk,
    walk_ids,
)
from backup_pipelines.threads import Worker

LOG = logging.getLogger("backup_pipelines")
REMOTE_WALK_MIN_BYTES = 256_000_000  # sha256 reads ~0.5 GB/s here; a restic dump costs about half a second


@functools.cache
def restic_version() -> str:
    """Return what `restic version` prints (restic has no --version flag), or "unavailable"."""
    try:
        return run(Command(("restic", "version")), timeout=30).strip().splitlines()[0]
    except (CommandFailedError, IndexError, subprocess.TimeoutExpired):
        return "unavailable"


def restic_backup_arguments(tags: list[str], patterns: list[str], roots: list[bytes], moment: datetime) -> list[str]:
    """Return the `restic backup` arguments: every value joined to its flag with "=" and the roots after
    "--", so patterns and paths starting with "-" stay values; roots as file-system strings (bytes kept)."""
    arguments = ["backup", "--json", f"--host={HOST}", f"--time={moment:%Y-%m-%d %H:%M:%S}"]
    arguments += [f"--tag={tag}" for tag in tags]
    arguments += [f"--exclude={pattern}" for pattern in patterns]
    return [*arguments, "--", *[os.fsdecode(root) for root in roots]]


def restic_summary(output: str, location: str) -> dict[str, Any]:
    """Return the summary message of `restic backup --json`. Raise StorageError if there is none."""
    for line in output.splitlines():
        if line.startswith("{") and '"message_type":"summary"' in line:
            return dict(json.loads(line))
    raise StorageError(f"restic backup into {location} printed no summary")


def _previous_entries(repository: ResticRepository, name: str, to_hash: int) -> list[Entry]:
    """Return the last walk's entries: from this machine's cache, else from the repository when the files to
    hash hold at least REMOTE_WALK_MIN_BYTES (reading them would cost more than a `restic dump`), else none."""
    data = read_cached_walk(name, repository.location)
    if not data and to_hash >= REMOTE_WALK_MIN_BYTES:
        data = read_latest_walk(repository, HOST, name)
    if not data:
        return []
    try:
        return decode_walk(data).entries
    except (ValueError, KeyError):
        return []


class PendingWalk:
    """A walk whose budgeted files are hashed on first use, once: in the thread that stores the walk, while
    restic reads the same files for the tree's snapshot."""

    def __init__(self, partial: Walk, chosen: set[bytes], previous: list[Entry]) -> None:
        self.partial, self._chosen, self._previous = partial, chosen, previous
        self._lock = threading.Lock()
        self._done: tuple[Walk, bytes] | None = None

    def result(self) -> tuple[Walk, bytes]:
        """Return the finished walk and its encoding (hashing on the first call)."""
        with self._lock:
            if self._done is None:
                entries = hash_entries(self.partial.entries, self._chosen, previous=self._previous)
                finished = replace(self.partial, entries=entries)
                self._done = (finished, encode_walk(finished))
            return self._done


def store_both(
    repository: ResticRepository, name: str, backup_id: str, pending: PendingWalk, arguments: list[str]
) -> dict[str, Any]:
    """Store the walk and back up the tree into `repository` as two restic runs at once; return the tree
    backup's summary. If the walk cannot be stored, forget the tree's snapshot and raise StorageError."""
    repository.ensure_initialized()
    walker = Worker(lambda: store_walk(repository, HOST, name, backup_id, pending.result()[1]), f"walk-{name}")
    walker.start()
    try:
        summary = restic_summary(repository.run(*arguments, timeout=None), repository.location)
    finally:
        walker.join()
    if walker.error is not None:
        repository.run("forget", str(summary["snapshot_id"]), timeout=600)
        raise StorageError(f"dataset {name}: the walk was not stored, so the snapshot was forgotten: {walker.error}")
    return summary


def _report_specials(name: str, entries: list[Entry], report: dict[str, Any]) -> None:
    if report["special_files"]:
        LOG.warning(
            f"dataset {name}: the tree holds special files {report['special_files']} (e.g. "
            f"{', '.join(report['special_paths'][:5])}): restic keeps fifos and devices, sockets are not restored"
        )
    odd = [entry for entry in entries if entry.type == "symlink" and entry.target and not _utf8(entry.target)]
    if odd:
        LOG.warning(
            f"dataset {name}: {len(odd)} symlink targets are not UTF-8 (e.g. {escape_name(odd[0].path)}): plain "
            "`restic restore` (0.14) alters them; restore_backup puts them back from the walk"
        )


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class FilesEngine:
    """The files engine (see the module docstring). It stores through restic itself."""

    kind = "files"
    format = "restic-snapshot"
    store_type = ResticRepository
    exact_copies = True

    def extension_for(self, manifest: Manifest, name: str) -> str:
        return "restic"

    def _dataset(self, manifest: Manifest, name: str) -> FilesDataset:
        dataset = manifest.dataset(name)
        assert isinstance(dataset, FilesDataset), f"{name} is a {dataset.kind} dataset, not files"
        return dataset

    def _roots(self, manifest: Manifest, dataset: FilesDataset) -> list[bytes]:
        return [os.fsencode(manifest.resolve_path(path)) for path in dataset.source.paths]

    def tool_versions(self, manifest: Manifest, name: str) -> dict[str, str]:
        return {"restic": restic_version()}

    def take_walk(
        self, dataset: FilesDataset, name: str, roots: list[bytes], repository: ResticRepository
    ) -> PendingWalk:
        """Walk the source tree and hash the old sample now (the snapshot's tags need its digest); the other
        files the dataset's verification asks for (see `paths_to_hash`) are hashed by the returned walk. Digests
        of files unchanged since the last walk (`_previous_entries`) are reused."""
        source = dataset.source
        entries = walk(roots, source.exclude)
        budget = source.hash_budget_bytes if dataset.verification.fingerprint else 0
        chosen, all_hashed = paths_to_hash(entries, budget, source.sample_files)
        to_hash = sum(entry.size for entry in entries if entry.path in chosen and entry.type == "file")
        previous = _previous_entries(repository, name, to_hash)
        entries = hash_entries(entries, set(legacy_sample(entries, source.sample_files)), previous=previous)
        return PendingWalk(Walk(roots, list(source.exclude), all_hashed, budget, entries), chosen, previous)

    def backup(
        self,
        manifest: Manifest,
        name: str,
        partition_key: str,
        repositories: list[ResticRepository],
        started_at: datetime | None,
    ) -> tuple[BackupRecord, dict[str, str]]:
        """Walk the tree, store the walk, then back up the tree into every restic repository; return the record
        and each snapshot's location. Raise SourceUnavailableError if a root is missing."""
        dataset = self._dataset(manifest, name)
        roots = self._roots(manifest, dataset)
        missing = [escape_name(root) for root in roots if not os.path.lexists(root)]
        if missing:
            raise SourceUnavailableError(f"dataset {name}: {', '.join(missing)} does not exist")
        started = time.monotonic()
        moment = (started_at or datetime.now(UTC)).astimezone(UTC)
        backup_id = new_backup_id(moment)
        repositories[0].ensure_initialized()
        pending = self.take_walk(dataset, name, roots, repositories[0])
        entries = pending.partial.entries
        specials = special_report(entries)
        _report_specials(name, entries, specials)
        legacy = legacy_numbers(entries, dataset.source.sample_files)
        tags = [
            f"{TAG_DATASET}{name}",
            f"{TAG_PARTITION}{partition_key}",
            f"{TAG_ID}{backup_id}",
            f"{TAG_FILES}{legacy['files']}",
            f"{TAG_BYTES}{legacy['bytes']}",
            f"{TAG_SAMPLE}{legacy['sample']}",
            TAG_WALKED,
        ]
        arguments = restic_backup_arguments(tags, dataset.source.exclude, roots, moment)
        summaries, locations = [], {}
        for repository in repositories:
            summary = store_both(repository, name, backup_id, pending, arguments)
            summaries.append(summary)
            locations[repository.name] = repository.uri(summary["snapshot_id"])
        recorded, walk_data = pending.result()
        write_cached_walk(name, repositories[0].location, walk_data)
        summary = summaries[0]
        hashed = [entry for entry in recorded.entries if entry.sha256 is not None]
        total = int(legacy["bytes"])  # type: ignore[call-overload]
        stats: dict[str, Any] = {
            **legacy,
            "files_new": summary.get("files_new", 0),
            "files_changed": summary.get("files_changed", 0),
            "bytes_added": summary.get("data_added", 0),
            "paths": [escape_name(root) for root in roots],
            "entries": len(recorded.entries),
            "hashed_files": len(hashed),
            "hashed_bytes": sum(entry.size for entry in hashed),
            "walk_bytes": len(walk_data),
            **specials,
        }
        if dataset.verification.fingerprint:
            stats[FINGERPRINT_METHOD] = fingerprint_method(recorded.entries, recorded.all_hashed, recorded.hash_budget)
        record = BackupRecord(
            dataset=name,
            partition_key=partition_key,
            backup_id=backup_id,
            kind="files",
            format=self.format,
            object_name=summary["snapshot_id"],
            created_at=moment.isoformat(),
            bytes_raw=total,
            bytes_stored=total,
            sha256="",
            compression="restic",
            encrypted=True,
            duration_seconds=round(time.monotonic() - started, 3),
            source_stats=stats,
            tool_versions=self.tool_versions(manifest, name),
        )
        return record, locations

    def verify(
        self, manifest: Manifest, name: str, repository: ResticRepository, record: BackupRecord
    ) -> dict[str, Any]:
        """Check the repository (structure plus a share of the data) and that the snapshot is there; say
        whether its walk is (backups made before walks were recorded have none)."""
        if repository.find_backup(record.dataset, record.backup_id) is None:
            raise StorageError(f"snapshot of backup {record.backup_id} is missing from {repository.location}")
        output = repository.run("check", f"--read-data-subset={repository.read_data_subset}", timeout=None)
        return {
            "restic_check": "no errors found" if "no errors were found" in output else output.strip()[-200:],
            "read_data_subset": repository.read_data_subset,
            "walk": "recorded" if walk_ids(repository, record.backup_id) else "none",
        }

    def compare_restored(
        self, dataset: FilesDataset, expected: dict[str, Any], recorded: Walk | None, roots: list[bytes], base: bytes
    ) -> tuple[list[CheckOutcome], dict[str, Any]]:
        """Walk the tree restored under `base` and compare it with the backup: the old numbers (`expected`, from
        the snapshot's tags) and, with verification.fingerprint and a recorded walk, every fingerprint item.
        Return the outcomes and the restored copy's numbers."""
        patterns = recorded.exclude if recorded else list(dataset.source.exclude)
        restored = walk(roots, patterns, base=base)
        sample_size = dataset.source.sample_files
        compare = dataset.verification.fingerprint and recorded is not None
        chosen = set(legacy_sample(restored, sample_size))
        if compare and recorded is not None:
            chosen |= {entry.path for entry in recorded.entries if entry.sha256 is not None}
        restored = hash_entries(restored, chosen, base=base)
        numbers = legacy_numbers(restored, sample_size)
        outcomes = [
            CheckOutcome(label, expected.get(key), numbers[key], expected.get(key) == numbers[key])
            for label, key in (("file count", "files"), ("total bytes", "bytes"), ("sample digest", "sample"))
        ]
        if compare and recorded is not None:
            outcomes += compare_fingerprints(
                {FINGERPRINT: tree_fingerprint(recorded.entries)}, {FINGERPRINT: tree_fingerprint(restored)}
            )
        return outcomes, {**numbers, "entries": len(restored)}

    def restore_test(
        self, manifest: Manifest, name: str, repository: ResticRepository, record: BackupRecord
    ) -> RestoreReport:
        """Restore the snapshot into a temporary folder, repair what restic alters, and compare it with the
        backup (`compare_restored`). The folder is deleted afterwards."""
        dataset = self._dataset(manifest, name)
        current = repository.find_backup(name, record.backup_id) or record
        data = read_walk(repository, record.backup_id)
        recorded = decode_walk(data) if data else None
        lost = recorded is None and declares_walk(repository, name, record.backup_id)
        paths = current.source_stats.get("paths") or record.source_stats.get("paths", [])
        roots = recorded.roots if recorded else [os.fsencode(path) for path in paths]
        with tempfile.TemporaryDirectory(prefix="bp-restic-restore-") as folder:
            started = time.monotonic()
            repository.run("restore", current.object_name, f"--target={folder}", timeout=None)
            if recorded is not None:
                repair_restored(recorded.entries, os.fsencode(folder))
            restore_seconds = time.monotonic() - started
            started = time.monotonic()
            outcomes, stats = self.compare_restored(dataset, current.source_stats, recorded, roots, os.fsencode(folder))
            validation_seconds = time.monotonic() - started
        if lost:  # the snapshot says a walk was stored with it: comparing less would hide that it is gone
            outcomes.append(CheckOutcome("walk recorded with the snapshot", "present", "missing", False))
        return RestoreReport(
            "temporary folder (deleted)", restore_seconds, validation_seconds, int(stats["bytes"]), outcomes, stats
        )

    def restore_to(
        self, manifest: Manifest, name: str, repository: ResticRepository, record: BackupRecord, target: str
    ) -> str:
        """Restore the snapshot under the new folder `target` (never into an existing one), then put back what
        restic 0.14 alters (symlink targets that are not UTF-8) from the recorded walk. The restore goes into a
        temporary sibling folder renamed to `target` once whole (see `engines.base.new_folder`)."""
        from backup_pipelines.engines.base import new_folder

        path = os.path.abspath(target)
        with new_folder(path) as folder:
            repository.run("restore", record.object_name, f"--target={folder}", timeout=None)
            data = read_walk(repository, record.backup_id)
            if data:
                repair_restored(decode_walk(data).entries, os.fsencode(folder))
        return path
