"""The backup status report: one row per dataset, as a table and as a self-contained HTML dashboard.

Pure rendering: the caller gathers each dataset's measurements (from the Dagster event log) into
`DatasetStatus` values; this module judges each dataset's state (ok, warning, stale, failing, unverified, with
the reason) and turns them into a pandas table and an HTML page with inline SVG charts (age against RPO, size
history on a zero-based scale) that needs no network, no JavaScript and no other file, and fits 1280 px.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from backup_pipelines.units import human_bytes, human_change, human_duration

if TYPE_CHECKING:  # pandas is imported by the functions that build frames: a backup run never loads it
    import pandas as pd

DRILL_EVERY_SECONDS = 7 * 86400.0  # the default drill schedule (`schedules.drills`) is weekly
DRILL_GRACE_SECONDS = 3600.0  # the drill's own run time: a weekly test is not late while the next one runs
WARN_AT = 0.75  # share of the RPO past which a dataset is a warning (the freshness policy's warn window)
RUNBOOK_STALE_SECONDS = 2 * 3600.0  # the reports job runs every 30 minutes: a runbook this old was not refreshed
STATES = ("failing", "stale", "unverified", "warning", "ok")  # worst first
STATE_COLORS = {
    "failing": "#b71c1c",
    "stale": "#c62828",
    "unverified": "#6a1b9a",
    "warning": "#e65100",
    "ok": "#2e7d32",
}


@dataclass(frozen=True)
class DatasetStatus:
    """What is known about one dataset's backups at report time.

    `failures` are the reasons the last run of one of its assets, or a blocking (ERROR) check, failed;
    `restore_failure` is why its last restore test failed, when it did."""

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
    failures: tuple[str, ...] = ()
    restore_failure: str | None = None
    restore_tests_enabled: bool = True
    drill_every_seconds: float = DRILL_EVERY_SECONDS

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

    def state(self, now: float) -> tuple[str, str]:
        """Return this dataset's state and the reason, worst first: failing (a run or blocking check failed),
        stale (newest backup older than the RPO), unverified (no passing restore test within the drill
        cadence), warning (age past 75 % of the RPO, or the last restore slower than the RTO), ok."""
        age = self.age_seconds(now)
        if self.failures:
            return "failing", "; ".join(self.failures)
        if age is None:
            return "stale", "no backup yet"
        if age > self.rpo_seconds:
            return (
                "stale",
                f"newest backup is {human_duration(age)} old, over the RPO of {human_duration(self.rpo_seconds)}",
            )
        unverified = self._unverified(now)
        if unverified:
            return "unverified", unverified
        warnings = []
        if age > WARN_AT * self.rpo_seconds:
            warnings.append(
                f"newest backup is {human_duration(age)} old, {age / self.rpo_seconds:.0%} of the RPO of "
                f"{human_duration(self.rpo_seconds)}"
            )
        if self.measured_rto_seconds is not None and self.measured_rto_seconds > self.rto_seconds:
            warnings.append(
                f"last restore took {human_duration(self.measured_rto_seconds)}, over the RTO of "
                f"{human_duration(self.rto_seconds)}"
            )
        if warnings:
            return "warning", "; ".join(warnings)
        tested = human_duration(now - (self.last_restore_test_at or now))
        return (
            "ok",
            f"backup {human_duration(age)} old (RPO {human_duration(self.rpo_seconds)}); restore-tested {tested} ago",
        )

    def _unverified(self, now: float) -> str | None:
        if not self.restore_tests_enabled:
            return "restore tests are disabled for this dataset in the manifest"
        if self.restore_failure is not None:
            return f"last restore test failed: {self.restore_failure}"
        if self.last_restore_test_at is None:
            return "never restore-tested"
        since = now - self.last_restore_test_at
        if since > self.drill_every_seconds + DRILL_GRACE_SECONDS:
            return (
                f"last restore test {human_duration(since)} ago; drills run every "
                f"{human_duration(self.drill_every_seconds)}"
            )
        return None


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
    import pandas as pd

    rows = []
    for item in buckets:
        row = {"dataset": item.name, "bucket": item.bucket, "region": item.region}
        for rule, result in item.rules.items():
            row[rule] = "not checked" if result is None else "pass" if result[0] else f"FAIL: {result[1]}"
        row["checked"] = when(item.checked_at)
        row["status"] = "FAIL" if item.failing else "ok"
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values("status", key=lambda column: column != "FAIL", kind="stable").fillna("-")


def when(epoch: float | None) -> str:
    """Return an epoch time as "2026-12-01 09:30 UTC", or "never"."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC") if epoch else "never"


def _ago(epoch: float | None, now: float) -> str:
    return "never" if epoch is None else f"{human_duration(now - epoch)} ago"


STATUS_COLUMNS = (
    "dataset", "state", "reason", "kind", "age", "rpo", "last backup", "size stored", "trend", "3-2-1",
    "copies", "last restore test", "measured rto", "rto", "rto ok",
)  # fmt: skip


