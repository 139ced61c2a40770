"""Benchmark: postgres_cluster base backups and restores to a moment against pgBackRest run by hand.

Builds a cluster archiving its WAL to an encrypted pgBackRest repository, fills a database of realistic,
poorly compressible rows (the rows of bench_postgres.py) to the given size, then times, alternating ours and
raw (A B A B):

    backup:  ours = `backup-pipelines`' base backup of the dataset (run_backup: marker row, stanza-create,
                    pgbackrest backup --type=full annotated, info)
             raw  = pgbackrest --stanza=... backup --type=full
    restore: ours = `backup-pipelines pitr-restore --time T` + starting the copy + waiting until it promoted
             raw  = pgbackrest restore --type=time --target=T + the same start and wait

The restore's wall time is the restore-to-time RTO. Prints each side's best, the ratios and the stored size.
Run: `.venv/bin/python benchmarks/bench_pitr.py --size 1.3 --rounds 3` (as root, or as the postgres user).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import yaml  # noqa: E402

from backup_pipelines.engines.pitr_server import temporary_server, wait_promoted  # noqa: E402
from backup_pipelines.engines.postgres import connect  # noqa: E402
from backup_pipelines.manifest import load_manifest  # noqa: E402
from backup_pipelines.operations import run_backup  # noqa: E402
from backup_pipelines.pitr_setup import archive_settings, pitr_setup  # noqa: E402
from backup_pipelines.repository.pgbackrest import pgbackrest_command  # noqa: E402
from backup_pipelines.repository.pgbackrest_config import render_config, secret_environment  # noqa: E402
from backup_pipelines.sandbox import start_postgres_sandbox  # noqa: E402
from backup_pipelines.system_user import owned_scratch  # noqa: E402
from benchmarks.bench_postgres import build_database  # noqa: E402

CIPHER = "bench-cipher-pass"
STANZA = "bench"


def write_manifest(work: Path, port: int, user: str, root: Path) -> Path:
    manifest = {
        "repositories": {"pitr": {"type": "pgbackrest", "path": str(work / "repo"), "cipher_pass_env": "BENCH_CIPHER"}},
        "servers": {"pg": {"kind": "postgres", "port": port, "user": user, "password_env": "BENCH_PG"}},
        "datasets": {
            "cluster": {
                "kind": "postgres_cluster",
                "schedule": "hourly",
                "rpo": "10m",
                "rto": "1h",
                "retention": {"keep_last": 1},
                "repositories": ["pitr"],
                "source": {
                    "server": "pg",
                    "data_directory": str(root / "data"),
                    "socket_directory": str(root / "socket"),
                    "stanza": STANZA,
                    "config_file": str(work / "pgbackrest.conf"),
                },
            }
        },
    }
    path = work / "m.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def raw(manifest_path: Path, *arguments: str) -> float:
    manifest = load_manifest(manifest_path)
    settings = render_config(manifest, "cluster")
    command = pgbackrest_command(settings, secret_environment(manifest, "cluster"), *arguments)
    started = time.monotonic()
    subprocess.run(command.argv, env={**os.environ, **command.env}, check=True, capture_output=True)
    return time.monotonic() - started


def started_and_promoted(data: Path, bin_dir: str, conninfo: dict[str, object]) -> float:
    """Start a server on the restored `data`, wait until it promoted; return the seconds it took."""
    manifest_server = conninfo["server"]
    started = time.monotonic()
    with temporary_server(
        data, f"{bin_dir}/pg_ctl", "postgres", 3600, {"PGBACKREST_REPO1_CIPHER_PASS": CIPHER}
    ) as server:
        local = manifest_server.model_copy(update={"port": server.port, "sslmode": "disable"})  # type: ignore[attr-defined]
        wait_promoted(lambda: connect(local, "postgres", str(conninfo["password"])), server, 3600)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=1.3, help="database size in GB")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best time of each side is kept")
    arguments = parser.parse_args()
    work = owned_scratch("postgres", "bp-bench-pitr-")
    os.chmod(work, 0o755)
    os.environ.update({"BENCH_CIPHER": CIPHER, "BENCH_PG": "bench"})
    settings = archive_settings(work / "pgbackrest.conf", STANZA, timedelta(seconds=30))
    sandbox = start_postgres_sandbox(
        password="bench", settings=settings, environment={"PGBACKREST_REPO1_CIPHER_PASS": CIPHER}
    )
    results: dict[str, list[float]] = {"ours_backup": [], "raw_backup": [], "ours_restore": [], "raw_restore": []}
    try:
        manifest_path = write_manifest(work, sandbox.port, sandbox.user, sandbox.root)
        manifest = load_manifest(manifest_path)
        pitr_setup(manifest, "cluster")
        size = build_database(sandbox, "bench_pitr", arguments.size)
        server = manifest.servers["pg"]
        stored = 0
        for round_number in range(arguments.rounds):
            seconds = raw(manifest_path, "backup", "--type=full", "--repo=1")
            results["raw_backup"].append(seconds)
            started = time.monotonic()
            record = run_backup(manifest, "cluster", f"2026-11-{1 + round_number * 7:02d}-00:00").record
            results["ours_backup"].append(time.monotonic() - started)
            stored = record.source_stats["bytes_repository"]
            with psycopg.connect(sandbox.conninfo("bench_pitr"), autocommit=True) as connection:
                connection.execute("create table if not exists after_backup (at timestamptz)")
                connection.execute("insert into after_backup values (clock_timestamp())")
                time.sleep(2)
                moment = datetime.now(UTC)
                time.sleep(2)
                connection.execute("insert into after_backup values (clock_timestamp())")
            pitr_setup(manifest, "cluster")  # pgbackrest check: the WAL past the moment is archived
            target = moment.strftime("%Y-%m-%d %H:%M:%S.%f+00")
            for side in ("raw", "ours"):
                folder = owned_scratch("postgres", "bp-bench-pitr-")
                data = folder / "data"
                started = time.monotonic()
                if side == "raw":
                    raw(
                        manifest_path,
                        "restore",
                        f"--pg1-path={data}",
                        "--type=time",
                        f"--target={target}",
                        "--target-action=promote",
                        "--archive-mode=off",
                        "--repo=1",
                    )
                else:
                    subprocess.run(
                        [
                            str(ROOT / ".venv/bin/backup-pipelines"),
                            "--manifest",
                            str(manifest_path),
                            "pitr-restore",
                            "cluster",
                            "--data-directory",
                            str(data),
                            "--time",
                            moment.isoformat(),
                        ],
                        check=True,
                        capture_output=True,
                        env=os.environ,
                    )
                started_and_promoted(data, sandbox.bin_dir, {"server": server, "password": sandbox.password})
                results[f"{side}_restore"].append(time.monotonic() - started)
                shutil.rmtree(folder, ignore_errors=True)
            print(json.dumps({name: round(values[-1], 2) for name, values in results.items()}), flush=True)
    finally:
        sandbox.stop()
        shutil.rmtree(work, ignore_errors=True)
    best = {name: min(values) for name, values in results.items()}
    print(f"\ncluster database {size / 1e9:.2f} GB, newest full backup stored {stored / 1e6:.0f} MB (zstd, aes-256)")
    print(f"{'':14} {'ours s':>8} {'raw s':>8} {'ratio':>6}")
    for what in ("backup", "restore"):
        ours, theirs = best[f"ours_{what}"], best[f"raw_{what}"]
        print(f"{what:14} {ours:>8.2f} {theirs:>8.2f} {ours / theirs:>6.3f}")
    print(f"restore-to-time RTO (ours, restore + recovery to the moment + promotion): {best['ours_restore']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
