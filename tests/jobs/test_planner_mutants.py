"""The planner's decisions word for word, where mutation testing found them unguarded (README, Mutation
testing): the kind without an assessment, every per-disk reason, what confirm_disk makes of the snapshot's
CBT state, the one-line summary, the read estimates, and resolving targets through the client; then
assess_vm's facts one by one (the host when the VM reports no architecture, the snapshot tree of a VM
known by URN only, the snapshots a running job owns, which finished tasks count as "since the last
backup": the VM's, its volumes', its host's, started at or after the point, no one else's) and
build_plan's wiring of the repository, the rules and the per-VM inputs into plan_vm.

Everything that needs a VRM talks to the simulator over ASGI (the ``client``/``control`` fixtures). One
file, because mutmut runs the files `[tool.mutmut]` lists in pyproject.toml."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fctui.jobs.planner import (GIB, DiskPlan, FindingNote, Plan, VmPlan, _used_sizes, add_launch_findings,
                                assess_vm, build_plan, confirm_disk, disk_exclusion, knowledge_from_point,
                                next_backup_mode, plan_vm, read_estimate, resolve_vm, stored_estimate, vm_config_of)
from fctui.jobs.model import JobError
from fctui.repo import Repository, RestorePoint, RestorePointDisk
from fctui.vrm import VrmClient
from fctui.vrm.models import Disk, TaskRef, VolSnapshot, Vm
from fctui.vrm.urn import urn_to_uri

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
    full = plan_vm(vm()).disks[0]
    full.bytes_estimate = 999                         # an incremental's figure means nothing for a full
    assert read_estimate(full) == 10 * GIB


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
    one = point((1, CBT4), pid="c")
    one.disks[0].bytes_in, one.disks[0].bytes_stored = 1, 2   # a single byte read is already a history
    need, why = stored_estimate(vp, [one])
    assert need == 20 * GIB and why == "~10.0 GiB to read, stored/read 2.00 over 1 earlier point(s)"


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


async def rename(client: VrmClient, vm: Vm, name: str) -> None:
    await client.wait_task(TaskRef.from_dict(await client.request("PUT", vm.uri, json={"name": name})),
                           timeout=60, interval=0.01)


async def test_resolve_vm_among_names_alike(client: VrmClient, site_uri: str) -> None:
    """The VRM's name filter matches parts of names and ignores case; an exact name wins, then one
    that differs only in case; two of one name are refused, naming (at most five of) their URNs."""
    vms = [v for v in await client.vms(site_uri) if not v.is_template][:11]
    assert len(vms) == 11
    for v, name in zip(vms, ["dup-a", "dup-a", "Dup-a", "dup-a0", "x-only"] + ["six"] * 6):
        await rename(client, v, name)
    got = await resolve_vm(client, "Dup-a", site=site_uri)
    assert got.urn == vms[2].urn and [d.volume_urn for d in got.disks] == [d.volume_urn for d in vms[2].disks]
    assert (await resolve_vm(client, "dup-a0", site=site_uri)).urn == vms[3].urn
    assert (await resolve_vm(client, "X-ONLY", site=site_uri)).urn == vms[4].urn   # only in case: still it
    with pytest.raises(JobError) as two:
        await resolve_vm(client, "dup-a", site=site_uri)
    assert two.value.message == f"2 VMs are named 'dup-a'; give the URN instead: {vms[0].urn}, {vms[1].urn}"
    with pytest.raises(JobError) as six:
        await resolve_vm(client, "six", site=site_uri)
    assert six.value.message == ("6 VMs are named 'six'; give the URN instead: "
                                 + ", ".join(v.urn for v in vms[5:10]))


async def test_resolve_vm_by_name_on_a_vrm_without_sites() -> None:
    async def session(request: Request) -> Response:
        return JSONResponse({"userName": "admin"}, headers={"X-Auth-Token": "t1"})

    async def sites(request: Request) -> Response:
        return JSONResponse({"sites": []})
    app = Starlette(routes=[Route("/service/session", session, methods=["POST", "DELETE"]),
                            Route("/service/sites", sites)])
    async with VrmClient("http://vrm.test", "admin", "pw", transport=httpx.ASGITransport(app=app),
                         api_version="8.1") as empty:
        with pytest.raises(JobError) as e:
            await resolve_vm(empty, "web01")
    assert e.value.message == "the VRM reports no site"


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


# --- assess_vm's facts one by one, build_plan's wiring ------------------------------------------------

async def edge_vm(client: VrmClient, control: httpx.AsyncClient, rule: str) -> Vm:
    edges = (await control.get("/sim/edge-cases")).json()
    return await client.vm(edges[rule][0])


def without(vm: Vm, *keys: str) -> Vm:
    """The same VM as a VRM that does not report ``keys`` would describe it."""
    return Vm.from_dict({k: v for k, v in vm.raw.items() if k not in keys})


def point_of(vm: Vm, created: float) -> RestorePoint:
    """A restore point of ``vm`` with a CBT state for each disk, taken at ``created`` (epoch seconds)."""
    return RestorePoint(id="p1", vm_urn=vm.urn, vm_name=vm.name, created=created, kind="cbt", job_id="j0",
                        snapshot_urn="", vm_config={}, disks=[
                            RestorePointDisk(volume_urn=d.volume_urn, disk_name=d.label, sequence_num=d.sequence_num,
                                             pci_type=d.pci_type, size_bytes=(d.quantity_gb or 0) * GIB,
                                             block_size=1 << 21, storage_type=d.storage_type,
                                             datastore_urn=d.datastore_urn, mode="full",
                                             cbt={"volCBTCreateTime": "T0", "chgID": "4", "snapUuid": "u"})
                            for d in vm.disks])


def chain(a: Any) -> list[tuple[str, list[str]]]:
    return [(f.message, list(f.disks)) for f in a.findings if f.rule == "cbt-chain-broken"]


# --- assess_vm: the facts it gathers --------------------------------------------------------------------

X86_SHARED = ("x86 VM with a shared disk: no memory or consistent snapshot, and a standard snapshot would "
              "leave the shared disk out")


async def test_assess_vm_asks_the_host_when_the_vm_reports_no_architecture(
        client: VrmClient, control: httpx.AsyncClient) -> None:
    shared = await edge_vm(client, control, "shared-disk-x86")
    vol = shared.disks[1].volume_urn if len(shared.disks) > 1 else shared.disks[0].volume_urn

    def x86(a: Any) -> list[tuple[str, list[str]]]:
        return [(f.message, list(f.disks)) for f in a.findings if f.rule == "shared-disk-x86"]

    # no arch on the VM: the host's (x86_64 in the simulator) decides, so nothing is assumed
    no_arch = without(shared, "arch")
    assert no_arch.arch == "" and no_arch.host_urn
    assert x86(await assess_vm(client, no_arch, None, now=1e9)) == [(X86_SHARED, [vol])]
    # neither the arch nor the host known: x86 is assumed and said so (and no host is asked for)
    neither = without(shared, "arch", "hostUrn")
    assert neither.host_urn == ""
    assert x86(await assess_vm(client, neither, None, now=1e9)) == [
        (X86_SHARED + " (architecture not reported; x86 assumed)", [vol])]


async def test_assess_vm_reads_the_snapshot_tree_of_a_vm_known_by_urn_only(
        client: VrmClient, control: httpx.AsyncClient) -> None:
    near = await edge_vm(client, control, "snapshot-limit-near")
    a = await assess_vm(client, without(near, "uri"), None, now=1e9)
    assert [(f.rule, f.message) for f in a.findings if f.rule == "snapshot-limit-near"] == [
        ("snapshot-limit-near", "29 backup snapshots: 3 left before the limit of 32")]


async def test_assess_vm_counts_the_snapshots_a_running_job_owns(client: VrmClient,
                                                                  control: httpx.AsyncClient) -> None:
    vm_ = await edge_vm(client, control, "leftover-backup-snapshot")
    tree = await client.snapshot_tree(vm_.uri)
    urns = [s.urn for s in tree.roots]
    assert len(urns) == 1
    assert (await assess_vm(client, vm_, None, now=1e9)).rules == ["leftover-backup-snapshot"]
    owned = await assess_vm(client, vm_, None, owned_snapshots=urns, now=1e9)
    assert owned.verdict == "ready" and owned.rules == []


async def test_assess_vm_counts_the_tasks_since_the_point_on_its_volumes_only(
        client: VrmClient, control: httpx.AsyncClient, site_uri: str) -> None:
    """An expansion of the VM's volume started at the point's time breaks its chain; one started a
    millisecond before the point does not count (even though it finished after); an expansion of
    another VM's volume never counts."""
    vm_ = await edge_vm(client, control, "ready")
    other = await edge_vm(client, control, "consistency-not-euleros")
    vol = vm_.disks[0]
    assert len(vm_.disks) == 1
    before = {t.urn for t in await client.tasks(site_uri)}
    await client.wait_task(await client.expand_volume(urn_to_uri(vol.volume_urn), (vol.quantity_gb + 1) * 1024),
                           interval=0.01, max_interval=0.02)
    mine = [t for t in await client.tasks(site_uri) if t.urn not in before]
    assert [(t.type, t.entity_urn) for t in mine] == [("ExpandVolume", vol.volume_urn)]
    start, finish = mine[0].times_ms()
    assert start is not None and finish is not None and finish > start + 1
    o = other.disks[0]
    await client.wait_task(await client.expand_volume(urn_to_uri(o.volume_urn), (o.quantity_gb + 1) * 1024),
                           interval=0.01, max_interval=0.02)
    vm_ = await client.vm(vm_.urn)

    at_start = await assess_vm(client, vm_, point_of(vm_, start / 1000.0), now=1e9)
    assert chain(at_start) == [("next backup is full (CBT chain broken): "
                                f"{vol.label}: volume expansion", [vol.volume_urn])]
    assert at_start.verdict == "degraded"
    after_start = await assess_vm(client, vm_, point_of(vm_, (start + 1) / 1000.0), now=1e9)
    assert chain(after_start) == [] and after_start.verdict == "ready"


