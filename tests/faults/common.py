"""What every injected fault must leave behind, and the small builders the fault modules share.

A fault case injects one failure into a backup (or into what a backup stored) and then asserts, through
`assert_fault_contained` and `assert_next_run_succeeds`:
- no success was reported (the call raised one of the project's errors, or the process exited non-zero);
- every backup a repository lists for the dataset verifies and restore-tests (nothing that does not restore
  was committed);
- a clean backup afterwards commits, verifies and restore-tests.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.engines.postgres_restore import find_bin_dir
from backup_pipelines.errors import BackupError
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import restore_test_backup, run_backup, verify_backup
from backup_pipelines.repository import BackupRecord, open_object_repository
from tests.conftest import write_manifest

SEED = 20261201
NEXT_PARTITION_SUFFIX = "next"


def offsets(count: int, low: float, high: float, salt: str) -> list[float]:
    """Return `count` reproducible pseudo-random shares in [low, high) (seeded by SEED and `salt`)."""
    generator = random.Random(f"{SEED}-{salt}")
    return sorted(round(generator.uniform(low, high), 4) for _ in range(count))


def expect_failure(action: Callable[[], Any]) -> BackupError:
    """Run `action`; it must raise one of the project's own errors (a BackupError), never return and never
    raise anything else (which an operator would see as a traceback)."""
    try:
        outcome = action()
    except BackupError as error:
        return error
    pytest.fail(f"the fault went unnoticed: the call returned {outcome!r}")


def listed_backups(manifest: Manifest, name: str) -> list[BackupRecord]:
    """Every backup any repository of `name` lists, asserting that no repository holds a damaged sidecar."""
    found: list[BackupRecord] = []
    for repository_name in manifest.dataset(name).repositories:
        listing = open_object_repository(manifest, repository_name).scan(name)
        assert listing.damaged == [], f"a fault left a damaged sidecar: {listing.damaged}"
        found += listing.records
    return found


def assert_committed_backups_restore(manifest: Manifest, name: str) -> list[BackupRecord]:
    """Every backup listed for `name` must verify and restore-test; return them."""
    records = listed_backups(manifest, name)
    for record in records:
        verify_backup(manifest, name, record)
        restore_test_backup(manifest, name, record)
    return records


def assert_next_run_succeeds(manifest: Manifest, name: str, partition_key: str) -> BackupRecord:
    """A clean backup after the fault commits, verifies and restore-tests, and every listed backup restores."""
    record = run_backup(manifest, name, partition_key).record
    records = assert_committed_backups_restore(manifest, name)
    assert record.backup_id in {listed.backup_id for listed in records}
    return record


def assert_fault_contained(manifest: Manifest, name: str, partition_key: str) -> list[BackupRecord]:
    """After a failed backup: what is listed restores, and the next run succeeds. Return what the fault left
    listed (normally nothing)."""
    left = assert_committed_backups_restore(manifest, name)
    assert_next_run_succeeds(manifest, name, partition_key)
    return left


def postgres_bin_dir_with(folder: Path, pg_dump_script: str) -> Path:
    """A `bin_dir` whose `pg_dump` is `pg_dump_script` (a shell script body; `$REAL` is the real pg_dump)
    and whose pg_restore/psql are the real ones."""
    real = find_bin_dir(None)
    assert real is not None
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "pg_dump"
    wrapper.write_text(f'#!/bin/sh\nREAL="{real}/pg_dump"\n{pg_dump_script}\n')
    wrapper.chmod(0o755)
    for tool in ("pg_restore", "psql"):
        if not (folder / tool).exists():
            os.symlink(f"{real}/{tool}", folder / tool)
    return folder


def killed_after(real: str, keep_bytes: int, signal_name: str) -> str:
    """A shell script body that runs `real` with the script's arguments, passes on its first `keep_bytes`
    bytes and then kills itself with `signal_name`."""
    return f'"{real}" "$@" | head -c {keep_bytes}\nkill -s {signal_name} $$\nsleep 5\nexit 0'


def write_tool(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def command_manifest(
    folder: Path, age_keys: KeyPair, datasets: dict[str, dict[str, Any]], repositories: dict[str, Any] | None = None
) -> Manifest:
    """A manifest of command (or sqlite) datasets in `folder`, stored in a local repository `folder/repo`
    unless `repositories` is given (the first one is the primary)."""
    repositories = repositories or {"local": {"type": "local", "path": str(folder / "repo")}}
    base = {
        "schedule": "daily",
        "rpo": "26h",
        "rto": "1h",
        "retention": {"keep_daily": 7},
        "repositories": list(repositories),
        "encryption": {"recipients": [age_keys.recipient]},
    }
    data = {
        "partition_start": "2026-11-01",
        "repositories": repositories,
        "datasets": {name: {**base, **fields} for name, fields in datasets.items()},
    }
    return write_manifest(folder / "m.yaml", data)


def tar_dataset(folder: Path, command: list[str] | None = None) -> dict[str, Any]:
    """A command dataset that tars a folder of 20 small files, validated by `tar -tf -`."""
    secrets = folder / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    for index in range(20):
        (secrets / f"key{index}.txt").write_text(f"secret {index} ✓\n" * 100)
    return {
        "kind": "command",
        "source": {
            "command": command or ["tar", "-C", "secrets", "-cf", "-", "."],
            "validate_command": ["tar", "-tf", "-"],
            "extension": "tar",
        },
    }
