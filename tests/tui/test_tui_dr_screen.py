"""The disaster recovery screen over a real DrStore (tmp data dir): plans with their last rehearsal and
RTO, a plan's detail, a rehearsal followed live as the agent would write it (RecoveryRun records saved
through the store, no real rehearsal: fast), and SVG snapshots at 80x24 and 160x48.

Deterministic: fixed clock and time zone, no polling timer (the test reads the store when it wrote it).
"""

from __future__ import annotations

import time
from datetime import timezone
from typing import Any

import pytest
from textual.app import App
from textual.widgets._footer import FooterKey

from fctui.jobs.dr import BootGroup, DrStore, RecoveryPlan, RecoveryRun, VmRecovery
from fctui.tui.dr_screen import DrScreen, plan_line, render_plan, render_run
from tests.tui.test_tui_snapshots import SIZES

T0 = 1_780_000_000.0
SRC = "urn:sites:1A2B3C4D"
DST = "urn:sites:5E6F7A8B"
ISOLATED, DR_CLUSTER = f"{DST}:portgroups:3", f"{DST}:clusters:2"
PROD_SSD, DR_SSD = f"{SRC}:datastores:1", f"{DST}:datastores:4"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))


def vm_urn(i: int) -> str:
    return f"{SRC}:vms:i-{i:08X}"


NAMES = {vm_urn(i): n for i, n in enumerate(["db-01", "db-02", "app-01", "app-02", "app-03", "web-01"])}


def shop_plan() -> RecoveryPlan:
    return RecoveryPlan(name="shop", target="site-b", vms=list(NAMES), vm_names=dict(NAMES),
                        selection="filter:shop", groups=[BootGroup("databases", ["db-*"]),
                                                         BootGroup("apps", ["app-*"])],
                        rehearsal_network=ISOLATED, tools_timeout_s=600.0, location=DR_CLUSTER,
                        datastores={PROD_SSD: DR_SSD}, created=T0, updated=T0,
                        names={ISOLATED: "dr-isolated", DR_CLUSTER: "dr-cluster", PROD_SSD: "prod-ssd",
                               DR_SSD: "dr-ssd"})


def hr_plan() -> RecoveryPlan:
    return RecoveryPlan(name="hr", target="site-b", vms=[vm_urn(10)], vm_names={vm_urn(10): "hr-01"},
                        created=T0, updated=T0)


def group_of(name: str) -> str:
    return "databases" if name.startswith("db") else "apps" if name.startswith("app") else "others"


def rehearsal(run_id: str, started: float, state: str = "running") -> RecoveryRun:
    return RecoveryRun(id=run_id, plan="shop", kind="rehearsal", target="site-b", job_id=f"j-{run_id}",
                       started=started, state=state,
                       vms=[VmRecovery(urn, name, group_of(name)) for urn, name in NAMES.items()])


def finished_rehearsal() -> RecoveryRun:
    """Yesterday's rehearsal: every VM up but one that never got Tools running."""
    run = rehearsal("dr-20260527-1200", T0 - 86400 + 600, state="failed")
    for i, v in enumerate(run.vms):
        v.point_id = f"p{i}"
        v.restore_s = 40.0 + i
        if v.vm_name == "web-01":
            v.state, v.error = "failed", "Tools not running after 600 s"
        else:
            v.state, v.boot_s, v.rto_s = "running", 20.0 + i, 70.0 + 10 * i
    run.finished = run.started + 700
    run.rto_s = None
    run.cleanup = "done"
    return run


def store_with_plans() -> DrStore:
    store = DrStore()
    store.save_plan(shop_plan())
    store.save_plan(hr_plan())
    return store


class DrApp(App[None]):
    def __init__(self, store: DrStore, now: float) -> None:
        super().__init__()
        self.store, self.now = store, now
        self.animation_level = "none"

    def on_mount(self) -> None:
        self.push_screen(DrScreen(self.store, clock=lambda: self.now, tz=timezone.utc, poll=False))


def screen(app: App) -> DrScreen:
    assert isinstance(app.screen, DrScreen)
    return app.screen


