"""Damaged sidecars, missing objects, leftovers and restores that never leave half a file, on local paths."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest

from backup_pipelines.engines.base import Feed, new_folder, restore_to_file
from backup_pipelines.errors import IntegrityError, RestoreTargetExistsError
from backup_pipelines.repository import BackupRecord, new_backup_id
from backup_pipelines.repository.base import DamagedSidecarError
from backup_pipelines.repository.inventory import (
    EMPTY_FOLDER,
    NO_SIDECAR,
    PARTIAL,
    StoredObject,
    classify_leftover,
)
from backup_pipelines.repository.local import LocalRepository
from tests.conftest import backup_record

DAY = 24 * 3600


def record(partition: str = "2026-11-01-05:00", companions: bool = False) -> BackupRecord:
    backup_id = new_backup_id()
    extra = {"globals.sql": {"object_name": f"{backup_id}.globals.sql.zst", "sha256": "1" * 64}} if companions else {}
    return backup_record(backup_id, partition_key=partition, companions=extra)


def store(repository: LocalRepository, entry: BackupRecord) -> None:
    repository.put_bytes(entry.object_path, b"data")
    for label in entry.companions:
        repository.put_bytes(entry.companion_path(label), b"roles")
    repository.commit_record(entry)


def age(path: Path, seconds: float) -> None:
    moment = time.time() - seconds
    os.utime(path, (moment, moment))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"dataset": "orders", "partition', "not valid JSON"),
        (b"{}", "lacks dataset, partition_key, backup_id"),
        (b"[]", "JSON list"),
        (b'{"bytes_raw": "ten"}', "bytes_raw is str"),
    ],
)
def test_a_damaged_sidecar_raises_an_error_saying_what_is_wrong(content: bytes, reason: str) -> None:
    with pytest.raises(DamagedSidecarError, match=reason):
        BackupRecord.from_json(content)


def test_scan_skips_a_damaged_sidecar_naming_it_and_keeps_every_other_backup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repository = LocalRepository("local", tmp_path)
    healthy, damaged = record("2026-11-01-05:00"), record("2026-11-01-06:00")
    store(repository, healthy)
    store(repository, damaged)
    sidecar = tmp_path / damaged.sidecar_path
    sidecar.write_bytes(sidecar.read_bytes()[:200])
    listing = repository.scan("orders")
    assert listing.records == [healthy] and repository.list_backups("orders") == [healthy]
    [found] = listing.damaged
    assert found.uri == str(sidecar) and "not valid JSON" in found.reason
    assert str(sidecar) in caplog.text


def test_a_sidecar_lying_in_another_backups_place_is_damaged(tmp_path: Path) -> None:
    repository = LocalRepository("local", tmp_path)
    entry = record()
    store(repository, entry)
    elsewhere = tmp_path / "orders/2026-11-02-05:00" / f"{entry.backup_id}.json"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(entry.to_json())
    [found] = repository.scan("orders").damaged
    assert "describes" in found.reason and repository.list_backups("orders") == [entry]


def test_scan_marks_a_backup_whose_object_or_companion_is_gone(tmp_path: Path) -> None:
    repository = LocalRepository("local", tmp_path)
    whole, no_data, no_companion = record(), record(companions=True), record(companions=True)
    for entry in (whole, no_data, no_companion):
        store(repository, entry)
    (tmp_path / no_data.object_path).unlink()
    (tmp_path / no_companion.companion_path("globals.sql")).unlink()
    listing = repository.scan("orders")
    assert listing.missing == {
        no_data.backup_id: [no_data.object_path],
        no_companion.backup_id: [no_companion.companion_path("globals.sql")],
    }
    assert listing.usable == [whole] and len(listing.records) == 3


def test_only_names_this_project_writes_are_leftovers() -> None:
    backup_id = new_backup_id()
    paths = {f"orders/p/{backup_id}.json"}
    at = datetime.now(UTC)

    def kind(path: str) -> str | None:
        return classify_leftover("orders", StoredObject(path, 1, at), paths | {path})

    assert kind(f"orders/p/{backup_id}.dump.zst") is None  # its sidecar exists
    assert kind(f"orders/p/{backup_id}.json.partial-0a1b2c3d") == PARTIAL
    other = new_backup_id()
    assert kind(f"orders/p/{other}.dump.zst.age") == NO_SIDECAR
    assert kind(f"orders/p/{other}.globals.sql.zst") == NO_SIDECAR
    assert kind("orders/p/README.txt") is None
    assert kind(f"orders/p/deeper/{other}.dump.zst") is None
    assert kind(f"orders2/p/{other}.dump.zst") is None


def test_local_leftovers_are_found_only_once_older_than_the_safe_age(tmp_path: Path) -> None:
    repository = LocalRepository("local", tmp_path)
    kept = record()
    store(repository, kept)
    orphan = record()
    repository.put_bytes(orphan.object_path, b"x" * 1000)
    partial = tmp_path / "orders/2026-11-01-05:00" / f"{new_backup_id()}.dump.zst.partial-0a1b2c3d"
    partial.write_bytes(b"y" * 300)
    empty = tmp_path / "orders/2026-11-03-05:00"
    empty.mkdir()
    cutoff = datetime.now(UTC) - timedelta(hours=24)
    assert repository.leftovers("orders", cutoff) == []
    for path in (tmp_path / orphan.object_path, partial, empty):
        age(path, 2 * DAY)
    found = {(item.kind, item.path): item.size for item in repository.leftovers("orders", cutoff)}
    assert found == {
        (NO_SIDECAR, orphan.object_path): 1000,
        (PARTIAL, str(partial.relative_to(tmp_path))): 300,
        (EMPTY_FOLDER, "orders/2026-11-03-05:00"): 0,
    }
    for item in repository.leftovers("orders", cutoff):
        assert repository.remove_leftover(item)
    assert not empty.exists() and not partial.exists()
    assert repository.list_backups("orders") == [kept] and repository.scan("orders").missing == {}


def test_an_orphan_whose_sidecar_appears_before_removal_is_kept(tmp_path: Path) -> None:
    repository = LocalRepository("local", tmp_path)
    late = record()
    repository.put_bytes(late.object_path, b"data")
    age(tmp_path / late.object_path, 2 * DAY)
    [leftover] = repository.leftovers("orders", datetime.now(UTC) - timedelta(hours=24))
    repository.commit_record(late)  # a backup slower than the safe age commits just now
    assert repository.remove_leftover(leftover) is False
    assert repository.list_backups("orders") == [late]


def test_a_writer_recreates_a_folder_removed_as_empty_under_it(tmp_path: Path) -> None:
    repository = LocalRepository("local", tmp_path)
    entry = record()
    (tmp_path / entry.directory).mkdir(parents=True)
    (tmp_path / entry.directory).rmdir()  # what a prune does to an old empty partition folder
    store(repository, entry)
    assert repository.list_backups("orders") == [entry]


def feed_bytes(*chunks: bytes, fail: bool = False) -> Feed:
    def feed(output: IO[bytes]) -> None:
        for chunk in chunks:
            output.write(chunk)
        if fail:
            raise IntegrityError("sha256 mismatch")

    return feed


def test_restore_to_file_writes_the_whole_archive_under_the_new_name(tmp_path: Path) -> None:
    target = tmp_path / "app.dump"
    assert restore_to_file(str(target), feed_bytes(b"PGDMP", b"rest")) == str(target)
    assert target.read_bytes() == b"PGDMPrest" and sorted(p.name for p in tmp_path.iterdir()) == ["app.dump"]


def test_a_failed_restore_to_file_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "app.dump"
    with pytest.raises(IntegrityError):
        restore_to_file(str(target), feed_bytes(b"PGDMP", fail=True))
    assert list(tmp_path.iterdir()) == []
    restore_to_file(str(target), feed_bytes(b"PGDMP"))  # a retry works
    assert target.read_bytes() == b"PGDMP"


def test_restore_to_an_existing_file_or_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "app.dump"
    target.write_bytes(b"precious")
    with pytest.raises(RestoreTargetExistsError, match="already exists"):
        restore_to_file(str(target), feed_bytes(b"PGDMP"))
    assert target.read_bytes() == b"precious"
    with pytest.raises(RestoreTargetExistsError), new_folder(str(tmp_path)):
        pass


def test_a_folder_restore_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "tree"
    with pytest.raises(RuntimeError), new_folder(str(target)) as folder:
        (folder / "half").write_bytes(b"1")
        raise RuntimeError("restic died")
    assert list(tmp_path.iterdir()) == []
    with new_folder(str(target)) as folder:
        (folder / "whole").write_bytes(b"1")
    assert [p.name for p in target.iterdir()] == ["whole"] and list(tmp_path.iterdir()) == [target]
