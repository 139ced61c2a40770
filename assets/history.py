"""Reading what earlier runs recorded, from the Dagster event log: backup measurements and the newest backup.

Quarantine (backup_pipelines.quarantine) as Dagster sees it: a backup materialization whose blocking size
check failed records the reason as metadata `quarantined`; a later quarantine or release by an operator (the
CLI, pointed at this instance by $DAGSTER_HOME) is kept per dataset in the instance's key-value store
(`quarantine_key`), read for every dataset in one query. The repositories stay the authority for restores;
this copy lets the RPO check, the status dashboard and the anomaly history skip quarantined backups without
listing repositories on every sensor tick.

The newest backup index: the backup step also keeps, per dataset, a small record of the newest backup it committed
(`newest_backup_key`: backup id, backup time, partition, quarantine reason) in the same key-value store. The RPO
sensor and check read it for every dataset in one query instead of deserializing each dataset's newest
materialization event (10,000 datasets: 118 MB of events, 7 s per tick); a dataset without a record (history
from before the index) is read from the event log as before. The index follows the committed backups, not the
event log: a materialization reported by hand, or an asset wiped in Dagster, does not change it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg

from assets.keys import DatasetKeys
from backup_pipelines.anomaly import Measurement

SIZE_CHECK = "size_anomaly"
SIZE_FINDING = "size_check_finding"  # backup metadata: what the size check found when it did not pass
QUARANTINED = "quarantined"  # materialization metadata: the reason a backup was quarantined when it was made
QUARANTINE_KEY_PREFIX = "backup_pipelines/quarantine/"
NEWEST_KEY_PREFIX = "backup_pipelines/newest_backup/"
KV_BATCH = 5000  # keys per key-value read: SQLite caps a statement's parameters (32,766 in 3.32 and later)
OVERRIDES_KEPT = 200  # quarantine decisions remembered per dataset
WALK_BACK = 25  # materializations looked at to find the newest backup that is not quarantined


def metadata_values(materialization: dg.AssetMaterialization) -> dict[str, Any]:
    """Return a materialization's metadata as plain values."""
    return {k: v.value for k, v in materialization.metadata.items()}


def _value(metadata: Any, key: str, default: Any = None) -> Any:
    entry = metadata.get(key)
    return entry.value if entry is not None else default


def measurement_from(metadata: Any, timestamp: float = 0.0) -> Measurement:
    """Return the measurement a backup materialization's metadata records (made at `timestamp`)."""
    tables: dict[str, int] = {}
    row_counts = metadata.get("source_row_counts")
    if row_counts is not None:
        tables = {record.data["table"]: int(record.data["rows"]) for record in row_counts.value.records}
    return Measurement(
        bytes_raw=int(_value(metadata, "bytes_raw", 0)),
        bytes_stored=int(_value(metadata, "bytes_stored", 0)),
        duration_seconds=float(_value(metadata, "duration_seconds", 0.0)),
        tables=tables,
        created_at=timestamp,
    )


def quarantine_key(name: str) -> str:
    """Return the instance key-value key holding the operators' quarantine decisions of dataset `name`."""
    return f"{QUARANTINE_KEY_PREFIX}{name}"


def quarantine_overrides(instance: dg.DagsterInstance, names: list[str]) -> dict[str, dict[str, str | None]]:
    """Return, in one query, each dataset's quarantine decisions recorded after its backups were made:
    backup id -> reason, or None for a released backup."""
    return _overrides_from(kv_values(instance, [quarantine_key(name) for name in names]), names)


def _overrides_from(values: Mapping[str, str], names: list[str]) -> dict[str, dict[str, str | None]]:
    return {name: dict(json.loads(values[key])) for name in names if values.get(key := quarantine_key(name))}


def kv_values(instance: dg.DagsterInstance, keys: list[str]) -> dict[str, str]:
    """Return the instance key-value entries of `keys` that exist, in a few batched queries."""
    found: dict[str, str] = {}
    for start in range(0, len(keys), KV_BATCH):
        found.update(instance.run_storage.get_cursor_values(set(keys[start : start + KV_BATCH])))
    return found


def record_quarantine(instance: dg.DagsterInstance, name: str, backup_id: str, reason: str | None) -> None:
    """Remember in the instance that backup `backup_id` of `name` was quarantined with `reason` (None:
    released), so the event-log views follow the repositories."""
    decisions = quarantine_overrides(instance, [name]).get(name, {})
    decisions.pop(backup_id, None)
    decisions[backup_id] = reason
    kept = dict(list(decisions.items())[-OVERRIDES_KEPT:])
    instance.run_storage.set_cursor_values({quarantine_key(name): json.dumps(kept)})


def quarantine_reason(metadata: Any, overrides: dict[str, str | None]) -> str | None:
    """Return why the backup a materialization recorded is quarantined now, or None if it is not: an
    operator's later decision wins over what the backup run recorded."""
    return _decided(_value(metadata, "backup_id"), _value(metadata, QUARANTINED), overrides)


