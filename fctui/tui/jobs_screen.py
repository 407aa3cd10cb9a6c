"""Jobs in the console: the link to the job agent, the launch flow (plan -> review -> submit) and the jobs
screen (live progress of every job, history, cancel).

The agent runs the jobs (they outlive the TUI); :class:`JobsService` follows its event stream from app
start (so a reopened console reattaches to running jobs), folds the events into a
:class:`~fctui.jobs.progress.JobsBoard` and tells the screens something changed. The screen renders from
that model: a key press re-renders one job from memory, events are coalesced into at most a few paints a
second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, ClassVar

from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from rich.segment import Segment
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Footer, Static

from ..agent import AgentClient, AgentError, JobAgent, ensure_agent, job_client
from ..jobs.cleanup import describe_leftover
from ..jobs.model import FINAL_VM_STATES, JobError, JobRecord, VmProgress
from ..jobs.pause import PAUSE_WARN_S, PauseEstimate, PauseEstimator, PauseObservation
from ..jobs.planner import GIB, Plan, VmPlan
from ..jobs.progress import (ETA_MIN_FRACTION, JobFigures, JobsBoard, bar, disk_line_state, human_bytes, human_rate,
                             job_summary, sparkline)
from .dialogs import ConfirmScreen
from .names import disk_label, fit_name
from .review_screen import ReviewScreen

log = logging.getLogger(__name__)

MAX_LOG_LINES = 12          # log lines shown under a job (the record keeps up to 200)
RENDER_INTERVAL = 0.5       # s: agent events are coalesced into at most 2 paints a second
MAX_RETRY_S = 10.0
JOB_NOTICE_S = 6.0          # s a job's end is toasted on a screen that does not show the job

VmSize = Callable[[str], "tuple[int, float] | None"]   # VM URN -> (disks, GB) for the pause model


def _clock_str(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "--:--:--"


def _elapsed(s: float) -> str:
    s = max(0, int(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


STATE_STYLE = {"running": "bold cyan", "queued": "cyan", "succeeded": "green", "failed": "bold red",
               "cancelled": "yellow", "interrupted": "bold yellow", "done": "green", "reading": "cyan",
               "snapshot": "cyan", "waiting": "dim", "refused": "red", "cleanup": "cyan", "excluded": "magenta",
               "warnings": "bold yellow", "succeeded with warnings": "bold yellow"}


# --- the agent link ----------------------------------------------------------------------------------

class JobsService:
    """Follows the agent for one app: reattach at start, submit, cancel, end-of-job notifications.
    The agent is the local one, or the cluster the app's config names (``config.cluster``: --cluster,
    $FCTUI_CLUSTER or the config file, resolved by the CLI), which answers the same requests and events."""

    def __init__(self, app: App, *, agent: JobAgent | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, start_agent: bool = True,
                 vm_size: VmSize | None = None) -> None:
        self.app = app
        self.cluster: str | None = getattr(getattr(app, "config", None), "cluster", None)
        self.agent = agent or job_client(self.cluster)
        self.board = JobsBoard(clock)
        self.wall = wall
        self.start_agent = start_agent
        self.vm_size = vm_size or self._inventory_size
        self.connected = False
        self.error = ""
        self.listeners: list[Callable[[str | None], None]] = []
        self.notices: list[tuple[str, str]] = []   # (job id, summary) of jobs that ended while watched
        # leftovers queued in the agent (its snapshot hunter removes them), with why: cleanup-status rows
        self.cleanup: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._worker: Any = None

    # lifecycle
    def start(self) -> None:
        if self._worker is None:
            self._worker = self.app.run_worker(self._watch_loop(), group="jobs-watch", exit_on_error=False,
                                               name="jobs-watch", description="follow the job agent")

    def _changed(self, job_id: str | None) -> None:
        for fn in list(self.listeners):
            try:
                fn(job_id)
            except Exception:  # a closing screen must not stop the stream
                log.debug("jobs listener failed", exc_info=True)

    async def _watch_loop(self) -> None:
        try:
            await self._follow()
        finally:   # the app is closing: a cluster's connection is closed with it (the local agent's: none held)
            await self.agent.close()

    async def _follow(self) -> None:
        delay = 0.5
        while True:
            try:
                async for ev in self.agent.watch():
                    if not self.connected:
                        self.connected, self.error, delay = True, "", 0.5
                        self._changed(None)
                    self.apply_event(ev)
                self.error = "the job agent closed the stream"
            except AgentError as e:
                self.error = e.message
            except (OSError, ValueError) as e:
                self.error = f"job agent: {e}"
            if self.connected:
                self.connected = False
            self._changed(None)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
            delay = min(MAX_RETRY_S, delay * 2)

    def apply_event(self, ev: dict[str, Any]) -> None:
        """One event of the agent's stream: the jobs board, the cleanup queue, end-of-job notices."""
        if ev.get("event") == "cleanup":
            self.cleanup = [p for p in ev.get("pending") or [] if isinstance(p, dict)]
            self._changed(None)
            return
        job_id, notice = self.board.apply(ev)
        if notice is not None:
            self.notices.append((notice.job_id, notice.summary))
            ended = self.board.get(notice.job_id)
            warned = ended is not None and ended.outcome != ended.state
            sev = "information" if notice.state == "succeeded" and not warned else (
                "warning" if notice.state in ("cancelled", "succeeded") else "error")
            # A screen that shows this job's outcome and error in place gets no toast over it (at 80x24 a
            # toast covered the very error it announced); elsewhere a short one points to the jobs screen.
            shows = getattr(self.app.screen, "shows_job", None)
            if not (callable(shows) and shows(notice.job_id)):
                self.app.notify(f"{notice.summary} (J: jobs)", title=f"Job {notice.job_id} {notice.state}",
                                severity=sev, timeout=JOB_NOTICE_S)  # type: ignore[arg-type]
        if job_id is not None:
            self._changed(job_id)

    async def _agent(self, demo: bool = False) -> JobAgent:
        try:
            await self.agent.request("hello")
            return self.agent
        except AgentError:
            if not self.start_agent or not isinstance(self.agent, AgentClient):  # a cluster is not started here
                raise
        client = await ensure_agent(demo=demo)
        self.agent = client
        self._wake.set()
        return client

    # pause estimates learnt from the snapshots of earlier jobs (observed pause per host)
    def _inventory_size(self, vm_urn: str) -> tuple[int, float] | None:
        vm = getattr(self.app, "vms", {}).get(vm_urn)
        if vm is None:
            return None
        disks = [d for d in vm.disks if not d.indep_disk and d.persistent_disk and not d.is_shared]
        return len(disks), float(sum(d.quantity_gb or 0 for d in disks))

    def estimator(self) -> PauseEstimator:
        obs: list[PauseObservation] = []
        for job in self.board.jobs.values():
            for vm in job.vms:
                if vm.pause_s is None or not vm.host:
                    continue
                size = self.vm_size(vm.urn)
                if size is None:
                    continue
                obs.append(PauseObservation(vm.host, size[0], size[1], vm.pause_s, vm.urn, job.started or 0.0))
        return PauseEstimator(obs)

    def pause_of_progress(self, estimator: PauseEstimator) -> Callable[[VmProgress], PauseEstimate | None]:
        def pause(vm: VmProgress) -> PauseEstimate | None:
            size = self.vm_size(vm.urn)
            if size is None or not vm.host:
                return None
            return estimator.estimate(vm.host, size[0], size[1])
        return pause

    # requests
    async def submit_job(self, spec: Any, fields: dict[str, Any], *, job_options: bool = False) -> str:
        """Any job for the agent, on the VRM of ``spec``: its password goes with the request (in memory
        only), or nothing when that VRM is the agent's own simulator (it has the credentials).
        ``job_options``: a backup's runner settings for that VRM. Returns the job id."""
        if spec is None:
            raise JobError("not connected to a VRM")
        password = spec.password() if callable(spec.password) else spec.password
        agent = await self._agent()
        demo = (await agent.request("hello")).get("demo") or {}
        if demo and demo.get("url") == spec.url:
            fields = {**fields, "demo": True}
        else:
            fields = {**fields, "vrm": spec.url, "user": spec.user, "password": password, "verify": spec.verify,
                      **spec.client_options(), **(spec.job_options() if job_options else {})}
        resp = await agent.request("submit", **fields)
        self._wake.set()
        return str(resp["job"])

    async def submit(self, targets: list[str], *, full: bool = False, spec: Any = None,
                     business_hours: str | None = None, policy: str = "") -> str:
        """A backup job; ``policy``: the protection policy this job is a run of ("" : started by hand)."""
        fields: dict[str, Any] = {"targets": targets, "full": full}
        if business_hours:
            fields["business_hours"] = business_hours
        if policy:
            fields["policy"] = policy
        return await self.submit_job(spec, fields, job_options=True)

    async def submit_restore(self, request: dict[str, Any], *, spec: Any = None) -> str:
        """A restore job (``RestoreRequest.to_json()``) for the agent to run."""
        return await self.submit_job(spec, {"type": "restore", "restore": request,
                                            "targets": [str(request.get("point_id"))]})

    async def job_record(self, job_id: str) -> JobRecord:
        """The agent's full record of a job (with its log)."""
        return JobRecord.from_dict((await self.agent.request("get", job=job_id))["job"])

    async def cancel(self, job_id: str) -> None:
        await self.agent.request("cancel", job=job_id)


