"""Jobs in the console with a real job agent (a subprocess on its own Unix socket) and a simulated VRM on
a loopback socket: launch a backup through the review and watch it finish, cancel one, close the console
while a job runs and reattach from a new one, and a power-off drill that fails the job cleanly so the
next plan reads the disks in full with the reason.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from tests.conftest import AgentProc, small_disks
from tests.servers import sim_control

from fctui.config import Config
from fctui.agent import AgentClient
from fctui.tui.app import FctuiApp
from textual.widgets import OptionList

from fctui.tui.drills import DrillScreen
from fctui.tui.jobs_screen import JobsScreen, jobs_service, make_plan
from fctui.tui.review_screen import ReviewScreen
from fctui.tui.dialogs import ConfirmScreen
from fctui.tui.source import ConnectSpec
from fctui.tui.testing import FixedClock, wait_loaded


@pytest.fixture
def es() -> Iterator[Any]:
    from fctui.sim import EmbeddedSimulator
    cfg = small_disks(0.005)
    with EmbeddedSimulator(cfg) as server:
        yield server


@pytest.fixture
async def agent_client(agent: AgentProc) -> AgentClient:
    """The console's tests talk to a started agent."""
    return await agent.start()


def console(es: Any) -> FctuiApp:
    spec = ConnectSpec(url=es.url, user=es.sim.config.user, password=es.sim.config.password, label="demo")
    app = FctuiApp(spec=spec, config=Config(), clock=FixedClock(), auto_refresh=False, refresh_interval=3600,
                   watch_tty=False)
    app.animation_level = "none"
    return app


async def until(pilot: Any, cond: Callable[[], bool], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise TimeoutError("condition not reached in time")
        await pilot.pause(0.05)


def multi_disk_vm(es: Any) -> str:
    return next(u for u in es.sim.edge_cases["ready"] if len(es.sim.vms[u.rsplit(":", 1)[1]].disks) > 1)


def text(app: Any) -> str:
    return "\n".join(s.text for s in app.screen._compositor.render_strips())


async def slow_data(es: Any, ms: int) -> None:
    """Make every data transfer slow so a job is still running when the test acts on it."""
    async with sim_control(es.url) as c:
        if ms:
            r = await c.post("/sim/faults", json={"path": "^/(?!sim/|service/).*", "latency_ms": ms})
        else:
            r = await c.delete("/sim/faults")
        r.raise_for_status()


async def launch(pilot: Any, app: FctuiApp, vm: str) -> str:
    """Mark the VM, b -> review -> Enter; returns the job id the jobs screen opened on."""
    app.store.marks.clear()
    app.store.marks.add(vm)
    await pilot.press("b")
    await until(pilot, lambda: isinstance(app.screen, ReviewScreen))
    review = app.screen
    assert isinstance(review, ReviewScreen) and review.plan.runnable[0].vm_urn == vm
    known = set(jobs_service(app).board.jobs)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, JobsScreen) and (j := app.screen.selected()) is not None
                and j.id not in known)
    return app.screen.selected().id


async def test_launch_backup_and_watch_it_finish(es: Any, agent_client: AgentClient) -> None:
    vm = multi_disk_vm(es)
    app = console(es)
    async with app.run_test(size=(100, 40), notifications=True) as pilot:
        await wait_loaded(pilot, app)
        job_id = await launch(pilot, app, vm)
        svc = jobs_service(app)
        await until(pilot, lambda: (j := svc.board.get(job_id)) is not None and j.is_final)
        job = svc.board.get(job_id)
        assert job.state == "succeeded", job.error
        assert job.vms[0].point_id and job.vms[0].pause_s is not None
        # the jobs screen shows the end in place (no toast over it) on its next paint
        await until(pilot, lambda: "succeeded" in text(app) and "observed" in text(app))
        assert any(j == job_id for j, _ in svc.notices)       # the end was announced
        t = job.totals()
        assert t["bytes_read"] == t["bytes_planned"] > 0
    # the agent agrees
    rec = (await agent_client.request("get", job=job_id))["job"]
    assert rec["state"] == "succeeded"


