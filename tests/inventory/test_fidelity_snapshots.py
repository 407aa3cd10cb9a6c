"""Leftover snapshots and the snapshot limit are found without trusting ``volumeUseType == 4``
(issue #14 item 7; vrm-api.md §16: no public client shows a VRM setting it for VM snapshots).

The simulator's ``volume_use_type_snapshots=False`` behaves as a VRM that never sets it.
"""

from __future__ import annotations

from typing import Any

import pytest

from fctui.inventory.gather import gather
from fctui.rules.facts import BackupKnowledge
from fctui.sim import SimConfig, Simulator
from fctui.vrm import VrmClient


@pytest.fixture
def sim_config() -> Any:
    return SimConfig(vms=30, seed=1, sector_of_block=128, time_scale=100.0, volume_use_type_snapshots=False)


def _urn(sim: Simulator, prefix: str) -> str:
    return next(sim.vm_urn(v) for v in sim.vms.values() if v.name.startswith(prefix) and not v.gone)


async def test_without_volume_use_type_4_leftovers_and_the_limit_are_still_found(
        client: VrmClient, sim: Simulator) -> None:
    inv = await gather(client, helper=False)
    by = {a.urn: a for a in inv.assessments}
    assert by[_urn(sim, "edge-snapshot-limit-01")].has("snapshot-limit")
    assert by[_urn(sim, "edge-snapshot-limit-near-01")].has("snapshot-limit-near")
    assert by[_urn(sim, "edge-leftover-backup-snapshot-01")].has("leftover-backup-snapshot")
    assert not any(a.provisional for a in inv.assessments)
    assert any("volumeUseType" in g for g in inv.gaps), inv.gaps
    assert inv.trees_fetched == len(inv.facts)


async def test_trees_past_the_time_budget_are_reported_unknown_not_clean(client: VrmClient, sim: Simulator) -> None:
    inv = await gather(client, helper=False, tree_budget_s=0.0)
    by = {a.urn: a for a in inv.assessments}
    a = by[_urn(sim, "edge-snapshot-limit-01")]
    assert a.has("snapshots-unknown") and a.provisional   # not checked, and said so
    assert any("not checked" in g for g in inv.gaps), inv.gaps


async def test_a_vm_with_snapshots_whose_volumes_do_not_say_4_makes_every_tree_read(
        client: VrmClient, sim: Simulator) -> None:
    """The VRM marks some volumes (so it seems to set 4) but not those of a VM we back up that has
    snapshots: the marking cannot be trusted, and the other VMs' trees are read too."""
    sim.config.volume_use_type_snapshots = True
    near = next(v for v in sim.vms.values() if v.name.startswith("edge-snapshot-limit-near-01"))
    limit = next(v for v in sim.vms.values() if v.name.startswith("edge-snapshot-limit-01"))
    for v in (near, limit):   # neither VM's volumes say 4 (as if the VRM only marked others)
        for d in v.disks:
            d.volume.use_type = 5
    sim.touch()
    inv = await gather(client, helper=False, knowledge={sim.vm_urn(near): BackupKnowledge()})
    by = {a.urn: a for a in inv.assessments}
    assert by[sim.vm_urn(limit)].has("snapshot-limit")
    assert any("does not set it" in g for g in inv.gaps), inv.gaps


async def test_a_vrm_that_sets_4_is_trusted(client: VrmClient, sim: Simulator) -> None:
    sim.config.volume_use_type_snapshots = True
    sim.touch()
    inv = await gather(client, helper=False)
    assert inv.gaps == []
    assert inv.trees_fetched == sum(1 for v in sim.vms.values() if v.snapshots and not v.gone)
    assert {a.urn for a in inv.assessments if a.has("snapshot-limit")} == {_urn(sim, "edge-snapshot-limit-01")}
