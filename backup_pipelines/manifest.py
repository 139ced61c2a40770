"""The backup manifest: one YAML file that lists what is protected, where it goes and how it is checked.

Given a path, `load_manifest` returns a validated, frozen `Manifest`. Every problem is reported at once in a
`ManifestError` that names the file, the line, the dataset and the field. Secrets never live in the manifest:
it names environment variables (`password_env`) that are read only when a run needs them.
"""

from __future__ import annotations

import os
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import pyrage
import yaml
from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from backup_pipelines.durations import format_duration, parse_duration
from backup_pipelines.errors import ManifestError, MissingSecretError, Problem

DEFAULT_MANIFEST = "backup_manifest.yaml"
MANIFEST_ENV = "BACKUP_MANIFEST"
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
IMPLEMENTED_KINDS = ("postgres", "mysql", "sqlite", "command", "files", "rds", "aurora", "ebs", "s3")
SERVER_KINDS = ("postgres", "mysql")
RESTIC_KINDS = ("files",)
SNAPSHOT_KINDS = ("rds", "aurora", "ebs")  # kept as AWS snapshots, encrypted by KMS instead of age
WATCH_KINDS = ("s3",)  # checked, not backed up: no repositories, schedule of checks only
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster
UNION_TAGS = {*IMPLEMENTED_KINDS, "local", "restic", "aws_snapshots", "slack", "webhook", "log"}
UNION_PARENTS = ("datasets", "repositories", "channels", "servers")


def _to_timedelta(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


Duration = Annotated[
    timedelta,
    PlainValidator(_to_timedelta),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?[smhdw]$", "examples": ["30m", "1h", "7d"]}),
]


def _check_schedule(value: str) -> str:
    if value in ("hourly", "daily"):
        return value
    if not isinstance(value, str) or not croniter.is_valid(value) or len(value.split()) != 5:
        raise ValueError(f"invalid schedule {value!r}: use hourly, daily or a 5-field cron expression")
    return value


Schedule = Annotated[
    str,
    PlainValidator(_check_schedule),
    WithJsonSchema({"type": "string", "examples": ["hourly", "daily", "0 */6 * * *"]}),
]
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=60)]


def _check_owner(owner: str) -> str:
    if not (re.match(r"^team:[A-Za-z0-9_-]+$", owner) or re.match(r"^[^@\s]+@[^@\s]+$", owner)):
        raise ValueError(f"owner {owner!r} must be 'team:<name>' or an e-mail address")
    return owner


Owner = Annotated[str, AfterValidator(_check_owner)]


