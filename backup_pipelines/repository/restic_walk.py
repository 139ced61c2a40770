"""The walk of a file-tree backup, kept in the restic repository as a snapshot of its own.

A file-tree backup is two restic snapshots written side by side (two restic runs at once, so the walk
costs no extra wall time): the walk (every entry's metadata and digests as JSON lines, `restic backup --stdin
--stdin-filename walk.jsonl`, tagged `bp-walk=<backup id>` and `bp-walk-dataset=<dataset>`) and the tree's
snapshot, whose `bp-id` tag makes the backup exist and whose `bp-walked` tag says a walk belongs to it. If the
walk cannot be stored, the tree's snapshot is forgotten and the backup fails; if a process dies between the
two, the restore test finds `bp-walked` without a walk and fails naming it, so a backup is never silently
compared by less. The walk snapshot carries no `bp-dataset`/`bp-id` tag, so it is never listed as a backup
nor restored by `restic restore latest --tag bp-dataset=...`; it is forgotten with its backup
(`ResticRepository.delete_backup`), copied before it (`copy_from`), and one left by an interrupted backup (no
tree snapshot with its id) is forgotten by a prune once it is a day old.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from backup_pipelines.errors import CommandFailedError, StorageError

if TYPE_CHECKING:
    from backup_pipelines.repository.restic import ResticRepository

TAG_WALK = "bp-walk="
TAG_WALK_DATASET = "bp-walk-dataset="
TAG_WALKED = "bp-walked"  # on the tree's snapshot: a walk was stored with it
WALK_FILENAME = "walk.jsonl"
ORPHAN_AGE = timedelta(days=1)


def walk_backup_arguments(host: str, dataset: str, backup_id: str) -> list[str]:
    """Return the `restic backup` arguments that store a walk read from stdin."""
    return [
        "backup",
        "--json",
        "--host",
        host,
        "--stdin",
        "--stdin-filename",
        WALK_FILENAME,
        "--tag",
        f"{TAG_WALK}{backup_id}",
        "--tag",
        f"{TAG_WALK_DATASET}{dataset}",
    ]


def store_walk(repository: ResticRepository, host: str, dataset: str, backup_id: str, data: bytes) -> None:
    """Store the walk `data` of backup `backup_id` as its own snapshot. Raise StorageError if restic fails."""
    try:
        repository.run_unlocked(*walk_backup_arguments(host, dataset, backup_id), timeout=None, input_bytes=data)
    except CommandFailedError as error:
        raise StorageError(
            f"restic could not store the walk in {repository.location}: {error.stderr[-1500:]}"
        ) from error


def walk_backup_id(snapshot: dict[str, Any]) -> str | None:
    """Return the backup id a walk snapshot belongs to, or None for any other snapshot."""
    for tag in snapshot.get("tags") or []:
        if tag.startswith(TAG_WALK):
            return str(tag[len(TAG_WALK) :])
    return None


def walk_ids(repository: ResticRepository, backup_id: str) -> list[str]:
    """Return the ids of the walk snapshots of backup `backup_id` (normally one)."""
    output = repository.run("snapshots", "--json", "--tag", f"{TAG_WALK}{backup_id}", timeout=300)
    return [str(snapshot["id"]) for snapshot in json.loads(output or "[]") or []]


def read_walk(repository: ResticRepository, backup_id: str) -> bytes | None:
    """Return the walk stored for backup `backup_id`, or None when there is none (a backup made before walks
    were recorded)."""
    ids = walk_ids(repository, backup_id)
    if not ids:
        return None
    return repository.run("dump", ids[0], f"/{WALK_FILENAME}", timeout=None).encode("ascii")


def declares_walk(repository: ResticRepository, dataset: str, backup_id: str) -> bool:
    """True when the tree snapshot of backup `backup_id` says a walk was stored with it (tag bp-walked)."""
    from backup_pipelines.repository.restic import TAG_ID, tag_value

    for snapshot in repository.snapshots(dataset):
        tags = list(snapshot.get("tags") or [])
        if tag_value(tags, TAG_ID) == backup_id:
            return TAG_WALKED in tags
    return False


def read_latest_walk(repository: ResticRepository, host: str, dataset: str) -> bytes | None:
    """Return the newest walk stored for `dataset` (its digests spare re-reading unchanged files), or None."""
    try:
        output = repository.run(
            "dump", "--host", host, "--tag", f"{TAG_WALK_DATASET}{dataset}", "latest", f"/{WALK_FILENAME}", timeout=None
        )
        return output.encode("ascii", "replace")
    except StorageError:
        return None


def orphan_walk_ids(repository: ResticRepository, now: datetime | None = None) -> list[str]:
    """Return the walk snapshots older than ORPHAN_AGE whose backup has no tree snapshot (an interrupted
    backup, or a delete interrupted between the two forgets)."""
    from backup_pipelines.repository.restic import TAG_ID, parse_restic_time, tag_value

    snapshots = json.loads(repository.run("snapshots", "--json", timeout=300) or "[]") or []
    backups = {tag_value(list(s.get("tags") or []), TAG_ID) for s in snapshots}
    limit = (now or datetime.now(UTC)) - ORPHAN_AGE
    return [
        str(snapshot["id"])
        for snapshot in snapshots
        if (backup_id := walk_backup_id(snapshot)) is not None
        and backup_id not in backups
        and parse_restic_time(str(snapshot["time"])) < limit
    ]
