"""Behaviour of the rules engine that mutation testing found unguarded (README, Mutation testing): finding
equality, the JSON an assessment gives, when a finished task counts against the CBT chain, the
snapshot-tree refreshes (``with_snapshot_tree``, ``with_owned_snapshots``) and ``confirmed``/``confirms``.
Expectations are written out here, not read back from the engine."""

from __future__ import annotations

from typing import Any

import pytest

from fctui.rules import engine
from fctui.rules.catalog import arch_family
from fctui.rules.engine import (Assessment, Finding, assess, classify_task_type, confirmed, confirms,
                                leftover_backup_snapshots, with_owned_snapshots, with_snapshot_tree)
from fctui.rules.facts import BackupKnowledge, VmFacts, VolumeCbtState
from fctui.vrm.models import SnapshotTree

SITE = "urn:sites:00000001"
VM_URN = f"{SITE}:vms:i-00000001"
VOL = f"{SITE}:volumes:1"
DS = f"{SITE}:datastores:1"
OS = {"linux": [{"id": 10121, "versionDes": "EulerOS 2.0 SP9 64bit"}]}
LEFTOVER = "leftover-backup-snapshot"


def vm(**over: Any) -> dict[str, Any]:
    v: dict[str, Any] = {
        "urn": VM_URN, "uri": "/service/sites/00000001/vms/i-00000001", "name": "app-01", "status": "running",
        "pvDriverStatus": "running", "toolsVersion": "2.5", "hostUrn": f"{SITE}:hosts:1", "isTemplate": False,
        "isLinkClone": False, "osOptions": {"osType": "Linux", "osVersion": 10121},
        "vmConfig": {"disks": [{"sequenceNum": 1, "pciType": "VIRTIO", "volumeUrn": VOL, "diskName": "sys",
                                "quantityGB": 40, "datastoreUrn": DS, "storageType": "NAS", "isThin": True,
                                "indepDisk": False, "persistentDisk": True, "type": "normal"}]}}
    v.update(over)
    return v


def chain(*nodes: tuple[str, str]) -> dict[str, Any]:
    """Snapshots (name, type), each the child of the previous; urns .../snapshots:1, :2, ..."""
    root: dict[str, Any] | None = None
    cur: dict[str, Any] | None = None
    for i, (name, typ) in enumerate(nodes, 1):
        node = {"urn": f"{VM_URN}:snapshots:{i}", "name": name, "type": typ, "status": "ready",
                "createTime": f"2026-01-0{i} 02:00:00", "childSnapshots": []}
        if cur is None:
            root = node
        else:
            cur["childSnapshots"].append(node)
        cur = node
    return {"rootSnapshots": [root] if root else []}


def facts(snapshots: dict[str, Any] | None = None, **kw: Any) -> VmFacts:
    datastores = [{"urn": DS, "name": "nas", "storageType": "NAS", "capacityGB": 9000, "freeSizeGB": 8000}]
    return VmFacts.from_dicts(kw.pop("vm", None) or vm(), host={"urn": f"{SITE}:hosts:1", "arch": "x86_64"},
                              datastores=datastores, os_catalogue=OS, snapshots=snapshots, **kw)


def snap_urn(i: int) -> str:
    return f"{VM_URN}:snapshots:{i}"


# --- Finding and Assessment as values ------------------------------------------------------------------

def test_findings_are_equal_only_when_rule_message_disks_and_severity_all_match() -> None:
    base = Finding("disk-ide", "blocker", "IDE disk: sys", "fix it", ["sys"])
    assert base == Finding("disk-ide", "blocker", "IDE disk: sys", "another remediation", ["sys"])
    assert base != Finding("disk-shared", "blocker", "IDE disk: sys", "fix it", ["sys"])
    assert base != Finding("disk-ide", "blocker", "IDE disk: data", "fix it", ["sys"])
    assert base != Finding("disk-ide", "blocker", "IDE disk: sys", "fix it", ["data"])
    assert base != Finding("disk-ide", "warning", "IDE disk: sys", "fix it", ["sys"])
    # only the severity matches: not equal (each field must match, not any)
    assert base != Finding("x", "blocker", "y", "fix it", ["z"])
    assert base != ("disk-ide", "blocker", "IDE disk: sys")


