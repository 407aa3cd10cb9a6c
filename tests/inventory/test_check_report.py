"""The JSON report of a big site is put together from VMs rendered while the VRM is still being
read, and the VMs assessed before the volume listing is in are assessed again only where it
matters: both give exactly what rendering and assessing everything at the end gives."""

from __future__ import annotations

import json

import httpx
import pytest

from fctui.inventory import report as report_mod
from fctui.inventory.report import render_json, report_document, vm_json_text
from fctui.inventory.gather import gather
from fctui.rules import catalog as C
from fctui.rules.engine import Assessment, Finding, assess
from fctui.rules.facts import BackupKnowledge
from fctui.sim import SimConfig, Simulator, create_app
from fctui.vrm import VrmClient


def _plain(a: Assessment) -> str:
    return json.dumps(a.to_json(), ensure_ascii=False, separators=(",", ":"))


def test_vm_text_is_what_json_dumps_writes() -> None:
    f1 = Finding("snapshot-limit", C.BLOCKER, 'has 32 "snapshots"\n\\ max', "delete some", ["disk \u00e9 1"])
    f2 = Finding("tools-missing", C.WARNING, "no Tools \U0001F600", "install them")
    odd = [Assessment("urn:sites:1:vms:i-1", 'vm "quoted" \u4e2d\u6587\t', C.VERDICT_BLOCKED, 0, [f1, f2]),
           Assessment("urn:sites:1:vms:i-2", "plain", C.VERDICT_BLOCKED, 0, [f1, f2]),   # same content: shared
           Assessment("urn:sites:1:vms:i-3", "", C.VERDICT_READY, 15, [], provisional=True),
           Assessment("urn:sites:1:vms:i-4", "\x00\x1f", C.VERDICT_READY, 15, [])]
    for _ in range(2):   # second time from the shared tails
        for a in odd:
            assert vm_json_text(a) == _plain(a)
    # a finding differing in one disk is not confused with another
    f3 = Finding("snapshot-limit", C.BLOCKER, f1.message, f1.remediation, ["disk \u00e9 2"])
    b = Assessment("urn:sites:1:vms:i-5", "x", C.VERDICT_BLOCKED, 0, [f3, f2])
    assert vm_json_text(b) == _plain(b)


@pytest.fixture(scope="module")
def big_sim() -> Simulator:
    return Simulator(SimConfig(vms=2100, seed=3))   # above the compact-report threshold


async def test_big_report_from_prerendered_vms_is_identical(big_sim: Simulator) -> None:
    assert len(big_sim.vms) > report_mod._COMPACT_ABOVE
    async with VrmClient("http://vrm.sim", big_sim.config.user, big_sim.config.password,
                         transport=httpx.ASGITransport(app=create_app(big_sim))) as c:
        inv = await gather(c, concurrency=8, render_vm=vm_json_text)
    assert inv.vm_json is not None and len(inv.vm_json) == len(inv.assessments)
    assert inv.vm_json == [_plain(a) for a in inv.assessments]
    for only, rule in ((None, None), (C.VERDICT_BLOCKED, None), (None, "snapshot-limit"),
                       (C.VERDICT_READY, "template")):
        fast = render_json(inv, vrm_url="http://x", only=only, rule=rule)
        inv.vm_json, pre = None, inv.vm_json
        try:
            slow = render_json(inv, vrm_url="http://x", only=only, rule=rule)
        finally:
            inv.vm_json = pre
        assert fast == slow
        doc = json.loads(fast)
        assert doc == json.loads(json.dumps(report_document(inv, vrm_url="http://x", only=only, rule=rule)))
    assert json.loads(render_json(inv))["total_vms"] == len(inv.assessments)


async def test_assessed_early_then_again_equals_assessing_at_the_end(client: VrmClient, sim: Simulator) -> None:
    """Every final assessment is what the rules say of the final facts; the VMs with snapshot
    volumes and those backed up before carry their trees."""
    backed = [vm for vm in sim.vms.values() if not vm.is_template][:3]
    know = {sim.vm_urn(vm): BackupKnowledge(last_backup_time=1.0) for vm in backed}
    inv = await gather(client, knowledge=know, render_vm=vm_json_text)
    assert [assess(f).to_json() for f in inv.facts] == [a.to_json() for a in inv.assessments]
    assert inv.vm_json == [_plain(a) for a in inv.assessments]
    with_trees = {f.vm.urn for f in inv.facts if f.snapshot_tree is not None}
    assert set(know) <= with_trees
    assert any(a.has("snapshot-limit") for a in inv.assessments)
    assert all(f.snapshots_known for f in inv.facts)


async def test_without_a_volume_listing_every_vm_is_assessed_again(client: VrmClient,
                                                                    control: httpx.AsyncClient) -> None:
    r = await control.post("/sim/faults", json={"path": "/volumes$", "method": "GET", "status": 403,
                                                "errorCode": "10000003"})
    r.raise_for_status()
    inv = await gather(client, render_vm=vm_json_text)
    assert any("volumes not read" in g for g in inv.gaps)
    assert inv.facts and not any(f.snapshots_known for f in inv.facts)
    assert [assess(f).to_json() for f in inv.facts] == [a.to_json() for a in inv.assessments]
    assert inv.vm_json == [_plain(a) for a in inv.assessments]
