"""Benchmark: what a PostgreSQL backup computes beside the dump, against the budget of 15 % of its wall time.

Beside the dump a backup counts every table's rows, takes the content fingerprint (large tables sampled in key
ranges, see verification.sample_tables_above_bytes) and reads the archive to its end with pg_restore (the
archive check). This times `run_backup`, each variant in its own process, interleaved round by round:

    default: as shipped (row counts, fingerprint with its sampling default, archive check)
    whole:   the same with every table digested whole (sample_tables_above_bytes: null)
    bare:    none of the three (row counts and fingerprint off in the manifest; the archive check switched
             off in that process only, for this measurement: the product has no switch for it)

and prints min and median seconds of each, and each median against bare's with `met`/`MISSED` for the 15 %.
On a database (`--dsn`, neither created nor dropped) or one of `--size-gb` built by bench_postgres in a new
sandbox. Run on a quiet machine: `.venv/bin/python benchmarks/bench_budget.py --size-gb 1.3 --rounds 8`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import yaml  # noqa: E402
from bench_postgres import bench_dataset  # noqa: E402
from bench_target import add_target_arguments, database_target  # noqa: E402

from backup_pipelines.crypto import generate_key_pair  # noqa: E402

BUDGET = 1.15
VARIANTS = ("default", "whole", "bare")
RUN = """
import json, sys, time
from backup_pipelines import operations
from backup_pipelines.manifest import load_manifest
if sys.argv[3] == "bare":  # no archive check in this process: what the backup costs without it
    class NoCheck:
        def __init__(self, command): pass
        def close(self, failed): pass
    encode = operations.encode
    operations.ArchiveCheck = NoCheck
    operations.encode = lambda source, sink, recipients, level, check, *rest: encode(
        source, sink, recipients, level, None, *rest)
    operations._whole_archive = lambda *arguments: {}
manifest = load_manifest(sys.argv[1])
started = time.monotonic()
record = operations.run_backup(manifest, sys.argv[3], sys.argv[2]).record
print(json.dumps({"seconds": time.monotonic() - started, "checked": bool(record.source_stats.get("archive_check"))}))
"""


def write_manifest(work: Path, host: str, port: int, user: str, database: str) -> Path:
    """Write the three variants' datasets on `database` to a manifest under `work`."""
    base = bench_dataset(database, generate_key_pair().recipient)
    manifest = {
        "repositories": {"local": {"type": "local", "path": str(work / "repo")}},
        "servers": {"pg": {"kind": "postgres", "host": host, "port": port, "user": user, "password_env": "BENCH_PG"}},
        "datasets": {
            "default": base,
            "whole": {**base, "verification": {"sample_tables_above_bytes": None}},
            "bare": {**base, "verification": {"fingerprint": False, "compare_row_counts": False}},
        },
    }
    path = work / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def measure(manifest: Path, work: Path, password: str, rounds: int) -> dict[str, list[float]]:
    env = {**os.environ, "BENCH_PG": password, "PYTHONPATH": str(ROOT)}
    seconds: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for round_number in range(rounds):
        for variant in VARIANTS:
            argv = [sys.executable, "-c", RUN, str(manifest), f"2026-11-01-{round_number % 24:02d}:00", variant]
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"bench_budget: the {variant} backup failed: {done.stderr[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if result["checked"] == (variant == "bare"):
                raise SystemExit(f"bench_budget: the {variant} backup's archive check was not as intended")
            seconds[variant].append(result["seconds"])
            print(f"round {round_number + 1}/{rounds} {variant}: {result['seconds']:.2f} s", file=sys.stderr)
            shutil.rmtree(work / "repo", ignore_errors=True)
    return seconds


def report(seconds: dict[str, list[float]]) -> str:
    bare = statistics.median(seconds["bare"])
    lines = ["| variant | min s | median s | median / bare | goal | met/MISSED |", "|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        median = statistics.median(seconds[variant])
        goal, verdict = (
            ("≤ 1.15x", "met" if median / bare <= BUDGET else "MISSED") if variant == "default" else ("", "")
        )
        lines.append(
            f"| {variant} | {min(seconds[variant]):.2f} | {median:.2f} | {median / bare:.3f} | {goal} | {verdict} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(parser)
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    arguments = parser.parse_args()
    with database_target(arguments, "bench_budget") as target, tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        manifest = write_manifest(work, target.host, target.port, target.user, target.database)
        seconds = measure(manifest, work, target.password, arguments.rounds)
    print(f"\nnproc {len(os.sched_getaffinity(0))}; {arguments.rounds} interleaved rounds of run_backup\n")
    print(report(seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
