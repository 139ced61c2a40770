"""A repository in a local directory (a mounted disk, NFS, a USB drive)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO

from backup_pipelines.errors import StorageError
from backup_pipelines.repository.base import ObjectWriter, Repository

PARTIAL_MARK = ".partial-"


class LocalObjectWriter(ObjectWriter):
    """Writes to `<final>.partial-<random>` and renames it into place on commit (after fsync)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.temporary = final.with_name(f"{final.name}{PARTIAL_MARK}{secrets.token_hex(4)}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self.file: IO[bytes] = open(self.temporary, "xb")  # noqa: SIM115 - closed in commit/abort
        except OSError as error:
            raise StorageError(f"cannot create {self.temporary}: {error.strerror}") from error

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            raise StorageError(f"cannot write {self.temporary}: {error.strerror}") from error

    def commit(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.temporary, self.final)
            _fsync_directory(self.final.parent)
        except OSError as error:
            self.abort()
            raise StorageError(f"cannot commit {self.final}: {error.strerror}") from error

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        self.temporary.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class LocalRepository(Repository):
    """Backups as files under `root`."""

    def __init__(self, name: str, root: Path) -> None:
        super().__init__(name)
        self.root = root

    def _path(self, path: str) -> Path:
        return self.root / path

    def uri(self, path: str) -> str:
        return str(self._path(path))

    def open_writer(self, path: str) -> ObjectWriter:
        return LocalObjectWriter(self._path(path))

    def put_bytes(self, path: str, data: bytes) -> None:
        writer = LocalObjectWriter(self._path(path))
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        writer.commit()

    def open_object(self, path: str) -> IO[bytes]:
        try:
            return open(self._path(path), "rb")
        except OSError as error:
            raise StorageError(f"cannot open {self._path(path)}: {error.strerror}") from error

    def read_bytes(self, path: str) -> bytes:
        with self.open_object(path) as stream:
            return stream.read()

    def list_paths(self, prefix: str, suffix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        found = [
            str(file.relative_to(self.root))
            for file in base.rglob(f"*{suffix}")
            if file.is_file() and PARTIAL_MARK not in file.name
        ]
        return sorted(found)

    def delete(self, path: str) -> None:
        try:
            self._path(path).unlink(missing_ok=True)
        except OSError as error:
            raise StorageError(f"cannot delete {self._path(path)}: {error.strerror}") from error
