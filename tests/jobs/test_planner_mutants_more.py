"""More of the planner pinned where mutation testing found it unguarded (README, Mutation testing):
assess_vm's facts one by one (the host when the VM reports no architecture, the snapshot tree of a VM
known by URN only, the snapshots a running job owns, which finished tasks count as "since the last
backup": the VM's, its volumes', its host's, started at or after the point, no one else's) and
build_plan's wiring of the repository, the rules and the per-VM inputs into plan_vm.

Everything that needs a VRM talks to the simulator over ASGI (the ``client``/``control`` fixtures)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fctui.jobs.planner import GIB, assess_vm
from fctui.repo import RestorePoint, RestorePointDisk
from fctui.vrm import VrmClient
from fctui.vrm.models import Vm
from fctui.vrm.urn import urn_to_uri


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

    from fctui.jobs.planner import FindingNote, build_plan
    from fctui.repo import Repository
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
        from fctui.jobs.planner import _used_sizes, plan_vm
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
    from types import SimpleNamespace

    from fctui.jobs.planner import plan_vm
    from tests.jobs.test_planner_mutants import vm as pvm
    p = plan_vm(pvm(), assessment=SimpleNamespace(kinds={"cbt": True, "standard": True}))
    assert (p.kind, p.refused, p.verdict, p.reason, p.findings) == ("cbt", False, "", "", [])
    # only standard and no reason given: the generic one
    s = plan_vm(pvm(), assessment=SimpleNamespace(kinds={"standard": True}))
    assert (s.kind, s.refused, s.verdict, s.reason) == ("standard", False, "", "CBT snapshots are not possible for this VM")
    # a main reason without a message says nothing; the default refusal reason stands
    n = plan_vm(pvm(), assessment=SimpleNamespace(kinds={}, verdict="blocked", main_reason=object()))
    assert (n.kind, n.refused, n.reason) == (None, True, "the rules allow no snapshot of this VM")
    # a caller's blocker finding on a VM it still lets through: the blocker is the limit named
    from fctui.jobs.planner import FindingNote
    b = plan_vm(pvm(), assessment=SimpleNamespace(kinds={"standard": True}, verdict="degraded", main_reason=None,
                                                  findings=[FindingNote("x", "blocker", "the blocker")]))
    assert (b.kind, b.refused, b.reason) == ("standard", False, "the blocker")


def test_plan_vm_names_the_vm_its_host_and_each_disk_as_given() -> None:
    from fctui.jobs.planner import FindingNote, plan_vm
    from tests.jobs.test_jobs_planner import S, disk
    from tests.jobs.test_planner_mutants import VM_URN, CBT4, point
    from tests.jobs.test_planner_mutants import vm as pvm
    note = FindingNote("business-hours", "warning", "inside business hours")
    v = pvm(disk(1), disk(2, indepDisk=True))
    p = plan_vm(v, previous=point((1, CBT4)), launch_findings=(note,))
    assert (p.vm_urn, p.vm_uri, p.vm_name, p.host_urn, p.host_name, p.status) == (
        VM_URN, "/service/sites/0000ABCD/vms/i-00000001", "db-01", f"{S}:hosts:1", "cna-01", "running")
    assert p.base_point_id == "p1" and p.launch == [note] and p.findings == []
    assert p.vm_config["name"] == "db-01" and [d["sequenceNum"] for d in p.vm_config["disks"]] == [1, 2]
    assert [(d.disk_name, d.mode, d.base_cbt) for d in p.disks] == [("d1", "incremental", CBT4)]
    assert [(d.disk_name, d.mode, d.volume_uri, d.size_bytes) for d in p.excluded] == [
        ("d2", "excluded", "/service/sites/0000ABCD/volumes/2", 10 * GIB)]
    # a VM known by URN only gets its URI from the URN
    u = plan_vm(pvm(disk(1), uri=""))
    assert u.vm_uri == "/service/sites/0000ABCD/vms/i-00000001" and u.base_point_id is None
    # a disk the VRM reports without volume URN or size: no URI made up, no size assumed
    odd = {k: val for k, val in disk(1).items() if k not in ("volumeUrn", "quantityGB")}
    o = plan_vm(pvm(odd))
    assert [(d.volume_urn, d.volume_uri, d.size_bytes) for d in o.disks] == [("", "", 0)]


def test_the_vm_config_keeps_what_the_vrm_reported_beyond_the_basics() -> None:
    """CPU and memory as the VRM gave them (every key, not rebuilt from the counts), NICs and properties."""
    from fctui.jobs.planner import vm_config_of
    from tests.jobs.test_jobs_planner import disk
    from tests.jobs.test_planner_mutants import vm as pvm
    v = pvm(disk(1))
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
    from fctui.jobs.planner import knowledge_from_point
    from tests.jobs.test_jobs_planner import S
    from tests.jobs.test_planner_mutants import CBT4, point
    k = knowledge_from_point(point((1, CBT4), (2, {"snapUuid": "u"})), ["s1", "s2"])
    assert k.owned_snapshot_urns == frozenset({"s1", "s2"}) and k.last_backup_time == 100.0
    st1, st2 = k.volumes[f"{S}:volumes:1"], k.volumes[f"{S}:volumes:2"]
    assert (st1.volume_urn, st1.vol_cbt_create_time, st1.chg_id) == (f"{S}:volumes:1", "T0", "4")
    # a recorded state without its fields reads as empty strings, not "None"
    assert (st2.volume_urn, st2.vol_cbt_create_time, st2.chg_id, st2.fully_backed_up) == (
        f"{S}:volumes:2", "", "", True)


# --- resolve_vm by name --------------------------------------------------------------------------------------

async def test_resolve_vm_by_name_brings_the_vms_disks(client: VrmClient, control: httpx.AsyncClient) -> None:
    from fctui.jobs.planner import resolve_vm
    ready = await edge_vm(client, control, "ready")
    by_name = await resolve_vm(client, ready.name)
    assert by_name.urn == ready.urn and by_name.disks and by_name.disks == ready.disks


# --- add_launch_findings: the defaults and business hours ---------------------------------------------------

def test_launch_findings_default_limits_and_business_hours() -> None:
    """Eight connections per host and eight volumes per datastore by default; the business-hours window
    is checked at the local time given (Monday 10:00 inside Mon-Fri 08:00-18:00), not the wall clock."""
    from datetime import datetime

    from fctui.jobs.planner import Plan, add_launch_findings, plan_vm
    from fctui.rules.launch import BusinessHours
    from tests.jobs.test_jobs_planner import S, disk
    from tests.jobs.test_planner_mutants import vm as pvm
    vp = plan_vm(pvm(disk(1)))
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
    quiet = plan_vm(pvm(disk(1)))
    add_launch_findings(Plan(vms=[quiet], full=False, created=0.0), host_connections={f"{S}:hosts:1": 7},
                        datastore_volumes={f"{S}:datastores:1": 7}, business_hours=BusinessHours(),
                        now_local=datetime(2026, 11, 29, 10, 0))
    assert quiet.launch == []
    # a host or datastore the counts do not name has none open
    alone = plan_vm(pvm(disk(1)))
    add_launch_findings(Plan(vms=[alone], full=False, created=0.0), per_host=1, per_datastore=1)
    assert alone.launch == []


def test_launch_findings_read_the_repository_room_and_history(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``room`` the filesystem's figures count (free, and 2 % of its size kept as margin); the VM's
    earlier points give the ratio. A filesystem that cannot say its usage adds no space finding."""
    import os
    import shutil
    from types import SimpleNamespace

    from fctui.jobs.planner import Plan, add_launch_findings, plan_vm
    from fctui.repo import Repository
    from tests.jobs.test_jobs_planner import S, disk
    from tests.jobs.test_planner_mutants import VM_URN
    from tests.jobs.test_planner_mutants import vm as pvm
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
        vp = plan_vm(pvm(disk(1)))
        add_launch_findings(Plan(vms=[vp], full=False, created=0.0), repo=repo)
        assert [(n.rule, n.severity) for n in vp.launch] == [("repo-space-low", "info")]
        msg = vp.launch[0].message
        assert "to read, stored/read " in msg and " over 1 earlier point(s))" in msg, msg
        assert msg.endswith("; 50.0 GiB free, 2.0 GiB kept as margin") and "earlier VMs" not in msg, msg

        # three VMs of 10 GiB without history: the third counts both earlier ones
        three = [plan_vm(pvm(disk(1), urn=f"{S}:vms:i-0000000{i}", name=f"v{i}")) for i in (2, 3, 4)]
        add_launch_findings(Plan(vms=three, full=False, created=0.0), repo=repo, room=(100 * GIB, 4 * GIB))
        assert [n.message.split("; ")[1] for n in three[2].launch] == ["with the job's earlier VMs ~30.0 GiB"]

        def refuse(p: Any) -> Any:
            raise OSError(5, "I/O error")
        monkeypatch.setattr(shutil, "disk_usage", refuse)
        vp2 = plan_vm(pvm(disk(1)))
        add_launch_findings(Plan(vms=[vp2], full=False, created=0.0), repo=repo)
        assert vp2.launch == [] and not vp2.refused
    finally:
        repo.close()
