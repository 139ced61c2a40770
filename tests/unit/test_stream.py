"""The encode/decode pipelines with the real zstd CLI and age (pyrage), on in-memory and file data."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pyrage
import pytest

from backup_pipelines.crypto import KeyPair, generate_key_pair, parse_identities
from backup_pipelines.errors import CommandFailedError, DecryptionError, IntegrityError
from backup_pipelines.execute import PIPE, Process
from backup_pipelines.stream import decode, encode, read_tail, zstd_compress_command

PAYLOAD = os.urandom(3 << 20) + b"compressible " * 200_000


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return generate_key_pair()


def encoded(keys: KeyPair | None) -> tuple[bytes, str]:
    sink = io.BytesIO()
    result = encode(io.BytesIO(PAYLOAD), sink, [keys.recipient] if keys else [])
    assert result.bytes_raw == len(PAYLOAD)
    assert result.bytes_stored == len(sink.getvalue())
    return sink.getvalue(), result.sha256


def test_round_trip_restores_the_exact_bytes(keys: KeyPair) -> None:
    stored, sha256 = encoded(keys)
    out = io.BytesIO()
    result = decode(io.BytesIO(stored), out, parse_identities(keys.identity, "test"), sha256)
    assert out.getvalue() == PAYLOAD and result.bytes_raw == len(PAYLOAD) and result.sha256 == sha256


def test_stored_object_decrypts_with_the_age_and_zstd_clis(keys: KeyPair, tmp_path: Path) -> None:
    stored, _ = encoded(keys)
    (tmp_path / "backup.age").write_bytes(stored)
    (tmp_path / "identity.txt").write_text(keys.identity_file_text())
    plain = subprocess.run(
        f"age -d -i {tmp_path / 'identity.txt'} {tmp_path / 'backup.age'} | zstd -d -q -c",
        shell=True,
        check=True,
        capture_output=True,
    ).stdout
    assert plain == PAYLOAD


def test_truncated_object_fails(keys: KeyPair) -> None:
    stored, sha256 = encoded(keys)
    with pytest.raises(IntegrityError):
        decode(io.BytesIO(stored[: len(stored) // 2]), io.BytesIO(), parse_identities(keys.identity, "t"), sha256)


def test_one_flipped_byte_is_reported_as_a_checksum_mismatch(keys: KeyPair) -> None:
    stored, sha256 = encoded(keys)
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        decode(io.BytesIO(bytes(damaged)), io.BytesIO(), parse_identities(keys.identity, "t"), sha256)


def test_damaged_unencrypted_object_fails_in_zstd_or_checksum() -> None:
    stored, sha256 = encoded(None)
    damaged = bytearray(stored)
    damaged[len(damaged) // 3] ^= 0xFF
    with pytest.raises((IntegrityError, CommandFailedError)):
        decode(io.BytesIO(bytes(damaged)), io.BytesIO(), None, sha256)


def test_wrong_identity_gives_a_clear_error(keys: KeyPair) -> None:
    stored, sha256 = encoded(keys)
    other = [pyrage.x25519.Identity.generate()]
    with pytest.raises(DecryptionError, match="does not match any recipient"):
        decode(io.BytesIO(stored), io.BytesIO(), other, sha256)


class StopsEarly:
    """A consumer that reads a little then closes its input, as `pg_restore --list` does."""

    def __init__(self) -> None:
        self.received = 0

    def write(self, data: bytes) -> int:
        if self.received > 1 << 20:
            raise BrokenPipeError
        self.received += len(data)
        return len(data)


def test_consumer_stopping_early_still_checks_the_whole_object(keys: KeyPair) -> None:
    stored, sha256 = encoded(keys)
    result = decode(io.BytesIO(stored), StopsEarly(), parse_identities(keys.identity, "t"), sha256, True)
    assert result.consumer_stopped_early and result.bytes_raw == len(PAYLOAD)
    with pytest.raises(BrokenPipeError):
        decode(io.BytesIO(stored), StopsEarly(), parse_identities(keys.identity, "t"), sha256)


class FailingSink:
    def __init__(self, after: int) -> None:
        self.after = after

    def write(self, data: bytes) -> int:
        self.after -= len(data)
        if self.after < 0:
            raise OSError(28, "No space left on device")
        return len(data)


def test_a_failing_sink_aborts_the_encode_and_stops_zstd(keys: KeyPair) -> None:
    with pytest.raises(OSError, match="No space left"):
        encode(io.BytesIO(PAYLOAD), FailingSink(100_000), [keys.recipient])


def test_killing_a_tool_whose_pipe_another_thread_is_closing_keeps_the_first_error() -> None:
    """A failed encode kills zstd while its feeding thread closes zstd's stdin in its own `finally`. The two
    closes can meet (1 run in 300 of the test above, before): the second raised "I/O operation on closed file",
    which hid the sink's "No space left on device"."""

    class ClosingElsewhere(io.BytesIO):
        def close(self) -> None:
            raise ValueError("I/O operation on closed file")

    zstd = Process(zstd_compress_command(), stdin=PIPE, stdout=PIPE)
    real_stdin = zstd.popen.stdin
    zstd.popen.stdin = ClosingElsewhere()
    try:
        zstd.kill()  # raises nothing
        assert zstd.popen.returncode is not None
    finally:
        real_stdin.close()  # type: ignore[union-attr]
        zstd.close()


def test_read_tail_keeps_only_the_last_bytes_of_a_long_output() -> None:
    data = bytes(range(256)) * 40_000  # 10.24 MB, several chunks
    assert read_tail(io.BytesIO(data), 1000) == data[-1000:]
    assert read_tail(io.BytesIO(data), len(data) * 2) == data
    assert read_tail(io.BytesIO(data), 0) == b""
    assert read_tail(io.BytesIO(b""), 10) == b""
