"""What every backed-up dataset shares: how restores are judged, encryption, retention, 3-2-1, anomalies, alerts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from backup_pipelines.durations import format_duration
from backup_pipelines.manifest.types import (
    MAX_KEEP,
    AgeRecipient,
    Duration,
    Name,
    Owner,
    Schedule,
    StrictInt,
    StrictModel,
    schedule_period,
)


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


SAMPLE_TABLES_ABOVE_BYTES = 256 * 1024 * 1024  # the default size above which a table's rows are sampled


class TableSample(StrictModel):
    """How the fingerprint samples one large table: rows in `ranges` key ranges spread over the key's span,
    each covering `range_fraction` of its share, instead of every row."""

    key: str = Field(min_length=1, description="An indexed integer column (the primary key) to take ranges of.")
    ranges: StrictInt = Field(16, ge=1, le=1000, description="How many key ranges to digest.")
    range_fraction: float = Field(
        0.05, gt=0, le=1, description="Share of each range's slice of the key span that is digested."
    )


def listed_sample(listed: Mapping[str, TableSample], schema: str, table: str) -> TableSample | None:
    """Return how `verification.sampled_tables` (`listed`) samples `table` of `schema` (a database, for MySQL):
    listed as schema.table, or as the bare table name."""
    return listed.get(f"{schema}.{table}") or listed.get(table)


class Verification(StrictModel):
    """How a restore test decides the restored copy is good."""

    compare_row_counts: bool = Field(
        True, description="Every table's row count must equal the count taken in the dump's snapshot."
    )
    queries: list[ValidationQuery] = Field(default_factory=list, description="Extra validation queries.")
    fingerprint: bool = Field(
        True,
        description="Compare content, not only counts: the restored copy's fingerprint (row digests, schema with "
        "owners and privileges, sequences, large objects; every file's metadata and hashes) must equal the one "
        "taken in the dump's snapshot.",
    )
    sampled_tables: dict[str, TableSample] = Field(
        default_factory=dict,
        description="Large tables whose rows are digested only in key ranges (schema.table or table -> how); "
        "every other table is digested whole, unless sample_tables_above_bytes samples it.",
    )
    sample_tables_above_bytes: StrictInt | None = Field(
        SAMPLE_TABLES_ABOVE_BYTES,
        ge=0,
        le=1 << 50,
        description="postgres and mysql kinds, while compare_row_counts is on: a table bigger than this on disk "
        "whose primary key is one integer column, and that sampled_tables does not list, is digested in key "
        "ranges (16 ranges, 5 % of each slice) instead of whole, and its exact row count sees a row lost outside "
        "them. A whole digest reads every row a second time on the source (about a tenth of the dump's own CPU); "
        "null: digest every such table whole.",
    )

    @property
    def sample_above_bytes(self) -> int | None:
        """The size above which a table is sampled by size: none without row counts, since a table's exact count
        is what sees a row lost outside its ranges."""
        return self.sample_tables_above_bytes if self.compare_row_counts else None


class Encryption(StrictModel):
    """age encryption of the stored backup. On unless `enabled: false` is written explicitly."""

    enabled: bool = Field(True, description="Encrypt with age; turning it off must be explicit.")
    recipients: list[AgeRecipient] = Field(default_factory=list, description="age public keys (age1...).")
    recipients_file: str | None = Field(
        None,
        description="File of age public keys, one per line, # comments allowed (relative to the manifest's "
        "folder); it must exist when the manifest is loaded.",
    )


class Compression(StrictModel):
    """zstd settings of a backup stored by the object pipeline (restic and AWS compress for themselves).

    The default, level 1 on every core, was chosen by measurement on 2 cores (zstd 1.5.4): on both benchmark
    dumps (0.56 GB of random text and bytes; 0.32 GB of typical order rows) it was the fastest level and also the
    smallest, 7 % and 13 % smaller than level 3 at about half its CPU time, and 5x faster than gzip."""

    level: StrictInt = Field(1, ge=1, le=19, description="zstd level: 1 (fastest) to 19 (smallest).")
    threads: StrictInt = Field(
        0, ge=0, le=256, description="zstd worker threads; 0 = one per core of the machine (zstd -T0)."
    )


class Retention(StrictModel):
    """Grandfather-father-son retention with restic's `forget` semantics (enforced by the prune job)."""

    keep_last: StrictInt | None = Field(None, ge=1, le=MAX_KEEP, description="Keep the newest N backups.")
    keep_hourly: StrictInt | None = Field(
        None, ge=1, le=MAX_KEEP, description="Keep the newest backup of each of N hours."
    )
    keep_daily: StrictInt | None = Field(
        None, ge=1, le=MAX_KEEP, description="Keep the newest backup of each of N days."
    )
    keep_weekly: StrictInt | None = Field(
        None, ge=1, le=MAX_KEEP, description="Keep the newest backup of each of N ISO weeks."
    )
    keep_monthly: StrictInt | None = Field(
        None, ge=1, le=MAX_KEEP, description="Keep the newest backup of each of N months."
    )
    keep_yearly: StrictInt | None = Field(
        None, ge=1, le=MAX_KEEP, description="Keep the newest backup of each of N years."
    )
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

    copies: StrictInt = Field(3, ge=1, le=20, description="Copies of the data, counting the live source.")
    media: StrictInt = Field(2, ge=1, le=20, description="Distinct media among the backup copies.")
    offsite: StrictInt = Field(1, ge=0, le=20, description="Copies in repositories marked offsite.")
    immutable: StrictInt = Field(
        0, ge=0, le=20, description="Copies in repositories that cannot be deleted early (Object Lock)."
    )


