"""The manifest's building blocks: constants, field types (durations, schedules, names, owners), the base model."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any

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
    Strict,
    WithJsonSchema,
)

from backup_pipelines.durations import format_duration, parse_duration

DEFAULT_MANIFEST = "backup_manifest.yaml"
MANIFEST_ENV = "BACKUP_MANIFEST"
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
IMPLEMENTED_KINDS = (
    "postgres",
    "postgres_cluster",
    "mysql",
    "mariadb_physical",
    "sqlite",
    "command",
    "files",
    "rds",
    "aurora",
    "ebs",
    "s3",
)
SERVER_KINDS = ("postgres", "postgres_cluster", "mysql", "mariadb_physical")
RESTIC_KINDS = ("files",)
PGBACKREST_KINDS = ("postgres_cluster",)  # kept by pgBackRest, encrypted by its repository cipher instead of age
SNAPSHOT_KINDS = ("rds", "aurora", "ebs")  # kept as AWS snapshots, encrypted by KMS instead of age
WATCH_KINDS = ("s3",)  # checked, not backed up: no repositories, schedule of checks only
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster
UNION_TAGS = {*IMPLEMENTED_KINDS, "local", "restic", "aws_snapshots", "pgbackrest", "slack", "webhook", "log"}
UNION_PARENTS = ("datasets", "repositories", "channels", "servers")
MAX_DURATION = timedelta(days=3650)  # 10 years: any longer duration in a manifest is a typo
MAX_KEEP = 10_000  # retention counts: a year of hourly backups is 8760
SECRET_KEY_PREFIX = "AGE-SECRET-KEY-"
SCHEDULE_PERIODS = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}
_CRON_WINDOW = timedelta(days=366)  # a year of ticks sees every weekly, monthly and yearly pattern
_CRON_START = datetime(2026, 1, 1, tzinfo=UTC)

# An int field refuses floats (1e20, 2.5) and strings instead of truncating or parsing them.
StrictInt = Annotated[int, Strict()]


def _to_timedelta(value: Any) -> timedelta:
    """Given a duration spelling (or a timedelta), return the timedelta; raise ValueError if it is not one or
    is longer than MAX_DURATION (huge numbers included, which timedelta itself refuses with OverflowError)."""
    if isinstance(value, timedelta):
        duration = value
    else:
        try:
            duration = parse_duration(value)
        except OverflowError:
            duration = timedelta.max
    if duration > MAX_DURATION:
        raise ValueError(f"duration {value!r} is too long: at most {format_duration(MAX_DURATION)} (10 years)")
    return duration


Duration = Annotated[
    timedelta,
    PlainValidator(_to_timedelta),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\d+(\.\d+)?[smhdw]$",
            "examples": ["30m", "1h", "7d"],
            "description": "A number and a unit (s, m, h, d, w); more than zero, at most 3650d (10 years).",
        }
    ),
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
# The keyword schedules as cron expressions (Dagster schedules take crons).
KEYWORD_CRONS = {"hourly": "0 * * * *", "daily": "0 0 * * *"}


def as_cron(schedule: str) -> str:
    """Return a valid schedule as a 5-field cron expression."""
    return KEYWORD_CRONS.get(schedule, schedule)


Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=60)]


def schedule_period(schedule: str) -> timedelta:
    """Given a valid schedule, return the longest time between two of its consecutive runs (UTC).

    For a cron expression the runs of a year are looked at: the longest gap is within a day (between the
    day's run times) or across the days that have runs (a weekday-only cron's weekend, a monthly cron's
    31-day months).
    """
    return SCHEDULE_PERIODS.get(schedule) or _cron_period(schedule)


@lru_cache(maxsize=256)
def _cron_period(expression: str) -> timedelta:
    minutes, hours, *_ = croniter(expression).expanded
    times = sorted(
        timedelta(hours=hour, minutes=minute)
        for hour in (range(24) if hours == ["*"] else hours)
        for minute in (range(60) if minutes == ["*"] else minutes)
    )
    longest = max((later - earlier for earlier, later in itertools.pairwise(times)), default=timedelta(0))
    day_fields = " ".join(expression.split()[2:])
    first, last = times[0], times[-1]
    days = croniter(f"{first.seconds // 60 % 60} {first.seconds // 3600} {day_fields}", _CRON_START)
    previous: datetime = days.get_next(datetime)
    while True:
        day: datetime = days.get_next(datetime)
        longest = max(longest, day - previous - (last - first))
        if day - _CRON_START > _CRON_WINDOW:
            return longest
        previous = day


def recipient_problem(recipient: str) -> str | None:
    """Given a line meant as an age recipient, return what is wrong with it, or None for an X25519 public key.

    An age secret key is named as such without repeating it: it must never be in the manifest.
    """
    if SECRET_KEY_PREFIX in recipient.upper():
        return (
            "this is an age SECRET key (AGE-SECRET-KEY-1...), not a public key: remove it from the manifest and "
            "treat it as leaked (it must never be in the manifest); list its public key instead (age-keygen -y)"
        )
    try:
        pyrage.x25519.Recipient.from_str(recipient)
    except Exception as error:  # pyrage raises its own RecipientError
        return f"not an age X25519 public key (age1...): {recipient!r} ({error})"
    return None


def _check_recipient(recipient: str) -> str:
    problem = recipient_problem(recipient)
    if problem:
        raise ValueError(problem)
    return recipient


AgeRecipient = Annotated[str, AfterValidator(_check_recipient)]


def _check_owner(owner: str) -> str:
    if not (re.match(r"^team:[A-Za-z0-9_-]+$", owner) or re.match(r"^[^@\s]+@[^@\s]+$", owner)):
        raise ValueError(f"owner {owner!r} must be 'team:<name>' or an e-mail address")
    return owner


Owner = Annotated[str, AfterValidator(_check_owner)]


class StrictModel(BaseModel):
    """Base of every manifest model: unknown fields are errors and loaded values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
