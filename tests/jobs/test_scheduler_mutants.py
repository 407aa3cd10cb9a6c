"""The scheduler at its exact limits, and the host snapshot gate, where mutation testing found them
unguarded (README, Mutation testing). Waiting is observed by yielding to the event loop, never by time."""

from __future__ import annotations

import asyncio

import pytest

from fctui.jobs.scheduler import (GLOBAL_LIMIT, HOST_SNAPSHOT_GATE, HOST_SOCKETS_BUSY, MAX_PER_DATASTORE,
                                  MAX_PER_HOST, TARGET_VOLUMES_BUSY, HostSnapshotGate, Scheduler,
                                  SchedulerError, SlotPool)


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_the_product_limits_are_eight() -> None:
    assert MAX_PER_HOST == 8 and MAX_PER_DATASTORE == 8
    pool = SlotPool()
    assert (pool.per_host, pool.per_datastore, pool.global_limit) == (8, 8, 16)
    assert [pool.request("vm", "h").granted for _ in range(9)] == [True] * 8 + [False]
    assert [pool.request("volume", "d").granted for _ in range(9)] == [True] * 8 + [False]


@pytest.mark.parametrize("kw,msg", [
    ({"per_host": 0}, "per-host limit must be 1..8, got 0"),
    ({"per_host": 9}, "per-host limit must be 1..8, got 9"),
    ({"per_datastore": 0}, "per-datastore limit must be 1..8, got 0"),
    ({"per_datastore": 9}, "per-datastore limit must be 1..8, got 9"),
    ({"global_limit": 0}, "global limit must be at least 1, got 0"),
])
def test_invalid_limits_say_which(kw: dict[str, int], msg: str) -> None:
    with pytest.raises(SchedulerError) as e:
        SlotPool(**kw)
    assert str(e.value) == msg


def test_the_extreme_valid_limits() -> None:
    for kw in ({"per_host": 1}, {"per_host": 8}, {"per_datastore": 1}, {"per_datastore": 8}, {"global_limit": 1}):
        SlotPool(**kw)


def test_an_unknown_slot_kind_is_refused() -> None:
    with pytest.raises(SchedulerError) as e:
        SlotPool().request("disk", "x")
    assert str(e.value) == "unknown slot kind 'disk'"


def test_tickets_carry_ids_owners_and_counts() -> None:
    pool = SlotPool(per_host=1, per_datastore=1)
    a = pool.request("vm", "h1", "job-a")
    b = pool.request("volume", "d1", "vol-b")
    assert (a.id, a.kind, a.key, a.owner, a.granted, a.reason) == (1, "vm", "h1", "job-a", True, "")
    assert (b.id, b.kind, b.owner) == (2, "volume", "vol-b")
    assert pool.hosts == {"h1": 1} and pool.datastores == {"d1": 1} and pool.vms_running == 1
    c = pool.request("volume", "d1", "vol-c")
    assert (c.id, c.granted, c.reason) == (3, False, TARGET_VOLUMES_BUSY)
    assert pool.release(a) == [] and pool.hosts == {} and pool.vms_running == 0 and not a.granted
    assert pool.release(b) == [c] and c.granted and c.reason == "" and pool.datastores == {"d1": 1}
    assert pool.release(c) == [] and pool.datastores == {}


def test_counts_go_down_by_one_and_keys_stay_while_held() -> None:
    pool = SlotPool(per_host=3, per_datastore=3)
    vms = [pool.request("vm", "h") for _ in range(3)]
    vols = [pool.request("volume", "d") for _ in range(3)]
    pool.release(vms[0])
    pool.release(vols[0])
    assert pool.hosts == {"h": 2} and pool.datastores == {"d": 2} and pool.vms_running == 2


def test_a_waiting_volume_does_not_hold_up_another_datastore_or_a_vm() -> None:
    pool = SlotPool(per_datastore=1, per_host=1)
    pool.request("volume", "d1")
    w = pool.request("volume", "d1")
    assert not w.granted
    assert pool.request("volume", "d2").granted
    assert pool.request("vm", "d1").granted          # another kind with the same key


def test_a_later_request_does_not_overtake_a_waiter_even_when_a_slot_is_free() -> None:
    pool = SlotPool(per_host=1)
    a = pool.request("vm", "h")
    b = pool.request("vm", "h")
    # withdraw-free release of a grants b; a newcomer queued meanwhile waits behind b
    assert pool.release(a) == [b]
    c = pool.request("vm", "h")
    assert not c.granted and c.reason == HOST_SOCKETS_BUSY


def test_the_global_limit_is_a_reason_and_releases_in_order() -> None:
    pool = SlotPool(global_limit=1)
    a = pool.request("vm", "h1")
    b = pool.request("vm", "h2")
    c = pool.request("vm", "h3")
    assert (b.reason, c.reason) == (GLOBAL_LIMIT, GLOBAL_LIMIT)
    assert pool.request("volume", "d").granted       # volumes are not bound by the VM limit
    assert pool.release(a) == [b] and c.reason == GLOBAL_LIMIT
    assert pool.release(b) == [c]


