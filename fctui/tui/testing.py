"""Helpers to drive the console headless against the simulator: tests, screenshots, benchmarks.

Deterministic by construction: a seeded simulator in-process (httpx.ASGITransport), a fixed clock for
"updated N s ago", no auto refresh unless asked, and no user config.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import httpx

from ..config import Config
from .app import FctuiApp
from .source import ConnectSpec

SIM_URL = "http://vrm.sim"


class FixedClock:
    """A settable clock for "updated N s ago"."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sim_spec(sim: Any, **kw: Any) -> ConnectSpec:
    from ..sim import create_app

    return ConnectSpec(url=SIM_URL, user=sim.config.user, password=sim.config.password,
                       transport=httpx.ASGITransport(app=create_app(sim)), **kw)


def make_app(sim: Any = None, *, vms: int = 60, seed: int = 1, config: Config | None = None,
             clock: Callable[[], float] | None = None, auto_refresh: bool = False,
             refresh_interval: float = 3600.0, **kw: Any) -> FctuiApp:
    """The console connected in-process to ``sim`` (or to a new seeded simulator)."""
    if sim is None:
        from ..sim import SimConfig, Simulator
        sim = Simulator(SimConfig(vms=vms, seed=seed))
    app = FctuiApp(spec=sim_spec(sim), config=config or Config(), clock=clock or FixedClock(),
                   auto_refresh=auto_refresh, refresh_interval=refresh_interval, watch_tty=False, **kw)
    app.sim = sim  # type: ignore[attr-defined]
    return app


async def wait_until(pilot: Any, cond: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise TimeoutError("condition not reached in time")
        await pilot.pause(step)


async def wait_loaded(pilot: Any, app: FctuiApp, refreshes: int = 1, timeout: float = 15.0) -> None:
    """Until ``refreshes`` full refreshes are on screen, their protection assessed, and no filter/sort
    is pending."""
    await wait_until(pilot, lambda: app.refresh_count >= refreshes and not app.protection_pending
                     and not app._view_running and not app._view_dirty, timeout)
    await pilot.pause()


def screen_text(app: FctuiApp) -> str:
    """The current screen as plain text lines (for assertions on what a person sees)."""
    return "\n".join(s.text for s in app.screen._compositor.render_strips())


class StoppableTransport(httpx.AsyncBaseTransport):
    """A simulator in-process that can be "stopped": while ``down`` every request is refused as by a
    VRM that went away (a connection error), and answered again once ``down`` is False."""

    def __init__(self, sim: Any) -> None:
        from ..sim import create_app
        self._inner = httpx.ASGITransport(app=create_app(sim))
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError(f"connection refused ({request.url.scheme}://{request.url.host})",
                                     request=request)
        return await self._inner.handle_async_request(request)


def make_sites_app(sims: list[Any], labels: list[str] | None = None, *, config: Config | None = None,
                   clock: Callable[[], float] | None = None, auto_refresh: bool = False,
                   refresh_interval: float = 3600.0, **kw: Any) -> FctuiApp:
    """The console on several simulators in-process, each a VRM (site) labelled ``labels`` (a, b, …).
    ``app.transports[i]`` stops and restarts site ``i`` (:class:`StoppableTransport`)."""
    labels = labels or [chr(ord("a") + i) for i in range(len(sims))]
    transports = [StoppableTransport(sim) for sim in sims]
    specs = [ConnectSpec(url=f"http://{sim.site.name}.sim", user=sim.config.user, password=sim.config.password,
                         label=label, transport=t)
             for sim, label, t in zip(sims, labels, transports)]
    app = FctuiApp(specs=specs, config=config or Config(), clock=clock or FixedClock(),
                   auto_refresh=auto_refresh, refresh_interval=refresh_interval, watch_tty=False, **kw)
    app.sims = sims            # type: ignore[attr-defined]
    app.transports = transports   # type: ignore[attr-defined]
    return app
