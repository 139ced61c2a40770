"""Zero-copy pumping between real OS pipes: the tap gets the same bytes as the target, or stops on its own."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from backup_pipelines import zerocopy

DATA = os.urandom(3 << 20) + b"tail"


def _writer(fd: int, data: bytes) -> threading.Thread:
    def write() -> None:
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(data)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def _reader(fd: int, received: list[bytes], limit: int | None = None) -> threading.Thread:
    def read() -> None:
        with os.fdopen(fd, "rb") as pipe:
            received.append(pipe.read() if limit is None else pipe.read(limit))

    thread = threading.Thread(target=read)
    thread.start()
    return thread


def _pump(tap_limit: int | None) -> tuple[tuple[int, bool], bytes, bytes]:
    source_read, source_write = os.pipe()
    target_read, target_write = os.pipe()
    tap_read, tap_write = os.pipe()
    target, tap = [], []  # type: ignore[var-annotated]
    threads = [_writer(source_write, DATA), _reader(target_read, target), _reader(tap_read, tap, tap_limit)]
    result = zerocopy.tee_and_splice(source_read, target_write, tap_write)
    for fd in (source_read, target_write, tap_write):
        os.close(fd)
    for thread in threads:
        thread.join(timeout=30)
    return result, target[0], tap[0]


def test_the_tap_receives_exactly_what_the_target_receives() -> None:
    (count, whole), target, tap = _pump(None)
    assert count == len(DATA) and whole
    assert target == DATA and tap == DATA


def test_a_tap_that_stops_reading_early_does_not_stop_the_target() -> None:
    (count, whole), target, tap = _pump(64 << 10)  # like pg_restore --list after the table of contents
    assert count == len(DATA) and not whole
    assert target == DATA and tap == DATA[: 64 << 10]


def test_a_regular_file_is_refused_before_anything_moves(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"abc")
    read_end, write_end = os.pipe()
    with open(path, "rb") as source, pytest.raises(OSError) as raised:
        zerocopy.tee(source.fileno(), write_end, 1024)
    assert raised.value.errno == errno.EINVAL
    os.close(read_end)
    os.close(write_end)


def test_a_move_cut_short_says_how_much_it_moved_and_is_never_taken_for_an_unusable_pipe() -> None:
    source_read, source_write = os.pipe()
    target_read, target_write = os.pipe()
    received: list[bytes] = []
    threads = [_writer(source_write, DATA), _reader(target_read, received, 64 << 10)]
    with pytest.raises(BrokenPipeError) as raised:
        zerocopy.splice_all(source_read, target_write)
    while os.read(source_read, 1 << 20):  # let the writer finish
        pass
    for fd in (source_read, target_write):
        os.close(fd)
    for thread in threads:
        thread.join(timeout=30)
    assert raised.value.bytes_moved >= len(received[0]) == 64 << 10  # type: ignore[attr-defined]
    assert not zerocopy.moved_nothing(raised.value)
    assert zerocopy.moved_nothing(OSError(errno.EINVAL, "not a pipe"))
    assert zerocopy.moved_nothing(AttributeError("no fileno"))


def test_the_pumps_grow_their_pipes_and_leave_anything_else_alone(tmp_path: Path) -> None:
    source_read, source_write = os.pipe()
    target_read, target_write = os.pipe()
    assert fcntl.fcntl(target_write, fcntl.F_GETPIPE_SZ) < zerocopy.PIPE_SIZE
    received: list[bytes] = []
    threads = [_writer(source_write, DATA), _reader(target_read, received)]
    try:
        assert zerocopy.splice_all(source_read, target_write) == len(DATA)
        sizes = [fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) for fd in (source_read, target_write)]
    finally:
        for fd in (source_read, target_write):
            os.close(fd)
        for thread in threads:
            thread.join(timeout=30)
    assert sizes == [zerocopy.PIPE_SIZE, zerocopy.PIPE_SIZE]
    assert received == [DATA]
    with open(tmp_path / "file", "wb") as regular:
        zerocopy.enlarge(regular.fileno(), 987654)  # a file and a closed descriptor: no error


def test_a_bigger_pipe_is_never_shrunk(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20)
        monkeypatch.setattr(zerocopy, "PIPE_SIZE", 256 << 10)
        zerocopy.enlarge(write_end)
        assert fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ) == 1 << 20
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize("tapped", [False, True], ids=["splice_all", "tee_and_splice"])
def test_a_pump_pauses_after_a_short_move_only(monkeypatch: pytest.MonkeyPatch, tapped: bool) -> None:
    """A source that writes a little at a time is moved in fewer, bigger calls: a pause follows each move shorter
    than a quarter of the pipes and no other. The bytes arrive whole either way."""
    events: list[tuple[str, int]] = []  # ("move", bytes) and ("sleep", 0) in the order they happened
    paused = threading.Event()

    def sleep(seconds: float) -> None:
        assert seconds == zerocopy.SETTLE_SECONDS
        events.append(("sleep", 0))
        paused.set()

    def recorded(move: Any) -> Any:
        def call(*arguments: Any) -> int:
            moved = int(move(*arguments))
            events.append(("move", moved))
            return moved

        return call

    monkeypatch.setattr(zerocopy.time, "sleep", sleep)
    if tapped:  # the tee decides how much each round moves; splice_exactly then moves the same
        monkeypatch.setattr(zerocopy, "tee", recorded(zerocopy.tee))
    else:
        monkeypatch.setattr(zerocopy.os, "splice", recorded(os.splice))
    source_read, source_write = os.pipe()
    target_read, target_write = os.pipe()
    received: list[bytes] = []
    reader = _reader(target_read, received)
    os.write(source_write, b"small")  # all the pump finds at first: a short move, then a pause

    def write_the_rest() -> None:
        paused.wait(10)
        with os.fdopen(source_write, "wb") as pipe:
            pipe.write(DATA)

    writer = threading.Thread(target=write_the_rest)
    writer.start()
    tapped_bytes: list[bytes] = []
    if tapped:
        tap_read, tap_write = os.pipe()
        tap_reader = _reader(tap_read, tapped_bytes)
        moved, _ = zerocopy.tee_and_splice(source_read, target_write, tap_write)
        os.close(tap_write)
        tap_reader.join()
    else:
        moved = zerocopy.splice_all(source_read, target_write)
    writer.join()
    os.close(target_write)
    os.close(source_read)
    reader.join()
    assert moved == len(DATA) + 5 and received == [b"small" + DATA]
    assert tapped_bytes == ([b"small" + DATA] if tapped else [])
    below = zerocopy.PIPE_SIZE // 4  # the pumps grew every pipe to PIPE_SIZE
    assert events[:2] == [("move", 5), ("sleep", 0)]
    for index, (kind, count) in enumerate(events):
        if kind == "move" and count:  # the last move (0: the end) is followed by nothing
            follows = events[index + 1][0] if index + 1 < len(events) else None
            assert (follows == "sleep") == (count < below), events
    assert any(kind == "move" and count >= below for kind, count in events), events  # a long move, no pause


def test_the_pause_bar_follows_the_smallest_pipe_and_a_file_gives_no_size(tmp_path: Path) -> None:
    """A pipe that could not grow (64 KiB) lowers the bar to 16 KiB: a fixed 256 KiB bar would pause after
    every move and cap such a pump at 64 KiB per millisecond."""
    small_read, small_write = os.pipe()
    big_read, big_write = os.pipe()
    fcntl.fcntl(big_write, fcntl.F_SETPIPE_SZ, 1 << 20)
    try:
        assert zerocopy.settle_below(big_read) == (1 << 20) // 4
        assert zerocopy.settle_below(big_read, small_write) == fcntl.fcntl(small_write, fcntl.F_GETPIPE_SZ) // 4
        with (tmp_path / "file").open("wb") as file:
            assert zerocopy.settle_below(file.fileno()) == 0
    finally:
        for fd in (small_read, small_write, big_read, big_write):
            os.close(fd)


def test_a_pipe_bigger_than_a_move_keeps_the_bar_of_a_full_move(monkeypatch: pytest.MonkeyPatch) -> None:
    """One call moves at most CHUNK: with an 8 MiB pipe a bar of 2 MiB would call every move short."""
    monkeypatch.setattr(zerocopy.fcntl, "fcntl", lambda fd, command, *rest: 8 << 20)
    assert zerocopy.settle_below(0) == zerocopy.CHUNK // 4
