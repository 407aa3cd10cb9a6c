"""Issue 15, the console at 3 a.m.: confirmation dialogs that fit and say what each button does, no toast
over rows or over the error it announces, the restore walkthrough's name field and its list of pre-checks,
one meaning for Esc (stopping a restore has its own key), `q` while jobs run and `:`.

Pilot tests at 80x24: recorded job records (no agent), the seeded simulator, restore points made by real
backups (the fixtures of test_tui_restore_wizard).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from fctui.jobs.progress import JobsBoard
from fctui.tui.dialogs import ConfirmScreen
from fctui.tui.jobs_screen import JobsScreen, jobs_service
from fctui.tui.restore_wizard import RestoreWizard
from fctui.tui.screens import HelpScreen, MainScreen
from fctui.tui.testing import make_app, screen_text, wait_loaded, wait_until

from .test_tui_snapshots import SIZES
from .test_tui_jobs_screens import NOW, jobs_app, running_job
from .test_tui_restore_wizard import (World, recorded_restore, settle, text, to_step, until, wiz,  # noqa: F401
                                      wizard_app, world)


def flat(s: str) -> str:
    """Screen text with the dialog's frame and line breaks folded away (wrapped text reads as one line)."""
    for frame in "█▀▄▌▐┃":
        s = s.replace(frame, " ")
    return " ".join(s.split())


def footer(app: Any) -> str:
    return screen_text(app).splitlines()[-1]


# --- 1. confirmation dialogs -------------------------------------------------------------------------

async def test_stop_job_dialog_shows_all_its_text_names_its_buttons_and_its_own_keys():
    """The dialog was 60 columns of unwrapped text (cut off), its buttons "Cancel job"/"Cancel", and the
    footer below it the jobs screen's keys (Back, Cancel job, Drill)."""
    app = jobs_app([running_job()])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("c")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        shown = flat(screen_text(app))
        assert flat(dialog.body) in shown                      # every word of it, wrapped, none cut off
        assert "Stop the backup" in shown and "Keep it running" in shown
        assert "Cancel job" not in shown
        keys = footer(app)
        assert "Keep it running" in keys and "Drill" not in keys and "Back" not in keys
        await pilot.press("escape")                            # the safe answer: nothing stopped
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)


async def test_power_on_dialog_names_its_buttons(sim):
    app = make_app(sim)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        app.set_filter("state:stopped")
        await wait_until(pilot, lambda: not app._view_running and app._table_cursor() is not None)
        name = app.vms[app._table_cursor()].name
        await pilot.press("P")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        shown = flat(screen_text(app))
        assert f"Power on {name}" in shown and "Leave it off" in shown and flat(app.screen.body) in shown
        assert "Cancel" not in shown


# --- 2. notifications ----------------------------------------------------------------------------------

async def test_untested_version_is_in_the_status_line_not_a_toast(sim):
    app = make_app(sim)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        assert app.version_warning                             # the simulator's API 8.1 is untested
        assert not [n for n in app._notifications if n.title == "vrm-version-untested"]
        assert "untested" in screen_text(app).splitlines()[0]
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert app.version_warning in app.screen.query_one("#help-body").render().plain


async def test_a_job_failure_does_not_cover_its_error_on_the_jobs_screen():
    job = running_job(vms=1)
    app = jobs_app([job])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        svc = app.jobs  # type: ignore[attr-defined]
        d = job.to_dict()
        error = "web-01: the datastore went away"
        d.update(state="failed", error=error, finished=NOW)
        svc.apply_event({"event": "job", "job": d})
        await wait_until(pilot, lambda: error in flat(screen_text(app)))  # the next render tick
        await pilot.pause()
        assert not app._notifications                          # the list and detail say it in place


async def test_a_job_failure_elsewhere_is_a_short_toast():
    """Away from the jobs screen the end of a job is toasted briefly (it was 15 s over the rows)."""
    from .test_tui_jobs_screens import ScreenApp, Tick, service_with
    from textual.screen import Screen
    job = running_job(vms=1)

    def make(app: ScreenApp) -> Screen:
        app.jobs = service_with(app, [job], Tick())  # type: ignore[attr-defined]
        return Screen()
    app = ScreenApp(make)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        d = job.to_dict()
        d.update(state="failed", error="boom", finished=NOW)
        app.jobs.apply_event({"event": "job", "job": d})  # type: ignore[attr-defined]
        await pilot.pause()
        (n,) = app._notifications
        assert n.severity == "error" and n.timeout <= 6 and "J" in n.message


# --- 3. the restore walkthrough ------------------------------------------------------------------------

