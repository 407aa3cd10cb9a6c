"""vrm-api.md §15 items 17-22: inventory content, enum spellings, OS catalogue, datastores,
volumes, edge cases; plus the generator (determinism, 10k VMs)."""

from __future__ import annotations

import pytest

from fctui.sim import SimConfig, Simulator
from fctui.sim.testing import sim_harness

DISK_FIELDS = {"sequenceNum", "pciType", "volumeUrn", "volumeUrl", "diskName", "quantityGB",
               "datastoreUrn", "datastoreName", "storageType", "isThin", "indepDisk",
               "persistentDisk", "type", "systemVolume", "volumeFormat"}
STORAGE_TYPES = {"LOCALPOME", "LUNPOME", "NAS", "advanceSan", "DSWARE", "FusionOneStorage",
                 "LOCAL", "LUN", "san"}


async def all_vms(h, templates: bool = False) -> list[dict]:  # type: ignore[no-untyped-def]
    out, off = [], 0
    while True:
        q = f"{h.site}/vms?detail=2&limit=100&offset={off}" + ("&isTemplate=true" if templates else "")
        page = (await h.get(q)).json()["vms"]
        if not page:
            return out
        out += page
        off += 100


async def test_15_17_vm_detail_fields() -> None:
    async with sim_harness() as h:
        vms = await all_vms(h)
        for v in vms:
            cfg = v["vmConfig"]
            assert isinstance(cfg["cpu"]["quantity"], int)
            assert isinstance(cfg["memory"]["quantityMB"], int)
            assert cfg["disks"]
            for d in cfg["disks"]:
                assert DISK_FIELDS <= set(d), DISK_FIELDS - set(d)
            for n in cfg["nics"]:
                assert {"ip", "mac", "name", "portGroupUrn"} <= set(n)
            assert {"osType", "osVersion", "hostname"} <= set(v["osOptions"])
            for k in ("pvDriverStatus", "toolInstallStatus", "toolsVersion", "hostUrn",
                      "clusterUrn", "location", "isTemplate", "isLinkClone", "status", "arch"):
                assert k in v, k
            assert v["arch"] in ("x86_64", "aarch64")
        assert {v["arch"] for v in vms} == {"x86_64", "aarch64"}


async def test_15_18_exact_enum_spellings() -> None:
    async with sim_harness() as h:
        vms = await all_vms(h) + await all_vms(h, templates=True)
        statuses = {v["status"] for v in vms}
        assert {"running", "stopped", "hibernated", "pause", "fault-resuming"} <= statuses
        assert {v["pvDriverStatus"] for v in vms} <= {"starting", "running", "notRunning"}
        assert "notRunning" in {v["pvDriverStatus"] for v in vms}
        assert {v["toolInstallStatus"] for v in vms} <= {"injecting", "ejecting", "empty", "fill"}
        assert {v["osOptions"]["osType"] for v in vms} <= {"Windows", "Linux", "Other"}
        for v in vms:
            assert ("vncAcessInfo" in v) == (not v["isTemplate"])
            assert "vncAccessInfo" not in v
        dss = (await h.get(f"{h.site}/datastores")).json()["datastores"]
        assert {d["storageType"] for d in dss} == STORAGE_TYPES
        hosts = (await h.get(f"{h.site}/hosts")).json()["hosts"]
        assert {x["status"] for x in hosts} <= {"rebooting", "normal", "fault", "initial", "unknow",
                                                "poweroff", "booting", "shutdowning"}
        # the storage-migration edge case shows the misspelled MAGRATING volume status
        mig = (await h.get(h.uri(await h.edge("task-in-progress")))).json()
        vol = (await h.get(mig["vmConfig"]["disks"][0]["volumeUri"])).json()
        assert vol["status"] == "MAGRATING"


async def test_15_19_osversions_cover_every_vm() -> None:
    async with sim_harness() as h:
        cat = (await h.get(f"{h.site}/vms/osversions")).json()
        assert set(cat) == {"windows", "linux", "other"}
        ids = {e["id"] for k in cat for e in cat[k]}
        for e in (e for k in cat for e in cat[k]):
            assert {"id", "versionDes", "cpuQuantityLimit", "supportCpuHotPlug"} <= set(e)
        assert {201, 202} <= {e["id"] for e in cat["windows"]}
        assert {301, 302} <= {e["id"] for e in cat["linux"]}
        assert {401, 402} <= {e["id"] for e in cat["other"]}
        assert any("EulerOS" in e["versionDes"] for e in cat["linux"])
        vms = await all_vms(h) + await all_vms(h, templates=True)
        used = {v["osOptions"]["osVersion"] for v in vms}
        assert used <= ids
        kinds = {"Windows": "windows", "Linux": "linux", "Other": "other"}
        for v in vms:
            assert v["osOptions"]["osVersion"] in {e["id"] for e in cat[kinds[v["osOptions"]["osType"]]]}


