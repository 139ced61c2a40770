"""A repository in a local directory (a mounted disk, NFS, a USB drive)."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from backup_pipelines.errors import StorageError
from backup_pipelines.repository.base import MissingObjectError, ObjectWriter, Repository
from backup_pipelines.repository.inventory import EMPTY_FOLDER, PARTIAL_MARK, Leftover, StoredObject


class LocalObjectWriter(ObjectWriter):
    """Writes to `<final>.partial-<random>` and renames it into place on commit (after fsync)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.temporary = final.with_name(f"{final.name}{PARTIAL_MARK}{secrets.token_hex(4)}")
        try:
            self.file: IO[bytes] = _create(self.temporary)
        except OSError as error:
            raise StorageError(f"cannot create {self.temporary}: {error.strerror}") from error

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            raise StorageError(f"cannot write {self.temporary}: {error.strerror}") from error

    def commit(self) -> None:
        renamed = False
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.temporary, self.final)
            renamed = True
            fsync_directory(self.final.parent)
        except OSError as error:
            self.abort()
            if renamed:  # not known to be durable: a failed commit leaves nothing under the final name
                self.final.unlink(missing_ok=True)
            raise StorageError(f"cannot commit {self.final}: {error.strerror}") from error

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        self.temporary.unlink(missing_ok=True)


def _create(path: Path) -> IO[bytes]:
    """Create the new file `path` and its folders. A prune may remove an empty folder between the two steps
    (an old empty partition folder is a leftover), so the pair is tried twice."""
    for attempt in (1, 2):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return open(path, "xb")
        except FileNotFoundError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new entry in `directory` durable (fsync of the folder itself)."""
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
        except FileNotFoundError as error:
            raise MissingObjectError(f"cannot open {self._path(path)}: {error.strerror}") from error
        except OSError as error:
            raise StorageError(f"cannot open {self._path(path)}: {error.strerror}") from error

    def read_bytes(self, path: str) -> bytes:
        with self.open_object(path) as stream:
            return stream.read()

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()

    def list_objects(self, prefix: str) -> list[StoredObject]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []  # nothing stored there yet
        found = []
        for folder, _, files in os.walk(base, onerror=_raise_listing_error):
            for name in files:
                try:
                    status = os.stat(os.path.join(folder, name), follow_symlinks=False)
                except FileNotFoundError:
                    continue  # renamed or deleted while listing
                relative = os.path.relpath(os.path.join(folder, name), self.root).replace(os.sep, "/")
                found.append(StoredObject(relative, status.st_size, _time(status.st_mtime)))
        return sorted(found, key=lambda item: item.path)

    def delete(self, path: str) -> None:
        try:
            self._path(path).unlink(missing_ok=True)
        except OSError as error:
            raise StorageError(f"cannot delete {self._path(path)}: {error.strerror}") from error

    def leftovers(self, dataset: str, older_than: datetime) -> list[Leftover]:
        """The leftovers of `Repository.leftovers`, plus empty partition folders (and an empty dataset folder)
        not changed since `older_than`."""
        found = super().leftovers(dataset, older_than)
        top = self._path(dataset)
        folders = [entry for entry in top.iterdir() if entry.is_dir()] if top.is_dir() else []
        candidates = [*folders, top] if top.is_dir() else []
        for folder in candidates:
            modified = _time(folder.stat().st_mtime)
            if modified < older_than and not any(folder.iterdir()):
                path = str(folder.relative_to(self.root)).replace(os.sep, "/")
                found.append(Leftover(EMPTY_FOLDER, path, str(folder), 0, modified))
        return found

    def remove_leftover(self, leftover: Leftover) -> bool:
        """Remove a leftover; an empty folder only while it is still empty."""
        if leftover.kind != EMPTY_FOLDER:
            return super().remove_leftover(leftover)
        try:
            self._path(leftover.path).rmdir()
        except FileNotFoundError:
            return False
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False  # something was written into it since
            raise StorageError(f"cannot remove {self._path(leftover.path)}: {error.strerror}") from error
        return True


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _raise_listing_error(error: OSError) -> None:
    raise StorageError(f"cannot list {error.filename}: {error.strerror}")
