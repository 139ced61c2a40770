"""The protocol every dataset kind implements, and the values engines hand back.

An engine knows one kind of source (PostgreSQL, ...): how to dump it to a byte stream together with the
source statistics taken in the same snapshot, how to check an archive without restoring it, and how to
restore it into a scratch target and judge the result. The rest of the code never knows which kind it runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from backup_pipelines.errors import CommandFailedError, RestoreTargetExistsError
from backup_pipelines.execute import PIPE, Command, Process
from backup_pipelines.manifest import Manifest
from backup_pipelines.repository.base import BackupRecord, BackupStore
from backup_pipelines.repository.inventory import PARTIAL_MARK
from backup_pipelines.repository.local import fsync_directory

Feed = Callable[[IO[bytes]], None]


@dataclass
class Dump:
    """A running dump: read `stream` to the end, then call `finish()`, which waits for the tools, raises
    if any failed, and returns the source statistics taken in the dump's snapshot. After `finish()`,
    `companions` holds the small objects to store beside the dump ({label: bytes}, e.g. a PostgreSQL
    database's roles and properties as "globals.sql")."""

    stream: IO[bytes]
    finish: Callable[[], dict[str, Any]]
    companions: dict[str, bytes] = field(default_factory=dict)


def companions_of(feed: Feed) -> dict[str, bytes]:
    """Return the companion objects (decoded, by label) that came with a restore's `feed`: the object
    pipeline's feeds carry them (`objects.DecodingFeed`), a plain function carries none."""
    companions: dict[str, bytes] = getattr(feed, "companions", {})
    return companions


@dataclass(frozen=True)
class CheckOutcome:
    """One comparison made by a restore test: what was expected, what was found, and whether it passed."""

    name: str
    expected: Any
    actual: Any
    passed: bool

    def describe(self) -> str:
        return f"{self.name}: expected {self.expected}, restored copy has {self.actual}"


@dataclass(frozen=True)
class RestoreReport:
    """The result of a restore test. `failures` lists the comparisons that did not hold."""

    target: str
    restore_seconds: float
    validation_seconds: float
    bytes_raw: int
    outcomes: list[CheckOutcome] = field(default_factory=list)
    restored_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[CheckOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.passed]


class Engine(Protocol):
    """What one dataset kind must provide. Implementations are registered in `engines.ENGINES`."""

    kind: str
    format: str

    def extension_for(self, manifest: Manifest, name: str) -> str:
        """Return the file extension of dataset `name`'s raw dump ("dump", "sqlite", ...)."""
        ...

    def tool_versions(self, manifest: Manifest, name: str) -> dict[str, str]:
        """Return the versions of the tools used to back up dataset `name`."""
        ...

    def dump(self, manifest: Manifest, name: str) -> AbstractContextManager[Dump]:
        """Start dumping dataset `name`. Raise SourceUnavailableError if the source cannot be reached."""
        ...

    def archive_check_command(self, manifest: Manifest, name: str) -> Command:
        """Return the command that reads a raw archive on stdin and lists it (e.g. `pg_restore --list`)."""
        ...

    def summarize_archive_listing(self, listing: str) -> dict[str, Any]:
        """Given the archive check's output, return counts to record. Raise IntegrityError if unusable."""
        ...

    def restore_to(self, manifest: Manifest, name: str, target: str, server_name: str | None, feed: Feed) -> str:
        """Restore into a new target called `target` (a database, ...) on `server_name` (default: the
        dataset's restore server); `feed(stdin)` writes the raw archive. Return the target's address.
        Raise if the target already exists: a restore never overwrites."""
        ...

    def restore_test(self, manifest: Manifest, name: str, record: BackupRecord, feed: Feed) -> RestoreReport:
        """Restore a backup into a scratch target: `feed(stdin)` writes the raw archive into the restore
        tool. Compare the restored copy with `record.source_stats` and the dataset's validation queries, then
        remove the scratch target whatever happens. Return the report with every comparison; the caller
        (`operations.restore_test_backup`) fails the restore test when any of them failed."""
        ...


StoreT = TypeVar("StoreT", bound=BackupStore)


class StoringEngine(Protocol[StoreT]):
    """A dataset kind whose own tool or service stores the backup (restic, AWS snapshots) instead of the
    object pipeline (dump -> zstd -> age -> repository). It works on the stores of type `store_type` only."""

    kind: str
    format: str
    store_type: type[StoreT]
    # True when every repository holds the same backup (restic copy, AWS snapshot copy): verify then demands
    # each copy's size equal the primary's. False when each repository takes its own backup (pgBackRest).
    exact_copies: bool

    def tool_versions(self, manifest: Manifest, name: str) -> dict[str, str]:
        """Return the versions of the tools used to back up dataset `name`."""
        ...

    def backup(
        self, manifest: Manifest, name: str, partition_key: str, stores: list[StoreT], started_at: datetime | None
    ) -> tuple[BackupRecord, dict[str, str]]:
        """Back up dataset `name` into `stores`; return the record and each store's location. Leave nothing
        that lists as a backup when it fails."""
        ...

    def verify(self, manifest: Manifest, name: str, store: StoreT, record: BackupRecord) -> dict[str, Any]:
        """Check the copy of `record` held by `store` (its own record); return what was found. Raise
        IntegrityError or StorageError when it is not whole."""
        ...

    def restore_test(self, manifest: Manifest, name: str, store: StoreT, record: BackupRecord) -> RestoreReport:
        """Restore `record` from `store` into a scratch target, compare, remove the target; return the report."""
        ...

    def restore_to(self, manifest: Manifest, name: str, store: StoreT, record: BackupRecord, target: str) -> str:
        """Restore `record` into the new `target` (never overwriting one); return where it is."""
        ...


def run_restore_tool(command: Command, feed: Feed) -> None:
    """Start a restore tool (pg_restore, mysql) reading stdin, let `feed` write the raw archive into it, and
    wait for it. Raise CommandFailedError with the tool's stderr when it fails, even when it died first and
    the feed only saw a broken pipe."""
    process = Process(command, stdin=PIPE)
    try:
        feed(process.stdin)
        process.stdin.close()
        process.check()
    except CommandFailedError:
        process.kill()
        raise
    except BaseException as error:
        process.kill()
        if process.popen.returncode not in (0, None, -9):
            raise CommandFailedError(command.tool, process.popen.returncode, process.stderr_text()) from error
        raise
    finally:
        process.close()


def restore_to_file(target: str, feed: Feed) -> str:
    """Write the raw archive to the new file `target` (never overwriting one); return its absolute path.

    The archive goes to a temporary name in the same folder, is flushed to disk, and only then takes the name
    `target`; a failed or interrupted restore removes it, so `target` never holds part of an archive. Raise
    RestoreTargetExistsError if `target` exists, or what `feed` raised."""
    path = Path(target).resolve()
    refuse_existing(path)
    temporary = path.with_name(f".{path.name}{PARTIAL_MARK}{secrets.token_hex(4)}")
    try:
        with open(temporary, "xb") as output:
            feed(output)
            output.flush()
            os.fsync(output.fileno())
        _link_without_overwriting(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(path.parent)
    return str(path)


@contextlib.contextmanager
def new_folder(target: str) -> Iterator[Path]:
    """Yield a new temporary folder beside the new folder `target` to restore into; on success rename it to
    `target`, on failure remove it with its contents, so `target` is whole or absent. Raise
    RestoreTargetExistsError if `target` exists (before or at the rename)."""
    path = Path(target).resolve()
    refuse_existing(path)
    temporary = path.with_name(f".{path.name}{PARTIAL_MARK}{secrets.token_hex(4)}")
    temporary.mkdir()
    try:
        yield temporary
        refuse_existing(path)
        os.rename(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    fsync_directory(path.parent)


def refuse_existing(path: Path) -> None:
    """Raise RestoreTargetExistsError if `path` exists (a restore never overwrites)."""
    if os.path.lexists(path):
        raise RestoreTargetExistsError(f"{path} already exists: a restore never overwrites, choose a new name")


def _link_without_overwriting(source: Path, target: Path) -> None:
    """Give `source` the name `target` unless `target` appeared meanwhile (a hard link fails then; a plain
    rename, used where links are unsupported, checks just before)."""
    try:
        os.link(source, target)
    except FileExistsError as error:
        raise RestoreTargetExistsError(f"{target} appeared during the restore: not overwritten") from error
    except OSError:
        refuse_existing(target)
        os.rename(source, target)
