"""Tab is not a focus trap (issue 15, bug 5), at 80x24 and 100x30: on the inventory Tab and Shift+Tab cycle
the summary bar, the filter line (while shown) and the VM table, each of which then acts on its keys; the
table keeps a visible cursor while another part has the focus; in the restore walkthrough the focused
widget of every step still takes Enter and Down after Tab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, OptionList

from fctui.tui.testing import make_app, wait_loaded, wait_until
from fctui.tui.widgets.summary import SummaryBar
from fctui.tui.widgets.vmtable import VmTable

from .test_tui_restore_wizard import World, settle, wiz, wizard_app

SIZES = [(80, 24), (100, 30)]


def cursor_is_visible(table: VmTable) -> bool:
    """The cursor's row is drawn unlike its neighbour (colour or underline), whatever has the focus."""
    y = 1 + table.cursor - int(table.scroll_offset.y)          # line 0 is the header
    other = y + 1 if table.cursor + 1 < table.row_count else y - 1
    styles = [[s.style for s in table.render_line(n) if s.text.strip()] for n in (y, other)]
    mine, theirs = styles[0][0], styles[1][0]
    return bool(mine.underline) or mine.bgcolor != theirs.bgcolor or bool(mine.reverse) != bool(theirs.reverse)


@pytest.mark.parametrize("size", SIZES)
async def test_tab_cycles_the_inventory_and_each_part_acts(size: tuple[int, int]) -> None:
    app = make_app(vms=30)
    async with app.run_test(size=size) as pilot:
        await wait_loaded(pilot, app)
        app.theme = "ansi-dark"       # no colours to tell a blurred cursor by: it must still show
        await pilot.pause()
        table = app.screen.query_one(VmTable)
        bar = app.screen.query_one(SummaryBar)
        assert app.focused is table
        await pilot.press("down")
        at = table.cursor

        await pilot.press("tab")
        assert app.focused is bar, app.focused
        assert cursor_is_visible(table)
        assert table.cursor == at
        await pilot.press("right")                  # the summary bar takes its keys
        assert bar.cursor == 1
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.filter.source == bar.items[1][0])

        await pilot.press("tab")                    # the filter line, shown now that it holds a filter
        assert isinstance(app.focused, Input) and app.focused.id == "filter"
        await pilot.press("tab")
        assert app.focused is table
        await pilot.press("home", "down")           # the table takes its keys again
        assert table.cursor == 1

        await pilot.press("shift+tab")
        assert isinstance(app.focused, Input) and app.focused.id == "filter"
        await pilot.press("shift+tab")
        assert app.focused is bar
        await pilot.press("shift+tab")
        assert app.focused is table


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        w = World(tmp_path_factory.mktemp("focus"), mp)
    yield w


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))


@pytest.mark.parametrize("size", SIZES)
async def test_tab_in_every_restore_step_keeps_enter_and_down_working(world: World, size: tuple[int, int]) -> None:
    app = wizard_app(world)
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        w = wiz(app)
        for step in ("point", "target", "map"):
            assert w.step == step
            await pilot.press("tab")
            opts = app.focused
            assert isinstance(opts, OptionList) and opts.id == "wiz-options", (step, opts)
            if opts.option_count > 1:
                await pilot.press("down")
                assert opts.highlighted == 1, step
                await pilot.press("up")
            await pilot.press("enter")
            await settle(pilot, app)
            if step == "target":                       # the new VM's name: Tab keeps the input, Enter takes it
                await pilot.press("tab")
                assert app.focused is w.query_one("#wiz-input"), app.focused
                await pilot.press("enter")
                await settle(pilot, app)
            while w.step == "map" and step == "map":   # one datastore step per disk
                await pilot.press("tab", "enter")
                await settle(pilot, app)
        for step, after in (("checks", "review"), ("review", "confirm")):
            assert w.step == step
            await pilot.press("tab")
            assert app.focused is not None and app.focused.id == "wiz-scroll", (step, app.focused)
            await pilot.press("enter")
            await settle(pilot, app)
            assert w.step == after


@pytest.mark.parametrize("size", SIZES)
async def test_tab_on_the_jobs_screen_reaches_the_detail(size: tuple[int, int]) -> None:
    from fctui.tui.jobs_screen import JobList

    from .test_tui_jobs_scroll import long_job
    from .test_tui_jobs_screens import jobs_app
    app = jobs_app([long_job()])
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        assert isinstance(app.focused, JobList)
        await pilot.press("tab")
        view = app.screen.query_one("#job-detail-scroll")
        assert app.focused is view
        await pilot.press("down")                    # the detail takes its keys
        await pilot.pause()
        assert view.scroll_y == 1
        await pilot.press("shift+tab")
        assert isinstance(app.focused, JobList)
