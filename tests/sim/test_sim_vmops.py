"""vrm-api.md §15 items 42-47: power actions, exclusivity, volumes, VM create/delete; plus the
control API's operations by someone else, storage migration and fault injection."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fctui.sim.testing import SimHarness, sim_harness


async def vm_of(h: SimHarness, rule: str, i: int = 0) -> dict[str, Any]:
    urn = (await h.client.get("/sim/edge-cases")).json()[rule][i]
    return (await h.get(h.uri(urn))).json()  # type: ignore[no-any-return]


async def status(h: SimHarness, vm: dict[str, Any]) -> str:
    return (await h.get(vm["uri"])).json()["status"]  # type: ignore[no-any-return]


async def act(h: SimHarness, vm: dict[str, Any], action: str, body: Any = None) -> httpx.Response:
    return await h.post(f"{vm['uri']}/action/{action}", body)


async def test_15_42_power_state_rules_and_exclusion() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "ready", 0)
        for action in ("start", "resume"):
            r = await act(h, vm, action)
            assert r.status_code == 400 and r.json()["errorCode"] == "10300026", action
        assert (await act(h, vm, "stop", {"mode": "bogus"})).status_code == 400
        # pause -> resume, hibernate -> start, stop -> start, reboot
        for action, want in (("pause", "pause"), ("resume", "running"), ("hibernate", "hibernated"),
                             ("start", "running"), ("reboot", "running"), ("stop", "stopped")):
            r = await act(h, vm, action, {"mode": "force"} if action in ("stop", "reboot") else None)
            assert r.status_code == 200, (action, r.text)
            # a second state-changing request while the task runs is refused
            clash = await act(h, vm, "start")
            assert clash.status_code == 400 and clash.json()["errorCode"].startswith("103000")
            snap = await h.post(vm["uri"] + "/snapshots", {"name": "x"})
            assert snap.status_code == 400
            assert (await h.wait_task(r.json()["taskUri"]))["status"] == "success"
            assert await status(h, vm) == want, action
        assert (await h.get(vm["uri"])).json()["pvDriverStatus"] == "notRunning"
        r = await act(h, vm, "start")
        await h.wait_task(r.json()["taskUri"])
        # the guest boots: Tools start, and run boot_seconds later
        assert (await h.get(vm["uri"])).json()["pvDriverStatus"] == "starting"
        h.advance(h.sim.config.boot_seconds)
        assert (await h.get(vm["uri"])).json()["pvDriverStatus"] == "running"
        tpl = (await h.get(f"{h.site}/vms?isTemplate=true&limit=1")).json()["vms"][0]
        assert (await act(h, tpl, "start")).status_code == 400


async def test_15_43_attach_detach() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "ready", 0)
        ds = vm["vmConfig"]["disks"][0]["datastoreUrn"]
        new = (await h.post(f"{h.site}/volumes", {"name": "data1", "quantityGB": 1, "datastoreUrn": ds})).json()
        await h.wait_task(new["taskUri"])
        r = await act(h, vm, "attachvol", {"volUrn": new["urn"], "sequenceNum": 1, "pciType": "VIRTIO"})
        assert r.status_code == 400  # slot 1 taken on that bus
        assert (await act(h, vm, "attachvol", {"volUrn": new["urn"], "sequenceNum": 61})).status_code == 400
        r = await act(h, vm, "attachvol", {"volUrn": new["urn"], "pciType": "VIRTIO"})
        assert r.status_code == 200
        await h.wait_task(r.json()["taskUri"])
        disks = (await h.get(vm["uri"])).json()["vmConfig"]["disks"]
        mine = next(d for d in disks if d["volumeUrn"] == new["urn"])
        assert mine["sequenceNum"] == 2 and mine["quantityGB"] == 1
        vol = (await h.get(new["uri"])).json()
        assert vol["bindToVm"] == 3
        owner = (await h.get(f"{h.site}/vms?scope={new['urn']}&detail=0")).json()["vms"]
        assert [v["urn"] for v in owner] == [vm["urn"]]
        other = await vm_of(h, "ready", 1)
        assert (await act(h, other, "attachvol", {"volUrn": new["urn"]})).status_code == 400
        r = await act(h, vm, "detachvol", {"volUrn": new["urn"]})
        await h.wait_task(r.json()["taskUri"])
        assert new["urn"] not in {d["volumeUrn"] for d in (await h.get(vm["uri"])).json()["vmConfig"]["disks"]}
        assert (await h.get(f"{h.site}/vms?scope={new['urn']}&detail=0")).json()["vms"] == []
        hib = await vm_of(h, "state-hibernated")
        assert (await act(h, hib, "attachvol", {"volUrn": new["urn"]})).json()["errorCode"] == "10300026"


async def test_15_44_create_volume_space_and_expand_mb() -> None:
    async with sim_harness() as h:
        dss = (await h.get(f"{h.site}/datastores")).json()["datastores"]
        ds = next(d for d in dss if d["storageType"] == "NAS" and d["freeSizeGB"] > 100)
        r = await h.post(f"{h.site}/volumes", {"name": "v1", "quantityGB": 20, "datastoreUrn": ds["urn"],
                                               "type": "normal", "isThin": True, "indepDisk": False,
                                               "persistentDisk": True})
        assert r.status_code == 200
        await h.wait_task(r.json()["taskUri"])
        vol = (await h.get(r.json()["uri"])).json()
        assert vol["quantityGB"] == 20 and vol["status"] == "USE" and vol["datastoreUrn"] == ds["urn"]
        after = (await h.get(ds["uri"])).json()
        assert after["freeSizeGB"] == ds["freeSizeGB"] - 20
        too_big = await h.post(f"{h.site}/volumes", {"name": "big", "quantityGB": after["freeSizeGB"] + 1,
                                                     "datastoreUrn": ds["urn"]})
        assert too_big.status_code == 400
        assert (await h.post(f"{h.site}/volumes", {"name": "x", "quantityGB": 0, "datastoreUrn": ds["urn"]})).status_code == 400
        # expandVol takes MB
        e = await h.post(vol["uri"] + "/action/expandVol", {"size": 30 * 1024})
        assert e.status_code == 200
        await h.wait_task(e.json()["taskUri"])
        assert (await h.get(vol["uri"])).json()["quantityGB"] == 30
        assert (await h.post(vol["uri"] + "/action/expandVol", {"size": 1024})).status_code == 400
        # modify (synchronous) and delete
        assert (await h.put(vol["uri"], {"name": "renamed"})).status_code == 200
        assert (await h.get(vol["uri"])).json()["name"] == "renamed"
        d = await h.delete(vol["uri"])
        await h.wait_task(d.json()["taskUri"])
        r = await h.get(vol["uri"])
        assert r.status_code == 404 and r.json()["errorCode"] == "10420004"


async def test_15_45_create_vm_from_existing_volumes() -> None:
    async with sim_harness() as h:
        cl = (await h.get(f"{h.site}/clusters")).json()["clusters"][0]
        ds = next(d for d in (await h.get(f"{h.site}/datastores")).json()["datastores"] if d["storageType"] == "NAS")
        vols = []
        for i in range(2):
            r = (await h.post(f"{h.site}/volumes", {"name": f"restored-{i}", "quantityGB": 1, "datastoreUrn": ds["urn"]})).json()
            await h.wait_task(r["taskUri"])
            vols.append(r["urn"])
        for auto, want in ((False, "stopped"), (True, "running")):
            body = {"name": f"restored-vm-{auto}", "location": cl["urn"], "autoBoot": auto,
                    "osOptions": {"osType": "Linux", "osVersion": 10121},
                    "vmConfig": {"cpu": {"quantity": 2}, "memory": {"quantityMB": 2048},
                                 "disks": [{"volumeUrn": vols[0] if not auto else vols[1], "sequenceNum": 1,
                                            "pciType": "VIRTIO"}]}}
            r = await h.post(f"{h.site}/vms", body)
            assert r.status_code == 200, r.text
            ref = r.json()
            assert {"urn", "uri", "taskUrn", "taskUri"} <= set(ref)
            assert (await h.get(ref["uri"])).json()["status"] == "creating"
            await h.wait_task(ref["taskUri"])
            vm = (await h.get(ref["uri"])).json()
            assert vm["status"] == want and vm["vmConfig"]["disks"][0]["volumeUrn"] == body["vmConfig"]["disks"][0]["volumeUrn"]
            assert vm["osOptions"]["osVersion"] == 10121
        # an attached volume cannot be used again
        body["name"] = "again"
        assert (await h.post(f"{h.site}/vms", body)).status_code == 400
        assert (await h.post(f"{h.site}/vms", {"name": "x", "location": "urn:nope"})).status_code == 400


async def test_15_46_delete_vm_reserve_disks() -> None:
    async with sim_harness() as h:
        for keep in ("1", "0"):
            vm = (await h.get(f"{h.site}/vms?status=stopped&limit=100&detail=2")).json()["vms"]
            vm = next(v for v in vm if not v["name"].startswith("edge-"))
            vol_uris = [d["volumeUri"] for d in vm["vmConfig"]["disks"]]
            r = await h.delete(vm["uri"] + f"?isReserveDisks={keep}")
            assert r.status_code == 200
            await h.wait_task(r.json()["taskUri"])
            assert (await h.get(vm["uri"])).status_code == 404
            for vu in vol_uris:
                got = await h.get(vu)
                if keep == "1":
                    assert got.status_code == 200 and got.json()["bindToVm"] == 2
                else:
                    assert got.status_code == 404
        assert (await h.delete(vm["uri"] + "?isReserveDisks=7")).status_code in (400, 404)


async def test_15_47_delete_with_snapshots_or_resources_is_refused() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "leftover-backup-snapshot")
        await h.wait_task((await act(h, vm, "stop", {"mode": "force"})).json()["taskUri"])
        r = await h.delete(vm["uri"] + "?isReserveDisks=0")
        assert r.status_code == 400 and r.json()["errorCode"] == "10300153"
        assert (await h.get(vm["uri"])).status_code == 200
        # a volume under a backup resource cannot be deleted (after a detach attempt too)
        ds = vm["vmConfig"]["disks"][0]["datastoreUrn"]
        new = (await h.post(f"{h.site}/volumes", {"name": "t", "quantityGB": 1, "datastoreUrn": ds})).json()
        await h.wait_task(new["taskUri"])
        prep = (await h.post(new["uri"] + "/backupresources", {"ip": "10.0.0.5", "taskType": "RestoreVol"})).json()
        r = await h.delete(new["uri"])
        assert r.status_code == 400 and r.json()["errorCode"] == "10420005"
        # attached volume: refused too
        attached = vm["vmConfig"]["disks"][0]["volumeUri"]
        assert (await h.delete(attached)).json()["errorCode"] == "10420009"
        assert prep["taskUri"]


async def test_control_operations_by_someone_else_and_storage_migration() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "ready", 0)
        vid = vm["urn"].rsplit(":", 1)[1]
        r = await h.client.post(f"/sim/vms/{vid}/operations", json={"op": "migrate"})
        assert r.status_code == 200
        t = (await h.get(r.json()["taskUri"])).json()
        assert t["user"] == "other-admin" and t["type"] == "MigrateVm"
        assert await status(h, vm) == "migrating"
        assert (await h.post(vm["uri"] + "/snapshots", {"name": "x"})).status_code == 400
        await h.wait_task(r.json()["taskUri"])
        assert (await h.get(vm["uri"])).json()["hostUrn"] != vm["hostUrn"]
        r = await h.client.post(f"/sim/vms/{vid}/storage-migration", json={"action": "start"})
        assert r.status_code == 200
        h.advance(600)
        assert (await h.get(r.json()["taskUri"])).json()["status"] == "running"  # until stopped
        await h.login()
        assert (await h.post(vm["uri"] + "/snapshots", {"name": "x"})).status_code == 400
        stop = await h.client.post(f"/sim/vms/{vid}/storage-migration", json={"action": "stop"})
        assert stop.status_code == 200
        assert (await h.get(r.json()["taskUri"])).json()["status"] == "success"
        assert (await h.post(vm["uri"] + "/snapshots", {"name": "x"})).status_code == 200
        for op in ("expand", "power-off"):
            await h.wait_task(
                (await h.get(f"{h.site}/tasks?limit=1")).json()["tasks"][0]["uri"])
            r = await h.client.post(f"/sim/vms/{vid}/operations", json={"op": op})
            assert r.status_code == 200, r.text
            await h.wait_task(r.json()["taskUri"])
        assert await status(h, vm) == "stopped"
        r = await h.client.post(f"/sim/vms/{vid}/operations", json={"op": "power-on"})
        await h.wait_task(r.json()["taskUri"])
        assert await status(h, vm) == "running"
        assert (await h.client.post(f"/sim/vms/{vid}/operations", json={"op": "dance"})).status_code == 400


async def test_fault_injection_status_count_probability_latency_drop() -> None:
    async with sim_harness() as h:
        await h.client.post("/sim/faults", json={"path": "/clusters$", "method": "GET", "status": 503,
                                                 "errorCode": "10000009", "count": 2})
        for _ in range(2):
            r = await h.get(f"{h.site}/clusters")
            assert r.status_code == 503 and r.json()["errorCode"] == "10000009"
        assert (await h.get(f"{h.site}/clusters")).status_code == 200
        assert (await h.get(f"{h.site}/hosts")).status_code == 200  # other paths untouched
        await h.client.post("/sim/faults", json={"path": "/hosts$", "status": 500, "probability": 0.0})
        assert (await h.get(f"{h.site}/hosts")).status_code == 200
        await h.client.post("/sim/faults", json={"path": "/datastores$", "drop": True, "count": 1})
        with pytest.raises(httpx.TransportError):
            await h.get(f"{h.site}/datastores")
        assert (await h.get(f"{h.site}/datastores")).status_code == 200
        assert (await h.client.post("/sim/faults", json={"path": "("})).status_code == 400
        assert (await h.client.delete("/sim/faults")).status_code == 200
        assert (await h.client.get("/sim/faults")).json()["faults"] == []
        st = (await h.client.get("/sim/stats")).json()
        assert st["requests"] > 0 and "liveSnapshotsPerVm" in st


async def test_control_clock_and_hosts_ground_truth() -> None:
    async with sim_harness() as h:
        hosts = (await h.client.get("/sim/hosts")).json()["hosts"]
        classes = {x["perfClass"] for x in hosts}
        assert classes == {"fast", "ordinary", "slow"}
        vm = await vm_of(h, "ready", 1)
        ref = (await h.post(vm["uri"] + "/snapshots", {"name": "p"})).json()
        r = await h.client.post("/sim/clock/advance", json={"seconds": 30})
        assert r.status_code == 200
        t = (await h.get(ref["taskUri"])).json()
        assert t["status"] == "success"
        pauses = (await h.client.get("/sim/hosts")).json()["pauses"]
        assert pauses[-1]["vm"] == vm["urn"]
        observed = (int(t["finishTime"]) - int(t["startTime"])) / 1000
        # the snapshot task lasts exactly the drawn pause (no overhead by default)
        assert h.sim.config.task_seconds["snapshot_overhead"] == 0.0
        assert abs(observed - pauses[-1]["pause_s"]) < 0.01
        assert (await h.client.post("/sim/clock/advance", json={"seconds": -1})).status_code == 400
