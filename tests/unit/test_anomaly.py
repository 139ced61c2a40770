from __future__ import annotations

from backup_pipelines.anomaly import Measurement, Thresholds, detect

TABLES = {"shop.orders": 10_000, "shop.customers": 500}


def history(count: int = 5, growth: float = 0.01) -> list[Measurement]:
    """Newest first: a dataset growing a little every backup."""
    return [
        Measurement(
            int(1e8 * (1 - growth * i)),
            int(5e7 * (1 - growth * i)),
            10.0,
            {t: int(r * (1 - growth * i)) for t, r in TABLES.items()},
        )
        for i in range(1, count + 1)
    ]


def test_normal_growth_is_no_anomaly() -> None:
    latest = Measurement(int(1.02e8), int(5.1e7), 10.5, {t: int(r * 1.02) for t, r in TABLES.items()})
    verdict = detect(latest, history(), Thresholds())
    assert verdict.findings == [] and verdict.severity is None and verdict.history_size == 5


def test_a_truncated_table_is_an_error_with_the_numbers() -> None:
    latest = Measurement(int(0.97e8), int(4.9e7), 10.0, {"shop.orders": 2_000, "shop.customers": 500})
    verdict = detect(latest, history(), Thresholds())
    assert verdict.severity == "ERROR"
    [finding] = verdict.findings
    assert finding.measure == "rows:shop.orders"
    assert "2,000 rows" in finding.message and "fewer than the median" in finding.message


def test_a_dropped_table_is_an_error() -> None:
    latest = Measurement(int(1e8), int(5e7), 10.0, {"shop.customers": 500})
    assert "table shop.orders is gone" in detect(latest, history(), Thresholds()).findings[0].message


def test_a_size_drop_below_half_the_median_is_an_error() -> None:
    latest = Measurement(int(0.4e8), int(2e7), 10.0, TABLES)
    verdict = detect(latest, history(), Thresholds())
    assert verdict.severity == "ERROR" and {f.measure for f in verdict.findings} == {"bytes_raw", "bytes_stored"}


def test_a_spike_and_a_slow_backup_are_warnings() -> None:
    latest = Measurement(int(4e8), int(2e8), 45.0, {t: r * 4 for t, r in TABLES.items()})
    verdict = detect(latest, history(), Thresholds())
    assert verdict.severity == "WARN"
    assert {f.measure for f in verdict.findings} == {"bytes_raw", "bytes_stored", "duration_seconds"}


def test_too_little_history_passes_with_a_note() -> None:
    verdict = detect(Measurement(1, 1, 1.0, {}), history(2), Thresholds())
    assert verdict.findings == [] and "only 2 earlier backups; need 3" in verdict.note


def test_thresholds_are_per_dataset() -> None:
    latest = Measurement(int(0.6e8), int(3e7), 10.0, TABLES)
    assert detect(latest, history(), Thresholds()).findings == []
    assert detect(latest, history(), Thresholds(drop_below=0.7)).severity == "ERROR"
