"""The inventory rules: each fires on its condition and stays silent otherwise, combinations, odd data,
and properties (hypothesis). Facts are built from dicts shaped like the VRM's answers."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fctui.rules import catalog as C
from fctui.rules.engine import assess, classify_task_type, os_class
from fctui.rules.facts import BackupKnowledge, VmFacts, VolumeCbtState

SITE = "urn:sites:4D9D0815"
VM_URN = f"{SITE}:vms:i-000000E5"
DS_NAS = f"{SITE}:datastores:2"
DS_LOCAL = f"{SITE}:datastores:3"
DS_LUN = f"{SITE}:datastores:4"
DS_FULL = f"{SITE}:datastores:5"
HOST = f"{SITE}:hosts:7"

OS_CATALOGUE = {
    "windows": [{"id": 35, "versionDes": "Windows Server 2019 Datacenter 64bit"},
                {"id": 202, "versionDes": "Other Windows(64 bit)"}],
    "linux": [{"id": 10121, "versionDes": "EulerOS 2.0 SP9 64bit"},
              {"id": 10088, "versionDes": "CentOS 7.6 64bit"},
              {"id": 302, "versionDes": "Other Linux(64 bit)"}],
    "other": [{"id": 402, "versionDes": "Other(64 bit)"}],
}
DATASTORES = [
    {"urn": DS_NAS, "name": "ds-nas", "storageType": "NAS", "capacityGB": 20000, "freeSizeGB": 15000,
     "actualFreeSizeGB": 15000},
    {"urn": DS_LOCAL, "name": "ds-local", "storageType": "LOCALPOME", "capacityGB": 4000, "freeSizeGB": 3000},
    {"urn": DS_LUN, "name": "ds-lun", "storageType": "LUN", "capacityGB": 500, "freeSizeGB": 400},
    {"urn": DS_FULL, "name": "ds-full", "storageType": "NAS", "capacityGB": 500, "freeSizeGB": 4,
     "actualFreeSizeGB": 4},
]
HOST_X86 = {"urn": HOST, "name": "cna-01", "arch": "x86_64"}
HOST_ARM = {"urn": HOST, "name": "cna-arm-01", "arch": "aarch64"}


def disk(n: int = 1, **over: Any) -> dict[str, Any]:
    d = {"sequenceNum": n, "pciType": "VIRTIO", "volumeUrn": f"{SITE}:volumes:{100 + n}",
         "volumeUrl": f"/vol/{n}", "diskName": f"disk{n}", "quantityGB": 40, "datastoreUrn": DS_NAS,
         "datastoreName": "ds-nas", "storageType": "NAS", "isThin": True, "indepDisk": False,
         "persistentDisk": True, "type": "normal", "systemVolume": n == 1, "volumeFormat": "qcow2"}
    d.update(over)
    return d


def vm(**over: Any) -> dict[str, Any]:
    """A healthy running EulerOS VM with Tools: verdict ready, no findings."""
    v: dict[str, Any] = {
        "urn": VM_URN, "uri": "/service/sites/4D9D0815/vms/i-000000E5", "uuid": "u-1", "name": "db-01",
        "status": "running", "pvDriverStatus": "running", "toolInstallStatus": "empty",
        "toolsVersion": "2.5.0.156", "hostUrn": HOST, "isTemplate": False, "isLinkClone": False,
        "arch": "x86_64", "osOptions": {"osType": "Linux", "osVersion": 10121},
        "vmConfig": {"cpu": {"quantity": 2}, "memory": {"quantityMB": 4096}, "disks": [disk(1)]},
    }
    v.update(over)
    return v


def facts(v: dict[str, Any] | None = None, **kw: Any) -> VmFacts:
    kw.setdefault("host", HOST_X86)
    kw.setdefault("datastores", DATASTORES)
    kw.setdefault("os_catalogue", OS_CATALOGUE)
    return VmFacts.from_dicts(v if v is not None else vm(), **kw)


def tree(*nodes: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
    """A chain of snapshots (each the child of the previous): (name, type[, urn])."""
    root: dict[str, Any] | None = None
    cur: dict[str, Any] | None = None
    for i, n in enumerate(nodes):
        urn = n[2] if len(n) > 2 else f"{VM_URN}:snapshots:{i + 1}"  # type: ignore[misc]
        node = {"urn": urn, "name": n[0], "type": n[1], "status": "ready",
                "createTime": f"2026-01-{i % 28 + 1:02d} 02:00:00", "childSnapshots": []}
        if cur is None:
            root = node
        else:
            cur["childSnapshots"].append(node)
        cur = node
    return {"currentSnapshot": {"urn": cur["urn"] if cur else ""}, "rootSnapshots": [root] if root else []}


def rules_of(f: VmFacts) -> set[str]:
    return {x.rule for x in assess(f).findings}


def test_healthy_vm_is_ready_with_every_kind() -> None:
    a = assess(facts())
    assert a.verdict == "ready"
    assert a.findings == []
    assert a.kinds == {"cbt": True, "standard": True, "memory": True, "consistent": True}
    assert a.main_reason is None


# --- each rule: fires on its condition, silent on the healthy VM (checked above) ----------------------

CASES: list[tuple[str, Any]] = [
    ("tools-missing", lambda: facts(vm(toolsVersion=""))),
    ("tools-not-running", lambda: facts(vm(pvDriverStatus="notRunning"))),
    ("state-stopped", lambda: facts(vm(status="stopped", pvDriverStatus="notRunning"))),
    ("state-hibernated", lambda: facts(vm(status="hibernated", pvDriverStatus="notRunning"))),
    ("state-unsupported", lambda: facts(vm(status="migrating"))),
    ("template", lambda: facts(vm(isTemplate=True))),
    ("linked-clone", lambda: facts(vm(isLinkClone=True))),
    ("disk-ide", lambda: facts(vm(vmConfig={"disks": [disk(1, pciType="IDE")]}))),
    ("disk-shared", lambda: facts(vm(vmConfig={"disks": [disk(1), disk(2, type="share", indepDisk=True)]}))),
    ("shared-disk-x86", lambda: facts(vm(vmConfig={"disks": [disk(1), disk(2, type="share", indepDisk=True)]}))),
    ("disk-independent", lambda: facts(vm(vmConfig={"disks": [disk(1), disk(2, indepDisk=True)]}))),
    ("all-disks-independent", lambda: facts(vm(vmConfig={"disks": [disk(1, indepDisk=True), disk(2, indepDisk=True)]}))),
    ("storage-unsupported", lambda: facts(vm(vmConfig={"disks": [disk(1), disk(2, storageType="LUN", datastoreUrn=DS_LUN)]}))),
    ("snapshot-limit", lambda: facts(snapshots=tree(*[(f"b{i}", "CBTbackup") for i in range(32)]),
                                     knowledge=BackupKnowledge(owned_snapshot_urns=frozenset(
                                         f"{VM_URN}:snapshots:{i + 1}" for i in range(32))))),
    ("snapshot-limit-near", lambda: facts(snapshots=tree(*[(f"b{i}", "backup") for i in range(28)]))),
    ("leftover-backup-snapshot", lambda: facts(snapshots=tree(("fctui-20260101", "CBTbackup")))),
    ("task-in-progress", lambda: facts(active_tasks=[{"urn": f"{SITE}:tasks:9", "type": "MigrateVolume",
                                                      "entityUrn": f"{SITE}:volumes:101", "status": "running",
                                                      "progress": 40}])),
    ("consistency-not-euleros", lambda: facts(vm(osOptions={"osType": "Linux", "osVersion": 10088}))),
    ("cbt-chain-broken", lambda: facts(knowledge=BackupKnowledge(1000.0, {
        f"{SITE}:volumes:101": VolumeCbtState(f"{SITE}:volumes:101", "2026-01-01 02:00:00", "7", fully_backed_up=False)}))),
    ("target-space-low", lambda: facts(vm(vmConfig={"disks": [disk(1, datastoreUrn=DS_FULL)]}))),
    ("guest-os-unlisted", lambda: facts(vm(osOptions={"osType": "Other", "osVersion": 402}))),
]


# --- the expectation table, written by hand from shared/rules.md and the product document -------------
# Not read from fctui.rules: a catalog that drifts from the documents (say, disk-ide downgraded to a
# warning) must fail here. Severity, the snapshot kinds the rule rules out, and the stage it is evaluated in.
# "blocking" in the documents' sense is severity == blocker (a blocker finding makes the VM blocked).
ALL = frozenset({"cbt", "standard", "memory", "consistent"})
NONE: frozenset[str] = frozenset()
EXPECTED_RULES: dict[str, tuple[str, frozenset[str]]] = {
    # rules.md "Rules" table (the inventory verdict)
    "tools-missing": ("blocker", ALL),                       # seed, top warning
    "tools-not-running": ("blocker", ALL),                   # seed, top warning, §1
    "state-stopped": ("warning", frozenset({"cbt", "memory", "consistent"})),   # §1: standard only
    "state-hibernated": ("blocker", frozenset({"cbt", "standard", "consistent"})),  # §1: memory only
    "state-unsupported": ("blocker", ALL),
    "template": ("blocker", ALL),                            # §2 VM Backup Scenario Limitations
    "linked-clone": ("blocker", ALL),
    "disk-ide": ("blocker", ALL),                            # §1 disk requirements
    "disk-shared": ("blocker", ALL),                         # §1 shared disks: no snapshot
    "shared-disk-x86": ("info", frozenset({"memory", "consistent"})),  # §3 Architecture Limitations
    "disk-independent": ("warning", NONE),                   # left out and named
    "all-disks-independent": ("blocker", ALL),
    "storage-unsupported": ("blocker", ALL),                 # §3 Disk Storage Type Requirements
    "snapshot-limit": ("blocker", frozenset({"cbt", "standard"})),  # 32 backup snapshots
    "snapshot-limit-near": ("warning", NONE),
    "leftover-backup-snapshot": ("warning", NONE),
    "task-in-progress": ("blocker", ALL),                    # §2 mutually exclusive operations
    "consistency-not-euleros": ("info", frozenset({"consistent", "memory"})),  # §3
    "cbt-chain-broken": ("warning", NONE),                   # §2 Backup Failure Risks: next backup full
    "target-space-low": ("warning", NONE),
    "guest-os-unlisted": ("warning", NONE),
}
EXPECTED_LAUNCH_RULES: dict[str, str] = {  # rules.md launch-time and restore-time table: id -> severity
    "host-sockets-busy": "info", "target-volumes-busy": "info", "business-hours": "warning",
    "cross-storage-restore": "blocker", "restore-space": "blocker", "restore-overwrite-running": "blocker",
    "restore-arch-mismatch": "blocker", "restore-point-damaged": "blocker", "restore-unmapped": "blocker",
    "repo-space-low": "blocker", "vrm-version-untested": "warning",
}
# The verdict is the worst severity over the findings; info never changes it (rules.md "Verdicts").
VERDICT_OF_SEVERITY = {"blocker": "blocked", "warning": "degraded", "info": "ready"}
MY_RANK = {"info": 0, "warning": 1, "blocker": 2}


def expected_verdict(severities: list[str]) -> str:
    worst = max((MY_RANK[s] for s in severities), default=0)
    return {0: "ready", 1: "degraded", 2: "blocked"}[worst]


def expected_kinds(rules: list[str]) -> dict[str, bool]:
    out = set(ALL)
    for r in rules:
        out -= EXPECTED_RULES[r][1] if r in EXPECTED_RULES else EXTENSION_RULES_OUT[r]
    return {k: k in out for k in ("cbt", "standard", "memory", "consistent")}


# Our own rules (not in rules.md), documented in the catalog module; rules out nothing but no-disks.
EXTENSION_RULES_OUT = {"no-disks": ALL, "data-incomplete": NONE, "snapshots-unknown": NONE}

# Each case's whole verdict, by hand: the rule's own severity unless another rule fires alongside
# (the shared-disk cases also fire each other: disk-shared is a blocker).
CASE_VERDICT = {
    "tools-missing": "blocked", "tools-not-running": "blocked", "state-stopped": "degraded",
    "state-hibernated": "blocked", "state-unsupported": "blocked", "template": "blocked",
    "linked-clone": "blocked", "disk-ide": "blocked", "disk-shared": "blocked", "shared-disk-x86": "blocked",
    "disk-independent": "degraded", "all-disks-independent": "blocked", "storage-unsupported": "blocked",
    "snapshot-limit": "blocked", "snapshot-limit-near": "degraded", "leftover-backup-snapshot": "degraded",
    "task-in-progress": "blocked", "consistency-not-euleros": "ready", "cbt-chain-broken": "degraded",
    "target-space-low": "degraded", "guest-os-unlisted": "degraded",
}


def test_every_main_rule_has_a_case() -> None:
    assert {r for r, _ in CASES} == set(EXPECTED_RULES) == set(CASE_VERDICT)


def test_catalog_ids_match_the_documented_tables() -> None:
    assert set(C.MAIN_RULE_IDS) == set(EXPECTED_RULES)
    assert set(C.LAUNCH_RULE_IDS) == set(EXPECTED_LAUNCH_RULES)
    assert set(C.RULES) == set(EXPECTED_RULES) | set(EXPECTED_LAUNCH_RULES) | set(EXTENSION_RULES_OUT)


@pytest.mark.parametrize("rule", sorted(EXPECTED_RULES))
def test_catalog_entry_matches_the_documents(rule: str) -> None:
    severity, out = EXPECTED_RULES[rule]
    info = C.RULES[rule]
    assert (info.severity, set(info.rules_out_kinds), info.stage) == (severity, set(out), "inventory")
    assert info.remediation and not info.extension


@pytest.mark.parametrize("rule", sorted(EXPECTED_LAUNCH_RULES))
def test_launch_catalog_entry_matches_the_documents(rule: str) -> None:
    info = C.RULES[rule]
    assert info.severity == EXPECTED_LAUNCH_RULES[rule]
    assert info.stage in ("launch", "restore", "connect") and info.remediation


@pytest.mark.parametrize("rule,make", CASES, ids=[c[0] for c in CASES])
def test_rule_fires_on_its_condition(rule: str, make: Any) -> None:
    a = assess(make())
    fired = [f for f in a.findings if f.rule == rule]
    assert fired, f"{rule} did not fire: {a}"
    f = fired[0]
    severity, out = EXPECTED_RULES[rule]
    assert f.severity == severity
    assert f.message and f.remediation
    # the kinds the rule rules out are gone, and the kinds left are exactly those no finding rules out
    for k in out:
        assert a.kinds[k] is False, k
    assert a.kinds == expected_kinds([x.rule for x in a.findings])
    # the verdict: written per case, and the worst severity over the findings
    assert a.verdict == CASE_VERDICT[rule] == expected_verdict([x.severity for x in a.findings])
    assert (a.verdict == "blocked") == (severity == "blocker" or any(x.severity == "blocker" for x in a.findings))


def test_rules_md_ids_match_catalog() -> None:
    """Every rule id in the shared catalog exists here with its severity (skipped without the file)."""
    here = Path(__file__).resolve()
    found = [q for q in (here.parents[3] / "shared" / "rules.md", here.parents[4] / "shared" / "rules.md")
             if q.exists()]  # beside the checkout, or beside a worktree's parent folder
    if not found:
        pytest.skip("shared/rules.md not available")
    p = found[0]
    text = p.read_text(encoding="utf-8")
    ids = re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.M)
    rule_ids = [i for i in ids if i not in C.STORAGE_TYPES and i not in C.KINDS and i not in C.VERDICTS]
    assert set(rule_ids) == set(C.MAIN_RULE_IDS) | set(C.LAUNCH_RULE_IDS)
    for line in text.splitlines():
        m = re.match(r"^\| `([a-z0-9-]+)` \| [^|]+ \| (blocker|warning|info)\b", line)
        if m and m.group(1) in C.MAIN_RULE_IDS:
            assert C.RULES[m.group(1)].severity == m.group(2), m.group(1)
        if m and m.group(1) in EXPECTED_RULES:  # and the hand-written table was copied right
            assert EXPECTED_RULES[m.group(1)][0] == m.group(2), m.group(1)
        if m and m.group(1) in EXPECTED_LAUNCH_RULES:
            assert EXPECTED_LAUNCH_RULES[m.group(1)] == m.group(2), m.group(1)


def test_storage_table_matches_rules_md() -> None:
    assert C.SUPPORTED_STORAGE_TYPES == {"LOCALPOME", "LUNPOME", "NAS", "advanceSan", "DSWARE", "FusionOneStorage"}
    assert C.storage_class("DSWARE") == C.storage_class("FusionOneStorage") == "distributed"
    assert C.storage_class("san") == "block" and C.storage_class("whatever") == "unknown"


# --- silent when the condition is absent --------------------------------------------------------------

def test_tools_rules_silent_when_tools_fine_or_vm_stopped() -> None:
    assert not {"tools-missing", "tools-not-running"} & rules_of(facts())
    # stopped with Tools installed: pvDriverStatus notRunning is expected, not a finding
    assert "tools-not-running" not in rules_of(facts(vm(status="stopped", pvDriverStatus="notRunning")))


def test_shared_disk_on_arm_has_no_x86_finding() -> None:
    v = vm(arch="aarch64", vmConfig={"disks": [disk(1), disk(2, type="share", indepDisk=True)]})
    r = rules_of(facts(v, host=HOST_ARM))
    assert "disk-shared" in r and "shared-disk-x86" not in r
    # the VM's arch missing: the host's arch decides
    v2 = vm(vmConfig={"disks": [disk(1), disk(2, type="share", indepDisk=True)]})
    del v2["arch"]
    assert "shared-disk-x86" not in rules_of(facts(v2, host=HOST_ARM))


def test_snapshot_rules_thresholds() -> None:
    assert not {"snapshot-limit", "snapshot-limit-near"} & rules_of(
        facts(snapshots=tree(*[(f"b{i}", "backup") for i in range(27)])))
    # normal snapshots do not count toward the backup limit
    assert not {"snapshot-limit", "snapshot-limit-near"} & rules_of(
        facts(snapshots=tree(*[(f"n{i}", "normal") for i in range(32)])))
    r31 = rules_of(facts(snapshots=tree(*[(f"b{i}", "CBTbackup") for i in range(31)])))
    assert "snapshot-limit-near" in r31 and "snapshot-limit" not in r31
    a = assess(facts(snapshots=tree(*[(f"b{i}", "CBTbackup") for i in range(32)])))
    assert a.verdict == "blocked" and a.kinds["cbt"] is False and a.kinds["standard"] is False


def test_leftover_only_for_unowned_snapshots_of_ours_or_of_known_vms() -> None:
    # another product's backup snapshot on a VM we never backed up: not ours to call a leftover
    assert "leftover-backup-snapshot" not in rules_of(facts(snapshots=tree(("eBackup_1", "CBTbackup"))))
    # owned by a restore point: fine
    owned = BackupKnowledge(owned_snapshot_urns=frozenset({f"{VM_URN}:snapshots:1"}))
    assert "leftover-backup-snapshot" not in rules_of(facts(snapshots=tree(("fctui-1", "CBTbackup")), knowledge=owned))
    # a VM we back up with an unowned backup snapshot: leftover
    assert "leftover-backup-snapshot" in rules_of(
        facts(snapshots=tree(("fctui-1", "CBTbackup", f"{VM_URN}:snapshots:1"), ("x", "backup")), knowledge=owned))
    # normal snapshots are never leftovers
    assert "leftover-backup-snapshot" not in rules_of(facts(snapshots=tree(("fctui-x", "normal")), knowledge=owned))


def test_task_in_progress_only_for_active_conflicting_tasks() -> None:
    def t(type_: str, status: str) -> dict[str, Any]:
        return {"urn": f"{SITE}:tasks:1", "type": type_, "entityUrn": VM_URN, "status": status}
    assert "task-in-progress" not in rules_of(facts(active_tasks=[t("MigrateVolume", "success")]))
    assert "task-in-progress" not in rules_of(facts(active_tasks=[t("ModifyVmName", "running")]))
    for ty in ("StopVm", "StartVm", "MigrateVm", "ExpandVolume", "AttachVolume", "CreateVmSnapshot"):
        assert "task-in-progress" in rules_of(facts(active_tasks=[t(ty, "waiting")])), ty


def test_task_type_classification() -> None:
    assert classify_task_type("StopVm") == (True, "power-off")
    assert classify_task_type("ResumeVmSnapshot") == (True, "snapshot revert")
    assert classify_task_type("ResumeVm")[1] is None  # unpause keeps CBT
    assert classify_task_type("ExpandVolume")[1] == "volume expansion"
    assert classify_task_type("HaRestartVm")[1] == "HA restart"
    assert classify_task_type("RebootHost")[1] == "host reboot"
    assert classify_task_type("PrepareBackupResource") == (False, None)


def test_os_classification() -> None:
    assert os_class("EulerOS 2.0 SP9 64bit", "linux") == (True, True)
    assert os_class("CentOS 7.6 64bit", "linux") == (False, True)
    assert os_class("Windows Server 2019 Datacenter 64bit", "windows") == (False, True)
    assert os_class("Windows 7 Professional 64bit", "windows") == (False, False)
    assert os_class("Other Linux(64 bit)", "linux") == (False, False)
    assert os_class("Other(64 bit)", "other") == (False, False)
    assert os_class("Kylin V10 SP1", "linux") == (False, True)


def test_cbt_chain_causes() -> None:
    vol = f"{SITE}:volumes:101"
    rec = {vol: VolumeCbtState(vol, "2026-01-01 02:00:00", "7", size_gb=40)}
    k = BackupKnowledge(1000.0, rec)
    # intact: recorded state matches, no breaking task, VM running
    assert "cbt-chain-broken" not in rules_of(facts(knowledge=k))
    assert "cbt-chain-broken" not in rules_of(facts(knowledge=k, cbt_now={vol: VolumeCbtState(vol, "2026-01-01 02:00:00", "9")}))

    def msg(f: VmFacts) -> str:
        return next(x.message for x in assess(f).findings if x.rule == "cbt-chain-broken")

    stop = {"urn": f"{SITE}:tasks:5", "type": "StopVm", "entityUrn": VM_URN, "status": "success",
            "startTime": "1500000", "finishTime": "1600000"}
    assert "power-off" in msg(facts(knowledge=k, tasks_since_backup=[stop]))
    # a failed stop or one before the last backup breaks nothing
    assert "cbt-chain-broken" not in rules_of(facts(knowledge=k, tasks_since_backup=[dict(stop, status="failed")]))
    assert "cbt-chain-broken" not in rules_of(facts(knowledge=k, tasks_since_backup=[
        dict(stop, startTime="10000", finishTime="20000")]))
    assert "power-off" in msg(facts(vm(status="stopped", pvDriverStatus="notRunning"), knowledge=k))
    assert "volCBTCreateTime" in msg(facts(knowledge=k, cbt_now={vol: VolumeCbtState(vol, "2026-02-02 00:00:00", "1")}))
    assert "chgID reset" in msg(facts(knowledge=k, cbt_now={vol: VolumeCbtState(vol, "2026-01-01 02:00:00", "2")}))
    expanded = vm(vmConfig={"disks": [disk(1, quantityGB=50)]})
    f = facts(expanded, knowledge=k)
    assert "volume expansion" in msg(f)
    assert assess(f).findings[0].disks == [vol]
    # a disk added since the last backup is read in full, and named
    two = vm(vmConfig={"disks": [disk(1), disk(2)]})
    a = assess(facts(two, knowledge=k))
    chain = next(x for x in a.findings if x.rule == "cbt-chain-broken")
    assert chain.disks == [f"{SITE}:volumes:102"] and "disk2" in chain.message
    assert a.verdict == "degraded"


def test_target_space_low_uses_concurrent_merge_load() -> None:
    assert "target-space-low" not in rules_of(facts())
    # a datastore with room for this VM alone, but not for 8 merges at once
    f = facts(merge_load_gb={DS_NAS: 20000.0})
    assert "target-space-low" in rules_of(f)


# --- combinations ------------------------------------------------------------------------------------

def test_stopped_template_on_raw_lun() -> None:
    v = vm(status="stopped", pvDriverStatus="notRunning", isTemplate=True,
           vmConfig={"disks": [disk(1, storageType="LUN", datastoreUrn=DS_LUN, indepDisk=True, pciType="SCSI")]})
    a = assess(facts(v))
    assert a.verdict == "blocked"
    assert {"template", "storage-unsupported", "state-stopped", "all-disks-independent"} <= set(a.rules)
    assert a.main_reason is not None and a.main_reason.rule == "template"
    assert not any(a.kinds.values())


def test_independent_and_shared_disk() -> None:
    v = vm(vmConfig={"disks": [disk(1), disk(2, indepDisk=True), disk(3, type="share", indepDisk=True, pciType="SCSI")]})
    a = assess(facts(v))
    assert {"disk-independent", "disk-shared", "shared-disk-x86"} <= set(a.rules)
    assert "all-disks-independent" not in a.rules
    indep = next(f for f in a.findings if f.rule == "disk-independent")
    shared = next(f for f in a.findings if f.rule == "disk-shared")
    assert indep.disks == [f"{SITE}:volumes:102"] and shared.disks == [f"{SITE}:volumes:103"]
    assert a.verdict == "blocked"


def test_stopped_vm_degraded_to_standard_only() -> None:
    a = assess(facts(vm(status="stopped", pvDriverStatus="notRunning")))
    assert a.verdict == "degraded"
    assert a.kinds == {"cbt": False, "standard": True, "memory": False, "consistent": False}


def test_info_never_changes_verdict() -> None:
    a = assess(facts(vm(osOptions={"osType": "Windows", "osVersion": 35})))
    assert a.rules == ["consistency-not-euleros"]
    assert a.verdict == "ready" and a.kinds["cbt"] and not a.kinds["consistent"]


def test_findings_sorted_worst_first_and_json_shape() -> None:
    a = assess(facts(vm(status="stopped", pvDriverStatus="notRunning", toolsVersion="",
                        osOptions={"osType": "Linux", "osVersion": 10088})))
    sev = [C.SEVERITY_RANK[f.severity] for f in a.findings]
    assert sev == sorted(sev, reverse=True)
    j = a.to_json()
    assert set(j) >= {"urn", "name", "verdict", "kinds", "findings"}
    assert j["urn"] == VM_URN and j["verdict"] == "blocked"
    assert set(j["kinds"]) == set(C.KINDS)
    for f in j["findings"]:
        assert set(f) >= {"rule", "severity", "message", "remediation", "disks"}


# --- odd or incomplete data ----------------------------------------------------------------------------

def test_no_disks_and_no_vmconfig() -> None:
    a = assess(facts(vm(vmConfig={"disks": []})))
    assert "no-disks" in a.rules and a.verdict == "blocked"
    v = vm()
    del v["vmConfig"]
    a = assess(facts(v))
    assert "no-disks" in a.rules and "vmConfig" in a.findings[0].message


def test_unknown_storage_type_and_state_and_missing_tools_fields() -> None:
    # storage type not reported, datastore unknown: said so, not a crash
    d = disk(1, datastoreUrn=f"{SITE}:datastores:999")
    del d["storageType"]
    a = assess(facts(vm(vmConfig={"disks": [d]})))
    inc = next(f for f in a.findings if f.rule == "data-incomplete")
    assert "storageType" in inc.message
    # ...but resolved through the datastore when the disk lacks it
    d2 = disk(1)
    del d2["storageType"]
    assert "data-incomplete" not in rules_of(facts(vm(vmConfig={"disks": [d2]})))
    # an unknown storage type value is unsupported, named as unknown
    a = assess(facts(vm(vmConfig={"disks": [disk(1, storageType="XVEPOOL")]})))
    f = next(f for f in a.findings if f.rule == "storage-unsupported")
    assert "unknown storage type" in f.message
    # a state outside the enum
    a = assess(facts(vm(status="levitating")))
    assert "state-unsupported" in a.rules and "levitating" in a.findings[0].message
    # Tools fields absent
    v = vm()
    del v["toolsVersion"], v["pvDriverStatus"]
    a = assess(facts(v))
    inc = next(f for f in a.findings if f.rule == "data-incomplete")
    assert "toolsVersion" in inc.message and "pvDriverStatus" in inc.message
    assert a.verdict == "degraded"
    # no status at all
    v = vm()
    del v["status"]
    a = assess(facts(v))
    assert a.verdict == "blocked" and "state-unsupported" in a.rules


def test_snapshots_unknown_marks_provisional() -> None:
    a = assess(facts(snapshots_known=False))
    assert a.provisional and "snapshots-unknown" in a.rules and a.verdict == "ready"
    assert not assess(facts()).provisional


def test_missing_os_catalogue_and_os_id() -> None:
    assert "consistency-not-euleros" in rules_of(facts(os_catalogue=None))
    a = assess(facts(vm(osOptions={})))
    assert "consistency-not-euleros" in a.rules and "data-incomplete" in a.rules
    assert "guest-os-unlisted" in rules_of(facts(vm(osOptions={"osVersion": 77777})))


# --- properties ---------------------------------------------------------------------------------------

_BLOCKING_MUTATIONS = [
    lambda v: v.update(toolsVersion=""),
    lambda v: v.update(isTemplate=True),
    lambda v: v.update(isLinkClone=True),
    lambda v: v.update(status="migrating"),
    lambda v: v.update(status="hibernated"),
    lambda v: v["vmConfig"]["disks"].append(disk(9, pciType="IDE")),
    lambda v: v["vmConfig"]["disks"].append(disk(9, type="share", indepDisk=True)),
    lambda v: v["vmConfig"]["disks"].append(disk(9, storageType="san")),
    lambda v: v["vmConfig"].update(disks=[]),
]
_STATUS_REPLACING = {3, 4}
_ANY_MUTATIONS = _BLOCKING_MUTATIONS + [
    lambda v: v.update(status="stopped", pvDriverStatus="notRunning"),
    lambda v: v.update(pvDriverStatus="notRunning"),
    lambda v: v["vmConfig"]["disks"].append(disk(8, indepDisk=True)),
    lambda v: v.update(osOptions={"osVersion": 402}),
    lambda v: v.update(osOptions={"osVersion": 35}),
    lambda v: v.update(arch="aarch64"),
    lambda v: v["vmConfig"]["disks"].append(disk(7, datastoreUrn=DS_FULL)),
    lambda v: v.pop("toolsVersion", None),
]
_RANK = {"ready": 0, "degraded": 1, "blocked": 2}


def _mutated(idx: list[int]) -> dict[str, Any]:
    v = copy.deepcopy(vm())
    for i in idx:
        _ANY_MUTATIONS[i](v)
    return v


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, len(_ANY_MUTATIONS) - 1), max_size=6),
       st.integers(0, len(_BLOCKING_MUTATIONS) - 1))
def test_adding_a_blocking_condition_never_improves_the_verdict(idx: list[int], b: int) -> None:
    base = assess(facts(_mutated(idx)))
    v = _mutated(idx)
    _BLOCKING_MUTATIONS[b](v)
    worse = assess(facts(v))
    assert worse.verdict == "blocked"
    assert _RANK[worse.verdict] >= _RANK[base.verdict]
    # kinds only ever shrink when a condition is added (the status mutations replace one instead)
    if b not in _STATUS_REPLACING:
        assert worse.kinds_mask & ~base.kinds_mask == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, len(_ANY_MUTATIONS) - 1), max_size=6))
def test_kinds_agree_with_findings(idx: list[int]) -> None:
    a = assess(facts(_mutated(idx)))
    for f in a.findings:  # each finding carries its documented severity
        assert f.severity == (EXPECTED_RULES[f.rule][0] if f.rule in EXPECTED_RULES else C.RULES[f.rule].severity)
    assert a.kinds == expected_kinds([f.rule for f in a.findings])
    assert a.verdict == expected_verdict([f.severity for f in a.findings])
    if a.verdict == "ready":
        assert a.kinds["cbt"]


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)
_vm_keys = st.sampled_from(["status", "pvDriverStatus", "toolsVersion", "isTemplate", "isLinkClone", "arch",
                            "osOptions", "vmConfig", "urn", "name", "hostUrn"])
_disk_keys = st.sampled_from(["pciType", "indepDisk", "type", "storageType", "quantityGB", "datastoreUrn",
                              "volumeUrn", "diskName", "sequenceNum"])


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_vm_keys, _json, max_size=6), st.lists(st.dictionaries(_disk_keys, _json, max_size=6), max_size=3),
       st.booleans(), _json)
def test_odd_data_never_raises(vm_over: dict[str, Any], disks_over: list[dict[str, Any]], drop: bool, junk: Any) -> None:
    v = vm(**vm_over)
    if drop or not isinstance(v.get("vmConfig"), dict):
        pass
    elif disks_over:
        v["vmConfig"] = {"disks": [dict(disk(i + 1), **d) for i, d in enumerate(disks_over)] + [junk]}
    f = facts(v, snapshots={"rootSnapshots": [junk, {"type": junk, "childSnapshots": junk}]},
              active_tasks=[{"type": junk, "status": "running"}] if isinstance(junk, str) else [],
              knowledge=BackupKnowledge(None, {}))
    a = assess(f)
    # odd data still gives a consistent assessment: the verdict and kinds follow from the findings (the
    # documented table), and the JSON report carries exactly what the assessment says
    assert a.verdict == expected_verdict([x.severity for x in a.findings])
    assert a.kinds == expected_kinds([x.rule for x in a.findings])
    j = json.loads(json.dumps(a.to_json()))
    assert j["verdict"] == a.verdict and j["kinds"] == a.kinds
    assert [(x["rule"], x["severity"], x["message"]) for x in j["findings"]] == \
        [(x.rule, x.severity, x.message) for x in a.findings]
    # worst first (rules.md: the main reason is the first finding)
    ranks = [MY_RANK[x.severity] for x in a.findings]
    assert ranks == sorted(ranks, reverse=True)


def test_first_backup_is_not_reported_as_a_broken_chain():
    """Knowledge with no earlier backup (only owned snapshots) must not claim the CBT chain broke."""
    from fctui.rules.facts import BackupKnowledge
    from fctui.rules import assess
    from fctui.rules.facts import VmFacts
    vm = {"urn": "urn:sites:A:vms:i-00000001", "name": "x", "status": "running", "pvDriverStatus": "running",
          "toolsVersion": "2.5", "isTemplate": False, "isLinkClone": False,
          "vmConfig": {"disks": [{"sequenceNum": 1, "pciType": "VIRTIO", "volumeUrn": "urn:sites:A:volumes:1",
                                  "quantityGB": 10, "datastoreUrn": "urn:sites:A:datastores:1",
                                  "storageType": "NAS", "indepDisk": False, "type": "normal"}]}}
    f = VmFacts.from_dicts(vm, knowledge=BackupKnowledge(owned_snapshot_urns=frozenset()))
    assert "cbt-chain-broken" not in {x.rule for x in assess(f).findings}