async def test_15_20_datastore_fields_and_host_scope_link_status() -> None:
    async with sim_harness() as h:
        dss = (await h.get(f"{h.site}/datastores")).json()["datastores"]
        for d in dss:
            for k in ("storageType", "status", "capacityGB", "freeSizeGB", "usedSizeGB",
                      "actualCapacityGB", "actualFreeSizeGB", "hosts"):
                assert k in d
            assert d["status"] == "NORMAL"
            assert d["capacityGB"] == d["usedSizeGB"] + d["freeSizeGB"]
            assert all(x.startswith("urn:sites:") for x in d["hosts"])
        host = (await h.get(f"{h.site}/hosts")).json()["hosts"][0]
        scoped = (await h.get(f"{h.site}/datastores?scope={host['urn']}")).json()["datastores"]
        assert scoped and all(d["status"] == "CONNECTED" for d in scoped)
        assert all(host["urn"] in d["hosts"] for d in scoped)
        assert any(d["freeSizeGB"] < 10 for d in dss)  # the nearly-full one


async def test_15_21_volumes_match_vm_disks() -> None:
    async with sim_harness() as h:
        vms = await all_vms(h)
        for v in vms[:40]:
            for d in v["vmConfig"]["disks"]:
                vol = (await h.get(d["volumeUri"])).json()
                assert vol["urn"] == d["volumeUrn"] and vol["uuid"] == d["volumeUuid"]
                assert vol["quantityGB"] == d["quantityGB"]
                assert vol["datastoreUrn"] == d["datastoreUrn"]
                for k in ("indepDisk", "persistentDisk", "type", "isThin", "storageType",
                          "volumeFormat", "pciType"):
                    assert vol[k] == d[k], k
                owner = (await h.get(f"{h.site}/vms?scope={d['volumeUrn']}&detail=0")).json()
                assert [x["urn"] for x in owner["vms"]] == [v["urn"]]
        ds = vms[0]["vmConfig"]["disks"][0]["datastoreUrn"]
        dv = (await h.get(f"{h.site}/volumes/querydatastorevolumes?dsUrn={ds}&limit=100&offset=0")).json()
        assert dv["total"] > 0 and all(x["datastoreUrn"] == ds for x in dv["volumes"])
        assert {"vmName", "vmUrn", "vmStatus", "clusterName", "clusterUrn"} <= set(dv["volumes"][0])


async def test_15_22_edge_cases_seeded() -> None:
    async with sim_harness() as h:
        edges = (await h.client.get("/sim/edge-cases")).json()
        needed = {"tools-missing", "tools-not-running", "state-stopped", "state-hibernated",
                  "state-unsupported", "template", "linked-clone", "disk-ide", "disk-shared",
                  "shared-disk-x86", "disk-independent", "all-disks-independent",
                  "storage-unsupported", "snapshot-limit", "snapshot-limit-near",
                  "leftover-backup-snapshot", "task-in-progress", "consistency-not-euleros",
                  "guest-os-unlisted", "target-space-low", "ready"}
        assert needed <= set(edges)
        cat = (await h.get(f"{h.site}/vms/osversions")).json()
        euler = {e["id"] for e in cat["linux"] if "EulerOS" in e["versionDes"]}

        async def vm(urn: str) -> dict:  # type: ignore[type-arg]
            r = await h.get(h.uri(urn))
            assert r.status_code == 200
            return r.json()  # type: ignore[no-any-return]

        for urn in edges["tools-missing"]:
            assert (await vm(urn))["toolsVersion"] == ""
        v = await vm(edges["tools-not-running"][0])
        assert v["toolsVersion"] and v["status"] == "running" and v["pvDriverStatus"] != "running"
        assert (await vm(edges["state-hibernated"][0]))["status"] == "hibernated"
        assert {(await vm(u))["status"] for u in edges["state-unsupported"]} <= {"pause", "fault-resuming"}
        assert all([(await vm(u))["isTemplate"] for u in edges["template"]])
        assert (await vm(edges["linked-clone"][0]))["isLinkClone"]
        assert any(d["pciType"] == "IDE" for d in (await vm(edges["disk-ide"][0]))["vmConfig"]["disks"])
        arches = set()
        for u in edges["disk-shared"]:
            x = await vm(u)
            assert any(d["type"] == "share" for d in x["vmConfig"]["disks"])
            arches.add(x["arch"])
        assert arches == {"x86_64", "aarch64"}
        assert all([(await vm(u))["arch"] == "x86_64" for u in edges["shared-disk-x86"]])
        d = (await vm(edges["disk-independent"][0]))["vmConfig"]["disks"]
        assert any(x["indepDisk"] for x in d) and not all(x["indepDisk"] for x in d)
        assert all(x["indepDisk"] for x in (await vm(edges["all-disks-independent"][0]))["vmConfig"]["disks"])
        unsupported = set()
        for u in edges["storage-unsupported"]:
            unsupported |= {x["storageType"] for x in (await vm(u))["vmConfig"]["disks"]}
        assert {"LOCAL", "LUN", "san"} <= unsupported

        async def backups(urn: str) -> int:
            tree = (await h.get(h.uri(urn) + "/snapshots")).json()
            n, stack = 0, list(tree["rootSnapshots"])
            while stack:
                s = stack.pop()
                n += s["type"] in ("backup", "CBTbackup")
                stack += s["childSnapshots"]
            return n

        assert await backups(edges["snapshot-limit"][0]) >= 32
        assert 28 <= await backups(edges["snapshot-limit-near"][0]) <= 31
        assert await backups(edges["leftover-backup-snapshot"][0]) >= 1
        mig = edges["task-in-progress"][0]
        tasks = (await h.get(f"{h.site}/tasks?status=running&limit=100")).json()["tasks"]
        assert any(t["entityUrn"] == mig and t["type"] == "MigrateVolume" for t in tasks)
        assert (await vm(edges["consistency-not-euleros"][0]))["osOptions"]["osVersion"] not in euler
        assert (await vm(edges["guest-os-unlisted"][0]))["osOptions"]["osVersion"] in (401, 402)
        low = (await vm(edges["target-space-low"][0]))["vmConfig"]["disks"][0]["datastoreUrn"]
        assert (await h.get(h.uri(low))).json()["freeSizeGB"] < 10
        for u in edges["ready"]:
            x = await vm(u)
            assert x["osOptions"]["osVersion"] in euler and x["status"] == "running"
            assert x["pvDriverStatus"] == "running" and x["toolsVersion"]
            assert all(not d["indepDisk"] and d["type"] == "normal" and d["pciType"] != "IDE"
                       for d in x["vmConfig"]["disks"])
        # names are recognisable
        for rule, urns in edges.items():
            for u in urns:
                assert (await vm(u))["name"].startswith("edge-")


