"""vrm-api.md §15 items 10-16: identifiers, errors, lists, paging, filters."""

from __future__ import annotations

import re
from urllib.parse import quote

from fctui.sim import SimConfig
from fctui.sim.testing import sim_harness

URN_RE = re.compile(r"^urn:sites:[0-9A-F]{8}(:[a-z]+:[^:]+)*$")


def urn_to_uri(urn: str) -> str:
    return "/service" + urn[len("urn"):].replace(":", "/")


async def test_15_10_urns_uris_and_ids() -> None:
    async with sim_harness() as h:
        site = (await h.get("/service/sites")).json()["sites"][0]
        assert re.fullmatch(r"urn:sites:[0-9A-F]{8}", site["urn"]) and site["uri"] == urn_to_uri(site["urn"])
        objs = []
        for plural in ("clusters", "hosts", "datastores", "volumes", "tasks"):
            objs += (await h.get(f"{h.site}/{plural}?limit=100")).json()[plural]
        vms = (await h.get(f"{h.site}/vms?detail=2&limit=100")).json()["vms"]
        objs += vms
        assert objs
        for o in objs:
            assert URN_RE.match(o["urn"]) and o["uri"] == urn_to_uri(o["urn"]), o["urn"]
            kind, oid = o["urn"].split(":")[3:5]
            if kind == "vms":
                assert re.fullmatch(r"i-[0-9A-F]{8}", oid) and len(oid) == 10
            else:
                assert oid.isdigit()
            # and the URI really addresses the object
            got = await h.get(o["uri"])
            assert got.status_code == 200 and got.json()["urn"] == o["urn"]
        for v in vms[:5]:
            for d in v["vmConfig"]["disks"]:
                assert d["volumeUri"] == urn_to_uri(d["volumeUrn"])