def test_assessment_has_names_only_the_rules_that_fired() -> None:
    a = assess(facts(vm=vm(toolsVersion="")))
    assert a.has("tools-missing")
    assert not a.has("disk-ide")
    assert not assess(facts()).has("tools-missing")


def test_assessment_json_names_every_field_and_the_main_reason() -> None:
    a = assess(facts(vm=vm(toolsVersion="")))
    j = a.to_json()
    assert j["urn"] == VM_URN and j["name"] == "app-01" and j["provisional"] is False
    assert j["verdict"] == "blocked"   # tools-missing is a blocker (rules.md)
    assert j["kinds"] == {"cbt": False, "standard": False, "memory": False, "consistent": False}
    assert j["main_reason"] == "tools-missing"
    assert [f["rule"] for f in j["findings"]] == ["tools-missing"]
    assert set(j) == {"urn", "name", "verdict", "kinds", "findings", "main_reason", "provisional"}


def test_an_info_finding_is_no_main_reason_in_json() -> None:
    a = assess(facts(snapshots=None, snapshots_known=False))
    assert a.provisional and a.rules == ["snapshots-unknown"]
    j = a.to_json()
    assert j["main_reason"] is None and j["provisional"] is True and j["verdict"] == "ready"


# --- when a finished task breaks the chain: its finish time (else its start), in ms, against the last backup

LAST_BACKUP = 1000.0  # epoch seconds


def chain_facts(**task: Any) -> VmFacts:
    t = {"urn": f"{SITE}:tasks:1", "type": "ExpandVolume", "entityUrn": VM_URN, "status": "success", **task}
    k = BackupKnowledge(LAST_BACKUP, {VOL: VolumeCbtState(VOL, "T0", "4", size_gb=40)})
    return facts(knowledge=k, tasks_since_backup=[t])


@pytest.mark.parametrize("times,breaks", [
    ({"startTime": 900_000, "finishTime": 1_000_500}, True),    # finished 0.5 s after the backup
    ({"startTime": 900_000, "finishTime": 999_500}, False),     # finished 0.5 s before it
    ({"startTime": 1_000_500}, True),                           # still no finish time: its start counts
    ({"startTime": 999_000}, False),
    ({}, True),                                                 # no times at all: cannot be ruled out
], ids=["finished-after", "finished-before", "started-after", "started-before", "no-times"])
def test_a_task_counts_when_it_ended_after_the_last_backup(times: dict[str, int], breaks: bool) -> None:
    a = assess(chain_facts(**times))
    if breaks:
        assert a.has("cbt-chain-broken")
        f = next(f for f in a.findings if f.rule == "cbt-chain-broken")
        assert f.message == "next backup is full (CBT chain broken): all disks: volume expansion"
        assert f.disks == [VOL]
    else:
        assert not a.has("cbt-chain-broken")


# --- the snapshot tree read after the rules ran ------------------------------------------------------

def test_with_snapshot_tree_keeps_a_provisional_assessment_and_an_unchanged_one() -> None:
    f = facts(snapshots=None, snapshots_known=False)
    a = assess(f)
    tree = SnapshotTree.from_dict(chain(("fctui-j1", "CBTbackup")))
    assert with_snapshot_tree(a, tree, None) is a           # provisional: not its business
    b = assess(facts(snapshots=chain(("fctui-j1", "CBTbackup"))))
    assert with_snapshot_tree(b, None, None) is b           # no tree read
    assert with_snapshot_tree(b, tree, None) is b           # the same findings


