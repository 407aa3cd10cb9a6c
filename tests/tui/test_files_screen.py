"""The file browser of a restore point (fctui/tui/files_screen.py), driven by keys against a real restore
point of a real repository: an ext4 guest made with ``mke2fs -d`` (tests/tui/files_guest.py), read through
fctui.files. Moving around, marks and their totals, copying files out (bytes, mode, mtime checked against
the guest's table), a damaged file named, and the two ways in: the restore walkthrough's "Files" target
and the VM detail's ``f``. SVG snapshots at 80x24 and 160x48.
"""

from __future__ import annotations

import os
import time
from datetime import timezone
from pathlib import Path
from typing import Any, Callable

import pytest
from textual.app import App

import fctui.repo.repository as repo_mod
from fctui.repo import Repository
from fctui.tui.files_screen import (DestinationDialog, DiskChooser, ExtractScreen, FilesScreen, default_destination,
                                     shown_name)
from fctui.tui.restore_wizard import RestoreContext, RestoreWizard
from fctui.tui.testing import make_app, screen_text, wait_loaded, wait_until
from fctui.tui.widgets.linelist import LineList
from fctui.units import human_bytes
from tests.tui.files_guest import ETC_BYTES, ETC_FILES, GUEST, SPOOL, T0, VM_URN, Guest, make_guest, sim_guest
from tests.tui.test_tui_snapshots import SIZES

TCSS = str(Path(__file__).resolve().parents[2] / "fctui" / "tui" / "fctui.tcss")
SPEC = {it.path: it for it in GUEST}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    # a fixed restore point id: it is in the screen's title
    fixed_id = staticmethod(lambda n=4: "0f11e5" + "0" * (2 * n - 6))
    monkeypatch.setattr(repo_mod, "secrets", type("S", (), {"token_hex": fixed_id}))
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


@pytest.fixture
def guest(tmp_path: Path) -> Guest:
    return make_guest(Repository.open(tmp_path / "repo"), tmp_path / "work")


class FilesApp(App[None]):
    """A host for one screen, with the console's stylesheet."""

    CSS_PATH = TCSS

    def __init__(self, make: Callable[[], Any]) -> None:
        super().__init__()
        self.make = make
        self.animation_level = "none"
        self.closed = False

    def on_mount(self) -> None:
        def done(_: Any) -> None:
            self.closed = True
        self.push_screen(self.make(), done)


def browser_app(guest: Guest, tmp_path: Path) -> FilesApp:
    return FilesApp(lambda: FilesScreen(guest.repo, guest.point, tz=timezone.utc, dest_root=str(tmp_path / "out")))


text = screen_text


async def until(pilot: Any, cond: Callable[[], bool], timeout: float = 20.0) -> None:
    await wait_until(pilot, cond, timeout)  # extraction and listing run in workers: a generous deadline


def files(app: App) -> FilesScreen:
    return next(s for s in app.screen_stack if isinstance(s, FilesScreen))


async def at(pilot: Any, app: App, path: str, disk: int = 0) -> FilesScreen:
    """Until the browser shows ``path`` of ``disk``."""
    await until(pilot, lambda: any(isinstance(s, FilesScreen) for s in app.screen_stack)
                and (files(app).disk, files(app).path) == (disk, path) and files(app).wanted is None)
    await pilot.pause()
    return files(app)


def cursor(app: App) -> str:
    s = files(app)
    return s.rows[s.query_one(LineList).cursor].path


async def to_row(pilot: Any, app: App, path: str) -> None:
    s = files(app)
    idx = [r.path for r in s.rows].index(path)
    await pilot.press("home", *["down"] * idx)
    assert cursor(app) == path


async def counted(pilot: Any, app: App) -> None:
    await until(pilot, lambda: files(app).marked_totals()[2] == 0)
    await pilot.pause()


async def extract_to(pilot: Any, app: App, dest: Path | str) -> ExtractScreen:
    await pilot.press("e")
    await until(pilot, lambda: isinstance(app.screen, DestinationDialog))
    dialog = app.screen
    dialog.query_one("Input").value = str(dest)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, ExtractScreen) and not app.screen.running, timeout=30)
    await pilot.pause()
    return app.screen


# --- what a guest's names can do to a terminal and to the default destination -------------------------------

def test_guest_names_are_shown_without_control_characters():
    assert shown_name("a\x1b[31mred\x07") == "a\\x1b[31mred\\x07"   # an escape sequence is not sent
    assert shown_name("tab\there\u202e") == "tab\\x09here\\u202e"
    assert shown_name("Überblick Q3 2025.txt") == "Überblick Q3 2025.txt"
    assert shown_name("") == "''"


