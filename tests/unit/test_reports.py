from __future__ import annotations

from pathlib import Path

import yaml

from backup_pipelines.manifest import parse_manifest
from backup_pipelines.repository import BackupRecord
from backup_pipelines.repository.local import LocalRepository
from backup_pipelines.runbook import Measured, render_runbook, restore_commands
from backup_pipelines.status import BucketStatus, DatasetStatus, bucket_frame, render_html, status_frame
from tests.unit.test_manifest import VALID

NOW = 1_800_000_000.0


def statuses() -> list[DatasetStatus]:
    return [
        DatasetStatus(
            "fresh_db",
            "postgres",
            "hourly",
            3600,
            1800,
            last_backup_at=NOW - 600,
            bytes_stored=2_000,
            copies=2,
            last_restore_test_at=NOW - 7200,
            measured_rto_seconds=120,
            size_history=[(NOW - 7200, 1_000), (NOW - 3600, 1_000), (NOW - 600, 2_000)],
        ),
        DatasetStatus("stale_db", "postgres", "daily", 86400, 3600, last_backup_at=NOW - 200_000, bytes_stored=10),
        DatasetStatus("never_db", "postgres", "hourly", 3600, 1800),
    ]


def test_status_table_puts_stale_datasets_first_with_age_trend_and_rto() -> None:
    frame = status_frame(statuses(), NOW)
    assert list(frame["dataset"]) == ["never_db", "stale_db", "fresh_db"]
    fresh = frame[frame["dataset"] == "fresh_db"].iloc[0]
    assert fresh["status"] == "ok" and fresh["age"] == "10m" and fresh["trend"] == "+100%"
    assert fresh["rto ok"] == "True" and fresh["copies"] == 2
    assert frame[frame["dataset"] == "stale_db"].iloc[0]["age"] == "2d 7h"


def test_dashboard_is_self_contained_html_with_charts() -> None:
    page = render_html(statuses(), NOW)
    assert page.startswith("<!doctype html>") and "3 datasets, 2 stale" in page
    assert page.count("<svg") == 6 and "<polyline" in page
    assert "http" not in page.split("<body>")[1]  # no external resource


def test_watched_buckets_get_their_own_table_failing_first() -> None:
    buckets = [
        BucketStatus("assets", "cdn-assets", "eu-west-1", {"versioning_enabled": (True, "versioning is enabled")}, NOW),
        BucketStatus(
            "uploads",
            "customer-uploads",
            "eu-west-1",
            {"versioning_enabled": (False, "versioning is suspended"), "replication_enabled": None},
            NOW,
        ),
    ]
    frame = bucket_frame(buckets)
    assert list(frame["dataset"]) == ["uploads", "assets"] and list(frame["status"]) == ["FAIL", "ok"]
    first = frame.iloc[0]
    assert (
        first["versioning_enabled"] == "FAIL: versioning is suspended" and first["replication_enabled"] == "not checked"
    )
    assert frame.iloc[1]["replication_enabled"] == "-"  # a rule that bucket is not asked to meet
    page = render_html(statuses(), NOW, buckets)
    assert "2 buckets, 1 failing a rule" in page and "FAIL: versioning is suspended" in page
    assert "Protected buckets" not in render_html(statuses(), NOW)


def test_runbook_gives_targets_measurements_and_standard_commands(tmp_path: Path) -> None:
    manifest = parse_manifest(yaml.safe_dump(VALID))
    record = BackupRecord(
        dataset="orders",
        partition_key="2026-11-20-05:00",
        backup_id="20261120T060500Z-abcdef",
        kind="postgres",
        format="pg_dump-custom",
        object_name="20261120T060500Z-abcdef.dump.zst.age",
        created_at="2027-01-15T08:00:00+00:00",
        bytes_raw=100,
        bytes_stored=50,
        sha256="ab" * 32,
        compression="zstd",
        encrypted=True,
        recipients=["age1xyz"],
        source_stats={"tables": {"shop.orders": 42}},
    )
    repository = LocalRepository("local", tmp_path)
    measured = {"orders": Measured(record, repository.uri(record.object_path), repository, NOW - 3600, 95.0)}
    text = render_runbook(manifest, measured, record.created.timestamp() + 5400)
    assert "## orders" in text
    assert "RPO target 1h; newest backup is 1h 30m old (**STALE**)" in text
    assert "RTO target 30m; last measured restore 1m 35s" in text
    assert f"echo '{record.sha256}  backup.obj' | sha256sum -c -" in text
    assert "- `shop.orders`: 42" in text
    for command in restore_commands(repository, record, "orders_restored"):
        assert command in text
