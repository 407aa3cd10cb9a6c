"""SVG snapshots of the screens and modals the other snapshot files leave out, so that every screen and
modal of the console has one at 80x24 and at 160x48 (issue #20). The table of which file covers which
screen at which size is in the docstring of ``COVERAGE`` below.

Deterministic: seeded simulator in-process, fixed clocks, TZ=UTC, animations off, no user config, no
blinking cursor, and before each capture a wait on what the shot must show (never a fixed pause): the
condition, every worker finished, and the footer composed from the screen's current bindings.
"""

from __future__ import annotations

import time
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.widgets import Input, Tree

import fctui.repo.repository as repo_mod
from fctui.config import Config
from fctui.repo import Repository
from fctui.tui.app import FctuiApp
from fctui.tui.dialogs import ConfirmScreen
from fctui.tui.drills import DrillScreen
from fctui.tui.files_screen import DestinationDialog, DiskChooser, ExtractScreen, FilesScreen
from fctui.tui.jobs_screen import JobsScreen
from fctui.tui.screens import ConnectScreen, DetailScreen, FirstRunScreen, TreeScreen
from fctui.tui.source import ConnectSpec
from fctui.tui.testing import FixedClock, make_app, screen_text, wait_loaded, wait_until
from tests.tui.files_guest import T0, VM_URN, Guest, _point, sim_guest
from tests.tui.test_tui_jobs_screens import jobs_app, queued_job, running_job
from tests.tui.test_tui_snapshots import SIZES, busy, detail_ready, settled

IDS = [f"{w}x{h}" for w, h in SIZES]
TCSS = str(Path(__file__).resolve().parents[2] / "fctui" / "tui" / "fctui.tcss")

COVERAGE = """
screen / modal (fctui/tui)            80x24 and 160x48 snapshot
MainScreen                            test_tui_snapshots::test_main_screen (+ light theme, protection, sites,
                                      the stale banner: test_stale_banner, _wide; test_sites_one_stale, _wide)
DetailScreen (enter)                  test_tui_snapshots::test_detail[80x24]; here test_detail_screen_wide
DatastoresScreen                      test_tui_snapshots::test_datastores_view
TreeScreen                            test_tui_sites_snapshots::test_sites_tree (two VRMs); here test_tree (one)
HelpScreen                            test_tui_snapshots::test_help
FirstRunScreen                        test_tui_snapshots::test_first_run
ConnectScreen                         here test_connect_screen
ConfirmScreen                         test_tui_keys_dialogs::test_stop_job_dialog_snapshot; here
                                      test_power_on_confirm (over the inventory)
JobsScreen (list + job detail)        test_tui_jobs_screens::test_jobs_screen_mid_run / test_failed_job
DrillScreen                           here test_drill_screen
DrScreen                              test_tui_dr_screen::test_dr_rehearsal_snapshot[live-*]
PoliciesScreen (+ timeline)           test_tui_policies::test_policies_screen_snapshot
PolicyForm                            test_tui_policies::test_policy_form_snapshot
ReviewScreen                          test_tui_jobs_screens::test_review_screen_snapshot
RestoreWizard (every step)            test_tui_restore_wizard::test_wizard_step_snapshot, _progress_and_result
                                      test_tui_restore_mapping::test_mapping_step_snapshot[disks-*]
FilesScreen                           test_files_screen::test_files_browser_snapshot / _volumes_snapshot
DiskChooser                           here test_files_disk_chooser
DestinationDialog                     here test_files_destination
ExtractScreen                         test_files_screen::test_files_extract_result_snapshot (80x24); here
                                      test_files_extract_result_wide
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FCTUI_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("HOME", str(tmp_path))        # "~/restored" reads the same on every machine
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    # a fixed restore point id: it is in the file browser's title
    fixed_id = staticmethod(lambda n=4: "0f11e5" + "0" * (2 * n - 6))
    monkeypatch.setattr(repo_mod, "secrets", type("S", (), {"token_hex": fixed_id}))
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


def console_app() -> FctuiApp:
    app = make_app(vms=60, seed=1)
    app.animation_level = "none"
    return app


async def inventory(pilot: Any, app: FctuiApp) -> str:
    """The inventory loaded, the cursor's VM shown in the side pane (at 160 columns)."""
    await wait_loaded(pilot, app)
    key = app._table_cursor()
    assert key
    if app.size.width >= 120:
        await wait_until(pilot, lambda: detail_ready(app, key), 20.0)
    return key


