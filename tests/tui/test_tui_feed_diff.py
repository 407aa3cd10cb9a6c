"""The refresh stream sends only what the console does not have yet: every VM, row and verdict on the
first refresh, nothing on a refresh where nothing changed, exactly the changed VM when one changes.
What it remembers between refreshes are fingerprints, not the models; and what crosses the pipe
unpickles to equal models and verdicts."""

from __future__ import annotations

import pickle

import httpx

from fctui.inventory.gather import gather
from fctui.inventory.query import row_from_vm
from fctui.rules.engine import Assessment, Finding, confirmed
from fctui.vrm import VrmClient
from fctui.sim import Simulator, create_app
from fctui.tui.feedproc import dumps, slim_event
from fctui.tui.source import (Complete, ConnectSpec, InventoryFeed, VmPage, assessment_fingerprint,
                              row_fingerprint, vm_fingerprint)


def feed_for(sim: Simulator) -> InventoryFeed:
    return InventoryFeed(ConnectSpec(url="http://vrm.sim", user=sim.config.user, password=sim.config.password,
                                     transport=httpx.ASGITransport(app=create_app(sim))))


async def one_refresh(feed: InventoryFeed) -> tuple[list, list, Complete]:
    vms: list = []
    rows: list = []
    complete = None
    async for ev in feed.refresh():
        if isinstance(ev, VmPage):
            vms += ev.vms
            rows += ev.rows
        elif isinstance(ev, Complete):
            complete = ev
    assert complete is not None
    return vms, rows, complete


async def test_a_refresh_sends_only_what_changed(sim: Simulator) -> None:
    feed = feed_for(sim)
    try:
        vms, rows, done = await one_refresh(feed)
        n = len(done.keys)
        assert n > 0 and {vm.urn for vm in vms} == done.keys
        assert {r.key for r in rows} == done.keys
        # every verdict is either sent as final or confirmed (its provisional one stands)
        assert set(done.assessments) | done.confirmed == done.keys
        assert not set(done.assessments) & done.confirmed
        # the remembered state holds ints, not the models
        assert all(isinstance(x, int) for fp in feed._sent.values() for x in fp[:2])

        vms, rows, done = await one_refresh(feed)
        assert len(done.keys) == n
        assert (vms, rows, done.assessments) == ([], [], {})

        changed = next(v for v in sim.vms.values() if not v.is_template)
        changed.description = "renamed by the test"
        sim.touch()   # as the simulator's own changes do: its listing cache is dropped
        vms, rows, done = await one_refresh(feed)
        assert [vm.description for vm in vms] == ["renamed by the test"]
        assert [r.key for r in rows] == [vms[0].urn]   # a changed VM comes with its row
        assert vms[0].urn.endswith(":vms:" + changed.id)

        changed.name = changed.name + "-x"
        sim.touch()
        vms, rows, done = await one_refresh(feed)
        assert [vm.name for vm in vms] == [changed.name]
        assert [r.name for r in rows] == [changed.name]
    finally:
        await feed.aclose()


async def test_fingerprints_see_every_field_and_survive_the_pipe(sim: Simulator) -> None:
    feed = feed_for(sim)
    try:
        events = [ev async for ev in feed.refresh()]
    finally:
        await feed.aclose()
    page = next(ev for ev in events if isinstance(ev, VmPage) and ev.vms and any(v.disks for v in ev.vms))
    vm = next(v for v in page.vms if v.disks)
    row = next(r for r in page.rows if r.key == vm.urn)
    a = page.assessments[vm.urn]

    got = pickle.loads(dumps(("event", slim_event(page))))[1]
    vm2 = next(v for v in got.vms if v.urn == vm.urn)
    row2 = next(r for r in got.rows if r.key == vm.urn)
    a2 = got.assessments[vm.urn]
    assert vm2 == vm and row2 == row
    assert vm_fingerprint(vm2) == vm_fingerprint(vm)
    assert row_fingerprint(row2) == row_fingerprint(row)
    assert isinstance(a2, Assessment) and a2.findings == a.findings
    assert (a2.urn, a2.name, a2.verdict, a2.kinds_mask, a2.provisional) == (
        a.urn, a.name, a.verdict, a.kinds_mask, a.provisional)
    assert [f.remediation for f in a2.findings] == [f.remediation for f in a.findings]
    assert assessment_fingerprint(a2) == assessment_fingerprint(a)

    before = vm_fingerprint(vm2)
    vm2.disks[0].quantity_gb = (vm2.disks[0].quantity_gb or 0) + 1
    assert vm_fingerprint(vm2) != before
    a2.findings = a2.findings + [Finding("disk-ide", "blocking", "a new finding", "")]
    assert assessment_fingerprint(a2) != assessment_fingerprint(a)
    assert assessment_fingerprint(None) is None


async def test_confirmed_verdicts_and_rows_are_the_final_ones(sim: Simulator) -> None:
    """A first refresh sends the final verdict and row only where they differ from the provisional
    ones; for the others it names them confirmed. What a consumer derives from that, through the pipe,
    equals what the full gather of the same site says, VM by VM."""
    feed = feed_for(sim)
    vms: dict = {}
    verdicts: dict = {}
    rows: dict = {}
    done = None
    try:
        async for ev in feed.refresh():
            ev = pickle.loads(dumps(("event", slim_event(ev))))[1]   # as the console gets it
            if isinstance(ev, VmPage):
                vms.update((v.urn, v) for v in ev.vms)
                verdicts.update(ev.assessments)
                rows.update((r.key, r) for r in ev.rows)
            elif isinstance(ev, Complete):
                done = ev
    finally:
        await feed.aclose()
    assert done is not None
    assert len(done.confirmed) > len(done.assessments) > 0   # most stand; some changed (snapshots …)
    assert all(rows[u].provisional and verdicts[u].provisional for u in done.confirmed)
    for urn in done.confirmed:
        verdicts[urn] = confirmed(verdicts[urn])
        rows[urn] = rows[urn].confirmed()
    verdicts.update(done.assessments)

    async with VrmClient("http://vrm.sim", sim.config.user, sim.config.password,
                         transport=httpx.ASGITransport(app=create_app(sim))) as client:
        inv = await gather(client, helper=False)
    final = {a.urn: a for a in inv.assessments}
    assert set(final) == set(verdicts) == set(rows) == done.keys
    for urn, a in final.items():
        assert assessment_fingerprint(verdicts[urn]) == assessment_fingerprint(a), urn
        assert not rows[urn].provisional
        assert rows[urn] == row_from_vm(vms[urn], a, provisional=False), urn
