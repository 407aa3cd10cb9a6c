"""Several VRMs in one console (issue #19 item 1): one feed per site, rows keyed by URN, a site column
and ``site:`` filter, per-site counts, the tree from the VRMs down, and a VRM that stops answering marked
stale on its own while the other stays live. Two simulators in-process (site_index 0 and 1); "stopping"
one makes its transport refuse every connection, as a VRM gone away does."""

from __future__ import annotations

import pytest
from textual.widgets import Tree

from fctui.inventory.query import parse_filter
from fctui.sim import SimConfig, Simulator
from fctui.tui.screens import TreeScreen
from fctui.tui.testing import make_sites_app, screen_text, wait_loaded, wait_until
from fctui.tui.widgets.summary import SummaryBar
from fctui.tui.widgets.vmtable import VmTable, cell_text, layout_columns
from fctui.vrm.urn import site_id

VMS = 12


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))


def two_sims(vms: int = VMS) -> list[Simulator]:
    return [Simulator(SimConfig(vms=vms, seed=1, site_index=i)) for i in range(2)]


def test_site_column_only_with_several_sites():
    one = layout_columns(80, 20, 40)
    two = layout_columns(80, 20, 40, site=True)
    assert "site" not in [c.id for c, _ in one.columns]
    assert [c.id for c, _ in two.columns][0] == "site"


def test_site_filter_is_exact():
    from fctui.inventory.query import VmRow
    rows = [VmRow(f"urn:sites:S{i}:vms:i-{i}", f"vm{i}", "running", "h", "c", 1, 1, "running", "ready", "",
                  site=s) for i, s in enumerate(["a", "ab", "b"])]
    assert [r.site for r in rows if parse_filter("site:a").matches(r, frozenset())] == ["a"]
    assert [r.site for r in rows if parse_filter("!site:a").matches(r, frozenset())] == ["ab", "b"]
    assert cell_text(rows[2], "site") == "b"


async def test_two_sites_one_stopped_other_stays_live():
    sims = two_sims()
    app = make_sites_app(sims)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_loaded(pilot, app)
        a, b = app.sites
        # every VM of both VRMs, each row of its own site (URNs are unique across sites)
        n = [len(sim.vms) for sim in sims]
        total = n[0] + n[1]
        assert len(app.store) == total
        assert [sum(1 for r in app.store.rows.values() if r.site == s) for s in "ab"] == n
        for r in app.store.rows.values():
            assert site_id(r.key) == (a.site.id if r.site == "a" else b.site.id)
        table = app.screen.query_one(VmTable)
        assert table.show_site and "Site" in screen_text(app)
        # per-site counts in the summary bar, the total on the status line
        bar = app.screen.query_one(SummaryBar)
        assert bar.items[:2] == [("site:a", n[0]), ("site:b", n[1])]
        assert f"{total} VMs on 2 VRMs" in screen_text(app)
        # site: filter
        app.set_filter("site:b", update_input=True)
        await wait_until(pilot, lambda: app.shown_filter == "site:b" and table.row_count == n[1])
        assert all(app.store.rows[k].site == "b" for k in table.keys)
        app.set_filter("", update_input=True)
        await wait_until(pilot, lambda: app.shown_filter == "" and table.row_count == total)

        # site b goes away; a VM of site a changes meanwhile
        app.transports[1].down = True
        vm = next(iter(sims[0].vms.values()))
        vm.name = "renamed-while-b-is-down"
        sims[0].touch()     # a visible change (the simulator caches its listings until one)
        before = a.refresh_count
        app.refresh_now()
        await wait_until(pilot, lambda: bool(b.stale_reason) and a.refresh_count > before)
        await wait_until(pilot, lambda: not app._view_running and not app._view_dirty)
        await pilot.pause()
        assert a.state == "live" and not a.stale_reason
        assert b.state == "stale" and "connection refused" in b.stale_reason
        # b's rows are kept and marked stale, a's are live (the renamed VM shows)
        assert len(app.store) == total
        assert "renamed-while-b-is-down" in {r.name for r in app.store.rows.values()}
        assert table.stale_sites == {"b"}
        banner = app.screen.query_one("#banner")
        assert banner.display
        text = screen_text(app)
        assert "STALE  VRM b unreachable" in text and "VRM a" not in text
        assert bar.stale_sites == {"b"}

        # datastores of both VRMs, each with its site
        await pilot.press("D")
        await pilot.pause()
        ds = app.screen.query_one("#ds-table")
        assert ds.row_count == len(app.datastores) == len(a.datastores) + len(b.datastores)
        assert {ds.get_row_at(i)[-1] for i in range(ds.row_count)} == {"a", "b"}
        await pilot.press("escape")
        await pilot.pause()

        # the tree starts at the VRMs, each with its state; clusters under each
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, TreeScreen))
        tree = app.screen.query_one(Tree)
        vrms = list(tree.root.children)
        assert [str(n.label).split()[:2] for n in vrms] == [["VRM", "a"], ["VRM", "b"]]
        assert "live" in str(vrms[0].label) and "stale" in str(vrms[1].label)
        assert all(n.children for n in vrms)
        # hosts of a cluster load from that cluster's own VRM (a's, while b is down)
        cluster = vrms[0].children[0]
        cluster.expand()
        await wait_until(pilot, lambda: any((c.data or {}).get("kind") == "host" for c in cluster.children))
        # enter on a VRM filters on its site. The hosts just added moved VRM b down a few lines; the tree
        # renumbers its lines only when they are next read (a render, or last_line here), and move_cursor
        # goes by the node's line number, so read them first (on a busy machine no render came between)
        assert tree.last_line >= len(vrms) + len(cluster.children)
        tree.move_cursor(vrms[1])
        assert tree.cursor_node is vrms[1]
        await pilot.press("enter")
        await wait_until(pilot, lambda: not isinstance(app.screen, TreeScreen) and app.shown_filter == "site:b")

        # b comes back: its rows are live again and the banner goes
        app.transports[1].down = False
        before_b = b.refresh_count
        app.refresh_now()
        await wait_until(pilot, lambda: b.refresh_count > before_b)
        await pilot.pause()
        assert not b.stale_reason and not banner.display and table.stale_sites == frozenset()