async def test_15_11_errors_are_json_with_8_digit_codes() -> None:
    async with sim_harness() as h:
        cases = [
            await h.get(f"{h.site}/vms/i-DEADBEEF"),
            await h.get(f"{h.site}/volumes/999999"),
            await h.get(f"{h.site}/tasks/999999"),
            await h.get(f"{h.site}/nothing-here"),
            await h.get("/service/sites/00000000/vms"),
            await h.get("/totally/elsewhere"),
        ]
        for r in cases:
            assert r.status_code == 404
            assert r.headers["content-type"].startswith("application/json")
            body = r.json()
            assert re.fullmatch(r"\d{8}", body["errorCode"]) and body["errorCode"] in body["errorDes"]
        r = await h.post(f"{h.site}/volumes", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and re.fullmatch(r"\d{8}", r.json()["errorCode"])


async def test_15_12_list_shape_limit_clamp_and_offset_past_end() -> None:
    async with sim_harness(SimConfig(vms=250, sector_of_block=128)) as h:
        r = (await h.get(f"{h.site}/vms?limit=500&offset=0")).json()
        assert set(r) == {"total", "vms"} and len(r["vms"]) == 100 and r["total"] >= 240
        total = r["total"]
        r = (await h.get(f"{h.site}/vms?limit=100&offset={total + 50}"))
        assert r.status_code == 200 and r.json() == {"total": total, "vms": []}
        last = (await h.get(f"{h.site}/vms?limit=100&offset={total - 3}")).json()
        assert len(last["vms"]) == 3 and last["total"] == total
        for plural in ("volumes", "tasks"):
            r = (await h.get(f"{h.site}/{plural}?limit=1000&offset=100000")).json()
            assert r[plural] == [] and "total" in r


async def test_15_13_unpaged_hosts_datastores_clusters_sites_return_all() -> None:
    async with sim_harness(SimConfig(vms=4000, sector_of_block=128)) as h:
        hosts = (await h.get(f"{h.site}/hosts")).json()
        assert hosts["total"] > 100 and len(hosts["hosts"]) == hosts["total"]
        dss = (await h.get(f"{h.site}/datastores")).json()
        assert dss["total"] > 100 and len(dss["datastores"]) == dss["total"]
        paged = (await h.get(f"{h.site}/hosts?limit=10&offset=0")).json()
        assert len(paged["hosts"]) == 10 and paged["total"] == hosts["total"]
        cl = (await h.get(f"{h.site}/clusters?limit=1")).json()
        assert len(cl["clusters"]) == len(h.sim.clusters) > 1
        sites = (await h.get("/service/sites")).json()
        assert len(sites["sites"]) == 1
        # VMs without paging: first 100 only
        vms = (await h.get(f"{h.site}/vms")).json()
        assert len(vms["vms"]) == 100 and vms["total"] > 3000


async def test_15_14_stable_ordering_with_overlapping_pages() -> None:
    async with sim_harness(SimConfig(vms=300, sector_of_block=128)) as h:
        seen: list[str] = []
        offset = 0
        while True:
            page = (await h.get(f"{h.site}/vms?limit=100&offset={offset}&detail=0")).json()
            if not page["vms"]:
                break
            seen += [v["urn"] for v in page["vms"]]
            offset += 95  # CINDER-style 5-item overlap
        again: list[str] = []
        for off in range(0, 400, 100):
            again += [v["urn"] for v in (await h.get(f"{h.site}/vms?limit=100&offset={off}&detail=0")).json()["vms"]]
        assert list(dict.fromkeys(seen)) == again
        assert len(set(again)) == len(again)


async def test_15_15_scope_raw_or_encoded_and_repeated_keys() -> None:
    async with sim_harness() as h:
        cl = (await h.get(f"{h.site}/clusters")).json()["clusters"][0]["urn"]
        raw = (await h.get(f"{h.site}/vms?scope={cl}&limit=100")).json()
        enc = (await h.get(f"{h.site}/vms?scope={quote(cl, safe='')}&limit=100")).json()
        assert raw == enc and raw["total"] > 0
        assert all(v["clusterUrn"] == cl for v in raw["vms"])
        vols = (await h.get(f"{h.site}/volumes?limit=5")).json()["volumes"]
        a, b = vols[0]["urn"], vols[1]["urn"]
        two = (await h.get(f"{h.site}/volumes?volUrns={a}&volUrns={quote(b, safe='')}&limit=100")).json()
        assert {v["urn"] for v in two["volumes"]} == {a, b} and two["total"] == 2
        cls = (await h.get(f"{h.site}/clusters")).json()["clusters"]
        pick = (await h.get(f"{h.site}/clusters?clusterUrns={cls[0]['urn']}&clusterUrns={cls[1]['urn']}")).json()
        assert {c["urn"] for c in pick["clusters"]} == {cls[0]["urn"], cls[1]["urn"]}
        tasks = (await h.get(f"{h.site}/tasks")).json()["tasks"]
        one = (await h.get(f"{h.site}/tasks?taskUrns={tasks[0]['urn']}")).json()
        assert [t["urn"] for t in one["tasks"]] == [tasks[0]["urn"]]


DETAIL0 = {"uri", "urn", "uuid", "name", "status", "idle"}
DETAIL1_EXTRA = {"description", "group", "location", "locationName", "hostUrn", "clusterUrn",
                 "pvDriverStatus", "toolInstallStatus", "cdRomStatus", "isTemplate", "isLinkClone",
                 "createTime", "imcSetting", "minCompatibleimcSetting", "toolsVersion",
                 "isBindingHost", "hostName", "clusterName", "drStatus", "vmType", "rpoStatus",
                 "initSyncStatus", "vmConfig"}


async def test_15_16_vm_list_detail_levels_and_filters() -> None:
    async with sim_harness() as h:
        d0 = (await h.get(f"{h.site}/vms?detail=0&limit=10")).json()["vms"]
        assert all(set(v) == DETAIL0 for v in d0)
        d1 = (await h.get(f"{h.site}/vms?detail=1&limit=10")).json()["vms"]
        assert all(set(v) == DETAIL0 | DETAIL1_EXTRA for v in d1)
        assert set(d1[0]["vmConfig"]) == {"nics", "properties"}
        assert "secureVmType" in d1[0]["vmConfig"]["properties"]
        default = (await h.get(f"{h.site}/vms?limit=10")).json()["vms"]
        assert default == d1  # detail defaults to 1
        d2 = (await h.get(f"{h.site}/vms?detail=2&limit=10")).json()["vms"]
        for v in d2:
            one = (await h.get(v["uri"])).json()
            assert one == v  # detail=2 == VM detail
        assert (await h.get(f"{h.site}/vms?detail=7")).status_code == 400

        # name: fuzzy, case-insensitive; empty rejected
        r = (await h.get(f"{h.site}/vms?name=EDGE-READY&limit=100")).json()
        assert r["total"] >= 2 and all("edge-ready" in v["name"] for v in r["vms"])
        assert (await h.get(f"{h.site}/vms?name=")).status_code == 400
        # status
        r = (await h.get(f"{h.site}/vms?status=stopped&limit=100")).json()
        assert r["total"] > 0 and all(v["status"] == "stopped" for v in r["vms"])
        # templates only with isTemplate=true; default excludes them
        tpl = (await h.get(f"{h.site}/vms?isTemplate=true&limit=100")).json()
        assert tpl["total"] > 0 and all(v["isTemplate"] for v in tpl["vms"])
        allv = (await h.get(f"{h.site}/vms?limit=100")).json()
        assert not any(v["isTemplate"] for v in allv["vms"])
        assert not {v["urn"] for v in tpl["vms"]} & {v["urn"] for v in allv["vms"]}
        # uuid exact, vmId fuzzy
        target = allv["vms"][3]
        r = (await h.get(f"{h.site}/vms?uuid={target['uuid']}")).json()
        assert [v["urn"] for v in r["vms"]] == [target["urn"]]
        vm_id = target["urn"].rsplit(":", 1)[1]
        r = (await h.get(f"{h.site}/vms?vmId={vm_id[-4:].lower()}&limit=100")).json()
        assert target["urn"] in {v["urn"] for v in r["vms"]}
        # scope: host, datastore, volume
        full = (await h.get(target["uri"])).json()
        r = (await h.get(f"{h.site}/vms?scope={full['hostUrn']}&limit=100")).json()
        assert target["urn"] in {v["urn"] for v in r["vms"]}
        assert all(v["hostUrn"] == full["hostUrn"] for v in r["vms"])
        disk = full["vmConfig"]["disks"][0]
        r = (await h.get(f"{h.site}/vms?scope={disk['datastoreUrn']}&limit=100&detail=2")).json()
        assert target["urn"] in {v["urn"] for v in r["vms"]}
        assert all(any(d["datastoreUrn"] == disk["datastoreUrn"] for d in v["vmConfig"]["disks"])
                   for v in r["vms"])
        r = (await h.get(f"{h.site}/vms?scope={disk['volumeUrn']}&detail=0")).json()
        assert [v["urn"] for v in r["vms"]] == [target["urn"]]
