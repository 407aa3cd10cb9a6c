"""A proxy of the cluster (``fctui agent --cluster nats://...``): takes work items from the shared queue and
backs VMs up with the same engine as the local agent (fctui.jobs), its slots, records and journal in NATS.

The design is in :mod:`fctui.cluster`. What one proxy does:

* heartbeat ``agent.<id>`` in the AGENTS bucket (who is alive, what it runs);
* pull work items from the shared consumer while it has room (at most ``global_limit`` VMs at once);
* a *job item*: log in (its own VRM password, never one from NATS), plan the job's targets, write one
  VM record per VM (refused and unresolved ones final at once), the header's VM list and ``running``,
  publish one VM item per runnable VM, ack;
* a *VM item*: bind the VM's record to this delivery (compare-and-set: a duplicated item never runs a VM
  twice), claim the VM cluster-wide, and when the record holds intents (a proxy died mid-VM) take over:
  adopt its slots, remove its snapshot and backup resources on the VRM, mark the CBT chain broken when it
  had taken a CBT snapshot; then plan that one VM again and run it with :class:`BackupRunner`, telling
  JetStream it is in progress every ``ack_wait/3``; ack once the VM is final; end the job if it was the
  last VM;
* follow the headers of the jobs it runs: a cancel flag cancels their VMs;
* sweep: leftovers of final VMs (a release or delete the VRM refused) are retried periodically.

Stopped (SIGTERM), it cancels its VMs (the engine cleans up on the VRM), puts their records back to
queued and gives the items back (nak) so another proxy takes them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import time
from typing import Any

from ..cluster.connect import ClusterError
from ..cluster.jobs import VM_LOG_LIMIT, dump, load
from ..cluster.layout import (WORK_CONSUMER, WORK_STREAM, WORK_SUBJECT_JOB, WORK_SUBJECT_VM, ClusterSettings,
                              agent_key, vm_key)
from ..jobs.model import FINAL_VM_STATES, JobError, JobRecord, VmProgress
from ..jobs.runner import RunnerSettings

log = logging.getLogger("fctui.agent.cluster")


@dataclasses.dataclass
class _Work:
    """A VM this proxy runs (for cancel and stop)."""
    job_id: str
    vm_urn: str
    item: int       # the work item's stream sequence
    task: asyncio.Task
    why: str = ""   # why it was cancelled: "cancel" (the user) or "stop" (this proxy stops)


class ClusterAgent:
    def __init__(self, cluster_url: str, repo_spec: Any, vrm: str, user: str, password: str,
                 access: dict[str, Any] | None = None, settings: RunnerSettings | None = None,
                 cluster_settings: ClusterSettings | None = None, per_host: int = 8, per_datastore: int = 8,
                 global_limit: int = 16, agent_id: str | None = None) -> None:
        self.cluster_url = cluster_url
        self.repo_spec = repo_spec
        self.vrm = vrm
        self.user = user
        self._password = password   # memory only: never in NATS, logs or disk
        self.access = dict(access or {})
        self.settings = settings or RunnerSettings()
        self.cluster_settings = cluster_settings or ClusterSettings()
        self.per_host, self.per_datastore, self.global_limit = per_host, per_datastore, max(1, global_limit)
        self.agent_id = agent_id or f"{socket.gethostname()}-{os.getpid()}"
        self.cluster: Any = None
        self.jobs: Any = None
        self.scheduler: Any = None
        self.client: Any = None
        self.repo: Any = None
        self.started = time.time()
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.working: dict[tuple[str, str], _Work] = {}   # (job id, VM URN) -> its task
        self.planning: set[asyncio.Task] = set()
        self._room = asyncio.Event()
        self._loops: list[asyncio.Task] = []
        self._sub: Any = None

    # --- lifecycle ----------------------------------------------------------------------------------

    async def run(self, *, signals: bool = True) -> None:
        """Serve until stopped (SIGTERM/SIGINT with ``signals``, or :meth:`stop`)."""
        if signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, self.stop)
        try:
            await self.start()
            await self.stopping.wait()
        finally:
            await self.shutdown()

    def stop(self) -> None:
        self.stopping.set()

    async def start(self) -> None:
        from ..cluster.connect import Cluster
        from ..cluster.jobs import ClusterJobs
        from ..cluster.slots import ClusterScheduler
        from ..repo import Repository
        self.repo = await asyncio.to_thread(Repository.open, self.repo_spec)
        self.client = await self._login()
        self.cluster = await Cluster.connect(self.cluster_url, settings=self.cluster_settings)
        # the cluster's timings when it has others already (the first proxy's): in-progress and heartbeats follow them
        self.cluster_settings = self.cluster.settings
        self.jobs = ClusterJobs(self.cluster)
        self.scheduler = ClusterScheduler(self.cluster, self.agent_id, per_host=self.per_host,
                                          per_datastore=self.per_datastore, global_limit=self.global_limit)
        self._sub = await self.cluster.js.pull_subscribe_bind(durable=WORK_CONSUMER, stream=WORK_STREAM)
        await self._heartbeat_once()
        try:   # as the local agent's store: the oldest final jobs beyond 500 go (every proxy may; one wins)
            await self.jobs.prune_history()
        except Exception as e:
            log.warning("pruning the job history failed: %s", e)
        self._loops = [asyncio.create_task(self._heartbeat(), name="cluster-heartbeat"),
                       asyncio.create_task(self._pull(), name="cluster-pull"),
                       asyncio.create_task(self._follow_cancels(), name="cluster-cancels"),
                       asyncio.create_task(self._sweep(), name="cluster-sweep")]
        self.ready.set()
        log.info("proxy %s serving the cluster at %s (VRM %s as %s)", self.agent_id, self.cluster_url,
                 self.vrm, self.user)

    async def shutdown(self) -> None:
        """Stop pulling, give our VMs back (their cleanup on the VRM runs first), leave the cluster. Every
        step is bounded: a stop always ends (systemd kills what does not)."""
        self.stopping.set()
        pull = [t for t in self._loops if t.get_name() == "cluster-pull"]
        for t in pull:
            t.cancel()
        await self._bounded("the pull loop", asyncio.gather(*pull, return_exceptions=True), 10)
        if self._sub is not None:   # no fetch left waiting on the server: the connection drains at once
            await self._bounded("leaving the work queue", self._sub.unsubscribe(), 10)
        for w in list(self.working.values()):
            w.why = w.why or "stop"
            w.task.cancel()
        for t in self.planning:
            t.cancel()
        await self._bounded("the VMs' cleanup", asyncio.gather(*(w.task for w in list(self.working.values())),
                                                               *self.planning, return_exceptions=True),
                            self.settings.cleanup_budget_s + 30)
        for t in self._loops:
            t.cancel()
        await self._bounded("the background loops", asyncio.gather(*self._loops, return_exceptions=True), 10)
        if self.scheduler is not None:
            await self._bounded("releasing the slots", self.scheduler.close(), 10)
        if self.cluster is not None:
            await self._bounded("the heartbeat's removal", self.cluster.agents_kv.delete(agent_key(self.agent_id)), 5)
            await self._bounded("the cluster connection's close", self.cluster.close(), 10)
            if not self.cluster.nc.is_closed:
                await self._bounded("the cluster connection's close", self.cluster.nc.close(), 5)
        if self.client is not None:
            await self._bounded("the VRM session's close", self.client.close(), 15)
        if self.repo is not None:
            with contextlib.suppress(Exception):
                self.repo.close()
        log.info("proxy %s stopped", self.agent_id)

    @staticmethod
    async def _bounded(what: str, aw: Any, seconds: float) -> None:
        try:
            await asyncio.wait_for(aw, seconds)
        except asyncio.TimeoutError:
            log.warning("stopping: %s took longer than %g s; going on", what, seconds)
        except Exception as e:
            log.warning("stopping: %s failed: %s", what, e)

    async def _login(self) -> Any:
        from ..vrm import VrmClient
        return await VrmClient.open_session(self.vrm, self.user, self._password, **self.access)

    # --- heartbeat ----------------------------------------------------------------------------------

    async def _heartbeat_once(self) -> None:
        value = {"id": self.agent_id, "host": socket.gethostname(), "pid": os.getpid(), "started": self.started,
                 "vrm": self.vrm, "user": self.user, "capacity": self.global_limit,
                 "running": sorted(f"{j}/{v}" for j, v in self.working)}
        await self.cluster.agents_kv.put(agent_key(self.agent_id), dump(value))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.cluster_settings.agent_ttl_s / 3)
            try:
                await self._heartbeat_once()
            except Exception as e:   # NATS away for a moment: the next beat tries again
                log.warning("heartbeat failed: %s", e)

    # --- the work queue -----------------------------------------------------------------------------

    def _busy(self) -> int:
        return len(self.working) + len(self.planning)

    async def _pull(self) -> None:
        import nats.errors
        while not self.stopping.is_set():
            if self._busy() >= self.global_limit:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                msgs = await self._sub.fetch(1, timeout=1.0)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            except Exception as e:   # NATS reconnecting: try again shortly
                log.warning("fetching work failed: %s", e)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                self._dispatch(msg)

    def _dispatch(self, msg: Any) -> None:
        data = load(msg.data)
        job_id = str(data.get("job") or "")
        if msg.subject == WORK_SUBJECT_JOB and job_id:
            task = asyncio.create_task(self._plan_job(msg, job_id), name=f"plan-{job_id}")
            self.planning.add(task)
            task.add_done_callback(self._planned)
        elif msg.subject == WORK_SUBJECT_VM and job_id and data.get("vm"):
            vm_urn = str(data["vm"])
            key = (job_id, vm_urn)
            seq = int(msg.metadata.sequence.stream)
            running = self.working.get(key)
            if running is not None:
                # the item we run, delivered again (a late in-progress): ours answers; or a duplicate of
                # it (a replanned job): the one we run answers for the VM
                if running.item != seq:
                    asyncio.ensure_future(msg.ack())
                return
            task = asyncio.create_task(self._work_vm(msg, job_id, vm_urn), name=f"vm-{job_id}-{vm_key(vm_urn)}")
            self.working[key] = _Work(job_id, vm_urn, seq, task)
            task.add_done_callback(lambda t, key=key: self._worked(key, t))
        else:
            log.warning("dropping a malformed work item on %s: %r", msg.subject, msg.data[:200])
            asyncio.ensure_future(msg.term())

    def _planned(self, task: asyncio.Task) -> None:
        self.planning.discard(task)
        self._room.set()
        self._report(task, "planning a job")

    def _worked(self, key: tuple[str, str], task: asyncio.Task) -> None:
        self.working.pop(key, None)
        self._room.set()
        self._report(task, f"VM {key[1]} of job {key[0]}")

    @staticmethod
    def _report(task: asyncio.Task, what: str) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", what, exc_info=task.exception())

    async def _keep_in_progress(self, msg: Any) -> None:
        """Tell JetStream the item is being worked on, so it goes to no other proxy while we live."""
        while True:
            await asyncio.sleep(self.cluster_settings.ack_wait_s / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    # --- a job item: plan it ------------------------------------------------------------------------

    async def _plan_job(self, msg: Any, job_id: str) -> None:
        keep = asyncio.create_task(self._keep_in_progress(msg))
        try:
            found = await self.jobs.header(job_id)
            header = found[0] if found is not None else None
            if header is not None and header.get("state") == "running":
                # planned already: a planner that died before its ack may not have published every VM item
                await self._republish(job_id, header)
            if header is None or header.get("state") not in ("queued", None):
                await msg.ack()
                return
            if header.get("cancel"):
                await self.jobs.update_header(job_id, self._cancelled_header)
                await msg.ack()
                return
            if not self._serves(header):
                await self._not_mine(msg, job_id, header)
                return
            try:
                await self._plan(job_id, header)
            except ClusterError:
                raise
            except Exception as e:
                why = str(e) if isinstance(e, JobError) else f"{type(e).__name__}: {e}"
                if not isinstance(e, JobError):
                    log.exception("planning job %s failed", job_id)
                await self.jobs.update_header(job_id, lambda h: self._failed_header(h, why))
            await msg.ack()
        except asyncio.CancelledError:
            # this proxy stops mid-plan: the item goes back (the header still says queued)
            with contextlib.suppress(Exception):
                await asyncio.shield(msg.nak())
            raise
        finally:
            keep.cancel()

    def _serves(self, header: dict[str, Any]) -> bool:
        vrm = str(header.get("vrm") or "").rstrip("/")
        return not vrm or vrm == self.vrm.rstrip("/")

    async def _not_mine(self, msg: Any, job_id: str, header: dict[str, Any]) -> None:
        """A job for a VRM this proxy does not serve: back to the queue for one that does, until the
        item has gone round often enough to say that no proxy does."""
        delivered = int(getattr(msg.metadata, "num_delivered", 1) or 1)
        if delivered >= 2 * self.cluster_settings.max_attempts:
            why = f"no proxy of the cluster serves the VRM {header.get('vrm')} (this one serves {self.vrm})"
            await self.jobs.update_header(job_id, lambda h: self._failed_header(h, why))
            await msg.ack()
            return
        await msg.nak(delay=1.0)

    @staticmethod
    def _failed_header(h: dict[str, Any], why: str) -> dict[str, Any]:
        h.update(state="failed", error=why, finished=time.time())
        _log_to(h, f"job failed: {why}", "error", JobRecord.LOG_LIMIT)
        return h

    @staticmethod
    def _cancelled_header(h: dict[str, Any]) -> dict[str, Any]:
        if h.get("state") in ("queued", "running"):
            h.update(state="cancelled", finished=time.time())
            _log_to(h, "job cancelled", "warning", JobRecord.LOG_LIMIT)
        return h

    async def _republish(self, job_id: str, header: dict[str, Any]) -> None:
        """VM items for the records no item has taken yet (a VM record is bound to the first item that
        takes it: duplicates are dropped, see :meth:`_bind`)."""
        records = await self.jobs.vm_records(job_id)
        urns = [str(r["urn"]) for k in header.get("vm_keys") or [] if (r := records.get(k)) and r.get("urn")
                and r.get("state") not in FINAL_VM_STATES and r.get("item") is None]
        if urns:
            await self.jobs.publish_vm_items(job_id, urns)

    async def _plan_vms(self, job: JobRecord, targets: list[str], header: dict[str, Any]) -> Any:
        """The engine's plan of ``targets`` with the cluster's CBT chain marks and its slot counts, the job's
        progress set from it: one way for the proxy that fans a job out and for each VM item's proxy."""
        from ..jobs.planner import add_launch_findings, build_plan
        from ..jobs.runner import BackupRunner
        plan = await build_plan(self.client, targets, self.repo, full=job.full,
                                chain_marks=await self.jobs.chain_marks(), full_vms=job.full_vms)
        await self.scheduler.refresh_counts()
        pool = self.scheduler.pool
        add_launch_findings(plan, host_connections=pool.hosts, datastore_volumes=pool.datastores,
                            per_host=pool.per_host, per_datastore=pool.per_datastore, repo=self.repo,
                            business_hours=_business_hours(header))
        BackupRunner.progress_from_plan(job, plan)
        return plan

    async def _plan(self, job_id: str, header: dict[str, Any]) -> None:
        from ..cluster.jobs import HEADER_EXTRAS, record_of
        job = JobRecord.from_dict({k: v for k, v in header.items() if k not in HEADER_EXTRAS and k != "vms"})
        plan = await self._plan_vms(job, job.targets, header)
        lines: dict[str, list[dict[str, Any]]] = {}
        for vp in plan.vms:
            if vp.refused:
                _log_to(lines.setdefault(vp.vm_urn, []), f"{vp.vm_name}: refused: {vp.reason}", "warning")
            for f in vp.launch:
                _log_to(lines.setdefault(vp.vm_urn, []), f"{vp.vm_name}: {f.rule}: {f.message}",
                        "warning" if f.severity == "warning" else "info")
        for target, why in plan.unresolved:
            _log_to(lines.setdefault(target, []), f"{target}: {why}", "warning")
        for vm in job.vms:
            await self.jobs.put_vm(job_id, record_of(vm, log=lines.get(vm.urn, [])))
        runnable = [vp.vm_urn for vp in plan.runnable]
        summary = (f"job started by proxy {self.agent_id}: {len(runnable)} VM(s) to back up, "
                   f"{len(plan.refused)} refused, {len(plan.unresolved)} not found")
        keys = [vm_key(vm.urn) for vm in job.vms]

        def running(h: dict[str, Any]) -> dict[str, Any]:
            h.update(vm_keys=keys, state="running", started=h.get("started") or time.time())
            _log_to(h, summary, "info", JobRecord.LOG_LIMIT)
            return h
        await self.jobs.update_header(job_id, running)
        if runnable:
            await self.jobs.publish_vm_items(job_id, runnable)
        else:
            await self.jobs.finish_if_done(job_id)

    # --- a VM item: run it --------------------------------------------------------------------------

    async def _work_vm(self, msg: Any, job_id: str, vm_urn: str) -> None:
        keep = asyncio.create_task(self._keep_in_progress(msg))
        claimed = False
        try:
            writer = await self._bind(msg, job_id, vm_urn)
            if writer is None:
                return   # answered already (a duplicate, a final record, a job that is gone)
            holder = await self.scheduler.claim_vm(vm_urn, job_id)
            if holder is not None:
                await self._final(writer, "refused", f"already being backed up by job {holder}", "warning")
                await self.jobs.finish_if_done(job_id)
                await msg.ack()
                return
            claimed = True
            answer = await self._vm_run(job_id, vm_urn, writer, int(writer.record.get("attempt") or 1),
                                        int(writer.record.get("died") or 0))
            if answer == "nak":
                with contextlib.suppress(Exception):
                    await msg.nak()
                return
            # the job's end before the ack: a proxy that dies in between leaves the item, not an unended job
            await self.jobs.finish_if_done(job_id)
            await msg.ack()
        except ClusterError as e:
            # another proxy took the VM over (this one stalled past ack_wait), or NATS is gone: the item
            # is not ours to answer any more
            log.warning("job %s, VM %s: %s", job_id, vm_urn, e)
        finally:
            keep.cancel()
            if claimed:
                self.scheduler.release_vm(vm_urn)

    async def _bind(self, msg: Any, job_id: str, vm_urn: str) -> Any:
        """The VM record's writer, bound to this delivery by compare-and-set (the record names the item
        that runs it: a duplicate item is dropped, a redelivered one takes over); None when the item is
        answered here."""
        from ..cluster.jobs import VmRecordWriter
        seq = int(msg.metadata.sequence.stream)
        attempt = int(msg.metadata.num_delivered or 1)
        for _ in range(10):
            found = await self.jobs.vm_entry(job_id, vm_urn)
            if found is None:   # the job is gone
                await msg.ack()
                return None
            record, revision = found
            if record.get("state") in FINAL_VM_STATES:
                await self.jobs.finish_if_done(job_id)
                await msg.ack()
                return None
            if record.get("item") not in (None, seq):
                await msg.ack()   # a duplicate of the item that runs this VM (a replanned job)
                return None
            previous = str(record.get("agent") or "")
            # a proxy that stops hands its VM back (agent ""): only one that stopped answering counts as died
            died = int(record.get("died") or 0) + (1 if previous else 0)
            record.update(agent=self.agent_id, attempt=attempt, item=seq, died=died)
            writer = VmRecordWriter(self.jobs, job_id, record, revision)
            if previous and previous != self.agent_id:
                writer.log(f"{record.get('name') or vm_urn}: proxy {previous} stopped answering: proxy "
                           f"{self.agent_id} takes over (attempt {attempt})", "warning")
            writer.changed()
            try:
                await writer.flush()
                return writer
            except ClusterError:
                continue   # another delivery bound it first: look again
        raise ClusterError(f"the record of {vm_urn} in job {job_id} keeps changing")

    async def _vm_run(self, job_id: str, vm_urn: str, writer: Any, attempt: int, died: int) -> str:
        """Take over what a dead proxy left, then back the VM up; "ack", or "nak" when this proxy stops."""
        from ..cluster.journal import KvJournal
        journal = KvJournal(self.jobs, job_id, vm_urn, writer=writer)
        found = await self.jobs.header(job_id)
        header = found[0] if found is not None else {}
        adopted: list[Any] = []
        try:
            return await self._vm_steps(job_id, vm_urn, writer, journal, header, attempt, died, adopted)
        finally:
            for t in adopted:   # those the run took and released are ignored
                self.scheduler.release(t)
            with contextlib.suppress(Exception):   # the chain marks it made are in the cluster before we answer
                await asyncio.shield(journal.flush())

    async def _vm_steps(self, job_id: str, vm_urn: str, writer: Any, journal: Any, header: dict[str, Any],
                        attempt: int, died: int, adopted: list[Any]) -> str:
        name = str(writer.record.get("name") or vm_urn)
        try:
            if attempt > 1:   # a redelivery: the proxy before us died (or stopped) with the VM
                adopted += await self.scheduler.adopt(self._owners(job_id, writer.record))
            if journal.pending():
                left = await self._take_over(job_id, name, writer, journal, len(adopted))
                if left:
                    return await self._final(writer, "failed", f"leftovers of the proxy that died could not be "
                                                               f"removed ({left}); the proxies keep trying", "error")
            if attempt > 1:   # the proxy that died may have committed the VM's point before it could say so
                committed = [p for p in await asyncio.to_thread(self.repo.points, vm_urn) if p.job_id == job_id]
                if committed:
                    writer.record.update(point_id=committed[-1].id)
                    return await self._final(writer, "done", "", "info",
                                             f"{name}: restore point {committed[-1].id} was committed by the "
                                             "proxy that died")
            if died >= self.cluster_settings.max_attempts:   # the VM itself may be what kills them
                return await self._final(writer, "failed", f"{died} {'proxy' if died == 1 else 'proxies'} died "
                                                           "while backing it up", "error")
            if header.get("cancel"):
                return await self._final(writer, "cancelled", "cancelled by the user", "warning")
            return await self._backup(job_id, vm_urn, header, writer, journal)
        except asyncio.CancelledError:
            if self._why(job_id, vm_urn) == "cancel":
                return await asyncio.shield(self._final(writer, "cancelled", "cancelled by the user", "warning"))
            await asyncio.shield(self._requeue(writer, name))
            return "nak"
        except ClusterError:
            raise
        except Exception as e:   # planning it, or the VRM: the VM fails with one line, the item is answered
            why = str(e) if isinstance(e, JobError) else f"{type(e).__name__}: {e}"
            if not isinstance(e, JobError):
                log.exception("backing up %s in job %s failed", name, job_id)
            return await self._final(writer, "failed", why, "error")

    @staticmethod
    def _owners(job_id: str, record: dict[str, Any]) -> list[str]:
        """The owners the runner gives the VM's slots: ``<job>/<VM name>`` and ``<job>/<volume URN>``."""
        return ([f"{job_id}/{record.get('name') or record.get('urn')}"]
                + [f"{job_id}/{d.get('volume')}" for d in record.get("disks") or [] if d.get("volume")])

    def _why(self, job_id: str, vm_urn: str) -> str:
        """Why this proxy cancelled the VM's task: "cancel" (the user), "stop" (the proxy stops), ""."""
        work = self.working.get((job_id, vm_urn))
        return work.why if work is not None else ""

    async def _take_over(self, job_id: str, name: str, writer: Any, journal: Any, adopted: int) -> str:
        """A proxy died while it backed this VM up: remove what its journal says it created on the VRM
        (its slots, adopted, keep counting meanwhile: its resources still count against the host's 8);
        a CBT snapshot it took consumed a chgID, so the VM's disks are read fully next. Returns why a
        leftover is still there ("" : none)."""
        from ..jobs.cleanup import cleanup_intents
        pending = journal.pending()
        cbt = any(i.get("what") == "snapshot" and i.get("snapshot_type") == "CBTbackup" for i in pending)
        failed = await cleanup_intents(self.client, pending, journal.done, within=self.settings.cleanup_budget_s)
        for intent, why in failed:
            journal.update(intent["key"], last_error=why)
        if cbt:
            reason = f"job {job_id}: the proxy backing up {name} died after its CBT snapshot"
            for d in writer.record.get("disks") or []:
                if d.get("mode") != "excluded" and d.get("volume"):
                    journal.mark_chain(str(d["volume"]), reason)
        message = (f"{name}: removed {len(pending) - len(failed)} leftover(s) of the proxy that died"
                   + (f" ({adopted} of its slot(s) adopted)" if adopted else "")
                   + (f"; {len(failed)} could not be removed yet: {failed[0][1]}" if failed else "")
                   + ("; its CBT chain is broken: the disks are read fully" if cbt else ""))
        log.info("job %s: %s", job_id, message)
        writer.log(message, "warning" if failed else "info")
        await journal.flush()
        return failed[0][1] if failed else ""

    async def _backup(self, job_id: str, vm_urn: str, header: dict[str, Any], writer: Any, journal: Any) -> str:
        from ..cluster.jobs import HEADER_EXTRAS
        from ..jobs.runner import BackupRunner, Reporter
        job = JobRecord.from_dict({k: v for k, v in header.items() if k not in HEADER_EXTRAS and k not in ("vms", "log")})
        settings = (dataclasses.replace(self.settings, host_snapshot_gate=True)
                    if _access(header).get("host_snapshot_gate") else self.settings)
        plan = await self._plan_vms(job, [vm_urn], header)
        vm = job.vm(vm_urn)
        if vm is None:   # the VRM no longer knows it by that URN
            why = plan.unresolved[0][1] if plan.unresolved else "not found"
            return await self._final(writer, "refused", why, "warning")
        sync = _ProgressSync(self, job_id, job, vm, writer)
        if not plan.runnable:
            sync.state(job)
            writer.log(f"{vm.name}: refused: {vm.reason}", "warning")
            await writer.flush()
            return "ack"
        vp = plan.runnable[0]
        reporter = Reporter(job, sync.event, interval=self.settings.progress_interval, on_state=sync.state)
        runner = BackupRunner(self.client, self.repo, scheduler=self.scheduler, journal=journal, settings=settings,
                              vrm=self.vrm, user=self.user)
        writer.log(f"{vm.name}: backed up by proxy {self.agent_id}")
        try:
            await runner.run_vm(job, vp, vm, reporter)
        finally:
            runner.close()
            sync.close()
            await asyncio.shield(writer.flush())
        return "ack"

    async def _final(self, writer: Any, state: str, reason: str, level: str, message: str = "") -> str:
        """The VM's record final (its disks' states with it) and stored."""
        record = writer.record
        record.update(state=state, reason=reason)
        for d in record.get("disks") or []:
            if d.get("state") in ("waiting", "reading"):
                d["state"] = "done" if state == "done" else "cancelled" if state == "cancelled" else "failed"
        writer.log(message or f"{record.get('name') or record.get('urn')}: {state}: {reason}", level)
        await writer.flush()
        return "ack"

    async def _requeue(self, writer: Any, name: str) -> None:
        """This proxy stops: the VM's record back to queued (the engine cleaned up), for the next proxy."""
        writer.record.update(state="queued", reason="", agent="")
        writer.log(f"{name}: proxy {self.agent_id} stopped: back in the queue", "warning")
        await writer.flush()

    # --- cancel ---------------------------------------------------------------------------------------

    async def _follow_cancels(self) -> None:
        """A cancel flag in a header cancels this proxy's VMs of that job (the engine cleans up)."""
        while True:
            await asyncio.sleep(0.25)
            for job_id in sorted({w.job_id for w in self.working.values()}):
                try:
                    found = await self.jobs.header(job_id)
                except Exception:
                    continue
                if found is None or not found[0].get("cancel"):
                    continue
                for w in list(self.working.values()):
                    if w.job_id == job_id and not w.why:
                        w.why = "cancel"
                        w.task.cancel()

    # --- the sweep of leftovers --------------------------------------------------------------------

    async def _sweep(self) -> None:
        """Leftovers of final VMs (a release or delete the VRM refused at the time) are tried again
        every hunt interval, as the local agent's snapshot hunter does; jobs left running with every VM
        final are ended."""
        while True:
            await asyncio.sleep(self.settings.hunt_interval_s)
            try:
                await self.settle_jobs()
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("leftover sweep failed: %s", e)

    async def settle_jobs(self) -> None:
        """End the running jobs whose VMs are all final (their last proxy died between its VM's end and
        the job's, or its look at the records missed one): any proxy may, the header's CAS picks one."""
        from ..cluster.connect import entries
        for entry in (await entries(self.cluster.jobs_kv, "job.*")).values():
            header = load(entry.value)
            if header.get("state") == "running" and header.get("vm_keys") and header.get("id"):
                await self.jobs.finish_if_done(str(header["id"]))

    async def sweep_once(self) -> int:
        """One round: returns how many leftovers were removed."""
        import nats.js.errors

        from ..cluster.connect import entries
        from ..jobs.cleanup import cleanup_intents
        removed = 0
        for key, entry in (await entries(self.cluster.jobs_kv, "vm.>")).items():
            record = load(entry.value)
            if not record or record.get("state") not in FINAL_VM_STATES or not record.get("intents"):
                continue
            intents = record["intents"]
            pending = [dict(v, key=k) for k, v in intents.items()
                       if str(v.get("vrm") or self.vrm).rstrip("/") == self.vrm.rstrip("/")]
            if not pending:
                continue
            cleaned: list[str] = []
            failed = await cleanup_intents(self.client, pending, cleaned.append, within=self.settings.cleanup_budget_s)
            for intent, why in failed:
                intents[intent["key"]]["last_error"] = why
            for k in cleaned:
                intents.pop(k, None)
            removed += len(cleaned)
            if cleaned:
                _log_to(record, f"{record.get('name') or record.get('urn')}: removed {len(cleaned)} "
                                f"leftover(s) on the VRM (proxy {self.agent_id})", limit=VM_LOG_LIMIT)
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await self.cluster.jobs_kv.update(key, dump(record), last=entry.revision)
        return removed


