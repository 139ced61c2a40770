"""RPO freshness: is the newest committed backup of each dataset younger than its RPO, and which alerts follow.

A backup's time is when its snapshot was taken (`created_at`), not when some partition was last materialized.
Quarantined backups (backup_pipelines.quarantine) do not count: the caller passes the newest good backup.
The alert planner is a pure state machine: one alert when a dataset goes stale, one when it recovers, and
optionally a reminder every `reminder` while it stays stale; never one per sensor tick. A state change is saved
only once its alert has reached every channel (`settle`): an alert a channel refused is planned again on the
next tick and sent to the channels still owed it, until it goes through.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from backup_pipelines.durations import describe_duration, format_duration
from backup_pipelines.notify import Alert


@dataclass(frozen=True)
class Freshness:
    """One dataset's freshness at `now` (epoch seconds)."""

    dataset: str
    rpo_seconds: float
    newest_backup_at: float | None
    partition: str | None
    now: float
    quarantined_newer: str | None = None  # why newer backups are quarantined (they do not count)
    # A cluster archiving its WAL (postgres_cluster) is as fresh as its newest archived segment, named here; a
    # failing archive_command (`archive_failing`, the reason) makes it stale at once, whatever the age.
    wal_segment: str | None = None
    archive_failing: str | None = None

    @property
    def age_seconds(self) -> float | None:
        return None if self.newest_backup_at is None else max(0.0, self.now - self.newest_backup_at)

    @property
    def stale(self) -> bool:
        """True when the newest backup is older than the RPO, or there is none, or the WAL archive fails."""
        age = self.age_seconds
        return age is None or age > self.rpo_seconds or self.archive_failing is not None

    def describe(self) -> str:
        rpo = format_duration(timedelta(seconds=self.rpo_seconds))
        if self.wal_segment is not None or self.archive_failing is not None:
            return self._describe_wal(rpo)
        quarantined = f"; newer backups are quarantined ({self.quarantined_newer})" if self.quarantined_newer else ""
        if self.newest_backup_at is None:
            return f"{self.dataset} has no {'good ' if quarantined else ''}backup (RPO {rpo}){quarantined}"
        age = describe_duration(self.age_seconds or 0)
        state = "older than" if self.stale else "within"
        good = "good " if quarantined else ""
        return (
            f"newest {good}backup of {self.dataset} (partition {self.partition}) is {age} old, {state} its RPO "
            f"of {rpo}{quarantined}"
        )

    def _describe_wal(self, rpo: str) -> str:
        failing = f"; archiving fails: {self.archive_failing}" if self.archive_failing else ""
        if self.newest_backup_at is None:
            return f"{self.dataset} has no archived WAL segment (RPO {rpo}){failing}"
        age = describe_duration(self.age_seconds or 0)
        state = "older than" if self.age_seconds and self.age_seconds > self.rpo_seconds else "within"
        return (
            f"newest archived WAL segment of {self.dataset} ({self.wal_segment}) is {age} old, {state} its RPO "
            f"of {rpo}{failing}"
        )


def plan_alerts(
    state: dict[str, Any], current: list[Freshness], reminder: timedelta | None
) -> tuple[list[Alert], dict[str, Any]]:
    """Given the previous per-dataset state, the current freshness of every dataset and the reminder
    interval, return the alerts to send and the new state.

    A dataset never backed up is given its RPO from the moment it is first seen before it counts as stale.
    """
    alerts: list[Alert] = []
    new_state: dict[str, Any] = {}
    for item in current:
        previous = state.get(item.dataset, {})
        first_seen = float(previous.get("first_seen", item.now))
        stale = item.stale and not (item.newest_backup_at is None and item.now - first_seen <= item.rpo_seconds)
        last_alert = previous.get("last_alert")
        entry = {"first_seen": first_seen, "stale": stale, "last_alert": last_alert}
        if stale and not previous.get("stale"):
            alerts.append(_alert("stale", item, f"{item.dataset} is stale"))
            entry["last_alert"] = item.now
        elif stale and reminder and last_alert and item.now - float(last_alert) >= reminder.total_seconds():
            alerts.append(_alert("reminder", item, f"{item.dataset} is still stale"))
            entry["last_alert"] = item.now
        elif not stale and previous.get("stale"):
            alerts.append(_alert("recovered", item, f"{item.dataset} is fresh again"))
            entry["last_alert"] = item.now
        new_state[item.dataset] = entry
    return alerts, new_state


def already_delivered(previous: dict[str, Any], kind: str) -> list[str]:
    """Return the channels that already took the pending alert of `kind` of a dataset (state entry `previous`)."""
    pending = previous.get("pending") or {}
    return list(pending.get("delivered", [])) if pending.get("kind") == kind else []


def settle(previous: dict[str, Any], planned: dict[str, Any], kind: str, delivered: list[str], complete: bool) -> dict:
    """Return the state entry to save for a dataset after sending its alert of `kind`.

    `previous` is the saved entry, `planned` the one `plan_alerts` returned, `delivered` every channel that has
    the alert (from this and earlier attempts). When every channel took it (`complete`) the planned change is
    saved; otherwise the previous state is kept, so the alert is planned again next tick, with the channels that
    have it recorded under "pending" (they are skipped on the retry)."""
    if complete:
        return planned
    kept = {key: value for key, value in previous.items() if key != "pending"}
    kept.setdefault("stale", False)
    kept.setdefault("last_alert", None)
    kept["first_seen"] = planned["first_seen"]
    kept["pending"] = {"kind": kind, "delivered": sorted(set(delivered))}
    return kept


def _alert(kind: Any, item: Freshness, title: str) -> Alert:
    details = {
        "rpo_seconds": item.rpo_seconds,
        "age_seconds": item.age_seconds,
        "newest_backup_at": item.newest_backup_at,
    }
    return Alert(
        kind=kind, dataset=item.dataset, title=title, message=item.describe(), partition=item.partition, details=details
    )
