"""What an engineer reads for each VM-level finding, word for word, and which disks it names.

The expectations are written out here from the rule catalog (`shared/rules.md`) and the product document,
not read from the engine: a rule that fires with the wrong words, or names the wrong disks, fails here.
Guest-OS classification is checked on descriptions shaped like the VRM's OS catalogue entries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fctui.rules import engine
from fctui.rules.engine import assess, os_class
from fctui.rules.facts import BackupKnowledge, VmFacts
from tests.rules.test_rules_engine import (DS_LUN, HOST, HOST_ARM, OS_CATALOGUE, SITE, disk, facts, vm)

VOL = f"{SITE}:volumes:"


def without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def found(f: VmFacts, rule: str) -> list[tuple[str, list[str]]]:
    """(message, disks) of every finding of ``rule``."""
    return [(x.message, x.disks) for x in assess(f).findings if x.rule == rule]


CASES: list[tuple[str, Callable[[], VmFacts], str, str, list[str]]] = [
    ("template", lambda: facts(vm(isTemplate=True)), "template",
     "this is a template; templates cannot be snapshotted", []),
    ("linked clone", lambda: facts(vm(isLinkClone=True)), "linked-clone",
     "linked clone: its system disk is a differencing volume that cannot be snapshotted", []),
    ("no Tools", lambda: facts(vm(toolsVersion="")), "tools-missing",
     "VM Tools were never installed (toolsVersion empty)", []),
    ("Tools stopped", lambda: facts(vm(pvDriverStatus="notRunning")), "tools-not-running",
     "VM Tools 2.5.0.156 installed but not running (pvDriverStatus notRunning)", []),
    ("Tools stopped, version unknown", lambda: facts(without(vm(pvDriverStatus="notRunning"), "toolsVersion")),
     "tools-not-running", "VM Tools not running (pvDriverStatus notRunning)", []),
    ("stopped", lambda: facts(vm(status="stopped", pvDriverStatus="notRunning")), "state-stopped",
     "VM is stopped: only a full standard snapshot is possible (no CBT, memory or consistent snapshot)", []),
    ("hibernated", lambda: facts(vm(status="hibernated", pvDriverStatus="notRunning")), "state-hibernated",
     "VM is hibernated: only memory snapshots are possible, which hold no disk backup", []),
    ("in a passing state", lambda: facts(vm(status="migrating")), "state-unsupported",
     "VM state is migrating: no snapshot is allowed in this state; retry when the VM settles", []),
    ("in a state no VRM documents", lambda: facts(vm(status="levitating")), "state-unsupported",
     "VM is in an unknown state 'levitating': no snapshot can be planned", []),
    ("with no status", lambda: facts(vm(status="")), "state-unsupported",
     "the VRM reported no status for this VM; no snapshot can be planned", []),
    ("no vmConfig", lambda: facts(without(vm(), "vmConfig")), "no-disks",
     "the VRM sent no vmConfig for this VM: its disks are unknown", []),
    ("no disks", lambda: facts(vm(vmConfig={"disks": []})), "no-disks",
     "the VM has no disks: there is nothing to back up", []),
    ("IDE", lambda: facts(vm(vmConfig={"disks": [disk(1), disk(2, pciType="IDE"), disk(3, pciType="IDE")]})),
     "disk-ide", "disk on the IDE bus: disk2, disk3", [VOL + "102", VOL + "103"]),
    ("shared", lambda: facts(vm(vmConfig={"disks": [disk(1), disk(2, type="share", indepDisk=True)]})),
     "disk-shared", "shared disk attached: disk2; no snapshot of this VM is possible", [VOL + "102"]),
    ("shared on x86", lambda: facts(vm(vmConfig={"disks": [disk(1), disk(2, type="share", indepDisk=True)]})),
     "shared-disk-x86", "x86 VM with a shared disk: no memory or consistent snapshot, and a standard snapshot "
     "would leave the shared disk out", [VOL + "102"]),
    ("shared, architecture not reported",
     lambda: facts(vm(arch="", vmConfig={"disks": [disk(1), disk(2, type="share", indepDisk=True)]}),
                   host={"urn": HOST, "name": "cna-01"}),
     "shared-disk-x86", "x86 VM with a shared disk: no memory or consistent snapshot, and a standard snapshot "
     "would leave the shared disk out (architecture not reported; x86 assumed)", [VOL + "102"]),
    ("independent", lambda: facts(vm(vmConfig={"disks": [disk(1), disk(2, indepDisk=True)]})),
     "disk-independent", "independent disks are left out of the backup: disk2", [VOL + "102"]),
    ("only independent and shared",
     lambda: facts(vm(vmConfig={"disks": [disk(1, indepDisk=True), disk(2, type="share", indepDisk=True)]})),
     "all-disks-independent", "every disk is independent or shared (disk1, disk2): nothing a snapshot would hold",
     [VOL + "101"]),
    ("raw LUN and a type no catalogue knows",
     lambda: facts(vm(vmConfig={"disks": [disk(1), disk(2, storageType="LUN", datastoreUrn=DS_LUN),
                                          disk(3, storageType="TAPE")]})),
     "storage-unsupported", "storage type without snapshot support: disk2 on LUN (raw SAN LUN (device "
     "passthrough)), disk3 on TAPE (unknown storage type)", [VOL + "102", VOL + "103"]),
    ("storage type from the datastore",
     lambda: facts(vm(vmConfig={"disks": [disk(1), disk(2, storageType="", datastoreUrn=DS_LUN)]})),
     "storage-unsupported", "storage type without snapshot support: disk2 on LUN (raw SAN LUN (device "
     "passthrough))", [VOL + "102"]),
    ("snapshots not read", lambda: facts(snapshots_known=False), "snapshots-unknown",
     "snapshot tree not read yet: snapshot limit and leftovers not checked", []),
    ("a conflicting task", lambda: facts(active_tasks=[
        {"urn": f"{SITE}:tasks:9", "type": "MigrateVolume", "entityUrn": VOL + "101", "status": "running", "progress": 40},
        {"urn": f"{SITE}:tasks:10", "type": "ExpandVolume", "entityUrn": VOL + "101", "status": "waiting", "progress": 0},
        {"urn": f"{SITE}:tasks:11", "type": "MigrateVolume", "entityUrn": VOL + "101", "status": "success",
         "progress": 100},
        {"urn": f"{SITE}:tasks:12", "type": "ModifyVmName", "entityUrn": VOL + "101", "status": "running",
         "progress": 5}]),
     "task-in-progress", "conflicting task in progress: MigrateVolume (running, 40%), ExpandVolume (waiting, 0%); "
     "retry when it ends", []),
    ("guest OS not reported", lambda: facts(vm(osOptions={"osType": "Linux"})), "consistency-not-euleros",
     "guest OS unknown: backups are crash-consistent (consistent and memory snapshots need EulerOS)", []),
    ("no OS catalogue", lambda: facts(os_catalogue=None), "consistency-not-euleros",
     "guest OS id 10121 not resolved (no OS catalogue): backups are crash-consistent", []),
    ("an OS id not in the catalogue", lambda: facts(vm(osOptions={"osType": "Linux", "osVersion": 777})),
     "consistency-not-euleros", "guest OS id 777 is not in the VRM's OS catalogue: backups are crash-consistent", []),
    ("an OS id not in the catalogue", lambda: facts(vm(osOptions={"osType": "Linux", "osVersion": 777})),
     "guest-os-unlisted", "guest OS id 777 is not in the VRM's OS catalogue, so not on the supported list", []),
    ("CentOS", lambda: facts(vm(osOptions={"osType": "Linux", "osVersion": 10088})), "consistency-not-euleros",
     "guest OS CentOS 7.6 64bit is not EulerOS: backups are crash-consistent", []),
    ("other Linux", lambda: facts(vm(osOptions={"osType": "Linux", "osVersion": 302})), "guest-os-unlisted",
     "guest OS Other Linux(64 bit) (id 302) is not on the supported guest OS list", []),
]


@pytest.mark.parametrize(("make", "rule", "message", "disks"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_finding_says_why_in_its_own_words(make: Callable[[], VmFacts], rule: str, message: str,
                                                disks: list[str]) -> None:
    assert found(make(), rule) == [(message, disks)]


def test_a_state_the_vrm_omits_or_no_vrm_documents_says_what_to_do() -> None:
    for v in (vm(status=""), vm(status="levitating")):
        (f,) = [x for x in assess(facts(v)).findings if x.rule == "state-unsupported"]
        assert f.remediation == ("Refresh; check the VM in the FusionCompute portal if the status stays missing."
                                 if not v["status"] else
                                 "Retry when the VM settles in running or stopped; check the VM in the portal.")


def test_no_shared_disk_x86_finding_for_an_arm_vm_or_an_arm_host() -> None:
    two = {"disks": [disk(1), disk(2, type="share", indepDisk=True)]}
    assert found(facts(vm(arch="aarch64", vmConfig=two)), "shared-disk-x86") == []
    assert found(facts(vm(arch="", vmConfig=two), host=HOST_ARM), "shared-disk-x86") == []
    assert found(facts(vm(arch="", vmConfig=two), host=dict(HOST_ARM, arch="ARM64")), "shared-disk-x86") == []


@pytest.mark.parametrize("v", [vm(pvDriverStatus=""), without(vm(), "pvDriverStatus")],
                         ids=["empty", "absent"])
def test_a_running_vm_without_a_tools_status_is_reported_once(v: dict[str, Any]) -> None:
    assert found(facts(v), "data-incomplete") == [("the VRM did not report: pvDriverStatus", [])]
    assert found(facts(v), "tools-not-running") == []


def test_what_the_vrm_left_out_is_listed_in_order() -> None:
    v = without(vm(vmConfig={"disks": [without(disk(1), "pciType"), without(disk(2, storageType=""), "quantityGB",
                                                                            "datastoreUrn")]}), "isTemplate")
    assert found(facts(v), "data-incomplete") == [(
        "the VRM did not report: isTemplate, disk disk1 pciType, disk disk2 quantityGB, disk disk2 storageType", [])]


# --- guest OS classification: (is EulerOS, on the supported list) --------------------------------

@pytest.mark.parametrize(("description", "family", "expected"), [
    ("EulerOS 2.0 SP9 64bit", "linux", (True, True)),
    ("Linux EulerOS", "linux", (True, True)),                 # the words last
    ("EulerOS2.0 SP8", "linux", (True, True)),                # fused with its version
    ("Oracle Linux 8", "linux", (False, True)),
    ("Oracle Linux", "linux", (False, True)),                 # a two-word name that ends the description
    ("Red Hat Enterprise Linux 8", "linux", (False, True)),
    ("Red Star OS 3.0", "linux", (False, False)),             # a first word alone is not the name
    ("Windows Server 2022", "windows", (False, True)),
    ("Windows Server 2003", "windows", (False, False)),
    ("Windows 10", "windows", (False, False)),
    ("Oracle", "linux", (False, False)),
    ("EulerOS", "other", (True, False)),                      # the "other" family is never listed
    ("", "linux", (False, False)),
])
def test_os_class(description: str, family: str, expected: tuple[bool, bool]) -> None:
    assert os_class(description, family) == expected


def test_the_catalogue_entry_is_named_by_its_own_description_and_id() -> None:
    cat = {"linux": [{"id": 5001, "versionDes": "Fedora 39"}, {"id": 5002, "versionDes": "openEuler 22.03"}]}
    fedora = facts(vm(osOptions={"osType": "Linux", "osVersion": 5001}), os_catalogue=cat)
    assert found(fedora, "guest-os-unlisted") == [("guest OS Fedora 39 (id 5001) is not on the supported guest OS list", [])]
    euler = facts(vm(osOptions={"osType": "Linux", "osVersion": 5002}), os_catalogue=cat)
    assert found(euler, "guest-os-unlisted") == []
    assert found(euler, "consistency-not-euleros") == [("guest OS openEuler 22.03 is not EulerOS: backups are "
                                                        "crash-consistent", [])]


def test_many_catalogues_each_answer_for_themselves() -> None:
    """The engine keeps a small cache of classified catalogues: twelve distinct ones, each asked twice,
    each still answered from its own entries."""
    cats = [{"linux": [{"id": 1, "versionDes": "EulerOS 2.0" if i % 2 else f"Distro {i}"}]} for i in range(12)]
    for _ in range(2):
        for i, cat in enumerate(cats):
            f = facts(vm(osOptions={"osType": "Linux", "osVersion": 1}), os_catalogue=cat)
            assert (found(f, "guest-os-unlisted") == []) == bool(i % 2)
            if not i % 2:
                assert found(f, "guest-os-unlisted") == [(f"guest OS Distro {i} (id 1) is not on the supported "
                                                          "guest OS list", [])]


def test_an_other_family_entry_is_never_listed_whatever_it_says() -> None:
    cat = {"other": [{"id": 401, "versionDes": "Other (EulerOS based)"}]}
    f = facts(vm(osOptions={"osType": "Other", "osVersion": 401}), os_catalogue=cat)
    assert found(f, "guest-os-unlisted") == [("guest OS Other (EulerOS based) (id 401) is not on the supported "
                                              "guest OS list", [])]
    assert found(f, "consistency-not-euleros") == []


def test_a_catalogue_is_classified_once_and_at_most_eight_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing of 10,000 VMs shares one OS catalogue: its entries are classified once, not per VM. The
    cache is bounded (the VRM may send a new catalogue on every refresh)."""
    monkeypatch.setattr(engine, "_OS_CACHE", {})
    cats = [facts(os_catalogue={"linux": [{"id": 1, "versionDes": f"Distro {i}"}]}).os_catalogue for i in range(9)]
    first = engine._os_table(cats[0])
    assert engine._os_table(cats[0]) is first
    for cat in cats[1:8]:
        engine._os_table(cat)
    assert len(engine._OS_CACHE) == 8 and engine._os_table(cats[0]) is first
    engine._os_table(cats[8])            # a ninth starts the cache again
    assert len(engine._OS_CACHE) == 1
    assert engine._os_table(cats[0]) is not first and engine._os_table(cats[0])[1].listed is False


def test_a_guest_os_not_reported_is_listed_as_missing() -> None:
    f = facts(vm(osOptions={"osType": "Linux"}))
    assert found(f, "data-incomplete") == [("the VRM did not report: osOptions.osVersion", [])]


def test_a_backup_known_by_its_time_alone_breaks_every_disks_chain() -> None:
    """The last backup's time is known but it recorded no CBT state for any disk (a restore point made
    without CBT): the next backup reads every disk in full, and says so."""
    f = facts(knowledge=BackupKnowledge(1000.0))
    assert found(f, "cbt-chain-broken") == [("next backup is full (CBT chain broken): disk1: no CBT state from an "
                                             "earlier backup", [VOL + "101"])]
    assert found(facts(knowledge=BackupKnowledge()), "cbt-chain-broken") == []    # no backup yet: nothing to break
