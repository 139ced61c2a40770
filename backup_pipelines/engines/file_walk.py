"""The walk of a file tree: every entry's metadata, as bytes, recorded beside each restic snapshot.

`walk` visits the dataset's roots as restic does (same exclude rules, symlinks not followed) and returns one
`Entry` per file, directory, symlink, fifo, socket or device: path bytes, type, mode (with setuid, setgid,
sticky), owner, size, mtime in nanoseconds, symlink target bytes, device numbers, extended attributes, and the
inode that ties hard links together. `hash_entries` then adds the sha256 of regular files within a byte
budget (all of them when the tree fits, else a deterministic sample keyed by the path's hash), reusing the
digest of a file whose inode, size, mtime and ctime equal those of the previous walk, so an unchanged tree is
not read again. `encode_walk` / `decode_walk` turn a walk into JSON lines (names escaped reversibly by
`file_names.escape_name`) and back.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from backup_pipelines.file_names import escape_name, excluded, unescape_name

WALK_VERSION = 1
TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
}
SPECIAL_TYPES = ("fifo", "socket", "chardev", "blockdev")


@dataclass(frozen=True)
class Entry:
    """One entry of a walked tree. `path` is the source path (bytes); `inode` is "dev:ino" and `ctime_ns` the
    change time, both only to find hard links and unchanged files (a restore cannot give them back)."""

    path: bytes
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int = 0
    inode: str = ""
    links: int = 1
    target: bytes | None = None
    device: tuple[int, int] | None = None
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    sha256: str | None = None


def _xattrs(path: bytes) -> dict[bytes, bytes]:
    """Return the extended attributes of `path` (not following a symlink); none where unsupported."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    values: dict[bytes, bytes] = {}
    for name in names:
        try:
            values[os.fsencode(name)] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return values


def _entry(logical: bytes, physical: bytes, status: os.stat_result) -> Entry:
    kind = TYPES.get(stat.S_IFMT(status.st_mode), "unknown")
    return Entry(
        path=logical,
        type=kind,
        mode=stat.S_IMODE(status.st_mode),
        uid=status.st_uid,
        gid=status.st_gid,
        size=status.st_size,
        mtime_ns=status.st_mtime_ns,
        ctime_ns=status.st_ctime_ns,
        inode=f"{status.st_dev}:{status.st_ino}",
        links=status.st_nlink,
        target=os.readlink(physical) if kind == "symlink" else None,
        device=(os.major(status.st_rdev), os.minor(status.st_rdev)) if kind in ("chardev", "blockdev") else None,
        xattrs=_xattrs(physical),
    )


def walk(roots: Iterable[bytes], patterns: list[str], base: bytes = b"") -> list[Entry]:
    """Return the entries under each root (the root included) that restic's `--exclude patterns` keep, sorted
    by path. With `base`, the tree is read under `base` (a restore target) but entries keep source paths."""
    entries: list[Entry] = []

    def visit(logical: bytes) -> None:
        physical = base + logical
        try:
            status = os.lstat(physical)
        except FileNotFoundError:  # removed since its folder was listed: restic will not see it either
            return
        entries.append(_entry(logical, physical, status))
        if not stat.S_ISDIR(status.st_mode):
            return
        with os.scandir(physical) as children:
            names = sorted(child.name for child in children)
        for child_name in names:
            child = logical.rstrip(b"/") + b"/" + child_name
            if not excluded(child, patterns):
                visit(child)

    for root in roots:
        visit(root)
    return sorted(entries, key=lambda entry: entry.path)


def file_sha256(path: bytes) -> str:
    """Return the sha256 (hex) of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _path_order(path: bytes) -> str:
    return hashlib.sha1(path, usedforsecurity=False).hexdigest()


def choose_hashed(entries: list[Entry], budget: int | None) -> tuple[set[bytes], bool]:
    """Return the paths of the regular files whose content is hashed and whether that is all of them: every
    file when their bytes (each hard-linked inode counted once) fit `budget` (None: no limit), else files in
    the order of their path's sha1, skipping those that no longer fit, until the budget is spent."""
    files = [entry for entry in entries if entry.type == "file"]
    by_inode: dict[str, list[Entry]] = {}
    for entry in files:
        by_inode.setdefault(entry.inode, []).append(entry)
    total = sum(group[0].size for group in by_inode.values())
    if budget is None or total <= budget:
        return {entry.path for entry in files}, True
    chosen: set[bytes] = set()
    spent = 0
    for group in sorted(by_inode.values(), key=lambda group: _path_order(min(e.path for e in group))):
        if spent + group[0].size <= budget:
            spent += group[0].size
            chosen.update(entry.path for entry in group)
    return chosen, False


def _unchanged_key(entry: Entry) -> tuple[bytes, str, int, int, int]:
    return (entry.path, entry.inode, entry.size, entry.mtime_ns, entry.ctime_ns)