async def test_assess_vm_counts_a_reboot_of_its_host_since_the_point(
        client: VrmClient, control: httpx.AsyncClient) -> None:
    vm_ = await edge_vm(client, control, "ready")
    assert vm_.host_urn
    r = await control.post(f"/sim/vms/{vm_.urn}/events", json={"event": "host-reboot"})
    assert r.status_code == 200, r.text
    a = await assess_vm(client, vm_, point_of(vm_, 1.0), now=1e9)
    assert chain(a) == [("next backup is full (CBT chain broken): all disks: host reboot",
                         [d.volume_urn for d in vm_.disks])]


# --- build_plan: the repository, the rules and each VM's own inputs ----------------------------------------

async def test_build_plan_with_the_rules_a_repository_and_per_vm_inputs(
        client: VrmClient, control: httpx.AsyncClient, tmp_path: Any) -> None:
    import time

    ready = await edge_vm(client, control, "ready")
    leftover = await edge_vm(client, control, "leftover-backup-snapshot")
    no_tools = await edge_vm(client, control, "tools-missing")
    [left_snap] = [s.urn for s in (await client.snapshot_tree(leftover.uri)).roots]
    vol = ready.disks[0]
    repo = Repository.open(tmp_path / "repo")
    try:
        with repo.new_point(vm_urn=ready.urn, vm_name=ready.name, job_id="j0", kind="cbt", vm_config={},
                            snapshot_urn="", created=1.0) as pw:
            pw.add_disk(volume_urn=vol.volume_urn, disk_name=vol.label, sequence_num=vol.sequence_num,
                        pci_type=vol.pci_type, size_bytes=(vol.quantity_gb or 0) * GIB, block_size=1 << 21,
                        storage_type=vol.storage_type, datastore_urn=vol.datastore_urn,
                        cbt={"volCBTCreateTime": "T0", "chgID": "4", "snapUuid": "u"}, base_point_id=None)
            pt = pw.commit()
        gone = ready.urn.replace("i-00000101", "i-0000FFFF")
        note = FindingNote("business-hours", "warning", "inside business hours")
        t0 = time.time()
        plan = await build_plan(client, ["ghost", gone, ready.name, ready.urn, leftover.urn, no_tools.urn], repo,
                                owned_snapshots=[left_snap], launch_findings={ready.urn: [note]})
        assert plan.full is False and isinstance(plan.created, float) and plan.created >= t0
        assert [t for t, _ in plan.unresolved] == ["ghost", gone]
        gone_uri = urn_to_uri(gone)
        assert plan.unresolved == [("ghost", "no VM named 'ghost'"), (gone, (
            f"VRM refused GET {gone_uri}: The VM i-0000FFFF does not exist. (errorCode 10300004) (HTTP 404)"))]
        assert [v.vm_urn for v in plan.vms] == [ready.urn, leftover.urn, no_tools.urn]
        r, lo, nt = plan.vms
        # the repository's latest point makes the ready VM incremental; what the guest wrote is not asked
        assert [(d.mode, d.reason, d.base_point_id, d.used_bytes) for d in r.disks] == [
            ("incremental", f"CBT chain intact since restore point {pt.id} (chgID 4)", pt.id, None)]
        assert r.base_point_id == pt.id and r.launch == [note] and r.findings == [] and r.verdict == "ready"
        assert lo.launch == [] and lo.verdict == "ready" and lo.findings == []   # its snapshot is owned
        assert lo.disks and all(d.used_bytes is not None for d in lo.disks)      # no point: asked
        # the rules, not the fallback, say why a VM without Tools is refused
        assert nt.refused and nt.reason == "VM Tools were never installed (toolsVersion empty)"
        assert nt.disks and all(d.used_bytes is None for d in nt.disks)           # refused: not asked

        # a disk added since the point is asked for, after a known one
        extra = leftover.raw["vmConfig"]["disks"][0]
        two = Vm.from_dict({**ready.raw, "vmConfig": {**ready.raw["vmConfig"],
                                                       "disks": ready.raw["vmConfig"]["disks"] + [extra]}})
        vp2 = plan_vm(two, previous=pt)
        await _used_sizes(client, vp2, pt)
        assert [(d.volume_urn, d.used_bytes is None) for d in vp2.disks] == [
            (vol.volume_urn, True), (extra["volumeUrn"], False)]

        # without the rules the fallback decides, in its own words
        bare = await build_plan(client, [no_tools.urn], repo, use_rules=False)
        assert (bare.vms[0].refused, bare.vms[0].reason, bare.vms[0].findings) == (
            True, "VM Tools are not installed", [])

        marked = await build_plan(client, [ready.urn], repo, chain_marks={vol.volume_urn: "job j9 was interrupted"})
        assert [d.reason for d in marked.vms[0].disks] == ["CBT chain broken: job j9 was interrupted"]
        both = await build_plan(client, [ready.urn], repo, full=True, full_vms={ready.urn: "weekly full"})
        assert [d.reason for d in both.vms[0].disks] == ["--full requested"]
        # a host reboot since the point: the rules, given the point, break the chain
        r2 = await control.post(f"/sim/vms/{ready.urn}/events", json={"event": "host-reboot"})
        assert r2.status_code == 200, r2.text
        after = await build_plan(client, [ready.urn], repo)
        assert [(d.mode, d.reason) for d in after.vms[0].disks] == [
            ("full", "CBT chain broken: all disks: host reboot")]
    finally:
        repo.close()