def status_frame(statuses: list[DatasetStatus], now: float) -> pd.DataFrame:
    """Return the report as a table: one row per dataset, worst state first, every value with its unit."""
    import pandas as pd

    rows = []
    for item in statuses:
        state, reason = item.state(now)
        rto_ok = item.measured_rto_seconds is None or item.measured_rto_seconds <= item.rto_seconds
        rows.append(
            {
                "dataset": item.name,
                "state": state,
                "reason": reason,
                "kind": item.kind,
                "age": human_duration(item.age_seconds(now)),
                "rpo": human_duration(item.rpo_seconds),
                "last backup": when(item.last_backup_at),
                "size stored": human_bytes(item.bytes_stored),
                "trend": human_change(item.size_trend()),
                "3-2-1": item.three_two_one,
                "copies": item.copies,
                "last restore test": when(item.last_restore_test_at),
                "measured rto": human_duration(item.measured_rto_seconds),
                "rto": human_duration(item.rto_seconds),
                "rto ok": "-" if item.measured_rto_seconds is None else "yes" if rto_ok else "no",
            }
        )
    frame = pd.DataFrame(rows, columns=list(STATUS_COLUMNS))
    if not frame.empty:
        order = {state: index for index, state in enumerate(STATES)}
        frame = frame.sort_values(
            ["state", "dataset"], key=lambda column: column.map(order) if column.name == "state" else column
        ).reset_index(drop=True)
    return frame


