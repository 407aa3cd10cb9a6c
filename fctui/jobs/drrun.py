"""The run of a recovery plan: a rehearsal (restore, boot, measure, remove) or a failover (restore, boot, keep).

Headless (no agent, no CLI): :func:`run_recovery` takes a logged-in client of the *target* VRM, the
repository, the plan and a fresh :class:`~fctui.jobs.dr.RecoveryRun`, and keeps the run current through
``on_change`` (the agent saves it in the DrStore, the console polls it).

* **which point**: per VM the newest restore point of the repository whose manifest reads and whose every
  chunk is present and not quarantined (the restore's own damage check); none -> ``no-point``.
* **restore**: the engine's restore to a NEW VM (:func:`fctui.jobs.restore.plan_restore` /
  :func:`~fctui.jobs.restore.run_restore`), datastores and location from the plan's overrides over the site
  pair's mapping; a rehearsal puts every NIC on ``plan.rehearsal_network`` (or leaves it out), a failover
  uses the production port groups of the mapping. Names: ``<vm>-rehearsal-<run id>`` (a failover keeps
  the VM's name; one of that name on the target is refused). At most ``parallel_restores`` at once, in
  boot order.
* **boot**: group by group in order, each as soon as its VMs are restored and the previous group is up:
  power on, then wait for VM Tools ``running`` (``pvDriverStatus``) within ``tools_timeout_s`` on the
  injected clock. A VM that does not come up is ``failed`` with the reason; the others go on.
* **times** (injected clock): ``restore_s`` restore start -> VM created, ``boot_s`` power-on -> Tools running,
  ``rto_s`` run start -> Tools running; the run's ``rto_s`` is the last VM's, set only when every VM ran.
* **journal**: every VM and volume a restore creates is journaled before it is created (the engine's
  intents, under the run's job id); the engine clears an intent once its object is complete, which here
  is held back until the run no longer needs the object: a crash of the agent mid-run leaves the
  intents, and the agent's cleanup queue (snapshot hunter) removes them. At the end of a rehearsal every
  created VM is powered off and deleted with its volumes (``keep``: left, intents cleared); a failover
  keeps everything: each VM's intents are cleared as soon as it is restored (it is production then; a
  crash clean-up must never take it). Cancel: restores stop (the engine removes their half-made objects);
  a rehearsal then cleans up, a failover keeps the VMs it had recovered.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..vrm.errors import VrmError, VrmNotFoundError
from ..vrm.urn import site_id, urn_to_uri
from . import cleanup
from .dr import OTHERS_GROUP, RUN_KINDS, DrError, RecoveryPlan, RecoveryRun, VmRecovery
from .journal import JournalLike, MemoryJournal
from .model import JobError, JobRecord
from .progress import duration_text
from .restore import UNMAPPED, RestoreRequest, RestoreSettings, plan_restore, restore_result, run_restore
from .runner import Reporter, uncancellable

if TYPE_CHECKING:  # pragma: no cover
    from ..repo import Repository, RestorePoint
    from ..vrm.client import VrmClient
    from .sitemap import SiteMapping

log = logging.getLogger("fctui.jobs.drrun")

__all__ = ["RecoverySettings", "assign_groups", "latest_good_point", "new_run", "new_run_id", "run_recovery",
           "recovered_name"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
_CREATED = frozenset({"restore-vm", "restore-volume"})


@dataclass
class RecoverySettings:
    parallel_restores: int = 2        # restores at once (each already writes its disks in parallel)
    tools_poll_s: float = 5.0         # how often a booting VM's Tools status is read
    power_timeout_s: float = 600.0    # power-on / power-off task
    cleanup_within_s: float = 300.0   # one budget for the whole clean-up of a rehearsal
    restore: RestoreSettings = field(default_factory=RestoreSettings)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)




def recovered_name(vm_name: str, kind: str, run_id: str) -> str:
    """The new VM's name on the target: a rehearsal's is marked (and unique per run); a failover's is the
    VM's own (it is the production VM now)."""
    return f"{vm_name}-rehearsal-{run_id}" if kind == "rehearsal" else vm_name


def _matches(pattern: str, urn: str, name: str) -> bool:
    if pattern.startswith("urn:"):
        return pattern == urn
    return fnmatch.fnmatchcase(name.lower(), pattern.lower())


