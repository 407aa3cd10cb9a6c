"""The restore walkthrough into another site (issue 19): the site is picked after the new VM's name, then
each disk's datastore (only compatible ones offered), each network's port group (or none) and the
location; defaults from the site pair's remembered mapping, else the suggestions; the pre-checks name
every unmapped item. SVG snapshots of the mapping step at 80x24 and 160x48.

Two simulators of different sites in-process (tests/sites.py), real backups of one three-disk VM of site
A with a frozen wall clock and fixed point ids (stable pictures), a real SiteMappingStore in a tmp dir.
Nothing is restored: the walkthrough stops at the pre-checks (the engine's own tests restore across).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any, Callable

import pytest
from textual.app import App

from fctui.jobs.journal import MemoryJournal
from fctui.jobs.model import JobRecord
from fctui.jobs.planner import build_plan
from fctui.jobs.runner import BackupRunner, Reporter
from fctui.jobs.sitemap import SiteMapping, SiteMappingStore
from fctui.repo import Repository
from fctui.rules import catalog as C
from fctui.sim import OffsetClock, Simulator
from fctui.tui.restore_wizard import RestoreContext, RestoreSite, RestoreWizard
from fctui.vrm.urn import site_id
from tests.sites import asgi_client, site_config
from tests.tui.test_tui_restore_wizard import FrozenTime, _isolated, fast_settings  # noqa: F401 (an autouse fixture)
from tests.tui.test_tui_snapshots import SIZES

T0 = 1_780_000_000.0


class SiteA:
    """Site A with one restore point of a three-disk VM that has NICs (made once for the module)."""

    def __init__(self, tmp: Path, mp: pytest.MonkeyPatch) -> None:
        import fctui.jobs.runner as runner_mod
        import fctui.repo.repository as repo_mod
        self.sim = Simulator(site_config(0, edge_fill=0.005), clock=OffsetClock(start=T0))
        self.repo_path = tmp / "repo"
        counter = itertools.count(1)
        mp.setattr(runner_mod, "time", FrozenTime(T0))
        mp.setattr(repo_mod, "secrets",
                   type("S", (), {"token_hex": staticmethod(lambda n=4: f"{next(counter):0{2 * n}x}")}))
        self.vm_urn = next(u for u in self.sim.edge_cases["ready"]
                           if len(self.sim.vms[u.rsplit(":", 1)[1]].disks) > 1
                           and self.sim.vms[u.rsplit(":", 1)[1]].nics)

        async def make() -> None:
            repo = Repository.open(self.repo_path)
            async with asgi_client(self.sim) as c:
                plan = await build_plan(c, [self.vm_urn], repo)
                job = JobRecord(id="j0", targets=[self.vm_urn])
                runner = BackupRunner(c, repo, journal=MemoryJournal(), settings=fast_settings())
                try:
                    await runner.run(job, plan, Reporter(job))
                finally:
                    runner.close()
                assert job.state == "succeeded", job.error
            repo.close()
        asyncio.run(make())
        self.point = Repository.open(self.repo_path).points(self.vm_urn)[0]


@pytest.fixture(scope="module")
def site_a(tmp_path_factory: pytest.TempPathFactory) -> SiteA:
    with pytest.MonkeyPatch.context() as mp:
        return SiteA(tmp_path_factory.mktemp("site-a"), mp)


class World:
    def __init__(self, a: SiteA, tmp: Path, *, broken_b: bool = False) -> None:
        self.a = a
        self.b = Simulator(site_config(1, edge_fill=0.005), clock=OffsetClock(start=T0))
        if broken_b:   # no datastore of site B can take a disk: every disk stays unmapped
            for ds in self.b.datastores.values():
                ds.status = "FAULTY"
        self.store = SiteMappingStore(tmp / "site-mappings.json")

    def context(self) -> RestoreContext:
        client_a = asgi_client(self.a.sim)
        return RestoreContext(client_a, Repository.open(self.a.repo_path), journal=MemoryJournal(),
                              mappings=self.store,
                              sites=[RestoreSite("site-01", client_a), RestoreSite("site-02", asgi_client(self.b))])

    def app(self) -> "WizardApp":
        return WizardApp(lambda: RestoreWizard(self.context(), self.a.vm_urn, clock=lambda: T0 + 7200))


class WizardApp(App[None]):
    def __init__(self, make: Callable[[], RestoreWizard]) -> None:
        super().__init__()
        self.make = make
        self.animation_level = "none"

    def on_mount(self) -> None:
        self.push_screen(self.make())


def wiz(app: App) -> RestoreWizard:
    assert isinstance(app.screen, RestoreWizard)
    return app.screen


async def until(pilot: Any, cond: Callable[[], bool], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached"
        await pilot.pause(0.02)


async def settle(pilot: Any, app: App) -> None:
    await until(pilot, lambda: not wiz(app).busy)
    await pilot.pause()


async def to_mapping(pilot: Any, app: App) -> RestoreWizard:
    """Newest point, new VM, its default name, site-02: the mapping step's first disk."""
    await settle(pilot, app)
    for key in ("enter", "enter", "enter"):          # point, "New VM", the name
        await pilot.press(key)
        await settle(pilot, app)
    w = wiz(app)
    assert w.step == "target" and w.picking_site
    await pilot.press("down", "enter")                # site-02
    await settle(pilot, app)
    assert w.step == "map" and w.tsite is not None and w.map_phase == "disks", w.error
    return w


