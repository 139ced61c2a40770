"""The restore side's choice of sampled PostgreSQL tables comes from the backup's record."""

from __future__ import annotations

from backup_pipelines.engines.postgres_samples import recorded_samples
from backup_pipelines.manifest import TableSample

RANGES = {"public.events": [[1, 10]], "audit.log": [[5, 9]], "public.gone": [[0, 3]], "a.b.c": [[1, 2]]}
TABLES = [("public", "events"), ("audit", "log"), ("public", "gone"), ("a.b", "c"), ("public", "whole")]


def test_recorded_keys_decide_whatever_the_manifest_lists_now() -> None:
    keys = {"public.events": "id", "audit.log": "seq", "public.gone": "n", "a.b.c": "k"}
    chosen = recorded_samples(TABLES, RANGES, keys, {"events": TableSample(key="other")})
    assert {name: sample.key for name, sample in chosen.items()} == keys


def test_a_record_without_keys_takes_the_listed_tables_keys_and_digests_the_rest_whole() -> None:
    listed = {"events": TableSample(key="id"), "audit.log": TableSample(key="seq"), "c": TableSample(key="k")}
    chosen = recorded_samples(TABLES, RANGES, None, listed)
    expected = {"public.events": "id", "audit.log": "seq", "a.b.c": "k"}  # a schema with a dot: table "c"
    assert {name: sample.key for name, sample in chosen.items()} == expected


def test_nothing_recorded_samples_nothing() -> None:
    assert recorded_samples(TABLES, {}, {}, {"events": TableSample(key="id")}) == {}
