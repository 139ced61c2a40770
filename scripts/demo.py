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
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
SERVERS_FILE = LOCAL / "demo-servers.json"
DOTENV = ROOT / ".env"
sys.path.insert(0, str(ROOT))

from backup_pipelines.crypto import IDENTITY_FILE_ENV, generate_key_pair  # noqa: E402
from backup_pipelines.manifest import (  # noqa: E402
    MANIFEST_ENV,
    LocalRepositoryConfig,
    Manifest,
    MysqlDataset,
    PgBackRestRepositoryConfig,
    PostgresClusterDataset,
    PostgresDataset,
    PostgresServerConfig,
    ResticRepositoryConfig,
    load_manifest,
)
from backup_pipelines.sample import create_sample_database, create_sample_mysql_database  # noqa: E402
from backup_pipelines.sandbox import (  # noqa: E402
    MariadbSandbox,
    PostgresSandbox,
    start_mariadb_sandbox,
    start_postgres_sandbox,
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


def ensure_password(variable: str) -> str:
    if not os.environ.get(variable):
        secrets_file = LOCAL / "secrets" / variable
        if not secrets_file.exists():
            secrets_file.parent.mkdir(parents=True, exist_ok=True)
            secrets_file.write_text(secrets.token_urlsafe(18))
            secrets_file.chmod(0o600)
        os.environ[variable] = secrets_file.read_text().strip()
    return os.environ[variable]


def start_servers(manifest_path: Path) -> list[PostgresSandbox | MariadbSandbox]:
    """Start the manifest's loopback servers with their sample data; stop those started if one fails."""
    sandboxes: list[PostgresSandbox | MariadbSandbox] = []
    try:
        _start_servers(manifest_path, sandboxes)
    except BaseException:
        for sandbox in sandboxes:
            sandbox.stop()
        raise
    return sandboxes


def _start_servers(manifest_path: Path, sandboxes: list[PostgresSandbox | MariadbSandbox]) -> None:
    manifest = load_manifest(manifest_path)
    for name, server in manifest.servers.items():
        if server.host not in ("127.0.0.1", "localhost"):
            print(f"demo: server {name} is not on loopback; using it as it is")
            continue
        ensure_port_free(name, server.port)
        password = ensure_password(server.password_env) if server.password_env else "demo"
        databases = [
            d.source.database
            for d in manifest.active_datasets().values()
            if d.server_name == name and isinstance(d, PostgresDataset | MysqlDataset)
        ]
        cluster = next(
            (
                n
                for n, d in manifest.active_datasets().items()
                if isinstance(d, PostgresClusterDataset) and d.server_name == name
            ),
            None,
        )
        if isinstance(server, PostgresServerConfig) and cluster is not None:
            postgres = start_archiving_cluster(manifest, cluster, server.user, password, server.port)
            sandboxes.append(postgres)
            databases = [manifest.active_datasets()[cluster].source.marker_database]  # type: ignore[union-attr]
            create_sample_database(postgres.conninfo(), databases[0])
        elif isinstance(server, PostgresServerConfig):
            postgres = start_postgres_sandbox(user=server.user, password=password, port=server.port)
            sandboxes.append(postgres)
            for database in databases:
                create_sample_database(postgres.conninfo(), database)
        else:
            maria = start_mariadb_sandbox(user=server.user, password=password, port=server.port)
            sandboxes.append(maria)
            with maria.connect() as connection:
                for database in databases:
                    create_sample_mysql_database(connection, database)
        print(
            f"demo: started a throw-away {server.kind} server for {name} on 127.0.0.1:{server.port} "
            f"with sample database(s) {', '.join(databases)}"
        )


def start_archiving_cluster(manifest: Manifest, name: str, user: str, password: str, port: int) -> PostgresSandbox:
    """Start the throw-away cluster of postgres_cluster dataset `name` where its manifest entry says, archiving
    its WAL to pgBackRest; a new cluster gets a new repository (the last demo's belongs to another cluster)."""
    from backup_pipelines.pitr_setup import archive_settings, pitr_setup
    from backup_pipelines.repository.pgbackrest_config import render_config

    dataset = manifest.active_datasets()[name]
    assert isinstance(dataset, PostgresClusterDataset)
    settings = render_config(manifest, name)
    for folder in (*settings.local_paths, Path(dataset.source.data_directory).parent):
        shutil.rmtree(folder, ignore_errors=True)
    cipher = {}
    for index, repository in enumerate(dataset.repositories, start=1):
        variable = getattr(manifest.repositories[repository], "cipher_pass_env", None)
        if variable:
            cipher[f"PGBACKREST_REPO{index}_CIPHER_PASS"] = ensure_password(variable)
    folder = Path(dataset.source.data_directory).parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.parent.chmod(0o755)
    sandbox = start_postgres_sandbox(
        user=user,
        password=password,
        port=port,
        settings=archive_settings(settings.config_file, settings.stanza, dataset.source.archive_timeout),
        environment=cipher,
        root=folder,
    )
    try:
        if Path(dataset.source.socket_directory) != sandbox.root / "socket":
            sys.exit(f"demo: {name}'s socket_directory must be {sandbox.root / 'socket'} (the sandbox's)")
        pitr_setup(manifest, name)
    except BaseException:
        sandbox.stop()
        raise
    print(f"demo: {name} archives its WAL to pgBackRest ({settings.config_file})")
    return sandbox


def ensure_port_free(name: str, port: int) -> None:
    """Stop with a clear message when the manifest's port for a demo server is taken."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            sys.exit(
                f"demo: 127.0.0.1:{port} (servers.{name}.port in backup_manifest.yaml) is in use ({error.strerror}): "
                "stop what holds it, or choose another port there"
            )


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


def record_servers(sandboxes: list[PostgresSandbox | MariadbSandbox]) -> None:
    """Remember the servers left running (--keep), so `--stop` finds them again."""
    entries: list[dict[str, object]] = []
    for sandbox in sandboxes:
        if isinstance(sandbox, PostgresSandbox):
            entries.append(
                {"kind": "postgres", "root": str(sandbox.root), "port": sandbox.port, "bin_dir": sandbox.bin_dir}
                | {"run_as": sandbox.run_as, "user": sandbox.user}
            )
        else:
            entries.append(
                {"kind": "mysql", "root": str(sandbox.root), "port": sandbox.port, "pid": sandbox.process.pid}
            )
    SERVERS_FILE.parent.mkdir(parents=True, exist_ok=True)
    SERVERS_FILE.write_text(json.dumps(entries, indent=2) + "\n")


def stop_kept_servers() -> int:
    """Stop the servers an earlier `--keep` left running (from .local/demo-servers.json); return how many."""
    if not SERVERS_FILE.exists():
        return 0
    entries = json.loads(SERVERS_FILE.read_text())
    for entry in entries:
        root = Path(entry["root"])
        if entry["kind"] == "postgres":
            sandbox = PostgresSandbox(root, entry["port"], entry["user"], "", entry["bin_dir"], entry["run_as"])
            sandbox.stop()
        else:
            _stop_mariadb(root, int(entry["pid"]))
        print(f"demo: stopped the {entry['kind']} server on 127.0.0.1:{entry['port']} ({root})")
    SERVERS_FILE.unlink()
    return len(entries)


def _stop_mariadb(root: Path, pid: int) -> None:
    """Stop the MariaDB server of sandbox folder `root` (pid `pid`, if it is still that server) and delete it."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        command = b""
    if str(root).encode() in command:  # the pid is still our server, not a reused pid
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)


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
