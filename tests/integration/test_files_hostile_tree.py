"""A hostile file tree through the real restic: odd names, every link kind, special modes, owners, old and
future mtimes, xattrs, a fifo, a socket and a device. Each restore is compared with the source by an
independent method (GNU find's -printf, sha256sum, os.getxattr), and tampered restores must fail by name."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backup_pipelines.engines.file_walk import decode_walk
from backup_pipelines.engines.files import FilesEngine
from backup_pipelines.engines.walk_cache import read_cached_walk, write_cached_walk
from backup_pipelines.errors import ValidationFailedError
from backup_pipelines.manifest import FilesDataset, Manifest
from backup_pipelines.operations import restore_backup, restore_test_backup, run_backup
from backup_pipelines.repository import ResticRepository, open_repository
from backup_pipelines.repository.restic_walk import orphan_walk_ids, read_walk, store_walk, walk_ids
from tests.conftest import write_manifest

AS_ROOT = os.geteuid() == 0
PARTITION = "2026-11-20"
OLD_NS = 1  # 1970-01-01T00:00:00.000000001Z
FUTURE_NS = 4102444800_123456789  # 2100-01-01T00:00:00.123456789Z
EXCLUDE = ["*.tmp", "!keep\\*.tmp", "cache"]


def xattrs_supported(folder: Path) -> bool:
    probe = folder / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def make_hostile_tree(root: Path) -> None:
    """Build the tree; directories' mtimes are set last, deepest first, since adding entries changes them."""
    base = os.fsencode(root)
    os.makedirs(base + b"/dir with space/sub", exist_ok=True)
    os.makedirs(base + b"/-rf/cache", exist_ok=True)  # a folder named like an option; its cache is excluded
    files = {
        b"latin1-\xe9\xff.bin": b"not utf-8 \x00\xff" * 10,
        b"new\nline.txt": b"a newline in the name\n",
        b"-dash": b"leading dash",
        b"glob*?[.txt": b"glob characters",
        b"back\\slash \\x41.txt": b"a backslash that looks like an escape",
        "unicode ✓ ü 日本.txt".encode(): "ünïcödé ✓\n".encode(),
        b"dir with space/sub/deep.conf": b"deep" * 100,
        b"skip[1].tmp": b"excluded by *.tmp",
        b"keep*.tmp": b"included again by !keep\\*.tmp",
        b"-rf/cache/junk": b"excluded with its folder",
        b"setuid": b"#!/bin/sh\n",
        b"secret-000": b"mode 000",
        b"owned": b"owned by 1234:2345",
        b"old-1970": b"old",
        b"future-2100": b"future",
    }
    for name, content in files.items():
        with open(base + b"/" + name, "wb") as stream:
            stream.write(content)
    with open(base + b"/sparse", "wb") as stream:
        stream.truncate(1_000_000)
    os.chmod(base + b"/setuid", 0o6755)
    os.chmod(base + b"/secret-000", 0o000)
    os.chmod(base + b"/dir with space", 0o1777)
    os.link(base + b"/-dash", base + b"/hard link")
    os.link(base + b"/-dash", base + b"/dir with space/hard2")
    os.symlink(b"-dash", base + b"/link to file")
    os.symlink(b"dir with space", base + b"/link to dir")
    os.symlink(b"nowhere", base + b"/dangling")
    os.symlink(b"/etc/hostname", base + b"/absolute")
    os.symlink(b"../glob*?[.txt", base + b"/dir with space/relative")
    os.symlink(b"target-\xe9", base + b"/link-latin1-target")
    os.mkfifo(base + b"/fifo")
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.fsdecode(base + b"/socket"))
    server.close()
    if AS_ROOT:
        os.mknod(base + b"/null-device", 0o600 | 0o020000, os.makedev(1, 3))
        os.chown(base + b"/owned", 1234, 2345)
        os.lchown(base + b"/absolute", 1234, 2345)
    if xattrs_supported(root):
        os.setxattr(base + b"/-dash", "user.binary", b"\x00\xff value")
        os.setxattr(base + b"/dir with space", "user.folder", b"folder attribute")
    os.utime(base + b"/old-1970", ns=(OLD_NS, OLD_NS))
    os.utime(base + b"/future-2100", ns=(FUTURE_NS, FUTURE_NS))
    os.utime(base + b"/absolute", ns=(OLD_NS, 5_000_000_007), follow_symlinks=False)
    for folder, mtime in [(b"/dir with space/sub", 7_000_000_001), (b"/dir with space", FUTURE_NS), (b"", 9)]:
        os.utime(base + folder, ns=(mtime, mtime))


