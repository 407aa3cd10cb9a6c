"""The planner's decisions word for word, where mutation testing found them unguarded (README, Mutation
testing): the kind without an assessment, every per-disk reason, what confirm_disk makes of the snapshot's
CBT state, the one-line summary, the read estimates, and resolving targets through the client."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fctui.jobs.planner import (GIB, DiskPlan, FindingNote, Plan, VmPlan, add_launch_findings, build_plan,
                                confirm_disk, disk_exclusion, knowledge_from_point, next_backup_mode, plan_vm,
                                read_estimate, resolve_vm, stored_estimate, vm_config_of)
from fctui.jobs.model import JobError
from fctui.repo import Repository, RestorePoint, RestorePointDisk
from fctui.vrm import VrmClient
from fctui.vrm.models import Disk, VolSnapshot, Vm

from tests.jobs.test_jobs_planner import S, disk

VM_URN = f"{S}:vms:i-00000001"


def vm(*disks: dict[str, Any], **kw: Any) -> Vm:
    v = {"urn": VM_URN, "uri": "/service/sites/0000ABCD/vms/i-00000001", "name": "db-01", "status": "running",
         "pvDriverStatus": "running", "toolsVersion": "2.5", "isTemplate": False, "isLinkClone": False,
         "hostUrn": f"{S}:hosts:1", "hostName": "cna-01",
         "vmConfig": {"cpu": {"quantity": 2}, "memory": {"quantityMB": 4096}, "disks": list(disks or [disk(1)])},
         "osOptions": {"osType": "Linux", "osVersion": 10121}}
    v.update(kw)
    return Vm.from_dict(v)


def point(*disks: tuple[int, dict[str, Any] | None], size_gb: int = 10, pid: str = "p1") -> RestorePoint:
    return RestorePoint(id=pid, vm_urn=VM_URN, vm_name="db-01", created=100.0, kind="cbt", job_id="j0",
                        snapshot_urn="", vm_config={}, disks=[
                            RestorePointDisk(volume_urn=f"{S}:volumes:{n}", disk_name=f"d{n}", sequence_num=n,
                                             pci_type="VIRTIO", size_bytes=size_gb * GIB, block_size=1 << 21,
                                             storage_type="LOCALPOME", datastore_urn=f"{S}:datastores:1",
                                             mode="full", cbt=cbt) for n, cbt in disks])


CBT4 = {"volCBTCreateTime": "T0", "chgID": "4", "snapUuid": "u"}


class FakeAssessment:
    """Just the attributes plan_vm reads of the rules engine's Assessment."""

    def __init__(self, verdict: str, kinds: dict[str, bool], findings: list[FindingNote],
                 main: FindingNote | None = None) -> None:
        self.verdict, self.kinds, self.findings, self.main_reason = verdict, kinds, findings, main


# --- the kind without an assessment ----------------------------------------------------------------------

@pytest.mark.parametrize("over,kind,reason", [
    ({}, "cbt", ""),
    ({"isTemplate": True}, None, "templates and linked clones cannot be snapshotted"),
    ({"isLinkClone": True}, None, "templates and linked clones cannot be snapshotted"),
    ({"toolsVersion": ""}, None, "VM Tools are not installed"),
    ({"pvDriverStatus": "notRunning"}, None, "VM Tools are not running"),
    ({"status": "stopped", "pvDriverStatus": "notRunning"}, "standard",
     "the VM is stopped: only a standard snapshot is possible"),
    ({"status": "migrating"}, None, "VM state 'migrating' allows no snapshot"),
])
def test_the_kind_without_an_assessment(over: dict[str, Any], kind: str | None, reason: str) -> None:
    p = plan_vm(vm(disk(1), **over))
    assert p.kind == kind
    assert p.refused == (kind is None)
    assert p.verdict == {"cbt": "ready", "standard": "degraded", None: "blocked"}[kind]
    assert p.reason == reason
    if kind == "standard":
        assert p.disks[0].reason == "standard snapshot (no CBT): the whole disk is read"


# --- with an assessment -------------------------------------------------------------------------------------

