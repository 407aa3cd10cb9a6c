"""Gather what the readiness rules need for every VM of a site, with as few VRM requests as the API
allows, and assess them.

Requests for a site of N VMs (pages of 100, fetched concurrently):
  sites 1, clusters 1, hosts 1+, datastores 1+, osversions 1, VMs N/100 (detail=2), templates 1+,
  active tasks 2-3 (site-wide, filtered on status), volumes V/100, snapshot trees only for VMs owning a
  volume with ``volumeUseType == 4`` ("volume with snapshots"), one site-wide task listing since the
  oldest last backup and a snapshot detail per VM only for the VMs the product has backed up before.

I/O goes through :class:`~fctui.vrm.client.VrmClient` only; the rules are pure (:mod:`fctui.rules`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping, TypeVar

from ..rules import catalog as C
from ..rules.engine import Assessment, assess
from ..rules.facts import BackupKnowledge, VmFacts, VolumeCbtState
from ..vrm.client import VrmClient, gather_limited, gc_paused
from ..vrm.errors import (VrmApiError, VrmAuthError, VrmConnectionError, VrmError, VrmNotFoundError,
                          VrmProtocolError, VrmTimeoutError)
from ..vrm.models import Cluster, Datastore, Host, OsCatalogue, Site, SnapshotTree, Task, Vm

__all__ = ["Inventory", "InventoryUpdate", "GatherError", "gather", "gather_stream"]

T = TypeVar("T")
log = logging.getLogger(__name__)
_NO_KNOWLEDGE: Mapping[str, BackupKnowledge] = {}
VOLUME_WITH_SNAPSHOTS = 4  # vrm-api §7.2 volumeUseType


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


async def _pick_site(client: VrmClient, site_uri: str | None) -> Site:
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


def _task_ms(t: Task) -> float | None:
    start, finish = t.times_ms()
    return finish if finish is not None else start


class _Gatherer:
    def __init__(self, client: VrmClient, site_uri: str | None, knowledge: Mapping[str, BackupKnowledge],
                 concurrency: int, now: Callable[[], float], provisional: bool = True,
                 keep_raw: bool = True, helper: bool = True) -> None:
        self.provisional = provisional
        self.keep_raw = keep_raw
        self.helper = helper
        self._helper: _VolumeHelper | None = None
        self.client = client
        self.site_arg = site_uri
        self.knowledge = knowledge
        self.conc = max(1, concurrency)
        self.now = now
        self.gaps: list[str] = []
        self.phase: dict[str, float] = {}  # wall seconds of each VRM phase (they overlap)

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
        in parallel, on another core, and sends back only the few volumes with snapshots; otherwise,
        or should the helper fail to start, it is read here."""
        if self._helper is not None:
            try:
                return await self._helper.volumes(s, self.conc)   # it logs out meanwhile; run() closes it
            except _HelperUnavailable as e:
                log.info("volume listing helper unavailable (%s); reading the volumes here", e)
                self._helper.close()
                self._helper = None
        return await _volume_use(self.client, s, self.conc)

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

    async def _tree(self, vm: Vm) -> SnapshotTree | None | bool:
        """The VM's snapshot tree; None when the VM went away; False when the VRM would not say."""
        try:
            return await self.client.snapshot_tree(vm.uri or vm.urn)
        except VrmNotFoundError:
            return None  # the VM went away while we looked
        except (VrmApiError, VrmProtocolError) as e:
            self.gaps.append(f"snapshot tree of {vm.name or vm.urn} not read: {e}")
            return False

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

            # VMs and templates: the two listings run concurrently; pages are yielded in arrival order.
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
            active_r, volumes, since_r = await asyncio.gather(bg_tasks, bg_volumes, bg_since)
            self.phase["side_lists_s"] = time.perf_counter() - t0
            active = active_r or []
            since = since_r or []

            # Which VMs own a volume with snapshots: only their trees are read.
            owner: dict[str, str] = {}
            for vm in vms:
                for d in vm.disks:
                    if d.volume_urn:
                        owner[d.volume_urn] = vm.urn
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
            elif volumes.use_type_seen or not volumes.count:
                need_tree = [vm for vm in vms if vm.urn in with_snaps or vm.urn in self.knowledge]
            else:
                self.gaps.append("the VRM reports no volumeUseType on volumes: every VM's snapshot tree was read")
                need_tree = list(vms)
            t_trees = time.perf_counter()
            trees_list = await gather_limited([self._tree(vm) for vm in need_tree], self.conc)
            self.phase["trees_s"] = time.perf_counter() - t_trees
            trees = {vm.urn: t for vm, t in zip(need_tree, trees_list) if t is not False}
            unknown_trees = {vm.urn for vm, t in zip(need_tree, trees_list) if t is False}
            know_vms = [vm for vm in vms if vm.urn in self.knowledge]
            cbt_list = await gather_limited([self._soft(self._cbt_now(vm, trees.get(vm.urn), self.knowledge[vm.urn]),
                                                  f"current CBT state of {vm.name or vm.urn} not read")
                                       for vm in know_vms], self.conc)
            cbt_now = {vm.urn: c for vm, c in zip(know_vms, cbt_list) if c}

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
            vrm_s = time.perf_counter() - t0 - rules_s
            r0 = time.perf_counter()
            facts: list[VmFacts] = []
            empty: tuple[Task, ...] = ()
            for vm in vms:
                k = self.knowledge.get(vm.urn)
                tasks_since: list[Task] | tuple[Task, ...] = empty
                if k is not None and since_by_entity:
                    cutoff = (k.last_backup_time or 0) * 1000
                    tasks_since = [t for e in (vm.urn, vm.host_urn) for t in since_by_entity.get(e, ())
                                   if (_task_ms(t) or 0) >= cutoff]
                facts.append(VmFacts(
                    vm, host_map.get(vm.host_urn), ds_map, rule_oscat, trees.get(vm.urn),
                    (snapshots_known or vm.urn in trees) and vm.urn not in unknown_trees,
                    active_by_vm.get(vm.urn, empty), tasks_since, k, cbt_now.get(vm.urn, {}), load, now))
            # The rules allocate many small short-lived objects next to a heap of 10,000s of VM models:
            # without this, cyclic GC passes over that heap cost more than the rules themselves.
            gc_was = gc.isenabled()
            gc.disable()
            try:
                assessments = [assess(f) for f in facts]
            finally:
                if gc_was:
                    gc.enable()
            final_rules = time.perf_counter() - r0
            total = time.perf_counter() - t0
            inv = Inventory(site=site, clusters=clusters, hosts=hosts, datastores=datastores, os_catalogue=oscat,
                            facts=facts, assessments=assessments,
                            timings={"vrm_wait_s": vrm_s, "rules_s": final_rules, **self.phase,
                                     "provisional_rules_s": rules_s, "total_s": total},
                            fetched_at=time.time(), api_version=client.api_version,
                            requests=client.request_count - req0, trees_fetched=len(need_tree), gaps=self.gaps)
            yield InventoryUpdate("final", site=site, clusters=clusters, hosts=hosts, datastores=datastores,
                                  os_catalogue=oscat, inventory=inv)
        finally:
            for b in bg:
                if not b.done():
                    b.cancel()
            await asyncio.gather(*bg, return_exceptions=True)
            if self._helper is not None:
                helper, self._helper = self._helper, None
                try:
                    await helper.aclose()
                except BaseException:   # cancelled while waiting: end it now
                    helper.close()
                    raise


