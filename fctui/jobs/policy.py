"""Protection policies: which VMs, when (schedule inside an off-peak window), how long points are kept
(PBS-style retention) and the recovery point objective (RPO).

Pure: no I/O, no clock. Times are aware datetimes in the policy's time zone (the agent's local zone
unless configured), or epoch seconds where stored.

* **VMs** are chosen by the console's own filter language (``fctui.inventory.query``), evaluated at
  each run, so a new VM that matches is protected without anyone touching the policy.
* **Which policy wins** when several select a VM: the one with the shortest RPO (the strictest
  promise), then the one whose name sorts first. Only the winner backs the VM up and prunes its points;
  the others list it as "covered by <winner>". One VM, one schedule, one retention: never two policies
  backing up a VM at once or pruning each other's points.
* **Schedule**: ``"mon-fri 01:00,03:30"``, ``"daily 02:00"``, ``"sat 04:15"`` (days as in business
  hours: ``mon..sun``, ranges, lists, ``daily``), or ``"cron 0 2 * * 1-5"`` (five-field cron, cronsim).
* **Window**: ``"daily 22:00-06:00"`` (may cross midnight). A run starts only inside it; a run due while
  the window is closed waits for the next opening; a VM not started before the window closes is not
  started at all (reported); a run still going when it closes is reported as overrunning.
* **Missed runs** (agent down): caught up once, never once per missed time (:func:`due_time`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta, tzinfo
from typing import Any, Iterator, Mapping

from ..repo.retention import RETENTION_KEYS, Retention, RetentionError
from ..rules.launch import BusinessHours, BusinessHoursError

__all__ = [
    "PolicyError", "Schedule", "Retention", "Policy", "parse_duration", "format_duration", "window_bounds",
    "due_time", "winning_policy", "RETENTION_KEYS", "policy_from_mapping", "policies_to_toml",
    "policies_from_toml", "local_tz",
]

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# How far back a missed run is looked for: a week covers every day-of-week schedule.
CATCH_UP_HORIZON = timedelta(days=8)


class PolicyError(ValueError):
    """A policy (or one of its fields) that cannot be used; ``str()`` names the field and the fix."""


# --- durations ---------------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])", re.I)
_UNIT_S = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str | int | float, what: str = "duration") -> float:
    """``"24h"``, ``"1d12h"``, ``"90m"``, ``"2w"`` or a number of seconds -> seconds (> 0)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", s):
            seconds = float(s)
        else:
            parts = _DURATION_RE.findall(s)
            if not parts or "".join(n + u for n, u in parts) != s:
                raise PolicyError(f"{what} {text!r}: expected e.g. 24h, 1d12h, 90m or 2w")
            seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if seconds <= 0:
        raise PolicyError(f"{what} {text!r}: must be more than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration`, shortest exact form: 86400 -> ``1d``, 5400 -> ``1h30m``."""
    s = int(round(seconds))
    if s <= 0:
        return "0s"
    out = []
    for unit in ("d", "h", "m", "s"):
        n, s = divmod(s, _UNIT_S[unit])
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


# --- schedule ----------------------------------------------------------------------------------------

def _days(spec: str, text: str) -> frozenset[int]:
    try:
        return BusinessHours.parse(f"{spec} 00:00-01:00").days
    except BusinessHoursError:
        raise PolicyError(f"schedule {text!r}: unknown days {spec!r} (use mon..sun, mon-fri, sat,sun or daily)") \
            from None


def _time_of_day(s: str, text: str) -> time:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", s.strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise PolicyError(f"schedule {text!r}: bad time {s!r} (use HH:MM, 00:00 to 23:59)")
    return time(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True)
class Schedule:
    """When a policy's runs are due. ``text`` is what the user wrote (stored and shown as is)."""
    text: str
    days: frozenset[int] = frozenset(range(7))
    times: tuple[time, ...] = ()
    cron: str = ""

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        raw = " ".join(str(text).split())
        if not raw:
            raise PolicyError("schedule is empty: e.g. 'daily 01:00', 'mon-fri 01:00,13:00' or 'cron 0 2 * * *'")
        low = raw.lower()
        if low.startswith("cron ") or low.startswith("cron:"):
            expr = raw[5:].strip()
            if len(expr.split()) != 5:
                raise PolicyError(f"schedule {text!r}: a cron expression has five fields (minute hour day month weekday)")
            from cronsim import CronSim, CronSimError
            try:
                next(CronSim(expr, datetime(2026, 1, 1)))
            except (CronSimError, StopIteration) as e:
                raise PolicyError(f"schedule {text!r}: {e or 'never fires'}") from None
            return cls(raw, cron=expr)
        parts = low.split()
        if len(parts) == 1:
            days, times_spec = frozenset(range(7)), parts[0]
        elif len(parts) == 2:
            days, times_spec = _days(parts[0], raw), parts[1]
        else:
            raise PolicyError(f"schedule {text!r}: expected '[DAYS] HH:MM[,HH:MM...]' or 'cron M H DOM MON DOW'")
        times = tuple(sorted({_time_of_day(t, raw) for t in times_spec.split(",") if t}))
        if not times:
            raise PolicyError(f"schedule {text!r}: no time of day given")
        return cls(raw, days, times)

    def after(self, start: datetime) -> Iterator[datetime]:
        """Scheduled times strictly after ``start`` (aware), in order, forever."""
        tz = start.tzinfo
        if self.cron:
            from cronsim import CronSim
            local = start.astimezone(tz)
            for t in CronSim(self.cron, local.replace(second=0, microsecond=0)):
                if t > start:
                    yield t
            return
        day = start.astimezone(tz).date()
        while True:
            if day.weekday() in self.days:
                for t in self.times:
                    at = datetime.combine(day, t, tzinfo=tz)
                    if at > start:
                        yield at
            day += timedelta(days=1)

    def next_after(self, start: datetime) -> datetime:
        return next(self.after(start))

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        """Scheduled times in (start, end]."""
        out = []
        for t in self.after(start):
            if t > end:
                break
            out.append(t)
        return out

    def latest_at_or_before(self, end: datetime, horizon: timedelta = CATCH_UP_HORIZON) -> datetime | None:
        times = self.between(end - horizon, end)
        return times[-1] if times else None


# --- window ------------------------------------------------------------------------------------------

def window_bounds(window: BusinessHours | None, at: datetime) -> tuple[datetime, datetime] | None:
    """The opening of ``window`` that contains ``at`` as (start, end), or None when it is closed then.
    No window: always open (a very wide bound around ``at``)."""
    if window is None:
        return at - timedelta(days=3650), at + timedelta(days=3650)
    if not window.contains(at.replace(tzinfo=None) if at.tzinfo is None else at):
        return None
    day = at.date()
    if window.start < window.end or at.time() >= window.start:
        start_day = day
    else:
        start_day = day - timedelta(days=1)   # past midnight: the window opened yesterday
    start = datetime.combine(start_day, window.start, tzinfo=at.tzinfo)
    end_day = start_day if window.start < window.end else start_day + timedelta(days=1)
    end = datetime.combine(end_day, window.end, tzinfo=at.tzinfo)
    return start, end


def next_window_open(window: BusinessHours | None, at: datetime) -> datetime:
    """``at`` if the window is open then, else its next opening."""
    if window_bounds(window, at) is not None:
        return at
    assert window is not None
    day = at.date()
    for i in range(8):
        d = day + timedelta(days=i)
        if d.weekday() in window.days:
            start = datetime.combine(d, window.start, tzinfo=at.tzinfo)
            if start > at:
                return start
    raise PolicyError(f"window {window.describe()} never opens")


# --- policy ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    name: str
    vms: str                              # a filter-language selector, e.g. "re:^db- !rule:template"
    schedule: Schedule
    rpo_s: float                          # recovery point objective, seconds
    window: BusinessHours | None = None   # off-peak window: runs start only inside it
    retention: Retention = field(default_factory=Retention)
    full_every: int = 0                   # every Nth backup of a VM reads every block (0: never)
    enabled: bool = True
    created: float = 0.0                  # epoch seconds (set by the store)

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name or ""):
            raise PolicyError(f"policy name {self.name!r}: letters, digits, '.', '_' and '-', up to 63, "
                              "starting with a letter or digit")
        if not str(self.vms).strip():
            raise PolicyError(f"policy {self.name}: 'vms' is empty (use a filter, e.g. 're:^db-' or 'host:cna-01')")
        if self.name.lower() == "none":
            # the filter term policy:none means "no policy covers it"
            raise PolicyError("policy name 'none' is reserved (the filter policy:none selects VMs no policy covers)")
        from ..inventory.query import FilterError, parse_filter, protection_terms, site_terms
        try:
            selector = parse_filter(self.vms)
        except FilterError as e:
            raise PolicyError(f"policy {self.name}: vms {self.vms!r}: {e}") from None
        circular = protection_terms(selector)
        if circular:
            # protection is what the policies decide: a selector reading it would depend on itself
            raise PolicyError(f"policy {self.name}: vms {self.vms!r}: {', '.join(circular)}: a policy cannot "
                              "select VMs by their protection (rpo:, policy:)")
        by_site = site_terms(selector)
        if by_site:
            # the policy service reads one VRM and its rows carry no site: site: would select nothing there
            # while the console showed those VMs covered
            raise PolicyError(f"policy {self.name}: vms {self.vms!r}: {', '.join(by_site)}: a policy cannot "
                              "select VMs by site: (a policy service serves one VRM)")
        if self.rpo_s <= 0:
            raise PolicyError(f"policy {self.name}: rpo must be more than zero")
        if not isinstance(self.full_every, int) or self.full_every < 0:
            raise PolicyError(f"policy {self.name}: full-every must be 0 (never) or a whole number of backups")
        if self.window is not None and not self.schedule.cron:
            # a fixed time outside the window would never run at its time: say so now, not at 3 a.m.
            probe = datetime(2026, 1, 5)  # a Monday
            for d in range(7):
                day = probe + timedelta(days=d)
                if day.weekday() not in self.schedule.days:
                    continue
                for t in self.schedule.times:
                    if not self.window.contains(datetime.combine(day.date(), t)):
                        raise PolicyError(
                            f"policy {self.name}: schedule time {_DAY_NAMES[day.weekday()]} {t.strftime('%H:%M')} "
                            f"is outside its window {self.window.describe()}")

    def with_changes(self, **changes: Any) -> "Policy":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (TOML, JSON, tinydb); :func:`policy_from_mapping` reads it back."""
        d: dict[str, Any] = {"name": self.name, "vms": self.vms, "schedule": self.schedule.text,
                             "rpo": format_duration(self.rpo_s)}
        if self.window is not None:
            d["window"] = self.window.describe()
        d.update({k.replace("_", "-"): v for k, v in self.retention.to_dict().items()})
        if self.full_every:
            d["full-every"] = self.full_every
        if not self.enabled:
            d["enabled"] = False
        if self.created:
            d["created"] = self.created
        return d

    def describe_window(self) -> str:
        return self.window.describe() if self.window is not None else "any time"


_KNOWN_KEYS = {"name", "vms", "schedule", "rpo", "window", "full-every", "enabled", "created",
               *(k.replace("_", "-") for k in RETENTION_KEYS)}


def policy_from_mapping(d: Mapping[str, Any], where: str = "policy") -> Policy:
    """A policy from plain values (TOML table, JSON, tinydb document); keys as in :meth:`Policy.to_dict`
    (``keep_daily`` is accepted for ``keep-daily``). Unknown keys are an error, so a typo is not ignored."""
    if not isinstance(d, Mapping):
        raise PolicyError(f"{where}: expected a table of settings")
    data = {str(k).replace("_", "-"): v for k, v in d.items()}
    unknown = sorted(set(data) - _KNOWN_KEYS)
    name = data.get("name")
    label = f"{where} {name!r}" if name else where
    if unknown:
        raise PolicyError(f"{label}: unknown setting(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(_KNOWN_KEYS - {'created'}))})")
    for key in ("name", "vms", "schedule", "rpo"):
        if data.get(key) in (None, ""):
            raise PolicyError(f"{label}: '{key}' is required")
    window = None
    if data.get("window") not in (None, "", "any", "any time"):
        try:
            window = BusinessHours.parse(str(data["window"]))
        except BusinessHoursError as e:
            raise PolicyError(f"{label}: window: {str(e).replace('business hours', '').strip()}") from None
    try:
        retention = Retention(**{k: data.get(k.replace("_", "-"), 0) for k in RETENTION_KEYS})
        full_every = data.get("full-every", 0)
        if not isinstance(full_every, int) or isinstance(full_every, bool):
            raise PolicyError(f"full-every must be a whole number, not {full_every!r}")
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise PolicyError(f"enabled must be true or false, not {enabled!r}")
        return Policy(name=str(data["name"]), vms=str(data["vms"]), schedule=Schedule.parse(str(data["schedule"])),
                      rpo_s=parse_duration(data["rpo"], "rpo"), window=window, retention=retention,
                      full_every=full_every, enabled=enabled, created=float(data.get("created") or 0.0))
    except (PolicyError, RetentionError) as e:
        msg = str(e)
        raise PolicyError(msg if msg.startswith("policy ") else f"{label}: {msg}") from None


def policies_to_toml(policies: list[Policy]) -> str:
    """``[[policy]]`` tables, one per policy (``fctui policy export``)."""
    import tomli_w
    docs = []
    for p in policies:
        d = p.to_dict()
        d.pop("created", None)
        docs.append(d)
    return tomli_w.dumps({"policy": docs})


def policies_from_toml(text: str, where: str = "policies.toml") -> list[Policy]:
    import tomllib
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{where}: not valid TOML: {e}") from None
    tables = data.get("policy", [])
    extra = sorted(set(data) - {"policy"})
    if extra or not isinstance(tables, list):
        raise PolicyError(f"{where}: expected only [[policy]] tables, found {', '.join(extra) or 'policy = ...'}")
    out = [policy_from_mapping(t, f"{where} [[policy]] #{i + 1}") for i, t in enumerate(tables)]
    names = [p.name for p in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PolicyError(f"{where}: policy name(s) given twice: {', '.join(dup)}")
    return out


# --- which runs are due, which policy wins -----------------------------------------------------------

def due_time(policy: Policy, last_scheduled: datetime | None, now: datetime) -> datetime | None:
    """The scheduled time a run should start for now, or None.

    The latest scheduled time in (``last_scheduled``, ``now``] (bounded by the catch-up horizon): after
    downtime several missed times collapse into this one, so a policy catches up once, never N times.
    The run may start only while the window is open: outside it this still returns the due time and
    the caller waits for :func:`next_window_open`.
    """
    if not policy.enabled:
        return None
    floor = now - CATCH_UP_HORIZON
    if last_scheduled is not None and last_scheduled > floor:
        floor = last_scheduled
    times = policy.schedule.between(floor, now)
    return times[-1] if times else None


def _rank(p: Policy) -> tuple[float, str]:
    return (p.rpo_s, p.name)


def winning_policy(matching: list[Policy]) -> Policy | None:
    """Of the enabled policies whose selector matches a VM, the one that protects it (see module doc)."""
    enabled = [p for p in matching if p.enabled]
    return min(enabled, key=_rank) if enabled else None


def local_tz() -> tzinfo:
    """This machine's time zone with its daylight saving rules (TZ, else /etc/localtime), or its current
    fixed offset when neither can be read: schedules and windows are in local time, and a fixed offset
    would move "daily 01:00" by an hour across a change. Tests pass their own zone instead."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        tz = datetime.now().astimezone().tzinfo
        assert tz is not None
        return tz


def as_local(ts: float, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(ts, tz)
