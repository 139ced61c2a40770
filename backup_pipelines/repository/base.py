"""What every object repository offers, and the record (sidecar) that makes a stored backup exist.

Layout: `<prefix>/<dataset>/<partition>/<backup_id>.<ext>` plus `<backup_id>.json` beside it. The data object
is written first (atomically: a temporary name or a multipart upload), the JSON sidecar **last**. A backup
exists only when its sidecar exists; listing reads sidecars only, so an interrupted upload never looks like a
backup. Deletion removes the data, then the sidecar.
"""

from __future__ import annotations

import json
import logging
import secrets
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any

from backup_pipelines.errors import IntegrityError, StorageError
from backup_pipelines.repository.inventory import (
    NO_SIDECAR,
    SIDECAR_SUFFIX,
    DamagedSidecar,
    Leftover,
    Listing,
    StoredObject,
    file_leftovers,
    is_partial,
    is_sidecar,
    missing_objects,
)

RESTORE_TESTED_SUFFIX = ".restore-tested"
LOG = logging.getLogger("backup_pipelines")


class DamagedSidecarError(IntegrityError):
    """A sidecar is not a readable backup record (cut short, empty, wrong fields)."""


class MissingObjectError(StorageError):
    """The object asked for does not exist (as opposed to a repository that cannot be reached)."""


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "dataset": str,
    "partition_key": str,
    "backup_id": str,
    "kind": str,
    "format": str,
    "object_name": str,
    "created_at": str,
    "bytes_raw": int,
    "bytes_stored": int,
    "sha256": str,
    "compression": str,
    "encrypted": bool,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "recipients": list,
    "duration_seconds": (int, float),
    "source_stats": dict,
    "tool_versions": dict,
    "expired_at": (str, type(None)),
    "companions": dict,
    "quarantine_reason": (str, type(None)),
    "quarantined_at": (str, type(None)),
}


def _record_problems(values: Any) -> list[str]:
    """Given a sidecar's decoded JSON, return what keeps it from being a backup record (empty when none)."""
    if not isinstance(values, dict):
        return [f"holds a JSON {type(values).__name__}, not an object"]
    absent = [name for name in _REQUIRED if name not in values]
    problems = [f"lacks {', '.join(absent)}"] if absent else []
    for name, wanted in {**_REQUIRED, **_OPTIONAL}.items():
        value = values.get(name)
        wrong_bool = isinstance(value, bool) and wanted is int
        if name in values and (not isinstance(value, wanted) or wrong_bool):
            problems.append(f"{name} is {type(value).__name__} {str(value)[:40]!r}")
    companions = values.get("companions") or {}
    if isinstance(companions, dict) and not all(
        isinstance(item, dict) and isinstance(item.get("object_name"), str) for item in companions.values()
    ):
        problems.append("a companion has no object_name")
    if not problems:
        try:
            datetime.fromisoformat(values["created_at"])
        except ValueError:
            problems.append(f"created_at {values['created_at'][:40]!r} is not a date")
    return problems


@dataclass(frozen=True)
class BackupRecord:
    """Everything known about one stored backup: written as its JSON sidecar, read back by list/verify."""

    dataset: str
    partition_key: str
    backup_id: str
    kind: str
    format: str
    object_name: str
    created_at: str
    bytes_raw: int
    bytes_stored: int
    sha256: str
    compression: str
    encrypted: bool
    recipients: list[str] = field(default_factory=list)
    duration_seconds: float = 0.0
    source_stats: dict[str, Any] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=dict)
    expired_at: str | None = None
    # Small objects stored beside the main one, encoded the same way (e.g. a PostgreSQL database's roles and
    # properties): {label: {"object_name", "sha256", "bytes_raw", "bytes_stored"}}. Part of the backup: copied,
    # verified and deleted with it.
    companions: dict[str, dict[str, Any]] = field(default_factory=dict)
    quarantine_reason: str | None = None
    quarantined_at: str | None = None

    @property
    def quarantined(self) -> bool:
        """True when a blocking check failed on this backup (or an operator quarantined it): it is kept and
        listed, but never offered as the newest backup and never counted by retention's keep rules."""
        return self.quarantine_reason is not None

    @property
    def directory(self) -> str:
        """The path of the backup's folder relative to the repository root."""
        return f"{self.dataset}/{self.partition_key}"

    @property
    def object_path(self) -> str:
        return f"{self.directory}/{self.object_name}"

    def companion_path(self, label: str) -> str:
        """Where companion object `label` of this backup is stored, relative to the repository root."""
        return f"{self.directory}/{self.companions[label]['object_name']}"

    @property
    def sidecar_path(self) -> str:
        return f"{self.directory}/{self.backup_id}{SIDECAR_SUFFIX}"

    @property
    def marker_path(self) -> str:
        """Where a passed restore test of this backup is recorded."""
        return f"{self.directory}/{self.backup_id}{RESTORE_TESTED_SUFFIX}"

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> BackupRecord:
        """Given a sidecar's bytes, return its record. Raise DamagedSidecarError saying what is wrong when it
        is not valid JSON or lacks a field (or holds one of the wrong type)."""
        try:
            values = json.loads(data)
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            raise DamagedSidecarError(f"not valid JSON ({len(data)} bytes): {error}") from error
        problems = _record_problems(values)
        if problems:
            raise DamagedSidecarError("; ".join(problems))
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in values.items() if key in known})