async def test_restore_to_a_new_vm_asks_its_name_like_the_cli(world: World):
    app = wizard_app(world)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_step(pilot, app, "target")
        w = wiz(app)
        await pilot.press("enter")                             # New VM
        await settle(pilot, app)
        inp = w.query_one("#wiz-input")
        assert w.step == "target" and inp.display and app.focused is inp
        from fctui.jobs.restore import default_vm_name
        assert inp.value == default_vm_name(w.point)           # the CLI's default
        await pilot.press("ctrl+u", "enter")                   # empty: refused as the CLI refuses it
        await pilot.pause()
        assert w.step == "target" and "1 to 256 characters" in text(app)
        await pilot.press(*"x" * 257, "enter")
        await pilot.pause()
        assert w.step == "target" and "1 to 256 characters" in text(app)
        await pilot.press("ctrl+u", *"db-drill-copy", "enter")
        await settle(pilot, app)
        assert w.step == "map"
        await to_step(pilot, app, "review")
        assert w.plan.vm_name == "db-drill-copy" and "VM db-drill-copy" in text(app)
        assert w.request().name == "db-drill-copy"


async def test_pre_checks_list_what_ran_and_the_result(world: World):
    app = wizard_app(world)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_step(pilot, app, "checks")
        w = wiz(app)
        assert not w.plan.findings or all(f.severity != "blocker" for f in w.plan.findings)
        shown = text(app)
        for rule in ("restore-point-damaged", "restore-arch-mismatch", "restore-space", "cross-storage-restore",
                     "restore-no-host"):
            assert rule in shown                               # was "✓ Every pre-check passed." alone
        ran = [rule for rule, _ in w.plan.checks]
        assert "restore-space" in ran and all(f"✓ {rule}" in shown for rule in ran)
        assert f"({len(ran)} ran)" in shown or f"{len(ran)} pre-check(s) ran" in shown


# --- 4. one meaning for Esc -----------------------------------------------------------------------------

async def test_esc_on_the_table_does_not_clear_the_filter(sim):
    app = make_app(sim)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        await pilot.press("slash", *"verdict:ready", "enter")
        await wait_loaded(pilot, app)
        assert isinstance(app.screen, MainScreen) and app.filter.source == "verdict:ready"
        assert "Clear filter" not in footer(app)
        await pilot.press("escape")                            # on the table: no hidden second meaning
        await wait_loaded(pilot, app)
        assert app.filter.source == "verdict:ready"
        await pilot.press("slash")                             # in the filter line, the footer says it
        await wait_until(pilot, lambda: "Clear filter" in footer(app))
        await pilot.press("escape")
        await wait_loaded(pilot, app)
        assert app.filter.source == ""


async def test_esc_never_stops_a_running_restore_its_own_key_does_after_asking(world: World):
    app = wizard_app(world)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_step(pilot, app, "confirm")
        w = wiz(app)
        w.show_job(recorded_restore("running"))
        await wait_until(pilot, lambda: "Stop the restore" in footer(app))   # the footer's next render
        assert w.step == "progress" and "Back" not in footer(app)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is w and w.step == "progress"       # no cancel question behind Esc
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen)
                         and "Keep it running" in flat(screen_text(app)))
        assert "Stop the restore" in flat(screen_text(app))
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is w and w.step == "progress"
        ids = {ab.binding.id for ab in w.active_bindings.values()}
        assert "restore.cancel" in ids


async def test_esc_leaves_a_restore_the_agent_runs(world: World):
    app = wizard_app(world)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_step(pilot, app, "confirm")
        w = wiz(app)
        w.ctx.service = type("Agent", (), {"board": JobsBoard(time.monotonic)})()
        w.show_job(recorded_restore("running"))
        await wait_until(pilot, lambda: "Back" in footer(app))
        await pilot.press("escape")
        await pilot.pause()
        assert app.closed


# --- 5. q while jobs run, and `:` -----------------------------------------------------------------------

async def test_quit_while_jobs_run_says_they_go_on_in_the_agent(sim):
    app = make_app(sim)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        jobs_service(app).board.apply({"event": "job", "job": running_job().to_dict()})
        said: list[Any] = []
        exit_ = app.exit
        app.exit = lambda *a, **kw: (said.append(kw.get("message")), exit_(*a, **kw))[1]  # type: ignore
        await pilot.press("q")
        await pilot.pause()
    assert said and "still running in the job agent" in str(said[0])


async def test_colon_opens_the_command_palette(sim):
    app = make_app(sim)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        await pilot.press("colon")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "CommandPalette"
        rows = {bid: keys for keys, _, bid in app.help_rows(app.screen_stack[-2])}
        assert ":" in rows["app.command_palette"]


# --- new snapshot cases (the lead generates their SVGs after merging) -----------------------------------

@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_stop_job_dialog_snapshot(snap_compare, size):
    app = jobs_app([running_job()])

    async def run_before(pilot: Any) -> None:
        await pilot.pause()
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_wizard_new_vm_name_snapshot(snap_compare, size, world: World):
    app = wizard_app(world)

    async def run_before(pilot: Any) -> None:
        await to_step(pilot, app, "target")
        await pilot.press("enter")
        await settle(pilot, app)
        app.clear_notifications()
        await wait_until(pilot, lambda: not app.screen.query("Toast"))  # the cleared toasts are gone
    assert snap_compare(app, terminal_size=size, run_before=run_before)
