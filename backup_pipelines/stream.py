"""The bounded-memory pipelines between a source tool and a repository, and back.

encode:  source bytes -> zstd (the CLI, its own process) -> age encrypt (pyrage) -> sha256 -> sink
decode:  stored bytes -> sha256 -> age decrypt -> zstd -d -> consumer (pg_restore, a file, ...)

Memory stays flat: data moves in 1 MiB chunks through OS pipes and one pump thread, and every stage blocks
when the next one is slow (back-pressure). Any failure (a tool exiting non-zero, a storage error, a damaged
object) raises; the caller then aborts the sink, so nothing half-written is ever committed.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import os
import time
from dataclasses import dataclass
from typing import IO, Any, Protocol

import pyrage

from backup_pipelines import zerocopy
from backup_pipelines.crypto import decrypt_stream, encrypt_stream
from backup_pipelines.errors import DecryptionError, IntegrityError
from backup_pipelines.execute import PIPE, Command, Process
from backup_pipelines.threads import Worker

CHUNK = 1 << 20
ZSTD_LEVEL = 1  # the manifest's default (`compression`): see manifest.policies.Compression
ZSTD_THREADS = 0  # one worker per core


class Sink(Protocol):
    def write(self, data: bytes) -> Any: ...


@dataclass(frozen=True)
class EncodeResult:
    """What went through an encode pipeline."""

    bytes_raw: int
    bytes_stored: int
    sha256: str
    seconds: float


@dataclass(frozen=True)
class DecodeResult:
    """What came out of a decode pipeline. `consumer_stopped_early` is True when the consumer stopped
    reading before the end (as `pg_restore --list` does) and the rest was read and discarded."""

    bytes_stored: int
    bytes_raw: int
    sha256: str
    consumer_stopped_early: bool


def zstd_compress_command(level: int = ZSTD_LEVEL, threads: int = ZSTD_THREADS) -> Command:
    """Return the zstd command that compresses stdin to stdout at `level` with `threads` workers (0: one per
    core). The output is the same whatever the threads: one standard zstd stream."""
    return Command(("zstd", f"-{level}", f"-T{threads}", "-q", "-c"))


def zstd_decompress_command() -> Command:
    """Return the zstd command that decompresses stdin to stdout, checking frame checksums."""
    return Command(("zstd", "-d", "-q", "-c"))


class HashingWriter:
    """A writer that counts and sha256-hashes what passes through it to `sink`."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.digest = hashlib.sha256()
        self.count = 0
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.count += len(data)
        try:
            self.sink.write(data)
        except BaseException as error:
            self.error = error  # pyrage wraps it in EncryptError: keep the original for the caller
            raise
        return len(data)

    def flush(self) -> None:
        pass


class ErrorKeepingWriter:
    """Passes writes to `target` and remembers the exception of a failed write (pyrage wraps it)."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.target.write(data)
        except BaseException as error:
            self.error = error
            raise

    def flush(self) -> None:
        pass


class HashingReader:
    """A reader that counts and sha256-hashes what is read from `source`."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.count = 0
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.source.read(size if size and size > 0 else CHUNK)
        except BaseException as error:
            self.error = error  # pyrage wraps it in DecryptError: keep the original
            raise
        self.digest.update(data)
        self.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read and hash whatever is left, so the checksum covers the whole object."""
        while self.read(CHUNK):
            pass


LISTING_LIMIT = 16 << 20  # the most of a tool's output kept in memory (an archive listing, a validator's stdout)


def read_tail(source: IO[bytes], limit: int = LISTING_LIMIT) -> bytes:
    """Read `source` to its end; return its last `limit` bytes (all of it when shorter), so a tool that prints
    more than expected cannot make memory grow with the data."""
    kept: collections.deque[bytes] = collections.deque()
    size = 0
    while chunk := source.read(CHUNK):
        kept.append(chunk)
        size += len(chunk)
        while kept and size - len(kept[0]) >= limit:
            size -= len(kept.popleft())
    return b"".join(kept)[-limit:] if limit else b""


def _read_chunk(source: IO[bytes]) -> bytes:
    try:
        return os.read(source.fileno(), CHUNK)
    except (AttributeError, OSError, ValueError):
        return source.read(CHUNK)


def _splice_all(source: IO[bytes], target: IO[bytes]) -> int:
    """Move everything from `source` to `target` and return the byte count: zero-copy with splice(2) when
    both are pipes (the pump then costs almost no CPU), else through a 1 MiB buffer."""
    try:
        return zerocopy.splice_all(source.fileno(), target.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation) as error:
        if not zerocopy.moved_nothing(error):
            raise
    return _copy_to_both(source, target, None)


def _tee_all(source: IO[bytes], target: IO[bytes], tap: Sink) -> int:
    """Move everything from `source` to `target` and give the same bytes to `tap` in the same pass: zero-copy
    with tee(2) and splice(2) when all three are pipes (an archive check's stdin is one), else by copying."""
    try:
        count, _ = zerocopy.tee_and_splice(source.fileno(), target.fileno(), tap.fileno())  # type: ignore[attr-defined]
        return count
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation) as error:
        if not zerocopy.moved_nothing(error):
            raise
    return _copy_to_both(source, target, tap)


def _copy_to_both(source: IO[bytes], target: IO[bytes], tap: Sink | None) -> int:
    """Move everything from `source` to `target` and (if given) to `tap`; return the byte count."""
    count = 0
    while chunk := _read_chunk(source):
        count += len(chunk)
        target.write(chunk)
        if tap is not None:
            tap.write(chunk)
    return count


