"""The one subprocess executor: every external tool (pg_dump, zstd, pg_restore, ...) runs through here.

Command lines are built elsewhere by pure functions and arrive as `Command` values. Secrets travel in the
child's environment, never in argv, so they never show up in `ps`, logs or error messages. stderr goes to a
temporary file (no pipe to deadlock on) and is quoted in the `CommandFailedError` of a failed tool.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from backup_pipelines import zerocopy
from backup_pipelines.errors import CommandFailedError

PIPE = subprocess.PIPE
# Python-side buffer of a tool's pipes: readers asking for 8 KiB at a time (pyrage) get them from memory,
# not one system call each.
BUFFER = 1 << 20


@dataclass(frozen=True)
class Command:
    """A command line plus extra environment variables (secrets go there, not in argv)."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None

    @property
    def tool(self) -> str:
        """The program's base name, used in messages."""
        return os.path.basename(self.argv[0])

    def display(self) -> str:
        """The command line as a shell would show it; never contains secrets."""
        return shlex.join(self.argv)


class Process:
    """A started external tool. Call `check()` once its output is consumed; `kill()` on abort."""

    def __init__(self, command: Command, stdin: Any = None, stdout: Any = None) -> None:
        self.command = command
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        environment = {**os.environ, **command.env}
        try:
            self.popen = subprocess.Popen(
                command.argv,
                stdin=stdin,
                stdout=stdout,
                stderr=self._stderr,
                env=environment,
                bufsize=BUFFER,
                cwd=command.cwd,
            )
        except FileNotFoundError as error:
            self._stderr.close()
            raise CommandFailedError(command.tool, 127, f"{command.argv[0]} is not installed") from error
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                zerocopy.enlarge(pipe.fileno())  # fewer context switches between the tools

    @property
    def stdin(self) -> IO[bytes]:
        assert self.popen.stdin is not None, f"{self.command.tool} was started without a stdin pipe"
        return self.popen.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.popen.stdout is not None, f"{self.command.tool} was started without a stdout pipe"
        return self.popen.stdout

    def stderr_text(self) -> str:
        """Return what the tool wrote on stderr so far (the last 8 KiB)."""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - 8192))
        return self._stderr.read().decode(errors="replace")

    def check(self, timeout: float | None = None) -> None:
        """Wait for the tool to exit. Raise CommandFailedError with its stderr if it did not exit 0."""
        returncode = self.popen.wait(timeout=timeout)
        if returncode != 0:
            raise CommandFailedError(self.command.tool, returncode, self.stderr_text())

    def kill(self) -> None:
        """Kill the tool if it still runs, close our ends of its pipes, and reap it."""
        if self.popen.poll() is None:
            self.popen.kill()
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                # ValueError: a pump thread closed the same pipe at the same moment (its own `finally`)
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()
        self.popen.wait()

    def close(self) -> None:
        self._stderr.close()


def run(command: Command, input_bytes: bytes | None = None, timeout: float | None = None) -> str:
    """Run `command` to completion and return its stdout as text.

    Raise CommandFailedError (with stderr) if it exits non-zero, or if it is missing.
    """
    environment = {**os.environ, **command.env}
    try:
        completed = subprocess.run(
            command.argv,
            input=input_bytes,
            capture_output=True,
            env=environment,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as error:
        raise CommandFailedError(command.tool, 127, f"{command.argv[0]} is not installed") from error
    if completed.returncode != 0:
        raise CommandFailedError(command.tool, completed.returncode, completed.stderr.decode(errors="replace"))
    return completed.stdout.decode(errors="replace")


@functools.cache
def tool_version(executable: str) -> str:
    """Return the first line `executable --version` prints, or "unavailable" if it cannot run."""
    try:
        return run(Command((executable, "--version")), timeout=30).strip().splitlines()[0]
    except (CommandFailedError, IndexError, subprocess.TimeoutExpired):
        return "unavailable"
