"""The main job on the embedded default (run by scripts/demo.sh).

1. Generate a demo age key pair in .local/keys (ignored by git) if there is none.
2. Start a throw-away PostgreSQL for every loopback server of the manifest, on the manifest's port, and fill
   each dataset's database with sample data.
3. Run `dagster job execute` of `protect_<cadence>` for the newest complete partition of every cadence, on a
   local SQLite Dagster instance in .local/dagster_home.
4. Print where each backup lives, its size, and how long each step took. Stop the servers (unless --keep).
5. Write `.env` (git-ignored) with the demo's passwords, BACKUP_AGE_IDENTITY_FILE and DAGSTER_HOME: `dagster dev`
   loads it from the folder it runs in, so runs launched from the UI find the demo's secrets.

`--keep` records the servers it leaves running in .local/demo-servers.json; `--stop` stops them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
DOTENV = ROOT / ".env"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # demo_servers.py beside this file

from demo_servers import (  # noqa: E402
    ensure_password,
    record_servers,
    start_servers,
    stop_kept_servers,
)

from backup_pipelines.crypto import IDENTITY_FILE_ENV, generate_key_pair  # noqa: E402
from backup_pipelines.manifest import (  # noqa: E402
    MANIFEST_ENV,
    LocalRepositoryConfig,
    PgBackRestRepositoryConfig,
    ResticRepositoryConfig,
    load_manifest,
)


def ensure_keys() -> Path:
    keys = LOCAL / "keys"
    identity_file = keys / "age-identity.txt"
    if not identity_file.exists():
        keys.mkdir(parents=True, exist_ok=True)
        pair = generate_key_pair()
        identity_file.write_text(pair.identity_file_text())
        identity_file.chmod(0o600)
        (keys / "age-recipients.txt").write_text(pair.recipient + "\n")
        print(f"demo: generated an age key pair in {keys}")
    return identity_file


def ensure_demo_files() -> None:
    """Sample sources for the server-less example datasets: a SQLite database and a folder of secrets."""
    import sqlite3
    from contextlib import closing

    demo = LOCAL / "demo"
    (demo / "secrets").mkdir(parents=True, exist_ok=True)
    (demo / "nginx" / "sites-enabled").mkdir(parents=True, exist_ok=True)
    (demo / "nginx" / "nginx.conf").write_text("worker_processes auto;\nevents { worker_connections 1024; }\n")
    for site in ("shop", "api", "status"):
        (demo / "nginx" / "sites-enabled" / f"{site}.conf").write_text(
            f"server {{ listen 443 ssl; server_name {site}.example.com; }}\n"
        )
    for index in range(5):
        (demo / "secrets" / f"service-{index}.token").write_text(secrets.token_hex(32) + "\n")
    if not (demo / "notes.sqlite").exists():
        with closing(sqlite3.connect(demo / "notes.sqlite")) as connection:
            connection.execute("create table notes (id integer primary key, body text, created_at text)")
            connection.executemany(
                "insert into notes (body, created_at) values (?, datetime('now'))",
                [(f"note {n}: remember the restore test ✓",) for n in range(500)],
            )
            connection.commit()


def ensure_repository_folders(manifest_path: Path) -> None:
    """Create the folders of the manifest's local repositories (the primary and the off-site copy)."""
    manifest = load_manifest(manifest_path)
    for repository in manifest.repositories.values():
        if isinstance(repository, LocalRepositoryConfig):
            manifest.resolve_path(repository.path).mkdir(parents=True, exist_ok=True)


def run_jobs(manifest_path: Path, environment: dict[str, str]) -> list[str]:
    from assets.jobs import cadences

    manifest = load_manifest(manifest_path)
    failed = []
    runs = [(f"protect_{c.name}", c.partitions_def.get_last_partition_key()) for c in cadences(manifest)]
    for job, partition_key in [*runs, ("reports", None)]:
        print(f"demo: dagster job execute -j {job}" + (f" (partition {partition_key})" if partition_key else ""))
        tags = ["--tags", json.dumps({"dagster/partition": partition_key})] if partition_key else []
        command = [str(ROOT / ".venv/bin/dagster"), "job", "execute", "-m", "backup_pipelines.definitions", "-j", job]
        completed = subprocess.run([*command, *tags], cwd=ROOT, env=environment, capture_output=True, text=True)
        (LOCAL / f"{job}.log").write_text(completed.stdout + completed.stderr)
        if completed.returncode != 0:
            failed.append(job)
            print(f"demo: {job} FAILED, log in {LOCAL / f'{job}.log'}")
    return failed


