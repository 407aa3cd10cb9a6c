"""Issue 15, friction "names", "reason column" and "main reason": column widths follow the terminal, names
that do not fit stay told apart, the main reason is readable at 80x24 and →/← scroll the table sideways
(binding ids table.scroll_right/left), and a ready VM's main-reason cell carries no info finding."""

from __future__ import annotations

import re

import pytest

from fctui.inventory.query import row_from_vm
from fctui.jobs.model import JobRecord, VmProgress
from fctui.rules.engine import Finding
from fctui.sim import SimConfig, Simulator
from fctui.tui.jobs_screen import JobsScreen
from fctui.tui.names import disk_label, fit_name
from fctui.tui.testing import make_app, screen_text, wait_loaded, wait_until
from fctui.tui.widgets.vmtable import VmTable

from .test_tui_jobs_screens import MIB, NOW, disk, jobs_app

BLOCKED = "bill-cache-01"    # seed 1: blocked by tools-missing, a reason longer than 80x24 shows
READY = "bill-batch-01"      # seed 1: ready, with only the info finding consistency-not-euleros


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimConfig(vms=60, seed=1, time_scale=100.0))


def lines(app) -> list[str]:
    return screen_text(app).splitlines()


def header(app) -> str:
    return next(line for line in lines(app) if re.match(r"^\s+Name\b", line))


def name_cells(app) -> dict[str, str]:
    """The VM table's name cell of every row on screen (from the header: up to the next column title)."""
    head = header(app)
    end = re.search(r"Name(?: [▲▼])?\s+(\S)", head)
    assert end is not None, head
    top = lines(app).index(head)
    out = {}
    for line in lines(app)[top + 1:]:
        if line[:2] not in ("  ", "● "):     # the footer
            continue
        cell = line[2:end.start(1)].strip()
        if cell:
            out[cell] = line
    return out


def name_width(app) -> int:
    """Cells from the name column's start to the next column's title."""
    end = re.search(r"Name(?: [▲▼])?\s+(\S)", header(app))
    assert end is not None
    return end.start(1) - 2


def row_line(app, name: str) -> str:
    return next(line for line in lines(app) if line[2:].startswith(name + " "))


async def test_name_column_grows_at_160_and_long_names_show_whole(sim):
    app = make_app(sim)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_loaded(pilot, app)
        cells = name_cells(app)
        # 26 characters: cut at 22 before widths followed the terminal
        assert "edge-combo-indep-shared-01" in cells
        assert "edge-consistency-not-euleros-01" not in cells    # 31: cut, but in its middle
        assert any(c.startswith("edge-consist") and c.endswith("euleros-01") for c in cells)


async def test_two_vms_with_a_long_common_prefix_stay_distinguishable_at_80x24(sim):
    app = make_app(sim)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        app.set_filter("name:edge-state-unsupported")
        await wait_loaded(pilot, app)
        assert app.screen.query_one(VmTable).row_count == 2
        cells = sorted(name_cells(app))
        assert len(cells) == 2 and cells[0] != cells[1], cells
        # the name at its least (16 cells): the protection column (issue 16) took the cells it had beyond
        assert cells[0].startswith("edge-st") and cells[0].endswith("-01")
        assert cells[1].startswith("edge-st") and cells[1].endswith("-02")


async def test_widths_follow_a_resize(sim):
    app = make_app(sim)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        narrow = name_width(app)
        app.set_filter("name:edge-disk-independent")
        await wait_loaded(pilot, app)
        assert "edge-disk-independent-01" not in name_cells(app)
        await pilot.resize_terminal(160, 48)
        await pilot.pause()
        await pilot.pause()
        assert name_width(app) > max(narrow, 23)
        assert "edge-disk-independent-01" in name_cells(app)
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        await pilot.pause()
        assert name_width(app) == narrow
        assert all(len(line) <= 80 for line in lines(app))