# --- plan_vm: an assessment that carries only some of the attributes --------------------------------------

def test_plan_vm_with_an_assessment_that_says_only_the_kinds() -> None:
    """A caller's assessment without verdict, main reason or findings: nothing is made up."""

    p = plan_vm(vm(), assessment=SimpleNamespace(kinds={"cbt": True, "standard": True}))
    assert (p.kind, p.refused, p.verdict, p.reason, p.findings) == ("cbt", False, "", "", [])
    # only standard and no reason given: the generic one
    s = plan_vm(vm(), assessment=SimpleNamespace(kinds={"standard": True}))
    assert (s.kind, s.refused, s.verdict, s.reason) == ("standard", False, "", "CBT snapshots are not possible for this VM")
    # a main reason without a message says nothing; the default refusal reason stands
    n = plan_vm(vm(), assessment=SimpleNamespace(kinds={}, verdict="blocked", main_reason=object()))
    assert (n.kind, n.refused, n.reason) == (None, True, "the rules allow no snapshot of this VM")
    # a caller's blocker finding on a VM it still lets through: the blocker is the limit named
    b = plan_vm(vm(), assessment=SimpleNamespace(kinds={"standard": True}, verdict="degraded", main_reason=None,
                                                  findings=[FindingNote("x", "blocker", "the blocker")]))
    assert (b.kind, b.refused, b.reason) == ("standard", False, "the blocker")