def hostile_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **verification: Any) -> Manifest:
    monkeypatch.setenv("TEST_RESTIC_PASSWORD", "restic-test-password")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the walk cache stays in the test's folder
    make_hostile_tree(tmp_path / "tree")
    dataset = {
        "kind": "files",
        "schedule": "daily",
        "rpo": "26h",
        "rto": "1h",
        "retention": {"keep_last": 1},
        "repositories": ["restic"],
        "encryption": {"enabled": False},
        "source": {"paths": ["tree"], "exclude": EXCLUDE, "hash_budget_bytes": 10_000_000},
        "verification": verification,
    }
    data = {
        "partition_start": "2026-11-01",
        "repositories": {"restic": {"type": "restic", "repository": "repo", "password_env": "TEST_RESTIC_PASSWORD"}},
        "datasets": {"tree": dataset},
    }
    return write_manifest(tmp_path / "m.yaml", data)


def find_listing(root: Path) -> dict[bytes, tuple[bytes, ...]]:
    """Return {relative path: (type, mode, uid, gid, size, mtime, link target, link count)} from GNU find,
    NUL-separated so any name survives; directories' sizes and link counts are left out (they depend on the
    filesystem and on excluded subfolders)."""
    output = subprocess.run(
        ["find", ".", "-printf", r"%P\0%y\0%m\0%U\0%G\0%s\0%T@\0%l\0%n\0"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    fields = output.split(b"\0")[:-1]
    listing: dict[bytes, tuple[bytes, ...]] = {}
    for index in range(0, len(fields), 9):
        path, kind, mode, uid, gid, size, mtime, target, links = fields[index : index + 9]
        folder = kind == b"d"
        listing[path] = (kind, mode, uid, gid, b"-" if folder else size, mtime, target, b"-" if folder else links)
    return listing


def sha256sums(root: Path) -> dict[bytes, bytes]:
    """Return {relative path: sha256} of every regular file, by find and sha256sum -z (names unescaped)."""
    names = subprocess.run(["find", ".", "-type", "f", "-printf", r"%P\0"], cwd=root, capture_output=True, check=True)
    output = subprocess.run(
        ["xargs", "-0", "sha256sum", "-z", "--"], input=names.stdout, cwd=root, capture_output=True, check=True
    )
    records = [record for record in output.stdout.split(b"\0") if record]
    return {record[66:]: record[:64] for record in records}


def inode_groups(root: Path) -> set[frozenset[bytes]]:
    output = subprocess.run(["find", ".", "-printf", r"%i\0%P\0"], cwd=root, capture_output=True, check=True).stdout
    fields = output.split(b"\0")[:-1]
    groups: dict[bytes, set[bytes]] = {}
    for index in range(0, len(fields), 2):
        groups.setdefault(fields[index], set()).add(fields[index + 1])
    return {frozenset(paths) for paths in groups.values() if len(paths) > 1}


def source_without_excluded(root: Path) -> dict[bytes, tuple[bytes, ...]]:
    listing = find_listing(root)
    gone = {b"skip[1].tmp", b"-rf/cache", b"-rf/cache/junk"}
    return {path: values for path, values in listing.items() if path not in gone}


def differences(source: dict[bytes, Any], restored: dict[bytes, Any]) -> dict[bytes, tuple[Any, Any]]:
    return {
        path: (source.get(path), restored.get(path))
        for path in set(source) | set(restored)
        if source.get(path) != restored.get(path)
    }


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Manifest, Any]]:
    manifest = hostile_manifest(tmp_path, monkeypatch)
    yield manifest, run_backup(manifest, "tree", PARTITION).record
    for path in tmp_path.rglob("*"):  # mode 000 files and sticky folders must not stop the cleanup
        if not path.is_symlink():
            path.chmod(0o700)