def test_with_snapshot_tree_derives_limit_findings_and_verdict_again() -> None:
    a = assess(facts(snapshots=chain()))
    assert a.verdict == "ready" and a.findings == []
    near = SnapshotTree.from_dict(chain(*[(f"other-{i}", "backup") for i in range(28)]))
    b = with_snapshot_tree(a, near, None)
    assert b is not a and b.urn == a.urn and b.name == a.name and not b.provisional
    assert b.rules == ["snapshot-limit-near"] and b.verdict == "degraded"
    assert b.findings[0].message == "28 backup snapshots: 4 left before the limit of 32"
    full = SnapshotTree.from_dict(chain(*[(f"other-{i}", "backup") for i in range(32)]))
    c = with_snapshot_tree(b, full, None)
    assert c.rules == ["snapshot-limit"] and c.verdict == "blocked"
    assert c.kinds == {"cbt": False, "standard": False, "memory": True, "consistent": True}
    # and back to none: the other findings stay, the tree's go
    d = with_snapshot_tree(assess(facts(vm=vm(toolsVersion=""), snapshots=chain())), full, None)
    assert d.rules == ["tools-missing", "snapshot-limit"]   # blockers in the catalog's order
    e = with_snapshot_tree(d, SnapshotTree.from_dict(chain()), None)
    assert e.rules == ["tools-missing"] and e.verdict == "blocked"


def test_with_owned_snapshots_narrows_the_leftover_finding() -> None:
    tree_d = chain(("fctui-j1", "CBTbackup"), ("fctui-j2", "CBTbackup"))
    f = facts(snapshots=tree_d, knowledge=BackupKnowledge())
    a = assess(f)
    assert a.rules == [LEFTOVER] and a.verdict == "degraded"
    tree = f.snapshot_tree
    # nothing owned, no tree, no leftover finding: unchanged
    assert with_owned_snapshots(a, tree, f.knowledge, ()) is a
    assert with_owned_snapshots(a, None, f.knowledge, {snap_urn(1)}) is a
    clean = assess(facts(snapshots=chain()))
    assert with_owned_snapshots(clean, tree, f.knowledge, {snap_urn(1)}) is clean
    # a snapshot the tree does not hold: nothing narrows
    assert with_owned_snapshots(a, tree, f.knowledge, {snap_urn(9)}) is a
    # one of the two owned by a running job: the finding names only the other
    b = with_owned_snapshots(a, tree, f.knowledge, [snap_urn(1)])
    assert b is not a and b.rules == [LEFTOVER] and b.verdict == "degraded"
    assert b.urn == a.urn and b.name == a.name and b.provisional == a.provisional
    msg = b.findings[0].message
    assert "fctui-j2" in msg and "fctui-j1" not in msg
    # both owned: the finding is gone and the VM is ready again
    c = with_owned_snapshots(a, tree, f.knowledge, iter([snap_urn(1), snap_urn(2)]))
    assert c.rules == [] and c.verdict == "ready"
    assert c.kinds == {"cbt": True, "standard": True, "memory": True, "consistent": True}


def test_confirmed_drops_only_the_snapshots_unknown_finding() -> None:
    p = assess(facts(vm=vm(toolsVersion=""), snapshots=None, snapshots_known=False))
    assert p.provisional and p.rules == ["tools-missing", "snapshots-unknown"]
    c = confirmed(p)
    assert not c.provisional and c.rules == ["tools-missing"]
    assert (c.urn, c.name, c.verdict, c.kinds_mask) == (p.urn, p.name, p.verdict, p.kinds_mask)
    final = assess(facts(vm=vm(toolsVersion=""), snapshots=None, snapshots_known=True))
    assert confirms(p, final) and confirms(p, c)
    assert not confirms(c, final)                                  # not provisional
    assert not confirms(p, p)                                      # the final one is still provisional
    other = assess(facts(vm=vm(toolsVersion="", isLinkClone=True)))
    assert not confirms(p, other)                                   # other findings
    worse = Assessment(final.urn, final.name, "degraded", final.kinds_mask, final.findings)
    assert not confirms(p, worse)                                   # another verdict
    fewer = Assessment(final.urn, final.name, final.verdict, final.kinds_mask | 1, final.findings)
    assert not confirms(p, fewer)                                   # other kinds


def test_a_task_that_ended_at_the_very_time_of_the_backup_counts() -> None:
    assert assess(chain_facts(startTime=900_000, finishTime=1_000_000)).has("cbt-chain-broken")


# --- each cause of a broken chain, word for word -----------------------------------------------------------

VOL2 = f"{SITE}:volumes:2"