async def until(pilot: Any, cond: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await pilot.pause(0.02)


def body(app: App) -> str:
    return str(screen(app).query_one("#dr-body").render())


async def reread(pilot: Any, app: App) -> None:
    s = screen(app)
    await s.reload()
    await pilot.pause()


def live_stages() -> list[RecoveryRun]:
    """A rehearsal as the agent writes it: restoring, the databases booting, the apps too, the end."""
    start = T0 + 100
    out = []
    run = rehearsal("dr-20260528-1200", start)
    for v in run.vms[:2]:
        v.state = "restoring"
    out.append(RecoveryRun.from_dict(run.to_dict()))
    for v in run.vms:
        v.state, v.restore_s = "restored", 30.0
    run.vms[0].state = run.vms[1].state = "booting"
    out.append(RecoveryRun.from_dict(run.to_dict()))
    for v in run.vms:
        if v.vm_name == "web-01":
            v.state, v.error = "failed", "Tools not running after 600 s"
        else:
            v.state, v.boot_s, v.rto_s = "running", 25.0, 55.0 if v.group == "databases" else 95.0
    run.state, run.finished, run.cleanup = "failed", start + 700, "done"
    out.append(RecoveryRun.from_dict(run.to_dict()))
    return out


# --- pilot ---------------------------------------------------------------------------------------------

async def test_plans_listed_with_last_rehearsal_and_rto():
    store = store_with_plans()
    done = finished_rehearsal()
    done.vms[-1].state, done.vms[-1].error, done.vms[-1].rto_s = "running", "", 130.0
    done.state, done.rto_s = "succeeded", 130.0
    store.save_run(done)
    app = DrApp(store, T0 + 3600)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: screen(app).loaded)
        s = screen(app)
        assert [p.name for p in s.plans] == ["hr", "shop"]
        opts = s.query_one("#dr-plans")
        lines = [str(opts.get_option_at_index(i).prompt) for i in range(opts.option_count)]
        assert "never rehearsed" in lines[0] and "hr" in lines[0]
        assert "shop" in lines[1] and "site-b" in lines[1] and "6 VMs" in lines[1]
        assert "succeeded" in lines[1] and "RTO 2 min 10 s" in lines[1]
        await pilot.press("down")
        await pilot.pause()
        assert s.selected == "shop"
        text = body(app)
        assert "1. databases (2): db-01, db-02" in text and "2. apps (3)" in text and "3. others (1): web-01" in text
        assert "dr-isolated" in text and "Total RTO 2 min 10 s" in text and "Clean-up: done" in text


async def test_live_rehearsal_follows_the_store():
    store = store_with_plans()
    store.save_run(finished_rehearsal())
    app = DrApp(store, T0 + 130)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: screen(app).loaded)
        s = screen(app)
        await pilot.press("down")
        await pilot.pause()
        assert "failed (1 VM down)" in str(s.query_one("#dr-plans").get_option_at_index(1).prompt)
        stages = live_stages()
        store.save_run(stages[0])
        await reread(pilot, app)
        text = body(app)
        assert "running" in text and "30 s so far" in text and "0/6 VMs running" in text
        assert text.index("db-01") < text.index("app-01") < text.index("web-01")   # boot order
        assert "running 0/6 up" in str(s.query_one("#dr-plans").get_option_at_index(1).prompt)
        assert not s.check_action("rehearse", ())          # one runs already: dimmed
        store.save_run(stages[1])
        s._next_read = float("inf")
        s._job_event(stages[1].job_id)                  # the agent's event of the run's job: read at once
        assert s._next_read == 0.0
        app.now = T0 + 180
        await reread(pilot, app)
        text = body(app)
        assert "booting" in text and "(1 min 20 s)" in text   # a VM's RTO still counting
        store.save_run(stages[2])
        app.now = T0 + 900
        await reread(pilot, app)
        text = body(app)
        assert "5/6 VMs running" in text and "1 failed" in text
        assert "Tools not running after 600 s" in text and "Clean-up: done" in text
        assert "1 min 35 s" in text                           # an app's RTO
        assert "Earlier runs" in text
        assert s.check_action("rehearse", ()) is True


async def test_rehearse_asks_first_and_no_plan_says_how():
    app = DrApp(DrStore(), T0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: screen(app).loaded)
        assert "No recovery plan yet" in body(app)
        assert not screen(app).check_action("rehearse", ())
        # the command the screen suggests is one the CLI takes, once its placeholders are filled in
        hint = body(app).split("Make one with: ", 1)[1].split()
        assert hint[:4] == ["fctui", "dr", "plan", "add"]
        filled = {"NAME": "erp", "PROFILE": "dr", "FILTER": "re:^erp-", "NAME=GLOB": "db=erp-db*", "…": None}
        argv = [filled.get(w, w) for w in hint[1:]]
        from fctui.cli import build_parser
        ns = build_parser().parse_args([w for w in argv if w is not None])
        assert (ns.name, ns.target, ns.vms, ns.group) == ("erp", "dr", "re:^erp-", ["db=erp-db*"])
    store = store_with_plans()
    app = DrApp(store, T0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: screen(app).loaded)
        await pilot.press("r")
        await pilot.pause()
        from fctui.tui.dialogs import ConfirmScreen
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")            # "Not now": nothing submitted
        await pilot.pause()
        assert isinstance(app.screen, DrScreen)
        await pilot.press("r")
        await pilot.pause()
        await pilot.click("#yes")              # no connection to site-b here: said, nothing started
        await until(pilot, lambda: any("not connected to site site-b" in n.message
                                       for n in app._notifications))
        assert isinstance(app.screen, DrScreen) and getattr(app, "jobs", None) is None