def test_a_blocked_verdict_refuses_with_every_blocker_named() -> None:
    fs = [FindingNote("disk-ide", "blocker", "IDE disk d1"), FindingNote("tools-missing", "blocker", "no Tools"),
          FindingNote("business", "warning", "busy")]
    a = FakeAssessment("blocked", {"cbt": True, "standard": True}, fs, main=fs[0])
    p = plan_vm(vm(), assessment=a)
    assert p.refused and p.kind is None and p.reason == "IDE disk d1; no Tools"
    assert p.verdict == "blocked"
    assert [(f.rule, f.severity, f.message) for f in p.findings] == [
        ("disk-ide", "blocker", "IDE disk d1"), ("tools-missing", "blocker", "no Tools"), ("business", "warning", "busy")]


def test_no_kind_left_refuses_with_the_main_reason_or_a_default() -> None:
    main = FindingNote("x", "warning", "the main reason")
    a = FakeAssessment("degraded", {"cbt": False, "standard": False}, [main], main=main)
    assert plan_vm(vm(), assessment=a).reason == "the main reason"
    # no main reason: the first blocker's message
    b = FakeAssessment("degraded", {}, [FindingNote("w", "warning", "w"), FindingNote("b", "blocker", "the blocker")])
    assert plan_vm(vm(), assessment=b).reason == "the blocker"
    c = FakeAssessment("degraded", {}, [])
    assert plan_vm(vm(), assessment=c).reason == "the rules allow no snapshot of this VM"


def test_a_standard_kind_says_why_cbt_is_not_possible() -> None:
    fs = [FindingNote("x-other", "warning", "other warning"), FindingNote("state-stopped", "warning", "stopped VM")]
    a = FakeAssessment("degraded", {"cbt": False, "standard": True}, fs, main=fs[0])
    p = plan_vm(vm(), assessment=a)
    assert (p.kind, p.refused, p.reason) == ("standard", False, "stopped VM")
    a2 = FakeAssessment("degraded", {"cbt": False, "standard": True}, fs[:1], main=fs[0])
    assert plan_vm(vm(), assessment=a2).reason == "other warning"
    a3 = FakeAssessment("degraded", {"cbt": False, "standard": True}, [])
    assert plan_vm(vm(), assessment=a3).reason == "CBT snapshots are not possible for this VM"


# --- per disk: the reason for full, or the base of an incremental --------------------------------------------

def test_every_reason_for_a_full_disk() -> None:
    v = vm(disk(1), disk(2), disk(3), disk(4, quantityGB=20), disk(5), disk(6), disk(7))
    prev = point((1, CBT4), (2, CBT4), (4, CBT4), (5, None), (6, {"volCBTCreateTime": "T0", "chgID": ""}),
                 (7, CBT4))
    chain = FindingNote("cbt-chain-broken", "warning",
                        "next backup is full (CBT chain broken): d7: volume expansion", [f"{S}:volumes:7"])
    a = FakeAssessment("ready", {"cbt": True, "standard": True}, [chain])
    p = plan_vm(v, assessment=a, previous=prev, chain_marks={f"{S}:volumes:2": "job j9 was interrupted"})
    got = {d.disk_name: (d.mode, d.reason, d.base_point_id) for d in p.disks}
    assert got == {
        "d1": ("incremental", "CBT chain intact since restore point p1 (chgID 4)", "p1"),
        "d2": ("full", "CBT chain broken: job j9 was interrupted", None),
        "d3": ("full", "no earlier restore point of this disk (new disk)", None),
        "d4": ("full", "CBT chain broken: the disk was expanded since the last restore point (10.0 GiB -> 20.0 GiB)",
               None),
        "d5": ("full", "the last restore point of this disk has no CBT state (standard snapshot)", None),
        "d6": ("full", "the last restore point of this disk has no CBT state (standard snapshot)", None),
        "d7": ("full", "CBT chain broken: d7: volume expansion", None),
    }
    d1 = p.disks[0]
    assert d1.base_cbt == CBT4 and d1.base_cbt is not prev.disks[0].cbt
    assert (d1.volume_uri, d1.size_bytes, d1.pci_type, d1.sequence_num) == (
        "/service/sites/0000ABCD/volumes/1", 10 * GIB, "VIRTIO", 1)
    assert p.base_point_id == "p1" and p.kind == "cbt" and not p.refused