def two_disks(**over: Any) -> dict[str, Any]:
    d1 = vm()["vmConfig"]["disks"][0]
    d2 = dict(d1, sequenceNum=2, volumeUrn=VOL2, diskName="data", quantityGB=over.pop("size2", 100))
    return vm(vmConfig={"disks": [d1, d2]}, **over)


def chain_message(f: VmFacts) -> tuple[str, list[str]] | None:
    a = assess(f)
    c = next((x for x in a.findings if x.rule == "cbt-chain-broken"), None)
    return (c.message.removeprefix("next backup is full (CBT chain broken): "), c.disks) if c else None


def state(vol: str, create: str = "T0", chg: str = "4", full: bool = True, size: int | None = None) -> VolumeCbtState:
    return VolumeCbtState(vol, create, chg, fully_backed_up=full, size_gb=size)


def known(**vols: VolumeCbtState) -> BackupKnowledge:
    return BackupKnowledge(LAST_BACKUP, {VOL: vols.get("v1", state(VOL)), VOL2: vols.get("v2", state(VOL2))})


def test_tasks_are_read_past_the_ones_that_do_not_count() -> None:
    tasks = [
        {"urn": "t1", "type": "StopVm", "entityUrn": VM_URN, "status": "failed"},             # did not succeed
        {"urn": "t2", "type": "ModifyVmName", "entityUrn": VM_URN, "status": "success"},      # breaks nothing
        {"urn": "t3", "type": "StopVm", "entityUrn": VM_URN, "status": "success", "finishTime": 5_000},  # before
        {"urn": "t4", "type": "ExpandVol", "entityUrn": VOL2, "status": "success"},           # a disk's own task
        {"urn": "t5", "type": "HostReboot", "entityUrn": f"{SITE}:hosts:1", "status": "success"},
        {"urn": "t6", "type": "RebootCNA", "entityUrn": f"{SITE}:hosts:1", "status": "success"},  # same cause once
    ]
    got = chain_message(facts(vm=two_disks(), knowledge=known(), tasks_since_backup=tasks))
    assert got == ("all disks: host reboot; data: volume expansion", [VOL, VOL2])


def test_a_disk_task_alone_breaks_only_that_disk() -> None:
    tasks = [{"urn": "t4", "type": "ResizeVolume", "entityUrn": VOL2, "status": "success"},
             {"urn": "t5", "type": "ExtendVolume", "entityUrn": VOL2, "status": "success"}]
    got = chain_message(facts(vm=two_disks(), knowledge=known(), tasks_since_backup=tasks))
    assert got == ("data: volume expansion, volume expansion", [VOL2])


def test_a_vm_stopped_since_a_running_backup_is_a_power_off() -> None:
    stopped = two_disks(status="stopped", pvDriverStatus="notRunning")
    assert chain_message(facts(vm=stopped, knowledge=known())) == ("all disks: power-off", [VOL, VOL2])
    k = BackupKnowledge(LAST_BACKUP, known().volumes, last_vm_status="stopped")
    assert chain_message(facts(vm=stopped, knowledge=k)) is None         # it was stopped then too
    stop_task = [{"urn": "t", "type": "StopVm", "entityUrn": VM_URN, "status": "success"}]
    assert chain_message(facts(vm=stopped, knowledge=known(), tasks_since_backup=stop_task)) == (
        "all disks: power-off", [VOL, VOL2])                               # named once


@pytest.mark.parametrize("v2,now,expect", [
    (None, None, "data: no CBT state from an earlier backup"),
    (state(VOL2, full=False), None, "data: the last backup of this disk did not finish"),
    (state(VOL2, size=50), None, "data: volume expansion (50 -> 100 GB)"),
    (state(VOL2, size=100), None, None),
    (state(VOL2), state(VOL2, create="T1", chg="9"), "data: CBT re-initialised (volCBTCreateTime changed)"),
    (state(VOL2), state(VOL2, create="", chg="3"), "data: chgID reset (4 -> 3)"),
    (state(VOL2), state(VOL2, chg="3"), "data: chgID reset (4 -> 3)"),
    (state(VOL2), state(VOL2, chg="4"), None),
    (state(VOL2), state(VOL2, chg="5"), None),
    (state(VOL2), state(VOL2, chg="x"), "data: chgID unreadable"),
    (state(VOL2, full=False, size=50), state(VOL2, chg="1"),
     "data: the last backup of this disk did not finish, volume expansion (50 -> 100 GB), chgID reset (4 -> 1)"),
])
def test_each_disk_cause(v2: VolumeCbtState | None, now: VolumeCbtState | None, expect: str | None) -> None:
    vols = {VOL: state(VOL)} | ({VOL2: v2} if v2 is not None else {})
    k = BackupKnowledge(LAST_BACKUP, vols)
    got = chain_message(facts(vm=two_disks(), knowledge=k, cbt_now={VOL2: now} if now else {}))
    assert got == ((expect, [VOL2]) if expect else None)


