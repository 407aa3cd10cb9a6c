"""vrm-api.md §15 items 23-27: asynchronous tasks."""

from __future__ import annotations

from fctui.sim import SimConfig
from fctui.sim.testing import sim_harness


async def stopped_vm(h) -> dict:  # type: ignore[no-untyped-def,type-arg]
    vms = (await h.get(f"{h.site}/vms?status=stopped&limit=100&detail=2")).json()["vms"]
    return next(v for v in vms if not v["name"].startswith("edge-"))  # type: ignore[no-any-return]


async def test_15_23_async_ops_return_task_refs_immediately() -> None:
    async with sim_harness() as h:
        vm = await stopped_vm(h)
        r = await h.post(vm["uri"] + "/action/start")
        assert r.status_code == 200 and set(r.json()) == {"taskUrn", "taskUri"}
        assert r.json()["taskUri"] == "/service" + r.json()["taskUrn"][3:].replace(":", "/")
        # nothing happened yet: the work runs "in the background"
        assert (await h.get(vm["uri"])).json()["status"] == "starting"
        ds = vm["vmConfig"]["disks"][0]["datastoreUrn"]
        r = await h.post(f"{h.site}/volumes", {"name": "t23", "quantityGB": 1, "datastoreUrn": ds})
        assert {"urn", "uri", "taskUrn", "taskUri"} <= set(r.json())


async def test_15_24_task_progress_and_states() -> None:
    async with sim_harness() as h:
        vm = await stopped_vm(h)
        ref = (await h.post(vm["uri"] + "/action/start")).json()
        seen = []
        for _ in range(12):
            t = (await h.get(ref["taskUri"])).json()
            seen.append((t["status"], t["progress"]))
            h.advance(0.25)
        statuses = [s for s, _ in seen]
        assert statuses[0] == "waiting" and "running" in statuses and statuses[-1] == "success"
        order = {"waiting": 0, "running": 1, "success": 2}
        assert [order[s] for s in statuses] == sorted(order[s] for s in statuses)
        progress = [p for _, p in seen]
        assert progress == sorted(progress) and progress[0] == 0 and progress[-1] == 100
        assert any(0 < p < 100 for p in progress)
        t = (await h.get(ref["taskUri"])).json()
        assert int(t["finishTime"]) > int(t["startTime"]) > 0  # epoch-ms strings
        assert (await h.get(vm["uri"])).json()["status"] == "running"


async def test_15_24_time_scale_and_default_durations() -> None:
    cfg = SimConfig(time_scale=10.0, sector_of_block=128)
    assert all(v < 180 for v in cfg.task_seconds.values())
    async with sim_harness(cfg) as h:
        vm = await stopped_vm(h)
        ref = (await h.post(vm["uri"] + "/action/start")).json()
        h.advance(0.21)  # 2 s power task at 10x
        t = (await h.get(ref["taskUri"])).json()
        assert t["status"] == "success"
        # reported times keep the unscaled duration
        assert int(t["finishTime"]) - int(t["startTime"]) == 2000


async def test_15_25_failed_task_reason_and_injection() -> None:
    async with sim_harness() as h:
        vm = await stopped_vm(h)
        r = await h.client.post("/sim/faults", json={"taskType": "StartVm", "errorCode": "10300026",
                                                     "count": 1})
        assert r.status_code == 200
        ref = (await h.post(vm["uri"] + "/action/start")).json()
        t = await h.wait_task(ref["taskUri"])
        assert t["status"] == "failed" and t["reason"] == "10300026" and t["reasonDes"]
        assert not t["cancelled"]
        assert (await h.get(vm["uri"])).json()["status"] == "stopped"  # rolled back
        t2 = await h.wait_task((await h.post(vm["uri"] + "/action/start")).json()["taskUri"])
        assert t2["status"] == "success"  # count exhausted


async def test_15_26_cancel() -> None:
    async with sim_harness() as h:
        vm = await stopped_vm(h)
        start = (await h.post(vm["uri"] + "/action/start")).json()
        t = (await h.get(start["taskUri"])).json()
        assert t["cancelable"] is False
        r = await h.post(start["taskUri"] + "/cancel")
        assert r.status_code == 400 and len(r.json()["errorCode"]) == 8
        await h.wait_task(start["taskUri"])
        running = (await h.get(vm["uri"])).json()
        dest = next(x["urn"] for x in (await h.get(f"{h.site}/hosts")).json()["hosts"]
                    if x["clusterUrn"] == running["clusterUrn"] and x["urn"] != running["hostUrn"])
        mig = (await h.post(vm["uri"] + "/action/migrate", {"location": dest})).json()
        h.advance(1)
        t = (await h.get(mig["taskUri"])).json()
        assert t["status"] == "running" and t["cancelable"] is True
        assert (await h.post(mig["taskUri"] + "/cancel")).status_code == 200
        assert (await h.get(mig["taskUri"])).json()["status"] == "cancelling"
        t = await h.wait_task(mig["taskUri"], step=0.1)
        assert t["status"] == "failed" and t["cancelled"] is True and not t["cancelable"]
        after = (await h.get(vm["uri"])).json()
        assert after["hostUrn"] == running["hostUrn"] and after["status"] == "running"


async def test_15_27_tasks_queryable_and_list_filters() -> None:
    async with sim_harness() as h:
        vm = await stopped_vm(h)
        ref = (await h.post(vm["uri"] + "/action/start")).json()
        await h.wait_task(ref["taskUri"])
        h.advance(3600)  # a late poller still finds it (after logging in again)
        await h.login()
        t = (await h.get(ref["taskUri"])).json()
        assert t["status"] == "success" and t["urn"] == ref["taskUrn"]
        lst = (await h.get(f"{h.site}/tasks?limit=100")).json()
        assert ref["taskUrn"] in {x["urn"] for x in lst["tasks"]}
        by_type = (await h.get(f"{h.site}/tasks?type=StartVm")).json()["tasks"]
        assert by_type and all(x["type"] == "StartVm" for x in by_type)
        ok = (await h.get(f"{h.site}/tasks?status=success")).json()["tasks"]
        assert ref["taskUrn"] in {x["urn"] for x in ok}
        running = (await h.get(f"{h.site}/tasks?status=running")).json()["tasks"]
        assert ref["taskUrn"] not in {x["urn"] for x in running}
        other = (await h.get(f"{h.site}/tasks?user=other-admin")).json()["tasks"]
        assert other and all(x["user"] == "other-admin" for x in other)
        since = int(t["startTime"])
        late = (await h.get(f"{h.site}/tasks?startTime={since}")).json()["tasks"]
        assert ref["taskUrn"] in {x["urn"] for x in late}
        later = (await h.get(f"{h.site}/tasks?startTime={since + 1}")).json()["tasks"]
        assert ref["taskUrn"] not in {x["urn"] for x in later}
        fin = (await h.get(f"{h.site}/tasks?finishTime={int(t['finishTime'])}&cancelled=false")).json()
        assert ref["taskUrn"] in {x["urn"] for x in fin["tasks"]}
