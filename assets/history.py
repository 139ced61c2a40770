"""Reading what earlier runs recorded, from the Dagster event log: backup measurements and the newest backup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg

from assets.keys import DatasetKeys
from backup_pipelines.anomaly import Measurement

SIZE_CHECK = "size_anomaly"


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


def backup_history(instance: dg.DagsterInstance, key: dg.AssetKey, limit: int) -> list[Measurement]:
    """Return the measurements of the newest `limit` backups of `key` (newest first), leaving out backups
    whose own size check found an ERROR, so one bad backup does not become the new normal."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=limit * 2).records
    history = []
    for record in records:
        materialization = record.asset_materialization
        if materialization is None or _value(materialization.metadata, "size_check") == "ERROR":
            continue
        history.append(measurement_from(materialization.metadata, record.timestamp))
    return history[:limit]


@dataclass(frozen=True)
class LatestBackup:
    """What the newest backup materialization of a dataset recorded."""

    created_at: float
    partition: str | None
    metadata: dict[str, Any]


def latest_backups(instance: dg.DagsterInstance, names: list[str]) -> dict[str, LatestBackup | None]:
    """Return, in one query, each dataset's newest backup materialization (None if it has none)."""
    keys = {DatasetKeys(name).backup: name for name in names}
    events = instance.get_latest_materialization_events(list(keys))
    latest: dict[str, LatestBackup | None] = {}
    for key, name in keys.items():
        event = events.get(key)
        materialization = event.asset_materialization if event is not None else None
        if materialization is None:
            latest[name] = None
            continue
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        created = metadata.get("created_at")
        created_at = datetime.fromisoformat(created).timestamp() if isinstance(created, str) else event.timestamp  # type: ignore[union-attr]
        latest[name] = LatestBackup(created_at, materialization.partition, metadata)
    return latest
