"""ClusterJobs against a real NATS: headers, VM records, settling, watching from another connection."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from fctui.cluster.connect import Cluster, ClusterError
from fctui.cluster.jobs import ClusterJobs, VmRecordWriter, record_of
from fctui.cluster.layout import WORK_CONSUMER, WORK_STREAM, WORK_SUBJECT_JOB, WORK_SUBJECT_VM, vm_key
from fctui.jobs.model import DiskProgress, JobRecord, VmProgress

from .conftest import SHORT, until


def a_job(job_id: str = "J1", created: float | None = None) -> JobRecord:
    job = JobRecord(id=job_id, vrm="https://vrm:7443", user="backup", targets=["web-01", "db-01"])
    if created is not None:
        job.created = created
    return job


def vms(*names: str) -> list[VmProgress]:
    return [VmProgress(urn=f"urn:sites:1:vms:{n}", name=n, host="urn:sites:1:hosts:1",
                       disks=[DiskProgress(volume=f"urn:sites:1:volumes:{n}-0", bytes_planned=100)]) for n in names]


async def set_vm(jobs: ClusterJobs, job_id: str, vm: VmProgress, **extras: Any) -> None:
    await jobs.put_vm(job_id, record_of(vm, **extras))


async def test_connect_is_idempotent_and_an_unreachable_cluster_is_one_line(nats_server: Any) -> None:
    clusters = await asyncio.gather(*(Cluster.connect(nats_server.url, SHORT) for _ in range(4)))  # agents starting at once
    info = await clusters[0].js.consumer_info(WORK_STREAM, WORK_CONSUMER)
    assert info.config.ack_wait == SHORT.ack_wait_s and info.config.max_ack_pending >= 10_000
    assert (await clusters[0].slots_kv.status()).ttl == SHORT.slot_ttl_s
    assert (await clusters[0].jobs_kv.status()).history == 1
    for c in clusters:
        await c.close()
    with pytest.raises(ClusterError, match=r"^cannot reach the cluster at nats://127.0.0.1:1: "):
        await Cluster.connect("nats://127.0.0.1:1", timeout=1.0)


async def test_create_job_queues_a_job_item_and_reads_back(connect: Any) -> None:
    c = await connect()
    jobs = ClusterJobs(c)
    await jobs.create_job(a_job(), {"verify": False, "proxy_ip": "10.0.0.5"})
    with pytest.raises(ClusterError, match="exists already"):
        await jobs.create_job(a_job())
    header, _ = await jobs.header("J1")  # type: ignore[misc]
    assert header["cluster"] is True and header["cancel"] is False and header["vm_keys"] == []
    assert header["access"] == {"verify": False, "proxy_ip": "10.0.0.5"} and "vms" not in header
    sub = await c.js.pull_subscribe(WORK_SUBJECT_JOB, durable=WORK_CONSUMER, stream=WORK_STREAM)
    [msg] = await sub.fetch(1, timeout=5)
    assert json.loads(msg.data) == {"job": "J1"}
    await msg.ack()
    await jobs.add_vms("J1", vms("web-01", "db-01"), agent="agent-a")
    await jobs.add_vms("J1", vms("web-01"))   # once each
    await jobs.publish_vm_items("J1", [v.urn for v in vms("web-01", "db-01")])
    items = await sub.fetch(2, timeout=5)
    assert [json.loads(m.data)["vm"] for m in items] == ["urn:sites:1:vms:web-01", "urn:sites:1:vms:db-01"]
    assert {m.subject for m in items} == {WORK_SUBJECT_VM}
    job = await jobs.job("J1")
    assert job is not None and [v.name for v in job.vms] == ["web-01", "db-01"]
    assert job.vms[0].disks[0].bytes_planned == 100 and job.state == "queued"
    assert await jobs.job("nope") is None


async def test_concurrent_header_updates_lose_nothing(connect: Any) -> None:
    first, second = ClusterJobs(await connect()), ClusterJobs(await connect())
    await first.create_job(a_job())

    async def note(jobs: ClusterJobs, who: str, n: int) -> None:
        def add(header: dict[str, Any]) -> None:
            header.setdefault("warnings", []).append(f"{who}-{n}")
        await jobs.update_header("J1", add)

    await asyncio.gather(*(note(first, "a", n) for n in range(20)), *(note(second, "b", n) for n in range(20)))
    header, _ = await first.header("J1")  # type: ignore[misc]
    assert sorted(header["warnings"]) == sorted([f"a-{n}" for n in range(20)] + [f"b-{n}" for n in range(20)])
    with pytest.raises(ClusterError, match="no job"):
        await first.update_header("nope", lambda h: None)


async def test_finish_if_done_settles_as_a_local_run(connect: Any) -> None:
    jobs = ClusterJobs(await connect())
    await jobs.create_job(a_job())
    web, db = vms("web-01", "db-01")
    await jobs.add_vms("J1", [web, db])
    web.state, web.point_id = "done", "P-web"
    await set_vm(jobs, "J1", web, log=[{"time": time.time(), "level": "info", "message": "web-01: committed"}])
    assert await jobs.finish_if_done("J1") is None   # db-01 still queued
    db.state, db.reason = "failed", "VRM said no"
    await set_vm(jobs, "J1", db, warnings=["db-01: snapshot left for the hunter"])
    # two proxies finishing their last VMs at once: one settles it, one end line
    ends = await asyncio.gather(jobs.finish_if_done("J1"), ClusterJobs(await connect()).finish_if_done("J1"))
    assert all(j is not None and j.state == "failed" for j in ends)
    job = await jobs.job("J1")
    assert job is not None and job.error == "db-01: VRM said no" and job.restore_points == ["P-web"]
    assert job.warnings == ["db-01: snapshot left for the hunter"]
    assert [e["message"] for e in job.log] == ["web-01: committed", "job failed: db-01: VRM said no"]


@pytest.mark.parametrize("states, want", [(["done", "done"], "succeeded"), (["done", "cancelled"], "cancelled"),
                                          (["refused", "done"], "failed")])
async def test_final_state_rules(connect: Any, states: list[str], want: str) -> None:
    jobs = ClusterJobs(await connect())
    await jobs.create_job(a_job())
    records = vms("web-01", "db-01")
    await jobs.add_vms("J1", records)
    for vm, state in zip(records, states):
        vm.state = state
        await set_vm(jobs, "J1", vm)
    job = await jobs.finish_if_done("J1")
    assert job is not None and job.state == want and job.finished


async def test_jobs_oldest_first_and_cancel(connect: Any) -> None:
    jobs = ClusterJobs(await connect())
    await jobs.create_job(a_job("J-new", created=2000.0))
    await jobs.create_job(a_job("J-old", created=1000.0))
    assert [j.id for j in await jobs.jobs()] == ["J-old", "J-new"]
    header = await jobs.request_cancel("J-new")
    assert header["cancel"] is True and header["log"][-1]["message"] == "cancel requested"


async def test_chain_marks(connect: Any) -> None:
    a, b = ClusterJobs(await connect()), ClusterJobs(await connect())
    await a.mark_chain("urn:sites:1:volumes:9", "a CBT snapshot was left by a proxy that died")
    await a.mark_chain("urn:sites:1:volumes:8", "restored over")
    assert await b.chain_marks() == {"urn:sites:1:volumes:9": "a CBT snapshot was left by a proxy that died",
                                     "urn:sites:1:volumes:8": "restored over"}
    await b.clear_chain(["urn:sites:1:volumes:9", "urn:sites:1:volumes:7"])
    assert await a.chain_marks() == {"urn:sites:1:volumes:8": "restored over"}


async def test_watch_sees_another_connections_changes(connect: Any) -> None:
    watcher, writer = ClusterJobs(await connect()), ClusterJobs(await connect())
    await writer.create_job(a_job("J0", created=1.0))
    events: list[dict[str, Any]] = []

    async def follow() -> None:
        async for ev in watcher.watch():
            events.append(ev)

    task = asyncio.create_task(follow())
    try:
        await until(lambda: any(e["event"] == "job" and e["job"]["id"] == "J0" for e in events), 10, "the existing job")
        await writer.create_job(a_job())
        web = vms("web-01")[0]
        await writer.add_vms("J1", [web])
        await until(lambda: any(e["event"] == "job" and e["job"]["id"] == "J1" and e["job"]["vms"] for e in events),
                    10, "the new job with its VM")
        # a burst of progress: coalesced, the last state always arrives
        record = VmRecordWriter(writer, "J1", record_of(web, agent="agent-b"))
        for n in range(1, 41):
            web.state = "reading"
            web.disks[0].bytes_read = n
            record.set_progress(web)
            await record.flush()
        await until(lambda: any(e["event"] == "job" and e["job"]["id"] == "J1" and e["job"]["vms"]
                                and e["job"]["vms"][0]["disks"][0]["bytes_read"] == 40 for e in events),
                    10, "the last progress")
        progress = [e for e in events if e["event"] == "job" and e["job"]["id"] == "J1"]
        assert len(progress) < 20 and all("log" not in e["job"] for e in progress)
        web.state, web.point_id = "done", "P1"
        record.set_progress(web)
        await record.flush()
        await writer.finish_if_done("J1")
        end = await until(lambda: [e for e in events if e["event"] == "end"], 10, "the end event")
        assert end == [{"event": "end", "job": "J1", "state": "succeeded"}]
        last = [e for e in events if e["event"] == "job" and e["job"]["id"] == "J1"][-1]
        assert last["job"]["state"] == "succeeded" and last["job"]["restore_points"] == ["P1"]
        assert not [e for e in events if e["event"] == "end" and e["job"] == "J0"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_watch_of_one_job(connect: Any) -> None:
    watcher, writer = ClusterJobs(await connect()), ClusterJobs(await connect())
    events = [e async for e in watcher.watch("nope")]
    assert events == [{"event": "error", "error": "no job 'nope' in the cluster"}]
    await writer.create_job(a_job())
    await writer.create_job(a_job("J2"))
    web = vms("web-01")[0]
    await writer.add_vms("J1", [web])
    seen: list[dict[str, Any]] = []

    async def follow() -> None:
        async for ev in watcher.watch("J1"):
            seen.append(ev)

    task = asyncio.create_task(follow())
    await until(lambda: seen, 10, "the job's first event")
    await writer.update_header("J2", lambda h: h.update(state="running"))   # another job: not sent
    web.state = "failed"
    web.reason = "boom"
    await set_vm(writer, "J1", web)
    await writer.finish_if_done("J1")
    await asyncio.wait_for(task, 10)   # the watch of one job ends with its end
    assert {e["job"]["id"] for e in seen if e["event"] == "job"} == {"J1"}
    assert seen[-1] == {"event": "end", "job": "J1", "state": "failed"}
    again = [e async for e in watcher.watch("J1")]   # final already: its state, then its end
    assert [e["event"] for e in again] == ["job", "end"] and again[0]["job"]["error"] == "web-01: boom"


async def test_a_proxy_takes_the_timings_the_cluster_has(connect: Any) -> None:
    first = await connect(SHORT)
    later = await connect()   # production defaults: the cluster keeps the first proxy's timings
    assert later.settings.slot_ttl_s == SHORT.slot_ttl_s and later.settings.ack_wait_s == SHORT.ack_wait_s
    assert later.settings.agent_ttl_s == SHORT.agent_ttl_s and first.settings == SHORT


async def test_prune_history_keeps_the_newest_final_jobs(connect: Any) -> None:
    jobs = ClusterJobs(await connect())
    for n in range(4):
        await jobs.create_job(a_job(f"J{n}", created=1000.0 + n))
        await jobs.add_vms(f"J{n}", vms("web-01"))
    for n in range(3):   # J3 still runs: never pruned
        await jobs.update_header(f"J{n}", lambda h: h.update(state="succeeded"))
    assert await jobs.prune_history(keep=1) == 2
    assert [j.id for j in await jobs.jobs()] == ["J2", "J3"]
    assert await jobs.vm_records("J0") == {}
    assert list(await jobs.vm_records("J2")) == [vm_key("urn:sites:1:vms:web-01")]


async def test_a_nats_without_jetstream_is_told() -> None:
    from tests.servers import NatsServer, ServerUnavailable, _binary

    class PlainNats(NatsServer):
        def _args(self) -> list[str]:
            return [_binary("nats-server"), "-a", "127.0.0.1", "-p", str(self.port)]

    try:
        server = PlainNats().start()
    except ServerUnavailable as e:
        pytest.skip(f"no NATS server: {e}")
    try:
        with pytest.raises(ClusterError, match=r"has no JetStream: start nats-server with -js$"):
            await Cluster.connect(server.url)
    finally:
        server.stop()


async def test_a_watch_ends_with_one_line_when_the_connection_is_gone(connect: Any) -> None:
    cluster = await connect()
    jobs = ClusterJobs(cluster)
    await jobs.create_job(a_job())
    events: list[dict[str, Any]] = []

    async def follow() -> None:
        async for ev in jobs.watch():
            events.append(ev)

    task = asyncio.create_task(follow())
    await until(lambda: events, 10, "the first event")
    await cluster.nc.close()
    with pytest.raises(ClusterError, match=r"^lost the cluster at nats://"):
        await asyncio.wait_for(task, 10)
