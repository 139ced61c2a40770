"""mariadb_physical datasets: the session's real MariaDB server copied by the real mariabackup, stored through
zstd and age, restore-tested on a temporary server started on the prepared copy."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from backup_pipelines.cli import main
from backup_pipelines.crypto import KeyPair
from backup_pipelines.engines.mariabackup import _connect_when_ready
from backup_pipelines.engines.mariadb_copy import temporary_server
from backup_pipelines.errors import IntegrityError
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import restore_test_backup, run_backup, verify_backup
from backup_pipelines.repository import open_repository
from backup_pipelines.runbook import restore_commands
from tests.conftest import manifest_for, mysql_server
from tests.e2e.restore_blocks import documented_block, run_block, with_variables

pytestmark = pytest.mark.skipif(shutil.which("mariabackup") is None, reason="mariabackup is not installed")
PARTITION = "2026-11-24"


@pytest.fixture(autouse=True)
def identity(age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)


def physical_manifest(tmp_path: Path, mariadb: Any, age_keys: KeyPair, **fields: Any) -> Manifest:
    source = {"server": "maria", "data_directory": str(mariadb.root / "data"), "databases": ["shop", "busy"]}
    dataset = {"kind": "mariadb_physical", "source": source, **fields}
    return manifest_for(tmp_path, age_keys, {"server_copy": dataset}, {"maria": mysql_server(mariadb)})


class Writer:
    """Inserts rows into busy.events every few milliseconds until stopped."""

    def __init__(self, mariadb: Any) -> None:
        self.mariadb, self.stop = mariadb, threading.Event()
        with mariadb.connect() as connection, connection.cursor() as cursor:
            cursor.execute("create database if not exists busy")
            cursor.execute("create table if not exists busy.events (id int auto_increment primary key, at datetime(6))")
        self.thread = threading.Thread(target=self.write, daemon=True)

    def write(self) -> None:
        with self.mariadb.connect() as connection, connection.cursor() as cursor:
            while not self.stop.is_set():
                cursor.execute("insert into busy.events (at) values (now(6))")
                time.sleep(0.002)

    def __enter__(self) -> Writer:
        self.thread.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join()


def test_physical_backup_under_writes_restores_and_checks(tmp_path: Path, mariadb: Any, age_keys: KeyPair) -> None:
    manifest = physical_manifest(
        tmp_path,
        mariadb,
        age_keys,
        verification={
            "queries": [{"name": "customers", "sql": "select count(*) from shop.customers", "expect": {"min": 1}}]
        },
    )
    with Writer(mariadb):
        record = run_backup(manifest, "server_copy", PARTITION).record
    assert record.object_name.endswith(".mbstream.zst.age") and record.format == "mbstream"
    stats = record.source_stats
    assert stats["tables"]["shop.customers"] == 50 and stats["archive_check"]["files"] > 10
    assert "busy.events" in stats["table_ranges"] or "busy.events" in stats["tables"]
    [check] = verify_backup(manifest, "server_copy", record)
    assert check.archive["files"] == stats["archive_check"]["files"]
    report = restore_test_backup(manifest, "server_copy", record)
    names = [outcome.name for outcome in report.outcomes]
    assert report.failures == [] and "CHECK TABLE" in names and "query customers" in names
    assert "content fingerprint" in names  # the items stable during the copy, all equal
    assert "shop | rows shop.orders" in stats["fingerprint"]
    assert "busy | rows busy.events" in stats["fingerprint_changed_during_copy"]  # written meanwhile
    assert report.restored_stats["tables"]["shop.orders"] == stats["tables"]["shop.orders"]


def test_restore_output_is_a_prepared_datadir(tmp_path: Path, mariadb: Any, age_keys: KeyPair) -> None:
    manifest = physical_manifest(tmp_path, mariadb, age_keys)
    run_backup(manifest, "server_copy", PARTITION)
    arguments = ["--manifest", str(manifest.path), "restore", "server_copy", "--output"]
    assert main([*arguments, str(tmp_path / "datadir")]) == 1  # pytest's folder is closed to the mysql user
    open_folder = Path(tempfile.mkdtemp(dir="/var/tmp"))
    open_folder.chmod(0o755)
    target = open_folder / "datadir"
    try:
        assert main([*arguments, str(target)]) == 0
        checkpoints = (target / "xtrabackup_checkpoints").read_text()
        assert "backup_type = log-applied" in checkpoints and (target / "shop").is_dir()
    finally:
        shutil.rmtree(open_folder)


def test_a_truncated_copy_that_exits_0_is_not_committed(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mariabackup that stops after 300 KB and still exits 0 (a wrapper earlier on PATH): the archive check
    finds the stream unfinished, the backup fails, and the repository holds nothing."""
    fake = tmp_path / "bin"
    fake.mkdir()
    real = shutil.which("mariabackup")
    (fake / "mariabackup").write_text(f'#!/bin/bash\n"{real}" "$@" | head -c 300000\nexit 0\n')
    (fake / "mariabackup").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    manifest = physical_manifest(tmp_path, mariadb, age_keys)
    with pytest.raises(IntegrityError, match="not whole"):
        run_backup(manifest, "server_copy", PARTITION)
    assert open_repository(manifest, "local").list_backups("server_copy") == []


def test_documented_block_and_restore_commands_prepare_a_datadir_a_server_starts_on(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair
) -> None:
    """docs/restore.md's mariabackup block, run verbatim (as root, so the datadir goes to the mysql user), and
    the runbook's commands for the same backup: each gives a datadir a temporary server starts on, with the
    source's rows."""
    manifest = physical_manifest(tmp_path, mariadb, age_keys)
    record = run_backup(manifest, "server_copy", PARTITION).record
    (tmp_path / "identity.txt").write_text(age_keys.identity_file_text())
    open_folder = Path(tempfile.mkdtemp(dir="/var/tmp"))
    open_folder.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    try:
        script = with_variables(
            documented_block("mariabackup"),
            {
                "REPO": str(tmp_path / "repo"),
                "DATASET": "server_copy",
                "AGE_IDENTITY_FILE": str(tmp_path / "identity.txt"),
                "TARGET_DIR": str(open_folder / "by-docs"),
            },
        )
        result = run_block(script, {"PATH": "/usr/bin:/bin:/usr/sbin"}, work)
        assert result.returncode == 0, result.stderr
        repository = open_repository(manifest, "local")
        commands = "\n".join(
            ["set -euo pipefail", *restore_commands(repository, record, str(open_folder / "by-commands"))]
        )
        result = run_block(commands.replace('"$AGE_IDENTITY_FILE"', str(tmp_path / "identity.txt")), {}, work)
        assert result.returncode == 0, result.stderr
        for name in ("by-docs", "by-commands"):
            with temporary_server(open_folder / name, "mysql", 60) as port:
                connection = _connect_when_ready(port, mariadb.user, mariadb.password, 60)
                with connection, connection.cursor() as cursor:
                    cursor.execute("select count(*) from shop.orders")
                    assert cursor.fetchone()[0] == record.source_stats["tables"]["shop.orders"]
    finally:
        shutil.rmtree(open_folder)
