"""The backup status report: one row per dataset, as a table and as a self-contained HTML dashboard.

Pure rendering: the caller gathers each dataset's measurements (from the Dagster event log) into
`DatasetStatus` values; this module turns them into a pandas table and an HTML page with inline SVG charts
(age against RPO, size history) that needs no network, no JavaScript and no other file.
"""

from __future__ import annotations

import html
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from backup_pipelines.durations import describe_duration


@dataclass(frozen=True)
class DatasetStatus:
    """What is known about one dataset's backups at report time."""

    name: str
    kind: str
    schedule: str
    rpo_seconds: float
    rto_seconds: float
    last_backup_at: float | None = None
    partition: str | None = None
    bytes_stored: int | None = None
    bytes_raw: int | None = None
    copies: int = 0
    three_two_one: str = "-"
    location: str = ""
    last_verified_at: float | None = None
    last_restore_test_at: float | None = None
    measured_rto_seconds: float | None = None
    size_history: list[tuple[float, int]] = field(default_factory=list)

    def age_seconds(self, now: float) -> float | None:
        return None if self.last_backup_at is None else max(0.0, now - self.last_backup_at)

    def stale(self, now: float) -> bool:
        age = self.age_seconds(now)
        return age is None or age > self.rpo_seconds

    def size_trend(self) -> float | None:
        """The newest stored size relative to the median of the earlier ones (0.1 = 10 % bigger)."""
        sizes = [size for _, size in sorted(self.size_history)]
        if len(sizes) < 2 or not statistics.median(sizes[:-1]):
            return None
        return sizes[-1] / statistics.median(sizes[:-1]) - 1


@dataclass(frozen=True)
class BucketStatus:
    """The latest checks of one watched bucket (`s3` dataset): rule -> (passed, what was seen), None when the
    rule has not been checked yet."""

    name: str
    bucket: str
    region: str
    rules: dict[str, tuple[bool, str] | None] = field(default_factory=dict)
    checked_at: float | None = None

    @property
    def failing(self) -> list[str]:
        return [rule for rule, result in self.rules.items() if result is not None and not result[0]]


def bucket_frame(buckets: list[BucketStatus]) -> pd.DataFrame:
    """Return one row per watched bucket: failing ones first, each rule as pass / FAIL: why / not checked."""
    rows = []
    for item in buckets:
        row = {"dataset": item.name, "bucket": item.bucket, "region": item.region}
        for rule, result in item.rules.items():
            row[rule] = "not checked" if result is None else "pass" if result[0] else f"FAIL: {result[1]}"
        row["checked"] = _when(item.checked_at)
        row["status"] = "FAIL" if item.failing else "ok"
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values("status", key=lambda column: column != "FAIL", kind="stable").fillna("-")


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC") if epoch else "never"


def _span(seconds: float | None) -> str:
    return "-" if seconds is None else describe_duration(seconds)


def status_frame(statuses: list[DatasetStatus], now: float) -> pd.DataFrame:
    """Return the report as a table: one row per dataset, worst first (stale, then RTO misses)."""
    rows = []
    for item in statuses:
        age = item.age_seconds(now)
        trend = item.size_trend()
        rows.append(
            {
                "dataset": item.name,
                "status": "STALE" if item.stale(now) else "ok",
                "last backup": _when(item.last_backup_at),
                "age": _span(age),
                "rpo": _span(item.rpo_seconds),
                "last verified": _when(item.last_verified_at),
                "last restore test": _when(item.last_restore_test_at),
                "measured rto": _span(item.measured_rto_seconds),
                "rto": _span(item.rto_seconds),
                "rto ok": "-"
                if item.measured_rto_seconds is None
                else str(item.measured_rto_seconds <= item.rto_seconds),
                "size stored": "-" if item.bytes_stored is None else f"{item.bytes_stored:,}",
                "trend": "-" if trend is None else f"{trend:+.0%}",
                "copies": item.copies,
            }
        )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(["status", "dataset"], ascending=[True, True], key=_stale_first).reset_index(
            drop=True
        )
    return frame


def _stale_first(column: pd.Series) -> pd.Series:
    return column.map({"STALE": 0, "ok": 1}) if column.name == "status" else column


