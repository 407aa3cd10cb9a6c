"""Benchmark ``fctui check`` on a 10,000-VM simulator with 20 ms latency per VRM request.

Prints (a) the time to just list every VM with detail=2 (concurrent pages), (b) the whole check
(gather + assess + JSON document), with the share spent waiting on the VRM vs evaluating rules, and
(c) rule evaluation alone for every VM. Goals: rules < 0.2 s; whole check <= 1.5x the listing.

    .venv/bin/python benchmarks/check.py [--vms 10000] [--latency-ms 20] [--concurrency 8] [--same-process]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import time

from fctui.inventory.report import render_json, vm_json_text
from fctui.inventory.gather import gather
from fctui.rules.engine import assess
from fctui.sim import EmbeddedSimulator, SimConfig
from fctui.vrm import VrmClient


def _machine_busy_s() -> float | None:
    """CPU seconds the whole machine has been busy (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")   # all but idle and iowait


def _ours_s(sim_pid: int | None) -> float:
    """CPU seconds of this process, its reaped children (the helper) and the simulator process."""
    t = os.times()
    s = t.user + t.system + t.children_user + t.children_system
    if sim_pid:
        try:
            with open(f"/proc/{sim_pid}/stat") as f:
                x = f.read().rsplit(")", 1)[1].split()
            s += (int(x[11]) + int(x[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    return s


def _others_s(busy0: float | None, ours0: float, sim_pid: int | None) -> float:
    """CPU seconds other processes of the machine used since (busy0, ours0): the load we shared
    the 2 cores with (NaN where /proc/stat is unavailable)."""
    busy = _machine_busy_s()
    if busy is None or busy0 is None:
        return float("nan")
    return max(0.0, (busy - busy0) - (_ours_s(sim_pid) - ours0))


async def bench(url: str, user: str, password: str, conc: int, rounds: int, sim_pid: int | None = None) -> None:
    """Rounds interleave (a) and (b) so both see the same machine load; the ratio is per round.
    Each round also says how much CPU other processes of the machine took meanwhile."""
    async with VrmClient(url, user, password, page_concurrency=conc) as c:
        site = (await c.sites())[0].uri
        rows = []
        inv = None
        for _ in range(rounds):
            inv = None  # each round starts from the same heap (no earlier round's inventory alive)
            gc.collect()
            r0 = c.request_count
            b0, o0 = _machine_busy_s(), _ours_s(sim_pid)
            t = time.perf_counter()
            vms = await c.vms(site, detail=2, templates=None, concurrency=conc)
            t_list = time.perf_counter() - t
            others_list = _others_s(b0, o0, sim_pid)
            n_listed = len(vms)
            del vms
            list_req = c.request_count - r0
            gc.collect()
            b0, o0 = _machine_busy_s(), _ours_s(sim_pid)
            t = time.perf_counter()
            gc.disable()  # as run_check does: GC off while gathering, the result frozen, GC back on
            inv = await gather(c, concurrency=conc, render_vm=vm_json_text)  # as `fctui check --json`
            gc.freeze()
            gc.enable()
            doc = render_json(inv, vrm_url=url)
            t_check = time.perf_counter() - t
            gc.unfreeze()
            others_check = _others_s(b0, o0, sim_pid)
            rows.append((t_check / t_list, t_list, t_check, dict(inv.timings), len(doc), others_list, others_check))
    assert inv is not None
    rows.sort(key=lambda r: r[0])
    ratio, t_list, total, timings, size, _, _ = rows[len(rows) // 2]  # the median round
    vrm = timings["vrm_wait_s"]
    rules = timings["rules_s"]
    render = timings.get("render_s", 0.0)
    other = total - vrm - rules - render
    print(f"VMs+templates listed         : {n_listed} in {list_req} requests")
    print("rounds, by ratio (list s / check s / ratio [CPU s other processes took meanwhile: list, check]):")
    for r in rows:
        print(f"    {r[1]:.2f} / {r[2]:.2f} / {r[0]:.2f}x  [{r[5]:.2f}, {r[6]:.2f}]")
    print("median round:")
    print(f"(a) list detail=2 (conc {conc:>2})  : {t_list:.3f} s")
    print(f"(b) whole check               : {total:.3f} s, {inv.requests} requests, "
          f"{inv.trees_fetched} snapshot trees, JSON {size / 1e6:.1f} MB")
    print(f"    waiting on the VRM        : {vrm:.3f} s ({vrm / total:.0%}); phases (overlapping): "
          + ", ".join(f"{k} {v:.2f}" for k, v in timings.items() if k not in ("vrm_wait_s", "rules_s", "total_s", "render_s",
                                                                              "provisional_rules_s")))
    print(f"    evaluating rules (+facts) : {rules:.3f} s ({rules / total:.0%}; all VMs while the volume "
          f"listing is read, {timings.get('final_rules_s', 0.0):.3f} s after it)")
    print(f"    JSON of each VM           : {render:.3f} s ({render / total:.0%}; while the volumes are read)")
    print(f"    report + JSON + rest      : {other:.3f} s ({other / total:.0%})")
    print(f"    check / listing           : {ratio:.2f}x  (goal <= 1.5x)")
    # (c) rules alone over the gathered facts
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for f in inv.facts:
            assess(f)
        best = min(best, time.perf_counter() - t)
    n = len(inv.facts)
    print(f"(c) rules only, {n} VMs       : {best:.3f} s ({best / n * 1e6:.1f} us/VM; goal < 0.2 s)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vms", type=int, default=10000)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--same-process", action="store_true",
                   help="run the simulator in a thread of this process, where it competes with the client "
                        "for the GIL (default: its own process, like a real VRM on another machine)")
    p.add_argument("--separate-process", action="store_true", help=argparse.SUPPRESS)  # the default now
    a = p.parse_args()
    t = time.perf_counter()
    if not a.same_process:
        code = ("import sys; from fctui.sim import EmbeddedSimulator, SimConfig\n"
                f"es = EmbeddedSimulator(SimConfig(vms={a.vms}, latency_ms={a.latency_ms})).start()\n"
                "print(es.url, flush=True); sys.stdin.read(); es.stop()\n")
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            print(f"simulator (own process): {a.vms} VMs, {a.latency_ms:g} ms latency, up in "
                  f"{time.perf_counter() - t:.1f} s at {url}")
            cfg = SimConfig()
            asyncio.run(bench(url, cfg.user, cfg.password, a.concurrency, a.rounds, proc.pid))
        finally:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=30)
        return
    with EmbeddedSimulator(SimConfig(vms=a.vms, latency_ms=a.latency_ms)) as es:
        print(f"simulator (thread of this process): {a.vms} VMs, {a.latency_ms:g} ms latency, up in "
              f"{time.perf_counter() - t:.1f} s at {es.url}")
        asyncio.run(bench(es.url, es.sim.config.user, es.sim.config.password, a.concurrency, a.rounds))


if __name__ == "__main__":
    main()
