"""The Policies screen in the console against the seeded simulator: open it, move, add a policy through
the form (a bad schedule first: the error shows, nothing is stored), edit, remove with confirmation,
run now without a service (the console's own backup path), read-only mode; and SVG snapshots of the
screen and the form at 80x24 and 160x48.

Deterministic: fixed clock (Monday 2026-01-05 12:00 UTC), the console's time zone fixed to UTC, no
agent, the test's own data dir (policies, the agent's database with recorded runs, no repository).
"""

from __future__ import annotations

from datetime import timezone

import pytest

from fctui.jobs.journal import JobStore
from fctui.jobs.policy import policy_from_mapping
from fctui.jobs.policystore import PolicyRun, PolicyStore
from fctui.store import state_dir
from fctui.tui.dialogs import ConfirmScreen
from fctui.tui.policies_screen import PoliciesScreen, PolicyForm
from fctui.tui.testing import FixedClock, make_app, screen_text, wait_loaded, wait_until
from tests.tui.test_tui_snapshots import SIZES

H = 3600.0
NOW = 1_767_571_200.0 + 12 * H      # Monday 2026-01-05 12:00 UTC
CREATED = NOW - 10 * 86400

POLICIES = [
    {"name": "db-nightly", "vms": "re:-db-", "schedule": "daily 23:00,03:00", "window": "daily 22:00-06:00",
     "rpo": "24h", "keep-last": 3, "keep-daily": 7},
    {"name": "edge", "vms": "re:^edge-", "schedule": "daily 01:00", "window": "daily 22:00-06:00", "rpo": "12h"},
    {"name": "fe-weekdays", "vms": "re:-fe-", "schedule": "mon-fri 13:00", "rpo": "48h", "keep-weekly": 4},
    {"name": "apps-off", "vms": "re:^(bill|erp)-", "schedule": "daily 02:00", "rpo": "24h", "enabled": False},
]


def runs() -> list[PolicyRun]:
    return [
        PolicyRun("db-nightly", NOW - 9 * H, NOW - 9 * H + 30, NOW - 9 * H + 30 + 3 * H + 300, "partial",
                  job_id="20260105-0300-ab12", window_end=NOW - 6 * H, overran=True,
                  vms={"urn:x:crm-db-01": {"name": "crm-db-01", "result": "ok", "reason": ""},
                       "urn:x:crm-db-02": {"name": "crm-db-02", "result": "failed",
                                           "reason": "snapshot refused: the VM is being migrated"},
                       "urn:x:file-db-01": {"name": "file-db-01", "result": "not-started",
                                            "reason": "the window closed before it could start"}}),
        PolicyRun("edge", NOW - 11 * H, None, NOW - 11 * H + 5, "failed", note="cannot log in to the VRM: "
                  "password file unreadable"),
        PolicyRun("fe-weekdays", NOW - 71 * H, NOW - 71 * H, NOW - 71 * H + 840, "ok", job_id="20260102-1300-cd34"),
    ]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FCTUI_RUNTIME_DIR", str(tmp_path / "run"))
    populate()


def populate() -> None:
    """The policies in the policy store, their runs in the agent's database (of the current FCTUI_*_DIR)."""
    store = PolicyStore()
    for d in POLICIES:
        store.add(policy_from_mapping({**d, "created": CREATED}))
    js = JobStore(state_dir() / "jobs.json")
    for r in runs():
        js.record_run(r)
    js.close()


def app_for(read_only: bool = False):
    app = make_app(vms=60, seed=1, clock=FixedClock(NOW), read_only=read_only)
    app.tz = timezone.utc
    app.animation_level = "none"
    return app


async def open_policies(pilot, app) -> PoliciesScreen:
    await wait_loaded(pilot, app)
    await pilot.press("O")
    await wait_until(pilot, lambda: isinstance(app.screen, PoliciesScreen) and app.screen.loads >= 1)
    await pilot.pause()
    return app.screen


def names(screen: PoliciesScreen) -> list[str]:
    return [ln.name for ln in screen.view.lines] if screen.view else []


