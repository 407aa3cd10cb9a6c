"""What a backup of each VM will do, and why — decided before any snapshot, confirmed right after it.

Per VM: the inventory verdict (the rules engine's assessment) plus the launch-time rules give the snapshot
kind — ``cbt`` when possible, ``standard`` when the rules allow only that, refused when blocked. Per disk:
full or incremental and the reason (no earlier restore point, CBT chain broken and by what, ``--full``),
independent/non-persistent disks excluded and named. The exact bytes to read are known from the CBT
bitmap once the snapshot exists (:func:`confirm_disk` then fills them in, before any data moves).

The pure part (:func:`plan_vm`, :func:`confirm_disk`) takes plain inputs so the TUI review screen and
tests can use it; :func:`build_plan` gathers those inputs through a :class:`~fctui.vrm.client.VrmClient`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..units import human_bytes
from ..vrm.models import Disk, VolSnapshot, Vm
from ..vrm.urn import site_uri, urn_to_uri
from .model import JobError

if TYPE_CHECKING:  # pragma: no cover
    from ..repo import Repository, RestorePoint
    from ..vrm.client import VrmClient

GIB = 1 << 30

# Finding rule ids whose presence means the previous CBT state cannot be trusted (rules.md).
CHAIN_RULE = "cbt-chain-broken"


@dataclass
class FindingNote:
    """A rule finding as the plan shows it (inventory rule or launch-time rule)."""
    rule: str
    severity: str
    message: str
    disks: list[str] = field(default_factory=list)


@dataclass
class DiskPlan:
    volume_urn: str
    volume_uri: str
    disk_name: str
    sequence_num: int | None
    pci_type: str
    size_bytes: int
    datastore_urn: str
    storage_type: str
    mode: str                    # full | incremental | excluded
    reason: str
    base_point_id: str | None = None
    base_cbt: dict[str, Any] | None = None   # {"volCBTCreateTime", "chgID", "snapUuid"} of the base point
    # Filled after the snapshot (confirm_disk / the runner):
    cbt: dict[str, Any] | None = None        # this snapshot's CBT state of the volume
    block_size: int | None = None
    blocks_planned: int | None = None
    bytes_planned: int | None = None
    bytes_estimate: int | None = None        # before the snapshot: a guess from the last point
    used_bytes: int | None = None            # what the guest has written (the VRM's userUsedSize)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VmPlan:
    vm_urn: str
    vm_uri: str
    vm_name: str
    host_urn: str
    host_name: str
    status: str
    kind: str | None             # cbt | standard | None when refused
    refused: bool
    reason: str                  # refusal reason, or what limits the kind
    verdict: str
    disks: list[DiskPlan]
    excluded: list[DiskPlan]
    base_point_id: str | None
    findings: list[FindingNote] = field(default_factory=list)
    launch: list[FindingNote] = field(default_factory=list)
    vm_config: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes_planned(self) -> int | None:
        if any(d.bytes_planned is None for d in self.disks):
            return None
        return sum(d.bytes_planned or 0 for d in self.disks)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["bytes_planned"] = self.bytes_planned
        return d


@dataclass
class Plan:
    vms: list[VmPlan]
    full: bool
    created: float
    unresolved: list[tuple[str, str]] = field(default_factory=list)  # (target as given, why)

    @property
    def runnable(self) -> list[VmPlan]:
        return [v for v in self.vms if not v.refused]

    @property
    def refused(self) -> list[VmPlan]:
        return [v for v in self.vms if v.refused]

    def to_json(self) -> dict[str, Any]:
        return {"created": self.created, "full": self.full, "vms": [v.to_json() for v in self.vms],
                "unresolved": [{"target": t, "reason": r} for t, r in self.unresolved]}


# --- pure planning ---------------------------------------------------------------------------------

def _findings_of(assessment: Any) -> list[FindingNote]:
    out: list[FindingNote] = []
    for f in getattr(assessment, "findings", None) or []:
        out.append(FindingNote(str(getattr(f, "rule", "")), str(getattr(f, "severity", "")),
                               str(getattr(f, "message", "")), list(getattr(f, "disks", None) or [])))
    return out


def _fallback_kinds(vm: Vm) -> tuple[dict[str, bool], str]:
    """Minimal kind decision when no assessment is given (tests of the runner, odd callers)."""
    if vm.is_template or vm.is_link_clone:
        return {"cbt": False, "standard": False}, "templates and linked clones cannot be snapshotted"
    if not vm.tools_version:
        return {"cbt": False, "standard": False}, "VM Tools are not installed"
    if vm.status == "running":
        if vm.pv_driver_status != "running":
            return {"cbt": False, "standard": False}, "VM Tools are not running"
        return {"cbt": True, "standard": True}, ""
    if vm.status == "stopped":
        return {"cbt": False, "standard": True}, "the VM is stopped: only a standard snapshot is possible"
    return {"cbt": False, "standard": False}, f"VM state {vm.status!r} allows no snapshot"


def disk_exclusion(disk: Disk) -> str:
    """Why a disk is left out of the backup ('' when it is backed up)."""
    if disk.indep_disk:
        return "independent disk: not part of VM snapshots, cannot be backed up"
    if not disk.persistent_disk:
        return "non-persistent disk: its changes are discarded, nothing to back up"
    if disk.is_shared:
        return "shared disk: not part of VM snapshots"
    return ""


def vm_config_of(vm: Vm) -> dict[str, Any]:
    """What a restore needs to rebuild the VM (kept in the restore point)."""
    cfg = vm.raw.get("vmConfig") if isinstance(vm.raw.get("vmConfig"), dict) else {}
    return {
        "name": vm.name, "urn": vm.urn, "arch": vm.arch,
        "cpu": cfg.get("cpu", {"quantity": vm.cpu_quantity}),
        "memory": cfg.get("memory", {"quantityMB": vm.memory_mb}),
        "osOptions": vm.raw.get("osOptions", {}),
        "disks": [{"sequenceNum": d.sequence_num, "pciType": d.pci_type, "volumeUrn": d.volume_urn,
                   "diskName": d.disk_name, "quantityGB": d.quantity_gb, "datastoreUrn": d.datastore_urn,
                   "datastoreName": d.datastore_name,  # restoring into another site offers the like-named one
                   "storageType": d.storage_type, "isThin": d.is_thin, "indepDisk": d.indep_disk,
                   "persistentDisk": d.persistent_disk, "type": d.type, "systemVolume": d.system_volume}
                  for d in vm.disks],
        "nics": cfg.get("nics", []),
        "properties": cfg.get("properties", {}),
    }


def plan_vm(vm: Vm, *, assessment: Any = None, previous: "RestorePoint | None" = None, full: bool = False,
            chain_marks: Mapping[str, str] | None = None,
            launch_findings: Sequence[FindingNote] = (), full_reason: str = "") -> VmPlan:
    """Plan one VM. ``previous`` is its latest restore point; ``chain_marks`` maps volume URNs to the
    reason an earlier job of ours found their CBT chain broken (cleared by the next good point).
    ``full_reason``: why ``full`` was asked (default: ``--full requested``), e.g. a policy's periodic full."""
    marks = chain_marks or {}
    findings = _findings_of(assessment)
    if assessment is not None:
        kinds = dict(getattr(assessment, "kinds", {}) or {})
        verdict = str(getattr(assessment, "verdict", ""))
        main = getattr(assessment, "main_reason", None)
        main_msg = str(getattr(main, "message", "") or "") if main is not None else ""
        if not main_msg:
            worst = next((f for f in findings if f.severity == "blocker"), None)
            main_msg = worst.message if worst else ""
        limit = main_msg
    else:
        kinds, limit = _fallback_kinds(vm)
        verdict = "ready" if kinds.get("cbt") else ("degraded" if kinds.get("standard") else "blocked")
    kind: str | None = "cbt" if kinds.get("cbt") else ("standard" if kinds.get("standard") else None)
    refused = kind is None or verdict == "blocked"
    reason = ""
    if refused:
        kind = None
        blockers = [f.message for f in findings if f.severity == "blocker"]
        reason = "; ".join(blockers) or limit or "the rules allow no snapshot of this VM"
    elif kind == "standard":
        why = [f.message for f in findings if f.severity == "warning" and f.rule.startswith("state-")]
        reason = why[0] if why else (limit or "CBT snapshots are not possible for this VM")

    chain_finding = next((f for f in findings if f.rule == CHAIN_RULE), None)
    prev_disks = {d.volume_urn: d for d in (previous.disks if previous is not None else [])}
    disks: list[DiskPlan] = []
    excluded: list[DiskPlan] = []
    for disk in vm.disks:
        size = (disk.quantity_gb or 0) * GIB
        dp = DiskPlan(volume_urn=disk.volume_urn, volume_uri=urn_to_uri(disk.volume_urn) if disk.volume_urn else "",
                      disk_name=disk.label, sequence_num=disk.sequence_num, pci_type=disk.pci_type,
                      size_bytes=size, datastore_urn=disk.datastore_urn, storage_type=disk.storage_type,
                      mode="full", reason="")
        why_out = disk_exclusion(disk)
        if why_out:
            dp.mode, dp.reason = "excluded", why_out
            excluded.append(dp)
            continue
        prev = prev_disks.get(disk.volume_urn)
        if prev is not None:
            dp.bytes_estimate = getattr(prev, "bytes_in", None)
        if kind == "standard":
            dp.reason = "standard snapshot (no CBT): the whole disk is read"
        elif full:
            dp.reason = full_reason or "--full requested"
        elif previous is None:
            dp.reason = "no earlier restore point of this VM"
        elif prev is None:
            dp.reason = "no earlier restore point of this disk (new disk)"
        elif not prev.cbt or not prev.cbt.get("chgID"):
            dp.reason = "the last restore point of this disk has no CBT state (standard snapshot)"
        elif disk.volume_urn in marks:
            dp.reason = f"CBT chain broken: {marks[disk.volume_urn]}"
        elif chain_finding is not None and (not chain_finding.disks or disk.volume_urn in chain_finding.disks):
            dp.reason = f"CBT chain broken: {chain_finding.message.replace('next backup is full (CBT chain broken): ', '')}"
        elif prev.size_bytes and size and prev.size_bytes != size:
            dp.reason = (f"CBT chain broken: the disk was expanded since the last restore point "
                         f"({human_bytes(prev.size_bytes)} -> {human_bytes(size)})")
        else:
            dp.mode = "incremental"
            dp.reason = (f"CBT chain intact since restore point {previous.id} "
                         f"(chgID {prev.cbt.get('chgID')})")
            dp.base_point_id = previous.id
            dp.base_cbt = dict(prev.cbt)
        disks.append(dp)
    if not refused and not disks:
        refused, kind = True, None
        reason = "every disk is excluded: nothing to back up"
    return VmPlan(vm_urn=vm.urn, vm_uri=vm.uri or urn_to_uri(vm.urn), vm_name=vm.name, host_urn=vm.host_urn,
                  host_name=vm.host_name, status=vm.status, kind=kind, refused=refused, reason=reason,
                  verdict=verdict, disks=disks, excluded=excluded,
                  base_point_id=previous.id if previous is not None else None,
                  findings=findings, launch=list(launch_findings), vm_config=vm_config_of(vm))


