"""vrm-api.md §15 items 34-41: CBT, getcbt, guest writes, backup resources and the data endpoint;
plus disk-content properties (point-in-time reads, digests, sparse restore)."""

from __future__ import annotations

from typing import Any

import pytest

from fctui.sim import SimConfig
from fctui.sim.ops import decode_bitmap
from fctui.sim.testing import SimHarness, sim_harness

IP = "10.0.0.5"  # the requester's address: mandatory in a prepare (vrm-api.md §16)


async def vm_of(h: SimHarness, rule: str, i: int = 0) -> dict[str, Any]:
    urn = (await h.client.get("/sim/edge-cases")).json()[rule][i]
    return (await h.get(h.uri(urn))).json()  # type: ignore[no-any-return]


async def cbt_snapshot(h: SimHarness, vm: dict[str, Any], name: str = "s") -> dict[str, Any]:
    ref = (await h.post(vm["uri"] + "/snapshots", {"name": name, "type": "CBTbackup"})).json()
    assert "taskUri" in ref, ref
    assert (await h.wait_task(ref["taskUri"]))["status"] == "success"
    return (await h.get(ref["uri"])).json()  # type: ignore[no-any-return]


def vol_id(urn: str) -> str:
    return urn.rsplit(":", 1)[1]


async def getcbt(h: SimHarness, vs: dict[str, Any], chg: str, **extra: Any) -> dict[str, Any]:
    body = {"type": "DiffBitmapAndBit1Num", "snapUuid": vs["snapUuid"],
            "volCBTCreateTime": vs["volCBTCreateTime"], "chgID": chg, **extra}
    r = await h.post(vs["volumeUri"] + "/getcbt", body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def changed(res: dict[str, Any], start: int = 0) -> list[int]:
    return decode_bitmap(res["bitMap"], start, res["bitNum"])


async def test_15_34_chgid_and_cbt_create_time() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "ready", 1)
        s1 = await cbt_snapshot(h, vm, "a")
        h.advance(10)
        s2 = await cbt_snapshot(h, vm, "b")
        for a, b in zip(s1["volsnapshots"], s2["volsnapshots"]):
            assert int(b["chgID"]) == int(a["chgID"]) + 1
            assert a["volCBTCreateTime"] == b["volCBTCreateTime"]
        # normal snapshots do not advance the chain
        ref = (await h.post(vm["uri"] + "/snapshots", {"name": "n"})).json()
        await h.wait_task(ref["taskUri"])
        s3 = await cbt_snapshot(h, vm, "c")
        assert [int(x["chgID"]) for x in s3["volsnapshots"]] == [3] * len(s3["volsnapshots"])
        # host reboot re-initialises CBT: chgID restarts at 1 with a new volCBTCreateTime
        r = await h.client.post(f"/sim/vms/{vol_id(vm['urn'])}/events", json={"event": "host-reboot"})
        assert r.status_code == 200
        s4 = await cbt_snapshot(h, vm, "d")
        for old, new in zip(s3["volsnapshots"], s4["volsnapshots"]):
            assert new["chgID"] == "1" and new["volCBTCreateTime"] != old["volCBTCreateTime"]


