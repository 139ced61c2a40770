"""Back up, verify and restore-test PostgreSQL for real, into local and S3 repositories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from backup_pipelines.copies import copy_backup
from backup_pipelines.crypto import KeyPair, generate_key_pair
from backup_pipelines.errors import (
    CommandFailedError,
    DecryptionError,
    IntegrityError,
    MissingSecretError,
    SourceUnavailableError,
    StorageError,
    ValidationFailedError,
)
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import (
    find_backup,
    restore_test_backup,
    run_backup,
    verify_backup,
)
from backup_pipelines.repository import open_repository
from backup_pipelines.sandbox import PostgresSandbox, free_port
from tests.conftest import S3Endpoint, manifest_dict, stored_files, write_manifest
from tests.integration.conftest import Killer

PARTITION = "2026-11-20-05:00"


def scratch_databases(postgres: PostgresSandbox) -> list[str]:
    with psycopg.connect(postgres.conninfo()) as connection:
        rows = connection.execute("select datname from pg_database where datname like 'bp_restore_%'").fetchall()
    return [row[0] for row in rows]


def test_round_trip_to_local_and_s3_restores_every_row(
    postgres: PostgresSandbox, s3_endpoint: S3Endpoint, bucket: str, age_keys: KeyPair, tmp_path: Path
) -> None:
    manifest = write_manifest(
        tmp_path / "m.yaml",
        manifest_dict(
            postgres, tmp_path / "repo", [age_keys.recipient], s3=(s3_endpoint, bucket), repositories=["local", "s3"]
        ),
    )
    stored = run_backup(manifest, "app_db", PARTITION)
    record = stored.record
    assert set(stored.locations) == {"local"}  # the primary; copies are the copy step's
    locations = copy_backup(manifest, "app_db", record)  # streamed local -> S3, re-checked there
    assert set(locations) == {"local", "s3"}
    assert locations["s3"].startswith(f"s3://{bucket}/backups/app_db/{PARTITION}/")
    assert record.source_stats["tables"] == {
        "audit.events": 1000,
        "public.settings": 2,
        "shop.customers": 50,
        "shop.orders": 2000,
    }
    assert record.source_stats["large_objects"] == 2
    assert record.bytes_stored < record.bytes_raw
    for name in ("local", "s3"):
        assert open_repository(manifest, name).list_backups("app_db") == [record]

    checks = verify_backup(manifest, "app_db", record, identity=age_keys.identity)
    assert [check.repository for check in checks] == ["local", "s3"]
    assert all(check.sha256 == record.sha256 and check.archive["table_data_entries"] == 4 for check in checks)
    assert checks[0].archive["large_object_entries"] >= 1

    report = restore_test_backup(manifest, "app_db", record, identity=age_keys.identity)
    assert report.failures == []
    assert report.restored_stats["tables"] == record.source_stats["tables"]
    assert report.restored_stats["large_objects"] == 2
    assert {outcome.name for outcome in report.outcomes} >= {"rows in shop.orders", "query orders"}
    assert scratch_databases(postgres) == []


def test_restored_copy_keeps_non_ascii_text_bytea_and_large_objects(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)
    manifest = write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    record = run_backup(manifest, "app_db", PARTITION).record
    from backup_pipelines.cli import main as cli_main

    arguments = ["restore", "app_db", "--database", "copy_of_app", "--backup-id", record.backup_id]
    assert cli_main(["--manifest", str(tmp_path / "m.yaml"), *arguments]) == 0
    query = (
        "select (select string_agg(name, ',' order by id) from shop.customers where id <= 5), "
        "(select avatar from shop.customers where id = 1), (select value from public.settings where key = 'greeting'), "
        "(select sum(length(lo_get(oid))) from pg_largeobject_metadata)"
    )
    with psycopg.connect(postgres.conninfo("app")) as source, psycopg.connect(postgres.conninfo("copy_of_app")) as copy:
        assert copy.execute(query).fetchone() == source.execute(query).fetchone()
        row = copy.execute(query).fetchone()
        assert row is not None and "李小龙" in row[0]
    with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
        admin.execute("drop database copy_of_app")


def test_several_databases_on_one_server_are_separate_datasets(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    from backup_pipelines.sample import create_sample_database

    create_sample_database(postgres.conninfo(), "reports", orders=30)
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient])
    data["datasets"]["reports_db"] = {
        **data["datasets"]["app_db"],
        "source": {"server": "pg", "database": "reports", "schemas": ["shop"]},
    }
    manifest = write_manifest(tmp_path / "m.yaml", data)
    first = run_backup(manifest, "app_db", PARTITION).record
    second = run_backup(manifest, "reports_db", PARTITION).record
    assert first.source_stats["tables"]["shop.orders"] == 2000
    assert second.source_stats["tables"] == {"shop.customers": 50, "shop.orders": 30}
    assert restore_test_backup(manifest, "reports_db", second, identity=age_keys.identity).failures == []


def test_a_corrupted_local_copy_fails_verify(postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    record = run_backup(manifest, "app_db", PARTITION).record
    stored = tmp_path / "repo" / record.object_path
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    stored.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        verify_backup(manifest, "app_db", record, identity=age_keys.identity)


def test_a_corrupted_s3_copy_fails_verify(
    postgres: PostgresSandbox, s3_endpoint: S3Endpoint, bucket: str, age_keys: KeyPair, tmp_path: Path
) -> None:
    manifest = write_manifest(
        tmp_path / "m.yaml",
        manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient], s3=(s3_endpoint, bucket), repositories=["s3"]),
    )
    record = run_backup(manifest, "app_db", PARTITION).record
    key = f"backups/{record.object_path}"
    client = s3_endpoint.client()
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=body[:-100])
    with pytest.raises(IntegrityError):
        verify_backup(manifest, "app_db", record, identity=age_keys.identity)


def test_wrong_or_missing_identity_gives_a_clear_error(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    record = run_backup(manifest, "app_db", PARTITION).record
    with pytest.raises(DecryptionError, match="does not match any recipient"):
        verify_backup(manifest, "app_db", record, identity=generate_key_pair().identity)
    monkeypatch.delenv("BACKUP_AGE_IDENTITY", raising=False)
    monkeypatch.delenv("BACKUP_AGE_IDENTITY_FILE", raising=False)
    with pytest.raises(MissingSecretError, match=r"BACKUP_AGE_IDENTITY .*BACKUP_AGE_IDENTITY_FILE"):
        verify_backup(manifest, "app_db", record)


def test_an_unreachable_source_fails_and_commits_nothing(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient])
    data["servers"]["pg"]["port"] = free_port()
    manifest = write_manifest(tmp_path / "m.yaml", data)
    with pytest.raises(SourceUnavailableError, match=r"cannot connect to PostgreSQL 127\.0\.0\.1:\d+ database 'app'"):
        run_backup(manifest, "app_db", PARTITION)
    assert stored_files(tmp_path / "repo") == []


def test_a_pg_dump_older_than_the_server_is_refused_by_name(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    """A client folder whose pg_dump is PostgreSQL 13 (a wrapper reporting that version) against the version 15
    server: refused before anything is dumped, with what to install."""
    old = tmp_path / "pg13" / "bin"
    old.mkdir(parents=True)
    (old / "pg_dump").write_text(
        '#!/bin/sh\n[ "$1" = --version ] && { echo "pg_dump (PostgreSQL) 13.16"; exit 0; }\nexit 1\n'
    )
    (old / "pg_dump").chmod(0o755)
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient])
    data["servers"]["pg"]["bin_dir"] = str(old)
    manifest = write_manifest(tmp_path / "m.yaml", data)
    with pytest.raises(SourceUnavailableError, match=r"version 13, older than server pg .*postgresql-client-15"):
        run_backup(manifest, "app_db", PARTITION)
    assert stored_files(tmp_path / "repo") == []


def test_a_missing_password_variable_is_named(postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path) -> None:
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient])
    data["servers"]["pg"]["password_env"] = "NOT_SET_ANYWHERE"
    manifest = write_manifest(tmp_path / "m.yaml", data)
    with pytest.raises(MissingSecretError, match="NOT_SET_ANYWHERE is not set"):
        run_backup(manifest, "app_db", PARTITION)


def test_pg_dump_killed_mid_stream_fails_and_commits_nothing_anywhere(
    big_manifest: Callable[[list[str]], Manifest], s3_endpoint: S3Endpoint, bucket: str, tmp_path: Path
) -> None:
    manifest = big_manifest(["local", "s3"])
    killer = Killer("pg_dump", after_bytes=8 << 20)
    killer.start()
    with pytest.raises(CommandFailedError, match="pg_dump was killed by signal 9"):
        run_backup(manifest, "app_db", PARTITION)
    killer.stop = True
    assert killer.killed
    assert stored_files(tmp_path / "repo") == []
    client = s3_endpoint.client()
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(StorageError, match="no repository of app_db holds any committed backup"):
        find_backup(manifest, "app_db")


def test_an_s3_outage_fails_the_backup_and_commits_nothing(
    postgres: PostgresSandbox, s3_endpoint: S3Endpoint, age_keys: KeyPair, tmp_path: Path
) -> None:
    down = S3Endpoint(f"http://127.0.0.1:{free_port()}")
    data = manifest_dict(
        postgres, tmp_path / "repo", [age_keys.recipient], s3=(down, "unreachable"), repositories=["s3"]
    )
    manifest = write_manifest(tmp_path / "m.yaml", data)
    with pytest.raises(StorageError, match="s3://unreachable/backups/app_db"):
        run_backup(manifest, "app_db", PARTITION)


def test_a_failed_validation_names_the_mismatching_numbers_and_drops_the_scratch_database(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient])
    data["datasets"]["app_db"]["verification"] = {
        "queries": [
            {"name": "orders", "sql": "select count(*) from shop.orders", "expect": {"equals": 1999}},
            {"name": "customers", "sql": "select count(*) from shop.customers", "expect": {"max": 10}},
        ]
    }
    manifest = write_manifest(tmp_path / "m.yaml", data)
    record = run_backup(manifest, "app_db", PARTITION).record
    with pytest.raises(ValidationFailedError) as caught:
        restore_test_backup(manifest, "app_db", record, identity=age_keys.identity)
    message = str(caught.value)
    assert "failed 2 of" in message
    assert "query orders: expected = 1999, restored copy has 2000" in message
    assert "query customers: expected <= 10, restored copy has 50" in message
    assert scratch_databases(postgres) == []


def test_row_counts_differing_from_the_snapshot_fail_the_restore_test(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    from dataclasses import replace

    manifest = write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    record = run_backup(manifest, "app_db", PARTITION).record
    tables = {**record.source_stats["tables"], "shop.orders": 2500}
    claimed = replace(record, source_stats={**record.source_stats, "tables": tables})
    with pytest.raises(ValidationFailedError, match=r"rows in shop\.orders: expected 2500, restored copy has 2000"):
        restore_test_backup(manifest, "app_db", claimed, identity=age_keys.identity)