def test_causes_of_two_disks_are_listed_disk_by_disk() -> None:
    k = BackupKnowledge(LAST_BACKUP, {VOL: state(VOL, full=False), VOL2: state(VOL2, full=False)})
    assert chain_message(facts(vm=two_disks(), knowledge=k)) == (
        "sys: the last backup of this disk did not finish; data: the last backup of this disk did not finish",
        [VOL, VOL2])


def test_assess_many_assesses_each_vm_in_order() -> None:
    from fctui.rules.engine import assess_many
    out = assess_many([facts(), facts(vm=vm(toolsVersion="", urn=f"{SITE}:vms:i-2"))])
    assert [(a.urn, a.verdict) for a in out] == [(VM_URN, "ready"), (f"{SITE}:vms:i-2", "blocked")]


def test_a_disk_without_a_recorded_state_does_not_hide_the_next_disks_causes() -> None:
    k = BackupKnowledge(LAST_BACKUP, {VOL2: state(VOL2, full=False)})
    assert chain_message(facts(vm=two_disks(), knowledge=k)) == (
        "sys: no CBT state from an earlier backup; data: the last backup of this disk did not finish", [VOL, VOL2])


# --- what the restore points own is never a leftover ---------------------------------------------------------

def three_snapshots() -> dict[str, Any]:
    # 1: ours and owned by a restore point, 2: ours and owned by nobody, 3: not named as ours
    return chain(("fctui-j1", "CBTbackup"), ("fctui-j2", "CBTbackup"), ("nightly", "CBTbackup"))


def test_the_tree_refreshes_count_what_the_points_own() -> None:
    k = BackupKnowledge(owned_snapshot_urns=frozenset({snap_urn(1)}))
    f = facts(snapshots=three_snapshots(), knowledge=k)
    a = assess(f)
    assert a.rules == [LEFTOVER]
    msg = a.findings[0].message
    assert "fctui-j2" in msg and "nightly" in msg and "fctui-j1" not in msg
    # a job now owns j2: only the unnamed one is left, j1 still owned by its point
    b = with_owned_snapshots(a, f.snapshot_tree, k, {snap_urn(2)})
    assert b.rules == [LEFTOVER] and "nightly" in b.findings[0].message
    assert "fctui-j1" not in b.findings[0].message and "fctui-j2" not in b.findings[0].message
    # the same through with_snapshot_tree
    clean = assess(facts(snapshots=chain(), knowledge=k))
    c = with_snapshot_tree(clean, f.snapshot_tree, k, {snap_urn(2)})
    assert c.rules == [LEFTOVER] and c.provisional is False
    assert "fctui-j1" not in c.findings[0].message and "nightly" in c.findings[0].message


def test_owned_snapshots_keep_a_provisional_assessment_provisional() -> None:
    tree = SnapshotTree.from_dict(chain(("fctui-j1", "CBTbackup"), ("fctui-j2", "CBTbackup")))
    left = Finding("leftover-backup-snapshot", "warning", "two leftovers", "delete them")
    unknown = Finding("snapshots-unknown", "info", "not read yet", "wait")
    a = Assessment(VM_URN, "app-01", "degraded", 15, [left, unknown], provisional=True)
    b = with_owned_snapshots(a, tree, None, {snap_urn(1)})
    assert b is not a and b.provisional is True and b.rules == [LEFTOVER, "snapshots-unknown"]


