"""The engine's archive check run on a backup's raw bytes as they are written, so a dump that is not whole (a
source tool that stopped early and still exited 0) is never committed.

Every object-pipeline kind has one check that reads a raw archive on stdin to its end: PostgreSQL decodes
every data block (`engines/pg_archive_check.py`), MySQL demands mysqldump's `-- Dump completed` trailer,
SQLite runs `PRAGMA integrity_check`, a command dataset runs its own validator. The same check runs again in
verify on the stored copy.
"""

from __future__ import annotations

import contextlib
from typing import Any

from backup_pipelines.execute import PIPE, Command, Process
from backup_pipelines.stream import read_tail
from backup_pipelines.threads import Worker


class ArchiveCheck:
    """A running archive check: `write` the raw bytes, then `finish()` returns what it printed. A check that
    stops reading early is not an error by itself: its exit status and output judge."""

    def __init__(self, command: Command) -> None:
        self.process = Process(command, stdin=PIPE, stdout=PIPE)
        self.output: list[bytes] = []
        self.reader = Worker(lambda: self.output.append(read_tail(self.process.stdout)), "archive-check")
        self.reader.start()
        self.stopped_reading = False

    def fileno(self) -> int:
        """The check's stdin pipe, so the backup's pump can tee(2) the dump into it without copying."""
        return self.process.stdin.fileno()

    def write(self, data: bytes) -> Any:
        if self.stopped_reading:
            return
        try:
            self.process.stdin.write(data)
        except BrokenPipeError:
            self.stopped_reading = True

    def finish(self) -> str:
        """Close the check's input, wait for it and return its output. Raise CommandFailedError (with its
        stderr) if it failed."""
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        self.reader.result()
        self.process.check()
        return b"".join(self.output).decode(errors="replace")

    def close(self, failed: bool) -> None:
        """Release the process; kill it first when the backup `failed`."""
        if failed:
            self.process.kill()
            self.reader.join()
        self.process.close()
