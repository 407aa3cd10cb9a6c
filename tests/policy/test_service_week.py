"""ACCEPTANCE (issue #16): a simulated week of three protection policies against a 300-VM simulator.

The simulator runs on an OffsetClock (real time plus a jumpable offset); the policy service inside an
in-process agent reads that clock. The test jumps the clock to just before each schedule time, ticks
until the run starts and waits (on a condition, with a deadline) until it has ended, writing into the
guests between runs. Then the agent is "down" for a day (a 24 h jump without a tick) and each policy
catches up exactly once.

Policies (zone UTC; the week starts Monday 2026-01-05 00:00):
* nightly  -- daily 23:00,03:00 in the window daily 22:00-06:00 (crosses midnight), rpo 12h,
              keep-last 2 keep-daily 2; selects ci-fe-01 and ci-fe-02.
* weekday  -- mon-fri 02:00 in mon-fri 01:00-05:00, rpo 1d, keep-last 3, full every 2; selects ci-fe-01
              (won by nightly: shorter RPO) and cms-app-01.
* weekend  -- sat,sun 12:00 in sat,sun 10:00-14:00, rpo 7d, keep-last 1; selects dns-app-01.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import sim_control

from fctui.jobs.policy import policy_from_mapping
from fctui.jobs.policystore import PolicyStore
from fctui.jobs.runner import RunnerSettings

UTC = timezone.utc
MONDAY = datetime(2026, 1, 5, tzinfo=UTC)
DEADLINE_S = 30.0   # real seconds a run may take before the test gives up on it

POLICIES = [
    {"name": "nightly", "vms": "re:^ci-fe-0[12]$", "schedule": "daily 23:00,03:00", "window": "daily 22:00-06:00",
     "rpo": "12h", "keep-last": 2, "keep-daily": 2},
    {"name": "weekday", "vms": "re:^(ci-fe-01|cms-app-01)$", "schedule": "mon-fri 02:00",
     "window": "mon-fri 01:00-05:00", "rpo": "1d", "keep-last": 3, "full-every": 2},
    {"name": "weekend", "vms": "re:^dns-app-01$", "schedule": "sat,sun 12:00", "window": "sat,sun 10:00-14:00",
     "rpo": "7d", "keep-last": 1},
]
VMS = {"nightly": ["ci-fe-01", "ci-fe-02"], "weekday": ["cms-app-01"], "weekend": ["dns-app-01"]}


def at(day: int, hh: int, mm: int = 0) -> datetime:
    """Day 0 = Monday of the first week."""
    return MONDAY + timedelta(days=day, hours=hh, minutes=mm)


# The week's schedule times in order, written out by hand (not derived from the Schedule class),
# up to Sunday 11:00, when the agent goes down for a day.
WEEK: list[tuple[datetime, str]] = [
    (at(0, 2), "weekday"), (at(0, 3), "nightly"), (at(0, 23), "nightly"),
    (at(1, 2), "weekday"), (at(1, 3), "nightly"), (at(1, 23), "nightly"),
    (at(2, 2), "weekday"), (at(2, 3), "nightly"), (at(2, 23), "nightly"),
    (at(3, 2), "weekday"), (at(3, 3), "nightly"), (at(3, 23), "nightly"),
    (at(4, 2), "weekday"), (at(4, 3), "nightly"), (at(4, 23), "nightly"),
    (at(5, 3), "nightly"), (at(5, 12), "weekend"), (at(5, 23), "nightly"),
    (at(6, 3), "nightly"),
]
# The weekday policy reads every block of its VM on every 2nd backup: Mon first backup (full, no
# point yet), Tue incremental, Wed periodic full, Thu incremental, Fri periodic full.
WEEKDAY_KINDS = ["full", "incremental", "full", "incremental", "full"]
# What PBS-style prune keeps at the end of the week (hand-computed; see the module doc's retention):
# nightly keep-last 2 -> Sun 03:00, Sat 23:00; keep-daily 2 over the other days -> Fri 23:00, Thu 23:00.
KEPT_AFTER_WEEK = {
    "ci-fe-01": [at(3, 23), at(4, 23), at(5, 23), at(6, 3)],
    "ci-fe-02": [at(3, 23), at(4, 23), at(5, 23), at(6, 3)],
    "cms-app-01": [at(2, 2), at(3, 2), at(4, 2)],          # keep-last 3
    "dns-app-01": [at(5, 12)],                              # keep-last 1 (only one run yet)
}


def fast() -> RunnerSettings:
    return RunnerSettings(watch_interval=0.05, busy_retry_s=2.0, busy_interval=0.05, task_interval=0.02,
                          release_wait_s=5.0, cleanup_within_s=10.0)


class Week:
    """The simulator, the agent with its policy service, and the test's hands on the clock."""

    def __init__(self, es: Any, agent: Any, service: Any, ctl: httpx.AsyncClient) -> None:
        self.es, self.agent, self.service, self.ctl = es, agent, service, ctl
        self.clock = es.sim.clock
        self.vm_urn = {vm.name: es.sim.vm_urn(vm) for vm in es.sim.vms.values()}
        self.volume_ids = {vm.name: [d.volume.id for d in vm.disks] for vm in es.sim.vms.values()}

    async def jump_to(self, when: datetime) -> None:
        secs = when.timestamp() - self.clock.now()
        assert secs >= 0, f"the test is past {when} already"
        r = await self.ctl.post("/sim/clock/advance", json={"seconds": secs})
        assert r.status_code == 200, r.text

    async def tick_until_started(self, policy: str) -> Any:
        deadline = time.monotonic() + 10
        while True:
            started = await self.service.tick()
            if started:
                assert [r.policy for r in started] == [policy], [r.to_dict() for r in started]
                return started[0]
            assert time.monotonic() < deadline, f"no run of {policy} started"
            await asyncio.sleep(0.02)

    async def finished(self, run: Any) -> Any:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            runs = [r for r in self.agent.store.policy_runs_of(run.policy) if r.key == run.key]
            if runs and runs[0].finished is not None and run.policy not in self.service.active:
                return runs[0]
            assert time.monotonic() < deadline, f"run {run.key} did not end: {runs[0].to_dict() if runs else None}"
            await asyncio.sleep(0.05)

    async def guest_writes(self) -> None:
        for names in VMS.values():
            for name in names:
                r = await self.ctl.post(f"/sim/volumes/{self.volume_ids[name][0]}/write", json={"blocks": 3})
                assert r.status_code == 200, r.text

    async def stats(self) -> dict[str, Any]:
        return (await self.ctl.get("/sim/stats")).json()


