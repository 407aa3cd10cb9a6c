"""The restore walkthrough against the simulator and a real repository: walk it to the end (a new VM
whose disks verify), go back and forth, abort at every step and show the VRM unchanged, type the name to
overwrite, and SVG snapshots of every step at 80x24.

The restore points come from real backups (fctui.jobs.runner) with a frozen wall clock and fixed point
ids so the pictures are stable; VRM calls go over in-process HTTP (httpx.ASGITransport).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from textual.app import App

from fctui.jobs.journal import MemoryJournal
from fctui.jobs.model import DiskProgress, JobRecord, VmProgress
from fctui.jobs.planner import build_plan
from fctui.jobs.restore import RestoreSettings
from fctui.jobs.runner import BackupRunner, Reporter, RunnerSettings
from fctui.repo import Repository
from fctui.sim import OffsetClock, SimConfig, Simulator, create_app
from fctui.tui.restore_wizard import RestoreContext, RestoreWizard
from fctui.vrm import VrmClient
from tests.tui.test_tui_snapshots import SIZES

T0 = 1_780_000_000.0
MIB = 1 << 20


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


class FrozenTime:
    """The ``time`` module with a settable wall clock (restore point times and ids)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def time(self) -> float:
        return self.t

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def fast_settings() -> RunnerSettings:
    return RunnerSettings(watch_interval=0.05, busy_retry_s=1.0, busy_interval=0.05, task_interval=0.02,
                          release_wait_s=5.0, cleanup_within_s=10.0)


def restore_settings() -> RestoreSettings:
    return RestoreSettings(task_interval=0.02, busy_retry_s=1.0, busy_interval=0.05, release_wait_s=5.0,
                           cleanup_within_s=10.0)


def sim_client(sim: Simulator) -> VrmClient:
    return VrmClient("http://vrm.sim", sim.config.user, sim.config.password,
                     transport=httpx.ASGITransport(app=create_app(sim)))


class World:
    """A seeded simulator with two restore points (full, then incremental) of a three-disk VM."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, disks: str = "many") -> None:
        import fctui.jobs.runner as runner_mod
        import fctui.repo.repository as repo_mod
        # a restore point's time is its snapshot's time on the VRM: the simulator's clock starts at T0
        vrm_clock = OffsetClock(start=T0)
        self.sim = Simulator(SimConfig(vms=30, seed=1, sector_of_block=128, time_scale=100.0, edge_disk_gb=1,
                                       edge_fill=0.005), clock=vrm_clock)
        self.repo_path = tmp / "repo"
        frozen = FrozenTime(T0)
        counter = itertools.count(1)
        monkeypatch.setattr(runner_mod, "time", frozen)
        monkeypatch.setattr(repo_mod, "secrets",
                            type("S", (), {"token_hex": staticmethod(lambda n=4: f"{next(counter):0{2 * n}x}")}))
        self.vm_urn = next(u for u in self.sim.edge_cases["ready"]
                           if (len(self.sim.vms[u.rsplit(":", 1)[1]].disks) > 1) == (disks == "many"))

        async def make() -> None:
            repo = Repository.open(self.repo_path)
            async with sim_client(self.sim) as c:
                for i in range(2):
                    frozen.t = T0 + i * 3600
                    if i:
                        vrm_clock.advance(T0 + i * 3600 - vrm_clock.now())
                    plan = await build_plan(c, [self.vm_urn], repo)
                    job = JobRecord(id=f"j{i}", targets=[self.vm_urn])
                    runner = BackupRunner(c, repo, journal=MemoryJournal(), settings=fast_settings())
                    try:
                        await runner.run(job, plan, Reporter(job))
                    finally:
                        runner.close()
                    assert job.state == "succeeded", job.error
            repo.close()
        asyncio.run(make())
        monkeypatch.setattr(runner_mod, "time", time)
        self.points = sorted(Repository.open(self.repo_path).points(self.vm_urn), key=lambda p: p.created)
        assert [p.disks[0].mode for p in self.points] == ["full", "incremental"]

    def context(self) -> RestoreContext:
        return RestoreContext(sim_client(self.sim), Repository.open(self.repo_path), settings=restore_settings(),
                              journal=MemoryJournal())

    async def listing(self) -> tuple[list[tuple[str, str]], list[tuple[str, int | None]]]:
        """What a user would compare: every VM (and its state) and every volume (and its size)."""
        async with sim_client(self.sim) as c:
            site = (await c.sites())[0].uri
            vms = sorted((v.urn, v.status) for v in await c.vms(site, templates=None))
            vols = sorted((v.urn, getattr(v, "quantity_gb", None)) for v in await c.volumes(site))
        return vms, vols


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Shared by the tests that change nothing on the VRM (they compare listings before/after)."""
    with pytest.MonkeyPatch.context() as mp:
        w = World(tmp_path_factory.mktemp("wizard"), mp)
    yield w


