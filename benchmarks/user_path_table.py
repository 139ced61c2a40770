"""The Markdown table of benchmarks/bench_user_path.py: one row per line, ours against raw, and the goal met or not."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from process_tree import Sample

HEADER = (
    "| what | ours min / median | raw min / median | ratio (medians) | goal | met/MISSED | CPU s (tree) ours / raw | "
    "server CPU s ours / raw | peak tree MB ours / raw | stored bytes ours / raw |\n" + "|---" * 10 + "|"
)
SCALE_GOALS = {"scale_1000": ("ours < 5 s", 5.0), "scale_10000": ("ours < 30 s", 30.0)}


def spread(values: list[float], digits: int) -> str:
    """Return "min / median" of `values` ("-" if none; the value alone if one)."""
    if len(values) <= 1:
        return f"{values[0]:.{digits}f}" if values else "-"
    return f"{min(values):.{digits}f} / {statistics.median(values):.{digits}f}"


def row(
    what: str, ours: list[float], raw: list[float], goal: str, limit: float | None, *cells: str, unit: str = "s"
) -> str:
    """Return one Markdown row. The goal is met if the ratio of medians (in MB or with no raw values: ours' largest
    value) is at most `limit`. `cells` are the tree CPU, server CPU, peak memory and stored bytes."""
    ratio = statistics.median(ours) / statistics.median(raw) if ours and raw else None
    value = max(ours) if unit == "MB" or not raw else ratio
    met = "-" if limit is None or value is None else "met" if value <= limit else "MISSED"
    digits, suffix = (0, " MB") if unit == "MB" else (2, "")
    values = [spread(ours, digits) + suffix, spread(raw, digits) + suffix, "-" if ratio is None else f"{ratio:.2f}"]
    return "| " + " | ".join([what, *values, goal, met, *cells, *[""] * (4 - len(cells))]) + " |"


def pair_row(
    samples: dict[str, list[Sample]], what: str, ours: str, raw: str, goal: str, limit: float | None, stored: str = ""
) -> str:
    """Return the row of commands `ours` vs `raw` (medians of tree CPU and server CPU, the largest peak memory)."""
    sides = (samples[ours], samples.get(raw, []))

    def cell(field: str, fold: Callable[[list[float]], float], digits: int) -> str:
        def side_cell(side: list[Sample]) -> str:
            values = [value for sample in side if (value := getattr(sample, field)) is not None]
            return f"{fold(values):.{digits}f}" if side and len(values) == len(side) else "-"

        return " / ".join(side_cell(side) for side in sides)

    cells = (cell("cpu", statistics.median, 1), cell("server_cpu", statistics.median, 1), cell("peak_mb", max, 0))
    ours_seconds, raw_seconds = ([sample.seconds for sample in side] for side in sides)
    return row(what, ours_seconds, raw_seconds, goal, limit, *cells, stored)


def table(samples: dict[str, list[Sample]], size_bytes: int, stored: dict[str, int]) -> str:
    """Return the Markdown table of the samples by name, given the database's size and the stored bytes."""
    limit, ours_bytes = (1.5 if size_bytes < 1e9 else 1.10), f"{stored['ours']:,}"
    backup_goal = f"≤ {limit:.2f}x" + (" (db < 1 GB)" if size_bytes < 1e9 else "")
    # fmt: off
    specs: list[tuple[str, str, str, str, float | None, str]] = [
        (f"1. `asset materialize bench/backup` vs `pg_dump\\|zstd -3\\|age` ({size_bytes / 1e9:.2f} GB db)",
         "ours_backup", "raw_backup", backup_goal, limit, f"{ours_bytes} / {stored['raw']:,}"),
        ("2. backup step (record's duration_seconds) vs the same raw", "ours_step", "raw_backup", "≤ 1.10x", 1.10, ""),
        ("3. `asset materialize bench/restore_test` vs createdb + `age -d\\|zstd -d\\|pg_restore` + dropdb",
         "ours_restore", "raw_restore", "≤ 1.15x", 1.15, ""),
        ("4. backup step vs `pg_dump -Fc -Z0 > /dev/null`", "ours_step", "raw_dump", "≤ 1.25x", 1.25,
         f"{ours_bytes} / -"),
        ("4b. backup step vs `pg_dump -Fc -Z0 \\| gzip > file` (one run)", "ours_step", "raw_gzip",
         "ours ≥ 3x faster (≤ 0.33x)", 1 / 3, f"{ours_bytes} / {stored.get('gzip', 0):,}"),
        ("5. `job execute protect_daily` (2 datasets) vs raw backup + raw restore", "ours_protect", "raw_protect",
         "none", None, ""),
        ("6. `asset materialize tiny/backup` vs `definitions validate`", "ours_tiny", "raw_validate", "≤ 1.6x", 1.6,
         ""),
    ]
    # fmt: on
    rows = [pair_row(samples, *spec) for spec in specs if spec[2] in samples]
    for number, step in ((1, "backup"), (3, "restore")):
        ours, raw = ([sample.peak_mb or 0.0 for sample in samples[f"{side}_{step}"]] for side in ("ours", "raw"))
        rows.append(row(f"7. peak tree RSS, line {number}'s commands", ours, raw, "ours ≤ 250 MB", 250, unit="MB"))
    for name in (name for name in samples if name.startswith("scale_")):
        what = f"9. `definitions validate`, {int(name[6:]):,} sqlite datasets (once)"
        rows.append(pair_row(samples, what, name, "", *SCALE_GOALS.get(name, ("none", None))))
    return "\n".join([HEADER, *rows])
