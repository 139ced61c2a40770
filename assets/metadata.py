"""Materialization metadata: what the Dagster UI shows for each backup, verification and restore test.

Typed for people: locations are paths or URLs, sizes are integers (bytes) with a readable companion ("61.9 kB"),
times are timestamps, durations are rounded with a readable companion, lists of things are tables. Dagster
plots every numeric key over materializations, so numbers here are measurements that change from run to run;
settings such as targets are text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import dagster as dg

from backup_pipelines.crypto import fingerprint
from backup_pipelines.engines import RestoreReport
from backup_pipelines.engines.fingerprint import FINGERPRINT, FINGERPRINT_METHOD
from backup_pipelines.manifest import SNAPSHOT_KINDS
from backup_pipelines.operations import CopyCheck, StoredBackup
from backup_pipelines.repository import BackupRecord
from backup_pipelines.units import human_bytes, human_duration

MB = 1_000_000


def table(columns: Mapping[str, str], rows: Iterable[Mapping[str, Any]]) -> dg.MetadataValue:
    """Return `rows` as a Dagster table whose schema has `columns` (name -> Dagster column type)."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns.items()])
    return dg.MetadataValue.table([dg.TableRecord(dict(row)) for row in rows], schema=schema)


def location_value(location: str) -> dg.MetadataValue:
    """Return a stored object's location as a path (a local file), a URL (s3://...) or, for restic, text."""
    if location.startswith("/"):
        return dg.MetadataValue.path(location)
    if "://" in location:
        return dg.MetadataValue.url(location)
    return dg.MetadataValue.text(location)


def timestamp_value(moment: datetime | float) -> dg.MetadataValue:
    """Return a time as a Dagster timestamp (shown in the viewer's time zone)."""
    return dg.MetadataValue.timestamp(moment if isinstance(moment, datetime) else float(moment))


def size_values(key: str, count: int, readable: str) -> dict[str, dg.MetadataValue]:
    """Return a byte count as `key` (an integer, plotted) and `readable` (text: "61.9 kB")."""
    return {key: dg.MetadataValue.int(int(count)), readable: dg.MetadataValue.text(human_bytes(count))}


def seconds_values(key: str, seconds: float) -> dict[str, dg.MetadataValue]:
    """Return a duration as `<key>` (seconds, rounded to hundredths) and `<key minus _seconds>` ("2 min 5 s")."""
    return {
        key: dg.MetadataValue.float(round(float(seconds), 2)),
        key.removesuffix("_seconds"): dg.MetadataValue.text(human_duration(seconds)),
    }


def size_history_table(recent_sizes: Iterable[tuple[float, int]]) -> dg.MetadataValue:
    """Return a dataset's recent stored sizes ((epoch, bytes), oldest first) as a table: when, bytes, size."""
    return table(
        {"taken_at": "string", "bytes_stored": "int", "size": "string"},
        (
            {
                "taken_at": datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds"),
                "bytes_stored": int(size),
                "size": human_bytes(size),
            }
            for at, size in recent_sizes
        ),
    )


def rpo_check_metadata(age_seconds: float | None, rpo_seconds: float, partition: str | None) -> dict[str, Any]:
    """Return the RPO check's metadata: the age (rounded, plotted) and the RPO as text (a constant, so not
    plotted); the age is left out when there is no backup rather than plotted as -1."""
    metadata: dict[str, Any] = {
        "rpo": dg.MetadataValue.text(human_duration(rpo_seconds)),
        "newest_partition": dg.MetadataValue.text(partition or "none"),
    }
    if age_seconds is not None:
        metadata.update(seconds_values("age_seconds", round(age_seconds)))
    return metadata


def _row_count_table(tables: dict[str, int]) -> dg.MetadataValue:
    return table({"table": "string", "rows": "int"}, ({"table": t, "rows": rows} for t, rows in sorted(tables.items())))


def _pairs_table(first: str, second: str, values: Mapping[str, Any]) -> dg.MetadataValue:
    return table({first: "string", second: "string"}, ({first: k, second: str(v)} for k, v in sorted(values.items())))


