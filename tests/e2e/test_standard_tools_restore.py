"""The restore runbook in docs/restore.md works with standard tools only: this runs its exact commands."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

from backup_pipelines.crypto import KeyPair
from backup_pipelines.operations import run_backup
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import manifest_dict, write_manifest
from tests.e2e.conftest import ROOT, run


def documented_commands() -> str:
    text = (ROOT / "docs" / "restore.md").read_text()
    block = re.search(r"<!-- restore-local:begin -->\n```bash\n(.*?)```\n<!-- restore-local:end -->", text, re.S)
    assert block is not None, "docs/restore.md lost its tested restore block"
    return block.group(1)


def with_variables(script: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        script, count = re.subn(rf"^{name}=.*$", f"{name}={value}", script, flags=re.M)
        assert count == 1, name
    return script


def test_documented_standard_tool_restore_restores_every_row(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    run_backup(manifest, "app_db", "2026-11-25-01:00")
    newest = run_backup(manifest, "app_db", "2026-11-25-02:00").record
    (tmp_path / "identity.txt").write_text(age_keys.identity_file_text())
    script = with_variables(
        documented_commands(),
        {
            "REPO": str(tmp_path / "repo"),
            "DATASET": "app_db",
            "AGE_IDENTITY_FILE": str(tmp_path / "identity.txt"),
            "TARGET_DB": "restored_by_hand",
        },
    )
    work = tmp_path / "work"
    work.mkdir()
    result = run(
        ["bash", "-euo", "pipefail", "-c", script],
        {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(postgres.port),
            "PGUSER": postgres.user,
            "PGPASSWORD": postgres.password,
            "PATH": f"{postgres.bin_dir}:/usr/bin:/bin",
        },
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    assert "backup.dump.zst.age: OK" in result.stdout
    assert newest.backup_id in result.stdout
    try:
        with psycopg.connect(postgres.conninfo("restored_by_hand")) as connection:
            for table, rows in newest.source_stats["tables"].items():
                assert connection.execute(f"select count(*) from {table}").fetchone() == (rows,), table
            assert connection.execute("select count(*) from pg_largeobject_metadata").fetchone() == (2,)
    finally:
        with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
            admin.execute("drop database if exists restored_by_hand")


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
