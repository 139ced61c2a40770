"""The whole manifest: repositories, servers and datasets of every kind, with the lookups runs need."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr

from backup_pipelines.errors import MissingSecretError
from backup_pipelines.manifest.aws import AuroraDataset, EbsDataset, RdsDataset, S3BucketDataset
from backup_pipelines.manifest.command import CommandDataset
from backup_pipelines.manifest.files import FilesDataset
from backup_pipelines.manifest.mariadb_physical import MariadbPhysicalDataset
from backup_pipelines.manifest.mysql import MysqlDataset
from backup_pipelines.manifest.policies import Alerts, Encryption
from backup_pipelines.manifest.postgres import PostgresDataset
from backup_pipelines.manifest.postgres_cluster import PostgresClusterDataset
from backup_pipelines.manifest.sqlite import SqliteDataset
from backup_pipelines.manifest.storage import RepositoryConfig, ServerConfig
from backup_pipelines.manifest.types import PGBACKREST_KINDS, SNAPSHOT_KINDS, Name, Schedule, StrictModel

ActiveDataset = (
    PostgresDataset
    | PostgresClusterDataset
    | MysqlDataset
    | MariadbPhysicalDataset
    | SqliteDataset
    | CommandDataset
    | FilesDataset
    | RdsDataset
    | AuroraDataset
    | EbsDataset
)
Dataset = Annotated[ActiveDataset | S3BucketDataset, Field(discriminator="kind")]


class OperationSchedules(StrictModel):
    """When the jobs shared by every dataset run (UTC): hourly, daily or a cron expression each."""

    retention: Schedule = Field("30 3 * * *", description="The retention job (every dataset's policy).")
    reports: Schedule = Field("*/30 * * * *", description="The status dashboard and the DR runbook.")
    drills: Schedule = Field("0 4 * * 0", description="Real restore tests of each cadence's newest partition.")
    watch: Schedule = Field("0 5 * * *", description="Re-evaluation of every RPO check.")


class Manifest(StrictModel):
    """Everything backup-pipelines protects, in one file."""

    version: Literal[1] = Field(1, description="Manifest format version.")
    partition_start: date = Field(date(2026, 1, 1), description="Default first partition of every dataset.")
    encryption: Encryption | None = Field(None, description="Default encryption for every dataset.")
    repositories: dict[Name, RepositoryConfig] = Field(min_length=1, description="Where backups live, by name.")
    servers: dict[Name, ServerConfig] = Field(default_factory=dict, description="Sources, by name.")
    datasets: dict[Name, Dataset] = Field(min_length=1, description="What is protected, by name.")
    alerts: Alerts = Field(default_factory=Alerts, description="Alert channels (Slack, webhooks, log).")
    reports_dir: str = Field("reports", description="Folder for the status dashboard and the DR runbook.")
    schedules: OperationSchedules = Field(
        default_factory=OperationSchedules, description="When retention, reports, drills and the RPO watch run."
    )

    _path: Path | None = PrivateAttr(None)
    _active: Mapping[str, ActiveDataset] | None = PrivateAttr(None)

    @property
    def path(self) -> Path | None:
        """The file this manifest was loaded from, or None when built in code."""
        return self._path

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the manifest are resolved against."""
        return self._path.parent if self._path else Path.cwd()

    def resolve_path(self, value: str) -> Path:
        """Given a path from the manifest, return it absolute (relative ones are under `base_dir`)."""
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    def active_datasets(self) -> Mapping[str, ActiveDataset]:
        """Return the enabled datasets that are backed up, by name, in manifest order (read-only: computed once,
        since a code location of 10,000 datasets asks for it per dataset)."""
        if self._active is None:
            self._active = MappingProxyType(
                {name: ds for name, ds in self.datasets.items() if ds.enabled and not isinstance(ds, S3BucketDataset)}
            )
        return self._active

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Manifest:
        copy = super().model_copy(update=update, deep=deep)
        copy._active = None  # a copy may hold other datasets
        return copy

    def watched_buckets(self) -> dict[str, S3BucketDataset]:
        """Return the enabled `s3` datasets (buckets whose protection settings are checked), by name."""
        return {name: ds for name, ds in self.datasets.items() if ds.enabled and isinstance(ds, S3BucketDataset)}

    def dataset(self, name: str) -> ActiveDataset:
        """Return the enabled dataset called `name`. Raise KeyError naming the known ones if there is none."""
        active = self.active_datasets()
        if name not in active:
            raise KeyError(f"no enabled dataset {name!r} in the manifest (known: {', '.join(active)})")
        return active[name]

    def encryption_for(self, name: str) -> Encryption:
        """Return the age encryption settings of dataset `name` (its own, else the manifest's; off for the
        kinds AWS encrypts with KMS)."""
        dataset = self.dataset(name)
        if dataset.kind in SNAPSHOT_KINDS or dataset.kind in PGBACKREST_KINDS:  # KMS, pgBackRest's own cipher
            return Encryption(enabled=False)
        own = dataset.encryption
        return own if own is not None else (self.encryption or Encryption())

    def recipients_for(self, name: str) -> list[str]:
        """Return the age recipients dataset `name` is encrypted to ([] when encryption is off).

        Raise MissingSecretError if a recipients_file does not exist or holds no recipient.
        """
        encryption = self.encryption_for(name)
        if not encryption.enabled:
            return []
        recipients = list(encryption.recipients)
        if encryption.recipients_file:
            file = self.resolve_path(encryption.recipients_file)
            if not file.is_file():
                raise MissingSecretError(f"age recipients file {file} (dataset {name}) does not exist")
            lines = [line.strip() for line in file.read_text().splitlines()]
            recipients += [line for line in lines if line and not line.startswith("#")]
        if not recipients:
            raise MissingSecretError(f"dataset {name} is encrypted but has no age recipient")
        return recipients

    def partition_start_for(self, name: str) -> date:
        """Return the first partition date of dataset `name`."""
        return self.dataset(name).start or self.partition_start
