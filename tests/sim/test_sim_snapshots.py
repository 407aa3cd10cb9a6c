"""vrm-api.md §15 items 28-33: VM snapshots."""

from __future__ import annotations

import pytest

from fctui.sim.testing import sim_harness


async def vm_of(h, rule: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return (await h.get(h.uri(await h.edge(rule)))).json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("body,ok", [
    ({"name": "a"}, True),
    ({"name": "x" * 256, "type": "backup"}, True),
    ({"name": "c", "type": "CBTbackup", "needMemoryShot": False, "isConsistent": True}, True),
    ({"name": ""}, False),
    ({"name": "x" * 257}, False),
    ({}, False),
    ({"name": "d", "type": "cbtbackup"}, False),
    ({"name": "d", "type": "CBTBackup"}, False),
    ({"name": "d", "needMemoryShot": "yes"}, False),
    ({"name": "d", "isConsistent": 1}, False),
])
async def test_15_28_create_validation(body: dict, ok: bool) -> None:  # type: ignore[type-arg]
    async with sim_harness() as h:
        vm = await vm_of(h, "ready")
        r = await h.post(vm["uri"] + "/snapshots", body)
        if ok:
            assert r.status_code == 200, r.text
            j = r.json()
            assert {"urn", "uri", "taskUrn", "taskUri"} <= set(j)
            assert j["urn"].startswith(vm["urn"] + ":snapshots:")
        else:
            assert r.status_code == 400 and len(r.json()["errorCode"]) == 8


async def test_15_29_limits_32_normal_and_32_backup() -> None:
    async with sim_harness() as h:
        full = await vm_of(h, "snapshot-limit")
        r = await h.post(full["uri"] + "/snapshots", {"name": "one-more", "type": "CBTbackup"})
        assert r.status_code == 400 and r.json()["errorCode"]
        r = await h.post(full["uri"] + "/snapshots", {"name": "backup-too", "type": "backup"})
        assert r.status_code == 400
        # normal snapshots have their own budget of 32
        for i in range(32):
            r = await h.post(full["uri"] + "/snapshots", {"name": f"n{i}", "type": "normal"})
            assert r.status_code == 200, (i, r.text)
            await h.wait_task(r.json()["taskUri"])
        r = await h.post(full["uri"] + "/snapshots", {"name": "n33", "type": "normal"})
        assert r.status_code == 400 and r.json()["errorCode"] == "10300061"


async def test_15_30_status_lifecycle_delete_and_revert() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "ready")
        ref = (await h.post(vm["uri"] + "/snapshots", {"name": "s1"})).json()
        assert (await h.get(ref["uri"])).json()["status"] == "creating"
        await h.wait_task(ref["taskUri"])
        assert (await h.get(ref["uri"])).json()["status"] == "ready"
        # revert restores disk content
        vol = vm["vmConfig"]["disks"][0]["volumeUrn"].rsplit(":", 1)[1]
        before = (await h.client.get(f"/sim/volumes/{vol}/digest")).json()["sha256"]
        await h.client.post(f"/sim/volumes/{vol}/write", json={"blocks": 20})
        assert (await h.client.get(f"/sim/volumes/{vol}/digest")).json()["sha256"] != before
        rv = (await h.post(ref["uri"] + "/action/resumevm")).json()
        assert (await h.get(ref["uri"])).json()["status"] == "resuming"
        assert (await h.wait_task(rv["taskUri"]))["status"] == "success"
        assert (await h.get(ref["uri"])).json()["status"] == "ready"
        assert (await h.client.get(f"/sim/volumes/{vol}/digest")).json()["sha256"] == before
        # delete: deleting -> gone -> 10300109
        d = (await h.delete(ref["uri"])).json()
        assert (await h.get(ref["uri"])).json()["status"] == "deleting"
        await h.wait_task(d["taskUri"])
        r = await h.get(ref["uri"])
        assert r.status_code == 404 and r.json()["errorCode"] == "10300109"
        r = await h.delete(ref["uri"])
        assert r.json()["errorCode"] == "10300109"
        # modify is synchronous
        ref2 = (await h.post(vm["uri"] + "/snapshots", {"name": "s2"})).json()
        await h.wait_task(ref2["taskUri"])
        assert (await h.put(ref2["uri"], {"name": "renamed", "description": "d"})).status_code == 200
        got = (await h.get(ref2["uri"])).json()
        assert got["name"] == "renamed" and got["description"] == "d"


