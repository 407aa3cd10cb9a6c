"""``fctui status``: Nagios exit codes against the simulator with a real repository and job agent; --json;
--prometheus read back by a small strict parser of the text format 0.0.4; exit 3 when something cannot be
read. The time situation (a point older than the RPO) is built by judging at a later ``now``."""

from __future__ import annotations

import asyncio
import io
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from fctui.cli import build_parser, main
from fctui.cli.status import StatusReport, prometheus_text, run_status
from fctui.jobs.protection import VmProtection
from fctui.repo import Repository
from tests.conftest import AgentProc
from tests.servers import sim_control

A = "edge-ready-euleros-01"             # one 1 GB disk, ready
B = "edge-consistency-not-euleros-01"   # one 1 GB disk, ready
SCOPE = f"re:^({A}|{B})$"
DAY = 86400.0


# --- a strict reader of the Prometheus text format (0.0.4) ------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(\{{(.*)\}})? (\S+)$")


def _labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(text):
        m = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"").match(text, i)
        assert m, f"bad label at {text[i:]!r}"
        name, i, value = m.group(1), m.end(), []
        while text[i] != '"':
            if text[i] == "\\":
                nxt = text[i + 1]
                assert nxt in '\\"n', f"bad escape \\{nxt}"
                value.append("\n" if nxt == "n" else nxt)
                i += 2
            else:
                assert text[i] != "\n"
                value.append(text[i])
                i += 1
        assert name not in out, f"label {name} twice"
        out[name] = "".join(value)
        i += 1
        if i < len(text):
            assert text[i] == ",", text[i:]
            i += 1
    return out


