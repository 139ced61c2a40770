"""MySQL/MariaDB datasets against a real MariaDB server started by the fixtures."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from assets.partitions import LATE_ALLOW, LATE_TAG
from backup_pipelines.crypto import KeyPair
from backup_pipelines.definitions import build_definitions
from backup_pipelines.errors import BackupError, RestoreTargetExistsError, SourceUnavailableError, ValidationFailedError
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import restore_backup, restore_test_backup, run_backup, verify_backup
from backup_pipelines.sandbox import free_port
from tests.conftest import manifest_for, mysql_server

# Fixed partitions of the past: the backup asset refuses them unless the run says a late backup is meant.
LATE = {LATE_TAG: LATE_ALLOW}

PARTITION = "2026-11-24"


@pytest.fixture(autouse=True)
def identity(age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)


def mysql_manifest(tmp_path: Path, mariadb: Any, age_keys: KeyPair, port: int | None = None, **fields: Any) -> Manifest:
    dataset = {"kind": "mysql", "source": {"server": "maria", "database": "shop"}, **fields}
    return manifest_for(tmp_path, age_keys, {"shop": dataset}, {"maria": mysql_server(mariadb, port)})


def test_mysql_round_trip_with_routines_triggers_and_utf8(tmp_path: Path, mariadb: Any, age_keys: KeyPair) -> None:
    manifest = mysql_manifest(
        tmp_path,
        mariadb,
        age_keys,
        verification={
            "queries": [
                {"name": "order_count", "sql": "select order_count()", "expect": {"same_as_source": True}},
                {
                    "name": "names",
                    "sql": "select count(*) from customers where name like 'Zoë Çelik ✓%'",
                    "expect": {"equals": 50},
                },
            ]
        },
    )
    record = run_backup(manifest, "shop", PARTITION).record
    assert record.object_name.endswith(".sql.zst.age")
    assert record.source_stats["tables"] == {"audit": 1000, "customers": 50, "orders": 1000}  # audit: a trigger
    [check] = verify_backup(manifest, "shop", record)
    assert check.archive == {"tables": 3, "completed": True}
    report = restore_test_backup(manifest, "shop", record)
    assert report.failures == [] and report.restored_stats["tables"] == record.source_stats["tables"]
    with mariadb.connect() as connection, connection.cursor() as cursor:
        cursor.execute("show databases like 'bp_restore_%'")
        assert cursor.fetchall() == ()


def test_a_mysql_restore_never_overwrites_and_a_failed_one_leaves_no_database(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = mysql_manifest(tmp_path, mariadb, age_keys)
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)
    record = run_backup(manifest, "shop", PARTITION).record
    restore_backup(manifest, "shop", record, "shop_restored_once")
    with pytest.raises(RestoreTargetExistsError, match="'shop_restored_once' already exists"):
        restore_backup(manifest, "shop", record, "shop_restored_once")
    stored = manifest.resolve_path(str(tmp_path / "repo")) / record.object_path
    stored.write_bytes(stored.read_bytes()[:-100])  # damaged: the checksum fails part-way through the replay
    with pytest.raises(BackupError):
        restore_backup(manifest, "shop", record, "shop_half")
    with mariadb.connect() as connection, connection.cursor() as cursor:
        cursor.execute("show databases like 'shop_half'")
        assert cursor.fetchall() == ()
        cursor.execute("drop database shop_restored_once")


def test_row_counts_are_consistent_with_the_dump_under_concurrent_writes(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair
) -> None:
    manifest = mysql_manifest(tmp_path, mariadb, age_keys)
    stop = threading.Event()

    def writer() -> None:
        with mariadb.connect("shop") as connection, connection.cursor() as cursor:
            n = 100_000
            while not stop.is_set():
                cursor.execute("insert into orders values (%s, 1, 1, 'concurrent')", (n,))
                n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        records = [run_backup(manifest, "shop", PARTITION).record for _ in range(3)]
    finally:
        stop.set()
        thread.join()
        with mariadb.connect("shop") as connection, connection.cursor() as cursor:
            cursor.execute("delete from orders where id >= 100000")
            cursor.execute("delete from audit where id > 1000")
    for record in records:
        report = restore_test_backup(manifest, "shop", record)  # exact equality of every table's rows
        assert report.failures == []
    assert len({r.source_stats["tables"]["orders"] for r in records}) > 1  # the writer really ran


def test_an_unreachable_mysql_server_fails_and_commits_nothing(tmp_path: Path, mariadb: Any, age_keys: KeyPair) -> None:
    manifest = mysql_manifest(tmp_path, mariadb, age_keys, port=free_port())
    with pytest.raises(SourceUnavailableError, match=r"cannot connect to MySQL 127\.0\.0\.1:\d+ database 'shop'"):
        run_backup(manifest, "shop", PARTITION)
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").rglob("*.json"))


def test_a_mysql_restore_test_mismatch_names_the_numbers(tmp_path: Path, mariadb: Any, age_keys: KeyPair) -> None:
    manifest = mysql_manifest(
        tmp_path,
        mariadb,
        age_keys,
        verification={
            "queries": [
                {"name": "orders", "sql": "select count(*) from orders", "expect": {"max": 10}},
            ]
        },
    )
    record = run_backup(manifest, "shop", PARTITION).record
    with pytest.raises(ValidationFailedError, match=r"query orders: expected <= 10, restored copy has 1000"):
        restore_test_backup(manifest, "shop", record)


def test_mysql_datasets_get_the_same_assets(tmp_path: Path, mariadb: Any, age_keys: KeyPair) -> None:
    manifest = mysql_manifest(tmp_path, mariadb, age_keys)
    result = (
        build_definitions(manifest.path)
        .resolve_job_def("protect_daily")
        .execute_in_process(partition_key=PARTITION, instance=dg.DagsterInstance.ephemeral(), tags=LATE)
    )
    assert result.success
    [restore] = result.asset_materializations_for_node("shop__restore_test")
    assert (
        restore.metadata["checks_passed"].value == restore.metadata["checks_total"].value == 5
    )  # table count + 3 tables + the content fingerprint
