"""Several sites (issue #19, item 4): per-site inventories and port groups, the guest boot model (Tools
``starting`` -> ``running`` after ``boot_seconds``), boot failures, and VMs created from restored boot disks
on another site."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest

from fctui.sim import ManualClock, SimConfig, Simulator
from fctui.sim.content import boot_record
from fctui.sim.testing import SimHarness, sim_harness
from tests.sites import asgi_client, site_config, two_site_sims

IP = "10.0.0.5"


async def edge_vm(h: SimHarness, rule: str) -> dict[str, Any]:
    return (await h.get(h.uri(await h.edge(rule)))).json()  # type: ignore[no-any-return]


async def power(h: SimHarness, vm: dict[str, Any], action: str) -> None:
    body = {"mode": "force"} if action == "stop" else None
    r = await h.post(f"{vm['uri']}/action/{action}", body)
    assert r.status_code == 200, r.text
    assert (await h.wait_task(r.json()["taskUri"]))["status"] == "success"


async def pv(h: SimHarness, vm: dict[str, Any]) -> str:
    return str((await h.get(vm["uri"])).json()["pvDriverStatus"])


async def test_sites_differ_and_serve_their_port_groups() -> None:
    clock = ManualClock()
    a, b = two_site_sims(clock=clock)
    assert (a.site.name, b.site.name) == ("site-01", "site-02") and a.site.id != b.site.id
    # site 1 is the inventory of a simulator before sites: same id and names
    assert a.site.id == Simulator(SimConfig(vms=30, seed=1, sector_of_block=128)).site.id
    assert {c.name for c in a.clusters.values()} == {"cluster-01", "cluster-02", "cluster-arm-01"}
    assert {c.name for c in b.clusters.values()} == {"dr-cluster-01", "dr-cluster-02", "dr-cluster-arm-01"}
    assert not {d.name for d in a.datastores.values()} & {d.name for d in b.datastores.values()}
    assert b.edge_cases.keys() == a.edge_cases.keys()  # every edge case on both sites
    want = {a: ["prod-net", "app-net", "isolated"], b: ["dr-prod-net", "dr-app-net", "dr-isolated"]}
    for sim, names in want.items():
        site = f"/service/sites/{sim.site.id}"
        async with asgi_client(sim) as c:
            groups = await c.port_groups(site)  # GET S/dvswitchs, then <dvs>/portgroups
            assert [g.name for g in groups] == names
            assert all(g.urn.startswith(f"urn:sites:{sim.site.id}:dvswitchs:1:portgroups:") for g in groups)
            every = await c._call("GET", site + "/portgroups")
            assert [g["name"] for g in every["portGroups"]] == names and every["total"] == 3
            assert [g["isolated"] for g in every["portGroups"]] == [False, False, True]
            one = await c._call("GET", groups[2].uri)
            assert one["urn"] == groups[2].urn and one["vlanId"] == groups[2].vlan_id
        # generated NICs are spread over the non-isolated groups, never on the isolated one
        used = collections.Counter(n.port_group_urn for v in sim.vms.values() if not v.is_template for n in v.nics)
        assert set(used) == {g.urn for g in groups[:2]}
        async with asgi_client(sim) as c:  # GET S/vms?scope=<port group or switch URN> (vrm-api.md §6.1)
            for g in groups:
                on = await c.vms(site, scope=g.urn, detail=0)
                assert len({v.urn for v in on}) == sum(any(n.port_group_urn == g.urn for n in v.nics)
                                                        for v in sim.vms.values() if not v.is_template)
            assert len(await c.vms(site, scope=groups[0].dvswitch_urn, detail=0)) == sum(
                bool(v.nics) for v in sim.vms.values() if not v.is_template)
    # the DR site runs more of its VMs on ARM
    arm = [sum(v.arch == "aarch64" for v in Simulator(SimConfig(vms=300, site_index=i)).vms.values())
           for i in (0, 1)]
    assert arm[1] > 2 * arm[0] > 0


async def test_create_vm_checks_port_groups() -> None:
    a, b = two_site_sims(clock=ManualClock())
    async with sim_harness(sim=a) as h:
        groups = (await h.get(f"{h.site}/portgroups")).json()["portGroups"]
        cl = (await h.get(f"{h.site}/clusters")).json()["clusters"][0]

        def body(name: str, nics: Any) -> dict[str, Any]:
            return {"name": name, "location": cl["urn"], "vmConfig": {"nics": nics}}
        foreign = f"urn:sites:{b.site.id}:dvswitchs:1:portgroups:1"
        for nics in ([{"portGroupUrn": foreign}], [{}], [{"portGroupUrn": groups[0]["urn"][:-1] + "9"}]):
            r = await h.post(f"{h.site}/vms", body("bad", nics))
            assert r.status_code == 400, nics
        assert r.json()["errorCode"] == "10510004"
        assert not [v for v in a.vms.values() if v.name == "bad"]  # nothing created
        r = await h.post(f"{h.site}/vms", body("isolated-vm", [{"portGroupUrn": groups[2]["urn"]},
                                                              {"portGroupUrn": groups[0]["urn"]}]))
        assert r.status_code == 200, r.text
        await h.wait_task(r.json()["taskUri"])
        nics = (await h.get(r.json()["uri"])).json()["vmConfig"]["nics"]
        assert [(n["portGroupUrn"], n["portGroupName"]) for n in nics] == [
            (groups[2]["urn"], "isolated"), (groups[0]["urn"], "prod-net")]


async def test_tools_run_boot_seconds_after_power_on() -> None:
    async with sim_harness(SimConfig(sector_of_block=128, boot_seconds=20)) as h:
        vm = await edge_vm(h, "ready")
        bare = await edge_vm(h, "tools-missing")
        for v in (vm, bare):
            await power(h, v, "stop")
            await power(h, v, "start")
            assert await pv(h, v) == "starting"
            h.advance(19)
            assert await pv(h, v) == "starting"
            h.advance(1)
        assert await pv(h, vm) == "running"
        assert await pv(h, bare) == "notRunning"  # no Tools in that guest
        # a power-off before the boot completes voids it
        await power(h, vm, "stop")
        await power(h, vm, "start")
        await power(h, vm, "stop")
        h.advance(30)
        assert (await h.get(vm["uri"])).json()["status"] == "stopped" and await pv(h, vm) == "notRunning"


async def test_boot_failures() -> None:
    async with sim_harness(SimConfig(sector_of_block=128, time_scale=10, boot_failures=("edge-ready-*",))) as h:
        assert (await h.client.get("/sim/boot-failures")).json() == {"names": ["edge-ready-*"]}
        vm = await edge_vm(h, "ready")
        other = await edge_vm(h, "consistency-not-euleros")
        for v in (vm, other):
            await power(h, v, "stop")
            await power(h, v, "start")
        h.advance(2)  # 20 s of boot at time scale 10
        assert (await pv(h, vm), await pv(h, other)) == ("notRunning", "running")
        r = await h.client.post("/sim/boot-failures", json={"names": ["edge-consistency-*"]})
        assert r.json() == {"names": ["edge-consistency-*"]}
        for v in (vm, other):
            await power(h, v, "stop")
            await power(h, v, "start")
        h.advance(2)
        assert (await pv(h, vm), await pv(h, other)) == ("running", "notRunning")
        assert (await h.client.post("/sim/boot-failures", json={"names": "x"})).status_code == 400
        assert (await h.client.post("/sim/boot-failures", json={"names": []})).json() == {"names": []}


async def restore_block0(h: SimHarness, data: bytes) -> str:
    """A new 1 GB volume on the site's first NAS datastore whose block 0 is ``data``, written through a
    RestoreVol backup resource (the data endpoint); returns its URN."""
    ds = next(d for d in (await h.get(f"{h.site}/datastores")).json()["datastores"] if d["storageType"] == "NAS")
    new = (await h.post(f"{h.site}/volumes", {"name": "restored", "quantityGB": 1, "datastoreUrn": ds["urn"]})).json()
    await h.wait_task(new["taskUri"])
    r = await h.post(new["uri"] + "/backupresources", {"ip": IP, "taskType": "RestoreVol"})
    assert r.status_code == 200, r.text
    ruri = f"{new['uri']}/backupresources/{r.json()['taskUri'].rsplit('/', 1)[1]}"
    h.advance(2)
    res = (await h.get(ruri)).json()
    w = await h.client.put(res["resourceUrl"], content=data, headers={
        "X-Resource-Token": res["token"], "Content-Range": f"bytes 0-{len(data) - 1}/{1024 ** 3}"})
    assert w.status_code == 204
    await h.delete(ruri)
    h.advance(2)
    return str(new["urn"])


async def create_and_boot(h: SimHarness, name: str, vol_urn: str | None) -> dict[str, Any]:
    cl = (await h.get(f"{h.site}/clusters")).json()["clusters"][0]
    ds = (await h.get(f"{h.site}/datastores")).json()["datastores"][0]
    disk = ({"volumeUrn": vol_urn} if vol_urn else {"datastoreUrn": ds["urn"], "quantityGB": 1})
    r = await h.post(f"{h.site}/vms", {"name": name, "location": cl["urn"], "autoBoot": True,
                                        "vmConfig": {"disks": [{**disk, "sequenceNum": 1}]}})
    assert r.status_code == 200, r.text
    await h.wait_task(r.json()["taskUri"])
    vm: dict[str, Any] = (await h.get(r.json()["uri"])).json()
    assert vm["status"] == "running" and vm["pvDriverStatus"] == "starting"
    h.advance(h.sim.config.boot_seconds / h.sim.config.time_scale)
    return (await h.get(r.json()["uri"])).json()  # type: ignore[no-any-return]


async def test_vm_from_a_restored_boot_disk_boots_on_another_site() -> None:
    a, b = two_site_sims(clock=ManualClock(), time_scale=1.0)
    src = next(v for v in a.vms.values() if v.name == "edge-ready-euleros-01")
    c = src.disks[0].volume.content
    block0 = c.block_bytes(c.live, 0)  # what a backup of the system disk holds at offset 0
    assert boot_record(block0) == src.tools_version
    other_seed = Simulator(site_config(0, vms=0, seed=7))  # another pool: its blocks are not keys here
    oc = next(v for v in other_seed.vms.values() if v.tools_version).disks[0].volume.content
    async with sim_harness(sim=b) as h:
        vol = await restore_block0(h, block0)
        vm = await create_and_boot(h, "restored-from-a", vol)
        assert vm["pvDriverStatus"] == "running" and vm["toolsVersion"] == src.tools_version
        stored = b.by_urn(vol, "volumes").content.live.overlay[0][0]
        assert isinstance(stored, int)  # same seed: the generated block is kept as its key
        vol = await restore_block0(h, oc.block_bytes(oc.live, 0))
        assert isinstance(b.by_urn(vol, "volumes").content.live.overlay[0][0], bytes)
        assert (await create_and_boot(h, "restored-from-elsewhere", vol))["pvDriverStatus"] == "running"
        # an empty boot disk, and a garbled boot record, never get Tools running
        vm = await create_and_boot(h, "empty", None)
        assert vm["pvDriverStatus"] == "notRunning" and vm["toolsVersion"] == ""
        vol = await restore_block0(h, block0[:16] + b"X" + block0[17:])
        assert (await create_and_boot(h, "garbled", vol))["pvDriverStatus"] == "notRunning"


def test_fctui_sim_sites_serves_each_site() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "fctui.cli", "sim", "--sites", "2", "--port", "0", "--vms", "0",
                             "--fail-boot", "db-*"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        urls = []
        while len(urls) < 2:
            line = proc.stdout.readline()
            assert line, "fctui sim ended early"
            if line.startswith("FusionCompute VRM simulator: "):
                urls.append(line.split()[3])
                assert f"site-0{len(urls)}" in line
        infos = [httpx.get(u + "/sim/info").json() for u in urls]
        assert [i["siteName"] for i in infos] == ["site-01", "site-02"]
        assert infos[0]["siteUrn"] != infos[1]["siteUrn"]
        assert httpx.get(urls[1] + "/sim/boot-failures").json() == {"names": ["db-*"]}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


@pytest.mark.parametrize("bad", [{"site_index": -1}, {"boot_seconds": -1}])
def test_config_refuses(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimConfig(**bad)
