"""Restore a restore point: to a new VM, over the original VM, or one disk to a new volume.

Sequence (vrm-api.md §7.3, §9.3, §11):

* **plan** (:func:`plan_restore`, read-only): the point, the target datastores and the restore-time rules
  (``cross-storage-restore``, ``restore-arch-mismatch``, ``restore-space``, ``restore-overwrite-running``)
  — nothing changes on the VRM.
* **placement**: a datastore is offered only when a host of the source VM's CPU architecture reaches it
  (the datastore's ``hosts[]`` and each host's ``arch``); the source's own cluster comes first. The
  architecture is the one the point recorded (``vm_config.arch``), else the original VM's, else the one
  of the hosts that reached the backed-up disks' datastores; unknown is a warning.
* **new VM / single disk**: ``POST S/volumes`` per disk on the chosen datastore (sizes from the point) ->
  a ``RestoreVol`` backup resource per volume -> ``PUT`` the point's non-zero blocks (a new volume reads as
  zeros) -> read back and compare -> release -> ``POST S/vms`` from the volumes with the original CPU,
  memory, disk order and buses (or attach the single volume to a chosen VM) -> optional power-on.
  The VM is created only after every disk is written and verified, so a failure never leaves a
  half-made VM; what the restore created is deleted on failure or cancel unless ``keep_on_failure``.
* **damaged points**: the plan checks that the manifest reads and that every chunk of the disks to
  restore is present and not quarantined (a blocker otherwise; no re-hash). Every chunk is hashed
  before it is written. Over an existing VM (and for a single disk) every chunk is read and hashed
  before anything happens on the VRM (no stop, no volume, no resource): a damaged point changes
  nothing, and the error names the point, the disk and the block (measured: 0.4-0.8 s per GiB of
  stored data, benchmarks/restore_preverify.py). To a new VM the chunk is hashed as it is read for
  writing; a damaged one stops the restore before that block and what was created is removed.
* **transient VRM errors** (5xx, 401, dropped connection, timeout) are tried again within one budget at
  creations, resource prepare and release and data writes; a creation whose answer was lost is looked
  up by its unique name before it is tried again.
* **original VM**: stop it only when the request says so; a persisted journal entry "overwrite in
  progress" names the point and the VM before the first byte is written and is cleared only when every
  disk is verified (the retry is the same restore again). Per disk a ``CBTRestore`` resource: the
  current volume is read back range by range, each block's SHA-256 is compared with the point's block
  digest, and only blocks that differ are written (zeros included, so the result is byte-identical).
  The overwritten volumes get a CBT chain mark, so their next backup is full.

Choice of the "differing blocks" method: per-block digests rather than the volume's CBT. The CBT bitmap
of the live volume needs a CBT snapshot of the VM (``getcbt`` requires a ``snapUuid``), which consumes a
chgID and needs Tools; a restore over a VM whose chain was broken (the usual reason to restore) would
still need a full comparison. Comparing digests is always correct, costs a sequential read of the
volume (cheaper than writing on real storage) and needs no snapshot.

Verification: after writing, the volume is read back through the same restore resource (``GET`` with
``Range`` on ``resourceUrl``, our documented stand-in of the CNA socket's read command) and its
SHA-256 compared with :meth:`DiskReader.sha256`. The engine never uses the simulator's ``/sim`` API.
If a VRM refuses reads on a restore resource, the disk is reported ``verified: None`` (unverified)
and a differing-blocks restore falls back to writing every block.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator

from ..rules import catalog as C
from ..rules.engine import Finding
from ..rules.launch import cross_storage_restore, restore_arch_mismatch, restore_overwrite_running, restore_space
from ..units import human_bytes
from ..vrm.errors import VrmApiError, VrmError, VrmNotFoundError
from ..vrm.models import Datastore, Host, Vm
from ..vrm.urn import site_uri, urn_to_uri
from . import cleanup
from .journal import JournalLike, MemoryJournal
from .model import DiskProgress, JobError, JobRecord, VmProgress
from .runner import Reporter, retry_blocking, uncancellable

if TYPE_CHECKING:  # pragma: no cover
    from ..repo import Repository, RestorePoint, RestorePointDisk
    from ..repo.repository import DiskReader
    from ..vrm.client import VrmClient
    from ..vrm.transport import BlockTransport

log = logging.getLogger("fctui.jobs.restore")

GIB = 1 << 30
TARGETS = ("new", "original", "disk")
# Findings of our own (not in the rule catalog): the same shape as catalog findings.
TARGET_UNKNOWN = "restore-target-unknown"
ORIGINAL_MISSING = "restore-original-missing"
SIZE_CHANGED = "restore-size-changed"
NO_HOST = "restore-no-host"
DISK_NOT_IN_POINT = "restore-disk-not-in-point"
ATTACH_STATE = "restore-attach-state"
POINT_DAMAGED = C.RULES["restore-point-damaged"].id
ARCH_MISMATCH = C.RULES["restore-arch-mismatch"].id
UNMAPPED = C.RULES["restore-unmapped"].id

__all__ = ["RestoreError", "RestoreRequest", "RestoreDiskPlan", "RestorePlan", "DatastoreChoice",
           "RestoreSettings", "plan_restore", "datastore_choices", "run_restore", "restore_result",
           "coalesce_runs", "cleanup_restore_intents", "restore_site", "RESTORE_INTENTS", "check_vm_name", "default_vm_name"]


class RestoreError(JobError):
    """A restore that cannot be planned or run (bad point, bad target, blocked plan)."""


@dataclass
class RestoreRequest:
    point_id: str
    target: str  # 'new' | 'original' | 'disk'
    name: str | None = None
    datastores: dict[str, str] = field(default_factory=dict)  # source volume urn -> target datastore urn
    power_on: bool = False
    stop_vm: bool = False          # original target running: stop it only when asked
    disk_volume: str | None = None  # 'disk': which disk of the point
    attach_to_vm: str | None = None  # 'disk': attach the new volume to this VM (urn), or None = detached
    keep_on_failure: bool = False
    # into another site (issue 19): where the new VM goes (target cluster or host URN, "" = the planner
    # picks) and each NIC's port group (source port group URN -> target URN, "" = the NIC is left out)
    location: str = ""
    port_groups: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"point_id": self.point_id, "target": self.target, "name": self.name,
                "datastores": dict(self.datastores), "power_on": self.power_on, "stop_vm": self.stop_vm,
                "disk_volume": self.disk_volume, "attach_to_vm": self.attach_to_vm,
                "keep_on_failure": self.keep_on_failure, "location": self.location,
                "port_groups": dict(self.port_groups)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RestoreRequest":
        if not isinstance(d, dict) or not d.get("point_id") or d.get("target") not in TARGETS:
            raise RestoreError("a restore request needs point_id and target (new, original or disk)")
        ds = d.get("datastores") or {}
        if not isinstance(ds, dict):
            raise RestoreError("datastores must map source volume URNs to datastore URNs")
        pgs = d.get("port_groups") or {}
        if not isinstance(pgs, dict):
            raise RestoreError("port_groups must map source port group URNs to port group URNs (or \"\")")
        return cls(point_id=str(d["point_id"]), target=str(d["target"]), name=d.get("name") or None,
                   datastores={str(k): str(v) for k, v in ds.items()}, power_on=bool(d.get("power_on")),
                   stop_vm=bool(d.get("stop_vm")), disk_volume=d.get("disk_volume") or None,
                   attach_to_vm=d.get("attach_to_vm") or None, keep_on_failure=bool(d.get("keep_on_failure")),
                   location=str(d.get("location") or ""),
                   port_groups={str(k): str(v if v is not None else "") for k, v in pgs.items()})


@dataclass
class RestoreDiskPlan:
    source_volume: str
    disk_name: str
    sequence_num: int | None
    pci_type: str
    size_bytes: int
    storage_type: str
    target_datastore_urn: str
    target_datastore_name: str
    target_volume_urn: str  # the existing volume for 'original', '' for a new one
    mode: str               # 'all' | 'differing'
    bytes_to_write: int | None
    reason: str

    @property
    def size_gb(self) -> int:
        return max(1, math.ceil(self.size_bytes / GIB))

    def to_json(self) -> dict[str, Any]:
        return {"source_volume": self.source_volume, "disk_name": self.disk_name,
                "sequence_num": self.sequence_num, "pci_type": self.pci_type, "size_bytes": self.size_bytes,
                "storage_type": self.storage_type, "target_datastore_urn": self.target_datastore_urn,
                "target_datastore_name": self.target_datastore_name,
                "target_volume_urn": self.target_volume_urn, "mode": self.mode,
                "bytes_to_write": self.bytes_to_write, "reason": self.reason}


@dataclass
class RestorePlan:
    request: RestoreRequest
    point: "RestorePoint"
    vm_name: str
    vm_urn: str  # the original VM ('original'), the VM to attach to ('disk'), else ''
    creates: list[str] = field(default_factory=list)
    overwrites: list[str] = field(default_factory=list)
    powers_off: list[str] = field(default_factory=list)
    disks: list[RestoreDiskPlan] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    blocked: bool = False
    site_uri: str = ""
    location: str = ""    # host URN for a new VM (reaches every target datastore)
    vm_status: str = ""   # status of the original VM when planned
    # (rule id, what it checked) of every pre-check that ran, in order: "every pre-check passed" names them
    checks: list[tuple[str, str]] = field(default_factory=list)
    # into another site: every disk/NIC/location with no target there (the restore-unmapped blocker's items)
    unmapped: list[Any] = field(default_factory=list)   # fctui.jobs.sitemap.UnmappedItem

    @property
    def cross_site(self) -> bool:
        """Restored into another site than the point's (a VRM other than the one backed up)."""
        return bool(self.site_uri) and self.site_uri != site_uri(self.point.vm_urn)

    @property
    def target_site(self) -> str:
        """The id of the site restored into (the ``<id>`` of ``urn:sites:<id>``)."""
        return self.site_uri.rstrip("/").rsplit("/", 1)[-1]

    def ran(self, rule: str, what: str) -> None:
        if all(r != rule for r, _ in self.checks):
            self.checks.append((rule, what))

    @property
    def blockers(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "blocker"]

    def to_json(self) -> dict[str, Any]:
        p = self.point
        return {"request": self.request.to_json(),
                "point": {"id": p.id, "vm_urn": p.vm_urn, "vm_name": p.vm_name, "created": p.created,
                          "kind": p.kind, "size_bytes": p.size_bytes},
                "target": self.request.target, "vm_name": self.vm_name, "vm_urn": self.vm_urn,
                "creates": list(self.creates), "overwrites": list(self.overwrites),
                "powers_off": list(self.powers_off), "disks": [d.to_json() for d in self.disks],
                "findings": [f.to_json() for f in self.findings], "blocked": self.blocked,
                "location": self.location, "checks": [{"rule": r, "checked": w} for r, w in self.checks],
                "site": self.site_uri, "cross_site": self.cross_site,
                "unmapped": [dataclasses.asdict(i) | {"text": i.describe()} for i in self.unmapped]}


