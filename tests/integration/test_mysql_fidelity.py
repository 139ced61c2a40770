"""MySQL/MariaDB restore fidelity against the session's real MariaDB: a hostile source (4-byte characters,
ENUM/SET, every byte value, routines, triggers, events, views, generated columns, tables without keys, a
non-default collation) comes back exactly, and what would be lost fails loudly instead."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.engines import engine_for
from backup_pipelines.engines.fingerprint import FINGERPRINT, FINGERPRINT_METHOD
from backup_pipelines.errors import CommandFailedError, UnrepresentableSourceError
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import restore_backup, restore_test_backup, run_backup
from tests.conftest import manifest_for, mysql_server

PARTITION = "2026-11-30"
ASTRAL = "ünï 🚀"  # an ENUM/SET member with a character outside the Basic Multilingual Plane

HOSTILE_SQL = [
    "create table texts (id int primary key, body varchar(100), legacy varchar(50) character set latin1, "
    "kind enum('a','ünï','it''s') not null default 'ünï', tags set('x','ÿ','z'), maybe varchar(10), "
    "doubled varchar(210) as (concat(body, '|', body)) virtual, body_length int as (char_length(body)) stored, "
    "ratio double, amount decimal(30,10), at datetime(6), doc json)",
    "create table blobs (id int primary key, payload blob, bits bit(12), fixed binary(4))",
    "create table nokey (word varchar(20), n int)",
    "create table log (id int auto_increment primary key, what varchar(100))",
    "create table moods (id int primary key, mood enum('calm','busy'))",
    "create definer='backup'@'localhost' trigger texts_log after insert on texts for each row "
    "insert into log (what) values (concat('texts 🚀 ', new.id))",
    "create trigger texts_log_second after insert on texts for each row follows texts_log "
    "insert into log (what) values ('second')",
    "create function shout(word varchar(50)) returns varchar(60) deterministic return concat(upper(word), ' 📣')",
    "create view texts_view as select id, body, kind from texts where kind <> 'a'",
    "create event nightly on schedule every 1 day starts '2027-01-01 03:00:00' disable do delete from log where id < 0",
]
PROCEDURE_UNDER_ANSI_QUOTES = 'create procedure count_texts() select count(*) from "texts"'


def _texts_rows() -> list[tuple[Any, ...]]:
    return [
        (1, "emoji 🚀🎉 and 𝄞 clef", "café", "ünï", "x,ÿ", None, 1.5e-7, "12345678901234567890.0123456789",
         "2026-11-30 12:34:56.789012", '{"k": "🚀", "n": [1, 2]}'),
        (2, "NULL", "NULL", "a", "", "NULL", -0.0, "0", "1970-01-01 00:00:01", "null"),
        (3, "quote ' back\\slash \0 nul", None, "it's", "z", "", 1e300, "-1.5", None, None),
        (4, "", "", "ünï", None, None, None, None, None, None),
    ]  # fmt: skip


def _create_hostile(connection: Any, database: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"drop database if exists {database}")
        cursor.execute(f"create database {database} character set utf8mb4 collate utf8mb4_unicode_ci")
        cursor.execute(f"use {database}")
        for statement in HOSTILE_SQL:
            cursor.execute(statement)
        cursor.execute("set session sql_mode = 'ANSI_QUOTES'")
        cursor.execute(PROCEDURE_UNDER_ANSI_QUOTES)
        cursor.execute("set session sql_mode = default")
        cursor.executemany(
            "insert into texts (id, body, legacy, kind, tags, maybe, ratio, amount, at, doc) "
            "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            _texts_rows(),
        )
        cursor.execute("insert into blobs values (0, %s, b'101010101010', x'00ff0a27')", (bytes(range(256)),))
        cursor.executemany(
            "insert into blobs values (%s, %s, %s, %s)",
            [(value + 1, bytes([value]), value, bytes([value]) * 4) for value in range(256)],
        )
        cursor.executemany(
            "insert into nokey values (%s, %s)", [("dup", 1), ("dup", 1), ("dup", 1), (None, None), (None, None)]
        )
        cursor.execute("set session sql_mode = ''")  # stores the ENUM error value '' for 'lost'
        cursor.execute("insert into moods values (1, 'calm'), (2, 'lost'), (3, null)")
        cursor.execute("set session sql_mode = default")


@pytest.fixture(autouse=True)
def identity(age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)


@pytest.fixture(scope="module")
def hostile(mariadb: Any) -> str:
    with mariadb.connect() as connection:
        _create_hostile(connection, "hostile")
    return "hostile"


@pytest.fixture(scope="module")
def astral(mariadb: Any) -> str:
    """A database whose ENUM and SET columns have a member mysqldump writes as '?' (and a default of it)."""
    with mariadb.connect() as connection, connection.cursor() as cursor:
        cursor.execute("drop database if exists astral")
        cursor.execute("create database astral character set utf8mb4")
        cursor.execute(
            f"create table astral.picks (id int primary key, mood enum('a','{ASTRAL}') default '{ASTRAL}', "
            f"flags set('a','{ASTRAL}') not null default 'a,{ASTRAL}')"
        )
        cursor.execute(f"insert into astral.picks values (1, '{ASTRAL}', 'a,{ASTRAL}'), (2, 'a', 'a')")
    return "astral"


def fidelity_manifest(tmp_path: Path, mariadb: Any, age_keys: KeyPair, database: str, **fields: Any) -> Manifest:
    source = {"server": "maria", "database": database, **fields.pop("source", {})}
    dataset = {"kind": "mysql", "source": source, **fields}
    return manifest_for(tmp_path, age_keys, {database: dataset}, {"maria": mysql_server(mariadb)})


def client_argv(mariadb: Any, tool: str, *arguments: str) -> list[str]:
    """Return the argv of MariaDB's `tool` (mariadb, mariadb-dump) for the session's server."""
    host = [f"--host={mariadb.host}", f"--port={mariadb.port}", f"--user={mariadb.user}"]
    return [tool, *host, "--default-character-set=utf8mb4", *arguments]


def run_client(mariadb: Any, tool: str, *arguments: str, stdin: bytes = b"") -> bytes:
    environment = {**os.environ, "MYSQL_PWD": mariadb.password}
    result = subprocess.run(
        client_argv(mariadb, tool, *arguments), input=stdin, capture_output=True, env=environment, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def independent_dump(mariadb: Any, database: str) -> str:
    """Return mysqldump's text of `database` (everything, no date), with its name normalised in the header."""
    dump = run_client(
        mariadb, "mariadb-dump", "--skip-dump-date", "--routines", "--triggers", "--events", "--hex-blob", database
    ).decode()
    for written in (f"Database: {database}\n", f"'{database}'", f"`{database}`"):  # its name, nothing else
        dump = dump.replace(written, written.replace(database, "<database>"))
    return dump


