"""The policy service's decisions, with an injected clock: which run is due, catch-up once after
downtime, a due run waiting for its window (and starting once), a start-by deadline, periodic fulls,
how a job reads as a run; the restore point's time from the VRM; the simulator's jumpable clock; the
agent's protocol ops. Expectations are written out by hand (times as literals)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
from tests.conftest import sim_client, small_disks
from tests.servers import sim_control

from fctui.jobs.model import DiskProgress, JobRecord, VmProgress
from fctui.jobs.policy import policy_from_mapping
from fctui.jobs.policyrun import choose_vms, next_due, periodic_full, run_outcome
from fctui.jobs.policystore import PolicyStore

UTC = timezone.utc


def t(day: int, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    """2026-01-05 is a Monday: day 0."""
    return datetime(2026, 1, 5 + day, hh, mm, ss, tzinfo=UTC)


NIGHTLY = policy_from_mapping({"name": "nightly", "vms": "re:^ci-", "schedule": "daily 23:00,03:00",
                               "window": "daily 22:00-06:00", "rpo": "12h"})
WEEKDAY = policy_from_mapping({"name": "weekday", "vms": "re:^ci-|^cms-", "schedule": "mon-fri 02:00",
                               "window": "mon-fri 01:00-05:00", "rpo": "1d"})
NOON = policy_from_mapping({"name": "noon", "vms": "re:^x", "schedule": "cron 0 12,18 * * *",
                            "window": "daily 22:00-06:00", "rpo": "1d"})


# --- next_due (pure) ---------------------------------------------------------------------------------

@pytest.mark.parametrize("policy,last,now,want", [
    # (scheduled, catch_up, open_now, opens, window_end) or None
    (NIGHTLY, t(0, 23), t(1, 2, 59), None),
    (NIGHTLY, t(0, 23), t(1, 3, 0, 5), (t(1, 3), False, True, t(1, 3, 0, 5), t(1, 6))),
    (NIGHTLY, t(0, 3), t(0, 23, 0, 30), (t(0, 23), False, True, t(0, 23, 0, 30), t(1, 6))),
    # down from Sunday to Monday 11:00: Sun 23:00 and Mon 03:00 missed -> the latest once, a catch-up
    # that waits for the window (opens 22:00, closes Tuesday 06:00)
    (NIGHTLY, t(-1, 3), t(0, 11), (t(0, 3), True, False, t(0, 22), t(1, 6))),
    # noticed 10 minutes late (the agent was stopped meanwhile): a catch-up too
    (NIGHTLY, t(0, 23), t(1, 3, 10), (t(1, 3), True, True, t(1, 3, 10), t(1, 6))),
    # weekends have no time: Friday's run, then Monday's on time
    (WEEKDAY, t(-3, 2), t(0, 2, 0, 10), (t(0, 2), False, True, t(0, 2, 0, 10), t(0, 5))),
    # a policy created Monday 10:00 does not catch up times from before it existed
    (NIGHTLY, t(0, 10), t(0, 11), None),
    # a cron time outside the window: due, waits for the opening
    (NOON, t(0, 0), t(0, 12, 0, 10), (t(0, 12), False, False, t(0, 22), t(1, 6))),
])
def test_next_due(policy: Any, last: datetime, now: datetime, want: Any) -> None:
    due = next_due(policy, last, now)
    got = None if due is None else (due.scheduled, due.catch_up, due.open_now, due.opens, due.window_end)
    assert got == want


# --- which VMs, periodic fulls, outcomes (pure) -------------------------------------------------------

def row(name: str) -> Any:
    from fctui.inventory.query import VmRow
    return VmRow(key=f"urn:sites:1:vms:{name}", name=name, state="running", host="cna-01", cluster="c1", disks=1,
                 size_gb=10, tools="running", verdict="ready", reason="")


def test_choose_vms_keeps_what_the_policy_wins_and_names_the_rest() -> None:
    rows = [row(n) for n in ("ci-fe-01", "cms-app-01", "web-01")]
    mine, covered = choose_vms(WEEKDAY, [NIGHTLY, WEEKDAY], rows)  # type: ignore[arg-type]
    assert [r.name for r in mine] == ["cms-app-01"]
    assert covered == {"nightly": ["ci-fe-01"]}          # 12h beats 1d
    mine, covered = choose_vms(NIGHTLY, [NIGHTLY, WEEKDAY], rows)  # type: ignore[arg-type]
    assert [r.name for r in mine] == ["ci-fe-01"] and covered == {}
    off = NIGHTLY.with_changes(enabled=False)       # a disabled policy wins nothing
    mine, covered = choose_vms(WEEKDAY, [off, WEEKDAY], rows)  # type: ignore[arg-type]
    assert [r.name for r in mine] == ["ci-fe-01", "cms-app-01"] and covered == {}


class Pt:
    def __init__(self, modes: str) -> None:
        self.disks = [type("D", (), {"mode": "full" if m == "F" else "incremental"})() for m in modes]


@pytest.mark.parametrize("history,every,want", [
    # points oldest first as "F" (every disk read fully) / "I"; every 3: a full, two incrementals, a full...
    ("", 3, ""),              # no point yet: the first backup is full anyway (the planner says why)
    ("F", 3, ""),
    ("FI", 3, ""),
    ("FII", 3, "periodic full (every 3)"),
    ("FIIF", 3, ""),
    ("FIIFI", 3, ""),
    ("FIIFII", 3, "periodic full (every 3)"),
    ("F", 1, "periodic full (every 1)"),
    ("F", 2, ""),
    ("FI", 2, "periodic full (every 2)"),
    ("FIF", 2, ""),
    ("II", 2, "periodic full (every 2)"),   # the last full was pruned away: read fully now
    ("I", 3, ""),
    ("FIIII", 0, ""),         # 0: never
])
def test_periodic_full(history: str, every: int, want: str) -> None:
    assert periodic_full([Pt(m) for m in history], every) == want  # type: ignore[misc]


def test_periodic_full_counts_a_point_with_one_incremental_disk_as_incremental() -> None:
    assert periodic_full([Pt("FF"), Pt("FI")], 2) == "periodic full (every 2)"  # type: ignore[list-item]
    assert periodic_full([Pt("FI"), Pt("FF")], 2) == ""  # type: ignore[list-item]


def test_run_outcome() -> None:
    def vm(name: str, state: str, *modes: str) -> VmProgress:
        return VmProgress(urn=f"u:{name}", name=name, state=state, reason="r" if state != "done" else "",
                          point_id="p" if state == "done" else None,
                          disks=[DiskProgress(volume=f"v{i}", mode=m) for i, m in enumerate(modes)])
    job = JobRecord(id="j", vms=[vm("a", "done", "incremental", "excluded"), vm("b", "done", "full", "incremental"),
                                 vm("c", "refused")])
    state, vms = run_outcome(job)
    assert state == "partial"
    assert vms == {"u:a": {"name": "a", "result": "done", "reason": "", "kind": "incremental", "point": "p"},
                   "u:b": {"name": "b", "result": "done", "reason": "", "kind": "full", "point": "p"},
                   "u:c": {"name": "c", "result": "refused", "reason": "r", "kind": "", "point": ""}}
    assert run_outcome(JobRecord(id="j", vms=[vm("a", "done", "full")]))[0] == "ok"
    assert run_outcome(JobRecord(id="j", vms=[vm("a", "failed", "full")]))[0] == "failed"
    assert run_outcome(JobRecord(id="j"))[0] == "skipped"


def test_a_store_given_a_path_in_a_new_directory_creates_it(tmp_path: Path) -> None:
    store = PolicyStore(tmp_path / "new" / "policies.json")
    store.add(NIGHTLY, now=1.0)
    assert [p.name for p in store.all()] == ["nightly"]


# --- the service's ticks (a real agent; a VRM that is not there, so each started run fails at once) ----

class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


@pytest.fixture
async def service(dirs: dict[str, str], tmp_path: Path) -> AsyncIterator[Any]:
    from fctui.agent.server import Agent
    from fctui.agent.service import PolicyService, ServiceConnection
    agent = Agent(repo_path=tmp_path / "repo")
    clock = Clock(t(0, 0))
    svc = PolicyService(agent, ServiceConnection("http://127.0.0.1:9", "admin", "secret", {}), clock=clock,
                        tz=UTC, store=PolicyStore(tmp_path / "policies.json"))
    svc.test_clock = clock  # type: ignore[attr-defined]
    agent.service = svc
    try:
        yield svc
    finally:
        await agent.shutdown()


def runs_of(svc: Any, policy: str) -> list[tuple[datetime, str, bool, bool]]:
    return [(datetime.fromtimestamp(r.scheduled, UTC), r.state, r.catch_up, r.started is not None)
            for r in svc.agent.store.policy_runs_of(policy)]


async def test_catch_up_once_after_downtime(service: Any) -> None:
    clock = service.test_clock
    service.store.add(NIGHTLY, now=t(0, 0).timestamp())
    clock.set(t(0, 3, 0, 2))
    [run] = await service.tick()
    assert (run.scheduled, run.catch_up, run.state) == (t(0, 3).timestamp(), False, "failed")
    assert "cannot log in to http://127.0.0.1:9" in run.note
    assert await service.tick() == []                  # the same time is never run twice
    clock.set(t(3, 4))                                  # down since Monday 03:00: 5 times missed
    [run] = await service.tick()
    assert (run.scheduled, run.catch_up) == (t(3, 3).timestamp(), True)
    clock.set(t(3, 4, 30))
    assert await service.tick() == []
    assert runs_of(service, "nightly") == [(t(0, 3), "failed", False, True), (t(3, 3), "failed", True, True)]


async def test_a_due_run_waits_for_its_window_then_starts_once(service: Any) -> None:
    clock = service.test_clock
    service.store.add(NOON, now=t(0, 0).timestamp())
    clock.set(t(0, 12, 0, 5))
    assert await service.tick() == []
    assert runs_of(service, "noon") == [(t(0, 12), "waiting", False, False)]
    status = service.status()["policies"]["noon"]
    assert status["next_run"] == t(0, 22).timestamp() and status["last_run"]["state"] == "waiting"
    # 18:00 comes due while 12:00 waits: the later one replaces it (one run per opening, never two)
    clock.set(t(0, 18, 0, 5))
    assert await service.tick() == []
    assert runs_of(service, "noon") == [(t(0, 12), "skipped", False, False), (t(0, 18), "waiting", False, False)]
    clock.set(t(0, 21, 59))
    assert await service.tick() == []
    clock.set(t(0, 22, 0, 3))                            # the window opens: it starts
    [run] = await service.tick()
    assert run.scheduled == t(0, 18).timestamp() and run.started == t(0, 22, 0, 3).timestamp()
    assert run.window_end == t(1, 6).timestamp()
    clock.set(t(0, 23))
    assert await service.tick() == []
    assert runs_of(service, "noon")[-1] == (t(0, 18), "failed", False, True)


async def test_edits_apply_at_the_next_tick(service: Any) -> None:
    clock = service.test_clock
    service.store.add(NIGHTLY, now=t(0, 0).timestamp())
    service.store.replace(NIGHTLY.with_changes(enabled=False))
    clock.set(t(0, 3, 0, 1))
    assert await service.tick() == []
    assert service.status()["policies"]["nightly"] == {"enabled": False, "next_run": None, "active": False,
                                                       "last_run": None}
    service.store.replace(NIGHTLY)
    assert [r.policy for r in await service.tick()] == ["nightly"]


async def test_protocol_ops(service: Any) -> None:
    agent = service.agent
    service.store.add(NIGHTLY, now=t(0, 11).timestamp())
    service.test_clock.set(t(0, 12))
    resp = await agent.dispatch("run_policy", {"name": "nightly"})
    run = resp["run"]
    assert run["manual"] and run["scheduled"] == t(0, 12).timestamp() and run["window_end"] is None
    got = await agent.dispatch("policy_runs", {"policy": "nightly", "limit": 5})
    assert [r["key"] for r in got["runs"]] == [run["key"]]
    assert got["service"]["policies"]["nightly"]["next_run"] == t(0, 23).timestamp()  # manual runs are no schedule time
    with pytest.raises(Exception, match="no policy named 'nope'"):
        await agent.dispatch("run_policy", {"name": "nope"})
    agent.service = None
    with pytest.raises(Exception, match="no policy service is running"):
        await agent.dispatch("run_policy", {"name": "nightly"})
    assert (await agent.dispatch("policy_runs", {}))["service"] is None
    agent.service = service


# --- the start-by deadline and the restore point's time (runner against the simulator) -------------

@pytest.fixture
def sim_config() -> Any:
    return small_disks()


async def test_start_by_refuses_a_vm_whose_turn_comes_after_the_window(sim: Any, repo: Any) -> None:
    from fctui.jobs.journal import MemoryJournal
    from fctui.jobs.planner import build_plan
    from fctui.jobs.runner import BackupRunner, Reporter, RunnerSettings
    from fctui.sim import create_app
    async with sim_client(sim) as client, httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sim)),
                                                             base_url="http://vrm.sim") as ctl:
        ready = (await ctl.get("/sim/edge-cases")).json()["ready"][:2]
        plan = await build_plan(client, ready, repo, full_vms={ready[0]: "periodic full (every 4)"})
        assert plan.vms[0].disks[0].reason == "periodic full (every 4)"
        job = JobRecord(id="jw", targets=ready)
        closed = {"now": False}
        s = RunnerSettings(watch_interval=0.05, task_interval=0.02, busy_interval=0.05)
        runner = BackupRunner(client, repo, journal=MemoryJournal(), settings=s,
                              start_by=lambda: "window closed at 06:00 before its turn" if closed["now"] else "")
        closed["now"] = True
        try:
            await runner.run(job, plan, Reporter(job))
        finally:
            runner.close()
        assert [(v.state, v.reason) for v in job.vms] == [("refused", "window closed at 06:00 before its turn")] * 2
        assert repo.points() == []
        stats = (await ctl.get("/sim/stats")).json()
        assert not [u for u in ready if u in stats["liveSnapshotsPerVm"]]


async def test_a_restore_point_has_the_vrm_time_of_its_snapshot(dirs: dict[str, str], tmp_path: Path) -> None:
    """The simulator's clock is a year ahead of this machine's: the point follows the VRM."""
    from fctui.jobs.runner import snapshot_time
    from fctui.sim import OffsetClock, Simulator
    from fctui.vrm.models import Task
    assert snapshot_time(Task.from_dict({"startTime": "1767571200000", "finishTime": "1767571201500"})) == 1767571201.5
    assert snapshot_time(Task.from_dict({"startTime": "1767571200000", "finishTime": ""})) == 1767571200.0
    assert snapshot_time(Task.from_dict({"finishTime": "2026-01-05 00:00:02"})) == 1767571202.0
    assert snapshot_time(Task.from_dict({})) is None
    from fctui.agent.server import Agent
    ahead = time.time() + 365 * 86400
    sim = Simulator(small_disks(), clock=OffsetClock(start=ahead))
    from fctui.sim import EmbeddedSimulator
    with EmbeddedSimulator(sim=sim) as es:
        async with sim_control(es.url) as ctl:
            ready = (await ctl.get("/sim/edge-cases")).json()["ready"][:1]
        agent = Agent(repo_path=tmp_path / "repo")
        try:
            job = agent.submit({"targets": ready, "vrm": es.url, "user": "admin", "password": "Admin@123"})
            await agent.tasks[job.id]
            assert job.state == "succeeded", job.error
            [point] = agent.repo().points()
            assert ahead <= point.created <= sim.clock.now() + 60
        finally:
            await agent.shutdown()


# --- the simulator's jumpable clock ---------------------------------------------------------------------

async def test_offset_clock_jumps_and_running_tasks_finish() -> None:
    from fctui.sim import OffsetClock, Simulator, create_app
    start = t(0, 0).timestamp()
    clock = OffsetClock(start=start)
    assert abs(clock.now() - start) < 5
    sim = Simulator(small_disks(), clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sim)), base_url="http://vrm.sim") as ctl, \
            sim_client(sim) as client:
        vm = next(v for v in sim.vms.values() if v.status == "running" and not v.is_template)
        r = await ctl.post(f"/sim/vms/{vm.id}/operations", json={"op": "power-off"})
        assert r.status_code == 200, r.text
        r = await ctl.post("/sim/clock/advance", json={"seconds": 86400})
        assert r.status_code == 200 and abs(r.json()["now"] - (start + 86400)) < 5
        assert abs(clock.now() - (start + 86400)) < 5
        detail = await client.vm(f"/service/sites/{sim.site.id}/vms/{vm.id}")
        assert detail.status == "stopped"                  # the power-off task ended during the jump
        r = await ctl.post("/sim/clock/advance", json={"seconds": -1})
        assert r.status_code == 400
    with pytest.raises(ValueError):
        clock.advance(-1)


# --- a run that outlives its window (a real run against the simulator on a jumpable clock) -------------

async def test_a_run_past_its_window_end_starts_no_more_vms_and_is_reported_overrunning(
        dirs: dict[str, str], tmp_path: Path) -> None:
    """One VM at a time (global limit 1); the first VM's snapshot request is held while the clock jumps
    past the window's end: the second VM is not started, and the run is reported as overrunning."""
    import asyncio

    from fctui.agent.server import Agent
    from fctui.agent.service import PolicyService, ServiceConnection
    from fctui.sim import EmbeddedSimulator, OffsetClock
    from tests.policy.test_service_week import fast
    clock = OffsetClock(start=t(0, 5, 59).timestamp())
    with EmbeddedSimulator(small_disks(), clock=clock) as es:
        async with sim_control(es.url) as ctl:
            ready = (await ctl.get("/sim/edge-cases")).json()["ready"][:2]
            names = [v.name for v in es.sim.vms.values() if es.sim.vm_urn(v) in ready]
            store = PolicyStore(tmp_path / "policies.json")
            store.add(policy_from_mapping({"name": "early", "vms": "re:^(" + "|".join(names) + ")$",
                                           "schedule": "daily 05:00", "window": "daily 04:00-06:00", "rpo": "1d"}),
                      now=t(-1, 12).timestamp())
            agent = Agent(repo_path=tmp_path / "repo", settings=fast(), global_limit=1)
            svc = PolicyService(agent, ServiceConnection(es.url, "admin", "Admin@123", {}), clock=clock.now,
                                tz=UTC, store=store)
            agent.service = svc
            try:
                r = await ctl.post("/sim/faults", json={"path": r"vms/[^/]+/snapshots$", "method": "POST",
                                                        "latency_ms": 1500, "count": 1})
                assert r.status_code == 200
                [run] = await svc.tick()     # 05:59: due since 05:00 (missed: a catch-up), the window open
                assert run.window_end == t(0, 6).timestamp() and run.catch_up
                deadline = time.monotonic() + 10
                while not (await ctl.get("/sim/faults")).json()["faults"][0]["hits"]:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
                await ctl.post("/sim/clock/advance", json={"seconds": 120})   # 06:01: the window is closed
                await svc.tick()
                assert svc.active["early"].overran                          # said while it still runs
                await asyncio.wait_for(svc._follows["early"], 30)
                [done] = agent.store.policy_runs_of("early")
                results = sorted((v["result"], v["reason"]) for v in done.vms.values())
                assert results == [("done", ""), ("refused", "window closed at 06:00 before its turn")]
                assert done.state == "partial" and done.overran
                assert "overran its window" in done.note and "1 VM(s) not started" in done.note
            finally:
                await agent.shutdown()