@pytest.fixture
async def week(dirs: dict[str, str], tmp_path: Path) -> Any:
    from fctui.agent.server import Agent
    from fctui.agent.service import PolicyService, ServiceConnection
    from fctui.sim import EmbeddedSimulator, OffsetClock, SimConfig
    cfg = SimConfig(vms=300, seed=1, time_scale=1000.0, fill_scale=0.0002,
                    edge_disk_gb=1, edge_fill=0.01)
    clock = OffsetClock(start=MONDAY.timestamp())
    with EmbeddedSimulator(cfg, clock=clock) as es:
        store = PolicyStore(Path(dirs["FCTUI_DATA_DIR"]) / "policies.json")
        for p in POLICIES:
            store.add(policy_from_mapping(p), now=clock.now())
        agent = Agent(repo_path=tmp_path / "repo", settings=fast())
        service = PolicyService(agent, ServiceConnection(es.url, "admin", "Admin@123", {}), clock=clock.now,
                                tz=UTC, store=store)
        agent.service = service
        try:
            async with sim_control(es.url) as ctl:
                yield Week(es, agent, service, ctl)
        finally:
            await agent.shutdown()


def window_open(policy: str, when: datetime) -> bool:
    """Hand-written windows of POLICIES."""
    wd, hour = when.weekday(), when.hour + when.minute / 60
    if policy == "nightly":
        return hour >= 22 or hour < 6
    if policy == "weekday":
        return wd < 5 and 1 <= hour < 5
    return wd >= 5 and 10 <= hour < 14


