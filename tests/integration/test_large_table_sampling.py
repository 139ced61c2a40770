"""Large tables are digested in key ranges, on the session's real PostgreSQL: which tables are sampled, that the
restore side digests what the backup recorded whatever the manifest says by then, and what a sample still
catches (a changed row inside a range, a lost row anywhere through the exact row count)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.engines.fingerprint import FINGERPRINT, compare_fingerprints
from backup_pipelines.engines.postgres import collect_stats, connect, postgres_server
from backup_pipelines.engines.postgres_fingerprint import sequence_moved_forward
from backup_pipelines.engines.postgres_samples import SAMPLE_KEYS, SAMPLES, planned_samples
from backup_pipelines.engines.validation import compare_stats
from backup_pipelines.manifest import Manifest, PostgresDataset
from backup_pipelines.operations import restore_backup, restore_test_backup, run_backup
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import manifest_dict, write_manifest
from tests.postgres_checks import fresh_database

DATABASE = "sampling"
THRESHOLD = 512 * 1024  # big, nokey and pair are above it (about 1 MB each); small is a page or a few
TABLES_SQL = """
create table big (id bigint primary key, body text);
insert into big select i, repeat(md5(i::text), 6) from generate_series(1, 5000) i;
create table nokey (body text);
insert into nokey select repeat(md5(i::text), 6) from generate_series(1, 5000) i;
create table pair (a int, b int, body text, primary key (a, b));
insert into pair select i, i, repeat(md5(i::text), 6) from generate_series(1, 5000) i;
create table small (id int primary key, body text);
insert into small select i, md5(i::text) from generate_series(1, 10) i;
create schema elsewhere;
create table elsewhere.busy (id bigint primary key, body text check (body <> ''));
insert into elsewhere.busy select i, repeat(md5(i::text), 6) from generate_series(1, 5000) i;
"""


@pytest.fixture(scope="module")
def sampling(postgres: PostgresSandbox) -> Iterator[str]:
    yield fresh_database(postgres, DATABASE, TABLES_SQL)


@pytest.fixture(autouse=True)
def _identity(monkeypatch: pytest.MonkeyPatch, age_keys: KeyPair) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)


def sampling_manifest(
    folder: Path, postgres: PostgresSandbox, age_keys: KeyPair, database: str, above: int | None, **verification: Any
) -> Manifest:
    """The dataset app_db: `database` but its schema elsewhere, tables above `above` bytes sampled."""
    data = manifest_dict(postgres, folder / "repo", [age_keys.recipient], database=database)
    data["datasets"]["app_db"]["source"]["exclude_schemas"] = ["elsewhere"]
    data["datasets"]["app_db"]["verification"] = {"sample_tables_above_bytes": above, **verification}
    return write_manifest(folder / f"manifest_{above}_{len(verification)}.yaml", data)


def rows_items(stats: dict[str, Any]) -> dict[str, str]:
    return {name: value for name, value in stats[FINGERPRINT].items() if name.startswith("rows ")}


def test_only_large_tables_with_one_integer_key_are_sampled_and_the_restore_test_passes(
    tmp_path: Path, postgres: PostgresSandbox, age_keys: KeyPair, sampling: str
) -> None:
    manifest = sampling_manifest(tmp_path, postgres, age_keys, sampling, THRESHOLD)
    record = run_backup(manifest, "app_db", "2026-12-01-09:00").record
    stats = record.source_stats
    assert set(rows_items(stats)) == {
        "rows public.big (sampled)",
        "rows public.nokey",
        "rows public.pair",
        "rows public.small",
    }
    assert stats[SAMPLE_KEYS] == {"public.big": "id"}
    ranges = stats[SAMPLES]["public.big"]
    assert len(ranges) == 16 and ranges[0][0] == 1
    digested = sum(min(high, 5001) - low for low, high in ranges)
    assert rows_items(stats)["rows public.big (sampled)"].startswith(f"{digested}:")
    assert 0 < digested < 5000 // 10
    assert stats["tables"]["public.big"] == 5000  # the count stays exact
    assert "sampled in key ranges: public.big" in stats["fingerprint_method"]
    report = restore_test_backup(manifest, "app_db", record)
    assert report.failures == [] and report.restored_stats[SAMPLES] == stats[SAMPLES]


def test_the_restore_side_samples_what_the_backup_recorded_whatever_the_manifest_says_now(
    tmp_path: Path, postgres: PostgresSandbox, age_keys: KeyPair, sampling: str
) -> None:
    sampled = sampling_manifest(tmp_path, postgres, age_keys, sampling, THRESHOLD)
    whole = sampling_manifest(tmp_path, postgres, age_keys, sampling, None)
    everything = sampling_manifest(tmp_path, postgres, age_keys, sampling, 0)
    record = run_backup(sampled, "app_db", "2026-12-01-10:00").record
    report = restore_test_backup(whole, "app_db", record)
    assert report.failures == [] and report.restored_stats[SAMPLES] == record.source_stats[SAMPLES]
    record = run_backup(whole, "app_db", "2026-12-01-11:00").record
    assert record.source_stats[SAMPLES] == {} and "rows public.big" in record.source_stats[FINGERPRINT]
    report = restore_test_backup(everything, "app_db", record)
    assert report.failures == [] and report.restored_stats[SAMPLES] == {}


def test_a_sample_names_a_changed_row_in_its_ranges_and_the_exact_count_a_row_lost_outside_them(
    tmp_path: Path, postgres: PostgresSandbox, age_keys: KeyPair, sampling: str
) -> None:
    manifest = sampling_manifest(tmp_path, postgres, age_keys, sampling, THRESHOLD)
    record = run_backup(manifest, "app_db", "2026-12-01-12:00").record
    ranges = record.source_stats[SAMPLES]["public.big"]
    inside, outside = ranges[3]  # the first key of a range, and the first key past it ([low, high))
    dataset = manifest.dataset("app_db")
    assert isinstance(dataset, PostgresDataset)
    for change, expected in (
        (f"update big set body = 'changed' where id = {inside}", {"rows public.big (sampled)"}),
        (f"delete from big where id = {outside}", set()),
    ):
        with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
            admin.execute("drop database if exists tampered")
        restore_backup(manifest, "app_db", record, "tampered")
        with psycopg.connect(postgres.conninfo("tampered"), autocommit=True) as connection:
            connection.execute(change)
        with connect(postgres_server(manifest, "pg"), "tampered", postgres.password) as connection:
            restored = collect_stats(connection, dataset, True, source_stats=record.source_stats)
        differing = {
            outcome.name
            for outcome in compare_fingerprints(record.source_stats, restored, sequence_moved_forward)
            if not outcome.passed
        }
        assert differing == expected, change
        counted = compare_stats(record.source_stats, restored, dataset.verification)
        failed_counts = {outcome.name for outcome in counted if not outcome.passed}
        assert failed_counts == (set() if expected else {"rows in public.big"}), (change, failed_counts)
    with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
        admin.execute("drop database tampered")


def test_without_row_counts_nothing_is_sampled_by_size(
    tmp_path: Path, postgres: PostgresSandbox, age_keys: KeyPair, sampling: str
) -> None:
    """The exact count is what sees a row lost outside the ranges: without it every table is digested whole."""
    manifest = sampling_manifest(tmp_path, postgres, age_keys, sampling, THRESHOLD, compare_row_counts=False)
    record = run_backup(manifest, "app_db", "2026-12-01-13:00").record
    assert record.source_stats[SAMPLES] == {} and "rows public.big" in record.source_stats[FINGERPRINT]


def test_sizing_never_waits_for_a_table_outside_the_dump(postgres: PostgresSandbox, sampling: str) -> None:
    """Sizing a table waits for its lock: only the dump's own tables (which pg_dump locks anyway) are sized, so
    a migration holding a table of another schema does not hold the backup up."""
    tables = [("public", "big"), ("public", "nokey"), ("public", "pair"), ("public", "small")]
    with psycopg.connect(postgres.conninfo(sampling)) as holder, psycopg.connect(postgres.conninfo(sampling)) as sizer:
        holder.execute("lock table elsewhere.busy in access exclusive mode")
        sizer.execute("set lock_timeout = '3s'")  # waiting fails here instead of hanging the test
        assert set(planned_samples(sizer, tables, {}, THRESHOLD)) == {"public.big"}
        holder.rollback()


def test_a_lock_on_a_table_outside_the_dump_does_not_hold_the_backup_up(
    tmp_path: Path, postgres: PostgresSandbox, age_keys: KeyPair, sampling: str
) -> None:
    """The fingerprint's definitions of a table's objects (pg_get_indexdef and the like) wait for the table's
    lock: they are read only for the dump's schemas, so a migration in a schema it leaves out holds nothing up."""
    manifest = sampling_manifest(tmp_path, postgres, age_keys, sampling, THRESHOLD)
    with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
        admin.execute(f"alter database {sampling} set lock_timeout = '5s'")  # a wait fails instead of hanging
    try:
        with psycopg.connect(postgres.conninfo(sampling)) as holder:
            holder.execute("lock table elsewhere.busy in access exclusive mode")
            record = run_backup(manifest, "app_db", "2026-12-01-15:00").record
            holder.rollback()
    finally:
        with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
            admin.execute(f"alter database {sampling} reset lock_timeout")
    assert record.source_stats[SAMPLE_KEYS] == {"public.big": "id"}
    assert "index public.big_pkey" in record.source_stats[FINGERPRINT]
    assert not any("elsewhere" in item for item in record.source_stats[FINGERPRINT])