def test_a_hostile_tree_is_backed_up_restore_tested_and_given_back_exactly(
    tmp_path: Path, hostile: tuple[Manifest, Any]
) -> None:
    manifest, record = hostile
    stats = record.source_stats
    assert stats["special_files"] == {"fifo": 1, "socket": 1, **({"chardev": 1} if AS_ROOT else {})}
    source = os.fsdecode(manifest.resolve_path("tree"))
    assert {f"socket {source}/socket", f"fifo {source}/fifo"} <= set(stats["special_paths"])
    assert "every regular file" in stats["fingerprint_method"]
    report = restore_test_backup(manifest, "tree", record)
    assert not report.failures and report.outcomes[-1].name == "content fingerprint"

    source_root = tmp_path / "tree"
    expected = source_without_excluded(source_root)
    expected.pop(b"socket")  # restic 0.14 stores sockets but never restores them (reported at backup)
    restored = Path(restore_backup(manifest, "tree", record, str(tmp_path / "out"))) / str(source_root).lstrip("/")
    assert differences(expected, find_listing(restored)) == {}
    assert sha256sums(restored) == {p: d for p, d in sha256sums(source_root).items() if p in expected}
    assert inode_groups(restored) == {frozenset({b"-dash", b"hard link", b"dir with space/hard2"})}
    if xattrs_supported(tmp_path):
        assert os.getxattr(restored / "-dash", "user.binary") == b"\x00\xff value"
        assert os.getxattr(restored / "dir with space", "user.folder") == b"folder attribute"


def test_plain_restic_restore_differs_only_where_restic_0_14_cannot_do_better(
    tmp_path: Path, hostile: tuple[Manifest, Any]
) -> None:
    """The documented `restic restore <snapshot> --target <folder>` alone: the socket is missing and the
    symlink whose target is not UTF-8 comes back with U+FFFD (restore_backup repairs it from the walk)."""
    manifest, record = hostile
    repository = open_repository(manifest, "restic")
    assert isinstance(repository, ResticRepository)
    environment = {**os.environ, **repository.environment}
    subprocess.run(
        ["restic", "restore", record.object_name, "--target", str(tmp_path / "plain")],
        env=environment,
        check=True,
        capture_output=True,
    )
    source_root = tmp_path / "tree"
    restored = tmp_path / "plain" / str(source_root).lstrip("/")
    found = differences(source_without_excluded(source_root), find_listing(restored))
    assert set(found) == {b"socket", b"link-latin1-target"}
    assert found[b"link-latin1-target"][1][6] == "target-\ufffd".encode()
    assert sha256sums(restored) == {p: d for p, d in sha256sums(source_root).items() if p in find_listing(restored)}


def tamper_and_compare(manifest: Manifest, record: Any, folder: Path, tamper: Any) -> list[str]:
    """Restore `record` into `folder`, apply `tamper` to the restored tree, and return the names of the
    failing checks the engine's own comparison gives for it."""
    restore_backup(manifest, "tree", record, str(folder))
    repository = open_repository(manifest, "restic")
    assert isinstance(repository, ResticRepository)
    data = read_walk(repository, record.backup_id)
    assert data is not None
    recorded = decode_walk(data)
    tree = folder / str(manifest.resolve_path("tree")).lstrip("/")
    tamper(tree)
    dataset = manifest.dataset("tree")
    assert isinstance(dataset, FilesDataset)
    outcomes, _ = FilesEngine().compare_restored(
        dataset, record.source_stats, recorded, recorded.roots, os.fsencode(folder)
    )
    return [outcome.name for outcome in outcomes if not outcome.passed]


def test_a_changed_symlink_target_fails_the_comparison_by_name(tmp_path: Path, hostile: tuple[Manifest, Any]) -> None:
    manifest, record = hostile
    source = os.fsencode(manifest.resolve_path("tree"))

    def retarget(tree: Path) -> None:
        os.unlink(tree / "link to file")
        os.symlink("glob*?[.txt", tree / "link to file")

    failed = tamper_and_compare(manifest, record, tmp_path / "out", retarget)
    assert f"symlink {os.fsdecode(source)}/link to file" in failed


def test_a_changed_mode_fails_the_comparison_by_name(tmp_path: Path, hostile: tuple[Manifest, Any]) -> None:
    manifest, record = hostile
    source = os.fsdecode(manifest.resolve_path("tree"))
    failed = tamper_and_compare(manifest, record, tmp_path / "out", lambda tree: (tree / "setuid").chmod(0o755))
    assert failed == ["sample digest", f"file {source}/setuid"]  # the old digest covers modes too


