"""Is each VM protected? Pure: rows, policies, restore points, last results and ``now`` in; a verdict out.

States, worst first (the order monitoring and the console use):

* ``not-covered``: no enabled policy selects the VM.
* ``breached``: its newest good restore point is older than the winning policy's RPO (or it has none
  and the policy has existed longer than the RPO).
* ``at-risk``: within the RPO today, but it will not stay so: the last backup attempt failed, the VM
  cannot be backed up (a blocker), it has no point yet, or the next run starts after the RPO runs out.
* ``ok``: a good point within the RPO and a next run before it runs out.

``fctui status`` maps them to Nagios exit codes: 0 all ok, 1 any at risk, 2 any breached or not
covered, 3 unknown (the VRM or the repository could not be read).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Iterable, Mapping, Sequence

from ..inventory.query import PROTECTION_STATES, VmRow, parse_filter
from .model import JobRecord
from .policy import Policy, local_tz, next_window_open, winning_policy

__all__ = ["VmProtection", "LastAttempt", "assess_protection", "PROTECTION_STATES", "STATE_ORDER",
           "next_run", "run_starts", "selected_vms", "last_good_points", "last_attempts", "exit_code", "local_tz",
           "short_duration", "EXIT_OK", "EXIT_AT_RISK", "EXIT_BREACHED", "EXIT_UNKNOWN"]

OK, AT_RISK, BREACHED, NOT_COVERED = "ok", "at-risk", "breached", "not-covered"
assert PROTECTION_STATES == (NOT_COVERED, BREACHED, AT_RISK, OK)   # the filter language's order (worst first)
STATE_ORDER = {s: i for i, s in enumerate(PROTECTION_STATES)}
EXIT_OK, EXIT_AT_RISK, EXIT_BREACHED, EXIT_UNKNOWN = 0, 1, 2, 3


@dataclass(frozen=True)
class LastAttempt:
    """The newest backup attempt of a VM (from policy runs or manual jobs)."""
    when: float
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class VmProtection:
    urn: str
    name: str
    state: str
    reason: str                          # one line: why this state
    policy: str = ""                     # the winning policy ("" when not covered)
    also: tuple[str, ...] = ()           # other policies that select it (the winner protects it)
    last_good: float | None = None       # newest good restore point (epoch s)
    next_run: float | None = None        # next run of the winning policy (epoch s)
    rpo_s: float | None = None

    def age(self, now: float) -> float | None:
        return None if self.last_good is None else max(0.0, now - self.last_good)


def selected_vms(policy: Policy, rows: Iterable[VmRow]) -> list[VmRow]:
    """The rows a policy's selector matches now (before deciding which policy wins)."""
    flt = parse_filter(policy.vms)
    return [r for r in rows if flt.matches(r)]


def run_starts(policy: Policy, now: float, tz: tzinfo, count: int = 1) -> list[float]:
    """When the policy's next ``count`` runs start, after ``now``: each scheduled time, moved to the
    window's opening when it falls outside (cron schedules may). A time already past whose window has
    not opened yet is still to come: the run waits for the opening (two times that wait for the same
    opening are one run)."""
    local = datetime.fromtimestamp(now, tz)
    waiting = policy.schedule.latest_at_or_before(local)
    out: list[float] = []
    for at in itertools.chain([waiting] if waiting is not None else [], policy.schedule.after(local)):
        start = next_window_open(policy.window, at).timestamp()
        if start > now and (not out or start > out[-1]):
            out.append(start)
            if len(out) >= count:
                break
    return out


def next_run(policy: Policy, now: float, tz: tzinfo) -> float | None:
    """When the policy's next run starts (:func:`run_starts`); None when it is disabled."""
    if not policy.enabled:
        return None
    starts = run_starts(policy, now, tz)
    return starts[0] if starts else None