async def test_blocked_reason_is_readable_at_80x24_and_right_arrow_shows_the_rest(sim):
    app = make_app(sim)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        table = app.screen.query_one(VmTable)
        reason = app.store.rows[next(k for k, r in app.store.rows.items() if r.name == BLOCKED)].reason
        assert reason.startswith("tools-missing:") and len(reason) > 60
        # the first 37 cells of the reason are on its row (20 before: the name, state and host took the rest;
        # 40 before the protection column of issue 16, with the name at its least)
        seen = [row_line(app, BLOCKED)]
        assert reason[:36] in seen[0]
        assert table.scroll_x == 0
        await pilot.press("right")
        await pilot.pause()
        assert table.scroll_x > 0
        seen.append(row_line(app, BLOCKED))
        assert seen[-1].startswith("  " + BLOCKED)        # the name stays put while the reason scrolls
        for _ in range(8):
            await pilot.press("right")
            await pilot.pause()
            seen.append(row_line(app, BLOCKED))
        # every part of the reason was on screen at some scroll position
        missing = [reason[i:i + 10] for i in range(0, len(reason) - 9) if not any(reason[i:i + 10] in x for x in seen)]
        assert not missing, (missing, seen)
        for _ in range(12):
            await pilot.press("left")
        await pilot.pause()
        assert table.scroll_x == 0
        assert reason[:36] in row_line(app, BLOCKED)


async def test_sideways_keys_are_listed_with_binding_ids_and_remappable(sim):
    from fctui.config import Config
    app = make_app(sim, config=Config(keymap={"table.scroll_right": "L"}))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        rows = {bid: (keys, desc) for keys, desc, bid in app.help_rows(app.screen)}
        for bid in ("table.scroll_right", "table.scroll_left", "table.page_right", "table.page_left"):
            assert bid in rows, rows
        # nothing in the help moves the table without a binding id
        assert not [r for r in app.help_rows(app.screen) if not r[2] and "Scroll" in r[1]]
        table = app.screen.query_one(VmTable)
        await pilot.press("L")
        await pilot.pause()
        assert table.scroll_x > 0
        await pilot.press("ctrl+pageup")
        await pilot.pause()
        assert table.scroll_x == 0


async def test_a_ready_vm_row_shows_no_info_finding_but_the_detail_does(sim):
    app = make_app(sim)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_loaded(pilot, app)
        key = next(k for k, r in app.store.rows.items() if r.name == READY)
        assert app.store.rows[key].verdict == "ready"
        assert app.assessment(key).has("consistency-not-euleros")
        assert "consistency-not-euleros" not in row_line(app, READY)
        assert all(r.reason == "" for r in app.store.rows.values() if r.verdict == "ready")
        # the info finding is still in the detail (and in the rule: filter)
        table = app.screen.query_one(VmTable)
        table.move_to_key(key)
        app.show_detail(key, now=True)
        await pilot.pause()
        assert "consistency-not-euleros" in screen_text(app).split("Findings", 1)[1]


def test_main_reason_is_the_worst_blocker_or_warning_never_an_info():
    class Vm:
        urn, name, status, host_name, host_urn, disks = "urn:sites:1:vms:i-1", "app-01", "running", "cna-01", "", []

    class Assessment:
        def __init__(self, verdict, findings):
            self.verdict, self.findings = verdict, findings
            self.main_reason = findings[0] if findings else None

    info = Finding("consistency-not-euleros", "info", "backups are crash-consistent", "", [])
    warn = Finding("state-stopped", "warning", "VM is stopped", "", [])
    assert row_from_vm(Vm(), Assessment("ready", [info])).reason == ""
    assert row_from_vm(Vm(), Assessment("ready", [info]), provisional=True).reason == ""
    row = row_from_vm(Vm(), Assessment("degraded", [warn, info]))
    assert row.reason == "state-stopped: VM is stopped" and row.rules == ("state-stopped", "consistency-not-euleros")


async def test_a_longer_reason_after_a_refresh_widens_the_scroll_range():
    """Rows replaced in place (a refresh keeps the count): measured again shortly after, not per keystroke."""
    from textual.app import App

    from fctui.inventory.query import VmRow

    def row(i: int, reason: str) -> VmRow:
        return VmRow(f"k{i}", f"vm-{i:02d}", "running", "cna-01", "c", 1, 10, "running", "blocked", reason)

    rows = {r.key: r for r in (row(i, "tools-missing: short") for i in range(5))}

    class One(App[None]):
        def compose(self):
            yield VmTable()

    app = One()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(VmTable)
        table.set_view(list(rows), rows, frozenset())
        await pilot.pause()
        assert table.column_layout().max_scroll == 0
        rows["k3"] = row(3, "disk-shared: " + "x" * 150)
        table.set_view(list(rows), rows, frozenset())
        await wait_until(pilot, lambda: table.column_layout().max_scroll > 100)  # the next layout tick
        assert table.virtual_size.width == table.column_layout().virtual_width


# --- the jobs screen's disk rows ----------------------------------------------------------------------

