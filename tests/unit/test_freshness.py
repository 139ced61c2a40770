from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from backup_pipelines.freshness import Freshness, plan_alerts

HOUR = 3600.0


def at(now: float, backup_at: float | None, dataset: str = "orders") -> list[Freshness]:
    return [Freshness(dataset, HOUR, backup_at, "2026-11-20-05:00" if backup_at else None, now)]


def run(ticks: Sequence[tuple[float, float | None]], reminder: timedelta | None = None) -> list[list[str]]:
    state: dict = {}
    kinds: list[list[str]] = []
    for now, backup_at in ticks:
        alerts, state = plan_alerts(state, at(now, backup_at), reminder)
        kinds.append([alert.kind for alert in alerts])
    return kinds


def test_one_alert_when_stale_none_while_it_stays_stale_one_when_fresh_again() -> None:
    ticks = [(1000, 900), (5000, 900), (5060, 900), (5120, 900), (5180, 5170), (5240, 5170), (9000, 5170)]
    assert run(ticks) == [[], ["stale"], [], [], ["recovered"], [], ["stale"]]


def test_reminder_repeats_while_stale() -> None:
    ticks = [(5000, 900), (5000 + 1800, 900), (5000 + 7200, 900), (5000 + 7300, 900)]
    assert run(ticks, reminder=timedelta(hours=2)) == [["stale"], [], ["reminder"], []]


def test_a_new_dataset_gets_its_rpo_before_it_counts_as_stale() -> None:
    assert run([(0, None), (1800, None), (HOUR + 1, None)]) == [[], [], ["stale"]]


def test_alert_names_the_dataset_partition_age_and_rpo() -> None:
    alerts, _ = plan_alerts({}, at(10_000, 1_000), None)
    [alert] = alerts
    assert alert.dataset == "orders" and alert.partition == "2026-11-20-05:00"
    assert "is 2h 30m old, older than its RPO of 1h" in alert.message


def test_freshness_uses_the_backup_time() -> None:
    assert not at(4000, 1000)[0].stale and at(4601, 1000)[0].stale
