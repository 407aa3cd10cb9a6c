"""ClusterScheduler against a real NATS: slots shared by proxies on separate connections."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest

from fctui.cluster.connect import ClusterError, create, current, entries
from fctui.cluster.layout import vm_key
from fctui.cluster.slots import ClusterScheduler
from fctui.jobs.scheduler import GLOBAL_LIMIT, HOST_SOCKETS_BUSY, TARGET_VOLUMES_BUSY, SchedulerError

from .conftest import until

HOST = "urn:sites:1:hosts:7"
DS = "urn:sites:1:datastores:3"


async def host_slots(cluster: Any) -> dict[str, dict[str, Any]]:
    return {k: json.loads(e.value) for k, e in (await entries(cluster.slots_kv, "host.>")).items()}


async def still_waiting(task: asyncio.Task, bound: float = 0.3) -> bool:
    """The task has not finished within ``bound`` (an absence can only be checked with a bound)."""
    done, _ = await asyncio.wait({task}, timeout=bound)
    return not done


async def test_two_agents_never_exceed_per_host(connect: Any) -> None:
    a = ClusterScheduler(await connect(), "agent-a", per_host=3)
    b = ClusterScheduler(await connect(), "agent-b", per_host=3)
    held = 0
    peak = 0
    waits: list[str] = []
    full = asyncio.Event()   # the first holders keep their slots until the host is full

    async def vm(sched: ClusterScheduler, n: int) -> None:
        nonlocal held, peak
        t = await sched.acquire_vm(HOST, f"job/vm{n}", waits.append)
        held += 1
        peak = max(peak, held)
        if held == 3:
            full.set()
        await asyncio.wait_for(full.wait(), 10)
        # what the cluster holds for the host, seen by a third reader: never more than per_host
        assert len(await host_slots(a.cluster)) <= 3
        await asyncio.sleep(0)
        held -= 1
        sched.release(t)

    await asyncio.gather(*(vm(a if n % 2 else b, n) for n in range(16)))
    await a.drain()
    await b.drain()
    assert peak == 3 and HOST_SOCKETS_BUSY in waits
    assert await host_slots(a.cluster) == {}
    await a.close()
    await b.close()


async def test_a_waiter_gets_the_slot_another_agent_releases(connect: Any) -> None:
    a = ClusterScheduler(await connect(), "agent-a", per_host=2)
    b = ClusterScheduler(await connect(), "agent-b", per_host=2)
    t1 = await a.acquire_vm(HOST, "j/one")
    t2 = await a.acquire_vm(HOST, "j/two")
    waits: list[str] = []
    third = asyncio.create_task(b.acquire_vm(HOST, "j/three", waits.append))
    assert await still_waiting(third)
    assert waits == [HOST_SOCKETS_BUSY]
    a.release(t2)
    t3 = await asyncio.wait_for(third, 5)   # woken by the watch, well before a poll would matter
    assert t3.granted and t3.slot == t2.slot  # type: ignore[attr-defined]
    slots = await host_slots(a.cluster)
    assert {v["agent"] for v in slots.values()} == {"agent-a", "agent-b"}
    assert {v["owner"] for v in slots.values()} == {"j/one", "j/three"}
    a.release(t1)
    b.release(t3)
    a.release(t1)   # twice: nothing
    await a.drain()
    await b.drain()
    assert await host_slots(a.cluster) == {}
    await a.close()
    await b.close()


async def test_held_slots_are_renewed_and_a_dead_agents_expire(connect: Any) -> None:
    a = ClusterScheduler(await connect(), "agent-a", per_host=1)
    b = ClusterScheduler(await connect(), "agent-b", per_host=1)
    t = await a.acquire_vm(HOST, "j/one")
    waiting = asyncio.create_task(b.acquire_vm(HOST, "j/two"))
    # renewed four times (every slot_ttl/3) = held longer than slot_ttl: the waiter still waits
    await until(lambda: t.renewals >= 4, 10, "four renewals")  # type: ignore[attr-defined]
    assert not waiting.done()
    await a.close()   # dies: its slot is not released, nobody renews it
    got = await asyncio.wait_for(waiting, 10)
    assert got.granted and got.slot == t.slot  # type: ignore[attr-defined]
    assert [v["agent"] for v in (await host_slots(b.cluster)).values()] == ["agent-b"]
    b.release(got)
    await b.close()


async def test_adopt_takes_over_a_dead_agents_slots(connect: Any) -> None:
    a = ClusterScheduler(await connect(), "agent-a", per_host=1, per_datastore=1)
    b = ClusterScheduler(await connect(), "agent-b", per_host=1, per_datastore=1)
    vm_ticket = await a.acquire_vm(HOST, "J/web-01")
    vol_ticket = await a.acquire_volume(DS, "J/urn:vol:1")
    other = await a.acquire_vm("urn:host:other", "J2/db-01")
    await a.close()   # dies holding all three
    adopted = await b.adopt(["J/web-01", "J/urn:vol:1"])
    assert sorted(t.kind for t in adopted) == ["vm", "volume"]
    slots = {k: json.loads(e.value) for k, e in (await entries(b.cluster.slots_kv)).items()}
    assert slots[vm_ticket.slot]["agent"] == "agent-b"  # type: ignore[attr-defined]
    assert slots[vol_ticket.slot]["agent"] == "agent-b"  # type: ignore[attr-defined]
    assert slots[other.slot]["agent"] == "agent-a"  # type: ignore[attr-defined]
    # the re-run asks as the dead proxy's run did: it gets the adopted slots, not new ones (there are none)
    t = await asyncio.wait_for(b.acquire_vm(HOST, "J/web-01"), 2)
    assert t in adopted
    v = await asyncio.wait_for(b.acquire_volume(DS, "J/urn:vol:1"), 2)
    assert v in adopted
    await until(lambda: t.renewals >= 4, 10, "the adopted slot renewed past slot_ttl")  # type: ignore[attr-defined]
    # the un-adopted one expired meanwhile; the adopted ones are there, mine
    slots = {k: json.loads(e.value) for k, e in (await entries(b.cluster.slots_kv)).items()}
    assert other.slot not in slots  # type: ignore[attr-defined]
    assert slots[vm_ticket.slot]["agent"] == "agent-b"  # type: ignore[attr-defined]
    b.release(t)
    for x in adopted:   # after the run: what the runner released already is ignored
        b.release(x)
    await b.drain()
    assert await entries(b.cluster.slots_kv) == {}
    await b.close()


async def test_datastore_slots_and_counts_across_agents(connect: Any) -> None:
    a = ClusterScheduler(await connect(), "agent-a", per_datastore=1)
    b = ClusterScheduler(await connect(), "agent-b", per_datastore=1)
    t = await a.acquire_volume(DS, "J/urn:vol:1")
    await a.acquire_vm(HOST, "J/web-01")
    waits: list[str] = []
    waiting = asyncio.create_task(b.acquire_volume(DS, "J/urn:vol:2", waits.append))
    assert await still_waiting(waiting)
    assert waits == [TARGET_VOLUMES_BUSY]
    await b.refresh_counts()
    assert b.pool.hosts == {HOST: 1} and b.pool.datastores == {DS: 1}
    a.release(t)
    await asyncio.wait_for(waiting, 5)
    await a.close()
    await b.close()


async def test_global_limit_is_per_agent(connect: Any) -> None:
    a = ClusterScheduler(await connect(), "agent-a", global_limit=1)
    b = ClusterScheduler(await connect(), "agent-b", global_limit=1)
    t = await a.acquire_vm("urn:host:1", "J/one")
    waits: list[str] = []
    second = asyncio.create_task(a.acquire_vm("urn:host:2", "J/two", waits.append))
    assert await asyncio.wait_for(b.acquire_vm("urn:host:3", "J/three"), 2)   # another agent's own limit
    assert await still_waiting(second)
    assert waits == [GLOBAL_LIMIT]
    a.release(t)
    await asyncio.wait_for(second, 5)
    await a.close()
    await b.close()


async def test_a_cancelled_waiter_leaves_nothing_behind(connect: Any) -> None:
    a = ClusterScheduler(await connect(), "agent-a", per_host=1)
    t = await a.acquire_vm(HOST, "J/one")
    waiting = asyncio.create_task(a.acquire_vm(HOST, "J/two"))
    assert await still_waiting(waiting)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert a.waiting() == [] and a.pool.vms_running == 1
    a.release(t)
    await a.drain()
    assert await host_slots(a.cluster) == {}
    await a.close()


async def test_vm_claims(connect: Any) -> None:
    a = ClusterScheduler(await connect(), "agent-a")
    b = ClusterScheduler(await connect(), "agent-b")
    assert await a.claim_vm("urn:vm:1", "J1") is None
    assert await b.claim_vm("urn:vm:1", "J2") == "J1"          # another job: refused, told which
    assert await b.claim_vm("urn:vm:2", "J2") is None
    await a.close()
    assert await b.claim_vm("urn:vm:1", "J1") is None           # the same job's, its proxy died: taken over
    claim = json.loads((await b.cluster.slots_kv.get(f"vm.{vm_key('urn:vm:1')}")).value)
    assert claim["agent"] == "agent-b" and claim["job"] == "J1"
    b.release_vm("urn:vm:1")
    await b.drain()
    c = ClusterScheduler(await connect(), "agent-c")
    assert await c.claim_vm("urn:vm:1", "J3") is None
    assert await c.claim_vm("urn:vm:2", "J3") == "J2"
    await b.close()
    await c.close()


def test_limits_are_checked_as_the_local_schedulers() -> None:
    with pytest.raises(SchedulerError):
        ClusterScheduler(None, "x", per_host=9)  # type: ignore[arg-type]


async def test_a_lost_connection_fails_a_waiter_after_ack_wait(connect: Any) -> None:
    cluster = await connect()
    a = ClusterScheduler(cluster, "agent-a", per_host=1)
    b = ClusterScheduler(await connect(), "agent-b", per_host=1)
    t = await a.acquire_vm("urn:host:other", "J/zero")
    held = await b.acquire_vm(HOST, "J/one")
    waits: list[str] = []
    waiting = asyncio.create_task(a.acquire_vm(HOST, "J/two", waits.append))
    assert await still_waiting(waiting)
    await cluster.nc.close()   # NATS gone for good: the waiter keeps asking, then gives up with one line
    with pytest.raises(ClusterError, match=r"^the cluster at nats://127\.0\.0\.1:\d+ does not answer: "):
        await asyncio.wait_for(waiting, 10)
    assert waits == [HOST_SOCKETS_BUSY] and a.pool.vms_running == 1 and a.waiting() == []
    a.release(t)
    await a.close()
    b.release(held)
    await b.close()


async def test_a_stalled_holder_never_takes_back_a_slot_another_agent_got(connect: Any) -> None:
    a = ClusterScheduler(await connect(), "agent-a", per_host=1)
    b = ClusterScheduler(await connect(), "agent-b", per_host=1)
    t = await a.acquire_vm(HOST, "J/one")
    other = await a.acquire_vm("urn:host:other", "J/two")
    a._renewer.cancel()   # agent-a stalls (a long GC pause, a frozen VM): nothing renews its slots
    got = await asyncio.wait_for(b.acquire_vm(HOST, "J/three"), 10)
    assert got.slot == t.slot  # type: ignore[attr-defined]
    await until(lambda: other.slot not in b._present, 10, "the other slot expired")  # type: ignore[attr-defined]
    await a._renew(t)       # agent-a wakes up: its first renewal finds the slot taken
    await a._renew(other)   # and the other one expired but free: taken again
    assert t.lost and not other.lost  # type: ignore[attr-defined]
    slots = await host_slots(a.cluster)
    assert slots[t.slot]["agent"] == "agent-b" and slots[other.slot]["agent"] == "agent-a"  # type: ignore[attr-defined]
    a.release(t)   # a lost slot's release leaves the new holder's key alone
    a.release(other)
    await a.drain()
    assert list(await host_slots(a.cluster)) == [t.slot]  # type: ignore[attr-defined]
    b.release(got)
    await a.close()
    await b.close()


HOLDER = """
import asyncio, sys
from fctui.cluster.connect import Cluster
from fctui.cluster.layout import ClusterSettings
from fctui.cluster.slots import ClusterScheduler