@dataclass(slots=True)
class VolumeUse:
    """What the gatherer needs of the volume listing: the volumes with snapshots (URN, owner VM URN
    when the VRM names it), whether the VRM reports ``volumeUseType`` at all, how many volumes."""
    with_snapshots: list[tuple[str, str]]
    use_type_seen: bool
    count: int


def _use_of(page: list, acc: VolumeUse) -> None:
    for x in page:
        if not isinstance(x, dict):
            continue
        acc.count += 1
        ut = x.get("volumeUseType")
        if ut is None:
            continue
        acc.use_type_seen = True
        try:
            if int(ut) == VOLUME_WITH_SNAPSHOTS:
                acc.with_snapshots.append((str(x.get("urn") or ""), str(x.get("vmUrn") or "")))
        except (TypeError, ValueError):
            continue


async def _volume_use(client: VrmClient, s: str, conc: int) -> VolumeUse:
    acc = VolumeUse([], False, 0)
    async for page in client.iter_pages(s + "/volumes", "volumes", {}, concurrency=conc):
        _use_of(page, acc)
    return acc


class _HelperUnavailable(Exception):
    """The helper process could not be started or died without an answer."""


_HELPER_ERRORS: dict[str, type[VrmError]] = {
    "api": VrmApiError, "protocol": VrmProtocolError, "connection": VrmConnectionError,
    "timeout": VrmTimeoutError, "auth": VrmAuthError,
}