async def test_open_move_and_detail() -> None:
    app = app_for()
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_policies(pilot, app)
        assert names(screen) == ["apps-off", "db-nightly", "edge", "fe-weekdays"]
        assert screen.runs_from == "file"
        assert "4 · 38 VMs protected · 22 not covered · job agent not running" in screen_text(app)
        db = screen.view.line("db-nightly")
        # crm-db-01, crm-db-02, file-db-01, git-db-01 (the simulator's names with "-db-")
        assert db.wins == 4 and db.next_run == NOW + 11 * H
        await pilot.press("down")
        await pilot.pause()
        assert screen.selected_name() == "db-nightly"
        text = screen_text(app)
        assert "Failures of the last run (2)" in text
        assert "snapshot refused: the VM is being migrated" in text
        assert "the window closed before it could start" in text
        assert "23:00 in 11 h" in text
        assert "Next 24 h of runs per host" in text
        # db-nightly's 3 VMs on cna-03 start at 23:00 and 03:00 (10-minute cells from 12:00: cells 66 and 90)
        line = next(ln for ln in text.splitlines() if ln.startswith("cna-03 "))
        cells = line[7:]
        assert (cells[66], cells[90], cells[60], cells[59]) == ("3", "3", "░", " ")
        assert "one cell = 10 min" in text
        await pilot.press("down")
        await pilot.pause()
        assert screen.selected_name() == "edge"
        assert "cannot log in to the VRM: password file unreadable" in screen_text(app)
        assert "failed · due 01:00 (11 h ago) · did not start" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, PoliciesScreen)


async def test_add_with_a_bad_schedule_then_edit_then_remove() -> None:
    app = app_for()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_policies(pilot, app)
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(app.screen, PolicyForm))
        form = app.screen
        for key, value in {"name": "web", "vms": "re:^web-", "schedule": "daily 25:00", "rpo": "24h",
                           "keep-daily": "7"}.items():
            form.query_one(f"#f-{key}").value = value
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, PolicyForm)
        assert "bad time '25:00'" in form.error
        assert "bad time '25:00'" in screen_text(app)
        assert "web" not in [p.name for p in PolicyStore().all()]
        form.query_one("#f-schedule").value = "daily 02:00"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, PoliciesScreen) and "web" in names(screen))
        stored = PolicyStore().get("web")
        assert (stored.schedule.text, stored.rpo_s, stored.retention.keep_daily, stored.created) == (
            "daily 02:00", 86400.0, 7, NOW)
        await wait_until(pilot, lambda: screen.selected_name() == "web")

        # edit: the name stays, the RPO changes
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, PolicyForm))
        form = app.screen
        assert form.query_one("#f-name").disabled and form.query_one("#f-name").value == "web"
        form.query_one("#f-rpo").value = "12h"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, PoliciesScreen))
        assert PolicyStore().get("web").rpo_s == 12 * H
        assert PolicyStore().get("web").created == NOW

        # remove: "keep it" keeps it; "remove" removes it
        await wait_until(pilot, lambda: screen.selected_name() == "web")
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")
        await pilot.pause()
        assert "web" in [p.name for p in PolicyStore().all()]
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.click("#yes")
        await wait_until(pilot, lambda: "web" not in names(screen))
        assert "web" not in [p.name for p in PolicyStore().all()]


async def test_cancel_stores_nothing_and_a_duplicate_name_is_refused() -> None:
    app = app_for()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_policies(pilot, app)
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(app.screen, PolicyForm))
        form = app.screen
        form.query_one("#f-name").value = "edge"
        form.query_one("#f-vms").value = "re:^x"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: bool(form.error))
        assert "exists already" in form.error
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, PoliciesScreen)
        assert PolicyStore().get("edge").vms == "re:^edge-"