async def test_the_loop_ticks_until_the_agent_stops(service: Any) -> None:
    import asyncio
    service.store.add(NIGHTLY, now=t(0, 0).timestamp())
    service.test_clock.set(t(0, 3, 0, 1))
    loop = asyncio.create_task(service.run())
    deadline = time.monotonic() + 10
    while not service.agent.store.policy_runs_of("nightly"):
        assert time.monotonic() < deadline and not loop.done()
        await asyncio.sleep(0.02)
    assert service.running and service.status()["running"]
    service.agent.stopping.set()
    await asyncio.wait_for(loop, 5)
    assert not service.running


async def test_a_run_left_running_by_a_stopped_agent_ends_as_its_job_did(service: Any) -> None:
    from fctui.jobs.policystore import PolicyRun
    agent = service.agent
    job = JobRecord(id="j-old", state="interrupted", error="the job agent stopped while the job ran",
                    vms=[VmProgress(urn="u:a", name="a", state="failed", reason="interrupted: the job agent stopped")])
    agent.store.save_job(job)
    agent.store.record_run(PolicyRun(policy="nightly", scheduled=t(0, 3).timestamp(), started=t(0, 3).timestamp(),
                                     job_id="j-old"))
    await service.tick()
    [run] = agent.store.policy_runs_of("nightly")
    assert run.state == "failed" and run.finished is not None
    assert run.vms["u:a"]["result"] == "failed" and "the job agent stopped" in run.note


def test_fctui_sim_jumpable_clock() -> None:
    """``fctui sim --jumpable-clock``: POST /sim/clock/advance moves its clock; without the flag the
    simulator runs on the real clock and refuses."""
    import subprocess
    import sys
    for flag, status in (("--jumpable-clock", 200), (None, 400)):
        cmd = [sys.executable, "-m", "fctui.cli", "sim", "--port", "0", "--vms", "5", *([flag] if flag else [])]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            url = line.split("simulator: ", 1)[1].split()[0]
            before = time.time()
            r = httpx.post(url + "/sim/clock/advance", json={"seconds": 7200}, timeout=10)
            assert r.status_code == status, r.text
            if status == 200:
                assert r.json()["now"] - before >= 7200
        finally:
            proc.terminate()
            proc.wait(10)
