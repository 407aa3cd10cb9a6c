"""Benchmark the inventory console headless against a 10,000-VM simulator at 20 ms latency.

The simulator runs in a child process (it stands for the VRM: its memory is not counted). The app runs
headless; key events go straight to the driver and latency is measured from posting the key to the
end of the first screen update that shows its effect (pilot.press/pause are not used: they wait for
idle and add their own tens of milliseconds). A refresh is kept running during the key measurements.

Prints: time to first VM rows on screen, time to the full inventory, p50/p95 key → screen update for
cursor moves and filter keystrokes, peak RSS. Goals: < 1 s, < 3 s, p95 < 50 ms, < 300 MB.

Peak RSS counts every process the console runs: the console itself, its refresh process and the
short-lived volume-listing helper the gatherer may start. A sampler process of the benchmark (not
counted itself) reads /proc/<pid>/status of each of them every 10 ms (new descendants are looked for
every 50 ms; VmHWM only grows, so a late discovery loses nothing). Not more often: at 2 ms the sampler
took ~13 % of a core, which on two cores slowed the very refresh being measured. It reports two figures: the sum
of each process's own peak (VmHWM) -- a conservative upper bound, the goal is checked against it --
and the highest sum of their RSS seen at one instant.

    .venv/bin/python benchmarks/tui.py [--vms 10000] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textual import events  # noqa: E402

from fctui.config import Config  # noqa: E402
from fctui.tui.app import FctuiApp  # noqa: E402
from fctui.tui.source import ConnectSpec  # noqa: E402
from fctui.tui.widgets.vmtable import VmTable  # noqa: E402


# The process-tree sampler, run as ``python -c SAMPLER ROOT_PID EXCLUDE_PIDS INTERVAL_S``: it stops
# when its stdin closes and prints one line per process (pid, VmHWM kB, last VmRSS kB, command),
# then "peak_rss_sum <kB>".
SAMPLER = r"""
import os, select, sys
root, interval = int(sys.argv[1]), float(sys.argv[3])
exclude = {int(x) for x in sys.argv[2].split(",") if x} | {os.getpid()}
fds, info = {}, {}   # pid -> fd of /proc/pid/status; pid -> [hwm kB, rss kB, command]

def ppid(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2:].split()[1])

def discover():
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                parent[int(name)] = ppid(int(name))
            except (OSError, ValueError, IndexError):
                pass
    tree, grew = {root}, True
    while grew:
        grew = False
        for p, pp in parent.items():
            if pp in tree and p not in tree and p not in exclude:
                tree.add(p)
                grew = True
    for p in tree:
        try:
            if p not in fds:
                fds[p] = os.open(f"/proc/{p}/status", os.O_RDONLY)
                info[p] = [0, 0, ""]
            # read again while it lives: just after the fork it still shows its parent's
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = " ".join(f.read().decode(errors="replace").split())
            if cmd:
                info[p][2] = cmd[:300]
        except OSError:
            continue

def field(buf, name):
    i = buf.find(name)
    if i < 0:
        return None
    return int(buf[i + len(name):buf.index(b"kB", i)])

peak_sum, tick = 0, 0
while True:
    if tick % 5 == 0:
        discover()
    tick += 1
    total = 0
    for p in list(fds):
        try:
            buf = os.pread(fds[p], 4096, 0)
        except OSError:          # reaped: its last reading stands
            os.close(fds.pop(p))
            continue
        hwm, rss = field(buf, b"VmHWM:"), field(buf, b"VmRSS:")
        if hwm is None:          # a zombie: its memory is gone, its last reading stands
            continue
        info[p][0] = max(info[p][0], hwm)
        info[p][1] = rss
        total += rss
    peak_sum = max(peak_sum, total)
    if select.select([sys.stdin], [], [], interval)[0]:
        break
for p, (hwm, rss, cmd) in info.items():
    print(p, hwm, rss, cmd)