def next_backup_mode(vp: VmPlan) -> tuple[str, str]:
    """What the next backup of a planned VM will be, in one line for people: ("incremental" | "full" |
    "refused", why). The console's detail asks this of the same plan ``b`` makes, so both agree."""
    if vp.refused:
        return "refused", vp.reason
    full = [d for d in vp.disks if d.mode != "incremental"]
    if not full:
        return "incremental", vp.disks[0].reason if vp.disks else ""
    return "full", (f"{full[0].disk_name}: {full[0].reason}" if len(vp.disks) > 1 else full[0].reason)


def _int(s: str) -> int | None:
    try:
        return int(str(s).strip())
    except (TypeError, ValueError):
        return None


def confirm_disk(dp: DiskPlan, vs: VolSnapshot | None) -> DiskPlan:
    """Check the planned mode against the snapshot's CBT state of the volume; fall back to full with
    the reason when the chain does not hold (volCBTCreateTime changed, chgID reset or gap)."""
    if vs is not None:
        dp.cbt = {"volCBTCreateTime": vs.vol_cbt_create_time, "chgID": vs.chg_id, "snapUuid": vs.snap_uuid}
    if dp.mode != "incremental":
        return dp
    base = dp.base_cbt or {}
    if vs is None or not vs.chg_id or not vs.vol_cbt_create_time:
        dp.mode, dp.reason = "full", "the snapshot reports no CBT state for this disk"
    elif vs.vol_cbt_create_time != base.get("volCBTCreateTime"):
        dp.mode = "full"
        dp.reason = (f"CBT chain broken: volCBTCreateTime changed ({base.get('volCBTCreateTime')} -> "
                     f"{vs.vol_cbt_create_time}); CBT was re-initialised (power-off, HA restart, revert, "
                     f"expansion or host reboot)")
    else:
        old, new = _int(base.get("chgID", "")), _int(vs.chg_id)
        if old is None or new is None:
            dp.mode, dp.reason = "full", f"CBT chain unknown: unreadable chgID ({base.get('chgID')!r} -> {vs.chg_id!r})"
        elif new <= old:
            dp.mode, dp.reason = "full", f"CBT chain broken: chgID reset ({old} -> {new}), e.g. host reboot"
        elif new != old + 1:
            dp.mode = "full"
            dp.reason = (f"CBT chain broken: chgID gap ({old} -> {new}): a CBT snapshot in between was "
                         f"not fully backed up")
    if dp.mode == "full":
        dp.base_point_id = None
    return dp