def two_vm_job() -> JobRecord:
    """Two VMs whose names differ only at the end; one was restored as a new VM and kept its source's disk
    names (so the VM name is no prefix of them)."""
    job = JobRecord(id="20260528-1200-ww01", state="running", created=NOW - 60, started=NOW - 50,
                    targets=["edge-ready-euleros-01", "edge-ready-euleros-01-restored"])
    a = VmProgress(urn="urn:sites:1:vms:i-1", name="edge-ready-euleros-01", host="cna-01", kind="cbt",
                   state="reading")
    a.disks = [disk("urn:v1", "edge-ready-euleros-01-disk0", "full", "reading", 64 * MIB, 8 * MIB),
               disk("urn:v2", "edge-ready-euleros-01-disk1", "full", "waiting", 64 * MIB)]
    b = VmProgress(urn="urn:sites:1:vms:i-2", name="edge-ready-euleros-01-restored", host="cna-02", kind="cbt",
                   state="reading")
    b.disks = [disk("urn:v3", "edge-ready-euleros-02-disk0", "full", "reading", 64 * MIB, 8 * MIB),
               disk("urn:v4", "archive-volume-of-the-erp-database-2019", "full", "waiting", 64 * MIB)]
    job.vms = [a, b]
    return job


def disk_rows(text: str) -> list[str]:
    """The label of each disk line of the job detail (disk lines carry the mode column)."""
    return [m.group(1).strip() for m in re.finditer(r"^\s{2}(\S.*?)\s+full\s", text, re.M)]


async def test_job_disk_rows_stay_distinguishable_and_follow_the_width():
    app = jobs_app([two_vm_job()])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)
        text = app.screen.query_one("#job-detail").plain
        labels = disk_rows(text)
        assert len(labels) == 4 and len(set(labels)) == 4, labels
        # under its VM's row a disk is named by what is its own
        assert labels[:2] == ["disk0", "disk1"]
        assert labels[2].startswith("edge-") and labels[2].endswith("02-disk0")
        assert "archive-volume-of-the-erp-database-2019" not in labels     # cut in its middle at 80
        assert labels[3].startswith("archive") and labels[3].endswith("2019")
        await pilot.resize_terminal(160, 48)
        await pilot.pause()
        await pilot.pause()
        labels = disk_rows(app.screen.query_one("#job-detail").plain)
        assert labels[2:] == ["edge-ready-euleros-02-disk0", "archive-volume-of-the-erp-database-2019"]


async def test_backup_review_names_each_vms_disks_under_it():
    """Two ready VMs of the simulator, edge-ready-euleros-01 and -02: their disks were both '…uleros-0N-disk0'
    and read as the same name at a glance; under each VM's line they are now that VM's disk0, disk1…"""
    from fctui.tui.review_screen import render_review

    from .test_tui_jobs_screens import sim_plan_async
    plan = await sim_plan_async()
    text = render_review(plan).plain
    assert "…uleros" not in text
    blocks = re.split(r"^▸ ", text, flags=re.M)[1:]
    shown = {b.split()[0]: re.findall(r"^\s{2}(disk\d+)\s", b, re.M) for b in blocks}
    ready = [vp.vm_name for vp in plan.runnable]
    assert len(ready) == 2 and all(shown[name] for name in ready), shown
    assert all(shown[name][0] == "disk0" for name in ready)


def test_fit_name_keeps_both_ends_in_cells():
    assert fit_name("edge-state-unsupported-01", 25) == "edge-state-unsupported-01"
    cut = fit_name("edge-state-unsupported-01", 16)
    assert len(cut) == 16 and cut.startswith("edge-st") and cut.endswith("rted-01") and "…" in cut
    assert fit_name("数据库服务器-01", 9) == "数据…-01"          # two cells a character: never wider than 9
    assert disk_label("app-01-disk3", "app-01") == "disk3"
    assert disk_label("app-02-disk3", "app-01") == "app-02-disk3"


# --- snapshot (the lead generates the SVG: tests/tui/__snapshots__ is not committed by helpers) -------

def test_vm_table_scrolled_right_snapshot(snap_compare, monkeypatch, tmp_path):
    """80x24, blocked VMs, → pressed once: the names stay, the reasons have moved left, ← in the header."""
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    app = make_app(vms=60, seed=1)
    app.animation_level = "none"

    async def run_before(pilot):
        await wait_loaded(pilot, app)
        app.set_filter("verdict:blocked", update_input=True)
        await wait_loaded(pilot, app)
        table = app.screen.query_one(VmTable)
        table.focus()
        app.clear_notifications()
        await pilot.press("right")
        await wait_until(pilot, lambda: table.scroll_x > 0 and not app.screen.query("Toast"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