def jobs_service(app: App, **kw: Any) -> JobsService:
    """The app's JobsService, created and started on first use."""
    svc = getattr(app, "jobs", None)
    if not isinstance(svc, JobsService):
        svc = JobsService(app, **kw)
        app.jobs = svc  # type: ignore[attr-defined]
        hook = getattr(app, "jobs_changed", None)
        if callable(hook):  # the console: a running job's snapshots are not leftovers
            svc.listeners.append(hook)
        svc.start()
    return svc


# --- launch: plan -> review -> submit ---------------------------------------------------------------

def business_hours_text(app: Any) -> str | None:
    bh = getattr(getattr(app, "config", None), "business_hours", None)
    if bh is None:
        return None
    return f"{','.join(bh.days)} {bh.start}-{bh.end}"


def host_counts(board: JobsBoard, plan: Plan) -> dict[str, int]:
    """Backup sockets our running jobs hold per host (VMs in snapshot/reading/cleanup), by host URN."""
    by_name: dict[str, int] = {}
    for job in board.jobs.values():
        if job.is_final:
            continue
        for vm in job.vms:
            if vm.state in ("snapshot", "reading", "cleanup"):
                by_name[vm.host] = by_name.get(vm.host, 0) + 1
    out: dict[str, int] = {}
    for vp in plan.vms:
        n = by_name.get(vp.host_name, 0) or by_name.get(vp.host_urn, 0)
        if n:
            out[vp.host_urn] = n
    return out


