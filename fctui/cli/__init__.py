"""The ``fctui`` command line: every command's parsing and printing, one module per command group.

* console.py -- ``fctui`` (the console) and ``fctui demo``
* check.py   -- ``fctui check``
* jobs.py    -- ``fctui backup``, ``fctui jobs [cancel ID | cleanup]``
* restore.py -- ``fctui points [VM | verify ID]``, ``fctui restore POINT``
* files.py   -- ``fctui files POINT [PATH]``, ``fctui files get|find POINT ...`` (file-level restore)
* mount.py   -- ``fctui mount POINT MOUNTPOINT`` (read-only FUSE, optional)
* repo.py    -- ``fctui repo verify|prune|gc|forget``
* policy.py  -- ``fctui policy list|show|add|edit|remove|export|import|run``
* dr.py      -- ``fctui dr plan add|list|show|remove``, ``dr rehearse|failover PLAN``, ``dr runs``
* status.py  -- ``fctui status`` (protection, for monitoring: Nagios exit codes, --json, --prometheus)
* sim.py     -- ``fctui sim``
* agent.py   -- ``fctui agent [--service]``, ``fctui agent install --print``

Each module's ``register(subparsers)`` adds its parsers and sets ``func`` (a ``run(ns) -> int``) on them;
modules import the domain inside their ``run`` functions, so building the whole parser stays cheap and
``fctui check`` never imports textual. Global options parse the same wherever they stand (common.py).
Exit codes are in common.py: 0 ran, 1 failed, 2 usage error, 3 VRM unreachable or login refused,
4 succeeded with warnings, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from . import agent, check, common, console, dr, files, jobs, mount, policy, repo, restore, sim, status

_GROUPS = (console, check, jobs, restore, files, mount, repo, policy, dr, status, sim, agent)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fctui",
        description="Terminal console for agentless backup and restore of FusionCompute VMs. "
                    "Without a command it opens the console (a configured profile, or --vrm/--user).",
    )
    from fctui import __version__
    parser.add_argument("--version", action="version", version=f"fctui {__version__}")
    common.add_connection_options(parser, top=True)
    common.add_json_option(parser, top=True, help="print JSON (commands that print a result)")
    console.add_console_options(parser)
    parser.set_defaults(func=console.run_console, connects=True, prints_json=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in _GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    ns = parser.parse_args(argv)
    name = ns.command or "the console"
    # Global options given before a command that has no use for them are an error, not silently dropped.
    if not ns.connects and common.given_connection_options(ns):
        parser.error(f"{name} does not connect to a VRM; drop {', '.join(common.given_connection_options(ns))}")
    if not ns.prints_json and getattr(ns, "json", False):
        parser.error(f"{name} has no --json output")
    run: Callable[[argparse.Namespace], int] = ns.func
    from ..store import StoreError
    try:
        return int(run(ns) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return common.EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`fctui status | head`): not an error of ours, and no traceback. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        import os
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13   # as a shell reports a process ended by SIGPIPE
    except StoreError as e:
        # fctui's own directories unusable (a runtime dir owned by someone else or not writable, a data
        # dir that cannot be created): one line, the agent cannot be had (exit 1), never a traceback
        common.err(str(e))
        return common.EXIT_FAILED