def assign_groups(plan: RecoveryPlan) -> list[tuple[str, list[str]]]:
    """The boot order: (group name, VM URNs) in order, each VM in the first group that matches it, the
    rest in :data:`~fctui.jobs.dr.OTHERS_GROUP` last; empty groups are left out."""
    groups: list[tuple[str, list[str]]] = [(g.name, []) for g in plan.groups] + [(OTHERS_GROUP, [])]
    for urn in plan.vms:
        name = plan.vm_names.get(urn, urn)
        for i, g in enumerate(plan.groups):
            if any(_matches(p, urn, name) for p in g.match):
                groups[i][1].append(urn)
                break
        else:
            groups[-1][1].append(urn)
    return [(n, urns) for n, urns in groups if urns]


def latest_good_point(repo: "Repository", vm_urn: str) -> tuple["RestorePoint | None", str]:
    """The newest restore point of the VM that can be restored (manifest readable, every chunk present
    and not quarantined), and why none when there is none."""
    from .restore import _point_damage, _point_disks
    points = repo.points(vm_urn)
    if not points:
        return None, "no restore point in the repository"
    last_problem = ""
    for p in reversed(points):
        disks = _point_disks(p)
        if not disks:
            last_problem = f"restore point {p.id} holds no disks"
            continue
        damage = _point_damage(repo, p, disks)
        if not damage:
            return p, ""
        last_problem = damage[0].message
    return None, f"every restore point ({len(points)}) is damaged; newest: {last_problem}"


def vm_recovery_text(v: VmRecovery) -> str:
    """Where one VM of a run stands, in words and measured times (a job's VM line in ``fctui jobs`` and the
    console's jobs screen): "booting · restored in 7 s", "running · restore 7 s · boot 22 s · RTO 29 s"."""
    if v.error:
        return f"{v.state}: {v.error}"
    parts = [v.state]
    if v.state in ("restored", "booting") and v.restore_s is not None:
        parts.append(f"restored in {duration_text(v.restore_s)}")
    if v.state == "running":
        parts += [f"restore {duration_text(v.restore_s)}", f"boot {duration_text(v.boot_s)}",
                  f"RTO {duration_text(v.rto_s)}"]
    return " · ".join(parts)


def new_run(plan: RecoveryPlan, kind: str, *, run_id: str = "", job_id: str = "") -> RecoveryRun:
    """A run of ``plan`` with every VM waiting, in boot order."""
    if kind not in RUN_KINDS:
        raise DrError(f"unknown run kind {kind!r} (rehearsal or failover)")
    if not plan.vms:
        raise DrError(f"recovery plan {plan.name} has no VMs")
    run = RecoveryRun(id=run_id or new_run_id(), plan=plan.name, kind=kind, target=plan.target, job_id=job_id,
                      cleanup="pending" if kind == "rehearsal" else "none")
    for group, urns in assign_groups(plan):
        for urn in urns:
            run.vms.append(VmRecovery(vm_urn=urn, vm_name=plan.vm_names.get(urn, urn), group=group))
    return run


def point_port_groups(point: "RestorePoint") -> list[str]:
    """Source port group URNs of the point's NICs, in NIC order."""
    out: list[str] = []
    for n in point.vm_config.get("nics") or []:
        if isinstance(n, dict) and n.get("portGroupUrn") and n["portGroupUrn"] not in out:
            out.append(str(n["portGroupUrn"]))
    return out


