"""Planner: kind, per-disk full/incremental and why, exclusions, the post-snapshot chain check."""

from __future__ import annotations

from typing import Any

import pytest

from fctui.jobs.planner import GIB, confirm_disk, plan_vm
from fctui.repo import RestorePoint, RestorePointDisk
from fctui.rules.engine import assess
from fctui.rules.facts import BackupKnowledge, VmFacts, VolumeCbtState
from fctui.vrm.models import VolSnapshot, Vm

S = "urn:sites:0000ABCD"


def disk(n: int, **kw: Any) -> dict[str, Any]:
    d = {"sequenceNum": n, "pciType": "VIRTIO", "volumeUrn": f"{S}:volumes:{n}", "diskName": f"d{n}",
         "quantityGB": 10, "datastoreUrn": f"{S}:datastores:1", "storageType": "LOCALPOME", "isThin": True,
         "indepDisk": False, "persistentDisk": True, "type": "normal"}
    d.update(kw)
    return d


def vm_dict(*disks: dict[str, Any], **kw: Any) -> dict[str, Any]:
    v = {"urn": f"{S}:vms:i-00000001", "uri": f"/service/sites/0000ABCD/vms/i-00000001", "name": "db-01",
         "status": "running", "pvDriverStatus": "running", "toolsVersion": "2.5", "isTemplate": False,
         "isLinkClone": False, "hostUrn": f"{S}:hosts:1", "hostName": "cna-01",
         "vmConfig": {"cpu": {"quantity": 2}, "memory": {"quantityMB": 4096}, "disks": list(disks)},
         "osOptions": {"osType": "Linux", "osVersion": 10121}}
    v.update(kw)
    return v


def point(*disks: tuple[int, str, str], size_gb: int = 10, pid: str = "p1") -> RestorePoint:
    return RestorePoint(id=pid, vm_urn=f"{S}:vms:i-00000001", vm_name="db-01", created=1.0, kind="cbt", job_id="j0",
                        snapshot_urn="", vm_config={}, disks=[
                            RestorePointDisk(volume_urn=f"{S}:volumes:{n}", disk_name=f"d{n}", sequence_num=n,
                                             pci_type="VIRTIO", size_bytes=size_gb * GIB, block_size=1 << 21,
                                             storage_type="LOCALPOME", datastore_urn=f"{S}:datastores:1",
                                             mode="full", cbt={"volCBTCreateTime": t, "chgID": c, "snapUuid": "u"})
                            for n, t, c in disks])


def test_first_backup_is_full_and_independent_disk_excluded() -> None:
    vm = Vm.from_dict(vm_dict(disk(1), disk(2, indepDisk=True), disk(3, persistentDisk=False)))
    p = plan_vm(vm)
    assert p.kind == "cbt" and not p.refused
    assert [(d.mode, d.reason) for d in p.disks] == [("full", "no earlier restore point of this VM")]
    assert [d.disk_name for d in p.excluded] == ["d2", "d3"]
    assert "independent" in p.excluded[0].reason and "non-persistent" in p.excluded[1].reason


def test_incremental_when_chain_holds_and_the_reasons_for_full() -> None:
    vm = Vm.from_dict(vm_dict(disk(1), disk(2), disk(3), disk(4, quantityGB=20)))
    prev = point((1, "T0", "4"), (2, "T0", "4"), (4, "T0", "4"))
    p = plan_vm(vm, previous=prev, chain_marks={f"{S}:volumes:2": "job j9 was interrupted"})
    modes = {d.disk_name: (d.mode, d.reason) for d in p.disks}
    assert modes["d1"][0] == "incremental" and "chgID 4" in modes["d1"][1]
    assert modes["d2"] == ("full", "CBT chain broken: job j9 was interrupted")
    assert modes["d3"] == ("full", "no earlier restore point of this disk (new disk)")
    assert modes["d4"][0] == "full" and "expanded" in modes["d4"][1]
    assert plan_vm(vm, previous=prev, full=True).disks[0].reason == "--full requested"