class AnomalyThresholds(StrictModel):
    """When a backup's size, rows or duration is anomalous against the dataset's own history."""

    history: StrictInt = Field(10, ge=1, le=200, description="How many earlier successful backups to compare with.")
    min_history: StrictInt = Field(3, ge=1, le=200, description="Fewer earlier backups than this: pass with a note.")
    drop_below: float = Field(0.5, gt=0, lt=1, description="ERROR when bytes fall below this x the median.")
    spike_above: float = Field(3.0, gt=1, le=1000, description="WARN when bytes exceed this x the median.")
    table_loss_above: float = Field(0.5, gt=0, lt=1, description="ERROR when a table loses more than this share.")
    duration_above: float = Field(3.0, gt=1, le=1000, description="WARN when the backup takes over this x the median.")


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
    retries: StrictInt = Field(3, ge=0, le=10, description="Retries on a network error or a 5xx answer.")
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


class DatasetBase(StrictModel):
    """Fields every dataset has, whatever its kind."""

    description: str = Field("", description="One line of business meaning, shown in the Dagster UI.")
    enabled: bool = Field(True, description="Disabled datasets are validated but get no assets.")
    schedule: Schedule = Field(description="hourly, daily, or a cron expression (UTC).")
    start: date | None = Field(None, description="First partition; default: the manifest's partition_start.")
    rpo: Duration = Field(
        description="Recovery point objective: the newest backup is never older. At least the schedule's longest "
        "time between runs (1h for hourly, 1d for daily), else it could never be met."
    )
    rto: Duration = Field(description="Recovery time objective: a restore test must finish within it.")
    retention: Retention = Field(description="How many backups to keep (restic forget semantics).")
    repositories: list[Name] = Field(min_length=1, description="Names under `repositories`; first = primary.")
    encryption: Encryption | None = Field(None, description="Default: the manifest's top-level encryption.")
    verification: Verification = Field(default_factory=Verification, description="How restores are judged.")
    restore_test: RestoreTestConfig = Field(default_factory=RestoreTestConfig, description="Restore-test target.")
    anomaly: AnomalyThresholds = Field(default_factory=AnomalyThresholds, description="Anomaly thresholds.")
    compression: Compression = Field(default_factory=Compression, description="zstd level and threads.")
    compliance: Compliance = Field(default_factory=Compliance, description="The 3-2-1 rule to meet.")
    retries: StrictInt = Field(
        0, ge=0, le=10, description="Retry a failed backup this many times (exponential backoff)."
    )
    retry_delay: Duration = Field(timedelta(minutes=1), description="Wait before the first retry; doubles each time.")
    alerts: DatasetAlerts = Field(default_factory=DatasetAlerts, description="Where this dataset's alerts go.")
    owners: list[Owner] = Field(default_factory=list, description='"team:name" or an e-mail address.')
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Free-form tags copied to the assets. `k8s/cpu` (e.g. 500m, 2) and `k8s/memory` (e.g. 512Mi, "
        "4Gi) size the dataset's step pods on Kubernetes.",
    )

    @field_validator("tags")
    @classmethod
    def _kubernetes_quantities(cls, tags: dict[str, str]) -> dict[str, str]:
        for tag, pattern, example in (
            ("k8s/cpu", r"\d+(\.\d+)?m?", "500m or 2"),
            ("k8s/memory", r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?", "512Mi or 4Gi"),
        ):
            if tag in tags and not re.fullmatch(pattern, tags[tag]):
                raise ValueError(f"{tag}: {tags[tag]!r} is not a Kubernetes quantity (e.g. {example})")
        return tags

    @field_validator("rpo")
    @classmethod
    def _rpo_can_be_met(cls, rpo: timedelta, info: ValidationInfo) -> timedelta:
        schedule = info.data.get("schedule")  # absent when the schedule itself is invalid
        if schedule is None:
            return rpo
        period = schedule_period(schedule)
        if rpo < period:
            raise ValueError(
                f"rpo {format_duration(rpo)} can never be met: the schedule {schedule!r} leaves up to "
                f"{format_duration(period)} between runs; make rpo at least {format_duration(period)} or run "
                "more often"
            )
        return rpo

    @property
    def server_name(self) -> str | None:
        """The name of the server the dataset is read from, if it has one (pools are per server)."""
        return None

    @property
    def has_copies(self) -> bool:
        """Whether the dataset has copy repositories besides its primary (and so a `copy` step)."""
        return len(self.repositories) > 1

    def source_summary(self) -> str:
        """One line saying what is backed up, for the UI and the runbook."""
        return str(getattr(self, "kind", "dataset"))
