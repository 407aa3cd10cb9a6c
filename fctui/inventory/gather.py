"""Gather what the readiness rules need for every VM of a site, with as few VRM requests as the API
allows, and assess them.

Requests for a site of N VMs (pages of 100, fetched concurrently):
  sites 1, clusters 1, hosts 1+, datastores 1+, osversions 1, VMs N/100 (detail=2), templates 1+,
  active tasks 2-3 (site-wide, filtered on status), volumes V/100, snapshot trees only for VMs owning a
  volume with ``volumeUseType == 4`` ("volume with snapshots") -- or, when the VRM does not set it (no
  volume says 4, or a VM with snapshots has none that says so), every VM's tree within a time budget --
  one site-wide task listing since the
  oldest last backup and a snapshot detail per VM only for the VMs the product has backed up before.

I/O goes through :class:`~fctui.vrm.client.VrmClient` only; the rules are pure (:mod:`fctui.rules`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping, TypeVar

from ..rules import catalog as C
from ..rules.engine import Assessment, assess
from ..rules.facts import BackupKnowledge, VmFacts, VolumeCbtState
from ..vrm.client import VrmClient, gather_limited, gc_paused
from ..vrm.errors import VrmApiError, VrmAuthError, VrmError, VrmNotFoundError, VrmProtocolError
from ..vrm.models import Cluster, Datastore, Host, OsCatalogue, Site, SnapshotTree, Task, Vm
from .volumes import (HELPER_ERRORS, Found, Inbox, VolumeUse, read_pages, read_tail, volume_use,
                      volumes_path)

__all__ = ["Inventory", "InventoryUpdate", "GatherError", "gather", "gather_stream"]

T = TypeVar("T")
log = logging.getLogger(__name__)
_NO_KNOWLEDGE: Mapping[str, BackupKnowledge] = {}
_SLICE = 1000   # VMs assessed between two looks at the network (~10 ms)


class GatherError(VrmError):
    """The inventory could not be gathered (e.g. the named site does not exist)."""


@dataclass(slots=True)
class Inventory:
    site: Site
    clusters: list[Cluster]
    hosts: list[Host]
    datastores: list[Datastore]
    os_catalogue: OsCatalogue
    facts: list[VmFacts]
    assessments: list[Assessment]
    timings: dict[str, float]           # vrm_wait_s, rules_s, total_s
    fetched_at: float                   # epoch seconds
    api_version: str = ""
    requests: int = 0                   # VRM requests this gather sent
    trees_fetched: int = 0
    gaps: list[str] = field(default_factory=list)  # what the gatherer had to fall back on, in words
    vm_json: list[str] | None = None    # per assessment, its JSON text, when gather() was given render_vm

    def by_urn(self) -> dict[str, tuple[VmFacts, Assessment]]:
        return {f.vm.urn: (f, a) for f, a in zip(self.facts, self.assessments)}


@dataclass(slots=True)
class InventoryUpdate:
    """One step of :func:`gather_stream`.

    ``kind``: ``"static"`` (site, clusters, hosts, datastores, OS catalogue are set), ``"vms"`` (one
    page: ``facts`` and provisional ``assessments`` -- snapshot rules not evaluated yet, each carries a
    ``snapshots-unknown`` info finding), ``"final"`` (``inventory`` is set; assessments are final).
    """
    kind: str
    site: Site | None = None
    clusters: list[Cluster] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    datastores: list[Datastore] = field(default_factory=list)
    os_catalogue: OsCatalogue | None = None
    facts: list[VmFacts] = field(default_factory=list)
    assessments: list[Assessment] = field(default_factory=list)
    inventory: Inventory | None = None


async def _pick_site(client: VrmClient, site_uri: str | Site | None) -> Site:
    if isinstance(site_uri, Site):
        return site_uri          # the caller has it already: no request
    sites = await client.sites()
    if site_uri:
        for s in sites:
            if site_uri in (s.urn, s.uri):
                return s
        raise GatherError(f"site {site_uri} not found on this VRM "
                          f"(known: {', '.join(s.urn for s in sites) or 'none'})")
    if not sites:
        raise GatherError("the VRM lists no site")
    return sites[0]


def _merge_load(vms: Iterable[Vm]) -> dict[str, float]:
    """Per datastore, the merge space the other concurrent backups may need at once: the expected
    deltas of the MERGES_PER_TARGET - 1 largest snapshot-able disks there (the VM's own disks can be
    among them: a slight over-estimate, on the safe side)."""
    sizes: dict[str, list[int]] = {}
    for vm in vms:
        if vm.is_template:
            continue
        for d in vm.disks:
            if not d.indep_disk and d.type != "share":
                sizes.setdefault(d.datastore_urn, []).append(d.quantity_gb or 0)
    n = C.MERGES_PER_TARGET - 1
    out: dict[str, float] = {}
    for ds, s in sizes.items():
        s.sort(reverse=True)
        out[ds] = sum(max(q * C.MERGE_DELTA_SHARE, C.MERGE_DELTA_MIN_GB) for q in s[:n])
    return out


def _vm_of(entity: str, vm_urns: set[str], owner: Mapping[str, str]) -> str | None:
    """The VM a task acts on: the VM itself, one of its volumes, or one of its snapshots."""
    if entity in vm_urns:
        return entity
    o = owner.get(entity)
    if o:
        return o
    if ":vms:" in entity:
        cand = ":".join(entity.split(":")[:5])  # urn:sites:<site>:vms:<id>[:snapshots:<n>]
        if cand in vm_urns:
            return cand
    return None


def _vrm_time(text: str) -> float | None:
    """``"YYYY-MM-DD HH:MM:SS"`` (UTC, as the VRM writes times) -> epoch seconds; None if unreadable."""
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


# Snapshot trees read because the VRM's volumeUseType cannot be trusted: at least this long, else half
# the VM listing's time (the check's goal is at most 1.5x the listing).
TREE_BUDGET_FLOOR_S = 5.0
_NOT_READ = object()   # a tree not read: the time budget was spent first


def _distrust_use_type(volumes: VolumeUse, trees: Mapping[str, "SnapshotTree | None"],
                       vm_by_urn: Mapping[str, Vm]) -> str:
    """Why the volumes' ``volumeUseType == 4`` cannot be trusted to name the VMs with snapshots
    ('' when it can): not reported at all, no volume says 4, or a tree read shows snapshots of a VM
    none of whose snapshot-able volumes says 4."""
    if not volumes.use_type_seen:
        return "the VRM reports no volumeUseType on volumes"
    if not volumes.with_snapshots:
        return "no volume has volumeUseType 4 (volume with snapshots): the VRM may not set it"
    marked = {v for v, _ in volumes.with_snapshots}
    marked_vms = {o for _, o in volumes.with_snapshots if o}
    for urn, tree in trees.items():
        vm = vm_by_urn.get(urn)
        if tree is None or vm is None or urn in marked_vms:
            continue
        if not any(n.status not in ("creating", "deleting") for n in tree.walk()):
            continue   # one under way may have come after the volume listing was read
        vols = [d.volume_urn for d in vm.disks if d.volume_urn and not d.indep_disk and d.type != "share"]
        if vols and not any(v in marked for v in vols):
            return (f"{vm.name or urn} has snapshots but none of its volumes has volumeUseType 4: "
                    "the VRM does not set it")
    return ""


def _task_ms(t: Task) -> float | None:
    start, finish = t.times_ms()
    return finish if finish is not None else start


class _Gatherer:
    def __init__(self, client: VrmClient, site_uri: "str | Site | None", knowledge: Mapping[str, BackupKnowledge],
                 concurrency: int, now: Callable[[], float], provisional: bool = True,
                 keep_raw: bool = True, helper: bool = True,
                 render_vm: Callable[[Assessment], str] | None = None,
                 tree_budget_s: float | None = None) -> None:
        self.provisional = provisional
        self.render_vm = render_vm
        self.keep_raw = keep_raw
        self.helper = helper
        self._helper: _VolumeHelper | None = None
        self._closing: asyncio.Future[None] | None = None
        # Snapshot trees read while the volume listing goes on, for the VMs its pages showed so far
        self._snaps_seen: list[tuple[str, str]] = []
        self._vm_of_volume: dict[str, str] = {}   # volume URN -> VM URN, as the VM pages arrive
        self._vm_by_urn: dict[str, Vm] = {}
        self._early_trees: dict[str, asyncio.Future[SnapshotTree | None | bool]] = {}
        self._tree_slots = asyncio.Semaphore(max(1, concurrency))
        self._idle = asyncio.Event()   # set once this process has only the volume listing left to wait for
        self.client = client
        self.site_arg = site_uri
        self.knowledge = knowledge
        self.conc = max(1, concurrency)
        self.now = now
        self.gaps: list[str] = []
        self.phase: dict[str, float] = {}  # wall seconds of each VRM phase (they overlap)
        self.tree_budget_s = tree_budget_s
        self._budget_s = 0.0
        self.trees_read = 0

    async def _active_tasks(self, s: str) -> list[Task]:
        lists = await asyncio.gather(*(self.client.tasks(s, status=st) for st in ("waiting", "running", "cancelling")))
        seen: set[str] = set()
        out = []
        for lst in lists:
            for t in lst:
                if t.urn not in seen:
                    seen.add(t.urn)
                    out.append(t)
        return out

    async def _tasks_since(self, s: str) -> list[Task]:
        times = [k.last_backup_time for k in self.knowledge.values() if k.last_backup_time is not None]
        if not self.knowledge:
            return []
        params: dict[str, Any] = {}
        if times:
            params["startTime"] = str(int(min(times) * 1000))
        return await self.client.tasks(s, **params)

    async def _timed(self, aw: Awaitable[T], key: str) -> T:
        t = time.perf_counter()
        try:
            return await aw
        finally:
            self.phase[key] = time.perf_counter() - t

    async def _volumes(self, s: str) -> "VolumeUse":
        """Which volumes have snapshots (``volumeUseType`` 4), from the site's volume listing.

        A big site has ~3 volumes per VM: 27,000 volumes are 270 pages whose decoding would cost the
        client as much CPU as a third of the VM listing. When the client can be re-opened in another
        process (a real VRM address, a known password) a helper process of ours reads the listing
        in parallel, on another core, and sends back only the few volumes with snapshots; once the
        VMs are assessed this process takes over part of the pages the helper has not read yet.
        Otherwise, or should the helper fail to start or die, the listing is read here."""
        if self._helper is not None:
            try:   # it logs out meanwhile; run() closes it
                return await self._helper.volumes(self.client, s, self.conc, self._idle, self._found)
            except _HelperUnavailable as e:
                log.info("volume listing helper unavailable (%s); reading the volumes here", e)
                self._helper.close()
                self._helper = None
        return await volume_use(self.client, s, self.conc)

    def _start_helper(self) -> None:
        args = self.client.clone_args() if self.helper else None
        if args is not None:
            try:
                self._helper = _VolumeHelper(args)
            except _HelperUnavailable as e:
                log.info("volume listing helper not started (%s)", e)

    async def _soft(self, aw: Awaitable[T], what: str) -> T | None:
        """A listing the verdicts can live without: if the VRM refuses it or answers it badly, say
        which rules lacked data instead of failing the whole check (a lost VRM still fails)."""
        try:
            return await aw
        except (VrmApiError, VrmProtocolError) as e:
            self.gaps.append(f"{what}: {e}")
            return None

    def _found(self, snaps: list[tuple[str, str]]) -> None:
        self._snaps_seen.extend(snaps)
        self._start_trees()

    def _index(self, page: list[Vm]) -> None:
        """A page of VMs arrived: which volumes they own; trees of theirs the volume pages asked for."""
        owner, by_urn = self._vm_of_volume, self._vm_by_urn
        for vm in page:
            by_urn[vm.urn] = vm
            for d in vm.disks:
                if d.volume_urn:
                    owner[d.volume_urn] = vm.urn
        if self._snaps_seen:
            self._start_trees()

    def _start_trees(self) -> None:
        """Start reading the trees of the listed VMs owning the volumes with snapshots seen so far
        (the others wait for their VM's page)."""
        owner = self._vm_of_volume
        waiting = []
        for vol_urn, vm_urn in self._snaps_seen:
            o = vm_urn or owner.get(vol_urn)
            vm = self._vm_by_urn.get(o) if o else None
            if vm is None:
                waiting.append((vol_urn, vm_urn))
            elif vm.urn not in self._early_trees:
                self._early_trees[vm.urn] = asyncio.ensure_future(self._read_tree(vm))
        self._snaps_seen = waiting

    async def _tree(self, vm: Vm) -> SnapshotTree | None | bool:
        """The VM's snapshot tree; None when the VM went away; False when the VRM would not say."""
        early = self._early_trees.pop(vm.urn, None)
        return await early if early is not None else await self._read_tree(vm)

    async def _read_tree(self, vm: Vm) -> SnapshotTree | None | bool:
        try:
            async with self._tree_slots:
                return await self.client.snapshot_tree(vm.uri or vm.urn)
        except VrmNotFoundError:
            return None  # the VM went away while we looked
        except (VrmApiError, VrmProtocolError) as e:
            self.gaps.append(f"snapshot tree of {vm.name or vm.urn} not read: {e}")
            return False

    async def _trees_within_budget(self, vms: list[Vm]) -> dict[str, "SnapshotTree | None | bool | object"]:
        """The trees of ``vms``, ``conc`` at a time, none started once the budget is spent (those
        are ``_NOT_READ``): at most the budget plus one request's time."""
        loop = asyncio.get_running_loop()
        budget = self.tree_budget_s
        if budget is None:   # half the VM listing's time (check <= 1.5x the listing), at least a floor
            budget = max(TREE_BUDGET_FLOOR_S, 0.5 * self.phase.get("vm_list_s", 0.0))
        self._budget_s = budget
        end = loop.time() + budget

        async def one(vm: Vm) -> "SnapshotTree | None | bool | object":
            if loop.time() >= end:
                return _NOT_READ
            return await self._read_tree(vm)

        got = await gather_limited([one(vm) for vm in vms], self.conc)
        return {vm.urn: t for vm, t in zip(vms, got)}

    async def _cbt_now(self, vm: Vm, tree: SnapshotTree | None, k: BackupKnowledge) -> dict[str, VolumeCbtState]:
        """Current CBT position of the VM's volumes, from its newest ready CBT snapshot if that is
        newer than the last backup (the VRM exposes CBT state only through snapshots)."""
        if tree is None or k.last_backup_time is None:
            return {}
        # An older snapshot (say, kept by a restore point) holds an older CBT position: comparing it
        # with the last backup's would look like a reset. createTime is UTC with 1 s resolution.
        since = k.last_backup_time - 1.0
        cbts = [n for n in tree.walk() if n.type == "CBTbackup" and n.status in ("ready", "")
                and (_vrm_time(n.create_time) or 0.0) >= since]
        if not cbts:
            return {}
        # createTime has one-second resolution: among equals the later node of the tree walk is newer
        newest = max(enumerate(cbts), key=lambda x: (x[1].create_time, x[0]))[1]
        try:
            det = await self.client.snapshot(newest.uri or newest.urn)
        except VrmNotFoundError:
            return {}
        return {v.volume_urn: VolumeCbtState(v.volume_urn, v.vol_cbt_create_time, v.chg_id)
                for v in det.vol_snapshots if v.volume_urn}

    async def run(self) -> AsyncIterator[InventoryUpdate]:
        t0 = time.perf_counter()
        rules_s = 0.0
        client = self.client
        req0 = client.request_count
        self._start_helper()
        try:
            site = await _pick_site(client, self.site_arg)
        except BaseException:
            if self._helper is not None:
                self._helper.close()
                self._helper = None
            raise
        s = site.uri or f"/service/sites/{site.id}"

        # Everything independent of the VM list starts now and runs while VM pages arrive.
        bg_tasks = asyncio.ensure_future(self._soft(
            self._timed(self._active_tasks(s), "tasks_s"), "running tasks not read, task-in-progress not evaluated"))
        bg_volumes = asyncio.ensure_future(self._soft(
            self._timed(self._volumes(s), "volumes_s"), "volumes not read, snapshot rules not evaluated"))
        bg_since = asyncio.ensure_future(self._soft(
            self._tasks_since(s), "tasks since the last backups not read, cbt-chain-broken may miss causes"))
        bg = (bg_tasks, bg_volumes, bg_since)

        # VMs and templates: the two listings run concurrently, and from now on: their pages queue up
        # while the static lists below are read; pages are yielded in arrival order.
        queue: asyncio.Queue[list[Vm] | None] = asyncio.Queue()

        async def listing(templates: bool) -> None:
            try:
                async for page in client.iter_vm_pages(s, detail=2, templates=templates,
                                                       concurrency=self.conc):
                    queue.put_nowait(page)
            finally:
                queue.put_nowait(None)

        producers = [asyncio.ensure_future(listing(False)), asyncio.ensure_future(listing(True))]
        bg = bg + tuple(producers)
        try:
            clusters, hosts, datastores, oscat_r = await asyncio.gather(
                client.clusters(s), client.hosts(s), client.datastores(s),
                self._soft(client.os_catalogue(s), "OS catalogue not read, guest OS rules evaluated without it"))
            oscat = oscat_r if oscat_r is not None else OsCatalogue({})
            rule_oscat = oscat_r  # None tells the rules the catalogue is unknown (not empty)
            yield InventoryUpdate("static", site=site, clusters=clusters, hosts=hosts, datastores=datastores,
                                  os_catalogue=oscat)
            ds_map = {d.urn: d for d in datastores}
            host_map = {h.urn: h for h in hosts}
            now = self.now()

            vms: list[Vm] = []
            done = 0
            while done < 2:
                page = await queue.get()
                if page is None:
                    done += 1
                    continue
                if not self.keep_raw:
                    # the rules read the parsed fields only; the JSON dicts are most of the memory
                    for vm in page:
                        vm.raw = {}
                        for d in vm.disks:
                            d.raw = {}
                vms.extend(page)
                self._index(page)
                if not self.provisional:
                    continue
                r0 = time.perf_counter()
                pf = [VmFacts(vm, host_map.get(vm.host_urn), ds_map, rule_oscat, None, False, now=now) for vm in page]
                pa = [assess(f) for f in pf]
                rules_s += time.perf_counter() - r0
                yield InventoryUpdate("vms", facts=pf, assessments=pa)
            for p in producers:
                await p  # re-raise a listing failure

            self.phase["vm_list_s"] = time.perf_counter() - t0
            active_r, since_r = await asyncio.gather(bg_tasks, bg_since)
            active = active_r or []
            since = since_r or []

            owner = self._vm_of_volume   # volume URN -> VM URN, from the VMs' disks
            # Tasks, indexed by the VM they concern (VM itself, one of its volumes, its host).
            vm_urns = {vm.urn for vm in vms}
            active_by_vm: dict[str, list[Task]] = {}
            for t in active:
                vm_urn = _vm_of(t.entity_urn, vm_urns, owner)
                if vm_urn:
                    active_by_vm.setdefault(vm_urn, []).append(t)
            # Finished tasks since the last backups, by the VM they concern (the VM, one of its volumes
            # or snapshots -- a revert names the snapshot) or by host (a host reboot concerns its VMs).
            since_by_entity: dict[str, list[Task]] = {}
            for t in since:
                key = _vm_of(t.entity_urn, vm_urns, owner) or t.entity_urn
                if key:
                    since_by_entity.setdefault(key, []).append(t)

            load = _merge_load(vms)
            now = self.now()
            empty: tuple[Task, ...] = ()
            render = self.render_vm

            def facts_of(vm: Vm, tree: SnapshotTree | None, known: bool,
                         cbt: Mapping[str, VolumeCbtState]) -> VmFacts:
                k = self.knowledge.get(vm.urn)
                tasks_since: list[Task] | tuple[Task, ...] = empty
                if k is not None and since_by_entity:
                    cutoff = (k.last_backup_time or 0) * 1000
                    tasks_since = [t for e in (vm.urn, vm.host_urn) for t in since_by_entity.get(e, ())
                                   if (_task_ms(t) or 0) >= cutoff]
                return VmFacts(vm, host_map.get(vm.host_urn), ds_map, rule_oscat, tree, known,
                               active_by_vm.get(vm.urn, empty), tasks_since, k, cbt, load, now)

            # While the volume listing is still being read (by the helper): every VM assessed, and
            # rendered, as if it owned no volume with snapshots. Once the listing is in, only the VMs
            # it names (and those the product backed up) are assessed again: a handful, not 10,000.
            # Meanwhile the helper may hand over pages it has not started: done in slices, so that
            # those pages' requests and answers move between them.
            # The rules allocate many small short-lived objects next to a heap of 10,000s of VM models:
            # without the GC pause, cyclic GC passes over that heap cost more than the rules themselves.
            self._idle.set()
            facts: list[VmFacts] = []
            assessments: list[Assessment] = []
            vm_json: list[str] | None = [] if render is not None else None
            early_rules = render_s = 0.0
            with gc_paused():
                for lo in range(0, len(vms), _SLICE):
                    r0 = time.perf_counter()
                    part = [facts_of(vm, None, True, {}) for vm in vms[lo:lo + _SLICE]]
                    judged = [assess(f) for f in part]
                    r1 = time.perf_counter()
                    if vm_json is not None and render is not None:
                        vm_json.extend([render(a) for a in judged])
                    facts.extend(part)
                    assessments.extend(judged)
                    early_rules += r1 - r0
                    render_s += time.perf_counter() - r1
                    await asyncio.sleep(0)
            volumes = await bg_volumes
            self.phase["side_lists_s"] = time.perf_counter() - t0
            if self._helper is not None:   # done: it logs out and exits while the trees are read
                self._closing = asyncio.ensure_future(self._helper.aclose())

            # Which VMs own a volume with snapshots: only their trees are read.
            with_snaps: set[str] = set()
            for vol_urn, vm_urn in volumes.with_snapshots if volumes is not None else ():
                o = vm_urn or owner.get(vol_urn)
                if o:
                    with_snaps.add(o)
            snapshots_known = True
            if volumes is None:
                # no volume list: the trees of the VMs we back up are still worth reading
                snapshots_known = False
                need_tree = [vm for vm in vms if vm.urn in self.knowledge]
            else:
                need_tree = [vm for vm in vms if vm.urn in with_snaps or vm.urn in self.knowledge]
            t_trees = time.perf_counter()
            trees_list = await gather_limited([self._tree(vm) for vm in need_tree], self.conc)
            trees = {vm.urn: t for vm, t in zip(need_tree, trees_list) if t is not False}
            unknown_trees = {vm.urn for vm, t in zip(need_tree, trees_list) if t is False}
            if volumes is not None and volumes.count:
                # vrm-api.md §16: no public client shows a VRM setting volumeUseType 4 for VM snapshots.
                # Trusted only when the VRM reports it, marks some volume with it, and no tree read
                # so far shows snapshots on a VM none of whose volumes says 4; else every other VM's
                # tree is read, within the time budget.
                why = _distrust_use_type(volumes, trees, self._vm_by_urn)
                if why:
                    read = {vm.urn for vm in need_tree}
                    rest = [vm for vm in vms if vm.urn not in read]
                    late = await self._trees_within_budget(rest)
                    need_tree = need_tree + rest
                    trees.update({u: t for u, t in late.items() if t is not False and t is not _NOT_READ})
                    unknown_trees |= {u for u, t in late.items() if t is False or t is _NOT_READ}
                    not_read = sum(1 for t in late.values() if t is _NOT_READ)
                    self.gaps.append(f"{why}: every VM's snapshot tree was read"
                                     if not not_read else
                                     f"{why}: {len(rest) - not_read} of {len(rest)} other VMs' snapshot trees read "
                                     f"within the check's time budget ({self._budget_s:g} s); snapshot limit and "
                                     f"leftovers of the other {not_read} not checked")
            self.trees_read = sum(1 for vm in need_tree if vm.urn in trees or vm.urn in unknown_trees)
            self.phase["trees_s"] = time.perf_counter() - t_trees
            know_vms = [vm for vm in vms if vm.urn in self.knowledge]
            cbt_list = await gather_limited([self._soft(self._cbt_now(vm, trees.get(vm.urn), self.knowledge[vm.urn]),
                                                  f"current CBT state of {vm.name or vm.urn} not read")
                                       for vm in know_vms], self.conc)
            cbt_now = {vm.urn: c for vm, c in zip(know_vms, cbt_list) if c}

            # The provisional facts differ only for the VMs whose tree was read (or could not be), the
            # ones with a CBT state, or -- without a volume listing -- every VM.
            vrm_s = time.perf_counter() - t0 - rules_s - early_rules - render_s
            r0 = time.perf_counter()
            again: Iterable[int] = range(len(vms))
            if snapshots_known:
                need_urns = {vm.urn for vm in need_tree} | unknown_trees
                again = [i for i, vm in enumerate(vms) if vm.urn in need_urns]
            with gc_paused():
                for i in again:
                    vm = vms[i]
                    facts[i] = f = facts_of(vm, trees.get(vm.urn),
                                            (snapshots_known or vm.urn in trees) and vm.urn not in unknown_trees,
                                            cbt_now.get(vm.urn, {}))
                    assessments[i] = a = assess(f)
                    if vm_json is not None and render is not None:
                        vm_json[i] = render(a)
            final_rules = time.perf_counter() - r0
            total = time.perf_counter() - t0
            inv = Inventory(site=site, clusters=clusters, hosts=hosts, datastores=datastores, os_catalogue=oscat,
                            facts=facts, assessments=assessments,
                            timings={"vrm_wait_s": vrm_s, "rules_s": early_rules + final_rules, **self.phase,
                                     "render_s": render_s, "final_rules_s": final_rules,
                                     "provisional_rules_s": rules_s, "total_s": total},
                            vm_json=vm_json,
                            fetched_at=time.time(), api_version=client.api_version,
                            requests=client.request_count - req0, trees_fetched=self.trees_read, gaps=self.gaps)
            yield InventoryUpdate("final", site=site, clusters=clusters, hosts=hosts, datastores=datastores,
                                  os_catalogue=oscat, inventory=inv)
        finally:
            bg = bg + tuple(self._early_trees.values())   # trees of VMs that went away meanwhile
            for b in bg:
                if not b.done():
                    b.cancel()
            await asyncio.gather(*bg, return_exceptions=True)
            if self._helper is not None:
                helper, self._helper = self._helper, None
                try:
                    await (self._closing or helper.aclose())
                except BaseException:   # cancelled while waiting: end it now
                    helper.close()
                    raise


class _ForkedProcess:
    """The few ``subprocess.Popen`` methods the helper's owner uses, for a child made by os.fork."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> int:
        end = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > end:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.003)
        assert self.returncode is not None
        return self.returncode


_preforked: tuple[Connection, _ForkedProcess] | None = None


def prefork_volume_helper(close_fds: Iterable[int] = (), nice: int = 0) -> None:
    """Fork the volume listing helper now, for the next gather of this process to use.

    For a process that will gather soon and whose heap is still small: the console's refresh
    process, before its event loop starts. The fork costs a few ms and little memory then, where a
    fresh interpreter spends ~0.3 s of CPU importing the client -- on a two-core machine while the
    first VM pages are being parsed. ``close_fds``: descriptors the helper must not keep open (e.g.
    the refresh process's pipe to the console, whose end the console watches). ``nice``: added to
    the helper's niceness. Single-threaded callers only, with no event loop running."""
    global _preforked
    if _preforked is not None or not hasattr(os, "fork"):
        return
    from .volumes import helper_main
    ours, theirs = socket.socketpair()
    try:
        pid = os.fork()
    except OSError as e:
        log.info("volume listing helper not forked (%s)", e)
        ours.close()
        theirs.close()
        return
    if pid == 0:   # the helper: serve one listing, then leave without running the parent's clean-up
        code = 0
        try:
            ours.close()
            if nice:
                try:
                    os.nice(nice)
                except OSError:
                    pass
            for fd in close_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            helper_main(os.dup(theirs.fileno()))
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    _preforked = (Connection(os.dup(ours.fileno())), _ForkedProcess(pid))
    ours.close()


class _HelperUnavailable(Exception):
    """The helper process could not be started or died without an answer."""


class _VolumeHelper:
    """A helper process of ours that reads the site's volume listing on another core while this
    process reads the VMs. Started first thing, so its start and login overlap the first requests
    of the gather; the site URI follows once known. Once this process has nothing else to do, it
    takes the pages the helper has not started yet from the back, half at a time, until none are
    left (protocol: :mod:`.volumes`). Errors of the listing come back as the VrmError types they
    were.

    A fresh interpreter, not a fork of this process: a fork is cheaper to start, but every page of
    this process's heap the parent then writes to while the helper lives is copied (the benchmark
    process holds ~250 MB then: its VM listing got 0.2-0.3 s slower, more than the start saved).
    A process that forks one while its heap is still small takes that one instead (see
    :func:`prefork_volume_helper`)."""

    def __init__(self, args: dict[str, Any]) -> None:
        global _preforked
        pre, _preforked = _preforked, None
        if pre is not None and pre[1].poll() is None:
            self.conn, self.proc = pre
            try:
                self.conn.send(args)
                return
            except OSError:
                self.close()
        ours, theirs = socket.socketpair()
        self.conn = Connection(os.dup(ours.fileno()))
        ours.close()
        fd = theirs.fileno()
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            # The entry module imports the client only; httpx's command-line tool (click, rich,
            # pygments: a third of the start-up) is never used there, httpx works without it.
            self.proc = subprocess.Popen(
                [sys.executable, "-c",
                 "import sys; sys.modules['httpx._main'] = None\n"
                 f"from fctui.inventory.volumes import helper_main; helper_main({fd})\n"
                 # logged out, answer sent: nothing to tear down that anyone waits for but us
                 "import os; os._exit(0)"],
                pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=env, close_fds=True)
        except OSError as e:
            self.conn.close()
            raise _HelperUnavailable(str(e)) from None
        finally:
            theirs.close()
        try:
            self.conn.send(args)   # the password goes to our own child through the socket only
        except OSError as e:
            self.close()
            raise _HelperUnavailable(str(e)) from None

    async def volumes(self, client: VrmClient, s: str, conc: int, idle: asyncio.Event,
                      found: Found | None = None) -> VolumeUse:
        """The helper's listing, plus the pages this process took over once ``idle`` was set.
        ``found`` hears of volumes with snapshots as soon as a page shows them."""
        try:
            inbox = Inbox(self.conn)
        except (OSError, ValueError, NotImplementedError) as e:   # e.g. a loop without add_reader
            raise _HelperUnavailable(f"helper channel unusable ({e})") from None
        path = volumes_path(client, s)
        mine = VolumeUse([], False, 0)
        largest: int | None = None
        result: Any = None
        asked = False   # a steal request is not answered yet
        over = False    # nothing left to take
        get: asyncio.Future[Any] = asyncio.ensure_future(inbox.get())
        wake: asyncio.Future[Any] = asyncio.ensure_future(idle.wait())
        fetch: asyncio.Future[int | None] | None = None
        try:
            self.conn.send(("list", s, conc))
            while result is None or fetch is not None:
                if idle.is_set() and not asked and fetch is None and not over:
                    self.conn.send(("steal",))
                    asked = True
                waiters: set[asyncio.Future[Any]] = {w for w in (get, fetch, wake) if w is not None and not w.done()}
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if fetch is not None and fetch.done():
                    got, fetch = fetch.result(), None   # a page of ours failing fails like in process
                    if got is not None and (largest is None or got > largest):
                        largest = got
                if result is None and get.done():
                    msg = get.result()
                    if msg is None:
                        raise _HelperUnavailable("helper ended without an answer")
                    if msg[0] == "pages":
                        asked = False
                        if msg[1]:
                            fetch = asyncio.ensure_future(read_pages(client, path, deque(msg[1]), conc, mine, found))
                        else:
                            over = True
                        get = asyncio.ensure_future(inbox.get())
                    elif msg[0] == "snaps":
                        if found is not None:
                            found(msg[1])
                        get = asyncio.ensure_future(inbox.get())
                    elif msg[0] == "ok":
                        result, over = msg, True
                    else:
                        raise self._error(msg)
        except OSError as e:
            raise _HelperUnavailable(f"helper channel broken ({e})") from None
        finally:
            left = [w for w in (get, wake, fetch) if w is not None and not w.done()]
            for w in left:
                w.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            inbox.close()
        use = VolumeUse(list(result[1]), bool(result[2]), int(result[3]))
        use.merge(mine)
        total, end = result[4], result[5]
        if largest is not None and (total is None or largest > total):
            total = largest
        if end is not None and total is not None and total > end:
            await read_tail(client, path, end, total, use)
        return use

    @staticmethod
    def _error(msg: Any) -> Exception:
        kind, text = msg[1], msg[2]
        if kind == "other":
            return _HelperUnavailable(text)
        cls = HELPER_ERRORS.get(kind, VrmError)
        if cls is VrmApiError:
            return VrmApiError(text, status=int(msg[3] or 0))
        if cls is VrmAuthError:
            return VrmAuthError(text, status=401)
        if cls is VrmProtocolError:
            return VrmProtocolError(text)
        return cls(text)

    def close(self) -> None:
        """Close the channel and end the process now (cancellation, errors)."""
        try:
            self.conn.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    async def aclose(self, grace: float = 3.0) -> None:
        """Let the process log out and exit by itself (no session left on the VRM), then close.
        Closing our end first tells a helper still waiting for its question to log out and leave."""
        try:
            self.conn.close()
        except OSError:
            pass
        end = time.monotonic() + grace
        while self.proc.poll() is None and time.monotonic() < end:
            await asyncio.sleep(0.003)
        self.close()


async def gather_stream(client: VrmClient, site_uri: str | Site | None = None, *,
                        knowledge: Mapping[str, BackupKnowledge] = _NO_KNOWLEDGE, concurrency: int = 16,
                        now: Callable[[], float] = time.time, keep_raw: bool = True,
                        helper: bool = True, tree_budget_s: float | None = None) -> AsyncIterator[InventoryUpdate]:
    """Stream the inventory: the static objects first, then each page of VMs with provisional
    assessments (snapshot rules not evaluated yet), then the final :class:`Inventory`.

    ``site_uri``: a site URN or URI, or the :class:`Site` itself; None takes the first site. ``knowledge``: per VM URN, what the
    product knows of its earlier backups. ``concurrency`` bounds concurrent pages and per-VM reads.
    ``keep_raw=False`` empties each VM's (and disk's) ``raw`` JSON as soon as it is parsed: a
    fraction of the memory, for callers that read the typed fields only. ``helper=False``: read the
    volume listing in this process (no second VRM session). ``tree_budget_s``: how long snapshot trees
    may be read when the VRM's ``volumeUseType`` cannot be trusted to name the VMs with snapshots
    (None: half the VM listing's time, at least ``TREE_BUDGET_FLOOR_S``).
    """
    async for u in _Gatherer(client, site_uri, knowledge, concurrency, now, keep_raw=keep_raw,
                             helper=helper, tree_budget_s=tree_budget_s).run():
        yield u


async def _gather_final(client: VrmClient, site_uri: str | None, knowledge: Mapping[str, BackupKnowledge],
                        concurrency: int, now: Callable[[], float], helper: bool = True,
                        render_vm: Callable[[Assessment], str] | None = None,
                        tree_budget_s: float | None = None) -> Inventory:
    inv: Inventory | None = None
    with gc_paused():  # a one-shot bulk read: collect once at the end, not over and over meanwhile
        async for u in _Gatherer(client, site_uri, knowledge, concurrency, now, provisional=False,
                                 helper=helper, render_vm=render_vm, tree_budget_s=tree_budget_s).run():
            if u.kind == "final":
                inv = u.inventory  # the generator is consumed to its end so its clean-up runs now
    if inv is None:
        raise GatherError("the inventory gathering ended without a result")
    return inv


async def gather(client: VrmClient, site_uri: str | None = None, *,
                 knowledge: Mapping[str, BackupKnowledge] = _NO_KNOWLEDGE, concurrency: int = 16,
                 now: Callable[[], float] = time.time, helper: bool = True,
                 render_vm: Callable[[Assessment], str] | None = None,
                 tree_budget_s: float | None = None) -> Inventory:
    """The whole inventory of one site, assessed (see :func:`gather_stream`). ``helper=False`` reads
    the volume listing in this process even when a helper process could (see ``_volumes``).
    ``render_vm``: turns an assessment into the text a report will hold (``Inventory.vm_json``),
    called while the VRM is still being read, so that little is left to render at the end."""
    return await _gather_final(client, site_uri, knowledge, concurrency, now, helper, render_vm, tree_budget_s)
