"""Jobs screen responsiveness: 8 running jobs (6 VMs x 3 disks each) fed with agent-style progress events
at the agent's rate (every disk every 0.5 s) while keys move the selection. Prints p50/p95 of key press
-> end of the next screen update, and the time to fold one event into the model.

    .venv/bin/python benchmarks/tui_jobs.py [--jobs 8] [--presses 200]

Goal (issue 6): p95 < 50 ms with 8 jobs running.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textual import events  # noqa: E402
from textual.app import App  # noqa: E402

from fctui.agent import AgentClient  # noqa: E402
from fctui.jobs.model import DiskProgress, JobRecord, VmProgress  # noqa: E402
from fctui.tui.jobs_screen import JobsScreen, JobsService  # noqa: E402

MIB = 1 << 20


def make_job(i: int, vms: int = 6, disks: int = 3) -> JobRecord:
    job = JobRecord(id=f"bench-{i:02d}", state="running", created=1000.0 + i, started=1001.0 + i)
    for v in range(vms):
        vm = VmProgress(urn=f"urn:sites:1:vms:i-{i:02d}{v:02d}", name=f"vm-{i:02d}-{v:02d}", host=f"cna-{v % 4:02d}",
                        kind="cbt", state="reading", pause_s=1.2)
        vm.disks = [DiskProgress(volume=f"urn:v:{i}:{v}:{d}", name=f"disk{d}", mode="incremental",
                                 state="reading", bytes_planned=4096 * MIB, reason="CBT chain intact")
                    for d in range(disks)]
        job.vms.append(vm)
    for n in range(150):
        job.add_log(f"log line {n}", when=1001.0 + n)
    return job


class BenchApp(App[None]):
    """Records when each screen update ends (headless: the compositor still renders every line)."""

    def __init__(self, jobs: list[JobRecord]) -> None:
        super().__init__()
        self.jobs_list = jobs
        self.animation_level = "none"
        self.displays: list[float] = []

    def _display(self, screen, renderable) -> None:  # type: ignore[override]
        super()._display(screen, renderable)
        if renderable is not None:
            self.displays.append(time.perf_counter())

    def on_mount(self) -> None:
        self.svc = JobsService(self, agent=AgentClient("/nonexistent.sock"), start_agent=False,
                               vm_size=lambda urn: (3, 300.0))
        for j in self.jobs_list:
            self.svc.board.apply({"event": "job", "job": j.to_dict()})
        self.svc.connected = True
        self.screen_ = JobsScreen(self.svc)
        self.push_screen(self.screen_)


async def main(n_jobs: int, presses: int) -> None:
    jobs = [make_job(i) for i in range(n_jobs)]
    app = BenchApp(jobs)
    latencies: list[float] = []
    fold: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        svc = app.svc
        stop = asyncio.Event()

        async def feeder() -> None:
            read = 0
            while not stop.is_set():
                read += 8 * MIB
                for j in jobs:
                    for vm in j.vms:
                        for d in vm.disks:
                            ev = {"event": "progress", "job": j.id, "vm": vm.urn, "volume": d.volume,
                                  "state": "reading", "bytes_planned": d.bytes_planned, "bytes_read": read,
                                  "bytes_written": read // 3, "bytes_reused": read // 3, "bytes_zero": 0,
                                  "bytes_stored": read // 6}
                            t0 = time.perf_counter()
                            job_id, _ = svc.board.apply(ev)
                            svc._changed(job_id)
                            fold.append(time.perf_counter() - t0)
                await asyncio.sleep(0.5)

        feed = asyncio.create_task(feeder())
        screen = app.screen_

        async def wait_for(cond, timeout: float = 10.0) -> None:
            end = time.perf_counter() + timeout
            while not cond():
                if time.perf_counter() > end:
                    raise TimeoutError
                await asyncio.sleep(0.001)

        await pilot.pause()
        for k in range(presses):
            before = screen.renders
            key = "down" if (k // (n_jobs - 1)) % 2 == 0 else "up"
            t0 = time.perf_counter()
            app._driver.send_message(events.Key(key, None))    # as a terminal would (pilot.press waits more)
            await wait_for(lambda: screen.renders > before)
            t_state = time.perf_counter()
            await wait_for(lambda: bool(app.displays) and app.displays[-1] >= t_state)
            end = next(t for t in app.displays if t >= t_state)
            latencies.append(end - t0)
            await asyncio.sleep(0.01)
        stop.set()
        await feed
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    print(f"jobs={n_jobs} (6 VMs x 3 disks each), presses={presses}")
    print(f"key -> update: p50 {p(0.50):.1f} ms  p95 {p(0.95):.1f} ms  max {latencies[-1] * 1000:.1f} ms")
    print(f"event fold: mean {statistics.mean(fold) * 1e6:.0f} us over {len(fold)} events")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--presses", type=int, default=200)
    ns = ap.parse_args()
    os.environ.setdefault("FCTUI_CONFIG_DIR", tempfile.mkdtemp())
    asyncio.run(main(ns.jobs, ns.presses))
