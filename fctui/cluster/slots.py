"""The engine's scheduler across proxies: host and datastore slots as expiring keys in ``FCTUI_SLOTS``.

:class:`ClusterScheduler` answers the engine as :class:`fctui.jobs.scheduler.Scheduler` does (the
runner cannot tell them apart), but a VM slot is one of the ``per_host`` keys ``host.<host key>.<n>``
and a volume slot one of the ``per_datastore`` keys ``ds.<datastore key>.<n>`` shared by every proxy:
taking one is creating a free key (JetStream refuses to create an existing one), releasing deletes it,
and the holder renews what it holds every ``slot_ttl/3``; a dead proxy's keys expire. The global limit
stays per agent. The same bucket holds VM claims (``vm.<vm key>``): one job at a time backs up a VM,
cluster-wide.

Waiting is FIFO within this agent (only the oldest waiter for a host asks NATS); between agents the
first to ask wins. A waiter wakes when the bucket changes (a watch) and asks again at least every
``poll`` seconds, which is how it sees slots expire on a server that does not announce expiry.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import nats.errors
import nats.js.errors
from nats.js.kv import KV_DEL, KV_PURGE

from ..jobs.scheduler import (GLOBAL_LIMIT, HOST_SOCKETS_BUSY, MAX_PER_DATASTORE, MAX_PER_HOST,
                              TARGET_VOLUMES_BUSY, HostSnapshotGate, SlotPool, Ticket)
from .connect import Cluster, ClusterError, create, current, entries
from .layout import datastore_slot_key, host_slot_key, vm_key

log = logging.getLogger(__name__)

_Wrong = nats.js.errors.KeyWrongLastSequenceError
WRONG_LAST = (10071, 10164)   # JetStream's "wrong last sequence" error codes


class _Unanswered(Exception):
    """NATS did not answer a slot request."""


@dataclass
class ClusterTicket(Ticket):
    """A :class:`~fctui.jobs.scheduler.Ticket` backed by a slot key (``slot``) at ``revision``."""
    slot: str = ""
    revision: int = 0
    since: float = 0.0
    renewals: int = 0
    lost: bool = False   # the key expired and another proxy took it (this one stalled past slot_ttl)


@dataclass
class ClusterPool:
    """What the launch findings read: slots held across the cluster per host / datastore URN
    (as of the last :meth:`ClusterScheduler.refresh_counts`, kept up to date with this agent's own)."""
    per_host: int = MAX_PER_HOST
    per_datastore: int = MAX_PER_DATASTORE
    global_limit: int = 16
    hosts: dict[str, int] = field(default_factory=dict)
    datastores: dict[str, int] = field(default_factory=dict)
    vms_running: int = 0   # VM slots this agent holds or is asking for (the global limit is per agent)


def _count(d: dict[str, int], key: str, delta: int) -> None:
    n = d.get(key, 0) + delta
    if n > 0:
        d[key] = n
    else:
        d.pop(key, None)


class ClusterScheduler:
    """See the module. ``agent_id`` names this proxy in the slots it holds."""

    def __init__(self, cluster: Cluster, agent_id: str, *, per_host: int = MAX_PER_HOST,
                 per_datastore: int = MAX_PER_DATASTORE, global_limit: int = 16,
                 host_snapshot_gate: bool = False) -> None:
        SlotPool(per_host=per_host, per_datastore=per_datastore, global_limit=global_limit)  # the same checks
        self.cluster = cluster
        self.kv = cluster.slots_kv
        self.agent_id = agent_id
        self.pool = ClusterPool(per_host=per_host, per_datastore=per_datastore, global_limit=global_limit)
        self.gate = HostSnapshotGate(host_snapshot_gate)
        ttl = cluster.settings.slot_ttl_s
        self.renew_every = ttl / 3
        self.poll = min(0.5, ttl / 4)
        self._ids = itertools.count(1)
        self._held: dict[str, ClusterTicket] = {}          # slot key -> ticket (granted, mine)
        self._adopted: list[ClusterTicket] = []            # adopted, not yet handed out by acquire_*
        self._claims: dict[str, ClusterTicket] = {}        # VM URN -> its claim (kind "claim", owner job id)
        self._queues: dict[tuple[str, str], list[ClusterTicket]] = {}
        self._present: set[str] = set()                    # keys the watch saw written and not deleted
        self._event: asyncio.Event | None = None
        self._changes = 0                                  # changes seen (a waiter missed none while asking)
        self._tasks: set[asyncio.Task] = set()             # deletes under way (release, release_vm)
        self._renewer: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._watch_ready: asyncio.Event | None = None
        self._closed = False

    # --- life -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start renewing and watching (done by the first acquire, claim or adopt)."""
        if self._closed:
            raise ClusterError("the cluster scheduler is closed")
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_loop(), name="fctui-slot-renewal")
        if self._watcher is None:
            self._watch_ready = asyncio.Event()
            self._watcher = asyncio.create_task(self._watch_loop(), name="fctui-slot-watch")
            # Bounded: without the watch, waiters still poll.
            try:
                await asyncio.wait_for(self._watch_ready.wait(), 5.0)
            except asyncio.TimeoutError:
                log.warning("the slot watch did not start; waiting slots poll every %.1f s", self.poll)
                return
            try:
                announced = (await self.kv.status()).stream_info.config.subject_delete_marker_ttl
            except (nats.errors.Error, asyncio.TimeoutError):
                announced = None
            if announced:   # the server tells the watch when a slot expires: polling is only a safety net
                self.poll = min(5.0, max(self.poll, self.cluster.settings.slot_ttl_s / 3))

    async def drain(self) -> None:
        """Wait until every release so far is done in NATS."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Finish the releases under way and stop renewing. Slots still held are *not* deleted: they
        expire after slot_ttl, unless the proxy that takes over their work item adopts them."""
        await self.drain()
        self._closed = True
        for task in (self._renewer, self._watcher):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._renewer, self._watcher) if t is not None),
                             return_exceptions=True)
        self._renewer = self._watcher = None

    # --- the engine's interface -----------------------------------------------------------------

    async def acquire_vm(self, host_urn: str, owner: str = "",
                         on_wait: Callable[[str], None] | None = None) -> Ticket:
        return await self._acquire("vm", host_urn or "?", owner, on_wait)

    async def acquire_volume(self, datastore_urn: str, owner: str = "",
                             on_wait: Callable[[str], None] | None = None) -> Ticket:
        return await self._acquire("volume", datastore_urn or "?", owner, on_wait)

    def release(self, t: Ticket) -> None:
        """Give a slot back (the key's delete is scheduled; :meth:`drain` waits for it). Releasing a
        ticket that is not held (twice, or never granted) does nothing."""
        if not isinstance(t, ClusterTicket) or self._held.get(t.slot) is not t:
            return
        del self._held[t.slot]
        if t in self._adopted:
            self._adopted.remove(t)
        self._uncount(t)
        t.granted = False
        self._spawn(self._delete(t))
        self._notify()

    def waiting(self) -> list[Ticket]:
        return [t for q in self._queues.values() for t in q]

    def held(self) -> list[ClusterTicket]:
        return list(self._held.values())

    async def refresh_counts(self) -> None:
        """Count the slots held across the cluster into ``pool.hosts`` / ``pool.datastores``."""
        hosts: dict[str, int] = {}
        datastores: dict[str, int] = {}
        for key, entry in (await entries(self.kv)).items():
            value = _load(entry.value)
            if key.startswith("host."):
                _count(hosts, value.get("resource", "?"), 1)
            elif key.startswith("ds."):
                _count(datastores, value.get("resource", "?"), 1)
        self.pool.hosts, self.pool.datastores = hosts, datastores

    async def adopt(self, owners: str | Iterable[str]) -> list[Ticket]:
        """Take over the slots held for ``owners`` (the owner strings the runner gave: ``<job>/<VM name>``
        for a VM slot, ``<job>/<volume URN>`` for a volume slot) by a proxy that died: they become mine
        and are renewed. The next acquire_* with the same kind, resource and owner gets an adopted slot
        instead of a new one; release the returned tickets after the run (those already released by the
        runner are ignored)."""
        await self.start()
        wanted = {owners} if isinstance(owners, str) else set(owners)
        out: list[Ticket] = []
        for key, entry in (await entries(self.kv)).items():
            if not (key.startswith("host.") or key.startswith("ds.")):
                continue
            value = _load(entry.value)
            if value.get("owner") not in wanted or key in self._held:
                continue
            value.update(agent=self.agent_id)
            try:
                rev = await self.kv.update(key, _dump(value), last=entry.revision)
            except _Wrong:   # released, expired or adopted by someone else meanwhile
                continue
            t = ClusterTicket(id=next(self._ids), kind="vm" if key.startswith("host.") else "volume",
                              key=value.get("resource", "?"), owner=value["owner"], granted=True,
                              slot=key, revision=rev, since=float(value.get("since") or time.time()))
            self._held[key] = t
            self._adopted.append(t)
            self._count(t)
            out.append(t)
        return out

    # --- VM claims --------------------------------------------------------------------------------

    async def claim_vm(self, vm_urn: str, job_id: str) -> str | None:
        """Claim ``vm_urn`` for ``job_id``: None when it is now mine (also when the claim was this job's,
        held by a proxy that died), else the id of the job that holds it."""
        await self.start()
        key = f"vm.{vm_key(vm_urn)}"
        value = {"job": job_id, "vm": vm_urn, "agent": self.agent_id, "since": time.time()}
        for _ in range(10):   # each round loses only to a concurrent change of the key
            try:
                rev = await create(self.kv, key, _dump(value))
            except _Wrong:
                entry = await current(self.kv, key)
                if entry is None:
                    continue
                holder = _load(entry.value).get("job")
                if holder != job_id:
                    return str(holder)
                try:
                    rev = await self.kv.update(key, _dump(value), last=entry.revision)
                except _Wrong:
                    continue
            self._claims[vm_urn] = ClusterTicket(id=next(self._ids), kind="claim", key=vm_urn, owner=job_id,
                                                 granted=True, slot=key, revision=rev, since=value["since"])
            return None
        raise ClusterError(f"could not claim {vm_urn}: its claim keeps changing")

    def release_vm(self, vm_urn: str) -> None:
        """Drop this agent's claim of ``vm_urn`` (scheduled; :meth:`drain` waits for it)."""
        t = self._claims.pop(vm_urn, None)
        if t is not None:
            t.granted = False
            self._spawn(self._delete(t))

    # --- inside -----------------------------------------------------------------------------------

    def _count(self, t: ClusterTicket) -> None:
        if t.kind == "vm":
            _count(self.pool.hosts, t.key, 1)
            self.pool.vms_running += 1
        else:
            _count(self.pool.datastores, t.key, 1)

    def _uncount(self, t: ClusterTicket) -> None:
        if t.kind == "vm":
            _count(self.pool.hosts, t.key, -1)
            self.pool.vms_running -= 1
        else:
            _count(self.pool.datastores, t.key, -1)

    def _notify(self) -> None:
        self._changes += 1
        ev, self._event = self._event, None
        if ev is not None:
            ev.set()

    async def _changed(self, timeout: float) -> bool:
        """Wait for a change (True) or ``timeout`` (False)."""
        if self._event is None:
            self._event = asyncio.Event()
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _slot_key(self, kind: str, resource: str, n: int) -> str:
        return host_slot_key(resource, n) if kind == "vm" else datastore_slot_key(resource, n)

    def _take_adopted(self, kind: str, resource: str, owner: str) -> ClusterTicket | None:
        for t in self._adopted:
            if t.kind == kind and t.key == resource and t.owner == owner:
                self._adopted.remove(t)
                return t
        return None

    async def _acquire(self, kind: str, resource: str, owner: str,
                       on_wait: Callable[[str], None] | None) -> Ticket:
        await self.start()
        adopted = self._take_adopted(kind, resource, owner)
        if adopted is not None:
            return adopted
        busy = HOST_SOCKETS_BUSY if kind == "vm" else TARGET_VOLUMES_BUSY
        t = ClusterTicket(id=next(self._ids), kind=kind, key=resource, owner=owner)
        queue = self._queues.setdefault((kind, resource), [])
        queue.append(t)
        told = ""
        ask_all = True   # ask for every slot, not only those the watch says are free
        unanswered_since: float | None = None
        try:
            while True:
                seen = self._changes
                if queue[0] is t:
                    if kind == "vm" and self.pool.vms_running >= self.pool.global_limit:
                        reason = GLOBAL_LIMIT
                    else:
                        if kind == "vm":
                            self.pool.vms_running += 1   # reserved while asking: the global limit counts it
                        try:
                            taken = await self._try_take(t, ask_all)
                            unanswered_since = None
                        except _Unanswered as e:
                            # A blip waits; an outage as long as ack_wait fails the work (by then its
                            # item may be another proxy's anyway).
                            taken = False
                            now = time.monotonic()
                            unanswered_since = unanswered_since or now
                            if now - unanswered_since > self.cluster.settings.ack_wait_s:
                                raise ClusterError(f"the cluster at {self.cluster.url} does not answer: {e}") from None
                            log.warning("the cluster did not answer a slot request: %s", e)
                        finally:
                            if kind == "vm":
                                self.pool.vms_running -= 1
                        if taken:
                            break
                        reason = busy
                else:
                    reason = queue[0].reason or busy
                t.reason = reason
                if reason != told and on_wait is not None:
                    on_wait(reason)
                told = reason
                if self._changes != seen:   # a slot may have come free while this one asked
                    ask_all = False
                    continue
                ask_all = not await self._changed(self.poll)
        finally:
            queue.remove(t)
            if not queue:
                self._queues.pop((kind, resource), None)
            self._notify()   # the next waiter of this resource is now first
        t.granted, t.reason = True, ""
        self._held[t.slot] = t
        self._count(t)
        return t

    async def _try_take(self, t: ClusterTicket, ask_all: bool) -> bool:
        limit = self.pool.per_host if t.kind == "vm" else self.pool.per_datastore
        for n in range(limit):
            key = self._slot_key(t.kind, t.key, n)
            if key in self._held or (not ask_all and key in self._present):
                continue
            since = time.time()
            value = {"owner": t.owner, "agent": self.agent_id, "since": since, "resource": t.key}
            creating = asyncio.ensure_future(create(self.kv, key, _dump(value)))
            try:
                rev = await asyncio.shield(creating)
            except _Wrong:
                self._present.add(key)
                continue
            except (nats.errors.Error, asyncio.TimeoutError) as e:
                # NATS away (a create whose answer was lost leaves a key that simply expires)
                raise _Unanswered(str(e) or type(e).__name__) from None
            except asyncio.CancelledError:
                # The create may still succeed: give such a slot back at once rather than at expiry.
                creating.add_done_callback(lambda f, key=key: self._abandon(f, key))
                raise
            t.slot, t.revision, t.since = key, rev, since
            return True
        return False

    def _abandon(self, f: asyncio.Future, key: str) -> None:
        if not f.cancelled() and f.exception() is None:
            self._spawn(self._delete_key(key, f.result()))

    async def _delete(self, t: ClusterTicket) -> None:
        await self._delete_key(t.slot, t.revision)

    async def _delete_key(self, key: str, revision: int) -> None:
        """Delete ``key`` if it is still the one this agent wrote (a renewal may have moved its revision;
        a key that expired and was taken by another proxy is theirs)."""
        for _ in range(3):
            try:
                await self.kv.delete(key, last=revision)
                return
            except (nats.errors.Error, asyncio.TimeoutError) as e:
                # delete reports a stale revision as a plain API error (update has its own type)
                if not (isinstance(e, nats.js.errors.APIError) and e.err_code in WRONG_LAST):
                    log.warning("could not release slot %s (it expires by itself): %s", key, e)
                    return
            try:
                entry = await current(self.kv, key)
            except (nats.errors.Error, asyncio.TimeoutError) as e:
                log.warning("could not release slot %s (it expires by itself): %s", key, e)
                return
            if entry is None or _load(entry.value).get("agent") != self.agent_id:
                return
            revision = entry.revision

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            for t in list(self._held.values()) + list(self._claims.values()):
                if t.lost:
                    continue
                try:
                    await self._renew(t)
                except (nats.errors.Error, asyncio.TimeoutError) as e:   # NATS away: try next round
                    log.warning("could not renew slot %s: %s", t.slot, e)

    async def _renew(self, t: ClusterTicket) -> None:
        if t.kind == "claim":
            value: dict[str, Any] = {"job": t.owner, "vm": t.key, "agent": self.agent_id, "since": t.since}
        else:
            value = {"owner": t.owner, "agent": self.agent_id, "since": t.since, "resource": t.key}
        try:
            rev = await self.kv.update(t.slot, _dump(value), last=t.revision)
        except _Wrong:
            rev = await self._retake(t, value)
            if rev is None:
                t.lost = True
                log.warning("slot %s (%s) expired and was taken by another proxy", t.slot, t.owner)
                return
        if t.granted:
            t.revision = rev
            t.renewals += 1
        else:   # released while renewing: the delete used the old revision and may have missed
            await self._delete_key(t.slot, rev)

    async def _retake(self, t: ClusterTicket, value: dict[str, Any]) -> int | None:
        """The slot moved from the revision ``t`` knows: the revision it has when it is still (or again)
        mine, None when another proxy holds it."""
        entry = await current(self.kv, t.slot)
        if entry is not None:
            # a renewal whose answer was lost went through: the key is as this agent wrote it
            return entry.revision if _load(entry.value) == value else None
        try:   # it expired (this agent stalled): take it again if nobody else did
            return await create(self.kv, t.slot, _dump(value))
        except _Wrong:
            return None

    async def _watch_loop(self) -> None:
        try:
            watcher = await self.kv.watch(">")
        except Exception as e:
            log.warning("cannot watch the slots (%s); waiting slots poll", e)
            if self._watch_ready is not None:
                self._watch_ready.set()
            return
        try:
            async for entry in watcher:
                if entry is None:   # the current entries are all in
                    if self._watch_ready is not None:
                        self._watch_ready.set()
                    continue
                if entry.operation in (KV_DEL, KV_PURGE):
                    self._present.discard(entry.key)
                else:
                    self._present.add(entry.key)
                self._notify()
        finally:
            try:
                await watcher.stop()
            except Exception:   # the connection is closed already
                pass


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _load(data: bytes | None) -> dict[str, Any]:
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