def datastore_counts(board: JobsBoard, inventory: dict[str, Any]) -> dict[str, int]:
    """Volumes our running jobs are reading per datastore (target-volumes-busy), from the inventory's disks."""
    out: dict[str, int] = {}
    for job in board.jobs.values():
        if job.is_final:
            continue
        for vm in job.vms:
            inv = inventory.get(vm.urn)
            if inv is None:
                continue
            where = {d.volume_urn: d.datastore_urn for d in inv.disks}
            for d in vm.disks:
                ds = where.get(d.volume)
                if d.state == "reading" and ds:
                    out[ds] = out.get(ds, 0) + 1
    return out


async def make_plan(app: Any, targets: list[str], *, full: bool = False) -> Plan:
    """Plan a backup of ``targets`` through the console's VRM connection (read-only)."""
    from ..jobs.planner import add_launch_findings, build_plan
    from ..rules.launch import BusinessHours, BusinessHoursError
    from .repository import open_repository

    feed = target_feed(app, targets)
    if feed is None or getattr(feed, "client", None) is None:
        raise JobError("not connected to a VRM yet")
    window = None
    text = business_hours_text(app)
    if text:
        try:
            window = BusinessHours.parse(text)
        except BusinessHoursError:
            window = None
    svc = jobs_service(app)
    repo = await asyncio.to_thread(open_repository, create=True)
    try:
        plan = await app.feed_call(build_plan(feed.client, targets, repo, full=full), urn=targets[0] if targets else None)
        # off the event loop: the space finding reads the catalog and the filesystem
        await asyncio.to_thread(add_launch_findings, plan, host_connections=host_counts(svc.board, plan),
                                datastore_volumes=datastore_counts(svc.board, getattr(app, "vms", {})),
                                business_hours=window, repo=repo)
    finally:
        repo.close()
    return plan


def spec_for(app: Any, urn: str | None) -> Any:
    """The connection of the VRM ``urn`` lives on (the console's only one when it has one)."""
    spec_of = getattr(app, "spec_of", None)
    return spec_of(urn) if spec_of is not None else getattr(app, "spec", None)


def target_feed(app: Any, targets: list[str]) -> Any:
    """The feed of the VRM the backup's VMs live on. A job talks to one VRM: VMs of several VRMs of a
    multi-site console are refused with their sites named (one backup per site)."""
    feed_of = getattr(app, "feed_of", None)
    if feed_of is None or not targets:
        return getattr(app, "feed", None)
    sites = list(dict.fromkeys(s for s in (app.site_of(t) for t in targets)))
    if len(sites) > 1:
        names = ", ".join(s.label if s is not None else "unknown" for s in sites)
        raise JobError(f"the VMs are on several VRMs ({names}): a job backs up the VMs of one VRM")
    return feed_of(targets[0])


def targets_by_site(app: Any, targets: list[str]) -> list[list[str]]:
    """``targets`` in groups of one VRM each, in the order the VRMs first appear (one group with one VRM)."""
    site_of = getattr(app, "site_of", None)
    if site_of is None or not getattr(app, "multi_site", False):
        return [list(targets)] if targets else []
    groups: dict[Any, list[str]] = {}
    for t in targets:
        st = site_of(t)
        groups.setdefault(st.index if st is not None else None, []).append(t)
    return list(groups.values())


