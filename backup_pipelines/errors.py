"""Exceptions the core raises. Each carries a message an operator can act on at 3 a.m."""

from __future__ import annotations

from dataclasses import dataclass


class BackupError(Exception):
    """Base class of every error this project raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a manifest: where (a dotted field path, and the line if known) and what."""

    path: str
    message: str
    line: int | None = None

    def render(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ManifestError(BackupError):
    """The manifest cannot be used. Holds every problem found, each naming the file and the field."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(problem.render(file) for problem in problems))

    def report(self) -> str:
        """Return the problems under a one-line header saying how many there are, as shown to operators."""
        return f"manifest {self.file} has {len(self.problems)} problem(s):\n{self}"


class MissingSecretError(BackupError):
    """A secret the manifest refers to (an environment variable or a key file) is not available."""


class CommandFailedError(BackupError):
    """An external tool (pg_dump, zstd, pg_restore, ...) exited non-zero or was killed."""

    def __init__(self, tool: str, returncode: int, stderr: str) -> None:
        self.tool = tool
        self.returncode = returncode
        self.stderr = stderr
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        detail = stderr.strip()[-2000:] or "(no output on stderr)"
        super().__init__(f"{tool} {how}: {detail}")


class StorageError(BackupError):
    """A repository could not store, find or read a backup."""


class IntegrityError(BackupError):
    """A stored backup does not match what was recorded when it was made (checksum, size, archive)."""


class DecryptionError(BackupError):
    """A backup could not be decrypted with the identity given (wrong key, or corrupt data)."""


class ValidationFailedError(BackupError):
    """A restore test finished but the restored data does not match the expectations."""


class SourceUnavailableError(BackupError):
    """The dataset's source (a database server, ...) cannot be reached or refused the connection."""


class RestoreTargetError(BackupError):
    """A restore's target cannot be used: a folder the restoring system user cannot reach, a moment the backup
    cannot recover to."""


class RestoreTargetExistsError(BackupError):
    """A restore was asked to write into a database, file or folder that already exists: restores never
    overwrite."""


class UnrepresentableSourceError(BackupError):
    """The source holds something its dump tool cannot write faithfully, so a restore would lose it (names the
    table and column)."""
