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
import json
import logging
import os
import socket
import time
from typing import Any

from ..cluster.layout import (WORK_CONSUMER, WORK_STREAM, WORK_SUBJECT_JOB, WORK_SUBJECT_VM, ClusterSettings,
                              agent_key, job_key, vm_key, vm_record_key)
from ..jobs.model import FINAL_VM_STATES, JobError, JobRecord, VmProgress
from ..jobs.runner import RunnerSettings

log = logging.getLogger("fctui.agent.cluster")

VM_LOG_LIMIT = 50


class _Stopping(Exception):
    """The proxy stops: its VM goes back to the queue for another proxy."""


@dataclasses.dataclass
class _Work:
    """A VM this proxy runs (for cancel and stop)."""
    job_id: str
    vm_urn: str
    item: int       # the work item's stream sequence
    task: asyncio.Task
    why: str = ""   # why it was cancelled: "cancel" (the user) or "stop" (this proxy stops)


def _loads(data: bytes | None) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        d = json.loads(data)
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


def _dumps(d: dict[str, Any]) -> bytes:
    return json.dumps(d, separators=(",", ":")).encode()


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
            for sig in ("SIGTERM", "SIGINT"):
                import signal
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(getattr(signal, sig), self.stop)
        await self.start()
        try:
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
        self.jobs = ClusterJobs(self.cluster)
        self.scheduler = ClusterScheduler(self.cluster, self.agent_id, per_host=self.per_host,
                                          per_datastore=self.per_datastore, global_limit=self.global_limit)
        self._sub = await self.cluster.js.pull_subscribe_bind(durable=WORK_CONSUMER, stream=WORK_STREAM)
        await self._heartbeat_once()
        self._loops = [asyncio.create_task(self._heartbeat(), name="cluster-heartbeat"),
                       asyncio.create_task(self._pull(), name="cluster-pull"),
                       asyncio.create_task(self._follow_cancels(), name="cluster-cancels"),
                       asyncio.create_task(self._sweep(), name="cluster-sweep")]
        self.ready.set()
        log.info("proxy %s serving the cluster at %s (VRM %s as %s)", self.agent_id, self.cluster_url,
                 self.vrm, self.user)

    async def shutdown(self) -> None:
        """Stop pulling, give our VMs back (their cleanup on the VRM runs first), leave the cluster."""
        self.stopping.set()
        pull = [t for t in self._loops if t.get_name() == "cluster-pull"]
        for t in pull:
            t.cancel()
        await asyncio.gather(*pull, return_exceptions=True)
        for w in list(self.working.values()):
            w.why = w.why or "stop"
            w.task.cancel()
        for t in self.planning:
            t.cancel()
        await asyncio.gather(*(w.task for w in list(self.working.values())), *self.planning,
                             return_exceptions=True)
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self.scheduler is not None:
            with contextlib.suppress(Exception):
                await self.scheduler.drain()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                await self.cluster.agents_kv.delete(agent_key(self.agent_id))
            with contextlib.suppress(Exception):
                await self.cluster.close()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        if self.repo is not None:
            with contextlib.suppress(Exception):
                self.repo.close()
        log.info("proxy %s stopped", self.agent_id)

    async def _login(self) -> Any:
        from ..vrm import VrmClient
        client = VrmClient(self.vrm, self.user, self._password, **self.access)
        try:
            await client.login()
        except BaseException:
            await client.aclose()
            raise
        return client

    # --- heartbeat ----------------------------------------------------------------------------------

    async def _heartbeat_once(self) -> None:
        value = {"id": self.agent_id, "host": socket.gethostname(), "pid": os.getpid(), "started": self.started,
                 "vrm": self.vrm, "user": self.user, "capacity": self.global_limit,
                 "running": sorted(f"{j}/{v}" for j, v in self.working)}
        await self.cluster.agents_kv.put(agent_key(self.agent_id), _dumps(value))

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
        data = _loads(msg.data) or {}
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

    # --- records ------------------------------------------------------------------------------------

    async def _header(self, job_id: str) -> dict[str, Any] | None:
        import nats.js.errors
        try:
            entry = await self.cluster.jobs_kv.get(job_key(job_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        return _loads(entry.value)

    async def _record(self, job_id: str, vm_urn: str) -> tuple[dict[str, Any] | None, int]:
        """A VM record and its revision (for compare-and-set); (None, 0) when there is none."""
        import nats.js.errors
        try:
            entry = await self.cluster.jobs_kv.get(vm_record_key(job_id, vm_urn))
        except nats.js.errors.KeyNotFoundError:
            return None, 0
        return _loads(entry.value), int(entry.revision or 0)

    async def _cas_record(self, job_id: str, vm_urn: str, record: dict[str, Any], revision: int) -> bool:
        import nats.js.errors
        try:
            await self.cluster.jobs_kv.update(vm_record_key(job_id, vm_urn), _dumps(record), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    @staticmethod
    def _add_log(record: dict[str, Any], message: str, level: str = "info") -> None:
        lines = record.setdefault("log", [])
        lines.append({"time": time.time(), "level": level, "message": message})
        del lines[:-VM_LOG_LIMIT]

    # --- a job item: plan it ------------------------------------------------------------------------

    async def _plan_job(self, msg: Any, job_id: str) -> None:
        keep = asyncio.create_task(self._keep_in_progress(msg))
        try:
            header = await self._header(job_id)
            if header is not None and header.get("state") == "running":
                # planned already: a planner that died before its ack may not have published every VM item
                await self._republish(job_id, header)
            if header is None or header.get("state") not in ("queued", None):
                await msg.ack()
                return
            if header.get("cancel"):
                await self.jobs.update_header(job_id, lambda h: self._cancelled_header(h))
                await msg.ack()
                return
            if not self._serves(header):
                await self._not_mine(msg, job_id, header)
                return
            try:
                await self._plan(job_id, header)
            except asyncio.CancelledError:
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
        h.setdefault("log", []).append({"time": time.time(), "level": "error", "message": f"job failed: {why}"})
        return h

    @staticmethod
    def _cancelled_header(h: dict[str, Any]) -> dict[str, Any]:
        if h.get("state") in ("queued", "running"):
            h.update(state="cancelled", finished=time.time())
            h.setdefault("log", []).append({"time": time.time(), "level": "warning", "message": "job cancelled"})
        return h

    async def _republish(self, job_id: str, header: dict[str, Any]) -> None:
        """VM items for the records no item has taken yet (a VM record is bound to the first item that
        takes it: duplicates are dropped, see :meth:`_take_vm`)."""
        import nats.js.errors

        from ..cluster.layout import key_part
        urns = []
        for key in header.get("vm_keys") or []:
            try:
                entry = await self.cluster.jobs_kv.get(f"vm.{key_part(job_id)}.{key}")
            except nats.js.errors.KeyNotFoundError:
                continue
            record = _loads(entry.value) or {}
            if record.get("state") not in FINAL_VM_STATES and record.get("item") is None and record.get("urn"):
                urns.append(str(record["urn"]))
        if urns:
            await self.jobs.publish_vm_items(job_id, urns)

    async def _plan(self, job_id: str, header: dict[str, Any]) -> None:
        from ..jobs.planner import add_launch_findings, build_plan
        from ..jobs.runner import BackupRunner
        job = JobRecord.from_dict({k: v for k, v in header.items() if k != "vms"})
        plan = await build_plan(self.client, job.targets, self.repo, full=job.full,
                                chain_marks=await self.jobs.chain_marks(), full_vms=job.full_vms)
        await self.scheduler.refresh_counts()
        pool = self.scheduler.pool
        add_launch_findings(plan, host_connections=pool.hosts, datastore_volumes=pool.datastores,
                            per_host=pool.per_host, per_datastore=pool.per_datastore, repo=self.repo)
        BackupRunner.progress_from_plan(job, plan)
        lines: dict[str, list[tuple[str, str]]] = {}
        for vp in plan.vms:
            if vp.refused:
                lines.setdefault(vp.vm_urn, []).append((f"{vp.vm_name}: refused: {vp.reason}", "warning"))
            for f in vp.launch:
                lines.setdefault(vp.vm_urn, []).append((f"{vp.vm_name}: {f.rule}: {f.message}",
                                                        "warning" if f.severity == "warning" else "info"))
        for target, why in plan.unresolved:
            lines.setdefault(target, []).append((f"{target}: {why}", "warning"))
        for vm in job.vms:
            record = {**dataclasses.asdict(vm), "agent": "", "attempt": 0, "intents": {}, "log": []}
            for message, level in lines.get(vm.urn, []):
                self._add_log(record, message, level)
            await self.jobs.put_vm(job_id, record)
        runnable = [vp.vm_urn for vp in plan.runnable]
        summary = (f"job planned by proxy {self.agent_id}: {len(runnable)} VM(s) to back up, "
                   f"{len(plan.refused)} refused, {len(plan.unresolved)} not found")
        keys = [vm_key(vm.urn) for vm in job.vms]

        def running(h: dict[str, Any]) -> dict[str, Any]:
            h.update(vm_keys=keys, state="running", started=h.get("started") or time.time())
            h.setdefault("log", []).append({"time": time.time(), "level": "info", "message": summary})
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
            outcome = await self._take_vm(msg, job_id, vm_urn)
            if outcome is None:
                return   # answered already (ack'd a duplicate, a final record, ...)
            claimed, (record, _) = True, outcome
            answer = await self._vm_run(msg, job_id, vm_urn, record)
            if answer == "nak":
                with contextlib.suppress(Exception):
                    await msg.nak()
                return
            await msg.ack()
            await self.jobs.finish_if_done(job_id)
        finally:
            keep.cancel()
            if claimed:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.scheduler.release_vm(vm_urn))

    async def _take_vm(self, msg: Any, job_id: str, vm_urn: str) -> tuple[dict[str, Any], int] | None:
        """Bind the VM's record to this delivery and claim the VM; None when the item is answered here."""
        meta = msg.metadata
        seq = int(meta.sequence.stream)
        attempt = int(meta.num_delivered or 1)
        for _ in range(10):
            record, revision = await self._record(job_id, vm_urn)
            if record is None:   # the job is gone
                await msg.ack()
                return None
            if record.get("state") in FINAL_VM_STATES:
                await msg.ack()
                await self.jobs.finish_if_done(job_id)
                return None
            if record.get("item") not in (None, seq):
                # a duplicate of the item that runs this VM (a replanned job): that one answers for it
                await msg.ack()
                return None
            previous = str(record.get("agent") or "")
            record.update(agent=self.agent_id, attempt=attempt, item=seq)
            if previous and previous != self.agent_id:
                self._add_log(record, f"{record.get('name') or vm_urn}: proxy {previous} stopped answering: "
                                      f"proxy {self.agent_id} takes over (attempt {attempt})", "warning")
            if await self._cas_record(job_id, vm_urn, record, revision):
                break
        else:
            raise JobError(f"the record of {vm_urn} in job {job_id} keeps changing under us")
        holder = await self.scheduler.claim_vm(vm_urn, job_id)
        if holder is not None and holder != job_id:
            record.update(state="refused", reason=f"already being backed up by job {holder}")
            self._add_log(record, f"{record.get('name') or vm_urn}: refused: {record['reason']}", "warning")
            await self.jobs.put_vm(job_id, record)
            await msg.ack()
            await self.jobs.finish_if_done(job_id)
            return None
        return record, revision

    async def _vm_run(self, msg: Any, job_id: str, vm_urn: str, record: dict[str, Any]) -> str:
        """Take over what a dead proxy left, then back the VM up; "ack" or "nak" (this proxy stops)."""
        from ..cluster.journal import KvJournal
        name = str(record.get("name") or vm_urn)
        journal = KvJournal(self.jobs, job_id, vm_urn)
        load = getattr(journal, "load", None)
        if load is not None:
            await load()
        header = await self._header(job_id) or {}
        try:
            if record.get("intents"):
                left = await self._take_over(job_id, vm_urn, record, journal)
                if left:
                    return await self._final(job_id, vm_urn, journal, "failed",
                                             f"leftovers of the proxy that died could not be removed ({left}); "
                                             "the proxies keep trying", "error")
            attempt = int(record.get("attempt") or 1)
            if attempt > self.cluster_settings.max_attempts:
                why = f"{attempt - 1} proxies died while backing it up"
                return await self._final(job_id, vm_urn, journal, "failed", why, "error")
            if header.get("cancel"):
                return await self._final(job_id, vm_urn, journal, "cancelled", "cancelled by the user", "warning")
            return await self._backup(job_id, vm_urn, header, journal)
        except asyncio.CancelledError:
            if self._why(job_id, vm_urn) == "cancel":
                await asyncio.shield(self._final(job_id, vm_urn, journal, "cancelled", "cancelled by the user",
                                                 "warning"))
                return "ack"
            await asyncio.shield(self._requeue(job_id, vm_urn, journal, name))
            return "nak"
        except Exception as e:   # planning it, or the VRM: the VM fails with one line, the item is answered
            why = str(e) if isinstance(e, JobError) else f"{type(e).__name__}: {e}"
            if not isinstance(e, JobError):
                log.exception("backing up %s in job %s failed", name, job_id)
            return await self._final(job_id, vm_urn, journal, "failed", why, "error")

    def _why(self, job_id: str, vm_urn: str) -> str:
        """Why this proxy cancelled the VM's task: "cancel" (the user), "stop" (the proxy stops), ""."""
        work = self.working.get((job_id, vm_urn))
        return work.why if work is not None else ""

    async def _take_over(self, job_id: str, vm_urn: str, record: dict[str, Any], journal: Any) -> str:
        """A proxy died while it backed this VM up: its slots become ours until its leftovers on the VRM
        are gone (they still count against the host's 8), then those leftovers are removed, and a CBT
        snapshot it took broke the chain of the VM's disks. Returns why a leftover is still there ("": none)."""
        from ..jobs.cleanup import cleanup_intents
        name = str(record.get("name") or vm_urn)
        owners = [f"{job_id}/{name}"] + [f"{job_id}/{d.get('volume')}" for d in record.get("disks") or []]
        tickets: list[Any] = []
        for owner in owners:
            tickets += await self.scheduler.adopt(owner)
        try:
            pending = [dict(i) for i in journal.pending()]
            cbt = any(i.get("what") == "snapshot" and i.get("snapshot_type") == "CBTbackup" for i in pending)
            failed = await cleanup_intents(self.client, pending, journal.done,
                                           within=self.settings.cleanup_budget_s)
            for intent, why in failed:
                journal.update(intent["key"], last_error=why)
            if cbt:
                reason = f"job {job_id}: the proxy backing up {name} died after its CBT snapshot"
                for d in record.get("disks") or []:
                    if d.get("mode") != "excluded":
                        journal.mark_chain(str(d.get("volume")), reason)
            flush = getattr(journal, "flush", None)
            if flush is not None:
                await flush()
            done = len(pending) - len(failed)
            message = (f"{name}: removed {done} leftover(s) of the proxy that died"
                       + (f" (its {len(tickets)} slot(s) adopted meanwhile)" if tickets else "")
                       + (f"; {len(failed)} could not be removed yet: {failed[0][1]}" if failed else "")
                       + ("; its CBT chain is broken: this backup is full" if cbt else ""))
            log.info("job %s: %s", job_id, message)
            await self._log_vm(job_id, vm_urn, journal, message, "warning" if failed else "info")
            return failed[0][1] if failed else ""
        finally:
            for t in tickets:
                self.scheduler.release(t)

    async def _backup(self, job_id: str, vm_urn: str, header: dict[str, Any], journal: Any) -> str:
        from ..jobs.planner import add_launch_findings, build_plan
        from ..jobs.runner import BackupRunner, Reporter
        job = JobRecord.from_dict({k: v for k, v in header.items() if k not in ("vms", "log")})
        job.log = []
        settings = (dataclasses.replace(self.settings, host_snapshot_gate=True)
                    if header.get("host_snapshot_gate") else self.settings)
        plan = await build_plan(self.client, [vm_urn], self.repo, full=job.full,
                                chain_marks=await self.jobs.chain_marks(), full_vms=job.full_vms)
        await self.scheduler.refresh_counts()
        pool = self.scheduler.pool
        add_launch_findings(plan, host_connections=pool.hosts, datastore_volumes=pool.datastores,
                            per_host=pool.per_host, per_datastore=pool.per_datastore, repo=self.repo)
        BackupRunner.progress_from_plan(job, plan)
        vm = job.vm(vm_urn)
        if vm is None:   # the VRM no longer knows it by that URN
            why = plan.unresolved[0][1] if plan.unresolved else "not found"
            return await self._final(job_id, vm_urn, journal, "refused", why, "warning")
        writer = _RecordWriter(self, job_id, vm_urn, job, vm, journal)
        if not plan.runnable:
            writer.log(f"{vm.name}: refused: {vm.reason}", "warning")
            await writer.close()
            return "ack"
        vp = plan.runnable[0]
        reporter = Reporter(job, writer.on_event, interval=self.settings.progress_interval,
                            on_state=writer.on_state)
        runner = BackupRunner(self.client, self.repo, scheduler=self.scheduler, journal=journal, settings=settings,
                              vrm=self.vrm, user=self.user)
        writer.log(f"{vm.name}: backed up by proxy {self.agent_id}")
        try:
            await runner.run_vm(job, vp, vm, reporter)
        finally:
            runner.close()
            await asyncio.shield(writer.close())
        if job.restore_points or job.warnings:
            points, warnings = list(job.restore_points), list(job.warnings)

            def add(h: dict[str, Any]) -> dict[str, Any]:
                h["restore_points"] = [*h.get("restore_points", []), *points]
                h["warnings"] = [*h.get("warnings", []), *warnings]
                return h
            await self.jobs.update_header(job_id, add)
        return "ack"

    async def _final(self, job_id: str, vm_urn: str, journal: Any, state: str, reason: str, level: str) -> str:
        record, _ = await self._record(job_id, vm_urn)
        record = record or {"urn": vm_urn}
        record.update(state=state, reason=reason, intents=_intents_of(journal, record))
        for d in record.get("disks") or []:
            if d.get("state") in ("waiting", "reading"):
                d["state"] = "cancelled" if state == "cancelled" else "failed"
        self._add_log(record, f"{record.get('name') or vm_urn}: {state}: {reason}", level)
        await self.jobs.put_vm(job_id, record)
        return "ack"

    async def _requeue(self, job_id: str, vm_urn: str, journal: Any, name: str) -> None:
        """This proxy stops: the VM's record back to queued (its cleanup is done), for the next proxy."""
        record, _ = await self._record(job_id, vm_urn)
        if record is None or record.get("state") in FINAL_VM_STATES - {"cancelled"}:
            return
        record.update(state="queued", reason="", agent="", intents=_intents_of(journal, record))
        self._add_log(record, f"{name}: proxy {self.agent_id} stopped: back in the queue", "warning")
        await self.jobs.put_vm(job_id, record)

    async def _log_vm(self, job_id: str, vm_urn: str, journal: Any, message: str, level: str) -> None:
        record, _ = await self._record(job_id, vm_urn)
        if record is None:
            return
        record["intents"] = _intents_of(journal, record)
        self._add_log(record, message, level)
        await self.jobs.put_vm(job_id, record)

    # --- cancel ---------------------------------------------------------------------------------------

    async def _follow_cancels(self) -> None:
        """A cancel flag in a header cancels this proxy's VMs of that job (the engine cleans up)."""
        while True:
            await asyncio.sleep(0.25)
            for job_id in sorted({w.job_id for w in self.working.values()}):
                try:
                    header = await self._header(job_id)
                except Exception:
                    continue
                if header is None or not header.get("cancel"):
                    continue
                for w in list(self.working.values()):
                    if w.job_id == job_id and not w.why:
                        w.why = "cancel"
                        w.task.cancel()

    # --- the sweep of leftovers --------------------------------------------------------------------

    async def _sweep(self) -> None:
        """Leftovers of final VMs (a release or delete the VRM refused at the time) are tried again
        every hunt interval, as the local agent's snapshot hunter does."""
        while True:
            await asyncio.sleep(self.settings.hunt_interval_s)
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("leftover sweep failed: %s", e)

    async def sweep_once(self) -> int:
        """One round: returns how many leftovers were removed."""
        import nats.js.errors
        from ..jobs.cleanup import cleanup_intents
        try:
            keys = await self.cluster.jobs_kv.keys(filters=["vm.>"])
        except nats.js.errors.NoKeysError:
            return 0
        removed = 0
        for key in keys:
            try:
                entry = await self.cluster.jobs_kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                continue
            record = _loads(entry.value)
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
                self._add_log(record, f"{record.get('name') or record.get('urn')}: removed {len(cleaned)} "
                                      f"leftover(s) on the VRM (proxy {self.agent_id})")
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await self.cluster.jobs_kv.update(key, _dumps(record), last=entry.revision)
        return removed


def _intents_of(journal: Any, record: dict[str, Any]) -> dict[str, Any]:
    """The journal's pending intents as the record keeps them ({key: intent})."""
    out: dict[str, Any] = {}
    for i in journal.pending():
        i = dict(i)
        out[str(i.pop("key"))] = i
    return out


class _RecordWriter:
    """Writes a running VM's record: at once on a state change, at most every progress interval for
    progress, always with the journal's current intents."""

    def __init__(self, agent: ClusterAgent, job_id: str, vm_urn: str, job: JobRecord, vm: VmProgress,
                 journal: Any) -> None:
        self.agent = agent
        self.job_id, self.vm_urn = job_id, vm_urn
        self.job, self.vm, self.journal = job, vm, journal
        self.interval = agent.cluster_settings.progress_interval_s
        self._dirty = asyncio.Event()
        self._urgent = False
        self._last = 0.0
        self._task = asyncio.create_task(self._loop())

    def on_state(self, job: JobRecord) -> None:
        self._urgent = True
        self._dirty.set()

    def on_event(self, ev: dict[str, Any]) -> None:
        if ev.get("event") in ("progress", "log"):
            self._dirty.set()

    def log(self, message: str, level: str = "info") -> None:
        self.job.add_log(message, level)
        self._dirty.set()

    def record(self) -> dict[str, Any]:
        progress = dataclasses.asdict(self.vm)
        if self.agent._why(self.job_id, self.vm_urn) == "stop" and progress["state"] == "cancelled":
            # this proxy stops, the user did not cancel: the VM goes back to the queue, never "cancelled"
            progress.update(state="queued", reason="")
        return {**progress, "agent": self.agent.agent_id,
                "intents": _intents_of(self.journal, {}),
                "log": self.job.log[-VM_LOG_LIMIT:]}

    async def _write(self) -> None:
        current, _ = await self.agent._record(self.job_id, self.vm_urn)
        current = current or {}
        rec = {**self.record(), **{k: v for k, v in current.items() if k in ("attempt", "item")}}
        # lines written before this run (planning, a takeover) stay; the run's own follow
        mine = {(e.get("time"), e.get("message")) for e in rec["log"]}
        before = [e for e in current.get("log", []) if (e.get("time"), e.get("message")) not in mine]
        rec["log"] = (before + rec["log"])[-VM_LOG_LIMIT:]
        await self.agent.jobs.put_vm(self.job_id, rec)

    async def _loop(self) -> None:
        while True:
            await self._dirty.wait()
            if not self._urgent:
                wait = self._last + self.interval - time.monotonic()
                if wait > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wait_urgent(), wait)
            self._dirty.clear()
            self._urgent = False
            self._last = time.monotonic()
            try:
                await self._write()
            except Exception as e:
                log.warning("writing the record of %s failed: %s", self.vm_urn, e)

    async def _wait_urgent(self) -> None:
        while not self._urgent:
            self._dirty.clear()
            await self._dirty.wait()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._write()
