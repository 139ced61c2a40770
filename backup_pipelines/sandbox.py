"""Throw-away local PostgreSQL and MariaDB servers for the demo, the tests and the benchmarks.

A sandbox is a fresh cluster (initdb) in a temporary folder, listening on 127.0.0.1 and a private socket
directory only, with password (SCRAM) authentication for one superuser. As root it runs as the `postgres`
system user, since initdb and pg_ctl refuse to run as root. `stop()` removes everything.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backup_pipelines.engines.postgres_restore import find_bin_dir
from backup_pipelines.ports import free_port


@dataclass
class PostgresSandbox:
    """A running throw-away PostgreSQL cluster. Use `start_postgres_sandbox()` to make one."""

    root: Path
    port: int
    user: str
    password: str
    bin_dir: str
    run_as: str | None

    host: str = "127.0.0.1"

    def _command(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else list(argv)

    def pg_ctl(self, *arguments: str, environment: dict[str, str] | None = None) -> None:
        subprocess.run(
            self._command(f"{self.bin_dir}/pg_ctl", "-D", str(self.root / "data"), *arguments),
            check=True,
            capture_output=True,
            timeout=120,
            env={**os.environ, **(environment or {})},
        )

    def conninfo(self, database: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} password={self.password} dbname={database}"

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its folder."""
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.pg_ctl("stop", "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres_sandbox(
    user: str = "backup",
    password: str = "sandbox-password",
    port: int | None = None,
    settings: dict[str, str] | None = None,
    environment: dict[str, str] | None = None,
    root: Path | None = None,
) -> PostgresSandbox:
    """Create and start a new PostgreSQL cluster on loopback `port` (default: a free one); return it.
    `settings` are extra server settings (e.g. WAL archiving: the cluster's data is then kept consistent on
    disk, with full_page_writes on); `environment` is added to the server's (what its archive_command needs);
    `root` is the new folder to keep it in (default: a new temporary one), when a manifest must name its path.

    Raise RuntimeError naming the missing package if the PostgreSQL server binaries are not installed,
    or CalledProcessError (with the server's log) if the cluster fails to start.
    """
    bin_dir = find_bin_dir(None)
    if bin_dir is None or not os.path.exists(f"{bin_dir}/initdb"):
        raise RuntimeError("PostgreSQL server binaries not found: install the postgresql package")
    run_as = "postgres" if os.geteuid() == 0 else None
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="bp-postgres-"))
    else:
        root.mkdir(parents=True, mode=0o700)
    if run_as:
        account = pwd.getpwnam(run_as)
        os.chown(root, account.pw_uid, account.pw_gid)
    sandbox = PostgresSandbox(root, port or free_port(), user, password, bin_dir, run_as)
    password_file = root / "pwfile"
    password_file.write_text(password + "\n")
    if run_as:
        os.chown(password_file, account.pw_uid, account.pw_gid)
    (root / "socket").mkdir()
    if run_as:
        os.chown(root / "socket", account.pw_uid, account.pw_gid)
    subprocess.run(
        sandbox._command(
            f"{bin_dir}/initdb",
            "-D",
            str(root / "data"),
            "-U",
            user,
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ),
        check=True,
        capture_output=True,
        timeout=300,
    )
    options = (
        f"-c listen_addresses=127.0.0.1 -p {sandbox.port} -k {root / 'socket'} -c fsync=off "
        "-c synchronous_commit=off -c max_connections=50 "
    )
    options += " ".join(f"-c {key}={shlex.quote(value)}" for key, value in (settings or {}).items())
    if not settings:
        options += "-c full_page_writes=off"
    try:
        sandbox.pg_ctl(
            "-l", str(root / "server.log"), "-o", options, "-w", "-t", "60", "start", environment=environment
        )
    except subprocess.CalledProcessError as error:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL sandbox failed to start: {error.stderr!r}\n{log}") from error
    return sandbox


@dataclass
class MariadbSandbox:
    """A running throw-away MariaDB server. Use `start_mariadb_sandbox()` to make one."""

    root: Path
    port: int
    user: str
    password: str
    process: subprocess.Popen[bytes]

    host: str = "127.0.0.1"

    def connect(self, database: str | None = None) -> Any:
        import pymysql

        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password.encode(),  # PyMySQL would encode a str as latin-1
            database=database,
            autocommit=True,
            charset="utf8mb4",
        )

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_mariadb_sandbox(
    user: str = "backup", password: str = "sandbox-password", port: int | None = None
) -> MariadbSandbox:
    """Create and start a new MariaDB server on loopback `port` (default: a free one), with an account
    `user` that has every privilege; return it. Raise RuntimeError with the server's log if it fails."""
    import pymysql

    server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    if not os.path.exists(server):
        raise RuntimeError("MariaDB server not found: install the mariadb-server package")
    root = Path(tempfile.mkdtemp(prefix="bp-mariadb-"))
    run_as = "mysql" if os.geteuid() == 0 else None
    if run_as:
        account = pwd.getpwnam(run_as)
        os.chown(root, account.pw_uid, account.pw_gid)
    user_flag = [f"--user={run_as}"] if run_as else []
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={root / 'data'}",
            *user_flag,
            "--skip-test-db",
            "--auth-root-authentication-method=socket",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    port = port or free_port()
    socket_path = root / "mysqld.sock"
    process = subprocess.Popen(
        [
            server,
            "--no-defaults",
            f"--datadir={root / 'data'}",
            f"--socket={socket_path}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={root / 'mysqld.pid'}",
            f"--log-error={root / 'error.log'}",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=16M",
            "--skip-name-resolve",
            *user_flag,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            admin = pymysql.connect(unix_socket=str(socket_path), user="root", charset="utf8mb4")
            break
        except pymysql.err.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                log = (root / "error.log").read_text() if (root / "error.log").exists() else ""
                process.kill()
                shutil.rmtree(root, ignore_errors=True)
                raise RuntimeError(f"MariaDB sandbox failed to start:\n{log[-3000:]}") from None
            time.sleep(0.2)
    with admin, admin.cursor() as cursor:
        for host in ("127.0.0.1", "localhost"):
            cursor.execute(f"create user '{user}'@'{host}' identified by %s", (password,))
            cursor.execute(f"grant all privileges on *.* to '{user}'@'{host}' with grant option")
    return MariadbSandbox(root, port, user, password, process)
