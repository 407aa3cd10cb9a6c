"""The ``fctui`` command line.

Each area owns its options (``add_*_arguments``) and its runner (``run_*``); this module only dispatches.
Areas are imported when their subcommand is used, so ``fctui check`` never pays for importing textual.
Exit codes: 0 ran, 2 usage error, 3 VRM unreachable or login refused (per command), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

# subcommand -> (module, function adding arguments to the subparser, function running it)
_COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "demo": ("fctui.tui.launch", "add_demo_arguments", "run_demo",
             "open the console against an embedded VRM simulator"),
    "sim": ("fctui.sim.server", "add_sim_arguments", "run_cli",
            "run the VRM simulator alone (training, demos, tests)"),
    "check": ("fctui.inventory.check", "add_check_arguments", "run_check",
              "report which VMs can be backed up, and why not"),
}
# Areas that register several subcommands at once: (module, function taking the subparsers object).
_COMMAND_GROUPS: list[tuple[str, str]] = [
    ("fctui.jobs.cli", "add_job_arguments"),
    ("fctui.repo.cli", "add_repo_arguments"),
]


def _wanted(argv: list[str]) -> str | None:
    """The subcommand named on the command line, if any (first non-option word)."""
    for a in argv:
        if not a.startswith("-"):
            return a
    return None


def _adapt(name: str, run: Callable) -> Callable[[argparse.Namespace], int]:
    if name == "demo":
        # run_demo takes keyword options so the TUI tests can call it without argparse.
        def run_demo(ns: argparse.Namespace) -> int:
            opts = {k: v for k, v in vars(ns).items() if not k.startswith("_") and k not in ("command", "vms")}
            return run(ns.vms, **opts)
        return run_demo
    return run


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fctui",
        description="Terminal console for agentless backup and restore of FusionCompute VMs. "
                    "Without a subcommand it opens the console (a configured profile, or --vrm/--user).",
    )
    from fctui import __version__
    parser.add_argument("--version", action="version", version=f"fctui {__version__}")
    try:
        tui = importlib.import_module("fctui.tui.launch")
        tui.add_tui_arguments(parser)
        parser.set_defaults(_run=tui.run_tui)
    except ImportError:  # the console is not built yet in this checkout
        parser.set_defaults(_run=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _wanted(argv)
    for name, (module, add, run, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        # Only the chosen subcommand's area is imported; the others show in --help by name.
        if wanted != name:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError:
            p.set_defaults(_run=None)
            continue
        getattr(mod, add)(p)
        p.set_defaults(_run=_adapt(name, getattr(mod, run)))
    for module, add in _COMMAND_GROUPS:
        try:
            getattr(importlib.import_module(module), add)(sub)
        except ImportError:
            continue
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    ns = parser.parse_args(argv)
    # Areas set either ``_run`` (through this module's table) or ``func`` (their own subparsers).
    # A subcommand's own ``func`` wins over the top-level default (the console).
    run: Callable[[argparse.Namespace], int] | None = getattr(ns, "func", None) or getattr(ns, "_run", None)
    if run is None:
        parser.error(f"{ns.command or 'the console'} is not available in this build")
    try:
        return int(run(ns) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
