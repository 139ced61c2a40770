"""Partitions from a dataset's schedule: one partition = one backup."""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, date, datetime, timedelta

import dagster as dg

HOURLY_FORMAT = "%Y-%m-%d-%H:%M"


@functools.cache
def partitions_for(schedule: str, start: date) -> dg.TimeWindowPartitionsDefinition:
    """Return the (shared, cached) time-window partitions of a schedule: hourly, daily or a cron (UTC)."""
    if schedule == "hourly":
        return dg.HourlyPartitionsDefinition(start_date=f"{start:%Y-%m-%d}-00:00", timezone="UTC")
    if schedule == "daily":
        return dg.DailyPartitionsDefinition(start_date=f"{start:%Y-%m-%d}", timezone="UTC")
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=schedule, start=f"{start:%Y-%m-%d}-00:00", fmt=HOURLY_FORMAT, timezone="UTC"
    )


def cadence_name(schedule: str, start: date, default_start: date) -> str:
    """Return the job-name suffix of a schedule: `hourly`, `daily`, or `cron_<hash>` for a cron, plus the
    start date when it differs from the manifest's default (jobs need one shared partitioning)."""
    name = schedule if schedule in ("hourly", "daily") else "cron_" + hashlib.sha1(schedule.encode()).hexdigest()[:8]
    return name if start == default_start else f"{name}_from_{start:%Y%m%d}"


# Run tag that lets a backup run for a partition whose window closed more than one period ago (a backfill of
# history): the backup is still a snapshot of now, and its metadata says when it was taken.
LATE_TAG = "backup/late"
LATE_ALLOW = "allow"


def lateness(window: dg.TimeWindow, now: datetime) -> timedelta | None:
    """Given a partition's time window, return how long after its last on-time moment `now` is, or None if a
    backup taken now still belongs to it. On time means within one period (the window's own length) of its
    close: the schedule backs up the partition that just closed, and retries or a queue may take a while."""
    deadline = window.end + (window.end - window.start)
    return now - deadline if now > deadline else None


def describe_window(window: dg.TimeWindow) -> str:
    """Return a partition's window as `2026-11-30 05:00 - 06:00 UTC` (or with both dates when they differ)."""
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    end_text = f"{end:%H:%M}" if start.date() == end.date() else f"{end:%Y-%m-%d %H:%M}"
    return f"{start:%Y-%m-%d %H:%M} - {end_text} UTC"