@dataclass
class DatastoreChoice:
    datastore: Datastore
    compatible: bool
    reason: str
    free_gb: int | None
    clusters: list[str] = field(default_factory=list)  # names of the clusters of the hosts that reach it
    host_names: list[str] = field(default_factory=list)
    in_source_cluster: bool = False

    @property
    def where(self) -> str:
        """Cluster and host(s) that reach the datastore, as the restore walkthrough shows them."""
        cl = ", ".join(self.clusters) or "no cluster"
        if len(self.host_names) == 1:
            return f"{self.host_names[0]} ({cl})"
        return f"{cl} ({len(self.host_names)} hosts)"


@dataclass
class RestoreSettings:
    resource_delay: int = 600       # s; an orphaned restore resource expires on its own
    extend_every: float = 240.0
    writes_in_flight: int = 4       # ranges in flight per disk: repository reads + PUT (or read-back) on a thread
    read_threads: int = 4           # worker threads (at least writes_in_flight)
    max_range_bytes: int = 8 << 20  # coalesce adjacent blocks into PUTs up to this size
    verify: bool = True
    task_timeout: float = 600.0
    task_interval: float = 0.25
    busy_retry_s: float = 120.0
    busy_interval: float = 0.5
    release_wait_s: float = 30.0
    cleanup_within_s: float = 120.0
    io_retries: int = 3             # per range on dropped connections (rewriting a range is safe)


# --------------------------------------------------------------------------------------------------
# planning (read-only)
# --------------------------------------------------------------------------------------------------

def _finding(rule: str, message: str, remediation: str, disks: list[str] | None = None,
             severity: str = "blocker") -> Finding:
    return Finding(rule, severity, message, remediation, disks)


def _point_disks(point: "RestorePoint") -> list["RestorePointDisk"]:
    """The point's disks in the VM's disk order (bus, then slot)."""
    order = {d.get("volumeUrn"): i for i, d in enumerate(point.vm_config.get("disks") or [])}
    return sorted(point.disks, key=lambda d: (order.get(d.volume_urn, 1 << 30), d.sequence_num or 0))


def _open_point(repo: "Repository", point_id: str) -> "RestorePoint":
    from ..repo import RepoError
    try:
        return repo.point(point_id)
    except RepoError as e:
        raise RestoreError(f"restore point {point_id!r}: {e}") from None


def _check_request(req: RestoreRequest) -> None:
    if req.target not in TARGETS:
        raise RestoreError(f"restore target {req.target!r}: use new, original or disk")
    if req.target == "disk" and not req.disk_volume:
        raise RestoreError("a single-disk restore needs the disk (source volume URN) to restore")
    if req.name is not None:
        check_vm_name(req.name)


def check_vm_name(name: str) -> None:
    """The name of the new VM (or volume), as the VRM accepts it (vrm-api.md: `name` length 1-256)."""
    if not 1 <= len(name) <= 256:
        raise RestoreError("the VM name must be 1 to 256 characters")


def _nonzero_bytes(d: "RestorePointDisk") -> int:
    return min(d.size_bytes, d.nonzero_blocks * d.block_size)


@dataclass
class _Source:
    """Where the backed-up VM ran, for placing its restore: CPU architecture and cluster(s)."""
    arch: str                  # C.X86 / C.ARM, "" when unknown
    clusters: set[str]         # cluster URNs of the source VM (its own, else its disks' datastores' hosts')
    hosts: dict[str, Host]     # every host of the site by URN

    @property
    def host_arch(self) -> dict[str, str]:
        return {urn: h.arch for urn, h in self.hosts.items()}

    def in_cluster(self, ds: Datastore) -> bool:
        return any(h in self.hosts and self.hosts[h].cluster_urn in self.clusters for h in ds.hosts)

    def unknown_arch(self) -> Finding | None:
        if self.arch:
            return None
        return _finding(ARCH_MISMATCH, "the CPU architecture of the backed-up VM is unknown (not in the restore "
                                       "point, the original VM is gone): the target is not checked against it",
                        "Check that the target datastores' hosts have the architecture the guest was "
                        "installed for (x86_64 or aarch64).", severity=C.WARNING)


async def _original_vm(client: "VrmClient", point: "RestorePoint") -> Vm | None:
    try:
        return await client.vm(point.vm_urn)
    except VrmError:  # gone, or the VRM cannot say now: the point's own record still places the restore
        return None


async def _source(client: "VrmClient", point: "RestorePoint", stores: dict[str, Datastore],
                  original: Vm | None, site: str | None = None) -> _Source:
    """``site``: the site restored into when it is not the point's (another VRM): its hosts are the ones
    checked against the architecture the point recorded; the source cluster is unknown there."""
    if site is not None and site != site_uri(point.vm_urn):
        hosts = {h.urn: h for h in await client.hosts(site)}
        return _Source(C.arch_family(str(point.vm_config.get("arch") or "")), set(), hosts)
    hosts = {h.urn: h for h in await client.hosts(site_uri(point.vm_urn))}
    # The hosts that reached the backed-up disks' datastores: the VM ran on one of them.
    reached = {h for d in point.disks if d.datastore_urn in stores for h in stores[d.datastore_urn].hosts}
    arch = C.arch_family(str(point.vm_config.get("arch") or ""))
    if not arch and original is not None:
        arch = C.arch_family(original.arch)
    if not arch:
        seen = {C.arch_family(hosts[h].arch) for h in reached if h in hosts} - {""}
        arch = seen.pop() if len(seen) == 1 else ""
    if original is not None and original.cluster_urn:
        clusters = {original.cluster_urn}
    else:
        clusters = {hosts[h].cluster_urn for h in reached if h in hosts and hosts[h].cluster_urn}
    return _Source(arch, clusters, hosts)


async def datastore_choices(client: "VrmClient", repo: "Repository", point_id: str,
                            volume_urn: str, site: str | None = None) -> list[DatastoreChoice]:
    """Every datastore of the point's site (or of ``site``, the URI of another site restored into) for one
    disk: compatible ones (same storage class, reachable from a host of the source VM's architecture,
    normal, enough free space for this disk) first, the source VM's cluster first among them, then most
    free space first."""
    point = _open_point(repo, point_id)
    disk = point.disk(volume_urn)
    if disk is None:
        raise RestoreError(f"restore point {point_id} has no disk {volume_urn}")
    need = max(1, math.ceil(disk.size_bytes / GIB))
    own = site_uri(point.vm_urn)
    site = site or own
    stores = {ds.urn: ds for ds in await client.datastores(site)}
    original = await _original_vm(client, point) if site == own else None
    src = await _source(client, point, stores, original, site)
    host_arch = src.host_arch
    out: list[DatastoreChoice] = []
    for ds in stores.values():
        f = cross_storage_restore(disk.storage_type, ds) or restore_arch_mismatch(src.arch, ds, host_arch)
        free = ds.usable_free_gb
        if f is not None:
            ok, reason = False, f.message
        elif ds.status and ds.status != "NORMAL":
            ok, reason = False, f"{ds.name} is {ds.status}"
        elif free is None or free < need:
            ok, reason = False, (f"{ds.name} has {_gib(free) if free is not None else 'no reported space'} free, "
                                 f"the disk needs {_gib(need)}")
        else:
            ok, reason = True, f"{C.storage_class(ds.storage_type)} storage like the backup"
        reach = [src.hosts[h] for h in ds.hosts if h in src.hosts]
        out.append(DatastoreChoice(ds, ok, reason, free,
                                   clusters=sorted({h.cluster_name or h.cluster_urn for h in reach} - {""}),
                                   host_names=sorted(h.name for h in reach), in_source_cluster=src.in_cluster(ds)))
    out.sort(key=lambda c: (not c.compatible, not c.in_source_cluster, -(c.free_gb or 0), c.datastore.name))
    return out


def default_vm_name(point: "RestorePoint") -> str:
    """The new VM's name when none is given (the CLI's --name, the walkthrough's name field)."""
    return f"{point.vm_name}-restored-{time.strftime('%Y%m%d-%H%M', time.gmtime(point.created))}"


