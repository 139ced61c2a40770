"""What pgBackRest's archive says: the segments it holds (for gaps and for the RPO, which for a cluster is the
age of its newest archived WAL segment), and the judgement of a `pgbackrest verify` report.

pgBackRest has been reported to exit 0 from `verify` while printing errors, so its report is read line by
line: the stanza's status must be ok, the backup must be listed as valid, and every count of missing,
checksum-invalid, size-invalid or other files must be zero.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from backup_pipelines.errors import IntegrityError

if TYPE_CHECKING:
    from backup_pipelines.repository.base import BackupRecord
    from backup_pipelines.repository.pgbackrest import PgBackRestRepository

SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})-[0-9a-f]{40}")
COUNTS = re.compile(r"missing: (\d+), checksum invalid: (\d+), size invalid: (\d+), other: (\d+)")
SEGMENTS_PER_LOG = 256  # 16 MiB segments (PostgreSQL's default wal_segment_size)


@dataclass(frozen=True)
class Segment:
    """One archived WAL segment."""

    timeline: int
    number: int  # log * SEGMENTS_PER_LOG + segment
    name: str
    archived_at: datetime


def archived_segments(store: PgBackRestRepository, dataset: str) -> list[Segment]:
    """Every WAL segment in the dataset's archive (all archive ids), oldest first."""
    stanza = store.settings(dataset).stanza
    listing = json.loads(store.run(dataset, "repo-ls", "--recurse", "--output=json", f"archive/{stanza}") or "{}")
    segments = []
    for path, entry in listing.items():
        match = SEGMENT.match(path.rsplit("/", 1)[-1])
        if match is None or entry.get("type") != "file":
            continue
        timeline, log, segment = (int(part, 16) for part in match.groups())
        archived_at = datetime.fromtimestamp(int(entry.get("time", 0)), UTC)
        segments.append(Segment(timeline, log * SEGMENTS_PER_LOG + segment, match.group(0)[:24], archived_at))
    return sorted(segments, key=lambda segment: (segment.timeline, segment.number))


def newest_segment(store: PgBackRestRepository, dataset: str) -> Segment | None:
    """The most recently archived WAL segment of the dataset, or None when nothing is archived."""
    segments = archived_segments(store, dataset)
    return max(segments, key=lambda segment: segment.archived_at) if segments else None


def check_wal_continuity(store: PgBackRestRepository, dataset: str, record: BackupRecord) -> dict[str, Any]:
    """Check that the archive holds every segment from the backup's first WAL segment to the newest one of its
    timeline; return the range. Raise IntegrityError naming the first missing segment."""
    start = str(record.source_stats.get("wal_start") or "")
    match = re.match(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$", start)
    if match is None:
        raise IntegrityError(f"backup {record.object_name} of {dataset} records no first WAL segment")
    timeline, log, segment = (int(part, 16) for part in match.groups())
    first = log * SEGMENTS_PER_LOG + segment
    held = sorted({s.number for s in archived_segments(store, dataset) if s.timeline == timeline and s.number >= first})
    if not held or held[0] != first:
        raise IntegrityError(
            f"the archive of {dataset} lacks WAL segment {start}, the first backup {record.object_name} needs"
        )
    for previous, current in itertools.pairwise(held):
        if current != previous + 1:
            missing = _name(timeline, previous + 1)
            raise IntegrityError(
                f"the WAL archive of {dataset} has a gap: segment {missing} is missing, so no moment after it can "
                "be restored"
            )
    return {"wal_first": start, "wal_last": _name(timeline, held[-1]), "wal_segments": len(held)}


def _name(timeline: int, number: int) -> str:
    return f"{timeline:08X}{number // SEGMENTS_PER_LOG:08X}{number % SEGMENTS_PER_LOG:08X}"


def judge_verify_report(report: str, label: str) -> dict[str, Any]:
    """Judge the text of `pgbackrest verify --set=<label> --output=text --verbose`; return its counts. Raise
    IntegrityError quoting the report when anything is not valid, whatever pgBackRest's exit status was."""
    lines = [line.strip() for line in report.splitlines() if line.strip()]
    problems = [line for line in lines if line.startswith(("ERROR", "P00  ERROR"))]
    if "status: ok" not in lines:
        problems.append("the stanza's status is not ok")
    backup_lines = [line for line in lines if line.startswith(f"backup: {label},")]
    if not backup_lines:
        problems.append(f"backup {label} is not in the report")
    problems += [line for line in backup_lines if "status: valid" not in line]
    totals = [0, 0, 0, 0]
    for line in lines:
        counts = COUNTS.search(line)
        if counts:
            totals = [total + int(value) for total, value in zip(totals, counts.groups(), strict=True)]
    if any(totals):
        problems.append(
            f"missing {totals[0]}, checksum invalid {totals[1]}, size invalid {totals[2]}, other {totals[3]} files"
        )
    if problems:
        raise IntegrityError(
            f"pgbackrest verify of {label}: {'; '.join(problems)} (report: {' | '.join(lines)[:1500]})"
        )
    checked = re.search(r"total files checked: (\d+)", " ".join(backup_lines))
    wal = re.search(r"total WAL checked: (\d+)", report)
    return {"files_checked": int(checked.group(1)) if checked else 0, "wal_checked": int(wal.group(1)) if wal else 0}


@dataclass(frozen=True)
class WalStatus:
    """A cluster's WAL archive now: its newest archived segment, and why archiving fails if it does."""

    newest: Segment | None
    failing: str | None


ARCHIVER_SQL = (
    "select last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time "
    "from pg_stat_archiver"
)


def archiver_failure(row: tuple[Any, ...] | None) -> str | None:
    """Given pg_stat_archiver's row, say why archiving fails now (a failure newer than the last success)."""
    if row is None:
        return None
    archived_wal, archived_at, failed_count, failed_wal, failed_at = row
    if failed_at is None or (archived_at is not None and archived_at >= failed_at):
        return None
    since = f", last success {archived_wal} at {archived_at.isoformat()}" if archived_at else ", never succeeded"
    return f"archive_command failed for {failed_wal} at {failed_at.isoformat()} ({failed_count} failures{since})"


def wal_status(manifest: Any, name: str) -> WalStatus:
    """Return the WAL archive status of postgres_cluster dataset `name`: the newest segment in its first
    repository, and the server's own account of archiving failures (pg_stat_archiver; not judged when the
    server cannot be reached, the segment's age still is). Raise StorageError if the archive cannot be read."""
    from backup_pipelines.engines.postgres import _password, connect
    from backup_pipelines.errors import SourceUnavailableError
    from backup_pipelines.repository import open_repository
    from backup_pipelines.repository.pgbackrest import PgBackRestRepository
    from backup_pipelines.repository.pgbackrest_config import cluster_dataset, cluster_server

    dataset = cluster_dataset(manifest, name)
    store = open_repository(manifest, dataset.repositories[0])
    assert isinstance(store, PgBackRestRepository)
    newest = newest_segment(store, name)
    server = cluster_server(manifest, dataset)
    try:
        with connect(server, dataset.source.marker_database, _password(dataset.source.server, server)) as connection:
            failing = archiver_failure(connection.execute(ARCHIVER_SQL).fetchone())
    except SourceUnavailableError:
        failing = None
    return WalStatus(newest, failing)
