"""Parallel PostgreSQL restores (pg_restore --jobs from a temporary file) against a real server: the restore
test passes with the content fingerprint, a scratch folder without room falls back to streaming, and a failure
on the parallel path leaves neither the temporary file nor a database behind. The size threshold is lowered to
0 so the small sample database takes the parallel path."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import IO

import psycopg
import pytest

from assets.metadata import restore_metadata
from backup_pipelines.crypto import KeyPair
from backup_pipelines.engines import pg_parallel
from backup_pipelines.engines.fingerprint import FINGERPRINT
from backup_pipelines.engines.postgres import PostgresEngine
from backup_pipelines.errors import CommandFailedError, IntegrityError
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import restore_backup, restore_test_backup, run_backup
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import manifest_dict, write_manifest

PARTITION = "2026-11-20-05:00"


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The scratch folder for temporary archive files, with the parallel path taken for any archive size."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setenv(pg_parallel.SCRATCH_DIR_ENV, str(folder))
    monkeypatch.setattr(pg_parallel, "PARALLEL_THRESHOLD", 0)
    return folder


@pytest.fixture
def manifest(postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Manifest:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)
    return write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))


def databases_like(postgres: PostgresSandbox, pattern: str) -> list[str]:
    with psycopg.connect(postgres.conninfo()) as connection:
        rows = connection.execute("select datname from pg_database where datname like %s", (pattern,)).fetchall()
    return [row[0] for row in rows]


def test_a_large_archive_is_restored_by_several_pg_restore_jobs_and_passes_the_fingerprint_comparison(
    manifest: Manifest, postgres: PostgresSandbox, scratch: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = run_backup(manifest, "app_db", PARTITION).record
    assert FINGERPRINT in record.source_stats and len(record.source_stats["tables"]) >= 4
    with caplog.at_level(logging.INFO, logger="backup_pipelines"):
        report = restore_test_backup(manifest, "app_db", record)
    assert report.failures == []
    assert "content fingerprint" in {outcome.name for outcome in report.outcomes}
    assert report.restored_stats["tables"] == record.source_stats["tables"]
    assert report.restored_stats["pg_restore_jobs"] >= 2
    assert restore_metadata(record, report, 1800)["pg_restore_jobs"].value == report.restored_stats["pg_restore_jobs"]
    assert f"from a temporary file in {scratch}" in caplog.text
    assert list(scratch.iterdir()) == []
    assert databases_like(postgres, "bp_restor%") == []


def test_restore_to_a_new_database_uses_the_parallel_path_with_the_size_its_feed_carries(
    manifest: Manifest, postgres: PostgresSandbox, scratch: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = run_backup(manifest, "app_db", PARTITION).record
    with caplog.at_level(logging.INFO, logger="backup_pipelines"):
        restore_backup(manifest, "app_db", record, "parallel_copy", keep_privileges=False)
    try:
        assert "restores bp_restoring_" in caplog.text and "jobs from a temporary file" in caplog.text
        query = "select count(*), sum(total) from shop.orders"
        with (
            psycopg.connect(postgres.conninfo("app")) as source,
            psycopg.connect(postgres.conninfo("parallel_copy")) as copy,
        ):
            assert copy.execute(query).fetchone() == source.execute(query).fetchone()
    finally:
        with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
            admin.execute("drop database if exists parallel_copy")
    assert list(scratch.iterdir()) == []


def test_a_scratch_folder_without_room_makes_the_restore_stream_into_one_pg_restore(
    manifest: Manifest,
    postgres: PostgresSandbox,
    scratch: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The free space is stubbed (an OS answer, in pg_parallel only): 1 kB free, far less than the archive."""
    monkeypatch.setattr(pg_parallel, "disk_usage", lambda folder: SimpleNamespace(total=10**9, used=10**9, free=1000))
    record = run_backup(manifest, "app_db", PARTITION).record
    with caplog.at_level(logging.INFO, logger="backup_pipelines"):
        report = restore_test_backup(manifest, "app_db", record)
    assert report.failures == []
    assert report.restored_stats["pg_restore_jobs"] == 1
    assert f"scratch folder {scratch} has 1 kB free" in caplog.text
    assert list(scratch.iterdir()) == []


def test_a_damaged_object_on_the_parallel_path_leaves_no_temporary_file_and_no_database(
    manifest: Manifest, postgres: PostgresSandbox, scratch: Path, tmp_path: Path
) -> None:
    record = run_backup(manifest, "app_db", PARTITION).record
    stored = tmp_path / "repo" / record.object_path
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    stored.write_bytes(bytes(damaged))
    with pytest.raises((IntegrityError, CommandFailedError)):
        restore_test_backup(manifest, "app_db", record)
    assert list(scratch.iterdir()) == []
    assert databases_like(postgres, "bp_restor%") == []


class TruncatedFeed:
    """A feed that writes the first part of a raw archive and announces the whole archive's size."""

    def __init__(self, archive: bytes) -> None:
        self.archive, self.bytes_raw = archive, len(archive)

    def __call__(self, stdin: IO[bytes]) -> None:
        stdin.write(self.archive[: len(self.archive) * 2 // 3])


def test_pg_restore_failing_on_the_parallel_path_leaves_no_temporary_file_and_no_database(
    manifest: Manifest, postgres: PostgresSandbox, scratch: Path, tmp_path: Path
) -> None:
    record = run_backup(manifest, "app_db", PARTITION).record
    raw = Path(restore_backup(manifest, "app_db", record, str(tmp_path / "raw.dump"), raw_file=True))
    with pytest.raises(CommandFailedError, match="pg_restore"):
        PostgresEngine().restore_to(manifest, "app_db", "never_restored", None, TruncatedFeed(raw.read_bytes()))
    assert list(scratch.iterdir()) == []
    assert databases_like(postgres, "bp_restor%") == [] and databases_like(postgres, "never_restored") == []


def test_the_temporary_archive_file_is_readable_by_its_owner_only_and_removed_after_a_failed_feed(
    scratch: Path,
) -> None:
    created = pg_parallel.create_archive_file(str(scratch))
    assert created is not None
    descriptor, path = created
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    def failing_feed(stdin: IO[bytes]) -> None:
        stdin.write(b"decrypted")
        raise IntegrityError("damaged")

    with pytest.raises(IntegrityError), pg_parallel.archive_file(descriptor, path, failing_feed):
        pass
    assert list(scratch.iterdir()) == []
