"""Partitions from a dataset's schedule: one partition = one backup."""

from __future__ import annotations

import functools
import hashlib
from datetime import date

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
