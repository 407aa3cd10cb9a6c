"""Who may hold a backup resource now: per host, per target datastore, and globally.

The product document caps a host at 8 backup socket connections and a target storage at 8 volumes
being backed up; the disks of one VM are read one after another (disks of one VM on one host share a
CNA port, vrm-api.md §9.3). Scheduling is therefore done in two layers:

* a **VM slot** (``acquire_vm``) is held from before the snapshot until the VM's last disk is released.
  Because its disks are sequential, a VM uses at most one backup resource at a time, so the VM slot
  *is* its host's socket: ``per_host`` VM slots per host, ``global_limit`` overall. Taking the VM slot
  before the snapshot means no snapshot waits for a socket (snapshots should live briefly).
* a **volume slot** (``acquire_volume``) per disk being read, counted per target datastore.

A volume slot is never requested while waiting for a VM slot, and a VM slot holder never waits for a
VM slot, so there is no cycle. Waiting work carries the rule id of the reason it waits
(``host-sockets-busy``, ``target-volumes-busy``) or ``global-limit``.

:class:`SlotPool` is the pure bookkeeping (unit-tested without an event loop);
:class:`Scheduler` adds asyncio waiting on top of it.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Callable

HOST_SOCKETS_BUSY = "host-sockets-busy"
TARGET_VOLUMES_BUSY = "target-volumes-busy"
GLOBAL_LIMIT = "global-limit"
HOST_SNAPSHOT_GATE = "host-snapshot-gate"   # a CBT snapshot and a backup resource of one host wait for each other

MAX_PER_HOST = 8       # product document §3: 8 socket connections per host
MAX_PER_DATASTORE = 8  # product document §2: 8 volumes at a time on a target storage


class SchedulerError(ValueError):
    """Invalid limits."""


@dataclass
class Ticket:
    """One request for a slot. ``kind`` is ``vm`` (keyed by host) or ``volume`` (keyed by datastore)."""
    id: int
    kind: str
    key: str            # host URN for vm tickets, datastore URN for volume tickets
    owner: str          # job id / VM URN / volume URN, for display
    granted: bool = False
    reason: str = ""    # why it waits (empty once granted)


@dataclass
class SlotPool:
    per_host: int = MAX_PER_HOST
    per_datastore: int = MAX_PER_DATASTORE
    global_limit: int = 16
    hosts: dict[str, int] = field(default_factory=dict)
    datastores: dict[str, int] = field(default_factory=dict)
    vms_running: int = 0
    queue: list[Ticket] = field(default_factory=list)   # FIFO of waiting tickets
    _ids: "itertools.count[int]" = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        if not 1 <= self.per_host <= MAX_PER_HOST:
            raise SchedulerError(f"per-host limit must be 1..{MAX_PER_HOST}, got {self.per_host}")
        if not 1 <= self.per_datastore <= MAX_PER_DATASTORE:
            raise SchedulerError(f"per-datastore limit must be 1..{MAX_PER_DATASTORE}, got {self.per_datastore}")
        if self.global_limit < 1:
            raise SchedulerError(f"global limit must be at least 1, got {self.global_limit}")

    # -- pure decisions -------------------------------------------------------------------------

    def blocker(self, t: Ticket) -> str:
        """Why ``t`` cannot be granted now ('' when it can)."""
        if t.kind == "vm":
            if self.hosts.get(t.key, 0) >= self.per_host:
                return HOST_SOCKETS_BUSY
            if self.vms_running >= self.global_limit:
                return GLOBAL_LIMIT
            return ""
        if self.datastores.get(t.key, 0) >= self.per_datastore:
            return TARGET_VOLUMES_BUSY
        return ""

    def _take(self, t: Ticket) -> None:
        if t.kind == "vm":
            self.hosts[t.key] = self.hosts.get(t.key, 0) + 1
            self.vms_running += 1
        else:
            self.datastores[t.key] = self.datastores.get(t.key, 0) + 1
        t.granted, t.reason = True, ""

    def request(self, kind: str, key: str, owner: str = "") -> Ticket:
        """Ask for a slot: granted at once when nothing earlier waits for the same thing, else queued."""
        if kind not in ("vm", "volume"):
            raise SchedulerError(f"unknown slot kind {kind!r}")
        t = Ticket(next(self._ids), kind, key, owner)
        # FIFO per resource: do not overtake an earlier waiter of the same kind and key.
        if not any(w.kind == kind and w.key == key for w in self.queue) and not (
                kind == "vm" and any(w.kind == "vm" and w.reason == GLOBAL_LIMIT for w in self.queue)):
            reason = self.blocker(t)
            if not reason:
                self._take(t)
                return t
        t.reason = self.blocker(t) or (HOST_SOCKETS_BUSY if kind == "vm" else TARGET_VOLUMES_BUSY)
        self.queue.append(t)
        return t

    def release(self, t: Ticket) -> list[Ticket]:
        """Give a granted slot back (or withdraw a waiting ticket); returns the tickets now granted."""
        if not t.granted:
            if t in self.queue:
                self.queue.remove(t)
            return self._grant_waiters()
        if t.kind == "vm":
            self.hosts[t.key] -= 1
            if not self.hosts[t.key]:
                del self.hosts[t.key]
            self.vms_running -= 1
        else:
            self.datastores[t.key] -= 1
            if not self.datastores[t.key]:
                del self.datastores[t.key]
        t.granted = False
        return self._grant_waiters()

    def _grant_waiters(self) -> list[Ticket]:
        granted: list[Ticket] = []
        blocked_keys: set[tuple[str, str]] = set()
        for t in list(self.queue):
            if (t.kind, t.key) in blocked_keys:
                t.reason = self.blocker(t) or t.reason
                continue
            reason = self.blocker(t)
            if reason:
                t.reason = reason
                blocked_keys.add((t.kind, t.key))  # keep FIFO within one host/datastore
                continue
            self.queue.remove(t)
            self._take(t)
            granted.append(t)
        return granted

    def waiting(self) -> list[Ticket]:
        return list(self.queue)


@dataclass
class _HostGateState:
    creating: int = 0        # CBT snapshot creations under way on the host
    snapshots_waiting: int = 0
    resources: int = 0       # backup resources of ours prepared (or being prepared) on the host


class HostSnapshotGate:
    """The stricter reading of "no prepared backup resource may exist when a CBT snapshot is created"
    (vrm-api.md §16 NOTES, scope not stated; §15 item 40 reads it per VM): per host, this client's
    CBT snapshot creations and its backup resources exclude each other.

    A snapshot creation waits until no resource of ours is prepared on its host; a preparation waits
    while a snapshot is being created or waits to be, so snapshots are preferred and never starve
    (a VM's snapshot should live briefly, and other VMs' disks only pause between two disks). Nobody
    holds one side while waiting for the other (a VM snapshots, then reads its disks), so no cycle.

    Resources are always counted, so that a job told to follow the stricter reading (``strict``, or
    the gate ``enabled`` for all) also waits for the resources of jobs that were not; a snapshot that
    is not strict passes at once and is not counted (the per-VM reading, which the runner's order
    already keeps), so without strict snapshots no preparation ever waits here.
    """

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled
        self._hosts: dict[str, _HostGateState] = {}
        self._event: asyncio.Event | None = None   # set (and replaced) at every change

    def _state(self, host: str) -> _HostGateState:
        return self._hosts.setdefault(host or "?", _HostGateState())

    def _changed(self) -> None:
        ev, self._event = self._event, None
        if ev is not None:
            ev.set()

    async def _wait(self, ready: Callable[[], bool], on_wait: Callable[[str], None] | None) -> None:
        told = False
        while not ready():
            if not told and on_wait is not None:
                on_wait(HOST_SNAPSHOT_GATE)
                told = True
            if self._event is None:
                self._event = asyncio.Event()
            await self._event.wait()

    async def begin_snapshot(self, host: str, on_wait: Callable[[str], None] | None = None,
                             strict: bool = False) -> bool:
        """Wait until a CBT snapshot may be created on ``host``; True when the caller must call
        :meth:`end_snapshot` afterwards (the gate is enabled, or the caller ``strict``)."""
        if not (self.enabled or strict):
            return False
        st = self._state(host)
        st.snapshots_waiting += 1
        try:
            await self._wait(lambda: st.resources == 0, on_wait)
        finally:
            st.snapshots_waiting -= 1
            self._changed()
        st.creating += 1
        return True

    def end_snapshot(self, host: str) -> None:
        st = self._state(host)
        st.creating = max(0, st.creating - 1)
        self._changed()

    async def begin_resource(self, host: str, on_wait: Callable[[str], None] | None = None) -> bool:
        """Wait until a backup resource may be prepared on ``host`` (only strict snapshots there make
        it wait); the caller must call :meth:`end_resource` once the resource is released (or cannot
        exist). Always True."""
        st = self._state(host)
        await self._wait(lambda: st.creating == 0 and st.snapshots_waiting == 0, on_wait)
        st.resources += 1
        return True

    def end_resource(self, host: str) -> None:
        st = self._state(host)
        st.resources = max(0, st.resources - 1)
        self._changed()


class Scheduler:
    """asyncio front of :class:`SlotPool`; ``on_change`` is told whenever a ticket's reason changes.
    ``host_snapshot_gate``: order CBT snapshot creations and backup resources per host
    (:class:`HostSnapshotGate`)."""

    def __init__(self, *, per_host: int = MAX_PER_HOST, per_datastore: int = MAX_PER_DATASTORE,
                 global_limit: int = 16, host_snapshot_gate: bool = False) -> None:
        self.pool = SlotPool(per_host=per_host, per_datastore=per_datastore, global_limit=global_limit)
        self._events: dict[int, asyncio.Event] = {}
        self.gate = HostSnapshotGate(host_snapshot_gate)

    def _wake(self, granted: list[Ticket]) -> None:
        for t in granted:
            ev = self._events.pop(t.id, None)
            if ev is not None:
                ev.set()

    async def _acquire(self, kind: str, key: str, owner: str,
                       on_wait: Callable[[str], None] | None) -> Ticket:
        t = self.pool.request(kind, key, owner)
        if t.granted:
            return t
        ev = asyncio.Event()
        self._events[t.id] = ev
        if on_wait is not None:
            on_wait(t.reason)
        try:
            await ev.wait()
        except BaseException:
            self._events.pop(t.id, None)
            self._wake(self.pool.release(t))  # withdraw (or give back if granted meanwhile)
            raise
        return t

    async def acquire_vm(self, host_urn: str, owner: str = "",
                         on_wait: Callable[[str], None] | None = None) -> Ticket:
        return await self._acquire("vm", host_urn or "?", owner, on_wait)

    async def acquire_volume(self, datastore_urn: str, owner: str = "",
                             on_wait: Callable[[str], None] | None = None) -> Ticket:
        return await self._acquire("volume", datastore_urn or "?", owner, on_wait)

    def release(self, t: Ticket) -> None:
        self._wake(self.pool.release(t))

    def waiting(self) -> list[Ticket]:
        return self.pool.waiting()
