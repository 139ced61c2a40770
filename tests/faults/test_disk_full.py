"""A full disk at each write of a backup: a tiny tmpfs as the local repository, sized so that the object,
the companion or the sidecar write fails (or so few inodes that a folder or file cannot be created). Nothing
may be committed or left behind; once space is freed the next run succeeds."""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.errors import StorageError
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import run_backup
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import manifest_dict, stored_files, write_manifest
from tests.faults.common import assert_fault_contained, command_manifest, expect_failure
from tests.integration.test_sqlite_and_command import make_sqlite

PAGE = 4096
SIZES: dict[str, dict[str, int]] = {}


@contextmanager
def tiny_tmpfs(path: Path, pages: int, inodes: int | None = None) -> Iterator[Path]:
    """Mount a tmpfs of `pages` pages (and `inodes` inodes) at `path`; skip the test when mounting is
    refused (not root, or no mount rights in this container)."""
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("disk-full faults mount a tmpfs, which needs root")
    options = f"size={pages * PAGE}" + (f",nr_inodes={inodes}" if inodes else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs was refused ({mounted.stderr.strip()}): disk-full faults need mount rights")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def grow(path: Path) -> None:
    """Free space: remount the tmpfs with room to spare."""
    subprocess.run(["mount", "-o", "remount,size=64m,nr_inodes=10000", str(path)], check=True)


def postgres_manifest(
    tmp_path: Path, postgres: PostgresSandbox, database: str, age_keys: KeyPair, root: Path
) -> Manifest:
    data = manifest_dict(postgres, root, [age_keys.recipient], database=database)
    tmp_path.mkdir(exist_ok=True)
    return write_manifest(tmp_path / "m.yaml", data)


def sqlite_manifest(tmp_path: Path, age_keys: KeyPair, root: Path) -> Manifest:
    if not (tmp_path / "app.sqlite").exists():
        make_sqlite(tmp_path / "app.sqlite", rows=2000)
    repositories = {"local": {"type": "local", "path": str(root)}}
    return command_manifest(
        tmp_path, age_keys, {"notes": {"kind": "sqlite", "source": {"path": "app.sqlite"}}}, repositories
    )


def measured(kind: str, build: Any, name: str, partition: str) -> dict[str, int]:
    """Pages each write of a clean backup takes: the object, the companions, the sidecar."""
    if kind not in SIZES:
        manifest = build()
        record = run_backup(manifest, name, partition).record
        root = Path(manifest.repositories["local"].path)
        companions = sum(math.ceil(details["bytes_stored"] / PAGE) for details in record.companions.values())
        SIZES[kind] = {
            "object": math.ceil(record.bytes_stored / PAGE),
            "companions": companions,
            "sidecar": math.ceil((root / record.sidecar_path).stat().st_size / PAGE),
        }
    return SIZES[kind]


def budget(sizes: dict[str, int], target: str) -> tuple[int, int | None]:
    """Pages (and inodes) of a disk on which the write of `target` fails."""
    if target.startswith("inodes-"):
        return 4096, int(target.removeprefix("inodes-"))
    return {
        "object-at-once": (1, None),
        "object-halfway": (max(1, sizes["object"] // 2), None),
        "object-last-page": (max(1, sizes["object"] - 1), None),
        "companion": (sizes["object"], None),
        "sidecar": (sizes["object"] + sizes["companions"], None),
    }[target]


def check(manifest: Manifest, name: str, partition: str, root: Path) -> None:
    error = expect_failure(lambda: run_backup(manifest, name, partition))
    assert isinstance(error, StorageError), error
    assert stored_files(root) == [], "a failed write left files behind"
    grow(root)
    assert_fault_contained(manifest, name, partition)


POSTGRES_TARGETS = ["object-at-once", "object-halfway", "object-last-page", "companion", "sidecar"] + [
    f"inodes-{count}" for count in (2, 3, 4, 5)
]


@pytest.mark.parametrize("target", POSTGRES_TARGETS)
def test_a_full_disk_at_each_write_of_a_postgres_backup_commits_and_leaves_nothing(
    tmp_path: Path, postgres: PostgresSandbox, faults_database: str, age_keys: KeyPair, target: str
) -> None:
    partition = "2026-12-01-05:00"
    sizes = measured(
        "postgres",
        lambda: postgres_manifest(tmp_path / "measure", postgres, faults_database, age_keys, tmp_path / "measure-repo"),
        "app_db",
        partition,
    )
    pages, inodes = budget(sizes, target)
    with tiny_tmpfs(tmp_path / "disk", pages, inodes) as root:
        manifest = postgres_manifest(tmp_path, postgres, faults_database, age_keys, root)
        check(manifest, "app_db", partition, root)


SQLITE_TARGETS = ["object-at-once", "object-last-page", "sidecar", "inodes-2", "inodes-3", "inodes-4"]


@pytest.mark.parametrize("target", SQLITE_TARGETS)
def test_a_full_disk_at_each_write_of_a_sqlite_backup_commits_and_leaves_nothing(
    tmp_path: Path, age_keys: KeyPair, target: str
) -> None:
    partition = "2026-12-01"
    (tmp_path / "measure").mkdir()
    make_sqlite(tmp_path / "app.sqlite", rows=2000)
    make_sqlite(tmp_path / "measure" / "app.sqlite", rows=2000)
    sizes = measured(
        "sqlite", lambda: sqlite_manifest(tmp_path / "measure", age_keys, tmp_path / "measure-repo"), "notes", partition
    )
    pages, inodes = budget(sizes, target)
    with tiny_tmpfs(tmp_path / "disk", pages, inodes) as root:
        manifest = sqlite_manifest(tmp_path, age_keys, root)
        check(manifest, "notes", partition, root)