def database_collation(mariadb: Any, database: str) -> tuple[str, str]:
    with mariadb.connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            "select default_character_set_name, default_collation_name from information_schema.schemata "
            "where schema_name = %s",
            (database,),
        )
        return tuple(cursor.fetchone())


@pytest.fixture
def drop_afterwards(mariadb: Any) -> Iterator[list[str]]:
    """A list of databases to drop when the test ends."""
    names: list[str] = []
    yield names
    with mariadb.connect() as connection, connection.cursor() as cursor:
        for name in names:
            cursor.execute(f"drop database if exists `{name}`")


def test_a_hostile_database_restores_exactly_by_the_fingerprint_and_by_an_independent_dump(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair, hostile: str, drop_afterwards: list[str]
) -> None:
    manifest = fidelity_manifest(tmp_path, mariadb, age_keys, hostile)
    record = run_backup(manifest, hostile, PARTITION).record
    stats = record.source_stats
    assert (stats["database_character_set"], stats["database_collation"]) == ("utf8mb4", "utf8mb4_unicode_ci")
    expected_items = {
        "database collation",
        "rows hostile.texts",
        "rows hostile.nokey",
        "table hostile.blobs",
        "view hostile.texts_view",
        "function hostile.shout",
        "procedure hostile.count_texts",
        "trigger hostile.texts_log_second",
        "event hostile.nightly",
    }
    assert expected_items <= set(stats[FINGERPRINT]) and "MD5" in stats[FINGERPRINT_METHOD]
    assert stats[FINGERPRINT]["rows hostile.nokey"].startswith("5 rows,")
    assert set(stats["tables_restored_non_strict"]) == {"texts", "moods"}  # generated columns; ENUM ''
    report = restore_test_backup(manifest, hostile, record)
    assert report.failures == []
    assert [outcome.name for outcome in report.outcomes if outcome.name == "content fingerprint"]

    drop_afterwards.append("hostile_copy")
    restore_backup(manifest, hostile, record, "hostile_copy")
    assert independent_dump(mariadb, "hostile_copy") == independent_dump(mariadb, hostile)
    assert database_collation(mariadb, "hostile_copy") == ("utf8mb4", "utf8mb4_unicode_ci")


