"""A process counts as the one seen only while it exists, runs and is not younger than the sighting."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from backup_pipelines.processes import process_is_running


def test_this_process_runs_but_not_as_a_process_seen_before_it_started() -> None:
    assert process_is_running(os.getpid(), time.time())
    assert not process_is_running(os.getpid(), time.time() - 10 * 365 * 86400)  # a pid reused since


def test_an_exited_child_is_gone_even_before_it_is_reaped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while process_is_running(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_is_running(child.pid)  # a zombie until waited for
    child.wait()
    assert not process_is_running(child.pid) and not process_is_running(0)
