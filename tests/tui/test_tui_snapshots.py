"""SVG snapshot tests of the console (pytest-textual-snapshot). Update with ``pytest --snapshot-update``.

Deterministic: seeded simulator in-process, fixed clock, no auto refresh, animations off, no user
config, notifications cleared, and before each capture a wait on what it must show (never a fixed
pause): lazily loaded parts (snapshot trees, the latest restore point) read, no worker running, the
footer composed from the screen's current bindings (:func:`settled`, used by the other snapshot files).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from textual.app import App
from textual.widgets import Footer, Input
from textual.widgets._footer import FooterKey
from textual.worker import WorkerState

from fctui.config import Config
from fctui.tui.app import FctuiApp
from fctui.tui.messages import FeedLost
from fctui.tui.screens import DatastoresScreen, DetailScreen, FirstRunScreen, HelpScreen
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


# --- waiting for what the shot shows ------------------------------------------------------------------

def footer_current(app: App) -> bool:
    """Every footer of the screen shows the screen's bindings as they are now (the footer recomposes
    after bindings change, a moment later): the same actions in the same order, each dimmed or not."""
    screen = app.screen
    for footer in screen.query(Footer):
        want: dict[str, bool] = {}
        for _node, binding, enabled, _tip in screen.active_bindings.values():
            if binding.show:
                want.setdefault(binding.action, not enabled)
        got = [(k.action, k.has_class("-disabled")) for k in footer.query(FooterKey)
               if not k.has_class("-command-palette")]
        if got != list(want.items()):
            return False
    return True


LONG_LIVED = {"jobs-watch"}   # the console's watch of the agent's jobs runs as long as the console


def busy(app: App) -> bool:
    """A worker (other than the long-lived ones) is still on its way to change what is drawn."""
    return any(w.state in (WorkerState.PENDING, WorkerState.RUNNING) and w.group not in LONG_LIVED
               for w in app.workers)


def no_blink(app: App) -> None:
    """A focused input's cursor blinks every 0.5 s: steady on, whenever the shot is taken."""
    for inp in app.screen.query(Input):
        inp.cursor_blink = False


async def settled(pilot: Any, app: App, cond: Callable[[], bool], timeout: float = 20.0) -> None:
    """Until ``cond`` holds, no worker runs and the footer is current; then one more refresh."""
    await wait_until(pilot, cond, timeout)
    await wait_until(pilot, lambda: not busy(app), timeout)
    no_blink(app)
    app.clear_notifications()
    await wait_until(pilot, lambda: cond() and footer_current(app), timeout)
    await pilot.pause()
    assert cond() and footer_current(app)


def detail_ready(app: FctuiApp, key: str) -> bool:
    """The VM's snapshot tree and latest restore point (none here) have been read."""
    return ((key in app.snapshots or key in app.snapshot_errors) and key in app.backup_points
            and key not in app._point_reading and not app._view_running and not app._view_dirty
            and app._detail_timer is None)



async def settle(pilot, app: FctuiApp) -> None:
    """The inventory loaded and, where the side pane shows (160 columns), the cursor's VM in it."""
    await wait_loaded(pilot, app)
    key = app._table_cursor()
    await settled(pilot, app, lambda: not key or app.size.width < 120 or detail_ready(app, key))


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
        await settled(pilot, app, lambda: detail_ready(app, key)
                      and (size[0] >= 120 or isinstance(app.screen, DetailScreen)))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_datastores_view(snap_compare, size):
    app = app_for()

    async def run_before(pilot):
        await settle(pilot, app)
        await pilot.press("D")
        await settled(pilot, app, lambda: isinstance(app.screen, DatastoresScreen))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(snap_compare, size):
    app = app_for()

    async def run_before(pilot):
        await settle(pilot, app)
        await pilot.press("question_mark")
        await settled(pilot, app, lambda: isinstance(app.screen, HelpScreen))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_first_run(snap_compare, size):
    app = FctuiApp(spec=None, config=Config(), clock=FixedClock(), watch_tty=False)
    app.animation_level = "none"
    assert snap_compare(app, terminal_size=size,
                        run_before=lambda p: settled(p, app, lambda: isinstance(app.screen, FirstRunScreen)))


def test_light_theme_help_and_datastores(snap_compare):
    app = app_for("textual-light")

    async def run_before(pilot):
        await settle(pilot, app)
        await pilot.press("D")
        await settled(pilot, app, lambda: isinstance(app.screen, DatastoresScreen))

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def stale_banner(size: tuple[int, int]) -> tuple[FctuiApp, Any]:
    app = app_for()

    async def run_before(pilot):
        await settle(pilot, app)
        app.post_message(FeedLost("connection refused (http://vrm.sim)", 4.0))
        key = app._table_cursor()
        await settled(pilot, app, lambda: bool(app.stale_reason) and app.screen.query_one("#banner").display
                      and not app._view_running and not app._view_dirty
                      and (size[0] < 120 or detail_ready(app, key)))
    return app, run_before


def test_stale_banner(snap_compare):
    """The VRM stops answering: banner, last data kept."""
    app, run_before = stale_banner((80, 24))
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_stale_banner_wide(snap_compare):
    """The same at 160x48, the detail pane beside the table."""
    app, run_before = stale_banner((160, 48))
    assert snap_compare(app, terminal_size=(160, 48), run_before=run_before)
