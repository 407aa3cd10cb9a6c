"""Simulator behaviour that matters at scale: cached volume listings stay correct after changes, and
generated datastores have realistic, never negative, free space whatever the inventory size."""

from __future__ import annotations

import json

from fctui.sim import SimConfig, Simulator
from fctui.sim.generator import NEARLY_FULL_EVERY
from fctui.sim.testing import sim_harness


async def _all_volumes(h) -> list[dict]:  # type: ignore[no-untyped-def]
    out: list[dict] = []
    offset = 0
    while True:
        page = (await h.get(f"{h.site}/volumes?limit=100&offset={offset}")).json()
        out.extend(page["volumes"])
        offset += 100
        if offset >= page["total"]:
            return out


async def test_volume_listing_cache_follows_changes() -> None:
    async with sim_harness() as h:
        vm = next(v for v in h.sim.vms.values() if v.name == "edge-ready-euleros-01")
        vol_urn = h.sim.urn("volumes", vm.disks[0].volume.id)
        first = {v["urn"]: v for v in await _all_volumes(h)}
        assert first[vol_urn]["volumeUseType"] == 0
        again = {v["urn"]: v for v in await _all_volumes(h)}  # served from the cache: same answer
        assert again == first
        # a snapshot makes the volume one "with snapshots" (volumeUseType 4) at once
        ref = (await h.post(h.uri(h.sim.vm_urn(vm)) + "/snapshots", {"name": "s1"})).json()
        after = {v["urn"]: v for v in await _all_volumes(h)}
        assert after[vol_urn]["volumeUseType"] == 4
        single = (await h.get(h.uri(vol_urn))).json()
        assert single["volumeUseType"] == 4 and json.dumps(single, sort_keys=True) == json.dumps(
            after[vol_urn], sort_keys=True)
        # an expansion shows in the listing and in the filtered listing (a different cache entry)
        size = after[vol_urn]["quantityGB"]
        h.advance(30)
        await h.wait_task(ref["taskUri"])
        r = await h.post(h.uri(vol_urn) + "/action/expandVol", {"size": (size + 2) * 1024})
        await h.wait_task(r.json()["taskUri"])
        grown = {v["urn"]: v for v in await _all_volumes(h)}
        assert grown[vol_urn]["quantityGB"] == size + 2
        scoped = (await h.get(f"{h.site}/volumes", params={"scope": h.sim.vm_urn(vm)})).json()
        assert {v["urn"]: v["quantityGB"] for v in scoped["volumes"]}[vol_urn] == size + 2
        # a new volume appears in the cached list's total
        total = (await h.get(f"{h.site}/volumes?limit=1")).json()["total"]
        ds = vm.disks[0].volume.datastore
        r = await h.post(f"{h.site}/volumes", {"name": "new-vol", "quantityGB": 1,
                                                "datastoreUrn": h.sim.urn("datastores", ds.id)})
        await h.wait_task(r.json()["taskUri"])
        assert (await h.get(f"{h.site}/volumes?limit=1")).json()["total"] == total + 1


def test_datastores_never_negative_and_realistically_used() -> None:
    # 1,500 VMs: over 40 hosts (so one nearly-full local datastore) and enough volumes that the old
    # fixed capacities were over-provisioned
    sim = Simulator(SimConfig(vms=1500, seed=3))
    dss = list(sim.datastores.values())
    assert all(d.free_gb >= 0 for d in dss), [(d.name, d.free_gb) for d in dss if d.free_gb < 0]
    regular = [d for d in dss if d.used_gb > 0 and not d.name.startswith(("ds-nas-nearly-full", "ds-raw",
                                                                           "ds-rdm", "ds-san"))]
    utilisation = [d.used_gb / d.capacity_gb for d in regular]
    assert max(utilisation) < 1.0
    nearly_full = [d for d, u in zip(regular, utilisation) if u > 0.9]
    # a few nearly full local datastores, not many
    local = [d for d in regular if d.storage_type == "LOCALPOME"]
    assert 1 <= len(nearly_full) <= len(local) // NEARLY_FULL_EVERY + 1
    assert all(d.storage_type == "LOCALPOME" for d in nearly_full)
    assert sum(1 for u in utilisation if u <= 0.8) >= len(regular) - len(nearly_full)


def test_small_inventory_has_only_the_edge_case_nearly_full() -> None:
    sim = Simulator(SimConfig(vms=60, seed=1))
    low = [d.name for d in sim.datastores.values() if d.free_gb < 0.05 * d.capacity_gb]
    assert low == ["ds-nas-nearly-full-01"]