@pytest.fixture
def fresh_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """For the test that really restores (it creates a VM and volumes): a one-disk VM keeps it quick."""
    return World(tmp_path, monkeypatch, disks="one")


class WizardApp(App[None]):
    def __init__(self, make: Callable[[], RestoreWizard], read_only: bool = False) -> None:
        super().__init__()
        self.make = make
        self.read_only = read_only
        self.animation_level = "none"
        self.closed = False

    def on_mount(self) -> None:
        def done(_: Any) -> None:
            self.closed = True
        self.push_screen(self.make(), done)


def wizard_app(world: World, read_only: bool = False) -> WizardApp:
    return WizardApp(lambda: RestoreWizard(world.context(), world.vm_urn, clock=lambda: T0 + 7200),
                     read_only=read_only)


def text(app: App) -> str:
    return "\n".join(s.text for s in app.screen._compositor.render_strips())


async def until(pilot: Any, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise TimeoutError("condition not reached")
        await pilot.pause(0.02)


def wiz(app: App) -> RestoreWizard:
    screen = app.screen
    assert isinstance(screen, RestoreWizard)
    return screen


async def settle(pilot: Any, app: App) -> None:
    await until(pilot, lambda: not isinstance(app.screen, RestoreWizard) or not wiz(app).busy)
    await pilot.pause()


async def to_step(pilot: Any, app: App, step: str, target: str = "new") -> None:
    """Drive the wizard from the start to ``step`` (newest point, the first compatible datastore)."""
    order = ["point", "target", "map", "checks", "review", "confirm"]
    await settle(pilot, app)
    w = wiz(app)
    while w.step != step:
        if w.step == "point":
            await pilot.press("enter")
        elif w.step == "target":
            downs = {"new": 0, "original": 1, "files": 2, "disk": 3}[target]
            await pilot.press(*["down"] * downs, "enter")
        elif w.step == "map":
            await pilot.press("enter")
        elif w.step in ("checks", "review"):
            await pilot.press("enter")
        else:
            raise AssertionError(f"cannot go past {w.step}")
        await settle(pilot, app)
        assert order.index(w.step) <= order.index(step) or w.step == step


# --- walking it ----------------------------------------------------------------------------------------

async def test_walk_to_a_new_vm_and_verify(fresh_world: World):
    world = fresh_world
    before = await world.listing()
    app = wizard_app(world)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_step(pilot, app, "confirm")
        w = wiz(app)
        assert w.point.id == world.points[-1].id          # the newest point is offered first
        assert len(w.datastores) == len(world.points[-1].disks)
        assert w.plan is not None and not w.plan.blocked and w.plan.creates
        assert await world.listing() == before             # nothing created before the confirmation
        await pilot.press("enter")
        await until(pilot, lambda: w.step == "result", timeout=60)
        assert w.job is not None and w.job.state == "succeeded", w.job.error
        vols = w.result["volumes"]
        assert len(vols) == len(world.points[-1].disks) and all(v["verified"] for v in vols)
        assert "✓ identical" in text(app)
        # independently of the engine: the simulator's digests equal the point's
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(world.sim)),
                                     base_url="http://vrm.sim") as ctl:
            repo = Repository.open(world.repo_path)
            for v in vols:
                want = repo.open_disk(world.points[-1].id, v["source"]).sha256()
                r = await ctl.get(f"/sim/volumes/{v['target'].rsplit(':', 1)[1]}/digest")
                assert r.json()["sha256"] == want
        after = await world.listing()
        assert len(after[0]) == len(before[0]) + 1 and len(after[1]) == len(before[1]) + len(vols)
        await pilot.press("enter")
        await pilot.pause()
        assert app.closed


