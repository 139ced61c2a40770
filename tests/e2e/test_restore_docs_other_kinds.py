"""docs/restore.md's blocks for MySQL/MariaDB, SQLite, a command's output, a file tree from restic, and (with the
AWS CLI) RDS and EBS snapshots, AWS being played by moto's server (reached through AWS_ENDPOINT_URL, as a MinIO
user would reach MinIO), each run verbatim against real servers; a rerun never restores a stale file."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import run_backup
from backup_pipelines.sample import create_sample_mysql_database
from tests.conftest import (
    S3_KEY_ENV,
    S3_SECRET_ENV,
    S3Endpoint,
    manifest_for,
    mysql_server,
    write_manifest,
)
from tests.e2e.conftest import BIN, run
from tests.e2e.restore_blocks import (
    aws_cli_environment,
    documented_block,
    run_block,
    with_variables,
)


def mysql_manifest(tmp_path: Path, mariadb: Any, age_keys: KeyPair, database: str) -> Manifest:
    dataset = {"kind": "mysql", "source": {"server": "maria", "database": database}}
    return manifest_for(tmp_path, age_keys, {"shop": dataset}, {"maria": mysql_server(mariadb)})


def mysql_state(mariadb: Any, database: str) -> tuple[tuple[Any, ...], dict[str, int]]:
    with closing(mariadb.connect(database)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select default_character_set_name, default_collation_name from information_schema.schemata "
            "where schema_name = %s",
            (database,),
        )
        defaults = tuple(cursor.fetchone())
        cursor.execute("select table_name from information_schema.tables where table_schema = %s", (database,))
        counts = {}
        for (table,) in sorted(cursor.fetchall()):
            cursor.execute(f"select count(*) from `{table}`")
            counts[table] = cursor.fetchone()[0]
        return defaults, counts


def test_documented_mysql_restore_restores_a_mysql_dataset(
    mariadb: Any, age_keys: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)
    with closing(mariadb.connect()) as connection, connection.cursor() as cursor:
        cursor.execute("drop database if exists docs_shop")
        create_sample_mysql_database(connection, "docs_shop")
        cursor.execute("alter database docs_shop character set utf8mb4 collate utf8mb4_unicode_ci")
    manifest = mysql_manifest(tmp_path, mariadb, age_keys, "docs_shop")
    record = run_backup(manifest, "shop", "2026-11-24").record
    (tmp_path / "identity.txt").write_text(age_keys.identity_file_text())
    script = with_variables(
        documented_block("mysql"),
        {
            "REPO": str(tmp_path / "repo"),
            "DATASET": "shop",
            "AGE_IDENTITY_FILE": str(tmp_path / "identity.txt"),
            "TARGET_DB": "shop-restored",
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(mariadb.port),
            "DB_USER": mariadb.user,
        },
    )
    work = tmp_path / "work"
    work.mkdir()
    environment = {"MYSQL_PWD": mariadb.password, "PATH": "/usr/bin:/bin"}
    try:
        result = run_block(script, environment, work)
        assert result.returncode == 0, result.stderr
        assert f"{record.object_name}: OK" in result.stdout
        source_state = mysql_state(mariadb, "docs_shop")
        assert source_state[0] == ("utf8mb4", "utf8mb4_unicode_ci")
        assert mysql_state(mariadb, "shop-restored") == source_state
        assert {table: rows for table, rows in source_state[1].items()} == record.source_stats["tables"]

        printed = run(
            ["backup-pipelines", "restore-commands", "shop", "--target-database", "shop-by`commands"],
            {"BACKUP_MANIFEST": str(manifest.path)},
        )
        assert printed.returncode == 0, printed.stderr
        assert "CREATE DATABASE `shop-by``commands` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci" in printed.stdout
        commands = printed.stdout.replace(
            "DB_HOST=... DB_PORT=3306 DB_USER=...", f"DB_HOST=127.0.0.1 DB_PORT={mariadb.port} DB_USER={mariadb.user}"
        )
        environment["AGE_IDENTITY_FILE"] = str(tmp_path / "identity.txt")
        result = run_block(commands, environment, work)
        assert result.returncode == 0, result.stderr
        assert mysql_state(mariadb, "shop-by`commands") == source_state
    finally:
        with closing(mariadb.connect()) as connection, connection.cursor() as cursor:
            for name in ("shop-restored", "shop-by``commands", "docs_shop"):
                cursor.execute(f"drop database if exists `{name}`")


def test_documented_sqlite_and_command_restores_give_back_the_files(tmp_path: Path, age_keys: KeyPair) -> None:
    with closing(sqlite3.connect(tmp_path / "app.sqlite")) as connection:
        connection.executescript("create table notes (id integer primary key, body text);")
        connection.executemany("insert into notes (body) values (?)", [(f"note ✓ {n}",) for n in range(300)])
        connection.commit()
    (tmp_path / "vault.snap").write_bytes(bytes(range(256)) * 40)
    command = {"command": ["cat", "vault.snap"], "extension": "snap"}
    manifest = manifest_for(
        tmp_path,
        age_keys,
        {
            "notes": {"kind": "sqlite", "source": {"path": "app.sqlite"}},
            "vault": {"kind": "command", "source": command, "encryption": {"enabled": False}},
        },
    )
    run_backup(manifest, "notes", "2026-11-24")
    run_backup(manifest, "vault", "2026-11-24")
    (tmp_path / "identity.txt").write_text(age_keys.identity_file_text())
    work = tmp_path / "work"
    work.mkdir()
    common = {"REPO": str(tmp_path / "repo"), "AGE_IDENTITY_FILE": str(tmp_path / "identity.txt")}

    script = with_variables(
        documented_block("sqlite"), {**common, "DATASET": "notes", "TARGET_FILE": str(tmp_path / "restored.sqlite")}
    )
    result = run_block(script, {"PATH": "/usr/bin:/bin"}, work)
    assert result.returncode == 0, result.stderr
    with closing(sqlite3.connect(tmp_path / "restored.sqlite")) as connection:
        assert connection.execute("select count(*), max(body) from notes").fetchone() == (300, "note ✓ 99")
    result = run_block(script, {"PATH": "/usr/bin:/bin"}, work)
    assert result.returncode != 0 and "a new absolute path" in result.stderr, "it overwrote the restored file"

    script = with_variables(
        documented_block("command"), {**common, "DATASET": "vault", "TARGET_FILE": str(tmp_path / "restored-vault")}
    )
    result = run_block(script, {"PATH": "/usr/bin:/bin"}, work)
    assert result.returncode == 0, result.stderr
    assert ".snap.zst: OK" in result.stdout, "the unencrypted object was not checked"
    assert (tmp_path / "restored-vault.snap").read_bytes() == (tmp_path / "vault.snap").read_bytes()
    assert list(work.iterdir()) == []


def test_documented_files_restore_restores_the_newest_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_RESTIC_PASSWORD", "restic-test-password")
    tree = tmp_path / "etc"
    (tree / "sites").mkdir(parents=True)
    for index in range(10):
        (tree / "sites" / f"site{index}.conf").write_text(f"server {{ server_name s{index}.example; }} ✓\n")
    data = {
        "partition_start": "2026-11-01",
        "repositories": {
            "restic": {"type": "restic", "repository": str(tmp_path / "restic"), "password_env": "TEST_RESTIC_PASSWORD"}
        },
        "datasets": {
            "configs": {
                "kind": "files",
                "schedule": "daily",
                "rpo": "26h",
                "rto": "1h",
                "retention": {"keep_last": 3},
                "repositories": ["restic"],
                "encryption": {"enabled": False},
                "source": {"paths": ["etc"]},
            }
        },
    }
    manifest = write_manifest(tmp_path / "m.yaml", data)
    run_backup(manifest, "configs", "2026-11-23")
    (tree / "sites" / "site0.conf").write_text("changed after the first backup\n")
    (tree / "new.conf").write_text("new\n")
    run_backup(manifest, "configs", "2026-11-24")
    (tmp_path / "restic-password.txt").write_text("restic-test-password\n")
    script = with_variables(
        documented_block("files"),
        {
            "RESTIC_REPOSITORY": str(tmp_path / "restic"),
            "RESTIC_PASSWORD_FILE": str(tmp_path / "restic-password.txt"),
            "DATASET": "configs",
            "TARGET_DIR": str(tmp_path / "restored"),
        },
    )
    work = tmp_path / "work"
    work.mkdir()
    result = run_block(script, {"PATH": "/usr/bin:/bin"}, work)
    assert result.returncode == 0, result.stderr
    restored = tmp_path / "restored" / str(tree).lstrip("/")
    files = sorted(path.relative_to(tree) for path in tree.rglob("*") if path.is_file())
    assert sorted(path.relative_to(restored) for path in restored.rglob("*") if path.is_file()) == files
    for name in files:
        assert (restored / name).read_bytes() == (tree / name).read_bytes(), name
    result = run_block(script, {"PATH": "/usr/bin:/bin"}, work)
    assert result.returncode != 0, "it restored into an existing folder"


def test_documented_rds_and_ebs_restores_use_the_newest_snapshot(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    region = "eu-west-1"
    rds = s3_endpoint.client("rds", region)
    ec2 = s3_endpoint.client("ec2", region)
    rds.create_db_instance(
        DBInstanceIdentifier="docs-db",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="app",
        MasterUserPassword="not-a-real-password",
    )
    volume = ec2.create_volume(AvailabilityZone=f"{region}a", Size=4)["VolumeId"]
    repository = {
        "type": "aws_snapshots",
        "region": region,
        "endpoint_url": s3_endpoint.url,
        "access_key_id_env": S3_KEY_ENV,
        "secret_access_key_env": S3_SECRET_ENV,
        "poll_seconds": 1,
    }
    common = {"schedule": "daily", "rpo": "1d", "rto": "1h", "retention": {"keep_last": 3}, "repositories": ["aws"]}
    manifest = write_manifest(
        tmp_path / "aws.yaml",
        {
            "repositories": {"aws": repository},
            "datasets": {
                "docs_db": {**common, "kind": "rds", "source": {"db_instance_identifier": "docs-db", "region": region}},
                "docs_volume": {**common, "kind": "ebs", "source": {"volume_id": volume, "region": region}},
            },
        },
    )
    run_backup(manifest, "docs_db", "2026-11-24")
    newest = run_backup(manifest, "docs_db", "2026-11-25").record
    snapshot = run_backup(manifest, "docs_volume", "2026-11-25").record
    failed_attempt = [{"Key": "bp-dataset", "Value": "docs_db"}, {"Key": "bp-pending-id", "Value": "x"}]
    rds.create_db_snapshot(
        DBSnapshotIdentifier="bp-docs-db-failed", DBInstanceIdentifier="docs-db", Tags=failed_attempt
    )
    failed_attempt[0]["Value"] = "docs_volume"  # newer than the backups, but never committed (no bp-id)
    ec2.create_snapshot(VolumeId=volume, TagSpecifications=[{"ResourceType": "snapshot", "Tags": failed_attempt}])
    environment = {**aws_cli_environment(s3_endpoint, region), "PATH": f"{BIN}:/usr/bin:/bin"}
    work = tmp_path / "work"
    work.mkdir()

    script = with_variables(
        documented_block("rds"),
        {"REGION": region, "DATASET": "docs_db", "TARGET": "docs-db-restored", "CLASS": "db.t3.micro"},
    )
    result = run_block(script, environment, work)
    assert result.returncode == 0, result.stderr
    assert f"restoring {newest.object_name}" in result.stdout and "docs-db-restored." in result.stdout
    [restored] = rds.describe_db_instances(DBInstanceIdentifier="docs-db-restored")["DBInstances"]
    assert restored["DBInstanceStatus"] == "available"

    script = with_variables(documented_block("ebs"), {"REGION": region, "DATASET": "docs_volume", "ZONE": f"{region}b"})
    result = run_block(script, environment, work)
    assert result.returncode == 0, result.stderr
    new_volume = result.stdout.split()[-1]
    assert f"restored {snapshot.object_name} to vol-" in result.stdout
    [created] = ec2.describe_volumes(VolumeIds=[new_volume])["Volumes"]
    assert created["SnapshotId"] == snapshot.object_name and created["AvailabilityZone"] == f"{region}b"
