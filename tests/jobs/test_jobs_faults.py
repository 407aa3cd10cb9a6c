"""The fault matrix, backup side (issue 12 §4 and §7): every step of a backup x one 500, one dropped
connection, one 401, a persistent 500, a stall past the client's timeout.

Each case runs a real backup against the simulator over HTTP (in-process ASGI), with budgets small
enough that a case takes a second or two, and asserts: the job's end state; that the repository lists
no half restore point; that the job ends within its cleanup budget; and that once the fault clears
nothing is left on the simulator -- removed by the job's own cleanup or by the snapshot hunter, never
by a cleanup command.
"""

from __future__ import annotations

import asyncio
import math
import re
import selectors
import time
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
from tests.conftest import SIM_BASE_URL, sim_client, small_disks
from tests.servers import sim_control

from fctui.cli import main
from fctui.jobs.cleanup import SnapshotHunter, cleanup_intents
from fctui.jobs.journal import MemoryJournal
from fctui.jobs.model import JobRecord
from fctui.jobs.planner import build_plan
from fctui.jobs.runner import BackupRunner, Reporter, RunnerSettings
from fctui.repo import Repository
from fctui.vrm import VrmClient

TIMEOUT = 0.5           # the client's per-request timeout in these tests
STALL_MS = 1200         # a stall past it
BUDGET = 1.5            # the per-VM cleanup budget in these tests


@pytest.fixture
def sim_config() -> Any:
    # 1 GB edge disks, 2 % written: about 20 MB per disk
    return small_disks()


@pytest.fixture
async def short_client(sim: Any) -> AsyncIterator[VrmClient]:
    async with sim_client(sim, timeout=TIMEOUT) as c:
        yield c


def settings(**kw: Any) -> RunnerSettings:
    base = dict(watch_interval=0.05, busy_retry_s=1.0, busy_interval=0.05, task_interval=0.02,
                release_wait_s=1.0, cleanup_within_s=BUDGET, cleanup_budget_s=BUDGET, cleanup_floor_s=0.3,
                task_timeout=5.0, read_retry_s=1.0)
    base.update(kw)
    return RunnerSettings(**base)


async def run_backup(client: VrmClient, repo: Repository, urn: str, journal: MemoryJournal,
                     job_id: str = "jf") -> JobRecord:
    plan = await build_plan(client, [urn], repo, chain_marks=journal.chain_marks())
    job = JobRecord(id=job_id, targets=[urn])
    runner = BackupRunner(client, repo, journal=journal, settings=settings(), vrm="sim", user="u")
    try:
        await runner.run(job, plan, Reporter(job))
    finally:
        runner.close()
    return job


async def left_on_sim(control: httpx.AsyncClient, vm_urn: str) -> dict[str, Any]:
    stats = (await control.get("/sim/stats")).json()
    return {"resources": stats["resourcesPerHost"], "snapshots": stats["liveSnapshotsPerVm"].get(vm_urn, 0)}


async def hunt_until_clean(sim: Any, journal: MemoryJournal, *, fault_clears: Any = None,
                           within: float = 10.0) -> int:
    """The snapshot hunter on this journal (as the agent runs it, with a short interval); the fault is
    cleared by ``fault_clears`` after the hunter's first failing rounds. Returns the rounds it took."""
    rounds = 0

    async def opener() -> VrmClient:
        nonlocal rounds
        rounds += 1
        c = sim_client(sim, timeout=TIMEOUT)
        await c.login()
        return c

    async def sweep(client: VrmClient, vrm: str) -> tuple[int, list[str]]:
        pending = journal.pending()
        failed = await cleanup_intents(client, pending, journal.done, within=BUDGET)
        return len(pending) - len(failed), [why for _, why in failed]

    hunter = SnapshotHunter(leftovers=lambda vrm: journal.pending(), sweep=sweep, interval=0.05, max_interval=0.2)
    assert hunter.hold("sim", "u", opener)
    task = asyncio.create_task(hunter.run())
    try:
        if fault_clears is not None:
            while rounds < 2:  # the VRM still refuses: the hunter keeps its leftovers and backs off
                await asyncio.sleep(0.02)
            assert journal.pending()
            await fault_clears()
        deadline = time.monotonic() + within
        while journal.pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert journal.pending() == [], journal.pending()
    assert not hunter.openers  # nothing left: the password is forgotten
    return rounds