def options(app: App) -> tuple[list[str], str, list[str]]:
    """The option ids offered, the highlighted one, and the options' text."""
    opts = wiz(app).query_one("#wiz-options")
    ids = [opts.get_option_at_index(i).id for i in range(opts.option_count)]
    texts = [str(opts.get_option_at_index(i).prompt) for i in range(opts.option_count)]
    return ids, ids[opts.highlighted], texts


# --- pilot ---------------------------------------------------------------------------------------------

async def test_mapping_offers_compatible_choices_and_uses_the_remembered_default(site_a: SiteA, tmp_path: Path):
    world = World(site_a, tmp_path)
    point = site_a.point
    first = point.disks[0]
    app = world.app()
    async with app.run_test(size=(120, 40)) as pilot:
        w = await to_mapping(pilot, app)
        ts = w.tsite
        stores = {ds.urn: ds for ds in ts.datastores}
        host_arch = {h.urn: C.arch_family(h.arch) for h in ts.hosts}
        arch = C.arch_family(point.vm_config.get("arch") or "")
        ids, highlighted, texts = options(app)
        assert ids and all(i in stores for i in ids)                         # only site B's datastores
        for i in ids:                                                        # of the disk's class and arch
            assert C.storage_class(stores[i].storage_type) == C.storage_class(first.storage_type)
            assert not arch or arch in {host_arch.get(h) for h in stores[i].hosts}
        assert highlighted == ts.suggested.datastores[first.datastore_urn]  # no remembered one: the suggestion
        assert "(suggested)" in texts[ids.index(highlighted)]
        # another compatible one that a host reaches with the other disks' suggested datastores
        others = [set(stores[ts.suggested.datastores[d.datastore_urn]].hosts) for d in point.disks[1:]]
        remembered = next((i for i in ids if i != highlighted
                           and all(set(stores[i].hosts) & h for h in others)), highlighted)
        assert remembered != highlighted       # the remembered one must not be the suggestion itself
    # the site pair's remembered mapping wins over the suggestion next time
    world.store.save(SiteMapping(site_id(point.vm_urn), ts.id, datastores={first.datastore_urn: remembered}))
    app = world.app()
    async with app.run_test(size=(120, 40)) as pilot:
        w = await to_mapping(pilot, app)
        ids, highlighted, texts = options(app)
        assert highlighted == remembered and "(remembered)" in texts[ids.index(remembered)]
        for _ in point.disks:                                                # the defaults for every disk
            await pilot.press("enter")
            await settle(pilot, app)
        assert w.map_phase == "nics"
        ids, highlighted, texts = options(app)
        assert ids[-1] == "pg:" and "none" in texts[-1]                       # a NIC may be left out
        assert {i[3:] for i in ids[:-1]} == {pg.urn for pg in w.tsite.port_groups}
        src = w.map_nics[0][0]
        assert highlighted == f"pg:{w.tsite.suggested.port_groups[src]}"     # dr-prod-net for prod-net
        await pilot.press(*["down"] * (len(ids) - 1 - ids.index(highlighted)), "enter")   # none
        await settle(pilot, app)
        assert w.port_groups[src] == ""
        while w.step == "map":                                               # the rest: defaults
            await pilot.press("enter")
            await settle(pilot, app)
        assert w.step == "checks" and w.plan is not None, w.error
        req = w.request()
        assert req.datastores[first.volume_urn] == remembered and req.port_groups[src] == ""
        assert not w.plan.blocked, [f.message for f in w.plan.findings]
        await pilot.press("enter")                                            # the review names the site
        await settle(pilot, app)
        assert w.step == "review" and f"Into another site: {w.site.label}\n" in str(
            w.query_one("#wiz-body").render())
        await pilot.press("enter")
        await settle(pilot, app)
        assert w.step == "confirm" and f"will be created on site {w.site.label};" in str(
            w.query_one("#wiz-body").render())
        w._remember()                                                         # as the start does
        saved = world.store.get(site_id(point.vm_urn), w.tsite.id)
        assert saved is not None and saved.port_groups[src] == "" and saved.datastores[first.datastore_urn] == remembered


