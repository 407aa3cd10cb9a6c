"""Run a backup plan against a VRM: the vrm-api.md §9.5 sequence per VM.

Per VM (holding a scheduler VM slot = one of its host's backup sockets):
snapshot (``CBTbackup``, or ``normal`` for kind ``standard``) -> wait for the task -> snapshot detail
(snapUuid, volCBTCreateTime, chgID per volume) -> the changed blocks of every disk (so the bytes to read
are known before data moves) -> per disk, one after another: prepare a backup resource with a short
``delay`` that is extended while reading (an orphan expires on its own) -> read the blocks through the
:class:`~fctui.vrm.transport.BlockTransport`, several coalesced ranges in flight, each read, hashed,
compressed and stored on one worker thread (``DiskWriter.put_block``) -> release -> after the last disk delete the
snapshot -> commit the restore point with each volume's CBT state for the next incremental.

Every failure and every cancel releases the resources and deletes the snapshot this run created, and
records how the CBT chain stands. A watchdog fails the VM cleanly when someone else starts a mutually
exclusive operation on it (power on/off, migration, expansion). Before creating a snapshot or a resource
the run records its intent in the journal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..repo.errors import RepoError, RepoFullError
from ..rules.engine import classify_task_type
from ..vrm.errors import VrmConnectionError, VrmError, VrmNotFoundError, VrmTimeoutError
from ..vrm.urn import site_uri, urn_to_uri
from . import cleanup
from .journal import JournalLike, MemoryJournal
from .model import DiskProgress, JobError, JobRecord, VmProgress
from .planner import DiskPlan, Plan, VmPlan, confirm_disk
from .scheduler import HOST_SNAPSHOT_GATE, HOST_SOCKETS_BUSY, Scheduler

if TYPE_CHECKING:  # pragma: no cover
    from ..repo import Repository
    from ..vrm.client import VrmClient
    from ..vrm.transport import BlockTransport

log = logging.getLogger("fctui.jobs.runner")

EventSink = Callable[[dict[str, Any]], None]


@dataclass
class RunnerSettings:
    resource_delay: int = 600          # s; short so an orphaned resource expires on its own
    extend_every: float = 240.0        # s between extensions while reading
    reads_in_flight: int = 6           # ranges in flight per disk, each read + hashed + stored on a thread
    max_range_bytes: int = 8 << 20     # coalesce adjacent changed blocks up to this size
    read_retries: int = 3              # per range, on dropped connections / timeouts
    read_retry_s: float = 30.0         # transient errors on getcbt, and on creates the VRM shows not done
    busy_retry_s: float = 120.0        # keep retrying "busy"/host-limit answers this long
    busy_interval: float = 0.5
    task_timeout: float = 600.0
    task_interval: float = 0.25
    watch_interval: float = 2.0        # watchdog period (someone else's operations)
    release_wait_s: float = 30.0       # wait until a released resource is gone
    cleanup_within_s: float = 120.0    # busy retries of the hunter's restore-side intents
    # One budget per VM for all its cleanup steps (resource releases, snapshot delete, their task
    # waits) with retries of transient errors inside it; what is left then goes to the hunter.
    cleanup_budget_s: float = cleanup.CLEANUP_BUDGET_S
    cleanup_floor_s: float = 5.0       # one attempt this long even after the budget is spent
    # The agent's snapshot hunter: leftovers are tried again this often (doubling after each failed
    # round up to hunt_max_interval_s), so a recovered VRM is clean again within about a minute.
    hunt_interval_s: float = 30.0
    hunt_max_interval_s: float = 60.0
    default_block_size: int = 2 << 20  # standard snapshots (no CBT bitmap to tell the block size)
    cbt_window: int = 1024             # getcbt blocks per query (as observed in the field)
    progress_interval: float = 0.5     # s between progress events of one disk
    space_check: bool = True           # refuse a VM whose planned bytes do not fit (before reading)
    # The stricter reading of vrm-api.md §16 NOTES: no backup resource of ours on the VM's host when its
    # CBT snapshot is created (the scheduler's host gate); off: only the VM's own volumes (§15 item 40).
    host_snapshot_gate: bool = False


def retry_blocking(fn: Callable[[], Any], attempts: int) -> Any:
    """On a worker thread: ``fn``, tried again (up to ``attempts`` in all) after a transient error
    (a dropped connection, a timeout, a 5xx, a 401: :func:`cleanup.is_transient`). For transfers that
    are safe to repeat: range reads, restore writes."""
    attempt = 0
    while True:
        try:
            return fn()
        except VrmError as e:
            if not cleanup.is_transient(e):
                raise
            attempt += 1
            if attempt >= attempts:
                raise
            time.sleep(0.2 * attempt)


class ExclusiveOperationError(JobError):
    """Someone else started an operation that excludes a backup (power, migration, expansion)."""


class Reporter:
    """Keeps the JobRecord current and turns changes into events for the agent / TUI / CLI."""

    def __init__(self, job: JobRecord, sink: EventSink | None = None, *, interval: float = 0.5,
                 on_state: Callable[[JobRecord], None] | None = None) -> None:
        self.job = job
        self.sink = sink
        self.interval = interval
        self.on_state = on_state
        self._last: dict[str, float] = {}
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=64)
        # Busy seconds per stage summed over workers, for the jobs screen's bottleneck verdict:
        # read = waiting for VRM range reads; hash = put_block (hash, compress, chunk write);
        # write = committing the restore point (fsync, manifest, catalog).
        self.busy: dict[str, float] = {"read": 0.0, "hash": 0.0, "write": 0.0}

    def add_busy(self, stage: str, seconds: float) -> None:
        self.busy[stage] = self.busy.get(stage, 0.0) + max(0.0, seconds)

    def _emit(self, ev: dict[str, Any]) -> None:
        if self.sink is not None:
            try:
                self.sink(ev)
            except Exception:  # a broken watcher must not break the job
                log.exception("progress sink failed")

    def rates(self) -> tuple[float, float]:
        """Read and write rates (bytes/s) over the last few seconds."""
        now = time.monotonic()
        t = self.job.totals()
        self._samples.append((now, t["bytes_read"], t["bytes_written"]))
        while len(self._samples) > 2 and now - self._samples[0][0] > 5.0:
            self._samples.popleft()
        t0, r0, w0 = self._samples[0]
        dt = now - t0
        if dt <= 0:
            return 0.0, 0.0
        return (t["bytes_read"] - r0) / dt, (t["bytes_written"] - w0) / dt

    def state(self) -> None:
        """A state transition of the job, a VM or a disk: persisted and sent in full."""
        if self.on_state is not None:
            try:
                self.on_state(self.job)
            except Exception:  # a full disk must not stop the cleanup on the VRM
                log.exception("could not persist job %s", self.job.id)
        d = self.job.to_dict()
        d.pop("log", None)
        self._emit({"event": "job", "job": d})

    def progress(self, vm: VmProgress, disk: DiskProgress, force: bool = False) -> None:
        key = disk.volume
        now = time.monotonic()
        if not force and now - self._last.get(key, 0.0) < self.interval:
            return
        self._last[key] = now
        rr, rw = self.rates()
        self._emit({"event": "progress", "job": self.job.id, "vm": vm.urn, "volume": disk.volume,
                    "state": disk.state, "bytes_planned": disk.bytes_planned, "bytes_read": disk.bytes_read,
                    "bytes_written": disk.bytes_written, "bytes_reused": disk.bytes_reused,
                    "bytes_zero": disk.bytes_zero, "bytes_stored": disk.bytes_stored,
                    "rate_read": rr, "rate_write": rw, "totals": self.job.totals(),
                    "busy": {k: round(v, 4) for k, v in self.busy.items()}})

    def log(self, message: str, level: str = "info") -> None:
        entry = self.job.add_log(message, level)
        (log.warning if level in ("warning", "error") else log.info)("job %s: %s", self.job.id, message)
        self._emit({"event": "log", "job": self.job.id, **entry})


@dataclass
class _VmRun:
    """What one VM's run has created so far (for cleanup)."""
    plan: VmPlan
    progress: VmProgress
    snapshot_urn: str = ""
    snapshot_uri: str = ""
    snapshot_key: int | None = None
    snapshot_cbt: bool = False
    resource: tuple[str, str, int | None] | None = None   # (volume_uri, task_id, journal key)
    resource_key: int | None = None
    host_gate: bool = False   # holds the resource side of the scheduler's host gate (until released)
    snapshot_gate: bool = False   # holds the snapshot side of it (until the snapshot task ends)
    writer: Any = None
    disks: dict[str, DiskProgress] = field(default_factory=dict)
    cleanup_budget: cleanup.Budget | None = None  # started by the first cleanup step of this VM


