"""A backup's stored objects as restores read them: the companion objects stored beside the main one, and the
feed that streams the main object (checked, decrypted, decompressed) into a restore tool."""

from __future__ import annotations

import io
from typing import IO, Any

from backup_pipelines.repository import BackupRecord, Repository
from backup_pipelines.stream import decode, encode


def store_companions(
    repository: Repository, directory: str, backup_id: str, companions: dict[str, bytes], recipients: list[str]
) -> dict[str, dict[str, Any]]:
    """Store each companion object (`{label: raw bytes}`) of backup `backup_id` in `directory`, compressed and
    encrypted like the backup itself; return what the record keeps of each. Raise like `encode` or the
    repository's writer, after removing the companions already stored (nothing is visible before the sidecar
    is written anyway, but they would take space)."""
    stored: dict[str, dict[str, Any]] = {}
    for label, data in companions.items():
        object_name = f"{backup_id}.{label}.zst" + (".age" if recipients else "")
        writer = repository.open_writer(f"{directory}/{object_name}")
        try:
            result = encode(io.BytesIO(data), writer, recipients)
            writer.commit()
        except BaseException:
            writer.abort()
            done = [f"{directory}/{details['object_name']}" for details in stored.values()]
            repository.discard([f"{directory}/{object_name}", *done])  # a commit may fail after storing
            raise
        stored[label] = {
            "object_name": object_name,
            "sha256": result.sha256,
            "bytes_raw": result.bytes_raw,
            "bytes_stored": result.bytes_stored,
        }
    return stored


def read_companions(repository: Repository, record: BackupRecord, identities: Any) -> dict[str, bytes]:
    """Return `record`'s companion objects read back from `repository`, checked against their recorded
    sha256 and decoded. Raise IntegrityError, DecryptionError or StorageError like `decode`."""
    companions = {}
    for label, details in record.companions.items():
        buffer = io.BytesIO()
        with repository.open_object(record.companion_path(label)) as stored:
            decode(stored, buffer, identities, details["sha256"])
        companions[label] = buffer.getvalue()
    return companions


class DecodingFeed:
    """A restore's feed: called with a restore tool's stdin, it writes `record`'s raw archive there (read,
    checked, decrypted, decompressed) and appends the raw byte count to `decoded` when given. `companions`
    holds the backup's companion objects, read and checked when the feed is made; `keep_privileges` False
    asks a database restore to drop owners and privileges."""

    def __init__(
        self, repository: Repository, record: BackupRecord, identities: Any, decoded: list[int] | None = None
    ) -> None:
        self.repository, self.record, self.identities, self.decoded = repository, record, identities, decoded
        self.companions = read_companions(repository, record, identities)
        self.keep_privileges = True

    def __call__(self, stdin: IO[bytes]) -> None:
        with self.repository.open_object(self.record.object_path) as stored:
            result = decode(stored, stdin, self.identities, self.record.sha256)
        if self.decoded is not None:
            self.decoded.append(result.bytes_raw)


def decoding_feed(
    repository: Repository, record: BackupRecord, identities: Any, decoded: list[int] | None = None
) -> DecodingFeed:
    """Return the feed of `record` (see DecodingFeed)."""
    return DecodingFeed(repository, record, identities, decoded)