async def test_15_35_getcbt_bitmaps_match_writes() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "ready", 0)
        s1 = await cbt_snapshot(h, vm, "full")
        vs1 = s1["volsnapshots"][0]
        full = await getcbt(h, vs1, "0")
        assert full["sectorOfBlock"] == 128 and full["bitNum"] == 1024 ** 3 // (128 * 512)
        assert 0 < full["bit1Num"] < full["bitNum"]  # never-written blocks are 0 even for full
        assert len(full["bitMap"]) == (full["bitNum"] + 3) // 4
        assert len(changed(full)) == full["bit1Num"]
        assert (await getcbt(h, vs1, ""))["bit1Num"] == full["bit1Num"]
        # write known ranges, take the next CBT snapshot
        vid = vol_id(vs1["volumeUrn"])
        ranges = [[3, 2], [100, 5], [16383, 1]]
        r = await h.client.post(f"/sim/volumes/{vid}/write", json={"ranges": ranges})
        assert r.json()["written"] == 8
        s2 = await cbt_snapshot(h, vm, "incr")
        vs2 = s2["volsnapshots"][0]
        inc = await getcbt(h, vs2, vs1["chgID"])
        assert changed(inc) == [3, 4, 100, 101, 102, 103, 104, 16383] and inc["bit1Num"] == 8
        assert (await getcbt(h, vs2, vs2["chgID"]))["bit1Num"] == 0  # current chgID: nothing
        # the low bit of a hex digit is the lowest block: blocks 3,4 -> digits "8","1"
        assert inc["bitMap"][0:2] == "81"
        # windows: startBlock/blockNum multiples of 8
        win = await getcbt(h, vs2, vs1["chgID"], startBlock=96, blockNum=16)
        assert win["bitNum"] == 16 and changed(win, 96) == [100, 101, 102, 103, 104]
        tail = await getcbt(h, vs2, vs1["chgID"], startBlock=16376, blockNum=1024)
        assert tail["bitNum"] == 8 and changed(tail, 16376) == [16383]
        zero = await getcbt(h, vs2, vs1["chgID"], startBlock=0, blockNum=0)
        assert zero["bitNum"] == 0 and zero["bit1Num"] == 0
        count_only = await getcbt(h, vs2, vs1["chgID"], type="DiffBitmapBit1Num")
        assert count_only["bit1Num"] == 8
        # full bitmap of the second snapshot includes the new blocks
        full2 = await getcbt(h, vs2, "0")
        assert set(changed(full)) | {3, 4, 100, 101, 102, 103, 104, 16383} == set(changed(full2))
        # validation
        base = {"type": "DiffBitmapAndBit1Num", "snapUuid": vs2["snapUuid"],
                "volCBTCreateTime": vs2["volCBTCreateTime"], "chgID": "1"}
        bad_bodies = [
            ({**base, "startBlock": 3, "blockNum": 8}, None),
            ({**base, "startBlock": 0, "blockNum": 12}, None),
            ({k: v for k, v in base.items() if k != "volCBTCreateTime"}, None),
            ({**base, "volCBTCreateTime": "2001-01-01 00:00:00"}, None),
            ({k: v for k, v in base.items() if k != "snapUuid"}, "10430041"),
            ({**base, "chgID": "99"}, None),
            ({**base, "type": "Whatever"}, None),
        ]
        for body, code in bad_bodies:
            r = await h.post(vs2["volumeUri"] + "/getcbt", body)
            assert r.status_code == 400, body
            if code:
                assert r.json()["errorCode"] == code


async def test_15_35_snap_uuid_optional_when_configured() -> None:
    async with sim_harness(SimConfig(require_snap_uuid=False, sector_of_block=128)) as h:
        vm = await vm_of(h, "ready", 0)
        s1 = await cbt_snapshot(h, vm)
        vs = s1["volsnapshots"][0]
        await h.client.post(f"/sim/volumes/{vol_id(vs['volumeUrn'])}/write", json={"ranges": [[8, 8]]})
        r = await h.post(vs["volumeUri"] + "/getcbt", {
            "type": "DiffBitmapAndBit1Num", "volCBTCreateTime": vs["volCBTCreateTime"],
            "chgID": vs["chgID"]})
        assert r.status_code == 200 and r.json()["bit1Num"] == 8  # live volume since the snapshot


async def test_15_36_guest_writes_api_and_timer() -> None:
    cfg = SimConfig(guest_write_rate=2.0, sector_of_block=128)
    async with sim_harness(cfg) as h:
        vm = await vm_of(h, "ready", 0)
        s1 = await cbt_snapshot(h, vm, "a")
        vs1 = s1["volsnapshots"][0]
        h.advance(10)  # about 20 blocks of background writes per running VM
        s2 = await cbt_snapshot(h, vm, "b")
        inc = await getcbt(h, s2["volsnapshots"][0], vs1["chgID"])
        assert 10 <= inc["bit1Num"] <= 40
        r = await h.client.post(f"/sim/volumes/{vol_id(vs1['volumeUrn'])}/write", json={"blocks": 7})
        assert r.json()["written"] == 7
        assert (await h.client.post("/sim/volumes/1/write", json={"ranges": "x"})).status_code in (400, 404)


