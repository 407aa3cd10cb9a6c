"""IDE data disks numbered 1001-1004 as older releases number them (vrm-api.md §16, NOVA constant.py):
the simulator has some, fctui's models, rules and restore keep treating them right."""

from __future__ import annotations

from types import SimpleNamespace

from fctui.jobs.restore import _point_disks
from fctui.rules.engine import assess
from fctui.rules.facts import VmFacts
from fctui.sim import SimConfig
from fctui.sim.testing import sim_harness
from fctui.vrm.models import Vm


async def _ide_vms(h) -> list[dict]:  # type: ignore[no-untyped-def]
    vms = (await h.get(f"{h.site}/vms", params={"detail": 2, "limit": 100})).json()["vms"]
    return [v for v in vms if any(d["pciType"] == "IDE" and d["sequenceNum"] > 1000
                                  for d in v["vmConfig"]["disks"])]


async def test_generated_vms_have_ide_data_disks_from_1001() -> None:
    async with sim_harness(SimConfig(vms=20, sector_of_block=128)) as h:
        vms = await _ide_vms(h)
        assert len(vms) >= 2
        for v in vms:
            ide = sorted(d["sequenceNum"] for d in v["vmConfig"]["disks"] if d["pciType"] == "IDE")
            data = [s for s in ide if s != 1]
            assert data == list(range(1001, 1001 + len(data))) and len(data) <= 4
            boot = [d for d in v["vmConfig"]["disks"] if d["systemVolume"]]
            assert [d["sequenceNum"] for d in boot] == [1]  # slot 1 stays the boot disk
            assert all(d["devName"].startswith("hd") for d in v["vmConfig"]["disks"] if d["pciType"] == "IDE")
            assert "disk-ide" in [r for r, urns in (await h.client.get("/sim/edge-cases")).json().items()
                                  if v["urn"] in urns]


async def test_rules_block_on_the_ide_data_disk_only() -> None:
    async with sim_harness(SimConfig(vms=20, sector_of_block=128)) as h:
        vm = next(v for v in await _ide_vms(h) if v["name"].startswith("edge-disk-ide"))
        host = (await h.get(h.uri(vm["hostUrn"]))).json()
        dss = (await h.get(f"{h.site}/datastores")).json()["datastores"]
        cat = (await h.get(f"{h.site}/vms/osversions")).json()
        parsed = Vm.from_dict(vm)
        assert [(d.sequence_num, d.pci_type) for d in parsed.disks] == [(1, "VIRTIO"), (1001, "IDE")]
        assert not any(d.missing for d in parsed.disks)
        a = assess(VmFacts.from_dicts(vm, host=host, datastores=dss, os_catalogue=cat,
                                      snapshots={"rootSnapshots": []}))
        ide = next(f for f in a.findings if f.rule == "disk-ide")
        data_disk = next(d for d in vm["vmConfig"]["disks"] if d["sequenceNum"] == 1001)
        assert ide.disks == [data_disk["volumeUrn"]]
        assert a.verdict == "blocked"


async def test_restore_keeps_ide_slots() -> None:
    """A restore point of a VM with an IDE data disk at 1001 lists its disks in the VM's order, and the
    simulator creates a VM from volumes at those slots (what restore's create-VM body asks for)."""
    vm_config = {"disks": [{"volumeUrn": "urn:v:1", "sequenceNum": 1, "pciType": "VIRTIO"},
                           {"volumeUrn": "urn:v:2", "sequenceNum": 1001, "pciType": "IDE"},
                           {"volumeUrn": "urn:v:3", "sequenceNum": 2, "pciType": "VIRTIO"}]}
    # _point_disks reads only these fields of the point and its disks
    disks = [SimpleNamespace(volume_urn=u, sequence_num=n, pci_type=p)
             for u, n, p in (("urn:v:3", 2, "VIRTIO"), ("urn:v:2", 1001, "IDE"), ("urn:v:1", 1, "VIRTIO"))]
    point = SimpleNamespace(vm_config=vm_config, disks=disks)
    assert [d.volume_urn for d in _point_disks(point)]  # type: ignore[arg-type] == ["urn:v:1", "urn:v:2", "urn:v:3"]

    async with sim_harness(SimConfig(vms=20, sector_of_block=128)) as h:
        ds = (await h.get(f"{h.site}/datastores")).json()["datastores"][0]
        vols = []
        for i in range(2):
            r = await h.post(f"{h.site}/volumes", json={"name": f"ide-restore-{i}", "quantityGB": 1,
                                                        "datastoreUrn": ds["urn"], "isThin": True, "type": "normal"})
            await h.wait_task(r.json()["taskUri"])
            vols.append(r.json()["urn"])
        host = (await h.get(f"{h.site}/hosts")).json()["hosts"][0]
        r = await h.post(f"{h.site}/vms", json={
            "name": "ide-restored", "location": host["clusterUrn"], "autoBoot": False,
            "osOptions": {"osType": "Linux", "osVersion": 10121},
            "vmConfig": {"cpu": {"quantity": 2}, "memory": {"quantityMB": 2048}, "disks": [
                {"volumeUrn": vols[0], "sequenceNum": 1, "pciType": "VIRTIO"},
                {"volumeUrn": vols[1], "sequenceNum": 1001, "pciType": "IDE"}]}})
        assert r.status_code == 200, r.text
        assert (await h.wait_task(r.json()["taskUri"]))["status"] == "success"
        made = (await h.get(r.json()["uri"])).json()
        assert [(d["sequenceNum"], d["pciType"]) for d in made["vmConfig"]["disks"]] == [(1, "VIRTIO"), (1001, "IDE")]