# --- the matrix --------------------------------------------------------------------------------------

STEPS = {
    "snapshot-create": {"path": r"/vms/[^/]+/snapshots$", "method": "POST"},
    "resource-prepare": {"path": r"/backupresources$", "method": "POST"},
    "data-reads": {"path": r"^/sim-data/"},
    "getcbt": {"path": r"/getcbt$", "method": "POST"},
    "task-polls": {"path": r"/tasks/[^/]+$", "method": "GET"},
    "snapshot-delete": {"path": r"/snapshots/\d+$", "method": "DELETE"},
    "resource-release": {"path": r"/backupresources/\d+$", "method": "DELETE"},
}
FAULTS = {
    "one-500": {"status": 500, "count": 1},
    "one-drop": {"drop": True, "count": 1},
    "one-401": {"status": 401, "count": 1},
    "persistent-500": {"status": 500},
    "stall": {"latency_ms": STALL_MS, "count": 1},
}

# What the job ends as. "succeeded": a transient fault is retried. "warnings": succeeded with warnings
# (every restore point committed, a leftover queued for the hunter). "failed": the job fails cleanly
# (no point, nothing left): a create (snapshot, resource) is not repeated blindly after an answer that
# may hide a success, and a data channel that keeps failing is not a backup.
EXPECTED: dict[tuple[str, str], str] = {}
for _step in STEPS:
    for _fault in FAULTS:
        EXPECTED[_step, _fault] = "succeeded"
# A create after a 500 or a dropped connection is repeated when the VRM shows nothing created; after a
# timeout the VRM may still be creating it, so the VM fails cleanly (its intent removes what appears).
for _step in ("snapshot-create", "resource-prepare"):
    EXPECTED[_step, "persistent-500"] = EXPECTED[_step, "stall"] = "failed"
EXPECTED["getcbt", "persistent-500"] = "failed"                # a read: retried, within read_retry_s
EXPECTED["data-reads", "persistent-500"] = "failed"
EXPECTED["task-polls", "persistent-500"] = "failed"      # the snapshot's own task cannot be followed
EXPECTED["snapshot-delete", "persistent-500"] = "warnings"
EXPECTED["resource-release", "persistent-500"] = "warnings"

CASES = [(s, f) for s in STEPS for f in FAULTS]


@pytest.mark.parametrize(("step", "fault"), CASES, ids=[f"{s}-{f}" for s, f in CASES])
async def test_backup_fault_matrix(sim: Any, short_client: VrmClient, control: httpx.AsyncClient,
                                   tmp_path: Path, step: str, fault: str) -> None:
    urn = (await control.get("/sim/edge-cases")).json()["ready"][1]
    repo = Repository.open(tmp_path / "repo")
    journal = MemoryJournal()
    r = await control.post("/sim/faults", json=STEPS[step] | FAULTS[fault])
    assert r.status_code == 200, r.text
    t0 = time.monotonic()
    job = await run_backup(short_client, repo, urn, journal)
    took = time.monotonic() - t0
    hits = sum(f.get("hits", 0) for f in (await control.get("/sim/faults")).json().get("faults", []))

    async def clear() -> None:
        await control.delete("/sim/faults")

    expected = EXPECTED[step, fault]
    outcome = {"succeeded": "succeeded", "succeeded with warnings": "warnings"}.get(job.outcome, job.state)
    assert outcome == expected, (job.outcome, job.error, job.warnings, [v.reason for v in job.vms])
    assert hits >= 1  # the fault did hit this step
    assert "internal error" not in job.error
    # no half point: the repository lists exactly the points the job committed, each complete
    assert [p.id for p in repo.points()] == job.restore_points
    if job.state == "succeeded":
        point = repo.point(job.restore_points[0])
        assert all(d.volume_urn for d in point.disks) and point.disks
    # the job ends within its cleanup budget (plus the reads and a few client timeouts)
    assert took < 15.0, took
    if expected == "warnings":
        assert job.warnings and journal.pending()
        assert all("queued" in w for w in job.warnings)
        assert (await left_on_sim(control, urn)) != {"resources": {}, "snapshots": 0}
        await hunt_until_clean(sim, journal, fault_clears=clear)
    else:
        await clear()
        assert not job.warnings
        if journal.pending():  # a failed job's leftover the VRM refused: the hunter's
            await hunt_until_clean(sim, journal)
    assert await left_on_sim(control, urn) == {"resources": {}, "snapshots": 0}



