"""Issue 15 (friction): ``fctui backup --wait`` and ``fctui restore --wait`` show progress while the job
runs -- on a terminal one live line (percentage, rate, ETA) rewritten with \\r, piped a plain line per 10 %
(not one per progress event). A real agent backs up from the simulator on a loopback socket."""

from __future__ import annotations

import asyncio
import io
import re
import sys
from typing import Any

import httpx
import pytest

from fctui.cli import main
from tests.agent.test_agent_lifecycle import creds, multi_disk_vm
from tests.conftest import AgentProc
from tests.servers import sim_control

PROGRESS = re.compile(r"(backup|restore) +(\d+) % · \S+ \S+ of \S+ \S+")


class Terminal(io.StringIO):
    """stderr as a terminal shows it (isatty)."""

    def isatty(self) -> bool:
        return True


class Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


async def _slow_vm(control: httpx.AsyncClient, es: Any) -> str:
    """A VM whose backup takes a second or two: three disks, each data request 30 ms late."""
    urn = await multi_disk_vm(control, es)
    await control.post("/sim/faults", json={"path": "^/sim-data/", "latency_ms": 30})
    return urn


async def test_backup_wait_on_a_terminal_shows_a_live_line(es: Any, agent: AgentProc, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    async with sim_control(es.url) as control:
        urn = await _slow_vm(control, es)
        await agent.start()
        tty = Terminal()
        monkeypatch.setenv("COLUMNS", "80")   # the line fits the terminal: what does not fit gives way
        monkeypatch.setattr(sys, "stderr", tty)
        rc = await asyncio.to_thread(main, ["backup", urn, "--vrm", es.url, "--user", es.sim.config.user, "--wait"])
        monkeypatch.undo()
    shown = tty.getvalue()
    assert rc == 0, shown
    frames = [f for f in shown.split("\r") if PROGRESS.search(f)]
    assert len(frames) >= 2, shown                          # rewritten in place, not printed line after line
    assert any(re.search(r"\d+(\.\d+)? [KMG]iB/s", f) for f in frames), shown   # the read rate
    percents = [int(PROGRESS.search(f).group(2)) for f in frames]   # type: ignore[union-attr]
    assert percents == sorted(percents) and all(len(f.rstrip()) < 80 for f in frames), frames
    assert shown.endswith("\r") and not shown.rsplit("\r", 2)[-2].strip()   # taken away before the summary
    assert "restore point" in capsys.readouterr().out


async def test_backup_wait_piped_prints_a_line_per_ten_percent(es: Any, agent: AgentProc,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    async with sim_control(es.url) as control:
        urn = await _slow_vm(control, es)
        await agent.start()
        pipe = Pipe()
        monkeypatch.setattr(sys, "stderr", pipe)
        rc = await asyncio.to_thread(main, ["backup", urn, "--vrm", es.url, "--user", es.sim.config.user, "--wait"])
        monkeypatch.undo()
    text = pipe.getvalue()
    assert rc == 0 and "\r" not in text, text
    percents = [int(m.group(2)) for m in map(PROGRESS.search, text.splitlines()) if m]
    assert percents and percents == sorted(percents) and len(percents) <= 11, text
    assert len(set(p // 10 for p in percents)) == len(percents), text   # one per 10 % step, no flood
    assert "snapshot ready" in text                                      # the state changes stay


def _events(n: int = 50) -> list[dict[str, Any]]:
    """A backup of one 100 MiB disk read in ``n`` equal steps, as the agent streams it."""
    job = {"id": "J", "type": "backup", "state": "running",
           "vms": [{"urn": "urn:vm:1", "name": "db-01", "state": "reading",
                    "disks": [{"volume": "urn:vol:1", "name": "disk0", "state": "reading",
                               "bytes_planned": 100 << 20}]}]}
    evs: list[dict[str, Any]] = [{"event": "job", "job": job}]
    for i in range(1, n + 1):
        evs.append({"event": "progress", "job": "J", "vm": "urn:vm:1", "volume": "urn:vol:1",
                    "bytes_read": i * (100 << 20) // n})
    return evs


def test_the_live_line_is_redrawn_at_most_four_times_a_second_on_the_injected_clock() -> None:
    from fctui.cli.common import JobFollower
    now = [0.0]
    tty = Terminal()
    f = JobFollower(tty, clock=lambda: now[0], width=80)
    for ev in _events(50):      # 50 events in 5 s: at most 21 frames, not 50
        f.event(ev)
        now[0] += 0.1
    f.close()
    frames = [x for x in tty.getvalue().split("\r") if PROGRESS.search(x)]
    assert 10 <= len(frames) <= 21, frames
    assert "MiB/s" in frames[-1] and "ETA" in frames[-1] and len(frames[-1].rstrip()) < 80, frames[-1]


def test_piped_progress_is_one_line_per_ten_percent() -> None:
    from fctui.cli.common import JobFollower
    now = [0.0]
    pipe = Pipe()
    f = JobFollower(pipe, clock=lambda: now[0])
    for ev in _events(200):
        f.event(ev)
        now[0] += 0.1
    lines = [ln for ln in pipe.getvalue().splitlines() if PROGRESS.search(ln)]
    assert [int(PROGRESS.search(ln).group(2)) // 10 for ln in lines] == list(range(0, 11)), lines  # type: ignore[union-attr]
    assert "\r" not in pipe.getvalue()
