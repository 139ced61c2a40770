"""Whole PostgreSQL clusters kept by pgBackRest: base backups plus continuous WAL archiving, restorable to any
moment inside the recovery window."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from croniter import croniter
from pydantic import Field, ValidationInfo, field_validator, model_validator

from backup_pipelines.manifest.policies import DatasetBase
from backup_pipelines.manifest.types import Duration, Name, Schedule, StrictInt, StrictModel, as_cron

BACKUP_TYPES = ("full", "diff", "incr")


class BackupTypes(StrictModel):
    """Which base backups are full or differential; every other run is incremental. pgBackRest itself turns a
    diff or incr into a full when the repository holds no full backup yet."""

    full: Schedule = Field("0 0 * * 0", description="Cron (UTC): partitions at these moments are full backups.")
    diff: Schedule | None = Field(
        "0 0 * * *",
        description="Cron (UTC): partitions at these moments (and not full) are differential; null: never.",
    )

    def type_at(self, moment: datetime) -> str:
        """Return "full", "diff" or "incr" for the partition starting at `moment` (UTC)."""
        if croniter.match(as_cron(self.full), moment):
            return "full"
        if self.diff is not None and croniter.match(as_cron(self.diff), moment):
            return "diff"
        return "incr"


class PostgresClusterSource(StrictModel):
    """One PostgreSQL cluster (every database, the roles, the configuration) on this machine, archiving its
    WAL to pgBackRest."""

    server: Name = Field(description="Name of an entry under `servers` (kind postgres): the login used to check it.")
    data_directory: str = Field(min_length=1, description="The cluster's data directory (pgBackRest pg1-path).")
    socket_directory: str = Field(
        "/var/run/postgresql", description="Unix socket directory of the cluster (pgBackRest connects through it)."
    )
    stanza: Name | None = Field(None, description="pgBackRest stanza name; default: the dataset's name.")
    os_user: str = Field(
        "postgres", min_length=1, description="The system user owning the data directory; pgBackRest runs as it."
    )
    config_file: str | None = Field(
        None,
        description="Where the project writes this cluster's pgBackRest configuration (the archive_command reads "
        "it); relative to the manifest's folder. Default: .local/pgbackrest/<dataset>.conf.",
    )
    process_max: StrictInt = Field(2, ge=1, le=64, description="pgBackRest process-max (parallel compression).")
    marker_every: Duration = Field(
        timedelta(minutes=5),
        description="How often the project stamps a row into backup_pipelines.pitr_marker (in the database "
        "named by marker_database), so a restore to a moment can prove which side of it each row is on.",
    )
    marker_database: str = Field(
        "postgres", min_length=1, description="The database holding the marker table; validation queries run there."
    )
    archive_timeout: Duration = Field(
        timedelta(minutes=1),
        description="The archive_timeout recommended by `backup-pipelines pitr-setup`: a quiet cluster still "
        "ships a WAL segment this often, so its RPO holds.",
    )

    archive_wait: Duration = Field(
        timedelta(seconds=60),
        description="How long a backup or check waits for a WAL segment to reach the archive (pgBackRest "
        "archive-timeout) before failing with the reason.",
    )

    @field_validator("marker_every", "archive_timeout", "archive_wait")
    @classmethod
    def _sensible(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=10) <= value <= timedelta(days=1):
            raise ValueError("must be between 10s and 1d")
        return value


class PostgresClusterDataset(DatasetBase):
    """A whole PostgreSQL cluster: pgBackRest base backups (full, differential, incremental by schedule) into a
    pgbackrest repository, plus the WAL archived in between. Its freshness is the newest archived WAL segment,
    not the newest base backup, so its RPO may be shorter than its schedule."""

    kind: Literal["postgres_cluster"] = Field(description="Dataset kind.")
    source: PostgresClusterSource = Field(description="The cluster to protect.")
    backup_types: BackupTypes = Field(default_factory=BackupTypes, description="Full and differential schedules.")

    @field_validator("rpo")
    @classmethod
    def _rpo_can_be_met(cls, rpo: timedelta, info: ValidationInfo) -> timedelta:
        """Override: the WAL, not the base backup schedule, bounds a cluster's recovery point."""
        if rpo < timedelta(minutes=1):
            raise ValueError("rpo below 1m cannot be judged: WAL segments are checked once a minute at best")
        return rpo

    @model_validator(mode="after")
    def _archive_timeout_within_rpo(self) -> PostgresClusterDataset:
        if self.source.archive_timeout > self.rpo:
            raise ValueError(
                f"source.archive_timeout ({self.source.archive_timeout}) is longer than rpo ({self.rpo}): a quiet "
                "cluster would break its RPO between two WAL segments"
            )
        return self

    @property
    def server_name(self) -> str | None:
        return self.source.server

    def stanza(self, name: str) -> str:
        """The pgBackRest stanza of this dataset, called `name` in the manifest."""
        return self.source.stanza or name

    def source_summary(self) -> str:
        return f"postgres cluster {self.source.data_directory} (server {self.source.server}), pgBackRest PITR"