async def test_cancel_a_running_job_with_confirmation(es: Any, agent_client: AgentClient) -> None:
    vm = multi_disk_vm(es)
    await slow_data(es, 150)
    app = console(es)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_loaded(pilot, app)
        job_id = await launch(pilot, app, vm)
        svc = jobs_service(app)
        await until(pilot, lambda: (j := svc.board.get(job_id)) is not None and j.state == "running")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.click("#yes")
        await until(pilot, lambda: svc.board.get(job_id).is_final)
        assert svc.board.get(job_id).state == "cancelled"
    await slow_data(es, 0)
    stats = (await sim_control(es.url).get("/sim/stats")).json()
    assert not stats["liveSnapshotsPerVm"].get(vm) and not any(stats["resourcesPerHost"].values())


async def test_reattach_after_restarting_the_console(es: Any, agent_client: AgentClient) -> None:
    vm = multi_disk_vm(es)
    await slow_data(es, 60)
    app = console(es)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_loaded(pilot, app)
        job_id = await launch(pilot, app, vm)
        await until(pilot, lambda: jobs_service(app).board.get(job_id).state == "running")
    # the console is gone; the agent keeps the job running
    assert (await agent_client.request("get", job=job_id))["job"]["state"] == "running"
    await slow_data(es, 0)
    app2 = console(es)
    async with app2.run_test(size=(100, 40)) as pilot:
        svc = jobs_service(app2)                               # what the console does at start
        await until(pilot, lambda: svc.board.get(job_id) is not None)
        app2.push_screen(JobsScreen(svc))
        await until(pilot, lambda: svc.board.get(job_id).is_final)
        assert svc.board.get(job_id).state == "succeeded"
        assert any(j == job_id for j, _ in svc.notices)        # followed live to its end
        await until(pilot, lambda: job_id in text(app2) or "succeeded" in text(app2), timeout=15)


async def test_drill_fails_the_job_cleanly_and_next_plan_is_full(es: Any, agent_client: AgentClient) -> None:
    vm = multi_disk_vm(es)
    app = console(es)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_loaded(pilot, app)
        svc = jobs_service(app)
        first = await launch(pilot, app, vm)                   # a restore point to be incremental from
        await until(pilot, lambda: svc.board.get(first).is_final)
        assert svc.board.get(first).state == "succeeded"
        plan = await make_plan(app, [vm])
        assert all(d.mode == "incremental" for d in plan.vms[0].disks)
        async with sim_control(es.url) as http:   # the guest writes: something to read
            for d in es.sim.vms[vm.rsplit(":", 1)[1]].disks:
                r = await http.post(f"/sim/volumes/{d.volume.id}/write", json={"blocks": 200})
                r.raise_for_status()
        await slow_data(es, 150)
        app.pop_screen()
        second = await launch(pilot, app, vm)
        await until(pilot, lambda: (v := svc.board.get(second).vm(vm)) is not None
                    and any(d.bytes_read > 0 for d in v.disks))
        await pilot.press("x")                                 # the drill menu of the jobs screen (demo only)
        await until(pilot, lambda: isinstance(app.screen, DrillScreen))
        options = app.screen.query_one(OptionList)
        assert options.get_option_at_index(0).id == f"power-off|{vm}"
        await pilot.press("enter")                             # power-off by someone else
        await until(pilot, lambda: svc.board.get(second).is_final)
        await slow_data(es, 0)
        job = svc.board.get(second)
        assert job.state == "failed" and job.vms[0].state == "failed"
        # the watchdog names the power-off by what it sees first: the VM's state moving (to "stopping" or
        # already "stopped"), or, when it looks between the task's creation and the state change, the task
        assert re.fullmatch(r"the VM changed state from running to (stopping|stopped) during the backup "
                            r"\(an operation by someone else; power on/off is mutually exclusive with a backup\)"
                            r"|other-admin started StopVm on the VM during the backup \(mutually exclusive with a "
                            r"backup\)", job.vms[0].reason), job.vms[0].reason
        assert job.vms[0].chain == "CBT chain broken: the next backup of this VM is full"
        stats = (await sim_control(es.url).get("/sim/stats")).json()
        assert not stats["liveSnapshotsPerVm"].get(vm) and not any(stats["resourcesPerHost"].values())
        sim_vm = es.sim.vms[vm.rsplit(":", 1)[1]]
        async with sim_control(es.url) as http:   # the owner powers it on again
            for _ in range(200):                               # (requests make the simulator's tasks advance)
                if sim_vm.status == "stopped" and not (sim_vm.busy_task and sim_vm.busy_task.active):
                    break
                await http.get("/sim/info")
                await asyncio.sleep(0.05)
            r = await http.post(f"/sim/vms/{vm}/operations", json={"op": "power-on"})
            r.raise_for_status()
            for _ in range(200):
                if sim_vm.status == "running":
                    break
                await http.get("/sim/info")
                await asyncio.sleep(0.05)
        assert sim_vm.status == "running"
        plan = await make_plan(app, [vm])
        disks = plan.vms[0].disks
        # every disk of the VM is read in full, and the reason names the power-off (the VRM's task list)
        assert len(disks) == len(sim_vm.disks) > 1
        assert [(d.mode, d.reason) for d in disks] == [("full", "CBT chain broken: all disks: power-off")] * len(disks)


