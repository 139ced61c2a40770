"""The restore runbook in docs/restore.md works with standard tools only: every bash block is run verbatim
(only the variables at its top set), as a script file with `bash`, against real servers: PostgreSQL onto a
second, empty cluster that has none of the source's roles, from a local repository and from S3; MySQL/MariaDB;
SQLite; a command's output; a file tree from restic; and (with the AWS CLI) RDS and EBS snapshots, AWS being
played by moto's server (reached through AWS_ENDPOINT_URL, as a MinIO user would reach MinIO). A rerun never
restores a stale file, and a corrupted object stops a block before anything is restored. The commands that
`backup-pipelines restore-commands` prints run as well."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from backup_pipelines.crypto import KeyPair
from backup_pipelines.engines.postgres_restore import binary
from backup_pipelines.manifest import Manifest, PostgresServerConfig
from backup_pipelines.operations import run_backup
from backup_pipelines.repository import BackupRecord
from backup_pipelines.sample import create_sample_mysql_database
from backup_pipelines.sandbox import PostgresSandbox, start_postgres_sandbox
from tests.conftest import (
    MYSQL_PASSWORD_ENV,
    S3_KEY_ENV,
    S3_SECRET_ENV,
    S3Endpoint,
    manifest_dict,
    write_manifest,
)
from tests.e2e.conftest import BIN, ROOT, run

BLOCKS = ("postgres", "mysql", "sqlite", "command", "files", "rds", "ebs")
OBJECT_BLOCKS = ("postgres", "mysql", "sqlite", "command")
SOURCE_DB = "docs_source"
ROLES = ("bp_docs_owner", "bp_docs_reader")
SOURCE_SQL = """
create schema sales authorization bp_docs_owner;
create table sales.orders (id bigint generated always as identity primary key, customer text not null,
    total numeric(12, 2), note text);
insert into sales.orders (customer, total, note) select 'customer ' || g || ' ünï ✓', g * 1.5, null
from generate_series(1, 500) g;
create table public.plain (v text);
insert into public.plain values ('a'), ('b');
alter table sales.orders owner to bp_docs_owner;
grant usage on schema sales to bp_docs_reader;
grant select on sales.orders to bp_docs_reader;
revoke all on public.plain from public;
comment on table sales.orders is 'restored by hand';
select lo_from_bytea(0, '\\xdeadbeef'::bytea);
"""
DATABASE_SQL = f"""
comment on database {SOURCE_DB} is 'the documented source ✓';
alter database {SOURCE_DB} set work_mem = '32MB';
revoke connect, temporary on database {SOURCE_DB} from public;
grant connect on database {SOURCE_DB} to bp_docs_reader;
"""


def documented_block(name: str) -> str:
    """The bash block of docs/restore.md between `<!-- restore-NAME:begin -->` and its end marker."""
    text = (ROOT / "docs" / "restore.md").read_text()
    pattern = rf"<!-- restore-{name}:begin -->\n```bash\n(.*?)```\n<!-- restore-{name}:end -->"
    block = re.search(pattern, text, re.S)
    assert block is not None, f"docs/restore.md lost its tested restore-{name} block"
    return block.group(1)


def with_variables(script: str, values: dict[str, str]) -> str:
    """`script` with each `NAME=...` line at its top set to `NAME=<value>` (the value quoted for bash)."""
    for name, value in values.items():
        line = f"{name}=" + shlex.quote(value)
        script, count = re.subn(rf"^{name}=.*$", line.replace("\\", "\\\\"), script, count=1, flags=re.M)
        assert count == 1, name
    return script


def run_block(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `script` as a user does: saved to a file and run with plain `bash` (its own `set` line decides)."""
    path = cwd.parent / f"restore-{cwd.name}.sh"
    path.write_text(script)
    return run(["bash", str(path)], env, cwd=cwd)


def postgres_environment(sandbox: PostgresSandbox) -> dict[str, str]:
    return {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(sandbox.port),
        "PGUSER": sandbox.user,
        "PGPASSWORD": sandbox.password,
        "PATH": f"{BIN}:{sandbox.bin_dir}:/usr/bin:/bin",
    }


def aws_cli_environment(endpoint: S3Endpoint, region: str = "us-east-1") -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }


def conninfo(sandbox: PostgresSandbox, database: str) -> str:
    """The sandbox's connection string for `database`, quoted (a name may hold spaces)."""
    return make_conninfo(sandbox.conninfo(), dbname=database)


