"""The Policies screen's data and the 24-hour timeline, without textual: hand-worked expectations.

NOW is Monday 2026-01-05 12:00 UTC; the timeline starts at 12:00 and, at 80 columns, has 30-minute cells:
cell i covers 12:00 + 30 min * i (22:00 is cell 20, 23:00 cell 22, 03:00 cell 30, 06:00 cell 36).
"""

from __future__ import annotations

from datetime import timezone

import pytest

from fctui.inventory.query import VmRow
from fctui.jobs.policy import Policy, PolicyError, policy_from_mapping
from fctui.jobs.policystore import PolicyRun
from fctui.jobs.protection import VmProtection
from fctui.tui.policies_model import (HostRuns, PlannedRun, build_policies_view, local_time, policy_form_values,
                                      policy_from_form, protection_for, relative_time)
from fctui.tui.timeline import EMPTY, TICK, WINDOW, cell_minutes, layout_timeline, load_style, plain

UTC = timezone.utc
H = 3600.0
NOW = 1_767_571_200.0 + 12 * H   # Monday 2026-01-05 12:00 UTC
CREATED = NOW - 10 * 86400


def row(name: str, host: str = "cna-01", verdict: str = "ready") -> VmRow:
    return VmRow(f"urn:{name}", name, "running", host, "c1", 1, 10, "running", verdict, "")


def pol(name: str, vms: str, **kw: object) -> Policy:
    base: dict[str, object] = {"name": name, "vms": vms, "schedule": "daily 01:00", "rpo": "24h", "created": CREATED}
    base.update(kw)
    return policy_from_mapping(base)


def prot(urn: str, state: str, policy: str, reason: str = "") -> VmProtection:
    return VmProtection(urn, urn[4:], state, reason, policy)


# --- the builder -----------------------------------------------------------------------------------------

def test_coverage_winner_and_others() -> None:
    rows = [row("db-01"), row("db-02", "cna-02"), row("db-03"), row("web-01"), row("misc")]
    # "all-db" (48 h) and "db-strict" (12 h) both select db-*; the shorter RPO wins them
    policies = [pol("all-db", "re:^(db|web)-", rpo="48h"), pol("db-strict", "re:^db-", rpo="12h"),
                pol("off", "misc", enabled=False)]
    protection = {"urn:db-01": prot("urn:db-01", "ok", "db-strict"),
                  "urn:db-02": prot("urn:db-02", "breached", "db-strict", "newest point 30 h old"),
                  "urn:db-03": prot("urn:db-03", "at-risk", "db-strict", "last backup failed"),
                  "urn:web-01": prot("urn:web-01", "ok", "all-db"),
                  "urn:misc": prot("urn:misc", "not-covered", "")}
    view = build_policies_view(policies, rows, protection, [], now=NOW, tz=UTC)
    assert [ln.name for ln in view.lines] == ["all-db", "db-strict", "off"]
    all_db, strict, off = view.lines
    assert (all_db.wins, all_db.others) == (1, 3)
    assert (strict.wins, strict.others) == (3, 0)
    assert (off.wins, off.others) == (0, 1)
    # worst state first: breached, at-risk, ok
    assert [(v.name, v.state) for v in strict.protected] == [("db-02", "breached"), ("db-03", "at-risk"),
                                                            ("db-01", "ok")]
    assert dict(strict.states) == {"ok": 1, "breached": 1, "at-risk": 1}
    assert all_db.elsewhere == (("db-01", "db-strict"), ("db-02", "db-strict"), ("db-03", "db-strict"))
    assert off.elsewhere == (("misc", "none"),)
    assert strict.targets == ["urn:db-02", "urn:db-03", "urn:db-01"]
    # next runs: daily 01:00 -> tomorrow 01:00 = NOW + 13 h; a disabled policy has none
    assert strict.next_run == NOW + 13 * H and off.next_run is None
    assert view.not_covered == 1


def test_last_run_and_its_failures() -> None:
    p = pol("db", "re:^db-", schedule="daily 23:00,03:00", window="daily 22:00-06:00")
    runs = [
        PolicyRun("db", NOW - 37 * H, NOW - 37 * H, NOW - 36 * H, "ok", job_id="j1"),
        PolicyRun("db", NOW - 9 * H, NOW - 9 * H + 60, NOW - 9 * H + 60 + 2700, "partial", job_id="j2",
                  overran=True, vms={"urn:db-02": {"name": "db-02", "result": "failed", "reason": "snapshot refused"},
                                     "urn:db-01": {"name": "db-01", "result": "ok", "reason": ""},
                                     "urn:db-03": {"name": "db-03", "result": "not-started",
                                                   "reason": "window closed before it could start"}}),
        PolicyRun("other", NOW - 1 * H, NOW - 1 * H, None, "running"),
    ]
    view = build_policies_view([p], [row("db-01")], {"urn:db-01": prot("urn:db-01", "ok", "db")}, runs,
                               now=NOW, tz=UTC)
    last = view.lines[0].last
    assert last is not None and view.lines[0].running is None
    assert (last.state, last.job_id, last.overran, last.duration) == ("partial", "j2", True, 2700.0)
    assert last.when == NOW - 9 * H + 60
    # db-01 was backed up: not a failure; the others by name, each with its reason
    assert [(f.name, f.result, f.reason) for f in last.failures] == [
        ("db-02", "failed", "snapshot refused"), ("db-03", "not-started", "window closed before it could start")]