def test_a_chain_finding_without_disks_breaks_every_disk() -> None:
    chain = FindingNote("cbt-chain-broken", "warning", "next backup is full (CBT chain broken): all disks: power-off")
    a = FakeAssessment("ready", {"cbt": True}, [chain])
    p = plan_vm(vm(disk(1), disk(2)), assessment=a, previous=point((1, CBT4), (2, CBT4)))
    assert [d.reason for d in p.disks] == ["CBT chain broken: all disks: power-off"] * 2


def test_full_requested_and_its_reason() -> None:
    prev = point((1, CBT4))
    assert plan_vm(vm(), previous=prev, full=True).disks[0].reason == "--full requested"
    assert plan_vm(vm(), previous=prev, full=True, full_reason="weekly full").disks[0].reason == "weekly full"
    first = plan_vm(vm())
    assert first.disks[0].reason == "no earlier restore point of this VM" and first.base_point_id is None


def test_the_estimate_comes_from_the_same_disk_of_the_last_point() -> None:
    prev = point((1, CBT4))
    prev.disks[0].bytes_in = 12345
    p = plan_vm(vm(disk(1), disk(2)), previous=prev)
    assert [d.bytes_estimate for d in p.disks] == [12345, None]


@pytest.mark.parametrize("over,why", [
    ({"indepDisk": True}, "independent disk: not part of VM snapshots, cannot be backed up"),
    ({"persistentDisk": False}, "non-persistent disk: its changes are discarded, nothing to back up"),
    ({"type": "share"}, "shared disk: not part of VM snapshots"),
    ({}, ""),
])
def test_disk_exclusion(over: dict[str, Any], why: str) -> None:
    assert disk_exclusion(Disk.from_dict(disk(1, **over))) == why


def test_every_disk_excluded_refuses() -> None:
    p = plan_vm(vm(disk(1, indepDisk=True), disk(2, type="share")))
    assert p.refused and p.kind is None and p.reason == "every disk is excluded: nothing to back up"
    assert [d.mode for d in p.excluded] == ["excluded", "excluded"] and p.disks == []


def test_the_vm_config_a_restore_needs() -> None:
    v = vm(disk(1, datastoreName="ds-a", systemVolume=True), arch="x86_64")
    cfg = vm_config_of(v)
    assert cfg["name"] == "db-01" and cfg["urn"] == VM_URN and cfg["arch"] == "x86_64"
    assert cfg["cpu"] == {"quantity": 2} and cfg["memory"] == {"quantityMB": 4096}
    assert cfg["osOptions"] == {"osType": "Linux", "osVersion": 10121}
    assert cfg["nics"] == [] and cfg["properties"] == {}
    assert cfg["disks"] == [{"sequenceNum": 1, "pciType": "VIRTIO", "volumeUrn": f"{S}:volumes:1",
                             "diskName": "d1", "quantityGB": 10, "datastoreUrn": f"{S}:datastores:1",
                             "datastoreName": "ds-a", "storageType": "LOCALPOME", "isThin": True,
                             "indepDisk": False, "persistentDisk": True, "type": "normal", "systemVolume": True}]
    bare = Vm.from_dict({"urn": VM_URN, "name": "x", "cpu": {"quantity": 4}})
    cfg2 = vm_config_of(bare)
    assert cfg2["cpu"] == {"quantity": bare.cpu_quantity} and cfg2["memory"] == {"quantityMB": bare.memory_mb}
    assert cfg2["osOptions"] == {} and cfg2["disks"] == []


# --- after the snapshot ------------------------------------------------------------------------------------

def planned() -> DiskPlan:
    dp = plan_vm(vm(), previous=point((1, CBT4))).disks[0]
    assert dp.mode == "incremental" and dp.base_point_id == "p1"
    return dp


def snap(create: str, chg: str) -> VolSnapshot:
    return VolSnapshot.from_dict({"volumeUrn": f"{S}:volumes:1", "snapUuid": "s2", "volCBTCreateTime": create,
                                  "chgID": chg})