def test_plan_names_what_it_maps_not_urns():
    t = render_plan(shop_plan(), timezone.utc, T0).plain
    assert "Rehearsal network: dr-isolated" in t and "Location: dr-cluster" in t
    assert "Datastore: prod-ssd → dr-ssd" in t
    assert "urn:" not in t
    failover = shop_plan()
    failover.port_groups = {f"{SRC}:portgroups:1": ISOLATED, f"{SRC}:portgroups:2": ""}
    failover.names[f"{SRC}:portgroups:1"] = "prod-net"
    t = render_plan(failover, timezone.utc, T0).plain
    assert "Failover network: prod-net → dr-isolated" in t
    assert f"Failover network: {SRC}:portgroups:2 → none" in t
    unnamed = shop_plan()
    unnamed.names = {}          # a plan made before names were kept: the URNs, not nothing
    t = render_plan(unnamed, timezone.utc, T0).plain
    assert f"Rehearsal network: {ISOLATED}" in t and f"Datastore: {PROD_SSD} → {DR_SSD}" in t


def test_long_vm_names_whole_when_the_screen_has_room():
    run = live_stages()[-1]
    for v in run.vms:
        v.vm_name = f"{v.vm_name}-production-erp"             # 23-24 characters
    wide = render_run(run, shop_plan(), T0 + 900, timezone.utc, 156).plain
    assert "app-03-production-erp " in wide and "Tools not running after 600 s" in wide
    narrow = render_run(run, shop_plan(), T0 + 900, timezone.utc, 76).plain
    assert "app-03-production-erp" not in narrow                  # cut to what fits beside the times
    assert all(len(line) <= 76 for line in narrow.splitlines()) and "1 min 35 s" in narrow
    # the plans list counts the boot groups that have VMs, "others" included, as `fctui dr plan list` does
    assert " 3 grp " in plan_line(shop_plan(), None, T0, timezone.utc, 80).plain


def test_rendering_is_pure():
    run = live_stages()[-1]
    t = render_run(run, shop_plan(), T0 + 900, timezone.utc, 120).plain
    assert "Total RTO —" in t and "web-01" in t
    line = plan_line(shop_plan(), run, T0 + 900, timezone.utc, 80).plain
    assert len(line) <= 80 and "failed" in line


# --- snapshots -----------------------------------------------------------------------------------------

def _snap(stage: int) -> tuple[DrApp, Any]:
    store = store_with_plans()
    store.save_run(finished_rehearsal())
    store.save_run(live_stages()[stage])
    app = DrApp(store, T0 + 180)

    async def run_before(pilot: Any) -> None:
        await until(pilot, lambda: screen(app).loaded)
        await pilot.press("down")
        await until(pilot, lambda: screen(app).selected == "shop" and "db-01" in body(app))
        await app.workers.wait_for_complete()     # no read still on its way to redraw
        # the footer is recomposed after the bindings change: wait until r shows the plan's state
        dimmed = screen(app).check_action("rehearse", ()) is not True
        await until(pilot, lambda: any(k.action == "rehearse" and k.has_class("-disabled") == dimmed
                                       for k in screen(app).query(FooterKey)))
        await pilot.pause()
    return app, run_before


# live and finished (errors under their VM at 80 columns, beside it when wide) at both sizes
@pytest.mark.parametrize(("stage", "size"), [(1, SIZES[0]), (1, SIZES[1]), (2, SIZES[0]), (2, SIZES[1])],
                         ids=["live-80x24", "live-160x48", "finished-80x24", "finished-160x48"])
def test_dr_rehearsal_snapshot(snap_compare, size, stage):
    app, run_before = _snap(stage)
    assert snap_compare(app, terminal_size=size, run_before=run_before)


async def test_the_console_opens_it_with_its_key():
    from fctui.tui.screens import MainScreen
    from fctui.tui.testing import make_app, wait_until
    store_with_plans()
    app = make_app(vms=5)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen))
        assert any(b.id == "dr.show" for b in MainScreen.BINDINGS)
        await pilot.press("X")
        await wait_until(pilot, lambda: isinstance(app.screen, DrScreen) and app.screen.loaded)
        assert [p.name for p in app.screen.plans] == ["hr", "shop"]    # the data dir's store
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen))