async def test_checks_name_every_unmapped_item(site_a: SiteA, tmp_path: Path):
    world = World(site_a, tmp_path, broken_b=True)
    app = world.app()
    async with app.run_test(size=(120, 40)) as pilot:
        w = await to_mapping(pilot, app)
        for _ in site_a.point.disks:
            ids, _, texts = options(app)
            assert ids == ["unmapped"]                 # nothing fits: nothing else is offered
            await pilot.press("enter")
            await settle(pilot, app)
        while w.step == "map":
            await pilot.press("enter")
            await settle(pilot, app)
        assert w.step == "checks" and w.plan is not None and w.plan.blocked
        body = str(w.query_one("#wiz-body").render())
        assert "restore-unmapped" in body
        for d in site_a.point.disks:
            assert d.disk_name in body
        await pilot.press("escape")                     # back to the location, nothing changed
        await settle(pilot, app)
        assert w.step == "map" and w.map_phase == "location"


# --- snapshots -----------------------------------------------------------------------------------------

# the disks and the networks, each at both sizes
@pytest.mark.parametrize(("phase", "size"), [("disks", SIZES[0]), ("disks", SIZES[1]), ("nics", SIZES[0]),
                                             ("nics", SIZES[1])],
                         ids=["disks-80x24", "disks-160x48", "nics-80x24", "nics-160x48"])
def test_mapping_step_snapshot(snap_compare, size, phase, site_a: SiteA, tmp_path: Path):
    world = World(site_a, tmp_path)
    app = world.app()

    async def run_before(pilot: Any) -> None:
        w = await to_mapping(pilot, app)
        while phase == "nics" and w.map_phase == "disks":
            await pilot.press("enter")
            await settle(pilot, app)
        app.clear_notifications()
        await until(pilot, lambda: not app.screen.query("Toast"))  # the cleared toasts are gone
    assert snap_compare(app, terminal_size=size, run_before=run_before)


async def test_the_multi_site_console_offers_its_vrms_as_targets():
    """In the console with two VRMs: the VM's own VRM is the wizard's, both are targets, each called on
    its own feed; the DR screen finds a plan's target site by its label."""
    from fctui.tui.dr_screen import target_spec
    from fctui.tui.restore_wizard import context_for_app
    from fctui.tui.testing import make_sites_app, wait_loaded
    from tests.sites import two_site_sims
    app = make_sites_app(list(two_site_sims(vms=4)), ["a", "b"])
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_loaded(pilot, app)
        vm_b = next(urn for urn in app.vms if site_id(urn) == app.sites[1].site.id)
        ctx = context_for_app(app, vm_b)
        try:
            assert [s.label for s in ctx.sites] == ["a", "b"]
            assert [s.site_uri for s in ctx.sites] == [st.site.uri for st in app.sites]
            assert (await ctx.call(ctx.client.sites()))[0].urn == app.sites[1].site.urn   # the VM's own VRM
            for st, rs in zip(app.sites, ctx.sites):
                assert (await rs.call(rs.client.sites()))[0].urn == st.site.urn
        finally:
            ctx.repo.close()
        assert target_spec(app, "b") is app.sites[1].spec