def test_changed_content_fails_the_comparison_by_name(tmp_path: Path, hostile: tuple[Manifest, Any]) -> None:
    manifest, record = hostile
    source = os.fsdecode(manifest.resolve_path("tree"))

    def rewrite(tree: Path) -> None:
        path = os.fsencode(tree) + b"/latin1-\xe9\xff.bin"
        status = os.stat(path)
        with open(path, "r+b") as stream:
            stream.write(b"N")  # same size, same mtime: only the content differs
        os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))

    failed = tamper_and_compare(manifest, record, tmp_path / "out", rewrite)
    assert f"sha256 {source}/latin1-\\xe9\\xff.bin" in failed and "sample digest" in failed


def test_without_fingerprint_only_the_three_numbers_are_compared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = hostile_manifest(tmp_path, monkeypatch, fingerprint=False)
    record = run_backup(manifest, "tree", PARTITION).record
    assert "fingerprint_method" not in record.source_stats
    report = restore_test_backup(manifest, "tree", record)
    assert [outcome.name for outcome in report.outcomes] == ["file count", "total bytes", "sample digest"]
    shutil.rmtree(tmp_path / "tree", ignore_errors=True)


def test_walks_are_not_backups_and_orphans_are_found(tmp_path: Path, hostile: tuple[Manifest, Any]) -> None:
    from datetime import UTC, datetime, timedelta

    manifest, record = hostile
    repository = open_repository(manifest, "restic")
    assert isinstance(repository, ResticRepository)
    assert [r.backup_id for r in repository.list_backups()] == [record.backup_id]
    store_walk(repository, "backup-pipelines", "tree", "20261120T000000Z-dead00", b"interrupted\n")
    later = datetime.now(UTC) + timedelta(days=2)
    assert len(orphan_walk_ids(repository, now=later)) == 1 and orphan_walk_ids(repository) == []
    assert [r.backup_id for r in repository.list_backups()] == [record.backup_id]


def test_a_lost_walk_fails_the_restore_test_by_name_but_an_old_backup_without_one_passes(
    tmp_path: Path, hostile: tuple[Manifest, Any]
) -> None:
    manifest, record = hostile
    repository = open_repository(manifest, "restic")
    assert isinstance(repository, ResticRepository)
    repository.run("forget", *walk_ids(repository, record.backup_id))
    with pytest.raises(ValidationFailedError, match="walk recorded with the snapshot: expected present"):
        restore_test_backup(manifest, "tree", record)
    # a backup made before walks were recorded has no bp-walked tag: it is compared by the three numbers
    repository.run("tag", "--remove", "bp-walked", record.object_name)
    report = restore_test_backup(manifest, "tree", record)
    assert [outcome.name for outcome in report.outcomes] == ["file count", "total bytes", "sample digest"]
    assert not report.failures


def test_an_unchanged_file_is_not_read_again_its_digest_comes_from_the_last_walk(
    tmp_path: Path, hostile: tuple[Manifest, Any]
) -> None:
    """The cached walk is trusted for a file whose path, inode, size, mtime and ctime are unchanged: a digest
    planted there shows up in the next walk, so the file was not read. A touched file is read again."""
    manifest, _ = hostile
    repository = open_repository(manifest, "restic")
    assert isinstance(repository, ResticRepository)
    source = os.fsencode(manifest.resolve_path("tree"))
    cached = read_cached_walk("tree", repository.location)
    assert cached is not None
    planted = cached.replace(sha256_of(source + b"/future-2100").encode(), b"f" * 64)
    planted = planted.replace(sha256_of(source + b"/old-1970").encode(), b"e" * 64)
    write_cached_walk("tree", repository.location, planted)
    os.utime(source + b"/old-1970", ns=(OLD_NS, OLD_NS))  # same mtime, but the ctime moves: read again
    second = run_backup(manifest, "tree", "2026-11-21").record
    data = read_walk(repository, second.backup_id)
    assert data is not None
    digests = {entry.path: entry.sha256 for entry in decode_walk(data).entries}
    assert digests[source + b"/future-2100"] == "f" * 64
    assert digests[source + b"/old-1970"] == sha256_of(source + b"/old-1970")


def sha256_of(path: bytes) -> str:
    return hashlib.sha256(Path(os.fsdecode(path)).read_bytes()).hexdigest()