async def test_defaults_stay_on_the_vms_architecture_and_cluster(world: World):
    """Issue 15 bug 1: Enter on every step restored an x86_64 VM onto aarch64 datastores and host. The
    defaults are datastores of the VM's own cluster and an x86_64 host; the map step names cluster and hosts."""
    vm = world.sim.vms[world.vm_urn.rsplit(":", 1)[1]]
    assert vm.host.arch == "x86_64"
    app = wizard_app(world)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_step(pilot, app, "map")
        assert f"{vm.host.cluster.name} (3 hosts)" in text(app)
        await to_step(pilot, app, "review")
        plan = wiz(app).plan
        assert plan is not None and not plan.blocked
        for dp in plan.disks:
            ds = world.sim.datastores[int(dp.target_datastore_urn.rsplit(":", 1)[1])]
            assert {h.cluster.name for h in ds.hosts} == {vm.host.cluster.name}, dp.target_datastore_name
        host = world.sim.hosts[int(plan.location.rsplit(":", 1)[1])]
        assert host.arch == "x86_64" and host.cluster is vm.host.cluster


async def test_back_and_forth_keeps_choices_consistent(world: World):
    app = wizard_app(world)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_step(pilot, app, "review")
        w = wiz(app)
        for expected in ("checks", "map", "map", "map", "target", "point"):
            await pilot.press("escape")
            await settle(pilot, app)
            assert w.step == expected
        assert w.map_index == 0 if w.step != "point" else True
        await pilot.press("down", "enter")                   # the older (full) point this time
        await settle(pilot, app)
        assert w.point.id == world.points[0].id and w.step == "target"
        await pilot.press("enter", "enter")                  # New VM, then its name as offered
        await settle(pilot, app)
        assert w.step == "map" and w.datastores == {}        # a new target starts a new mapping
        await to_step(pilot, app, "review")
        assert w.plan.point.id == world.points[0].id
        assert "Will be created" in text(app) and "nothing has been changed yet" in text(app)


@pytest.mark.parametrize("step", ["point", "target", "map", "checks", "review", "confirm"])
async def test_abort_at_each_step_changes_nothing(world: World, step: str):
    before = await world.listing()
    app = wizard_app(world)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_step(pilot, app, step)
        for _ in range(12):                                  # Esc back out, one step at a time
            if app.closed:
                break
            await pilot.press("escape")
            await settle(pilot, app)
        assert app.closed
    assert await world.listing() == before


async def test_overwrite_needs_the_name_typed(world: World):
    app = wizard_app(world)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_step(pilot, app, "checks", target="original")
        w = wiz(app)
        assert w.target == "original"
        running = w.plan.vm_status == "running"
        if running:                                          # never stopped silently: a blocker until asked
            assert w.plan.blocked and "restore-overwrite-running" in text(app)
            await pilot.press("enter")
            await settle(pilot, app)
            assert w.step == "checks"
            await pilot.press("s")
            await settle(pilot, app)
            assert w.stop_vm and not w.plan.blocked
        await pilot.press("enter")
        await settle(pilot, app)
        assert w.step == "review" and "Will be overwritten" in text(app)
        await pilot.press("enter")
        await settle(pilot, app)
        assert w.step == "confirm"
        before = await world.listing()
        await pilot.press(*"wrong-name", "enter")
        await pilot.pause()
        assert not w.started and "does not match" in text(app)
        assert await world.listing() == before
        await pilot.press("escape")
        await settle(pilot, app)
        assert w.step == "review"


async def test_single_disk_to_a_new_detached_volume_is_planned(world: World):
    app = wizard_app(world)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_step(pilot, app, "review", target="disk")
        w = wiz(app)
        assert w.target == "disk" and w.disk_volume == w.point.disks[0].volume_urn
        assert list(w.datastores) == [w.disk_volume]            # only that disk was mapped
        assert len(w.plan.disks) == 1 and not w.plan.overwrites
        assert any("left detached" in c for c in w.plan.creates)
        assert "left detached" in text(app)


