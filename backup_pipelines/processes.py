"""Is a process that was seen at some time still that same process, on this host?

A pid alone is not an identity: after a process dies its pid can be given to a new one. A process counts as the
one seen only when it exists, is not a zombie and started no later than when it was seen (to the precision of
Linux's process start times). Without /proc (not Linux) only the pid's existence can be checked.
"""

from __future__ import annotations

import os
from pathlib import Path

# /proc start times are counted in clock ticks from a boot time given in whole seconds.
START_TIME_TOLERANCE_SECONDS = 2.0
PROC = Path("/proc")


def process_is_running(pid: int, seen_at: float | None = None) -> bool:
    """Return True when process `pid` exists on this host, is not a zombie and (given `seen_at`, a Unix time
    at which the process was known to run) started no later than `seen_at`, so it is not a newer process that
    reused the pid. Reads /proc where there is one, else only asks the kernel whether the pid exists."""
    if pid <= 0:
        return False
    stat_path = PROC / str(pid) / "stat"
    if not PROC.is_dir():
        return _pid_exists(pid)
    try:
        stat = stat_path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return stat_path.parent.exists()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name in parentheses may hold spaces
    if fields[0] in ("Z", "X"):  # zombie or dead: it runs no code any more
        return False
    if seen_at is None:
        return True
    started = _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return started <= seen_at + START_TIME_TOLERANCE_SECONDS


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _boot_time() -> float:
    for line in (PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime line in /proc/stat")
