"""PBS-style retention of restore points: which points of a VM ``keep-last``/``-hourly``/``-daily``/
``-weekly``/``-monthly``/``-yearly`` keep (the selection itself: :func:`select`, with the repository's
``prune`` applying it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Protocol

__all__ = ["Retention", "RetentionError", "RetentionPlan", "RETENTION_KEYS", "select"]

RETENTION_KEYS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


class RetentionError(ValueError):
    """Retention settings that cannot be used (says which and why)."""


@dataclass(frozen=True)
class Retention:
    """PBS prune options: how many restore points each rule keeps per VM. All zero: keep everything."""
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def __post_init__(self) -> None:
        for k in RETENTION_KEYS:
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise RetentionError(f"{k.replace('_', '-')} must be a whole number of 0 or more, not {v!r}")

    @property
    def keeps_all(self) -> bool:
        return not any(getattr(self, k) for k in RETENTION_KEYS)

    def describe(self) -> str:
        if self.keeps_all:
            return "keep all"
        return " ".join(f"{k[5:]}={getattr(self, k)}" for k in RETENTION_KEYS if getattr(self, k))

    def to_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in RETENTION_KEYS if getattr(self, k)}


class _Point(Protocol):
    """What selection reads of a restore point (a :class:`~fctui.repo.model.RestorePoint`)."""
    id: str
    created: float


@dataclass
class RetentionPlan:
    """Which points a retention keeps (newest first, each with the rule that kept it) and removes."""
    keep: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)


# The period rules in PBS's order, each naming a point's period in local time; the name is also the
# period's key. Weeks are ISO weeks (Monday to Sunday) named by their ISO year, which differs from the
# calendar year for the days around 1 January.
_PERIODS: tuple[tuple[str, str, Callable[[datetime], str]], ...] = (
    ("keep_hourly", "hourly", lambda t: f"{t.year:04d}-{t.month:02d}-{t.day:02d} {t.hour:02d}:00"),
    ("keep_daily", "daily", lambda t: f"{t.year:04d}-{t.month:02d}-{t.day:02d}"),
    ("keep_weekly", "weekly", lambda t: "{:04d}-W{:02d}".format(*t.isocalendar()[:2])),
    ("keep_monthly", "monthly", lambda t: f"{t.year:04d}-{t.month:02d}"),
    ("keep_yearly", "yearly", lambda t: f"{t.year:04d}"),
)


def _local(ts: float, tz: tzinfo | None) -> datetime:
    """Wall-clock time of ``ts`` in ``tz``; None: the system's local zone (honours $TZ and DST)."""
    return datetime.fromtimestamp(ts, tz) if tz is not None else datetime.fromtimestamp(ts)


def select(points: Sequence[_Point], retention: Retention, tz: tzinfo | None) -> RetentionPlan:
    """The points of ONE VM that ``retention`` keeps, as Proxmox Backup Server's prune chooses them.

    Newest first, keep-last marks the newest N. Then keep-hourly, -daily, -weekly, -monthly and -yearly,
    in that order, each walk the points no rule has marked yet: a point whose period already holds a
    point kept by an earlier rule is passed over (left for later rules); the first point of a new period is
    kept, until the rule has N periods; a later point of a period this rule already kept is marked removed,
    so no later rule takes it. Points no rule kept are removed. A retention of all zeros keeps everything.
    Periods are read in local time of ``tz`` (None: the system's local zone)."""
    newest_first = sorted(points, key=lambda p: (p.created, p.id), reverse=True)
    if retention.keeps_all:
        return RetentionPlan(keep=[p.id for p in newest_first], why={p.id: "keep all" for p in newest_first})
    local = {p.id: _local(p.created, tz) for p in newest_first}
    rules: list[tuple[int, str, Callable[[_Point], str]]] = [(retention.keep_last, "last", lambda p: p.id)]
    for attr, name, period in _PERIODS:
        rules.append((getattr(retention, attr), name, lambda p, period=period: period(local[p.id])))
    kept: dict[str, bool] = {}   # point id -> kept (True) or removed by a rule (False)
    why: dict[str, str] = {}
    for count, name, period_of in rules:
        if not count:
            continue
        held = {period_of(p) for p in newest_first if kept.get(p.id)}   # periods earlier rules cover
        chosen: set[str] = set()
        for p in newest_first:
            if p.id in kept:
                continue
            period = period_of(p)
            if period in held:
                continue
            if period in chosen:
                kept[p.id] = False
                continue
            if len(chosen) >= count:
                break
            chosen.add(period)
            kept[p.id] = True
            why[p.id] = name if name == "last" else f"{name} {period}"
    return RetentionPlan(keep=[p.id for p in newest_first if kept.get(p.id)],
                         remove=[p.id for p in newest_first if not kept.get(p.id)], why=why)
