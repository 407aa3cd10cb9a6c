"""Protection status of 10,000 VMs: what the console's worker and `fctui status` spend on it.

Rows as the console holds them (names like a real site's), N policies with regex and host selectors,
a newest point for 90 % of the VMs, a failed last attempt for 2 %. Prints the median and worst of
several rounds of ``assess_protection`` (selectors, winners, states, next runs) and of the summary.

    .venv/bin/python benchmarks/protection.py [--vms 10000] [--policies 10] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import timezone

from fctui.inventory.query import VmRow
from fctui.jobs.policy import policy_from_mapping
from fctui.jobs.protection import LastAttempt, assess_protection, exit_code

APPS = ("db", "fe", "app", "cache", "batch", "es", "nginx", "redis", "mq", "web")
TEAMS = ("bill", "crm", "erp", "git", "iam", "cms", "dns", "ci", "hr", "ops")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=10_000)
    ap.add_argument("--policies", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    rnd = random.Random(1)
    now = 1_767_571_200.0
    rows = []
    for i in range(a.vms):
        name = f"{rnd.choice(TEAMS)}-{rnd.choice(APPS)}-{i:05d}"
        rows.append(VmRow(f"urn:sites:1:vms:i-{i:08X}", name, "running", f"cna-{i % 100:03d}", "c1", 2, 80,
                          "running", "ready" if i % 10 else "blocked", "" if i % 10 else "IDE disk"))
    policies = []
    for j in range(a.policies):
        sel = f"re:^{TEAMS[j % len(TEAMS)]}-" if j % 2 == 0 else f"host:cna-0{j % 10}"
        policies.append(policy_from_mapping({"name": f"p{j:02d}", "vms": sel, "schedule": "daily 01:00,13:00",
                                             "window": "daily 00:00-23:59", "rpo": f"{12 + j}h",
                                             "keep-daily": 7, "created": now - 30 * 86400}))
    last_good = {r.key: now - rnd.uniform(0, 40) * 3600 for r in rows if rnd.random() < 0.9}
    attempts = {r.key: LastAttempt(now - 600, False, "snapshot refused") for r in rows if rnd.random() < 0.02}
    times = []
    for _ in range(a.rounds):
        t = time.perf_counter()
        got = assess_protection(rows, policies, last_good=last_good, last_attempt=attempts, now=now, tz=timezone.utc)
        code = exit_code(p.state for p in got.values())
        times.append(time.perf_counter() - t)
    counts: dict[str, int] = {}
    for p in got.values():
        counts[p.state] = counts.get(p.state, 0) + 1
    print(f"{a.vms} VMs, {a.policies} policies: assess_protection median {statistics.median(times):.3f} s, "
          f"worst {max(times):.3f} s over {a.rounds} rounds ({statistics.median(times) / a.vms * 1e6:.1f} µs per VM)")
    print(f"states {dict(sorted(counts.items()))}, exit code {code}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
