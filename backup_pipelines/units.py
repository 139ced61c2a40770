"""Numbers for people: byte counts in kB/MB/GB, durations in s/min/h, relative changes without "-0%"."""

from __future__ import annotations

_BYTE_UNITS = ("kB", "MB", "GB", "TB", "PB")


def human_bytes(count: float | None) -> str:
    """Given a byte count, return it with a decimal unit and three significant digits: "512 B", "61.9 kB",
    "1.23 GB"; "-" for None."""
    if count is None:
        return "-"
    if abs(count) < 1000:
        return f"{int(count)} B"
    value = float(count)
    for unit in _BYTE_UNITS:
        value /= 1000
        if abs(value) < 999.5 or unit == _BYTE_UNITS[-1]:
            return f"{value:.3g} {unit}" if abs(value) >= 1 else f"{value:.2f} {unit}"
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    """Given seconds, return a duration in s, min or h (days past two days): "45 ms", "4.2 s", "12 min 5 s",
    "45 min", "2 h 30 min", "3 d 4 h"; "-" for None."""
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    whole = round(seconds)
    if whole < 600:
        return f"{whole // 60} min {whole % 60} s" if whole % 60 else f"{whole // 60} min"
    if whole < 3600:
        return f"{round(whole / 60)} min"
    minutes = round(whole / 60)
    if minutes < 48 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days, hours = divmod(round(whole / 3600), 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def human_change(ratio: float | None) -> str:
    """Given a relative change (0.1 = 10 % bigger), return it signed: "+12%", "-0.2%", "no change"; small
    changes keep a decimal so they never print as "-0%"."""
    if ratio is None:
        return "-"
    if abs(ratio) < 0.0005:
        return "no change"
    return f"{ratio:+.1%}" if abs(ratio) < 0.1 else f"{ratio:+.0%}"