def _decided(backup_id: str | None, recorded: str | None, overrides: dict[str, str | None]) -> str | None:
    if backup_id in overrides:
        return overrides[backup_id]
    return str(recorded) if recorded else None


def backup_history(
    instance: dg.DagsterInstance, key: dg.AssetKey, limit: int, overrides: dict[str, str | None] | None = None
) -> list[Measurement]:
    """Return the measurements of the newest `limit` backups of `key` (newest first), leaving out quarantined
    backups and those whose own size check found an ERROR (unless an operator released them), so one bad
    backup does not become the baseline the next one is compared with."""
    overrides = overrides or {}
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=limit * 2).records
    history = []
    for record in records:
        materialization = record.asset_materialization
        if materialization is None or quarantine_reason(materialization.metadata, overrides):
            continue
        released = overrides.get(_value(materialization.metadata, "backup_id"), "") is None
        if _value(materialization.metadata, "size_check") == "ERROR" and not released:
            continue
        history.append(measurement_from(materialization.metadata, record.timestamp))
    return history[:limit]


@dataclass(frozen=True)
class LatestBackup:
    """What the newest backup materialization of a dataset recorded."""

    created_at: float
    partition: str | None
    metadata: dict[str, Any]
    quarantined_newer: str | None = None  # why the newer backup(s) passed over are quarantined


def _latest_from(timestamp: float, materialization: dg.AssetMaterialization) -> LatestBackup:
    metadata = metadata_values(materialization)
    created = metadata.get("created_at")
    created_at = datetime.fromisoformat(created).timestamp() if isinstance(created, str) else timestamp
    return LatestBackup(created_at, materialization.partition, metadata)


def newest_good_backup(
    instance: dg.DagsterInstance, name: str, overrides: dict[str, str | None], reason: str
) -> LatestBackup | None:
    """Return the newest backup materialization of `name` that is not quarantined, looking back at most
    WALK_BACK backups, with `reason` (why the newest is quarantined) attached; None if there is none."""
    key = DatasetKeys(name).backup
    for record in instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=WALK_BACK).records:
        materialization = record.asset_materialization
        if materialization is not None and not quarantine_reason(materialization.metadata, overrides):
            found = _latest_from(record.timestamp, materialization)
            return LatestBackup(found.created_at, found.partition, found.metadata, reason)
    return None


def newest_backup_key(name: str) -> str:
    """Return the instance key-value key of dataset `name`'s newest backup index record."""
    return f"{NEWEST_KEY_PREFIX}{name}"


def record_newest_backup(
    instance: dg.DagsterInstance, name: str, backup_id: str, created_at: float, partition: str, quarantined: str | None
) -> None:
    """Index a backup the backup step committed as dataset `name`'s newest, unless the index already holds one
    taken later (a late partition caught up)."""
    key = newest_backup_key(name)
    held = instance.run_storage.get_cursor_values({key}).get(key)
    if held and float(json.loads(held)["created_at"]) > created_at:
        return
    entry = {"backup_id": backup_id, "created_at": created_at, "partition": partition, QUARANTINED: quarantined}
    instance.run_storage.set_cursor_values({key: json.dumps(entry)})


def latest_backups(
    instance: dg.DagsterInstance, names: list[str], events: Mapping[dg.AssetKey, Any] | None = None
) -> dict[str, LatestBackup | None]:
    """Return each dataset's newest backup that is not quarantined (None if it has none).

    Without `events` (newest materializations already read), one key-value query gives every dataset's newest
    backup index record and quarantine decisions; only datasets without a record have their newest
    materialization read from the event log. A dataset whose newest backup is quarantined costs one more
    query, to find the newest good one before it."""
    keys = {DatasetKeys(name).backup: name for name in names}
    indexed: dict[str, Any] = {}
    if events is None:
        values = kv_values(instance, [key(name) for name in names for key in (newest_backup_key, quarantine_key)])
        overrides = _overrides_from(values, names)
        indexed = {
            name: json.loads(values[newest_backup_key(name)]) for name in names if newest_backup_key(name) in values
        }
        events = instance.get_latest_materialization_events([key for key, name in keys.items() if name not in indexed])
    else:
        overrides = quarantine_overrides(instance, names)
    latest: dict[str, LatestBackup | None] = {}
    for key, name in keys.items():
        decisions = overrides.get(name, {})
        if name in indexed:
            entry = indexed[name]
            reason = _decided(entry["backup_id"], entry.get(QUARANTINED), decisions)
            found = LatestBackup(float(entry["created_at"]), entry["partition"], {"backup_id": entry["backup_id"]})
        else:
            event = events.get(key)
            materialization = event.asset_materialization if event is not None else None
            if event is None or materialization is None:
                latest[name] = None
                continue
            reason = quarantine_reason(materialization.metadata, decisions)
            found = _latest_from(event.timestamp, materialization)
        latest[name] = newest_good_backup(instance, name, decisions, reason) if reason else found
    return latest