@pytest.mark.parametrize("body,code", [
    ({"ip": IP, "taskType": "cbtbackup"}, "10000003"),
    ({"ip": IP, "taskType": "CBTBackup", "transMode": "tcp"}, "10000003"),
    ({"ip": IP, "taskType": "CBTBackup", "delay": 59}, "10000003"),
    ({"ip": IP, "taskType": "CBTBackup", "delay": 7201}, "10000003"),
    ({"ip": IP, "taskType": "CBTBackup"}, "10000003"),  # snapUrn2 missing
    ({"ip": IP, "taskType": "BackupVol", "snapUrn2": "SNAP:999999"}, "10300109"),
])
async def test_15_37_prepare_validation(body: dict[str, Any], code: str) -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "ready", 0)
        s = await cbt_snapshot(h, vm)
        if body.get("snapUrn2") == "SNAP:999999":
            body = {**body, "snapUrn2": vm["urn"] + ":snapshots:999999"}
        r = await h.post(s["volsnapshots"][0]["volumeUri"] + "/backupresources", body)
        assert r.status_code == 400 and r.json()["errorCode"] == code


async def prepare(h: SimHarness, vol_uri: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    r = await h.post(vol_uri + "/backupresources", body)
    assert r.status_code == 200, r.text
    ref = r.json()
    return f"{vol_uri}/backupresources/{ref['taskUri'].rsplit('/', 1)[1]}", ref


async def test_15_38_resource_query_fields() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "ready", 0)
        s = await cbt_snapshot(h, vm)
        vs = s["volsnapshots"][0]
        for task_type in ("CBTBackup", "BackupVol", "SANBackup"):
            uri, ref = await prepare(h, vs["volumeUri"], {
                "taskType": task_type, "snapUrn2": s["urn"], "delay": 600, "transMode": "lanssl",
                "ip": "10.0.0.9"})
            first = (await h.get(uri)).json()
            assert first["status"] in ("waiting", "running")
            assert first["taskUri"] == ref["taskUri"] and first["taskUrn"] == ref["taskUrn"]
            statuses = {first["status"]}
            for _ in range(6):
                h.advance(0.25)
                statuses.add((await h.get(uri)).json()["status"])
            done = (await h.get(uri)).json()
            assert done["status"] == "success" and "running" in statuses
            for k in ("hostIP", "hostPort", "targetFile", "token", "resourceUrl", "caCert", "urn", "uri"):
                assert k in done, k
            assert done["hostIP"] and done["hostPort"] and done["token"] and done["targetFile"]
            assert done["resourceUrl"].startswith("http://vrm.sim/")
            assert (await h.wait_task(ref["taskUri"]))["status"] == "success"
            await h.delete(uri)
            h.advance(2)