def test_plan_vm_reads_the_attributes_a_finding_lacks_as_empty() -> None:
    odd = SimpleNamespace(kinds={"standard": True}, verdict="degraded", main_reason=None,
                          findings=[SimpleNamespace(rule="r1"), SimpleNamespace(severity="warning", message="m",
                                                                                disks=("v1",))])
    assert plan_vm(vm(), assessment=odd).findings == [FindingNote("r1", "", "", []),
                                                      FindingNote("", "warning", "m", ["v1"])]
    bare = plan_vm(vm(), assessment=SimpleNamespace(verdict="degraded"))   # no kinds: no snapshot kind
    assert (bare.kind, bare.refused, bare.findings) == (None, True, [])


def test_plan_vm_names_the_vm_its_host_and_each_disk_as_given() -> None:
    note = FindingNote("business-hours", "warning", "inside business hours")
    v = vm(disk(1), disk(2, indepDisk=True))
    p = plan_vm(v, previous=point((1, CBT4)), launch_findings=(note,))
    assert (p.vm_urn, p.vm_uri, p.vm_name, p.host_urn, p.host_name, p.status) == (
        VM_URN, "/service/sites/0000ABCD/vms/i-00000001", "db-01", f"{S}:hosts:1", "cna-01", "running")
    assert p.base_point_id == "p1" and p.launch == [note] and p.findings == []
    assert p.vm_config["name"] == "db-01" and [d["sequenceNum"] for d in p.vm_config["disks"]] == [1, 2]
    assert [(d.disk_name, d.mode, d.base_cbt) for d in p.disks] == [("d1", "incremental", CBT4)]
    assert [(d.disk_name, d.mode, d.volume_uri, d.size_bytes) for d in p.excluded] == [
        ("d2", "excluded", "/service/sites/0000ABCD/volumes/2", 10 * GIB)]
    # a VM known by URN only gets its URI from the URN
    u = plan_vm(vm(disk(1), uri=""))
    assert u.vm_uri == "/service/sites/0000ABCD/vms/i-00000001" and u.base_point_id is None
    # a disk the VRM reports without volume URN or size: no URI made up, no size assumed
    odd = {k: val for k, val in disk(1).items() if k not in ("volumeUrn", "quantityGB")}
    o = plan_vm(vm(odd))
    assert [(d.volume_urn, d.volume_uri, d.size_bytes) for d in o.disks] == [("", "", 0)]


