from __future__ import annotations

from pathlib import Path

import pytest

from backup_pipelines.errors import StorageError
from backup_pipelines.repository import BackupRecord, new_backup_id
from backup_pipelines.repository.local import LocalRepository
from tests.conftest import backup_record


def record(partition: str = "2026-11-01-05:00") -> BackupRecord:
    backup_id = new_backup_id()
    return backup_record(backup_id, partition_key=partition, object_name=f"{backup_id}.dump.zst.age", encrypted=True)


def test_a_backup_exists_only_once_its_sidecar_is_written(tmp_path: Path) -> None:
    repository = LocalRepository("local", tmp_path)
    entry = record()
    writer = repository.open_writer(entry.object_path)
    writer.write(b"data")
    assert repository.list_backups() == []
    writer.commit()
    assert repository.list_backups() == []
    assert (tmp_path / entry.object_path).read_bytes() == b"data"
    repository.commit_record(entry)
    assert repository.list_backups("orders") == [entry]


def test_abort_leaves_nothing_behind(tmp_path: Path) -> None:
    repository = LocalRepository("local", tmp_path)
    entry = record()
    writer = repository.open_writer(entry.object_path)
    writer.write(b"half a backup")
    writer.abort()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_delete_removes_data_then_sidecar(tmp_path: Path) -> None:
    repository = LocalRepository("local", tmp_path)
    entry = record()
    repository.put_bytes(entry.object_path, b"data")
    repository.commit_record(entry)
    repository.delete_backup(entry)
    assert repository.list_backups() == []
    assert not (tmp_path / entry.object_path).exists()


def test_opening_a_missing_object_raises_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open"):
        LocalRepository("local", tmp_path).open_object("nope/x")


def test_backup_ids_sort_by_time() -> None:
    from datetime import UTC, datetime

    early = new_backup_id(datetime(2026, 1, 1, tzinfo=UTC))
    late = new_backup_id(datetime(2026, 1, 2, tzinfo=UTC))
    assert early < late and early.startswith("20260101T000000Z-")