def _age_bar(item: DatasetStatus, now: float) -> str:
    age = item.age_seconds(now)
    ratio = 2.0 if age is None else min(age / item.rpo_seconds, 2.0)
    width = round(ratio / 2 * 120)
    color = "#c62828" if ratio > 1 else ("#f9a825" if ratio > 0.75 else "#2e7d32")
    return (
        f'<svg class="age" width="124" height="14" role="img" aria-label="age {ratio:.0%} of RPO">'
        f'<rect x="0" y="2" width="120" height="10" fill="#eee"/>'
        f'<rect x="0" y="2" width="{max(width, 2)}" height="10" fill="{color}"/>'
        f'<line x1="60" y1="0" x2="60" y2="14" stroke="#333" stroke-dasharray="2,1"/></svg>'
    )


def _sparkline(history: list[tuple[float, int]]) -> str:
    points = sorted(history)
    if len(points) < 2:
        return '<svg class="size" width="120" height="24"></svg>'
    sizes = [size for _, size in points]
    low, high = min(sizes), max(sizes)
    span = (high - low) or 1
    step = 116 / (len(sizes) - 1)
    coordinates = " ".join(
        f"{2 + index * step:.1f},{22 - (size - low) / span * 20:.1f}" for index, size in enumerate(sizes)
    )
    return (
        f'<svg class="size" width="120" height="24" role="img" aria-label="size history">'
        f'<polyline fill="none" stroke="#1565c0" stroke-width="1.5" points="{coordinates}"/></svg>'
    )


def _buckets_html(buckets: list[BucketStatus]) -> str:
    frame = bucket_frame(buckets)
    if frame.empty:
        return ""
    header = "".join(f"<th>{html.escape(str(column))}</th>" for column in frame.columns)
    body = [
        f'<tr class="{"stale" if row["status"] == "FAIL" else "ok"}">'
        + "".join(f"<td>{html.escape(str(value))}</td>" for value in row.values())
        + "</tr>"
        for row in frame.to_dict("records")
    ]
    failing = int((frame["status"] == "FAIL").sum())
    return (
        f'<h2>Protected buckets</h2>\n<p id="bucket-summary">{len(buckets)} buckets, {failing} failing a rule. '
        "Versioning is not a backup, but without it overwritten and deleted objects are gone.</p>\n"
        f'<table id="buckets"><thead><tr>{header}</tr></thead><tbody>\n{chr(10).join(body)}\n</tbody></table>'
    )


def render_html(statuses: list[DatasetStatus], now: float, buckets: list[BucketStatus] | None = None) -> str:
    """Return the dashboard as one self-contained HTML page (with the watched buckets, when there are any)."""
    frame = status_frame(statuses, now)
    by_name = {item.name: item for item in statuses}
    stale = int((frame["status"] == "STALE").sum()) if not frame.empty else 0
    header = (
        "".join(f"<th>{html.escape(column)}</th>" for column in frame.columns)
        + "<th>age / RPO</th><th>size history</th>"
    )
    body = []
    for row in frame.to_dict("records"):
        item = by_name[row["dataset"]]
        cells = "".join(f"<td>{html.escape(str(value))}</td>" for value in row.values())
        css = "stale" if row["status"] == "STALE" else "ok"
        body.append(
            f'<tr class="{css}">{cells}<td>{_age_bar(item, now)}</td><td>{_sparkline(item.size_history)}</td></tr>'
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Backup status</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; white-space: nowrap; }}
tr.stale td:nth-child(2) {{ color: #c62828; font-weight: bold; }}
#buckets tr.stale td:last-child {{ color: #c62828; font-weight: bold; }}
.summary {{ font-size: 16px; margin-bottom: 1em; }}
</style></head><body>
<h1>Backup status</h1>
<p class="summary" id="summary">{len(statuses)} datasets, {stale} stale. Generated {_when(now)}.</p>
<table id="status"><thead><tr>{header}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<p>Age bar: the dashed line is the RPO; green under 75 %, amber under 100 %, red over.</p>
{_buckets_html(buckets or [])}
</body></html>
"""