# --- gathering inputs through the client ---------------------------------------------------------

async def resolve_vm(client: "VrmClient", target: str, site: str | None = None) -> Vm:
    """A VM by URN (``urn:sites:…:vms:i-…``) or by exact name (case-insensitive when unique)."""
    target = target.strip()
    if not target:
        raise JobError("empty VM name")
    if target.startswith("urn:"):
        if ":vms:" not in target:
            raise JobError(f"{target!r} is not a VM URN")
        return await client.vm(target)
    if site is None:
        sites = await client.sites()
        if not sites:
            raise JobError("the VRM reports no site")
        site = sites[0].uri
    found = await client.vms(site, detail=2, name=target)
    exact = [v for v in found if v.name == target]
    if not exact:
        exact = [v for v in found if v.name.lower() == target.lower()]
    if not exact:
        raise JobError(f"no VM named {target!r}")
    if len(exact) > 1:
        raise JobError(f"{len(exact)} VMs are named {target!r}; give the URN instead: "
                       + ", ".join(v.urn for v in exact[:5]))
    return exact[0]


def knowledge_from_point(point: "RestorePoint | None", owned: Iterable[str] = ()) -> Any:
    """The rules engine's BackupKnowledge from our latest restore point of a VM."""
    from ..rules.facts import BackupKnowledge, VolumeCbtState
    if point is None:
        return BackupKnowledge(owned_snapshot_urns=frozenset(owned))
    vols = {d.volume_urn: VolumeCbtState(d.volume_urn, str((d.cbt or {}).get("volCBTCreateTime", "")),
                                         str((d.cbt or {}).get("chgID", "")), True)
            for d in point.disks if d.cbt}
    return BackupKnowledge(last_backup_time=point.created, volumes=vols,
                           owned_snapshot_urns=frozenset(owned), last_vm_status="running")