def test_default_destination_is_one_safe_directory_per_point():
    point = type("P", (), {"vm_name": "../etc/web 01", "created": T0})()
    assert default_destination(point, timezone.utc) == "~/fctui-restore/etc_web_01-20260528-2026"
    point.vm_name = ""
    assert default_destination(point, timezone.utc, "/srv/out/") == "/srv/out/vm-20260528-2026"


# --- moving around -----------------------------------------------------------------------------------------

async def test_volumes_directories_and_back_up(guest: Guest, tmp_path: Path):
    app = browser_app(guest, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await at(pilot, app, "/")
        shown = text(app)
        assert "p1/" in shown and "ext4" in shown and "rootfs" in shown
        assert "p2" in shown and "no filesystem" in shown       # the swap partition: listed, not entered
        assert "disk 0 (2 disks): web-01-disk1" in shown  # numbered as --disk numbers them
        await to_row(pilot, app, "/p2")
        await pilot.press("enter")
        assert files(app).path == "/" and "no filesystem" in text(app)
        await to_row(pilot, app, "/p1")
        await pilot.press("enter")
        s = await at(pilot, app, "/p1")
        assert [r.path for r in s.rows] == ["/p1/etc", "/p1/home", "/p1/lost+found", "/p1/var"]
        await pilot.press("right")                             # the cursor is on etc
        await at(pilot, app, "/p1/etc")
        shown = text(app)
        assert "nginx/" in shown and "localtime → /usr/share/zoneinfo/UTC" in shown
        line = next(x for x in shown.splitlines() if "hostname" in x)
        assert "7 B" in line and "2023-11-14 22:15" in line   # size and mtime (UTC) of the guest's file
        await pilot.press("left")
        await at(pilot, app, "/p1")
        assert cursor(app) == "/p1/etc"                         # back where it came from
        await pilot.press("backspace")
        await at(pilot, app, "/")
        assert cursor(app) == "/p1"
        # the second disk, by the chooser
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, DiskChooser))
        assert "web-01-disk2" in text(app) and "4.0 MiB" in text(app)
        await pilot.press("down", "enter")
        await at(pilot, app, "/", disk=1)
        assert "disk 1 (2 disks): web-01-disk2" in text(app)
        await pilot.press("enter")
        await at(pilot, app, "/whole", disk=1)
        assert "data/" in text(app)
        await pilot.press("escape")
        await until(pilot, lambda: app.closed)