def test_the_stored_dump_gives_a_plain_mysql_client_restore_the_collation_and_strict_mode(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair, hostile: str, drop_afterwards: list[str]
) -> None:
    manifest = fidelity_manifest(tmp_path, mariadb, age_keys, hostile)
    record = run_backup(manifest, hostile, PARTITION).record
    raw = Path(restore_backup(manifest, hostile, record, str(tmp_path / "dump.sql"), raw_file=True)).read_bytes()
    assert b"SQL_MODE='NO_AUTO_VALUE_ON_ZERO,STRICT_ALL_TABLES'" in raw
    assert b"\nALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n" in raw
    drop_afterwards.append("hostile_plain")
    run_client(mariadb, "mariadb", "-e", "create database hostile_plain")  # the server's default collation
    run_client(mariadb, "mariadb", "hostile_plain", stdin=raw)
    assert database_collation(mariadb, "hostile_plain") == ("utf8mb4", "utf8mb4_unicode_ci")
    assert independent_dump(mariadb, "hostile_plain") == independent_dump(mariadb, hostile)


def test_one_changed_value_in_the_restored_copy_fails_the_restore_test_naming_the_table(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair, hostile: str
) -> None:
    manifest = fidelity_manifest(tmp_path, mariadb, age_keys, hostile)
    record = run_backup(manifest, hostile, PARTITION).record
    raw = Path(restore_backup(manifest, hostile, record, str(tmp_path / "dump.sql"), raw_file=True)).read_bytes()
    assert raw.count(b"'caf\xc3\xa9'") == 1
    altered = raw.replace(b"'caf\xc3\xa9'", b"'cafe'")  # same row count, one value differs

    def feed(stdin: IO[bytes]) -> None:
        stdin.write(altered)

    report = engine_for("mysql").restore_test(manifest, hostile, record, feed)
    assert [outcome.name for outcome in report.failures] == ["rows hostile.texts"]
    assert report.failures[0].expected.startswith("4 rows,") and report.failures[0].actual.startswith("4 rows,")


def test_an_enum_member_outside_the_bmp_fails_the_backup_naming_table_and_column(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair, astral: str
) -> None:
    manifest = fidelity_manifest(tmp_path, mariadb, age_keys, astral)
    with pytest.raises(UnrepresentableSourceError, match=r"astral\.picks column mood: 'ünï 🚀'.*column flags"):
        run_backup(manifest, astral, PARTITION)
    assert not any((tmp_path / "repo").rglob("*.json"))


def test_a_dump_that_lost_an_enum_member_fails_to_restore_instead_of_storing_an_empty_value(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair, astral: str, drop_afterwards: list[str]
) -> None:
    lossy = run_client(mariadb, "mariadb-dump", astral)  # what the engine used to store: members written as '?'
    assert "ünï ?".encode() in lossy and ASTRAL.encode() in lossy
    drop_afterwards += ["astral_plain", "astral_strict"]
    run_client(mariadb, "mariadb", "-e", "create database astral_plain")
    run_client(mariadb, "mariadb", "astral_plain", stdin=lossy)  # mysqldump's header: not strict, no error
    with mariadb.connect() as connection, connection.cursor() as cursor:
        cursor.execute("select mood, flags from astral_plain.picks where id = 1")
        assert cursor.fetchone() == ("", "a")  # the loss the strict restore prevents

    def feed(stdin: IO[bytes]) -> None:
        stdin.write(lossy)

    manifest = fidelity_manifest(tmp_path, mariadb, age_keys, astral)
    with pytest.raises(CommandFailedError, match=r"Data truncated for column 'mood'"):
        engine_for("mysql").restore_to(manifest, astral, "astral_strict", None, feed)


