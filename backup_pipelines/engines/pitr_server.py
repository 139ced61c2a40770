"""The pieces of a point-in-time restore test: the marker rows stamped into the live cluster, and a temporary
server started on a restored data directory.

Markers: `backup_pipelines.pitr_marker(at timestamptz)` in the dataset's `marker_database`; the project adds a
row every `marker_every` (the `pitr_markers` sensor), before each base backup, and at each restore test. A
restore to moment T must hold every marker stamped before T and none stamped after it (a second of margin
either side, since a row is stamped a little before its transaction commits).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from backup_pipelines.engines.base import CheckOutcome
from backup_pipelines.engines.postgres import connect
from backup_pipelines.errors import SourceUnavailableError, ValidationFailedError
from backup_pipelines.manifest import PostgresServerConfig
from backup_pipelines.ports import free_port
from backup_pipelines.system_user import as_user, give_to, owned_scratch

MARKER_TABLE = "backup_pipelines.pitr_marker"
MARGIN = timedelta(seconds=1)


def write_marker(server: PostgresServerConfig, database: str, password: str | None) -> datetime:
    """Stamp one marker row into the live cluster (creating the table the first time); return its time."""
    with connect(server, database, password) as connection:
        connection.execute("create schema if not exists backup_pipelines")
        connection.execute(f"create table if not exists {MARKER_TABLE} (at timestamptz primary key)")
        row = connection.execute(f"insert into {MARKER_TABLE} values (clock_timestamp()) returning at").fetchone()
        connection.commit()
    assert row is not None
    moment: datetime = row[0]
    return moment


def markers(connection: psycopg.Connection[Any]) -> list[datetime]:
    """Every marker's time, oldest first ([] when the table does not exist)."""
    try:
        return [row[0] for row in connection.execute(f"select at from {MARKER_TABLE} order by at").fetchall()]
    except psycopg.errors.UndefinedTable:
        connection.rollback()
        return []


def judge_markers(source: list[datetime], restored: list[datetime], target: datetime) -> list[CheckOutcome]:
    """Compare the markers of a copy restored to `target` with the source's: every one stamped before
    target - MARGIN is there, none stamped after target + MARGIN is."""
    before = [moment for moment in source if moment <= target - MARGIN]
    after = [moment for moment in source if moment > target + MARGIN]
    restored_set = set(restored)
    missing = [moment for moment in before if moment not in restored_set]
    present_after = [moment for moment in restored if moment > target + MARGIN]
    newest = before[-1].isoformat() if before else "none"
    return [
        CheckOutcome(
            f"markers stamped before {target.isoformat()}",
            f"{len(before)} rows (newest {newest})",
            f"{len(before) - len(missing)} rows" + (f", missing {missing[0].isoformat()}" if missing else ""),
            bool(before) and not missing,
        ),
        CheckOutcome(
            f"markers stamped after {target.isoformat()}",
            f"none of {len(after)}",
            f"{len(present_after)}" + (f" (first {present_after[0].isoformat()})" if present_after else ""),
            not present_after,
        ),
    ]


@dataclass
class TemporaryServer:
    """A PostgreSQL server on a restored data directory, on 127.0.0.1 and a free port."""

    data: Path
    port: int
    pg_ctl: str  # the path of pg_ctl, of the cluster's major version
    user: str
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                as_user(self.user, self.pg_ctl, "-D", str(self.data), "stop", "-m", "immediate", "-w"),
                capture_output=True,
                timeout=120,
            )


def prepare_data_directory(data: Path, user: str) -> None:
    """Give a restored data directory the files a packaged cluster keeps elsewhere (Debian keeps
    postgresql.conf and pg_hba.conf in /etc): an empty configuration and password logins on loopback."""
    for name, text in (
        ("postgresql.conf", "# written by backup-pipelines for a restore test\n"),
        ("pg_hba.conf", "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n"),
    ):
        path = data / name
        if not path.exists():
            path.write_text(text)
            give_to(path, user)


@contextlib.contextmanager
def temporary_server(
    data: Path, pg_ctl: str, user: str, wait_seconds: float, environment: dict[str, str]
) -> Iterator[TemporaryServer]:
    """Start a server on `data` (recovery runs as configured by the restore; `environment` carries what its
    restore_command needs, such as the repository's cipher passphrase), wait until it accepts connections,
    yield it, and stop it whatever happens. Raise ValidationFailedError with the server's log
    if it does not start (a recovery that cannot reach its target stops the server)."""
    prepare_data_directory(data, user)
    work = owned_scratch(user, "bp-pitr-server-")  # the socket and the log, apart from the data directory
    server = TemporaryServer(data, free_port(), pg_ctl, user, work / "server.log")
    options = (
        f"-c listen_addresses=127.0.0.1 -p {server.port} -k {work} -c archive_mode=off -c hot_standby=on -c ssl=off"
    )
    argv = as_user(
        user, pg_ctl, "-D", str(data), "-l", str(server.log), "-o", options, "-w", "-t", str(int(wait_seconds))
    )
    try:
        subprocess.run(
            [*argv, "start"],
            check=True,
            capture_output=True,
            timeout=wait_seconds + 30,
            env={**os.environ, **environment},
        )
        yield server
    except subprocess.CalledProcessError as error:
        said = (error.stderr or b"").decode(errors="replace").strip()
        raise ValidationFailedError(f"the restored cluster did not start: {said} {server.log_tail()}") from error
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def wait_promoted(connect_restored: Any, server: TemporaryServer, wait_seconds: float) -> None:
    """Wait until the restored server has finished recovery (reached its target and promoted). Raise
    ValidationFailedError with its log if it stops or does not finish in `wait_seconds`."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            with connect_restored() as connection:
                row = connection.execute("select pg_is_in_recovery()").fetchone()
                if row is not None and not row[0]:
                    return
        except SourceUnavailableError as error:
            if time.monotonic() > deadline:
                raise ValidationFailedError(f"the restored cluster stopped: {server.log_tail()}") from error
        if time.monotonic() > deadline:
            raise ValidationFailedError(f"recovery did not finish within {wait_seconds:.0f} s: {server.log_tail()}")
        time.sleep(0.2)
