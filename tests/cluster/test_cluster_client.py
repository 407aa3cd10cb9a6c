"""ClusterClient: a machine with no agent and no VRM (a "fourth machine") sees and follows the jobs the
cluster's proxies run, and submits new ones -- against a real NATS (fixture ``nats_server``). The proxy's
side is played here through ClusterJobs on its own connection, as fctui.agent.cluster writes it."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

import pytest

from fctui.agent import AgentError
from fctui.agent.cluster_client import ClusterClient
from fctui.cluster.connect import Cluster, entries
from fctui.cluster.jobs import ClusterJobs, record_of
from fctui.cluster.layout import WORK_STREAM, WORK_SUBJECT_JOB
from fctui.jobs.cleanup import describe_leftover
from fctui.jobs.model import DiskProgress, JobRecord, VmProgress

MIB = 1 << 20
WEB = "urn:sites:1:vms:i-00000001"
DB = "urn:sites:1:vms:i-00000002"


@pytest.fixture
async def proxy(nats_server: Any) -> AsyncIterator[ClusterJobs]:
    """The job records as a proxy writes them, on a connection of its own."""
    cluster = await Cluster.connect(nats_server.url)
    yield ClusterJobs(cluster)
    await cluster.close()


@pytest.fixture
async def client(nats_server: Any) -> AsyncIterator[ClusterClient]:
    c = ClusterClient(nats_server.url)
    yield c
    await c.close()


def vm(urn: str, name: str, state: str = "queued", read: int = 0, **kw: Any) -> VmProgress:
    return VmProgress(urn=urn, name=name, host="urn:sites:1:hosts:1", kind="cbt", state=state,
                      disks=[DiskProgress(volume=f"{urn}:vol", name=f"{name}-disk1", mode="full", state=state,
                                          bytes_planned=64 * MIB, bytes_read=read)], **kw)


async def running_job(proxy: ClusterJobs, job_id: str = "20261203-120000-aa0001") -> JobRecord:
    """A job a proxy has planned: header running, one record per VM."""
    job = JobRecord(id=job_id, vrm="https://vrm.example:7443", user="ops", targets=["web01", "db01"])
    job.add_log("backup submitted: web01, db01")
    await proxy.create_job(job, {"verify": True})
    await proxy.add_vms(job.id, [vm(WEB, "web01"), vm(DB, "db01")], agent="proxy-1")

    def run(header: dict[str, Any]) -> None:
        header.update(state="running", started=header["created"])
    await proxy.update_header(job.id, run)
    return job


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise TimeoutError("condition not reached in time")
        await asyncio.sleep(0.02)


def job_events(events: list[dict[str, Any]]) -> list[JobRecord]:
    return [JobRecord.from_dict(e["job"]) for e in events if e.get("event") == "job"]


async def test_a_fourth_machine_lists_and_follows_a_job_a_proxy_runs(proxy: ClusterJobs,
                                                                      client: ClusterClient) -> None:
    job = await running_job(proxy)
    hello = await client.request("hello")
    assert hello["cluster"] == client.url and hello["running"] == [job.id] and hello["demo"] is None
    listed = (await client.request("list"))["jobs"]
    assert [(j["id"], j["state"], [v["name"] for v in j["vms"]]) for j in listed] == \
        [(job.id, "running", ["web01", "db01"])]
    assert "log" not in listed[0]
    got = JobRecord.from_dict((await client.request("get", job=job.id))["job"])
    assert [e["message"] for e in got.log] == ["backup submitted: web01, db01"]

    events: list[dict[str, Any]] = []
    follow = asyncio.create_task(client.wait(job.id, events.append))
    await until(lambda: bool(job_events(events)))
    assert job_events(events)[0].log == got.log      # the job followed comes with its log first

    # the proxy reads web01: its progress and its log lines reach the follower as they are written
    await proxy.put_vm(job.id, record_of(vm(WEB, "web01", "reading", read=32 * MIB), agent="proxy-1",
                                         log=[{"time": got.created + 1, "level": "info",
                                               "message": "web01: snapshot taken"}]))
    await until(lambda: any(j.vm(WEB).state == "reading" and j.vm(WEB).disks[0].bytes_read == 32 * MIB
                            for j in job_events(events)))
    await until(lambda: any(e.get("event") == "log" and e["message"] == "web01: snapshot taken" for e in events))

    await proxy.put_vm(job.id, record_of(vm(WEB, "web01", "done", read=64 * MIB, point_id="P1"), agent="proxy-1"))
    await proxy.put_vm(job.id, record_of(vm(DB, "db01", "failed", reason="the VRM refused the snapshot"),
                                         agent="proxy-2"))
    assert (await proxy.finish_if_done(job.id)) is not None
    final = JobRecord.from_dict(await asyncio.wait_for(follow, 10))
    assert final.state == "failed" and final.error == "db01: the VRM refused the snapshot"
    assert final.restore_points == ["P1"]
    assert events[-1] == {"event": "end", "job": job.id, "state": "failed"}
    assert (await client.request("hello"))["running"] == []


async def test_submit_writes_the_job_and_its_item_never_the_password(nats_server: Any, proxy: ClusterJobs,
                                                                     client: ClusterClient) -> None:
    secret = "S3cret-never-in-NATS"
    resp = await client.request("submit", targets=["web01", " "], vrm="https://vrm.example:7443", user="ops",
                                password=secret, verify=True, user_type=0, proxy_ip="10.0.0.5", full=True)
    job_id = resp["job"]
    header, _ = await proxy.header(job_id)   # read by the proxies' connection
    assert header["targets"] == ["web01"] and header["state"] == "queued" and header["full"] is True
    assert header["access"] == {"verify": True, "user_type": 0, "proxy_ip": "10.0.0.5"}
    assert header["log"][0]["message"] == "backup submitted: web01 (--full)"
    js = proxy.cluster.js
    item = await js.get_last_msg(WORK_STREAM, WORK_SUBJECT_JOB)
    assert item.data == b'{"job":"%s"}' % job_id.encode()
    gated = (await client.request("submit", targets=["db01"], host_snapshot_gate=True, policy="gold",
                                  business_hours="mon-fri 08:00-18:00"))["job"]
    header, _ = await proxy.header(gated)   # the job options go with the client options
    assert header["access"] == {"verify": True, "host_snapshot_gate": True, "business_hours": "mon-fri 08:00-18:00"}
    assert header["policy"] == "gold" and header["vrm"] == "" and header["user"] == ""   # the proxies' own VRM
    # the password is nowhere: no key-value entry, no work item
    stored = [e.value for kv in (proxy.cluster.jobs_kv, proxy.cluster.slots_kv, proxy.cluster.agents_kv)
              for e in (await entries(kv)).values()]
    info = await js.stream_info(WORK_STREAM)
    stored += [(await js.get_msg(WORK_STREAM, seq)).data for seq in range(info.state.first_seq, info.state.last_seq + 1)]
    assert stored and not any(secret.encode() in v for v in stored)

    for fields, why in ((dict(type="restore", restore={"point_id": "P1"}), "restores run on the local agent"),
                        (dict(demo=True), "the demo simulator lives in the local agent"),
                        (dict(targets=[]), "no VM given"),
                        (dict(user_type=5), "user_type must be 0 or 2"),
                        (dict(business_hours="someday"), "expected 'DAYS HH:MM-HH:MM'")):
        with pytest.raises(AgentError, match=why):
            await client.request("submit", **{"targets": ["web01"], **fields})
    with pytest.raises(AgentError, match="no policy service runs in a cluster"):
        await client.request("run_policy", name="gold")
    assert await client.policy_runs() == {"runs": [], "service": None}


async def test_cancel_asks_the_proxies_and_a_final_job_is_not_cancelled(proxy: ClusterJobs,
                                                                        client: ClusterClient) -> None:
    job = await running_job(proxy)
    assert (await client.request("cancel", job=job.id))["job"] == job.id
    header, _ = await proxy.header(job.id)
    assert header["cancel"] is True and header["log"][-1]["message"] == "cancel requested"
    with pytest.raises(AgentError, match="no job 'nope'"):
        await client.request("cancel", job="nope")
    with pytest.raises(AgentError, match="no job 'nope'"):
        await client.wait("nope")
    for urn, name in ((WEB, "web01"), (DB, "db01")):
        await proxy.put_vm(job.id, record_of(vm(urn, name, "cancelled")))
    assert (await proxy.finish_if_done(job.id)).state == "cancelled"
    with pytest.raises(AgentError, match=f"job {job.id} is cancelled, not running"):
        await client.request("cancel", job=job.id)


async def test_leftovers_of_ended_vms_are_listed_and_the_console_watch_sees_them_change(
        proxy: ClusterJobs, client: ClusterClient) -> None:
    job = await running_job(proxy)
    intent = {"job": job.id, "vrm": job.vrm, "user": job.user, "what": "snapshot", "vm": WEB,
              "snapshot_urn": "urn:sites:1:vms:i-00000001:snapshots:7", "time": 1.0, "last_error": "VRM busy"}
    # a running VM's intents belong to the proxy working on it: not leftovers
    await proxy.put_vm(job.id, record_of(vm(WEB, "web01", "reading"), intents={"1": intent}))
    assert (await client.request("cleanup-status")) == {"ok": True, "pending": [], "vrms": []}
    # an older job's VM ended with a resource its proxy could not remove
    old = JobRecord(id="20261202-120000-cc0003", vrm=job.vrm, user=job.user, targets=["db01"])
    await proxy.create_job(old)
    await proxy.add_vms(old.id, [vm(DB, "db01", "failed", reason="VRM down")], agent="proxy-2")
    await proxy.put_vm(old.id, record_of(vm(DB, "db01", "failed", reason="VRM down"), intents={"4": {
        "job": old.id, "vrm": job.vrm, "user": job.user, "what": "resource", "vm": DB, "volume_urn": f"{DB}:vol"}}))
    (old_row,) = (await client.request("cleanup-status"))["pending"]
    assert old_row["job"] == old.id and old_row["volume_urn"] == f"{DB}:vol"

    events: list[dict[str, Any]] = []

    async def watch() -> None:
        async for ev in client.watch():
            events.append(ev)
    watching = asyncio.create_task(watch())
    try:
        await until(lambda: len(job_events(events)) == 2)
        assert events[0] == {"event": "cleanup", "pending": [old_row]}
        await proxy.put_vm(job.id, record_of(vm(WEB, "web01", "failed", reason="cleanup failed"),
                                             intents={"1": intent}))
        await until(lambda: events[-1].get("event") == "cleanup" and len(events[-1]["pending"]) == 2)
        assert events[-1]["pending"][0] == old_row   # the older job's, kept, first
        row = events[-1]["pending"][1]
        assert row["job"] == job.id and row["snapshot_urn"] == intent["snapshot_urn"] and row["error"] == "VRM busy"
        assert describe_leftover(row, 2.0) == (f"snapshot {intent['snapshot_urn']} of job {job.id}: VRM busy "
                                               "(the cluster's proxies retry it)")
        status = await client.request("cleanup-status")
        assert status["pending"] == [old_row, row] and status["vrms"] == [(job.vrm, job.user)]

        # a job submitted while the console watches: its record and its log lines come as they are written
        other = JobRecord(id="20261203-130000-bb0002", targets=["db01"])
        other.add_log("backup submitted: db01")
        await proxy.create_job(other)
        await until(lambda: any(e.get("event") == "log" and e["job"] == other.id
                                and e["message"] == "backup submitted: db01" for e in events))
        assert any(j.id == other.id for j in job_events(events))
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)


async def test_a_client_that_comes_first_leaves_the_proxies_timings_to_them(nats_server: Any) -> None:
    """A console opened before any proxy must not fix the work consumer's ack_wait or the expiring
    buckets' TTLs with its defaults: the first proxy sets them."""
    from fctui.cluster.layout import AGENTS_BUCKET, SLOTS_BUCKET, WORK_CONSUMER, ClusterSettings, agent_key
    client = ClusterClient(nats_server.url)
    try:
        hello = await client.request("hello")
        assert hello["agents"] == [] and hello["running"] == []
        short = ClusterSettings(ack_wait_s=2.0, slot_ttl_s=3.0, agent_ttl_s=2.0)
        proxy = await Cluster.connect(nats_server.url, short)
        try:
            info = await proxy.js.consumer_info(WORK_STREAM, WORK_CONSUMER)
            assert info.config.ack_wait == 2.0
            assert (await proxy.js.stream_info(f"KV_{SLOTS_BUCKET}")).config.max_age == 3.0
            assert (await proxy.js.stream_info(f"KV_{AGENTS_BUCKET}")).config.max_age == 2.0
            await proxy.agents_kv.put(agent_key("proxy-1"), b"{}")   # its heartbeat
            assert (await client.request("hello"))["agents"] == ["proxy-1"]
        finally:
            await proxy.close()
    finally:
        await client.close()