def test_preserving_supplementary_enum_members_rewrites_the_columns_and_round_trips(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair, astral: str, drop_afterwards: list[str]
) -> None:
    manifest = fidelity_manifest(
        tmp_path, mariadb, age_keys, astral, source={"preserve_supplementary_enum_members": True}
    )
    record = run_backup(manifest, astral, PARTITION).record
    report = restore_test_backup(manifest, astral, record)
    assert report.failures == []
    drop_afterwards.append("astral_copy")
    restore_backup(manifest, astral, record, "astral_copy")
    assert independent_dump(mariadb, "astral_copy") == independent_dump(mariadb, astral)  # both show '?'
    with mariadb.connect() as connection, connection.cursor() as cursor:
        cursor.execute("select id, mood, flags from astral_copy.picks order by id")
        assert cursor.fetchall() == ((1, ASTRAL, f"a,{ASTRAL}"), (2, "a", "a"))
        cursor.execute("insert into astral_copy.picks (id) values (3)")
        cursor.execute("select mood, flags from astral_copy.picks where id = 3")
        assert cursor.fetchone() == (ASTRAL, f"a,{ASTRAL}")  # the defaults came back too


def test_sampled_tables_digest_the_recorded_key_ranges_on_both_sides(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair, hostile: str
) -> None:
    sample = {"key": "id", "ranges": 4, "range_fraction": 0.1}
    verification = {"sampled_tables": {"hostile.blobs": sample}}
    manifest = fidelity_manifest(tmp_path, mariadb, age_keys, hostile, verification=verification)
    record = run_backup(manifest, hostile, PARTITION).record
    fingerprint = record.source_stats[FINGERPRINT]
    assert fingerprint["sample hostile.blobs"] == {"key": "id", "ranges": [[0, 5], [64, 69], [128, 133], [192, 197]]}
    assert fingerprint["rows hostile.blobs"].startswith("24 rows,")
    assert restore_test_backup(manifest, hostile, record).failures == []


def test_a_dataset_without_fingerprint_records_none_and_still_restore_tests(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair, hostile: str
) -> None:
    manifest = fidelity_manifest(tmp_path, mariadb, age_keys, hostile, verification={"fingerprint": False})
    record = run_backup(manifest, hostile, PARTITION).record
    assert FINGERPRINT not in record.source_stats and record.source_stats["database_collation"] == "utf8mb4_unicode_ci"
    assert restore_test_backup(manifest, hostile, record).failures == []


def test_tables_above_the_size_with_one_integer_key_are_sampled_and_the_restore_follows_the_record(
    tmp_path: Path, mariadb: Any, age_keys: KeyPair, hostile: str
) -> None:
    def manifest(above: int | None) -> Manifest:  # each one rewrites the same file, on the same repository
        return fidelity_manifest(
            tmp_path, mariadb, age_keys, hostile, verification={"sample_tables_above_bytes": above}
        )

    everything = manifest(0)
    record = run_backup(everything, hostile, PARTITION).record
    fingerprint = record.source_stats[FINGERPRINT]
    sampled = {name for name in fingerprint if name.startswith("sample ")}
    assert sampled == {f"sample hostile.{table}" for table in ("texts", "blobs", "log", "moods")}  # not nokey
    assert fingerprint["sample hostile.blobs"]["key"] == "id" and fingerprint["rows hostile.nokey"].startswith("5 rows")
    whole = manifest(None)
    assert restore_test_backup(whole, hostile, record).failures == []
    record = run_backup(whole, hostile, PARTITION).record
    assert not any(name.startswith("sample ") for name in record.source_stats[FINGERPRINT])
    assert restore_test_backup(everything, hostile, record).failures == []