class StrictModel(BaseModel):
    """Base of every manifest model: unknown fields are errors and loaded values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Placement(StrictModel):
    """Where a repository physically is, for the 3-2-1 rule."""

    medium: str = Field("", description='Kind of medium ("disk", "object-storage", "tape"); default from the type.')
    offsite: bool = Field(False, description="In another site or region than the sources.")

    @property
    def immutable(self) -> bool:
        return False

    def medium_name(self) -> str:
        return self.medium or "disk"


class LocalRepositoryConfig(Placement):
    """A directory on a locally mounted disk."""

    type: Literal["local"] = Field(description="Repository type.")
    path: str = Field(description="Directory holding the backups; relative to the manifest's folder.")


class ObjectLock(StrictModel):
    """S3 Object Lock: every object is written with a retention date; nobody can delete it earlier."""

    mode: Literal["governance", "compliance"] = Field(description="S3 Object Lock mode.")
    days: int = Field(ge=1, le=36500, description="Days each object stays locked after it is written.")


class S3RepositoryConfig(Placement):
    """A bucket (and optional prefix) on AWS S3 or any S3-compatible endpoint."""

    type: Literal["s3"] = Field(description="Repository type.")
    bucket: str = Field(min_length=3, max_length=63, description="Bucket name.")
    prefix: str = Field("", description="Key prefix inside the bucket, without a trailing slash.")
    region: str = Field("us-east-1", description="Region of the bucket.")
    endpoint_url: str | None = Field(None, description="Custom endpoint (MinIO, Ceph, a local test server).")
    access_key_id_env: str | None = Field(None, description="Env var holding the access key id.")
    secret_access_key_env: str | None = Field(None, description="Env var holding the secret access key.")
    part_size_mb: int = Field(16, ge=5, le=5120, description="Multipart upload part size in MiB.")
    server_side_encryption: Literal["AES256", "aws:kms"] | None = Field(None, description="SSE mode.")
    kms_key_id: str | None = Field(None, description="KMS key id when server_side_encryption is aws:kms.")
    object_lock: ObjectLock | None = Field(None, description="Write every object locked (bucket needs Object Lock).")

    @property
    def immutable(self) -> bool:
        return self.object_lock is not None

    def medium_name(self) -> str:
        return self.medium or "object-storage"


class ResticRepositoryConfig(Placement):
    """A restic repository, for file-tree datasets: deduplicated, incremental, encrypted by restic."""

    type: Literal["restic"] = Field(description="Repository type.")
    repository: str = Field(
        description="A folder (relative to the manifest's folder) or a restic URL such as s3:http://host/bucket/path."
    )
    password_env: str = Field(description="Env var holding the restic repository password (kept apart from it).")
    aws_access_key_id_env: str | None = Field(None, description="Env var with the S3 access key, for s3: URLs.")
    aws_secret_access_key_env: str | None = Field(None, description="Env var with the S3 secret key.")
    read_data_subset: str = Field("5%", description="Share of pack data `restic check` reads back in verify.")


class AwsAccess(StrictModel):
    """How to reach one AWS region (or an AWS-compatible endpoint). Credentials default to boto3's chain
    (instance profile, AWS_PROFILE, ...) when no variables are named."""

    region: str = Field(min_length=1, description="AWS region, e.g. eu-west-1.")
    endpoint_url: str | None = Field(None, description="Custom endpoint (a local test server); default: AWS.")
    access_key_id_env: str | None = Field(None, description="Env var holding the access key id.")
    secret_access_key_env: str | None = Field(None, description="Env var holding the secret access key.")


class AwsSnapshotRepositoryConfig(AwsAccess, Placement):
    """Snapshots kept by AWS itself (RDS DB snapshots, EBS snapshots) in one region: the first such
    repository of a dataset is where snapshots are taken (the source's region), the others receive copies."""

    type: Literal["aws_snapshots"] = Field(description="Repository type.")
    kms_key_id: str | None = Field(
        None,
        description="KMS key (id or ARN) in this region for copies made into it; needed for encrypted copies "
        "from another region, since KMS keys are regional.",
    )
    wait_minutes: int = Field(120, ge=1, le=1440, description="How long to wait for a snapshot, copy or restore.")
    poll_seconds: int = Field(30, ge=1, le=600, description="How often to ask AWS while waiting.")

    def medium_name(self) -> str:
        return self.medium or "aws-snapshot"


RepositoryConfig = Annotated[
    LocalRepositoryConfig | S3RepositoryConfig | ResticRepositoryConfig | AwsSnapshotRepositoryConfig,
    Field(discriminator="type"),
]


class PostgresServerConfig(StrictModel):
    """A PostgreSQL server reached over TCP or a Unix socket directory."""

    kind: Literal["postgres"] = Field(description="Server kind.")
    host: str = Field("127.0.0.1", description="Host name, IP address, or a Unix socket directory.")
    port: int = Field(5432, ge=1, le=65535, description="TCP port.")
    user: str = Field(description="Role used for dumps (needs read access) and restore tests (CREATEDB).")
    password_env: str | None = Field(None, description="Env var holding the password; never inline.")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = Field(
        None, description="libpq sslmode."
    )
    maintenance_database: str = Field("postgres", description="Database used to create/drop scratch ones.")
    bin_dir: str | None = Field(None, description="Folder with pg_dump/pg_restore; default: the newest found.")


class MysqlServerConfig(StrictModel):
    """A MySQL or MariaDB server reached over TCP."""

    kind: Literal["mysql"] = Field(description="Server kind.")
    host: str = Field("127.0.0.1", description="Host name or IP address.")
    port: int = Field(3306, ge=1, le=65535, description="TCP port.")
    user: str = Field(description="Account for dumps (SELECT, SHOW VIEW, TRIGGER, EVENT, RELOAD) and restore tests.")
    password_env: str | None = Field(None, description="Env var holding the password; never inline.")
    dump_binary: str = Field("mysqldump", description="The dump tool (mysqldump or mariadb-dump).")
    client_binary: str = Field("mysql", description="The client that replays a dump (mysql or mariadb).")


ServerConfig = Annotated[PostgresServerConfig | MysqlServerConfig, Field(discriminator="kind")]


class Expectation(StrictModel):
    """What a validation query's single value must satisfy after a restore."""

    equals: int | float | str | None = Field(None, description="The value must equal this.")
    min: float | None = Field(None, description="The value must be at least this.")
    max: float | None = Field(None, description="The value must be at most this.")
    same_as_source: bool = Field(
        False, description="The value must equal the one the same query gave on the source at backup time."
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> Expectation:
        if self.equals is None and self.min is None and self.max is None and not self.same_as_source:
            raise ValueError("an expectation needs at least one of equals, min, max, same_as_source")
        return self


class ValidationQuery(StrictModel):
    """A query run on the restored copy; its first column of its first row is checked."""

    name: Name = Field(description="Short name, shown in restore-test results.")
    sql: str = Field(min_length=1, description="A read-only query returning one value.")
    expect: Expectation = Field(description="What the value must satisfy.")


class Verification(StrictModel):
    """How a restore test decides the restored copy is good."""

    compare_row_counts: bool = Field(
        True, description="Every table's row count must equal the count taken in the dump's snapshot."
    )
    queries: list[ValidationQuery] = Field(default_factory=list, description="Extra validation queries.")


class Encryption(StrictModel):
    """age encryption of the stored backup. On unless `enabled: false` is written explicitly."""

    enabled: bool = Field(True, description="Encrypt with age; turning it off must be explicit.")
    recipients: list[str] = Field(default_factory=list, description="age public keys (age1...).")
    recipients_file: str | None = Field(
        None, description="File of age public keys, one per line (relative to the manifest's folder)."
    )

    @field_validator("recipients")
    @classmethod
    def _parse_recipients(cls, recipients: list[str]) -> list[str]:
        for recipient in recipients:
            try:
                pyrage.x25519.Recipient.from_str(recipient)
            except Exception as error:  # pyrage raises its own RecipientError
                raise ValueError(f"not an age X25519 recipient: {recipient!r} ({error})") from error
        return recipients


class Retention(StrictModel):
    """Grandfather-father-son retention with restic's `forget` semantics (enforced by the prune job)."""

    keep_last: int | None = Field(None, ge=1, description="Keep the newest N backups.")
    keep_hourly: int | None = Field(None, ge=1, description="Keep the newest backup of each of N hours.")
    keep_daily: int | None = Field(None, ge=1, description="Keep the newest backup of each of N days.")
    keep_weekly: int | None = Field(None, ge=1, description="Keep the newest backup of each of N ISO weeks.")
    keep_monthly: int | None = Field(None, ge=1, description="Keep the newest backup of each of N months.")
    keep_yearly: int | None = Field(None, ge=1, description="Keep the newest backup of each of N years.")
    keep_within: Duration | None = Field(None, description="Keep every backup younger than this (from the newest).")
    min_age: Duration = Field(
        timedelta(hours=1), description="Never expire a backup younger than this, whatever the rules say."
    )

    @model_validator(mode="after")
    def _at_least_one_rule(self) -> Retention:
        if all(value is None for name, value in self.model_dump().items() if name.startswith("keep_")):
            raise ValueError("retention needs at least one keep_* rule")
        return self


class RestoreTestConfig(StrictModel):
    """Where and whether restore tests run."""

    enabled: bool = Field(True, description="Run real restore tests for this dataset.")
    server: Name | None = Field(None, description="Scratch server for the temporary copy; default: source.")


class Compliance(StrictModel):
    """The 3-2-1 rule a dataset must meet (the live source counts as one copy)."""

    copies: int = Field(3, ge=1, description="Copies of the data, counting the live source.")
    media: int = Field(2, ge=1, description="Distinct media among the backup copies.")
    offsite: int = Field(1, ge=0, description="Copies in repositories marked offsite.")
    immutable: int = Field(0, ge=0, description="Copies in repositories that cannot be deleted early (Object Lock).")


class AnomalyThresholds(StrictModel):
    """When a backup's size, rows or duration is anomalous against the dataset's own history."""

    history: int = Field(10, ge=1, le=200, description="How many earlier successful backups to compare with.")
    min_history: int = Field(3, ge=1, description="Fewer earlier backups than this: pass with a note.")
    drop_below: float = Field(0.5, gt=0, lt=1, description="ERROR when bytes fall below this x the median.")
    spike_above: float = Field(3.0, gt=1, description="WARN when bytes exceed this x the median.")
    table_loss_above: float = Field(0.5, gt=0, lt=1, description="ERROR when a table loses more than this share.")
    duration_above: float = Field(3.0, gt=1, description="WARN when the backup takes over this x the median.")


class DatasetAlerts(StrictModel):
    """Where a dataset's alerts go."""

    channels: list[Name] | None = Field(None, description="Channel names under alerts.channels; default: all.")
    healthchecks_url_env: str | None = Field(
        None, description="Env var with a healthchecks-style ping URL: /start, success, /fail are pinged."
    )


class SlackChannel(StrictModel):
    """A Slack channel, posted to with a bot token (dagster-slack)."""

    type: Literal["slack"] = Field(description="Channel type.")
    channel: str = Field(description='Slack channel, e.g. "#backups".')
    token_env: str = Field(description="Env var holding the Slack bot token.")
    base_url: str | None = Field(None, description="Slack API base URL (tests, Slack-compatible servers).")


class WebhookChannel(StrictModel):
    """A generic JSON webhook (PagerDuty, Opsgenie, a chat bridge, ...)."""

    type: Literal["webhook"] = Field(description="Channel type.")
    url_env: str = Field(description="Env var holding the URL (it may carry a key).")
    retries: int = Field(3, ge=0, le=10, description="Retries on a network error or a 5xx answer.")
    timeout_seconds: float = Field(10, gt=0, le=120, description="Timeout of one attempt.")


class LogChannel(StrictModel):
    """The Dagster event log / Python log (always useful, never enough alone)."""

    type: Literal["log"] = Field(description="Channel type.")


AlertChannel = Annotated[SlackChannel | WebhookChannel | LogChannel, Field(discriminator="type")]


class Alerts(StrictModel):
    """Alert channels and how often a still-stale dataset is reminded about."""

    channels: dict[Name, AlertChannel] = Field(default_factory=dict, description="Alert channels, by name.")
    reminder: Duration | None = Field(None, description="Re-alert a still-stale dataset this often; default: never.")
    dagster_url: str = Field("http://127.0.0.1:3000", description="Base URL of the Dagster UI, for run links.")


class PostgresSource(StrictModel):
    """One PostgreSQL database on a named server."""

    server: Name = Field(description="Name of an entry under `servers`.")
    database: str = Field(min_length=1, description="Database to dump.")
    schemas: list[str] = Field(default_factory=list, description="Only these schemas (pg_dump --schema).")
    exclude_schemas: list[str] = Field(default_factory=list, description="pg_dump --exclude-schema.")
    exclude_tables: list[str] = Field(default_factory=list, description="pg_dump --exclude-table.")
    large_objects: bool | None = Field(
        None, description="Include large objects; default: yes unless `schemas` limits the dump (as pg_dump does)."
    )

    @property
    def includes_large_objects(self) -> bool:
        return self.large_objects if self.large_objects is not None else not self.schemas


class DatasetBase(StrictModel):
    """Fields every dataset has, whatever its kind."""

    description: str = Field("", description="One line of business meaning, shown in the Dagster UI.")
    enabled: bool = Field(True, description="Disabled datasets are validated but get no assets.")
    schedule: Schedule = Field(description="hourly, daily, or a cron expression (UTC).")
    start: date | None = Field(None, description="First partition; default: the manifest's partition_start.")
    rpo: Duration = Field(description="Recovery point objective: the newest backup is never older.")
    rto: Duration = Field(description="Recovery time objective: a restore test must finish within it.")
    retention: Retention = Field(description="How many backups to keep (restic forget semantics).")
    repositories: list[Name] = Field(min_length=1, description="Names under `repositories`; first = primary.")
    encryption: Encryption | None = Field(None, description="Default: the manifest's top-level encryption.")
    verification: Verification = Field(default_factory=Verification, description="How restores are judged.")
    restore_test: RestoreTestConfig = Field(default_factory=RestoreTestConfig, description="Restore-test target.")
    anomaly: AnomalyThresholds = Field(default_factory=AnomalyThresholds, description="Anomaly thresholds.")
    compliance: Compliance = Field(default_factory=Compliance, description="The 3-2-1 rule to meet.")
    retries: int = Field(0, ge=0, le=10, description="Retry a failed backup this many times (exponential backoff).")
    retry_delay: Duration = Field(timedelta(minutes=1), description="Wait before the first retry; doubles each time.")
    alerts: DatasetAlerts = Field(default_factory=DatasetAlerts, description="Where this dataset's alerts go.")
    owners: list[Owner] = Field(default_factory=list, description='"team:name" or an e-mail address.')
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form tags copied to the assets.")

    @property
    def server_name(self) -> str | None:
        """The name of the server the dataset is read from, if it has one (pools are per server)."""
        return None

    def source_summary(self) -> str:
        """One line saying what is backed up, for the UI and the runbook."""
        return str(getattr(self, "kind", "dataset"))


class PostgresDataset(DatasetBase):
    """A PostgreSQL database dumped with pg_dump's custom format."""

    kind: Literal["postgres"] = Field(description="Dataset kind.")
    source: PostgresSource = Field(description="The database to protect.")

    @property
    def server_name(self) -> str | None:
        return self.source.server

    def source_summary(self) -> str:
        return f"postgres server {self.source.server}, database {self.source.database}"


class MysqlSource(StrictModel):
    """One MySQL/MariaDB database (InnoDB tables: the dump is a consistent snapshot)."""

    server: Name = Field(description="Name of an entry under `servers`.")
    database: str = Field(min_length=1, description="Database to dump.")
    exclude_tables: list[str] = Field(default_factory=list, description="Tables left out (mysqldump --ignore-table).")


class MysqlDataset(DatasetBase):
    """A MySQL or MariaDB database dumped with mysqldump --single-transaction."""

    kind: Literal["mysql"] = Field(description="Dataset kind.")
    source: MysqlSource = Field(description="The database to protect.")

    @property
    def server_name(self) -> str | None:
        return self.source.server

    def source_summary(self) -> str:
        return f"mysql server {self.source.server}, database {self.source.database}"


class SqliteSource(StrictModel):
    """One SQLite database file."""

    path: str = Field(min_length=1, description="The database file; relative to the manifest's folder.")


class SqliteDataset(DatasetBase):
    """A SQLite database, copied online with SQLite's backup API (consistent while the application writes)."""

    kind: Literal["sqlite"] = Field(description="Dataset kind.")
    source: SqliteSource = Field(description="The database file to protect.")

    def source_summary(self) -> str:
        return f"sqlite file {self.source.path}"


class CommandSource(StrictModel):
    """Any tool that writes the dataset to stdout (a secrets-store snapshot, a DNS zone, dashboards)."""

    command: list[str] = Field(min_length=1, description="argv of the command that writes the dataset to stdout.")
    validate_command: list[str] | None = Field(
        None, description="argv of a command that reads a restored copy on stdin and exits 0 if it is usable."
    )
    extension: str = Field("bin", pattern=r"^[a-z0-9]+$", description="File extension of the raw dump.")
    working_directory: str | None = Field(None, description="Folder to run in; relative to the manifest's folder.")
    timeout_seconds: int | None = Field(None, ge=1, description="Kill the command after this long.")


class CommandDataset(DatasetBase):
    """Whatever a command writes to stdout, streamed, encrypted and stored like a dump."""

    kind: Literal["command"] = Field(description="Dataset kind.")
    source: CommandSource = Field(description="The command to run.")

    def source_summary(self) -> str:
        return "command " + " ".join(self.source.command)

    @model_validator(mode="after")
    def _no_queries(self) -> CommandDataset:
        if self.verification.queries:
            raise ValueError(
                "verification.queries need a database kind; a command dataset uses source.validate_command"
            )
        return self


class FilesSource(StrictModel):
    """Directory trees (configuration, certificates, uploads, infrastructure code) backed up with restic."""

    paths: list[str] = Field(min_length=1, description="Folders or files; relative to the manifest's folder.")
    exclude: list[str] = Field(default_factory=list, description="restic --exclude patterns.")
    sample_files: int = Field(200, ge=0, description="How many files restore tests compare by hash (0: all of them).")


class FilesDataset(DatasetBase):
    """A file tree backed up with restic: one partition is one snapshot, tagged with dataset and partition."""

    kind: Literal["files"] = Field(description="Dataset kind.")
    source: FilesSource = Field(description="What to back up.")

    def source_summary(self) -> str:
        return "files " + ", ".join(self.source.paths)

    @model_validator(mode="after")
    def _no_queries(self) -> FilesDataset:
        if self.verification.queries:
            raise ValueError("verification.queries need a database kind; file trees are compared by count, size, hash")
        return self


class SnapshotDatasetBase(DatasetBase):
    """A resource AWS snapshots for us: encrypted by KMS (not age), judged by AWS's own metadata."""

    @model_validator(mode="after")
    def _no_age_or_queries(self) -> SnapshotDatasetBase:
        if self.encryption is not None:
            raise ValueError(
                "AWS snapshots are encrypted with KMS by AWS, not with age: remove `encryption` and use "
                "source.require_encryption"
            )
        login = getattr(getattr(self, "source", None), "restore_login", None)
        if self.verification.queries and login is None:
            raise ValueError(
                "verification.queries run on the restored instance only with source.restore_login (an EBS volume "
                "cannot be queried)"
            )
        if any(query.expect.same_as_source for query in self.verification.queries):
            raise ValueError("same_as_source needs the source queried inside the snapshot, which AWS cannot do")
        return self


class RestoreLogin(StrictModel):
    """How a restore test logs in to the temporary RDS instance to run the validation queries (it keeps the
    source's users and passwords). The runner needs network access to it (restore_subnet_group and
    restore_security_group_ids)."""

    database: str = Field(min_length=1, description="Database to query on the restored instance.")
    user: str = Field(min_length=1, description="A user of the source instance (e.g. its master user).")
    password_env: str = Field(description="Env var holding that user's password; never inline.")
    query_timeout_seconds: int = Field(
        600, ge=1, le=86400, description="A validation query running longer fails (the instance is deleted anyway)."
    )


class RdsRestoreSettings(StrictModel):
    """What RDS instances and Aurora clusters share: the region, encryption, and how restore tests run."""

    region: str = Field(min_length=1, description="Region of the source (= region of the first repository).")
    require_encryption: bool = Field(True, description="Verify fails for a snapshot that is not KMS-encrypted.")
    restore_instance_class: str = Field("db.t3.micro", description="Instance class of restore-test instances.")
    restore_subnet_group: str | None = Field(None, description="DB subnet group for restore-test instances.")
    restore_security_group_ids: list[str] = Field(
        default_factory=list, description="VPC security groups of restore-test instances."
    )
    restore_login: RestoreLogin | None = Field(
        None, description="Log in to the restored instance and run verification.queries (PostgreSQL, MySQL, MariaDB)."
    )


class RdsSource(RdsRestoreSettings):
    """One RDS DB instance; snapshots are taken in its region."""

    db_instance_identifier: str = Field(min_length=1, max_length=63, description="The DB instance to snapshot.")


class RdsDataset(SnapshotDatasetBase):
    """An RDS DB instance: one partition is one manual DB snapshot, tagged with dataset and partition, copied
    to the other repositories' regions; restore tests restore it to a temporary instance and delete it."""

    kind: Literal["rds"] = Field(description="Dataset kind.")
    source: RdsSource = Field(description="The DB instance to protect.")

    def source_summary(self) -> str:
        return f"RDS instance {self.source.db_instance_identifier} in {self.source.region}"


class AuroraSource(RdsRestoreSettings):
    """One Aurora DB cluster; cluster snapshots are taken in its region."""

    db_cluster_identifier: str = Field(min_length=1, max_length=63, description="The DB cluster to snapshot.")
    restore_instance_class: str = Field(
        "db.r6g.large", description="Instance class of the one instance a restore-test cluster gets."
    )


class AuroraDataset(SnapshotDatasetBase):
    """An Aurora DB cluster: one partition is one manual cluster snapshot, tagged and copied like RDS snapshots;
    restore tests restore a temporary cluster with one instance and delete both."""

    kind: Literal["aurora"] = Field(description="Dataset kind.")
    source: AuroraSource = Field(description="The DB cluster to protect.")

    def source_summary(self) -> str:
        return f"Aurora cluster {self.source.db_cluster_identifier} in {self.source.region}"


class EbsSource(StrictModel):
    """One EBS volume; snapshots are taken in its region (crash-consistent, like pulling the plug)."""

    volume_id: str = Field(pattern=r"^vol-[0-9a-f]+$", description="The volume to snapshot.")
    region: str = Field(min_length=1, description="Region of the volume (= region of the first repository).")
    require_encryption: bool = Field(True, description="Verify fails for a snapshot that is not KMS-encrypted.")
    restore_availability_zone: str | None = Field(
        None, description="Availability zone of restore-test volumes; default: the source volume's."
    )
    restore_volume_type: str = Field("gp3", description="Volume type of restore-test volumes.")


class EbsDataset(SnapshotDatasetBase):
    """An EBS volume: one partition is one snapshot, tagged, copied like RDS snapshots; restore tests create
    a volume from it, check it and delete it."""

    kind: Literal["ebs"] = Field(description="Dataset kind.")
    source: EbsSource = Field(description="The volume to protect.")

    def source_summary(self) -> str:
        return f"EBS volume {self.source.volume_id} in {self.source.region}"


class S3BucketSource(AwsAccess):
    """A bucket whose protection settings are checked."""

    bucket: str = Field(min_length=3, max_length=63, description="Bucket name.")
    require_replication: bool = Field(False, description="A finding unless an enabled replication rule exists.")
    require_object_lock: bool = Field(False, description="A finding unless Object Lock is enabled on the bucket.")


class S3BucketDataset(StrictModel):
    """A bucket checked for versioning (and, if asked, replication and Object Lock). Versioning is not a
    backup, but a protected bucket without it loses every overwritten or deleted object for good."""

    kind: Literal["s3"] = Field(description="Dataset kind.")
    description: str = Field("", description="One line of business meaning, shown in the Dagster UI.")
    enabled: bool = Field(True, description="Disabled datasets are validated but get no checks.")
    schedule: Schedule = Field("daily", description="How often the bucket is checked.")
    source: S3BucketSource = Field(description="The bucket to check.")
    alerts: DatasetAlerts = Field(default_factory=DatasetAlerts, description="Where findings are alerted.")
    owners: list[Owner] = Field(default_factory=list, description='"team:name" or an e-mail address.')
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form tags copied to the asset.")

    def source_summary(self) -> str:
        return f"S3 bucket {self.source.bucket} in {self.source.region}"


ActiveDataset = (
    PostgresDataset
    | MysqlDataset
    | SqliteDataset
    | CommandDataset
    | FilesDataset
    | RdsDataset
    | AuroraDataset
    | EbsDataset
)
Dataset = Annotated[ActiveDataset | S3BucketDataset, Field(discriminator="kind")]


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

    _path: Path | None = PrivateAttr(None)

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

    def active_datasets(self) -> dict[str, ActiveDataset]:
        """Return the enabled datasets that are backed up, by name, in manifest order."""
        return {name: ds for name, ds in self.datasets.items() if ds.enabled and not isinstance(ds, S3BucketDataset)}

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
        if dataset.kind in SNAPSHOT_KINDS:
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


def read_secret(variable: str, needed_by: str) -> str:
    """Return the value of environment variable `variable`.

    Raise MissingSecretError naming the variable and what needs it if it is unset or empty.
    """
    value = os.environ.get(variable)
    if not value:
        raise MissingSecretError(f"environment variable {variable} is not set (needed by {needed_by})")
    return value


def default_manifest_path() -> Path:
    """Return the manifest path: $BACKUP_MANIFEST if set, else ./backup_manifest.yaml."""
    return Path(os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST)


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Given a manifest path (default: `default_manifest_path()`), return the validated Manifest.

    Raise ManifestError listing every problem, each with the file, line and field path.
    """
    file = Path(path) if path is not None else default_manifest_path()
    try:
        text = file.read_text()
    except OSError as error:
        raise ManifestError(str(file), [Problem("", f"cannot read the manifest: {error.strerror}")]) from error
    return parse_manifest(text, str(file))


def parse_manifest(text: str, file: str = "<manifest>") -> Manifest:
    """Given the YAML text of a manifest and the name to report it under, return the validated Manifest."""
    try:
        data = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ManifestError(file, [Problem("", f"not valid YAML: {error}", line)]) from error
    if not isinstance(data, dict):
        raise ManifestError(file, [Problem("", "the manifest must be a mapping with datasets and repositories")])
    problems = _cross_reference_problems(data)
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as error:
        problems = [_problem_from(item) for item in error.errors()] + problems
    if problems:
        root = yaml.compose(text, Loader=SAFE_LOADER)  # node positions, only to put line numbers in errors
        raise ManifestError(file, [_with_line(problem, root) for problem in problems])
    if file != "<manifest>":
        manifest._path = Path(file).resolve()
    return manifest


def manifest_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of the manifest, generated from the models."""
    return Manifest.model_json_schema()


def _cross_reference_problems(data: dict[str, Any]) -> list[Problem]:
    """Return the problems between sections (unknown repository or server names, missing encryption),
    working on the raw data so they are reported together with the field errors."""
    repositories = _mapping(data.get("repositories"))
    servers = _mapping(data.get("servers"))
    top_encryption = data.get("encryption")
    problems = []
    for name, dataset in _mapping(data.get("datasets")).items():
        if not isinstance(dataset, dict):
            continue
        where = f"datasets.{name}"
        names = dataset.get("repositories")
        regions: dict[Any, str] = {}
        for index, repository in enumerate(names if isinstance(names, list) else []):
            config = _mapping(repositories.get(repository)) if isinstance(repository, str) else {}
            if config.get("type") == "aws_snapshots":
                place = (config.get("region"), config.get("endpoint_url"))
                if place in regions:
                    message = (
                        f"{repository!r} and {regions[place]!r} keep snapshots in the same region ({place[0]}): "
                        "one place, not two copies"
                    )
                    problems.append(Problem(f"{where}.repositories.{index}", message))
                regions.setdefault(place, repository)
            if isinstance(repository, str) and repository not in repositories:
                message = f"unknown repository {repository!r} (known: {', '.join(repositories) or 'none'})"
                problems.append(Problem(f"{where}.repositories.{index}", message))
            elif isinstance(repository, str):
                problems += _repository_problems(where, index, repositories[repository], repository, dataset)
        known_channels = _mapping(_mapping(data.get("alerts")).get("channels"))
        channels = _mapping(dataset.get("alerts")).get("channels")
        for index, channel in enumerate(channels if isinstance(channels, list) else []):
            if isinstance(channel, str) and channel not in known_channels:
                message = f"unknown alert channel {channel!r} (known: {', '.join(known_channels) or 'none'})"
                problems.append(Problem(f"{where}.alerts.channels.{index}", message))
        kind = dataset.get("kind")
        source_server = _mapping(dataset.get("source")).get("server") if kind in SERVER_KINDS else None
        restore_server = _mapping(dataset.get("restore_test")).get("server")
        for path, server in (
            (f"{where}.source.server", source_server),
            (f"{where}.restore_test.server", restore_server),
        ):
            if isinstance(server, str):
                problems += _server_problem(servers, path, server, kind)
        needs_age = kind not in (*SNAPSHOT_KINDS, *WATCH_KINDS)
        if needs_age and dataset.get("enabled", True) and dataset.get("encryption") is None and top_encryption is None:
            problems.append(
                Problem(
                    f"{where}.encryption",
                    "encryption is on by default: give age recipients here or in the top-level encryption "
                    "block, or write enabled: false to turn it off explicitly",
                )
            )
    blocks = [("encryption", top_encryption)] + [
        (f"datasets.{name}.encryption", _mapping(dataset).get("encryption"))
        for name, dataset in _mapping(data.get("datasets")).items()
    ]
    for where, block in blocks:
        settings = _mapping(block)
        if (
            settings
            and settings.get("enabled", True)
            and not (settings.get("recipients") or settings.get("recipients_file"))
        ):
            problems.append(Problem(where, "encryption is enabled but lists no recipients or recipients_file"))
    return problems


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _repository_family(kind: Any) -> tuple[str, str]:
    """The repository type a dataset kind needs, and how to say it."""
    if kind in RESTIC_KINDS:
        return "restic", "a restic repository"
    if kind in SNAPSHOT_KINDS:
        return "aws_snapshots", "an aws_snapshots repository"
    return "objects", "a local or s3 repository"


def _repository_problems(
    where: str, index: int, config: Any, repository: str, dataset: dict[str, Any]
) -> list[Problem]:
    kind = dataset.get("kind")
    repository_type = _mapping(config).get("type")
    family, wanted = _repository_family(kind)
    actual = repository_type if repository_type in ("restic", "aws_snapshots") else "objects"
    if actual != family:
        message = f"a {kind} dataset needs {wanted}; {repository!r} is not one"
        return [Problem(f"{where}.repositories.{index}", message)]
    source = _mapping(dataset.get("source"))
    region = source.get("region")
    encrypted_rds = kind in ("rds", "aurora") and source.get("require_encryption", True)
    if (
        index > 0
        and encrypted_rds
        and _mapping(config).get("region") != region
        and not _mapping(config).get("kms_key_id")
    ):
        message = (
            f"{repository!r} receives copies of encrypted RDS snapshots from {region}: give it a kms_key_id in "
            f"{_mapping(config).get('region')} (KMS keys are regional)"
        )
        return [Problem(f"{where}.repositories.{index}", message)]
    if index == 0 and family == "aws_snapshots" and region and _mapping(config).get("region") != region:
        message = (
            f"the first repository is where snapshots are taken: {repository!r} is in "
            f"{_mapping(config).get('region')}, the source in {region}"
        )
        return [Problem(f"{where}.repositories.{index}", message)]
    return []


def _server_problem(servers: dict[str, Any], path: str, server: str, kind: Any) -> list[Problem]:
    if server not in servers:
        return [Problem(path, f"unknown server {server!r} (known: {', '.join(servers) or 'none'})")]
    server_kind = _mapping(servers[server]).get("kind")
    if server_kind != kind:
        return [Problem(path, f"server {server!r} is a {server_kind} server, not {kind}")]
    return []


def _problem_from(error: Any) -> Problem:
    location = [str(part) for part in error["loc"]]
    # Discriminated unions add the tag ("postgres", "s3", "slack") as a location step: drop it.
    location = [
        part
        for index, part in enumerate(location)
        if not (index >= 2 and part in UNION_TAGS and location[index - 2] in UNION_PARENTS)
    ]
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown field {location[-1]!r}"
    elif error["type"] == "missing":
        message = f"required field {location[-1]!r} is missing"
    elif error["type"] == "union_tag_invalid":
        message = f"unknown kind or type {error['input'].get(_tag_name(location), '?')!r}: {error['msg']}"
    return Problem(".".join(location), message)


def _tag_name(location: list[str]) -> str:
    return "kind" if location and location[0] == "datasets" else "type"


def _with_line(problem: Problem, root: yaml.Node | None) -> Problem:
    node = root
    for part in problem.path.split(".") if problem.path else []:
        node = _child(node, part)
        if node is None:
            break
        line = node.start_mark.line + 1
        problem = Problem(problem.path, problem.message, line)
    return problem


def _child(node: yaml.Node | None, part: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == part:
                child: yaml.Node = value
                return child
    if isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
        item: yaml.Node = node.value[int(part)]
        return item
    return None