async def test_restore_from_the_inventory_runs_in_the_agent(es: Any, agent_client: AgentClient) -> None:
    """r on a backed-up VM: the wizard plans in the console, the agent restores, the result verifies."""
    from fctui.tui.restore_wizard import RestoreWizard
    from fctui.tui.widgets.vmtable import VmTable
    vm = next(u for u in es.sim.edge_cases["ready"] if len(es.sim.vms[u.rsplit(":", 1)[1]].disks) == 1)
    app = console(es)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_loaded(pilot, app)
        svc = jobs_service(app)
        backup = await launch(pilot, app, vm)
        await until(pilot, lambda: svc.board.get(backup).is_final)
        app.pop_screen()
        assert app.screen.query_one(VmTable).move_to_key(vm)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RestoreWizard))
        w = app.screen
        assert isinstance(w, RestoreWizard) and w.ctx.service is svc
        for step in ("point", "target", "map"):
            await until(pilot, lambda: w.step == step and not w.busy)
            await pilot.press("enter")
            if step == "target":                               # the new VM's name, as offered
                await until(pilot, lambda: w.naming)
                await pilot.press("enter")
        await until(pilot, lambda: w.step == "checks" and not w.busy)
        await pilot.press("enter")                             # -> review
        await until(pilot, lambda: w.step == "review")
        await pilot.press("enter")                             # -> confirm
        await until(pilot, lambda: w.step == "confirm")
        await pilot.press("enter")                             # start: the agent runs it
        await until(pilot, lambda: w.step == "result", timeout=90)
        assert w.job is not None and w.job.type == "restore" and w.job.state == "succeeded", w.job.error
        assert w.result["volumes"] and all(v["verified"] for v in w.result["volumes"])
        assert svc.board.get(w.job.id) is not None             # a job like the others, in the jobs list


async def test_agent_demo_starter_puts_the_demo_vrm_in_the_agent(dirs: dict[str, str]) -> None:
    """The demo's VRM lives in the agent: it answers after the console's side is gone."""
    from fctui.tui.jobs_screen import agent_demo_starter
    client = AgentClient(Path(dirs["FCTUI_RUNTIME_DIR"]) / "agent.sock")
    try:
        spec, stop = await asyncio.to_thread(agent_demo_starter(5))
        stop()
        assert spec.label == "demo"
        hello = await client.request("hello")
        assert hello["demo"]["url"] == spec.url
        async with sim_control(spec.url) as http:
            assert (await http.get("/sim/info")).status_code == 200
    finally:
        try:
            await client.request("shutdown")
        except AgentError:
            pass
        for _ in range(100):           # the agent removes its socket on the way out
            if not (Path(dirs["FCTUI_RUNTIME_DIR"]) / "agent.sock").exists():
                break
            await asyncio.sleep(0.05)
