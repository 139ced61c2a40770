"""Benchmark: our PostgreSQL backup and restore test against the raw tools, on the same database, in one run.

For each size it builds a database of realistic, poorly compressible rows (ids, timestamps, random text and
random bytes), then times, alternating ours and raw:

    backup:  ours = run_backup (pg_dump -Fc -Z0 | zstd | age in-process | sha256 | local repository)
             raw  = bash -c 'pg_dump -Fc -Z0 | zstd -3 | age -r R > file'
    restore: ours = restore_test_backup (scratch database, age | zstd -d | pg_restore, row counts, drop)
             raw  = createdb; bash -c 'age -d -i I file | zstd -d | pg_restore -d db'; dropdb

and prints the ratios and our process's peak memory (ru_maxrss of the Python process running the backup or
the restore test; the external tools are the same in both pipelines). It also times our backup and restore
test with the content fingerprint and the globals script turned off (`verification.fingerprint: false`,
`source.globals: false`), interleaved, and prints what the fingerprint costs (target: at most 15 % of the
backup's wall time). Run: `bash scripts/bench.sh --sizes 0.5,2`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import yaml  # noqa: E402

from backup_pipelines.crypto import generate_key_pair  # noqa: E402
from backup_pipelines.sandbox import PostgresSandbox, start_postgres_sandbox  # noqa: E402

ROW_SQL = """
insert into bench.events (id, created_at, account, kind, payload, digest)
select g, timestamptz '2026-01-01' + g * interval '1 second', (random() * 1e6)::int,
       (array['login','purchase','refund','view','logout'])[1 + (g %% 5)],
       md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text),
       decode(md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex')
from generate_series(%s, %s) g
"""


def build_database(sandbox: PostgresSandbox, name: str, size_gb: float) -> int:
    """Create database `name` of at least `size_gb` GB; return its size in bytes."""
    with psycopg.connect(sandbox.conninfo(), autocommit=True) as admin:
        admin.execute(f"drop database if exists {name}")
        admin.execute(f"create database {name}")
    target = int(size_gb * 1e9)
    with psycopg.connect(sandbox.conninfo(name), autocommit=True) as connection:
        connection.execute("create schema bench")
        connection.execute(
            "create table bench.events (id bigint primary key, created_at timestamptz, account int, kind text, "
            "payload text, digest bytea)"
        )
        next_id, batch = 1, 500_000
        while (size := connection.execute("select pg_database_size(current_database())").fetchone()[0]) < target:
            connection.execute(ROW_SQL, (next_id, next_id + batch - 1))
            next_id += batch
        connection.execute("analyze")
    return int(size)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    completed = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed: {completed.stderr[-2000:]}")
    return time.monotonic() - started, completed.stdout


def bench_dataset(database: str, recipient: str) -> dict[str, object]:
    """The benchmarks' postgres dataset on server "pg": hourly, its newest backup kept, in the local repository,
    encrypted to `recipient`."""
    return {
        "kind": "postgres",
        "schedule": "hourly",
        "rpo": "1h",
        "rto": "1h",
        "retention": {"keep_last": 1},
        "repositories": ["local"],
        "encryption": {"recipients": [recipient]},
        "source": {"server": "pg", "database": database},
    }


OURS = """
import json, resource, sys, time
from backup_pipelines.manifest import load_manifest
from backup_pipelines.operations import run_backup, restore_test_backup, find_backup
manifest = load_manifest(sys.argv[2])
started = time.monotonic()
if sys.argv[1] == "backup":
    record = run_backup(manifest, sys.argv[4], sys.argv[3]).record
    extra = {"bytes_raw": record.bytes_raw, "bytes_stored": record.bytes_stored}
else:
    report = restore_test_backup(manifest, sys.argv[4], find_backup(manifest, sys.argv[4], partition_key=sys.argv[3]))
    extra = {"restore_seconds": report.restore_seconds, "failures": len(report.failures)}
print(json.dumps({"seconds": time.monotonic() - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}))
"""


def run_size(sandbox: PostgresSandbox, size_gb: float, work: Path, rounds: int) -> dict[str, float]:
    database = f"bench_{str(size_gb).replace('.', '_')}"
    size = build_database(sandbox, database, size_gb)
    keys = generate_key_pair()
    (work / "identity.txt").write_text(keys.identity_file_text())
    manifest = {
        "repositories": {"local": {"type": "local", "path": str(work / "repo")}},
        "servers": {"pg": {"kind": "postgres", "port": sandbox.port, "user": sandbox.user, "password_env": "BENCH_PG"}},
        "datasets": {"bench": bench_dataset(database, keys.recipient)},
    }
    manifest["datasets"]["bench_plain"] = {
        **manifest["datasets"]["bench"],  # type: ignore[dict-item]
        "verification": {"fingerprint": False},
        "source": {"server": "pg", "database": database, "globals": False},
    }
    (work / "m.yaml").write_text(yaml.safe_dump(manifest))
    env = {
        "BENCH_PG": sandbox.password,
        "PGPASSWORD": sandbox.password,
        "BACKUP_AGE_IDENTITY_FILE": str(work / "identity.txt"),
    }
    pg = sandbox.bin_dir
    connection = f"-h 127.0.0.1 -p {sandbox.port} -U {sandbox.user}"
    raw_backup = (
        f"{pg}/pg_dump -Fc -Z0 {connection} {database} | zstd -3 -q -c | age -r {keys.recipient} > {work}/raw.age"
    )
    raw_restore = (
        f"age -d -i {work}/identity.txt {work}/raw.age | zstd -d -q -c | "
        f"{pg}/pg_restore --no-owner --exit-on-error {connection} -d bench_raw_restore"
    )
    results: dict[str, list[float]] = {
        name: []
        for name in ("ours_backup", "raw_backup", "ours_restore", "raw_restore", "plain_backup", "plain_restore")
    }
    peaks: list[float] = []
    for round_number in range(rounds):
        partition = f"2026-11-01-{round_number:02d}:00"
        seconds, _ = timed(["bash", "-o", "pipefail", "-c", raw_backup], env)
        results["raw_backup"].append(seconds)
        _, output = timed([sys.executable, "-c", OURS, "backup", str(work / "m.yaml"), partition, "bench_plain"], env)
        results["plain_backup"].append(json.loads(output)["seconds"])
        _, output = timed([sys.executable, "-c", OURS, "backup", str(work / "m.yaml"), partition, "bench"], env)
        ours = json.loads(output)
        results["ours_backup"].append(ours["seconds"])
        peaks.append(ours["peak_rss_mb"])
        timed([f"{pg}/createdb", *connection.split(), "bench_raw_restore"], env)
        seconds, _ = timed(["bash", "-o", "pipefail", "-c", raw_restore], env)
        results["raw_restore"].append(seconds)
        timed([f"{pg}/dropdb", *connection.split(), "bench_raw_restore"], env)
        _, output = timed([sys.executable, "-c", OURS, "restore", str(work / "m.yaml"), partition, "bench_plain"], env)
        results["plain_restore"].append(json.loads(output)["seconds"])
        _, output = timed([sys.executable, "-c", OURS, "restore", str(work / "m.yaml"), partition, "bench"], env)
        restored = json.loads(output)
        assert restored["failures"] == 0, restored
        results["ours_restore"].append(restored["seconds"])
        peaks.append(restored["peak_rss_mb"])
        shutil.rmtree(work / "repo", ignore_errors=True)
    best = {name: min(values) for name, values in results.items()}
    with psycopg.connect(sandbox.conninfo(), autocommit=True) as admin:
        admin.execute(f"drop database {database}")
    return {
        "database_gb": size / 1e9,
        "dump_bytes_raw": ours["bytes_raw"],
        "stored_bytes": ours["bytes_stored"],
        **best,
        "backup_ratio": best["ours_backup"] / best["raw_backup"],
        "restore_ratio": best["ours_restore"] / best["raw_restore"],
        "fingerprint_backup_cost": best["ours_backup"] / best["plain_backup"],
        "fingerprint_restore_cost": best["ours_restore"] / best["plain_restore"],
        "peak_rss_mb": max(peaks),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.5,2", help="database sizes in GB, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per size; the best time of each is kept")
    arguments = parser.parse_args()
    sandbox = start_postgres_sandbox(password="bench")
    rows = []
    try:
        for size in (float(value) for value in arguments.sizes.split(",")):
            with tempfile.TemporaryDirectory(prefix="bp-bench-") as work:
                row = run_size(sandbox, size, Path(work), arguments.rounds)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        sandbox.stop()
    print(
        f"\n{'db GB':>6} {'dump MB':>9} {'stored MB':>9} {'ours bk s':>9} {'raw bk s':>9} {'ratio':>6} "
        f"{'ours rs s':>9} {'raw rs s':>9} {'ratio':>6} {'peak MB':>8}"
    )
    for row in rows:
        print(
            f"{row['database_gb']:>6.2f} {row['dump_bytes_raw'] / 1e6:>9.0f} {row['stored_bytes'] / 1e6:>9.0f} "
            f"{row['ours_backup']:>9.2f} {row['raw_backup']:>9.2f} {row['backup_ratio']:>6.3f} "
            f"{row['ours_restore']:>9.2f} {row['raw_restore']:>9.2f} {row['restore_ratio']:>6.3f} "
            f"{row['peak_rss_mb']:>8.1f}"
        )
    for row in rows:
        print(
            f"{row['database_gb']:>6.2f} GB: without fingerprint backup {row['plain_backup']:.2f} s, restore test "
            f"{row['plain_restore']:.2f} s; fingerprint costs backup x{row['fingerprint_backup_cost']:.3f}, "
            f"restore test x{row['fingerprint_restore_cost']:.3f}"
        )
    print(
        "targets: backup ratio <= 1.10, restore ratio <= 1.15, peak memory flat and < 200 MB, "
        "fingerprint backup cost <= 1.15"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