async def test_run_now_without_a_service_plans_a_backup_of_the_policys_vms() -> None:
    from fctui.tui.review_screen import ReviewScreen
    app = app_for()
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        screen = await open_policies(pilot, app)
        await pilot.press("down")          # db-nightly
        await pilot.pause()
        want = sorted(screen.selected_line().targets)
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ReviewScreen), timeout=20)
        assert sorted(vp.vm_urn for vp in app.screen.plan.vms) == want
        assert any("No policy service runs" in n.message for n in app._notifications)


async def test_read_only_hides_editing() -> None:
    app = app_for(read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_policies(pilot, app)
        await pilot.press("a", "d", "x")
        await pilot.pause()
        assert isinstance(app.screen, PoliciesScreen)
        assert "READ-ONLY" in screen_text(app)


# --- snapshots ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_policies_screen_snapshot(snap_compare, size):
    """A few policies, a partial last run with failures and their reasons, a failed one, the timeline."""
    app = app_for()

    async def run_before(pilot):
        await open_policies(pilot, app)
        await pilot.press("down")
        await pilot.pause()
        app.clear_notifications()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_policy_form_snapshot(snap_compare, size):
    """The edit form of db-nightly after a bad schedule: the one-line error under the form."""
    app = app_for()

    async def run_before(pilot):
        await open_policies(pilot, app)
        await pilot.press("down", "e")
        await wait_until(pilot, lambda: isinstance(app.screen, PolicyForm))
        form = app.screen
        form.query_one("#f-schedule").value = "daily 21:00"
        for inp in form.query("Input"):
            inp.cursor_blink = False
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: bool(form.error))
        app.clear_notifications()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


async def test_a_policy_added_elsewhere_shows_within_a_minute() -> None:
    app = app_for()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_policies(pilot, app)
        PolicyStore().add(policy_from_mapping({"name": "cli-made", "vms": "re:^git-", "schedule": "daily 04:00",
                                               "rpo": "24h"}))
        # A tick of the screen's 1 s timer before the minute is up (driven here, not waited for): the
        # console's data did not change, so it does not reload -- no file is read on the event loop.
        await wait_until(pilot, lambda: not screen._loading)
        loads = screen.loads
        screen._tick()
        assert not screen._loading and screen.loads == loads
        await pilot.pause()
        assert "cli-made" not in names(screen)
        app.clock.advance(61)
        await wait_until(pilot, lambda: "cli-made" in names(screen))
        assert screen.view.line("cli-made").wins == 2       # git-db-01, git-fe-01


# --- the job agent: a real one (no policy service), and a stand-in for a policy service --------------------

async def test_with_a_real_agent_runs_come_from_it_and_run_now_takes_the_console_path(agent, dirs) -> None:
    """The agent answers policy_runs from its job store (no service: "service" is None), so the runs shown
    are the agent's; run now without a service is the console's own backup path."""
    from fctui.tui.review_screen import ReviewScreen
    populate()                       # the dirs fixture moved FCTUI_*_DIR: the policies and runs go there
    await agent.start()
    app = app_for()
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await wait_loaded(pilot, app)
        await wait_until(pilot, lambda: getattr(getattr(app, "jobs", None), "connected", False))
        screen = await open_policies(pilot, app)
        assert screen.runs_from == "agent" and screen.service is None
        assert screen.view.line("db-nightly").last.job_id == "20260105-0300-ab12"
        assert "· no policy service" in screen_text(app)
        await pilot.press("down", "x")        # db-nightly
        await wait_until(pilot, lambda: isinstance(app.screen, ReviewScreen), timeout=20)
        assert any("No policy service runs" in n.message for n in app._notifications)