async def test_overwrite_original_after_typing_its_name(fresh_world: World):
    world = fresh_world
    app = wizard_app(world)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_step(pilot, app, "checks", target="original")
        w = wiz(app)
        if w.plan.blocked:                                   # running: stop it only because we ask
            await pilot.press("s")
            await settle(pilot, app)
        assert not w.plan.blocked
        await pilot.press("enter")
        await settle(pilot, app)
        await pilot.press("enter")
        await settle(pilot, app)
        assert w.step == "confirm"
        await pilot.press(*w.plan.vm_name, "enter")
        await until(pilot, lambda: w.step == "result", timeout=60)
        assert w.job.state == "succeeded", w.job.error
        vols = w.result["volumes"]
        assert vols and all(v["verified"] for v in vols)
        assert all(v["target"] == v["source"] for v in vols)    # the original disks, overwritten in place


async def test_read_only_refuses_to_start(world: World):
    before = await world.listing()
    app = wizard_app(world, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_step(pilot, app, "confirm")
        await pilot.press("enter")
        await pilot.pause()
        assert not wiz(app).started and "Read-only" in text(app)
    assert await world.listing() == before


# --- snapshots of every step ---------------------------------------------------------------------------

def recorded_restore(state: str) -> JobRecord:
    job = JobRecord(id="r20260528-140000-abc123", type="restore", state=state, created=T0 + 7000,
                    started=T0 + 7010, finished=T0 + 7100 if state != "running" else None,
                    targets=["20260528T1200Z-01"])
    vm = VmProgress(urn="urn:sites:1:vms:i-00000099", name="edge-ready-euleros-02-restored", kind="cbt",
                    state="done" if state == "succeeded" else "reading")
    vm.disks = [DiskProgress(volume=f"urn:sites:1:volumes:{i}", name=f"disk{i}", mode="all",
                             state="done" if state == "succeeded" or i == 1 else "reading",
                             bytes_planned=20 * MIB, bytes_read=20 * MIB if state == "succeeded" or i == 1 else 8 * MIB,
                             bytes_written=20 * MIB if state == "succeeded" or i == 1 else 8 * MIB,
                             reason="new volume: every non-zero block of the restore point is written")
                for i in (1, 2, 3)]
    job.vms = [vm]
    job.add_log("restore of point 20260528T1200Z-01 started", when=T0 + 7010)
    if state == "succeeded":
        entry = job.add_log("restore succeeded: 3 disk(s) verified", when=T0 + 7100)
        entry["result"] = {"job": job.id, "vm": vm.urn,
                           "volumes": [{"source": d.volume, "target": f"urn:sites:1:volumes:{100 + n}",
                                        "verified": True} for n, d in enumerate(vm.disks)]}
    return job


def _snap_app(world: World, drive: Callable[[Any, App], Any]) -> tuple[WizardApp, Callable[[Any], Any]]:
    app = wizard_app(world)

    async def run_before(pilot: Any) -> None:
        await drive(pilot, app)
        await settle(pilot, app)
        app.clear_notifications()
        await until(pilot, lambda: not app.screen.query("Toast"))  # the cleared toasts are gone
    return app, run_before


STEP_DRIVES = {
    "point": lambda p, a: to_step(p, a, "point"),
    "target": lambda p, a: to_step(p, a, "target"),
    "map": lambda p, a: to_step(p, a, "map"),
    "checks": lambda p, a: to_step(p, a, "checks"),
    "review": lambda p, a: to_step(p, a, "review"),
    "confirm": lambda p, a: to_step(p, a, "confirm"),
    "checks_original": lambda p, a: to_step(p, a, "checks", target="original"),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("step", list(STEP_DRIVES))
def test_wizard_step_snapshot(snap_compare, size, world: World, step: str):
    app, run_before = _snap_app(world, STEP_DRIVES[step])
    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("state", ["running", "succeeded"])
def test_wizard_progress_and_result_snapshot(snap_compare, size, world: World, state: str):
    async def drive(pilot: Any, app: App) -> None:
        await to_step(pilot, app, "confirm")
        wiz(app).show_job(recorded_restore(state))
    app, run_before = _snap_app(world, drive)
    assert snap_compare(app, terminal_size=size, run_before=run_before)