class _HeldJournal:
    """The journal as the restore engine sees it within a run: intents go to the real journal under the
    run's job id; clearing the intent of a created VM or volume is held back (the object must stay
    journaled until the rehearsal removed it, or the run ended), other clearings pass through."""

    def __init__(self, inner: JournalLike, job_id: str, run_id: str) -> None:
        self.inner = inner
        self.job_id = job_id
        self.run_id = run_id
        self.records: dict[int, dict[str, Any]] = {}   # key -> what was journaled (with later updates)
        self.held: list[int] = []
        self.removed: list[int] = []   # keys whose objects the clean-up removed

    def intend(self, *, job_id: str, vrm: str, user: str, what: str, vm_urn: str, **fields: Any) -> int:
        key = self.inner.intend(job_id=self.job_id, vrm=vrm, user=user, what=what, vm_urn=vm_urn,
                                dr_run=self.run_id, **fields)
        if what in _CREATED:
            self.records[key] = {"key": key, "what": what, "vm": vm_urn, **fields}
        return key

    def update(self, key: int, **fields: Any) -> None:
        self.inner.update(key, **fields)
        if key in self.records:
            self.records[key].update(fields)

    def done(self, key: int) -> None:
        if key in self.records:
            self.held.append(key)
        else:
            self.inner.done(key)

    def release(self, keys: list[int]) -> None:
        """Clear these intents for real (their objects are gone, or kept on purpose)."""
        for key in keys:
            self.inner.done(key)
            self.records.pop(key, None)
            if key in self.held:
                self.held.remove(key)

    def mark_chain(self, volume_urn: str, reason: str) -> None:
        self.inner.mark_chain(volume_urn, reason)

    def clear_chain(self, volume_urns: Any) -> None:
        self.inner.clear_chain(volume_urns)


