"""The three things done to a dataset, without Dagster: back it up, verify a backup, restore-test a backup.

The Dagster assets and the operator CLI both call these. Each takes the manifest and a dataset name and
reaches the dataset's engine and repositories only through their dispatch points.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from backup_pipelines.archive_check import ArchiveCheck
from backup_pipelines.crypto import fingerprint, load_identities
from backup_pipelines.engines import STORING_ENGINES, RestoreReport, engine_for
from backup_pipelines.engines.base import restore_to_file
from backup_pipelines.errors import BackupError, CommandFailedError, IntegrityError, StorageError, ValidationFailedError
from backup_pipelines.manifest import Manifest
from backup_pipelines.objects import decoding_feed, read_companions, store_companions
from backup_pipelines.repository import (
    BackupRecord,
    BackupStore,
    Repository,
    new_backup_id,
    open_object_repository,
    open_repository,
)
from backup_pipelines.stream import decode, encode

LOG = logging.getLogger("backup_pipelines")


@dataclass(frozen=True)
class StoredBackup:
    """A committed backup and the URIs of its copies, one per repository."""

    record: BackupRecord
    locations: dict[str, str]


def object_extension(manifest: Manifest, name: str, encrypted: bool) -> str:
    """Return the stored object's file extension, which tells the standard tools to use to read it."""
    raw = engine_for(manifest.dataset(name).kind).extension_for(manifest, name)
    return f"{raw}.zst" + (".age" if encrypted else "")


def run_backup(
    manifest: Manifest, name: str, partition_key: str, log: Any = LOG, started_at: datetime | None = None
) -> StoredBackup:
    """Back up dataset `name` as partition `partition_key` into the dataset's primary (first) repository;
    `copies.copy_backup` then copies it to the others.

    Stream the engine's dump through zstd and age into the repository; commit the object and then the
    sidecar only if every tool exited 0 and every write succeeded. Return the committed backup.
    Raise SourceUnavailableError, CommandFailedError, StorageError or MissingSecretError otherwise; in that
    case no repository holds a sidecar for this backup, so no half-written backup looks complete.
    `started_at` overrides the recorded backup time (tests and history replays only).
    """
    dataset = manifest.dataset(name)
    if dataset.kind in STORING_ENGINES:  # restic (file trees) and AWS (snapshots) store for themselves
        record, locations = STORING_ENGINES[dataset.kind].backup(
            manifest, name, partition_key, _own_stores(manifest, name)[:1], started_at
        )
        return StoredBackup(record, locations)
    engine = engine_for(dataset.kind)
    recipients = manifest.recipients_for(name)
    repository = open_object_repository(manifest, dataset.repositories[0])  # copies: copies.copy_backup
    started_at = started_at or datetime.now(UTC)
    backup_id = new_backup_id(started_at)
    object_name = f"{backup_id}.{object_extension(manifest, name, bool(recipients))}"
    path = f"{name}/{partition_key}/{object_name}"
    started = time.monotonic()
    writer = repository.open_writer(path)
    check = ArchiveCheck(engine.archive_check_command(manifest, name))
    failed = True
    try:
        with engine.dump(manifest, name) as dump:
            log.info(f"backing up {name} partition {partition_key} to {repository.uri(path)}")
            compression = dataset.compression
            result = encode(dump.stream, writer, recipients, compression.level, check, compression.threads)
            source_stats = dump.finish()
        source_stats["archive_check"] = _whole_archive(engine, name, check)
        writer.commit()
        failed = False
    except BaseException:
        writer.abort()
        repository.discard([path])  # a commit can fail after the object was stored (a lost reply, an fsync)
        raise
    finally:
        check.close(failed)
    try:
        companions = store_companions(repository, f"{name}/{partition_key}", backup_id, dump.companions, recipients)
    except BaseException:
        repository.discard([path])
        raise
    record = BackupRecord(
        dataset=name,
        partition_key=partition_key,
        backup_id=backup_id,
        kind=dataset.kind,
        format=engine.format,
        object_name=object_name,
        created_at=started_at.isoformat(),
        bytes_raw=result.bytes_raw,
        bytes_stored=result.bytes_stored,
        sha256=result.sha256,
        compression="zstd",
        encrypted=bool(recipients),
        recipients=recipients,
        duration_seconds=round(time.monotonic() - started, 3),
        source_stats=source_stats,
        tool_versions={**engine.tool_versions(manifest, name), "age": "pyrage (age v1 format)"},
        companions=companions,
    )
    try:
        repository.commit_record(record)
    except BaseException:  # the sidecar first: it may have been written even though its write failed
        companion_paths = [record.companion_path(label) for label in record.companions]
        repository.discard([record.sidecar_path, path, *companion_paths])
        raise
    return StoredBackup(record, {repository.name: repository.uri(record.object_path)})


def _whole_archive(engine: Any, name: str, check: ArchiveCheck) -> dict[str, Any]:
    """Return the archive check's summary of the dump just written. Raise IntegrityError when the check says
    the dump is not whole: a source tool that stopped early, even with exit status 0."""
    try:
        return dict(engine.summarize_archive_listing(check.finish()))
    except (CommandFailedError, IntegrityError) as error:
        raise IntegrityError(f"the dump of {name} is not whole, so it was not committed: {error}") from error


