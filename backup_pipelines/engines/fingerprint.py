"""Content fingerprints: what a restore test compares beyond counts, for every kind.

A fingerprint is a flat mapping `{item: value}`. An item names one thing a restore must give back exactly: a
table's rows ("rows public.orders"), a sequence, a schema object with its owner and privileges, the large
objects, a file ("file /etc/app.conf"). Its value is a digest or a small JSON value. The engine takes one at
backup time, in the same snapshot the dump reads, and stores it in the record's `source_stats` under
`FINGERPRINT`, with a sentence saying what was compared and how under `FINGERPRINT_METHOD`. After the restore it
takes the same fingerprint of the restored copy; `compare_fingerprints` names every item that is missing,
extra or different, so a failed restore test says which table (or file) and what differs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from backup_pipelines.engines.base import CheckOutcome

FINGERPRINT = "fingerprint"
FINGERPRINT_METHOD = "fingerprint_method"
NAMED_DIFFERENCES = 50  # a restore test names at most this many differing items, then counts the rest

Tolerance = Callable[[str, Any, Any], bool]


def digest_lines(lines: list[str]) -> str:
    """Return one sha256 (hex) over `lines`, order-independent: the lines are sorted first."""
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode("utf-8", "surrogateescape"))
        digest.update(b"\n")
    return digest.hexdigest()


def _describe(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def compare_fingerprints(
    source_stats: Mapping[str, Any], restored_stats: Mapping[str, Any], tolerate: Tolerance | None = None
) -> list[CheckOutcome]:
    """Return the outcomes of comparing the source's fingerprint (taken at backup time) with the restored
    copy's: one passing outcome when every item is equal, else one failing outcome per differing item (the
    first NAMED_DIFFERENCES, then one that counts the rest). `tolerate(item, expected, actual)` may accept a
    difference that is not a loss (a sequence that moved forward while the dump ran). A backup taken before
    fingerprints existed (no FINGERPRINT in `source_stats`) gives no outcome."""
    expected = source_stats.get(FINGERPRINT)
    if expected is None:
        return []
    actual = restored_stats.get(FINGERPRINT) or {}
    failures: list[CheckOutcome] = []
    for item in sorted(set(expected) | set(actual)):
        want, got = expected.get(item, "absent"), actual.get(item, "absent")
        if want == got or (tolerate is not None and item in expected and item in actual and tolerate(item, want, got)):
            continue
        failures.append(CheckOutcome(item, _describe(want), _describe(got), False))
    if not failures:
        return [CheckOutcome("content fingerprint", f"{len(expected)} items equal", f"{len(actual)} items equal", True)]
    named = failures[:NAMED_DIFFERENCES]
    if len(failures) > len(named):
        more = len(failures) - len(named)
        named.append(CheckOutcome("content fingerprint", "all items equal", f"{more} more items differ", False))
    return named