def test_rules_decide_kind_standard_and_refusal() -> None:
    stopped = Vm.from_dict(vm_dict(disk(1), status="stopped", pvDriverStatus="notRunning"))
    a = assess(VmFacts(vm=stopped))
    p = plan_vm(stopped, assessment=a, previous=point((1, "T0", "4")))
    assert p.kind == "standard" and not p.refused
    assert p.disks[0].mode == "full" and "standard snapshot" in p.disks[0].reason
    notools = Vm.from_dict(vm_dict(disk(1), toolsVersion=""))
    r = plan_vm(notools, assessment=assess(VmFacts(vm=notools)))
    assert r.refused and r.kind is None and "Tools" in r.reason
    ide = Vm.from_dict(vm_dict(disk(1, pciType="IDE")))
    assert plan_vm(ide, assessment=assess(VmFacts(vm=ide))).refused
    allind = Vm.from_dict(vm_dict(disk(1, indepDisk=True)))
    assert plan_vm(allind).refused  # nothing left to back up


def test_rules_chain_finding_names_the_cause() -> None:
    vm = Vm.from_dict(vm_dict(disk(1)))
    know = BackupKnowledge(last_backup_time=1.0, volumes={
        f"{S}:volumes:1": VolumeCbtState(f"{S}:volumes:1", "T0", "4")},
        last_vm_status="running")
    stop_task = {"urn": f"{S}:tasks:9", "uri": "/service/sites/0000ABCD/tasks/9", "type": "StopVm",
                 "entityUrn": vm.urn, "status": "success", "startTime": "5000", "finishTime": "6000"}
    facts = VmFacts.from_dicts(vm_dict(disk(1)), tasks_since_backup=[stop_task], knowledge=know, now=10.0)
    a = assess(facts)
    assert a.has("cbt-chain-broken")
    p = plan_vm(vm, assessment=a, previous=point((1, "T0", "4")))
    assert p.disks[0].mode == "full" and p.disks[0].reason.startswith("CBT chain broken:")


@pytest.mark.parametrize("now,expect_mode,expect", [
    (("T0", "5"), "incremental", "intact"),
    (("T1", "1"), "full", "volCBTCreateTime changed"),
    (("T0", "4"), "full", "chgID reset"),
    (("T0", "7"), "full", "chgID gap"),
    (("T0", ""), "full", "no CBT state"),
])
def test_confirm_disk_after_snapshot(now: tuple[str, str], expect_mode: str, expect: str) -> None:
    vm = Vm.from_dict(vm_dict(disk(1)))
    dp = plan_vm(vm, previous=point((1, "T0", "4"))).disks[0]
    assert dp.mode == "incremental"
    vs = VolSnapshot.from_dict({"volumeUrn": dp.volume_urn, "snapUuid": "s", "volCBTCreateTime": now[0],
                                "chgID": now[1]})
    confirm_disk(dp, vs)
    assert dp.mode == expect_mode and expect in dp.reason
    assert dp.cbt == {"volCBTCreateTime": now[0], "chgID": now[1], "snapUuid": "s"}
    assert (dp.base_point_id is None) == (expect_mode == "full")


def test_launch_time_rules_attached() -> None:
    from datetime import datetime

    from fctui.jobs.planner import Plan, add_launch_findings
    from fctui.rules.launch import BusinessHours
    vm = Vm.from_dict(vm_dict(disk(1)))
    plan = Plan(vms=[plan_vm(vm)], full=False, created=0.0)
    add_launch_findings(plan, host_connections={f"{S}:hosts:1": 8}, datastore_volumes={f"{S}:datastores:1": 3},
                        business_hours=BusinessHours.parse("mon-fri 08:00-18:00"),
                        now_local=datetime(2026, 1, 5, 10, 0))  # a Monday, 10:00
    assert [f.rule for f in plan.vms[0].launch] == ["host-sockets-busy", "business-hours"]
    add_launch_findings(plan, business_hours=BusinessHours.parse("mon-fri 08:00-18:00"),
                        now_local=datetime(2026, 1, 4, 10, 0))  # Sunday: outside the window, nothing busy
    assert plan.vms[0].launch == []
