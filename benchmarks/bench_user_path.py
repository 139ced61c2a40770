"""Benchmark: the product's speed as users meet it (the Dagster CLIs) against the raw tools, interleaved.

On a database (`--dsn`, neither created nor dropped; or `--size-gb`, built by bench_postgres in a new sandbox stopped at
the end) it writes a manifest (datasets `bench`, that database, and `tiny`, a 1,000-row SQLite file), age keys and a
DAGSTER_HOME, then for `--rounds` rounds times ours then raw: (1) `asset materialize bench/backup` vs `pg_dump -Fc -Z0 |
zstd -3 | age`; (2) the backup step (its record's duration_seconds) vs the same; (3) `asset materialize
bench/restore_test` vs createdb + `age -d | zstd -d | pg_restore` + dropdb; (4) the step vs `pg_dump > /dev/null` (and
once `pg_dump | gzip`); (5) `job execute protect_daily` vs raw backup + restore; (6) `asset materialize tiny/backup` vs
`definitions validate`; (7) peak RSS of each command's process tree (/proc every 50 ms); (8) its tree's CPU (getrusage
of children; this process is a subreaper, so orphans count) and the server's (postmaster /proc stat; --server-pid with
--dsn); (9) `definitions validate` of N sqlite datasets (--datasets-scale). A failing command stops it with its stderr
tail. Run on a quiet machine: `.venv/bin/python benchmarks/bench_user_path.py --size-gb 1` (or `--dsn URI`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import dagster as dg  # noqa: E402
import psycopg  # noqa: E402
import yaml  # noqa: E402
from bench_target import Target, add_target_arguments, database_target  # noqa: E402
from process_tree import BenchError, Sample, become_subreaper, run  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402
from user_path_table import table  # noqa: E402

from backup_pipelines.crypto import generate_key_pair  # noqa: E402
from backup_pipelines.engines.postgres_restore import find_bin_dir  # noqa: E402
from backup_pipelines.manifest import load_manifest  # noqa: E402
from backup_pipelines.operations import find_backup  # noqa: E402

PASSWORD_ENV = "BENCH_USER_PATH_PG_PASSWORD"
DAGSTER = str(Path(sys.executable).parent / "dagster")
MODULE = ["-m", "backup_pipelines.definitions"]


def progress(message: str) -> None:
    print(f"[bench_user_path {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def dataset(kind: str, schedule: str, rpo: str, source: dict[str, str]) -> dict[str, object]:
    """Return a manifest entry of a dataset kept daily for a week in the local repository."""
    policy = {"schedule": schedule, "rpo": rpo, "rto": "1h", "retention": {"keep_daily": 7}}
    return {"kind": kind, **policy, "repositories": ["local"], "source": source}


def write_manifest(path: Path, work: Path, datasets: Mapping[str, object], target: Target) -> Path:
    """Write to `path` a manifest of `datasets` (the repository and the recipients file are under `work`)."""
    server = {"kind": "postgres", "host": target.host, "port": target.port, "user": target.user}
    manifest = {
        "version": 1,
        "partition_start": (date.today() - timedelta(days=3)).isoformat(),
        "encryption": {"recipients_file": str(work / "recipients.txt")},
        "repositories": {"local": {"type": "local", "path": str(work / "repo")}},
        "servers": {"pg": {**server, "password_env": PASSWORD_ENV}},
        "datasets": dict(datasets),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def prepare(work: Path, target: Target) -> tuple[dict[str, str], str]:
    """Write the age keys, the tiny SQLite file, the manifest and DAGSTER_HOME under `work`; return the environment
    of our commands and the age recipient."""
    keys = generate_key_pair()
    (work / "recipients.txt").write_text(keys.recipient + "\n")
    (work / "identity.txt").write_text(keys.identity_file_text())
    with contextlib.closing(sqlite3.connect(work / "tiny.sqlite")) as connection, connection:
        connection.execute("create table if not exists items (id integer primary key, name text)")
        connection.execute("delete from items")
        connection.executemany("insert into items values (?, ?)", [(i, f"item {i}") for i in range(1000)])
    datasets = {
        "bench": dataset("postgres", "daily", "26h", {"server": "pg", "database": target.database}),
        "tiny": dataset("sqlite", "daily", "26h", {"path": str(work / "tiny.sqlite")}),
    }
    manifest = write_manifest(work / "manifest.yaml", work, datasets, target)
    (work / "dagster_home").mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", work / "dagster_home" / "dagster.yaml")
    env = {"BACKUP_MANIFEST": str(manifest), "DAGSTER_HOME": str(work / "dagster_home")}
    env |= {"BACKUP_AGE_IDENTITY_FILE": str(work / "identity.txt"), PASSWORD_ENV: target.password}
    return {**os.environ, **env}, keys.recipient


def raw_commands(work: Path, target: Target, recipient: str) -> dict[str, list[str]]:
    """Return the raw pipelines as bash commands: backup, restore, dump, gzip, backup_restore, drop_scratch."""
    q, pg = shlex.quote, find_bin_dir(None)
    connection = f"-h {q(target.host)} -p {target.port} -U {q(target.user)}"
    dump = f"{pg}/pg_dump -Fc -Z0 {connection} {q(target.database)}"
    scratch = f"bench_user_path_raw_{os.getpid()}"
    backup = f"{dump} | zstd -3 -q -c | age -r {recipient} > {q(str(work / 'raw.age'))}"
    restore = (
        f"{pg}/createdb {connection} {scratch} && age -d -i {q(str(work / 'identity.txt'))} {q(str(work / 'raw.age'))}"
        f" | zstd -d -q -c | {pg}/pg_restore --exit-on-error {connection} -d {scratch}"
        f" && {pg}/dropdb {connection} {scratch}"
    )
    scripts = {
        "backup": backup,
        "restore": restore,
        "dump": f"{dump} > /dev/null",
        "gzip": f"{dump} | gzip > {q(str(work / 'raw.gz'))}",
        "backup_restore": f"{backup} && {restore}",
        "drop_scratch": f"{pg}/dropdb --if-exists {connection} {scratch}",
    }
    return {name: ["bash", "-o", "pipefail", "-c", script] for name, script in scripts.items()}


def measure(arguments: argparse.Namespace, target: Target, work: Path) -> str:
    """Time lines 1 to 8 against `target`, then line 9, with every file under `work`; return the table."""
    env, recipient = prepare(work, target)
    raw_env, raw = {**os.environ, "PGPASSWORD": target.password}, raw_commands(work, target, recipient)
    conninfo = make_conninfo(host=target.host, port=target.port, user=target.user, password=target.password)
    with psycopg.connect(conninfo, dbname=target.database) as connection:
        size_row = connection.execute("select pg_database_size(current_database())").fetchone()
    size_bytes = int(size_row[0]) if size_row else 0
    start = load_manifest(work / "manifest.yaml").partition_start.isoformat()
    partition = dg.DailyPartitionsDefinition(start_date=start, timezone="UTC").get_last_partition_key() or ""
    samples: dict[str, list[Sample]] = {}
    stored: dict[str, int] = {}
    backup_ids: set[str] = set()

    def timed(name: str, argv: list[str], command_env: Mapping[str, str]) -> None:
        samples.setdefault(name, []).append(run(argv, command_env, target.server_pid))

    def materialize(key: str) -> list[str]:
        return [DAGSTER, "asset", "materialize", *MODULE, "--select", f"key:{key}", "--partition", partition]

    protect = [DAGSTER, "job", "execute", *MODULE, "-j", "protect_daily"]
    protect += ["--tags", json.dumps({"dagster/partition": partition})]
    progress(f"database {target.database}: {size_bytes / 1e9:.2f} GB; partition {partition}; work {work}")
    run(raw["dump"], raw_env, None)  # warm-up, untimed: the first dump may read the tables from disk
    try:
        for round_number in range(1, arguments.rounds + 1):
            progress(f"round {round_number}/{arguments.rounds}: backup, restore test, dump alone")
            timed("ours_backup", materialize("bench/backup"), env)
            timed("raw_backup", raw["backup"], raw_env)
            record = find_backup(load_manifest(work / "manifest.yaml"), "bench", partition_key=partition)
            if record.backup_id in backup_ids:
                raise BenchError(f"the backup command made no new backup (the newest is still {record.backup_id})")
            backup_ids.add(record.backup_id)
            stored["ours"] = record.bytes_stored
            samples.setdefault("ours_step", []).append(Sample(record.duration_seconds))
            timed("ours_restore", materialize("bench/restore_test"), env)
            timed("raw_restore", raw["restore"], raw_env)
            timed("raw_dump", raw["dump"], raw_env)
            progress(f"round {round_number}/{arguments.rounds}: protect_daily, tiny backup")
            timed("ours_protect", protect, env)
            timed("raw_protect", raw["backup_restore"], raw_env)
            timed("ours_tiny", materialize("tiny/backup"), env)
            timed("raw_validate", [DAGSTER, "definitions", "validate", *MODULE], env)
        if not arguments.skip_gzip:
            progress("pg_dump | gzip, once")
            timed("raw_gzip", raw["gzip"], raw_env)
            stored["gzip"] = (work / "raw.gz").stat().st_size
    finally:
        subprocess.run(raw["drop_scratch"], env=raw_env, capture_output=True, check=False)
    stored["raw"] = (work / "raw.age").stat().st_size
    for count in [int(value) for value in arguments.datasets_scale.split(",") if value.strip()]:
        manifest = write_manifest(work / f"scale_{count}" / "manifest.yaml", work, scale_datasets(count), target)
        progress(f"definitions validate of {count:,} datasets (can take minutes)")
        scale_env = {**env, "BACKUP_MANIFEST": str(manifest)}  # no server is touched: its CPU is not read
        samples[f"scale_{count}"] = [run([DAGSTER, "definitions", "validate", *MODULE], scale_env, None)]
        progress(f"definitions validate of {count:,} datasets: {samples[f'scale_{count}'][0].seconds:.1f} s")
    return table(samples, size_bytes, stored)


def scale_datasets(count: int) -> dict[str, object]:
    """Return `count` sqlite datasets (their files need not exist), hourly, daily and every 6 hours in turn."""
    schedules = [("hourly", "2h"), ("daily", "26h"), ("30 */6 * * *", "7h")]
    return {
        f"tiny_{index:05d}": dataset("sqlite", *schedules[index % 3], {"path": f"missing/tiny_{index}.sqlite"})
        for index in range(count)
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved ours/raw pairs per line (default 3)")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one, removed at the end)")
    parser.add_argument("--datasets-scale", default="1000,10000", help="dataset counts of line 9; '' skips it")
    parser.add_argument("--skip-gzip", action="store_true", help="skip the one pg_dump | gzip run")
    parser.add_argument("--server-pid", type=int, help="the --dsn server's postmaster pid, for its CPU time")
    arguments = parser.parse_args()
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(database_target(arguments, "bench_user_path", arguments.server_pid))
        become_subreaper()  # after the sandbox started: its postmaster must not become our child
        work = arguments.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-user-path-")))
        work = work.resolve()
        work.mkdir(parents=True, exist_ok=True)
        report = measure(arguments, target, work)
    loads = [" ".join(f"{value:.2f}" for value in load) for load in (load_before, os.getloadavg())]
    print(f"\nMachine: nproc {len(os.sched_getaffinity(0))}; load average before {loads[0]}, after {loads[1]}; "
          f"{arguments.rounds} round(s) of interleaved pairs, ours first.\n")  # fmt: skip
    print(report)
    print("\nRaw compresses with `zstd -3` on one thread, ours with its defaults (zstd level 1 on every core).")
    print("Server CPU is the postmaster's and its ended backends': on a shared server it includes others' work.")
    if target.server_pid is None:
        print("Server CPU not measured: the server's postmaster pid is unknown (pass --server-pid).")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        sys.exit(f"bench_user_path: {error}")
