"""Materialization metadata: what the Dagster UI shows for each backup, verification and restore test."""

from __future__ import annotations

from typing import Any

import dagster as dg

from backup_pipelines.crypto import fingerprint
from backup_pipelines.engines import RestoreReport
from backup_pipelines.engines.fingerprint import FINGERPRINT, FINGERPRINT_METHOD
from backup_pipelines.manifest import SNAPSHOT_KINDS
from backup_pipelines.operations import CopyCheck, StoredBackup
from backup_pipelines.repository import BackupRecord

MB = 1_000_000


def _row_count_table(tables: dict[str, int]) -> dg.MetadataValue:
    schema = dg.TableSchema(columns=[dg.TableColumn("table", "string"), dg.TableColumn("rows", "int")])
    records = [dg.TableRecord({"table": table, "rows": rows}) for table, rows in sorted(tables.items())]
    return dg.MetadataValue.table(records, schema=schema)


def backup_metadata(stored: StoredBackup) -> dict[str, Any]:
    """Return the metadata of a backup materialization: identity, location, sizes, speed, source stats."""
    record = stored.record
    stats = record.source_stats
    tables: dict[str, int] = stats.get("tables", {})
    seconds = max(record.duration_seconds, 1e-6)
    metadata: dict[str, Any] = {
        "backup_id": dg.MetadataValue.text(record.backup_id),
        "created_at": dg.MetadataValue.text(record.created_at),
        "location": dg.MetadataValue.text(next(iter(stored.locations.values()))),
        "locations": dg.MetadataValue.json(stored.locations),
        "copies": dg.MetadataValue.int(len(stored.locations)),
        "bytes_raw": dg.MetadataValue.int(record.bytes_raw),
        "bytes_stored": dg.MetadataValue.int(record.bytes_stored),
        "compression_ratio": dg.MetadataValue.float(round(record.bytes_raw / max(record.bytes_stored, 1), 3)),
        "sha256": dg.MetadataValue.text(record.sha256),
        "duration_seconds": dg.MetadataValue.float(record.duration_seconds),
        "throughput_mb_per_s": dg.MetadataValue.float(round(record.bytes_raw / MB / seconds, 2)),
        "encrypted": dg.MetadataValue.bool(record.encrypted),
        "recipient_fingerprints": dg.MetadataValue.json([fingerprint(r) for r in record.recipients]),
        "tool_versions": dg.MetadataValue.json(record.tool_versions),
        "source_server_version": dg.MetadataValue.text(str(stats.get("server_version", ""))),
        "source_database_size_bytes": dg.MetadataValue.int(int(stats.get("database_size_bytes", 0))),
        "source_table_count": dg.MetadataValue.int(int(stats.get("table_count", 0))),
        "source_large_objects": dg.MetadataValue.int(int(stats.get("large_objects", 0))),
        "dagster/row_count": dg.MetadataValue.int(sum(tables.values())),
    }
    if tables:
        metadata["source_row_counts"] = _row_count_table(tables)
    kept_out = {"tables", FINGERPRINT, FINGERPRINT_METHOD, "fingerprint_samples"}
    metadata["source_stats"] = dg.MetadataValue.json({k: v for k, v in stats.items() if k not in kept_out})
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
                "bytes_added": dg.MetadataValue.int(int(stats.get("bytes_added", 0))),
            }
        )
    if record.kind in SNAPSHOT_KINDS:
        metadata.update(
            {
                "snapshot_id": dg.MetadataValue.text(record.object_name),
                "kms_key_id": dg.MetadataValue.text(str(stats.get("kms_key_id", ""))),
            }
        )
    return metadata


def verify_metadata(record: BackupRecord, checks: list[CopyCheck]) -> dict[str, Any]:
    """Return the metadata of a verification: which backup, and what each copy showed."""
    return {
        "backup_id": dg.MetadataValue.text(record.backup_id),
        "copies_verified": dg.MetadataValue.int(len(checks)),
        "sha256": dg.MetadataValue.text(record.sha256),
        "bytes_raw": dg.MetadataValue.int(record.bytes_raw),
        "copies": dg.MetadataValue.json(
            [{"repository": c.repository, "uri": c.uri, "bytes_stored": c.bytes_stored, **c.archive} for c in checks]
        ),
        "archive_check": dg.MetadataValue.json(
            {k: v for k, v in (checks[0].archive if checks else {}).items() if k != "output"}
        ),
    }


def restore_metadata(record: BackupRecord, report: RestoreReport, rto_seconds: float) -> dict[str, Any]:
    """Return the metadata of a restore test: timings against the RTO and every comparison made."""
    outcomes = [
        {"check": o.name, "expected": str(o.expected), "actual": str(o.actual), "passed": o.passed}
        for o in report.outcomes
    ]
    measured = report.restore_seconds + report.validation_seconds
    return {
        "backup_id": dg.MetadataValue.text(record.backup_id),
        "backup_created_at": dg.MetadataValue.text(record.created_at),
        "restore_target": dg.MetadataValue.text(report.target),
        "restore_seconds": dg.MetadataValue.float(round(report.restore_seconds, 3)),
        "validation_seconds": dg.MetadataValue.float(round(report.validation_seconds, 3)),
        "measured_rto_seconds": dg.MetadataValue.float(round(measured, 3)),
        "rto_target_seconds": dg.MetadataValue.float(rto_seconds),
        "within_rto": dg.MetadataValue.bool(measured <= rto_seconds),
        "bytes_restored": dg.MetadataValue.int(report.bytes_raw),
        "checks_passed": dg.MetadataValue.int(len(report.outcomes) - len(report.failures)),
        "checks_total": dg.MetadataValue.int(len(report.outcomes)),
        "comparisons": dg.MetadataValue.json(outcomes),
        "compared": dg.MetadataValue.text(
            str(record.source_stats.get(FINGERPRINT_METHOD) or "counts and validation queries (no content fingerprint)")
        ),
    }
