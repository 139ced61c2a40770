from __future__ import annotations

import yaml

from backup_pipelines.engines.postgres import pg_archive_check_command, pg_dump_command
from backup_pipelines.engines.postgres_restore import pg_restore_command, psql_globals_command
from backup_pipelines.manifest import PostgresDataset, PostgresServerConfig, parse_manifest
from backup_pipelines.stream import zstd_compress_command, zstd_decompress_command
from tests.unit.test_manifest import VALID


def postgres_source(**source: object) -> tuple[PostgresServerConfig, PostgresDataset]:
    """The server `pg` and the dataset `orders` of a manifest whose `orders` source has `source` added."""
    data = yaml.safe_load(yaml.safe_dump(VALID))
    data["datasets"]["orders"]["source"].update(source)
    data["servers"]["pg"].update({"host": "db.internal", "port": 6432, "sslmode": "require"})
    manifest = parse_manifest(yaml.safe_dump(data))
    server, dataset = manifest.servers["pg"], manifest.dataset("orders")
    assert isinstance(server, PostgresServerConfig) and isinstance(dataset, PostgresDataset)
    return server, dataset


def test_pg_dump_uses_custom_format_uncompressed_with_the_exported_snapshot() -> None:
    server, dataset = postgres_source()
    command = pg_dump_command(server, dataset, "00000003-1B", "s3cret")
    assert command.tool == "pg_dump"
    assert {"--format=custom", "--compress=0", "--snapshot=00000003-1B", "--no-password"} <= set(command.argv)
    assert "--lock-wait-timeout=10min" in command.argv
    assert {"--host=db.internal", "--port=6432", "--username=backup", "--dbname=orders"} <= set(command.argv)


def test_passwords_travel_in_the_environment_never_in_argv() -> None:
    server, dataset = postgres_source()
    command = pg_dump_command(server, dataset, None, "s3cret")
    assert "s3cret" not in command.display()
    assert command.env["PGPASSWORD"] == "s3cret"
    assert command.env["PGSSLMODE"] == "require"


def test_schema_and_table_filters_become_pg_dump_options() -> None:
    server, dataset = postgres_source(schemas=["shop"], exclude_schemas=["tmp"], exclude_tables=["shop.cache"])
    argv = pg_dump_command(server, dataset, None, None).argv
    assert "--schema=shop" in argv and "--exclude-schema=tmp" in argv and "--exclude-table=shop.cache" in argv
    assert not any(arg.startswith("--snapshot") for arg in argv)


def test_pg_restore_stops_at_the_first_error_and_keeps_owners_and_privileges_unless_asked() -> None:
    server, _ = postgres_source()
    command = pg_restore_command(server, "bp_restore_x", "pw")
    assert command.tool == "pg_restore"
    assert {"--exit-on-error", "--dbname=bp_restore_x"} <= set(command.argv)
    assert not {"--no-owner", "--no-privileges"} & set(command.argv)
    skipping = pg_restore_command(server, "bp_restore_x", "pw", keep_privileges=False)
    assert {"--no-owner", "--no-privileges"} <= set(skipping.argv)
    check = pg_archive_check_command(server)  # --list and a full read, in one pass over stdin
    assert check.argv[1].endswith("pg_archive_check.py") and check.argv[-1].endswith("pg_restore")


def test_the_globals_script_runs_with_the_target_in_a_psql_variable_and_stops_at_the_first_error() -> None:
    server, _ = postgres_source()
    before = psql_globals_command(server, "/tmp/g.sql", "new db", False, "pw")
    after = psql_globals_command(server, "/tmp/g.sql", "new db", True, "pw")
    assert {"ON_ERROR_STOP=1", "target=new db", "-X"} <= set(before.argv) and "restored=1" not in before.argv
    assert "restored=1" in after.argv and "pw" not in " ".join(after.argv)


def test_zstd_commands_stream_stdin_to_stdout() -> None:
    assert zstd_compress_command(3).argv == ("zstd", "-3", "-T0", "-q", "-c")
    assert zstd_compress_command().argv == ("zstd", "-1", "-T0", "-q", "-c")  # the default: level 1, every core
    assert zstd_compress_command(9, threads=2).argv == ("zstd", "-9", "-T2", "-q", "-c")
    assert zstd_decompress_command().argv == ("zstd", "-d", "-q", "-c")
