"""The content fingerprint comparison every restore test uses."""

from __future__ import annotations

from backup_pipelines.engines.fingerprint import (
    FINGERPRINT,
    NAMED_DIFFERENCES,
    compare_fingerprints,
    digest_lines,
)


def test_equal_fingerprints_give_one_passing_outcome() -> None:
    stats = {FINGERPRINT: {"rows public.a": "x", "rows public.b": "y"}}
    outcomes = compare_fingerprints(stats, {FINGERPRINT: dict(stats[FINGERPRINT])})
    assert [outcome.passed for outcome in outcomes] == [True]


def test_each_differing_missing_or_extra_item_is_named() -> None:
    source = {FINGERPRINT: {"rows public.a": "x", "rows public.b": "y"}}
    restored = {FINGERPRINT: {"rows public.a": "changed", "rows public.c": "z"}}
    failures = {outcome.name: outcome for outcome in compare_fingerprints(source, restored)}
    assert set(failures) == {"rows public.a", "rows public.b", "rows public.c"}
    assert failures["rows public.b"].actual == "absent"
    assert failures["rows public.c"].expected == "absent"
    assert not any(outcome.passed for outcome in failures.values())


def test_a_tolerated_difference_passes_but_only_for_items_present_on_both_sides() -> None:
    source = {FINGERPRINT: {"sequence s": 10}}
    assert compare_fingerprints(source, {FINGERPRINT: {"sequence s": 12}}, lambda item, want, got: got >= want)[
        0
    ].passed
    missing = compare_fingerprints(source, {FINGERPRINT: {}}, lambda item, want, got: True)
    assert not missing[0].passed


def test_many_differences_are_named_up_to_a_limit_then_counted() -> None:
    source = {FINGERPRINT: {f"file /f{index}": "a" for index in range(NAMED_DIFFERENCES + 7)}}
    outcomes = compare_fingerprints(source, {FINGERPRINT: {}})
    assert len(outcomes) == NAMED_DIFFERENCES + 1
    assert outcomes[-1].actual == "7 more items differ"


def test_a_backup_without_a_fingerprint_gives_no_outcome() -> None:
    assert compare_fingerprints({}, {FINGERPRINT: {"rows a": "x"}}) == []


def test_line_digest_does_not_depend_on_order() -> None:
    assert digest_lines(["b", "a"]) == digest_lines(["a", "b"]) != digest_lines(["a", "a", "b"])