def start_backup_flow(app: Any, targets: list[str], *, full: bool = False, policy: str = "") -> None:
    """``b`` on the inventory: plan, show the review, submit on confirm, then show the jobs screen.
    ``policy``: the job is a run of this protection policy (``x`` on the Policies screen without a service).
    VMs of several VRMs (a multi-site console): one job per VRM, each planned and reviewed in turn
    (a job talks to one VRM); cancelling one review goes on to the next."""
    if getattr(app, "read_only", False):
        app.notify("Read-only mode: backups cannot be started", severity="warning")
        return
    if not targets:
        app.notify("No VM selected", severity="warning")
        return
    groups = targets_by_site(app, targets)
    if len(groups) > 1:
        app.notify(f"{len(targets)} VMs on {len(groups)} VRMs: one backup job per VRM, each reviewed", timeout=5)
    submitted: list[str] = []

    async def flow(i: int) -> None:
        group = groups[i]
        last = i + 1 == len(groups)
        svc = jobs_service(app)

        def next_or_jobs() -> None:
            if not last:
                app.run_worker(flow(i + 1), group="jobs-plan", exit_on_error=False)
            elif submitted:
                app.push_screen(JobsScreen(svc, select=submitted[-1]))

        app.notify(f"Planning the backup of {len(group)} VM(s)…", timeout=3)
        try:
            plan = await make_plan(app, group, full=full)
        except Exception as e:  # VRM errors, repository errors: one line, never a traceback
            app.notify(f"Could not plan the backup: {e}", severity="error", timeout=10)
            next_or_jobs()
            return
        estimator = svc.estimator()

        def pause_of(vp: VmPlan) -> PauseEstimate | None:
            gb = sum(d.size_bytes for d in vp.disks) / GIB
            return estimator.estimate(vp.host_name or vp.host_urn, len(vp.disks), gb) if vp.disks else None

        async def submit() -> None:
            try:
                job_id = await svc.submit([vp.vm_urn for vp in plan.runnable], full=plan.full,
                                          spec=spec_for(app, plan.runnable[0].vm_urn if plan.runnable else None),
                                          business_hours=business_hours_text(app), policy=policy)
            except Exception as e:
                app.notify(f"Could not submit the backup: {e}", severity="error", timeout=10)
                next_or_jobs()
                return
            submitted.append(job_id)
            what = f"Backup job {job_id} of policy {policy}" if policy else f"Backup job {job_id}"
            app.notify(f"{what} submitted to the {'cluster' if svc.cluster else 'agent'}", title="Backup started")
            next_or_jobs()

        def done(ok: bool | None) -> None:
            if ok:
                app.run_worker(submit(), group="jobs-submit", exit_on_error=False)
            else:
                next_or_jobs()

        app.push_screen(ReviewScreen(plan, pause_of), done)

    app.run_worker(flow(0), group="jobs-plan", exclusive=True, exit_on_error=False)


# --- rendering --------------------------------------------------------------------------------------

def render_job_row(job: JobRecord, fig: JobFigures | None, width: int, selected: bool) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append("▶ " if selected else "  ", style="bold")
    t.append(_clock_str(job.created)[:5] + " ")
    t.append(f"{job.type:<7} ")
    state = "warnings" if job.outcome != job.state else job.state
    t.append(f"{state:<11} ", style=STATE_STYLE.get(state, ""))
    names = ", ".join(v.name or v.urn for v in job.vms) or ", ".join(job.targets)
    if job.is_final:
        t.append(job_summary(job).split(" · ", 1)[1] if " · " in job_summary(job) else "", style="dim")
        return t
    if job.is_recovery:   # VMs up so far, not bytes
        up = sum(1 for v in job.vms if v.state == "done")
        t.append(f"{up}/{len(job.vms)} VM(s) up ")
    elif fig is not None:
        t.append(bar(fig.fraction, 12), style="cyan")
        t.append(f" {fig.fraction * 100:3.0f}% " if fig.fraction is not None else "   ? ")
        t.append(f"R {human_rate(fig.read_rate):>11} ")
        if fig.eta_text:
            t.append(f"{fig.eta_text} ", style="bold")
    t.append(names, style="dim")
    return t


# cells of a disk line besides its name: indent, mode, state, read/planned (render_job_detail)
DISK_LINE_FIXED = 2 + 1 + 12 + 29 + 17


def disk_label_width(labels: list[str], width: int) -> int:
    """The disk names' column under one VM: 12 cells, or as wide as its longest name within what the
    line leaves at this width."""
    need = max((cell_len(x) for x in labels), default=0)
    return min(max(12, need), max(12, width - DISK_LINE_FIXED))


