"""The job agent process: runs backup and restore jobs so they outlive the console and the SSH session.

The socket protocol is described in :mod:`fctui.agent.protocol`; ``fctui agent`` (fctui/cli/agent.py) starts it.
Job state is persisted in tinydb through fctui.store (atomic writes, one writer: the agent holds a
WriterLock). Passwords live only in memory: for as long as a job of that VRM runs, and after it as long
as the journal holds leftovers (snapshots, backup resources) on that VRM.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..jobs.model import JobError, JobRecord
from ..jobs.runner import RunnerSettings
from ..store import WriterLock, state_dir
from .protocol import DEMO_PASSWORD, DEMO_USER, MAX_LINE, AgentError, socket_path

if TYPE_CHECKING:  # pragma: no cover
    from .service import PolicyService

log = logging.getLogger("fctui.agent")


# What a submit or credentials request may say about the VRM connection besides vrm, user and password
# (the CLI's Connection.client_options and the console's ConnectSpec.client_options send these fields).
CLIENT_FIELDS = ("user_type", "proxy_ip", "cbt_bitmap")


def client_access(req: dict[str, Any]) -> dict[str, Any]:
    """The VrmClient keyword arguments of a request: ``verify`` and the :data:`CLIENT_FIELDS` it gives
    (absent or null: the client's defaults), checked here so a bad value is refused when submitted."""
    from ..vrm import VrmError
    from ..vrm.models import CBT_BITMAP_ORDERS
    from ..vrm.requester import check_ip
    access: dict[str, Any] = {"verify": req.get("verify", True)}
    user_type, proxy_ip, bitmap = (req.get(k) for k in CLIENT_FIELDS)
    if user_type is not None:
        if isinstance(user_type, bool) or str(user_type) not in ("0", "2"):
            raise AgentError(f"user_type must be 0 or 2, got {user_type!r}")
        access["user_type"] = int(user_type)
    if proxy_ip is not None and proxy_ip != "":
        try:
            access["proxy_ip"] = check_ip(str(proxy_ip))
        except VrmError as e:
            raise AgentError(str(e)) from None
    if bitmap is not None:
        if bitmap not in CBT_BITMAP_ORDERS:
            raise AgentError(f"cbt_bitmap must be one of {', '.join(CBT_BITMAP_ORDERS)}, got {bitmap!r}")
        access["cbt_bitmap"] = bitmap
    return access


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


class Agent:
    def __init__(self, *, repo_path: str | Path | None = None, demo: bool = False,
                 settings: RunnerSettings | None = None, per_host: int = 8, per_datastore: int = 8,
                 global_limit: int = 16, demo_vms: int = 60, demo_time_scale: float = 1.0,
                 idle_exit_s: float | None = None) -> None:
        from ..jobs.journal import JobStore
        from ..jobs.scheduler import Scheduler
        self.state_dir = state_dir()
        self.lock = WriterLock(self.state_dir / "jobs.lock", purpose="job agent")
        self.lock.acquire()  # one agent per user: a second one fails here with a clear error
        self.store = JobStore(self.state_dir / "jobs.json")
        self.repo_path = repo_path
        self._repo: Any = None
        self.settings = settings or RunnerSettings()
        self.scheduler = Scheduler(per_host=per_host, per_datastore=per_datastore, global_limit=global_limit)
        self.demo_wanted = demo
        self.demo_vms = demo_vms
        self.demo_time_scale = demo_time_scale
        self.demo_sim: Any = None
        self.tasks: dict[str, asyncio.Task] = {}
        self.live: dict[str, JobRecord] = {}
        self.busy_vms: dict[str, str] = {}  # VM URN -> job id
        self.watchers: list[tuple[str | None, asyncio.Queue]] = []
        self.cleanup_errors: dict[int, str] = {}
        from ..jobs.cleanup import SnapshotHunter
        self.hunter = SnapshotHunter(leftovers=self._leftovers, sweep=self._cleanup_for,
                                     interval=self.settings.hunt_interval_s,
                                     max_interval=self.settings.hunt_max_interval_s, on_change=self._cleanup_changed,
                                     close=self._close_client)
        self._hunting: asyncio.Task | None = None
        self.server: asyncio.AbstractServer | None = None
        self.stopping = asyncio.Event()
        self.path = socket_path()
        # Started on demand, so it also goes away on its own: after this long with no job running, no
        # client watching and no request (None: never). A console keeps a watch open while it runs.
        self.idle_exit_s = idle_exit_s
        self.last_activity = time.monotonic()
        # Runs protection policies unattended (``fctui agent --service``); None: jobs only when asked.
        self.service: PolicyService | None = None
        self._serving: asyncio.Task | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def repo(self) -> Any:
        if self._repo is None:
            from ..repo import Repository
            self._repo = Repository.open(self.repo_path)
        return self._repo

    def recover(self) -> None:
        """After a crash: running jobs -> interrupted; demo leftovers died with their simulator."""
        for job in self.store.mark_interrupted():
            log.warning("job %s was interrupted", job.id)
            if job.is_recovery:
                self._interrupted_run(job)
            for vm in job.vms:  # its CBT snapshot consumed a chgID: those disks' next backup is full
                if vm.kind == "cbt" and vm.snapshot_urn and not vm.point_id:
                    for d in vm.disks:
                        if d.mode != "excluded":
                            self.store.mark_chain(d.volume, f"job {job.id} was interrupted (the agent stopped)")
        self.store.prune_history()
        demo_jobs = {j.id for j in self.store.all_jobs() if j.demo}
        for intent in self.store.pending():
            if intent.get("job") in demo_jobs:
                self.store.done(intent["key"])  # its VRM was the previous agent's embedded simulator

    @staticmethod
    def _interrupted_run(job: JobRecord) -> None:
        """The recovery run of a job the previous agent left running ends ``failed``: what it created is
        still journaled, and the cleanup queue removes it once it has that VRM's password."""
        from ..jobs.dr import DrError, DrStore
        try:
            store = DrStore()
            for run in store.runs(job.targets[0] if job.targets else None, limit=0):
                if run.job_id == job.id and run.state == "running":
                    run.state, run.finished = "failed", time.time()
                    run.error = "interrupted: the job agent stopped while it ran"
                    for v in run.vms:
                        if v.state not in ("running", "failed", "no-point"):
                            v.state, v.error = "failed", "interrupted"
                    if run.cleanup == "pending":
                        run.cleanup_error = "what it created is in the agent's cleanup queue (fctui jobs)"
                    store.save_run(run)
        except DrError as e:
            log.warning("recovery run of job %s not updated: %s", job.id, e)

    def start_demo(self, vms: int | None = None) -> dict[str, Any]:
        """Start the embedded simulator (once; ``vms`` only matters for the first start)."""
        if self.demo_sim is None:
            if vms is not None:
                self.demo_vms = int(vms)
            from ..sim import EmbeddedSimulator, demo_config
            self.demo_sim = EmbeddedSimulator(demo_config(vms=self.demo_vms, user=DEMO_USER, password=DEMO_PASSWORD,
                                                          time_scale=self.demo_time_scale)).start()
        return {"url": self.demo_sim.url, "user": DEMO_USER, "password": DEMO_PASSWORD}

    async def serve(self) -> None:
        self.recover()
        if self.demo_wanted:
            self.start_demo()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # stale: we hold the writer lock, so no other agent serves it
        old = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self.handle, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        log.info("agent %d serving %s", os.getpid(), self.path)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self.stopping.set)
        with contextlib.suppress(Exception):
            loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the terminal went away: keep working
        idle = asyncio.create_task(self._exit_when_idle()) if self.idle_exit_s else None
        self._hunting = asyncio.create_task(self.hunter.run(), name="snapshot-hunter")
        if self.service is not None:
            self._serving = asyncio.create_task(self.service.run(), name="policy-service")
        try:
            await self.stopping.wait()
        finally:
            if idle is not None:
                idle.cancel()
            await self.shutdown()

    def is_idle(self) -> bool:
        # holding a password means leftovers to remove: exiting would leave them for a manual cleanup;
        # a policy service is never idle (its next run is always ahead)
        return not self.tasks and not self.watchers and not self.hunter.openers and self.service is None

    async def _exit_when_idle(self) -> None:
        assert self.idle_exit_s
        while not self.stopping.is_set():
            await asyncio.sleep(min(5.0, self.idle_exit_s / 4))
            if not self.is_idle():
                self.last_activity = time.monotonic()
            elif time.monotonic() - self.last_activity >= self.idle_exit_s:
                log.info("agent idle for %.0f s: exiting", self.idle_exit_s)
                self.stopping.set()

    async def shutdown(self) -> None:
        if self.server is not None:
            self.server.close()
        if self._hunting is not None:
            self._hunting.cancel()
            await asyncio.gather(self._hunting, return_exceptions=True)
        if self._serving is not None:
            self._serving.cancel()
            await asyncio.gather(self._serving, return_exceptions=True)
        if self.service is not None:
            await self.service.stop()
        for t in list(self.tasks.values()):
            t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self.demo_sim is not None:
            with contextlib.suppress(Exception):
                self.demo_sim.stop()
        self.store.close()
        self.lock.release()

    # --- events -------------------------------------------------------------------------------------

    def broadcast(self, ev: dict[str, Any]) -> None:
        job_id = ev.get("job") if isinstance(ev.get("job"), str) else (ev.get("job") or {}).get("id")
        for want, q in list(self.watchers):
            if want is not None and want != job_id:
                continue
            try:
                q.put_nowait(ev)
            except asyncio.QueueFull:
                if ev.get("event") != "progress":  # progress is droppable, state is not
                    with contextlib.suppress(asyncio.QueueEmpty):
                        q.get_nowait()
                    with contextlib.suppress(asyncio.QueueFull):
                        q.put_nowait(ev)

    # --- jobs ---------------------------------------------------------------------------------------

    def submit(self, req: dict[str, Any]) -> JobRecord:
        targets = [str(t) for t in req.get("targets") or [] if str(t).strip()]
        if not targets:
            raise AgentError("no VM given: name at least one VM (name or URN)")
        demo = bool(req.get("demo"))
        if demo:
            d = self.start_demo()
            vrm, user, password = d["url"], d["user"], d["password"]
        else:
            vrm, user, password = str(req.get("vrm") or ""), str(req.get("user") or ""), req.get("password")
            if not vrm or not user or not isinstance(password, str):
                raise AgentError("submit needs vrm, user and password (or demo)")
        access = client_access(req)   # the password stays in memory only, as verify and these settings
        window = None
        if req.get("business_hours"):
            from ..rules.launch import BusinessHours, BusinessHoursError
            try:
                window = BusinessHours.parse(str(req["business_hours"]))
            except BusinessHoursError as e:
                raise AgentError(str(e)) from None
        kind = str(req.get("type") or "backup")
        if kind not in ("backup", "restore", "rehearsal", "failover"):
            raise AgentError(f"unknown job type {kind!r} (backup, restore, rehearsal or failover)")
        if kind in ("rehearsal", "failover"):
            return self.submit_recovery(kind, req, vrm=vrm, user=user, password=password, access=access, demo=demo)
        if kind == "backup":
            # `fctui policy run NAME`, the console's run now: that policy's retention is applied after
            # the job (a name no policy has any more is said in the job's log then)
            policy = str(req.get("policy") or "")
            return self.submit_backup(targets, vrm=vrm, user=user, password=password, access=access,
                                      demo=demo, full=bool(req.get("full")), window=window,
                                      host_snapshot_gate=bool(req.get("host_snapshot_gate")), policy=policy)
        from ..jobs.restore import RestoreRequest
        restore_req = RestoreRequest.from_json(req.get("restore") or {})  # RestoreError is a JobError
        job = JobRecord(id=new_job_id(), type=kind, vrm=vrm, user=user, demo=demo, targets=targets,
                        full=bool(req.get("full")))
        job.add_log(f"{kind} submitted: {', '.join(targets)}" + (" (--full)" if job.full else ""))
        self.store.save_job(job)
        self.live[job.id] = job
        self.tasks[job.id] = asyncio.create_task(self._run_restore(job, password, access, restore_req),
                                                 name=f"job-{job.id}")
        return job

    def submit_backup(self, targets: list[str], *, vrm: str, user: str, password: str, access: dict[str, Any],
                      demo: bool = False, full: bool = False, window: Any = None, host_snapshot_gate: bool = False,
                      policy: str = "", full_vms: dict[str, str] | None = None,
                      start_by: Callable[[], str] | None = None) -> JobRecord:
        """A backup job, the password in memory only (a client's submit, or the policy service's run).
        ``policy``: the policy whose run it is (its retention is applied after the job); ``full_vms``:
        VM URN -> why it is read fully; ``start_by``: asked when a VM's turn comes, a non-empty answer
        is why it is not started (a policy window that closed)."""
        job = JobRecord(id=new_job_id(), type="backup", vrm=vrm, user=user, demo=demo, targets=list(targets),
                        full=full, policy=policy, full_vms=dict(full_vms or {}))
        job.add_log(f"backup submitted: {', '.join(targets)}" + (" (--full)" if job.full else "")
                    + (f" (policy {policy})" if policy else ""))
        self.store.save_job(job)
        self.live[job.id] = job
        # a VRM that refuses a CBT snapshot while any resource is prepared on the host (README Compatibility)
        settings = dataclasses.replace(self.settings, host_snapshot_gate=True) if host_snapshot_gate else self.settings
        self.tasks[job.id] = asyncio.create_task(self._run_job(job, password, access, window, settings, start_by),
                                                 name=f"job-{job.id}")
        return job

    def submit_recovery(self, kind: str, req: dict[str, Any], *, vrm: str, user: str, password: str,
                        access: dict[str, Any], demo: bool = False) -> JobRecord:
        """A rehearsal or failover of a recovery plan (``req["dr"]``: ``{"plan", "keep"}``) into the VRM
        of the submit (the plan's target site; its password in memory only)."""
        from ..jobs.dr import DrError, DrStore
        from ..jobs.drrun import new_run
        dr = req.get("dr") or {}
        if not isinstance(dr, dict) or not isinstance(dr.get("plan"), str) or not dr["plan"]:
            raise AgentError(f"a {kind} needs dr.plan (the recovery plan's name)")
        try:
            store = DrStore()
            plan = store.plan(dr["plan"])
            run = new_run(plan, kind)
        except DrError as e:
            raise AgentError(str(e)) from None
        busy = [other for other in self.live.values() if not other.is_final and other.is_recovery
                and other.targets == [plan.name]]
        if busy:
            raise AgentError(f"plan {plan.name} is being run by job {busy[0].id} already")
        job = JobRecord(id=new_job_id(), type=kind, vrm=vrm, user=user, demo=demo, targets=[plan.name])
        run.job_id = job.id
        keep = bool(dr.get("keep")) and kind == "rehearsal"
        verify = kind == "failover" or dr.get("verify", True) is not False   # a failover is always read back
        job.add_log(f"{kind} of recovery plan {plan.name} submitted (run {run.id}" + (", --keep" if keep else "")
                    + ("" if verify else ", restored disks not read back") + ")")
        self.store.save_job(job)
        try:
            store.save_run(run)
        except DrError as e:
            raise AgentError(str(e)) from None
        self.live[job.id] = job
        self.tasks[job.id] = asyncio.create_task(self._run_recovery(job, password, access, store, plan, run, keep,
                                                                   verify),
                                                 name=f"job-{job.id}")
        return job

    async def _run_recovery(self, job: JobRecord, password: str, access: dict[str, Any], store: Any, plan: Any,
                            run: Any, keep: bool, verify: bool = True) -> None:
        """A recovery run under the agent's guarantees: persisted job and run (the console polls the run
        in the DrStore), live events, cancel -> the run's clean-up, creations journaled in the job store."""
        from ..jobs.drrun import RecoverySettings, run_recovery, vm_recovery_text
        from ..jobs.model import VmProgress
        from ..jobs.runner import Reporter
        from ..vrm.urn import site_id
        reporter = Reporter(job, self.broadcast, interval=self.settings.progress_interval,
                            on_state=self.store.save_job)
        vm_states = {"waiting": "waiting", "restoring": "reading", "restored": "waiting", "booting": "cleanup",
                     "running": "done", "failed": "failed", "no-point": "refused"}

        def changed(r: Any) -> None:
            job.vms = [VmProgress(urn=v.vm_urn, name=v.vm_name, state=vm_states.get(v.state, "waiting"),
                                  point_id=v.point_id or None, reason=vm_recovery_text(v)) for v in r.vms]
            try:
                store.save_run(r)
            except Exception:
                log.exception("could not save recovery run %s", r.id)
            self.broadcast({"event": "dr", "job": job.id, "run": r.to_dict()})
            reporter.state()

        client = None
        try:
            job.state, job.started = "running", time.time()
            changed(run)
            try:
                client = await self._client(job.vrm, job.user, password, access)
            except Exception as e:
                raise JobError(f"cannot log in to {job.vrm}: {e}") from None
            await self._cleanup_for(client, job.vrm, reporter)
            mapping = None
            try:
                from ..jobs.sitemap import SiteMappingStore
                sites = await client.sites()
                if sites and plan.vms:
                    mapping = SiteMappingStore().get(site_id(plan.vms[0]), site_id(sites[0].urn))
            except Exception as e:  # no remembered mapping: the plan's own, else the restore's defaults
                reporter.log(f"the site pair's mapping could not be read: {e}", "warning")
            # the Tools poll follows the agent's watch period (2 s; tests run the agent quicker)
            settings = RecoverySettings(tools_poll_s=min(5.0, self.settings.watch_interval))
            settings.restore.verify = verify
            await run_recovery(client, self.repo(), plan, run, mapping=mapping, journal=self.store, job=job,
                               on_change=changed, log_line=lambda m, lvl: reporter.log(m, lvl), keep=keep,
                               settings=settings)
            job.state = {"succeeded": "succeeded", "cancelled": "cancelled"}.get(run.state, "failed")
            job.error = run.error if job.state == "failed" else ""
            job.finished = time.time()
            reporter.state()
        except asyncio.CancelledError:
            self._record_cancelled(job, reporter)
        except Exception as e:
            if run.state == "running":
                run.state, run.error, run.finished = "failed", str(e), time.time()
                changed(run)
            self._record_failed(job, reporter, e, f"{job.type} job")
        finally:
            if client is not None:
                await self._close_client(client)
            self._finish(job)
            self._hand_to_hunter(job.vrm, job.user, password, access)

    def _policy_named(self, name: str) -> Any:
        """The stored policy of that name (the service's store when one runs); AgentError if none."""
        from ..jobs.policy import PolicyError
        from ..jobs.policystore import PolicyStore
        store = self.service.store if self.service is not None else PolicyStore()
        try:
            return store.get(name)
        except PolicyError as e:
            raise AgentError(str(e)) from None

    async def _apply_retention(self, job: JobRecord, reporter: Any) -> None:
        """After a policy's job: that policy's retention on the VMs it backed up, then one gc (both
        on a worker thread: they read and delete files)."""
        from .service import apply_retention
        urns = [vm.urn for vm in job.vms if vm.point_id]
        if not urns:
            return
        try:
            policy = self._policy_named(job.policy)
        except AgentError as e:
            reporter.log(f"retention not applied: {e}", "warning")
            return
        tz = self.service.tz if self.service is not None else None
        try:
            lines = await asyncio.to_thread(apply_retention, self.repo(), policy.retention, urns, tz=tz)
        except Exception as e:  # the backups are good: a failed prune is the job's warning, not its failure
            log.exception("retention of policy %s after job %s failed", job.policy, job.id)
            job.warnings.append(f"retention of policy {job.policy} not applied: {e}")
            reporter.log(f"retention of policy {job.policy} not applied: {e}", "warning")
            return
        for line in lines:
            reporter.log(line)

    async def _run_restore(self, job: JobRecord, password: str, access: dict[str, Any], request: Any) -> None:
        """A restore job (issue 7's engine) under the same agent guarantees: persisted, watchable,
        cancellable, journaled."""
        from ..jobs.restore import plan_restore, run_restore
        from ..jobs.runner import Reporter
        reporter = Reporter(job, self.broadcast, interval=self.settings.progress_interval,
                            on_state=self.store.save_job)
        client = None
        mine = ""
        try:
            job.state, job.started = "running", time.time()
            reporter.state()
            try:
                client = await self._client(job.vrm, job.user, password, access)
            except Exception as e:
                raise JobError(f"cannot log in to {job.vrm}: {e}") from None
            await self._cleanup_for(client, job.vrm, reporter)
            plan = await plan_restore(client, self.repo(), request)
            if plan.request.target == "original":  # never overwrite a VM one of our backups is reading
                other = self.busy_vms.get(plan.vm_urn)
                if other is not None:
                    raise JobError(f"{plan.vm_name} is being backed up by job {other}: restore it afterwards")
                self.busy_vms[plan.vm_urn] = job.id
                mine = plan.vm_urn
            await run_restore(client, self.repo(), plan, reporter=reporter, job=job, journal=self.store)
        except asyncio.CancelledError:
            self._record_cancelled(job, reporter)
        except Exception as e:
            self._record_failed(job, reporter, e, "restore job")
        finally:
            if mine:
                self.busy_vms.pop(mine, None)
            if client is not None:
                await self._close_client(client)
            self._finish(job)
            self._hand_to_hunter(job.vrm, job.user, password, access)

    async def _client(self, vrm: str, user: str, password: str, access: dict[str, Any]) -> Any:
        """A logged-in client (``access``: :func:`client_access`); whoever gets one ends its session with
        :meth:`_close_client`."""
        from ..vrm import VrmClient
        return await VrmClient.open_session(vrm, user, password, **access)

    @staticmethod
    async def _close_client(client: Any) -> None:
        """Log out and close: a session left open counts against the VRM's per-user cap until it idles
        out (bounded: a lost VRM costs at most the client's logout timeout)."""
        with contextlib.suppress(Exception):
            await client.close()

    def _finish(self, job: JobRecord) -> None:
        """A job's end: persisted if the state disk takes it, and always off the running list with its
        watchers told (a full disk must not leave a job "running" in the agent forever)."""
        try:
            self.store.save_job(job)
        except Exception:
            log.exception("could not persist the end of job %s", job.id)
        self.tasks.pop(job.id, None)
        self.broadcast({"event": "end", "job": job.id, "state": job.state})

    def _leftovers(self, vrm: str | None = None) -> list[dict[str, Any]]:
        """Journal intents no running job owns: what is left on the VRM(s) to remove."""
        return [i for i in self.store.pending(vrm) if i.get("job") not in self.tasks or
                self.live.get(i.get("job", "")) is None or self.live[i["job"]].is_final]

    async def _cleanup_for(self, client: Any, vrm: str, reporter: Any = None) -> tuple[int, list[str]]:
        from ..jobs.cleanup import cleanup_intents
        pending = self._leftovers(vrm)
        if not pending:
            return 0, []
        from ..jobs.restore import RESTORE_INTENTS, cleanup_restore_intents
        jobs_of_restores = {i.get("job") for i in pending if i.get("what") in RESTORE_INTENTS}
        restore_side = [i for i in pending if i.get("job") in jobs_of_restores]
        failed = await cleanup_intents(client, [i for i in pending if i.get("job") not in jobs_of_restores],
                                       self.store.done, within=self.settings.cleanup_budget_s)
        failed += await cleanup_restore_intents(client, restore_side, self.store.done,
                                                within=self.settings.cleanup_within_s)
        for intent, why in failed:
            self.cleanup_errors[intent["key"]] = why
        done = len(pending) - len(failed)
        if done and reporter is not None:
            reporter.log(f"cleaned up {done} leftover(s) of interrupted jobs on {vrm}")
        # a CBT snapshot of an interrupted job consumed a chgID: its disks' next backup is full
        return done, [why for _, why in failed]

    # --- the snapshot hunter ------------------------------------------------------------------------

    def _hand_to_hunter(self, vrm: str, user: str, password: Any, access: dict[str, Any]) -> None:
        """After a job or a cleanup request: the snapshot hunter keeps a way to log in (the password
        in memory) only while that VRM has leftovers, and removes them without anyone running a command."""
        if isinstance(password, str):
            async def opener() -> Any:
                return await self._client(vrm, user, password, access)
            self.hunter.hold(vrm, user, opener)
        self._cleanup_changed()

    def _cleanup_changed(self) -> None:
        self.broadcast({"event": "cleanup", "pending": self.cleanup_status()["pending"]})

    async def _run_job(self, job: JobRecord, password: str, access: dict[str, Any], window: Any = None,
                       settings: RunnerSettings | None = None, start_by: Callable[[], str] | None = None) -> None:
        from ..jobs.planner import add_launch_findings, build_plan
        from ..jobs.runner import BackupRunner, Reporter
        reporter = Reporter(job, self.broadcast, interval=self.settings.progress_interval,
                            on_state=self.store.save_job)
        client = None
        runner = None
        mine: list[str] = []
        try:
            job.state = "running"
            job.started = time.time()
            reporter.state()
            try:
                client = await self._client(job.vrm, job.user, password, access)
            except Exception as e:
                raise JobError(f"cannot log in to {job.vrm}: {e}") from None
            await self._cleanup_for(client, job.vrm, reporter)
            plan = await build_plan(client, job.targets, self.repo(), full=job.full,
                                    chain_marks=self.store.chain_marks(), full_vms=job.full_vms)
            for vp in plan.runnable:
                other = self.busy_vms.get(vp.vm_urn)
                if other is not None:
                    vp.refused, vp.kind = True, None
                    vp.reason = f"already being backed up by job {other}"
                else:
                    self.busy_vms[vp.vm_urn] = job.id
                    mine.append(vp.vm_urn)
            add_launch_findings(plan, host_connections=self.scheduler.pool.hosts,
                                datastore_volumes=self.scheduler.pool.datastores, business_hours=window,
                                per_host=self.scheduler.pool.per_host,
                                per_datastore=self.scheduler.pool.per_datastore, repo=self.repo())
            runner = BackupRunner(client, self.repo(), scheduler=self.scheduler, journal=self.store,
                                  settings=settings or self.settings, vrm=job.vrm, user=job.user,
                                  start_by=start_by)
            await runner.run(job, plan, reporter)
        except asyncio.CancelledError:
            self._record_cancelled(job, reporter)
        except Exception as e:
            self._record_failed(job, reporter, e, "job")
        finally:
            for urn in mine:
                self.busy_vms.pop(urn, None)
            if runner is not None:
                runner.close()
            if client is not None:
                await self._close_client(client)
            if job.policy and job.state != "cancelled":
                await self._apply_retention(job, reporter)
            self._finish(job)
            self._hand_to_hunter(job.vrm, job.user, password, access)

    @staticmethod
    def _record_cancelled(job: JobRecord, reporter: Any) -> None:
        if not job.is_final:
            job.state, job.finished = "cancelled", time.time()
            reporter.log("job cancelled", "warning")
            reporter.state()

    @staticmethod
    def _record_failed(job: JobRecord, reporter: Any, e: Exception, what: str) -> None:
        """A JobError is the user's one-line story; anything else is a bug: logged with its traceback."""
        msg = str(e) if isinstance(e, JobError) else f"{type(e).__name__}: {e}"
        if not isinstance(e, JobError):
            log.exception("%s %s failed", what, job.id)
        job.state, job.error, job.finished = "failed", msg, time.time()
        reporter.log(f"job failed: {msg}", "error")
        reporter.state()

    def job_dict(self, job: JobRecord, with_log: bool = True) -> dict[str, Any]:
        d = job.to_dict()
        if not with_log:
            d.pop("log", None)
        return d

    def get_job(self, job_id: str) -> JobRecord:
        job = self.live.get(job_id) or self.store.job(job_id)
        if job is None:
            raise AgentError(f"no job {job_id!r}")
        return job

    def list_jobs(self) -> list[JobRecord]:
        jobs = {j.id: j for j in self.store.all_jobs()}
        jobs.update({k: v for k, v in self.live.items()})
        return sorted(jobs.values(), key=lambda j: j.created)

    def cleanup_status(self) -> dict[str, Any]:
        """The leftovers, each with why it is there (``error``) and whether the hunter works on it
        (``next_try``: when, epoch seconds; None: it needs credentials for that VRM)."""
        pending = []
        for i in self.store.pending():
            if i.get("job") in self.tasks:
                continue  # owned by a running job, not a leftover
            vrm = str(i.get("vrm") or "")
            why = self.hunter.login_errors.get(vrm) or self.cleanup_errors.get(i["key"]) or i.get("last_error") or ""
            pending.append({k: i.get(k) for k in ("key", "job", "vrm", "user", "what", "vm", "name",
                                                   "snapshot_urn", "volume_urn", "task_id", "time")}
                           | {"error": why, "next_try": self.hunter.next_try_of(vrm)})
        return {"pending": pending, "vrms": sorted({(p["vrm"], p["user"]) for p in pending})}

    # --- protocol -----------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.last_activity = time.monotonic()
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._send(writer, {"ok": False, "error": "request too long"})
                    return
                if not line:
                    return
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("not an object")
                except ValueError:
                    await self._send(writer, {"ok": False, "error": "requests are JSON objects, one per line"})
                    continue
                op = req.get("op")
                if op == "watch":
                    await self._watch(req, writer, reader)
                    return
                try:
                    resp = await self.dispatch(op, req)
                except JobError as e:
                    resp = {"ok": False, "error": e.message}
                except Exception as e:  # never let a request kill the agent
                    log.exception("request %r failed", op)
                    resp = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                await self._send(writer, resp)
                if op == "shutdown":
                    self.stopping.set()
                    return
        except (ConnectionError, BrokenPipeError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        writer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        await writer.drain()

    async def dispatch(self, op: Any, req: dict[str, Any]) -> dict[str, Any]:
        if op == "hello":
            demo = None
            if self.demo_sim is not None:
                demo = {"url": self.demo_sim.url, "user": DEMO_USER, "password": DEMO_PASSWORD}
            return {"ok": True, "pid": os.getpid(), "socket": str(self.path), "demo": demo,
                    "running": sorted(self.tasks)}
        if op == "demo":
            vms = req.get("vms")
            if vms is not None and (not isinstance(vms, int) or not 0 <= vms <= 100_000):
                raise AgentError("vms must be an integer 0..100000")
            return {"ok": True, **self.start_demo(vms)}
        if op == "submit":
            job = self.submit(req)
            return {"ok": True, "job": job.id}
        if op == "list":
            return {"ok": True, "jobs": [self.job_dict(j, with_log=False) for j in self.list_jobs()]}
        if op == "get":
            return {"ok": True, "job": self.job_dict(self.get_job(str(req.get("job"))))}
        if op == "cancel":
            job = self.get_job(str(req.get("job")))
            task = self.tasks.get(job.id)
            if task is None:
                return {"ok": False, "error": f"job {job.id} is {job.state}, not running"}
            task.cancel()
            return {"ok": True, "job": job.id}
        if op == "cleanup-status":
            return {"ok": True, **self.cleanup_status()}
        if op == "credentials":
            if req.get("demo"):  # the demo VRM is the agent's own simulator: the agent knows its password
                if self.demo_sim is None:  # no demo running: its leftovers died with the last one (recover)
                    return {"ok": True, "cleaned": 0, "failed": []}
                req = {**req, "vrm": self.demo_sim.url, "user": DEMO_USER, "password": DEMO_PASSWORD}
            vrm, user, password = str(req.get("vrm") or ""), str(req.get("user") or ""), req.get("password")
            if not vrm or not user or not isinstance(password, str):
                raise AgentError("credentials needs vrm, user and password")
            from ..vrm import VrmError
            access = client_access(req)
            try:
                client = await self._client(vrm, user, password, access)
            except VrmError as e:
                raise AgentError(f"cannot log in to {vrm}: {e}") from None
            try:
                done, failed = await self._cleanup_for(client, vrm)
            finally:
                await self._close_client(client)
            self._hand_to_hunter(vrm, user, password, access)  # if anything is left
            return {"ok": True, "cleaned": done, "failed": failed}
        if op == "policy_runs":
            return {"ok": True, **self.policy_runs(req)}
        if op == "run_policy":
            return {"ok": True, "run": await self.run_policy(req)}
        if op == "shutdown":
            return {"ok": True}
        raise AgentError(f"unknown op {op!r}")

    # --- protection policies (the runs live in the job store; the service is fctui.agent.service) ---------

    def policy_runs(self, req: dict[str, Any]) -> dict[str, Any]:
        """The recorded runs (oldest first; of ``policy`` or all; ``limit``: the newest ones) and the policy
        service's status (None when this agent runs none: any agent answers from its job store)."""
        policy, limit = req.get("policy"), req.get("limit")
        if policy is not None and not isinstance(policy, str):
            raise AgentError(f"policy must be a policy name, got {policy!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise AgentError(f"limit must be a whole number >= 1, got {limit!r}")
        service = getattr(self, "service", None)
        return {"runs": [r.to_dict() for r in self.store.policy_runs_of(policy or None, limit)],
                "service": service.status() if service is not None else None}

    async def run_policy(self, req: dict[str, Any]) -> dict[str, Any]:
        """Run policy ``name`` now (the service's own path: its limits, its catch-up bookkeeping)."""
        service = getattr(self, "service", None)
        if service is None:
            raise AgentError("no policy service is running: start `fctui agent --service`")
        name = req.get("name")
        if not isinstance(name, str) or not name.strip():
            raise AgentError("run_policy needs the name of a policy")
        from ..jobs.policy import PolicyError
        try:
            run = await service.run_now(name)
        except PolicyError as e:
            raise AgentError(str(e)) from None
        return run.to_dict() if hasattr(run, "to_dict") else dict(run)

    async def _watch(self, req: dict[str, Any], writer: asyncio.StreamWriter,
                     reader: asyncio.StreamReader | None = None) -> None:
        want = req.get("job")
        q: asyncio.Queue = asyncio.Queue(maxsize=1000)
        entry = (str(want) if want else None, q)
        self.watchers.append(entry)
        try:
            if want:
                job = self.get_job(str(want))
                await self._send(writer, {"event": "job", "job": self.job_dict(job)})
                if job.is_final and job.id not in self.tasks:
                    await self._send(writer, {"event": "end", "job": job.id, "state": job.state})
                    return
            else:
                for job in self.list_jobs():
                    await self._send(writer, {"event": "job", "job": self.job_dict(job, with_log=False)})
                await self._send(writer, {"event": "cleanup", "pending": self.cleanup_status()["pending"]})
            # A watcher that went away (a closed console) must not wait for the next event to be noticed:
            # it would keep the agent from ever being idle.
            gone = asyncio.ensure_future(reader.read()) if reader is not None else asyncio.get_running_loop().create_future()
            try:
                while True:
                    nxt = asyncio.ensure_future(q.get())
                    await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
                    if not nxt.done():
                        nxt.cancel()
                        return
                    ev = nxt.result()
                    await self._send(writer, ev)
                    if want and ev.get("event") == "end" and ev.get("job") == want:
                        return
            finally:
                gone.cancel()
        except JobError as e:
            with contextlib.suppress(Exception):
                await self._send(writer, {"event": "error", "error": e.message})
        except (ConnectionError, BrokenPipeError):
            return
        finally:
            self.watchers.remove(entry)


def daemonize() -> None:
    """Classic double fork: the agent survives the terminal and the SSH session."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    logfd = os.open(str(state_dir() / "agent.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)
