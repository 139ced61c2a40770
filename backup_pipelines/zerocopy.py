"""Zero-copy moves between pipes with Linux's splice(2) and tee(2): a pump that sends a dump to zstd and, in the
same pass, to an archive check never copies the bytes through Python, so it costs almost no CPU.

It imports nothing from the package: the PostgreSQL archive-check script loads this file by its path and must
start fast. Every function raises OSError with errno EINVAL (not a pipe) or ENOSYS (no tee(2)) before moving
anything when it cannot work; callers then fall back to copying (see moved_nothing).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import time

CHUNK = 1 << 20
# Pipes are grown to this (Linux's default is 64 KiB), so each tee/splice and each reader wakeup carries more:
# the pipes of the tools Process starts (execute.py) and every pipe a pump moves data through, such as those the
# PostgreSQL archive check opens to its two pg_restore. Growing the pumps' pipes too, on a 1.39 GB PostgreSQL
# backup with its archive check (2 cores, 8 interleaved rounds): median 7.54 s before, 7.23 s at 256 KiB, 7.11 s
# at 1 MiB. 1 MiB is also the default /proc/sys/fs/pipe-max-size, the most an unprivileged user may ask for.
PIPE_SIZE = 1 << 20
# A pump whose call moved less than a quarter of its smallest pipe (the source had little waiting) sleeps
# SETTLE_SECONDS before the next, so that call carries more: a source writing 8 KiB at a time otherwise costs a
# wakeup of the pump and of every reader per write, on cores the source and zstd need. A 1.39 GB PostgreSQL dump
# took 18,335 tees averaging 76 KB, and 2,600-3,100 averaging 450-530 KB with the pause; the backup with its
# archive check went from 6.51 s to 6.21 s, and without the check from 5.61 s to 5.46 s (2 cores, 8 interleaved
# rounds, medians). The bar follows the pipes' real size (one that could not grow stays at 64 KiB, where a fixed
# bar would pause after every move), so a source faster than a quarter pipe per millisecond is never held back.
SETTLE_SECONDS = 0.001
_SET_SIZE, _GET_SIZE = getattr(fcntl, "F_SETPIPE_SZ", None), getattr(fcntl, "F_GETPIPE_SZ", None)  # Linux only
_LIBC = ctypes.CDLL(None, use_errno=True)  # ctypes releases the GIL during the call
_TEE = getattr(_LIBC, "tee", None)


def enlarge(*fds: int) -> None:
    """Grow each pipe among `fds` to PIPE_SIZE, never shrinking one. Anything else (a file, a socket), a refusal
    (a user over its pipe-buffer limit) and a system without pipe sizes are left as they are: a bigger pipe is
    only faster, never needed."""
    if _SET_SIZE is None:
        return
    for fd in fds:
        size = pipe_size(fd)
        if size is not None and size < PIPE_SIZE:
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, _SET_SIZE, PIPE_SIZE)


def pipe_size(fd: int) -> int | None:
    """Return the buffer size of pipe `fd`, or None for anything else or a system without pipe sizes."""
    if _GET_SIZE is None:
        return None
    try:
        return int(fcntl.fcntl(fd, _GET_SIZE))
    except OSError:
        return None


def settle_below(*fds: int) -> int:
    """Return a quarter of the smallest pipe among `fds` (at most of CHUNK, the most one call moves): a move
    shorter than that is short. 0 when no size can be read (files, sockets): never pause."""
    sizes = [size for size in map(pipe_size, fds) if size is not None]
    return min(*sizes, CHUNK) // 4 if sizes else 0  # a move is at most CHUNK: a bigger pipe keeps CHUNK's bar


def settle(moved: int, below: int) -> None:
    """After a pump's call that moved `moved` bytes: sleep SETTLE_SECONDS when that is below `below`."""
    if moved < below:
        time.sleep(SETTLE_SECONDS)


def tee(source_fd: int, target_fd: int, length: int) -> int:
    """Duplicate up to `length` bytes at the head of pipe `source_fd` into pipe `target_fd` without consuming
    them; return how many (0: the source is at its end). Block until there is data and room. Raise
    BrokenPipeError when the target's reader is gone, OSError otherwise."""
    if _TEE is None:
        raise OSError(errno.ENOSYS, "tee(2) is not available")
    count = int(_TEE(source_fd, target_fd, ctypes.c_size_t(length), ctypes.c_uint(0)))
    if count < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return count


def splice_exactly(source_fd: int, target_fd: int, count: int) -> None:
    """Move exactly `count` bytes, already waiting in pipe `source_fd`, into `target_fd`."""
    while count:
        moved = os.splice(source_fd, target_fd, count)
        if not moved:
            raise OSError(errno.EIO, "the source pipe lost bytes it had shown")
        count -= moved


def splice_all(source_fd: int, target_fd: int) -> int:
    """Move everything from `source_fd` to `target_fd` (one of them a pipe) until the source ends; return the
    byte count. An OSError raised part-way carries the count moved before it as `bytes_moved`."""
    total = 0
    enlarge(source_fd, target_fd)
    below = settle_below(source_fd, target_fd)
    try:
        while moved := os.splice(source_fd, target_fd, CHUNK):
            total += moved
            settle(moved, below)
    except OSError as error:
        error.bytes_moved = total  # type: ignore[attr-defined]
        raise
    return total


def moved_nothing(error: BaseException) -> bool:
    """True when a zero-copy move failed before moving anything because an end is not a pipe or the OS lacks
    splice/tee (or an end has no descriptor at all): then copying is the way. Any other error is real."""
    return getattr(error, "errno", None) in (None, errno.EINVAL, errno.ENOSYS) and not getattr(error, "bytes_moved", 0)


def tee_and_splice(source_fd: int, target_fd: int, tap_fd: int) -> tuple[int, bool]:
    """Move everything from pipe `source_fd` to pipe `target_fd` and give the same bytes to pipe `tap_fd` until
    its reader goes away. Return the byte count and whether the tap received all of it."""
    total = 0
    enlarge(source_fd, target_fd, tap_fd)
    below = settle_below(source_fd, target_fd, tap_fd)
    while True:
        try:
            count = tee(source_fd, tap_fd, CHUNK)
        except BrokenPipeError:  # the tap stopped reading (e.g. `pg_restore --list` after the table of contents)
            return total + splice_all(source_fd, target_fd), False
        if not count:
            return total, True
        splice_exactly(source_fd, target_fd, count)
        total += count
        settle(count, below)