async def test_15_31_tree() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "ready")
        empty = (await h.get(vm["uri"] + "/snapshots")).json()
        assert empty["rootSnapshots"] == [] and empty["currentSnapshot"] is None
        uris = []
        for name in ("a", "b", "c"):
            ref = (await h.post(vm["uri"] + "/snapshots", {"name": name})).json()
            await h.wait_task(ref["taskUri"])
            uris.append(ref)
        tree = (await h.get(vm["uri"] + "/snapshots")).json()
        assert tree["currentSnapshot"]["urn"] == uris[-1]["urn"]
        root = tree["rootSnapshots"]
        assert len(root) == 1 and root[0]["name"] == "a"
        assert root[0]["childSnapshots"][0]["name"] == "b"
        c = root[0]["childSnapshots"][0]["childSnapshots"][0]
        assert c["name"] == "c" and c["childSnapshots"] == []
        for node in (root[0], c):
            assert {"urn", "uri", "name", "description", "createTime", "type", "status",
                    "childSnapshots"} <= set(node)
        # deleting the middle one re-parents its child
        await h.wait_task((await h.delete(uris[1]["uri"])).json()["taskUri"])
        tree = (await h.get(vm["uri"] + "/snapshots")).json()
        assert [x["name"] for x in tree["rootSnapshots"][0]["childSnapshots"]] == ["c"]


async def test_15_32_volsnapshots_detail() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "disk-independent")
        ref = (await h.post(vm["uri"] + "/snapshots", {"name": "s", "type": "CBTbackup"})).json()
        await h.wait_task(ref["taskUri"])
        d = (await h.get(ref["uri"] + "?refreshflag=true")).json()
        non_indep = [x["volumeUrn"] for x in vm["vmConfig"]["disks"] if not x["indepDisk"]]
        assert [v["volumeUrn"] for v in d["volsnapshots"]] == non_indep
        for v in d["volsnapshots"]:
            assert v["snapUuid"] and v["volCBTCreateTime"] and isinstance(v["chgID"], str)
            assert v["chgID"] == "1"
            assert {"volumeUri", "storageType", "datastoreUrn"} <= set(v)
        assert d["volumeSizeSum"] == sum(x["quantityGB"] * 1024 for x in vm["vmConfig"]["disks"]
                                         if not x["indepDisk"])
        assert {"snapProvisionSize", "memorySize", "coreNum", "type", "status"} <= set(d)
        assert d["type"] == "CBTbackup"


async def test_15_33_cbt_snapshot_needs_tools() -> None:
    async with sim_harness() as h:
        no_tools = await vm_of(h, "tools-missing")
        r = await h.post(no_tools["uri"] + "/snapshots", {"name": "x", "type": "CBTbackup"})
        assert r.status_code == 400 and r.json()["errorCode"] == "10300026"
        # a normal snapshot is fine without Tools
        r = await h.post(no_tools["uri"] + "/snapshots", {"name": "x", "type": "normal"})
        assert r.status_code == 200
        stopped = await vm_of(h, "state-stopped")
        assert stopped["status"] == "stopped" and stopped["toolsVersion"]
        r = await h.post(stopped["uri"] + "/snapshots", {"name": "x", "type": "CBTbackup"})
        assert r.status_code == 200
        assert (await h.wait_task(r.json()["taskUri"]))["status"] == "success"
        not_running = await vm_of(h, "tools-not-running")
        r = await h.post(not_running["uri"] + "/snapshots", {"name": "x", "type": "CBTbackup"})
        assert r.json()["errorCode"] == "10300026"
        for rule in ("template", "linked-clone", "state-unsupported"):
            v = await vm_of(h, rule)
            r = await h.post(v["uri"] + "/snapshots", {"name": "x"})
            assert r.status_code == 400 and r.json()["errorCode"] == "10300026", rule
