"""Entry points the CLI wires in: ``fctui [--vrm URL --user USER | --profile NAME]`` and ``fctui demo``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

from ..config import Config, ConfigError, load_config
from .source import ConnectSpec

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def add_tui_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("connection")
    g.add_argument("--vrm", metavar="URL", help="VRM address, e.g. https://vrm.example:7443")
    g.add_argument("--user", metavar="USER", help="VRM user (password from FCTUI_PASSWORD or a prompt)")
    g.add_argument("--profile", metavar="NAME", help="a [profiles.NAME] table of the config file")
    tls = g.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="do not verify the VRM's TLS certificate")
    tls.add_argument("--ca-file", metavar="F", help="CA bundle that signed the VRM's certificate")
    parser.add_argument("--read-only", action="store_true", help="hide every action that changes the VRM")
    parser.add_argument("--theme", metavar="T",
                        help="textual-dark, textual-light, ansi-dark, ansi-light, … (NO_COLOR is respected)")


def _err(msg: str) -> None:
    print(f"fctui: {msg}", file=sys.stderr)


def spec_from_args(ns: argparse.Namespace, config: Config) -> ConnectSpec | None:
    """The connection the arguments ask for; None means "nothing configured" (first-run screen).
    Raises ConfigError for contradictory or incomplete arguments."""
    from ..vrm.credentials import resolve_password

    vrm, user = getattr(ns, "vrm", None), getattr(ns, "user", None)
    profile_name = getattr(ns, "profile", None)
    insecure, ca_file = bool(getattr(ns, "insecure", False)), getattr(ns, "ca_file", None)
    site = api_version = None
    label = ""
    if vrm or user:
        if not (vrm and user):
            raise ConfigError("--vrm and --user go together")
        if not vrm.startswith(("http://", "https://")):
            raise ConfigError(f"--vrm must start with https:// (got {vrm!r})")
    else:
        profile = config.profile(profile_name)
        if profile is None:
            return None
        vrm, user, label = profile.vrm, profile.user, profile.name
        insecure = insecure or profile.insecure
        ca_file = ca_file or profile.ca_file
        site, api_version = profile.site, profile.api_version
    if ca_file and not os.path.isfile(ca_file):
        raise ConfigError(f"CA file {ca_file!r} does not exist")
    password = resolve_password(user)   # asked before the full-screen UI starts; kept in memory only
    verify: bool | str = False if insecure else (ca_file or True)
    if insecure and vrm.startswith("https://"):
        _err("warning: TLS certificate verification is off (--insecure)")
    return ConnectSpec(url=vrm, user=user, password=password, verify=verify, site=site,
                       api_version=api_version, label=label)


def _demo_starter(vms: int, latency_ms: float = 0.0, seed: int = 1) -> Callable[[], tuple[ConnectSpec, Callable[[], None]]]:
    def start() -> tuple[ConnectSpec, Callable[[], None]]:
        from ..sim import EmbeddedSimulator, demo_config

        cfg = demo_config(vms=vms, seed=seed, latency_ms=latency_ms)
        emb = EmbeddedSimulator(cfg)
        emb.start()
        spec = ConnectSpec(url=emb.url, user=cfg.user, password=cfg.password, label="demo")
        return spec, emb.stop
    return start


def _make_app(spec: ConnectSpec | None, config: Config, ns_or_opts: Any, **kw: Any) -> Any:
    from .app import FctuiApp

    get = (lambda k: getattr(ns_or_opts, k, None)) if not isinstance(ns_or_opts, dict) else ns_or_opts.get
    return FctuiApp(spec=spec, config=config, read_only=bool(get("read_only")) or None,
                    theme=get("theme"), **kw)


def run_tui(ns: argparse.Namespace) -> int:
    """``fctui``: the profile / --vrm connection, or the first-run screen when nothing is configured."""
    try:
        config = load_config()
        spec = spec_from_args(ns, config)
    except ConfigError as e:
        _err(str(e))
        return EXIT_USAGE
    except Exception as e:  # credentials errors (no TTY, no FCTUI_PASSWORD) are VrmError subclasses
        _err(str(e))
        return EXIT_USAGE
    app = _make_app(spec, config, ns, demo_starter=_agent_demo_starter(60))
    result = app.run()
    return int(result or 0)


def _agent_demo_starter(vms: int) -> Callable[[], tuple[ConnectSpec, Callable[[], None]]]:
    from .jobs_screen import agent_demo_starter
    return agent_demo_starter(vms)


def run_demo(vms: int = 60, **opts: Any) -> int:
    """``fctui demo [--vms N]``: the console against a simulated VRM on loopback.

    The simulator lives in the job agent (started on demand, gone after 15 idle minutes), so a backup
    launched from the demo keeps running after the console closes and a reopened console shows it.
    With ``--latency-ms`` (benchmarks, slow-link drills) the console hosts its own simulator instead."""
    try:
        config = load_config()
    except ConfigError as e:
        _err(f"{e} (ignored for the demo)")
        config = Config()
    latency = float(opts.get("latency_ms") or 0.0)
    starter = (_demo_starter(vms, latency, int(opts.get("seed") or 1)) if latency
               else _agent_demo_starter(vms))
    try:
        spec, stop = starter()
    except Exception as e:
        _err(f"could not start the simulated VRM: {e}")
        return EXIT_UNREACHABLE
    try:
        app = _make_app(spec, config, opts)
        result = app.run()
    finally:
        stop()
    return int(result or 0)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vms", type=int, default=60, help="number of simulated VMs (default 60)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="simulated VRM latency per request")
    parser.add_argument("--read-only", action="store_true")
    parser.add_argument("--theme", metavar="T")


def main(argv: list[str] | None = None) -> int:
    """``python -m fctui.tui.launch [demo]`` until the lead wires the CLI."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        p = argparse.ArgumentParser(prog="fctui demo")
        add_demo_arguments(p)
        ns = p.parse_args(argv[1:])
        return run_demo(ns.vms, latency_ms=ns.latency_ms, read_only=ns.read_only, theme=ns.theme)
    p = argparse.ArgumentParser(prog="fctui")
    add_tui_arguments(p)
    return run_tui(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