def local(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# The longest test of the suite (a week of policy runs through a real agent: 70 s with the machine half
# busy): the default 120 s hang guard was outrun under test-load plus other work, near its end, not by a hang.
@pytest.mark.timeout(600)
async def test_acceptance_a_simulated_week_of_three_policies(week: Week) -> None:
    """ACCEPTANCE of issue #16 (see the module doc)."""
    runs = []
    manual_job = None
    for when, policy in WEEK:
        await week.jump_to(when - timedelta(seconds=0.2))
        early = await week.service.tick()
        assert not early or week.clock.now() >= when.timestamp(), "a run started before its time"
        if when == at(2, 23):
            # a manual backup of ci-fe-02 is going when nightly's run starts: the run must not take it
            # (its snapshot request is held 1.5 s so it still runs while the run's job plans)
            vm_id = week.vm_urn["ci-fe-02"].rsplit(":", 1)[-1]
            r = await week.ctl.post("/sim/faults", json={"path": f"vms/{vm_id}/snapshots$", "method": "POST",
                                                          "latency_ms": 1500, "count": 1})
            assert r.status_code == 200, r.text
            manual_job = week.agent.submit({"targets": [week.vm_urn["ci-fe-02"]], "vrm": week.es.url,
                                            "user": "admin", "password": "Admin@123"})
            deadline = time.monotonic() + 10
            while week.vm_urn["ci-fe-02"] not in week.agent.busy_vms:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
        run = early[0] if early else await week.tick_until_started(policy)
        done = await week.finished(run)
        runs.append((when, done))
        if manual_job is not None and manual_job.id in week.agent.tasks:
            await asyncio.wait_for(week.agent.tasks[manual_job.id], DEADLINE_S)
        live = (await week.stats())["liveSnapshotsPerVm"]   # every snapshot of ours is gone again
        assert not [n for names in VMS.values() for n in names if week.vm_urn[n] in live], live
        await week.guest_writes()
    assert manual_job is not None
    assert manual_job.state == "succeeded", manual_job.error

    # every run started within a minute (simulated) of its time and inside its window
    for when, run in runs:
        assert run.scheduled == when.timestamp(), (run.key, when)
        assert 0 <= run.started - run.scheduled <= 60, (run.key, run.started - run.scheduled)
        assert window_open(run.policy, local(run.started)), run.key
        assert not run.catch_up and not run.overran, run.to_dict()
    # what each run took, and how it ended
    for when, run in runs:
        names = sorted(v["name"] for v in run.vms.values())
        if run.policy == "nightly" and when == at(2, 23):
            assert run.state == "partial", run.to_dict()
            ci2 = next(v for v in run.vms.values() if v["name"] == "ci-fe-02")
            assert ci2["result"] == "refused" and "already being backed up" in ci2["reason"], ci2
        else:
            assert run.state == "ok", (run.to_dict(), week.agent.get_job(run.job_id).log[-12:])
        assert names == VMS[run.policy], run.to_dict()
        if run.policy == "weekday":
            assert "covered by nightly: ci-fe-01" in run.note, run.note
    kinds = [next(iter(run.vms.values()))["kind"] for _, run in runs if run.policy == "weekday"]
    assert kinds == WEEKDAY_KINDS
    wed = next(run for when, run in runs if run.policy == "weekday" and when == at(2, 2))
    job = week.agent.get_job(wed.job_id)
    assert job.policy == "weekday" and [d.reason for d in job.vms[0].disks] == ["periodic full (every 2)"] * len(job.vms[0].disks)

    # no VM in two jobs at once: per VM, the jobs that read it never overlap
    spans: dict[str, list[tuple[float, float]]] = {}
    for job in week.agent.list_jobs():
        for vm in job.vms:
            if vm.state != "refused":
                spans.setdefault(vm.urn, []).append((job.started or 0, job.finished or 0))
    for urn, ss in spans.items():
        ss.sort()
        for (a0, a1), (b0, b1) in zip(ss, ss[1:]):
            assert a1 <= b0, f"{urn} was in two jobs at once"
    stats = await week.stats()
    assert all(n <= 8 for n in stats["maxResourcesPerHost"].values()), stats
    # the simulator took exactly one snapshot per backup of each VM (pause ground truth)
    pauses = (await week.ctl.get("/sim/hosts")).json()["pauses"]
    taken: dict[str, int] = {}
    for p in pauses:
        taken[p["vm"]] = taken.get(p["vm"], 0) + 1
    backed: dict[str, int] = {}
    for job in week.agent.list_jobs():
        for vm in job.vms:
            if vm.state == "done":
                backed[vm.urn] = backed.get(vm.urn, 0) + 1
    assert taken == backed

    # retention: each VM keeps exactly what PBS-style prune keeps (hand-computed)
    repo = week.agent.repo()
    retention_merged = hasattr(repo, "prune_retention")
    if retention_merged:
        for name, kept in KEPT_AFTER_WEEK.items():
            got = [local(p.created).replace(second=0, microsecond=0) for p in repo.points(week.vm_urn[name])]
            assert got == kept, (name, got)

    # the agent is down for a day: Sunday 11:00 -> Monday 11:00, no tick meanwhile
    await week.jump_to(at(6, 11))
    await week.jump_to(at(7, 11))
    assert await week.service.tick() == []          # every window is closed: each policy waits, once
    waiting = {r.policy: r for r in week.agent.store.policy_runs_of() if r.state == "waiting"}
    assert sorted(waiting) == ["nightly", "weekday", "weekend"]
    assert all(r.catch_up for r in waiting.values())
    assert (waiting["nightly"].scheduled, waiting["weekday"].scheduled, waiting["weekend"].scheduled) == \
        (at(7, 3).timestamp(), at(7, 2).timestamp(), at(6, 12).timestamp())
    assert await week.service.tick() == []          # asked again: still once
    after: list[tuple[datetime, Any]] = []
    # nightly's window opens Monday 22:00 (catch-up), then its 23:00 run; weekday's opens Tuesday 01:00
    for when, policy in [(at(7, 22), "nightly"), (at(7, 23), "nightly"), (at(8, 1), "weekday"), (at(8, 2), "weekday")]:
        await week.jump_to(when - timedelta(seconds=0.2))
        run = await week.tick_until_started(policy)
        after.append((when, await week.finished(run)))
    # weekend's window opens on Saturday; the other two are switched off meanwhile (an edit the
    # service sees at its next tick, without a restart)
    store = week.service.store
    for name in ("nightly", "weekday"):
        store.replace(store.get(name).with_changes(enabled=False))
    for when, policy in [(at(12, 10), "weekend"), (at(12, 12), "weekend")]:
        await week.jump_to(when - timedelta(seconds=0.2))
        run = await week.tick_until_started(policy)
        after.append((when, await week.finished(run)))
    for when, run in after:
        assert 0 <= run.started - when.timestamp() <= 60, (run.key, run.started - when.timestamp())
        assert window_open(run.policy, local(run.started)) and run.state == "ok", run.to_dict()
    catch_ups = [r for r in week.agent.store.policy_runs_of() if r.catch_up]
    assert sorted(r.policy for r in catch_ups) == ["nightly", "weekday", "weekend"]
    assert [r.catch_up for _, r in after] == [True, False, True, False, True, False]
    if not retention_merged:
        pytest.skip("Repository.prune_retention is not merged yet: every run was checked except the "
                    "points retention keeps (KEPT_AFTER_WEEK)")
