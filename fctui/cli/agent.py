"""``fctui agent``: run the job agent (normally started on demand by ``backup``, ``restore`` and the console)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

from .common import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:  # pragma: no cover
    from ..jobs.runner import RunnerSettings

def register(sub: Any) -> None:
    a = sub.add_parser("agent", help="run the job agent (normally started on demand)")
    add_agent_options(a)
    a.set_defaults(func=run_agent, connects=False, prints_json=False)


def add_agent_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true", help="host the embedded VRM simulator for the demo")
    p.add_argument("--foreground", action="store_true", help="do not detach from the terminal")
    p.add_argument("--repo", default=None, help="repository directory (default: XDG data dir)")
    p.add_argument("--per-host", type=int, default=8, help="backup resources per host (1-8)")
    p.add_argument("--per-datastore", type=int, default=8, help="volumes per target datastore (1-8)")
    p.add_argument("--global-limit", type=int, default=16, help="VMs backed up at once")
    p.add_argument("--idle-exit", type=float, default=900.0, metavar="S",
                   help="exit after S seconds with no job, no watcher and no request (0: never; default 900)")
    p.add_argument("--demo-vms", type=int, default=60, help=argparse.SUPPRESS)
    p.add_argument("--demo-time-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--watch-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    # None: RunnerSettings' defaults (importing the engine here would slow every command's start)
    p.add_argument("--hunt-interval", type=float, default=None, metavar="S",
                   help="seconds between the snapshot hunter's tries to remove leftovers (default 30)")
    p.add_argument("--cleanup-budget", type=float, default=None, help=argparse.SUPPRESS)


def agent_settings(ns: argparse.Namespace) -> "RunnerSettings":
    from ..jobs.runner import RunnerSettings
    defaults = RunnerSettings()
    hunt = ns.hunt_interval or defaults.hunt_interval_s
    budget = defaults.cleanup_budget_s if ns.cleanup_budget is None else ns.cleanup_budget
    return RunnerSettings(watch_interval=ns.watch_interval, hunt_interval_s=hunt, hunt_max_interval_s=2 * hunt,
                          cleanup_budget_s=budget, cleanup_floor_s=min(5.0, budget))


def run_agent(ns: argparse.Namespace) -> int:
    from ..agent import AgentClient, AgentError, socket_path
    from ..agent.server import Agent, daemonize
    from ..store import LockedError, StoreError
    if not ns.foreground:
        # refuse early (before detaching) when an agent already runs
        try:
            asyncio.run(AgentClient().request("hello"))
            print(f"fctui agent: already running ({socket_path()})")
            return EXIT_OK
        except AgentError:
            pass
        print(f"fctui agent: starting in the background ({socket_path()})")
        sys.stdout.flush()
        daemonize()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        agent = Agent(repo_path=ns.repo, demo=ns.demo, per_host=ns.per_host, per_datastore=ns.per_datastore,
                      global_limit=ns.global_limit, demo_vms=ns.demo_vms, demo_time_scale=ns.demo_time_scale,
                      settings=agent_settings(ns),
                      idle_exit_s=ns.idle_exit or None)
    except LockedError:
        print("fctui agent: another agent already runs for this user", file=sys.stderr)
        return EXIT_FAILED
    except (StoreError, ValueError) as e:
        print(f"fctui agent: {e}", file=sys.stderr)
        return EXIT_FAILED
    asyncio.run(agent.serve())
    return EXIT_OK
