"""SIGKILL of the backup process itself (`run_backup` in a subprocess), at instrumented moments of the
commit sequence and at seeded random moments while a slow source streams. A killed backup reports no
success; whatever it left is either a backup that restores or debris prune removes; the next run succeeds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.manifest import Manifest
from backup_pipelines.prune import prune_dataset
from backup_pipelines.repository import open_object_repository
from tests.conftest import stored_files
from tests.faults.common import assert_fault_contained, command_manifest, offsets, tar_dataset

ROOT = Path(__file__).resolve().parents[2]
PARTITION = "2026-12-01"

# Runs in the child: kills itself with SIGKILL at the named moment of run_backup.
CHILD = r"""
import os, signal, sys
from backup_pipelines.manifest import load_manifest
from backup_pipelines.operations import run_backup
from backup_pipelines.repository import local

moment = sys.argv[2]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
Writer = local.LocalObjectWriter
original_write, original_commit, original_replace = Writer.write, Writer.commit, os.replace
written = [0]

def write(self, data):
    result = original_write(self, data)
    written[0] += len(data)
    if moment.startswith("object-bytes-") and written[0] >= int(moment.split("-")[-1]):
        die()
    return result

def commit(self):
    sidecar = self.final.name.endswith(".json")
    if moment == "before-object-rename" and not sidecar:
        die()
    original_commit(self)
    if (moment == "after-object-rename" and not sidecar) or (moment == "after-sidecar" and sidecar):
        die()

def replace(source, target, *arguments, **keywords):
    if moment == "sidecar-written-not-renamed" and str(target).endswith(".json"):
        die()
    return original_replace(source, target, *arguments, **keywords)

Writer.write, Writer.commit = write, commit
local.os.replace = replace
run_backup(load_manifest(sys.argv[1]), sys.argv[3], sys.argv[4])
print("BACKUP RETURNED", flush=True)
"""


def run_child(manifest: Manifest, name: str, moment: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(manifest.path), moment, name, PARTITION],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its tools are ours to kill afterwards, by process group
    )


def reap(child: subprocess.Popen[bytes]) -> tuple[int, bytes]:
    output, _ = child.communicate(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)  # tools the killed backup left running
    return child.returncode, output


def contained_after_kill(manifest: Manifest, name: str) -> None:
    """What a killed backup left either restores (it was committed before the kill) or is debris that
    prune removes; then the next run succeeds."""
    repository = open_object_repository(manifest, "local")
    listing = repository.scan(name)
    assert listing.damaged == []
    prune_dataset(manifest, name, now=datetime.now(UTC) + timedelta(minutes=5), leftover_age=timedelta(0))
    owned = {path for record in listing.records for path in (record.object_path, record.sidecar_path)}
    root = Path(manifest.repositories["local"].path)  # type: ignore[union-attr]
    stray = [str(path.relative_to(root)) for path in stored_files(root) if str(path.relative_to(root)) not in owned]
    assert stray == [], f"prune left debris of the killed backup: {stray}"
    assert_fault_contained(manifest, name, PARTITION)


MOMENTS = [
    "object-bytes-1",
    "object-bytes-300",
    "before-object-rename",
    "after-object-rename",
    "sidecar-written-not-renamed",
    "after-sidecar",
]


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_backup_process_killed_at_each_step_of_the_commit_leaves_nothing_that_looks_whole(
    tmp_path: Path, age_keys: KeyPair, moment: str
) -> None:
    manifest = command_manifest(tmp_path, age_keys, {"vault": tar_dataset(tmp_path)})
    status, output = reap(run_child(manifest, "vault", moment))
    assert status == -signal.SIGKILL and b"BACKUP RETURNED" not in output
    contained_after_kill(manifest, "vault")


SLOW_SOURCE = "for i in $(seq 40); do head -c 20000 /dev/urandom; sleep 0.05; done"  # at least 2 s


@pytest.mark.parametrize("delay", offsets(4, 0.05, 1.6, "process-kill"))
def test_a_backup_process_killed_at_a_random_moment_of_a_slow_dump_leaves_nothing_that_looks_whole(
    tmp_path: Path, age_keys: KeyPair, delay: float
) -> None:
    """The source takes at least 2 s (40 sleeps of 50 ms), so a kill within 1.6 s of the start always lands
    before the sidecar: no timing is asserted, only that the kill came first."""
    dataset = {"kind": "command", "source": {"command": ["sh", "-c", SLOW_SOURCE], "extension": "bin"}}
    manifest = command_manifest(tmp_path, age_keys, {"noise": dataset})
    child = run_child(manifest, "noise", "never")
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    status, output = reap(child)
    assert status == -signal.SIGKILL and b"BACKUP RETURNED" not in output
    fast = {"kind": "command", "source": {"command": ["head", "-c", "400000", "/dev/urandom"], "extension": "bin"}}
    contained_after_kill(command_manifest(tmp_path, age_keys, {"noise": fast}), "noise")
