"""Fact gathering and ``fctui check`` against the simulator over HTTP (in-process ASGI and loopback)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from fctui.cli import build_parser
from fctui.cli.check import run_check
from fctui.inventory.report import knowledge_from_json
from fctui.inventory.gather import GatherError, gather, gather_stream
from fctui.rules import catalog as C
from fctui.rules.facts import BackupKnowledge, VolumeCbtState
from fctui.sim import EmbeddedSimulator, SimConfig, Simulator, create_app
from fctui.vrm import VrmClient

SIM_BASE_URL = "http://vrm.sim"


async def edge_cases(control: httpx.AsyncClient) -> dict[str, list[str]]:
    r = await control.get("/sim/edge-cases")
    r.raise_for_status()
    return r.json()


async def test_every_edge_case_vm_produces_its_rule(client: VrmClient, control: httpx.AsyncClient) -> None:
    edges = await edge_cases(control)
    inv = await gather(client)
    by = {a.urn: a for a in inv.assessments}
    assert edges, "the simulator exposes its edge cases"
    for rule, urns in edges.items():
        for urn in urns:
            a = by[urn]
            if rule == "ready":
                assert a.verdict == "ready", a
            else:
                assert a.has(rule), f"{a.name}: expected {rule}, got {a.rules}"
    # templates are in the report
    assert any(f.vm.is_template for f in inv.facts)
    assert inv.gaps == []
    assert inv.timings["vrm_wait_s"] >= 0 and inv.timings["rules_s"] >= 0


async def test_trees_read_only_where_snapshots_exist(client: VrmClient, sim: Simulator) -> None:
    inv = await gather(client)
    with_snaps = sum(1 for v in sim.vms.values() if v.snapshots and not v.gone)
    assert inv.trees_fetched == with_snaps
    assert inv.trees_fetched < len(inv.facts) / 3
    # one site-wide listing each, not one request per VM
    assert inv.requests < 25 + inv.trees_fetched


async def _wait(client: VrmClient, ref: dict[str, Any]) -> None:
    await client.wait_task(ref["taskUri"], timeout=30, interval=0.01, max_interval=0.05)


def _urn_of(sim: Simulator, name: str) -> str:
    return next(sim.vm_urn(v) for v in sim.vms.values() if v.name == name)


async def test_cbt_chain_broken_from_tasks_since_last_backup(client: VrmClient, control: httpx.AsyncClient,
                                                             sim: Simulator) -> None:
    """A power-off/power-on by someone else and a volume expansion after the last backup: found through
    the site's task list, with the disks and the cause named."""
    ready = _urn_of(sim, "edge-ready-euleros-01")
    grown = _urn_of(sim, "edge-ready-euleros-02")
    before = await gather(client)
    facts = {f.vm.urn: f for f in before.facts}

    def knowledge_for(urn: str) -> BackupKnowledge:
        vols = {d.volume_urn: VolumeCbtState(d.volume_urn, "2026-01-01 00:00:00", "3", size_gb=d.quantity_gb)
                for d in facts[urn].vm.disks}
        return BackupKnowledge(last_backup_time=time.time() - 1, volumes=vols)

    know = {ready: knowledge_for(ready), grown: knowledge_for(grown)}
    vid = ready.rsplit(":", 1)[1]
    for op in ("power-off", "power-on"):
        r = await control.post(f"/sim/vms/{vid}/operations", json={"op": op})
        r.raise_for_status()
        await _wait(client, r.json())
    r = await control.post(f"/sim/vms/{grown.rsplit(':', 1)[1]}/operations", json={"op": "expand"})
    r.raise_for_status()
    await _wait(client, r.json())
    deadline = time.monotonic() + 30
    while (await client.vm(ready)).pv_driver_status != "running":  # the guest booted again: Tools run
        assert time.monotonic() < deadline, "Tools did not run after the power-on"  # boot_seconds after it
        await asyncio.sleep(0.01)

    inv = await gather(client, knowledge=know)
    by = {a.urn: a for a in inv.assessments}
    chain = next(f for f in by[ready].findings if f.rule == "cbt-chain-broken")
    assert "power-off" in chain.message
    assert sorted(chain.disks) == sorted(d.volume_urn for d in facts[ready].vm.disks)
    assert by[ready].verdict == "degraded"
    chain2 = next(f for f in by[grown].findings if f.rule == "cbt-chain-broken")
    assert "volume expansion" in chain2.message and len(chain2.disks) == 1
    # without knowledge, nothing to compare: no finding
    assert not (await gather(client)).by_urn()[ready][1].has("cbt-chain-broken")


