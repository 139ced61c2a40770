"""Off-site copies: copy a committed backup from the dataset's primary repository to each copy repository.

Object backups are copied server-side when both ends are on the same S3 endpoint, streamed otherwise, and
re-checked at the destination (read back, sha256 against the record) before their sidecar is written there,
so a copy exists only once it is known to be whole. File-tree snapshots are copied with `restic copy`, AWS
snapshots by AWS into the copy repository's region (`SnapshotStore.copy_from`), cluster backups by pgBackRest
taking one more base backup into the copy repository (`PgBackRestRepository.copy_from`). A copy repository that fails
raises StorageError naming it; the primary is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib

from backup_pipelines.errors import IntegrityError, StorageError
from backup_pipelines.manifest import Manifest
from backup_pipelines.repository import BackupRecord, BackupStore, Repository, ResticRepository, open_repository
from backup_pipelines.repository.aws_snapshots import SnapshotStore
from backup_pipelines.repository.pgbackrest import PgBackRestRepository
from backup_pipelines.repository.s3 import S3Repository
from backup_pipelines.stream import CHUNK

SELF_COPYING = (ResticRepository, SnapshotStore, PgBackRestRepository)  # stores whose own tool makes the copy


def copy_backup(manifest: Manifest, name: str, record: BackupRecord) -> dict[str, str]:
    """Copy `record` to every copy repository of dataset `name` that lacks it; return every location by
    repository (the primary's included). Copies already there are checked, not copied again."""
    dataset = manifest.dataset(name)
    primary = open_repository(manifest, dataset.repositories[0])
    locations = {primary.name: _location(primary, record)}
    for repository_name in dataset.repositories[1:]:
        target = open_repository(manifest, repository_name)
        if isinstance(target, Repository) and isinstance(primary, Repository):
            locations[target.name] = _copy_object(primary, target, record)
        elif isinstance(target, ResticRepository | SnapshotStore | PgBackRestRepository) and type(target) is type(
            primary
        ):
            locations[target.name] = target.copy_from(primary, record)  # type: ignore[arg-type]  # same type
        else:
            raise StorageError(f"cannot copy between {primary.name} and {target.name}: different repository families")
    return locations


def _location(store: BackupStore, record: BackupRecord) -> str:
    return store.uri(record.object_path if isinstance(store, Repository) else record.object_name)


def same_endpoint(source: Repository, target: Repository) -> bool:
    """True when both are S3 repositories behind the same endpoint, so S3 can copy without our traffic."""
    return (
        isinstance(source, S3Repository)
        and isinstance(target, S3Repository)
        and source.client.meta.endpoint_url == target.client.meta.endpoint_url
    )


def _copy_object(source: Repository, target: Repository, record: BackupRecord) -> str:
    """Copy the backup's object and its companion objects, check each at the destination, then commit."""
    if target.find_backup(record.dataset, record.backup_id) is None:
        objects = [(record.object_path, record.sha256)] + [
            (record.companion_path(label), details["sha256"]) for label, details in record.companions.items()
        ]
        for path, sha256 in objects:
            _copy_one(source, target, path, sha256)
        target.commit_record(record)
    return target.uri(record.object_path)


def _copy_one(source: Repository, target: Repository, path: str, sha256: str) -> None:
    if same_endpoint(source, target):
        assert isinstance(source, S3Repository) and isinstance(target, S3Repository)
        try:
            target.client.copy(
                {"Bucket": source.bucket, "Key": source.key(path)},
                target.bucket,
                target.key(path),
                ExtraArgs=target.put_arguments(),
            )
        except Exception as error:
            raise StorageError(f"server-side copy to {target.uri(path)} failed: {error}") from error
    else:
        _stream(source, target, path)
    actual = _sha256(target, path)
    if actual != sha256:
        with contextlib.suppress(StorageError):
            target.delete(path)
        message = f"the copy at {target.uri(path)} has sha256 {actual}, not {sha256}: removed, not committed"
        raise IntegrityError(message)


def _stream(source: Repository, target: Repository, path: str) -> None:
    writer = target.open_writer(path)
    try:
        with source.open_object(path) as stream:
            while chunk := stream.read(CHUNK):
                writer.write(chunk)
        writer.commit()
    except BaseException:
        writer.abort()
        raise


def _sha256(repository: Repository, path: str) -> str:
    digest = hashlib.sha256()
    with repository.open_object(path) as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
