"""A dump is committed only when its own format proves it whole: a source tool that stops early and still
exits 0 gives a failed backup and nothing stored; verify reads every data block of a stored dump, not only
its table of contents.

Real servers (the session's PostgreSQL and MariaDB); the lying tools are shell wrappers around the real ones,
reached through the manifest's own settings (a PostgreSQL server's `bin_dir`, a MySQL server's
`dump_binary`), as a broken client installation would be.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.engines.postgres_restore import find_bin_dir
from backup_pipelines.errors import IntegrityError
from backup_pipelines.execute import PIPE, Process
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import run_backup, verify_backup
from backup_pipelines.repository import BackupRecord, open_object_repository
from backup_pipelines.sandbox import PostgresSandbox
from backup_pipelines.stream import encode
from tests.conftest import manifest_dict, stored_files, write_manifest
from tests.integration.test_mysql_backup import mysql_manifest

PARTITION = "2026-12-01-05:00"


def lying_tool(folder: Path, name: str, real: str, keep_bytes: int) -> Path:
    """Write a `name` that runs `real` but passes on only its first `keep_bytes` bytes, then exits 0."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f'#!/bin/sh\n"{real}" "$@" | head -c {keep_bytes}\nexit 0\n')
    path.chmod(0o755)
    return path


def lying_postgres_bin_dir(tmp_path: Path, keep_bytes: int) -> Path:
    real = find_bin_dir(None)
    assert real is not None
    folder = tmp_path / "lying-bin"
    lying_tool(folder, "pg_dump", f"{real}/pg_dump", keep_bytes)
    for tool in ("pg_restore", "psql"):
        os.symlink(f"{real}/{tool}", folder / tool)
    return folder


@pytest.mark.parametrize("keep_share", [0.0, 0.0001, 0.3, 0.9, 0.999])
def test_a_pg_dump_that_stops_early_and_exits_0_commits_nothing(
    tmp_path: Path, postgres: PostgresSandbox, age_keys: KeyPair, keep_share: float
) -> None:
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient])
    whole = run_backup(write_manifest(tmp_path / "good.yaml", data), "app_db", PARTITION).record.bytes_raw
    data["repositories"]["local"]["path"] = str(tmp_path / "lied-to")
    data["servers"]["pg"]["bin_dir"] = str(lying_postgres_bin_dir(tmp_path, int(whole * keep_share)))
    manifest = write_manifest(tmp_path / "m.yaml", data)
    with pytest.raises(IntegrityError, match="the dump of app_db is not whole, so it was not committed"):
        run_backup(manifest, "app_db", PARTITION)
    assert stored_files(tmp_path / "lied-to") == []


def test_a_mysqldump_that_stops_early_and_exits_0_commits_nothing(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair
) -> None:
    real = "/usr/bin/mariadb-dump" if Path("/usr/bin/mariadb-dump").exists() else "/usr/bin/mysqldump"
    manifest = mysql_manifest(tmp_path, mariadb, age_keys)
    data = manifest.model_dump(mode="json", exclude_none=True)
    data["servers"]["maria"]["dump_binary"] = str(lying_tool(tmp_path / "bin", "mysqldump", real, 20_000))
    lying = write_manifest(tmp_path / "lying.yaml", data)
    with pytest.raises(IntegrityError, match=r"not whole.*Dump completed"):
        run_backup(lying, "shop", "2026-12-01")
    assert stored_files(tmp_path / "repo") == []


def test_verify_reads_every_data_block_of_a_stored_dump(
    tmp_path: Path, postgres: PostgresSandbox, age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncated dump committed by an older version (its checksum matches what was stored) passes a
    table-of-contents listing but not verify."""
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)
    manifest = write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    good = run_backup(manifest, "app_db", PARTITION).record
    assert verify_backup(manifest, "app_db", good)[0].archive["table_data_entries"] > 0
    truncated = commit_truncated_dump(manifest, postgres, good, keep_bytes=200_000)
    with pytest.raises(IntegrityError, match="not whole"):
        verify_backup(manifest, "app_db", truncated)


def commit_truncated_dump(
    manifest: Manifest, postgres: PostgresSandbox, good: BackupRecord, keep_bytes: int
) -> BackupRecord:
    """Store the first `keep_bytes` of a real dump as a committed backup, as the pre-check code would have."""
    from dataclasses import replace

    from backup_pipelines.engines.postgres import pg_dump_command, postgres_server

    dataset = manifest.dataset("app_db")
    command = pg_dump_command(postgres_server(manifest, "pg"), dataset, None, postgres.password)  # type: ignore[arg-type]
    dump = Process(command, stdout=PIPE)
    raw = dump.stdout.read()
    dump.check()
    dump.close()
    repository = open_object_repository(manifest, "local")
    record = replace(
        good,
        backup_id=good.backup_id + "t",
        object_name=good.object_name.replace(good.backup_id, good.backup_id + "t"),
        companions={},
    )
    writer = repository.open_writer(record.object_path)
    import io

    result = encode(io.BytesIO(raw[:keep_bytes]), writer, good.recipients)
    writer.commit()
    record = replace(record, sha256=result.sha256, bytes_raw=result.bytes_raw, bytes_stored=result.bytes_stored)
    repository.commit_record(record)
    return record
