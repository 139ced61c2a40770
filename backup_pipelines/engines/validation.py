"""Judging a restored copy, for every database kind: statistics against the source's, and validation queries."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from backup_pipelines.engines.base import CheckOutcome
from backup_pipelines.manifest import Expectation, Verification

QueryRunner = Callable[[str], Any]


def jsonable(value: Any) -> Any:
    """Return a query value as something JSON can hold (Decimal to int or float, others to str)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if value is None or isinstance(value, int | float | str | bool):
        return value
    return str(value)


def compare_stats(source: dict[str, Any], restored: dict[str, Any], verification: Verification) -> list[CheckOutcome]:
    """Return one outcome per comparison between the source's statistics at backup time and the restored
    copy's: the table count, the large-object count (where the kind has them) and every table's rows."""
    outcomes = []
    for key, label in (("table_count", "table count"), ("large_objects", "large objects")):
        if key in source:
            outcomes.append(
                CheckOutcome(label, source.get(key), restored.get(key), source.get(key) == restored.get(key))
            )
    if verification.compare_row_counts and "tables" in source:
        restored_tables = restored.get("tables", {})
        for table, expected in source["tables"].items():
            actual = restored_tables.get(table, "no such table")
            outcomes.append(CheckOutcome(f"rows in {table}", expected, actual, actual == expected))
    return outcomes


def run_validation_queries(
    run: QueryRunner, verification: Verification, source_stats: dict[str, Any]
) -> list[CheckOutcome]:
    """Run each validation query with `run` (returns the first column of the first row) on the restored
    copy; return whether each value meets its expectation. A failing query is a failed outcome."""
    outcomes = []
    for query in verification.queries:
        try:
            value = jsonable(run(query.sql))
        except Exception as error:
            outcomes.append(CheckOutcome(f"query {query.name}", "a value", f"error: {error}".strip(), False))
            continue
        outcomes += judge(query.name, value, query.expect, source_stats.get("queries", {}))
    return outcomes


def judge(name: str, value: Any, expect: Expectation, source_values: dict[str, Any]) -> list[CheckOutcome]:
    """Return the outcomes of checking `value` against each part of `expect`."""
    label = f"query {name}"
    outcomes = []
    if expect.equals is not None:
        outcomes.append(CheckOutcome(label, f"= {expect.equals}", value, value == expect.equals))
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if expect.min is not None:
        outcomes.append(CheckOutcome(label, f">= {expect.min:g}", value, numeric and value >= expect.min))
    if expect.max is not None:
        outcomes.append(CheckOutcome(label, f"<= {expect.max:g}", value, numeric and value <= expect.max))
    if expect.same_as_source:
        expected = source_values.get(name, "not recorded at backup time")
        outcomes.append(CheckOutcome(label, f"{expected} (source at backup time)", value, value == expected))
    return outcomes
