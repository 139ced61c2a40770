"""The status report, the dashboard, the DR runbook and the materialization metadata, without servers."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from assets.metadata import backup_metadata, restore_metadata, rpo_check_metadata, size_history_table, verify_metadata
from assets.report_job import STATUS_ROWS, status_table
from assets.reports import frame_table
from backup_pipelines.engines import RestoreReport
from backup_pipelines.engines.base import CheckOutcome
from backup_pipelines.manifest import parse_manifest
from backup_pipelines.operations import CopyCheck, StoredBackup
from backup_pipelines.repository import BackupRecord, ResticRepository
from backup_pipelines.repository.local import LocalRepository
from backup_pipelines.runbook import Measured, render_runbook, restore_commands
from backup_pipelines.status import BucketStatus, DatasetStatus, bucket_frame, render_html, state_counts, status_frame
from backup_pipelines.units import human_bytes, human_change, human_duration
from tests.conftest import backup_record
from tests.unit.test_manifest import VALID

NOW = 1_800_000_000.0
HOUR = 3600.0
DAY = 86400.0
NUMERIC = (dg.IntMetadataValue, dg.FloatMetadataValue)


def history(newest: int) -> list[tuple[float, int]]:
    """Five hourly sizes ending at `newest`, each 0.2 % bigger than the one before: a small change, no cliff."""
    return [(NOW - (4 - i) * HOUR, round(newest / 1.002 ** (4 - i))) for i in range(5)]


def every_state() -> list[DatasetStatus]:
    """One dataset in each state the dashboard knows (and one never backed up), with realistic measurements."""
    tested: dict[str, Any] = {
        "last_restore_test_at": NOW - 2 * DAY,
        "measured_rto_seconds": 125.4,
        "last_verified_at": NOW - 600,
    }
    common: dict[str, Any] = {"bytes_raw": 250_000, "copies": 2, "three_two_one": "pass", **tested}
    location = "s3://backups-offsite/orders_db/2027-01-15-07:00/20270115T080000Z-abcdef.dump.zst.age"
    dropped = [(NOW - 2 * HOUR, 21_500), (NOW - HOUR, 21_600), (NOW, 8_192)]
    return [
        DatasetStatus(
            "orders_db", "postgres", "hourly", HOUR, 1800, NOW - 600, "2027-01-15-07:00", 62_380,
            location=location, size_history=history(62_380), **common,
        ),
        DatasetStatus(
            "billing_db", "mysql", "hourly", HOUR, 1800, NOW - 50 * 60, bytes_stored=2_400_000_000,
            size_history=history(2_400_000_000), **common,
        ),
        DatasetStatus(
            "legacy_db", "postgres", "daily", DAY, 3600, NOW - 200_000, bytes_stored=10,
            size_history=history(10), **common,
        ),
        DatasetStatus(
            "app_sqlite", "sqlite", "hourly", HOUR, 1800, NOW - 900, bytes_stored=8_192, size_history=dropped,
            **common, failures=("size_anomaly check failed: stored size dropped 62% against the median of 10 backups",),
        ),
        DatasetStatus(
            "configs", "files", "daily", DAY, 3600, NOW - 4 * HOUR, bytes_stored=1_500_000,
            size_history=history(1_500_000), **{**common, "last_restore_test_at": NOW - 12 * DAY},
        ),
        DatasetStatus("new_db", "postgres", "hourly", HOUR, 1800),
    ]  # fmt: skip


def states(now: float = NOW) -> dict[str, tuple[str, str]]:
    return {item.name: item.state(now) for item in every_state()}


def test_each_dataset_gets_a_state_with_its_reason() -> None:
    found = states()
    assert found["orders_db"] == ("ok", "backup 10 min old (RPO 1 h); restore-tested 2 d ago")
    assert found["billing_db"][0] == "warning" and "83% of the RPO of 1 h" in found["billing_db"][1]
    assert found["legacy_db"] == ("stale", "newest backup is 2 d 8 h old, over the RPO of 24 h")
    assert found["app_sqlite"] == ("failing", every_state()[3].failures[0])
    assert found["configs"] == ("unverified", "last restore test 12 d ago; drills run every 7 d")
    assert found["new_db"] == ("stale", "no backup yet")


def test_a_failed_restore_test_or_disabled_tests_leave_a_dataset_unverified() -> None:
    item = every_state()[0]
    failed = replace(item, restore_failure="restore_test run 1a2b3c4d failed")
    assert failed.state(NOW) == ("unverified", "last restore test failed: restore_test run 1a2b3c4d failed")
    disabled = replace(item, restore_tests_enabled=False)
    assert disabled.state(NOW)[0] == "unverified" and "disabled" in disabled.state(NOW)[1]
    slow = replace(item, measured_rto_seconds=2400.0)
    assert slow.state(NOW) == ("warning", "last restore took 40 min, over the RTO of 30 min")


def test_status_table_is_worst_first_with_units_and_no_python_values() -> None:
    frame = status_frame(every_state(), NOW)
    assert list(frame["state"]) == ["failing", "stale", "stale", "unverified", "warning", "ok"]
    orders = frame[frame["dataset"] == "orders_db"].iloc[0]
    assert orders["size stored"] == "62.4 kB" and orders["trend"] == "+0.5%" and orders["age"] == "10 min"
    assert orders["measured rto"] == "2 min 5 s" and orders["rto ok"] == "yes" and orders["3-2-1"] == "pass"
    billing = frame[frame["dataset"] == "billing_db"].iloc[0]
    assert billing["size stored"] == "2.4 GB"
    text = frame.to_string()
    assert "True" not in text and "False" not in text and "-0%" not in text and "nan" not in text
    assert state_counts(frame) == {"failing": 1, "stale": 2, "unverified": 1, "warning": 1, "ok": 1}


def test_units_for_people() -> None:
    assert [human_bytes(n) for n in (0, 999, 61_900, 1_234_567, 12_345_678_901)] == [
        "0 B", "999 B", "61.9 kB", "1.23 MB", "12.3 GB",
    ]  # fmt: skip
    assert [human_duration(s) for s in (0.03, 4.23, 150.37346148490906, 2700, 9000, 200_000)] == [
        "30 ms", "4.2 s", "2 min 30 s", "45 min", "2 h 30 min", "2 d 8 h",
    ]  # fmt: skip
    assert [human_change(r) for r in (-0.0001, -0.002, 0.05, 1.0)] == ["no change", "-0.2%", "+5.0%", "+100%"]


def test_dashboard_is_self_contained_with_states_reasons_details_and_zero_based_charts() -> None:
    page = render_html(every_state(), NOW, runbook_generated_at=NOW - 600)
    assert page.startswith("<!doctype html>") and "6 datasets:" in page
    for state in ("ok", "warning", "stale", "failing", "unverified"):
        assert f'<tr class="{state}"' in page
    assert "stored size dropped 62%" in page and "drills run every 7 d" in page
    assert page.count("<details>") == 6 and "s3://backups-offsite/orders_db/" in page
    assert "0 to 62.4 kB" in page  # the chart's scale starts at zero and is labelled
    assert "DR runbook generated" in page and "(10 min ago)" in page
    assert "http" not in page.split("<body>")[1] and "<script" not in page  # no external resource, no JS
    assert "True" not in page and "-0%" not in page and "0.0s" not in page


def test_dashboard_says_when_the_runbook_is_out_of_date() -> None:
    assert 'class="alert">DR runbook generated' in render_html(every_state(), NOW, runbook_generated_at=NOW - DAY)
    assert "DR runbook: never generated" in render_html(every_state(), NOW)


def test_a_small_change_is_drawn_small() -> None:
    page = render_html(every_state()[:1], NOW)
    points = page.split('points="')[1].split('"')[0].split()
    heights = [float(point.split(",")[1]) for point in points]
    assert max(heights) - min(heights) < 1  # 0.8 % of a 22 px tall chart (first to last), not its full height


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
    page = render_html(every_state(), NOW, buckets)
    assert "2 buckets, 1 failing a rule" in page and "FAIL: versioning is suspended" in page
    assert "Protected buckets" not in render_html(every_state(), NOW)


def test_the_status_metadata_is_a_table_not_markdown() -> None:
    value = frame_table(status_frame(every_state(), NOW), {"copies": "int"})
    assert isinstance(value, dg.TableMetadataValue)
    assert value.schema.columns[0].name == "dataset" and {c.name for c in value.schema.columns} >= {"state", "reason"}
    assert value.records[0].data["state"] == "failing" and value.records[0].data["copies"] == 2


def test_the_status_metadata_keeps_the_worst_rows_of_a_big_fleet() -> None:
    """The dashboard file lists every dataset; the materialization keeps STATUS_ROWS rows, worst first (10,000
    rows made each refresh's event 4.3 MB)."""
    fleet = [replace(item, name=f"{item.name}_{n:03d}") for n in range(40) for item in every_state()]
    metadata = status_table(status_frame(fleet, NOW))
    records = metadata["status"].records
    assert len(records) == STATUS_ROWS == 200 and metadata["status_rows"] == (
        "the 200 worst of 240; the dashboard lists every dataset"
    )
    assert [r.data["state"] for r in records[:40]] == ["failing"] * 40 and records[-1].data["state"] == "warning"
    assert "status_rows" not in status_table(status_frame(every_state(), NOW))


def _record(**changes: object) -> BackupRecord:
    fields: dict[str, object] = {
        "partition_key": "2026-11-20-05:00",
        "object_name": "20261120T060500Z-abcdef.dump.zst.age",
        "created_at": "2027-01-15T08:00:00+00:00",
        "bytes_raw": 250_000,
        "bytes_stored": 61_900,
        "sha256": "ab" * 32,
        "encrypted": True,
        "recipients": ["age1xyz"],
        "source_stats": {"tables": {"shop.orders": 42}, "server_version": "16.4", "database_size_bytes": 8_000_000},
        "tool_versions": {"pg_dump": "16.4", "zstd": "1.5.5"},
        "duration_seconds": 150.37346148490906,
    }
    return backup_record("20261120T060500Z-abcdef", **{**fields, **changes})


def test_backup_metadata_is_typed_with_units() -> None:
    stored = StoredBackup(_record(), {"local": "/srv/backups/orders/x.dump.zst.age", "offsite": "s3://b/orders/x"})
    metadata = backup_metadata(stored)
    assert isinstance(metadata["location"], dg.PathMetadataValue)
    assert isinstance(metadata["backup_time"], dg.TimestampMetadataValue)
    for key in ("locations", "tool_versions", "source_stats", "source_row_counts"):
        assert isinstance(metadata[key], dg.TableMetadataValue), key
    assert [r.data for r in metadata["locations"].records][1] == {
        "repository": "offsite",
        "location": "s3://b/orders/x",
    }
    assert metadata["bytes_stored"].value == 61_900 and metadata["size_stored"].value == "61.9 kB"
    assert metadata["source_database_size"].value == "8 MB"
    assert metadata["duration_seconds"].value == 150.37 and metadata["duration"].value == "2 min 30 s"
    assert not any(isinstance(value, dg.JsonMetadataValue) for value in metadata.values())
    s3 = backup_metadata(StoredBackup(_record(), {"offsite": "s3://b/orders/x"}))
    assert isinstance(s3["location"], dg.UrlMetadataValue)


def test_verify_and_restore_metadata_show_tables_and_no_constant_targets() -> None:
    record = _record()
    checks = [CopyCheck("local", "/srv/x", 61_900, 250_000, "ab" * 32, {"toc_entries": 12, "output": "..."})]
    verified = verify_metadata(record, checks)
    assert isinstance(verified["copies"], dg.TableMetadataValue) and verified["size_raw"].value == "250 kB"
    assert verified["copies"].records[0].data["archive"] == "toc_entries 12"
    outcomes = [CheckOutcome("rows shop.orders", 42, 42, True), CheckOutcome("fingerprint", "a1", "a1", True)]
    report = RestoreReport("orders_restored", 2.345678, 0.031, 250_000, outcomes)
    restored = restore_metadata(record, report, 1800.0)
    comparisons = restored["comparisons"]
    assert isinstance(comparisons, dg.TableMetadataValue)
    assert [c.name for c in comparisons.schema.columns] == ["check", "expected", "actual", "passed"]
    assert comparisons.records[0].data == {
        "check": "rows shop.orders",
        "expected": "42",
        "actual": "42",
        "passed": True,
    }
    assert isinstance(restored["backup_created_at"], dg.TimestampMetadataValue)
    assert restored["measured_rto_seconds"].value == 2.38 and restored["measured_rto"].value == "2.4 s"
    assert restored["rto_target"].value == "30 min"
    # Dagster plots every number: the numbers are measurements of this run; every setting (the RTO) is text.
    numeric = {key for key, value in restored.items() if isinstance(value, NUMERIC)}
    assert numeric == {
        "restore_seconds", "validation_seconds", "measured_rto_seconds", "bytes_restored", "checks_passed",
        "checks_total",
    }  # fmt: skip
    assert not any(isinstance(value, dg.JsonMetadataValue) for value in restored.values())


def test_rpo_check_metadata_plots_the_rounded_age_not_the_rpo() -> None:
    metadata = rpo_check_metadata(150.37346148490906, 3600.0, "2027-01-15-07:00")
    assert metadata["age_seconds"].value == 150 and metadata["age"].value == "2 min 30 s"
    assert metadata["rpo"].value == "1 h" and not isinstance(metadata["rpo"], NUMERIC)
    assert "age_seconds" not in rpo_check_metadata(None, 3600.0, None)  # no -1 plotted for "no backup"


def test_size_history_is_a_table_with_units() -> None:
    value = size_history_table([(NOW - HOUR, 61_900), (NOW, 62_020)])
    assert isinstance(value, dg.TableMetadataValue)
    assert [r.data["size"] for r in value.records] == ["61.9 kB", "62 kB"]


def _runbook_manifest() -> dict[str, Any]:
    data: dict[str, Any] = copy.deepcopy(VALID)
    data["repositories"]["vault"] = {
        "type": "restic",
        "repository": "s3:http://minio/configs",
        "password_env": "VAULT_PW",
    }
    data["servers"]["my"] = {"kind": "mysql", "user": "backup", "password_env": "MY_PASSWORD"}
    orders = data["datasets"]["orders"]
    data["datasets"]["shop"] = {**orders, "kind": "mysql", "source": {"server": "my", "database": "shop"}}
    data["datasets"]["configs"] = {
        **orders, "kind": "files", "source": {"paths": ["/etc"]}, "repositories": ["vault"],
        "encryption": {"enabled": False},
    }  # fmt: skip
    return data


def test_runbook_gives_targets_measurements_and_standard_commands(tmp_path: Path) -> None:
    manifest = parse_manifest(yaml.safe_dump(VALID))
    record = _record(bytes_raw=100, bytes_stored=50)
    repository = LocalRepository("local", tmp_path)
    measured = {"orders": Measured(record, repository.uri(record.object_path), repository, NOW - 3600, 95.0)}
    now = record.created.timestamp() + 5400
    text = render_runbook(manifest, measured, now)
    assert "> **Generated 2027-01-15 09:30 UTC**" in text.split("\n")[2]  # prominent, right under the title
    assert "## orders" in text
    assert "RPO target 1h; newest backup is 1h 30m old (**STALE**)" in text
    assert "RTO target 30m; last measured restore 1m 35s" in text
    assert f"echo '{record.sha256}  backup.obj' | sha256sum -c -" in text
    assert "- `shop.orders`: 42" in text and "50 B stored" in text
    assert "export AGE_IDENTITY_FILE=/path/to/age-identity.txt PGHOST=" in text
    for command in restore_commands(repository, record, "orders_restored"):
        assert command in text


def test_runbook_setup_lines_are_per_kind(tmp_path: Path) -> None:
    manifest = parse_manifest(yaml.safe_dump(_runbook_manifest()), str(tmp_path / "m.yaml"))
    local = LocalRepository("local", tmp_path)
    restic = ResticRepository("vault", "s3:http://minio/configs", {})
    shop = _record(dataset="shop", kind="mysql", format="mysqldump", object_name="x.sql.zst.age", source_stats={})
    configs = _record(dataset="configs", kind="files", format="restic", object_name="4f2a", encrypted=False,
                      recipients=[], source_stats={})  # fmt: skip
    measured = {
        "shop": Measured(shop, local.uri(shop.object_path), local),
        "configs": Measured(configs, restic.uri(configs.object_path), restic),
    }
    text = render_runbook(manifest, measured, NOW)
    sections = {part.split("\n")[0]: part for part in text.split("\n## ")[1:]}
    assert "PGPASSWORD" not in sections["shop"] and "MYSQL_PWD" in sections["shop"]
    assert "export AGE_IDENTITY_FILE" in sections["shop"]
    assert "PGHOST" not in sections["configs"] and "AGE_IDENTITY_FILE" not in sections["configs"]
    assert "- Encrypted by restic: repository `s3:http://minio/configs`, password in `$VAULT_PW`" in sections["configs"]
    assert (
        "# restic repository s3:http://minio/configs: set RESTIC_PASSWORD below to the value of $VAULT_PW"
        in (sections["configs"])
    )
    assert "Encrypted to: \n" not in text and not text.count("Encrypted to: -")