def test_the_vm_config_keeps_what_the_vrm_reported_beyond_the_basics() -> None:
    """CPU and memory as the VRM gave them (every key, not rebuilt from the counts), NICs and properties."""
    v = vm(disk(1))
    v = Vm.from_dict({**v.raw, "vmConfig": {**v.raw["vmConfig"], "cpu": {"quantity": 2, "coresPerSocket": 2},
                                            "memory": {"quantityMB": 4096, "limit": 8192},
                                            "nics": [{"name": "nic1", "portGroupUrn": "urn:pg:1"}],
                                            "properties": {"bootOption": "disk"}}})
    cfg = vm_config_of(v)
    assert cfg["cpu"] == {"quantity": 2, "coresPerSocket": 2}
    assert cfg["memory"] == {"quantityMB": 4096, "limit": 8192}
    assert cfg["nics"] == [{"name": "nic1", "portGroupUrn": "urn:pg:1"}]
    assert cfg["properties"] == {"bootOption": "disk"}


# --- knowledge_from_point ------------------------------------------------------------------------------------

def test_knowledge_from_a_point_names_each_volume_and_keeps_the_owned_snapshots() -> None:
    k = knowledge_from_point(point((1, CBT4), (2, {"snapUuid": "u"})), ["s1", "s2"])
    assert k.owned_snapshot_urns == frozenset({"s1", "s2"}) and k.last_backup_time == 100.0
    st1, st2 = k.volumes[f"{S}:volumes:1"], k.volumes[f"{S}:volumes:2"]
    assert (st1.volume_urn, st1.vol_cbt_create_time, st1.chg_id) == (f"{S}:volumes:1", "T0", "4")
    # a recorded state without its fields reads as empty strings, not "None"
    assert (st2.volume_urn, st2.vol_cbt_create_time, st2.chg_id, st2.fully_backed_up) == (
        f"{S}:volumes:2", "", "", True)


# --- resolve_vm by name --------------------------------------------------------------------------------------

async def test_resolve_vm_by_name_brings_the_vms_disks(client: VrmClient, control: httpx.AsyncClient) -> None:
    ready = await edge_vm(client, control, "ready")
    by_name = await resolve_vm(client, ready.name)
    assert by_name.urn == ready.urn and by_name.disks and by_name.disks == ready.disks


