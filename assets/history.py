"""Reading what earlier runs recorded, from the Dagster event log: backup measurements and the newest backup.

Quarantine (backup_pipelines.quarantine) as Dagster sees it: a backup materialization whose blocking size
check failed records the reason as metadata `quarantined`; a later quarantine or release by an operator (the
CLI, pointed at this instance by $DAGSTER_HOME) is kept per dataset in the instance's key-value store
(`quarantine_key`), read for every dataset in one query. The repositories stay the authority for restores;
this copy lets the RPO check, the status dashboard and the anomaly history skip quarantined backups without
listing repositories on every sensor tick.

The newest backup, for the RPO sensor and check and the status page, comes from the stage index
(assets/stage_index.py), read with the quarantine decisions in one batched key-value read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg

from assets.keys import DatasetKeys
from assets.stage_index import StageRecord, kv_values, record_from_event, stage_states
from backup_pipelines.anomaly import Measurement

SIZE_CHECK = "size_anomaly"
SIZE_FINDING = "size_check_finding"  # backup metadata: what the size check found when it did not pass
QUARANTINED = "quarantined"  # materialization metadata: the reason a backup was quarantined when it was made
QUARANTINE_KEY_PREFIX = "backup_pipelines/quarantine/"
OVERRIDES_KEPT = 200  # quarantine decisions remembered per dataset
WALK_BACK = 25  # materializations looked at to find the newest backup that is not quarantined


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
    return quarantine_decisions(kv_values(instance, [quarantine_key(name) for name in names]), names)


def quarantine_decisions(values: Mapping[str, str], names: list[str]) -> dict[str, dict[str, str | None]]:
    return {name: dict(json.loads(values[key])) for name in names if values.get(key := quarantine_key(name))}


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
    """What a dataset's newest backup recorded (its indexed values or its materialization's metadata)."""

    created_at: float
    partition: str | None
    metadata: dict[str, Any]
    quarantined_newer: str | None = None  # why the newer backup(s) passed over are quarantined


def newest_good_backup(
    instance: dg.DagsterInstance, name: str, overrides: dict[str, str | None], reason: str
) -> LatestBackup | None:
    """Return the newest backup materialization of `name` that is not quarantined, looking back at most
    WALK_BACK backups, with `reason` (why the newest is quarantined) attached; None if there is none."""
    key = DatasetKeys(name).backup
    for event in instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=WALK_BACK).records:
        record = record_from_event(event)
        if record is not None and not _quarantined(record, overrides):
            return _latest_from_record(record, reason)
    return None


def _quarantined(record: StageRecord, overrides: dict[str, str | None]) -> str | None:
    return _decided(record.metadata.get("backup_id"), record.metadata.get(QUARANTINED), overrides)


def _latest_from_record(record: StageRecord, quarantined_newer: str | None = None) -> LatestBackup:
    created = record.metadata.get("created_at")
    created_at = datetime.fromisoformat(created).timestamp() if isinstance(created, str) else record.at
    return LatestBackup(created_at, record.partition, record.metadata, quarantined_newer)


def latest_backups(
    instance: dg.DagsterInstance,
    names: list[str],
    records: Mapping[dg.AssetKey, StageRecord] | None = None,
    overrides: dict[str, dict[str, str | None]] | None = None,
) -> dict[str, LatestBackup | None]:
    """Return each dataset's newest backup that is not quarantined (None if it has none).

    Without `records` (each backup asset's newest completed step, see assets/stage_index.py) and `overrides`
    (the quarantine decisions), both are read in one batched key-value read (plus the event log for datasets the
    index does not know). A dataset whose newest backup is quarantined costs one more query, to find the newest
    good one before it."""
    keys = {DatasetKeys(name).backup: name for name in names}
    if records is None:
        records, _, values = stage_states(instance, list(keys), [quarantine_key(name) for name in names])
        overrides = quarantine_decisions(values, names)
    if overrides is None:
        overrides = quarantine_overrides(instance, names)
    latest: dict[str, LatestBackup | None] = {}
    for key, name in keys.items():
        record = records.get(key)
        if record is None:
            latest[name] = None
            continue
        decisions = overrides.get(name, {})
        reason = _quarantined(record, decisions)
        latest[name] = newest_good_backup(instance, name, decisions, reason) if reason else _latest_from_record(record)
    return latest
