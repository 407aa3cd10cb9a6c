"""``fctui sim``: the VRM simulator alone, in the foreground (training drills, demos, tests)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:  # pragma: no cover
    from ..sim import SimConfig, Simulator


def register(sub: Any) -> None:
    p = sub.add_parser("sim", help="run the VRM simulator alone (training, demos, tests)")
    add_sim_arguments(p)
    p.set_defaults(func=run_sim, connects=False, prints_json=False)


def add_sim_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=7443, help="port (0 = any free port)")
    p.add_argument("--vms", type=int, default=60, help="number of VMs to generate")
    p.add_argument("--seed", type=int, default=1, help="inventory seed")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every VRM call")
    p.add_argument("--time-scale", type=float, default=1.0, help="tasks run this many times faster than real")
    # Not the global --user: these are the credentials the simulator accepts, not the ones fctui logs in with.
    p.add_argument("--user", dest="sim_user", default="admin", help="user name the simulator accepts")
    p.add_argument("--password", dest="sim_password", default="Admin@123",
                   help="password the simulator accepts (the simulator's own, not a VRM's)")
    p.add_argument("--tls", action="store_true", help="serve HTTPS with a throw-away CA")
    p.add_argument("--guest-write-rate", type=float, default=0.0, help="blocks/s each running VM writes (demo)")
    p.add_argument("--jumpable-clock", action="store_true",
                   help="real time plus an offset that POST /sim/clock/advance moves ahead (schedule drills)")
    p.add_argument("--sector-of-block", type=int, default=4096, help="CBT block size in 512-byte sectors")
    p.add_argument("--sites", type=int, default=1, metavar="N",
                   help="serve N VRMs (site-01, site-02, …) on --port, --port+1, … (port 0: any free ports)")
    p.add_argument("--boot-seconds", type=float, default=20.0,
                   help="seconds of sim time from power-on until a guest's Tools run (divided by --time-scale)")
    p.add_argument("--fail-boot", action="append", default=[], metavar="GLOB",
                   help="VMs whose name matches never get Tools running (repeatable; POST /sim/boot-failures)")
    p.add_argument("--guest-filesystems", action="store_true",
                   help="add 3 VMs whose disks hold real ext4/XFS/NTFS filesystems (POST /sim/vms/{vm}/guestfs)")


def config_from_args(ns: argparse.Namespace) -> "SimConfig":
    """Raises ValueError for values the simulator refuses."""
    from ..sim import SimConfig
    return SimConfig(vms=ns.vms, seed=ns.seed, latency_ms=ns.latency_ms, time_scale=ns.time_scale,
                     user=ns.sim_user, password=ns.sim_password, guest_write_rate=ns.guest_write_rate,
                     sector_of_block=ns.sector_of_block, guest_filesystems=ns.guest_filesystems,
                     boot_seconds=getattr(ns, "boot_seconds", 20.0),
                     boot_failures=tuple(getattr(ns, "fail_boot", None) or ()))


def site_configs(cfg: "SimConfig", sites: int) -> "list[SimConfig]":
    """One config per site of ``fctui sim --sites N`` (same seed: the sites share generated blocks)."""
    import dataclasses
    if sites < 1:
        raise ValueError("--sites must be at least 1")
    return [dataclasses.replace(cfg, site_index=i) for i in range(sites)]


def _announce(url: str, sim: "Simulator", generated_s: float, ca_file: str | None, *, site: bool = False) -> None:
    cfg = sim.config
    n_vms = sum(1 for v in sim.vms.values() if not v.is_template)
    named = f"{sim.site.name} {sim.site_urn}, " if site else ""
    print(f"FusionCompute VRM simulator: {url}  ({named}{n_vms} VMs, seed {cfg.seed}, generated in {generated_s:.2f} s)")
    if cfg.boot_failures:
        print(f"  boot failures: {', '.join(cfg.boot_failures)}")
    print(f"  user: {cfg.user}  password: {cfg.password}  X-Auth-UserType {cfg.user_type}  (the simulator's own credentials)")
    for u in cfg.users:
        print(f"  user: {u.name}  password: {u.password}  X-Auth-UserType {u.user_type}")
    if ca_file:
        print(f"  CA certificate: {ca_file}")
    print("  control API: /sim/…   press Ctrl-C to stop", flush=True)


def run_sim(ns: argparse.Namespace) -> int:
    from ..sim.server import SimServerError, serve, serve_sites
    try:
        cfg = config_from_args(ns)
        sites = site_configs(cfg, getattr(ns, "sites", 1))
    except ValueError as e:
        print(f"fctui sim: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from ..sim import OffsetClock
        clock = OffsetClock() if getattr(ns, "jumpable_clock", False) else None
        if len(sites) == 1:
            serve(cfg, host=ns.host, port=ns.port, tls=ns.tls, announce=_announce, clock=clock)
        else:
            serve_sites(sites, host=ns.host, port=ns.port, tls=ns.tls, clock=clock,
                        announce=lambda *a: _announce(*a, site=True))
    except SimServerError as e:
        print(f"fctui sim: {e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