async def test_create_that_the_vrm_did_after_an_error_is_not_repeated(sim: Any, short_client: VrmClient,
                                                                      control: httpx.AsyncClient,
                                                                      tmp_path: Path) -> None:
    """A 500 on the snapshot create, and the VRM's tree shows a snapshot of the job's own name (as when
    it did the work before failing): no second create; the VM fails, and the snapshot is removed."""
    urn = (await control.get("/sim/edge-cases")).json()["ready"][1]
    vm = await short_client.vm(urn)
    name = f"fctui-jf-{urn.rsplit(':', 1)[-1]}"  # the name run_backup's job "jf" gives its snapshot
    ref = await short_client.create_snapshot(vm.uri, name, type="CBTbackup")
    await short_client.wait_task(ref, timeout=5.0, interval=0.02)
    await control.post("/sim/faults", json=STEPS["snapshot-create"] | FAULTS["one-500"])
    repo = Repository.open(tmp_path / "repo")
    journal = MemoryJournal()
    job = await run_backup(short_client, repo, urn, journal)
    # a second create would have succeeded (the fault fires once) and so would the job
    assert job.state == "failed" and "although the VRM created it" in job.vms[0].reason, job.vms[0].reason
    assert repo.points() == []
    assert await left_on_sim(control, urn) == {"resources": {}, "snapshots": 0}


@pytest.mark.parametrize("step", ["snapshot-delete", "resource-release"])
async def test_persistent_stall_ends_within_the_budget(sim: Any, control: httpx.AsyncClient, tmp_path: Path,
                                                        step: str) -> None:
    """A VRM that never answers the cleanup (each attempt stalls past the client's timeout): the job
    ends when the budget is spent, not after nested retries; the hunter finishes once it answers."""
    from fctui.sim import create_app

    urn = (await control.get("/sim/edge-cases")).json()["ready"][1]
    repo = Repository.open(tmp_path / "repo")
    journal = MemoryJournal()
    fault = STEPS[step]
    await control.post("/sim/faults", json=fault | {"latency_ms": 30_000})
    # Where the job waits on the stalled VRM, on the loop's clock: from the first stalled request to the
    # end of the cleanup. Not the whole job's wall time -- the disk reads before (and, for the releases,
    # between) take as long as the machine's load makes them; the budget bounds the cleanup only.
    app, loop = create_app(sim), asyncio.get_running_loop()
    stalled: list[list[float]] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope["method"] != fault["method"]
                or not re.search(fault["path"], scope["path"])):
            return await app(scope, receive, send)
        span = [loop.time(), math.inf]
        stalled.append(span)
        try:
            await app(scope, receive, send)
        finally:
            span[1] = loop.time()  # the client gave up (its timeout, or the budget's cut)

    client = VrmClient(SIM_BASE_URL, sim.config.user, sim.config.password, timeout=TIMEOUT,
                       transport=httpx.ASGITransport(app=recording))  # type: ignore[arg-type]
    async with client:
        job = await run_backup(client, repo, urn, journal)
    assert job.outcome == "succeeded with warnings", (job.state, job.error)
    assert [p.id for p in repo.points()] == job.restore_points
    assert stalled and all(end < math.inf for _, end in stalled)  # every stalled attempt was cut
    waited = sum(end - start for start, end in stalled)
    # One budget for the VM's cleanup: the stalled step's attempts and back-off end when it is spent;
    # the later steps (one per disk and the snapshot) get one floor attempt each (cut at the floor).
    # Nested budgets (one per step, or retries inside retries) would wait a budget per step.
    assert BUDGET - 0.3 <= waited <= BUDGET + 3 * 0.3, [(round(a, 2), round(b - a, 2)) for a, b in stalled]

    async def clear() -> None:
        await control.delete("/sim/faults")
    await hunt_until_clean(sim, journal, fault_clears=clear)
    assert await left_on_sim(control, urn) == {"resources": {}, "snapshots": 0}