class _VolumeHelper:
    """A helper process of ours that lists the site's volumes in parallel. Started first thing, so
    the interpreter start, the imports and its login overlap the first requests of the gather; the
    site URI follows once known. Errors of the listing come back as the VrmError types they were."""

    def __init__(self, args: dict[str, Any]) -> None:
        ours, theirs = socket.socketpair()
        self.conn = Connection(os.dup(ours.fileno()))
        ours.close()
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        fd = theirs.fileno()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c",
                 f"from fctui.inventory.gather import _volume_helper_main; _volume_helper_main({fd})"],
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

    async def volumes(self, s: str, conc: int) -> VolumeUse:
        try:
            self.conn.send((s, conc))
            msg = await asyncio.to_thread(self.conn.recv)
        except (EOFError, OSError) as e:
            raise _HelperUnavailable(f"helper ended without an answer ({e or type(e).__name__})") from None
        if msg[0] == "ok":
            return VolumeUse(list(msg[1]), bool(msg[2]), int(msg[3]))
        kind, text = msg[1], msg[2]
        if kind == "other":
            raise _HelperUnavailable(text)
        cls = _HELPER_ERRORS.get(kind, VrmError)
        if cls is VrmApiError:
            raise VrmApiError(text, status=int(msg[3] or 0))
        if cls is VrmAuthError:
            raise VrmAuthError(text, status=401)
        if cls is VrmProtocolError:
            raise VrmProtocolError(text)
        raise cls(text)

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
        if self.proc.poll() is None:
            try:
                await asyncio.to_thread(self.proc.wait, grace)
            except subprocess.TimeoutExpired:
                pass
        self.close()


def _volume_helper_main(fd: int) -> None:
    """Entry of the helper process: client args, log in, then (site URI, concurrency) -> list the
    volumes -> ("ok", [(urn, vmUrn)...], use_type_seen, count) or ("error", kind, text, status)."""
    gc.disable()   # a short-lived process: nothing worth collecting before it exits
    conn = Connection(fd)
    try:
        args = conn.recv()
    except (EOFError, OSError):
        return

    async def run() -> None:
        base_url = args.pop("base_url")
        async with VrmClient(base_url, **args) as client:   # logs in while the parent starts
            s, conc = await asyncio.to_thread(conn.recv)
            use = await _volume_use(client, s, conc)
            conn.send(("ok", use.with_snapshots, use.use_type_seen, use.count))

    try:
        asyncio.run(run())
    except (EOFError, OSError):
        return   # the parent went away
    except VrmError as e:
        kind = next((k for k, c in _HELPER_ERRORS.items() if isinstance(e, c) and k != "api"), None)
        if kind is None:
            kind = "api" if isinstance(e, VrmApiError) else "other"
        try:
            conn.send(("error", kind, str(e), getattr(e, "status", None)))
        except OSError:
            pass
    except Exception as e:  # a bug here must not take the check down: the parent reads them itself
        try:
            conn.send(("error", "other", f"{type(e).__name__}: {e}", None))
        except OSError:
            pass


async def gather_stream(client: VrmClient, site_uri: str | None = None, *,
                        knowledge: Mapping[str, BackupKnowledge] = _NO_KNOWLEDGE, concurrency: int = 16,
                        now: Callable[[], float] = time.time, keep_raw: bool = True,
                        helper: bool = True) -> AsyncIterator[InventoryUpdate]:
    """Stream the inventory: the static objects first, then each page of VMs with provisional
    assessments (snapshot rules not evaluated yet), then the final :class:`Inventory`.

    ``site_uri``: a site URN or URI; None takes the first site. ``knowledge``: per VM URN, what the
    product knows of its earlier backups. ``concurrency`` bounds concurrent pages and per-VM reads.
    ``keep_raw=False`` empties each VM's (and disk's) ``raw`` JSON as soon as it is parsed: a
    fraction of the memory, for callers that read the typed fields only. ``helper=False``: read the
    volume listing in this process (no second VRM session).
    """
    async for u in _Gatherer(client, site_uri, knowledge, concurrency, now, keep_raw=keep_raw,
                             helper=helper).run():
        yield u


async def _gather_final(client: VrmClient, site_uri: str | None, knowledge: Mapping[str, BackupKnowledge],
                        concurrency: int, now: Callable[[], float], helper: bool = True) -> Inventory:
    inv: Inventory | None = None
    with gc_paused():  # a one-shot bulk read: collect once at the end, not over and over meanwhile
        async for u in _Gatherer(client, site_uri, knowledge, concurrency, now, provisional=False,
                                 helper=helper).run():
            if u.kind == "final":
                inv = u.inventory  # the generator is consumed to its end so its clean-up runs now
    if inv is None:
        raise GatherError("the inventory gathering ended without a result")
    return inv


async def gather(client: VrmClient, site_uri: str | None = None, *,
                 knowledge: Mapping[str, BackupKnowledge] = _NO_KNOWLEDGE, concurrency: int = 16,
                 now: Callable[[], float] = time.time, helper: bool = True) -> Inventory:
    """The whole inventory of one site, assessed (see :func:`gather_stream`). ``helper=False`` reads
    the volume listing in this process even when a helper process could (see ``_volumes``)."""
    return await _gather_final(client, site_uri, knowledge, concurrency, now, helper)
