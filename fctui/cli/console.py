"""``fctui`` (the console, against a profile or ``--vrm/--user``) and ``fctui demo`` (against a simulated VRM)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .common import (UsageError, add_cluster_option, command, connection_from, connections_from, password_for,
                     warn_insecure)

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config
    from ..tui.source import ConnectSpec


def add_console_options(p: argparse.ArgumentParser) -> None:
    """Options of the console itself (the connection options are global: common.py)."""
    p.add_argument("--read-only", action="store_true", help="hide every action that changes the VRM")
    p.add_argument("--theme", metavar="T",
                   help="textual-dark, textual-light, ansi-dark, ansi-light, … (NO_COLOR is respected)")
    add_cluster_option(p, top=True)


def register(sub: Any) -> None:
    d = sub.add_parser("demo", help="open the console against a simulated VRM (hosted by the job agent)")
    d.add_argument("--vms", type=int, default=60, help="number of simulated VMs (default 60)")
    d.add_argument("--latency-ms", type=float, default=0.0,
                   help="simulated VRM latency per request (the console then hosts its own simulator)")
    d.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    d.add_argument("--sites", type=int, default=1, metavar="N",
                   help="simulated VRMs, each a site of the console (default 1; more: the console hosts them)")
    d.add_argument("--read-only", action="store_true", help="hide every action that changes the VRM")
    d.add_argument("--theme", metavar="T", help="textual-dark, textual-light, ansi-dark, ansi-light, …")
    d.set_defaults(func=run_demo, connects=False, prints_json=False)


def _spec(conn: Any, password: str | None = None) -> "ConnectSpec":
    from ..tui.source import ConnectSpec

    if password is None:
        password = password_for(conn)   # kept in memory only
    warn_insecure(conn)
    return ConnectSpec(url=conn.url, user=conn.user, password=password, verify=conn.verify, site=conn.site,
                       api_version=conn.api_version, label=conn.label, **conn.client_options(),
                       host_snapshot_gate=conn.host_snapshot_gate)


def spec_from_args(ns: argparse.Namespace, config: "Config") -> "ConnectSpec | None":
    """One VRM's connection (several named is a UsageError): None means nothing is configured.
    Raises UsageError or ConfigError; asks for the password (before the full-screen UI starts)."""
    conn = connection_from(ns, config, command="this command")
    return _spec(conn) if conn is not None else None


def specs_from_args(ns: argparse.Namespace, config: "Config") -> "list[ConnectSpec]":
    """The console's VRMs, each a site (``--profile a,b``, ``--all-sites``, several ``--vrm``; one as
    before): [] means nothing is configured (the first-run screen). Raises UsageError or ConfigError;
    asks for each VRM's password before the full-screen UI starts."""
    from .sites import passwords
    conns = connections_from(ns, config)
    if len(conns) <= 1:
        return [_spec(conn) for conn in conns]
    # every prompt before the full-screen UI, one per VRM (two sites of one VRM share its answer)
    return [_spec(conn, pw) for conn, pw in zip(conns, passwords(conns))]


@command
def run_console(ns: argparse.Namespace) -> int:
    """``fctui``: the profile / --vrm connection, or the first-run screen when nothing is configured."""
    from ..config import cluster_url, load_config
    from ..tui.launch import agent_demo_starter, open_console
    config = load_config()
    config.cluster = cluster_url(ns.cluster, config)   # the console's jobs: the cluster's, else the local agent's
    specs = specs_from_args(ns, config)
    return open_console(specs, config, read_only=ns.read_only, theme=ns.theme, demo_starter=agent_demo_starter(60))


@command
def run_demo(ns: argparse.Namespace) -> int:
    from ..tui.launch import run_demo as open_demo
    if not 0 <= ns.vms <= 100_000:
        raise UsageError("--vms must be between 0 and 100000")
    sites = getattr(ns, "sites", 1)
    if not 1 <= sites <= 8:
        raise UsageError("--sites must be between 1 and 8")
    return open_demo(ns.vms, latency_ms=ns.latency_ms, seed=ns.seed, read_only=ns.read_only, theme=ns.theme,
                     sites=sites)
