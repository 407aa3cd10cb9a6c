"""What the Policies screen shows, built from plain data: no textual, no I/O, no clock of its own.

:func:`build_policies_view` takes the policies, the inventory rows the console holds, the protection map
(:func:`fctui.jobs.protection.assess_protection`), the policies' runs (``PolicyRun``), ``now`` and the time
zone, and returns one :class:`PolicyLine` per policy (coverage, next run, last result, the VMs it protects,
the failures of its last run) and one :class:`HostRuns` per host for the 24-hour timeline (each policy's
windows and its planned runs with the count of that host's VMs in each).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Iterable, Mapping, Sequence

from ..inventory.query import VmRow
from ..jobs.policy import Policy, PolicyError, next_window_open, window_bounds
from ..jobs.policystore import PolicyRun
from ..jobs.protection import (STATE_ORDER, VmProtection, assess_protection, last_attempts, last_good_points,
                               next_run, run_starts, selected_vms)

__all__ = ["RunFailure", "LastRun", "ProtectedVm", "PolicyLine", "PlannedRun", "HostRuns", "PoliciesView",
           "build_policies_view", "protection_for", "relative_time", "local_time", "HORIZON_S",
           "FAILED_RESULTS_OK"]

HORIZON_S = 24 * 3600.0
# a VM's result in a run that is not a failure (anything else is listed with its reason)
FAILED_RESULTS_OK = frozenset({"ok", "done", "succeeded"})


@dataclass(frozen=True)
class RunFailure:
    urn: str
    name: str
    result: str
    reason: str


@dataclass(frozen=True)
class LastRun:
    state: str                    # running / ok / partial / failed / skipped
    scheduled: float
    started: float | None
    finished: float | None
    overran: bool
    catch_up: bool
    job_id: str
    note: str
    failures: tuple[RunFailure, ...]

    @property
    def when(self) -> float:
        return self.started or self.scheduled

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(0.0, self.finished - self.started)


@dataclass(frozen=True)
class ProtectedVm:
    urn: str
    name: str
    host: str
    state: str          # a protection state (ok / at-risk / breached / not-covered)
    reason: str


@dataclass(frozen=True)
class PolicyLine:
    policy: Policy
    wins: int                                   # VMs it protects (it wins them)
    others: int                                 # VMs it selects that another policy wins
    next_run: float | None
    last: LastRun | None                        # the newest finished run
    running: LastRun | None                     # a run in progress
    protected: tuple[ProtectedVm, ...]          # the VMs it wins, worst state first
    elsewhere: tuple[tuple[str, str], ...]      # (VM name, the policy that wins it)
    states: Mapping[str, int]                   # protection state -> how many of its VMs

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def targets(self) -> list[str]:
        """The URNs of the VMs it protects (what a run of it backs up now)."""
        return [v.urn for v in self.protected]


@dataclass(frozen=True)
class PlannedRun:
    when: float
    policy: str
    vms: int            # this host's VMs in the run


@dataclass(frozen=True)
class HostRuns:
    host: str
    windows: tuple[tuple[float, float], ...]    # open windows of its policies, merged, clipped to the horizon
    runs: tuple[PlannedRun, ...]                # in time order


@dataclass(frozen=True)
class PoliciesView:
    lines: tuple[PolicyLine, ...]
    hosts: tuple[HostRuns, ...]
    start: float            # the timeline's first instant: ``now`` floored to the hour (local)
    end: float              # start + 24 h
    now: float
    not_covered: int        # VMs no enabled policy selects

    def line(self, name: str) -> PolicyLine | None:
        for ln in self.lines:
            if ln.name == name:
                return ln
        return None


# --- formatting shared by the screen -------------------------------------------------------------------

def relative_time(seconds: float) -> str:
    """``in 25 min``, ``in 3 h``, ``in 2 d``; negative: ``5 min ago``."""
    future = seconds >= 0
    s = abs(seconds)
    if s < 60:
        text = "<1 min"
    elif s < 3600:
        text = f"{int(s // 60)} min"
    elif s < 2 * 86400:
        text = f"{int(round(s / 3600))} h"
    else:
        text = f"{int(round(s / 86400))} d"
    return f"in {text}" if future else f"{text} ago"


def local_time(ts: float, now: float, tz: tzinfo) -> str:
    """``23:00`` within the next or last 24 h, else ``Tue 23:00``."""
    at = datetime.fromtimestamp(ts, tz)
    return at.strftime("%H:%M") if abs(ts - now) < 86400 else at.strftime("%a %H:%M")


# --- the view ------------------------------------------------------------------------------------------

def _run_of(run: PolicyRun) -> LastRun:
    failures = tuple(sorted(
        (RunFailure(urn, str(v.get("name") or urn), str(v.get("result") or "?"), str(v.get("reason") or ""))
         for urn, v in (run.vms or {}).items()
         if isinstance(v, Mapping) and str(v.get("result") or "") not in FAILED_RESULTS_OK),
        key=lambda f: (f.name, f.urn)))
    return LastRun(run.state, run.scheduled, run.started, run.finished, run.overran, run.catch_up, run.job_id,
                   run.note, failures)


def _planned_times(policy: Policy, now: float, end: float, tz: tzinfo) -> list[float]:
    """When the policy's runs start in (now, end) (:func:`~fctui.jobs.protection.run_starts`: times outside
    the window wait for its opening, two that wait for one opening are one run)."""
    if not policy.enabled:
        return []
    # at most one run per scheduled time up to ``end``, plus one already due and waiting for the window
    most = 1 + len(policy.schedule.between(datetime.fromtimestamp(now, tz), datetime.fromtimestamp(end, tz)))
    return [t for t in run_starts(policy, now, tz, count=most) if t < end]


def _window_spans(policy: Policy, start: float, end: float, tz: tzinfo) -> list[tuple[float, float]]:
    """The openings of the policy's window in [start, end); none for a policy without a window (it may
    run any time: shading the whole line would say nothing)."""
    if policy.window is None or not policy.enabled:
        return []
    out: list[tuple[float, float]] = []
    t = datetime.fromtimestamp(start, tz)
    stop = datetime.fromtimestamp(end, tz)
    for _ in range(64):   # a week of openings at most fits in a day; bounded whatever the window
        if t >= stop:
            break
        b = window_bounds(policy.window, t)
        if b is None:
            try:
                t = next_window_open(policy.window, t)
            except PolicyError:
                break
            continue
        s, e = b
        out.append((max(s.timestamp(), start), min(e.timestamp(), end)))
        t = e
    return out


def _merge(spans: Iterable[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    out: list[list[float]] = []
    for s, e in sorted(spans):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return tuple((s, e) for s, e in out)


def hour_floor(now: float, tz: tzinfo) -> float:
    local = datetime.fromtimestamp(now, tz)
    return local.replace(minute=0, second=0, microsecond=0).timestamp()


def build_policies_view(policies: Sequence[Policy], rows: Iterable[VmRow], protection: Mapping[str, VmProtection],
                        runs: Iterable[PolicyRun], *, now: float, tz: tzinfo,
                        horizon_s: float = HORIZON_S) -> PoliciesView:
    """Every policy's line and the timeline's hosts. ``protection``: URN -> VmProtection of ``rows``
    (a row missing from it counts as not covered); the winner of a VM is its ``policy``."""
    rows = list(rows)
    by_urn = {r.key: r for r in rows}
    runs_of: dict[str, list[PolicyRun]] = {}
    for run in sorted(runs, key=lambda r: r.scheduled):
        runs_of.setdefault(run.policy, []).append(run)

    lines: list[PolicyLine] = []
    for p in sorted(policies, key=lambda p: p.name):
        chosen = selected_vms(p, rows)
        mine: list[ProtectedVm] = []
        elsewhere: list[tuple[str, str]] = []
        states: dict[str, int] = {}
        for r in chosen:
            prot = protection.get(r.key)
            winner = prot.policy if prot is not None else ""
            if winner == p.name and prot is not None:
                mine.append(ProtectedVm(r.key, r.name, r.host, prot.state, prot.reason))
                states[prot.state] = states.get(prot.state, 0) + 1
            else:
                elsewhere.append((r.name, winner or "none"))
        mine.sort(key=lambda v: (STATE_ORDER.get(v.state, 99), v.name, v.urn))
        elsewhere.sort()
        history = runs_of.get(p.name, [])
        finished = [r for r in history if r.state != "running"]
        active = [r for r in history if r.state == "running"]
        lines.append(PolicyLine(
            policy=p, wins=len(mine), others=len(elsewhere), next_run=next_run(p, now, tz),
            last=_run_of(finished[-1]) if finished else None, running=_run_of(active[-1]) if active else None,
            protected=tuple(mine), elsewhere=tuple(elsewhere), states=states))

    start = hour_floor(now, tz)
    end = start + horizon_s
    # host -> policy -> VMs of that host the policy wins
    per_host: dict[str, dict[str, int]] = {}
    for ln in lines:
        for v in ln.protected:
            host = v.host or (by_urn[v.urn].host if v.urn in by_urn else "") or "?"
            per_host.setdefault(host, {}).setdefault(ln.name, 0)
            per_host[host][ln.name] += 1
    by_name = {p.name: p for p in policies}
    times = {name: _planned_times(by_name[name], now, end, tz) for name in by_name}
    spans = {name: _window_spans(by_name[name], start, end, tz) for name in by_name}
    hosts: list[HostRuns] = []
    for host in sorted(per_host):
        counts = per_host[host]
        planned = sorted((PlannedRun(t, name, n) for name, n in counts.items() for t in times[name]),
                         key=lambda r: (r.when, r.policy))
        hosts.append(HostRuns(host, _merge(s for name in counts for s in spans[name]), tuple(planned)))
    not_covered = sum(1 for r in rows if (protection.get(r.key) is None or not protection[r.key].policy))
    return PoliciesView(tuple(lines), tuple(hosts), start, end, now, not_covered)


def protection_for(rows: Sequence[VmRow], policies: Sequence[Policy], *, points: Iterable[Any] = (),
                   jobs: Iterable[Any] = (), now: float, tz: tzinfo) -> dict[str, VmProtection]:
    """The protection map when the console has none: last good points from the repository's points,
    last attempts from job records."""
    return assess_protection(rows, policies, last_good=last_good_points(points), last_attempt=last_attempts(jobs),
                             now=now, tz=tz)


def policy_form_values(policy: Policy | None) -> dict[str, str]:
    """The edit form's fields (text) for ``policy`` (None: a new policy's defaults)."""
    if policy is None:
        return {"name": "", "vms": "", "schedule": "daily 01:00", "window": "", "rpo": "24h", "keep-last": "",
                "keep-hourly": "", "keep-daily": "", "keep-weekly": "", "keep-monthly": "", "keep-yearly": "",
                "full-every": "", "enabled": "yes"}
    from ..jobs.policy import format_duration
    r = policy.retention
    num = lambda n: str(n) if n else ""  # noqa: E731 - empty reads as 0
    return {"name": policy.name, "vms": policy.vms, "schedule": policy.schedule.text,
            "window": policy.window.describe() if policy.window is not None else "",
            "rpo": format_duration(policy.rpo_s), "keep-last": num(r.keep_last), "keep-hourly": num(r.keep_hourly),
            "keep-daily": num(r.keep_daily), "keep-weekly": num(r.keep_weekly), "keep-monthly": num(r.keep_monthly),
            "keep-yearly": num(r.keep_yearly), "full-every": num(policy.full_every),
            "enabled": "yes" if policy.enabled else "no"}


def policy_from_form(values: Mapping[str, Any], created: float = 0.0) -> Policy:
    """A policy from the form's text fields, checked by ``policy_from_mapping`` (one PolicyError line on
    anything wrong). Empty numbers are 0; a number field that is not a whole number is passed on as text
    so the policy's own check names the field."""
    data: dict[str, Any] = {}
    for key, raw in values.items():
        if key == "enabled":
            data["enabled"] = raw if isinstance(raw, bool) else str(raw).strip().lower() in ("yes", "true", "1", "on")
            continue
        text = str(raw).strip()
        if key.startswith("keep-") or key == "full-every":
            data[key] = int(text) if text.isdigit() else (0 if not text else text)
        elif text:
            data[key] = text
    if created:
        data["created"] = created
    from ..jobs.policy import policy_from_mapping
    return policy_from_mapping(data, "policy")
