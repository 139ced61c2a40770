"""Grandfather-father-son retention: which backups to keep, and why. A pure function, reusable by any tool.

Semantics are those of `restic forget` (and borg's `prune`), evaluated in UTC:

* Backups are taken newest first. For each rule `keep_last`, `keep_hourly`, `keep_daily`, `keep_weekly`,
  `keep_monthly`, `keep_yearly` with count N, a backup is kept when its period (the backup itself, its
  hour, day, ISO week, month, year) differs from the period of the previous backup that rule kept, until N
  backups were kept by that rule. So each rule keeps the newest backup of each of the N most recent periods
  that contain a backup; empty periods do not count.
* `keep_within` keeps every backup younger than the duration, measured from the newest backup that is not
  in the future (not from "now"), as restic does.
* A backup kept by any rule is kept; the reasons list every rule that kept it.

Worked example (`keep_daily: 2, keep_weekly: 2`), backups at 2026-12-31 23:00, 2026-12-31 08:00,
2026-12-30 12:00, 2026-12-27 09:00, 2026-12-20 09:00 (all UTC), newest first:

| backup           | day        | ISO week | kept by        |
|------------------|------------|----------|----------------|
| 2026-12-31 23:00 | 2026-12-31 | 2026-W53 | daily, weekly  |
| 2026-12-31 08:00 | same day   | same     | (expired)      |
| 2026-12-30 12:00 | 2026-12-30 | same     | daily          |
| 2026-12-27 09:00 | 2026-12-27 | 2026-W52 | weekly         |
| 2026-12-20 09:00 | 2026-12-20 | 2026-W51 | (expired: both counts used up) |

`plan_retention` then adds this project's safety rules on top (they only ever keep more): the newest backup,
the newest verified-and-restore-tested backup, every backup younger than a minimum age, and every backup
under an active object lock are never expired.

Quarantined backups (a blocking check failed on them, see `backup_pipelines.quarantine`) are left out of the
policy: no keep rule counts or keeps them, and they are neither "the newest" nor "the newest verified"
backup. Only the minimum age and an object lock keep one, so it expires once older than the minimum age
(unless the policy is empty, which keeps everything). A dataset whose every backup is quarantined keeps the
newest of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

RULES: list[tuple[str, str, Callable[[datetime, int], object]]] = [
    ("keep_last", "last", lambda moment, index: index),
    ("keep_hourly", "hourly", lambda moment, index: (moment.year, moment.month, moment.day, moment.hour)),
    ("keep_daily", "daily", lambda moment, index: (moment.year, moment.month, moment.day)),
    ("keep_weekly", "weekly", lambda moment, index: moment.isocalendar()[:2]),
    ("keep_monthly", "monthly", lambda moment, index: (moment.year, moment.month)),
    ("keep_yearly", "yearly", lambda moment, index: moment.year),
]


@dataclass(frozen=True)
class Policy:
    """How many backups to keep per period kind (None = rule unused), and the keep-within duration."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: timedelta | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name, _, _ in RULES) and self.keep_within is None


@dataclass(frozen=True)
class Decision:
    """The verdict on one backup: kept (with every reason) or expired."""

    backup: str
    time: datetime
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def keep(self) -> bool:
        return bool(self.reasons)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def apply_policy(
    backups: Sequence[tuple[str, datetime]], policy: Policy, now: datetime | None = None
) -> list[Decision]:
    """Given (backup id, time) pairs and a policy, return one Decision per backup, newest first.

    Ties in time are ordered by backup id, descending, so the result is deterministic. An empty policy keeps
    everything (reason "policy is empty"), as restic does.
    """
    ordered = sorted(
        ((name, _utc(moment)) for name, moment in backups), key=lambda item: (item[1], item[0]), reverse=True
    )
    if policy.is_empty():
        return [Decision(name, moment, ("policy is empty",)) for name, moment in ordered]
    if not ordered:
        return []
    current = _utc(now or datetime.now(UTC))
    not_future = [moment for _, moment in ordered if moment < current]
    latest = max(not_future) if not_future else None  # all in the future: restic keeps them all "within"
    counts = {name: getattr(policy, name) for name, _, _ in RULES}
    last_period: dict[str, object] = {name: None for name, _, _ in RULES}
    decisions = []
    for index, (name, moment) in enumerate(ordered):
        reasons = []
        if policy.keep_within is not None and (latest is None or moment > latest - policy.keep_within):
            reasons.append("within")
        for rule, label, period_of in RULES:
            if not counts[rule]:
                continue
            period = period_of(moment, index)
            if period != last_period[rule]:
                last_period[rule] = period
                counts[rule] -= 1
                reasons.append(label)
        decisions.append(Decision(name, moment, tuple(reasons)))
    return decisions


@dataclass(frozen=True)
class Candidate:
    """A backup as retention sees it: when it was taken, whether it passed verify and restore test, and
    until when an object lock forbids deleting it."""

    backup: str
    time: datetime
    verified: bool = False
    locked_until: datetime | None = None
    quarantined: bool = False


def plan_retention(
    candidates: Sequence[Candidate], policy: Policy, now: datetime, min_age: timedelta = timedelta(0)
) -> list[Decision]:
    """Return the policy's decisions, newest first, with the safety rules applied: never expire the newest
    backup, the newest verified (and restore-tested) backup, a backup younger than `min_age`, or a locked
    backup. Quarantined candidates are left out of the policy and of "newest" (see the module docstring)."""
    decisions = _policy_decisions(candidates, policy, now)
    by_name = {c.backup: c for c in candidates}
    good = [d for d in decisions if not by_name[d.backup].quarantined]
    newest = (good or decisions)[0].backup if decisions else None
    verified = [d for d in good if by_name[d.backup].verified]
    newest_verified = verified[0].backup if verified else None
    current = _utc(now)
    result = []
    for decision in decisions:
        reasons = list(decision.reasons)
        candidate = by_name[decision.backup]
        if decision.backup == newest:
            reasons.append("safety: newest backup")
        if decision.backup == newest_verified:
            reasons.append("safety: newest verified backup")
        if current - decision.time < min_age:
            reasons.append("safety: younger than the minimum age")
        if candidate.locked_until is not None and _utc(candidate.locked_until) > current:
            reasons.append("safety: object lock")
        result.append(Decision(decision.backup, decision.time, tuple(dict.fromkeys(reasons))))
    return result


def _policy_decisions(candidates: Sequence[Candidate], policy: Policy, now: datetime) -> list[Decision]:
    """Return `apply_policy` over the candidates that are not quarantined, merged (newest first) with a bare
    decision for each quarantined one: kept only when the policy is empty."""
    decisions = apply_policy([(c.backup, c.time) for c in candidates if not c.quarantined], policy, now)
    reasons = ("policy is empty",) if policy.is_empty() else ()
    decisions += [Decision(c.backup, _utc(c.time), reasons) for c in candidates if c.quarantined]
    return sorted(decisions, key=lambda decision: (decision.time, decision.backup), reverse=True)