async def test_15_39_one_per_volume_eight_per_host_expiry_extend_release() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "ready", 1)
        s = await cbt_snapshot(h, vm)
        vol = s["volsnapshots"][0]["volumeUri"]
        uri, _ = await prepare(h, vol, {"ip": IP, "taskType": "CBTBackup", "snapUrn2": s["urn"], "delay": 120})
        r = await h.post(vol + "/backupresources", {"ip": IP, "taskType": "CBTBackup", "snapUrn2": s["urn"]})
        assert r.status_code == 400 and r.json()["errorCode"] == "10300413"
        h.advance(2)
        # extend: remaining + delay <= 7200
        assert (await h.put(uri, {"delay": 7200})).status_code == 400
        assert (await h.put(uri, {"delay": 600})).status_code == 200
        h.advance(600)
        assert (await h.get(uri)).json()["status"] == "success"  # extended past the first 120 s
        assert (await h.client.get("/sim/stats")).json()["resourcesExpired"] == 0
        h.advance(200)
        r = await h.get(uri)
        assert r.status_code == 404  # expired
        assert (await h.client.get("/sim/stats")).json()["resourcesExpired"] == 1
        # release is asynchronous: visible for a short while
        uri, _ = await prepare(h, vol, {"ip": IP, "taskType": "CBTBackup", "snapUrn2": s["urn"]})
        h.advance(2)
        assert (await h.delete(uri)).status_code == 200
        assert (await h.get(uri)).status_code == 200
        r = await h.post(vol + "/backupresources", {"ip": IP, "taskType": "CBTBackup", "snapUrn2": s["urn"]})
        assert r.json()["errorCode"] == "10300413"  # not gone yet
        h.advance(2)
        assert (await h.get(uri)).status_code == 404
        # at most 8 per host: stopped VMs with Tools on the same host
        host = vm["hostUrn"]
        vols = []
        for v in (await h.get(f"{h.site}/vms?scope={host}&limit=100&detail=2")).json()["vms"]:
            if v["status"] in ("running", "stopped") and v["toolsVersion"] and not v["isLinkClone"]:
                for d in v["vmConfig"]["disks"]:
                    if not d["indepDisk"] and d["pciType"] != "IDE" and d["type"] == "normal":
                        vols.append(d["volumeUri"])
        assert len(vols) >= 9
        made = 0
        for vu in vols[:9]:
            r = await h.post(vu + "/backupresources", {"ip": IP, "taskType": "RestoreVol"})
            if made < 8:
                assert r.status_code == 200, r.text
                made += 1
            else:
                assert r.status_code == 400 and r.json()["errorCode"] == "10300412"
        st = (await h.client.get("/sim/stats")).json()
        assert st["resourcesPerHost"][host] == 8 and st["maxResourcesPerHost"][host] == 8
        assert st["resourcesRefusedPerHost"] == {host: 1}


async def test_15_40_resource_blocks_disk_operations() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "ready", 1)
        s = await cbt_snapshot(h, vm)
        vs = s["volsnapshots"][0]
        uri, _ = await prepare(h, vs["volumeUri"], {"ip": IP, "taskType": "CBTBackup", "snapUrn2": s["urn"]})
        h.advance(2)
        r = await h.post(vm["uri"] + "/snapshots", {"name": "x", "type": "CBTbackup"})
        assert r.status_code == 400 and r.json()["errorCode"] == "10300062"
        assert (await h.post(vs["volumeUri"] + "/action/expandVol", {"size": 4096})).status_code == 400
        ds = vm["vmConfig"]["disks"][0]["datastoreUrn"]
        assert (await h.post(vs["volumeUri"] + "/action/migratevol", {"datastoreUrn": ds})).status_code == 400
        assert (await h.post(vm["uri"] + "/action/detachvol", {"volUrn": vs["volumeUrn"]})).status_code == 400
        new = (await h.post(f"{h.site}/volumes", {"name": "extra", "quantityGB": 1, "datastoreUrn": ds})).json()
        await h.wait_task(new["taskUri"])
        r = await h.post(vm["uri"] + "/action/attachvol", {"volUrn": new["urn"]})
        assert r.status_code == 400 and r.json()["errorCode"] == "10300062"
        # the snapshot in use cannot be deleted either
        assert (await h.delete(s["uri"])).status_code == 400
        await h.delete(uri)
        h.advance(2)
        r = await h.post(vm["uri"] + "/action/attachvol", {"volUrn": new["urn"]})
        assert r.status_code == 200