def test_confirmed_is_final() -> None:
    p = assess(facts(snapshots=None, snapshots_known=False))
    assert confirmed(p).provisional is False


def test_two_vm_wide_causes_are_listed_with_commas() -> None:
    tasks = [{"urn": "t1", "type": "HostReboot", "entityUrn": f"{SITE}:hosts:1", "status": "success"},
             {"urn": "t2", "type": "StopVm", "entityUrn": VM_URN, "status": "success"}]
    assert chain_message(facts(vm=two_disks(), knowledge=known(), tasks_since_backup=tasks)) == (
        "all disks: host reboot, power-off", [VOL, VOL2])


def test_facts_carry_the_time_they_were_taken() -> None:
    assert VmFacts.from_dicts(vm()).now == 0.0
    assert VmFacts.from_dicts(vm(), now=1234.5).now == 1234.5


# --- the leftover finding's words, and disk lists -------------------------------------------------------------

LEFT_WORDS = "backup snapshot owned by no restore point or running job: "


def leftovers(n: int) -> dict[str, Any]:
    return chain(*((f"fctui-j{i}", "CBTbackup") for i in range(1, n + 1)))


def test_the_leftover_finding_names_five_snapshots_and_counts_the_rest() -> None:
    named = ", ".join(f"fctui-j{i} (CBTbackup, 2026-01-0{i} 02:00:00)" for i in range(1, 6))
    seven = assess(facts(snapshots=leftovers(7), knowledge=BackupKnowledge()))
    assert seven.findings[0].message == LEFT_WORDS + named + " and 2 more"
    six = assess(facts(snapshots=leftovers(6), knowledge=BackupKnowledge()))
    assert six.findings[0].message == LEFT_WORDS + named + " and 1 more"
    five = assess(facts(snapshots=leftovers(5), knowledge=BackupKnowledge()))
    assert five.findings[0].message == LEFT_WORDS + named


def test_a_leftover_without_name_or_time_is_named_by_its_urn() -> None:
    tree = {"rootSnapshots": [{"urn": snap_urn(1), "name": "", "type": "CBTbackup", "status": "ready",
                               "childSnapshots": []}]}
    a = assess(facts(snapshots=tree, knowledge=BackupKnowledge()))
    assert a.findings[0].message == LEFT_WORDS + f"{snap_urn(1)} (CBTbackup, time unknown)"


def test_no_tree_and_an_empty_tree_leave_nothing_over() -> None:
    assert leftover_backup_snapshots(None, BackupKnowledge()) == []
    assert leftover_backup_snapshots(SnapshotTree.from_dict({"rootSnapshots": []}), None) == []


def test_two_ide_disks_are_listed_with_a_comma() -> None:
    v = two_disks()
    for d in v["vmConfig"]["disks"]:
        d["pciType"] = "IDE"
    ide = next(f for f in assess(facts(vm=v)).findings if f.rule == "disk-ide")
    assert ide.message == "disk on the IDE bus: sys, data"


@pytest.mark.parametrize("arch,family", [
    ("x86_64", "x86_64"), ("AMD64", "x86_64"), ("i386", "x86_64"), ("i686", "x86_64"), ("x64", "x86_64"),
    (" X86 ", "x86_64"), ("aarch64", "aarch64"), ("ARM64", "aarch64"), ("armv8", "aarch64"),
    ("", ""), (None, ""), ("sparc", ""), ("ppc64le", ""),
])
def test_the_architecture_families_a_vrm_may_report(arch: str, family: str) -> None:
    assert arch_family(arch) == family


def test_the_task_type_cache_stops_growing_at_4096(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile VRM inventing task types cannot grow the cache forever; the answers stay right. (An empty
    cache of its own: the process-wide one is left as other tests found it.)"""
    cache: dict[str, tuple[bool, str | None]] = {}
    monkeypatch.setattr(engine, "_TASK_CLASS", cache)
    for i in range(4200):
        assert classify_task_type(f"InventedTaskNo{i}") == (False, None)
    assert len(cache) == 4096
    assert classify_task_type("StopVmInvented") == (True, "power-off")   # worked out again, not cached