def _access(header: dict[str, Any]) -> dict[str, Any]:
    """What the submitter asked of the proxies besides the targets (ClusterClient puts it in ``access``)."""
    access = header.get("access")
    return access if isinstance(access, dict) else {}


def _business_hours(header: dict[str, Any]) -> Any:
    """The job's business-hours window (a launch warning when a VM starts inside it), None without one."""
    text = _access(header).get("business_hours")
    if not text:
        return None
    from ..rules.launch import BusinessHours, BusinessHoursError
    try:
        return BusinessHours.parse(str(text))
    except BusinessHoursError:
        return None   # checked when it was submitted


def _log_to(target: dict[str, Any] | list[dict[str, Any]], message: str, level: str = "info",
            limit: int = 50) -> None:
    """A log line appended to a header's ``log`` (a dict) or to a list, the newest ``limit`` kept."""
    lines = target.setdefault("log", []) if isinstance(target, dict) else target
    lines.append({"time": time.time(), "level": level, "message": message})
    del lines[:-limit]


class _ProgressSync:
    """The runner's Reporter -> the VM record's writer: state changes at once, progress at most every
    ``progress_interval_s``, log lines as they come."""

    def __init__(self, agent: ClusterAgent, job_id: str, job: JobRecord, vm: VmProgress, writer: Any) -> None:
        self.agent, self.job_id, self.job, self.vm, self.writer = agent, job_id, job, vm, writer
        self.interval = agent.cluster_settings.progress_interval_s
        self._last = 0.0
        self._later: asyncio.TimerHandle | None = None

    def state(self, job: JobRecord | None = None) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None
        self._last = time.monotonic()
        self.writer.set_progress(self.vm)
        record = self.writer.record
        record["warnings"] = list(self.job.warnings)
        if self.agent._why(self.job_id, self.vm.urn) == "stop" and record.get("state") == "cancelled":
            # this proxy stops, the user did not cancel: the VM goes back to the queue, never "cancelled"
            record.update(state="queued", reason="")

    def event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "log":
            self.writer.log(str(ev.get("message") or ""), str(ev.get("level") or "info"), when=ev.get("time"))
        elif kind == "progress" and self._later is None:
            wait = self._last + self.interval - time.monotonic()
            if wait <= 0:
                self.state()
            else:
                self._later = asyncio.get_running_loop().call_later(wait, self.state)

    def close(self) -> None:
        self.state()