async def test_15_41_data_endpoint_point_in_time_and_restore() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "ready", 0)
        s = await cbt_snapshot(h, vm)
        vs = s["volsnapshots"][0]
        vid = vol_id(vs["volumeUrn"])
        bs = 128 * 512
        uri, _ = await prepare(h, vs["volumeUri"], {"ip": IP, "taskType": "CBTBackup", "snapUrn2": s["urn"]})
        r = await h.get(uri)
        assert r.json()["resourceUrl"] == ""  # not ready yet
        h.advance(2)
        res = (await h.get(uri)).json()
        url, tok = res["resourceUrl"], res["token"]
        full = await getcbt(h, vs, "0", startBlock=0, blockNum=1024)
        blocks = changed(full)[:6]
        hdr = {"X-Resource-Token": tok, "Range": f"bytes={blocks[0] * bs}-{(blocks[0] + 1) * bs - 1}"}
        before = (await h.client.get(url, headers=hdr)).content
        # later guest writes do not change what the snapshot serves
        w = await h.client.post(f"/sim/volumes/{vid}/write", json={"ranges": [[0, 1024]]})
        assert w.json()["written"] == 1024
        assert (await h.client.get(url, headers=hdr)).content == before
        got: dict[int, bytes] = {}
        for b in blocks:
            rr = await h.client.get(url, headers={"X-Resource-Token": tok,
                                                  "Range": f"bytes={b * bs}-{(b + 1) * bs - 1}"})
            assert rr.status_code == 206 and len(rr.content) == bs
            assert rr.headers["content-range"] == f"bytes {b * bs}-{(b + 1) * bs - 1}/{1024 ** 3}"
            assert rr.content != bytes(bs)
            got[b] = rr.content
        unwritten = next(b for b in range(1024) if b not in set(changed(full)))
        rr = await h.client.get(url, headers={"X-Resource-Token": tok,
                                              "Range": f"bytes={unwritten * bs}-{unwritten * bs + 99}"})
        assert rr.content == bytes(100)
        # wrong or missing token, unknown resource
        assert (await h.client.get(url, headers={"X-Resource-Token": "nope"})).status_code == 403
        assert (await h.client.get(url)).status_code == 403
        assert (await h.client.get(url.rsplit("/", 1)[0] + "/424242",
                                   headers={"X-Resource-Token": tok})).status_code == 404
        # writes are refused on a backup resource
        assert (await h.client.put(url, content=b"x", headers={"X-Resource-Token": tok})).status_code == 403
        await h.delete(uri)
        assert (await h.client.get(url, headers={"X-Resource-Token": tok, "Range": "bytes=0-9"})).status_code == 404

        # restore the captured blocks into a fresh volume through a RestoreVol resource
        ds = vm["vmConfig"]["disks"][0]["datastoreUrn"]
        new = (await h.post(f"{h.site}/volumes", {"name": "restored", "quantityGB": 1, "datastoreUrn": ds})).json()
        await h.wait_task(new["taskUri"])
        ruri, _ = await prepare(h, new["uri"], {"ip": IP, "taskType": "RestoreVol"})
        h.advance(2)
        rres = (await h.get(ruri)).json()
        for b, data in got.items():
            w = await h.client.put(rres["resourceUrl"], content=data, headers={
                "X-Resource-Token": rres["token"], "Content-Range": f"bytes {b * bs}-{(b + 1) * bs - 1}/{1024 ** 3}"})
            assert w.status_code == 204
        # zeros stay sparse; a mismatched Content-Range is refused
        w = await h.client.put(rres["resourceUrl"], content=bytes(bs), headers={
            "X-Resource-Token": rres["token"],
            "Content-Range": f"bytes {unwritten * bs}-{(unwritten + 1) * bs - 1}/{1024 ** 3}"})
        assert w.status_code == 204
        w = await h.client.put(rres["resourceUrl"], content=b"abc", headers={
            "X-Resource-Token": rres["token"], "Content-Range": "bytes 0-9/100"})
        assert w.status_code == 400
        for b, data in got.items():
            rr = await h.client.get(rres["resourceUrl"], headers={
                "X-Resource-Token": rres["token"], "Range": f"bytes={b * bs}-{(b + 1) * bs - 1}"})
            assert rr.content == data
        sim_vol = h.sim.volumes[int(vol_id(new["urn"]))]
        assert sorted(sim_vol.content.live.overlay) == sorted(got)
        # generated bytes are recognised: the overlay keeps keys, not copies
        assert all(isinstance(c, int) for c, _ in sim_vol.content.live.overlay.values())