class _JumpingSelector(selectors.DefaultSelector):
    """For a loop with timers and no I/O: waiting for the next timer is the clock jumping to it."""

    def __init__(self, loop: "VirtualTimeLoop") -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> Any:
        if timeout:
            self._loop.now += timeout
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on an injected clock: timeouts, sleeps and the budget's clock (all the loop's time)
    advance only when every task waits, so a load on the machine cannot stretch them."""

    def __init__(self) -> None:
        self.now = 1000.0
        super().__init__(selector=_JumpingSelector(self))

    def time(self) -> float:
        return self.now


def test_one_budget_bounds_every_step_and_busy_retries_do_not_cut_long_steps() -> None:
    from fctui.jobs.cleanup import Budget, retry, retry_busy
    from fctui.vrm.errors import VrmTimeoutError

    async def hangs() -> None:
        await asyncio.sleep(60)

    async def body(loop: VirtualTimeLoop) -> None:
        budget = Budget(0.3, floor=0.1)
        t0 = loop.time()
        with pytest.raises(VrmTimeoutError):
            await retry(hangs, within=budget)
        assert loop.time() - t0 == pytest.approx(0.3)   # the attempt is cut at the budget's end
        t0 = loop.time()
        with pytest.raises(VrmTimeoutError):   # a later step of the same cleanup: one floor attempt
            await retry(hangs, within=budget)
        assert loop.time() - t0 == pytest.approx(0.1)
        assert budget.spent

        async def slow_but_fine() -> str:     # e.g. a restore's VM creation task inside a busy retry
            await asyncio.sleep(0.3)
            return "done"
        t0 = loop.time()
        assert await retry_busy(slow_but_fine, within=0.1) == "done"
        assert loop.time() - t0 == pytest.approx(0.3)

    loop = VirtualTimeLoop()
    try:
        loop.run_until_complete(body(loop))
    finally:
        loop.close()


def test_production_defaults_bound_the_job_and_the_hunter() -> None:
    """The figures behind the acceptance (issue 12): a persistent fault ends the job within 2 minutes
    (the budget, then one floor attempt for each later step, each cut at the client's 30 s timeout
    at worst); a recovered VRM is retried within a minute, so leftovers go within 90 s."""
    from fctui.cli import build_parser
    from fctui.cli.agent import agent_settings
    from fctui.vrm.client import VrmClient as Client
    import inspect
    s = RunnerSettings()
    assert s.cleanup_budget_s + 2 * s.cleanup_floor_s <= 120 - 10
    timeout = inspect.signature(Client).parameters["timeout"].default
    assert s.cleanup_floor_s < timeout  # a floor attempt is cut before a stalled request would end
    started = agent_settings(build_parser().parse_args(["agent"]))  # what `fctui agent` runs with
    assert started.hunt_interval_s == s.hunt_interval_s == 30 and started.hunt_max_interval_s == 60
    assert started.cleanup_budget_s == s.cleanup_budget_s and started.cleanup_floor_s == s.cleanup_floor_s
    assert s.hunt_max_interval_s + 20 <= 90  # the longest back-off plus a round's own work


# --- the agent: succeeded with warnings, the queue shown, the hunter at work ------------------------

async def test_agent_hunter_removes_leftovers_once_the_vrm_recovers(
        es: Any, agent: Any, dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    user = es.sim.config.user
    async with sim_control(es.url) as control:
        urn = (await control.get("/sim/edge-cases")).json()["ready"][1]
        sessions_before = int((await control.get("/sim/stats")).json()["sessions"])
        client = await agent.start("--hunt-interval", "0.3", "--cleanup-budget", "2")
        # the VRM refuses every snapshot deletion (a persistent 500)
        await control.post("/sim/faults", json={"path": r"/snapshots/\d+$", "method": "DELETE", "status": 500})
        t0 = time.monotonic()
        rc = await asyncio.to_thread(main, ["backup", "--vrm", es.url, "--user", user, urn, "--wait", "--json"])
        took = time.monotonic() - t0
        out = json.loads(capsys.readouterr().out)
        # the data is safe: the point is committed, the job "succeeded with warnings" (exit 4)
        assert rc == 4 and out["state"] == "succeeded" and len(out["restore_points"]) == 1, out
        assert len(out["warnings"]) == 1 and "not deleted yet" in out["warnings"][0]
        assert took < 20, took
        from fctui.repo import Repository
        repo = Repository.open(Path(dirs["FCTUI_DATA_DIR"]) / "repo")
        assert [p.id for p in repo.points()] == out["restore_points"]

        # what is queued and why, in `fctui jobs` and `fctui jobs --json`
        pending = (await client.request("cleanup-status"))["pending"]
        assert [p["what"] for p in pending] == ["snapshot"] and "HTTP 500" in pending[0]["error"]
        assert pending[0]["next_try"] is not None  # the hunter holds credentials for this VRM
        assert (await left_on_sim(control, urn))["snapshots"] == 1
        assert await asyncio.to_thread(main, ["jobs"]) == 0
        text = capsys.readouterr().out
        assert f"{out['job']}" in text and "warnings" in text and "cleanup pending: 1 leftover(s)" in text
        assert "snapshot" in text and "HTTP 500" in text and "the agent re" in text
        assert await asyncio.to_thread(main, ["jobs", "--json"]) == 0
        js = json.loads(capsys.readouterr().out)
        assert js["jobs"][-1]["warnings"] == out["warnings"] and js["cleanup_pending"][0]["what"] == "snapshot"

        # the VRM recovers: the hunter removes the snapshot, nobody runs a command
        # the hunter's next rounds fail too (each a refused DELETE on the simulator): the leftover stays queued
        async def deletes() -> int:
            return int((await control.get("/sim/stats")).json()["byMethod"].get("DELETE", 0))
        before, deadline = await deletes(), time.monotonic() + 30
        while await deletes() < before + 2:
            assert time.monotonic() < deadline, "the hunter did not retry the leftover"
            await asyncio.sleep(0.05)
        assert len((await client.request("cleanup-status"))["pending"]) == 1
        await control.delete("/sim/faults")
        t1 = time.monotonic()
        while (await client.request("cleanup-status"))["pending"] and time.monotonic() - t1 < 10:
            await asyncio.sleep(0.1)
        assert (await client.request("cleanup-status"))["pending"] == []
        assert await left_on_sim(control, urn) == {"resources": {}, "snapshots": 0}
        # every session the hunter opened (one per round) was logged out again
        sessions = int((await control.get("/sim/stats")).json()["sessions"])
        assert sessions <= sessions_before, (sessions, sessions_before)
        state_files = list(Path(dirs["FCTUI_DATA_DIR"]).rglob("*.json"))
        assert state_files and all(es.sim.config.password not in f.read_text() for f in state_files)
        # and the next backup is an incremental: the point of the warned job is a good base
        job2 = (await client.request("submit", targets=[urn], vrm=es.url, user=user,
                                     password=es.sim.config.password))["job"]
        final = await client.wait(job2)
        assert final["state"] == "succeeded" and final["warnings"] == []
        assert all(d["mode"] == "incremental" for d in final["vms"][0]["disks"]), final["vms"][0]["disks"]
