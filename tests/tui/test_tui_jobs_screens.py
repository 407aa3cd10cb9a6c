"""The review and jobs screens in a minimal test app: recorded job records (no agent needed), a plan built
against the seeded simulator, SVG snapshots at 80x24 and pilot checks of keys and read-only mode.

Deterministic: fixed wall clock, fixed monotonic clock for rates, TZ=UTC, animations off, no user config.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any, Callable

import httpx
import pytest
from textual.app import App

from fctui.agent import AgentClient
from fctui.jobs.model import DiskProgress, JobRecord, VmProgress
from fctui.jobs.pause import PauseEstimator
from fctui.jobs.planner import Plan, add_launch_findings, build_plan
from fctui.jobs.progress import JobsBoard
from fctui.tui.jobs_screen import JobList, JobsScreen, JobsService, render_job_detail
from fctui.tui.review_screen import ReviewScreen, plan_pause, render_review
from fctui.tui.testing import wait_until
from tests.tui.test_tui_jobs_agent import agent_client, es  # noqa: F401  (fixtures: a real agent, a simulator)
from tests.tui.test_tui_snapshots import SIZES
from tests.servers import sim_control

MIB = 1 << 20
GIB = 1 << 30
NOW = 1_780_000_000.0


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FCTUI_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


class Tick:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class ScreenApp(App[None]):
    """Shows one screen; ``read_only`` like the console."""

    def __init__(self, make: Callable[["ScreenApp"], Any], read_only: bool = False) -> None:
        super().__init__()
        self.make = make
        self.read_only = read_only
        self.result: Any = "unset"
        self.animation_level = "none"

    def on_mount(self) -> None:
        def done(value: Any) -> None:
            self.result = value
        self.push_screen(self.make(self), done)


# --- recorded job records ----------------------------------------------------------------------

def disk(vol: str, name: str, mode: str, state: str, planned: int | None, read: int = 0, written: int = 0,
         reused: int = 0, zero: int = 0, reason: str = "", wait: str = "") -> DiskProgress:
    return DiskProgress(volume=vol, name=name, mode=mode, state=state, bytes_planned=planned, bytes_read=read,
                        bytes_written=written, bytes_reused=reused, bytes_zero=zero, bytes_stored=written // 2,
                        reason=reason, wait_reason=wait)


def running_job(job_id: str = "20260528-1200-aa01", vms: int = 2, age: float = 300) -> JobRecord:
    """web-01 reading its second disk, db-02 done (every disk planned: the ETA shows)."""
    job = JobRecord(id=job_id, state="running", created=NOW - age, started=NOW - age + 10,
                    targets=["web-01", "db-02"])
    web = VmProgress(urn="urn:sites:1:vms:i-1", name="web-01", host="cna-01", kind="cbt", state="reading",
                     pause_s=1.4)
    web.disks = [
        disk("urn:v1", "disk1", "incremental", "done", 512 * MIB, 512 * MIB, 128 * MIB, 300 * MIB, 84 * MIB,
             reason="CBT chain intact since restore point 20260527T1200Z-01 (chgID 7)"),
        disk("urn:v2", "disk2", "full", "reading", 2 * GIB, 700 * MIB, 400 * MIB, 100 * MIB, 200 * MIB,
             reason="CBT chain broken: chgID reset (7 -> 1), e.g. host reboot"),
        disk("urn:v3", "disk3", "excluded", "excluded", None, reason="independent disk: not part of VM snapshots"),
    ]
    job.vms = [web]
    if vms > 1:
        db = VmProgress(urn="urn:sites:1:vms:i-2", name="db-02", host="cna-02", kind="cbt", state="done",
                        pause_s=0.9, point_id="20260528T1201Z-02", chain="CBT chain holds: next backup incremental")
        db.disks = [disk("urn:v4", "disk1", "incremental", "done", 64 * MIB, 64 * MIB, 10 * MIB, 54 * MIB,
                         reason="CBT chain intact since restore point 20260527T1201Z-02 (chgID 3)")]
        job.vms.append(db)
    for i, msg in enumerate(["submitted: web-01, db-02", "web-01: CBTbackup snapshot ready (pause 1.40 s)",
                             "db-02: restore point 20260528T1201Z-02 committed", "web-01/disk1 done"]):
        job.add_log(msg, when=NOW - age + 10 + i * 10)
    return job


def queued_job() -> JobRecord:
    """A job whose only VM waits for a backup socket on its host (not planned yet: no ETA)."""
    job = JobRecord(id="20260528-1150-cc03", state="running", created=NOW - 600, started=NOW - 590,
                    targets=["erp-04"])
    vm = VmProgress(urn="urn:sites:1:vms:i-4", name="erp-04", host="cna-01", kind="cbt", state="waiting",
                    reason="host-sockets-busy: cna-01 already has 8 backup resources")
    vm.disks = [disk("urn:v6", "disk1", "full", "waiting", None, reason="no earlier restore point of this VM",
                     wait="host-sockets-busy")]
    job.vms = [vm]
    job.add_log("erp-04: queued (host-sockets-busy)", when=NOW - 590)
    return job


def failed_job() -> JobRecord:
    job = JobRecord(id="20260528-1100-bb02", state="failed", created=NOW - 4000, started=NOW - 3990,
                    finished=NOW - 3900, targets=["app-03"],
                    error="app-03: the VM changed state from running to stopped during the backup (an operation "
                          "by someone else; power on/off is mutually exclusive with a backup)")
    vm = VmProgress(urn="urn:sites:1:vms:i-3", name="app-03", host="cna-02", kind="cbt", state="failed",
                    pause_s=3.8, reason=job.error.split(": ", 1)[1],
                    chain="CBT chain broken: the next backup of this VM is full")
    vm.disks = [disk("urn:v5", "disk1", "full", "failed", GIB, 300 * MIB, 200 * MIB,
                     reason="no earlier restore point of this VM")]
    job.vms = [vm]
    job.add_log("submitted: app-03", when=NOW - 3990)
    job.add_log("app-03: failed: the VM changed state from running to stopped", "error", when=NOW - 3905)
    job.add_log("app-03: cleaned up (no snapshot or backup resource left)", when=NOW - 3900)
    return job


def service_with(app: App, jobs: list[JobRecord], clock: Tick) -> JobsService:
    svc = JobsService(app, agent=AgentClient("/nonexistent/agent.sock"), clock=clock, wall=lambda: NOW,
                      start_agent=False, vm_size=lambda urn: (2, 40.0))
    for job in jobs:
        d = job.to_dict()
        svc.board.apply({"event": "job", "job": d})
    # a few seconds of progress so rates, ETA and the sparkline have history
    for job in jobs:
        if job.is_final:
            continue
        for step in range(1, 6):
            clock.t += 1.0
            for vm in job.vms:
                for dk in vm.disks:
                    if dk.state == "reading":
                        svc.board.apply({"event": "progress", "job": job.id, "vm": vm.urn, "volume": dk.volume,
                                         "state": "reading", "bytes_planned": dk.bytes_planned,
                                         "bytes_read": dk.bytes_read + step * 40 * MIB,
                                         "bytes_written": dk.bytes_written + step * 15 * MIB,
                                         "bytes_reused": dk.bytes_reused, "bytes_zero": dk.bytes_zero,
                                         "bytes_stored": dk.bytes_stored})
    svc.connected = True
    return svc


def jobs_app(jobs: list[JobRecord], read_only: bool = False, select: str | None = None) -> ScreenApp:
    clock = Tick()

    def make(app: ScreenApp) -> JobsScreen:
        svc = service_with(app, jobs, clock)
        app.jobs = svc  # type: ignore[attr-defined]
        return JobsScreen(svc, select=select, wall=lambda: NOW)
    return ScreenApp(make, read_only=read_only)


# --- a plan against the simulator ----------------------------------------------------------------

def sim_plan() -> Plan:
    return asyncio.run(sim_plan_async())


async def sim_plan_async() -> Plan:
    from fctui.sim import SimConfig, Simulator, create_app
    from fctui.vrm import VrmClient

    if True:
        sim = Simulator(SimConfig(vms=30, seed=1, sector_of_block=128, time_scale=100.0))
        edges = sim.edge_cases
        ready = edges["ready"][:2]
        blocked = next(iter(v for k, v in sorted(edges.items()) if k == "disk-ide"))[:1]
        async with VrmClient("http://vrm.sim", sim.config.user, sim.config.password,
                             transport=httpx.ASGITransport(app=create_app(sim))) as c:
            plan = await build_plan(c, ready + blocked + ["no-such-vm"], None)
        first = plan.runnable[0]
        from fctui.rules.launch import BusinessHours
        add_launch_findings(plan, host_connections={first.host_urn: 8},
                            business_hours=BusinessHours.parse("mon-fri 08:00-18:00"),
                            now_local=datetime(2026, 5, 28, 10, 30))
        return plan


# --- snapshots -----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_review_screen_snapshot(snap_compare, size):
    plan = sim_plan()
    est = PauseEstimator()
    app = ScreenApp(lambda a: ReviewScreen(plan, lambda vp: plan_pause(vp, est)))
    assert snap_compare(app, terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_jobs_screen_mid_run_snapshot(snap_compare, size):
    app = jobs_app([running_job(), queued_job(), failed_job()])
    assert snap_compare(app, terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_failed_job_snapshot(snap_compare, size):
    app = jobs_app([running_job(), queued_job(), failed_job()], select="20260528-1100-bb02")
    assert snap_compare(app, terminal_size=size)


# --- content and keys ----------------------------------------------------------------------------

def test_review_text_says_kind_modes_exclusions_pause_and_skips():
    plan = sim_plan()
    text = render_review(plan, lambda vp: plan_pause(vp, PauseEstimator())).plain
    assert len(plan.runnable) == 2 and plan.refused and plan.unresolved
    for vp in plan.runnable:
        assert vp.vm_name in text
        for d in vp.disks:
            assert d.reason in text
    assert "CBT snapshot" in text and "pause" in text and "no history yet" in text
    assert "business-hours" in text and "host-sockets-busy" in text
    assert "Skipped (not backed up)" in text and plan.refused[0].vm_name in text
    assert plan.refused[0].reason in text
    assert "no-such-vm" in text


async def test_review_confirm_and_cancel_and_read_only():
    plan = await sim_plan_async()
    app = ScreenApp(lambda a: ReviewScreen(plan))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")
        await pilot.pause()
        assert app.result is True
    app = ScreenApp(lambda a: ReviewScreen(plan))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("escape")
        await pilot.pause()
        assert app.result is False
    app = ScreenApp(lambda a: ReviewScreen(plan), read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")
        await pilot.pause()
        assert app.result == "unset"          # confirm is hidden and inert in read-only mode
        assert "Start backup" not in _footer(app)


def test_review_with_nothing_runnable_refuses_confirm():
    plan = sim_plan()
    plan.vms = plan.refused
    assert "Nothing can be backed up" in render_review(plan).plain


def _footer(app: App) -> str:
    return "\n".join(s.text for s in app.screen._compositor.render_strips())


async def test_jobs_screen_keys_select_jobs_and_render_in_place():
    jobs = [running_job(f"2026-run-{i}", age=300 - i) for i in range(8)] + [failed_job()]
    app = jobs_app(jobs)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, JobsScreen)
        jl = screen.query_one(JobList)
        assert jl.order[:8] == [f"2026-run-{i}" for i in range(7, -1, -1)]   # running first, newest first
        assert jl.order[-1] == "20260528-1100-bb02"
        first = jl.cursor_id
        before = screen.renders
        await pilot.press("down")
        assert jl.cursor_id != first and screen.renders == before + 1
        await pilot.press(*["down"] * 8)
        assert jl.cursor_id == "20260528-1100-bb02"
        text = _footer(app)
        assert "app-03" in text and "failed" in text
        # an event for a job re-renders on the next tick, not per event
        svc = app.jobs  # type: ignore[attr-defined]
        svc.board.apply({"event": "log", "job": "20260528-1100-bb02", "time": NOW, "level": "info",
                         "message": "hello from the agent"})
        svc._changed("20260528-1100-bb02")
        await wait_until(pilot, lambda: "hello from the agent" in _footer(app))


async def test_jobs_screen_read_only_hides_cancel_and_drills():
    writable = jobs_app([running_job()])
    async with writable.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "Stop job" in _footer(writable)     # what read-only mode hides
    app = jobs_app([running_job()], read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "Stop job" not in _footer(app)
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)   # no confirmation dialog opened


async def test_cancel_needs_confirmation(es: Any, agent_client: AgentClient) -> None:
    """A real agent runs a slowed backup: "n" and escape on the confirmation leave it running (it goes on
    reading; the agent still has it running), only "yes" cancels it."""
    from fctui.tui.dialogs import ConfirmScreen
    from tests.tui.test_tui_jobs_agent import console, launch, multi_disk_vm, slow_data, until
    from fctui.tui.jobs_screen import jobs_service
    from fctui.tui.testing import wait_loaded

    vm = multi_disk_vm(es)
    async with sim_control(es.url) as http:  # thousands of scattered blocks to read: the
        for d in es.sim.vms[vm.rsplit(":", 1)[1]].disks:    # backup runs for minutes unless cancelled
            (await http.post(f"/sim/volumes/{d.volume.id}/write", json={"blocks": 4000})).raise_for_status()
    await slow_data(es, 100)
    app = console(es)
    try:
        async with app.run_test(size=(100, 40)) as pilot:
            await wait_loaded(pilot, app)
            job_id = await launch(pilot, app, vm)
            svc = jobs_service(app)

            def read() -> int:
                return svc.board.get(job_id).totals()["bytes_read"]

            await until(pilot, lambda: svc.board.get(job_id).state == "running" and read() > 0)
            for refuse in ("escape", "n"):
                await pilot.press("c")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
                await pilot.press(refuse)
                await until(pilot, lambda: isinstance(app.screen, JobsScreen))
                # the job goes on reading (a cancel, had one been sent, ends it within one request)
                before = read()
                await until(pilot, lambda: read() > before or svc.board.get(job_id).is_final)
                assert svc.board.get(job_id).state == "running", refuse
                assert (await agent_client.request("get", job=job_id))["job"]["state"] == "running", refuse
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.click("#yes")
            await until(pilot, lambda: svc.board.get(job_id).is_final)
            assert svc.board.get(job_id).state == "cancelled"
            assert (await agent_client.request("get", job=job_id))["job"]["state"] == "cancelled"
    finally:
        await slow_data(es, 0)


def test_job_detail_shows_bytes_pause_and_wait_reasons():
    clock = Tick()
    board = JobsBoard(clock)
    job = running_job()
    board.apply({"event": "job", "job": job.to_dict()})
    assert "ETA" not in render_job_detail(board.get(job.id), board.figures(job.id), now=NOW).plain  # no rate yet
    clock.t += 2
    board.apply({"event": "progress", "job": job.id, "vm": "urn:sites:1:vms:i-1", "volume": "urn:v2",
                 "state": "reading", "bytes_planned": 2 * GIB, "bytes_read": 780 * MIB, "bytes_written": 430 * MIB})
    est = PauseEstimator()
    text = render_job_detail(board.get(job.id), board.figures(job.id), now=NOW,
                             pause_of=lambda vm: est.estimate(vm.host, 2, 40.0)).plain
    assert "planned" in text and "reused" in text and "zero" in text and "stored" in text
    assert "observed 1.4 s" in text and "est " in text
    assert "db-02" in text and "CBT chain holds" in text and "ETA" in text
    assert "bottleneck: not reported by the runner" in text and "independent disk" in text
    q = queued_job()
    board.apply({"event": "job", "job": q.to_dict()})
    text = render_job_detail(q, board.figures(q.id), now=NOW).plain
    assert "waiting (host-sockets-busy)" in text and "planning (bytes known after each snapshot)" in text
    assert "bottleneck: scheduler: 1 VM(s) wait for a backup socket" in text


async def test_inventory_read_only_hides_backup_restore_and_opens_nothing():
    from fctui.tui.testing import make_app, wait_loaded
    app = make_app(vms=30, read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_loaded(pilot, app)
        main = app.screen
        for key in ("b", "r"):
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is main
        active = {ab.binding.id for ab in main.active_bindings.values()}
        assert "vm.backup" not in active and "vm.restore" not in active and "view.jobs" in active


async def test_inventory_keys_open_jobs_and_the_restore_wizard():
    from fctui.tui.restore_wizard import RestoreWizard
    from fctui.tui.testing import make_app, wait_loaded
    app = make_app(vms=30)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_loaded(pilot, app)
        await pilot.press("J")
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, RestoreWizard)
        assert "No restore point" in _footer(app)           # nothing backed up in this fresh repository
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, RestoreWizard)


def test_queue_counts_from_running_jobs():
    from types import SimpleNamespace
    from fctui.tui.jobs_screen import datastore_counts, host_counts
    board = JobsBoard(Tick())
    board.apply({"event": "job", "job": running_job().to_dict()})
    board.apply({"event": "job", "job": failed_job().to_dict()})
    inv = {"urn:sites:1:vms:i-1": SimpleNamespace(disks=[SimpleNamespace(volume_urn="urn:v2", datastore_urn="ds-1"),
                                                         SimpleNamespace(volume_urn="urn:v1", datastore_urn="ds-1")])}
    assert datastore_counts(board, inv) == {"ds-1": 1}          # only the disk being read holds a slot
    plan = SimpleNamespace(vms=[SimpleNamespace(host_name="cna-01", host_urn="urn:hosts:1"),
                                SimpleNamespace(host_name="cna-02", host_urn="urn:hosts:2")])
    assert host_counts(board, plan) == {"urn:hosts:1": 1}        # web-01 reads on cna-01; the failed job holds none


async def test_jobs_screen_shows_warnings_and_the_cleanup_queue():
    """A job whose snapshot the VRM would not delete: "succeeded with warnings", and what the agent's
    snapshot hunter has queued, with why and when it tries next (issue 12 §4)."""
    job = failed_job()
    job.state, job.error = "succeeded", ""
    job.vms[0].state, job.vms[0].reason = "done", "warning: snapshot urn:s:1 not deleted yet: HTTP 500 (queued)"
    job.warnings = ["app-03: snapshot urn:s:1 not deleted yet: HTTP 500 (queued)"]
    app = jobs_app([job], select=job.id)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        svc = app.jobs  # type: ignore[attr-defined]
        text = _footer(app)
        assert "warnings" in text and "succeeded with warnings" in text and "not deleted yet" in text
        assert "queued for cleanup" not in text
        svc.apply_event({"event": "cleanup", "pending": [
            {"key": 1, "job": job.id, "vrm": "https://vrm", "user": "u", "what": "snapshot",
             "snapshot_urn": "urn:s:1", "error": "VRM refused DELETE (HTTP 500)", "next_try": NOW + 30}]})
        await wait_until(pilot, lambda: "1 leftover(s) queued for cleanup" in _footer(app))
        text = _footer(app)
        assert "1 leftover(s) queued for cleanup" in text
        assert "queued for cleanup: snapshot urn:s:1" in text and "HTTP 500" in text
        assert "the agent retries in 30 s" in " ".join(text.split())
        svc.apply_event({"event": "cleanup", "pending": []})  # the hunter removed it
        await wait_until(pilot, lambda: "queued for cleanup" not in _footer(app))