# --- the console ----------------------------------------------------------------------------------------

def test_detail_screen_wide(snap_compare):
    """The full detail screen (enter) at 160x48: a VM with several findings; test_detail has 80x24."""
    app = console_app()

    async def run_before(pilot: Any) -> None:
        await wait_loaded(pilot, app)
        app.set_filter("name:edge-combo-indep")
        await wait_until(pilot, lambda: not app._view_running and not app._view_dirty
                         and app._table_cursor() is not None and "edge-combo-indep" in app.vms[app._table_cursor()].name)
        key = app._table_cursor()
        await pilot.press("enter")
        await settled(pilot, app, lambda: isinstance(app.screen, DetailScreen) and detail_ready(app, key)
                      and "edge-combo-indep" in screen_text(app))

    assert snap_compare(app, terminal_size=(160, 48), run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_tree(snap_compare, size):
    """One VRM: site → clusters, the first cluster expanded to its hosts with their VM counts."""
    app = console_app()

    async def run_before(pilot: Any) -> None:
        await inventory(pilot, app)
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, TreeScreen))
        tree = app.screen.query_one(Tree)
        first = tree.root.children[0]
        await pilot.press("down", "space")

        def hosts_shown() -> bool:
            kids = first.children
            return bool(kids) and all((k.data or {}).get("kind") == "host" for k in kids)
        await settled(pilot, app, lambda: first.is_expanded and hosts_shown() and "host " in screen_text(app))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_connect_screen(snap_compare, size):
    """First run → "Connect to a VRM…", the address and user typed, no password: the form says so."""
    app = FctuiApp(spec=None, config=Config(), clock=FixedClock(), watch_tty=False)
    app.animation_level = "none"

    async def run_before(pilot: Any) -> None:
        await wait_until(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConnectScreen))
        screen = app.screen
        screen.query_one("#url", Input).value = "https://vrm.example:7443"
        screen.query_one("#user", Input).value = "admin"
        screen.query_one("#url", Input).focus()
        await pilot.press("enter")
        await settled(pilot, app, lambda: "User and password are required" in screen_text(app))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_power_on_confirm(snap_compare, size):
    """P on a VM: the confirmation over the inventory, its buttons saying what each does."""
    app = console_app()

    async def run_before(pilot: Any) -> None:
        key = await inventory(pilot, app)
        name = app.vms[key].name
        await pilot.press("P")
        await settled(pilot, app, lambda: isinstance(app.screen, ConfirmScreen)
                      and f"Power on {name}?" in screen_text(app))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


# --- jobs: the drill picker ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_drill_screen(snap_compare, size):
    """x on a running job of the demo: its running VMs × the four drills; the finished VM has none."""
    app = jobs_app([running_job(), queued_job()])
    app.spec = ConnectSpec(url="http://127.0.0.1:1", user="u", password="p", label="demo")  # the demo

    async def run_before(pilot: Any) -> None:
        await wait_until(pilot, lambda: isinstance(app.screen, JobsScreen) and app.screen.selected() is not None)
        await wait_until(pilot, lambda: not busy(app))
        await pilot.press("x")
        await settled(pilot, app, lambda: isinstance(app.screen, DrillScreen)
                      and "web-01: Storage migration by someone else" in screen_text(app))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


# --- the file browser's dialogs --------------------------------------------------------------------------

@pytest.fixture
def ubuntu(tmp_path: Path) -> Guest:
    return sim_guest(Repository.open(tmp_path / "repo"))


