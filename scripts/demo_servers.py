"""The demo's throw-away database servers (scripts/demo.py starts and stops them through this module).

Every loopback server of the manifest gets a sandbox on the manifest's port with the sample databases of its
datasets; the server of a postgres_cluster dataset is started where its manifest entry says, archiving its WAL
to pgBackRest. `--keep` records the servers left running in .local/demo-servers.json; `--stop` (or the next demo
run) stops them. The demo's own passwords are made once and kept in .local/secrets.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
SERVERS_FILE = LOCAL / "demo-servers.json"
sys.path.insert(0, str(ROOT))

from backup_pipelines.manifest import (  # noqa: E402
    Manifest,
    MysqlDataset,
    PostgresClusterDataset,
    PostgresDataset,
    PostgresServerConfig,
    load_manifest,
)
from backup_pipelines.sample import create_sample_database, create_sample_mysql_database  # noqa: E402
from backup_pipelines.sandbox import (  # noqa: E402
    MariadbSandbox,
    PostgresSandbox,
    start_mariadb_sandbox,
    start_postgres_sandbox,
)


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
