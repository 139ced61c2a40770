"""Benchmark: watching 1,000 datasets. Target: one RPO sensor tick and one status report each under 5 s.

Generates a manifest of N datasets, a local SQLite Dagster instance (the default), and a history of
materializations per dataset (backups with the metadata real backups record, a verify and a restore test),
then times: loading the definitions, one tick of the `rpo_alerts` sensor, the `rpo_checks` evaluation, and
the `backup_status` report (gathering + table + HTML). Run: `.venv/bin/python benchmarks/bench_monitoring.py`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402
import yaml  # noqa: E402

from backup_pipelines.crypto import generate_key_pair  # noqa: E402


def write_manifest(folder: Path, count: int) -> Path:
    recipient = generate_key_pair().recipient
    datasets = {
        f"db_{index:04d}": {
            "kind": "postgres",
            "schedule": "hourly" if index % 2 else "daily",
            "rpo": "2h" if index % 2 else "26h",
            "rto": "1h",
            "retention": {"keep_hourly": 24, "keep_daily": 30},
            "repositories": ["local"],
            "source": {"server": f"pg_{index % 20}", "database": f"db_{index}"},
        }
        for index in range(count)
    }
    manifest = {
        "encryption": {"recipients": [recipient]},
        "repositories": {"local": {"type": "local", "path": str(folder / "repo")}},
        "servers": {f"pg_{n}": {"kind": "postgres", "user": "backup"} for n in range(20)},
        "datasets": datasets,
        "reports_dir": str(folder / "reports"),
    }
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def fill_history(instance: dg.DagsterInstance, names: list[str], backups: int) -> None:
    now = datetime.now(UTC)
    tables = dg.TableSchema(columns=[dg.TableColumn("table", "string"), dg.TableColumn("rows", "int")])
    for name in names:
        for age in range(backups, 0, -1):
            created = now - timedelta(hours=age)
            records = [dg.TableRecord({"table": f"public.t{n}", "rows": 1000 + n}) for n in range(5)]
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    dg.AssetKey([name, "backup"]),
                    partition=f"{created:%Y-%m-%d-%H}:00",
                    metadata={
                        "backup_id": f"{created:%Y%m%dT%H%M%SZ}-000000",
                        "created_at": created.isoformat(),
                        "bytes_raw": 10_000_000 + age,
                        "bytes_stored": 4_000_000 + age,
                        "duration_seconds": 3.0,
                        "copies": 1,
                        "location": f"/backups/{name}",
                        "size_check": "pass",
                        "recent_sizes": [
                            [int((created - timedelta(hours=h)).timestamp()), 4_000_000 + h] for h in range(10, -1, -1)
                        ],
                        "source_row_counts": dg.MetadataValue.table(records, schema=tables),
                    },
                )
            )
        instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey([name, "verify"])))
        instance.report_runless_asset_event(
            dg.AssetMaterialization(dg.AssetKey([name, "restore_test"]), metadata={"measured_rto_seconds": 42.0})
        )


def timed(label: str, function: object) -> float:
    started = time.monotonic()
    function()  # type: ignore[operator]
    seconds = time.monotonic() - started
    print(f"{label:<40} {seconds:6.2f} s", flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=1000)
    parser.add_argument("--backups", type=int, default=5, help="backup materializations per dataset")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bp-bench-watch-") as work:
        folder = Path(work)
        (folder / "home").mkdir()
        (folder / "home" / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
        os.environ["DAGSTER_HOME"] = str(folder / "home")
        manifest_path = write_manifest(folder, arguments.datasets)
        os.environ["BACKUP_MANIFEST"] = str(manifest_path)
        from assets.reports import gather_statuses
        from backup_pipelines.definitions import build_definitions
        from backup_pipelines.manifest import load_manifest
        from backup_pipelines.status import render_html, status_frame

        instance = dg.DagsterInstance.get()
        names = [f"db_{index:04d}" for index in range(arguments.datasets)]
        started = time.monotonic()
        fill_history(instance, names, arguments.backups)
        elapsed = time.monotonic() - started
        print(f"history: {arguments.datasets} datasets x {arguments.backups} backups in {elapsed:.0f} s")
        holder: dict[str, dg.Definitions] = {}
        timed("load definitions", lambda: holder.setdefault("defs", build_definitions(manifest_path)))
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
            status_frame(statuses, now)
            (folder / "status.html").write_text(render_html(statuses, now))

        results["status report"] = timed("status report (gather + table + html)", report)
        results["rpo checks"] = timed(
            "rpo checks (watch job)", lambda: defs.resolve_job_def("watch").execute_in_process(instance=instance)
        )
        worst = max(results["rpo sensor tick (next)"], results["status report"])
        print(f"target: sensor tick and status report each < 5 s: {'met' if worst < 5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