def test_running_run_is_apart_from_the_last_finished_one() -> None:
    p = pol("db", "re:^db-")
    runs = [PolicyRun("db", NOW - 24 * H, NOW - 24 * H, NOW - 23 * H, "failed", note="could not log in"),
            PolicyRun("db", NOW - 5 * 60, NOW - 4 * 60, None, "running")]
    ln = build_policies_view([p], [], {}, runs, now=NOW, tz=UTC).lines[0]
    assert ln.running is not None and ln.running.state == "running"
    assert ln.last is not None and (ln.last.state, ln.last.note) == ("failed", "could not log in")


def test_timeline_hosts_windows_and_runs() -> None:
    """window 22:00-06:00, runs at 23:00 and 03:00; cna-01 has 3 of the policy's VMs, cna-02 one."""
    p = pol("night", "re:^db-", schedule="daily 23:00,03:00", window="daily 22:00-06:00")
    q = pol("noon", "re:^web-", schedule="daily 13:00", rpo="12h")    # no window: runs at 13:00 only
    rows = [row("db-01"), row("db-02"), row("db-03"), row("db-04", "cna-02"), row("web-01")]
    protection = {r.key: prot(r.key, "ok", "night" if r.name.startswith("db") else "noon") for r in rows}
    view = build_policies_view([p, q], rows, protection, [], now=NOW, tz=UTC)
    assert (view.start, view.end) == (NOW, NOW + 24 * H)
    assert [h.host for h in view.hosts] == ["cna-01", "cna-02"]
    cna1, cna2 = view.hosts
    # the window opens today 22:00 (NOW + 10 h) until tomorrow 06:00 (NOW + 18 h); next day's opens at NOW + 34 h
    assert cna1.windows == ((NOW + 10 * H, NOW + 18 * H),)
    assert cna1.runs == (PlannedRun(NOW + 1 * H, "noon", 1), PlannedRun(NOW + 11 * H, "night", 3),
                         PlannedRun(NOW + 15 * H, "night", 3))
    assert cna2.runs == (PlannedRun(NOW + 11 * H, "night", 1), PlannedRun(NOW + 15 * H, "night", 1))


def test_cron_time_outside_the_window_moves_to_its_opening() -> None:
    # cron at 20:00 and 21:00, window 22:00-02:00: both wait for 22:00, which is one run, not two
    p = pol("c", "re:^db-", schedule="cron 0 20,21 * * *", window="daily 22:00-02:00")
    view = build_policies_view([p], [row("db-01")], {"urn:db-01": prot("urn:db-01", "ok", "c")}, [],
                               now=NOW, tz=UTC)
    assert view.hosts[0].runs == (PlannedRun(NOW + 10 * H, "c", 1),)


def test_a_due_run_waiting_for_its_window_is_on_the_timeline() -> None:
    # cron 09:00, window 13:00-15:00, now 12:00: this morning's run waits for 13:00 (NOW + 1 h); tomorrow's
    # waits for tomorrow 13:00 (NOW + 25 h), past the 24 h shown
    p = pol("late", "re:^db-", schedule="cron 0 9 * * *", window="daily 13:00-15:00")
    view = build_policies_view([p], [row("db-01")], {"urn:db-01": prot("urn:db-01", "ok", "late")}, [],
                               now=NOW, tz=UTC)
    assert view.hosts[0].runs == (PlannedRun(NOW + 1 * H, "late", 1),)
    assert view.hosts[0].windows == ((NOW + 1 * H, NOW + 3 * H),)
    assert view.lines[0].next_run == NOW + 1 * H


def test_protection_for_reads_points_and_jobs() -> None:
    class Point:
        def __init__(self, urn: str, created: float) -> None:
            self.vm_urn, self.created = urn, created
    got = protection_for([row("db-01"), row("db-02")], [pol("db", "re:^db-")],
                         points=[Point("urn:db-01", NOW - 2 * H)], now=NOW, tz=UTC)
    assert got["urn:db-01"].state == "ok"
    assert got["urn:db-02"].state == "breached"      # no point and the policy is 10 days old


# --- formatting ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds,text", [(30, "in <1 min"), (25 * 60, "in 25 min"), (3 * H, "in 3 h"),
                                          (2.6 * H, "in 3 h"), (47 * H, "in 47 h"), (72 * H, "in 3 d"),
                                          (-5 * 60, "5 min ago")])
def test_relative_time(seconds: float, text: str) -> None:
    assert relative_time(seconds) == text


def test_local_time() -> None:
    assert local_time(NOW + 11 * H, NOW, UTC) == "23:00"
    assert local_time(NOW + 30 * H, NOW, UTC) == "Tue 18:00"


# --- the form ------------------------------------------------------------------------------------------