async def assess_vm(client: "VrmClient", vm: Vm, point: "RestorePoint | None", *,
                    owned_snapshots: Iterable[str] = (), now: float | None = None) -> Any:
    """Run the inventory rules on one VM with fresh facts (host, datastores, OS catalogue, snapshots,
    its tasks). Returns the rules engine's Assessment."""
    from ..rules.engine import assess
    from ..rules.facts import VmFacts
    s = site_uri(vm.urn)
    now = time.time() if now is None else now
    host = await client.host(urn_to_uri(vm.host_urn)) if vm.host_urn else None
    dss = {d.urn: d for d in await client.datastores(s)}
    cat = await client.os_catalogue(s)
    tree = await client.snapshot_tree(vm.uri or urn_to_uri(vm.urn))
    tasks = await client.tasks(s)
    mine = {vm.urn} | {d.volume_urn for d in vm.disks}
    active = [t for t in tasks if t.is_active and t.entity_urn in mine]
    since: list[Any] = []
    if point is not None:
        for t in tasks:
            start, _ = t.times_ms()
            if not t.is_active and t.entity_urn in mine | ({vm.host_urn} if vm.host_urn else set()) \
                    and start is not None and start / 1000.0 >= point.created:
                since.append(t)
    facts = VmFacts(vm=vm, host=host, datastores=dss, os_catalogue=cat, snapshot_tree=tree,
                    snapshots_known=True, active_tasks=active, tasks_since_backup=since,
                    knowledge=knowledge_from_point(point, owned_snapshots), now=now)
    return assess(facts)