# --- add_launch_findings: the defaults and business hours ---------------------------------------------------

def test_launch_findings_default_limits_and_business_hours() -> None:
    """Eight connections per host and eight volumes per datastore by default; the business-hours window
    is checked at the local time given (Monday 10:00 inside Mon-Fri 08:00-18:00), not the wall clock."""
    from datetime import datetime

    from fctui.rules.launch import BusinessHours
    vp = plan_vm(vm(disk(1)))
    plan = Plan(vms=[vp], full=False, created=0.0)
    monday = datetime(2026, 11, 30, 10, 0)
    add_launch_findings(plan, host_connections={f"{S}:hosts:1": 8}, datastore_volumes={f"{S}:datastores:1": 8},
                        business_hours=BusinessHours(), now_local=monday, room=(GIB, GIB))   # no repo: no space rule
    assert [(n.rule, n.severity, n.message) for n in vp.launch] == [
        ("host-sockets-busy", "info", "host cna-01 has 8 of 8 backup connections open: the job waits"),
        ("target-volumes-busy", "info", f"8 of 8 volumes already backing up on {S}:datastores:1: the job waits"),
        ("business-hours", "warning", f"starting at Mon 10:00, inside business hours (mon-fri 08:00-18:00): "
                                      "backup reads load the production storage")]
    # seven of eight: no queueing yet; outside the window (Sunday): nothing to say
    quiet = plan_vm(vm(disk(1)))
    add_launch_findings(Plan(vms=[quiet], full=False, created=0.0), host_connections={f"{S}:hosts:1": 7},
                        datastore_volumes={f"{S}:datastores:1": 7}, business_hours=BusinessHours(),
                        now_local=datetime(2026, 11, 29, 10, 0))
    assert quiet.launch == []
    # a host or datastore the counts do not name has none open
    alone = plan_vm(vm(disk(1)))
    add_launch_findings(Plan(vms=[alone], full=False, created=0.0), per_host=1, per_datastore=1)
    assert alone.launch == []


def test_launch_findings_read_the_repository_room_and_history(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``room`` the filesystem's figures count (free, and 2 % of its size kept as margin); the VM's
    earlier points give the ratio. A filesystem that cannot say its usage adds no space finding."""
    import os
    import shutil

    repo = Repository.open(tmp_path / "repo")
    try:
        with repo.new_point(vm_urn=VM_URN, vm_name="db-01", job_id="j0", kind="cbt", vm_config={},
                            snapshot_urn="", created=1.0) as pw:
            dw = pw.add_disk(volume_urn=f"{S}:volumes:1", disk_name="d1", sequence_num=1, pci_type="VIRTIO",
                             size_bytes=10 * GIB, block_size=1 << 16, storage_type="LOCALPOME",
                             datastore_urn=f"{S}:datastores:1", cbt=None, base_point_id=None)
            dw.put_block(0, os.urandom(1 << 16))
            pw.commit()
        monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(total=100 * GIB, used=50 * GIB,
                                                                             free=50 * GIB))
        vp = plan_vm(vm(disk(1)))
        add_launch_findings(Plan(vms=[vp], full=False, created=0.0), repo=repo)
        assert [(n.rule, n.severity) for n in vp.launch] == [("repo-space-low", "info")]
        msg = vp.launch[0].message
        assert "to read, stored/read " in msg and " over 1 earlier point(s))" in msg, msg
        assert msg.endswith("; 50.0 GiB free, 2.0 GiB kept as margin") and "earlier VMs" not in msg, msg

        # three VMs of 10 GiB without history: the third counts both earlier ones
        three = [plan_vm(vm(disk(1), urn=f"{S}:vms:i-0000000{i}", name=f"v{i}")) for i in (2, 3, 4)]
        add_launch_findings(Plan(vms=three, full=False, created=0.0), repo=repo, room=(100 * GIB, 4 * GIB))
        assert [n.message.split("; ")[1] for n in three[2].launch] == ["with the job's earlier VMs ~30.0 GiB"]

        def refuse(p: Any) -> Any:
            raise OSError(5, "I/O error")
        monkeypatch.setattr(shutil, "disk_usage", refuse)
        vp2 = plan_vm(vm(disk(1)))
        add_launch_findings(Plan(vms=[vp2], full=False, created=0.0), repo=repo)
        assert vp2.launch == [] and not vp2.refused
    finally:
        repo.close()