def new_backup_id(now: datetime | None = None) -> str:
    """Return a new backup id that sorts by creation time: `20260301T050312Z-1a2b3c`."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class ObjectWriter(ABC):
    """Receives a new object's bytes. Nothing is visible under the final name until `commit()`."""

    @abstractmethod
    def write(self, data: bytes) -> int: ...

    @abstractmethod
    def commit(self) -> None:
        """Make the object visible under its final name. Raise StorageError if that fails."""

    @abstractmethod
    def abort(self) -> None:
        """Discard everything written; never raises."""


class BackupStore(ABC):
    """Anything backups live in, as retention, list and the runbook see it: object repositories (below) and
    restic repositories (`repository.restic`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def uri(self, path: str) -> str:
        """Return the URI of `path` (a backup's object path), usable with standard tools."""

    @abstractmethod
    def list_backups(self, dataset: str | None = None, include_expiring: bool = False) -> list[BackupRecord]:
        """Return the committed backups, oldest first, optionally of one dataset."""

    @abstractmethod
    def delete_backup(self, record: BackupRecord) -> None:
        """Delete one backup so that an interruption never leaves something that looks whole."""

    @abstractmethod
    def restore_tested(self, dataset: str) -> set[str]:
        """Return the ids of the backups of `dataset` whose restore test passed."""

    @abstractmethod
    def mark_restore_tested(self, record: BackupRecord, details: dict[str, Any]) -> None:
        """Record that `record` passed verify and a real restore test."""

    def set_quarantine(self, record: BackupRecord, reason: str | None, at: str | None = None) -> None:
        """Mark `record` quarantined with `reason` (at time `at`, an ISO string), or release it (`reason` None).
        Raise StorageError if the repository refuses the change (or, as here, cannot carry the mark)."""
        raise StorageError(f"repository {self.name} cannot mark backups quarantined")

    def scan(self, dataset: str | None = None, include_expiring: bool = False) -> Listing:
        """Return the committed backups as a Listing. Stores that keep their own catalogue (restic, AWS) have no
        sidecars to damage and no objects to check cheaply: their listing holds the records only."""
        return Listing(records=self.list_backups(dataset, include_expiring))

    def find_backup(self, dataset: str, backup_id: str) -> BackupRecord | None:
        """Return the committed backup `backup_id` of `dataset`, or None."""
        for record in self.list_backups(dataset):
            if record.backup_id == backup_id:
                return record
        return None

    def locked_until(self, record: BackupRecord) -> datetime | None:
        """Return until when the storage forbids deleting the backup (object lock), or None."""
        return None

    def prerequisites(self, record: BackupRecord) -> set[str]:
        """Return the ids of the backups `record` cannot be restored without (an incremental's full)."""
        return set()

    def finish_deletes(self) -> None:  # noqa: B027 - optional hook, empty on purpose
        """Called once after a prune deleted backups (restic reclaims space here)."""


class Repository(BackupStore):
    """An object repository: a local directory or an S3 bucket/prefix, one object plus a sidecar per backup."""

    @abstractmethod
    def open_writer(self, path: str) -> ObjectWriter:
        """Return a writer for a new object at `path`."""

    @abstractmethod
    def put_bytes(self, path: str, data: bytes) -> None:
        """Store small `data` at `path` atomically (used for sidecars)."""

    @abstractmethod
    def open_object(self, path: str) -> IO[bytes]:
        """Return a stream of the object at `path`. Raise StorageError if it is missing or unreadable."""

    @abstractmethod
    def list_objects(self, prefix: str) -> list[StoredObject]:
        """Return every object under `prefix` ("" for all), temporary ones included, with size and time.
        Raise StorageError if the repository cannot be listed."""

    def list_paths(self, prefix: str, suffix: str) -> list[str]:
        """Return the paths under `prefix` ending with `suffix`, sorted (temporary files left out)."""
        objects = self.list_objects(prefix)
        return sorted(item.path for item in objects if item.path.endswith(suffix) and not is_partial(item.path))

    @abstractmethod
    def exists(self, path: str) -> bool:
        """True when an object is stored at `path`. Raise StorageError if that cannot be told."""

    @abstractmethod
    def read_bytes(self, path: str) -> bytes:
        """Return the whole (small) object at `path`. Raise StorageError if it is missing."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Delete the object at `path` (missing is fine). Raise StorageError if deletion fails."""

    def commit_record(self, record: BackupRecord) -> None:
        """Write `record`'s sidecar: the step that makes the backup exist."""
        self.put_bytes(record.sidecar_path, record.to_json())

    def list_backups(self, dataset: str | None = None, include_expiring: bool = False) -> list[BackupRecord]:
        """Return the committed backups (those with a readable sidecar), oldest first, optionally of one
        dataset. A damaged sidecar is skipped with a warning naming it (see `scan`).

        A backup whose deletion has begun (its sidecar is a tombstone with `expired_at`) is gone for
        everyone but the prune that finishes it (`include_expiring`)."""
        return self.scan(dataset, include_expiring).records

    def scan(self, dataset: str | None = None, include_expiring: bool = False) -> Listing:
        """Return what the repository holds (of `dataset`, or all): the readable records oldest first, the
        damaged sidecars (each logged as a warning), and the records whose objects are missing, all from one
        listing of the prefix plus one read per sidecar. Raise StorageError if the prefix cannot be listed."""
        objects = self.list_objects(f"{dataset}/" if dataset else "")
        present = {item.path for item in objects}
        listing = Listing()
        for path in sorted(path for path in present if is_sidecar(path)):
            try:
                record = self._read_record(path)
            except MissingObjectError:
                continue  # deleted since the listing: a prune finished it
            except (DamagedSidecarError, StorageError) as error:
                listing.damaged.append(DamagedSidecar(path, self.uri(path), str(error)))
                LOG.warning(f"skipping the damaged sidecar {self.uri(path)}: {error}")
                continue
            if include_expiring or record.expired_at is None:
                listing.records.append(record)
        listing.records.sort(key=lambda record: (record.created_at, record.partition_key, record.backup_id))
        listing.missing = missing_objects(listing.records, present)
        return listing

    def _read_record(self, path: str) -> BackupRecord:
        """Return the record of the sidecar at `path`. Raise DamagedSidecarError if it is unreadable or lies
        elsewhere than where its own fields put it (deleting by it could then hit another backup)."""
        record = BackupRecord.from_json(self.read_bytes(path))
        if record.sidecar_path != path:
            raise DamagedSidecarError(f"describes {record.sidecar_path}, not this file")
        return record

    def leftovers(self, dataset: str, older_than: datetime) -> list[Leftover]:
        """Return what interrupted work left under `<dataset>/` and nobody changed since `older_than`:
        temporary files and objects whose backup has no sidecar (see `inventory.file_leftovers`)."""
        found = file_leftovers(dataset, self.list_objects(f"{dataset}/"), older_than)
        return [Leftover(kind, item.path, self.uri(item.path), item.size, item.modified) for kind, item in found]

    def remove_leftover(self, leftover: Leftover) -> bool:
        """Remove `leftover`; return False when it turned out not to be one any more (its backup's sidecar
        appeared since it was found). Raise StorageError if the removal fails."""
        if leftover.kind == NO_SIDECAR:
            directory, name = leftover.path.rsplit("/", 1)
            if self.exists(f"{directory}/{name.split('.', 1)[0]}{SIDECAR_SUFFIX}"):
                return False
        self.delete(leftover.path)
        return True

    def discard(self, paths: list[str]) -> None:
        """Delete `paths` in order, best effort, after a failed commit: log what cannot be deleted (the next
        prune removes it as a leftover) and never raise."""
        for path in paths:
            try:
                self.delete(path)
            except Exception as error:
                LOG.warning(f"could not remove {self.uri(path)} after a failed commit: {error}")

    def set_quarantine(self, record: BackupRecord, reason: str | None, at: str | None = None) -> None:
        """Rewrite `record`'s sidecar (one atomic put) with the quarantine mark set or cleared. The sidecar is
        read again first, so a backup whose deletion has begun is left alone (a tombstone stays one); raise
        StorageError if the backup is gone."""
        current = BackupRecord.from_json(self.read_bytes(record.sidecar_path))
        if current.expired_at is not None:
            return
        at = (at or datetime.now(UTC).isoformat()) if reason is not None else None
        self.put_bytes(record.sidecar_path, replace(current, quarantine_reason=reason, quarantined_at=at).to_json())

    def restore_tested(self, dataset: str) -> set[str]:
        """Return the ids of the backups of `dataset` whose restore test passed (markers in the repository)."""
        paths = self.list_paths(f"{dataset}/", RESTORE_TESTED_SUFFIX)
        return {path.rsplit("/", 1)[-1].removesuffix(RESTORE_TESTED_SUFFIX) for path in paths}

    def mark_restore_tested(self, record: BackupRecord, details: dict[str, Any]) -> None:
        """Record in the repository that `record` passed verify and a real restore test."""
        self.put_bytes(record.marker_path, json.dumps(details, sort_keys=True).encode())

    def delete_backup(self, record: BackupRecord) -> None:
        """Delete a backup: first turn its sidecar into a tombstone (from then on it is gone for list, verify
        and restore), then delete the data and the restore-test marker, and the sidecar last. An interrupted
        delete leaves only a tombstone, which the next delete finds and finishes."""
        if record.expired_at is None:
            record = replace(record, expired_at=datetime.now(UTC).isoformat())
            self.put_bytes(record.sidecar_path, record.to_json())
        self.delete(record.object_path)
        for label in record.companions:
            self.delete(record.companion_path(label))
        self.delete(record.marker_path)
        self.delete(record.sidecar_path)