def schema_dump(sandbox: PostgresSandbox, database: str) -> str:
    """The schema-only dump of `database` with owners and privileges (without pg_dump's `\\restrict` keys)."""
    server = PostgresServerConfig(kind="postgres", port=sandbox.port, user=sandbox.user)
    command = [binary("pg_dump", server), "--schema-only", conninfo(sandbox, database)]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return "\n".join(
        line for line in text.splitlines() if not line.startswith(("-- Dumped", "\\restrict", "\\unrestrict"))
    )


def row_counts(sandbox: PostgresSandbox, database: str, record: BackupRecord) -> dict[str, int]:
    with psycopg.connect(conninfo(sandbox, database)) as connection:
        counts = {
            table: connection.execute(f"select count(*) from {table}").fetchone()[0]  # type: ignore[index]
            for table in record.source_stats["tables"]
        }
        counts["large objects"] = connection.execute("select count(*) from pg_largeobject_metadata").fetchone()[0]  # type: ignore[index]
        return counts


def database_properties(sandbox: PostgresSandbox, database: str) -> tuple[object, ...]:
    with psycopg.connect(sandbox.conninfo()) as connection:
        row = connection.execute(
            "select shobj_description(d.oid, 'pg_database'), d.datacl::text, pg_get_userbyid(d.datdba), "
            "(select setconfig from pg_db_role_setting s where s.setdatabase = d.oid and s.setrole = 0) "
            "from pg_database d where datname = %s",
            (database,),
        ).fetchone()
        assert row is not None, f"database {database!r} does not exist"
        return tuple(row)


def database_exists(sandbox: PostgresSandbox, database: str) -> bool:
    with psycopg.connect(sandbox.conninfo()) as connection:
        return connection.execute("select 1 from pg_database where datname = %s", (database,)).fetchone() is not None


@pytest.fixture(scope="module")
def source(postgres: PostgresSandbox) -> str:
    """A database with its own roles, owners, grants, a large object and database-level properties."""
    with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
        admin.execute(f"drop database if exists {SOURCE_DB}")
        for role in ROLES:
            admin.execute(f"drop role if exists {role}")
            admin.execute(f"create role {role} nologin")
        admin.execute(f"create database {SOURCE_DB} template template0 encoding 'UTF8' owner bp_docs_owner")
        admin.execute(DATABASE_SQL)
    with psycopg.connect(postgres.conninfo(SOURCE_DB), autocommit=True) as connection:
        connection.execute(SOURCE_SQL)
    return SOURCE_DB


@pytest.fixture(scope="module")
def fresh() -> Iterator[PostgresSandbox]:
    """A second, empty PostgreSQL cluster: none of the source's roles exist there."""
    sandbox = start_postgres_sandbox(password="fresh-pässword")
    try:
        yield sandbox
    finally:
        sandbox.stop()


def postgres_manifest(
    path: Path, postgres: PostgresSandbox, database: str, age_keys: KeyPair, **extra: Any
) -> Manifest:
    data = manifest_dict(postgres, path.parent / "repo", [age_keys.recipient], database=database, **extra)
    data["datasets"]["app_db"]["verification"] = {"queries": []}
    return write_manifest(path, data)


def test_every_block_stops_at_the_first_failure_and_object_blocks_share_one_checked_fetch() -> None:
    text = (ROOT / "docs" / "restore.md").read_text()
    assert set(re.findall(r"<!-- restore-([a-z0-9-]+):begin -->", text)) == set(BLOCKS)
    fetches = set()
    for name in BLOCKS:
        block = documented_block(name)
        assert block.startswith("set -euo pipefail\n"), name
        if name in OBJECT_BLOCKS:
            assert "$(mktemp -d)" in block and "sha256sum -c -" in block and "--no-owner" not in block, name
            fetches.add(block[block.index("WORK=$(mktemp -d)") : block.index("[[ $(jq -r .kind")])
    assert len(fetches) == 1, "the object blocks' fetch-check-decode steps differ"
    with_globals = documented_block("postgres").split("if [[ -f globals.sql ]]; then\n", 1)[1].split("\nelse\n")[0]
    assert "psql" in with_globals and "createdb" not in with_globals


