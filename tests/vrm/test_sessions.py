"""Every VRM session fctui opens is closed when its work ends: the simulator's live session count
(``/sim/stats`` ``sessions``) returns to where it started after a backup job and a restore job in the job
agent, the agent's ``credentials`` op, ``fctui check`` (also when it fails half-way), and a console
refresh cycle (the refresh process's feed)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.servers import sim_control

from fctui.agent.server import Agent
from fctui.jobs.runner import RunnerSettings
from fctui.vrm import VrmClient


@pytest.fixture
def env(dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FCTUI_PASSWORD", "Admin@123")
    return dirs["FCTUI_DATA_DIR"]


async def sessions(es: Any) -> int:
    async with sim_control(es.url) as ctl:
        return int((await ctl.get("/sim/stats")).json()["sessions"])


def creds(es: Any) -> dict[str, Any]:
    return {"vrm": es.url, "user": "admin", "password": "Admin@123"}


async def test_agent_jobs_close_their_sessions(es: Any, env: str) -> None:
    async with sim_control(es.url) as ctl:
        ready = (await ctl.get("/sim/edge-cases")).json()["ready"]
    start = await sessions(es)
    agent = Agent(repo_path=Path(env) / "repo",
                  settings=RunnerSettings(watch_interval=0.1, task_interval=0.02, busy_interval=0.05))
    try:
        job = agent.submit({"targets": [ready[0]], **creds(es)})
        await agent.tasks[job.id]
        assert job.state == "succeeded", job.error
        assert await sessions(es) == start
        point = job.restore_points[0]
        job = agent.submit({"type": "restore", "targets": [point], **creds(es),
                            "restore": {"point_id": point, "target": "new", "name": "sessions-restored"}})
        await agent.tasks[job.id]
        assert job.state == "succeeded", job.error
        assert await sessions(es) == start
        r = await agent.dispatch("credentials", creds(es))
        assert r["ok"]
        assert await sessions(es) == start
        # a job that fails after login (every VM listing refused) closes its session too
        async with sim_control(es.url) as ctl:
            await ctl.post("/sim/faults", json={"path": "/vms", "method": "GET", "status": 500})
            try:
                job = agent.submit({"targets": ["no-such-vm"], **creds(es)})
                await agent.tasks[job.id]
            finally:
                await ctl.delete("/sim/faults")
        assert await sessions(es) == start
    finally:
        await agent.shutdown()


async def test_check_closes_its_session_also_on_failure(es: Any, env: str) -> None:
    from fctui.cli import main
    start = await sessions(es)
    assert await asyncio.to_thread(main, ["check", "--vrm", es.url, "--user", "admin", "--json"]) == 0
    assert await sessions(es) == start
    async with sim_control(es.url) as ctl:
        await ctl.post("/sim/faults", json={"path": "/vms$", "method": "GET", "status": 500})
        try:
            assert await asyncio.to_thread(main, ["check", "--vrm", es.url, "--user", "admin"]) != 0
        finally:
            await ctl.delete("/sim/faults")
    assert await sessions(es) == start


async def test_console_refresh_cycle_closes_its_session(es: Any) -> None:
    from fctui.tui.feedproc import run_refresh_loop
    from fctui.tui.source import Complete, ConnectSpec, InventoryFeed
    start = await sessions(es)
    feed = InventoryFeed(ConnectSpec(es.url, "admin", "Admin@123"))
    done = asyncio.Event()

    def post(msg: tuple) -> None:
        if msg[0] == "event" and isinstance(msg[1], Complete):
            done.set()

    loop = asyncio.create_task(run_refresh_loop(feed, post=post, sleep=asyncio.sleep, blocked=lambda: False,
                                                interval=lambda: 0.05, keep_refreshing=True,
                                                loaded=lambda: True))
    try:
        for _ in range(2):  # two refreshes share one session
            await asyncio.wait_for(done.wait(), 30)
            done.clear()
            assert await sessions(es) == start + 1
        await feed.connect()  # a reconnect keeps that session instead of opening another
        assert await sessions(es) == start + 1
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await feed.aclose()  # what the refresh process does when the console stops it
    assert await sessions(es) == start


async def test_login_twice_keeps_one_session(es: Any) -> None:
    start = await sessions(es)
    async with VrmClient(es.url, "admin", "Admin@123") as c:
        await c.login()
        assert await sessions(es) == start + 1
    assert await sessions(es) == start


async def test_refresh_process_logs_out_when_the_console_stops_it(es: Any) -> None:
    """The console's real refresh child process: its session ends with it."""
    from fctui.tui.feedproc import RefreshProcess
    from fctui.tui.source import ConnectSpec
    start = await sessions(es)
    got: list[tuple] = []
    proc = RefreshProcess(ConnectSpec(es.url, "admin", "Admin@123"), got.append, interval=60.0,
                          keep_refreshing=True)
    proc.start()
    try:
        for _ in range(600):  # up to 30 s for the child to start and finish its first refresh
            if any(m[0] == "event" and type(m[1]).__name__ == "Complete" for m in list(got)):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no complete refresh: {[m[0] for m in got]}")
        assert await sessions(es) == start + 1
    finally:
        await asyncio.to_thread(proc.stop)
    assert await sessions(es) == start


async def test_logout_to_a_stalled_vrm_is_bounded(es: Any) -> None:
    """Ending a job must not wait on a VRM that stopped answering: close() gives up the logout after
    LOGOUT_TIMEOUT_S (the session then idles out on the VRM) and still closes the connections."""
    import time

    from fctui.vrm.client import LOGOUT_TIMEOUT_S
    c = VrmClient(es.url, "admin", "Admin@123", timeout=30.0)
    await c.login()
    async with sim_control(es.url) as ctl:
        await ctl.post("/sim/faults", json={"path": "^/service/session$", "method": "DELETE", "latencyMs": 8000,
                                            "count": 1})
        try:
            t0 = time.monotonic()
            await c.close()
            spent = time.monotonic() - t0
        finally:
            await ctl.delete("/sim/faults")
    assert spent < LOGOUT_TIMEOUT_S + 1.0 and not c.logged_in