def parse_prometheus(text: str) -> tuple[dict[str, str], dict[str, list[tuple[dict[str, str], float]]]]:
    """(metric -> type, metric -> samples). Fails on anything the format does not allow."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert re.fullmatch(_NAME, name) and name not in helps and name not in samples
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            assert name not in types and name not in samples, f"TYPE of {name} after its samples or twice"
            types[name] = kind
        else:
            assert not line.startswith("#") and line.strip() == line and line, repr(line)
            m = _SAMPLE.match(line)
            assert m, repr(line)
            name, labels = m.group(1), _labels(m.group(3) or "")
            assert name in types, f"{name} without TYPE"
            value = float(m.group(4))
            assert (labels, value) not in samples.get(name, [])
            assert all(labels != seen for seen, _ in samples.get(name, [])), f"{name}{labels} twice"
            samples.setdefault(name, []).append((labels, value))
    return types, samples


# --- helpers ---------------------------------------------------------------------------------------

def status(es: Any, *extra: str, now: float | None = None) -> tuple[int, str]:
    ns = build_parser().parse_args(["status", "--vrm", es.url, "--user", es.sim.config.user, *extra])
    out = io.StringIO()
    rc = run_status(ns, out=out, now=now, tz=timezone.utc)
    return rc, out.getvalue()


async def status_json(es: Any, *extra: str, now: float | None = None) -> tuple[int, dict[str, Any]]:
    rc, text = await asyncio.to_thread(status, es, "--json", *extra, now=now)
    doc = json.loads(text)
    assert doc["exit"] == rc
    return rc, doc


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in doc["vms"]}


async def test_status_exit_codes_follow_protection(es: Any, agent: AgentProc, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    monkeypatch.setenv("COLUMNS", "250")   # the table fits the terminal: a wide one, so no reason is cut
    client = await agent.start()
    conn = ["--vrm", es.url, "--user", es.sim.config.user]
    vm_count = len(es.sim.vms)

    # no policies: every VM is not covered -> 2
    rc, text = await asyncio.to_thread(status, es)
    assert rc == 2
    assert text.splitlines()[0] == f"{vm_count} VMs · ok 0 · at risk 0 · RPO breached 0 · not covered {vm_count}"
    rc, doc = await status_json(es, "--vms", SCOPE)
    assert rc == 2 and doc["summary"] == {"vms": 2, "ok": 0, "at-risk": 0, "breached": 0, "not-covered": 2}
    assert {v["state"] for v in doc["vms"]} == {"not-covered"} and doc["vms"][0]["reason"] == "no policy selects it"

    # a policy, no point yet (it was just created): at risk -> 1
    assert main(["policy", "add", "pair", "--vms", SCOPE, "--schedule", "daily 00:00,06:00,12:00,18:00",
                 "--rpo", "1d"]) == 0
    rc, doc = await status_json(es, "--vms", SCOPE)
    assert rc == 1 and {v["state"] for v in doc["vms"]} == {"at-risk"}
    assert by_name(doc)[A]["reason"] == "no restore point yet" and by_name(doc)[A]["policy"] == "pair"

    # the policy's run backs both up: every VM ok -> 0
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["policy", "run", "pair", *conn]) == 0, capsys.readouterr().err
    points = {p.vm_name: p.created for p in Repository.open(None, create=False).points()}
    assert set(points) == {A, B}
    rc, text = await asyncio.to_thread(status, es, "--vms", SCOPE)
    assert (rc, text) == (0, "2 VMs · ok 2 · at risk 0 · RPO breached 0 · not covered 0\n")
    rc, doc = await status_json(es, "--vms", SCOPE)
    assert rc == 0 and {v["name"]: v["last_good"] for v in doc["vms"]} == points
    assert all(v["rpo_s"] == DAY and v["policy"] == "pair" and 0 <= v["age_s"] < 600 for v in doc["vms"])

    rc, text = await asyncio.to_thread(status, es, "--vms", SCOPE, "--prometheus")
    assert rc == 0
    types, samples = parse_prometheus(text)
    assert types == {"fctui_vm_last_success_timestamp_seconds": "gauge", "fctui_vm_rpo_breached": "gauge",
                     "fctui_vm_protection_state": "gauge", "fctui_jobs_total": "counter",
                     "fctui_status_scrape_ok": "gauge", "fctui_status_timestamp_seconds": "gauge"}
    urn = {n: u for n, u in ((v["name"], v["urn"]) for v in doc["vms"])}
    assert sorted((s[0]["vm"], s[0]["urn"], s[0]["policy"], s[1])
                  for s in samples["fctui_vm_last_success_timestamp_seconds"]) == \
        sorted((n, urn[n], "pair", pytest.approx(points[n])) for n in (A, B))
    assert sorted(samples["fctui_vm_rpo_breached"], key=lambda s: s[0]["vm"]) == \
        [({"vm": n, "urn": urn[n], "policy": "pair"}, 0.0) for n in sorted((A, B))]
    assert sorted(samples["fctui_vm_protection_state"], key=lambda s: s[0]["vm"]) == \
        [({"vm": n, "urn": urn[n], "state": "ok"}, 1.0) for n in sorted((A, B))]
    assert samples["fctui_jobs_total"] == [({"type": "backup", "outcome": "succeeded"}, 1.0)]
    assert samples["fctui_status_scrape_ok"] == [({}, 1.0)]

    # B leaves the selector: not covered -> 2, and listed
    assert main(["policy", "edit", "pair", "--vms", f"re:^{A}$"]) == 0
    rc, text = await asyncio.to_thread(status, es, "--vms", SCOPE)
    assert rc == 2
    lines = text.splitlines()
    assert lines[0] == "2 VMs · ok 1 · at risk 0 · RPO breached 0 · not covered 1"
    assert lines[2].split()[:2] == ["STATE", "VM"]
    assert lines[3].startswith(f"not covered  {B}") and lines[3].rstrip().endswith("no policy selects it"), text
    assert len(lines) == 4   # the ok VM is not listed
    assert main(["policy", "edit", "pair", "--vms", SCOPE]) == 0

    # A's next backup fails: at risk now (1); a day later its point is past the RPO: breached (2)
    async with sim_control(es.url) as control:
        await control.post("/sim/faults", json={"taskType": "CreateVmSnapshot", "errorCode": "10300026",
                                                "count": 1})
        assert await asyncio.to_thread(main, ["backup", A, *conn, "--wait"]) == 1
        await control.delete("/sim/faults")
    rc, doc = await status_json(es, "--vms", SCOPE)
    assert rc == 1, doc
    assert by_name(doc)[A]["state"] == "at-risk" and by_name(doc)[A]["reason"].startswith("last backup failed")
    assert by_name(doc)[B]["state"] == "ok"
    later = points[A] + DAY + 3600
    rc, doc = await status_json(es, "--vms", SCOPE, now=later)
    assert rc == 2
    assert [v["age_s"] for v in doc["vms"]] == sorted((v["age_s"] for v in doc["vms"]), reverse=True)  # worst first
    a = by_name(doc)[A]
    assert a["state"] == "breached" and a["reason"].startswith("newest point 25 h old, RPO 24 h; last backup failed")
    assert a["age_s"] == pytest.approx(DAY + 3600)
    rc, text = await asyncio.to_thread(status, es, "--vms", SCOPE, now=later)
    lines = text.splitlines()
    assert rc == 2 and lines[0] == "2 VMs · ok 0 · at risk 0 · RPO breached 2 · not covered 0", text
    # the schedule runs every 6 h on the hour in UTC: the next multiple of 21600 s after `later`
    next_at = datetime.fromtimestamp((int(later) // 21600 + 1) * 21600, timezone.utc).strftime("%Y-%m-%d %H:%M")
    row = next(ln for ln in lines if ln.startswith("RPO breached") and A in ln)
    assert row.split()[:6] == ["RPO", "breached", A, "pair", "25", "h"] and f"{next_at} +0000" in row, row
    assert "last backup failed" in row
    rc, text = await asyncio.to_thread(status, es, "--vms", SCOPE, "--prometheus", now=later)
    _, samples = parse_prometheus(text)
    assert {s[0]["vm"]: s[1] for s in samples["fctui_vm_rpo_breached"]} == {A: 1.0, B: 1.0}
    assert samples["fctui_status_timestamp_seconds"] == [({}, pytest.approx(later))]
    jobs = {(s[0]["type"], s[0]["outcome"]): s[1] for s in samples["fctui_jobs_total"]}
    assert jobs == {("backup", "succeeded"): 1.0, ("backup", "failed"): 1.0}

    # no agent running: the job records come from its file, read-only
    agent.stop()
    rc, text2 = await asyncio.to_thread(status, es, "--vms", SCOPE, "--prometheus", now=later)
    _, samples2 = parse_prometheus(text2)
    assert rc == 2 and {(s[0]["type"], s[0]["outcome"]): s[1] for s in samples2["fctui_jobs_total"]} == jobs


def test_unknown_when_the_vrm_cannot_be_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FCTUI_PASSWORD", "x")
    base = ["status", "--vrm", "http://127.0.0.1:9", "--user", "u"]
    assert main(base) == 3
    err = capsys.readouterr().err
    assert err.startswith("fctui: status unknown: cannot log in to the VRM at http://127.0.0.1:9") and \
        err.count("\n") == 1, err
    assert main([*base, "--prometheus"]) == 3
    types, samples = parse_prometheus(capsys.readouterr().out)
    assert samples["fctui_status_scrape_ok"] == [({}, 0.0)] and set(types) == {
        "fctui_status_scrape_ok", "fctui_status_timestamp_seconds"}
    assert main([*base, "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit"] == 3 and doc["summary"] is None and "cannot log in" in doc["error"]


@pytest.mark.parametrize("what, words", [("policies.json", "the policies cannot be read"),
                                         ("state/jobs.json", "the job records"),
                                         ("repo/repo.json", "the repository cannot be read")])
def test_unknown_when_policies_repository_or_jobs_are_unreadable(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str,
        words: str) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("FCTUI_DATA_DIR", str(data))
    monkeypatch.setenv("FCTUI_RUNTIME_DIR", str(tmp_path / "run"))   # no agent there
    monkeypatch.setenv("FCTUI_PASSWORD", "x")
    (data / what).parent.mkdir(parents=True, exist_ok=True)
    (data / what).write_text("{not json")
    assert main(["status", "--vrm", "http://127.0.0.1:9", "--user", "u", "--prometheus"]) == 3
    got = capsys.readouterr()
    assert words in got.err, got.err
    assert parse_prometheus(got.out)[1]["fctui_status_scrape_ok"] == [({}, 0.0)]


def test_usage_problems_are_unknown_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))
    assert main(["status"]) == 3   # no VRM named: a check that cannot run is UNKNOWN, not CRITICAL
    assert "status needs --vrm URL" in capsys.readouterr().err
    monkeypatch.setenv("FCTUI_PASSWORD", "x")
    assert main(["status", "--vrm", "http://127.0.0.1:9", "--user", "u", "--json", "--prometheus"]) == 3
    assert "exclude each other" in capsys.readouterr().err
    assert main(["status", "--vrm", "http://127.0.0.1:9", "--user", "u", "--vms", "re:("]) == 3
    assert "--vms 're:('" in capsys.readouterr().err


def test_prometheus_labels_are_escaped() -> None:
    odd = 'db "primary"\\c\nx'
    report = StatusReport([VmProtection("urn:sites:1:vms:i-1", odd, "breached", "old", policy='p"1',
                                        last_good=1000.5, rpo_s=60.0)], [], now=2000.0, exit=2)
    text = prometheus_text(report)
    assert 'vm="db \\"primary\\"\\\\c\\nx"' in text
    types, samples = parse_prometheus(text)
    assert samples["fctui_vm_last_success_timestamp_seconds"] == \
        [({"vm": odd, "urn": "urn:sites:1:vms:i-1", "policy": 'p"1'}, 1000.5)]
    assert samples["fctui_vm_rpo_breached"][0][1] == 1.0
    assert samples["fctui_vm_protection_state"] == [({"vm": odd, "urn": "urn:sites:1:vms:i-1",
                                                      "state": "breached"}, 1.0)]
    assert samples.get("fctui_jobs_total", []) == [] and types["fctui_jobs_total"] == "counter"
