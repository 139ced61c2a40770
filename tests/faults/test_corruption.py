"""Damaged stored backups: objects, companions and sidecars with a flipped byte, cut short, emptied or
replaced by `{}`. verify, restore and restore-test refuse them with the project's own errors (never a
traceback), a restore leaves no target behind, list reports a damaged sidecar (exit 1), prune never acts on
one, and the next clean backup commits, verifies, restore-tests and is the one restores pick."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backup_pipelines.cli import main
from backup_pipelines.crypto import KeyPair
from backup_pipelines.errors import IntegrityError
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import (
    find_backup,
    restore_backup,
    restore_test_backup,
    run_backup,
    verify_backup,
)
from backup_pipelines.prune import prune_dataset
from backup_pipelines.repository import BackupRecord
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import manifest_dict, write_manifest
from tests.faults.common import command_manifest, expect_failure, tar_dataset

PARTITIONS = {"app_db": "2026-12-01-05:00", "vault": "2026-12-01"}
PRISTINE: dict[str, tuple[Path, BackupRecord]] = {}


def flip(data: bytes, at: int) -> bytes:
    position = min(max(at, 0), len(data) - 1)
    return data[:position] + bytes([data[position] ^ 0x40]) + data[position + 1 :]


OBJECT_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "flip-first-byte": lambda data: flip(data, 0),
    "flip-middle": lambda data: flip(data, len(data) // 2),
    "flip-last-byte": lambda data: flip(data, len(data) - 1),
    "cut-to-empty": lambda data: b"",
    "cut-in-half": lambda data: data[: len(data) // 2],
    "replaced-by-braces": lambda data: b"{}",
}


def _sidecar_field(name: str, change: Callable[[Any], Any]) -> Callable[[bytes], bytes]:
    def damage(data: bytes) -> bytes:
        values = json.loads(data)
        values[name] = change(values[name])
        return json.dumps(values).encode()

    return damage


SIDECAR_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "sha256-one-digit-off": _sidecar_field("sha256", lambda value: ("1" if value[0] != "1" else "2") + value[1:]),
    "bytes-raw-one-off": _sidecar_field("bytes_raw", lambda value: value + 1),
    "backup-id-one-char-off": _sidecar_field("backup_id", lambda value: value[:-1] + "z"),
    "flip-a-brace": lambda data: flip(data, 0),
    "cut-in-half": lambda data: data[: len(data) // 2],
    "cut-to-empty": lambda data: b"",
    "replaced-by-braces": lambda data: b"{}",
}
STILL_A_RECORD = {"sha256-one-digit-off", "bytes-raw-one-off"}


def pristine_manifest(kind: str, folder: Path, postgres: PostgresSandbox, database: str, age_keys: KeyPair) -> Manifest:
    if kind == "app_db":
        data = manifest_dict(postgres, folder / "repo", [age_keys.recipient], database=database)
        return write_manifest(folder / "m.yaml", data)
    return command_manifest(folder, age_keys, {"vault": tar_dataset(folder)})


def damaged_copy(
    kind: str, tmp_path: Path, postgres: PostgresSandbox, database: str, age_keys: KeyPair
) -> tuple[Manifest, BackupRecord]:
    """A copy of a pristine repository holding one good backup of `kind` (made once per session)."""
    if kind not in PRISTINE:
        folder = tmp_path.parent / f"pristine-{kind}"
        folder.mkdir(exist_ok=True)
        manifest = pristine_manifest(kind, folder, postgres, database, age_keys)
        PRISTINE[kind] = (folder / "repo", run_backup(manifest, kind, PARTITIONS[kind]).record)
    repo, record = PRISTINE[kind]
    shutil.copytree(repo, tmp_path / "repo")
    return pristine_manifest(kind, tmp_path, postgres, database, age_keys), record


def cli(manifest: Manifest, *arguments: str) -> int:
    return main(["--manifest", str(manifest.path), *arguments])


def next_run_is_the_one_restores_pick(manifest: Manifest, name: str) -> None:
    record = run_backup(manifest, name, PARTITIONS[name]).record
    verify_backup(manifest, name, record)
    restore_test_backup(manifest, name, record)
    assert find_backup(manifest, name).backup_id == record.backup_id


def refused_everywhere(manifest: Manifest, name: str, record: BackupRecord, tmp_path: Path) -> None:
    """verify, restore (to a file; for PostgreSQL also into a database) and restore-test all refuse
    `record` with a BackupError, and no restore target is left behind."""
    expect_failure(lambda: verify_backup(manifest, name, record))
    target = tmp_path / "restored.out"
    expect_failure(lambda: restore_backup(manifest, name, record, str(target), raw_file=True))
    assert not target.exists() and list(tmp_path.glob("restored.out*")) == []
    expect_failure(lambda: restore_test_backup(manifest, name, record))
    assert cli(manifest, "restore", name, "--backup-id", record.backup_id, "--output", str(target)) != 0
    assert not target.exists()


@pytest.mark.parametrize("kind", ["app_db", "vault"])
@pytest.mark.parametrize("damage", list(OBJECT_DAMAGE))
def test_a_damaged_object_is_refused_by_verify_restore_and_restore_test(
    tmp_path: Path,
    postgres: PostgresSandbox,
    faults_database: str,
    age_keys: KeyPair,
    kind: str,
    damage: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest, record = damaged_copy(kind, tmp_path, postgres, faults_database, age_keys)
    path = tmp_path / "repo" / record.object_path
    path.write_bytes(OBJECT_DAMAGE[damage](path.read_bytes()))
    refused_everywhere(manifest, kind, record, tmp_path)
    assert cli(manifest, "list", kind) in (0, 1)
    prune_dataset(manifest, kind)
    next_run_is_the_one_restores_pick(manifest, kind)


@pytest.mark.parametrize("damage", ["flip-middle", "cut-in-half", "cut-to-empty", "replaced-by-braces"])
def test_a_damaged_companion_is_refused_by_verify_restore_and_restore_test(
    tmp_path: Path,
    postgres: PostgresSandbox,
    faults_database: str,
    age_keys: KeyPair,
    damage: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest, record = damaged_copy("app_db", tmp_path, postgres, faults_database, age_keys)
    assert record.companions, "PostgreSQL backups store the database's globals beside the dump"
    for label in record.companions:
        path = tmp_path / "repo" / record.companion_path(label)
        path.write_bytes(OBJECT_DAMAGE[damage](path.read_bytes()))
    refused_everywhere(manifest, "app_db", record, tmp_path)
    next_run_is_the_one_restores_pick(manifest, "app_db")


@pytest.mark.parametrize("kind", ["app_db", "vault"])
@pytest.mark.parametrize("damage", list(SIDECAR_DAMAGE))
def test_a_damaged_sidecar_is_reported_never_acted_on_and_never_restored(
    tmp_path: Path,
    postgres: PostgresSandbox,
    faults_database: str,
    age_keys: KeyPair,
    kind: str,
    damage: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest, record = damaged_copy(kind, tmp_path, postgres, faults_database, age_keys)
    path = tmp_path / "repo" / record.sidecar_path
    damaged = SIDECAR_DAMAGE[damage](path.read_bytes())
    path.write_bytes(damaged)
    if damage in STILL_A_RECORD:  # a readable record that lies about its object
        listed = find_backup(manifest, kind)
        error = expect_failure(lambda: verify_backup(manifest, kind, listed))
        assert isinstance(error, IntegrityError), error
        if damage.startswith("sha256"):  # a wrong size alone leaves the content whole: only verify objects
            expect_failure(lambda: restore_test_backup(manifest, kind, listed))
    else:
        expect_failure(lambda: find_backup(manifest, kind))
        assert cli(manifest, "list", kind) == 1
        assert cli(manifest, "restore", kind, "--output", str(tmp_path / "restored.out")) != 0
        assert not (tmp_path / "restored.out").exists()
        report = prune_dataset(manifest, kind)
        assert report.damaged and path.read_bytes() == damaged, "prune acted on a damaged sidecar"
    next_run_is_the_one_restores_pick(manifest, kind)
