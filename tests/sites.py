"""Two simulated sites for the multi-site tests (issue #19): helpers other test modules import.

* ``site_config(index, vms=30, **kw)`` -- a small ``SimConfig`` for site ``index`` (0: site-01, 1: site-02
  "dr-…"): like tests/conftest.py ``small_disks()`` (1 GB edge-case disks, 2 % written, 64 KiB CBT blocks,
  ``time_scale=100``), same seed for both sites so restored generated blocks are kept as keys.
* ``two_sites(vms=30, clock=None, **kw)`` -- a context manager yielding ``(a, b)``: two started
  ``EmbeddedSimulator``s (site_index 0 and 1) on loopback, sharing ``clock`` when one is given (a
  ``ManualClock`` moves both).
* ``two_site_sims(vms=30, clock=None, **kw)`` -- the same two ``Simulator``s without HTTP servers, for the
  in-process clients below (cheaper: no threads, no sockets).
* ``asgi_client(sim)`` / ``asgi_control(sim)`` -- a (not yet logged-in) ``VrmClient`` and a raw control
  ``httpx.AsyncClient`` on a simulator over ``httpx.ASGITransport``; each sim gets its own base URL
  (``http://site-01.sim``, ``http://site-02.sim``) so URLs never mix sites up.
* Site 2 prefixes its infrastructure names with ``dr-`` (``dr-cluster-01``, ``dr-cna-01``, ``dr-prod-net``),
  not its VMs: the edge-case VMs are named alike on both sites (find them by URN: ``GET /sim/edge-cases``
  or ``sim.edge_cases``).
* ``write_sites_config(config_dir, a, b, names=("a", "b"))`` -- ``config.toml`` with one profile per site
  (``[profiles.a]`` for ``a``'s URL, ``[profiles.b]`` for ``b``'s); ``a``/``b`` are EmbeddedSimulators or URLs.
  Point ``FCTUI_CONFIG_DIR`` at ``config_dir``. No password is written (never on disk in config): use
  ``FCTUI_PASSWORD`` (both sims accept ``SIM_PASSWORD``) or ``FCTUI_PASSWORD_<LABEL>``.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import httpx

if TYPE_CHECKING:
    from fctui.sim import EmbeddedSimulator, SimConfig, Simulator
    from fctui.sim.state import Clock
    from fctui.vrm import VrmClient

SIM_USER = "admin"
SIM_PASSWORD = "Admin@123"


def site_config(index: int, vms: int = 30, **kw: Any) -> "SimConfig":
    from fctui.sim import SimConfig
    opts: dict[str, Any] = dict(vms=vms, seed=1, sector_of_block=128, time_scale=100.0, edge_disk_gb=1,
                                edge_fill=0.02, site_index=index)
    opts.update(kw)
    return SimConfig(**opts)


def two_site_sims(vms: int = 30, clock: "Clock | None" = None, **kw: Any) -> "tuple[Simulator, Simulator]":
    from fctui.sim import Simulator
    return (Simulator(site_config(0, vms, **kw), clock=clock), Simulator(site_config(1, vms, **kw), clock=clock))


@contextmanager
def two_sites(vms: int = 30, clock: "Clock | None" = None,
              **kw: Any) -> "Iterator[tuple[EmbeddedSimulator, EmbeddedSimulator]]":
    """Two simulators served on loopback: ``a`` (site-01) and ``b`` (site-02); stopped on exit."""
    from fctui.sim import EmbeddedSimulator
    sa, sb = two_site_sims(vms, clock, **kw)
    with EmbeddedSimulator(sim=sa) as a, EmbeddedSimulator(sim=sb) as b:
        yield a, b


def base_url(sim: "Simulator") -> str:
    return f"http://{sim.site.name}.sim"


def asgi_client(sim: "Simulator", **kw: Any) -> "VrmClient":
    """A VrmClient for ``sim`` over ASGI (log in with ``async with``)."""
    from fctui.sim import create_app
    from fctui.vrm import VrmClient
    return VrmClient(base_url(sim), sim.config.user, sim.config.password,
                     transport=httpx.ASGITransport(app=create_app(sim)), **kw)  # type: ignore[arg-type]


def asgi_control(sim: "Simulator") -> httpx.AsyncClient:
    """The simulator's /sim/… control API over ASGI."""
    from fctui.sim import create_app
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sim)), base_url=base_url(sim))


def write_sites_config(config_dir: "str | Path", a: Any, b: Any, names: Sequence[str] = ("a", "b"),
                       user: str = SIM_USER, extra: str = "") -> Path:
    """Write ``config_dir/config.toml`` with a profile per site; returns its path."""
    d = Path(config_dir)
    d.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for name, site in zip(names, (a, b)):
        url = site if isinstance(site, str) else site.url
        lines += [f"[profiles.{name}]", f'vrm = "{url}"', f'user = "{user}"', ""]
    path = d / "config.toml"
    path.write_text("\n".join(lines) + extra)
    return path
