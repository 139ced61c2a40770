"""What an object repository holds besides whole backups: damaged sidecars, backups whose object is gone, and
the leftovers of interrupted work (temporary files, objects without a sidecar, empty folders, unfinished
multipart uploads).

The classification here is pure: it works on a listing of stored objects, so it is the same for a local
directory and an S3 bucket. The repositories (`repository.base`, `local`, `s3`) list and remove.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backup_pipelines.repository.base import BackupRecord

SIDECAR_SUFFIX = ".json"
PARTIAL_MARK = ".partial-"
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")

PARTIAL = "partial"
NO_SIDECAR = "no sidecar"
EMPTY_FOLDER = "empty folder"
UNFINISHED_UPLOAD = "unfinished upload"


@dataclass(frozen=True)
class StoredObject:
    """One stored file or object: its path relative to the repository root, size and last change."""

    path: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class DamagedSidecar:
    """A sidecar that cannot be read as a backup record: the backup it describes is unusable until an operator
    repairs or removes it, and nothing deletes its object automatically."""

    path: str
    uri: str
    reason: str

    def describe(self) -> str:
        return f"DAMAGED sidecar {self.uri}: {self.reason}"


@dataclass
class Listing:
    """What a repository holds for a dataset (or all datasets): the readable backup records (oldest first),
    the damaged sidecars, and the object paths missing for each record (by backup id) where checking was
    cheap (one listing of the prefix)."""

    records: list[BackupRecord] = field(default_factory=list)
    damaged: list[DamagedSidecar] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)

    def is_missing(self, record: BackupRecord) -> bool:
        """True when an object of `record` (its data or a companion) is known to be gone."""
        return record.backup_id in self.missing

    @property
    def usable(self) -> list[BackupRecord]:
        """The records whose objects are all present (as far as the listing knows)."""
        return [record for record in self.records if not self.is_missing(record)]


@dataclass(frozen=True)
class Leftover:
    """Something interrupted work left in a repository, safe to remove once older than the leftover age:
    `kind` is one of PARTIAL, NO_SIDECAR, EMPTY_FOLDER, UNFINISHED_UPLOAD."""

    kind: str
    path: str
    uri: str
    size: int
    modified: datetime
    upload_id: str | None = None

    def describe(self) -> str:
        return f"{self.kind:<17} {self.uri}  {self.size:,} bytes, last changed {self.modified:%Y-%m-%d %H:%M} UTC"


def is_partial(path: str) -> bool:
    """True when `path` is a temporary name of a local write (`<name>.partial-<random>`)."""
    return PARTIAL_MARK in path.rsplit("/", 1)[-1]


def is_sidecar(path: str) -> bool:
    return path.endswith(SIDECAR_SUFFIX) and not is_partial(path)


def missing_objects(records: list[BackupRecord], present: set[str]) -> dict[str, list[str]]:
    """Given records and the set of paths present, return {backup id: its object paths not present}. A
    backup whose deletion has begun (a tombstone) is never reported: its objects go away on purpose."""
    missing: dict[str, list[str]] = {}
    for record in records:
        if record.expired_at is not None:
            continue
        paths = [record.object_path] + [record.companion_path(label) for label in record.companions]
        absent = [path for path in paths if path not in present]
        if absent:
            missing[record.backup_id] = absent
    return missing


def classify_leftover(dataset: str, item: StoredObject, paths: set[str]) -> str | None:
    """Given a stored object under `<dataset>/`, and every path present there, return its leftover kind
    (PARTIAL or NO_SIDECAR) or None when it belongs to a backup or is not ours. Only names this project
    writes are classified (`<dataset>/<partition>/<backup id>.<anything>`), so a stranger's file is never
    taken for a leftover."""
    parts = item.path.split("/")
    if len(parts) != 3 or parts[0] != dataset:
        return None
    partition, name = parts[1], parts[2]
    backup_id = name.split(".", 1)[0]
    if not BACKUP_ID.match(backup_id):
        return None
    if is_partial(name):
        return PARTIAL
    if f"{dataset}/{partition}/{backup_id}{SIDECAR_SUFFIX}" in paths:
        return None
    return NO_SIDECAR


def file_leftovers(dataset: str, objects: list[StoredObject], older_than: datetime) -> list[tuple[str, StoredObject]]:
    """Return (kind, object) for every leftover among `objects` (a listing of `<dataset>/`) last changed before
    `older_than`: temporary files, and objects (data, companions, restore-test markers) whose backup has no
    sidecar. The object of a damaged sidecar is not a leftover: its sidecar exists."""
    paths = {item.path for item in objects}
    found = []
    for item in objects:
        kind = classify_leftover(dataset, item, paths)
        if kind is not None and item.modified < older_than:
            found.append((kind, item))
    return found