async def main(url):
    cluster = await Cluster.connect(url, ClusterSettings(ack_wait_s=1.0, slot_ttl_s=1.5))
    sched = ClusterScheduler(cluster, "doomed", per_host=2)
    for n in range(2):
        await sched.acquire_vm(sys.argv[2], f"J/vm{n}")
    print("held", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1]))
"""


async def test_a_killed_agents_slots_come_back(connect: Any, nats_server: Any) -> None:
    import os
    import signal
    import sys
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLDER, nats_server.url, HOST,
                                                 stdout=asyncio.subprocess.PIPE,
                                                 env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        assert await asyncio.wait_for(child.stdout.readline(), 20) == b"held\n"  # type: ignore[union-attr]
        b = ClusterScheduler(await connect(), "agent-b", per_host=2)
        waiting = asyncio.create_task(b.acquire_vm(HOST, "J2/vm"))
        assert await still_waiting(waiting)   # both slots are the live holder's
        child.send_signal(signal.SIGKILL)
        await child.wait()
        got = await asyncio.wait_for(waiting, 10)   # expired: nobody cleaned up
        assert got.granted
        b.release(got)
        await b.close()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


async def test_an_expired_slot_is_free_at_once_not_after_its_marker(connect: Any) -> None:
    a = ClusterScheduler(await connect(), "agent-a", per_host=1)
    b = ClusterScheduler(await connect(), "agent-b", per_host=1)
    t = await a.acquire_vm(HOST, "J/one")
    a._renewer.cancel()   # agent-a stalls
    await b.start()
    await until(lambda: t.slot not in b._present, 10, "the expiry seen by the watch")  # type: ignore[attr-defined]
    marker = await b.kv.get(t.slot)  # type: ignore[attr-defined]
    assert marker.value is None      # the server's expiry marker (it lives slot_ttl too), no KV delete:
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await b.kv.create(t.slot, b"{}")   # nats-py's create refuses to take its place  # type: ignore[attr-defined]
    assert await current(b.kv, t.slot) is None  # type: ignore[attr-defined]
    assert await create(b.kv, t.slot, b'{"owner": "J/two"}')  # type: ignore[attr-defined]
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await create(b.kv, t.slot, b'{"owner": "J/three"}')  # type: ignore[attr-defined]
    await a.close()
    await b.close()