print("peak_rss_sum", peak_sum)
"""


class TreeSampler:
    """The peak memory of the console's processes, sampled from outside (see SAMPLER)."""

    def __init__(self, exclude: list[int], interval: float = 0.010) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SAMPLER, str(os.getpid()),
                                      ",".join(map(str, exclude)), str(interval)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def stop(self) -> tuple[dict[int, tuple[int, str]], int]:
        """{pid: (VmHWM kB, command)} and the highest RSS sum seen at one instant (kB)."""
        out, _ = self.proc.communicate("", timeout=30)
        per: dict[int, tuple[int, str]] = {}
        peak = 0
        for line in out.splitlines():
            if line.startswith("peak_rss_sum"):
                peak = int(line.split()[1])
            elif line.strip():
                pid, hwm, _rss, cmd = (line.split(" ", 3) + [""])[:4]
                per[int(pid)] = (int(hwm), cmd)
        return per, peak


class TimedApp(FctuiApp):
    """Records when each screen update ends (headless: the compositor still renders every line)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.displays: list[float] = []
        self.first_paint_with_rows: float | None = None
        self.probe = None                  # the awaited key's effect, checked as each frame is written
        self.probe_hit: float | None = None
        self.shown_generation = -1          # the row store generation of the view on screen
        self.full_on_screen: float | None = None   # the first frame showing the complete inventory

    def _apply_view(self, view, summary) -> None:  # type: ignore[override]
        super()._apply_view(view, summary)
        self.shown_generation = view.generation

    def _display(self, screen, renderable) -> None:  # type: ignore[override]
        # The frame was composed just before this call, on this thread, from the state as it is now:
        # if the key's effect holds here, this frame shows it.
        shows = renderable is not None and self.probe is not None and self.probe()
        super()._display(screen, renderable)
        if renderable is None:
            return
        now = time.perf_counter()
        self.displays.append(now)
        if shows and self.probe_hit is None:
            self.probe_hit = now
        if self.first_paint_with_rows is None and self.first_rows_at is not None:
            self.first_paint_with_rows = now
        if (self.full_on_screen is None and self.complete_at is not None
                and self.shown_generation == self.store.generation):
            self.full_on_screen = now


def start_sim(vms: int, latency_ms: float) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "fctui.cli", "sim", "--port", "0", "--vms", str(vms), "--latency-ms", str(latency_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            cwd=str(Path(__file__).resolve().parents[1]))
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"(https?://\S+)", line)
        if m:
            return proc, m.group(1)
    raise RuntimeError("simulator did not start")


async def wait_for(cond, timeout: float = 30.0, step: float = 0.002) -> None:
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise TimeoutError
        await asyncio.sleep(step)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def press_and_time(app: TimedApp, key: str, char: str | None, done) -> float:
    """Post one key; time until the end of the first screen update that shows its effect (``done()``
    holding when the frame is written). Polling ``done()`` from here and then waiting for the next
    frame would miss a frame written before this coroutine wakes and count a later, unrelated one
    (e.g. the detail pane's, 80 ms on)."""
    assert app._driver is not None
    app.probe, app.probe_hit = done, None
    t0 = time.perf_counter()
    app._driver.send_message(events.Key(key, char))
    try:
        await wait_for(lambda: app.probe_hit is not None, 10)
    finally:
        app.probe = None
    assert app.probe_hit is not None
    return app.probe_hit - t0


async def run(vms: int, latency_ms: float, moves: int, size: tuple[int, int], refresh: bool = True) -> None:
    proc, url = start_sim(vms, latency_ms)
    sampler = TreeSampler(exclude=[proc.pid])
    try:
        spec = ConnectSpec(url=url, user="admin", password="Admin@123", page_concurrency=8)
        app = TimedApp(spec=spec, config=Config(), refresh_interval=1.0, watch_tty=False)
        t_start = time.perf_counter()
        async with app.run_test(size=size, headless=True):
            await wait_for(lambda: app.first_paint_with_rows is not None, 30)
            first_rows = app.first_paint_with_rows - t_start
            # the full inventory: the refresh is complete and a frame shows the rows as they are then
            await wait_for(lambda: app.full_on_screen is not None, 60)
            full = app.full_on_screen - t_start
            n_rows = len(app.store)
            await wait_for(lambda: not app._view_running, 10)
            table = app.screen.query_one(VmTable)
            # make sure a refresh is running while we press keys (interval 1 s: it runs most of the time)
            if refresh:
                app.refresh_now()
                await wait_for(lambda: app.refreshing, 10)
            else:
                app.paused = True

            cursor_lat: list[float] = []
            busy = 0
            for i in range(moves):
                key = "down" if (i // 20) % 2 == 0 else "up"
                target = table.cursor + (1 if key == "down" else -1)
                busy += app.refreshing
                cursor_lat.append(await press_and_time(app, key, None, lambda t=target: table.cursor == t))
                await asyncio.sleep(0.01)
            # filter keystrokes: type a term char by char, then delete it again
            assert app._driver is not None
            app._driver.send_message(events.Key("slash", "/"))
            await asyncio.sleep(0.2)
            filter_lat: list[float] = []
            typed = ""
            for ch in "erp-db" + "\b" * 6 + "verdict:blocked":
                if ch == "\b":
                    typed = typed[:-1]
                    key, char = "backspace", None
                else:
                    typed += ch
                    key, char = (ch if ch.isalnum() else {"-": "minus", ":": "colon"}[ch]), ch
                busy += app.refreshing
                expect = typed
                filter_lat.append(await press_and_time(
                    app, key, char, lambda e=expect: app.shown_filter == e and not app._view_running))
                await asyncio.sleep(0.02)
            refreshes = app.refresh_count
            refresh_pid = app.refresher._proc.pid if app.refresher is not None and app.refresher._proc else None
        per, peak_sum = sampler.stop()
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"fctui TUI benchmark: {n_rows} VMs, simulator latency {latency_ms:.0f} ms, "
              f"terminal {size[0]}x{size[1]}, textual headless")
        print(f"  time to first VM rows on screen : {first_rows:6.3f} s   (goal < 1 s)")
        print(f"  time to full inventory          : {full:6.3f} s   (goal < 3 s)")
        print(f"  cursor move  key→update  p50 {statistics.median(cursor_lat) * 1000:6.1f} ms  "
              f"p95 {pct(cursor_lat, 95) * 1000:6.1f} ms  max {max(cursor_lat) * 1000:6.1f} ms  (n={len(cursor_lat)})")
        print(f"  filter key   key→update  p50 {statistics.median(filter_lat) * 1000:6.1f} ms  "
              f"p95 {pct(filter_lat, 95) * 1000:6.1f} ms  max {max(filter_lat) * 1000:6.1f} ms  (n={len(filter_lat)})")
        allv = cursor_lat + filter_lat
        print(f"  all keys     key→update  p50 {statistics.median(allv) * 1000:6.1f} ms  "
              f"p95 {pct(allv, 95) * 1000:6.1f} ms   (goal p95 < 50 ms)")
        print(f"  keys pressed while a refresh ran: {busy}/{len(allv)}; refreshes completed: {refreshes}")
        print(f"  peak RSS (console process)      : {rss_mb:6.0f} MB")
        me = os.getpid()
        total_hwm = rss_mb * 1024
        for pid, (hwm, cmd) in sorted(per.items()):
            if pid == me:
                continue
            role = ("refresh process" if pid == refresh_pid else
                    "volume helper" if "helper_main" in cmd or "volume" in cmd or "child_main" in cmd  # forked
                    else f"other: {cmd[:40]}")
            print(f"  peak RSS ({role + ')':<23}: {hwm / 1024:6.0f} MB   pid {pid}")
            total_hwm += hwm
        print(f"  peak RSS, all processes (sum of each one's peak): {total_hwm / 1024:6.0f} MB  (goal < 300 MB)")
        print(f"  peak RSS, all processes (highest sum at one instant, sampled every 10 ms): "
              f"{peak_sum / 1024:6.0f} MB")
        print(f"  load average while measuring    : {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    finally:
        if sampler.proc.poll() is None:
            sampler.proc.kill()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vms", type=int, default=10000)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--moves", type=int, default=60)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=48)
    p.add_argument("--no-refresh", action="store_true", help="measure keys with no refresh running")
    p.add_argument("--switch-interval", type=float, default=None, help="override sys.setswitchinterval")
    ns = p.parse_args()
    if ns.switch_interval:
        sys.setswitchinterval(ns.switch_interval)
    os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
    asyncio.run(run(ns.vms, ns.latency_ms, ns.moves, (ns.width, ns.height), not ns.no_refresh))
    return 0


if __name__ == "__main__":
    sys.exit(main())
