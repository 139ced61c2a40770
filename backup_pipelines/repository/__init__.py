"""Where backups live. `open_repository` is the one dispatch point from a manifest entry to an implementation."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from backup_pipelines.manifest import (
    AwsSnapshotRepositoryConfig,
    LocalRepositoryConfig,
    Manifest,
    PgBackRestRepositoryConfig,
    ResticRepositoryConfig,
    S3RepositoryConfig,
    read_secret,
)
from backup_pipelines.repository.base import BackupRecord, BackupStore, ObjectWriter, Repository, new_backup_id
from backup_pipelines.repository.inventory import DamagedSidecar, Leftover, Listing
from backup_pipelines.repository.local import LocalRepository
from backup_pipelines.repository.restic import ResticRepository

__all__ = [
    "BackupRecord",
    "BackupStore",
    "DamagedSidecar",
    "Leftover",
    "Listing",
    "ObjectWriter",
    "Repository",
    "ResticRepository",
    "new_backup_id",
    "open_object_repository",
    "open_repository",
]


def _open_local(manifest: Manifest, name: str, config: Any) -> Repository:
    return LocalRepository(name, manifest.resolve_path(config.path))


def _open_s3(manifest: Manifest, name: str, config: Any) -> Repository:
    from backup_pipelines.repository.s3 import S3Repository, make_s3_client  # boto3 loads only when needed

    where = f"repositories.{name}"
    access_key = read_secret(config.access_key_id_env, where) if config.access_key_id_env else None
    secret_key = read_secret(config.secret_access_key_env, where) if config.secret_access_key_env else None
    extra = {}
    if config.server_side_encryption:
        extra["ServerSideEncryption"] = config.server_side_encryption
    if config.kms_key_id:
        extra["SSEKMSKeyId"] = config.kms_key_id
    client = make_s3_client(config.region, config.endpoint_url, access_key, secret_key)
    lock = (config.object_lock.mode, config.object_lock.days) if config.object_lock else None
    return S3Repository(name, config.bucket, config.prefix, client, config.part_size_mb << 20, extra, lock)


def _open_restic(manifest: Manifest, name: str, config: Any) -> BackupStore:
    where = f"repositories.{name}"
    environment = {"RESTIC_PASSWORD": read_secret(config.password_env, f"{where}.password_env")}
    if config.aws_access_key_id_env:
        environment["AWS_ACCESS_KEY_ID"] = read_secret(config.aws_access_key_id_env, where)
    if config.aws_secret_access_key_env:
        environment["AWS_SECRET_ACCESS_KEY"] = read_secret(config.aws_secret_access_key_env, where)
    url = re.match(r"^[a-z0-9]{2,}:", config.repository)
    location = config.repository if url else str(manifest.resolve_path(config.repository))
    return ResticRepository(name, location, environment, config.read_data_subset)


def _open_pgbackrest(manifest: Manifest, name: str, config: Any) -> BackupStore:
    from backup_pipelines.repository.pgbackrest import PgBackRestRepository

    datasets = [
        dataset_name
        for dataset_name, dataset in manifest.active_datasets().items()
        if dataset.kind == "postgres_cluster" and name in dataset.repositories
    ]
    location = (  # the path inside a bucket gets its leading / in the configuration too (repository_lines)
        f"s3://{config.s3.bucket}/{config.path.lstrip('/')}" if config.s3 else str(manifest.resolve_path(config.path))
    )
    return PgBackRestRepository(name, manifest, datasets, location)


def _open_aws_snapshots(manifest: Manifest, name: str, config: Any) -> BackupStore:
    from backup_pipelines.repository.aws_snapshots import SnapshotStore

    kinds: set[str] = {
        str(dataset.kind) for dataset in manifest.datasets.values() if name in getattr(dataset, "repositories", [])
    }
    return SnapshotStore(name, config, kinds)


_OPENERS: dict[type, Callable[[Manifest, str, Any], BackupStore]] = {
    LocalRepositoryConfig: _open_local,
    S3RepositoryConfig: _open_s3,
    ResticRepositoryConfig: _open_restic,
    AwsSnapshotRepositoryConfig: _open_aws_snapshots,
    PgBackRestRepositoryConfig: _open_pgbackrest,
}


def open_object_repository(manifest: Manifest, name: str) -> Repository:
    """`open_repository` for the kinds stored as objects (local, s3). Raise TypeError for another one."""
    repository = open_repository(manifest, name)
    if not isinstance(repository, Repository):
        raise TypeError(
            f"repository {name!r} is a {manifest.repositories[name].type} repository; this needs local or s3"
        )
    return repository


def open_repository(manifest: Manifest, name: str) -> BackupStore:
    """Return the repository called `name` in the manifest, with its secrets read from the environment.

    Raise KeyError if there is no such repository, MissingSecretError if a credential variable is unset.
    """
    if name not in manifest.repositories:
        raise KeyError(f"no repository {name!r} in the manifest (known: {', '.join(manifest.repositories)})")
    config = manifest.repositories[name]
    return _OPENERS[type(config)](manifest, name, config)
