"""``fctui policy run NAME [--dry-run]`` against the simulator on a loopback socket, with a real job agent.

The dry run names each VM's next backup (full or incremental) and why, its estimated pause, the VMs it
refuses and why, the VMs another policy wins, the next scheduled time and whether now is in the window,
and creates nothing on the VRM. The real run submits one job of the VMs the policy wins."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from fctui.cli import build_parser, main
from fctui.cli.policy import run_policy_run
from fctui.repo import Repository
from tests.agent.test_agent_lifecycle import creds
from tests.conftest import AgentProc
from tests.servers import sim_control

UTC = timezone.utc
READY = "edge-ready-euleros-01"            # one 1 GB disk, ready
FRESH = "edge-consistency-not-euleros-01"  # one 1 GB disk, ready (crash-consistent), never backed up here
TEMPLATE = "edge-template-01"              # a template: refused
GOLD = "edge-guest-os-unlisted-01"         # also selected by 'gold', whose shorter RPO wins


def urn_of(es: Any, name: str) -> str:
    return next(es.sim.urn("vms", vm.id) for vm in es.sim.vms.values() if vm.name == name)


def live_snapshots(stats: dict[str, Any]) -> int:
    return sum(stats["liveSnapshotsPerVm"].values())


def sel(*names: str) -> str:
    return "re:^(" + "|".join(names) + ")$"


async def test_dry_run_says_what_the_next_run_would_do_and_creates_nothing(
        es: Any, agent: AgentProc, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    client = await agent.start()
    done = await client.wait((await client.request("submit", targets=[urn_of(es, READY)], **creds(es)))["job"])
    assert done["state"] == "succeeded", done["error"]
    point_id = done["restore_points"][0]
    assert main(["policy", "add", "mine", "--vms", sel(READY, FRESH, TEMPLATE, GOLD), "--schedule", "daily 01:00",
                 "--window", "daily 22:00-06:00", "--rpo", "1d"]) == 0
    assert main(["policy", "add", "gold", "--vms", sel(GOLD), "--schedule", "daily 02:00", "--rpo", "12h"]) == 0
    capsys.readouterr()

    async with sim_control(es.url) as control:
        before = (await control.get("/sim/stats")).json()
        ns = build_parser().parse_args(["policy", "run", "mine", "--dry-run", "--vrm", es.url,
                                        "--user", es.sim.config.user])
        out = io.StringIO()
        now = datetime(2026, 1, 5, 12, 30, tzinfo=UTC).timestamp()   # Monday 12:30
        rc = await asyncio.to_thread(run_policy_run, ns, out=out, now=now, tz=UTC)
        ns = build_parser().parse_args(["policy", "run", "mine", "--dry-run", "--json", "--vrm", es.url,
                                        "--user", es.sim.config.user])
        js = io.StringIO()
        assert await asyncio.to_thread(run_policy_run, ns, out=js, now=now, tz=UTC) == 0
        after = (await control.get("/sim/stats")).json()
    text = out.getvalue()
    assert rc == 0, capsys.readouterr().err + text
    assert live_snapshots(after) == live_snapshots(before) and after["activeTasks"] == before["activeTasks"]
    assert "nothing is created on the VRM" in text
    # daily 01:00 from Monday 12:30: Tuesday 01:00; the window 22:00-06:00 is closed, it opens at 22:00
    assert "next scheduled run: 2026-01-06 01:00 +0000; now is outside the window daily 22:00-06:00 " \
           "(it opens 2026-01-05 22:00 +0000)" in text, text
    assert "2 VM(s) to back up, 1 refused, 1 covered by another policy" in text, text
    assert f"{READY}: incremental — CBT chain intact since restore point {point_id}" in text, text
    assert f"{FRESH}: full — no earlier restore point of this VM" in text, text
    # the estimated pause of each VM, as the console's review shows it
    block = text.split(f"{READY}:", 1)[1].split("\n\n")[0]
    assert "CBT snapshot on" in block and "pause " in block and " s (≈" in block, block
    refused = text.split("refused:\n", 1)[1].split("\n\n")[0]
    assert refused.strip().startswith(f"{TEMPLATE}: ") and len(refused.strip()) > len(TEMPLATE) + 5, refused
    assert f"{GOLD}: covered by gold, skipped" in text
    assert READY not in refused and FRESH not in refused

    doc = json.loads(js.getvalue())
    assert (doc["policy"], doc["next_run"], doc["window_open"]) == \
        ("mine", datetime(2026, 1, 6, 1, tzinfo=UTC).timestamp(), False)
    vms = {v["name"]: v for v in doc["vms"]}
    assert (vms[READY]["mode"], vms[FRESH]["mode"]) == ("incremental", "full")
    assert vms[FRESH]["reason"] == "no earlier restore point of this VM"
    p = vms[READY]["pause_s"]
    assert 0 < p["low"] <= p["estimate"] <= p["high"] and p["observations"] == 1   # learnt from the first job
    assert [r["name"] for r in doc["refused"]] == [TEMPLATE] and doc["covered"] == \
        [{"urn": urn_of(es, GOLD), "name": GOLD, "by": "gold"}]


async def test_run_submits_one_job_of_the_vms_the_policy_wins(
        es: Any, agent: AgentProc, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    client = await agent.start()
    assert main(["policy", "add", "mine", "--vms", sel(READY, GOLD), "--schedule", "daily 01:00", "--rpo", "1d"]) == 0
    assert main(["policy", "add", "gold", "--vms", sel(GOLD), "--schedule", "daily 02:00", "--rpo", "12h"]) == 0
    capsys.readouterr()
    rc = await asyncio.to_thread(main, ["policy", "run", "mine", "--vrm", es.url, "--user", es.sim.config.user,
                                        "--json"])
    got = capsys.readouterr()
    res = json.loads(got.out)
    assert rc == 0, got.err
    assert res["state"] == "succeeded" and res["policy"] == "mine", res
    assert [v["name"] for v in res["vms"]] == [READY]                  # GOLD is gold's
    assert f"{GOLD}: covered by gold, skipped" in got.err
    jobs = (await client.request("list"))["jobs"]
    assert len(jobs) == 1 and jobs[0]["targets"] == [urn_of(es, READY)]
    assert [p.vm_name for p in Repository.open(None, create=False).points()] == [READY]

    # nothing to take: a policy all of whose VMs another policy wins submits nothing
    assert main(["policy", "edit", "mine", "--vms", sel(GOLD)]) == 0
    capsys.readouterr()
    rc = await asyncio.to_thread(main, ["policy", "run", "mine", "--vrm", es.url, "--user", es.sim.config.user])
    assert rc == 0 and "no VM to back up (1 covered by other policies)" in capsys.readouterr().out
    assert len((await client.request("list"))["jobs"]) == 1


def test_run_of_an_unknown_policy_or_an_unreachable_vrm(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FCTUI_PASSWORD", "x")
    assert main(["policy", "run", "nope", "--dry-run", "--vrm", "http://127.0.0.1:9", "--user", "u"]) == 2
    assert "no policy named 'nope'" in capsys.readouterr().err
    assert main(["policy", "add", "p", "--vms", "re:.", "--schedule", "daily 01:00", "--rpo", "1d"]) == 0
    assert main(["policy", "run", "p", "--dry-run", "--vrm", "http://127.0.0.1:9", "--user", "u"]) == 3
    err = capsys.readouterr().err
    assert "cannot log in to the VRM at http://127.0.0.1:9" in err and err.count("\n") == 1, err
