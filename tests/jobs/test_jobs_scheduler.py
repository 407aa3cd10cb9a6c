"""Scheduler: per-host sockets, per-datastore volumes, a global bound, FIFO, visible wait reasons."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fctui.jobs.scheduler import (GLOBAL_LIMIT, HOST_SOCKETS_BUSY, TARGET_VOLUMES_BUSY, Scheduler, SchedulerError,
                                  SlotPool)


def test_host_limit_queues_with_reason_and_fifo() -> None:
    pool = SlotPool(per_host=2, global_limit=10)
    a, b = pool.request("vm", "h1", "a"), pool.request("vm", "h1", "b")
    c, d = pool.request("vm", "h1", "c"), pool.request("vm", "h1", "d")
    assert a.granted and b.granted and not c.granted and not d.granted
    assert c.reason == d.reason == HOST_SOCKETS_BUSY
    other = pool.request("vm", "h2", "e")  # another host is not held up by h1's queue
    assert other.granted
    assert pool.release(b) == [c]  # first come, first served
    assert not d.granted and pool.hosts["h1"] == 2


def test_datastore_limit_and_global_limit() -> None:
    pool = SlotPool(per_datastore=1, global_limit=2)
    v1, v2 = pool.request("volume", "ds1"), pool.request("volume", "ds1")
    assert v1.granted and not v2.granted and v2.reason == TARGET_VOLUMES_BUSY
    assert pool.request("volume", "ds2").granted
    g1, g2, g3 = (pool.request("vm", f"h{i}") for i in range(3))
    assert g1.granted and g2.granted and not g3.granted and g3.reason == GLOBAL_LIMIT
    # a later VM on a free host must not overtake a VM waiting for the global bound
    g4 = pool.request("vm", "h9")
    assert not g4.granted
    assert pool.release(g1) == [g3]
    assert pool.release(v1) == [v2]


def test_withdrawing_a_waiting_ticket() -> None:
    pool = SlotPool(per_host=1)
    a, b, c = (pool.request("vm", "h") for _ in range(3))
    pool.release(b)  # b gives up while waiting
    assert pool.release(a) == [c]


@pytest.mark.parametrize("kw", [{"per_host": 0}, {"per_host": 9}, {"per_datastore": 9}, {"global_limit": 0}])
def test_invalid_limits(kw: dict[str, int]) -> None:
    with pytest.raises(SchedulerError):
        SlotPool(**kw)


ops = st.lists(st.tuples(st.sampled_from(["vm", "volume", "release"]), st.integers(0, 3), st.integers(0, 50)),
               max_size=120)


@settings(max_examples=150, deadline=None)
@given(ops, st.integers(1, 8), st.integers(1, 8), st.integers(1, 12))
def test_limits_never_exceeded_and_no_idle_waiter(seq: list, per_host: int, per_ds: int, glob: int) -> None:
    pool = SlotPool(per_host=per_host, per_datastore=per_ds, global_limit=glob)
    held: list = []
    for op, key, pick in seq:
        if op == "release":
            if held:
                t = held.pop(pick % len(held))
                held.extend(pool.release(t))
            continue
        t = pool.request(op, f"k{key}")
        if t.granted:
            held.append(t)
        # invariants: counts match the granted tickets and stay within the limits
        hosts: dict[str, int] = {}
        dss: dict[str, int] = {}
        for h in held:
            (hosts if h.kind == "vm" else dss)[h.key] = (hosts if h.kind == "vm" else dss).get(h.key, 0) + 1
        assert hosts == pool.hosts and dss == pool.datastores
        assert all(n <= per_host for n in hosts.values()) and all(n <= per_ds for n in dss.values())
        assert sum(hosts.values()) == pool.vms_running <= glob
        # liveness: a waiter that could run now must not be left waiting behind nothing
        for w in pool.waiting():
            assert w.reason
            earlier_same = [x for x in pool.waiting() if x.id < w.id and x.kind == w.kind and x.key == w.key]
            assert pool.blocker(w) or earlier_same or (w.kind == "vm" and any(
                x.reason == GLOBAL_LIMIT for x in pool.waiting() if x.id < w.id))


async def test_async_scheduler_wakes_waiters_and_reports_reason() -> None:
    sched = Scheduler(per_host=1)
    first = await sched.acquire_vm("h1", "a")
    reasons: list[str] = []
    waiter = asyncio.create_task(sched.acquire_vm("h1", "b", on_wait=reasons.append))
    await asyncio.sleep(0)
    assert not waiter.done() and reasons == [HOST_SOCKETS_BUSY]
    assert [t.owner for t in sched.waiting()] == ["b"]
    sched.release(first)
    second = await asyncio.wait_for(waiter, 1)
    assert second.granted and sched.waiting() == []
    # a cancelled waiter withdraws its ticket
    third = asyncio.create_task(sched.acquire_vm("h1", "c"))
    await asyncio.sleep(0)
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    assert sched.waiting() == []
    sched.release(second)
    assert sched.pool.hosts == {}