@pytest.mark.parametrize("create,chg,mode,reason", [
    ("T0", "5", "incremental", "CBT chain intact since restore point p1 (chgID 4)"),
    ("T1", "5", "full", "CBT chain broken: volCBTCreateTime changed (T0 -> T1); CBT was re-initialised "
                        "(power-off, HA restart, revert, expansion or host reboot)"),
    ("T0", "4", "full", "CBT chain broken: chgID reset (4 -> 4), e.g. host reboot"),
    ("T0", "3", "full", "CBT chain broken: chgID reset (4 -> 3), e.g. host reboot"),
    ("T0", "6", "full", "CBT chain broken: chgID gap (4 -> 6): a CBT snapshot in between was not fully backed up"),
    ("T0", "x", "full", "CBT chain unknown: unreadable chgID ('4' -> 'x')"),
    ("T0", "", "full", "the snapshot reports no CBT state for this disk"),
    ("", "5", "full", "the snapshot reports no CBT state for this disk"),
])
def test_confirm_disk_word_for_word(create: str, chg: str, mode: str, reason: str) -> None:
    dp = confirm_disk(planned(), snap(create, chg))
    assert (dp.mode, dp.reason) == (mode, reason)
    assert dp.cbt == {"volCBTCreateTime": create, "chgID": chg, "snapUuid": "s2"}
    assert dp.base_point_id == ("p1" if mode == "incremental" else None)


def test_confirm_disk_without_a_snapshot_state_and_for_a_full() -> None:
    dp = confirm_disk(planned(), None)
    assert (dp.mode, dp.reason, dp.cbt, dp.base_point_id) == (
        "full", "the snapshot reports no CBT state for this disk", None, None)
    full = plan_vm(vm()).disks[0]
    same = confirm_disk(full, snap("T0", "9"))
    assert same.mode == "full" and same.reason == "no earlier restore point of this VM"
    assert same.cbt == {"volCBTCreateTime": "T0", "chgID": "9", "snapUuid": "s2"}
    unreadable = planned()
    unreadable.base_cbt = {"volCBTCreateTime": "T0", "chgID": " 7 "}
    assert confirm_disk(unreadable, snap("T0", "8")).mode == "incremental"   # " 7 " reads as 7


# --- summaries -------------------------------------------------------------------------------------------

def test_next_backup_mode_in_one_line() -> None:
    prev = point((1, CBT4), (2, CBT4))
    assert next_backup_mode(plan_vm(vm(disk(1), disk(2)), previous=prev)) == (
        "incremental", "CBT chain intact since restore point p1 (chgID 4)")
    one_new = plan_vm(vm(disk(1), disk(2), disk(3)), previous=prev)
    assert next_backup_mode(one_new) == ("full", "d3: no earlier restore point of this disk (new disk)")
    two = plan_vm(vm(disk(1), disk(3)), previous=prev)
    assert next_backup_mode(two) == ("full", "d3: no earlier restore point of this disk (new disk)")
    mixed = point((1, CBT4), (2, dict(CBT4, chgID="7")))
    assert next_backup_mode(plan_vm(vm(disk(1), disk(2)), previous=mixed)) == (
        "incremental", "CBT chain intact since restore point p1 (chgID 4)")      # the first disk's
    assert next_backup_mode(plan_vm(vm(disk(2)), previous=mixed)) == (
        "incremental", "CBT chain intact since restore point p1 (chgID 7)")
    single = plan_vm(vm(disk(3)), previous=prev)
    assert next_backup_mode(single) == ("full", "no earlier restore point of this disk (new disk)")
    refused = plan_vm(vm(toolsVersion=""))
    assert next_backup_mode(refused) == ("refused", "VM Tools are not installed")
    empty = VmPlan(vm_urn="u", vm_uri="", vm_name="", host_urn="", host_name="", status="", kind="cbt",
                   refused=False, reason="", verdict="ready", disks=[], excluded=[], base_point_id=None)
    assert next_backup_mode(empty) == ("incremental", "")