async def plan_restore(client: "VrmClient", repo: "Repository", request: RestoreRequest) -> RestorePlan:
    """What the restore would create, overwrite and power off, and every restore-time finding.
    Only reads from the VRM and the repository."""
    _check_request(request)
    point = _open_point(repo, request.point_id)
    site = await _target_site(client, site_uri(point.vm_urn))
    disks = _point_disks(point)
    if request.target == "disk":
        disks = [d for d in disks if d.volume_urn == request.disk_volume]
        if not disks:
            raise RestoreError(f"restore point {point.id} has no disk {request.disk_volume}")
    if not disks:
        raise RestoreError(f"restore point {point.id} holds no disks")
    unknown = set(request.datastores) - {d.volume_urn for d in point.disks}
    if unknown:
        raise RestoreError(f"--datastore names disks that are not in the point: {', '.join(sorted(unknown))}")
    plan = RestorePlan(request=request, point=point, vm_name="", vm_urn="", site_uri=site)
    plan.findings.extend(await asyncio.to_thread(_point_damage, repo, point, disks))
    plan.ran(POINT_DAMAGED, f"every block of the {len(disks)} disk(s) is in the repository")
    if request.target == "original":
        await _plan_original(client, plan, disks)
    else:
        await _plan_new(client, plan, disks)
    plan.blocked = any(f.severity == "blocker" for f in plan.findings)
    return plan


async def restore_site(client: "VrmClient", point: "RestorePoint") -> str:
    """The URI of the site a new VM or volume of ``point`` is restored into through ``client``: the
    point's own site, or the client's VRM's site when that is another one."""
    return await _target_site(client, site_uri(point.vm_urn))


async def _target_site(client: "VrmClient", own: str) -> str:
    """The site a new VM or volume is restored into: the point's own when the client's VRM has it, else
    the VRM's site (a restore into another VRM, issue 19)."""
    try:
        sites = await client.sites()
    except VrmError:  # the VRM cannot say now: the point's own site, as before (the plan reads it next)
        return own
    uris = [s.uri for s in sites if s.uri]
    if not uris or own in uris:
        return own
    return uris[0]


def _damaged_message(point_id: str, disk: "RestorePointDisk", what: str) -> str:
    return f"restore point {point_id} is damaged: disk {disk.disk_name or '?'} ({disk.volume_urn}) {what}"


def _point_damage(repo: "Repository", point: "RestorePoint", disks: list["RestorePointDisk"]) -> list[Finding]:
    """Blockers for the disks to restore whose manifest cannot be read or whose chunks are missing or
    quarantined: an existence check per chunk (a flipped byte is found when the chunk is read)."""
    from ..repo import RepoError
    out: list[Finding] = []
    way = ("Restore another point; `fctui repo verify` shows the damage (the next backup of the VM "
           "reads the missing blocks again).")
    for d in disks:
        try:
            reader = repo.open_disk(point.id, d.volume_urn)
        except RepoError as e:  # the manifest: one for every disk of the point, so said once
            out.append(_finding(POINT_DAMAGED, f"restore point {point.id} cannot be read: {e}", way,
                                [x.volume_urn for x in disks]))
            break
        absent = reader.unavailable_blocks()
        if absent:
            block, digest, problem = absent[0]
            out.append(_finding(POINT_DAMAGED, _damaged_message(
                point.id, d, f"has {len(absent)} block(s) whose chunk is missing or quarantined (first: block "
                             f"{block}, chunk {digest[:16]}... {problem})"), way, [d.volume_urn]))
    return out


async def _plan_original(client: "VrmClient", plan: RestorePlan, disks: list["RestorePointDisk"]) -> None:
    point, req = plan.point, plan.request
    plan.vm_urn = point.vm_urn
    plan.vm_name = point.vm_name
    plan.ran(ORIGINAL_MISSING, "the original VM still exists")
    if plan.cross_site:  # the VRM is another site's: the original VM is not there to overwrite
        plan.findings.append(_finding(
            ORIGINAL_MISSING, f"the original VM {point.vm_name} is on site {site_uri(point.vm_urn).rsplit('/', 1)[-1]}, "
                              f"this VRM is site {plan.target_site}: it cannot be overwritten from here",
            "Restore to a new VM on this site, or connect to the original VM's VRM."))
        return
    try:
        vm = await client.vm(point.vm_urn)
    except VrmNotFoundError:
        plan.findings.append(_finding(ORIGINAL_MISSING, f"the original VM {point.vm_name} no longer exists",
                                      "Restore to a new VM instead."))
        return
    plan.vm_name = vm.name or point.vm_name
    plan.vm_status = vm.status
    plan.ran("restore-overwrite-running", "the VM is stopped, or stopping it was asked for")
    plan.ran(SIZE_CHANGED, "each disk is still attached at its backed-up size")
    f = restore_overwrite_running(vm, stop_confirmed=req.stop_vm)
    if f is not None:
        plan.findings.append(f)
    elif vm.status != C.STOPPED:
        plan.powers_off.append(f"VM {plan.vm_name} ({vm.status}) is stopped before its disks are overwritten")
    current = {d.volume_urn: d for d in vm.disks}
    for d in disks:
        cur = current.get(d.volume_urn)
        if cur is None:
            plan.findings.append(_finding(
                SIZE_CHANGED, f"disk {d.disk_name} ({d.volume_urn}) is no longer attached to {plan.vm_name}",
                "Restore to a new VM, or the single disk to a new volume.", [d.volume_urn]))
            continue
        cur_bytes = (cur.quantity_gb or 0) * GIB
        if cur.quantity_gb is not None and cur_bytes != d.size_bytes:
            plan.findings.append(_finding(
                SIZE_CHANGED, f"disk {d.disk_name} is {_gib(cur.quantity_gb)} now, {human_bytes(d.size_bytes)} in the "
                              "restore point: overwriting would not give the backed-up disk back",
                "Restore to a new VM, or the single disk to a new volume.", [d.volume_urn]))
            continue
        plan.disks.append(RestoreDiskPlan(
            source_volume=d.volume_urn, disk_name=d.disk_name, sequence_num=d.sequence_num, pci_type=d.pci_type,
            size_bytes=d.size_bytes, storage_type=d.storage_type, target_datastore_urn=cur.datastore_urn,
            target_datastore_name=cur.datastore_name, target_volume_urn=d.volume_urn, mode="differing",
            bytes_to_write=None,
            reason="overwrite: the volume is compared block by block (SHA-256) with the restore point and "
                   "only differing blocks are written"))
        plan.overwrites.append(f"disk {d.disk_name} of VM {plan.vm_name} ({human_bytes(d.size_bytes)})")
    if req.power_on:
        plan.creates.append(f"VM {plan.vm_name} is powered on after the restore")