class FilesApp(App[None]):
    """A host for the file browser, with the console's stylesheet (as in test_files_screen)."""

    CSS_PATH = TCSS

    def __init__(self, guest: Guest) -> None:
        super().__init__()
        self.guest = guest
        self.animation_level = "none"

    def on_mount(self) -> None:
        self.push_screen(FilesScreen(self.guest.repo, self.guest.point, tz=timezone.utc, dest_root="~/restored"))


def browser(app: App) -> FilesScreen:
    return next(s for s in app.screen_stack if isinstance(s, FilesScreen))


async def at(pilot: Any, app: App, path: str) -> FilesScreen:
    await wait_until(pilot, lambda: any(isinstance(s, FilesScreen) for s in app.screen_stack)
                     and browser(app).path == path and browser(app).wanted is None, 20.0)
    await pilot.pause()
    return browser(app)


async def enter_dir(pilot: Any, app: App, path: str) -> None:
    s = browser(app)
    idx = [r.path for r in s.rows].index(path)
    await pilot.press("home", *["down"] * idx, "enter")
    await at(pilot, app, path)


async def mark(pilot: Any, app: App, path: str) -> None:
    s = browser(app)
    idx = [r.path for r in s.rows].index(path)
    await pilot.press("home", *["down"] * idx, "space")
    await wait_until(pilot, lambda: path in browser(app).marks and browser(app).marked_totals()[2] == 0, 20.0)


async def marked_etc(pilot: Any, app: App) -> None:
    """/p2/etc with its nginx/ and hostname marked, counted."""
    await at(pilot, app, "/")
    await enter_dir(pilot, app, "/p2")
    await enter_dir(pilot, app, "/p2/etc")
    await mark(pilot, app, "/p2/etc/nginx")
    await mark(pilot, app, "/p2/etc/hostname")


@pytest.fixture
def two_disks(tmp_path: Path) -> Guest:
    """A point of two disks (d offers the chooser only then): the simulator guest's two image versions."""
    from fctui.sim.guestfs import image
    repo = Repository.open(tmp_path / "repo")
    return Guest(repo, _point(repo, [image("ext4", 1), image("ext4", 2)], vm_urn=VM_URN, vm_name="ubuntu-web-01",
                              created=T0), b"", 0)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_files_disk_chooser(snap_compare, two_disks: Guest, size):
    """d: each disk of the point by name, size and bus; the one shown in bold and highlighted."""
    app = FilesApp(two_disks)

    async def run_before(pilot: Any) -> None:
        await at(pilot, app, "/")
        await pilot.press("d")
        await settled(pilot, app, lambda: isinstance(app.screen, DiskChooser) and "Browse which disk?" in screen_text(app))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_files_destination(snap_compare, ubuntu: Guest, size):
    """e with two items marked: what is copied, where to (one directory per point), and that the VM is
    not touched."""
    app = FilesApp(ubuntu)

    async def run_before(pilot: Any) -> None:
        await marked_etc(pilot, app)
        await pilot.press("e")
        await settled(pilot, app, lambda: isinstance(app.screen, DestinationDialog)
                      and "~/restored/ubuntu-web-01-" in screen_text(app))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_files_extract_result_wide(snap_compare, ubuntu: Guest, tmp_path: Path):
    """160x48: the summary of an extraction that met a damaged file (test_files_screen has 80x24)."""
    ubuntu.damage("var/www/html/downloads/catalogue-2025.bin", tmp_path)
    app = FilesApp(ubuntu)

    async def run_before(pilot: Any) -> None:
        await marked_etc(pilot, app)
        await pilot.press("left")
        await at(pilot, app, "/p2")
        await mark(pilot, app, "/p2/var")
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, DestinationDialog))
        app.screen.query_one(Input).value = "~/restored"
        await pilot.press("enter")
        await settled(pilot, app, lambda: isinstance(app.screen, ExtractScreen) and not app.screen.running, 60.0)

    assert snap_compare(app, terminal_size=(160, 48), run_before=run_before)