async def test_a_long_directory_moves_the_cursor(guest: Guest, tmp_path: Path):
    app = browser_app(guest, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await at(pilot, app, "/")
        await pilot.press("enter")
        await at(pilot, app, "/p1")
        await to_row(pilot, app, "/p1/var")
        await pilot.press("enter")
        await at(pilot, app, "/p1/var")
        await to_row(pilot, app, "/p1/var/spool")
        await pilot.press("enter")
        s = await at(pilot, app, "/p1/var/spool")
        assert len(s.rows) == SPOOL
        await pilot.press("end")
        assert cursor(app) == f"/p1/var/spool/msg{SPOOL - 1:04d}" and f"msg{SPOOL - 1:04d}" in text(app)
        await pilot.press("pageup", "up")
        at_row = cursor(app)
        assert at_row < f"/p1/var/spool/msg{SPOOL - 10:04d}" and at_row.rsplit("/", 1)[1] in text(app)
        await pilot.press("space")                              # marks the row the cursor is on
        assert list(files(app).marks) == [at_row]
        await pilot.press("home")
        assert cursor(app) == "/p1/var/spool/msg0000" and "msg0000" in text(app)


# --- marks and totals -------------------------------------------------------------------------------------

async def test_marks_and_totals(guest: Guest, tmp_path: Path):
    app = browser_app(guest, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await at(pilot, app, "/")
        await pilot.press("enter")
        await at(pilot, app, "/p1")
        await pilot.press("space")                              # etc, counted in a worker
        await counted(pilot, app)
        status = text(app)
        assert f"1 marked (1 dir): {ETC_FILES} files · {human_bytes(ETC_BYTES)}" in status
        await to_row(pilot, app, "/p1/etc")
        await pilot.press("enter")
        await at(pilot, app, "/p1/etc")
        await to_row(pilot, app, "/p1/etc/hostname")
        await pilot.press("space")                              # inside a marked directory: copied with it
        assert files(app).extract_paths() == ["/p1/etc"]
        assert f"{ETC_FILES} files · {human_bytes(ETC_BYTES)}" in text(app)
        await pilot.press("left")
        await at(pilot, app, "/p1")
        await to_row(pilot, app, "/p1/home")
        await pilot.press("space")
        await counted(pilot, app)
        notes = len(SPEC["home/alice/notes.txt"].content or b"")
        assert files(app).extract_paths() == ["/p1/etc", "/p1/home"]
        assert f"2 marked (2 dirs): {ETC_FILES + 1} files · {human_bytes(ETC_BYTES + notes)}" in text(app)
        await pilot.press("u")
        assert not files(app).marks and "space marks, e copies" in text(app)
        await pilot.press("e")                                  # nothing marked: says so, asks nothing
        await pilot.pause()
        assert isinstance(app.screen, FilesScreen)


# --- extracting --------------------------------------------------------------------------------------------

async def test_extract_marked_files_with_mode_and_mtime(guest: Guest, tmp_path: Path):
    app = browser_app(guest, tmp_path)
    dest = tmp_path / "restored"
    async with app.run_test(size=(100, 30)) as pilot:
        await at(pilot, app, "/")
        await pilot.press("enter")
        await at(pilot, app, "/p1")
        await pilot.press("enter")
        await at(pilot, app, "/p1/etc")
        await to_row(pilot, app, "/p1/etc/nginx")
        await pilot.press("space")
        await to_row(pilot, app, "/p1/etc/hostname")
        await pilot.press("space")
        await counted(pilot, app)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, DestinationDialog))
        assert app.screen.query_one("Input").value == f"{tmp_path}/out/web-01-20260528-2026"
        assert "Nothing is written to any VM" in text(app)
        await pilot.press("escape")                            # cancelled: nothing happens
        await until(pilot, lambda: isinstance(app.screen, FilesScreen))
        screen = await extract_to(pilot, app, dest)
        result = text(app)
        assert "✓ Copied" in result and str(dest) in result and "Nothing is written to any VM" in result
        assert screen.report is not None and screen.report.ok
        for rel, got in (("etc/nginx/nginx.conf", dest / "nginx" / "nginx.conf"),
                         ("etc/nginx/mime.types", dest / "nginx" / "mime.types"),
                         ("etc/hostname", dest / "hostname")):
            it = SPEC[rel]
            assert got.read_bytes() == it.content
            st = os.stat(got)
            assert st.st_mode & 0o7777 == it.mode
            assert st.st_mtime_ns == it.mtime * 10**9
        assert sorted(p.name for p in dest.iterdir()) == ["hostname", "nginx"]
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, FilesScreen))


async def test_a_damaged_file_is_named_and_the_others_are_copied(guest: Guest, tmp_path: Path):
    guest.damage("var/lib/data.bin", tmp_path / "work")
    app = browser_app(guest, tmp_path)
    dest = tmp_path / "restored"
    async with app.run_test(size=(100, 30)) as pilot:
        await at(pilot, app, "/")
        await pilot.press("enter")
        await at(pilot, app, "/p1")
        await to_row(pilot, app, "/p1/var")
        await pilot.press("enter")
        await at(pilot, app, "/p1/var")
        await to_row(pilot, app, "/p1/var/lib")
        await pilot.press("space", "left")
        await at(pilot, app, "/p1")
        await to_row(pilot, app, "/p1/etc")
        await pilot.press("enter")
        await at(pilot, app, "/p1/etc")
        await to_row(pilot, app, "/p1/etc/hostname")
        await pilot.press("space")
        await counted(pilot, app)
        screen = await extract_to(pilot, app, dest)
        shown = text(app)
        assert "error" in shown and "/p1/var/lib/data.bin" in shown
        assert screen.report is not None and [p for p, _ in screen.report.errors] == ["/p1/var/lib/data.bin"]
        assert (dest / "hostname").read_bytes() == SPEC["etc/hostname"].content
        assert list((dest / "lib").iterdir()) == []            # nothing of the damaged file is left


async def test_a_stopped_extraction_says_so_and_leaves_no_partial_file(guest: Guest, tmp_path: Path):
    dest = tmp_path / "restored"
    screen = ExtractScreen(guest.repo, guest.point, ["/p1/var/lib/data.bin"], str(dest))
    screen.action_stop()            # c before the first byte: the stop is seen at the engine's first check
    app = FilesApp(lambda: screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: not screen.running)
        await pilot.pause()
        assert screen.stopped and "Stopped" in text(app) and "copied before the stop" in text(app)
        assert list(dest.iterdir()) == []
        await pilot.press("escape")
        await until(pilot, lambda: app.closed)