class _Recovery:
    def __init__(self, client: "VrmClient", repo: "Repository", plan: RecoveryPlan, run: RecoveryRun, *,
                 mapping: "SiteMapping | None", journal: JournalLike, job: JobRecord,
                 on_change: Callable[[RecoveryRun], None], log_line: Callable[[str, str], None],
                 clock: Clock, sleep: Sleep, settings: RecoverySettings, keep: bool) -> None:
        self.client = client
        self.repo = repo
        self.plan = plan
        self.run = run
        self.mapping = mapping
        self.job = job
        self.on_change = on_change
        self.log_line = log_line
        self.clock = clock
        self.sleep = sleep
        self.s = settings
        self.keep = keep
        self.base_journal = journal
        self.journals: dict[str, _HeldJournal] = {}   # source VM URN -> what its restore journaled
        self.site_uri = ""
        self.target_site = ""
        self.restore_slots = asyncio.Semaphore(max(1, settings.parallel_restores))

    def changed(self) -> None:
        try:
            self.on_change(self.run)
        except Exception:  # a full disk must not stop the run nor its clean-up on the VRM
            log.exception("could not record recovery run %s", self.run.id)

    def vm_failed(self, vm: VmRecovery, why: str, state: str = "failed") -> None:
        vm.state, vm.error = state, why
        self.log_line(f"{vm.vm_name}: {why}", "error")
        self.changed()

    # --- request ----------------------------------------------------------------------------------

    def request_for(self, point: "RestorePoint", vm: VmRecovery) -> RestoreRequest:
        plan, m = self.plan, self.mapping
        datastores: dict[str, str] = {}
        for d in point.disks:
            target = plan.datastores.get(d.datastore_urn) or (m.datastores.get(d.datastore_urn) if m else "")
            if target:
                datastores[d.volume_urn] = target
        pgs = point_port_groups(point)
        if self.run.kind == "rehearsal":   # isolated: nothing of the copy may reach production
            port_groups = {pg: plan.rehearsal_network for pg in pgs}
        else:
            port_groups = {pg: plan.port_groups[pg] if pg in plan.port_groups else
                           (m.port_groups[pg] if m is not None and pg in m.port_groups else pg) for pg in pgs}
        location = plan.location or (m.location if m else "")
        return RestoreRequest(point.id, "new", name=vm.restored_name, datastores=datastores, power_on=False,
                              location=location, port_groups=port_groups)

    # --- one VM's restore ---------------------------------------------------------------------------

    async def restore_vm(self, vm: VmRecovery, point: "RestorePoint") -> None:
        async with self.restore_slots:
            start = self.clock()
            vm.state = "restoring"
            self.changed()
            try:
                if self.run.kind == "failover":
                    same = [v for v in await self.client.vms(self.site_uri, detail=0, templates=None,
                                                             name=vm.restored_name) if v.name == vm.restored_name]
                    if same:
                        raise JobError(f"a VM named {vm.restored_name} exists on the target site already "
                                       f"({same[0].urn}): rename or remove it first")
                plan = await plan_restore(self.client, self.repo, self.request_for(point, vm))
                if plan.blocked:
                    why = "restore refused: " + "; ".join(f"{f.rule}: {f.message}" for f in plan.blockers)
                    if any(f.rule == UNMAPPED for f in plan.blockers):
                        why += (" -- map them for this plan: "
                                f"`fctui dr plan add {self.plan.name} ... --map-datastore SRC=DST` "
                                "(also --map-network SRC=DST|none, --location NAME), or for the site pair: "
                                "`fctui restore --map-datastore` or the console's restore walkthrough")
                    raise JobError(why)
                sub = JobRecord(id=self.job.id, vrm=self.job.vrm, user=self.job.user, targets=[point.id])
                journal = self.journals[vm.vm_urn] = _HeldJournal(self.base_journal, self.job.id, self.run.id)
                try:
                    await run_restore(self.client, self.repo, plan, job=sub, journal=journal,
                                      settings=self.s.restore, reporter=Reporter(sub))
                except asyncio.CancelledError:
                    journal.release(list(journal.held))   # the engine removed what it had made
                    raise
                if sub.state != "succeeded":
                    # the engine removed what it made: clear those intents (what it could not remove stays
                    # journaled, for the clean-up below or the agent's cleanup queue)
                    journal.release(list(journal.held))
                    raise JobError(f"restore of point {point.id} failed: {sub.error or sub.state}")
                res = restore_result(sub)
            except (JobError, VrmError) as e:
                self.vm_failed(vm, str(e))
                return
            vm.restored_urn = res.get("vm") or ""
            if self.run.kind == "failover":   # a whole VM in production now: no crash clean-up may take it
                journal.release(list(journal.records))
            vm.restore_s = self.clock() - start
            vm.state = "restored"
            self.log_line(f"{vm.vm_name}: restored as {vm.restored_name} in {duration_text(vm.restore_s)} "
                          f"(point {point.id})", "info")
            self.changed()

    # --- boot ---------------------------------------------------------------------------------------

    async def power(self, uri: str, on: bool) -> None:
        async def once() -> None:
            ref = await (self.client.start_vm(uri) if on else self.client.stop_vm(uri, "force"))
            await self.client.wait_task(ref, timeout=self.s.power_timeout_s,
                                        interval=self.s.restore.task_interval)
        await cleanup.retry(once, within=self.s.restore.busy_retry_s, interval=self.s.restore.busy_interval,
                            cut=False)

    async def boot_vm(self, vm: VmRecovery) -> None:
        uri = urn_to_uri(vm.restored_urn)
        powered = self.clock()   # boot time counts from the power-on request: the power task is part of it
        try:
            await self.power(uri, True)
        except VrmError as e:
            self.vm_failed(vm, f"power-on failed: {e}")
            return
        vm.state = "booting"
        self.changed()
        timeout = float(self.plan.tools_timeout_s)
        status = "?"
        while True:
            try:
                status = (await self.client.vm(uri)).pv_driver_status or "?"
            except VrmError as e:
                status = f"unreadable ({e})"
            now = self.clock()
            if status == "running":
                vm.boot_s = now - powered
                vm.rto_s = now - self.run.started
                vm.state = "running"
                self.log_line(f"{vm.vm_name}: VM Tools running {duration_text(vm.boot_s)} after power-on "
                              f"(RTO {duration_text(vm.rto_s)})", "info")
                self.changed()
                return
            if now - powered >= timeout:
                self.vm_failed(vm, f"did not boot: VM Tools not running {duration_text(timeout)} after power-on "
                                   f"(pvDriverStatus {status})")
                return
            await self.sleep(min(self.s.tools_poll_s, max(0.0, timeout - (now - powered))) or self.s.tools_poll_s)

    # --- the whole run ------------------------------------------------------------------------------

    async def go(self) -> None:
        sites = await self.client.sites()
        if not sites:
            raise JobError("the target VRM lists no site")
        self.site_uri = sites[0].uri or urn_to_uri(sites[0].urn)
        self.target_site = site_id(sites[0].urn)
        points = await asyncio.to_thread(lambda: [latest_good_point(self.repo, vm.vm_urn) for vm in self.run.vms])
        for vm, (point, why) in zip(self.run.vms, points):
            vm.restored_name = recovered_name(vm.vm_name, self.run.kind, self.run.id)
            if point is None:
                self.vm_failed(vm, why, "no-point")
            else:
                vm.point_id, vm.point_created = point.id, point.created
        self.changed()
        # restores in boot order (the slots keep it bounded, first come first served); each group boots
        # once its VMs are restored and the previous group is up (or failed to come up)
        restores = {vm.vm_urn: asyncio.create_task(self.restore_vm(vm, point), name=f"dr-restore-{vm.vm_name}")
                    for vm, (point, _) in zip(self.run.vms, points) if point is not None}
        try:
            order: list[str] = []
            for vm in self.run.vms:
                if vm.group not in order:
                    order.append(vm.group)
            for group in order:
                members = [vm for vm in self.run.vms if vm.group == group]
                await asyncio.gather(*(restores[vm.vm_urn] for vm in members if vm.vm_urn in restores))
                up = [vm for vm in members if vm.state == "restored"]
                if up:
                    self.log_line(f"group {group}: powering on {', '.join(v.vm_name for v in up)}", "info")
                await asyncio.gather(*(self.boot_vm(vm) for vm in up))
        finally:
            for t in restores.values():
                t.cancel()
            await uncancellable(asyncio.gather(*restores.values(), return_exceptions=True))

    async def clean_up(self) -> None:
        """Power off and delete every VM the run created, then its volumes, each VM's in parallel within
        one budget; an object that is gone already counts as removed. What cannot be removed stays
        journaled (the agent's cleanup queue retries it)."""
        self.run.cleanup = "pending"
        self.changed()
        budget = cleanup.Budget(self.s.cleanup_within_s, floor=min(5.0, self.s.cleanup_within_s))
        results = await asyncio.gather(*(self._clean_vm(j, budget) for j in self.journals.values()))
        failed = [line for lines in results for line in lines]
        removed = sum(1 for j in self.journals.values() for _ in j.removed)
        if failed:
            self.run.cleanup = "failed"
            self.run.cleanup_error = "; ".join(failed)[:1000]
            self.log_line(f"clean-up incomplete (left in the cleanup queue): {self.run.cleanup_error}", "error")
        else:
            self.run.cleanup = "done"
            self.log_line(f"clean-up: removed the {removed} VM(s) and volume(s) the {self.run.kind} created", "info")
        self.changed()

    async def _task(self, ref: Any, budget: "cleanup.Budget") -> None:
        await self.client.wait_task(ref, timeout=budget.attempt_s(), interval=self.s.restore.task_interval)

    async def _clean_vm(self, j: _HeldJournal, budget: "cleanup.Budget") -> list[str]:
        failed: list[str] = []
        records = sorted(j.records.values(), key=lambda r: r["what"] != "restore-vm")   # the VM, then its disks
        for r in records:
            name = r.get("name") or ""
            uri = r.get("vm_uri") if r["what"] == "restore-vm" else r.get("volume_uri")
            try:
                if not uri:   # never created (or not known): look it up by its unique name
                    from .restore import _find_named
                    found = await _find_named(self.client, {**r, "site": self.site_uri},
                                              "vm" if r["what"] == "restore-vm" else "volume")
                    uri = found[0] if found else ""
                if uri and r["what"] == "restore-vm":
                    async def off_and_delete(uri: str = uri) -> None:
                        vm = await self.client.vm(uri)
                        if vm.status not in ("stopped", "hibernated"):
                            await self._task(await self.client.stop_vm(uri, "force"), budget)
                        await self._task(await self.client.delete_vm(uri, reserve_disks=True), budget)
                    await cleanup.retry(off_and_delete, within=budget, interval=self.s.restore.busy_interval,
                                        cut=False)
                elif uri:
                    async def delete_volume(uri: str = uri) -> None:
                        await self._task(await self.client.delete_volume(uri), budget)
                    await cleanup.retry(delete_volume, within=budget, interval=self.s.restore.busy_interval,
                                        codes=cleanup.BUSY_CODES | {"10420005", "10300062"}, cut=False)
            except VrmNotFoundError:
                pass
            except (VrmError, JobError) as e:
                failed.append(f"{'VM' if r['what'] == 'restore-vm' else 'volume'} {name or uri}: {e}")
                continue
            j.removed.append(r["key"])
            j.release([r["key"]])
        return failed

    def keep_recovered(self) -> None:
        """Clear the intents of the VMs that were restored (kept on purpose); a failed restore's leftovers
        stay journaled for the cleanup queue."""
        for urn, j in self.journals.items():
            vm = next(v for v in self.run.vms if v.vm_urn == urn)
            if vm.restored_urn:
                j.release(list(j.records))