def test_bytes_planned_and_the_plan_lists() -> None:
    p = plan_vm(vm(disk(1), disk(2)))
    dj = p.disks[0].to_json()
    assert dj["volume_urn"] == f"{S}:volumes:1" and dj["mode"] == "full" and dj["size_bytes"] == 10 * GIB
    assert dj["reason"] == "no earlier restore point of this VM" and dj["base_cbt"] is None
    assert p.bytes_planned is None
    p.disks[0].bytes_planned = 5
    assert p.bytes_planned is None and p.to_json()["bytes_planned"] is None
    p.disks[1].bytes_planned = 0
    assert p.bytes_planned == 5 and p.to_json()["bytes_planned"] == 5
    r = plan_vm(vm(toolsVersion=""))
    plan = Plan(vms=[p, r], full=True, created=7.0, unresolved=[("ghost", "no VM named 'ghost'")])
    assert plan.runnable == [p] and plan.refused == [r]
    j = plan.to_json()
    assert j["created"] == 7.0 and j["full"] is True and len(j["vms"]) == 2
    assert j["unresolved"] == [{"target": "ghost", "reason": "no VM named 'ghost'"}]


def test_knowledge_from_a_point() -> None:
    k = knowledge_from_point(None, ["s1"])
    assert k.last_backup_time is None and k.volumes == {} and k.owned_snapshot_urns == frozenset({"s1"})
    p = point((1, CBT4), (2, None))
    k = knowledge_from_point(p, ())
    assert k.last_backup_time == 100.0 and k.last_vm_status == "running"
    assert list(k.volumes) == [f"{S}:volumes:1"]
    st = k.volumes[f"{S}:volumes:1"]
    assert (st.vol_cbt_create_time, st.chg_id, st.fully_backed_up) == ("T0", "4", True)


# --- read estimates ----------------------------------------------------------------------------------------

def test_read_estimate_prefers_the_most_exact_figure() -> None:
    dp = plan_vm(vm()).disks[0]                       # a 10 GiB full
    assert read_estimate(dp) == 10 * GIB              # nothing known: the provisioned size
    dp.used_bytes = 3 * GIB
    assert read_estimate(dp) == 3 * GIB               # what the guest wrote
    dp.used_bytes = 30 * GIB
    assert read_estimate(dp) == 10 * GIB              # never more than the disk
    prev = point((1, CBT4)).disks[0]
    prev.nonzero_blocks = 100
    assert read_estimate(dp, prev) == 100 * (1 << 21)  # the blocks the disk held at its last point
    prev.nonzero_blocks = 10 ** 6
    assert read_estimate(dp, prev) == 10 * GIB
    dp.bytes_planned = 77
    assert read_estimate(dp, prev) == 77              # the CBT bitmap's figure wins
    inc = plan_vm(vm(), previous=point((1, CBT4))).disks[0]
    inc.bytes_estimate = 999
    assert read_estimate(inc) == 999
    sized0 = plan_vm(vm(disk(1, quantityGB=0))).disks[0]
    sized0.used_bytes = 5
    assert read_estimate(sized0) == 5


def test_stored_estimate_with_and_without_history() -> None:
    vp = plan_vm(vm())
    need, why = stored_estimate(vp, [])
    assert need == 10 * GIB and why == "~10.0 GiB to read, no earlier point: 1.0 stored/read assumed"
    h1, h2 = point((1, CBT4), pid="a"), point((1, CBT4), pid="b")
    d1, d2 = h1.disks[0], h2.disks[0]
    d1.bytes_in, d1.bytes_stored, d2.bytes_in, d2.bytes_stored = 100, 30, 300, 70
    h2.disks[0].nonzero_blocks = 512                  # 1 GiB held at the last point
    need, why = stored_estimate(vp, [h1, h2])
    assert need == GIB // 4 and why == "~1.0 GiB to read, stored/read 0.25 over 2 earlier point(s)"


def test_launch_findings_with_the_repository_space(tmp_path: Any) -> None:
    repo = Repository.open(tmp_path / "repo")
    try:
        a, b = plan_vm(vm()), plan_vm(vm(urn=f"{S}:vms:i-2", name="b", hostUrn=f"{S}:hosts:2"))
        refused = plan_vm(vm(toolsVersion=""))
        plan = Plan(vms=[a, b, refused], full=False, created=0.0)
        add_launch_findings(plan, repo=repo, room=(25 * GIB, 4 * GIB), host_connections={f"{S}:hosts:2": 2},
                            per_host=2)
        assert [(n.rule, n.severity) for n in a.launch] == [("repo-space-low", "info")]
        # the second VM counts the first's 10 GiB: 20 of 21 GiB is within 10 % of full
        assert [(n.rule, n.severity) for n in b.launch] == [("host-sockets-busy", "info"),
                                                            ("repo-space-low", "warning")]
        assert refused.launch == []
        plan2 = Plan(vms=[plan_vm(vm()), plan_vm(vm(urn=f"{S}:vms:i-3", name="c"))], full=False, created=0.0)
        add_launch_findings(plan2, repo=repo, room=(15 * GIB, 4 * GIB))
        first, second = plan2.vms
        assert not first.refused
        assert second.refused and second.kind is None and second.reason.startswith("repository too full: ")
        assert [n.rule for n in second.launch] == ["repo-space-low"] and second.launch[0].severity == "blocker"
    finally:
        repo.close()


