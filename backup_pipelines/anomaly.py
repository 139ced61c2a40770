"""Size, row-count and duration anomalies of a new backup against its dataset's own history.

Pure functions over plain numbers (medians from `statistics`): given the new backup's measurements and
those of the last N successful backups, return findings with a severity. A drop is an ERROR (a
truncated table, an emptied database), a spike or a slow backup a WARN, too little history passes with a note.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["ERROR", "WARN"]


@dataclass(frozen=True)
class Thresholds:
    """When a measurement is anomalous, as fractions or multiples of the history's median."""

    history: int = 10
    min_history: int = 3
    drop_below: float = 0.5
    spike_above: float = 3.0
    table_loss_above: float = 0.5
    duration_above: float = 3.0


@dataclass(frozen=True)
class Measurement:
    """What one backup measured: sizes, duration, and every table's row count."""

    bytes_raw: int
    bytes_stored: int
    duration_seconds: float
    tables: dict[str, int] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(frozen=True)
class Finding:
    """One anomaly: what, how bad, and the numbers behind it."""

    measure: str
    severity: Severity
    value: float
    median: float
    message: str


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing a backup with its history."""

    findings: list[Finding]
    history_size: int
    note: str = ""
    medians: dict[str, float] = field(default_factory=dict)

    @property
    def severity(self) -> Severity | None:
        if any(finding.severity == "ERROR" for finding in self.findings):
            return "ERROR"
        return "WARN" if self.findings else None


def detect(latest: Measurement, history: Sequence[Measurement], thresholds: Thresholds) -> Verdict:
    """Compare `latest` with the newest `thresholds.history` entries of `history` (newest first).

    Return a Verdict whose findings are: ERROR when stored or raw bytes fall below `drop_below` x the rolling
    median or a table loses more than `table_loss_above` of its median rows; WARN when bytes exceed
    `spike_above` x the median or the duration exceeds `duration_above` x the median. With fewer than
    `min_history` earlier backups, return no finding and a note saying so.
    """
    recent = list(history[: thresholds.history])
    if len(recent) < thresholds.min_history:
        return Verdict([], len(recent), f"only {len(recent)} earlier backups; need {thresholds.min_history}")
    medians = {
        measure: float(statistics.median(float(getattr(m, measure)) for m in recent))
        for measure in ("bytes_raw", "bytes_stored", "duration_seconds")
    }
    findings = []
    for measure in ("bytes_raw", "bytes_stored"):
        findings += _size_findings(measure, float(getattr(latest, measure)), medians[measure], thresholds)
    duration_median = medians["duration_seconds"]
    if duration_median > 0 and latest.duration_seconds > thresholds.duration_above * duration_median:
        findings.append(
            Finding(
                "duration_seconds",
                "WARN",
                latest.duration_seconds,
                duration_median,
                f"backup took {latest.duration_seconds:.1f}s, over {thresholds.duration_above:g}x the median "
                f"{duration_median:.1f}s",
            )
        )
    findings += _table_findings(latest, recent, thresholds)
    return Verdict(findings, len(recent), medians=medians)


def _size_findings(measure: str, value: float, median: float, thresholds: Thresholds) -> list[Finding]:
    if median <= 0:
        return []
    ratio = value / median
    if ratio < thresholds.drop_below:
        return [
            Finding(
                measure,
                "ERROR",
                value,
                median,
                f"{measure} {value:,.0f} is {ratio:.0%} of the median {median:,.0f} "
                f"(alarm below {thresholds.drop_below:.0%})",
            )
        ]
    if ratio > thresholds.spike_above:
        return [
            Finding(
                measure,
                "WARN",
                value,
                median,
                f"{measure} {value:,.0f} is {ratio:.1f}x the median {median:,.0f} "
                f"(warning above {thresholds.spike_above:g}x)",
            )
        ]
    return []


def _table_findings(latest: Measurement, recent: list[Measurement], thresholds: Thresholds) -> list[Finding]:
    tables = list(dict.fromkeys(table for m in recent for table in m.tables))  # first seen first
    findings = []
    for table in tables:
        counts = [float(m.tables[table]) for m in recent if m.tables.get(table) is not None]
        median = float(statistics.median(counts)) if counts else 0.0
        value = latest.tables.get(table)
        if median <= 0:
            continue
        if value is None:
            findings.append(
                Finding(f"rows:{table}", "ERROR", 0, median, f"table {table} is gone (median {median:,.0f} rows)")
            )
        elif value < (1 - thresholds.table_loss_above) * median:
            findings.append(
                Finding(
                    f"rows:{table}",
                    "ERROR",
                    value,
                    median,
                    f"table {table} has {value:,} rows, {1 - value / median:.0%} fewer than the median "
                    f"{median:,.0f} (alarm above {thresholds.table_loss_above:.0%} loss)",
                )
            )
    return findings