def print_summary(manifest_path: Path) -> None:
    import dagster as dg

    from assets.keys import DatasetKeys

    manifest = load_manifest(manifest_path)
    reports = manifest.resolve_path(manifest.reports_dir)
    print(f"\ndashboard: {reports / 'backup_status.html'}\nDR runbook: {reports / 'dr_runbook.md'}")
    instance = dg.DagsterInstance.get()
    for name in manifest.active_datasets():
        keys = DatasetKeys(name)
        print(f"\n{name}")
        for label, key in (
            ("backup", keys.backup),
            ("verify", keys.verify),
            ("restore_test", keys.restore_test),
        ):
            event = instance.get_latest_materialization_event(key)
            if event is None or event.asset_materialization is None:
                print(f"  {label:<13} not materialized")
                continue
            metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
            step_seconds = _step_seconds(instance, event.run_id, key)
            line = f"  {label:<13} partition {event.asset_materialization.partition}  step {step_seconds:.2f}s"
            if label == "backup":
                line += (
                    f"  {metadata['bytes_raw']:,} B raw -> {metadata['bytes_stored']:,} B stored"
                    f"  at {metadata['location']}"
                )
            if label == "verify":
                archive_check: dict[str, Any] = metadata["archive_check"]  # type: ignore[assignment]
                archive = ", ".join(f"{k} {v}" for k, v in archive_check.items())
                copies = int(str(metadata["copies_verified"]))
                line += f"  {copies} {'copy' if copies == 1 else 'copies'} verified ({archive})"
            if label == "restore_test":
                line += (
                    f"  restore {metadata['restore_seconds']}s + validation {metadata['validation_seconds']}s"
                    f" (RTO {metadata['rto_target']}), {metadata['checks_passed']}/"
                    f"{metadata['checks_total']} checks passed"
                )
            print(line)


def _step_seconds(instance: object, run_id: str, key: object) -> float:
    step_key = "__".join(key.path)  # type: ignore[attr-defined]
    for stats in instance.get_run_step_stats(run_id):  # type: ignore[attr-defined]
        if stats.step_key == step_key and stats.end_time and stats.start_time:
            return float(stats.end_time - stats.start_time)
    return 0.0


def write_dotenv(path: Path, variables: dict[str, str]) -> None:
    """Write `variables` as a `.env` file (owner-only) at `path`: what `dagster dev` loads from its folder."""
    lines = ["# Written by scripts/demo.py for `dagster dev` (which loads .env from its folder). Git-ignored."]
    # single quotes: python-dotenv takes the value as it is, but for \\ and \' (any UTF-8 stays as it is)
    lines += [f"{name}='{_dotenv_quote(value)}'" for name, value in sorted(variables.items())]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def _dotenv_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def demo_environment(manifest_path: Path, dagster_home: Path) -> dict[str, str]:
    """Return what a run of the demo's datasets needs from the environment: the manifest, the instance, the
    age identity and every password the manifest names that the demo holds."""
    manifest = load_manifest(manifest_path)
    names = {server.password_env for server in manifest.servers.values() if server.password_env}
    names |= {repo.password_env for repo in manifest.repositories.values() if isinstance(repo, ResticRepositoryConfig)}
    names |= {
        repo.cipher_pass_env
        for repo in manifest.repositories.values()
        if isinstance(repo, PgBackRestRepositoryConfig) and repo.cipher_pass_env
    }
    values = {name: os.environ[name] for name in sorted(names) if os.environ.get(name)}
    return {
        **values,
        "DAGSTER_HOME": str(dagster_home),
        MANIFEST_ENV: str(manifest_path),
        IDENTITY_FILE_ENV: os.environ[IDENTITY_FILE_ENV],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the database servers running (for the UI)")
    parser.add_argument("--stop", action="store_true", help="stop the servers an earlier --keep left running")
    arguments = parser.parse_args()
    if arguments.stop:
        if not stop_kept_servers():
            print("demo: no kept servers to stop")
        return 0
    if stop_kept_servers():  # their ports are the manifest's: the new servers need them
        print("demo: stopped the servers the last --keep left running")
    manifest_path = Path(os.environ.get(MANIFEST_ENV) or ROOT / "backup_manifest.yaml").resolve()
    identity_file = ensure_keys()
    dagster_home = LOCAL / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    os.environ.update({"DAGSTER_HOME": str(dagster_home), MANIFEST_ENV: str(manifest_path)})
    os.environ.setdefault(IDENTITY_FILE_ENV, str(identity_file))
    ensure_demo_files()
    for variable in ("RESTIC_DEMO_PASSWORD",):
        ensure_password(variable)
    ensure_repository_folders(manifest_path)
    sandboxes = start_servers(manifest_path)
    # Dagster applies .env over the environment of every dagster command run here: it must not carry the
    # manifest path (the default, ./backup_manifest.yaml, is the demo's), which would override a BACKUP_MANIFEST
    # a user or a test sets on purpose.
    dotenv = {
        name: value for name, value in demo_environment(manifest_path, dagster_home).items() if name != MANIFEST_ENV
    }
    write_dotenv(DOTENV, dotenv)
    try:
        failed = run_jobs(manifest_path, dict(os.environ))
        print_summary(manifest_path)
    finally:
        if arguments.keep:
            record_servers(sandboxes)
            print("\ndemo: servers left running (--keep); stop them with: bash scripts/demo.sh --stop")
        else:
            for sandbox in sandboxes:
                sandbox.stop()
    print(f"\nDagster UI with this history (secrets from {DOTENV.name}): make dev, or .venv/bin/dagster dev")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
