"""Measuring one command's process tree for the benchmarks: wall time, CPU seconds of the tree (this process becomes
a subreaper, so orphaned descendants are waited for and counted), a server's CPU from /proc, peak summed RSS."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import resource
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@functools.cache
def empty_folder() -> Path:
    """A new empty folder, removed at exit, for the commands to run in (see run)."""
    folder = tempfile.mkdtemp(prefix="bench-cwd-")
    atexit.register(shutil.rmtree, folder, True)
    return Path(folder)


PAGE_BYTES, CLOCK_TICKS = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36


class BenchError(RuntimeError):
    """A command failed or a measurement cannot be trusted."""


@dataclass
class Sample:
    """One timed command: wall seconds, CPU seconds of its process tree, its server's CPU, its peak tree RSS."""

    seconds: float
    cpu: float | None = None
    server_cpu: float | None = None
    peak_mb: float | None = None


def become_subreaper() -> None:
    """Make this process adopt its orphaned descendants, so `run` waits for them and counts their CPU. Call it
    after starting any long-lived server that must not become our child."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise BenchError("prctl(PR_SET_CHILD_SUBREAPER) failed: orphaned descendants' CPU would be missed")


def stat_fields(pid: int) -> list[str]:
    """Return the fields of /proc/<pid>/stat after the command name (index 0 is field 3, the state)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def descendants_rss_bytes(root: int) -> int:
    """Return the summed RSS of every descendant of process `root` (not `root` itself), scanning /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat_fields(int(entry.name))
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * PAGE_BYTES
    total, pending = 0, list(children.get(root, []))
    while pending:
        pid = pending.pop()
        total += rss.get(pid, 0)
        pending += children.get(pid, [])
    return total


def server_cpu_seconds(pid: int | None) -> float | None:
    """Return the CPU seconds of process `pid` and of its reaped children (utime+stime+cutime+cstime)."""
    return None if pid is None else sum(int(value) for value in stat_fields(pid)[11:15]) / CLOCK_TICKS


def reap_orphans(timeout: float = 60.0) -> None:
    """Reap the descendants orphaned to this subreaper so their CPU time counts; raise BenchError if some still run
    `timeout` seconds after the command ended."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] or time.monotonic() < deadline:
            time.sleep(0.02)
        raise BenchError(f"processes left by the command still run after {timeout:.0f} s (children of {os.getpid()})")


def run(argv: list[str], env: Mapping[str, str], server_pid: int | None, cwd: Path | None = None) -> Sample:
    """Run `argv` in `cwd` with `env` and return its Sample. Raise BenchError with its stderr tail if it fails.
    By default it runs in an empty folder: Dagster loads the `.env` of the folder it runs in over `env`, and the
    demo leaves one in the project folder (its DAGSTER_HOME and secrets)."""
    peak, stop = [0], threading.Event()

    def sample_memory() -> None:
        while True:
            peak[0] = max(peak[0], descendants_rss_bytes(os.getpid()))
            if stop.wait(0.05):
                return

    server_before, usage_before = server_cpu_seconds(server_pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile() as stderr:
        started = time.monotonic()
        process = subprocess.Popen(argv, cwd=cwd or empty_folder(), env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        returncode = process.wait()
        seconds = time.monotonic() - started
        stop.set()
        sampler.join()
        reap_orphans()
        if returncode != 0:
            stderr.seek(0)
            tail = stderr.read()[-3000:].decode(errors="replace")
            raise BenchError(f"{shlex.join(argv)[:400]} exited with {returncode}; stderr ends:\n{tail}")
    time.sleep(0.1)  # let the postmaster reap the command's backends
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - usage_before.ru_utime - usage_before.ru_stime
    server_after = server_cpu_seconds(server_pid)
    server = None if server_before is None or server_after is None else server_after - server_before
    return Sample(seconds, cpu, server, peak[0] / 1e6)