async def test_cbt_chain_broken_after_host_reboot_seen_in_new_cbt_snapshot(
        client: VrmClient, control: httpx.AsyncClient, sim: Simulator) -> None:
    urn = _urn_of(sim, "edge-ready-euleros-01")
    uri = "/service/" + urn[4:].replace(":", "/")
    owned = []
    for i in range(2):
        ref = await client.create_snapshot(uri, f"fctui-test-{i}", type="CBTbackup")
        await client.wait_task(ref, timeout=30, interval=0.01, max_interval=0.05)
        owned.append(ref.urn)
    det = await client.snapshot(owned[-1])
    vols = {v.volume_urn: VolumeCbtState(v.volume_urn, v.vol_cbt_create_time, v.chg_id) for v in det.vol_snapshots}
    know = {urn: BackupKnowledge(time.time() - 0.5, vols, frozenset(owned))}
    assert not (await gather(client, knowledge=know)).by_urn()[urn][1].has("cbt-chain-broken")

    r = await control.post(f"/sim/vms/{urn.rsplit(':', 1)[1]}/events", json={"event": "host-reboot"})
    r.raise_for_status()
    ref = await client.create_snapshot(uri, "fctui-test-after", type="CBTbackup")
    await client.wait_task(ref, timeout=30, interval=0.01, max_interval=0.05)
    know = {urn: BackupKnowledge(time.time() - 0.5, vols, frozenset(owned + [ref.urn]))}
    a = (await gather(client, knowledge=know)).by_urn()[urn][1]
    chain = next(f for f in a.findings if f.rule == "cbt-chain-broken")
    assert "CBT re-initialised" in chain.message or "chgID reset" in chain.message
    assert not a.has("leftover-backup-snapshot")  # every snapshot is owned


async def test_leftover_with_knowledge(client: VrmClient, control: httpx.AsyncClient) -> None:
    edges = await edge_cases(control)
    full = edges["snapshot-limit"][0]
    inv = await gather(client, knowledge={full: BackupKnowledge(time.time() - 10)})
    a = inv.by_urn()[full][1]
    assert a.has("snapshot-limit") and a.has("leftover-backup-snapshot")


async def test_stream_yields_static_then_provisional_pages_then_final(client: VrmClient) -> None:
    kinds = []
    provisional = 0
    final = None
    async for u in gather_stream(client, concurrency=4):
        kinds.append(u.kind)
        if u.kind == "static":
            assert u.site is not None and u.hosts and u.datastores and u.os_catalogue is not None
        elif u.kind == "vms":
            assert len(u.facts) == len(u.assessments) > 0
            for a in u.assessments:
                assert a.provisional and a.has("snapshots-unknown")
                provisional += 1
        else:
            final = u.inventory
    assert kinds[0] == "static" and kinds[-1] == "final" and "vms" in kinds
    assert final is not None and provisional == len(final.assessments)
    assert not any(a.provisional or a.has("snapshots-unknown") for a in final.assessments)


async def test_site_selection(client: VrmClient, sim: Simulator) -> None:
    inv = await gather(client, sim.site_urn)
    assert inv.site.urn == sim.site_urn
    with pytest.raises(GatherError, match="not found"):
        await gather(client, "urn:sites:00000000")


