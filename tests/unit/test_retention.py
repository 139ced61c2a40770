"""Retention: worked examples and properties (hypothesis) of the pure policy, with restic's forget semantics."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_pipelines.retention import RULES, Candidate, Policy, apply_policy, plan_retention

NOW = datetime(2027, 3, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def kept(decisions: list) -> dict[str, tuple[str, ...]]:
    return {d.backup: d.reasons for d in decisions if d.keep}


def test_worked_example_from_the_docstring_across_iso_week_53() -> None:
    times = ["2026-12-31T23:00", "2026-12-31T08:00", "2026-12-30T12:00", "2026-12-27T09:00", "2026-12-20T09:00"]
    decisions = apply_policy([(t, at(t)) for t in times], Policy(keep_daily=2, keep_weekly=2), NOW)
    assert kept(decisions) == {
        "2026-12-31T23:00": ("daily", "weekly"),
        "2026-12-30T12:00": ("daily",),
        "2026-12-27T09:00": ("weekly",),
    }


def test_new_year_inside_iso_week_53_is_one_week_but_two_years() -> None:
    times = ["2027-01-02T10:00", "2026-12-31T10:00", "2026-12-25T10:00"]  # 2027-01-02 is still 2026-W53
    weekly = kept(apply_policy([(t, at(t)) for t in times], Policy(keep_weekly=5), NOW))
    assert set(weekly) == {"2027-01-02T10:00", "2026-12-25T10:00"}
    yearly = kept(apply_policy([(t, at(t)) for t in times], Policy(keep_yearly=5), NOW))
    assert set(yearly) == {"2027-01-02T10:00", "2026-12-31T10:00"}


def test_monthly_keeps_the_newest_of_each_month_and_skips_empty_months() -> None:
    times = ["2026-12-15T00:00", "2026-12-01T00:00", "2026-10-31T23:59", "2026-10-02T00:00", "2026-07-01T00:00"]
    monthly = kept(apply_policy([(t, at(t)) for t in times], Policy(keep_monthly=3), NOW))
    assert set(monthly) == {"2026-12-15T00:00", "2026-10-31T23:59", "2026-07-01T00:00"}


def test_keep_within_counts_from_the_newest_backup_not_from_now() -> None:
    times = ["2026-06-10T00:00", "2026-06-08T00:00", "2026-06-03T00:00"]
    decisions = apply_policy([(t, at(t)) for t in times], Policy(keep_within=timedelta(days=3)), NOW)
    assert set(kept(decisions)) == {"2026-06-10T00:00", "2026-06-08T00:00"}


def test_times_are_compared_in_utc() -> None:
    from zoneinfo import ZoneInfo

    berlin = datetime(2026, 6, 10, 1, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # 2026-06-09 23:30 UTC
    decisions = apply_policy([("a", berlin), ("b", at("2026-06-09T10:00"))], Policy(keep_daily=5), NOW)
    assert set(kept(decisions)) == {"a"}


def test_an_empty_policy_keeps_everything() -> None:
    assert all(d.keep for d in apply_policy([("a", NOW), ("b", NOW - timedelta(days=400))], Policy(), NOW))


# --- properties -------------------------------------------------------------------------------------------

moments = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 2, 28)).map(
    lambda moment: moment.replace(tzinfo=UTC, microsecond=0)
)
histories = st.lists(moments, min_size=0, max_size=60, unique=True).map(
    lambda times: [(f"b{index:03d}", moment) for index, moment in enumerate(times)]
)
counts = st.one_of(st.none(), st.integers(min_value=1, max_value=8))
policies = st.builds(
    Policy,
    keep_last=counts,
    keep_hourly=counts,
    keep_daily=counts,
    keep_weekly=counts,
    keep_monthly=counts,
    keep_yearly=counts,
    keep_within=st.one_of(st.none(), st.integers(1, 2000).map(lambda h: timedelta(hours=h))),
)


def demanded(backups: list[tuple[str, datetime]], policy: Policy) -> set[str]:
    """An independent statement of what each rule demands: group by period, newest per period, N newest periods."""
    newest_first = sorted(backups, key=lambda item: (item[1], item[0]), reverse=True)
    wanted: set[str] = set()
    for rule, _, period_of in RULES:
        count = getattr(policy, rule)
        if not count:
            continue
        newest_per_period: dict[object, str] = {}
        for index, (name, moment) in enumerate(newest_first):
            newest_per_period.setdefault(period_of(moment, index), name)
        wanted |= set(list(newest_per_period.values())[:count])
    if policy.keep_within is not None and newest_first:
        latest = max(moment for _, moment in newest_first if moment < NOW)
        wanted |= {name for name, moment in newest_first if moment > latest - policy.keep_within}
    return wanted


@settings(max_examples=300, deadline=None)
@given(histories, policies)
def test_kept_set_is_exactly_what_the_rules_demand(backups: list, policy: Policy) -> None:
    decisions = apply_policy(backups, policy, NOW)
    assert len(decisions) == len(backups)
    if policy.is_empty():
        assert all(d.keep for d in decisions)
    else:
        assert set(kept(decisions)) == demanded(backups, policy)


@settings(max_examples=200, deadline=None)
@given(histories, policies, st.randoms(use_true_random=False))
def test_plan_is_deterministic_and_idempotent(backups: list, policy: Policy, shuffler: random.Random) -> None:
    first = apply_policy(backups, policy, NOW)
    shuffled = list(backups)
    shuffler.shuffle(shuffled)
    assert apply_policy(shuffled, policy, NOW) == first
    survivors = [(d.backup, d.time) for d in first if d.keep]
    assert set(kept(apply_policy(survivors, policy, NOW))) == {name for name, _ in survivors}


@settings(max_examples=200, deadline=None)
@given(histories, policies, st.data())
def test_safety_rules_always_hold(backups: list, policy: Policy, data: st.DataObject) -> None:
    candidates = [
        Candidate(
            name,
            moment,
            verified=data.draw(st.booleans()),
            locked_until=NOW + timedelta(days=1) if data.draw(st.booleans()) else None,
        )
        for name, moment in backups
    ]
    min_age = timedelta(days=data.draw(st.integers(0, 30)))
    decisions = plan_retention(candidates, policy, NOW, min_age)
    keep = set(kept(decisions))
    if candidates:
        newest = max(candidates, key=lambda c: (c.time, c.backup))
        assert newest.backup in keep
        verified = [c for c in candidates if c.verified]
        if verified:
            assert max(verified, key=lambda c: (c.time, c.backup)).backup in keep
    assert {c.backup for c in candidates if c.locked_until} <= keep
    assert {c.backup for c in candidates if NOW - c.time < min_age} <= keep
    assert set(kept(apply_policy(backups, policy, NOW))) <= keep  # safety only adds


@pytest.mark.parametrize("count", [1, 3])
def test_keep_last_keeps_the_newest(count: int) -> None:
    backups = [(f"b{i}", NOW - timedelta(hours=i)) for i in range(5)]
    assert set(kept(apply_policy(backups, Policy(keep_last=count), NOW))) == {f"b{i}" for i in range(count)}