def test_a_waiter_behind_a_blocked_one_of_its_host_gets_its_reason_refreshed() -> None:
    pool = SlotPool(per_host=1, global_limit=1)
    a = pool.request("vm", "h1")
    b = pool.request("vm", "h1")
    c = pool.request("vm", "h1")
    assert b.reason == HOST_SOCKETS_BUSY == c.reason
    d = pool.request("vm", "h2")
    assert d.reason == GLOBAL_LIMIT
    pool.release(a)
    assert b.granted and not c.granted and c.reason == HOST_SOCKETS_BUSY and d.reason == GLOBAL_LIMIT
    assert pool.waiting() == [c, d] and pool.waiting() is not pool.queue


def test_withdrawing_a_ticket_that_never_queued_changes_nothing() -> None:
    pool = SlotPool(per_host=1)
    a = pool.request("vm", "h")
    b = pool.request("vm", "h")
    pool.release(b)
    pool.release(b)                                  # twice: no error, nothing granted
    assert pool.waiting() == [] and a.granted and pool.hosts == {"h": 1}


# --- the asyncio front --------------------------------------------------------------------------------

async def test_scheduler_limits_and_empty_keys() -> None:
    s = Scheduler(per_host=2, per_datastore=1, global_limit=3)
    assert (s.pool.per_host, s.pool.per_datastore, s.pool.global_limit) == (2, 1, 3)
    t = await s.acquire_vm("", "x")
    v = await s.acquire_volume("", "y")
    assert (t.key, v.key) == ("?", "?") and t.owner == "x" and v.owner == "y"
    waits: list[str] = []
    w = asyncio.create_task(s.acquire_volume("", "z", on_wait=waits.append))
    await settle()
    assert waits == [TARGET_VOLUMES_BUSY] and not w.done()
    s.release(v)
    got = await asyncio.wait_for(w, 5)
    assert got.granted and got.owner == "z"
    assert not s.gate.enabled and Scheduler(host_snapshot_gate=True).gate.enabled


async def test_a_granted_request_tells_nobody_it_waits() -> None:
    s = Scheduler()
    told: list[str] = []
    t = await s.acquire_vm("h", on_wait=told.append)
    assert t.granted and told == [] and s.waiting() == []


async def test_a_cancelled_waiter_granted_meanwhile_gives_the_slot_on() -> None:
    s = Scheduler(per_host=1)
    a = await s.acquire_vm("h", "a")
    b = asyncio.create_task(s.acquire_vm("h", "b"))
    c = asyncio.create_task(s.acquire_vm("h", "c"))
    await settle()
    s.release(a)          # grants b, whose task has not run yet
    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    got = await asyncio.wait_for(c, 5)   # b's slot went on to c
    assert got.owner == "c" and s.pool.hosts == {"h": 1}


# --- the host snapshot gate ------------------------------------------------------------------------------

async def test_a_disabled_gate_lets_snapshots_pass_uncounted() -> None:
    g = HostSnapshotGate()
    assert await g.begin_resource("h") is True
    assert await g.begin_snapshot("h") is False      # not strict: the per-VM reading
    told: list[str] = []
    assert await g.begin_resource("h", on_wait=told.append) is True and told == []


async def test_a_strict_snapshot_waits_for_the_hosts_resources_and_then_blocks_new_ones() -> None:
    g = HostSnapshotGate()
    await g.begin_resource("h1")
    await g.begin_resource("h1")
    told: list[str] = []
    snap = asyncio.create_task(g.begin_snapshot("h1", on_wait=told.append, strict=True))
    await settle()
    assert not snap.done() and told == [HOST_SNAPSHOT_GATE]
    assert await g.begin_snapshot("h2", strict=True) is True      # another host: at once
    # a preparation on h1 now waits: a snapshot waits there (snapshots are preferred)
    res_told: list[str] = []
    res = asyncio.create_task(g.begin_resource("h1", on_wait=res_told.append))
    await settle()
    assert not res.done() and res_told == [HOST_SNAPSHOT_GATE]
    g.end_resource("h1")
    await settle()
    assert not snap.done()                                         # one resource is still prepared
    g.end_resource("h1")
    assert await asyncio.wait_for(snap, 5) is True and told == [HOST_SNAPSHOT_GATE]
    await settle()
    assert not res.done()                                          # the snapshot is being created
    g.end_snapshot("h1")
    assert await asyncio.wait_for(res, 5) is True and res_told == [HOST_SNAPSHOT_GATE]


async def test_an_enabled_gate_makes_every_snapshot_strict() -> None:
    g = HostSnapshotGate(enabled=True)
    await g.begin_resource("")
    snap = asyncio.create_task(g.begin_snapshot(""))
    await settle()
    assert not snap.done()
    g.end_resource("")
    assert await asyncio.wait_for(snap, 5) is True
    g.end_snapshot("")
    g.end_snapshot("")                                # never below zero
    assert await asyncio.wait_for(g.begin_resource(""), 5) is True