def test_form_round_trip() -> None:
    p = pol("db", "re:^db- !rule:template", schedule="mon-fri 23:00", window="daily 22:00-06:00", rpo="1d12h",
            **{"keep-last": 3, "keep-daily": 7, "full-every": 30, "enabled": False})
    values = policy_form_values(p)
    assert values == {"name": "db", "vms": "re:^db- !rule:template", "schedule": "mon-fri 23:00",
                      "window": "daily 22:00-06:00", "rpo": "1d12h", "keep-last": "3", "keep-hourly": "",
                      "keep-daily": "7", "keep-weekly": "", "keep-monthly": "", "keep-yearly": "",
                      "full-every": "30", "enabled": "no"}
    assert policy_from_form(values, created=CREATED) == p


@pytest.mark.parametrize("field,value,message", [
    ("schedule", "daily 25:00", "bad time '25:00'"),
    ("keep-daily", "seven", "keep-daily must be a whole number"),
    ("rpo", "soon", "rpo 'soon'"),
    ("window", "nightly", "window"),
    ("vms", "", "'vms' is required"),
])
def test_form_errors_are_one_line(field: str, value: str, message: str) -> None:
    values = policy_form_values(None) | {"name": "x", "vms": "re:^db-"}
    values[field] = value
    with pytest.raises(PolicyError) as e:
        policy_from_form(values)
    assert message in str(e.value) and "\n" not in str(e.value)


# --- the timeline layout -------------------------------------------------------------------------------

def test_cell_size_follows_the_width() -> None:
    assert cell_minutes(67) == 30       # 80 columns: 48 cells of 30 min
    assert cell_minutes(141) == 12      # 160 columns: 120 cells of 12 min
    assert cell_minutes(144) == 10
    assert cell_minutes(30) == 60
    assert cell_minutes(10) == 180


def test_layout_marks_runs_in_the_window_at_80_columns() -> None:
    """window 22:00-06:00 shaded in cells 20..35, the 3 VMs starting at 23:00 (cell 22) and 03:00 (cell 30);
    ticks every 3 h (12:00 is cell 0, 15:00 cell 6, ... 06:00 cell 36, 09:00 cell 42; 00:00 and 03:00 are
    inside the window)."""
    host = HostRuns("cna-01", ((NOW + 10 * H, NOW + 18 * H),),
                    (PlannedRun(NOW + 11 * H, "night", 3), PlannedRun(NOW + 15 * H, "night", 3)))
    lay = layout_timeline([host], start=NOW, width=78, tz=UTC)
    assert (lay.minutes, lay.label_width, lay.tick_hours) == (30, 6, 3)
    label, cells = lay.rows[0]
    assert label == "cna-01" and len(cells) == 48
    glyphs = "".join(c.glyph for c in cells)
    expected = [EMPTY] * 48
    for i in (0, 6, 12, 18, 36, 42):   # tick cells outside every window
        expected[i] = TICK
    for i in range(20, 36):
        expected[i] = WINDOW
    expected[22] = expected[30] = "3"
    assert glyphs == "".join(expected)
    assert cells[22].style == load_style(3) == "bold green"
    # the axis: "12" over cell 0, "15" over cell 6, ... (two digits: 3 h is only 6 cells)
    assert lay.axis.startswith(" " * 7 + "12    15    18    21    00    03    06    09")
    assert len(plain(lay)[1]) == 7 + 48 <= 78


def test_layout_at_160_columns_and_crowded_cells() -> None:
    """10-minute cells (a short host name leaves 151 columns); two policies start 5 and 4 VMs at 01:00 on
    one host: 9 > 8 in one cell, red."""
    host = HostRuns("cna-02", ((NOW + 10 * H, NOW + 18 * H),),
                    (PlannedRun(NOW + 13 * H, "a", 5), PlannedRun(NOW + 13 * H + 5 * 60, "b", 4),
                     PlannedRun(NOW + 16 * H, "a", 12), PlannedRun(NOW + 17 * H, "b", 6)))
    lay = layout_timeline([host], start=NOW, width=158, tz=UTC)
    assert (lay.minutes, lay.label_width, lay.tick_hours) == (10, 6, 3)
    cells = lay.rows[0][1]
    assert len(cells) == 144
    # 01:00 is 13 h = 78 cells in; 04:00 cell 96; 05:00 cell 102; 22:00 cell 60
    assert (cells[78].glyph, cells[78].style) == ("9", "bold white on red")
    assert (cells[96].glyph, cells[96].style) == ("+", "bold white on red")
    assert (cells[102].glyph, cells[102].style) == ("6", "bold black on yellow")
    assert cells[60].glyph == WINDOW and cells[59].glyph == EMPTY
    # 3 h ticks are 18 cells: "HH:00" labels
    assert lay.axis.startswith(" " * 7 + "12:00" + " " * 13 + "15:00")
    legend = "".join(t for t, _ in lay.legend)
    assert "over 8 per host" in legend and "one cell = 10 min" in legend


def test_narrow_legend_fits_80() -> None:
    lay = layout_timeline([], start=NOW, width=78, tz=UTC)
    assert len("".join(t for t, _ in lay.legend)) <= 78
