"""Human durations ("30m", "1h", "7d", "2w") as used by the manifest for RPO, RTO and retention."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str) -> timedelta:
    """Given a duration such as "90s", "30m", "1h", "7d" or "2w", return it as a timedelta.

    Raise ValueError naming the accepted forms if the text is not one of them or is zero.
    """
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use a number and a unit, e.g. 90s, 30m, 1h, 7d, 2w")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be greater than zero")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Given a timedelta, return the shortest manifest spelling of it ("1h", "90m", "45s")."""
    seconds = int(value.total_seconds())
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{value.total_seconds():g}s"


def describe_duration(seconds: float) -> str:
    """Given seconds, return a human age with at most two units: "45s", "12m 5s", "2h 30m", "3d 4h"."""
    if seconds < 10:
        return f"{max(0.0, seconds):.1f}s"
    remaining = round(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size or (unit == "s" and not parts):
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
        if len(parts) == 2:
            break
    return " ".join(parts)