class ServiceAgent:
    """Answers on the agent's socket what an agent running a policy service answers (``policy_runs`` with a
    service status, ``run_policy NAME`` with the run, ``watch``; the shapes of fctui.agent.server), and
    records the requests: the console's side of that protocol, without a VRM login for the service."""

    def __init__(self, runs: list[PolicyRun]) -> None:
        self.runs = runs
        self.requests: list[dict] = []
        self.server = None

    async def start(self) -> None:
        import asyncio
        from fctui.agent.protocol import socket_path
        path = socket_path()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.server = await asyncio.start_unix_server(self._handle, path=str(path))

    async def _handle(self, reader, writer) -> None:
        import json
        req = json.loads(await reader.readline())
        self.requests.append(req)
        op = req.get("op")
        if op == "watch":
            writer.write(b'{"event": "cleanup", "pending": []}\n')
            await writer.drain()
            await reader.read()        # until the console goes away
            writer.close()
            return
        run = PolicyRun(str(req.get("name")), NOW, NOW, None, "running", job_id="20260105-1200-ff01")
        resp = {"hello": {"ok": True, "demo": None, "running": []},
                "policy_runs": {"ok": True, "runs": [r.to_dict() for r in self.runs],
                                "service": {"policies": 4, "running": []}},
                "run_policy": {"ok": True, "run": run.to_dict()}}.get(op, {"ok": False,
                                                                         "error": f"unknown op {op!r}"})
        writer.write(json.dumps(resp).encode() + b"\n")
        await writer.drain()
        writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_with_a_service_runs_come_from_it_and_run_now_asks_it() -> None:
    only = [PolicyRun("fe-weekdays", NOW - 23 * H, NOW - 23 * H, NOW - 23 * H + 60, "failed",
                      vms={"urn:x:web-fe-01": {"name": "web-fe-01", "result": "failed", "reason": "from the service"}})]
    service = ServiceAgent(only)
    app = app_for()
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await service.start()
        try:
            await wait_loaded(pilot, app)
            await wait_until(pilot, lambda: getattr(getattr(app, "jobs", None), "connected", False))
            screen = await open_policies(pilot, app)
            assert screen.runs_from == "agent" and screen.service is not None
            assert "policy service running" in screen_text(app)
            assert screen.view.line("db-nightly").last is None      # the file's runs are not read
            await pilot.press("down", "down", "down")                # fe-weekdays
            await pilot.pause()
            assert screen.selected_name() == "fe-weekdays"
            assert "from the service" in screen_text(app)
            await pilot.press("x")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.click("#yes")
            await wait_until(pilot, lambda: any(r.get("op") == "run_policy" for r in service.requests))
            assert [r for r in service.requests if r.get("op") == "run_policy"] == [
                {"op": "run_policy", "name": "fe-weekdays"}]
            await wait_until(pilot, lambda: any("Run of policy fe-weekdays started by the policy service "
                                                "(job 20260105-1200-ff01)" in n.message for n in app._notifications))
        finally:
            service.close()


async def test_keys_remap_by_id() -> None:
    from fctui.config import Config
    app = make_app(vms=60, seed=1, clock=FixedClock(NOW),
                   config=Config(keymap={"view.policies": "ctrl+o", "policies.add": "n"}))
    app.tz = timezone.utc
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await wait_loaded(pilot, app)
        assert not any("Unknown binding ids" in n.message for n in app._notifications)
        await pilot.press("O")
        await pilot.pause()
        assert not isinstance(app.screen, PoliciesScreen)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, PoliciesScreen))
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, PoliciesScreen)
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, PolicyForm))
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, PoliciesScreen))
        keys = {bid: k for k, _, bid in app.help_rows(app.screen)}
        assert keys["policies.add"] == "n"
        assert {"policies.edit", "policies.remove", "policies.run", "policies.back"} <= set(keys)


async def test_reads_again_when_the_console_refreshes() -> None:
    app = app_for()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_policies(pilot, app)
        before = screen.loads
        # a policy written meanwhile: the console's refresh (not the minute) brings it
        PolicyStore().add(policy_from_mapping({"name": "zz", "vms": "re:^oa-", "schedule": "daily 04:00",
                                               "rpo": "24h"}))
        app.refresh_now()
        await wait_until(pilot, lambda: app.refresh_count >= 2, timeout=20)
        await wait_until(pilot, lambda: screen.loads > before and "zz" in names(screen))
        assert screen.view.line("zz").wins == 2     # oa-es-01, oa-worker-01