async def _plan_new(client: "VrmClient", plan: RestorePlan, disks: list["RestorePointDisk"]) -> None:
    point, req = plan.point, plan.request
    stores = {ds.urn: ds for ds in await client.datastores(plan.site_uri)}
    cross = plan.cross_site
    original = None if cross else await _original_vm(client, point)
    src = await _source(client, point, stores, original, plan.site_uri)
    host_arch = src.host_arch
    clusters: dict[str, str] = {}
    if cross or req.location:
        clusters = {c.urn: c.name for c in await client.clusters(plan.site_uri)}
        if req.location in clusters:
            src.clusters = {req.location}
        elif req.location in src.hosts and src.hosts[req.location].cluster_urn:
            src.clusters = {src.hosts[req.location].cluster_urn}
    groups: dict[str, Any] = {}
    if cross:
        groups = {pg.urn: pg for pg in await client.port_groups(plan.site_uri)}
        _check_mapped(plan, disks, stores, groups, set(clusters) | set(src.hosts))
    elif req.location and req.location not in clusters and req.location not in src.hosts:
        plan.findings.append(_finding(TARGET_UNKNOWN, f"location {req.location} is no cluster or host of the site",
                                      "Pick a cluster or a host of the site, or none (the planner picks a host)."))
    plan.ran(TARGET_UNKNOWN, "every chosen datastore exists")
    plan.ran("cross-storage-restore", "each datastore has the disk's storage class")
    plan.ran(ARCH_MISMATCH, f"datastores reached by {src.arch} hosts, like the VM"
             if src.arch else "the VM's CPU architecture is known")
    plan.ran("restore-space", "room for the disks on each datastore")
    if (f := src.unknown_arch()) is not None:
        plan.findings.append(f)
    by_ds: dict[str, list[RestoreDiskPlan]] = {}
    for d in disks:
        target = req.datastores.get(d.volume_urn) or d.datastore_urn
        ds = stores.get(target)
        if ds is None and cross:
            continue  # named with every other unmapped item by restore-unmapped
        if ds is None:
            plan.findings.append(_finding(
                TARGET_UNKNOWN, f"datastore {target} for disk {d.disk_name} does not exist on the site",
                "Pick one of the datastores offered for this disk.", [d.volume_urn]))
            continue
        f = cross_storage_restore(d.storage_type, ds)
        if f is not None:
            f.disks = [d.volume_urn]
            plan.findings.append(f)
        dp = RestoreDiskPlan(
            source_volume=d.volume_urn, disk_name=d.disk_name, sequence_num=d.sequence_num, pci_type=d.pci_type,
            size_bytes=d.size_bytes, storage_type=d.storage_type, target_datastore_urn=ds.urn,
            target_datastore_name=ds.name, target_volume_urn="", mode="all", bytes_to_write=_nonzero_bytes(d),
            reason="new volume: every non-zero block of the restore point is written (a new volume reads as zeros)")
        plan.disks.append(dp)
        by_ds.setdefault(ds.urn, []).append(dp)
    for urn, dps in by_ds.items():  # once per datastore, naming its disks
        f = restore_arch_mismatch(src.arch, stores[urn], host_arch, [dp.source_volume for dp in dps])
        if f is not None:
            plan.findings.append(f)
        f = restore_space(stores[urn], [dp.size_gb for dp in dps], [dp.source_volume for dp in dps])
        if f is not None:
            plan.findings.append(f)
    if req.target == "new":
        plan.vm_name = req.name or default_vm_name(point)
        cfg = point.vm_config
        cpu = (cfg.get("cpu") or {}).get("quantity", "?")
        mem = (cfg.get("memory") or {}).get("quantityMB", "?")
        for dp in plan.disks:
            plan.creates.append(f"volume {plan.vm_name}-{dp.disk_name or 'disk'} ({_gib(dp.size_gb)}) on "
                                f"{dp.target_datastore_name}")
        plan.creates.append(f"VM {plan.vm_name} ({cpu} vCPU, {human_bytes(mem << 20) if isinstance(mem, int) else '? MiB'}, {len(plan.disks)} disk(s))"
                            + (", powered on" if req.power_on else ", left stopped"))
        if cross:
            for n in _nics(cfg):
                dst = req.port_groups.get(n["portGroupUrn"], n["portGroupUrn"])
                what = f"NIC {n.get('name') or n.get('sequenceNum') or '?'}"
                if dst == "":
                    plan.creates.append(f"{what}: left out (mapped to none)")
                elif dst in groups:
                    plan.creates.append(f"{what} on port group {groups[dst].name}")
        plan.ran(DISK_NOT_IN_POINT, "every disk of the VM is in the point")
        missing = [x for x in cfg.get("disks") or [] if x.get("volumeUrn") not in {d.volume_urn for d in point.disks}]
        for x in missing:
            plan.findings.append(_finding(
                DISK_NOT_IN_POINT, f"disk {x.get('diskName') or x.get('volumeUrn')} of {point.vm_name} is not in "
                                   "the restore point (independent or shared disk): the new VM will not have it",
                "Attach a copy of that disk by hand if the guest needs it.", [str(x.get("volumeUrn", ""))],
                severity="warning"))
        plan.location = _pick_host(plan, stores, original, src, clusters)
    else:  # single disk
        dp = plan.disks[0] if plan.disks else None
        plan.vm_name = ""
        if req.attach_to_vm:
            plan.ran(ATTACH_STATE, "the VM to attach to is running or stopped")
            try:
                vm = await client.vm(req.attach_to_vm)
            except VrmNotFoundError:
                plan.findings.append(_finding(TARGET_UNKNOWN, f"VM {req.attach_to_vm} does not exist",
                                              "Pick another VM, or leave the volume detached."))
                vm = None
            if vm is not None:
                plan.vm_urn, plan.vm_name = vm.urn, vm.name
                if vm.status not in ("running", "stopped"):
                    plan.findings.append(_finding(
                        ATTACH_STATE,
                        f"{vm.name} is {vm.status}: a volume can be attached to a running or stopped VM only",
                        "Wait until the VM is running or stopped."))
        if dp is not None:
            name = req.name or f"{point.vm_name}-{dp.disk_name or 'disk'}-restored"
            where = f", attached to VM {plan.vm_name}" if plan.vm_urn else ", left detached"
            plan.creates.append(f"volume {name} ({_gib(dp.size_gb)}) on {dp.target_datastore_name}{where}")