def _own_stores(manifest: Manifest, name: str) -> list[Any]:
    """The repositories of a dataset whose kind stores for itself, of the type its engine works on."""
    dataset = manifest.dataset(name)
    store_type = STORING_ENGINES[dataset.kind].store_type
    stores = [open_repository(manifest, repository) for repository in dataset.repositories]
    return [store for store in stores if isinstance(store, store_type)]


def _listings(
    manifest: Manifest, name: str, unreachable: list[str]
) -> Iterator[tuple[BackupStore, list[BackupRecord]]]:
    """Yield each repository of dataset `name` with its committed backups, in manifest order. One that cannot
    be listed (a lost disk, a region or bucket down) is skipped with a warning and noted in `unreachable`, so
    a restore goes on with the next copy: that is what copies are for."""
    for repository_name in manifest.dataset(name).repositories:
        try:
            repository = open_repository(manifest, repository_name)
            records = repository.scan(name).usable  # a backup whose object is gone here comes from the next copy
        except StorageError as error:
            LOG.warning(f"repository {repository_name} of {name} is unreachable, trying the next one: {error}")
            unreachable.append(f"{repository_name} ({error})")
            continue
        yield repository, records


def _not_found(name: str, wanted: str, unreachable: list[str]) -> StorageError:
    down = f"; unreachable: {'; '.join(unreachable)}" if unreachable else ""
    return StorageError(f"no repository of {name} holds {wanted}{down}")


def holder_of(manifest: Manifest, name: str, backup_id: str) -> BackupStore:
    """Return the first reachable repository of dataset `name` that holds backup `backup_id`.

    Raise StorageError if none does."""
    unreachable: list[str] = []
    for repository, records in _listings(manifest, name, unreachable):
        if any(record.backup_id == backup_id for record in records):
            return repository
    raise _not_found(name, f"backup {backup_id}", unreachable)


def restore_backup(
    manifest: Manifest,
    name: str,
    record: BackupRecord,
    target: str,
    server: str | None = None,
    identity_file: str | None = None,
    raw_file: bool = False,
    keep_privileges: bool = True,
) -> str:
    """Restore `record` into the new `target`: a database (on `server`), a folder (file trees) or, with
    `raw_file`, the plain archive file. Return where it went. Never overwrites an existing target. A
    database keeps its owners and privileges (and, for PostgreSQL, gets the roles it needs) unless
    `keep_privileges` is False."""
    dataset = manifest.dataset(name)
    if dataset.kind in STORING_ENGINES:
        holder = holder_of(manifest, name, record.backup_id)
        own = holder.find_backup(name, record.backup_id) or record
        return STORING_ENGINES[dataset.kind].restore_to(manifest, name, holder, own, target)
    identities = load_identities(identity_file=identity_file) if record.encrypted else None
    holder = holder_of(manifest, name, record.backup_id)
    assert isinstance(holder, Repository), f"{name} is stored as objects"
    feed = decoding_feed(holder, record, identities)
    feed.keep_privileges = keep_privileges
    if raw_file:
        return restore_to_file(target, feed)
    return engine_for(record.kind).restore_to(manifest, name, target, server, feed)


def recipient_fingerprints(record: BackupRecord) -> list[str]:
    """Return the fingerprints of the age recipients a backup is encrypted to."""
    return [fingerprint(recipient) for recipient in record.recipients]


def find_backup(
    manifest: Manifest, name: str, partition_key: str | None = None, backup_id: str | None = None
) -> BackupRecord:
    """Return a committed backup of dataset `name`, looked up in its repositories (no Dagster needed):
    the one with `backup_id` if given, else the newest of `partition_key` if given, else the newest.
    Without `backup_id`, quarantined backups are passed over (backup_pipelines.quarantine): taking one needs
    its id.

    Raise StorageError if no repository holds a matching backup.
    """
    unreachable: list[str] = []
    passed_over: list[BackupRecord] = []
    for _, records in _listings(manifest, name, unreachable):
        matching = [
            record
            for record in records
            if (backup_id is None or record.backup_id == backup_id)
            and (partition_key is None or record.partition_key == partition_key)
        ]
        passed_over += [record for record in matching if record.quarantined and backup_id is None]
        matching = [record for record in matching if backup_id is not None or not record.quarantined]
        if matching:
            return matching[-1]
    if backup_id:
        wanted = f"backup {backup_id}" + (f" in partition {partition_key}" if partition_key else "")
    else:
        wanted = f"a committed backup of partition {partition_key}" if partition_key else "any committed backup"
    if passed_over:
        wanted += f" that is not quarantined (quarantined, restorable with --backup-id: {passed_over[-1].backup_id})"
    raise _not_found(name, wanted, unreachable)