async def test_written_blocks_round_trip_restores_identical_volume() -> None:
    # a client reads only the blocks getcbt reports (chgID "0") and writes them into a fresh
    # volume: unwritten blocks are zeros on both sides, so the digests must match
    async with sim_harness(SimConfig(sector_of_block=128, edge_fill=0.02)) as h:
        vm = await vm_of(h, "ready", 0)
        s = await cbt_snapshot(h, vm)
        vs = s["volsnapshots"][0]
        vid = vol_id(vs["volumeUrn"])
        bs = 128 * 512
        want = (await h.client.get(f"/sim/volumes/{vid}/digest?snapUrn={s['urn']}")).json()
        await h.client.post(f"/sim/volumes/{vid}/write", json={"blocks": 50})  # after the snapshot
        blocks = changed(await getcbt(h, vs, "0"))
        assert blocks
        uri, _ = await prepare(h, vs["volumeUri"], {"ip": IP, "taskType": "BackupVol", "snapUrn2": s["urn"]})
        ds = vm["vmConfig"]["disks"][0]["datastoreUrn"]
        new = (await h.post(f"{h.site}/volumes", {"name": "r", "quantityGB": 1, "datastoreUrn": ds})).json()
        await h.wait_task(new["taskUri"])
        ruri, _ = await prepare(h, new["uri"], {"ip": IP, "taskType": "CBTRestore"})
        h.advance(2)
        src = (await h.get(uri)).json()
        dst = (await h.get(ruri)).json()
        # group consecutive blocks into ranges, as a real client would
        runs: list[list[int]] = []
        for b in blocks:
            if runs and runs[-1][1] == b:
                runs[-1][1] = b + 1
            else:
                runs.append([b, b + 1])
        for a, z in runs:
            rng = f"{a * bs}-{z * bs - 1}"
            rr = await h.client.get(src["resourceUrl"], headers={"X-Resource-Token": src["token"],
                                                                 "Range": f"bytes={rng}"})
            assert rr.status_code == 206 and len(rr.content) == (z - a) * bs
            w = await h.client.put(dst["resourceUrl"], content=rr.content, headers={
                "X-Resource-Token": dst["token"], "Content-Range": f"bytes {rng}/{1024 ** 3}"})
            assert w.status_code == 204
        got = (await h.client.get(f"/sim/volumes/{vol_id(new['urn'])}/digest")).json()
        assert got == want
        # one flipped byte makes the digest differ
        rr = await h.client.get(dst["resourceUrl"], headers={"X-Resource-Token": dst["token"],
                                                             "Range": f"bytes={blocks[0] * bs}-{blocks[0] * bs}"})
        flipped = bytes([rr.content[0] ^ 1])
        await h.client.put(dst["resourceUrl"], content=flipped, headers={
            "X-Resource-Token": dst["token"],
            "Content-Range": f"bytes {blocks[0] * bs}-{blocks[0] * bs}/{1024 ** 3}"})
        assert (await h.client.get(f"/sim/volumes/{vol_id(new['urn'])}/digest")).json() != want


async def test_chain_breaking_events() -> None:
    async with sim_harness() as h:
        vm = await vm_of(h, "ready", 1)
        vm_id = vol_id(vm["urn"])
        for event in ("power-off", "ha-restart", "snapshot-revert", "volume-expansion"):
            s1 = await cbt_snapshot(h, vm, f"{event}-1")
            r = await h.client.post(f"/sim/vms/{vm_id}/events", json={"event": event})
            assert r.status_code == 200 and r.json()["volumes"]
            touched = set(r.json()["volumes"])
            h.advance(1)
            s2 = await cbt_snapshot(h, vm, f"{event}-2")
            for a, b in zip(s1["volsnapshots"], s2["volsnapshots"]):
                if a["volumeUrn"] in touched:
                    assert b["chgID"] == "1" and b["volCBTCreateTime"] != a["volCBTCreateTime"], event
                    # an incremental across the break is refused (volCBTCreateTime changed)
                    rr = await h.post(b["volumeUri"] + "/getcbt", {
                        "type": "DiffBitmapAndBit1Num", "snapUuid": b["snapUuid"],
                        "volCBTCreateTime": a["volCBTCreateTime"], "chgID": a["chgID"]})
                    assert rr.status_code == 400
                else:
                    assert int(b["chgID"]) == int(a["chgID"]) + 1
            if event == "power-off":
                assert (await h.get(vm["uri"])).json()["status"] == "stopped"
                await h.wait_task((await h.post(vm["uri"] + "/action/start")).json()["taskUri"])
                h.advance(h.sim.config.boot_seconds)  # Tools run once the guest has booted
            for snap in (s1, s2):
                await h.wait_task((await h.delete(snap["uri"])).json()["taskUri"])
        assert (await h.client.post(f"/sim/vms/{vm_id}/events", json={"event": "nope"})).status_code == 400
