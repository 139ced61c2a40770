"""The manifest's building blocks: constants, field types (durations, schedules, names, owners), the base model."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

import yaml
from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, WithJsonSchema

from backup_pipelines.durations import format_duration, parse_duration

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