async def build_plan(client: "VrmClient", targets: Sequence[str], repo: "Repository | None", *,
                     full: bool = False, chain_marks: Mapping[str, str] | None = None,
                     launch_findings: Mapping[str, Sequence[FindingNote]] | None = None,
                     owned_snapshots: Iterable[str] = (), use_rules: bool = True,
                     full_vms: Mapping[str, str] | None = None) -> Plan:
    """Resolve ``targets`` (names or URNs) and plan each VM. Unresolvable targets are listed, not raised.
    ``full_vms``: VM URN -> why that VM is read fully although ``full`` is off (a policy's periodic full)."""
    plan = Plan(vms=[], full=full, created=time.time())
    seen: set[str] = set()
    owned = list(owned_snapshots)
    for target in targets:
        try:
            vm = await resolve_vm(client, target)
        except JobError as e:
            plan.unresolved.append((target, e.message))
            continue
        except Exception as e:  # VrmError and friends: one line for the user
            plan.unresolved.append((target, str(e)))
            continue
        if vm.urn in seen:
            continue
        seen.add(vm.urn)
        point = repo.latest_point(vm.urn) if repo is not None else None
        assessment = await assess_vm(client, vm, point, owned_snapshots=owned) if use_rules else None
        why_full = (full_vms or {}).get(vm.urn, "")
        vp = plan_vm(vm, assessment=assessment, previous=point, full=full or bool(why_full),
                     chain_marks=chain_marks, launch_findings=(launch_findings or {}).get(vm.urn, ()),
                     full_reason="" if full else why_full)
        await _used_sizes(client, vp, point)
        plan.vms.append(vp)
    return plan


async def _used_sizes(client: "VrmClient", vp: VmPlan, point: "RestorePoint | None") -> None:
    """What the guest wrote on each disk that has no earlier point (the space estimate's best figure
    for a first full backup; a thin disk's provisioned size can be far more). Best effort."""
    from ..vrm.errors import VrmError
    known = {d.volume_urn for d in point.disks} if point is not None else set()
    for dp in vp.disks:
        if vp.refused or dp.volume_urn in known or not dp.volume_uri:
            continue
        try:
            dp.used_bytes = (await client.volume(dp.volume_uri)).used_bytes
        except VrmError:
            pass


# Repository space (launch rule ``repo-space-low``). Without an earlier point of the VM nothing says
# how its data compresses: what the guest wrote (the VRM's userUsedSize, else every provisioned byte) is
# assumed stored as is (ratio 1.0, no compression, no zero blocks). With history, the ratio is the VM's
# stored/read bytes over its points (zero blocks, compression and chunks shared with earlier points all
# lower it).
NO_HISTORY_RATIO = 1.0


