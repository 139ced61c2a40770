"""Sources that die mid-dump (killed by a signal after N bytes) or stop early and exit 0, reached through the
manifest as a broken client installation would be: a PostgreSQL server's `bin_dir` holding a wrapper
`pg_dump`, a MySQL server's `dump_binary`, a command dataset's command. Nothing may be committed, and the next
clean run must succeed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.errors import CommandFailedError, IntegrityError
from backup_pipelines.operations import run_backup
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import manifest_dict, stored_files, write_manifest
from tests.faults.common import (
    assert_fault_contained,
    command_manifest,
    expect_failure,
    killed_after,
    offsets,
    postgres_bin_dir_with,
    tar_dataset,
    write_tool,
)
from tests.integration.test_mysql_backup import mysql_manifest
from tests.integration.test_whole_or_not_committed import lying_tool

PARTITION = "2026-12-01-05:00"
SIGNALS = ["KILL", "TERM", "SEGV", "INT", "PIPE", "HUP"]
MYSQLDUMP = "/usr/bin/mariadb-dump" if Path("/usr/bin/mariadb-dump").exists() else "/usr/bin/mysqldump"
SIZES: dict[str, int] = {}


def _whole_size(key: str, measure: Any) -> int:
    """The raw size of a clean dump, measured once per session (the fault cases cut at shares of it)."""
    if key not in SIZES:
        SIZES[key] = measure()
    return SIZES[key]


def postgres_manifest(tmp_path: Path, postgres: PostgresSandbox, database: str, age_keys: KeyPair) -> dict[str, Any]:
    return manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient], database=database)


def _postgres_size(tmp_path: Path, postgres: PostgresSandbox, database: str, age_keys: KeyPair) -> int:
    data = postgres_manifest(tmp_path / "measure", postgres, database, age_keys)
    manifest = write_manifest(tmp_path / "measure.yaml", data)
    return run_backup(manifest, "app_db", PARTITION).record.bytes_raw


def _check_postgres_fault(tmp_path: Path, data: dict[str, Any], expected: type[Exception]) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", data)
    error = expect_failure(lambda: run_backup(manifest, "app_db", PARTITION))
    assert isinstance(error, expected), error
    assert stored_files(tmp_path / "repo") == []
    data["servers"]["pg"].pop("bin_dir")
    assert_fault_contained(write_manifest(tmp_path / "m.yaml", data), "app_db", PARTITION)


@pytest.mark.parametrize("share", offsets(5, 0.0, 1.05, "pg-kill"))
def test_pg_dump_killed_by_a_signal_after_n_bytes_commits_nothing(
    tmp_path: Path, postgres: PostgresSandbox, faults_database: str, age_keys: KeyPair, share: float
) -> None:
    whole = _whole_size("pg", lambda: _postgres_size(tmp_path, postgres, faults_database, age_keys))
    signal_name = SIGNALS[int(share * 1000) % len(SIGNALS)]
    data = postgres_manifest(tmp_path, postgres, faults_database, age_keys)
    script = killed_after("$REAL", int(whole * share), signal_name)
    data["servers"]["pg"]["bin_dir"] = str(postgres_bin_dir_with(tmp_path / "bin", script))
    _check_postgres_fault(tmp_path, data, CommandFailedError)


@pytest.mark.parametrize("share", offsets(4, 0.0, 0.999, "pg-truncate"))
def test_pg_dump_that_stops_early_and_exits_0_commits_nothing(
    tmp_path: Path, postgres: PostgresSandbox, faults_database: str, age_keys: KeyPair, share: float
) -> None:
    whole = _whole_size("pg", lambda: _postgres_size(tmp_path, postgres, faults_database, age_keys))
    data = postgres_manifest(tmp_path, postgres, faults_database, age_keys)
    script = f'"$REAL" "$@" | head -c {int(whole * share)}\nexit 0'
    data["servers"]["pg"]["bin_dir"] = str(postgres_bin_dir_with(tmp_path / "bin", script))
    _check_postgres_fault(tmp_path, data, IntegrityError)


def _mysql_fault(tmp_path: Path, mariadb: Any, age_keys: KeyPair, tool: Path, expected: type[Exception]) -> None:
    manifest = mysql_manifest(tmp_path, mariadb, age_keys)
    data = manifest.model_dump(mode="json", exclude_none=True)
    data["servers"]["maria"]["dump_binary"] = str(tool)
    broken = write_manifest(tmp_path / "broken.yaml", data)
    error = expect_failure(lambda: run_backup(broken, "shop", "2026-12-01"))
    assert isinstance(error, expected), error
    assert stored_files(tmp_path / "repo") == []
    assert_fault_contained(manifest, "shop", "2026-12-01")


def _mysql_size(tmp_path: Path, mariadb: Any, age_keys: KeyPair) -> int:
    (tmp_path / "measure").mkdir()
    manifest = mysql_manifest(tmp_path / "measure", mariadb, age_keys)
    return run_backup(manifest, "shop", "2026-12-01").record.bytes_raw


@pytest.mark.parametrize("share", offsets(6, 0.0, 1.05, "mysql-kill"))
def test_mysqldump_killed_by_a_signal_after_n_bytes_commits_nothing(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair, share: float
) -> None:
    whole = _whole_size("mysql", lambda: _mysql_size(tmp_path, mariadb, age_keys))
    signal_name = SIGNALS[int(share * 1000) % len(SIGNALS)]
    tool = write_tool(tmp_path / "bin", "mysqldump", killed_after(MYSQLDUMP, int(whole * share), signal_name))
    _mysql_fault(tmp_path, mariadb, age_keys, tool, CommandFailedError)


@pytest.mark.parametrize("share", offsets(4, 0.0, 0.99, "mysql-truncate"))
def test_mysqldump_that_stops_early_and_exits_0_commits_nothing(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair, share: float
) -> None:
    whole = _whole_size("mysql", lambda: _mysql_size(tmp_path, mariadb, age_keys))
    tool = lying_tool(tmp_path / "bin", "mysqldump", MYSQLDUMP, int(whole * share))
    _mysql_fault(tmp_path, mariadb, age_keys, tool, IntegrityError)


TAR = "tar -C secrets -cf - ."
TAR_CONTENT_BYTES = 41_472  # 20 members of 512 + 1,536 bytes and the folder's header; padding follows


def _command_fault(tmp_path: Path, age_keys: KeyPair, script: str, expected: type[Exception]) -> None:
    broken = command_manifest(tmp_path, age_keys, {"vault": tar_dataset(tmp_path, ["sh", "-c", script])})
    error = expect_failure(lambda: run_backup(broken, "vault", "2026-12-01"))
    assert isinstance(error, expected), error
    assert stored_files(tmp_path / "repo") == []
    manifest = command_manifest(tmp_path, age_keys, {"vault": tar_dataset(tmp_path)})
    assert_fault_contained(manifest, "vault", "2026-12-01")


def _inside_a_member(share: float) -> int:
    """A cut inside the data of one of the 20 members. GNU tar itself (the validator) cannot tell an archive
    cut inside or right before a member's header from a whole one, so cutting there would test tar."""
    member = int(share * 20) % 20
    return 1024 + 2048 * member + 1 + int(share * 1_000_000) % 1398


@pytest.mark.parametrize("share", offsets(8, 0.0, 1.3, "command-kill"))
def test_a_command_killed_by_a_signal_after_n_bytes_commits_nothing(
    tmp_path: Path, age_keys: KeyPair, share: float
) -> None:
    signal_name = SIGNALS[int(share * 1000) % len(SIGNALS)]
    keep = int(TAR_CONTENT_BYTES * share)
    _command_fault(tmp_path, age_keys, f"{TAR} | head -c {keep}; kill -s {signal_name} $$; sleep 5", CommandFailedError)


@pytest.mark.parametrize("share", offsets(6, 0.0, 0.99, "command-truncate"))
def test_a_command_that_stops_early_and_exits_0_commits_nothing(
    tmp_path: Path, age_keys: KeyPair, share: float
) -> None:
    keep = _inside_a_member(share)
    _command_fault(tmp_path, age_keys, f"{TAR} | head -c {keep}; exit 0", IntegrityError)