class _StripUseType:
    """ASGI wrapper: the VRM answers volume lists without volumeUseType (an older release)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/volumes"):
            return await self.app(scope, receive, send)
        start: dict = {}
        body = bytearray()

        async def capture(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                start.update(msg)
            else:
                body.extend(msg.get("body", b""))
                if not msg.get("more_body"):
                    data = json.loads(bytes(body))
                    for v in data.get("volumes", []):
                        v.pop("volumeUseType", None)
                    out = json.dumps(data).encode()
                    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                    headers.append((b"content-length", str(len(out)).encode()))
                    await send(dict(start, headers=headers))
                    await send({"type": "http.response.body", "body": out})

        await self.app(scope, receive, capture)


async def test_without_volume_use_type_every_tree_is_read_and_the_gap_reported(sim: Simulator) -> None:
    transport = httpx.ASGITransport(app=_StripUseType(create_app(sim)))  # type: ignore[arg-type]
    async with VrmClient(SIM_BASE_URL, sim.config.user, sim.config.password, transport=transport) as c:
        inv = await gather(c)
    assert inv.trees_fetched == len(inv.facts)
    assert inv.gaps and "volumeUseType" in inv.gaps[0]
    assert any(a.has("snapshot-limit") for a in inv.assessments)


# --- the command --------------------------------------------------------------------------------------

def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["check", *argv])


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return run_check(parse(*argv), out=out), out.getvalue()


def test_check_json_has_every_main_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the demo simulator is deterministic: the same seed gives the same URNs here
    demo = Simulator(SimConfig(vms=60))
    stopped = _urn_of(demo, "edge-state-stopped-01")
    kfile = tmp_path / "knowledge.json"
    kfile.write_text(json.dumps({stopped: {"last_backup_time": 1.0, "last_vm_status": "running"}}))
    code, out = run("--demo", "--json", "--knowledge", str(kfile))
    assert code == 0
    doc = json.loads(out)
    seen = {f["rule"] for vm in doc["vms"] for f in vm["findings"]}
    assert set(C.MAIN_RULE_IDS) <= seen, set(C.MAIN_RULE_IDS) - seen
    for vm in doc["vms"]:
        assert set(vm) >= {"urn", "name", "verdict", "kinds", "findings"}
        assert vm["verdict"] in C.VERDICTS
        for f in vm["findings"]:
            assert set(f) >= {"rule", "severity", "message", "remediation", "disks"}
    assert doc["total_vms"] == len(doc["vms"])
    assert sum(doc["summary"]["verdicts"].values()) == len(doc["vms"])
    by = {vm["urn"]: vm for vm in doc["vms"]}
    assert any(f["rule"] == "cbt-chain-broken" for f in by[stopped]["findings"])


def test_check_filters() -> None:
    code, out = run("--demo", "--json", "--only", "ready")
    assert code == 0
    doc = json.loads(out)
    assert doc["vms"] and all(v["verdict"] == "ready" for v in doc["vms"])
    code, out = run("--demo", "--json", "--rule", "disk-ide")
    doc = json.loads(out)
    assert doc["vms"] and all(any(f["rule"] == "disk-ide" for f in v["findings"]) for v in doc["vms"])
    assert doc["total_vms"] > len(doc["vms"])


def test_check_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run("--demo", "--vms", "40")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["VM", "VERDICT", "REASONS"]
    assert any(line.startswith("edge-disk-ide-01") and "blocked" in line and "disk-ide" in line for line in lines)
    assert any("VMs shown" in line for line in lines)
    assert "findings per rule:" in out and "tools-missing" in out


@pytest.mark.parametrize("argv,needle", [
    ((), "--vrm URL and --user USER are required"),
    (("--vrm", "http://127.0.0.1:1", "--user", "u", "--rule", "no-such-rule"), "unknown rule id"),
    (("--vrm", "http://127.0.0.1:1", "--user", "u", "--rule", "business-hours"), "when a job is planned"),
    (("--vrm", "http://127.0.0.1:1", "--user", "u", "--vms", "3"), "--vms only goes with --demo"),
    (("--vrm", "ftp://vrm", "--user", "u"), "must start with http"),
    (("--vrm", "https://vrm", "--user", "u", "--ca-file", "/nonexistent/ca.pem"), "does not exist"),
])
def test_usage_errors_exit_2(argv: tuple[str, ...], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(*argv)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err


def test_argparse_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as e:
        parse("--only", "bad")
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        parse("--insecure", "--ca-file", "x")
    assert e.value.code == 2


def test_no_password_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FCTUI_PASSWORD", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: no prompt
    code, _ = run("--vrm", "http://127.0.0.1:9", "--user", "admin")
    assert code == 2 and "FCTUI_PASSWORD" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_vrm_exits_3(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", "whatever")
    code, out = run("--vrm", f"http://127.0.0.1:{_free_port()}", "--user", "admin")
    err = capsys.readouterr().err
    assert code == 3 and out == ""
    assert len(err.strip().splitlines()) == 1 and "cannot log in" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def loopback() -> Iterator[EmbeddedSimulator]:
    with EmbeddedSimulator(SimConfig(vms=30, seed=3)) as es:
        yield es


def test_wrong_password_exits_3(loopback: EmbeddedSimulator, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", "not-the-password")
    code, _ = run("--vrm", loopback.url, "--user", loopback.sim.config.user)
    err = capsys.readouterr().err
    assert code == 3 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_check_over_loopback_with_insecure_warning(loopback: EmbeddedSimulator, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", loopback.sim.config.password)
    code, out = run("--vrm", loopback.url, "--user", loopback.sim.config.user, "--insecure", "--json",
                    "--site", loopback.sim.site_urn)
    assert code == 0
    assert "verification" in capsys.readouterr().err
    doc = json.loads(out)
    assert doc["site"]["urn"] == loopback.sim.site_urn
    edges = loopback.sim.edge_cases
    by = {v["urn"]: v for v in doc["vms"]}
    for rule, urns in edges.items():
        for urn in urns:
            if rule != "ready":
                assert any(f["rule"] == rule for f in by[urn]["findings"]), (rule, by[urn]["name"])
    code, _ = run("--vrm", loopback.url, "--user", loopback.sim.config.user, "--site", "urn:sites:0")
    assert code == 2


def test_bad_knowledge_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "k.json"
    bad.write_text("{not json")
    code, _ = run("--demo", "--knowledge", str(bad))
    assert code == 2 and "not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"urn:x": {"last_backup_time": "yesterday"}}))
    code, _ = run("--demo", "--knowledge", str(bad))
    assert code == 2 and "urn:x" in capsys.readouterr().err
    k = knowledge_from_json({"urn:x": {"last_backup_time": 5, "owned_snapshots": ["s1"],
                                       "volumes": {"v1": {"volCBTCreateTime": "t", "chgID": 3, "size_gb": 40}}}})
    assert k["urn:x"].volumes["v1"].chg_id == "3" and k["urn:x"].owned_snapshot_urns == {"s1"}


def test_cli_subprocess_demo_json() -> None:
    """The module entry in a fresh interpreter: JSON on stdout, exit 0, nothing but a warning on stderr."""
    env = dict(os.environ)
    env.pop("FCTUI_PASSWORD", None)
    p = subprocess.run([sys.executable, "-m", "fctui.cli", "check", "--demo", "--vms", "20", "--json"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["vms"]
    assert "Traceback" not in p.stderr


async def test_refused_side_listings_become_gaps_not_failures(client: VrmClient, control: httpx.AsyncClient) -> None:
    """The VRM refuses the task and volume listings: the check still runs and says what it lacked."""
    edges = await edge_cases(control)
    for path in (r".*/tasks$", r".*/volumes$"):
        r = await control.post("/sim/faults", json={"path": path, "method": "GET", "status": 400,
                                                   "errorCode": "10000009"})
        r.raise_for_status()
    inv = await gather(client)
    assert any("task-in-progress not evaluated" in g for g in inv.gaps)
    assert any("snapshot rules not evaluated" in g for g in inv.gaps)
    by = inv.by_urn()
    assert not by[edges["task-in-progress"][0]][1].has("task-in-progress")
    limit_vm = by[edges["snapshot-limit"][0]][1]
    assert limit_vm.has("snapshots-unknown") and not limit_vm.has("snapshot-limit")
    assert by[edges["disk-ide"][0]][1].has("disk-ide")  # everything else still evaluated


async def test_snapshots_older_than_the_last_backup_do_not_look_like_a_reset(client: VrmClient, sim: Simulator) -> None:
    """A CBT snapshot kept from before the last backup holds an older chgID: not a broken chain."""
    urn = _urn_of(sim, "edge-ready-euleros-02")
    uri = "/service/" + urn[4:].replace(":", "/")
    ref = await client.create_snapshot(uri, "fctui-kept", type="CBTbackup")
    await client.wait_task(ref, timeout=30, interval=0.01, max_interval=0.05)
    det = await client.snapshot(ref.urn)
    later = {v.volume_urn: VolumeCbtState(v.volume_urn, v.vol_cbt_create_time, "9") for v in det.vol_snapshots}
    know = {urn: BackupKnowledge(time.time() + 5, later, frozenset({ref.urn}))}
    a = (await gather(client, knowledge=know)).by_urn()[urn][1]
    assert not a.has("cbt-chain-broken"), a.findings