def _nics(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The backed-up NICs that were plugged into a port group."""
    return [n for n in cfg.get("nics") or [] if isinstance(n, dict) and n.get("portGroupUrn")]


def _check_mapped(plan: RestorePlan, disks: list["RestorePointDisk"], stores: dict[str, Datastore],
                  groups: dict[str, Any], locations: set[str]) -> None:
    """Into another site: one ``restore-unmapped`` blocker naming every disk, NIC and location with no
    target there (the operator maps them all in one go, not one per attempt)."""
    from .sitemap import unmapped_items
    req = plan.request
    plan.ran(UNMAPPED, "every disk, NIC and the location have a target on the site")
    items = unmapped_items(plan.point, req, stores, groups, locations, disks=[d.volume_urn for d in disks])
    plan.unmapped = items
    if not items:
        return
    plan.findings.append(_finding(
        UNMAPPED, f"{len(items)} item(s) of {plan.point.vm_name} have no target on site {plan.target_site}: "
                  + "; ".join(i.describe() for i in items),
        "Map each of them to the target site (--map-datastore SRC=DST, --map-network SRC=DST|none, "
        "--location), or pick them in the walkthrough.",
        [i.item for i in items if i.kind == "datastore"] or None))


def _pick_host(plan: RestorePlan, stores: dict[str, Datastore], original: Vm | None, src: _Source,
               clusters: dict[str, str] | None = None) -> str:
    """A host of the source VM's architecture that reaches every target datastore; the original VM's
    host when it does, else one of the source's cluster. A location in the request narrows it: a cluster
    (URN in ``clusters``) to its hosts, a host to that host."""
    sets = [set(stores[d.target_datastore_urn].hosts) for d in plan.disks if d.target_datastore_urn in stores]
    plan.ran(NO_HOST, f"one {src.arch + ' ' if src.arch else ''}host reaches every chosen datastore")
    if not sets:
        return ""
    common = set.intersection(*sets)
    if not common:
        plan.findings.append(_finding(
            NO_HOST, "no host reaches every chosen datastore: the new VM could not use all its disks",
            "Map the disks to datastores shared by one host (or one cluster)."))
        return ""
    loc = plan.request.location
    if loc and (loc in src.hosts or loc in (clusters or {})):
        if loc in src.hosts:
            common &= {loc}
            where = f"host {src.hosts[loc].name or loc}"
        else:
            common = {h for h in common if h in src.hosts and src.hosts[h].cluster_urn == loc}
            where = f"cluster {(clusters or {}).get(loc) or loc}"
        if not common:
            plan.findings.append(_finding(
                NO_HOST, f"{where} does not reach every chosen datastore: the new VM could not use all its disks",
                "Pick datastores that the location reaches, or another location."))
            return ""
    # A host whose architecture is not reported is not known to differ; one that differs is never picked.
    fits = {h for h in common if C.arch_family(src.hosts[h].arch if h in src.hosts else "") in (src.arch, "")} \
        if src.arch else common
    if not fits:
        if not any(f.rule == ARCH_MISMATCH and f.severity == C.BLOCKER for f in plan.findings):
            plan.findings.append(Finding.of(
                C.RULES[ARCH_MISMATCH], f"the backup is of an {src.arch} VM; no {src.arch} host reaches every "
                                        "chosen datastore: the restored guest would not boot"))
        return ""
    if original is not None and original.host_urn in fits:
        return original.host_urn
    return min(fits, key=lambda h: (not (h in src.hosts and src.hosts[h].cluster_urn in src.clusters), h))


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------

def coalesce_runs(blocks: list[int], max_blocks: int) -> Iterator[tuple[int, int]]:
    """Sorted block numbers as (start, count) runs of adjacent blocks, at most ``max_blocks`` long."""
    start = prev = -2
    n = 0
    for b in blocks:
        if n and b == prev + 1 and n < max_blocks:
            prev, n = b, n + 1
            continue
        if n:
            yield start, n
        start = prev = b
        n = 1
    if n:
        yield start, n


# What a VM create body may carry from the backed-up vmConfig (vrm-api.md §6.2 vmConfig, §11 create VM).
_CPU_CREATE_FIELDS = ("quantity", "coresPerSocket")
_MEMORY_CREATE_FIELDS = ("quantityMB",)
_OS_CREATE_FIELDS = ("osType", "osVersion", "guestOSName")
_NIC_CREATE_FIELDS = ("name", "portGroupUrn", "sequenceNum")
_OTHER_OS_IDS = frozenset({201, 202, 301, 302, 401, 402})


def _settable(d: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: d[k] for k in keys if k in d and d[k] is not None} if isinstance(d, dict) else {}


def new_restore_id() -> str:
    return "r" + time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass
class _Created:
    """What this restore created on the VRM (deleted on failure unless kept)."""
    volumes: list[tuple[str, str, int | None]] = field(default_factory=list)  # (urn, uri, journal key)
    vm: tuple[str, str, int | None] | None = None
    resource: tuple[str, str, int | None] | None = None  # (volume uri, task id, journal key)


class _Restore:
    def __init__(self, client: "VrmClient", repo: "Repository", plan: RestorePlan, job: JobRecord,
                 reporter: Reporter, journal: JournalLike, settings: RestoreSettings) -> None:
        self.client = client
        self.repo = repo
        self.plan = plan
        self.job = job
        self.reporter = reporter
        self.journal = journal
        self.s = settings
        self.created = _Created()
        self.vm = job.vms[0]
        self.targets: dict[str, str] = {d.source_volume: d.target_volume_urn for d in plan.disks}
        self.verified: dict[str, bool | None] = {}
        self.overwrite_key: int | None = None
        self.preverified: set[str] = set()  # source volumes whose every chunk was hashed in this run
        self.result_vm = plan.vm_urn  # the VM the result names (the new one once created)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, settings.read_threads,
                                                                          settings.writes_in_flight),
                                                          thread_name_prefix="fctui-restore")

    # --- helpers -----------------------------------------------------------------------------------

    async def _task(self, ref: Any) -> Any:
        return await self.client.wait_task(ref, timeout=self.s.task_timeout, interval=self.s.task_interval)

    async def _busy(self, fn: Callable[[], Awaitable[Any]], within: float | None = None) -> Any:
        """``fn`` until it does not fail with a busy code or a transient error, within one budget; an
        attempt is never cut short (creations and power operations wait for the task they started)."""
        return await cleanup.retry(fn, within=self.s.busy_retry_s if within is None else within,
                                   interval=self.s.busy_interval,
                                   codes=cleanup.BUSY_CODES | cleanup.HOST_LIMIT_CODES, cut=False)

    async def _create(self, key: int | None, kind: str, name: str, call: Callable[[], Awaitable[Any]],
                      **find: str) -> Any:
        """A creating call, tried again on a transient error. The failed call may have created the object
        all the same (a lost answer, a 5xx after the work): it is looked up by its unique name first; if
        there, it is recorded as created (so the failure cleanup removes it) and the error stands, rather
        than risk a second one."""
        async def once() -> Any:
            try:
                return await call()
            except VrmError as e:
                if not cleanup.is_transient(e):
                    raise
                intent = {"name": name, "site": self.plan.site_uri, **find}
                found = await _find_named(self.client, intent, kind)
                if found:
                    uri = found[0]
                    urn = ""
                    if kind == "volume":
                        self.created.volumes.append((urn, uri, key))
                    else:
                        self.created.vm = (urn, uri, key)
                    raise RestoreError(f"{e}; the {kind} {name} was created meanwhile: removed, "
                                       "run the restore again") from None
                raise
        return await self._created_or_forget(key, self._busy(once))

    def _intend(self, what: str, **fields: Any) -> int | None:
        return self.journal.intend(job_id=self.job.id, vrm=self.job.vrm, user=self.job.user, what=what,
                                   vm_urn=self.plan.vm_urn, site=self.plan.site_uri, **fields)

    # --- flow ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        plan, req = self.plan, self.plan.request
        with self.repo.protect([plan.point.id]):
            if req.target in ("original", "disk"):
                # Over an existing VM (or next to one): a damaged point must change nothing, so every
                # chunk is read and hashed before the VM is stopped or anything is prepared or created.
                await self._preverify()
            if req.target == "original":
                await self._overwrite_original()
            else:
                await self._restore_new()

    async def _restore_new(self) -> None:
        plan, req = self.plan, self.plan.request
        for dp in plan.disks:
            await self._create_volume(dp)
        for dp in plan.disks:
            await self._write_disk(dp, "RestoreVol")
        if req.target == "new":
            self.vm.state = "cleanup"  # building the VM from the written volumes
            self.reporter.state()
            await self._create_vm()
            if req.power_on:
                self.reporter.log(f"powering on {plan.vm_name}")
                await self._task(await self.client.start_vm(self.created.vm[1]))  # type: ignore[index]
        elif req.attach_to_vm:
            dp = plan.disks[0]
            self.reporter.log(f"attaching {dp.disk_name} to {plan.vm_name}")
            vol_urn = self.targets[dp.source_volume]
            await self._busy(lambda: self._attach(vol_urn, dp))

    async def _attach(self, vol_urn: str, dp: RestoreDiskPlan) -> None:
        await self._task(await self.client.attach_volume(urn_to_uri(self.plan.vm_urn), vol_urn,
                                                        pci_type=dp.pci_type or None))

    async def _create_volume(self, dp: RestoreDiskPlan) -> None:
        req = self.plan.request
        if req.target == "new":
            name = f"{self.plan.vm_name}-{dp.disk_name or 'disk'}"
        else:
            name = req.name or f"{self.plan.point.vm_name}-{dp.disk_name or 'disk'}-restored"
        cfg = next((x for x in self.plan.point.vm_config.get("disks") or []
                    if x.get("volumeUrn") == dp.source_volume), {})
        key = self._intend("restore-volume", name=name, datastore_urn=dp.target_datastore_urn)
        self.reporter.log(f"creating volume {name} ({_gib(dp.size_gb)}) on {dp.target_datastore_name}")
        resp = await self._create(key, "volume", name, lambda: self.client.create_volume(
            self.plan.site_uri, name=name, quantity_gb=dp.size_gb, datastore_urn=dp.target_datastore_urn,
            is_thin=bool(cfg.get("isThin", True))), datastore_urn=dp.target_datastore_urn)
        urn = resp.urn or ""
        uri = resp.uri or (urn_to_uri(urn) if urn else "")
        if key is not None:
            self.journal.update(key, volume_urn=urn, volume_uri=uri)
        self.created.volumes.append((urn, uri, key))
        await self._task(resp)
        self.targets[dp.source_volume] = urn
        d = self._disk(dp)
        d.reason = f"{dp.reason}; target {name} ({urn})"

    async def _created_or_forget(self, key: int | None, call: Awaitable[Any]) -> Any:
        """A creating call; when the VRM refused it (an answer, not a lost connection), nothing was
        created and the intent is dropped. A lost answer keeps the intent for the crash cleanup."""
        try:
            return await call
        except VrmApiError:
            if key is not None:
                self.journal.done(key)
            raise

    def _vm_body(self) -> dict[str, Any]:
        """The minimal documented create body (vrm-api.md §11 create VM): a VM detail's vmConfig also
        carries query-only fields (``cpu.affinitySet``, the disks' ``volumeUrl``/``storageType``, the
        Tools-reported ``osOptions.hostname``) that a VRM may refuse, so only settable fields are sent."""
        cfg = self.plan.point.vm_config
        backed_up = {x.get("volumeUrn"): x for x in cfg.get("disks") or [] if isinstance(x, dict)}
        disks = []
        for dp in self.plan.disks:
            disk: dict[str, Any] = {"volumeUrn": self.targets[dp.source_volume]}
            if dp.sequence_num is not None:
                disk["sequenceNum"] = dp.sequence_num
            # the bus the disk was backed up on; when the point does not say, the VRM's own default
            # (IDE on old releases, VIRTIO on newer ones: vrm-api.md §11) rather than a guess of ours
            pci = dp.pci_type or str(backed_up.get(dp.source_volume, {}).get("pciType") or "")
            if pci:
                disk["pciType"] = pci
            disks.append(disk)
        nics = []
        for n in cfg.get("nics") or []:
            if not isinstance(n, dict):
                continue
            nic = {k: v for k, v in n.items() if k in _NIC_CREATE_FIELDS}
            src = nic.get("portGroupUrn")
            if src and src in self.plan.request.port_groups:
                nic["portGroupUrn"] = self.plan.request.port_groups[src]  # "" (left out) is dropped below
            nics.append(nic)
        body: dict[str, Any] = {
            "name": self.plan.vm_name,
            "description": f"restored by fctui from restore point {self.plan.point.id} of {self.plan.point.vm_name}",
            "location": self.plan.location,
            "autoBoot": False,  # powered on explicitly afterwards, so a failure to start is reported as such
            "vmConfig": {"cpu": _settable(cfg.get("cpu"), _CPU_CREATE_FIELDS),
                         "memory": _settable(cfg.get("memory"), _MEMORY_CREATE_FIELDS), "disks": disks,
                         "nics": [n for n in nics if n.get("portGroupUrn")]},
        }
        os_opts = _settable(cfg.get("osOptions"), _OS_CREATE_FIELDS)
        try:
            other_os = int(os_opts.get("osVersion")) in _OTHER_OS_IDS  # type: ignore[arg-type]
        except (TypeError, ValueError):
            other_os = False
        if not other_os:
            os_opts.pop("guestOSName", None)   # meaningful only with the "other" ids (vrm-api.md §6.2)
        if os_opts:
            body["osOptions"] = os_opts
        return body

    async def _create_vm(self) -> None:
        key = self._intend("restore-vm", name=self.plan.vm_name)
        self.reporter.log(f"creating VM {self.plan.vm_name} from {len(self.plan.disks)} restored volume(s)")
        body = self._vm_body()
        resp = await self._create(key, "vm", self.plan.vm_name,
                                  lambda: self.client.create_vm(self.plan.site_uri, body))
        urn = resp.urn or ""
        uri = resp.uri or (urn_to_uri(urn) if urn else "")
        if key is not None:
            self.journal.update(key, vm_urn_created=urn, vm_uri=uri)
        self.created.vm = (urn, uri, key)
        self.vm.urn = urn
        self.result_vm = urn
        await self._task(resp)

    async def _overwrite_original(self) -> None:
        plan, req = self.plan, self.plan.request
        vm = await self.client.vm(plan.vm_urn)  # the plan may be old: check the state again
        if vm.status != C.STOPPED:
            if not req.stop_vm:
                raise RestoreError(f"{vm.name} is {vm.status}: it must be stopped before its disks are "
                                   "overwritten (ask for the stop explicitly)")
            self.reporter.log(f"stopping {vm.name} (requested) before overwriting its disks", "warning")
            await self._busy(lambda: self._stop(vm.uri or urn_to_uri(vm.urn)))
        self.overwrite_key = self._intend(
            "restore-overwrite", state="overwrite in progress", point_id=plan.point.id,
            request=req.to_json(), retry="run the same restore again (fctui restore "
                                         f"{plan.point.id} --to original --confirm)")
        self.reporter.log(f"overwrite in progress on {plan.vm_name}: recorded; if it stops half-way, run the "
                          "same restore again", "warning")
        for dp in plan.disks:
            await self._write_disk(dp, "CBTRestore")
        if req.power_on:
            self.reporter.log(f"powering on {plan.vm_name}")
            await self._busy(lambda: self._start(vm.uri or urn_to_uri(vm.urn)))

    async def _stop(self, uri: str) -> None:
        await self._task(await self.client.stop_vm(uri, "safe"))

    async def _start(self, uri: str) -> None:
        await self._task(await self.client.start_vm(uri))

    def _disk(self, dp: RestoreDiskPlan) -> DiskProgress:
        return next(d for d in self.vm.disks if d.volume == dp.source_volume)

    # --- one disk ------------------------------------------------------------------------------------

    async def _write_disk(self, dp: RestoreDiskPlan, task_type: str) -> None:
        d = self._disk(dp)
        if dp.target_volume_urn:
            # Whether the CBT file tracks writes through a restore resource is not documented: the next
            # backup of an overwritten disk is full (conservative; costs one full read).
            self.journal.mark_chain(dp.target_volume_urn, f"overwritten by restore job {self.job.id} from point "
                                                          f"{self.plan.point.id}")
        d.state, d.started = "reading", time.time()
        self.vm.state = "reading"
        self.reporter.state()
        vol_urn = self.targets[dp.source_volume]
        vol_uri = urn_to_uri(vol_urn)
        reader = self._open_disk(dp)
        key = self._intend("resource", volume_uri=vol_uri, volume_urn=vol_urn)
        ref = await self._prepare(vol_uri, task_type)
        task_id = ref.task_id
        if key is not None:
            self.journal.update(key, task_id=task_id)
        self.created.resource = (vol_uri, task_id, key)
        res = await self.client.wait_backup_resource(vol_uri, task_id, timeout=self.s.task_timeout,
                                                     interval=min(0.2, self.s.task_interval))
        transport = self.client.data_transport(res, size=dp.size_bytes)
        extender = asyncio.create_task(self._extend(vol_uri, task_id))
        try:
            async with transport:
                t0 = time.monotonic()
                recheck: list[int] | None = None  # None: read the whole volume back
                if dp.mode == "differing":
                    recheck = await self._write_differing(transport, reader, d, dp)
                else:
                    await self._write_all(transport, reader, d, dp)
                dt = max(time.monotonic() - t0, 1e-6)
                self.reporter.log(f"{dp.disk_name}: wrote {human_bytes(d.bytes_written)} in {dt:.2f} s "
                                  f"({human_bytes(d.bytes_written / dt)}/s) through a {task_type} resource")
                if self.s.verify:
                    t0 = time.monotonic()
                    ok = await self._verify(transport, reader, dp, recheck)
                    n = dp.size_bytes if recheck is None else len(recheck) * reader.block_size
                    self.reporter.log(f"{dp.disk_name}: read back and compared {human_bytes(n)} in "
                                      f"{time.monotonic() - t0:.1f} s: {'equal' if ok else 'NOT equal' if ok is False else 'not readable'}")
                    self.verified[dp.source_volume] = ok
                    if ok is False:
                        raise RestoreError(f"verification failed: {dp.disk_name} on {vol_urn} does not match "
                                           "the restore point after writing")
                else:
                    self.verified[dp.source_volume] = False  # not asked: nothing shown
        finally:
            extender.cancel()
            try:
                await uncancellable(self._release())
            except VrmError as e:  # do not hide the original failure; cleanup() retries the release
                self.reporter.log(f"releasing the restore resource of {dp.disk_name} failed: {e}", "warning")
        d.state, d.finished = "done", time.time()
        v = self.verified.get(dp.source_volume)
        d.reason = (f"{d.reason}; " if d.reason else "") + (
            "verified: every block read back equals the restore point" if v else
            "not verified: the VRM refused reading the volume back" if v is None else
            "not verified (verification off)" if not self.s.verify else "verification FAILED")
        self.reporter.progress(self.vm, d, force=True)
        self.reporter.state()

    async def _prepare(self, vol_uri: str, task_type: str) -> Any:
        return await self._busy(lambda: self.client.prepare_backup_resource(
            vol_uri, task_type, delay=self.s.resource_delay))   # ip: the client's requester_ip()

    async def _extend(self, vol_uri: str, task_id: str) -> None:
        while True:
            await asyncio.sleep(self.s.extend_every)
            try:
                await self.client.extend_backup_resource(vol_uri, task_id, self.s.resource_delay)
            except VrmError as e:
                log.info("extending restore resource %s failed: %s", task_id, e)

    async def _release(self) -> None:
        if self.created.resource is None:
            return
        vol_uri, task_id, key = self.created.resource
        await self._busy(lambda: cleanup.release_resource(self.client, vol_uri, task_id,
                                                          wait_gone=self.s.release_wait_s,
                                                          interval=min(0.2, self.s.task_interval)))
        if key is not None:
            self.journal.done(key)
        self.created.resource = None

    def _open_disk(self, dp: RestoreDiskPlan) -> "DiskReader":
        from ..repo import RepoError
        try:
            return self.repo.open_disk(self.plan.point.id, dp.source_volume)
        except RepoError as e:
            raise RestoreError(f"restore point {self.plan.point.id} cannot be read: {e}") from None

    def _damaged(self, reader: "DiskReader", block: int, e: Exception, written: str) -> RestoreError:
        return RestoreError(_damaged_message(self.plan.point.id, reader.disk, f"block {block}: {e}") + "; "
                            + written + " (`fctui repo verify` shows the damage; restore another point)")

    async def _preverify(self) -> None:
        """Read and hash every chunk of the disks to restore (each distinct chunk once), on the worker
        threads, holding no more than one chunk per thread. Raises naming point, disk and block."""
        from ..repo import ChunkError
        per_item = 16  # chunks per thread hand-off: the hand-off costs more than a small chunk
        self.reporter.log("checking every chunk of the restore point before writing: nothing changes on "
                          "the VRM until this is done")
        for dp in self.plan.disks:
            reader = self._open_disk(dp)
            first_block: dict[str, int] = {}
            for index, digest in sorted(reader.block_digests().items()):
                first_block.setdefault(digest, index)
            todo = list(first_block.items())
            total = 0
            t0 = time.monotonic()

            def work(start: int, reader: "DiskReader" = reader, todo: list[tuple[str, int]] = todo) -> int:
                n = 0
                for digest, block in todo[start:start + per_item]:
                    try:
                        n += len(reader.read_block(block, check=True))
                    except ChunkError as e:
                        raise self._damaged(reader, block, e, "nothing was written to the VRM") from None
                return n

            def done(_: int, n: int) -> None:
                nonlocal total
                total += n

            await self._run_on_threads(iter(range(0, len(todo), per_item)), work, done,
                                       max(1, self.s.read_threads))
            dt = time.monotonic() - t0
            self.preverified.add(dp.source_volume)
            self.reporter.log(f"{dp.disk_name}: every chunk of the restore point checked before writing "
                              f"({len(todo)} chunks, {human_bytes(total)} in {dt:.2f} s)")

    def _io_blocking(self, fn: Callable[[], Any]) -> Any:
        """:meth:`_io` for a worker thread."""
        return retry_blocking(fn, self.s.io_retries)

    def _block_parts(self, reader: "DiskReader", first: int, count: int) -> list[bytes]:
        """Blocks [first, first+count) from the repository (zeros where the point has none), one bytes
        per block: the transport sends them back to back as one PUT, so they are never joined (a join
        is one more copy and a fresh multi-MB buffer per range, i.e. page faults, on a CPU the data
        endpoint needs as well).
        Every chunk is hashed before it is written: here, or by :meth:`_preverify` earlier in this run
        (the point is protected meanwhile, and the read-back compares the written blocks again)."""
        from ..repo import ChunkError
        check = not (self.s.verify and reader.volume_urn in self.preverified)
        out = []
        for i in range(first, first + count):
            try:
                out.append(reader.read_block(i, check=check))
            except ChunkError as e:
                raise self._damaged(reader, i, e, "stopped before writing that block") from None
        return out

    def _read_back(self, transport: "BlockTransport", dp: RestoreDiskPlan, offset: int, length: int) -> bytes:
        data = self._io_blocking(lambda: transport.read_blocking(offset, length))
        if len(data) != length:
            raise RestoreError(f"short read-back on {dp.disk_name}: {len(data)} of {length} bytes")
        return data

    async def _io(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """On the event loop: ``fn`` with retries on transient errors (rewriting a range is safe)."""
        attempt = 0
        while True:
            try:
                return await fn()
            except VrmError as e:
                attempt += 1
                if not cleanup.is_transient(e) or attempt >= self.s.io_retries:
                    raise
                await asyncio.sleep(0.2 * attempt)

    async def _run_workers(self, jobs: Iterator[Any], worker: Callable[[Any], Awaitable[None]], n: int,
                           running: set[asyncio.Future] | None = None) -> None:
        """``n`` workers take items from ``jobs``; the first failure cancels the rest and is raised.
        ``running``: futures on worker threads, waited for before returning (see _run_on_threads)."""
        async def loop() -> None:
            for item in jobs:  # shared iterator: each item is taken once
                await worker(item)
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(max(1, n)):
                    tg.create_task(loop())
        except* Exception as group:
            # The first worker's failure is the story; the rest were cancelled because of it. Raising the
            # group itself would put "unhandled errors in a TaskGroup" in front of the user.
            raise group.exceptions[0] from None
        finally:
            # Ranges still on threads end within one transfer: wait, so that cleanup never releases
            # the resource (or deletes the volume) under a transfer still in flight.
            pending = [f for f in running or () if not f.done()]
            if pending:
                await asyncio.wait(pending)

    async def _run_on_threads(self, jobs: Iterator[Any], work: Callable[[Any], Any],
                              done: Callable[[Any, Any], None], n: int) -> None:
        """``n`` items in flight: ``work(item)`` on a worker thread (the transfer and the hashing stay
        off the event loop), ``done(item, result)`` back on the loop."""
        loop = asyncio.get_running_loop()
        running: set[asyncio.Future] = set()

        async def one(item: Any) -> None:
            fut = loop.run_in_executor(self.pool, work, item)
            running.add(fut)  # left there if we are cancelled meanwhile: waited for in _run_workers
            result = await asyncio.shield(fut)
            running.discard(fut)
            done(item, result)

        await self._run_workers(jobs, one, n, running)

    async def _write_all(self, transport: "BlockTransport", reader: "DiskReader", d: DiskProgress,
                         dp: RestoreDiskPlan, every_block: bool = False) -> None:
        """Write the point's non-zero blocks (or every block, zeros included) in coalesced PUTs: chunks
        are read on worker threads, the PUTs go out from the event loop (measured here: sequential
        restores ran 2-3x faster than with the PUT on the worker thread as well)."""
        bs = reader.block_size
        blocks = list(range(reader.block_count)) if every_block else sorted(reader.block_digests())
        max_blocks = max(1, self.s.max_range_bytes // bs)
        loop = asyncio.get_running_loop()
        d.bytes_planned = min(dp.size_bytes, len(blocks) * bs)

        async def one(run: tuple[int, int]) -> None:
            start, count = run
            parts = await loop.run_in_executor(self.pool, self._block_parts, reader, start, count)
            n = sum(len(p) for p in parts)
            d.bytes_read += n
            await self._io(lambda: transport.write(start * bs, parts))
            d.bytes_written += n
            self.reporter.progress(self.vm, d)

        await self._run_workers(coalesce_runs(blocks, max_blocks), one, self.s.writes_in_flight)

    async def _write_differing(self, transport: "BlockTransport", reader: "DiskReader", d: DiskProgress,
                               dp: RestoreDiskPlan) -> list[int] | None:
        """Read the volume back window by window; write only the blocks whose SHA-256 differs.

        Returns the blocks written: every other block was just read and found equal, so verifying
        those written blocks again proves the whole volume (the VM is stopped and the restore resource
        is ours: nothing else writes meanwhile). None after a fallback to writing every block."""
        bs = reader.block_size
        size = dp.size_bytes
        digests = reader.block_digests()
        window = max(1, self.s.max_range_bytes // bs)
        # The work of an overwrite is reading the whole volume back (bytes_read counts it): that is its plan;
        # which blocks differ, and so bytes_written, is known only after comparing.
        d.bytes_planned = size
        differing = 0
        written: list[int] = []

        def work(first: int) -> tuple[int, list[int], int]:
            offset = first * bs
            length = min(window * bs, size - offset)
            current = self._read_back(transport, dp, offset, length)
            todo = _differing_blocks(digests, bs, first, current)
            del current
            n = 0
            for start, count in coalesce_runs(todo, window):
                parts = self._block_parts(reader, start, count)
                self._io_blocking(lambda: transport.write_blocking(start * bs, parts))
                n += sum(len(p) for p in parts)
            return length, todo, n

        def done(first: int, result: tuple[int, list[int], int]) -> None:
            nonlocal differing
            length, todo, n = result
            d.bytes_read += length
            differing += len(todo)
            written.extend(todo)
            d.bytes_written += n
            self.reporter.progress(self.vm, d)

        try:
            await self._run_on_threads(iter(range(0, reader.block_count, window)), work, done,
                                       self.s.writes_in_flight)
        except VrmApiError as e:
            if e.status not in (403, 405, 501):
                raise
            self.reporter.log(f"{dp.disk_name}: the VRM refuses reading the volume back ({e}); writing every "
                              "block instead", "warning")
            d.bytes_read = 0  # the read-back stopped: the count starts again with the writes
            await self._write_all(transport, reader, d, dp, every_block=True)
            return None
        self.reporter.log(f"{dp.disk_name}: {differing} of {reader.block_count} blocks differed from the "
                          "restore point and were written")
        return sorted(written)

    async def _verify(self, transport: "BlockTransport", reader: "DiskReader", dp: RestoreDiskPlan,
                      only: list[int] | None = None) -> bool | None:
        """Read the volume back (all of it, or the blocks ``only``) and compare every block with the point:
        non-zero blocks by their SHA-256 (the repository's chunk names), zero blocks byte for byte. All
        blocks equal <=> the volume's bytes equal the point's (the same whole-disk SHA-256; tests check)."""
        bs = reader.block_size
        size = dp.size_bytes
        digests = reader.block_digests()
        window = max(1, self.s.max_range_bytes // bs)
        bad: list[int] = []
        runs: Iterator[tuple[int, int]]
        if only is None:
            runs = ((b, min(window, reader.block_count - b)) for b in range(0, reader.block_count, window))
        else:
            runs = coalesce_runs(only, window)

        def work(run: tuple[int, int]) -> list[int]:
            first, count = run
            offset = first * bs
            return _differing_blocks(digests, bs, first,
                                     self._read_back(transport, dp, offset, min(count * bs, size - offset)))

        try:
            await self._run_on_threads(runs, work, lambda run, differ: bad.extend(differ),
                                       self.s.writes_in_flight)
        except VrmApiError as e:
            if e.status in (403, 405, 501):
                return None
            raise
        if bad:
            self.reporter.log(f"{dp.disk_name}: {len(bad)} block(s) differ from the restore point after writing "
                              f"(first: block {min(bad)})", "error")
        return not bad

    # --- failure -------------------------------------------------------------------------------------

    async def cleanup(self, why: str) -> None:
        """Release the resource; delete what we created (unless kept). Never raises."""
        s = self.s
        try:
            await self._release()
        except VrmError as e:
            self.reporter.log(f"cleanup: releasing the restore resource failed: {e}", "error")
        if self.plan.request.target == "original":
            if self.overwrite_key is not None:
                self.reporter.log(f"{self.plan.vm_name} may be partly overwritten ({why}); the journal keeps "
                                  "'overwrite in progress' until the same restore is run again and succeeds",
                                  "error")
            return
        if self.plan.request.keep_on_failure:
            kept = [u for u, _, _ in self.created.volumes] + ([self.created.vm[0]] if self.created.vm else [])
            if kept:
                self.reporter.log(f"kept what the restore created (as asked): {', '.join(kept)}", "warning")
            for _, _, key in self.created.volumes + ([self.created.vm] if self.created.vm else []):
                if key is not None:
                    self.journal.done(key)
            return
        if self.created.vm is not None:
            urn, uri, key = self.created.vm
            try:
                async def delete_vm() -> None:
                    await self._task(await self.client.delete_vm(uri, reserve_disks=True))
                await cleanup.retry_busy(delete_vm, within=s.cleanup_within_s, interval=s.busy_interval)
                self.reporter.log(f"cleanup: deleted the half-made VM {urn}")
                if key is not None:
                    self.journal.done(key)
                self.result_vm = ""
            except VrmNotFoundError:
                if key is not None:
                    self.journal.done(key)
                self.result_vm = ""
            except VrmError as e:
                self.reporter.log(f"cleanup: deleting VM {urn} failed: {e}", "error")
        for urn, uri, key in reversed(self.created.volumes):
            if not uri:
                continue
            try:
                async def delete_vol(uri: str = uri) -> None:
                    await self._task(await self.client.delete_volume(uri))
                await cleanup.retry_busy(delete_vol, within=s.cleanup_within_s, interval=s.busy_interval,
                                         codes=cleanup.BUSY_CODES | {"10420005", "10300062"})
                self.reporter.log(f"cleanup: deleted volume {urn}")
                if key is not None:
                    self.journal.done(key)
            except VrmNotFoundError:
                if key is not None:
                    self.journal.done(key)
            except VrmError as e:
                self.reporter.log(f"cleanup: deleting volume {urn} failed: {e}", "error")
                continue
            for src, tgt in list(self.targets.items()):
                if tgt == urn:
                    self.targets[src] = ""  # gone: the result names no target
                    self.verified.pop(src, None)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def result(self) -> dict[str, Any]:
        return {"job": self.job.id, "state": self.job.state, "vm": self.result_vm or None,
                "volumes": [{"source": dp.source_volume, "target": self.targets.get(dp.source_volume) or None,
                             # True: read back and equal; None: the VRM refused the read-back; False: not
                             # (or not yet) shown equal
                             "verified": self.verified.get(dp.source_volume, False)}
                            for dp in self.plan.disks]}


def _differing_blocks(digests: dict[int, str], bs: int, first: int, data: bytes) -> list[int]:
    """Blocks of ``data`` (block ``first`` onwards) that differ from the point: a block the point holds
    must have its SHA-256, any other block must be all zeros (compared byte for byte: cheap)."""
    out = []
    zero = _zero_block(bs)
    mv = memoryview(data)
    for k in range(0, len(data), bs):
        i = first + k // bs
        want = digests.get(i)
        if want is None:
            # bytes == bytes is a memcmp; memoryview == bytes compares item by item (60x slower)
            piece = data[k:k + bs]
            if piece != (zero if len(piece) == bs else zero[:len(piece)]):
                out.append(i)
        elif hashlib.sha256(mv[k:k + bs]).hexdigest() != want:  # hashed in place, no copy
            out.append(i)
    return out


@functools.lru_cache(maxsize=4)
def _zero_block(bs: int) -> bytes:
    return bytes(bs)


def _progress_from_plan(job: JobRecord, plan: RestorePlan) -> None:
    vm = VmProgress(urn=plan.vm_urn, name=plan.vm_name or plan.point.vm_name, kind=plan.point.kind,
                    point_id=plan.point.id)
    for dp in plan.disks:
        vm.disks.append(DiskProgress(volume=dp.source_volume, name=dp.disk_name, mode=dp.mode, reason=dp.reason,
                                     bytes_planned=planned_bytes(dp)))
    job.vms = [vm]


def _gib(gb: int | float) -> str:
    """A size the VRM gives in (binary) GB, in the units of every other size (fctui.units)."""
    return human_bytes(gb * GIB)


def planned_bytes(dp: RestoreDiskPlan) -> int:
    """What a disk's progress counts up to: the bytes written, or for an overwrite ("differing", where
    the written bytes are known only after comparing) the whole volume, which is read back."""
    return dp.bytes_to_write if dp.bytes_to_write is not None else dp.size_bytes


async def run_restore(client: "VrmClient", repo: "Repository", plan: RestorePlan, *,
                      reporter: Reporter | None = None, cancel: asyncio.Event | None = None,
                      job: JobRecord | None = None, journal: JournalLike | None = None,
                      settings: RestoreSettings | None = None) -> JobRecord:
    """Carry out a plan. Returns the JobRecord (type ``restore``); its log's last entry with a ``result``
    key holds ``{"job", "state", "vm", "volumes": [{"source", "target", "verified"}]}`` (see
    :func:`restore_result`). Cancelling (``cancel`` set, or the awaiting task cancelled) stops the
    transfer and removes what the restore created."""
    if job is None:
        job = JobRecord(id=new_restore_id())
    job.type = "restore"
    job.targets = job.targets or [plan.point.id]
    job.restore_points = [plan.point.id]
    if not job.vms:
        _progress_from_plan(job, plan)
    reporter = reporter or Reporter(job)
    reporter.job = job
    journal = journal if journal is not None else MemoryJournal()
    run = _Restore(client, repo, plan, job, reporter, journal, settings or RestoreSettings())
    job.state, job.started = "running", time.time()
    what = {"new": f"to a new VM {plan.vm_name}", "original": f"over {plan.vm_name}",
            "disk": "one disk to a new volume"}[plan.request.target]
    reporter.log(f"restore of point {plan.point.id} ({plan.point.vm_name}) {what} started")
    reporter.state()
    if plan.blocked:
        job.state, job.finished = "failed", time.time()
        job.error = "refused: " + "; ".join(f"{f.rule}: {f.message}" for f in plan.blockers)
        run.vm.state, run.vm.reason = "refused", job.error
        reporter.log(job.error, "error")
        _finish(run)
        return job
    flow = asyncio.create_task(run.run(), name=f"restore-{job.id}")
    stopper = asyncio.create_task(cancel.wait()) if cancel is not None else None
    outer_cancelled = False
    error: BaseException | None = None
    try:
        waiters: set[asyncio.Future[Any]] = {flow} | ({stopper} if stopper else set())
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if flow not in done:
            flow.cancel()
            await asyncio.gather(flow, return_exceptions=True)
            error = asyncio.CancelledError()
        else:
            error = flow.exception()
    except asyncio.CancelledError:
        outer_cancelled = True
        flow.cancel()
        await uncancellable(asyncio.gather(flow, return_exceptions=True))
        error = asyncio.CancelledError()
    finally:
        if stopper is not None:
            stopper.cancel()
    try:
        if error is None:
            job.state = "succeeded"
            run.vm.state = "done"
            if run.overwrite_key is not None:
                journal.done(run.overwrite_key)
                # earlier interrupted overwrites of this VM are settled too: it now equals a point
                pending = getattr(journal, "pending", None)
                for entry in (pending() if callable(pending) else []):
                    if entry.get("what") == "restore-overwrite" and entry.get("vm") == plan.vm_urn:
                        journal.done(entry["key"])
            for _, _, key in run.created.volumes + ([run.created.vm] if run.created.vm else []):
                if key is not None:
                    journal.done(key)
        else:
            cancelled = isinstance(error, asyncio.CancelledError)
            job.state = "cancelled" if cancelled else "failed"
            msg = "cancelled" if cancelled else (str(error) if isinstance(error, (JobError, VrmError))
                                                 else f"{type(error).__name__}: {error}")
            if not cancelled and not isinstance(error, (JobError, VrmError)):
                log.error("restore %s failed", job.id, exc_info=error)
            job.error = "" if cancelled else msg
            run.vm.state, run.vm.reason = ("cancelled" if cancelled else "failed"), msg
            for d in run.vm.disks:
                if d.state in ("waiting", "reading"):
                    d.state = "cancelled" if cancelled else "failed"
                    d.error = "" if cancelled else msg
            reporter.log(f"restore {job.state}" + ("" if cancelled else f": {msg}"), "error")
            run.vm.state = "cleanup"
            reporter.state()
            await uncancellable(run.cleanup(msg))
            run.vm.state = "cancelled" if cancelled else "failed"
        _finish(run)
    finally:
        run.close()
    if outer_cancelled:
        raise asyncio.CancelledError
    return job


def _finish(run: _Restore) -> None:
    job = run.job
    job.finished = time.time()
    res = run.result()
    entry = job.add_log(f"restore {job.state}: " + ", ".join(
        f"{v['source'].rsplit(':', 1)[-1]} -> {(v['target'] or '-').rsplit(':', 1)[-1]} "
        f"{'verified' if v['verified'] else 'unverified' if v['verified'] is None else 'not verified'}"
        for v in res["volumes"]), "info" if job.state == "succeeded" else "error")
    entry["result"] = res
    run.reporter._emit({"event": "log", "job": job.id, **entry})
    run.reporter.state()


def restore_result(job: JobRecord) -> dict[str, Any]:
    """The ``fctui restore --json`` document of a restore job: ``{"job", "state", "error", "vm", "vm_name",
    "volumes": [{"source", "name", "target", "verified", "error"}]}`` -- names beside the URNs, and why
    it failed (the job's error, a disk's error)."""
    vm = job.vms[0] if job.vms else None
    res: dict[str, Any] = {}
    for entry in reversed(job.log):
        if isinstance(entry.get("result"), dict):
            res = dict(entry["result"])
            break
    else:
        res = {"job": job.id, "vm": (vm.urn or None) if vm else None,
               "volumes": [{"source": d.volume, "target": None, "verified": False} for d in (vm.disks if vm else [])]}
    disks = {d.volume: d for d in (vm.disks if vm else [])}
    res.update(state=job.state, error=job.error, vm_name=(vm.name or None) if vm else None)
    res["volumes"] = [dict(v) | {"name": getattr(disks.get(v["source"]), "name", "") or None,
                                 "error": getattr(disks.get(v["source"]), "error", "")}
                      for v in res.get("volumes") or []]
    return res


# --------------------------------------------------------------------------------------------------
# crash recovery (the agent calls this for journal intents of restores it finds after a restart)
# --------------------------------------------------------------------------------------------------

RESTORE_INTENTS = frozenset({"restore-vm", "restore-volume", "restore-overwrite"})


async def _find_named(client: "VrmClient", intent: dict[str, Any], kind: str) -> list[str]:
    """URIs of objects a died restore may have created before it recorded their URN (found by the
    unique name it gave them)."""
    name = intent.get("name") or ""
    site = intent.get("site") or ""
    if not name or not site:
        return []
    if kind == "vm":
        found = [v.uri or urn_to_uri(v.urn) for v in await client.vms(site, detail=0, templates=None, name=name)
                 if v.name == name]
    else:
        found = [v.uri or urn_to_uri(v.urn) for v in await client.volumes(site, name=name)
                 if v.name == name and v.datastore_urn == intent.get("datastore_urn") and not v.vm_urn]
    if len(found) > 1:  # never guess which one is ours
        raise RestoreError(f"several {kind}s are named {name!r}: delete the leftover of the interrupted "
                           "restore by hand")
    return found


async def cleanup_restore_intent(client: "VrmClient", intent: dict[str, Any], *, within: float = 120.0) -> None:
    """Undo one restore intent: delete the half-made VM (keeping its disks, deleted by their own
    intents) or the created volume. An interrupted overwrite cannot be undone: raises
    :class:`RestoreError` naming the retry, so the record stays visible."""
    what = intent.get("what")
    if what == "restore-overwrite":
        raise RestoreError(f"VM {intent.get('vm')} may be partly overwritten by restore point "
                           f"{intent.get('point_id')}: {intent.get('retry') or 'run the same restore again'}")
    if what == "restore-vm":
        uris = [intent["vm_uri"]] if intent.get("vm_uri") else await _find_named(client, intent, "vm")
        for uri in uris:
            async def delete_vm(uri: str = uri) -> None:
                await client.wait_task(await client.delete_vm(uri, reserve_disks=True), timeout=within)
            try:
                await cleanup.retry_busy(delete_vm, within=within)
            except VrmNotFoundError:
                pass
        return
    if what == "restore-volume":
        uris = [intent["volume_uri"]] if intent.get("volume_uri") else await _find_named(client, intent, "volume")
        for uri in uris:
            async def delete_vol(uri: str = uri) -> None:
                await client.wait_task(await client.delete_volume(uri), timeout=within)
            try:
                await cleanup.retry_busy(delete_vol, within=within,
                                         codes=cleanup.BUSY_CODES | {"10420005", "10300062"})
            except VrmNotFoundError:
                pass
        return
    await cleanup.cleanup_intent(client, intent, within=within)


async def cleanup_restore_intents(client: "VrmClient", intents: list[dict[str, Any]],
                                  done: Callable[[int], None], *, within: float = 120.0) -> list[tuple[dict, str]]:
    """Resources first, then half-made VMs, then volumes; interrupted overwrites stay (with the retry)."""
    rank = {"resource": 0, "restore-vm": 1, "restore-volume": 2, "restore-overwrite": 3}
    failed: list[tuple[dict, str]] = []
    for intent in sorted(intents, key=lambda i: rank.get(str(i.get("what")), 4)):
        try:
            await cleanup_restore_intent(client, intent, within=within)
        except (VrmError, JobError) as e:
            failed.append((intent, str(e)))
            continue
        done(intent["key"])
    return failed