def test_documented_postgres_restore_onto_an_empty_cluster_gives_back_the_source(
    postgres: PostgresSandbox, fresh: PostgresSandbox, source: str, age_keys: KeyPair, tmp_path: Path
) -> None:
    manifest = postgres_manifest(tmp_path / "m.yaml", postgres, source, age_keys)
    first = run_backup(manifest, "app_db", "2026-11-25-01:00").record
    assert set(first.companions) == {"globals.sql"}
    (tmp_path / "identity.txt").write_text(age_keys.identity_file_text())
    work = tmp_path / "work"
    work.mkdir()
    variables = {
        "REPO": str(tmp_path / "repo"),
        "DATASET": "app_db",
        "AGE_IDENTITY_FILE": str(tmp_path / "identity.txt"),
    }

    def restore(target: str) -> subprocess.CompletedProcess[str]:
        script = with_variables(documented_block("postgres"), {**variables, "TARGET_DB": target})
        return run_block(script, postgres_environment(fresh), work)

    result = restore("first copy")
    assert result.returncode == 0, result.stderr
    assert (
        f"{first.object_name}: OK" in result.stdout
        and f"{first.companions['globals.sql']['object_name']}: OK" in result.stdout
    )
    assert schema_dump(fresh, "first copy") == schema_dump(postgres, source)
    assert row_counts(fresh, "first copy", first) == {**first.source_stats["tables"], "large objects": 1}
    assert database_properties(fresh, "first copy") == database_properties(postgres, source)
    assert list(work.iterdir()) == [], "the block left files behind"

    # a rerun in the same folder, with the files the old runbook left lying there, restores the new backup
    with psycopg.connect(postgres.conninfo(source), autocommit=True) as connection:
        connection.execute("insert into sales.orders (customer) select 'later ' || g from generate_series(1, 25) g")
    second = run_backup(manifest, "app_db", "2026-11-25-02:00").record
    shutil.copy(tmp_path / "repo" / first.object_path, work / "backup.dump.zst.age")
    result = restore("second copy")
    assert result.returncode == 0, result.stderr
    assert second.backup_id in result.stdout and first.backup_id not in result.stdout
    assert row_counts(fresh, "second copy", second)["sales.orders"] == 525

    # a corrupted object, main or companion, stops the block before anything is restored
    third = run_backup(manifest, "app_db", "2026-11-25-03:00").record
    for path in (third.object_path, third.companion_path("globals.sql")):
        stored = tmp_path / "repo" / path
        original = stored.read_bytes()
        stored.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        result = restore("never restored")
        stored.write_bytes(original)
        assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr, result.stdout
        assert not database_exists(fresh, "never restored")

    # a backup from before the globals companion: createdb + pg_restore, said so (the roles exist by now)
    sidecar = tmp_path / "repo" / third.sidecar_path
    original_sidecar = sidecar.read_bytes()
    sidecar.write_text(json.dumps({**json.loads(original_sidecar), "companions": {}}))
    result = restore("old style")
    sidecar.write_bytes(original_sidecar)
    assert result.returncode == 0 and "no globals.sql companion" in result.stderr, result.stderr
    assert row_counts(fresh, "old style", third) == {**third.source_stats["tables"], "large objects": 1}

    # restore-commands prints the same steps for the newest backup; they run too
    manifest_env = {"BACKUP_MANIFEST": str(manifest.path)}
    printed = run(
        ["backup-pipelines", "restore-commands", "app_db", "--target-database", "from commands"], manifest_env
    )
    assert printed.returncode == 0, printed.stderr
    assert "psql -X -v ON_ERROR_STOP=1 -v 'target=from commands' -f globals.sql postgres" in printed.stdout
    assert "--no-owner" not in printed.stdout and "createdb" not in printed.stdout
    environment = {**postgres_environment(fresh), "AGE_IDENTITY_FILE": str(tmp_path / "identity.txt")}
    result = run_block(printed.stdout, environment, work)
    assert result.returncode == 0, result.stderr
    assert schema_dump(fresh, "from commands") == schema_dump(postgres, source)
    assert row_counts(fresh, "from commands", third) == {**third.source_stats["tables"], "large objects": 1}