def render_job_detail(job: JobRecord, fig: JobFigures, *, now: float,
                      pause_of: Callable[[VmProgress], PauseEstimate | None] | None = None,
                      log_lines: int = MAX_LOG_LINES, leftovers: list[dict[str, Any]] | None = None,
                      width: int = 80) -> Text:
    """``width``: the cells the detail has; the disk names' column follows it."""
    t = Text()
    t.append(f"Job {job.id}", style="bold")
    t.append(f" · {job.type} · ")
    t.append(job.outcome, style=STATE_STYLE.get(job.outcome, ""))
    if job.started:
        end = job.finished if job.finished else now
        t.append(f" · started {_clock_str(job.started)} ({_elapsed(end - job.started)})", style="dim")
    t.append("\n")
    if job.error and job.state != "succeeded":
        t.append(f"error: {job.error}\n", style="red")
    for w in job.warnings:
        t.append(f"warning: {w}\n", style="yellow")
    for p in leftovers or []:
        t.append(f"queued for cleanup: {describe_leftover(p, now)}\n", style="yellow")
    if job.is_recovery:
        _recovery_detail(t, job)
    else:
        _transfer_detail(t, job, fig, pause_of, width)
    # bounded log
    if job.log:
        shown = job.log[-log_lines:]
        t.append(f"\nLog (last {len(shown)} of {len(job.log)})\n", style="bold")
        for e in shown:
            lvl = str(e.get("level", "info"))
            t.append(f"  {_clock_str(e.get('time'))} ", style="dim")
            t.append(f"{str(e.get('message', ''))}\n",
                     style="red" if lvl == "error" else ("yellow" if lvl == "warning" else ""))
    return t


def _recovery_detail(t: Text, job: JobRecord) -> None:
    """A rehearsal's or failover's VMs in boot order, each with where it stands and its measured times."""
    plan = job.targets[0] if job.targets else "?"
    t.append(f"recovery plan {plan}: VMs restored and booted group by group; boot groups and the plan's RTO "
             "on the disaster recovery screen (X)\n", style="dim")
    for vm in job.vms:
        t.append(f"{vm.name or vm.urn}  ", style="bold")
        t.append(f"{vm.reason}\n", style=STATE_STYLE.get(vm.state, ""))


def _transfer_detail(t: Text, job: JobRecord, fig: JobFigures,
                     pause_of: Callable[[VmProgress], PauseEstimate | None] | None, width: int) -> None:
    """A backup's or restore's progress, rates, bytes and bottleneck, then each VM and disk."""
    # progress, rates, ETA
    t.append(bar(fig.fraction, 30), style="cyan")
    if fig.fraction is not None:
        t.append(f" {fig.fraction * 100:.0f} %")
        if fig.unplanned:
            t.append(f" of the planned part ({fig.unplanned} disk(s) planned after their snapshot)", style="dim")
    elif job.is_final:   # it ended before any disk's bytes were known: nothing is planned any more
        t.append(" ended before any bytes were planned", style="dim")
    else:
        t.append(" planning (bytes known after each snapshot)", style="dim")
    if not job.is_final:
        if fig.eta_text:
            t.append(f" · ETA {fig.eta_text}", style="bold")
        elif fig.fraction is not None and not fig.unplanned and fig.fraction < ETA_MIN_FRACTION:
            t.append(" · ETA after 5 %", style="dim")
    t.append("\n")
    t.append(f"read {human_rate(fig.read_rate)} · write {human_rate(fig.write_rate)}  ")
    t.append(sparkline(fig.history, 30), style="cyan")
    t.append("\n")
    planned = human_bytes(fig.planned) if fig.planned is not None else ("none" if job.is_final else "?")
    t.append(f"planned {planned} · "
             f"read {human_bytes(fig.read)} · written {human_bytes(fig.written)}\n"
             # two lines: at 80 columns one line wrapped inside a figure ("zero 0 / B")
             f"reused {human_bytes(fig.reused)} · zero {human_bytes(fig.zero)} · "
             f"stored {human_bytes(fig.stored)}\n", style="")
    t.append("bottleneck: ", style="dim")
    t.append(fig.bottleneck.label + "\n", style="bold" if fig.bottleneck.known else "dim")
    # per VM, per disk
    for vm in job.vms:
        t.append("\n")
        t.append(f"{vm.name or vm.urn}", style="bold")
        t.append(f" ({vm.host}) " if vm.host else " ")
        if vm.kind:
            t.append(f"{vm.kind} · ")
        t.append(vm.state, style=STATE_STYLE.get(vm.state, ""))
        est = pause_of(vm) if pause_of is not None and vm.state != "refused" else None
        if est is not None or vm.pause_s is not None:
            t.append(" · pause ", style="dim")
            if est is not None:
                t.append(f"est {est.low:.1f}–{est.high:.1f} s", style="bold red" if est.over_threshold else "")
            if vm.pause_s is not None:
                t.append(f"{' / ' if est is not None else ''}observed {vm.pause_s:.1f} s",
                         style="bold red" if vm.pause_s > PAUSE_WARN_S else "green")
        t.append("\n")
        if vm.reason and (vm.state in FINAL_VM_STATES or vm.state == "waiting" or vm.reason.startswith("warning")):
            t.append(f"  {vm.reason}\n", style="red" if vm.state in ("failed", "refused") else "yellow")
        labels = [disk_label(d.name or d.volume, vm.name) for d in vm.disks]
        label_w = disk_label_width(labels, width)
        for d, label in zip(vm.disks, labels):
            state = disk_line_state(vm, d)
            t.append(f"  {set_cell_size(fit_name(label, label_w), label_w)} ")
            t.append(f"{d.mode:<11} ", style="green" if d.mode == "incremental" else
                     ("magenta" if d.mode == "excluded" else "yellow"))
            t.append(f"{state[:28]:<28} ", style=STATE_STYLE.get(d.state, ""))
            if d.mode != "excluded":
                t.append(f"{human_bytes(d.bytes_read)}/{human_bytes(d.planned)}".replace(" ", ""))
            t.append("\n")
            if d.reason:
                t.append(f"      {d.reason}\n", style="dim")
            if d.error:
                t.append(f"      {d.error}\n", style="red")
        if vm.chain:
            t.append(f"  {vm.chain}\n", style="dim")


