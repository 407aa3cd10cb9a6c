"""Pilot tests of the inventory console against the simulator (in-process HTTP, seeded inventory)."""

from __future__ import annotations

import httpx
import pytest

from fctui.config import Config
from fctui.inventory.query import VERDICT_ORDER
from fctui.sim import SimConfig, Simulator, create_app
from fctui.tui.app import FctuiApp
from fctui.tui.dialogs import ConfirmScreen
from fctui.tui.screens import DatastoresScreen, DetailScreen, FirstRunScreen, HelpScreen, MainScreen, TreeScreen
from fctui.tui.testing import FixedClock, make_app, screen_text, wait_loaded, wait_until
from fctui.tui.widgets.summary import SummaryBar
from fctui.tui.widgets.vmtable import VmTable


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimConfig(vms=60, seed=1, time_scale=100.0))


def table(app: FctuiApp) -> VmTable:
    return app.screen.query_one(VmTable)


def rows(app: FctuiApp):
    t = table(app)
    return [app.store.rows[k] for k in t.keys]


async def control(sim: Simulator, method: str, path: str, json=None):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sim)),
                                 base_url="http://vrm.sim") as c:
        r = await c.request(method, path, json=json)
        assert r.status_code < 300, r.text
        return r.json() if r.content else None


async def test_loads_every_vm_with_verdicts(sim):
    app = make_app(sim)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_loaded(pilot, app)
        from fctui.vrm import VrmClient
        async with VrmClient("http://vrm.sim", sim.config.user, sim.config.password,
                             transport=httpx.ASGITransport(app=create_app(sim))) as c:
            site = (await c.sites())[0]
            expected = {vm.urn for vm in await c.vms(site.uri, templates=None)}
        t = table(app)
        assert t.row_count == len(app.store) > 0
        assert set(t.keys) == expected
        assert all(r.verdict in ("ready", "degraded", "blocked") for r in rows(app))
        assert not any(r.provisional for r in rows(app))
        assert not any(app.assessment(u).provisional for u in expected)
        text = screen_text(app)
        assert "Verdict" in text and "updated 0 s ago" in text
        # confirmed rows are redrawn: no verdict on screen is still marked provisional
        assert not any(f"{v}?" in text for v in ("ready", "degraded", "blocked"))


async def test_navigation_moves_cursor_and_detail_follows(sim):
    app = make_app(sim)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_loaded(pilot, app)
        t = table(app)
        first = t.cursor_key
        await pilot.press("down", "down", "j")
        assert t.cursor == 3
        key = t.keys[3]
        assert t.cursor_key == key != first
        await pilot.pause()
        assert app.vms[key].name in screen_text(app)
        await pilot.press("G")
        assert t.cursor == t.row_count - 1
        await pilot.press("g")
        assert t.cursor == 0
        await pilot.press("pagedown")
        assert t.cursor > 10


async def test_filter_language_in_the_ui(sim):
    app = make_app(sim)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_loaded(pilot, app)
        total = table(app).row_count
        await pilot.press("slash", *"verdict:blocked", "enter")
        await wait_until(pilot, lambda: not app._view_running)
        got = rows(app)
        assert got and all(r.verdict == "blocked" for r in got)
        assert len(got) < total
        # inverse
        app.set_filter("!verdict:blocked")
        await wait_until(pilot, lambda: not app._view_running)
        assert rows(app) and all(r.verdict != "blocked" for r in rows(app))
        # rule-qualified: the simulator's IDE edge case
        app.set_filter("rule:disk-ide", update_input=True)
        await wait_until(pilot, lambda: not app._view_running)
        assert rows(app) and all("disk-ide" in r.rules for r in rows(app))
        assert any(r.name.startswith("edge-disk-ide") for r in rows(app))
        # a broken regex keeps the last good view and marks the input
        before = list(table(app).keys)
        app.set_filter("re:(", update_input=True)
        await pilot.pause()
        assert list(table(app).keys) == before
        assert "regular expression" in str(app.screen.query_one("#filter").border_subtitle)
        # escape in the input clears the filter
        app.screen.query_one("#filter").focus()
        await pilot.press("escape")
        await wait_until(pilot, lambda: not app._view_running)
        assert table(app).row_count == total


async def test_sort_by_columns(sim):
    app = make_app(sim)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_loaded(pilot, app)
        names = [r.name.lower() for r in rows(app)]
        assert names == sorted(names)
        app.set_sort("verdict", False)
        await wait_until(pilot, lambda: not app._view_running)
        order = [VERDICT_ORDER[r.verdict] for r in rows(app)]
        assert order == sorted(order) and order[0] == 0
        await pilot.press("S")  # reverse
        await wait_until(pilot, lambda: not app._view_running)
        order = [VERDICT_ORDER[r.verdict] for r in rows(app)]
        assert order == sorted(order, reverse=True)
        await pilot.press("s")  # next column after verdict
        await wait_until(pilot, lambda: not app._view_running)
        assert app.sort_column == "protection" and table(app).sort_column == "protection"
        await pilot.press("s")
        await wait_until(pilot, lambda: not app._view_running)
        assert app.sort_column == "reason" and table(app).sort_column == "reason"
        sizes_app = make_app(sim)
        del sizes_app
        app.set_sort("size", True)
        await wait_until(pilot, lambda: not app._view_running)
        sizes = [r.size_gb for r in rows(app)]
        assert sizes == sorted(sizes, reverse=True)


