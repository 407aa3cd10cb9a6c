"""The policy service: the job agent running protection policies unattended (``fctui agent --service``).

At each tick it reads the policies afresh (an edit applies without a restart) and, per enabled policy,
asks what run it owes (:func:`fctui.jobs.policyrun.next_due`): the latest schedule time since its last
run, so after downtime the missed times are caught up once, never once each. A run whose window is open
starts now; one whose window is closed is recorded as waiting and starts at the next opening, once.

Starting a run: the inventory is read with the service's credentials, the policy's selector picks rows,
and the run keeps the VMs this policy wins (the others are named in its note as covered by their
winner). Those go into ONE backup job through the agent's own path (:meth:`Agent.submit_backup`), so the
agent's guarantees hold across policies and manual jobs: a VM already being backed up is refused, and
the shared scheduler keeps 8 per host and 8 per datastore. The window's end is a start-by deadline: a VM
whose turn comes after it is not started; a run still going then is reported as overrunning. After the
job the agent applies the policy's retention to the VMs it backed up, then one gc.

Runs are recorded (:class:`~fctui.jobs.policystore.PolicyRun`, in the agent's JobStore) when they start
and when they end. The clock is injected (the simulator's in tests: a simulated week in seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..jobs.model import JobError
from ..jobs.policy import Policy, PolicyError, due_time, next_window_open, window_bounds
from ..jobs.policy import local_tz
from ..jobs.policyrun import covered_note, hhmm, next_due, periodic_full, run_outcome
from ..jobs.policystore import PolicyRun, PolicyStore
from .protocol import AgentError

if TYPE_CHECKING:  # pragma: no cover
    from ..repo.retention import Retention

log = logging.getLogger("fctui.agent.service")

__all__ = ["PolicyService", "ServiceConnection", "apply_retention", "IDLE_TICK_S"]

# The longest the service sleeps between ticks: a policy edited or added meanwhile is seen this late.
IDLE_TICK_S = 30.0


@dataclass
class ServiceConnection:
    """The VRM the service backs up from, and how it logs in. The password is in memory only (read
    from the credential file by the command that starts the service); never shown."""
    vrm: str
    user: str
    password: str = field(repr=False)
    access: dict[str, Any] = field(default_factory=dict)  # VrmClient keyword arguments (server.client_access)


def apply_retention(repo: Any, retention: "Retention", vm_urns: Iterable[str], *, tz: tzinfo | None = None
                    ) -> list[str]:
    """A policy's retention on each of ``vm_urns``, then one gc; lines for the job's log. Blocking (a
    worker thread). A repository without retention pruning (``prune_retention``) keeps every point and
    says so."""
    urns = list(dict.fromkeys(vm_urns))
    if retention.keeps_all or not urns:
        return []
    prune = getattr(repo, "prune_retention", None)
    if prune is None:
        log.warning("retention %s not applied: this repository cannot prune by retention", retention.describe())
        return [f"retention {retention.describe()} not applied: the repository cannot prune by retention yet"]
    zone = tz or local_tz()
    removed = 0
    for urn in urns:
        report = prune(retention, vm_urn=urn, tz=zone)
        removed += len(getattr(report, "removed", None) or [])
    lines = [f"retention {retention.describe()}: {removed} restore point(s) removed from {len(urns)} VM(s)"]
    if removed:
        gc = repo.gc()
        lines.append(f"gc: {getattr(gc, 'chunks_removed', 0)} chunk(s) freed")
    return lines


class PolicyService:
    """Runs the stored policies on ``agent`` (a :class:`fctui.agent.server.Agent`; see the module doc). ``clock``: epoch seconds (the VRM's
    clock in tests); ``tz``: the zone schedules and windows are read in (default: this machine's)."""

    def __init__(self, agent: Any, connection: ServiceConnection, *, clock: Callable[[], float] = time.time,
                 tz: tzinfo | None = None, store: PolicyStore | None = None) -> None:
        self.agent = agent
        self.connection = connection
        self.clock = clock
        self.tz = tz or local_tz()
        self.store = store or PolicyStore()
        self.running = False                       # run() is looping
        self.active: dict[str, PolicyRun] = {}     # policy name -> its run in progress
        self._follows: dict[str, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._reconciled = False
        self._starting = asyncio.Lock()            # a tick and a run-now never start the same policy twice
        self.last_error = ""                       # the last tick's trouble (bad policies file, VRM down)

    # --- time ----------------------------------------------------------------------------------------

    def _local(self, ts: float | None = None) -> datetime:
        return datetime.fromtimestamp(self.clock() if ts is None else ts, self.tz)

    # --- reading -------------------------------------------------------------------------------------

    def _policies(self) -> list[Policy]:
        try:
            policies = self.store.all()
        except PolicyError as e:  # a hand-edited file gone bad: no run until it is fixed, said in status
            self.last_error = str(e)
            log.error("policies not read: %s", e)
            return []
        return policies

    def _scheduled_runs(self, name: str) -> list[PolicyRun]:
        """The policy's runs for schedule times (manual runs are not schedule times), oldest first."""
        return [r for r in self.agent.store.policy_runs_of(name) if not r.manual]

    def _record(self, run: PolicyRun) -> None:
        try:
            self.agent.store.record_run(run)
        except Exception:  # a full state disk must not stop the runs themselves
            log.exception("could not record policy run %s", run.key)

    # --- ticking -------------------------------------------------------------------------------------

    async def tick(self) -> list[PolicyRun]:
        """Start every run that is due now; returns the runs started (skipped ones included)."""
        async with self._starting:
            return await self._tick()

    async def _tick(self) -> list[PolicyRun]:
        if not self._reconciled:
            self._reconcile()
        now_ts = self.clock()
        now = self._local(now_ts)
        policies = self._policies()
        self._note_overruns(now_ts)
        ready: list[tuple[Policy, PolicyRun, float | None]] = []
        for p in policies:
            if not p.enabled or p.name in self.active:
                continue  # a run still going: the next due time waits for it (never two at once)
            history = self._scheduled_runs(p.name)
            last = history[-1] if history else None
            if last is not None and last.state == "waiting":
                if due_time(p, self._local(last.scheduled), now) is None:
                    bounds = window_bounds(p.window, now)
                    if bounds is not None:
                        ready.append((p, last, bounds[1].timestamp() if p.window is not None else None))
                    continue
                # a later schedule time came due while it waited: that one runs instead
                last.state, last.finished = "skipped", now_ts
                last.note = (f"superseded by a later schedule time while it waited for its window "
                             f"({p.describe_window()})")
                self._record(last)
            since = last.scheduled if last is not None else (p.created or None)
            due = next_due(p, self._local(since) if since else None, now)
            if due is None:
                continue
            run = PolicyRun(policy=p.name, scheduled=due.scheduled.timestamp(), catch_up=due.catch_up,
                            window_end=due.window_end.timestamp() if due.window_end else None)
            if not due.open_now:
                run.state = "waiting"
                run.note = (f"due {hhmm(due.scheduled)}; waits for its window ({p.describe_window()}), "
                            f"opens {due.opens.strftime('%a %H:%M')}")
                self._record(run)
                continue
            ready.append((p, run, run.window_end))
        if not ready:
            return []
        rows, error = await self._rows()
        started = []
        for p, run, window_end in ready:
            started.append(await self._start(p, run, rows, error, policies, window_end))
        return started

    async def run_now(self, name: str) -> PolicyRun:
        """A run of policy ``name`` now, by hand (its window is not waited for; while it is open, its end
        is the start-by deadline as for a scheduled run)."""
        try:
            policy = self.store.get(name)
        except PolicyError as e:
            raise AgentError(str(e)) from None
        async with self._starting:
            if name in self.active:
                raise AgentError(f"policy {name} has a run going (job {self.active[name].job_id}): "
                                 "wait for it to end")
            now_ts = self.clock()
            bounds = window_bounds(policy.window, self._local(now_ts))
            window_end = bounds[1].timestamp() if bounds is not None and policy.window is not None else None
            run = PolicyRun(policy=name, scheduled=now_ts, manual=True, window_end=window_end)
            rows, error = await self._rows()
            return await self._start(policy, run, rows, error, self._policies() or [policy], window_end)

    async def run(self) -> None:
        """Tick until the agent stops; between ticks sleep until the next due time, at most
        :data:`IDLE_TICK_S`."""
        self.running = True
        try:
            while not self.agent.stopping.is_set():
                try:
                    await self.tick()
                    self.last_error = "" if self.last_error.startswith("tick:") else self.last_error
                except Exception as e:  # never let one bad tick end the service
                    log.exception("policy service tick failed")
                    self.last_error = f"tick: {type(e).__name__}: {e}"
                wait = IDLE_TICK_S
                nxt = self._next_due_any()
                if nxt is not None:
                    wait = min(wait, max(0.5, nxt - self.clock()))
                self._wake.clear()
                stop = asyncio.ensure_future(self.agent.stopping.wait())
                wake = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({stop, wake}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    wake.cancel()
        finally:
            self.running = False

    def wake(self) -> None:
        """Tick now (a policy was edited, the clock jumped)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop following runs (the agent is shutting down; their jobs are cancelled by it)."""
        for t in list(self._follows.values()):
            t.cancel()
        if self._follows:
            await asyncio.gather(*self._follows.values(), return_exceptions=True)

    # --- starting and following a run -----------------------------------------------------------------

    async def _rows(self) -> tuple[list[Any], str]:
        """The inventory rows now, or ([], why not)."""
        from ..jobs.policyrun import policy_rows
        c = self.connection
        try:
            client = await self.agent._client(c.vrm, c.user, c.password, c.access)
        except Exception as e:
            return [], f"cannot log in to {c.vrm}: {e}"
        try:
            try:
                points = await asyncio.to_thread(self.agent.repo().points)
            except Exception as e:  # the rules then lack backup knowledge; selection still works
                log.warning("restore points not read for the policy run: %s", e)
                points = []
            return await policy_rows(client, points), ""
        except Exception as e:
            log.warning("inventory not read for the policy run: %s", e)
            return [], f"the inventory of {c.vrm} could not be read: {e}"
        finally:
            await self.agent._close_client(client)

    async def _start(self, policy: Policy, run: PolicyRun, rows: list[Any], error: str, policies: list[Policy],
                     window_end: float | None) -> PolicyRun:
        from ..jobs.policyrun import choose_vms
        now_ts = self.clock()
        run.started, run.window_end, run.state = now_ts, window_end, "running"
        if error:
            run.state, run.finished, run.note = "failed", now_ts, error
            self._record(run)
            return run
        mine, covered = choose_vms(policy, policies, rows)
        notes = [covered_note(covered)] if covered else []
        if run.catch_up:
            notes.insert(0, f"catch-up of the run due {self._local(run.scheduled).strftime('%a %H:%M')}")
        if not mine:
            run.state, run.finished = "skipped", now_ts
            run.note = "; ".join([*notes, "no VM to back up: " + (
                "every VM it selects is protected by another policy" if covered
                else f"its selector {policy.vms!r} matches no VM")])
            self._record(run)
            return run
        full_vms: dict[str, str] = {}
        if policy.full_every:
            try:
                points = await asyncio.to_thread(self.agent.repo().points)
            except Exception:
                points = []
            by_vm: dict[str, list[Any]] = {}
            for p in points:
                by_vm.setdefault(p.vm_urn, []).append(p)
            for row in mine:
                why = periodic_full(by_vm.get(row.key, []), policy.full_every)
                if why:
                    full_vms[row.key] = why
        c = self.connection
        try:
            job = self.agent.submit_backup([r.key for r in mine], vrm=c.vrm, user=c.user, password=c.password,
                                           access=c.access, policy=policy.name, full_vms=full_vms,
                                           start_by=self._start_by(window_end))
        except (JobError, OSError) as e:
            run.state, run.finished = "failed", self.clock()
            run.note = "; ".join([*notes, f"the job could not be submitted: {e}"])
            self._record(run)
            return run
        run.job_id = job.id
        run.vms = {r.key: {"name": r.name, "result": "queued", "reason": "",
                           "kind": "full" if r.key in full_vms else ""} for r in mine}
        run.note = "; ".join(notes)
        self._record(run)
        self.active[policy.name] = run
        self._follows[policy.name] = asyncio.create_task(self._follow(run), name=f"policy-run-{run.key}")
        log.info("policy %s: run %s started job %s with %d VM(s)", policy.name, run.key, job.id, len(mine))
        return run

    def _start_by(self, window_end: float | None) -> Callable[[], str] | None:
        if window_end is None:
            return None

        def check() -> str:
            if self.clock() > window_end:
                return f"window closed at {hhmm(window_end, self.tz)} before its turn"
            return ""
        return check

    async def _follow(self, run: PolicyRun) -> None:
        """Wait for the run's job (retention included: the agent applies it before the job ends), then
        record how the run went."""
        try:
            task = self.agent.tasks.get(run.job_id)
            if task is not None:
                await asyncio.wait({task})
            self._finish_run(run)
        finally:
            self.active.pop(run.policy, None)
            self._follows.pop(run.policy, None)

    def _finish_run(self, run: PolicyRun) -> None:
        try:
            job = self.agent.get_job(run.job_id)
        except JobError:
            run.state, run.finished = "failed", self.clock()
            run.note = "; ".join(x for x in (run.note, f"its job {run.job_id} is gone") if x)
            self._record(run)
            return
        run.finished = self.clock()
        state, vms = run_outcome(job)
        run.state, run.vms = state, vms
        notes = [run.note] if run.note else []
        late = [v for v in vms.values() if v["result"] == "refused" and v["reason"].startswith("window closed")]
        if late:
            notes.append(f"{len(late)} VM(s) not started: the window closed before their turn")
        if run.window_end is not None and run.finished > run.window_end:
            run.overran = True
        if run.overran and not any("overran" in n for n in notes):
            notes.append(f"overran its window: still running at {hhmm(run.window_end or 0, self.tz)}, "
                         f"ended {hhmm(run.finished, self.tz)}")
        if job.state == "cancelled":
            notes.append("its job was cancelled")
        elif state == "failed" and job.error:
            notes.append(job.error[:300])
        run.note = "; ".join(notes)
        self._record(run)

    def _note_overruns(self, now_ts: float) -> None:
        """A run still going when its window closed is marked so now, not only when it ends."""
        for run in self.active.values():
            if run.window_end is not None and now_ts > run.window_end and not run.overran:
                run.overran = True
                run.note = "; ".join(x for x in (run.note, f"overran its window: still running at "
                                                            f"{hhmm(run.window_end, self.tz)}") if x)
                self._record(run)

    def _reconcile(self) -> None:
        """Runs recorded as running by an earlier agent (it stopped meanwhile) end as their job did;
        old finished runs beyond the history kept are dropped."""
        self._reconciled = True
        try:
            self.agent.store.prune_runs()
        except Exception:
            log.exception("old policy runs not pruned")
        for run in self.agent.store.policy_runs_of():
            if run.state == "running" and run.policy not in self.active:
                if run.job_id and run.job_id in self.agent.tasks:
                    continue
                if run.job_id:
                    self._finish_run(run)
                else:
                    run.state, run.finished = "failed", self.clock()
                    run.note = "; ".join(x for x in (run.note, "the agent stopped before its job started") if x)
                    self._record(run)

    # --- status --------------------------------------------------------------------------------------

    def _next_run(self, policy: Policy, now_ts: float) -> float | None:
        """When the policy's next run starts (epoch): now if one is due and its window open, the window's
        opening if it waits, else the next schedule time (moved to the window's opening)."""
        if not policy.enabled:
            return None
        now = self._local(now_ts)
        history = self._scheduled_runs(policy.name)
        last = history[-1] if history else None
        if last is not None and last.state == "waiting":
            return next_window_open(policy.window, now).timestamp()
        since = last.scheduled if last is not None else (policy.created or None)
        if policy.name not in self.active:
            due = next_due(policy, self._local(since) if since else None, now)
            if due is not None:
                return due.opens.timestamp()
        at = policy.schedule.next_after(now)
        return next_window_open(policy.window, at).timestamp()

    def _next_due_any(self) -> float | None:
        now_ts = self.clock()
        times = []
        for p in self._policies():
            with contextlib.suppress(PolicyError):
                t = self._next_run(p, now_ts)
                if t is not None:
                    times.append(t)
        return min(times) if times else None

    def status(self) -> dict[str, Any]:
        """JSON-able: whether the loop runs, and per policy its next run and last run (summary)."""
        now_ts = self.clock()
        policies: dict[str, Any] = {}
        for p in self._policies():
            runs = self.agent.store.policy_runs_of(p.name)
            last = runs[-1] if runs else None
            try:
                nxt = self._next_run(p, now_ts)
            except PolicyError:
                nxt = None
            summary = None
            if last is not None:
                results = [v.get("result") for v in last.vms.values()]
                summary = {k: v for k, v in last.to_dict().items() if k != "vms"}
                summary["counts"] = {"vms": len(results), "done": results.count("done"),
                                     "failed": results.count("failed"), "refused": results.count("refused")}
            policies[p.name] = {"enabled": p.enabled, "next_run": nxt, "active": p.name in self.active,
                                "last_run": summary}
        return {"running": self.running, "now": now_ts, "tz": str(self.tz), "vrm": self.connection.vrm,
                "user": self.connection.user, "error": self.last_error, "policies": policies}