class TextBlock(Widget):
    """Rich text that repaints in place (Line API): wrapped once per (text, width) into cached strips,
    and a layout pass only when the number of lines changes (a progress tick keeps the height)."""

    DEFAULT_CSS = "TextBlock { height: auto; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._text = Text()
        self._wrapped: tuple[int, list[Text]] | None = None
        self._strips: dict[int, Strip] = {}

    def _lines(self, width: int) -> list[Text]:
        width = max(1, width)
        if self._wrapped is None or self._wrapped[0] != width:
            self._wrapped = (width, list(self._text.wrap(self.app.console, width, overflow="fold")))
            self._strips = {}
        return self._wrapped[1]

    @property
    def plain(self) -> str:
        return self._text.plain

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips = {}     # theme or focus changed the base style

    def update(self, text: Text) -> None:
        if text.plain == self._text.plain and text.spans == self._text.spans:
            return
        width = self.content_size.width or self.size.width
        before = len(self._lines(width)) if width else -1
        self._text, self._wrapped = text, None
        after = len(self._lines(width)) if width else -2
        self.refresh(layout=before != after)

    def get_content_height(self, container: Any, viewport: Any, width: int) -> int:
        return len(self._lines(width))

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width or self.size.width
        lines = self._lines(width)
        base = self.rich_style
        if y >= len(lines):
            return Strip.blank(width, base)
        strip = self._strips.get(y)
        if strip is None:
            segs = list(Segment.apply_style(lines[y].render(self.app.console), base))
            strip = self._strips[y] = Strip(segs).extend_cell_length(width, base).crop(0, width)
        return strip


