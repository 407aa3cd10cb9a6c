"""The parts of a policy run that need no agent: when a run is due and whether its window lets it
start (:func:`next_due`), which VMs it takes (:func:`policy_rows`, :func:`choose_vms`), which of them
are due a periodic full (:func:`periodic_full`), and how a finished job reads as a run
(:func:`run_outcome`). The policy service (fctui/agent/service.py) strings them together.

Times are aware datetimes in the service's zone (``jobs.policy.local_tz`` unless configured), epoch seconds
where stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from .policy import Policy, due_time, next_window_open, window_bounds, winning_policy

if TYPE_CHECKING:  # pragma: no cover
    from ..inventory.query import VmRow
    from ..repo import RestorePoint
    from ..vrm.client import VrmClient
    from .model import JobRecord

__all__ = ["Due", "next_due", "CATCH_UP_AFTER", "policy_rows", "choose_vms", "periodic_full",
           "run_outcome", "point_kind", "hhmm"]

# A due time older than this when the service first sees it was missed (the agent was down or
# stopped), not merely noticed between two ticks (at most 30 s apart): the run is a catch-up.
CATCH_UP_AFTER = timedelta(minutes=5)


def hhmm(at: datetime | float, tz: tzinfo | None = None) -> str:
    """``HH:MM`` of a time (epoch seconds are shown in ``tz``)."""
    if not isinstance(at, datetime):
        at = datetime.fromtimestamp(at, tz)
    return at.strftime("%H:%M")


@dataclass(frozen=True)
class Due:
    """A run a policy owes now."""
    scheduled: datetime          # the schedule time the run is for
    catch_up: bool               # missed time(s) caught up (several collapse into this one)
    open_now: bool               # its window is open now: it starts now
    opens: datetime              # when it may start (now when open)
    window_end: datetime | None  # the close of that window opening: the start-by deadline (None: no window)


def next_due(policy: Policy, last_scheduled: datetime | None, now: datetime) -> Due | None:
    """The run ``policy`` owes at ``now`` given the schedule time of its last run (or, for a policy
    that never ran, its creation: a new policy does not catch up times from before it existed)."""
    due = due_time(policy, last_scheduled, now)
    if due is None:
        return None
    since = last_scheduled if last_scheduled is not None else due - timedelta(seconds=1)
    missed = len(policy.schedule.between(max(since, now - timedelta(days=8)), now))
    catch_up = missed > 1 or now - due > CATCH_UP_AFTER
    bounds = window_bounds(policy.window, now)
    if bounds is not None:
        return Due(due, catch_up, True, now, bounds[1] if policy.window is not None else None)
    opens = next_window_open(policy.window, now)
    later = window_bounds(policy.window, opens)
    return Due(due, catch_up, False, opens, later[1] if later else None)


# --- which VMs -----------------------------------------------------------------------------------

async def policy_rows(client: "VrmClient", points: Sequence["RestorePoint"] = ()) -> list["VmRow"]:
    """The inventory as the console's filter sees it (rows with their rules verdicts), read now, so a
    selector is evaluated against the VMs as they are at this run. ``points``: the repository's restore
    points (the rules' backup knowledge: chain state, our own snapshots)."""
    from ..inventory.gather import gather
    from ..inventory.query import row_from_vm
    from .planner import knowledge_from_point
    latest: dict[str, Any] = {}
    for p in points:  # oldest first: the last one per VM wins
        latest[p.vm_urn] = p
    knowledge = {urn: knowledge_from_point(p) for urn, p in latest.items()}
    inv = await gather(client, knowledge=knowledge, helper=False)
    return [row_from_vm(f.vm, a) for f, a in zip(inv.facts, inv.assessments)]


def choose_vms(policy: Policy, policies: Iterable[Policy], rows: Iterable["VmRow"]
               ) -> tuple[list["VmRow"], dict[str, list[str]]]:
    """The rows ``policy`` backs up (its selector matches and it wins the VM), and the names of those
    its selector matches that another policy wins: {winner: [VM names]}."""
    from ..inventory.query import parse_filter
    enabled = [p for p in policies if p.enabled]
    if all(p.name != policy.name for p in enabled):
        enabled.append(policy)   # a manual run of a disabled policy still decides against the others
    filters = {p.name: parse_filter(p.vms) for p in enabled}
    mine: list["VmRow"] = []
    covered: dict[str, list[str]] = {}
    for row in rows:
        if not filters[policy.name].matches(row):
            continue
        winner = winning_policy([p for p in enabled if filters[p.name].matches(row)])
        if winner is None or winner.name == policy.name:
            mine.append(row)
        else:
            covered.setdefault(winner.name, []).append(row.name)
    return sorted(mine, key=lambda r: (r.name, r.key)), covered


def point_kind(point: "RestorePoint") -> str:
    """``full`` when every disk of the point was read fully, else ``incremental``."""
    return "full" if all(d.mode == "full" for d in point.disks) else "incremental"


def periodic_full(points: Sequence["RestorePoint"], every: int) -> str:
    """Why the next backup of a VM is a periodic full (``""``: it is not): with ``full_every`` N, every
    Nth backup reads every block, i.e. once N-1 points followed its last full one. ``points``: the VM's,
    oldest first. No point yet: the first backup is full anyway (the planner says why)."""
    if every <= 0 or not points:
        return ""
    since = 0
    for p in reversed(points):
        if point_kind(p) == "full":
            break
        since += 1
    if since >= every - 1:
        return f"periodic full (every {every})"
    return ""


# --- how a job reads as a run --------------------------------------------------------------------

def run_outcome(job: "JobRecord") -> tuple[str, dict[str, dict[str, Any]]]:
    """(run state, per VM {name, result, reason, kind, point}) of a finished job: ok (every VM backed
    up), partial (some), failed (none), skipped (no VM at all)."""
    vms: dict[str, dict[str, Any]] = {}
    for vm in job.vms:
        read = [d for d in vm.disks if d.mode != "excluded"]
        kind = ("" if vm.state == "refused" or not read
                else "incremental" if all(d.mode == "incremental" for d in read) else "full")
        vms[vm.urn] = {"name": vm.name, "result": vm.state, "reason": vm.reason, "kind": kind,
                       "point": vm.point_id or ""}
    done = sum(1 for v in job.vms if v.state == "done")
    if not job.vms:
        state = "failed" if job.error else "skipped"
    elif done == len(job.vms):
        state = "ok"
    elif done:
        state = "partial"
    else:
        state = "failed"
    return state, vms


def covered_note(covered: Mapping[str, list[str]]) -> str:
    """``covered by nightly: db-01, db-02; weekly: app-03`` (names shortened past a few)."""
    parts = []
    for winner, names in sorted(covered.items()):
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        parts.append(f"{winner}: {shown}")
    return "covered by " + "; ".join(parts) if parts else ""