def test_launch_findings_per_datastore_once() -> None:
    v = vm(disk(1), disk(2), disk(3, datastoreUrn=f"{S}:datastores:2"))
    plan = Plan(vms=[plan_vm(v)], full=False, created=0.0)
    add_launch_findings(plan, datastore_volumes={f"{S}:datastores:1": 2, f"{S}:datastores:2": 1}, per_datastore=2)
    assert [(n.rule, n.message) for n in plan.vms[0].launch] == [
        ("target-volumes-busy", f"2 of 2 volumes already backing up on {S}:datastores:1: the job waits")]


# --- targets through the client (the simulator) ----------------------------------------------------------

async def test_resolve_vm_by_urn_and_by_name(client: VrmClient, site_uri: str) -> None:
    vms = await client.vms(site_uri)
    one = vms[0]
    assert (await resolve_vm(client, f"  {one.urn} ")).urn == one.urn
    assert (await resolve_vm(client, one.name)).urn == one.urn
    assert (await resolve_vm(client, one.name.upper(), site=site_uri)).urn == one.urn
    for target, msg in [("", "empty VM name"), ("   ", "empty VM name"),
                        (f"{S}:hosts:1", f"'{S}:hosts:1' is not a VM URN"),
                        ("no-such-vm", "no VM named 'no-such-vm'")]:
        with pytest.raises(JobError) as e:
            await resolve_vm(client, target)
        assert e.value.message == msg


async def test_build_plan_lists_what_it_cannot_resolve_and_plans_each_vm_once(
        client: VrmClient, site_uri: str, tmp_path: Any) -> None:
    vms = await client.vms(site_uri)
    one = vms[0]
    plan = await build_plan(client, [one.name, one.urn, "ghost"], None, use_rules=False)
    assert [v.vm_urn for v in plan.vms] == [one.urn]
    assert plan.unresolved == [("ghost", "no VM named 'ghost'")]
    assert plan.full is False
    full = await build_plan(client, [one.urn], None, full=True, use_rules=False)
    assert full.full is True and all(d.reason == "--full requested" for d in full.vms[0].disks)
    weekly = await build_plan(client, [one.urn], None, use_rules=False, full_vms={one.urn: "weekly full"})
    assert all(d.reason == "weekly full" for d in weekly.vms[0].disks)
    # a first full backup knows what the guest wrote on each disk
    assert not weekly.vms[0].refused and weekly.vms[0].disks
    assert all(d.used_bytes is not None for d in weekly.vms[0].disks)


async def test_assess_vm_reads_every_fact_the_rules_need(client: VrmClient, control: httpx.AsyncClient) -> None:
    """The simulator's edge-case VMs (one per rule): assess_vm's fresh facts make each one's rule fire,
    which needs the host, the datastores, the OS catalogue, the snapshot tree and the VM's own tasks."""
    from fctui.jobs.planner import assess_vm
    edges = (await control.get("/sim/edge-cases")).json()
    fired: dict[str, bool] = {}
    for rule in ("target-space-low", "guest-os-unlisted", "snapshot-limit-near", "leftover-backup-snapshot",
                 "task-in-progress", "shared-disk-x86", "consistency-not-euleros"):
        if rule in edges:
            vm_ = await client.vm(edges[rule][0])
            fired[rule] = rule in (await assess_vm(client, vm_, None, now=1e9)).rules
    assert fired == dict.fromkeys(fired, True) and len(fired) >= 5, fired
    ready = await assess_vm(client, await client.vm(edges["ready"][0]), None, now=1e9)
    assert ready.verdict == "ready" and ready.rules == []