def test_generator_deterministic_and_seed_dependent() -> None:
    def fingerprint(seed: int) -> list[tuple]:  # type: ignore[type-arg]
        s = Simulator(SimConfig(vms=80, seed=seed))
        return [(v.id, v.name, v.status, v.uuid, v.host.name, [d.volume.size_mb for d in v.disks])
                for v in s.vms.values()]

    assert fingerprint(3) == fingerprint(3)
    assert fingerprint(3) != fingerprint(4)
    assert Simulator(SimConfig(seed=3)).site.id != Simulator(SimConfig(seed=4)).site.id


async def test_generator_10k_vms_and_pages() -> None:
    sim = Simulator(SimConfig(vms=10000))
    assert sum(1 for v in sim.vms.values()) == 10000
    names = [v.name for v in sim.vms.values()]
    assert len(set(names)) == len(names)
    from fctui.sim import ManualClock

    sim.clock = ManualClock()
    async with sim_harness(sim=sim) as h:
        urns: set[str] = set()
        for off in (0, 4000, 9900, 10000):
            page = (await h.get(f"{h.site}/vms?detail=2&limit=100&offset={off}")).json()
            assert page["total"] == 10000 - sum(1 for v in sim.vms.values() if v.is_template)
            urns |= {v["urn"] for v in page["vms"]}
        assert len(urns) == 200 + page["total"] - 9900


async def test_ready_vms_per_host_are_planned_ready_on_their_hosts() -> None:
    """SimConfig.ready_vms_per_host: many backup-ready VMs on few hosts (the scale tests' inventory), with
    small disks spread over several datastores per host, the rest of the inventory unchanged."""
    from fctui.jobs.planner import build_plan
    from tests.conftest import sim_client

    plain = Simulator(SimConfig(vms=0, edge_disk_gb=1, edge_fill=0.002))
    sim = Simulator(SimConfig(vms=0, edge_disk_gb=1, edge_fill=0.002, ready_vms_per_host=(3, 0, 2)))
    assert [(v.id, v.name) for v in plain.vms.values()] == [(v.id, v.name) for v in sim.vms.values()][:len(plain.vms)]
    ready = [v for v in sim.vms.values() if v.name.startswith("ready-")]
    assert [(v.name, v.host.name) for v in ready] == [
        ("ready-cna-01-01", "cna-01"), ("ready-cna-01-02", "cna-01"), ("ready-cna-01-03", "cna-01"),
        ("ready-cna-03-01", "cna-03"), ("ready-cna-03-02", "cna-03")]
    assert len({v.disks[0].volume.datastore.name for v in ready if v.host.name == "cna-01"}) == 3
    async with sim_client(sim) as client:
        plan = await build_plan(client, [v.name for v in ready], None)
    assert [(p.vm_name, p.refused, p.kind) for p in plan.vms] == [(v.name, False, "cbt") for v in ready]
    with pytest.raises(ValueError, match="x86 hosts"):
        Simulator(SimConfig(vms=0, ready_vms_per_host=(1,) * 20))
