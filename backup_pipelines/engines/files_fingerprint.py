"""What a file-tree restore test compares: the fingerprint of a walk, the old three numbers, and the repairs
our restore makes after restic 0.14.

`tree_fingerprint` turns a walk into the shared flat fingerprint (`engines.fingerprint`): one item per entry
("file <path>", "dir <path>", "symlink <path>", "fifo <path>", "chardev <path>": mode, owner, size, mtime to
the nanosecond, link target, device numbers), "sha256 <path>" per hashed file, "xattr <path> <name>" per
extended attribute, and "hardlinks <first path>" per group of paths sharing an inode. Sockets are left out:
restic 0.14 stores them but never restores them (they are reported at backup instead).

restic 0.14 keeps names as bytes but writes a symlink target that is not UTF-8 with U+FFFD replacing the bad
bytes; `repair_restored` puts such links back from the walk (target, owner, mtime, and the parent
folder's mtime), so `restore_backup` and the restore test give back the exact tree.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable

from backup_pipelines.engines.file_walk import SPECIAL_TYPES, Entry, choose_hashed, hardlink_groups, regular_files
from backup_pipelines.file_names import escape_name

SPECIALS_LISTED = 20  # the backup's metadata names at most this many special files


def iso_time(nanoseconds: int) -> str:
    """Return an mtime in nanoseconds as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC)."""
    seconds, nanos = divmod(nanoseconds, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def _describe(entry: Entry) -> str:
    owner = f"owner {entry.uid}:{entry.gid}"
    mtime = f"mtime {iso_time(entry.mtime_ns)}"
    if entry.type == "symlink":
        return f"-> {escape_name(entry.target or b'')} {owner} {mtime}"
    mode = f"mode {entry.mode:04o}"
    if entry.type == "file":
        return f"{mode} {owner} size {entry.size} {mtime}"
    if entry.device is not None:
        return f"device {entry.device[0]}:{entry.device[1]} {mode} {owner} {mtime}"
    return f"{mode} {owner} {mtime}"


def tree_fingerprint(entries: list[Entry]) -> dict[str, str]:
    """Return the flat fingerprint of a walk (see the module docstring); item names are printable."""
    items: dict[str, str] = {}
    for entry in entries:
        if entry.type == "socket":
            continue
        path = escape_name(entry.path)
        items[f"{entry.type} {path}"] = _describe(entry)
        if entry.sha256 is not None:
            items[f"sha256 {path}"] = entry.sha256
        for name, value in entry.xattrs.items():
            items[f"xattr {path} {escape_name(name)}"] = escape_name(value)
    for group in hardlink_groups([entry for entry in entries if entry.type != "socket"]):
        rest = ", ".join(escape_name(path) for path in group[1:])
        items[f"hardlinks {escape_name(group[0])}"] = f"{len(group)} paths: {rest}"
    return items


def fingerprint_method(entries: list[Entry], all_hashed: bool, budget: int | None) -> str:
    """Return the sentence saying what the fingerprint compares and which files' content it hashed."""
    files = list(regular_files(entries))
    hashed = [entry for entry in files if entry.sha256 is not None]
    hashed_bytes = sum(entry.size for entry in hashed)
    coverage = (
        f"the sha256 of every regular file ({len(hashed)} files, {hashed_bytes} bytes)"
        if all_hashed
        else f"the sha256 of a deterministic sample of {len(hashed)} of {len(files)} regular files "
        f"({hashed_bytes} bytes, within the budget of {budget} bytes; chosen by the sha1 of their path)"
    )
    return (
        f"Every entry of the walk recorded with the snapshot ({len(entries)} entries) compared by path bytes, "
        "type, mode (setuid, setgid, sticky), owner, size, mtime to the nanosecond, symlink target, device "
        f"numbers, extended attributes and hard-link groups, plus {coverage}; sockets are listed, not compared "
        "(restic 0.14 does not restore them)."
    )


def special_report(entries: Iterable[Entry]) -> dict[str, object]:
    """Return the counts of fifos, sockets and devices and the first SPECIALS_LISTED of their paths."""
    specials = [entry for entry in entries if entry.type in SPECIAL_TYPES]
    counts = {kind: sum(entry.type == kind for entry in specials) for kind in SPECIAL_TYPES}
    listed = [f"{entry.type} {escape_name(entry.path)}" for entry in specials[:SPECIALS_LISTED]]
    return {"special_files": {kind: count for kind, count in counts.items() if count}, "special_paths": listed}


def legacy_sample(entries: list[Entry], size: int) -> list[bytes]:
    """Return the paths of the old sample digest: `size` regular files in the order of their path's sha1
    (all when `size` is 0 or covers the tree), as backups before walks recorded them."""
    ordered = sorted((entry.path for entry in regular_files(entries)), key=lambda p: hashlib.sha1(p).hexdigest())
    return ordered if size == 0 or size >= len(ordered) else ordered[:size]


def legacy_numbers(entries: list[Entry], sample_size: int) -> dict[str, object]:
    """Return the old comparison: regular file count, their bytes, and one sha256 over (path, mode, size,
    content sha256) of the sampled files (which must be hashed)."""
    files = {entry.path: entry for entry in regular_files(entries)}
    digest = hashlib.sha256()
    for path in sorted(legacy_sample(entries, sample_size)):
        entry = files[path]
        digest.update(path + f"\0{entry.mode:o}\0{entry.size}\0{entry.sha256}\n".encode())
    return {"files": len(files), "bytes": sum(entry.size for entry in files.values()), "sample": digest.hexdigest()}


def paths_to_hash(entries: list[Entry], budget: int | None, sample_size: int) -> tuple[set[bytes], bool]:
    """Return the files to hash at backup (the budget's choice plus the old sample) and whether that is all."""
    chosen, all_hashed = choose_hashed(entries, budget)
    return chosen | set(legacy_sample(entries, sample_size)), all_hashed


def _needs_repair(entry: Entry) -> bool:
    if entry.type != "symlink" or entry.target is None:
        return False
    try:
        entry.target.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def repair_restored(entries: list[Entry], base: bytes) -> list[bytes]:
    """Put back, under the restore target `base`, the symlinks whose target restic 0.14 altered (not UTF-8),
    with owner and mtime, and their folders' mtimes. Return the repaired paths."""
    repaired = [entry for entry in entries if _needs_repair(entry)]
    folders = {entry.path: entry for entry in entries if entry.type == "dir"}
    for entry in repaired:
        link = base + entry.path
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(entry.target or b"", link)
        os.lchown(link, entry.uid, entry.gid)
        os.utime(link, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
    for parent in {os.path.dirname(entry.path) for entry in repaired}:
        if parent in folders:
            os.utime(base + parent, ns=(folders[parent].mtime_ns, folders[parent].mtime_ns))
    return [entry.path for entry in repaired]