def test_documented_postgres_restore_from_s3(
    postgres: PostgresSandbox, age_keys: KeyPair, s3_endpoint: S3Endpoint, bucket: str, tmp_path: Path
) -> None:
    data = manifest_dict(
        postgres, tmp_path / "repo", [age_keys.recipient], s3=(s3_endpoint, bucket), repositories=["s3"]
    )
    manifest = write_manifest(tmp_path / "m.yaml", data)
    run_backup(manifest, "app_db", "2026-11-25-01:00")
    newest = run_backup(manifest, "app_db", "2026-11-25-02:00").record
    (tmp_path / "identity.txt").write_text(age_keys.identity_file_text())
    script = with_variables(
        documented_block("postgres"),
        {
            "REPO": f"s3://{bucket}/backups",
            "DATASET": "app_db",
            "AGE_IDENTITY_FILE": str(tmp_path / "identity.txt"),
            "TARGET_DB": "restored_from_s3",
        },
    )
    work = tmp_path / "work"
    work.mkdir()
    result = run_block(script, {**aws_cli_environment(s3_endpoint), **postgres_environment(postgres)}, work)
    assert result.returncode == 0, result.stderr
    assert f"{newest.object_name}: OK" in result.stdout and newest.backup_id in result.stdout
    try:
        with psycopg.connect(postgres.conninfo("restored_from_s3")) as connection:
            for table, rows in newest.source_stats["tables"].items():
                assert connection.execute(f"select count(*) from {table}").fetchone() == (rows,), table
    finally:
        with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
            admin.execute("drop database if exists restored_from_s3")


def test_cli_lists_backups_and_restores_to_a_file_without_dagster(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    manifest_path = tmp_path / "m.yaml"
    manifest = write_manifest(manifest_path, manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    record = run_backup(manifest, "app_db", "2026-11-25-03:00").record
    (tmp_path / "identity.txt").write_text(age_keys.identity_file_text())
    env = {"BACKUP_MANIFEST": str(manifest_path), "BACKUP_AGE_IDENTITY_FILE": str(tmp_path / "identity.txt")}
    listing = run(["backup-pipelines", "list"], env)
    assert listing.returncode == 0 and record.backup_id in listing.stdout, listing.stderr
    restored = run(["backup-pipelines", "restore", "app_db", "--output", str(tmp_path / "app.dump")], env)
    assert restored.returncode == 0, restored.stderr
    toc = run([f"{postgres.bin_dir}/pg_restore", "--list", str(tmp_path / "app.dump")], {})
    assert "TABLE DATA shop orders" in toc.stdout
    commands = run(["backup-pipelines", "restore-commands", "app_db"], env)
    assert commands.returncode == 0 and record.sha256 in commands.stdout


def mysql_manifest(tmp_path: Path, mariadb: Any, age_keys: KeyPair, database: str) -> Manifest:
    server = {"kind": "mysql", "host": "127.0.0.1", "port": mariadb.port, "user": mariadb.user}
    dataset = {
        "kind": "mysql",
        "schedule": "daily",
        "rpo": "26h",
        "rto": "1h",
        "retention": {"keep_daily": 7},
        "repositories": ["local"],
        "encryption": {"recipients": [age_keys.recipient]},
        "source": {"server": "maria", "database": database},
    }
    data = {
        "partition_start": "2026-11-01",
        "repositories": {"local": {"type": "local", "path": str(tmp_path / "repo")}},
        "servers": {"maria": {**server, "password_env": MYSQL_PASSWORD_ENV}},
        "datasets": {"shop": dataset},
    }
    return write_manifest(tmp_path / "m.yaml", data)


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


def object_manifest(tmp_path: Path, age_keys: KeyPair, datasets: dict[str, Any]) -> Manifest:
    base = {
        "schedule": "daily",
        "rpo": "26h",
        "rto": "1h",
        "retention": {"keep_daily": 7},
        "repositories": ["local"],
        "encryption": {"recipients": [age_keys.recipient]},
    }
    data = {
        "partition_start": "2026-11-01",
        "repositories": {"local": {"type": "local", "path": str(tmp_path / "repo")}},
        "datasets": {name: {**base, **fields} for name, fields in datasets.items()},
    }
    return write_manifest(tmp_path / "m.yaml", data)


def test_documented_sqlite_and_command_restores_give_back_the_files(tmp_path: Path, age_keys: KeyPair) -> None:
    with closing(sqlite3.connect(tmp_path / "app.sqlite")) as connection:
        connection.executescript("create table notes (id integer primary key, body text);")
        connection.executemany("insert into notes (body) values (?)", [(f"note ✓ {n}",) for n in range(300)])
        connection.commit()
    (tmp_path / "vault.snap").write_bytes(bytes(range(256)) * 40)
    command = {"command": ["cat", "vault.snap"], "extension": "snap"}
    manifest = object_manifest(
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
