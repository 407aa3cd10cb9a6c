"""SVG snapshots of the multi-site console (issue #19): two VRMs' tree and table at 80x24 and 160x48,
and one VRM stale at 80x24. Deterministic as tests/tui/test_tui_snapshots.py: seeded simulators
in-process (site_index 0 and 1), fixed clock, no auto refresh, animations off, no user config."""

from __future__ import annotations

from typing import Any

import pytest

from fctui.sim import SimConfig, Simulator
from fctui.tui.app import FctuiApp
from fctui.tui.messages import FeedLost
from fctui.tui.screens import TreeScreen
from fctui.tui.testing import make_sites_app, wait_loaded
from fctui.tui.widgets.vmtable import VmTable
from tests.tui.test_tui_snapshots import SIZES, detail_ready, settled


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))


def sites_app() -> FctuiApp:
    app = make_sites_app([Simulator(SimConfig(vms=8, seed=1, site_index=i)) for i in range(2)])
    app.animation_level = "none"
    return app


async def settle(pilot, app: FctuiApp) -> None:
    await wait_loaded(pilot, app)
    app.clear_notifications()
    # the cursor stays on the VM it was on as rows arrive, and the two sites' first rows race: start
    # from the top
    table = app.screen.query_one(VmTable)
    table.action_first()
    first = table.keys[0]
    await settled(pilot, app, lambda: app._table_cursor() == first
                  and (app.size.width < 120 or detail_ready(app, first)))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_sites_table(snap_compare, size):
    app = sites_app()
    assert snap_compare(app, terminal_size=size, run_before=lambda p: settle(p, app))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_sites_tree(snap_compare, size):
    app = sites_app()

    async def run_before(pilot):
        await settle(pilot, app)
        await pilot.press("t")
        await settled(pilot, app, lambda: isinstance(app.screen, TreeScreen))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def one_stale(size: tuple[int, int]) -> tuple[FctuiApp, Any]:
    app = sites_app()

    async def run_before(pilot):
        await settle(pilot, app)
        app.post_message(FeedLost("connection refused (http://site-02.sim)", 4.0, site=1))
        key = app._table_cursor()
        await settled(pilot, app, lambda: bool(app.sites[1].stale_reason) and not app._view_running
                      and not app._view_dirty and (size[0] < 120 or detail_ready(app, key)))
    return app, run_before


def test_sites_one_stale(snap_compare):
    """Site b stops answering: its banner, its rows and summary count marked stale; a stays as it was."""
    app, run_before = one_stale((80, 24))
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_sites_one_stale_wide(snap_compare):
    """The same at 160x48, the detail pane beside the table."""
    app, run_before = one_stale((160, 48))
    assert snap_compare(app, terminal_size=(160, 48), run_before=run_before)
