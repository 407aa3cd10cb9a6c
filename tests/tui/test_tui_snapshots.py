"""SVG snapshot tests of the console (pytest-textual-snapshot). Update with ``pytest --snapshot-update``.

Deterministic: seeded simulator in-process, fixed clock, no auto refresh, animations off, no user
config, notifications cleared, lazily loaded parts (snapshot trees) awaited before the capture.
"""

from __future__ import annotations

import pytest

from fctui.config import Config
from fctui.tui.app import FctuiApp
from fctui.tui.testing import FixedClock, make_app, wait_loaded, wait_until

SIZES = [(80, 24), (160, 48)]


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))
    # the detail's "next backup" reads the repository: none here, whatever the user's data dir holds
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))


def app_for(theme: str | None = None) -> FctuiApp:
    app = make_app(vms=60, seed=1, theme=theme)
    app.animation_level = "none"
    return app


async def settle(pilot, app: FctuiApp) -> None:
    await wait_loaded(pilot, app)
    app.clear_notifications()
    key = app._table_cursor()
    if key and app.size.width >= 120:
        await wait_until(pilot, lambda: key in app.snapshots or key in app.snapshot_errors)
    await pilot.pause(0.15)   # the detail pane renders after the cursor settles


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_screen(snap_compare, size):
    app = app_for()
    assert snap_compare(app, terminal_size=size, run_before=lambda p: settle(p, app))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_screen_light_theme(snap_compare, size):
    app = app_for("textual-light")
    assert snap_compare(app, terminal_size=size, run_before=lambda p: settle(p, app))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_detail(snap_compare, size):
    """160x48: the side pane on a VM with several findings; 80x24: the detail screen (enter)."""
    app = app_for()

    async def run_before(pilot):
        await wait_loaded(pilot, app)
        app.set_filter("name:edge-combo-indep", update_input=True)
        await wait_until(pilot, lambda: not app._view_running and app._table_cursor() is not None)
        await pilot.press("slash", "escape")     # clear the filter line: the pane shows the selected VM
        app.set_filter("name:edge-combo-indep")
        await wait_until(pilot, lambda: not app._view_running)
        key = app._table_cursor()
        if size[0] < 120:
            await pilot.press("enter")
        else:
            app.show_detail(key, now=True)
        await wait_until(pilot, lambda: key in app.snapshots or key in app.snapshot_errors)
        app.clear_notifications()
        await pilot.pause(0.15)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_datastores_view(snap_compare, size):
    app = app_for()

    async def run_before(pilot):
        await settle(pilot, app)
        await pilot.press("D")
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(snap_compare, size):
    app = app_for()

    async def run_before(pilot):
        await settle(pilot, app)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_first_run(snap_compare, size):
    app = FctuiApp(spec=None, config=Config(), clock=FixedClock(), watch_tty=False)
    app.animation_level = "none"
    assert snap_compare(app, terminal_size=size)


def test_light_theme_help_and_datastores(snap_compare):
    app = app_for("textual-light")

    async def run_before(pilot):
        await settle(pilot, app)
        await pilot.press("D")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_stale_banner(snap_compare):
    """The VRM stops answering: banner, last data kept."""
    app = app_for()

    async def run_before(pilot):
        await settle(pilot, app)
        app.post_message(__import__("fctui.tui.messages", fromlist=["FeedLost"]).FeedLost(
            "connection refused (http://vrm.sim)", 4.0))
        await wait_until(pilot, lambda: bool(app.stale_reason))
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
