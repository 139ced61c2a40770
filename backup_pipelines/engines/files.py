"""File trees through restic: one partition is one restic snapshot.

Backup walks the tree first (file count, bytes, and a digest over a deterministic sample of files: path,
mode, size, sha256) and records that in the snapshot's tags, then runs `restic backup` with a fixed host and
the same paths every time, so restic finds the parent snapshot and an unchanged tree costs only a scan.
Verify runs `restic check --read-data-subset`. The restore test restores the snapshot into a temporary folder
and recomputes count, bytes and sample digest on the restored files. Files that change while the backup runs
can make the restore test disagree with the walk: the tree is meant to change slowly (configuration,
certificates, uploads); a busy tree belongs on a filesystem snapshot first.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_pipelines.engines.base import CheckOutcome, RestoreReport
from backup_pipelines.errors import SourceUnavailableError, StorageError
from backup_pipelines.execute import tool_version
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


def excluded(path: str, patterns: list[str]) -> bool:
    """True when `path` matches a restic-style exclude pattern (on its base name or on the full path)."""
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(path, pattern) for pattern in patterns)


def walk(roots: list[Path], patterns: list[str], base: Path | None = None) -> dict[str, tuple[int, int]]:
    """Return {path: (mode, size)} of every regular file under `roots`, paths as the source knows them; with
    `base`, the files are read under `base` (a restore target) but keyed by their source path."""
    files: dict[str, tuple[int, int]] = {}
    prefix = str(base) if base else ""

    def visit(logical: str) -> None:
        with os.scandir(prefix + logical) as entries:
            for entry in entries:
                path = f"{logical}/{entry.name}"
                if patterns and excluded(path, patterns):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    visit(path)
                elif entry.is_file(follow_symlinks=False):
                    status = entry.stat(follow_symlinks=False)
                    files[path] = (status.st_mode & 0o7777, status.st_size)

    for root in roots:
        top = Path(prefix + str(root))
        if top.is_dir():
            visit(str(root))
        elif top.is_file() and not top.is_symlink():
            status = top.lstat()
            files[str(root)] = (status.st_mode & 0o7777, status.st_size)
    return files


def sample(files: dict[str, tuple[int, int]], size: int) -> list[str]:
    """Return a deterministic sample of `size` paths (all when `size` is 0 or larger than the tree)."""
    ordered = sorted(files, key=lambda path: hashlib.sha1(path.encode()).hexdigest())
    return ordered if size == 0 or size >= len(ordered) else ordered[:size]


def sample_digest(files: dict[str, tuple[int, int]], paths: list[str], base: Path | None = None) -> str:
    """Return one sha256 over (path, mode, size, content sha256) of each sampled file, read under `base`."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        content = hashlib.sha256()
        with open(str(base) + path if base else path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                content.update(chunk)
        mode, size = files[path]
        digest.update(f"{path}\0{mode:o}\0{size}\0{content.hexdigest()}\n".encode())
    return digest.hexdigest()


class FilesEngine:
    """The files engine (see the module docstring). It stores through restic itself."""

    kind = "files"
    format = "restic-snapshot"
    store_type = ResticRepository

    def extension_for(self, manifest: Manifest, name: str) -> str:
        return "restic"

    def _dataset(self, manifest: Manifest, name: str) -> FilesDataset:
        dataset = manifest.dataset(name)
        assert isinstance(dataset, FilesDataset), f"{name} is a {dataset.kind} dataset, not files"
        return dataset

    def _roots(self, manifest: Manifest, dataset: FilesDataset) -> list[Path]:
        return [manifest.resolve_path(path) for path in dataset.source.paths]

    def tool_versions(self, manifest: Manifest, name: str) -> dict[str, str]:
        return {"restic": tool_version("restic")}

    def backup(
        self,
        manifest: Manifest,
        name: str,
        partition_key: str,
        repositories: list[ResticRepository],
        started_at: datetime | None,
    ) -> tuple[BackupRecord, dict[str, str]]:
        """Back up the tree into every restic repository; return the record and each snapshot's location."""
        dataset = self._dataset(manifest, name)
        roots = self._roots(manifest, dataset)
        missing = [str(root) for root in roots if not root.exists()]
        if missing:
            raise SourceUnavailableError(f"dataset {name}: {', '.join(missing)} does not exist")
        started = time.monotonic()
        moment = (started_at or datetime.now(UTC)).astimezone(UTC)
        backup_id = new_backup_id(moment)
        files = walk(roots, dataset.source.exclude)
        digest = sample_digest(files, sample(files, dataset.source.sample_files))
        total = sum(size for _, size in files.values())
        tags = [
            f"{TAG_DATASET}{name}",
            f"{TAG_PARTITION}{partition_key}",
            f"{TAG_ID}{backup_id}",
            f"{TAG_FILES}{len(files)}",
            f"{TAG_BYTES}{total}",
            f"{TAG_SAMPLE}{digest}",
        ]
        arguments = ["backup", "--json", "--host", HOST, "--time", f"{moment:%Y-%m-%d %H:%M:%S}"]
        arguments += [argument for tag in tags for argument in ("--tag", tag)]
        arguments += [argument for pattern in dataset.source.exclude for argument in ("--exclude", pattern)]
        summaries, locations = [], {}
        for repository in repositories:
            repository.ensure_initialized()
            output = repository.run(*arguments, *[str(root) for root in roots], timeout=None)
            summary = next(
                (
                    json.loads(line)
                    for line in output.splitlines()
                    if line.startswith("{") and '"message_type":"summary"' in line
                ),
                None,
            )
            if summary is None:
                raise StorageError(f"restic backup into {repository.location} printed no summary")
            summaries.append(summary)
            locations[repository.name] = repository.uri(summary["snapshot_id"])
        summary = summaries[0]
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
            source_stats={
                "files": len(files),
                "bytes": total,
                "sample": digest,
                "files_new": summary.get("files_new", 0),
                "files_changed": summary.get("files_changed", 0),
                "bytes_added": summary.get("data_added", 0),
                "paths": [str(root) for root in roots],
            },
            tool_versions=self.tool_versions(manifest, name),
        )
        return record, locations

    def verify(
        self, manifest: Manifest, name: str, repository: ResticRepository, record: BackupRecord
    ) -> dict[str, Any]:
        """Check the repository (structure plus a share of the data) and that the snapshot is there."""
        if repository.find_backup(record.dataset, record.backup_id) is None:
            raise StorageError(f"snapshot of backup {record.backup_id} is missing from {repository.location}")
        output = repository.run("check", f"--read-data-subset={repository.read_data_subset}", timeout=None)
        return {
            "restic_check": "no errors found" if "no errors were found" in output else output.strip()[-200:],
            "read_data_subset": repository.read_data_subset,
        }

    def restore_test(
        self, manifest: Manifest, name: str, repository: ResticRepository, record: BackupRecord
    ) -> RestoreReport:
        """Restore the snapshot into a temporary folder and compare count, bytes and the sample digest."""
        dataset = self._dataset(manifest, name)
        current = repository.find_backup(name, record.backup_id) or record
        roots = [Path(path) for path in current.source_stats.get("paths") or record.source_stats.get("paths", [])]
        folder = Path(tempfile.mkdtemp(prefix="bp-restic-restore-"))
        try:
            started = time.monotonic()
            repository.run("restore", current.object_name, "--target", str(folder), timeout=None)
            restore_seconds = time.monotonic() - started
            started = time.monotonic()
            files = walk(roots, dataset.source.exclude, base=folder)
            restored_total = sum(size for _, size in files.values())
            digest = sample_digest(files, sample(files, dataset.source.sample_files), base=folder)
            expected = current.source_stats
            outcomes = [
                CheckOutcome("file count", expected.get("files"), len(files), expected.get("files") == len(files)),
                CheckOutcome(
                    "total bytes", expected.get("bytes"), restored_total, expected.get("bytes") == restored_total
                ),
                CheckOutcome("sample digest", expected.get("sample"), digest, expected.get("sample") == digest),
            ]
            validation_seconds = time.monotonic() - started
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        stats = {"files": len(files), "bytes": restored_total, "sample": digest}
        return RestoreReport(
            "temporary folder (deleted)", restore_seconds, validation_seconds, restored_total, outcomes, stats
        )

    def restore_to(
        self, manifest: Manifest, name: str, repository: ResticRepository, record: BackupRecord, target: str
    ) -> str:
        """Restore the snapshot under the new folder `target` (never into an existing one)."""
        path = Path(target).resolve()
        path.mkdir(parents=True, exist_ok=False)
        repository.run("restore", record.object_name, "--target", str(path), timeout=None)
        return str(path)