def hash_entries(
    entries: list[Entry], chosen: set[bytes], base: bytes = b"", previous: Iterable[Entry] = ()
) -> list[Entry]:
    """Return `entries` with the sha256 of each regular file in `chosen` (read under `base`), each hard-linked inode
    read once. A file whose path, inode, size, mtime and ctime equal an entry of `previous` (the last backup's
    walk) keeps that entry's digest unread, as restic keeps an unchanged file's blobs."""
    known = {_unchanged_key(entry): entry.sha256 for entry in previous if entry.sha256}
    by_inode: dict[str, str] = {}
    hashed: list[Entry] = []
    for entry in entries:
        if entry.path not in chosen or entry.type != "file" or entry.sha256 is not None:  # (a fifo would block)
            hashed.append(entry)
            continue
        digest = known.get(_unchanged_key(entry))
        if digest is None and entry.links > 1:
            digest = by_inode.get(entry.inode)
        if digest is None:
            digest = file_sha256(base + entry.path)
        if entry.links > 1:
            by_inode[entry.inode] = digest
        hashed.append(replace(entry, sha256=digest))
    return hashed


def hardlink_groups(entries: list[Entry]) -> list[list[bytes]]:
    """Return the groups (two or more sorted paths) of non-directory entries sharing an inode."""
    groups: dict[str, list[bytes]] = {}
    for entry in entries:
        if entry.type != "dir" and entry.links > 1:
            groups.setdefault(entry.inode, []).append(entry.path)
    return sorted(sorted(paths) for paths in groups.values() if len(paths) > 1)


def _entry_json(entry: Entry) -> dict[str, Any]:
    data: dict[str, Any] = {
        "path": escape_name(entry.path),
        "type": entry.type,
        "mode": entry.mode,
        "uid": entry.uid,
        "gid": entry.gid,
        "size": entry.size,
        "mtime_ns": entry.mtime_ns,
        "ctime_ns": entry.ctime_ns,
        "inode": entry.inode,
        "links": entry.links,
    }
    if entry.target is not None:
        data["target"] = escape_name(entry.target)
    if entry.device is not None:
        data["device"] = list(entry.device)
    if entry.xattrs:
        data["xattrs"] = {escape_name(name): escape_name(value) for name, value in sorted(entry.xattrs.items())}
    if entry.sha256 is not None:
        data["sha256"] = entry.sha256
    return data


def _entry_from_json(data: dict[str, Any]) -> Entry:
    device = data.get("device")
    return Entry(
        path=unescape_name(data["path"]),
        type=data["type"],
        mode=int(data["mode"]),
        uid=int(data["uid"]),
        gid=int(data["gid"]),
        size=int(data["size"]),
        mtime_ns=int(data["mtime_ns"]),
        ctime_ns=int(data.get("ctime_ns", 0)),
        inode=str(data.get("inode", "")),
        links=int(data.get("links", 1)),
        target=unescape_name(data["target"]) if "target" in data else None,
        device=(int(device[0]), int(device[1])) if device else None,
        xattrs={unescape_name(k): unescape_name(v) for k, v in (data.get("xattrs") or {}).items()},
        sha256=data.get("sha256"),
    )


@dataclass(frozen=True)
class Walk:
    """A recorded walk: the header (roots, patterns, how files were hashed) and the entries."""

    roots: list[bytes]
    exclude: list[str]
    all_hashed: bool
    hash_budget: int | None
    entries: list[Entry]


def encode_walk(walk_record: Walk) -> bytes:
    """Return the walk as JSON lines: a header, then one line per entry (ASCII only)."""
    header = {
        "walk_version": WALK_VERSION,
        "roots": [escape_name(root) for root in walk_record.roots],
        "exclude": walk_record.exclude,
        "all_hashed": walk_record.all_hashed,
        "hash_budget": walk_record.hash_budget,
        "entries": len(walk_record.entries),
    }
    lines = [json.dumps(header, sort_keys=True)]
    lines += [json.dumps(_entry_json(entry), sort_keys=True) for entry in walk_record.entries]
    return ("\n".join(lines) + "\n").encode("ascii")


def decode_walk(data: bytes) -> Walk:
    """Parse `encode_walk`'s output. Raise ValueError if it is not a whole walk."""
    lines = iter(data.decode("utf-8").splitlines())
    header = json.loads(next(lines))
    entries = [_entry_from_json(json.loads(line)) for line in lines if line]
    if header.get("walk_version") != WALK_VERSION or header.get("entries") != len(entries):
        raise ValueError(f"walk has {len(entries)} entries, its header says {header.get('entries')}")
    return Walk(
        roots=[unescape_name(root) for root in header["roots"]],
        exclude=list(header["exclude"]),
        all_hashed=bool(header["all_hashed"]),
        hash_budget=header.get("hash_budget"),
        entries=entries,
    )


def regular_files(entries: Iterable[Entry]) -> Iterator[Entry]:
    """The regular files among `entries`."""
    return (entry for entry in entries if entry.type == "file")


def under(base: Path | str, path: bytes) -> bytes:
    """Return `path` (a source path) read under the folder `base` (a restore target)."""
    return os.fsencode(base) + path