# --- the ways in -------------------------------------------------------------------------------------------

async def test_restore_walkthrough_files_target_opens_the_browser(guest: Guest, tmp_path: Path):
    ctx = RestoreContext(None, guest.repo)
    app = FilesApp(lambda: RestoreWizard(ctx, VM_URN, clock=lambda: T0 + 60))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, RestoreWizard))
        await pilot.press("enter")                              # the point
        await until(pilot, lambda: app.screen.step == "target")
        assert "Files — browse this point and copy files to this machine" in text(app)
        await pilot.press("down", "down", "enter")              # the third option, above the single disks
        s = await at(pilot, app, "/")
        assert s.point.id == guest.point.id and "p1/" in text(app)
        await pilot.press("escape")                             # back to the walkthrough's target step
        await until(pilot, lambda: isinstance(app.screen, RestoreWizard))
        assert app.screen.step == "target" and not app.closed


async def test_vm_detail_browses_the_last_backup(tmp_path: Path):
    app = make_app(vms=20, seed=1)
    app.animation_level = "none"
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        key = app._table_cursor()
        name = app.vms[key].name
        repo = Repository.open()                                # the user's repository (FCTUI_DATA_DIR)
        make_guest(repo, tmp_path / "work", vm_urn=key, vm_name=name, created=T0 - 86400)
        latest = make_guest(repo, tmp_path / "work2", vm_urn=key, vm_name=name).point
        repo.close()
        await pilot.press("enter")                              # the detail screen at 80x24
        await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen")
        assert "Files of last backup" in text(app)
        await pilot.press("f")
        s = await at(pilot, app, "/")
        assert s.point.id == latest.id and name in text(app)
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen")
        await pilot.press("escape", "down")
        other = app._table_cursor()
        assert other != key
        await pilot.press("f")                                  # from the inventory; no backup of this VM
        await until(pilot, lambda: any("No backup of" in n.message for n in app._notifications))
        assert not any(isinstance(s, FilesScreen) for s in app.screen_stack)


# --- snapshots: the simulator's Ubuntu guest (committed image, GPT: p1 EFI FAT, p2 ext4) -------------------

@pytest.fixture
def ubuntu(tmp_path: Path) -> Guest:
    return sim_guest(Repository.open(tmp_path / "repo"))


def _snap(guest: Guest, tmp_path: Path, drive: Callable[[Any, App], Any]) -> tuple[FilesApp, Callable[[Any], Any]]:
    app = browser_app(guest, tmp_path)

    async def run_before(pilot: Any) -> None:
        await drive(pilot, app)
        app.clear_notifications()
        await wait_until(pilot, lambda: not app.screen.query("Toast"))  # the cleared toasts are gone
    return app, run_before


async def marked_etc(pilot: Any, app: App) -> None:
    """/p2/etc with nginx/ and hostname marked, the directory counted."""
    await at(pilot, app, "/")
    await to_row(pilot, app, "/p2")
    await pilot.press("enter")
    await at(pilot, app, "/p2")
    await to_row(pilot, app, "/p2/etc")
    await pilot.press("enter")
    await at(pilot, app, "/p2/etc")
    await to_row(pilot, app, "/p2/etc/nginx")
    await pilot.press("space")
    await to_row(pilot, app, "/p2/etc/hostname")
    await pilot.press("space")
    await counted(pilot, app)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_files_browser_snapshot(snap_compare, ubuntu: Guest, tmp_path: Path, size):
    app, run_before = _snap(ubuntu, tmp_path, marked_etc)
    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_files_volumes_snapshot(snap_compare, ubuntu: Guest, tmp_path: Path, size):
    app, run_before = _snap(ubuntu, tmp_path, lambda p, a: at(p, a, "/"))
    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_files_extract_result_snapshot(snap_compare, ubuntu: Guest, tmp_path: Path, monkeypatch):
    """80x24: the summary of an extraction that met a damaged file."""
    ubuntu.damage("var/www/html/downloads/catalogue-2025.bin", tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))      # "~/restored" reads the same on every machine

    async def drive(pilot: Any, app: App) -> None:
        await marked_etc(pilot, app)
        await pilot.press("left")
        await at(pilot, app, "/p2")
        await to_row(pilot, app, "/p2/var")
        await pilot.press("space")
        await counted(pilot, app)
        await extract_to(pilot, app, "~/restored")
    app, run_before = _snap(ubuntu, tmp_path, drive)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