class JobList(Widget, can_focus=True):
    """One line per job: running first, then history. Renders from the board; the cursor is a job id."""

    DEFAULT_CSS = "JobList { height: auto; max-height: 9; }"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False, id="jobs.up"),
        Binding("down,j", "cursor_down", "Down", show=False, id="jobs.down"),
    ]

    def __init__(self, board: JobsBoard, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.board = board
        self.cursor_id: str | None = None
        self.order: list[str] = []

    def sync(self) -> None:
        order = [j.id for j in self.board.ordered()]
        grew = len(order) != len(self.order)
        self.order = order
        if self.cursor_id not in self.order:
            self.cursor_id = self.order[0] if self.order else None
        self.refresh(layout=grew)

    def get_content_height(self, container: Any, viewport: Any, width: int) -> int:
        return max(1, len(self.order))

    def render(self) -> Text:
        if not self.order:
            return Text("No jobs yet: press b on a VM in the inventory to start a backup.", style="dim")
        out = Text(no_wrap=True, overflow="ellipsis")
        width = self.size.width or 80
        # keep the cursor visible inside max-height rows
        rows = self.order
        visible = max(1, self.size.height or len(rows))
        idx = rows.index(self.cursor_id) if self.cursor_id in rows else 0
        start = max(0, min(idx - visible + 1, len(rows) - visible)) if idx >= visible else 0
        for n, job_id in enumerate(rows[start:start + visible]):
            job = self.board.jobs[job_id]
            if n:
                out.append("\n")
            line = render_job_row(job, self.board.figures(job_id), width, job_id == self.cursor_id)
            line.truncate(width, overflow="ellipsis")
            if job_id == self.cursor_id:
                line.stylize("reverse" if self.has_focus else "bold")
            out.append_text(line)
        return out

    def move(self, delta: int) -> None:
        if not self.order:
            return
        idx = self.order.index(self.cursor_id) if self.cursor_id in self.order else 0
        idx = max(0, min(len(self.order) - 1, idx + delta))
        self.cursor_id = self.order[idx]
        self.refresh()
        screen: Any = self.screen
        if hasattr(screen, "show_selected"):
            screen.show_selected()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def action_cursor_up(self) -> None:
        if self._at_edge(-1) and self._scroll_detail("scroll_up"):
            return
        self.move(-1)

    def action_cursor_down(self) -> None:
        if self._at_edge(1) and self._scroll_detail("scroll_down"):
            return
        self.move(1)

    def _at_edge(self, delta: int) -> bool:
        """The cursor cannot move further that way (first/last job, or no job)."""
        if not self.order or self.cursor_id not in self.order:
            return True
        idx = self.order.index(self.cursor_id)
        return idx == 0 if delta < 0 else idx == len(self.order) - 1

    def _scroll_detail(self, action: str) -> bool:
        """Past the list's ends, up/down move the job detail (a lone long job is otherwise unreadable at 80x24).
        False when the detail cannot move that way."""
        screen: Any = self.screen
        scroll = getattr(screen, "detail_scroll", None)
        if scroll is None:
            return False
        view = scroll()
        at_end = view.scroll_y <= 0 if action == "scroll_up" else view.scroll_y >= view.max_scroll_y
        if at_end:
            return False
        getattr(view, f"action_{action}")()
        return True


class JobsScreen(Screen[None]):
    """Every job of the agent, live; the highlighted one in detail below."""

    DEFAULT_CSS = """
    JobsScreen #jobs-status { height: 1; background: $primary-background; }
    JobsScreen #job-list { border-bottom: solid $primary; }
    JobsScreen #job-detail-scroll { height: 1fr; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "back", "Back", id="jobs.back"),
        Binding("c", "cancel_job", "Stop job", id="jobs.cancel"),
        Binding("x", "drill", "Drill", id="jobs.drill"),
        Binding("tab", "app.focus_next", "Next pane", show=False, id="jobs.focus_next"),
        Binding("shift+tab", "app.focus_previous", "Previous pane", show=False, id="jobs.focus_previous"),
        # the detail scrolls from the keyboard whichever pane has the focus (the list keeps up/down)
        Binding("pagedown", "detail('page_down')", "Detail page down", show=False, id="jobs.detail_page_down"),
        Binding("pageup", "detail('page_up')", "Detail page up", show=False, id="jobs.detail_page_up"),
        Binding("end", "detail('scroll_end')", "Detail end", show=False, id="jobs.detail_end"),
        Binding("home", "detail('scroll_home')", "Detail top", show=False, id="jobs.detail_home"),
    ]
    # Actions that change something on the VRM: hidden in read-only mode.
    MUTATING: ClassVar[frozenset[str]] = frozenset({"cancel_job", "drill"})

    def __init__(self, service: JobsService, *, select: str | None = None,
                 wall: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.service = service
        self.wall = wall or service.wall
        self._select = select
        self._dirty = False
        self._timer: Any = None
        self._estimator: PauseEstimator | None = None
        self._est_version = -1
        self.renders = 0

    def compose(self) -> ComposeResult:
        yield Static("", id="jobs-status")
        yield JobList(self.service.board, id="job-list")
        with VerticalScroll(id="job-detail-scroll"):
            yield TextBlock(id="job-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.service.listeners.append(self._on_change)
        jl = self.query_one(JobList)
        jl.sync()
        if self._select and self._select in jl.order:
            jl.cursor_id = self._select
        jl.focus()
        self.render_all()
        self._timer = self.set_interval(RENDER_INTERVAL, self._tick)

    def on_resize(self) -> None:
        # the disk names' column follows the width: lay the detail out again once the new size is known
        self.call_after_refresh(self.show_selected)

    def on_unmount(self) -> None:
        if self._on_change in self.service.listeners:
            self.service.listeners.remove(self._on_change)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.MUTATING and getattr(self.app, "read_only", False):
            return False
        if action == "drill":
            from .drills import drills_available
            return drills_available(self.app)
        return True

    # model -> screen
    def _on_change(self, job_id: str | None) -> None:
        if self._select and job_id == self._select:
            jl = self.query_one(JobList)
            jl.sync()
            jl.cursor_id = self._select
            self._select = None
            self.render_all()
            return
        self._dirty = True

    def _tick(self) -> None:
        if self._dirty:
            self._dirty = False
            self.render_all()
        else:
            self._status()   # elapsed time moves even without events

    def selected(self) -> JobRecord | None:
        jl = self.query_one(JobList)
        return self.service.board.get(jl.cursor_id) if jl.cursor_id else None

    def _pause_lookup(self) -> Callable[[VmProgress], PauseEstimate | None]:
        if self._estimator is None or self._est_version != len(self.service.board.jobs):
            self._estimator = self.service.estimator()
            self._est_version = len(self.service.board.jobs)
        return self.service.pause_of_progress(self._estimator)

    def render_all(self) -> None:
        self.query_one(JobList).sync()
        self.show_selected()

    def show_selected(self) -> None:
        self.renders += 1
        self._status()
        job = self.selected()
        detail = self.query_one("#job-detail", TextBlock)
        if job is None:
            detail.update(Text("Select a job to see its disks, rates and log.", style="dim"))
            return
        fig = self.service.board.figures(job.id)
        assert fig is not None
        mine = [p for p in self.service.cleanup if p.get("job") == job.id]
        detail.update(render_job_detail(job, fig, now=self.wall(), pause_of=self._pause_lookup(), leftovers=mine,
                                        width=detail.content_size.width or self.size.width))

    def _status(self) -> None:
        board = self.service.board
        running = sum(1 for j in board.jobs.values() if not j.is_final)
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" Jobs ", style="bold reverse")
        t.append(f" {running} running · {len(board.jobs) - running} finished · ")
        if self.service.cleanup:
            t.append(f"{len(self.service.cleanup)} leftover(s) queued for cleanup · ", style="yellow")
        who = f"cluster {self.service.cluster}" if self.service.cluster else "agent"
        if self.service.connected:
            t.append(f"{who} connected", style="green")
        else:
            t.append(f"{who}: {self.service.error or 'connecting…'}", style="yellow")
        if getattr(self.app, "read_only", False):
            t.append(" · READ-ONLY", style="bold")
        self.query_one("#jobs-status", Static).update(t)

    def shows_job(self, job_id: str) -> bool:
        """Every job's state is in the list and the highlighted one's error in the detail: no toast."""
        return True

    def detail_scroll(self) -> VerticalScroll:
        return self.query_one("#job-detail-scroll", VerticalScroll)

    # actions
    def action_detail(self, how: str) -> None:
        if how in ("page_down", "page_up", "scroll_end", "scroll_home"):
            getattr(self.detail_scroll(), f"action_{how}")()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_cancel_job(self) -> None:
        job = self.selected()
        if job is None or job.is_final:
            self.app.notify("The highlighted job is not running", severity="warning")
            return
        job_id = job.id

        async def cancel() -> None:
            try:
                await self.service.cancel(job_id)
            except AgentError as e:
                self.app.notify(f"Cancel failed: {e}", severity="error")
                return
            self.app.notify(f"Cancelling job {job_id}: its snapshots and resources are being removed")

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.app.run_worker(cancel(), group="jobs-cancel", exit_on_error=False)

        vms = ", ".join(v.name for v in job.vms if v.state not in FINAL_VM_STATES) or "its VMs"
        what = "restore" if job.type == "restore" else "backup"
        self.app.push_screen(ConfirmScreen(f"Stop the {what} {job_id}?",
                                           f"Stops the {job.type} of {vms}. Snapshots and backup resources it "
                                           f"created are removed; a CBT snapshot already taken makes the next "
                                           f"backup of those disks full.",
                                           yes=f"Stop the {what}", no="Keep it running"), confirmed)

    def action_drill(self) -> None:
        from .drills import DrillScreen
        job = self.selected()
        if job is None or job.is_final:
            self.app.notify("Drills need a running job", severity="warning")
            return
        self.app.push_screen(DrillScreen(job))


def jobs_screen_for(app: App, **kw: Any) -> JobsScreen:
    return JobsScreen(jobs_service(app), **kw)



def agent_demo_starter(vms: int = 60, *, timeout: float = 30.0) -> Callable[[], tuple[Any, Callable[[], None]]]:
    """A ``demo_starter`` for :class:`~fctui.tui.app.FctuiApp` whose simulated VRM lives in the job agent
    (started if needed), so backups launched from the demo keep running after the console closes and a
    reopened console finds the same VRM. Runs in a thread (the app calls it from a worker)."""
    def start() -> tuple[Any, Callable[[], None]]:
        from .source import ConnectSpec

        async def go() -> dict[str, Any]:
            client = await ensure_agent(demo=True, timeout=timeout)
            return await client.request("demo", vms=vms)
        d = asyncio.run(go())
        spec = ConnectSpec(url=str(d["url"]), user=str(d["user"]), password=str(d["password"]), label="demo")
        return spec, lambda: None      # the agent owns the simulator: it stays up for running jobs
    return start