def snapshot_time(task: Any) -> float | None:
    """A restore point's time: the VRM's time of its snapshot (the snapshot task's finishTime, else its
    startTime; epoch seconds), so RPO and retention follow the VRM's clock, not this machine's. Both
    spellings the VRM may use are read (vrm-api.md §10: epoch ms as a string, or "YYYY-MM-DD HH:MM:SS"
    UTC). None when it gave neither (the caller falls back to the local clock)."""
    from datetime import datetime, timezone
    for v in (getattr(task, "finish_time", ""), getattr(task, "start_time", "")):
        if v is None or v == "":
            continue
        try:
            ms = float(v)
        except (TypeError, ValueError):
            try:
                return datetime.strptime(str(v).strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
            except ValueError:
                continue
        if ms > 0:
            return ms / 1000.0
    return None


def coalesce(blocks: list[int], max_blocks: int) -> Iterator[tuple[int, int]]:
    """Adjacent block numbers as (start, count) runs of at most ``max_blocks``; input sorted."""
    start = prev = None
    n = 0
    for b in blocks:
        if start is not None and b == prev + 1 and n < max_blocks:
            prev, n = b, n + 1
            continue
        if start is not None:
            yield start, n
        start = prev = b
        n = 1
    if start is not None:
        yield start, n


async def uncancellable(coro: Any) -> Any:
    """Run cleanup to its end even if our caller is cancelled again meanwhile."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
    if cancelled:
        cur = asyncio.current_task()
        if cur is not None:
            cur.uncancel()
    return task.result()


def _first_error(eg: BaseException) -> BaseException:
    while isinstance(eg, BaseExceptionGroup) and eg.exceptions:
        eg = eg.exceptions[0]
    return eg


class BackupRunner:
    """Runs plans with one client, one repository and one scheduler (shared by concurrent jobs)."""

    def __init__(self, client: "VrmClient", repo: "Repository", *, scheduler: Scheduler | None = None,
                 journal: JournalLike | None = None, settings: RunnerSettings | None = None,
                 vrm: str = "", user: str = "", start_by: Callable[[], str] | None = None) -> None:
        self.client = client
        # A start-by deadline (a policy's window end): asked when a VM's turn comes, before its
        # snapshot; a non-empty answer is why it is not started at all.
        self.start_by = start_by
        self.repo = repo
        self.scheduler = scheduler or Scheduler()
        self.journal: JournalLike = journal if journal is not None else MemoryJournal()
        self.settings = settings or RunnerSettings()
        self.vrm = vrm or getattr(client, "base_url", "")
        self.user = user or getattr(client, "user", "")
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.settings.reads_in_flight),
                                                           thread_name_prefix="fctui-backup")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # --- job level --------------------------------------------------------------------------------

    @staticmethod
    def progress_from_plan(job: JobRecord, plan: Plan) -> None:
        job.vms = []
        for vp in plan.vms:
            vm = VmProgress(urn=vp.vm_urn, name=vp.vm_name, host=vp.host_name or vp.host_urn, kind=vp.kind,
                            state="refused" if vp.refused else "queued", reason=vp.reason)
            if vp.refused:  # nothing of it is read: its disks would only show empty figures
                job.vms.append(vm)
                continue
            for dp in vp.disks:
                vm.disks.append(DiskProgress(volume=dp.volume_urn, name=dp.disk_name, mode=dp.mode,
                                             reason=dp.reason, bytes_planned=dp.bytes_planned))
            for dp in vp.excluded:
                vm.disks.append(DiskProgress(volume=dp.volume_urn, name=dp.disk_name, mode="excluded",
                                             reason=dp.reason, state="excluded"))
            job.vms.append(vm)
        for target, why in plan.unresolved:
            job.vms.append(VmProgress(urn=target, name=target, state="refused", reason=why))

    async def run(self, job: JobRecord, plan: Plan, reporter: Reporter) -> JobRecord:
        """Run every runnable VM of ``plan`` concurrently (the scheduler bounds them)."""
        if not job.vms:
            self.progress_from_plan(job, plan)
        job.state, job.started = "running", time.time()
        reporter.log(f"job started: {len(plan.runnable)} VM(s) to back up, {len(plan.refused)} refused, "
                     f"{len(plan.unresolved)} not found")
        for vp in plan.refused:
            reporter.log(f"{vp.vm_name}: refused: {vp.reason}", "warning")
        for vp in plan.runnable:
            for f in vp.launch:
                reporter.log(f"{vp.vm_name}: {f.rule}: {f.message}", "warning" if f.severity == "warning" else "info")
        for target, why in plan.unresolved:
            reporter.log(f"{target}: {why}", "warning")
        reporter.state()
        tasks = [asyncio.create_task(self.run_vm(job, vp, job.vm(vp.vm_urn), reporter),  # type: ignore[arg-type]
                                     name=f"backup-{vp.vm_name}") for vp in plan.runnable]
        cancelled = False
        try:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            cancelled = True
            for t in tasks:
                t.cancel()
            await uncancellable(asyncio.gather(*tasks, return_exceptions=True))
        job.settle(cancelled)
        reporter.log(*job.end_message())
        reporter.state()
        if cancelled:
            raise asyncio.CancelledError
        return job

    # --- VM level ---------------------------------------------------------------------------------

    async def run_vm(self, job: JobRecord, vp: VmPlan, vm: VmProgress, reporter: Reporter) -> None:
        run = _VmRun(plan=vp, progress=vm, disks={d.volume: d for d in vm.disks})

        def waiting(reason: str) -> None:
            vm.state, vm.reason = "waiting", reason
            for d in vm.disks:
                if d.state == "waiting":
                    d.wait_reason = reason
            reporter.log(f"{vp.vm_name}: queued ({reason})")
            reporter.state()

        ticket = None
        try:
            ticket = await self.scheduler.acquire_vm(vp.host_urn, f"{job.id}/{vp.vm_name}", waiting)
            late = self.start_by() if self.start_by is not None else ""
            if late:
                vm.state, vm.reason = "refused", late
                reporter.log(f"{vp.vm_name}: not started: {late}", "warning")
                reporter.state()
                return
            flow = asyncio.create_task(self._vm_flow(job, run, reporter))
            watch = asyncio.create_task(self._watchdog(run, flow))
            try:
                done, _ = await asyncio.wait({flow, watch}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                flow.cancel()
                watch.cancel()
                await asyncio.gather(flow, watch, return_exceptions=True)
                raise
            if watch in done and watch.exception() is not None:
                flow.cancel()
                await asyncio.gather(flow, return_exceptions=True)
                raise watch.exception()  # type: ignore[misc]
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            flow.result()
            vm.state = "done"
            vm.reason = vm.reason if vm.reason.startswith("warning") else ""
            reporter.log(f"{vp.vm_name}: restore point {vm.point_id} committed")
        except asyncio.CancelledError:
            vm.state, vm.reason = "cancelled", "cancelled by the user"
            await uncancellable(self._fail_cleanup(job, run, reporter, "the job was cancelled"))
            reporter.state()
            raise
        except Exception as e:  # every failure ends here, typed or not: one line for the user
            err = _first_error(e)
            msg = str(err) or type(err).__name__
            if isinstance(err, RepoFullError):
                msg = self._repository_full(run)
            elif not isinstance(err, (VrmError, JobError, RepoError)):
                log.exception("unexpected failure backing up %s", vp.vm_name)
                msg = f"internal error: {type(err).__name__}: {msg}"
            vm.state, vm.reason = "failed", msg
            reporter.log(f"{vp.vm_name}: failed: {msg}", "error")
            await uncancellable(self._fail_cleanup(job, run, reporter, msg,
                                                    exclusive=isinstance(err, ExclusiveOperationError)))
            reporter.state()
        finally:
            if ticket is not None:
                self.scheduler.release(ticket)

    @staticmethod
    def _full_message(free: int | None, need: int, detail: str) -> str:
        from .progress import human_bytes
        return (f"repository full: {human_bytes(free)} free, needs ~{human_bytes(need)}{detail}; run "
                "`fctui repo prune` and `fctui repo gc`, or free space on its filesystem")

    def _repository_full(self, run: _VmRun) -> str:
        """The story of a backup the repository's filesystem could not hold (the point is aborted by
        the cleanup; the chunks it wrote are unreferenced, so ``repo gc`` reclaims them)."""
        left = sum(max(0, (d.bytes_planned or 0) - d.bytes_read) for d in run.disks.values())
        try:
            room = self.repo.room()
        except OSError:
            room = None
        free = room[0] if room is not None else None
        return self._full_message(free, left, " more (this point was discarded)")

    def _check_room(self, vp: VmPlan) -> None:
        """Once the CBT bitmap gave the exact bytes to read, and before any is: the VM's estimated
        repository bytes (planner.stored_estimate) against the free space less the margin. The launch
        check used estimates; this one uses the planned bytes (another writer may also have filled the
        disk since). A full disk mid-backup is still handled (RepoFullError)."""
        from .planner import stored_estimate
        try:
            room = self.repo.room()
            if room is None:
                return  # the store knows no limit (S3)
            free, margin = room
            need, basis = stored_estimate(vp, self.repo.points(vp.vm_urn))
        except (OSError, RepoError, AttributeError):
            return  # the writes themselves will tell
        if need > free - margin:
            raise JobError(self._full_message(free, need, f" ({basis}) plus a margin of "
                                                          f"{margin >> 20} MiB; nothing was read"))

    async def _watchdog(self, run: _VmRun, flow: asyncio.Task) -> None:
        """Fail the VM when someone else starts an operation that excludes a backup."""
        vp = run.plan
        vm_uri = vp.vm_uri
        mine = {vp.vm_urn} | {d.volume_urn for d in vp.disks} | {d.volume_urn for d in vp.excluded}
        site = site_uri(vp.vm_urn)
        interval = self.settings.watch_interval
        while not flow.done():
            await asyncio.sleep(interval)
            if flow.done():
                return
            try:
                vm = await self.client.vm(vm_uri)
                tasks = await self.client.tasks(site, status="running")
            except (VrmConnectionError, VrmTimeoutError):
                continue  # the flow itself will notice a VRM that stays away
            if vp.host_urn and vm.host_urn and vm.host_urn != vp.host_urn:
                raise ExclusiveOperationError(
                    f"the VM moved from host {vp.host_name or vp.host_urn} to {vm.host_name or vm.host_urn} "
                    f"during the backup (a migration by someone else; mutually exclusive with a backup)")
            if vm.status != vp.status:
                raise ExclusiveOperationError(
                    f"the VM changed state from {vp.status} to {vm.status} during the backup "
                    f"(an operation by someone else; power on/off is mutually exclusive with a backup)")
            for t in tasks:
                # we never start these ourselves; our own snapshot/resource tasks are not exclusive types
                if t.is_active and t.entity_urn in mine and classify_task_type(t.type)[0] \
                        and "snapshot" not in t.type.lower() and "backup" not in t.type.lower():
                    raise ExclusiveOperationError(
                        f"{t.user or 'someone else'} started {t.type or 'a task'} on the VM during the backup "
                        f"(mutually exclusive with a backup)")

    async def _vm_flow(self, job: JobRecord, run: _VmRun, reporter: Reporter) -> None:
        vp, vm, s = run.plan, run.progress, self.settings
        c = self.client
        kind = vp.kind or "standard"
        snap_type = "CBTbackup" if kind == "cbt" else "normal"
        name = f"fctui-{job.id}-{vp.vm_urn.rsplit(':', 1)[-1]}"
        # 1. snapshot (intent recorded first)
        vm.state, vm.reason = "snapshot", ""
        reporter.state()
        if kind == "cbt":
            await self._begin_snapshot_gate(run, reporter)
        run.snapshot_key = self.journal.intend(job_id=job.id, vrm=self.vrm, user=self.user, what="snapshot",
                                               vm_urn=vp.vm_urn, name=name, snapshot_type=snap_type)
        await self._journal_flush()
        ref = await cleanup.retry(
            lambda: cleanup.create_checked(
                lambda: c.create_snapshot(vp.vm_uri, name, type=snap_type, description=f"fctui backup job {job.id}"),
                lambda: cleanup.find_snapshots_named(c, vp.vm_uri, name), f"snapshot {name}"),
            within=s.busy_retry_s, interval=s.busy_interval, cut=False, transient_s=s.read_retry_s)
        run.snapshot_urn = ref.urn
        run.snapshot_uri = ref.uri or (urn_to_uri(ref.urn) if ref.urn else "")
        run.snapshot_cbt = kind == "cbt"
        self.journal.update(run.snapshot_key, snapshot_urn=ref.urn, snapshot_uri=run.snapshot_uri,
                            task_uri=ref.task_uri, state="created")
        task = await c.wait_task(ref, timeout=s.task_timeout, interval=s.task_interval)
        self._end_snapshot_gate(run)
        t0, t1 = task.times_ms()
        if t0 is not None and t1 is not None and t1 >= t0:
            vm.pause_s = (t1 - t0) / 1000.0
        taken_at = snapshot_time(task)
        if not run.snapshot_uri:  # an old VRM that did not return the snapshot's URI: find it by name
            found = await cleanup.find_snapshots_named(c, vp.vm_uri, name)
            if not found:
                raise JobError(f"snapshot {name} not found after its task succeeded")
            run.snapshot_uri = found[0]
            self.journal.update(run.snapshot_key, snapshot_uri=run.snapshot_uri)
        vm.snapshot_urn = run.snapshot_urn or run.snapshot_uri
        detail = await c.snapshot(run.snapshot_uri)
        vm.snapshot_urn = detail.urn or vm.snapshot_urn
        run.snapshot_urn = vm.snapshot_urn
        reporter.log(f"{vp.vm_name}: {snap_type} snapshot ready"
                     + (f" (pause {vm.pause_s:.2f} s)" if vm.pause_s is not None else ""))
        # 2. what to read per disk: confirm the chain, then the CBT bitmap (before any data moves)
        vols = {v.volume_urn: v for v in detail.vol_snapshots}
        reads: dict[str, tuple[int, list[int]]] = {}
        for dp in vp.disks:
            d = run.disks[dp.volume_urn]
            vs = vols.get(dp.volume_urn)
            if vs is None:
                raise JobError(f"the snapshot does not contain disk {dp.disk_name} ({dp.volume_urn})")
            before = dp.mode
            confirm_disk(dp, vs)
            if dp.mode != before:
                reporter.log(f"{vp.vm_name}/{dp.disk_name}: {before} -> {dp.mode}: {dp.reason}", "warning")
            d.mode, d.reason = dp.mode, dp.reason
            if kind == "cbt":
                chg = (dp.base_cbt or {}).get("chgID", "0") if dp.mode == "incremental" else "0"
                # getcbt is a POST but only reads: a transient error is asked again, within its own bound.
                # The disk's size tells the client where it ends (no query past it: a VRM may answer 400);
                # windows one at a time, as clients of real VRMs query (vrm-api.md §9.2).
                bs, total, changed = await cleanup.retry(
                    lambda: c.changed_blocks(dp.volume_uri, snap_uuid=vs.snap_uuid,
                                             vol_cbt_create_time=vs.vol_cbt_create_time, chg_id=chg,
                                             window=s.cbt_window, volume_size=dp.size_bytes or None,
                                             concurrency=1),
                    within=s.read_retry_s, interval=s.busy_interval)
                if bs <= 0:
                    raise JobError(f"getcbt of {dp.disk_name} reported no block size")
                if not dp.size_bytes:  # the VM detail did not say: trust the bitmap's extent
                    dp.size_bytes = total * bs
                blocks = sorted(changed)
            else:
                bs = s.default_block_size
                nblocks = -(-dp.size_bytes // bs)
                blocks = list(range(nblocks))
            dp.block_size = bs
            dp.blocks_planned = len(blocks)
            dp.bytes_planned = sum(min(bs, dp.size_bytes - b * bs) for b in blocks) if blocks else 0
            d.blocks_planned, d.bytes_planned = dp.blocks_planned, dp.bytes_planned
            reads[dp.volume_urn] = (bs, blocks)
        planned = sum(dp.bytes_planned or 0 for dp in vp.disks)
        from .progress import human_bytes
        reporter.log(f"{vp.vm_name}: {human_bytes(planned)} to read in {sum(len(r[1]) for r in reads.values())} "
                     f"blocks over {len(vp.disks)} disk(s)")
        reporter.state()
        if s.space_check:
            self._check_room(vp)
        # 3. the restore point and the data, disk after disk
        loop = asyncio.get_running_loop()
        run.writer = self.repo.new_point(vm_urn=vp.vm_urn, vm_name=vp.vm_name, job_id=job.id, kind=kind,
                                         vm_config=vp.vm_config, snapshot_urn=run.snapshot_urn,
                                         created=taken_at if taken_at is not None else time.time())
        vm.state = "reading"
        for dp in vp.disks:  # one CNA port per VM and host: its disks go one after another (vrm-api §9.3)
            run.disks[dp.volume_urn].wait_reason = "waits for the VM's previous disk"
        for dp in vp.disks:
            bs, blocks = reads[dp.volume_urn]
            await self._backup_disk(job, run, dp, bs, blocks, reporter)
        # 4. delete the snapshot, then commit
        vm.state = "cleanup"
        reporter.state()
        try:
            await cleanup.delete_snapshot(c, run.snapshot_uri, within=self._cleanup_budget(run),
                                          task_timeout=s.task_timeout, interval=s.task_interval)
            self.journal.done(run.snapshot_key)
            run.snapshot_key = None
        except VrmError as e:  # the data is good; the journal keeps the snapshot for the hunter
            self._leftover(job, run, reporter, run.snapshot_key, f"snapshot {run.snapshot_urn} not deleted yet", e)
            run.snapshot_key = None  # the journal's record is the hunter's now, not this run's
        t0 = time.perf_counter()
        point = await loop.run_in_executor(None, run.writer.commit)
        reporter.add_busy("write", time.perf_counter() - t0)
        run.writer = None
        vm.point_id = point.id
        job.restore_points.append(point.id)
        self.journal.clear_chain(dp.volume_urn for dp in vp.disks)
        vm.chain = ("CBT chain holds: next backup incremental" if kind == "cbt"
                    else "standard snapshot: next backup full")

    async def _backup_disk(self, job: JobRecord, run: _VmRun, dp: DiskPlan, bs: int, blocks: list[int],
                           reporter: Reporter) -> None:
        vp, vm, s, c = run.plan, run.progress, self.settings, self.client
        d = run.disks[dp.volume_urn]
        writer = run.writer.add_disk(
            volume_urn=dp.volume_urn, disk_name=dp.disk_name, sequence_num=dp.sequence_num,
            pci_type=dp.pci_type, size_bytes=dp.size_bytes, block_size=bs, storage_type=dp.storage_type,
            datastore_urn=dp.datastore_urn, cbt=dp.cbt if vp.kind == "cbt" else None,
            base_point_id=dp.base_point_id if dp.mode == "incremental" else None)
        if writer.heal_blocks:  # inherited blocks whose chunk is gone: read them again, CBT or not
            blocks = sorted(set(blocks).union(writer.heal_blocks))
            d.blocks_healed = len(writer.heal_blocks)
            vm.blocks_healed += d.blocks_healed
            dp.blocks_planned = d.blocks_planned = len(blocks)
            dp.bytes_planned = d.bytes_planned = sum(min(bs, dp.size_bytes - b * bs) for b in blocks)
            reporter.log(f"{vp.vm_name}/{dp.disk_name}: healing {d.blocks_healed} block(s) whose chunk in "
                         f"base point {dp.base_point_id} is missing or quarantined: reading them again",
                         "warning")
        if not blocks:
            d.state, d.started, d.finished = "done", time.time(), time.time()
            reporter.progress(vm, d, force=True)
            return

        def waiting(reason: str) -> None:
            d.wait_reason = reason
            reporter.state()

        ticket = await self.scheduler.acquire_volume(dp.datastore_urn, f"{job.id}/{dp.volume_urn}", waiting)
        try:
            d.state, d.wait_reason, d.started = "reading", "", time.time()
            reporter.state()
            task_type = "CBTBackup" if vp.kind == "cbt" else "BackupVol"
            # held until the resource is released (here or by the failure cleanup)
            run.host_gate = await self.scheduler.gate.begin_resource(vp.host_urn, waiting)
            key = self.journal.intend(job_id=job.id, vrm=self.vrm, user=self.user, what="resource",
                                      vm_urn=vp.vm_urn, volume_urn=dp.volume_urn, volume_uri=dp.volume_uri,
                                      snapshot_urn=run.snapshot_urn)
            run.resource_key = key
            await self._journal_flush()

            def host_busy(reason: str) -> None:
                d.wait_reason = reason
                reporter.state()

            ref = await self._prepare(dp.volume_uri, dp.volume_urn, task_type, run.snapshot_urn, host_busy)
            run.resource = (dp.volume_uri, ref.task_id, key)
            self.journal.update(key, task_id=ref.task_id, state="created")
            d.wait_reason = ""
            res = await c.wait_backup_resource(dp.volume_uri, ref.task_id, timeout=s.task_timeout)
            transport = c.data_transport(res, size=dp.size_bytes)
            extender = asyncio.create_task(self._extend(dp.volume_uri, ref.task_id))
            try:
                await self._read_blocks(transport, writer, d, vm, bs, blocks, dp.size_bytes, reporter)
            finally:
                extender.cancel()
                await asyncio.gather(extender, return_exceptions=True)
                await transport.aclose()
            try:
                await cleanup.release_resource(c, dp.volume_uri, ref.task_id, wait_gone=s.release_wait_s,
                                               within=self._cleanup_budget(run))
                self.journal.done(key)
            except VrmError as e:  # every block is read and stored: the journal keeps it for the hunter
                self._leftover(job, run, reporter, key, f"backup resource {ref.task_id} of {dp.disk_name} "
                                                        f"not released yet", e)
            run.resource = None
            run.resource_key = None
            self._end_host_gate(run)
            d.state, d.finished = "done", time.time()
            reporter.progress(vm, d, force=True)
            reporter.state()
        finally:
            self.scheduler.release(ticket)

    async def _begin_snapshot_gate(self, run: _VmRun, reporter: Reporter) -> None:
        """A VRM that refuses a CBT snapshot while any resource is prepared on the host (the stricter
        reading of vrm-api.md §16 NOTES) is served by the scheduler's host gate, when told so."""
        vp, vm = run.plan, run.progress

        def gate_wait(reason: str) -> None:
            vm.state, vm.reason = "waiting", reason
            reporter.log(f"{vp.vm_name}: snapshot waits until no backup resource of ours is on its host ({reason})")
            reporter.state()

        run.snapshot_gate = await self.scheduler.gate.begin_snapshot(vp.host_urn, gate_wait,
                                                                     strict=self.settings.host_snapshot_gate)
        if vm.reason == HOST_SNAPSHOT_GATE:
            vm.state, vm.reason = "snapshot", ""
            reporter.state()

    def _end_snapshot_gate(self, run: _VmRun) -> None:
        if run.snapshot_gate:
            run.snapshot_gate = False
            self.scheduler.gate.end_snapshot(run.plan.host_urn)

    def _end_host_gate(self, run: _VmRun) -> None:
        if run.host_gate:
            run.host_gate = False
            self.scheduler.gate.end_resource(run.plan.host_urn)

    async def _prepare(self, volume_uri: str, volume_urn: str, task_type: str, snapshot_urn: str,
                       on_busy: Callable[[str], None]) -> Any:
        """Prepare a resource; the host's 8 sockets may be taken by others (10300412): wait and retry.
        A transient error is retried when the VRM shows no resource prepared meanwhile."""
        s, c = self.settings, self.client
        since = time.time()
        told = False

        def busy(e: VrmError) -> None:
            nonlocal told
            if not told and cleanup.is_busy(e, cleanup.HOST_LIMIT_CODES):
                on_busy(HOST_SOCKETS_BUSY)
                told = True

        return await cleanup.retry(
            lambda: cleanup.create_checked(
                lambda: c.prepare_backup_resource(volume_uri, task_type, snap_urn2=snapshot_urn,
                                                  delay=s.resource_delay),
                lambda: cleanup.find_prepare_tasks(c, volume_urn, since), f"backup resource on {volume_urn}"),
            within=s.busy_retry_s, interval=s.busy_interval, codes=cleanup.BUSY_CODES | cleanup.HOST_LIMIT_CODES,
            cut=False, transient_s=s.read_retry_s, on_retry=busy)

    async def _extend(self, volume_uri: str, task_id: str) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.extend_every)
            try:
                await self.client.extend_backup_resource(volume_uri, task_id, s.resource_delay)
            except VrmError as e:  # not fatal: reads also keep an active resource alive
                log.info("extending backup resource %s failed: %s", task_id, e)

    def _fetch_and_store(self, transport: "BlockTransport", writer: Any, first: int, count: int, bs: int,
                         size: int, name: str) -> tuple[int, list[tuple[str, int]], float, float]:
        """On a worker thread: read blocks [first, first+count) and store each in the repository.
        Reading and hashing on the same thread keeps the bytes off the event loop and lets the read of
        one range overlap the hashing of another (both release the interpreter lock)."""
        offset = first * bs
        length = min(count * bs, size - offset)
        if length <= 0:
            return 0, [], 0.0, 0.0
        t0 = time.perf_counter()
        data = retry_blocking(lambda: transport.read_blocking(offset, length), self.settings.read_retries)
        t1 = time.perf_counter()
        if len(data) != length:
            raise JobError(f"short read on {name}: {len(data)} of {length} bytes at {offset}")
        mv = memoryview(data)
        out = []
        for i in range(count):
            chunk = mv[i * bs:(i + 1) * bs]
            if not len(chunk):
                break
            # the one copy when the range holds several blocks: the repository keeps bytes
            out.append((writer.put_block(first + i, data if count == 1 else chunk.tobytes()), len(chunk)))
        return length, out, t1 - t0, time.perf_counter() - t1

    async def _read_blocks(self, transport: "BlockTransport", writer: Any, d: DiskProgress, vm: VmProgress,
                           bs: int, blocks: list[int], size: int, reporter: Reporter) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        max_blocks = max(1, s.max_range_bytes // bs)
        ranges = coalesce(blocks, max_blocks)
        running: set[asyncio.Future] = set()

        async def worker() -> None:
            for start, count in ranges:  # shared iterator: each range is taken once
                fut = loop.run_in_executor(self._pool, self._fetch_and_store, transport, writer, start, count,
                                           bs, size, d.name)
                running.add(fut)  # left there if we are cancelled meanwhile: waited for below
                n, results, t_read, t_store = await asyncio.shield(fut)
                running.discard(fut)
                reporter.add_busy("read", t_read)
                reporter.add_busy("hash", t_store)
                d.bytes_read += n
                for outcome, k in results:
                    if outcome == "stored":
                        d.bytes_written += k
                    elif outcome == "reused":
                        d.bytes_reused += k
                    else:
                        d.bytes_zero += k
                reporter.progress(vm, d)

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(max(1, s.reads_in_flight)):
                    tg.create_task(worker())
        finally:
            # A failed or cancelled disk still has ranges on worker threads: let them end (within one
            # range) before the caller releases the resource and closes the transport under them.
            pending = [f for f in running if not f.done()]
            if pending:
                await asyncio.wait(pending)
            for f in running:  # their errors are this one's siblings (e.g. every write of a full disk)
                if f.done() and not f.cancelled():
                    f.exception()
        stats = getattr(writer, "stats", None)
        if stats is not None:
            d.bytes_stored = int(getattr(stats, "bytes_stored", 0) or 0)

    async def _journal_flush(self) -> None:
        """Write-ahead across machines: a journal kept elsewhere (the cluster's KV) holds an intent before
        the VRM is asked to create it, so whoever takes over a dead proxy's VM knows what to remove."""
        flush = getattr(self.journal, "flush", None)
        if flush is not None:
            await flush()

    # --- cleanup ------------------------------------------------------------------------------------

    def _cleanup_budget(self, run: _VmRun) -> cleanup.Budget:
        """The VM's one cleanup budget, started by its first cleanup step."""
        if run.cleanup_budget is None:
            s = self.settings
            run.cleanup_budget = cleanup.Budget(s.cleanup_budget_s, floor=s.cleanup_floor_s)
        return run.cleanup_budget

    def _leftover(self, job: JobRecord, run: _VmRun, reporter: Reporter, key: int | None, what: str,
                  error: Exception) -> None:
        """A leftover of a VM whose data is safe: a warning of the job; the journal keeps its record
        (and why) for the agent's snapshot hunter."""
        if key is not None:
            self.journal.update(key, last_error=str(error))
        vm = run.progress
        msg = f"{what}: {error} (queued: the agent retries until the VRM accepts)"
        job.warnings.append(f"{run.plan.vm_name}: {msg}")
        vm.reason = f"{vm.reason}; {msg}" if vm.reason.startswith("warning") else f"warning: {msg}"
        reporter.log(f"{run.plan.vm_name}: {msg}", "warning")

    # --- failure ------------------------------------------------------------------------------------

    async def _fail_cleanup(self, job: JobRecord, run: _VmRun, reporter: Reporter, why: str,
                            exclusive: bool = False) -> None:
        """Release the resource, delete the snapshot, abort the point, mark the chain."""
        vp, vm, s, c = run.plan, run.progress, self.settings, self.client
        vm.state = vm.state if vm.state in ("failed", "cancelled") else "failed"
        for d in run.disks.values():
            if d.state in ("reading", "waiting"):
                d.state = "cancelled" if vm.state == "cancelled" else "failed"
        problems: list[str] = []
        budget = self._cleanup_budget(run)
        if run.resource is not None:
            vol_uri, task_id, key = run.resource
            try:
                await cleanup.release_resource(c, vol_uri, task_id, wait_gone=s.release_wait_s, within=budget)
                if key is not None:
                    self.journal.done(key)
                run.resource = None
            except VrmError as e:
                problems.append(f"backup resource {task_id} not released: {e}")
                if key is not None:
                    self.journal.update(key, last_error=str(e))
        elif run.resource_key is not None:  # prepare may have reached the VRM without us learning its id
            intents = [i for i in getattr(self.journal, "pending", lambda: [])() if i.get("key") == run.resource_key]
            for intent in intents:
                try:
                    await cleanup.cleanup_intent(c, intent, within=budget, release_wait=s.release_wait_s)
                    self.journal.done(run.resource_key)
                except VrmError as e:
                    problems.append(f"backup resource on {intent.get('volume_urn')} not released: {e}")
                    self.journal.update(run.resource_key, last_error=str(e))
        self._end_snapshot_gate(run)
        self._end_host_gate(run)   # the resource is released, or left to the hunter: not ours to wait for
        if run.writer is not None:
            try:
                run.writer.abort()
            except Exception as e:  # the repo's own crash safety covers a failed abort
                problems.append(f"restore point not aborted cleanly: {e}")
            run.writer = None
        if run.snapshot_key is not None:
            intent = {"what": "snapshot", "snapshot_uri": run.snapshot_uri, "snapshot_urn": run.snapshot_urn,
                      "vm": vp.vm_urn, "name": f"fctui-{job.id}-{vp.vm_urn.rsplit(':', 1)[-1]}"}
            try:
                # the snapshot task may still be running (cancel during creation): "busy" answers are
                # retried inside, within the same budget
                await cleanup.cleanup_intent(c, intent, within=budget)
                self.journal.done(run.snapshot_key)
                run.snapshot_key = None
            except VrmNotFoundError:
                self.journal.done(run.snapshot_key)
                run.snapshot_key = None
            except VrmError as e:
                problems.append(f"snapshot {run.snapshot_urn or '(name ' + intent['name'] + ')'} not deleted: {e}")
                self.journal.update(run.snapshot_key, last_error=str(e))
        # How the CBT chain stands: a CBT snapshot taken and not fully backed up consumed a chgID, so the
        # next backup of these disks must be full (vrm-api.md §9.1 incremental validity rule).
        chain_reason = ""
        if exclusive:  # someone else's power/migration/expansion: CBT is (or may be) re-initialised
            chain_reason = f"job {job.id}: {why}"
        elif run.snapshot_cbt:
            chain_reason = f"job {job.id} did not finish after its CBT snapshot ({why})"
        if chain_reason:
            for dp in vp.disks:
                self.journal.mark_chain(dp.volume_urn, chain_reason)
            vm.chain = "CBT chain broken: the next backup of this VM is full"
        else:
            vm.chain = "CBT chain unchanged (no CBT snapshot was taken)"
        if problems:
            msg = "; ".join(problems)
            vm.reason = f"{vm.reason}; cleanup pending: {msg}" if vm.reason else f"cleanup pending: {msg}"
            reporter.log(f"{vp.vm_name}: cleanup pending: {msg}", "error")
        else:
            reporter.log(f"{vp.vm_name}: cleaned up (no snapshot or backup resource left)")