async def run_recovery(client: "VrmClient", repo: "Repository", plan: RecoveryPlan, run: RecoveryRun, *,
                       mapping: "SiteMapping | None" = None, journal: JournalLike | None = None,
                       job: JobRecord | None = None, on_change: Callable[[RecoveryRun], None] = lambda r: None,
                       log_line: Callable[[str, str], None] = lambda m, lvl: None,
                       clock: Clock = time.time, sleep: Sleep = asyncio.sleep,
                       settings: RecoverySettings | None = None, keep: bool = False,
                       cancel: asyncio.Event | None = None) -> RecoveryRun:
    """Carry out ``run`` (from :func:`new_run`) against the target VRM ``client``. ``clock``/``sleep``: the
    time source of the measured times and of the Tools wait. Cancelling (``cancel`` set, or the awaiting
    task cancelled) stops it and cleans up; the run ends ``cancelled``. Never raises for a VM's failure:
    the run says it."""
    settings = settings or RecoverySettings()
    job = job or JobRecord(id=run.job_id or run.id, type=run.kind)
    r = _Recovery(client, repo, plan, run, mapping=mapping, journal=journal if journal is not None else MemoryJournal(),
                  job=job, on_change=on_change, log_line=log_line, clock=clock, sleep=sleep, settings=settings,
                  keep=keep)
    run.started, run.state = clock(), "running"
    log_line(f"{run.kind} of plan {plan.name} into {plan.target} started ({len(run.vms)} VMs, run {run.id})", "info")
    r.changed()
    flow = asyncio.create_task(r.go(), name=f"dr-{run.id}")
    stopper = asyncio.create_task(cancel.wait()) if cancel is not None else None
    cancelled = outer = False
    try:
        done, _ = await asyncio.wait({flow} | ({stopper} if stopper else set()), return_when=asyncio.FIRST_COMPLETED)
        if flow not in done:
            flow.cancel()
            await asyncio.gather(flow, return_exceptions=True)
            cancelled = True
        elif flow.exception() is not None:
            e = flow.exception()
            run.error = str(e) if isinstance(e, (JobError, VrmError, DrError)) else f"{type(e).__name__}: {e}"
            if not isinstance(e, (JobError, VrmError, DrError)):
                log.error("recovery run %s failed", run.id, exc_info=e)
    except asyncio.CancelledError:
        outer = cancelled = True
        flow.cancel()
        await uncancellable(asyncio.gather(flow, return_exceptions=True))
    finally:
        if stopper is not None:
            stopper.cancel()
    for vm in run.vms:
        if vm.state in ("waiting", "restoring", "restored", "booting") and (cancelled or run.error):
            vm.state, vm.error = "failed", vm.error or ("cancelled" if cancelled else run.error)
    if run.kind == "rehearsal":
        if keep and not cancelled:
            r.keep_recovered()
            run.cleanup = "kept"
            log_line("kept every VM the rehearsal created (--keep)", "warning")
        else:
            await uncancellable(r.clean_up())
    else:
        r.keep_recovered()   # a failover's VMs are production now
    run.finished = clock()
    every = bool(run.vms) and all(v.state == "running" for v in run.vms)
    run.rto_s = max(v.rto_s for v in run.vms if v.rto_s is not None) if every else None
    run.state = "cancelled" if cancelled else "succeeded" if every and not run.error else "failed"
    if run.state == "failed" and not run.error:
        bad = run.failed_vms + [v for v in run.vms if v.state not in ("running", "failed", "no-point")]
        run.error = f"{len(bad)} of {len(run.vms)} VM(s) not recovered: " + "; ".join(
            f"{v.vm_name}: {v.error or v.state}" for v in bad)[:1500]
    log_line(f"{run.kind} {run.state}: {sum(v.state == 'running' for v in run.vms)}/{len(run.vms)} VMs running"
             + (f", RTO {duration_text(run.rto_s)}" if run.rto_s is not None else ""),
             "info" if run.state == "succeeded" else "error")
    r.changed()
    if outer:
        raise asyncio.CancelledError
    return run