def state_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Return how many datasets of `frame` are in each state, worst first (every state, zero included)."""
    import pandas as pd

    counts = frame["state"].value_counts() if not frame.empty else pd.Series(dtype=int)
    return {state: int(counts.get(state, 0)) for state in STATES}


def _age_bar(item: DatasetStatus, now: float) -> str:
    age = item.age_seconds(now)
    ratio = 2.0 if age is None else min(age / item.rpo_seconds, 2.0)
    width = round(ratio / 2 * 120)
    color = "#c62828" if ratio > 1 else ("#f9a825" if ratio > WARN_AT else "#2e7d32")
    label = "no backup" if age is None else f"{human_duration(age)} of {human_duration(item.rpo_seconds)}"
    return (
        f'<svg class="age" width="124" height="14" role="img" aria-label="age {ratio:.0%} of RPO">'
        f'<rect x="0" y="2" width="120" height="10" fill="#eee"/>'
        f'<rect x="0" y="2" width="{max(width, 2)}" height="10" fill="{color}"/>'
        f'<line x1="60" y1="0" x2="60" y2="14" stroke="#333" stroke-dasharray="2,1"/></svg>'
        f'<div class="sub">{html.escape(label)}</div>'
    )


def _sparkline(history: list[tuple[float, int]]) -> str:
    """A size chart on a zero-based scale with its top labelled, so a 0.2 % change looks like one."""
    points = sorted(history)
    if len(points) < 2:
        return '<svg class="size" width="150" height="36" role="img" aria-label="no size history"></svg>'
    sizes = [size for _, size in points]
    top = max(sizes) or 1
    step = 144 / (len(sizes) - 1)
    coordinates = " ".join(f"{4 + index * step:.1f},{34 - size / top * 22:.1f}" for index, size in enumerate(sizes))
    described = ", ".join(f"{when(at)}: {human_bytes(size)}" for at, size in points[-5:])
    return (
        f'<svg class="size" width="150" height="36" role="img" aria-label="size history from 0 to '
        f'{html.escape(human_bytes(top))}"><title>{html.escape(described)}</title>'
        f'<text x="4" y="9" font-size="9" fill="#555">0 to {html.escape(human_bytes(top))}</text>'
        f'<line x1="4" y1="12" x2="148" y2="12" stroke="#ddd"/>'
        f'<line x1="4" y1="34" x2="148" y2="34" stroke="#999"/>'
        f'<polyline fill="none" stroke="#1565c0" stroke-width="1.5" points="{coordinates}"/></svg>'
    )


def _details(item: DatasetStatus, row: Mapping[Hashable, object]) -> str:
    facts = {
        "last backup": f"{row['last backup']} (partition {item.partition or '-'})",
        "schedule": item.schedule,
        "stored at": item.location or "-",
        "size": f"{row['size stored']} stored, {human_bytes(item.bytes_raw)} raw",
        "copies": str(item.copies),
        "last verified": when(item.last_verified_at),
        "last restore test": f"{row['last restore test']}: {row['measured rto']} (RTO {row['rto']})",
    }
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts.items())
    return f"<details><summary>details</summary><dl>{items}</dl></details>"


def _dataset_row(item: DatasetStatus, row: Mapping[Hashable, object], now: float) -> str:
    state = str(row["state"])
    restore = (
        "never"
        if item.last_restore_test_at is None
        else f"{_ago(item.last_restore_test_at, now)}<div class='sub'>took {html.escape(str(row['measured rto']))}"
        f" (RTO {html.escape(str(row['rto']))})</div>"
    )
    cells = [
        f'<span class="badge {state}">{state}</span>',
        f'<b>{html.escape(item.name)}</b><div class="sub">{html.escape(item.kind)} · {html.escape(item.schedule)}'
        "</div>",
        f'<span class="reason">{html.escape(str(row["reason"]))}</span>{_details(item, row)}',
        _age_bar(item, now),
        f"{html.escape(str(row['size stored']))}<div class='sub'>{html.escape(str(row['trend']))}</div>",
        html.escape(short_three_two_one(str(row["3-2-1"]))),
        restore,
        _sparkline(item.size_history),
    ]
    return f'<tr class="{state}" id="row-{html.escape(item.name)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def short_three_two_one(summary: str) -> str:
    """Return a 3-2-1 summary ("missing 3 copies: only 2 (...); 1 more ...; 2 media: ...") as its rules only:
    "missing 3 copies, 2 media" (the whole text stays in the reason and the table)."""
    if not summary.startswith("missing "):
        return summary
    rules = [part.split(":")[0] for part in summary.removeprefix("missing ").split("; ") if ":" in part]
    return "missing " + ", ".join(rules) if rules else summary


def _buckets_html(buckets: list[BucketStatus]) -> str:
    frame = bucket_frame(buckets)
    if frame.empty:
        return ""
    header = "".join(f"<th>{html.escape(str(column))}</th>" for column in frame.columns)
    body = [
        f'<tr class="{"failing" if row["status"] == "FAIL" else "ok"}">'
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


def _runbook_line(runbook_generated_at: float | None, now: float) -> str:
    if runbook_generated_at is None:
        return '<p id="runbook" class="alert">DR runbook: never generated. Run the reports job.</p>'
    age = now - runbook_generated_at
    text = f"DR runbook generated {when(runbook_generated_at)} ({human_duration(age)} ago)"
    if age > RUNBOOK_STALE_SECONDS:
        return f'<p id="runbook" class="alert">{text}: out of date, the reports job is failing or not running.</p>'
    return f'<p id="runbook">{text}.</p>'


STYLE = """
body { font-family: system-ui, sans-serif; margin: 16px; color: #222; max-width: 1248px; }
h1 { margin: 0 0 4px 0; font-size: 22px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; table-layout: fixed; }
th, td { border-bottom: 1px solid #ddd; padding: 5px 6px; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; }
th { background: #f5f5f5; }
.sub { color: #666; font-size: 11px; }
.badge { display: inline-block; white-space: nowrap; padding: 2px 7px; border-radius: 9px; color: #fff;
  font-weight: bold; font-size: 12px; }
.summary { font-size: 15px; margin: 4px 0; }
.summary .badge { margin-right: 4px; }
.alert { color: #b71c1c; font-weight: bold; }
details summary { cursor: pointer; color: #1565c0; font-size: 11px; }
dl { margin: 4px 0; display: grid; grid-template-columns: max-content 1fr; gap: 1px 8px; font-size: 12px; }
dt { color: #666; } dd { margin: 0; }
""" + "".join(f".badge.{state} {{ background: {color}; }}\n" for state, color in STATE_COLORS.items())

COLUMNS = (  # header, width (px): the reason takes what is left of 1248 px
    ("state", 104), ("dataset", 150), ("why", None), ("age / RPO", 140), ("size", 86), ("3-2-1", 120),
    ("restore test", 140), ("size history (zero-based)", 162),
)  # fmt: skip


def render_html(
    statuses: list[DatasetStatus],
    now: float,
    buckets: list[BucketStatus] | None = None,
    runbook_generated_at: float | None = None,
    frame: pd.DataFrame | None = None,
) -> str:
    """Return the dashboard as one self-contained HTML page that fits 1280 px: a summary of the states, the
    DR runbook's age, one row per dataset (worst first; its state and reason, age against RPO, size with its
    trend, 3-2-1, the last restore test and a size chart; the rest in a <details>), then the watched buckets.
    `frame` is `status_frame(statuses, now)` when the caller has it already."""
    frame = status_frame(statuses, now) if frame is None else frame
    by_name = {item.name: item for item in statuses}
    counts = state_counts(frame)
    chips = " ".join(f'<span class="badge {state}">{counts[state]} {state}</span>' for state in STATES)
    columns = "".join(f'<col style="width: {width}px">' if width else "<col>" for _, width in COLUMNS)
    header = "".join(f"<th>{html.escape(title)}</th>" for title, _ in COLUMNS)
    body = [_dataset_row(by_name[str(row["dataset"])], row, now) for row in frame.to_dict("records")]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Backup status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head><body>
<h1>Backup status</h1>
<p class="summary" id="summary">{len(statuses)} datasets: {chips}</p>
<p class="sub">Generated {when(now)}. Age bar: the dashed line is the RPO; green under 75 %, amber under 100 %,
red over. Size charts start at zero.</p>
{_runbook_line(runbook_generated_at, now)}
<table id="status"><colgroup>{columns}</colgroup><thead><tr>{header}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
{_buckets_html(buckets or [])}
</body></html>
"""
