"""Opening the console: against a named VRM, or ``fctui demo`` against a simulated one.

No argument parsing here (that is fctui/cli/console.py): these take plain values, so tests and the CLI
call them the same way.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from ..config import Config, ConfigError, load_config
from .source import ConnectSpec

EXIT_UNREACHABLE = 3


def _err(msg: str) -> None:
    print(f"fctui: {msg}", file=sys.stderr)


def _demo_starter(vms: int, latency_ms: float = 0.0, seed: int = 1) -> Callable[[], tuple[ConnectSpec, Callable[[], None]]]:
    def start() -> tuple[ConnectSpec, Callable[[], None]]:
        from ..sim import EmbeddedSimulator, demo_config

        cfg = demo_config(vms=vms, seed=seed, latency_ms=latency_ms)
        emb = EmbeddedSimulator(cfg)
        emb.start()
        spec = ConnectSpec(url=emb.url, user=cfg.user, password=cfg.password, label="demo")
        return spec, emb.stop
    return start


def open_console(specs: Sequence[ConnectSpec] | ConnectSpec | None, config: Config, *, read_only: bool = False,
                 theme: str | None = None,
                 demo_starter: Callable[[], tuple[ConnectSpec, Callable[[], None]]] | None = None) -> int:
    """Run the console until it quits, on every VRM of ``specs`` (each a site; one spec as before);
    none (``[]`` or None) shows the first-run screen."""
    from .app import FctuiApp

    if specs is None:
        specs = []
    elif isinstance(specs, ConnectSpec):
        specs = [specs]
    app = FctuiApp(specs=list(specs), config=config, read_only=read_only or None, theme=theme,
                   demo_starter=demo_starter)
    return int(app.run() or 0)


def _sites_starter(vms: int, sites: int, latency_ms: float = 0.0,
                   seed: int = 1) -> Callable[[], tuple[list[ConnectSpec], Callable[[], None]]]:
    """``fctui demo --sites N``: N simulated VRMs (site_index 0…N-1) hosted by the console, labelled by
    their site name (site-01, site-02, …)."""
    def start() -> tuple[list[ConnectSpec], Callable[[], None]]:
        from ..sim import EmbeddedSimulator, demo_config

        started: list[EmbeddedSimulator] = []

        def stop() -> None:
            for emb in started:
                emb.stop()
        try:
            specs = []
            for i in range(sites):
                cfg = demo_config(vms=vms, seed=seed, latency_ms=latency_ms, site_index=i)
                emb = EmbeddedSimulator(cfg)
                emb.start()
                started.append(emb)
                specs.append(ConnectSpec(url=emb.url, user=cfg.user, password=cfg.password, label=f"site-{i + 1:02d}"))
        except Exception:
            stop()
            raise
        return specs, stop
    return start


def agent_demo_starter(vms: int) -> Callable[[], tuple[ConnectSpec, Callable[[], None]]]:
    from .jobs_screen import agent_demo_starter as start_in_agent
    return start_in_agent(vms)


def run_demo(vms: int = 60, *, latency_ms: float = 0.0, seed: int = 1, read_only: bool = False,
             theme: str | None = None, sites: int = 1) -> int:
    """``fctui demo``: the console against a simulated VRM on loopback.

    The simulator lives in the job agent (started on demand, gone after 15 idle minutes), so a backup
    launched from the demo keeps running after the console closes and a reopened console shows it.
    With ``latency_ms`` (benchmarks, slow-link drills) the console hosts its own simulator instead; with
    ``sites`` > 1 it hosts that many, each a VRM of the console (jobs are given their address and login)."""
    try:
        config = load_config()
    except ConfigError as e:
        _err(f"{e} (ignored for the demo)")
        config = Config()
    config.cluster = None   # the demo VRM lives in the local agent: no proxy of a cluster can reach it
    try:
        if sites > 1:
            specs, stop = _sites_starter(vms, sites, latency_ms, seed)()
        else:
            starter = _demo_starter(vms, latency_ms, seed) if latency_ms else agent_demo_starter(vms)
            spec, stop = starter()
            specs = [spec]
    except Exception as e:
        _err(f"could not start the simulated VRM: {e}")
        return EXIT_UNREACHABLE
    try:
        return open_console(specs, config, read_only=read_only, theme=theme)
    finally:
        stop()