def backup_metadata(stored: StoredBackup) -> dict[str, Any]:
    """Return the metadata of a backup materialization: identity, location, sizes, speed, source stats."""
    record = stored.record
    stats = record.source_stats
    tables: dict[str, int] = stats.get("tables", {})
    seconds = max(record.duration_seconds, 1e-6)
    metadata: dict[str, Any] = {
        "backup_id": dg.MetadataValue.text(record.backup_id),
        "created_at": dg.MetadataValue.text(record.created_at),  # ISO text: assets/history.py reads it
        "backup_time": timestamp_value(record.created),  # (`taken_at`, text, is added by assets/datasets.py)
        "location": location_value(next(iter(stored.locations.values()))),
        "locations": table(
            {"repository": "string", "location": "string"},
            ({"repository": name, "location": uri} for name, uri in stored.locations.items()),
        ),
        "copies": dg.MetadataValue.int(len(stored.locations)),
        **size_values("bytes_raw", record.bytes_raw, "size_raw"),
        **size_values("bytes_stored", record.bytes_stored, "size_stored"),
        "compression_ratio": dg.MetadataValue.float(round(record.bytes_raw / max(record.bytes_stored, 1), 2)),
        "sha256": dg.MetadataValue.text(record.sha256),
        **seconds_values("duration_seconds", record.duration_seconds),
        "throughput_mb_per_s": dg.MetadataValue.float(round(record.bytes_raw / MB / seconds, 2)),
        "encrypted": dg.MetadataValue.bool(record.encrypted),
        "recipient_fingerprints": dg.MetadataValue.text(", ".join(fingerprint(r) for r in record.recipients) or "-"),
        "tool_versions": _pairs_table("tool", "version", record.tool_versions),
        "source_server_version": dg.MetadataValue.text(str(stats.get("server_version", "")) or "-"),
        **size_values("source_database_size_bytes", int(stats.get("database_size_bytes", 0)), "source_database_size"),
        "source_table_count": dg.MetadataValue.int(int(stats.get("table_count", 0))),
        "source_large_objects": dg.MetadataValue.int(int(stats.get("large_objects", 0))),
        "dagster/row_count": dg.MetadataValue.int(sum(tables.values())),
    }
    if tables:
        metadata["source_row_counts"] = _row_count_table(tables)
    kept_out = {"tables", FINGERPRINT, FINGERPRINT_METHOD, "fingerprint_samples"}
    metadata["source_stats"] = _pairs_table("stat", "value", {k: v for k, v in stats.items() if k not in kept_out})
    if FINGERPRINT in stats:  # the digests themselves stay in the sidecar: thousands of items are no metadata
        metadata["fingerprint_items"] = dg.MetadataValue.int(len(stats[FINGERPRINT]))
        metadata["fingerprint_method"] = dg.MetadataValue.text(str(stats.get(FINGERPRINT_METHOD, "")))
    if record.kind == "files":
        metadata.update(
            {
                "snapshot_id": dg.MetadataValue.text(record.object_name),
                "files": dg.MetadataValue.int(int(stats.get("files", 0))),
                "files_new": dg.MetadataValue.int(int(stats.get("files_new", 0))),
                "files_changed": dg.MetadataValue.int(int(stats.get("files_changed", 0))),
                **size_values("bytes_added", int(stats.get("bytes_added", 0)), "size_added"),
            }
        )
    if record.kind in SNAPSHOT_KINDS:
        metadata.update(
            {
                "snapshot_id": dg.MetadataValue.text(record.object_name),
                "kms_key_id": dg.MetadataValue.text(str(stats.get("kms_key_id", "")) or "-"),
            }
        )
    return metadata


def verify_metadata(record: BackupRecord, checks: list[CopyCheck]) -> dict[str, Any]:
    """Return the metadata of a verification: which backup, and what each copy showed."""
    return {
        "backup_id": dg.MetadataValue.text(record.backup_id),
        "copies_verified": dg.MetadataValue.int(len(checks)),
        "sha256": dg.MetadataValue.text(record.sha256),
        **size_values("bytes_raw", record.bytes_raw, "size_raw"),
        "copies": table(
            {"repository": "string", "uri": "string", "bytes_stored": "int", "size": "string", "archive": "string"},
            (
                {
                    "repository": c.repository,
                    "uri": c.uri,
                    "bytes_stored": c.bytes_stored,
                    "size": human_bytes(c.bytes_stored),
                    "archive": ", ".join(f"{k} {v}" for k, v in c.archive.items() if k != "output") or "-",
                }
                for c in checks
            ),
        ),
        # a small dict, read as such by scripts/demo.py
        "archive_check": dg.MetadataValue.json(
            {k: v for k, v in (checks[0].archive if checks else {}).items() if k != "output"}
        ),
    }


def restore_metadata(record: BackupRecord, report: RestoreReport, rto_seconds: float) -> dict[str, Any]:
    """Return the metadata of a restore test: timings against the RTO and every comparison made, as a table."""
    measured = report.restore_seconds + report.validation_seconds
    jobs = report.restored_stats.get("pg_restore_jobs")  # PostgreSQL only: 1 when streamed
    return {
        "backup_id": dg.MetadataValue.text(record.backup_id),
        "backup_created_at": timestamp_value(record.created),
        "restore_target": dg.MetadataValue.text(report.target),
        **seconds_values("restore_seconds", report.restore_seconds),
        **seconds_values("validation_seconds", report.validation_seconds),
        **seconds_values("measured_rto_seconds", measured),
        "rto_target": dg.MetadataValue.text(human_duration(rto_seconds)),  # a setting: text, so never plotted
        "within_rto": dg.MetadataValue.bool(measured <= rto_seconds),
        **size_values("bytes_restored", report.bytes_raw, "size_restored"),
        "checks_passed": dg.MetadataValue.int(len(report.outcomes) - len(report.failures)),
        "checks_total": dg.MetadataValue.int(len(report.outcomes)),
        **({"pg_restore_jobs": dg.MetadataValue.int(jobs)} if jobs is not None else {}),
        "comparisons": table(
            {"check": "string", "expected": "string", "actual": "string", "passed": "bool"},
            (
                {"check": o.name, "expected": str(o.expected), "actual": str(o.actual), "passed": bool(o.passed)}
                for o in report.outcomes
            ),
        ),
        "compared": dg.MetadataValue.text(
            str(record.source_stats.get(FINGERPRINT_METHOD) or "counts and validation queries (no content fingerprint)")
        ),
    }