async def test_refresh_in_place_keeps_cursor_scroll_and_marks(sim):
    app = make_app(sim, auto_refresh=True, refresh_interval=3600)
    async with app.run_test(size=(100, 24)) as pilot:
        await wait_loaded(pilot, app)
        t = table(app)
        for _ in range(25):
            await pilot.press("down")
        key = t.cursor_key
        await pilot.press("space")          # marks the row and moves down
        marked = key
        await pilot.press("up")
        assert t.cursor_key == key
        cursor, scroll = t.cursor, t.scroll_y
        assert scroll > 0
        app.refresh_now()
        await wait_loaded(pilot, app, refreshes=2)
        assert app.refresh_count == 2
        assert (t.cursor_key, t.cursor, t.scroll_y) == (key, cursor, scroll)
        assert marked in app.store.marks


async def test_connection_loss_shows_stale_banner_and_recovers(sim):
    app = make_app(sim, auto_refresh=True, refresh_interval=3600)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_loaded(pilot, app)
        n = table(app).row_count
        banner = app.screen.query_one("#banner")
        assert not banner.display
        await control(sim, "POST", "/sim/faults", {"path": "^/service/", "drop": True})
        app.refresh_now()
        await wait_until(pilot, lambda: bool(app.stale_reason))
        await pilot.pause()
        assert banner.display
        assert "STALE" in screen_text(app)
        assert table(app).row_count == n           # last data kept
        assert app.is_running
        await control(sim, "DELETE", "/sim/faults")
        app.refresh_now()
        await wait_until(pilot, lambda: app.refresh_count >= 2 and not app.stale_reason)
        await pilot.pause()
        assert not banner.display
        assert "STALE" not in screen_text(app)


async def test_server_errors_and_bad_answers_never_end_the_app(sim):
    app = make_app(sim, auto_refresh=True, refresh_interval=3600)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_loaded(pilot, app)
        await control(sim, "POST", "/sim/faults", {"path": "/vms$", "status": 500, "errorCode": "10000001"})
        app.refresh_now()
        await wait_until(pilot, lambda: bool(app.stale_reason))
        assert app.is_running and table(app).row_count > 0


async def test_wrong_password_is_not_retried_in_a_loop(sim):
    from fctui.tui.testing import sim_spec
    spec = sim_spec(sim)
    spec.password = "wrong"
    app = FctuiApp(spec=spec, config=Config(), clock=FixedClock(), watch_tty=False, refresh_interval=3600)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: bool(app.stale_reason))
        await pilot.pause()
        assert app.retry_at is None
        assert "LOGIN REFUSED" in screen_text(app)


async def test_refresh_is_paused_under_modal_screens(sim):
    app = make_app(sim, auto_refresh=True, refresh_interval=3600)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_loaded(pilot, app)
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        app.refresh_now()
        # A negative check (no refresh happens) needs elapsed time: the refresh runs in the feed's own
        # thread, unseen from here. Load can only make a faulty refresh arrive after the check (a green
        # once), never a correct app fail it.
        for _ in range(10):
            await pilot.pause(0.05)
        assert app.refresh_count == 1
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await wait_until(pilot, lambda: app.refresh_count == 2)


async def test_marks_and_select_all_visible(sim):
    app = make_app(sim)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_loaded(pilot, app)
        t = table(app)
        k0 = t.cursor_key
        await pilot.press("space")
        assert app.store.marks == {k0} and t.cursor == 1
        app.set_filter("state:stopped")
        await wait_until(pilot, lambda: not app._view_running)
        await pilot.press("a")
        assert app.store.marks == {k0} | set(t.keys)
        app.set_filter("marked:yes")
        await wait_until(pilot, lambda: not app._view_running)
        assert set(t.keys) == app.store.marks
        await pilot.press("u")
        assert not app.store.marks


async def test_summary_bar_filters_on_enter(sim):
    app = make_app(sim)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_loaded(pilot, app)
        bar = app.screen.query_one(SummaryBar)
        assert bar.items[0][0] == "verdict:blocked" and bar.items[0][1] == sum(
            1 for r in app.store.rows.values() if r.verdict == "blocked")
        bar.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: not app._view_running)
        assert app.filter.source == "verdict:blocked"
        assert all(r.verdict == "blocked" for r in rows(app))
        first_rule = next(i for i, (expr, _) in enumerate(bar.items) if expr.startswith("rule:"))
        assert first_rule > 3     # the protection counts come before (no policy here: all unprotected)
        await pilot.press(*["right"] * first_rule, "enter")   # the first rule count
        await wait_until(pilot, lambda: not app._view_running)
        rule = bar.items[first_rule][0].split(":", 1)[1]
        assert app.filter.source == f"rule:{rule}"
        assert rows(app) and all(rule in r.rules for r in rows(app))


