"""The long-running services of the scale benchmark (bench_monitoring.py), measured as users meet them:

- the webserver: `dagster-webserver` started on the workspace, the time until its code location is loaded, and
  the asset graph query the UI's lineage page sends (every asset node with its dependencies), first and again;
- the daemon: `dagster-daemon run` on the same workspace, the time until the `rpo_alerts` sensor has ticked,
  and the peak memory of its process tree (the daemon and the code server it starts) over that time;
- Dagster's own floor: building and snapshotting the same number of bare assets with no project code, so the
  definitions-load goals can be read against what Dagster itself costs.

Servers listen on 127.0.0.1 and are killed (their whole process group) when measured.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from process_tree import PAGE_BYTES, BenchError, descendants_rss_bytes, stat_fields

BIN = Path(sys.executable).parent
ASSET_GRAPH_QUERY = """
query AssetGraph {
  assetNodes {
    id
    assetKey { path }
    groupName
    isPartitioned
    isMaterializable
    isObservable
    isExecutable
    kinds
    description
    jobNames
    opNames
    dependencyKeys { path }
    dependedByKeys { path }
    repository { id name location { id name } }
  }
}
"""
LOCATION_QUERY = """
query {
  workspaceOrError {
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
}
"""


@dataclass
class ServiceSample:
    """What one service measurement found."""

    ready_seconds: float  # until the code location loaded (webserver) or the sensor ticked (daemon)
    peak_mb: float  # summed RSS of the service's process tree, sampled every 0.5 s
    query_seconds: tuple[float, ...] = ()  # the asset graph query, first and again (webserver only)
    asset_nodes: int = 0


def tree_rss_bytes(pid: int) -> int:
    """Return the RSS of process `pid` plus every descendant's."""
    try:
        own = int(stat_fields(pid)[21]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0
    return own + descendants_rss_bytes(pid)


@contextmanager
def service(
    argv: list[str], cwd: Path, env: Mapping[str, str], log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Callable[[], float]]]:
    """Start `argv` in its own process group, sample its tree's memory; yield it and a function returning the
    peak so far (MB); kill the group at the end."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            argv, cwd=cwd, env=dict(env), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss_bytes(process.pid))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield process, lambda: peak[0] / 1e6
    finally:
        stop.set()
        sampler.join()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


def _graphql(port: int, query: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        body: dict[str, object] = json.loads(response.read())
    if body.get("errors"):
        raise BenchError(f"GraphQL errors: {str(body['errors'])[:2000]}")
    return body


def _wait(what: str, check: Callable[[], bool], timeout: float, process: subprocess.Popen[bytes], log: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise BenchError(f"{what}: the service exited {process.returncode}; log: {log.read_text()[-2000:]}")
        try:
            if check():
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.5)
    raise BenchError(f"{what}: not within {timeout:.0f} s; log: {log.read_text()[-2000:]}")


def measure_webserver(folder: Path, env: Mapping[str, str], port: int, timeout: float) -> ServiceSample:
    """Start the webserver on `folder`'s workspace.yaml; time the code location's load and the asset graph query."""
    argv = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    log = folder / "webserver.log"
    with service(argv, folder, env, log) as (process, peak):

        def loaded() -> bool:
            entries = _graphql(port, LOCATION_QUERY)["data"]["workspaceOrError"]["locationEntries"]  # type: ignore[index]
            for entry in entries:  # type: ignore[attr-defined]
                if entry["loadStatus"] == "LOADED" and entry["locationOrLoadError"]["__typename"] == "PythonError":
                    raise BenchError(f"the code location failed to load: {entry['locationOrLoadError']['message']}")
            return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)  # type: ignore[attr-defined]

        ready = _wait("the webserver's code location", loaded, timeout, process, log)
        queries, nodes = [], 0
        for _ in range(2):
            started = time.monotonic()
            body = _graphql(port, ASSET_GRAPH_QUERY)
            queries.append(time.monotonic() - started)
            nodes = len(body["data"]["assetNodes"])  # type: ignore[index]
        return ServiceSample(ready, peak(), tuple(queries), nodes)


def measure_daemon(
    folder: Path, env: Mapping[str, str], sensor_ticked: Callable[[], bool], timeout: float
) -> ServiceSample:
    """Start `dagster-daemon run` on `folder`'s workspace.yaml; wait for `sensor_ticked`, then 30 s more of
    sampling (the scheduler and the other sensors settle); return the time to the tick and the tree's peak."""
    log = folder / "daemon.log"
    with service([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], folder, env, log) as (process, peak):
        ready = _wait("the rpo_alerts sensor's first tick", sensor_ticked, timeout, process, log)
        time.sleep(30)
        return ServiceSample(ready, peak())


FLOOR = """
import sys, time
import dagster as dg
from dagster._core.remote_representation.external_data import RepositorySnap
count, started = int(sys.argv[1]), time.monotonic()
partitions = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00")
assets = []
for index in range(count):
    @dg.asset(key=["floor", f"a{index}"], partitions_def=partitions, group_name=f"g{index // 4}")
    def bare() -> None: ...
    assets.append(bare)
defs = dg.Definitions(assets=assets, jobs=[dg.define_asset_job("all", selection=dg.AssetSelection.all())])
RepositorySnap.from_def(defs.get_repository_def())
print(time.monotonic() - started)
"""


def dagster_floor_seconds(asset_count: int) -> float:
    """Seconds Dagster itself takes to build and snapshot `asset_count` bare partitioned assets and one job."""
    output = subprocess.run([sys.executable, "-c", FLOOR, str(asset_count)], capture_output=True, text=True, check=True)
    return float(output.stdout.strip().splitlines()[-1])
