"""Benchmark: watching many datasets. Targets: one RPO sensor tick and one status report each under 5 s;
definitions load < 5 s at 1,000 datasets and < 30 s at 10,000.

Generates a manifest of N datasets over S servers, a Dagster instance (the local SQLite default, or with
`--instance postgres` the production-shaped one of deploy/local-postgres/dagster.yaml on a throw-away
PostgreSQL), and a history of materializations per dataset (benchmarks/watch_history.py: backups, a verify
and a restore test, each with the metadata the real steps record), then times: loading the definitions, one tick
of the `rpo_alerts` sensor, the `rpo_checks` evaluation, and the `backup_status` report (gathering + table +
HTML, then the reports job's status op run in process), with this process's peak memory. With
`--services` it then starts the webserver and the daemon on the same workspace and instance
(benchmarks/scale_services.py): the code location's load, the UI's asset graph query, the daemon's time to its
first RPO sensor tick and its process tree's peak memory, and Dagster's own floor for as many bare assets.
Run: `.venv/bin/python benchmarks/bench_monitoring.py --datasets 10000 --servers 500 --instance postgres --services`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402
import yaml  # noqa: E402
from scale_services import dagster_floor_seconds, measure_daemon, measure_webserver  # noqa: E402
from watch_history import fill_history  # noqa: E402

from backup_pipelines.crypto import generate_key_pair  # noqa: E402
from backup_pipelines.ports import free_port  # noqa: E402


def write_manifest(folder: Path, count: int, servers: int = 20) -> Path:
    recipient = generate_key_pair().recipient
    datasets = {
        f"db_{index:04d}": {
            "kind": "postgres",
            "schedule": "hourly" if index % 2 else "daily",
            "rpo": "2h" if index % 2 else "26h",
            "rto": "1h",
            "retention": {"keep_hourly": 24, "keep_daily": 30},
            "repositories": ["local"],
            "source": {"server": f"pg_{index % servers}", "database": f"db_{index}"},
        }
        for index in range(count)
    }
    manifest = {
        "encryption": {"recipients": [recipient]},
        "repositories": {"local": {"type": "local", "path": str(folder / "repo")}},
        "servers": {f"pg_{n}": {"kind": "postgres", "user": "backup"} for n in range(servers)},
        "datasets": datasets,
        "reports_dir": str(folder / "reports"),
    }
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def timed(label: str, function: object) -> float:
    started = time.monotonic()
    function()  # type: ignore[operator]
    seconds = time.monotonic() - started
    print(f"{label:<40} {seconds:6.2f} s", flush=True)
    return seconds


def measure_services(folder: Path, instance: dg.DagsterInstance, validate: bool = True) -> None:
    """Measure `dagster definitions validate` (unless not `validate`), the webserver and the daemon on this
    benchmark's workspace and instance (see scale_services)."""
    (folder / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: backup_pipelines.definitions\n"
        f"      working_directory: {ROOT}\n"
    )
    # 10,000 datasets' snapshot is larger than the 100 MB Dagster's gRPC accepts (RESOURCE_EXHAUSTED)
    limits = {"DAGSTER_GRPC_MAX_RX_BYTES": str(2**30), "DAGSTER_GRPC_MAX_SEND_BYTES": str(2**30)}
    env = {**os.environ, "PYTHONPATH": str(ROOT), **limits}
    if validate:
        started = time.monotonic()
        command = [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"]
        subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)
        print(f"{'dagster definitions validate (CLI)':<40} {time.monotonic() - started:6.2f} s")
    web = measure_webserver(folder, env, free_port(), timeout=3600)
    first, again = web.query_seconds
    print(f"{'webserver: code location loaded':<40} {web.ready_seconds:6.2f} s")
    print(f"{'webserver: asset graph query (first)':<40} {first:6.2f} s ({web.asset_nodes} asset nodes)")
    print(f"{'webserver: asset graph query (again)':<40} {again:6.2f} s")
    print(f"{'webserver: peak memory of its tree':<40} {web.peak_mb:6.0f} MB")

    def sensor_ticked() -> bool:
        states = [s for s in instance.all_instigator_state() if s.instigator_name == "rpo_alerts"]
        return any(instance.get_ticks(s.instigator_origin_id, s.selector_id, limit=1) for s in states)

    daemon = measure_daemon(folder, env, sensor_ticked, timeout=3600)
    print(f"{'daemon: first rpo sensor tick after':<40} {daemon.ready_seconds:6.2f} s")
    print(f"{'daemon: peak memory of its tree':<40} {daemon.peak_mb:6.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=1000)
    parser.add_argument("--backups", type=int, default=5, help="backup materializations per dataset")
    parser.add_argument("--servers", type=int, default=20, help="database servers the datasets are spread over")
    parser.add_argument("--tables", type=int, default=20, help="tables per database (row counts in every backup)")
    parser.add_argument("--instance", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--services", action="store_true", help="also measure the webserver and the daemon")
    parser.add_argument(
        "--only-services", action="store_true", help="measure only the webserver and the daemon (after the history)"
    )
    parser.add_argument(
        "--watch-job", action=argparse.BooleanOptionalAction, default=True, help="time the daily watch job too"
    )
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bp-bench-watch-") as work, contextlib.ExitStack() as stack:
        folder = Path(work)
        (folder / "home").mkdir()
        if arguments.instance == "postgres":
            from backup_pipelines.sandbox import start_postgres_sandbox

            sandbox = start_postgres_sandbox(password="bench")
            stack.callback(sandbox.stop)
            os.environ.update(
                {
                    "DAGSTER_PG_USERNAME": sandbox.user,
                    "DAGSTER_PG_PASSWORD": sandbox.password,
                    "DAGSTER_PG_HOST": "127.0.0.1",
                    "DAGSTER_PG_PORT": str(sandbox.port),
                    "DAGSTER_PG_DB": "postgres",
                }
            )
            instance_yaml = ROOT / "deploy" / "local-postgres" / "dagster.yaml"
        else:
            instance_yaml = ROOT / "dagster.yaml"
        instance_config = yaml.safe_load(instance_yaml.read_text())
        # the webserver and the daemon start the code location as a local code server: at 10,000 datasets it
        # takes minutes to load, more than Dagster's default of 180 s
        instance_config["code_servers"] = {"local_startup_timeout": 3600}
        (folder / "home" / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
        os.environ["DAGSTER_HOME"] = str(folder / "home")
        manifest_path = write_manifest(folder, arguments.datasets, arguments.servers)
        os.environ["BACKUP_MANIFEST"] = str(manifest_path)
        from assets.reports import gather_statuses
        from backup_pipelines.manifest import load_manifest
        from backup_pipelines.status import render_html, status_frame

        instance = dg.DagsterInstance.get()
        names = [f"db_{index:04d}" for index in range(arguments.datasets)]
        started = time.monotonic()
        fill_history(instance, names, arguments.backups, 4 if arguments.instance == "postgres" else 1, arguments.tables)
        elapsed = time.monotonic() - started
        print(
            f"{arguments.instance} instance; history: {arguments.datasets} datasets on {arguments.servers} servers x "
            f"{arguments.backups} backups in {elapsed:.0f} s"
        )
        if arguments.only_services:
            measure_services(folder, instance, validate=False)
            return 0
        holder: dict[str, dg.Definitions] = {}
        # the code location's own import (it builds the definitions once and freezes them), as Dagster loads it
        loaded = timed(
            "load definitions",
            lambda: holder.setdefault("defs", importlib.import_module("backup_pipelines.definitions").defs),
        )
        defs = holder["defs"]
        sensor = defs.resolve_sensor_def("rpo_alerts")

        def tick() -> None:
            with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
                sensor.evaluate_tick(context)

        results = {
            "rpo sensor tick (first)": timed("rpo sensor tick (first)", tick),
            "rpo sensor tick (next)": timed("rpo sensor tick (next)", tick),
        }
        manifest = load_manifest(manifest_path)

        def report() -> None:
            statuses = gather_statuses(instance, manifest)
            now = time.time()
            frame = status_frame(statuses, now)
            (folder / "status.html").write_text(render_html(statuses, now, frame=frame))

        results["status report"] = timed("status report (gather + table + html)", report)
        reports = defs.resolve_job_def("reports")
        results["status report (reports job)"] = timed(
            "status report (reports job, its op)",
            lambda: reports.execute_in_process(instance=instance, op_selection=["backup_status"]),
        )
        if arguments.watch_job:
            results["rpo checks"] = timed(
                "rpo checks (watch job)", lambda: defs.resolve_job_def("watch").execute_in_process(instance=instance)
            )
        worst = max(results["rpo sensor tick (next)"], results["status report (reports job)"])
        print(f"target: sensor tick and status report each < 5 s: {'met' if worst < 5 else 'MISSED'}")
        goal = 5.0 if arguments.datasets <= 1000 else 30.0
        print(
            f"target: definitions load < {goal:.0f} s at {arguments.datasets}: {'met' if loaded < goal else 'MISSED'}"
        )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak memory of this process (definitions, sensor, report): {peak:.0f} MB")
        asset_count = len(defs.resolve_asset_graph().get_all_asset_keys())
        floor = dagster_floor_seconds(asset_count)
        print(f"{'dagster floor: ' + str(asset_count) + ' bare assets':<40} {floor:6.2f} s (build + snapshot)")
        if arguments.services:
            measure_services(folder, instance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
