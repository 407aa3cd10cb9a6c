"""``fctui jobs cleanup --demo`` (issue 15 bug 7): leftovers of the demo VRM, the simulator the agent
hosts, are cleaned without asking anyone for a password (the agent made that password up)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.servers import sim_control

from fctui.cli import main


async def test_jobs_cleanup_demo_removes_a_demo_leftover(agent: Any, dirs: dict[str, str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # a long hunt interval: the snapshot hunter does not beat the command to it
    client = await agent.start("--demo", "--demo-vms", "10", "--hunt-interval", "600", "--cleanup-budget", "2")
    demo_url = (await client.request("hello"))["demo"]["url"]
    async with sim_control(demo_url) as control:
        urn = (await control.get("/sim/edge-cases")).json()["ready"][0]
        # the demo VRM refuses the snapshot deletion: the backup succeeds with a leftover queued
        await control.post("/sim/faults", json={"path": r"/snapshots/\d+$", "method": "DELETE", "status": 500})
        rc = await asyncio.to_thread(main, ["backup", "--demo", urn, "--wait", "--json"])
        out = json.loads(capsys.readouterr().out)
        assert rc == 4 and out["state"] == "succeeded", out
        assert [p["what"] for p in (await client.request("cleanup-status"))["pending"]] == ["snapshot"]
        await control.delete("/sim/faults")

        rc = await asyncio.to_thread(main, ["jobs", "cleanup", "--demo"])
        captured = capsys.readouterr()
        assert rc == 0 and "cleaned 1 leftover(s)" in captured.out, captured
        assert (await client.request("cleanup-status"))["pending"] == []
        stats = (await control.get("/sim/stats")).json()
        assert stats["liveSnapshotsPerVm"].get(urn) is None


async def test_jobs_cleanup_demo_without_a_demo_running(agent: Any, dirs: dict[str, str],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    await agent.start()
    assert await asyncio.to_thread(main, ["jobs", "cleanup", "--demo"]) == 0
    assert "cleaned 0 leftover(s)" in capsys.readouterr().out


def test_jobs_cleanup_demo_refuses_a_vrm(dirs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jobs", "cleanup", "--demo", "--vrm", "https://vrm.example:7443"]) == 2
    err = capsys.readouterr().err
    assert "drop --vrm" in err and "Traceback" not in err