def read_estimate(dp: DiskPlan, prev: Any = None) -> int:
    """Bytes a disk's backup will read, before the snapshot says exactly: the CBT-planned bytes once
    known; for an incremental, the last point's read bytes; for a full, the blocks the disk held at its
    last point, else its provisioned size."""
    if dp.bytes_planned is not None:
        return dp.bytes_planned
    if dp.mode == "incremental" and dp.bytes_estimate is not None:
        return dp.bytes_estimate
    if prev is not None and prev.nonzero_blocks and prev.block_size:
        return min(dp.size_bytes or prev.size_bytes, prev.nonzero_blocks * prev.block_size)
    if dp.used_bytes is not None:
        return min(dp.size_bytes, dp.used_bytes) if dp.size_bytes else dp.used_bytes
    return dp.size_bytes


def stored_estimate(vp: VmPlan, history: Sequence["RestorePoint"]) -> tuple[int, str]:
    """(bytes the VM's backup will add to the repository, how that was estimated)."""
    last = {d.volume_urn: d for d in history[-1].disks} if history else {}
    read = sum(read_estimate(dp, last.get(dp.volume_urn)) for dp in vp.disks)
    bytes_in = sum(p.bytes_in for p in history)
    if bytes_in > 0:
        ratio = sum(p.bytes_stored for p in history) / bytes_in
        why = f"stored/read {ratio:.2f} over {len(history)} earlier point(s)"
    else:
        ratio = NO_HISTORY_RATIO
        why = f"no earlier point: {ratio:.1f} stored/read assumed"
    return int(read * ratio), f"~{human_bytes(read)} to read, {why}"


def add_launch_findings(plan: Plan, *, host_connections: Mapping[str, int] | None = None,
                        datastore_volumes: Mapping[str, int] | None = None, business_hours: Any = None,
                        now_local: Any = None, per_host: int = 8, per_datastore: int = 8,
                        repo: "Repository | None" = None, room: tuple[int, int] | None = None) -> Plan:
    """Attach the launch-time rules (rules.md) to each runnable VM of ``plan``: ``host-sockets-busy`` and
    ``target-volumes-busy`` (info: the VM queues) from the scheduler's current counts, and
    ``business-hours`` (warning) when ``now_local`` falls in the configured window. With ``repo``:
    ``repo-space-low`` (info with the numbers; a blocker refuses the VM when its estimate, after the
    job's earlier VMs, exceeds the free space less the margin). ``room`` = (free, margin) overrides the
    filesystem's figures (tests)."""
    from datetime import datetime

    from ..rules import launch
    hosts = host_connections or {}
    dss = datastore_volumes or {}
    now = now_local or datetime.now()
    bh = launch.business_hours(business_hours, now) if business_hours is not None else None
    if repo is not None and room is None:
        try:
            room = repo.room()  # None: the store knows no limit (S3)
        except OSError:
            room = None  # the repository's own errors say more when the job writes
    history: dict[str, list[Any]] = {}
    if repo is not None and room is not None:
        for p in repo.points():  # one catalog read for the whole job, oldest first
            history.setdefault(p.vm_urn, []).append(p)
    need_before = 0
    for vp in plan.runnable:
        if repo is not None and room is not None:
            need, basis = stored_estimate(vp, history.get(vp.vm_urn, []))
            space: Any = launch.repository_space(need, need_before, room[0], room[1], basis)
            if space.severity == "blocker":
                vp.refused, vp.kind, vp.reason = True, None, space.message
                vp.launch = [FindingNote(space.rule, space.severity, space.message)]
                continue
            need_before += need
        else:
            space = None
        notes: list[Any] = []
        f = launch.host_sockets_busy(vp.host_name or vp.host_urn, hosts.get(vp.host_urn, 0), per_host)
        if f is not None:
            notes.append(f)
        for ds in sorted({d.datastore_urn for d in vp.disks}):
            f = launch.target_volumes_busy(ds, dss.get(ds, 0), per_datastore)
            if f is not None:
                notes.append(f)
        if bh is not None:
            notes.append(bh)
        if space is not None:
            notes.append(space)
        vp.launch = [FindingNote(n.rule, n.severity, n.message, list(n.disks or [])) for n in notes]
    return plan
