"""Command datasets: whatever a command writes to stdout (`vault operator raft snapshot save /dev/stdout`, a DNS
zone export, a dashboards export), streamed, encrypted and stored like a dump.

The command's exit status decides: non-zero (or killed by the timeout) fails the backup with its stderr, and
nothing is committed. An optional validation command reads a restored copy on stdin: exit 0 means usable.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from backup_pipelines.engines.base import CheckOutcome, Dump, Feed, RestoreReport, restore_to_file
from backup_pipelines.errors import CommandFailedError
from backup_pipelines.execute import PIPE, Command, Process, tool_version
from backup_pipelines.manifest import CommandDataset, Manifest
from backup_pipelines.repository.base import BackupRecord
from backup_pipelines.stream import read_tail


class _Counter:
    """Counts what passes through to `target`."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return self.target.write(data)


class CommandEngine:
    """The command engine (see the module docstring)."""

    kind = "command"
    format = "command-output"

    def _dataset(self, manifest: Manifest, name: str) -> CommandDataset:
        dataset = manifest.dataset(name)
        assert isinstance(dataset, CommandDataset), f"{name} is a {dataset.kind} dataset, not command"
        return dataset

    def _command(self, manifest: Manifest, argv: list[str], dataset: CommandDataset) -> Command:
        folder = dataset.source.working_directory
        return Command(tuple(argv), cwd=str(manifest.resolve_path(folder)) if folder else str(manifest.base_dir))

    def extension_for(self, manifest: Manifest, name: str) -> str:
        return self._dataset(manifest, name).source.extension

    def tool_versions(self, manifest: Manifest, name: str) -> dict[str, str]:
        return {"command": self._dataset(manifest, name).source.command[0], "zstd": tool_version("zstd")}

    @contextmanager
    def dump(self, manifest: Manifest, name: str) -> Iterator[Dump]:
        dataset = self._dataset(manifest, name)
        process = Process(self._command(manifest, dataset.source.command, dataset), stdout=PIPE)
        timer = None
        if dataset.source.timeout_seconds:
            timer = threading.Timer(dataset.source.timeout_seconds, process.popen.kill)
            timer.start()

        def finish() -> dict[str, Any]:
            process.check()
            return {"command": " ".join(dataset.source.command)}

        try:
            yield Dump(stream=process.stdout, finish=finish)
        except BaseException:
            process.kill()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            process.close()

    def archive_check_command(self, manifest: Manifest, name: str) -> Command:
        dataset = self._dataset(manifest, name)
        return self._command(manifest, dataset.source.validate_command or ["wc", "-c"], dataset)

    def summarize_archive_listing(self, listing: str) -> dict[str, Any]:
        return {"validated": True, "output": listing.strip()[-500:]}

    def restore_to(self, manifest: Manifest, name: str, target: str, server_name: str | None, feed: Feed) -> str:
        return restore_to_file(target, feed)

    def restore_test(self, manifest: Manifest, name: str, record: BackupRecord, feed: Feed) -> RestoreReport:
        dataset = self._dataset(manifest, name)
        with tempfile.TemporaryDirectory(prefix="bp-command-restore-") as folder:
            path = Path(folder) / f"restored.{dataset.source.extension}"
            started = time.monotonic()
            with open(path, "wb") as output:
                counter = _Counter(output)
                feed(counter)  # type: ignore[arg-type]
            restore_seconds = time.monotonic() - started
            outcomes = [
                CheckOutcome("restored bytes", record.bytes_raw, counter.count, counter.count == record.bytes_raw)
            ]
            started = time.monotonic()
            if dataset.source.validate_command:
                outcomes.append(self._validate(manifest, dataset, path))
            validation_seconds = time.monotonic() - started
        report = RestoreReport("temporary file (deleted)", restore_seconds, validation_seconds, counter.count, outcomes)
        return report

    def _validate(self, manifest: Manifest, dataset: CommandDataset, path: Path) -> CheckOutcome:
        command = self._command(manifest, dataset.source.validate_command or [], dataset)
        with open(path, "rb") as restored:
            process = Process(command, stdin=restored, stdout=PIPE)
            try:
                read_tail(process.stdout, 0)  # drained, not kept
                process.check(timeout=dataset.source.timeout_seconds)
                return CheckOutcome("validate command", "exit 0", "exit 0", True)
            except CommandFailedError as error:
                return CheckOutcome("validate command", "exit 0", str(error), False)
            finally:
                process.close()