def encode(
    source: IO[bytes],
    sink: Sink,
    recipients: list[str],
    level: int = ZSTD_LEVEL,
    tap: Sink | None = None,
    threads: int = ZSTD_THREADS,
) -> EncodeResult:
    """Stream `source` through zstd and (if `recipients`) age into `sink`; return sizes and checksum. With
    `tap`, every raw byte is also written to it in the same pass (an archive check reading the dump as it is
    stored).

    The sha256 is that of the bytes given to `sink`, i.e. of the stored object. Raise CommandFailedError if
    zstd fails, or whatever the sink raises; the caller must then abort the sink.
    """
    started = time.monotonic()
    zstd = Process(zstd_compress_command(level, threads), stdin=PIPE, stdout=PIPE)
    raw_count = [0]

    def pump() -> None:
        try:
            raw_count[0] = _splice_all(source, zstd.stdin) if tap is None else _tee_all(source, zstd.stdin, tap)
        finally:
            zstd.stdin.close()

    pump_thread = Worker(pump, "zstd-feed")
    pump_thread.start()
    hashing = HashingWriter(sink)
    try:
        if recipients:
            try:
                encrypt_stream(zstd.stdout, hashing, recipients)  # type: ignore[arg-type]
            except pyrage.EncryptError as error:
                raise (hashing.error or error) from error
        else:
            while chunk := _read_chunk(zstd.stdout):
                hashing.write(chunk)
        pump_thread.result()
        zstd.check()
    except BaseException:
        zstd.kill()
        pump_thread.join()
        raise
    finally:
        zstd.close()
    seconds = time.monotonic() - started
    return EncodeResult(raw_count[0], hashing.count, hashing.digest.hexdigest(), seconds)


def decode(
    stored: IO[bytes],
    consumer: Sink,
    identities: list[pyrage.x25519.Identity] | None,
    expected_sha256: str | None = None,
    consumer_may_stop_early: bool = False,
) -> DecodeResult:
    """Stream a stored object back to the raw bytes and write them to `consumer`.

    Given the stored object, the identities to decrypt with (None for an unencrypted backup) and the
    sha256 recorded at backup time, return the sizes and the checksum seen. Raise IntegrityError if the
    checksum differs or the data is damaged, DecryptionError on a wrong identity, CommandFailedError if zstd
    finds a damaged frame. If `consumer_may_stop_early`, a consumer that closes its input (BrokenPipeError)
    is tolerated and the rest of the stream is still read, decrypted and checked.
    """
    reader = HashingReader(stored)
    zstd = Process(zstd_decompress_command(), stdin=PIPE, stdout=PIPE)

    def feed() -> None:
        try:
            if identities is not None:
                target = ErrorKeepingWriter(zstd.stdin)
                try:
                    decrypt_stream(reader, target, identities)  # type: ignore[arg-type]
                except (IntegrityError, DecryptionError) as error:
                    raise (reader.error or target.error or error) from error
            else:
                while chunk := reader.read(CHUNK):
                    zstd.stdin.write(chunk)
        finally:
            with contextlib.suppress(BrokenPipeError):
                zstd.stdin.close()

    feeder = Worker(feed, "decrypt-feed")
    feeder.start()
    raw_count, stopped_early = 0, False
    try:
        raw_count, stopped_early = _deliver(zstd.stdout, consumer, consumer_may_stop_early)
        feeder.result()
        zstd.check()
    except BaseException as error:
        zstd.kill()
        feeder.join()
        _raise_checksum_mismatch_first(reader, expected_sha256, error)
        raise
    finally:
        zstd.close()
    _check_sha256(reader, expected_sha256)
    return DecodeResult(reader.count, raw_count, reader.digest.hexdigest(), stopped_early)


def _deliver(source: IO[bytes], consumer: Sink, may_stop_early: bool) -> tuple[int, bool]:
    """Write everything from `source` to `consumer`; return the byte count and whether the consumer stopped
    early (allowed only if `may_stop_early`; the rest is then read and discarded, so every byte is still
    checked). A consumer that is an OS file or pipe (a restore tool's stdin) gets the bytes by splice(2),
    without copying them through Python."""
    count, stopped_early = 0, False
    if isinstance(consumer, io.BufferedWriter | io.FileIO):
        consumer.flush()
        try:
            return zerocopy.splice_all(source.fileno(), consumer.fileno()), False
        except BrokenPipeError as error:
            if not may_stop_early:
                raise
            count, stopped_early = error.bytes_moved, True  # type: ignore[attr-defined]
        except OSError as error:
            if not zerocopy.moved_nothing(error):
                raise
    while chunk := _read_chunk(source):
        count += len(chunk)
        if stopped_early:
            continue
        try:
            consumer.write(chunk)
        except BrokenPipeError:
            if not may_stop_early:
                raise
            stopped_early = True
    return count, stopped_early


def _check_sha256(reader: HashingReader, expected_sha256: str | None) -> None:
    actual = reader.digest.hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        raise IntegrityError(
            f"checksum mismatch: the stored object's sha256 is {actual} ({reader.count} bytes) but "
            f"{expected_sha256} was recorded at backup time"
        )


def _raise_checksum_mismatch_first(reader: HashingReader, expected: str | None, cause: BaseException) -> None:
    """When decoding failed, a checksum mismatch is the clearest diagnosis: raise it if there is one."""
    if expected is None or isinstance(cause, KeyboardInterrupt):
        return
    try:
        reader.drain()
    except Exception:
        return
    if reader.digest.hexdigest() != expected:
        try:
            _check_sha256(reader, expected)
        except IntegrityError as mismatch:
            raise mismatch from cause