def short_duration(seconds: float) -> str:
    """A duration as people say it in a status: "3 d", "11 h", "5 min" (reasons, the console's detail)."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{max(1, round(seconds / 60))} min"



def assess_protection(rows: Sequence[VmRow], policies: Sequence[Policy], *, last_good: Mapping[str, float],
                      last_attempt: Mapping[str, LastAttempt] | None = None, now: float,
                      tz: tzinfo) -> dict[str, VmProtection]:
    """Every row's protection, keyed by VM URN. ``last_good``: URN -> newest good point's time."""
    last_attempt = last_attempt or {}
    matching: dict[str, list[Policy]] = {r.key: [] for r in rows}
    for p in policies:
        if not p.enabled:
            continue
        for r in selected_vms(p, rows):
            matching[r.key].append(p)
    nexts = {p.name: next_run(p, now, tz) for p in policies if p.enabled}
    out: dict[str, VmProtection] = {}
    for r in rows:
        ps = matching[r.key]
        win = winning_policy(ps)
        good = last_good.get(r.key)
        if win is None:
            why = "no policy selects it"
            if any(p.enabled is False for p in policies if parse_filter(p.vms).matches(r)):
                why = "only a disabled policy selects it"
            out[r.key] = VmProtection(r.key, r.name, NOT_COVERED, why, last_good=good)
            continue
        also = tuple(sorted(p.name for p in ps if p is not win))
        nxt = nexts.get(win.name)
        base = dict(urn=r.key, name=r.name, policy=win.name, also=also, last_good=good, next_run=nxt,
                    rpo_s=win.rpo_s)
        attempt = last_attempt.get(r.key)
        failed = attempt is not None and not attempt.ok and (good is None or attempt.when > good)
        fail_text = f"last backup failed: {attempt.reason}" if failed and attempt is not None and attempt.reason \
            else "last backup failed"
        if good is None:
            deadline = (win.created or now) + win.rpo_s
            if now > deadline:
                why = fail_text if failed else "no restore point yet"
                out[r.key] = VmProtection(state=BREACHED, reason=f"{why}; RPO {short_duration(win.rpo_s)}", **base)
            else:
                why = fail_text if failed else "no restore point yet"
                out[r.key] = VmProtection(state=AT_RISK, reason=why, **base)
            continue
        deadline = good + win.rpo_s
        age = now - good
        if now > deadline:
            why = f"newest point {short_duration(age)} old, RPO {short_duration(win.rpo_s)}"
            if failed:
                why += f"; {fail_text}"
            out[r.key] = VmProtection(state=BREACHED, reason=why, **base)
        elif failed:
            out[r.key] = VmProtection(state=AT_RISK, reason=fail_text, **base)
        elif r.verdict == "blocked":
            out[r.key] = VmProtection(state=AT_RISK, reason=f"cannot be backed up: {r.reason}", **base)
        elif nxt is None or nxt > deadline:
            out[r.key] = VmProtection(state=AT_RISK, reason=f"RPO runs out in {short_duration(deadline - now)}, "
                                      "before the next run", **base)
        else:
            out[r.key] = VmProtection(state=OK, reason=f"newest point {short_duration(age)} old", **base)
    return out


def exit_code(states: Iterable[str]) -> int:
    """Nagios: 0 all ok, 1 any at risk, 2 any breached or not covered."""
    worst = EXIT_OK
    for s in states:
        if s in (BREACHED, NOT_COVERED):
            return EXIT_BREACHED
        if s == AT_RISK:
            worst = EXIT_AT_RISK
    return worst


def last_good_points(points: Iterable[Any]) -> dict[str, float]:
    """VM URN -> the creation time of its newest restore point (the repository's catalog lists only
    committed points; damaged ones are listed apart)."""
    out: dict[str, float] = {}
    for p in points:
        if p.created > out.get(p.vm_urn, float("-inf")):
            out[p.vm_urn] = p.created
    return out


def last_attempts(jobs: Iterable[JobRecord]) -> dict[str, LastAttempt]:
    """VM URN -> its newest finished backup attempt, from job records (policy runs and manual jobs).
    A VM refused at planning counts as a failed attempt: it was meant to be backed up and was not."""
    out: dict[str, LastAttempt] = {}
    for job in jobs:
        if job.type != "backup" or not job.is_final:
            continue
        when = job.finished or job.created
        for vm in job.vms:
            if vm.state == "done" and vm.point_id:
                a = LastAttempt(when, True)
            elif vm.reason.startswith("already being backed up"):
                continue   # another job had it: that job's result counts
            elif vm.state in ("failed", "refused", "cancelled"):
                a = LastAttempt(when, False, vm.reason or vm.state)
            else:
                continue
            if vm.urn not in out or when >= out[vm.urn].when:
                out[vm.urn] = a
    return out