async def test_actions_use_the_vms_own_site():
    """Snapshot trees are read from the VM's own VRM: with site a down, a VM of b still gets its tree
    and a VM of a gets an error (never b's answer)."""
    sims = two_sims(4)
    app = make_sites_app(sims)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        a, b = app.sites
        vm_a = next(k for k, r in app.store.rows.items() if r.site == "a")
        vm_b = next(k for k, r in app.store.rows.items() if r.site == "b")
        assert app.feed_of(vm_a) is a.feed and app.feed_of(vm_b) is b.feed
        assert app.spec_of(vm_b) is b.spec
        app.transports[0].down = True
        for k in (vm_a, vm_b):
            app.snapshots.pop(k, None)
            app.snapshot_errors.pop(k, None)
        await app._read_snapshot_tree(vm_b, app.vms[vm_b].uri)
        await app._read_snapshot_tree(vm_a, app.vms[vm_a].uri)
        await wait_until(pilot, lambda: vm_b in app.snapshots and vm_a in app.snapshot_errors)
        assert vm_b not in app.snapshot_errors
        # a backup is planned on the VMs' own VRM (b answers while a is down); one job takes one VRM
        from fctui.jobs.model import JobError
        from fctui.tui.jobs_screen import make_plan, spec_for
        plan = await make_plan(app, [vm_b])
        assert [vp.vm_urn for vp in plan.vms] == [vm_b]
        assert spec_for(app, vm_b) is b.spec
        with pytest.raises(JobError, match=r"several VRMs \(a, b\)"):
            await make_plan(app, [vm_a, vm_b])


def test_console_opens_every_profile_named(tmp_path, monkeypatch):
    """``fctui --profile a,b``: one spec per VRM, labelled by its profile, each with its own password
    (FCTUI_PASSWORD_<LABEL> wins for its site); one profile gives one spec as before."""
    from fctui.cli import build_parser
    from fctui.cli.console import specs_from_args
    from fctui.config import load_config
    cfg = tmp_path / "cfg"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text('[profiles.a]\nvrm = "https://vrm-a:7443"\nuser = "ops"\n\n'
                                     '[profiles.b]\nvrm = "https://vrm-b:7443"\nuser = "ops"\n')
    monkeypatch.setenv("FCTUI_PASSWORD", "shared")
    monkeypatch.setenv("FCTUI_PASSWORD_B", "only-b")
    specs = specs_from_args(build_parser().parse_args(["--profile", "a,b"]), load_config())
    assert [(s.label, s.url, s.password) for s in specs] == [
        ("a", "https://vrm-a:7443", "shared"), ("b", "https://vrm-b:7443", "only-b")]
    assert [s.label for s in specs_from_args(build_parser().parse_args(["--profile", "b"]), load_config())] == ["b"]
    assert build_parser().parse_args(["demo", "--sites", "2"]).sites == 2


def test_a_policy_cannot_select_by_site():
    """Only the console knows a row's site: a policy service (one VRM) would select nothing by site:."""
    from fctui.jobs.policy import Policy, PolicyError, Schedule
    with pytest.raises(PolicyError, match="site:a"):
        Policy("nightly", "re:^db- site:a", Schedule.parse("daily 01:00"), 86400.0)
    Policy("nightly", "re:^db-", Schedule.parse("daily 01:00"), 86400.0)


async def test_a_vrm_down_from_the_start_hides_nothing():
    sims = two_sims(4)
    app = make_sites_app(sims)
    app.transports[1].down = True
    async with app.run_test(size=(80, 24)) as pilot:
        a, b = app.sites
        await wait_until(pilot, lambda: a.refresh_count >= 1 and bool(b.stale_reason))
        await wait_until(pilot, lambda: not app._view_running and not app._view_dirty)
        await pilot.pause()
        assert len(app.store) == len(sims[0].vms) and {r.site for r in app.store.rows.values()} == {"a"}
        assert b.state == "stale" and a.state == "live"
        text = screen_text(app)
        assert "STALE  VRM b unreachable" in text and "a · b stale" in text
        assert app.screen.query_one(SummaryBar).items[:2] == [("site:a", len(sims[0].vms)), ("site:b", 0)]


async def test_backup_of_two_sites_is_one_reviewed_job_per_vrm():
    """Marked VMs of a and b: a's plan is reviewed first (a's VM only), then b's; cancelling both
    submits nothing and leaves the inventory."""
    from fctui.tui.review_screen import ReviewScreen
    from fctui.tui.screens import MainScreen
    sims = two_sims(4)
    app = make_sites_app(sims)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        vm_a = next(k for k, r in app.store.rows.items() if r.site == "a" and r.verdict == "ready")
        vm_b = next(k for k, r in app.store.rows.items() if r.site == "b" and r.verdict == "ready")
        app.store.marks.update({vm_a, vm_b})
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, ReviewScreen))
        assert [vp.vm_urn for vp in app.screen.plan.vms] == [vm_a]
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ReviewScreen)
                         and [vp.vm_urn for vp in app.screen.plan.vms] == [vm_b])
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen))
