"""docs/restore.md's PostgreSQL block, run verbatim: onto a second, empty cluster that has none of the source's
roles (from a local repository and from S3), never restoring a stale file, stopping at a corrupted object before
anything is restored; the commands `backup-pipelines restore-commands` prints run as well; and the CLI restores
without Dagster."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import run_backup
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import (
    S3Endpoint,
    manifest_dict,
    write_manifest,
)
from tests.e2e.conftest import ROOT, run
from tests.e2e.restore_blocks import (
    BLOCKS,
    OBJECT_BLOCKS,
    aws_cli_environment,
    database_exists,
    documented_block,
    postgres_environment,
    row_counts,
    run_block,
    with_variables,
)
from tests.postgres_checks import database_properties, schema_dump

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
    postgres: PostgresSandbox, empty_postgres: PostgresSandbox, source: str, age_keys: KeyPair, tmp_path: Path
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
        return run_block(script, postgres_environment(empty_postgres), work)

    result = restore("first copy")
    assert result.returncode == 0, result.stderr
    assert (
        f"{first.object_name}: OK" in result.stdout
        and f"{first.companions['globals.sql']['object_name']}: OK" in result.stdout
    )
    assert schema_dump(empty_postgres, "first copy") == schema_dump(postgres, source)
    assert row_counts(empty_postgres, "first copy", first) == {**first.source_stats["tables"], "large objects": 1}
    assert database_properties(empty_postgres, "first copy") == database_properties(postgres, source)
    assert list(work.iterdir()) == [], "the block left files behind"

    # a rerun in the same folder, with the files the old runbook left lying there, restores the new backup
    with psycopg.connect(postgres.conninfo(source), autocommit=True) as connection:
        connection.execute("insert into sales.orders (customer) select 'later ' || g from generate_series(1, 25) g")
    second = run_backup(manifest, "app_db", "2026-11-25-02:00").record
    shutil.copy(tmp_path / "repo" / first.object_path, work / "backup.dump.zst.age")
    result = restore("second copy")
    assert result.returncode == 0, result.stderr
    assert second.backup_id in result.stdout and first.backup_id not in result.stdout
    assert row_counts(empty_postgres, "second copy", second)["sales.orders"] == 525

    # a corrupted object, main or companion, stops the block before anything is restored
    third = run_backup(manifest, "app_db", "2026-11-25-03:00").record
    for path in (third.object_path, third.companion_path("globals.sql")):
        stored = tmp_path / "repo" / path
        original = stored.read_bytes()
        stored.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        result = restore("never restored")
        stored.write_bytes(original)
        assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr, result.stdout
        assert not database_exists(empty_postgres, "never restored")

    # a backup from before the globals companion: createdb + pg_restore, said so (the roles exist by now)
    sidecar = tmp_path / "repo" / third.sidecar_path
    original_sidecar = sidecar.read_bytes()
    sidecar.write_text(json.dumps({**json.loads(original_sidecar), "companions": {}}))
    result = restore("old style")
    sidecar.write_bytes(original_sidecar)
    assert result.returncode == 0 and "no globals.sql companion" in result.stderr, result.stderr
    assert row_counts(empty_postgres, "old style", third) == {**third.source_stats["tables"], "large objects": 1}

    # restore-commands prints the same steps for the newest backup; they run too
    manifest_env = {"BACKUP_MANIFEST": str(manifest.path)}
    printed = run(
        ["backup-pipelines", "restore-commands", "app_db", "--target-database", "from commands"], manifest_env
    )
    assert printed.returncode == 0, printed.stderr
    assert "psql -X -v ON_ERROR_STOP=1 -v 'target=from commands' -f globals.sql postgres" in printed.stdout
    assert "--no-owner" not in printed.stdout and "createdb" not in printed.stdout
    environment = {**postgres_environment(empty_postgres), "AGE_IDENTITY_FILE": str(tmp_path / "identity.txt")}
    result = run_block(printed.stdout, environment, work)
    assert result.returncode == 0, result.stderr
    assert schema_dump(empty_postgres, "from commands") == schema_dump(postgres, source)
    assert row_counts(empty_postgres, "from commands", third) == {**third.source_stats["tables"], "large objects": 1}


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