async def test_ending_more_resources_than_begun_stays_at_zero() -> None:
    g = HostSnapshotGate()
    g.end_resource("h")
    g.end_resource("h")
    await g.begin_resource("h")
    snap = asyncio.create_task(g.begin_snapshot("h", strict=True))
    await settle()
    assert not snap.done()                            # one resource counted, not -1 + 1 = 0
    g.end_resource("h")
    assert await asyncio.wait_for(snap, 5) is True


async def test_a_cancelled_snapshot_no_longer_holds_up_preparations() -> None:
    g = HostSnapshotGate()
    await g.begin_resource("h")
    snap = asyncio.create_task(g.begin_snapshot("h", strict=True))
    await settle()
    snap.cancel()
    with pytest.raises(asyncio.CancelledError):
        await snap
    assert await asyncio.wait_for(g.begin_resource("h"), 5) is True


async def test_one_of_two_snapshots_ending_still_holds_the_resources_back() -> None:
    g = HostSnapshotGate()
    assert await g.begin_snapshot("h", strict=True) and await g.begin_snapshot("h", strict=True)
    res = asyncio.create_task(g.begin_resource("h"))
    g.end_snapshot("h")
    await settle()
    assert not res.done()                             # the other snapshot is still being created
    g.end_snapshot("h")
    assert await asyncio.wait_for(res, 5) is True


async def test_two_waiting_snapshots_both_hold_preparations_back_until_both_are_done() -> None:
    g = HostSnapshotGate()
    await g.begin_resource("h")
    s1 = asyncio.create_task(g.begin_snapshot("h", strict=True))
    s2 = asyncio.create_task(g.begin_snapshot("h", strict=True))
    await settle()
    s1.cancel()                                       # one of the two waiting snapshots gives up
    with pytest.raises(asyncio.CancelledError):
        await s1
    g.end_resource("h")
    res = asyncio.create_task(g.begin_resource("h"))
    assert await asyncio.wait_for(s2, 5) is True     # the other is preferred over the new preparation
    await settle()
    assert not res.done()
    g.end_snapshot("h")
    assert await asyncio.wait_for(res, 5) is True     # and nothing is left counted once it is done


async def test_the_default_global_limit_is_sixteen_and_owners_default_to_none() -> None:
    s = Scheduler()
    held = [await s.acquire_vm(f"h{i % 3}") for i in range(16)]   # at most 6 per host: under 8
    assert all(t.granted for t in held) and {t.owner for t in held} == {""}
    assert (await s.acquire_volume("ds")).owner == ""   # volumes are not bound by the VM limit
    told: list[str] = []
    late = asyncio.create_task(s.acquire_vm("h0", on_wait=told.append))   # h0's 7th: the host has room
    await settle()
    assert told == [GLOBAL_LIMIT] and not late.done()
    s.release(held[1])
    got = await asyncio.wait_for(late, 5)
    assert got.granted and got.owner == ""


async def test_a_cancelled_wait_leaves_no_wake_up_behind() -> None:
    s = Scheduler(per_host=1)
    a = await s.acquire_vm("h", "a")
    b = asyncio.create_task(s.acquire_vm("h", "b"))
    await settle()
    assert len(s._events) == 1
    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    assert s._events == {} and s.waiting() == []   # a long-lived agent would otherwise grow with every one
    s.release(a)


def test_a_waiter_behind_its_key_takes_the_reason_of_the_one_ahead() -> None:
    """C and D wait for host h1 (full); F, queued first, waits for the global limit. When h1's slot frees,
    F takes the freed global slot, so C and D now wait for the global limit, not for h1."""
    pool = SlotPool(per_host=1, global_limit=2)
    a, b = pool.request("vm", "h1"), pool.request("vm", "h2")
    f = pool.request("vm", "h3")
    c, d = pool.request("vm", "h1", "c"), pool.request("vm", "h1", "d")
    assert (f.reason, c.reason, d.reason) == (GLOBAL_LIMIT, HOST_SOCKETS_BUSY, HOST_SOCKETS_BUSY)
    assert pool.release(a) == [f]
    assert (c.reason, d.reason) == (GLOBAL_LIMIT, GLOBAL_LIMIT)
    assert a.granted is False and b.granted is True and pool.request("vm", "h9").owner == ""


def test_a_blocked_host_does_not_hold_up_waiters_of_other_hosts() -> None:
    pool = SlotPool(per_host=1)
    pool.request("vm", "h1")
    b = pool.request("vm", "h2")
    c, d, e = pool.request("vm", "h1"), pool.request("vm", "h1"), pool.request("vm", "h2", "e")
    assert pool.release(b) == [e] and pool.queue == [c, d]