@dataclass
class CopyCheck:
    """The verification of one stored copy of a backup."""

    repository: str
    uri: str
    bytes_stored: int
    bytes_raw: int
    sha256: str
    archive: dict[str, Any] = field(default_factory=dict)


def verify_backup(
    manifest: Manifest,
    name: str,
    record: BackupRecord,
    identity: str | None = None,
    identity_file: str | None = None,
) -> list[CopyCheck]:
    """Read back every copy of `record`, decrypt it, check its sha256 and size, and list its archive.

    Return one CopyCheck per repository. Raise MissingSecretError if no identity is configured,
    DecryptionError on a wrong identity, IntegrityError if a copy differs from what was recorded.
    """
    dataset = manifest.dataset(name)
    if dataset.kind in STORING_ENGINES:
        engine = STORING_ENGINES[dataset.kind]
        checks = []
        for store in _own_stores(manifest, name):
            own = store.find_backup(name, record.backup_id)  # each copy has its own snapshot id
            if own is None:
                raise StorageError(f"backup {record.backup_id} of {name} is missing from {store.name}")
            details = engine.verify(manifest, name, store, own)
            if engine.exact_copies and own.bytes_raw != record.bytes_raw:
                raise IntegrityError(
                    f"{store.uri(own.object_name)} holds {own.bytes_raw} bytes, the backup recorded {record.bytes_raw}"
                )
            checks.append(CopyCheck(store.name, store.uri(own.object_name), 0, own.bytes_raw, "", details))
        return checks
    identities = load_identities(identity, identity_file) if record.encrypted else None
    checks = []
    for repository_name in dataset.repositories:
        repository = open_object_repository(manifest, repository_name)
        listing = _decode_into_archive_check(manifest, name, repository, record, identities)
        checks.append(listing)
        if listing.bytes_raw != record.bytes_raw:
            raise IntegrityError(
                f"{listing.uri} decodes to {listing.bytes_raw} bytes but {record.bytes_raw} were recorded"
            )
    return checks


def _decode_into_archive_check(
    manifest: Manifest, name: str, repository: Repository, record: BackupRecord, identities: Any
) -> CopyCheck:
    engine = engine_for(record.kind)
    uri = repository.uri(record.object_path)
    check = ArchiveCheck(engine.archive_check_command(manifest, name))
    failed = True
    try:
        with repository.open_object(record.object_path) as stored:
            result = decode(stored, check, identities, record.sha256)
        try:
            archive = engine.summarize_archive_listing(check.finish())
        except CommandFailedError as error:
            raise IntegrityError(f"{uri} is not whole: {error}") from error
        failed = False
    finally:
        check.close(failed)
    if record.companions:
        archive["companions"] = sorted(read_companions(repository, record, identities))
    locked_until = repository.locked_until(record)
    if locked_until is not None:
        archive["object_lock_until"] = locked_until.isoformat()
    return CopyCheck(repository.name, uri, result.bytes_stored, result.bytes_raw, result.sha256, archive)


def restore_test_backup(
    manifest: Manifest,
    name: str,
    record: BackupRecord,
    identity: str | None = None,
    identity_file: str | None = None,
) -> RestoreReport:
    """Restore `record` from the dataset's primary repository into a scratch target and validate it.

    Return the engine's RestoreReport. Raise ValidationFailedError with every mismatching number if the
    restored copy differs from the source at backup time, or the errors of `verify_backup` for damaged data.
    """
    dataset = manifest.dataset(name)
    decoded: list[int] = []
    if dataset.kind in STORING_ENGINES:
        primary = _own_stores(manifest, name)[0]
        own = primary.find_backup(name, record.backup_id) or record
        report = STORING_ENGINES[dataset.kind].restore_test(manifest, name, primary, own)
    else:
        identities = load_identities(identity, identity_file) if record.encrypted else None
        repository = open_object_repository(manifest, dataset.repositories[0])
        feed = decoding_feed(repository, record, identities, decoded)
        report = engine_for(dataset.kind).restore_test(manifest, name, record, feed)
    if report.failures:
        mismatches = "; ".join(outcome.describe() for outcome in report.failures)
        raise ValidationFailedError(
            f"restore test of {name} backup {record.backup_id} failed {len(report.failures)} of "
            f"{len(report.outcomes)} checks: {mismatches}"
        )
    report = replace(report, bytes_raw=decoded[0] if decoded else report.bytes_raw)
    details = {
        "tested_at": datetime.now(UTC).isoformat(),
        "restore_seconds": round(report.restore_seconds, 3),
        "checks": len(report.outcomes),
        "target": report.target,
    }
    for repository_name in dataset.repositories:
        try:
            other = open_repository(manifest, repository_name)
            own = other.find_backup(name, record.backup_id)  # a copy may have its own snapshot id
            if own is not None:
                other.mark_restore_tested(own, details)
        except StorageError as error:
            LOG.warning(f"could not record the passed restore test of {record.backup_id} in {repository_name}: {error}")
    return report


__all__ = [
    "BackupError",
    "CopyCheck",
    "StoredBackup",
    "find_backup",
    "restore_test_backup",
    "run_backup",
    "verify_backup",
]
