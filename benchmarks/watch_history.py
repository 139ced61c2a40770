"""The event history of the scale benchmark (bench_monitoring.py): per dataset, backups recorded with the
metadata the backup step records (assets/metadata.py: sizes, locations, tool versions, source stats, a row
count per table and the recent sizes) and indexed as the step indexes it (assets/stage_index.py), then a
verification and a restore test with theirs (one comparison per table count, the fingerprint and the
validation queries), so the report reads events as heavy as real ones."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from assets.metadata import backup_metadata, restore_metadata, size_history_table, verify_metadata
from assets.stage_index import record_attempt, record_done
from backup_pipelines.engines.base import CheckOutcome, RestoreReport
from backup_pipelines.operations import CopyCheck, StoredBackup
from backup_pipelines.repository.base import BackupRecord

TOOLS = {"pg_dump": "17.2", "zstd": "1.5.4", "age (pyrage)": "1.2.3"}


def _record(name: str, created: datetime, tables: int, age: int) -> BackupRecord:
    rows = {f"public.t{n:03d}": 1000 + n for n in range(tables)}
    return BackupRecord(
        dataset=name,
        partition_key=f"{created:%Y-%m-%d-%H}:00",
        backup_id=f"{created:%Y%m%dT%H%M%SZ}-000000",
        kind="postgres",
        format="pg_dump-custom",
        object_name=f"{created:%Y%m%dT%H%M%SZ}-000000.dump.zst.age",
        created_at=created.isoformat(),
        bytes_raw=10_000_000 + age,
        bytes_stored=4_000_000 + age,
        sha256="0" * 64,
        compression="zstd",
        encrypted=True,
        recipients=[],
        duration_seconds=3.0,
        source_stats={
            "tables": rows,
            "table_count": tables,
            "server_version": "17.2",
            "database_size_bytes": 12_000_000,
            "large_objects": 0,
            "fingerprint_method": "columns",
        },
        tool_versions=TOOLS,
    )


def index(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    partition: str,
    metadata: dict[str, Any],
    recent_sizes: list[tuple[float, int]] | None = None,
) -> None:
    """Index a step's start and completion as the step does (assets/stage_index.py)."""
    record_attempt(instance, key, "bench")
    record_done(instance, key, "bench", partition, metadata, recent_sizes)


def fill_history(
    instance: dg.DagsterInstance, names: list[str], backups: int, threads: int = 1, tables: int = 20
) -> None:
    """Record `backups` hourly backups, a verification and a restore test per dataset, each database of
    `tables` tables, from `threads` threads (a PostgreSQL instance takes several writers; SQLite one)."""
    now = datetime.now(UTC)

    def fill(name: str) -> None:
        record = None
        for age in range(backups, 0, -1):
            created = now - timedelta(hours=age)
            record = _record(name, created, tables, age)
            stored = StoredBackup(record, {"local": f"/backups/{name}/{record.object_path}"})
            recent = [((created - timedelta(hours=h)).timestamp(), 4_000_000 + h) for h in range(10, -1, -1)]
            metadata = {
                **backup_metadata(stored),
                "size_check": "pass",
                "size_history": size_history_table(recent),
                "three_two_one": "missing 3 copies: only 1",
            }
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    dg.AssetKey([name, "backup"]), partition=record.partition_key, metadata=metadata
                )
            )
            index(instance, dg.AssetKey([name, "backup"]), record.partition_key, metadata, recent)
        assert record is not None
        check = CopyCheck(
            "local", f"/backups/{name}/{record.object_path}", record.bytes_stored, record.bytes_raw, "0" * 64
        )
        verified = verify_metadata(record, [check])
        instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey([name, "verify"]), metadata=verified))
        index(instance, dg.AssetKey([name, "verify"]), record.partition_key, verified)
        outcomes = [
            CheckOutcome(f"rows {table}", rows, rows, True) for table, rows in record.source_stats["tables"].items()
        ]
        outcomes += [CheckOutcome("content fingerprint", "a1b2c3", "a1b2c3", True), CheckOutcome("query 1", 1, 1, True)]
        report = RestoreReport("scratch database", 30.0, 12.0, record.bytes_raw, outcomes)
        restored = restore_metadata(record, report, 3600)
        instance.report_runless_asset_event(
            dg.AssetMaterialization(dg.AssetKey([name, "restore_test"]), metadata=restored)
        )
        index(instance, dg.AssetKey([name, "restore_test"]), record.partition_key, restored)
        if name.endswith("00"):  # one dataset in 100: a newer backup run started it (the page asks for its status)
            record_attempt(instance, dg.AssetKey([name, "backup"]), f"bench-started-{name}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fill, names))
