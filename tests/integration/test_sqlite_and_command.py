"""SQLite and command datasets, end to end with the real sqlite3 library, tar, zstd and age."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from assets.partitions import LATE_ALLOW, LATE_TAG
from backup_pipelines.crypto import KeyPair
from backup_pipelines.definitions import build_definitions
from backup_pipelines.engines.fingerprint import compare_fingerprints
from backup_pipelines.engines.sqlite import collect_stats as sqlite_stats
from backup_pipelines.errors import CommandFailedError, IntegrityError, SourceUnavailableError, ValidationFailedError
from backup_pipelines.manifest import SqliteDataset
from backup_pipelines.operations import restore_backup, restore_test_backup, run_backup, verify_backup
from tests.conftest import manifest_for

# Fixed partitions of the past: the backup asset refuses them unless the run says a late backup is meant.
LATE = {LATE_TAG: LATE_ALLOW}

PARTITION = "2026-11-23"


def make_sqlite(path: Path, rows: int = 5000) -> None:
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(
            "pragma journal_mode=wal; create table notes (id integer primary key, body text, blob blob);"
            "create table tags (name text);"
        )
        connection.executemany(
            "insert into notes (body, blob) values (?, ?)",
            [(f"note ✓ {n}", bytes([n % 256]) * 50) for n in range(rows)],
        )
        connection.executemany("insert into tags values (?)", [("a",), ("b",)])
        connection.commit()


@pytest.fixture(autouse=True)
def identity(age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)


def stored(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "repo").rglob("*") if p.is_file()] if (tmp_path / "repo").exists() else []


def test_sqlite_round_trip_while_the_application_writes(tmp_path: Path, age_keys: KeyPair) -> None:
    make_sqlite(tmp_path / "app.sqlite")
    manifest = manifest_for(
        tmp_path,
        age_keys,
        {
            "notes": {
                "kind": "sqlite",
                "source": {"path": "app.sqlite"},
                "verification": {
                    "queries": [
                        {"name": "notes", "sql": "select count(*) from notes", "expect": {"same_as_source": True}}
                    ]
                },
            }
        },
    )
    stop = threading.Event()

    def writer() -> None:  # the application keeps writing during the backup
        with closing(sqlite3.connect(tmp_path / "app.sqlite", timeout=30)) as connection:
            while not stop.is_set():
                connection.execute("insert into tags values ('live')")
                connection.commit()
                time.sleep(0.001)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        record = run_backup(manifest, "notes", PARTITION).record
    finally:
        stop.set()
        thread.join()
    assert record.object_name.endswith(".sqlite.zst.age")
    assert record.source_stats["tables"]["notes"] == 5000 and record.source_stats["table_count"] == 2
    [check] = verify_backup(manifest, "notes", record)
    assert check.archive == {"integrity_check": "ok", "tables": 2}
    report = restore_test_backup(manifest, "notes", record)
    assert report.failures == [] and {o.name for o in report.outcomes} >= {"integrity_check", "rows in tags"}
    assert report.restored_stats["tables"]["tags"] == record.source_stats["tables"]["tags"]  # same snapshot
    assert any(o.name == "content fingerprint" and o.passed for o in report.outcomes)

    # Independent judge: sqlite3's own .dump of the restored file equals the source's as of the backup (the
    # rows the application added after the snapshot removed).
    restored = Path(restore_backup(manifest, "notes", record, str(tmp_path / "restored.sqlite"), raw_file=True))
    with closing(sqlite3.connect(restored)) as connection:
        last = connection.execute("select max(rowid) from tags").fetchone()[0]
    source_copy = tmp_path / "source-at-backup.sqlite"
    with closing(sqlite3.connect(tmp_path / "app.sqlite")) as live, closing(sqlite3.connect(source_copy)) as copy:
        live.backup(copy)
        copy.execute("delete from tags where rowid > ?", (last,))
        copy.commit()
    assert sqlite_dump(restored) == sqlite_dump(source_copy)


def sqlite_dump(path: Path) -> str:
    return subprocess.run(["sqlite3", str(path), ".dump"], capture_output=True, text=True, check=True).stdout


def test_sqlite_values_that_look_alike_are_told_apart_and_one_changed_row_is_named(
    tmp_path: Path, age_keys: KeyPair
) -> None:
    with closing(sqlite3.connect(tmp_path / "app.sqlite")) as connection:
        connection.executescript(
            "create table anything (v);"
            "create table measures (x real, label text);"
            "create index measures_label on measures (label);"
            "create view small as select * from measures where x < 1;"
            "pragma user_version = 7;"
        )
        connection.executemany(
            "insert into anything values (?)", [(1,), (1.0,), ("1",), (b"1",), (None,), (None,), (bytes(range(256)),)]
        )
        connection.executemany(
            "insert into measures values (?, ?)", [(0.1, "ünï 🚀"), (-0.0, "zero"), (1e308, "big"), (0.1, "ünï 🚀")]
        )
        connection.commit()
    manifest = manifest_for(tmp_path, age_keys, {"odd": {"kind": "sqlite", "source": {"path": "app.sqlite"}}})
    record = run_backup(manifest, "odd", PARTITION).record
    assert not restore_test_backup(manifest, "odd", record).failures
    dataset = manifest.dataset("odd")
    assert isinstance(dataset, SqliteDataset)

    restored = Path(restore_backup(manifest, "odd", record, str(tmp_path / "restored.sqlite"), raw_file=True))
    with closing(sqlite3.connect(restored)) as connection:
        connection.execute("update anything set v = 1 where v = '1'")  # text '1' becomes the integer 1
        connection.commit()
        differing = [o.name for o in compare_fingerprints(record.source_stats, sqlite_stats(connection, dataset))]
    assert differing == ["rows anything"]


def test_a_missing_sqlite_file_fails_and_commits_nothing(tmp_path: Path, age_keys: KeyPair) -> None:
    manifest = manifest_for(tmp_path, age_keys, {"notes": {"kind": "sqlite", "source": {"path": "gone.sqlite"}}})
    with pytest.raises(
        SourceUnavailableError, match=r"SQLite database .*gone\.sqlite \(dataset notes\) does not exist"
    ):
        run_backup(manifest, "notes", PARTITION)
    assert stored(tmp_path) == []


def test_sqlite_restore_test_mismatch_names_the_numbers(tmp_path: Path, age_keys: KeyPair) -> None:
    make_sqlite(tmp_path / "app.sqlite", rows=10)
    manifest = manifest_for(
        tmp_path,
        age_keys,
        {
            "notes": {
                "kind": "sqlite",
                "source": {"path": "app.sqlite"},
                "verification": {
                    "queries": [{"name": "notes", "sql": "select count(*) from notes", "expect": {"min": 100}}]
                },
            }
        },
    )
    record = run_backup(manifest, "notes", PARTITION).record
    with pytest.raises(ValidationFailedError, match=r"query notes: expected >= 100, restored copy has 10"):
        restore_test_backup(manifest, "notes", record)


def command_dataset(tmp_path: Path, command: list[str], validate: list[str] | None = None) -> dict[str, Any]:
    (tmp_path / "secrets").mkdir(exist_ok=True)
    for index in range(20):
        (tmp_path / "secrets" / f"key{index}.txt").write_text(f"secret {index} ✓\n" * 100)
    return {"kind": "command", "source": {"command": command, "validate_command": validate, "extension": "tar"}}


def test_command_output_round_trips_and_is_validated(tmp_path: Path, age_keys: KeyPair) -> None:
    manifest = manifest_for(
        tmp_path,
        age_keys,
        {"vault": command_dataset(tmp_path, ["tar", "-C", "secrets", "-cf", "-", "."], ["tar", "-tf", "-"])},
    )
    record = run_backup(manifest, "vault", PARTITION).record
    assert record.object_name.endswith(".tar.zst.age") and record.bytes_raw > 20 * 1500
    [check] = verify_backup(manifest, "vault", record)
    assert "key7.txt" in check.archive["output"]
    report = restore_test_backup(manifest, "vault", record)
    assert [o.name for o in report.outcomes] == ["restored bytes", "validate command"] and not report.failures


def test_a_failing_command_fails_with_its_stderr_and_commits_nothing(tmp_path: Path, age_keys: KeyPair) -> None:
    manifest = manifest_for(
        tmp_path,
        age_keys,
        {"vault": command_dataset(tmp_path, ["sh", "-c", "echo partial; echo 'vault is sealed' >&2; exit 2"])},
    )
    with pytest.raises(CommandFailedError, match="sh exited with status 2: vault is sealed"):
        run_backup(manifest, "vault", PARTITION)
    assert stored(tmp_path) == []


def test_output_the_validator_rejects_is_never_committed(tmp_path: Path, age_keys: KeyPair) -> None:
    """The validator reads the output as it is stored, before the commit: the command exited 0, yet nothing
    that would fail its restore test becomes a backup."""
    manifest = manifest_for(
        tmp_path,
        age_keys,
        {"vault": command_dataset(tmp_path, ["sh", "-c", "echo not-a-tar-archive"], ["tar", "-tf", "-"])},
    )
    with pytest.raises(IntegrityError, match="the dump of vault is not whole, so it was not committed: tar exited"):
        run_backup(manifest, "vault", PARTITION)
    assert stored(tmp_path) == []


def test_sqlite_and_command_datasets_get_the_same_assets(tmp_path: Path, age_keys: KeyPair) -> None:
    make_sqlite(tmp_path / "app.sqlite", rows=50)
    manifest = manifest_for(
        tmp_path,
        age_keys,
        {
            "notes": {"kind": "sqlite", "source": {"path": "app.sqlite"}},
            "vault": command_dataset(tmp_path, ["tar", "-C", "secrets", "-cf", "-", "."], ["tar", "-tf", "-"]),
        },
    )
    defs = build_definitions(manifest.path)
    result = defs.resolve_job_def("protect_daily").execute_in_process(
        partition_key=PARTITION, instance=dg.DagsterInstance.ephemeral(), tags=LATE
    )
    assert result.success
    for name in ("notes", "vault"):
        for stage in ("backup", "verify", "restore_test"):
            assert result.asset_materializations_for_node(f"{name}__{stage}"), (stage, name)