async def test_copy_urn_uses_the_clipboard(sim):
    app = make_app(sim)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_loaded(pilot, app)
        await pilot.press("y")
        assert app.clipboard == table(app).cursor_key


async def test_read_only_hides_mutating_actions(sim):
    app = make_app(sim, read_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_loaded(pilot, app)
        assert "READ-ONLY" in screen_text(app)
        actions = {ab.binding.action for ab in app.screen.active_bindings.values()}
        assert "start_vm" not in actions
        await pilot.press("P")
        assert isinstance(app.screen, MainScreen)
        help_rows = app.help_rows(app.screen)
        assert not any(bid == "vm.start" for _, _, bid in help_rows)


async def test_power_on_asks_first_and_then_acts(sim):
    app = make_app(sim)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_loaded(pilot, app)
        app.set_filter("name:ci-redis state:stopped")
        await wait_until(pilot, lambda: not app._view_running)
        key = table(app).cursor_key
        assert key and app.vms[key].status == "stopped"
        await pilot.press("P")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")                       # cancel: nothing happens
        assert isinstance(app.screen, MainScreen)
        await pilot.press("P")
        await pilot.click("#yes")
        await wait_until(pilot, lambda: app.refresh_count >= 1 and any(
            "powered on" in str(n.message) for n in app._notifications), timeout=20)


async def test_key_remapping_from_config(sim):
    cfg = Config(keymap={"vm.filter": "f", "vm.detail": "o"})
    app = make_app(sim, config=cfg)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_loaded(pilot, app)
        await pilot.press("slash")
        assert not app.screen.query_one("#filter").display
        await pilot.press("f")
        assert app.screen.query_one("#filter").display
        await pilot.press("escape")
        await pilot.press("o")
        assert isinstance(app.screen, DetailScreen)
        await pilot.press("escape")
        keys = {bid: k for k, _, bid in app.help_rows(app.screen)}
        assert keys["vm.filter"] == "f" and keys["vm.detail"] == "o"
        assert "/" not in keys["vm.filter"]


async def test_help_is_generated_from_bindings(sim):
    app = make_app(sim)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_loaded(pilot, app)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        assert "vm.filter" in text and "Filter" in text
        ids = {bid for _, _, bid in app.screen.rows}
        for bid in ("vm.filter", "vm.sort", "vm.mark", "view.datastores", "app.quit", "table.down"):
            assert bid in ids
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_command_palette_lists_actions(sim):
    from fctui.tui.app import ActionsProvider
    app = make_app(sim)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_loaded(pilot, app)
        provider = ActionsProvider(app.screen)
        titles = [title for title, _, _ in provider._commands()]
        for t in ("Filter", "Sort", "Mark", "Datastores", "Tree", "Copy URN", "Power on", "Sort by verdict"):
            assert t in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "CommandPalette"


async def test_datastores_view(sim):
    app = make_app(sim)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_loaded(pilot, app)
        await pilot.press("D")
        assert isinstance(app.screen, DatastoresScreen)
        text = screen_text(app)
        assert "unsupported" in text and "supported" in text
        from textual.widgets import DataTable
        assert app.screen.query_one(DataTable).row_count == len(app.datastores) > 0
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_tree_loads_hosts_lazily_and_filters(sim):
    app = make_app(sim)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_loaded(pilot, app)
        await pilot.press("t")
        assert isinstance(app.screen, TreeScreen)
        from textual.widgets import Tree
        tree = app.screen.query_one(Tree)
        cluster = tree.root.children[0]
        assert not cluster.children            # nothing fetched before expanding
        await pilot.press("down", "enter")     # expand the first cluster
        await wait_until(pilot, lambda: any((c.data or {}).get("kind") == "host" for c in cluster.children))
        await pilot.press("down", "enter")     # select its first host
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen) and not app._view_running)
        host = app.filter.source.split(":", 1)[1]
        assert app.filter.source.startswith("host:")
        assert rows(app) and all(host in r.host for r in rows(app))


async def test_narrow_terminal_keeps_essential_columns_and_detail_by_enter(sim):
    app = make_app(sim)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        assert not app.screen.query_one("#detail-pane").display
        text = screen_text(app)
        assert "Name" in text and "Verdict" in text and "Main reason" in text
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        await wait_until(pilot, lambda: app.screen.key in app.snapshots or app.screen.key in app.snapshot_errors)
        assert "Snapshots" in screen_text(app)


async def test_first_run_offers_demo_and_connection_form():
    app = FctuiApp(spec=None, config=Config(), clock=FixedClock(), watch_tty=False)
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, FirstRunScreen)
        assert "demo" in screen_text(app).lower()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "ConnectScreen"
        app.screen.query_one("#url").value = "vrm.example"
        app.screen.query_one("#user").value = "admin"
        await pilot.click("#connect")
        assert "https://" in str(app.screen.query_one("#connect-error").render())


async def test_unknown_theme_warns_and_light_theme_applies(sim):
    app = make_app(sim, theme="textual-light")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        assert app.theme == "textual-light"
    app = make_app(sim, theme="no-such-theme")
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.pause()
        assert app.theme != "no-such-theme"
        assert any("Unknown theme" in str(n.message) for n in app._notifications)
