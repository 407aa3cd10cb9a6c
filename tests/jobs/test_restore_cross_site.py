"""Restore into another site (issue 19, item 2): a point of site A restored to a new VM on site B.

Two simulators of different sites (``tests/sites.py``: site-01 and site-02, other ids, names and port
groups) over in-process ASGI. One real backup of a small VM on A, then on B: the plan without a mapping
is one ``restore-unmapped`` blocker naming every disk, NIC and a bad location (the CLI's dry run lists
each); the suggested mapping is complete; with a mapping the restore is byte-identical (simulator digests
vs the point), each disk on the mapped datastore of the right storage class and architecture, each NIC
on its mapped port group or left out; the mapping is remembered for the site pair and the CLI uses it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, AsyncIterator

import httpx
import pytest
from tests.sites import asgi_client, asgi_control, base_url, two_site_sims
from tests.jobs.test_restore_engine import backup, digest, fast

from fctui.cli import build_parser
from fctui.cli.restore import build_request_and_plan, format_plan
from fctui.jobs.restore import RestoreRequest, plan_restore, restore_result, run_restore
from fctui.jobs.sitemap import (SiteMapError, SiteMappingStore, apply_mapping, point_datastores, point_port_groups,
                                remember, suggest_mapping)
from fctui.repo import Repository
from fctui.rules import catalog as C
from fctui.vrm import VrmClient
from fctui.vrm.urn import site_id

VM = "edge-ready-euleros-02"   # three 1 GiB disks on two datastores (2 % written), NICs on two port groups
UNMAPPED = "restore-unmapped"


async def cli_plan(client: VrmClient, repo: Repository, point_id: str, store: Any, *args: str) -> Any:
    """``fctui restore POINT --to new ARGS`` as far as the plan (what the dry run prints)."""
    ns = build_parser().parse_args(["restore", point_id, "--to", "new", "--vrm", "https://vrm-b", *args])
    ns.site_mappings = store
    return await build_request_and_plan(client, repo, ns)


class _Wire(httpx.AsyncBaseTransport):
    """What the client sent to the VRM (method, path, JSON body), then the simulator answers."""

    def __init__(self, inner: httpx.AsyncBaseTransport, seen: list[tuple[str, str, Any]]) -> None:
        self.inner, self.seen = inner, seen

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/vms"):  # a VM creation: small JSON
            self.seen.append((request.method, request.url.path, json.loads(await request.aread())))
        return await self.inner.handle_async_request(request)


@pytest.fixture
async def two_sites() -> AsyncIterator[tuple[Any, ...]]:
    from fctui.sim import create_app
    sims = two_site_sims()
    wire: list[tuple[str, str, Any]] = []
    b = VrmClient(base_url(sims[1]), sims[1].config.user, sims[1].config.password,
                  transport=_Wire(httpx.ASGITransport(app=create_app(sims[1])), wire))
    async with asgi_client(sims[0]) as a, b, asgi_control(sims[1]) as control_b:
        yield sims, a, b, control_b, wire


async def test_a_point_of_site_a_restores_into_site_b_with_a_mapping(two_sites: Any, tmp_path: Any) -> None:
    sims, client_a, client_b, control_b, wire = two_sites
    repo = Repository.open(tmp_path / "repo")
    point = repo.point(await backup(client_a, repo, VM, "b-a"))
    site_b = (await client_b.sites())[0].uri
    assert f"/service/sites/{site_id(point.vm_urn)}" != site_b
    arch = C.arch_family(point.vm_config["arch"])
    hosts = {h.urn: h for h in await client_b.hosts(site_b)}
    stores = {d.urn: d for d in await client_b.datastores(site_b)}
    groups = await client_b.port_groups(site_b)
    src_groups = list(point_port_groups(point))
    assert len(src_groups) == 2 and len(point.disks) == 3

    # No mapping (and a location that is not on B): one blocker naming every unmapped item.
    plan = await plan_restore(client_b, repo, RestoreRequest(point.id, "new", location="urn:sites:X:clusters:9"))
    assert plan.blocked and [f.rule for f in plan.blockers] == [UNMAPPED]
    msg = plan.blockers[0].message
    for d in point.disks:
        assert d.disk_name in msg and d.datastore_urn in msg
    for pg in src_groups:
        assert pg in msg
    assert "urn:sites:X:clusters:9" in msg and msg.count("; ") == len(point.disks) + len(src_groups)
    assert plan.blockers[0].disks == [d.volume_urn for d in point.disks]
    over = await plan_restore(client_b, repo, RestoreRequest(point.id, "original", stop_vm=True))
    assert over.blocked and [f.rule for f in over.blockers] == ["restore-original-missing"] and not over.disks
    store_path = tmp_path / "site-mappings.json"
    shown = format_plan((await cli_plan(client_b, repo, point.id, store_path))[1])
    assert "BLOCKED" in shown and shown.count("UNMAPPED ") == len(point.disks) + len(src_groups)

    # The console's defaults: every datastore and port group mapped, to the same storage class and arch.
    offered = suggest_mapping(point, plan.target_site, stores.values(), groups, arch=arch,
                              host_arch={u: h.arch for u, h in hosts.items()})
    names = point_datastores(point)
    assert {names[s]: stores[t].name for s, t in offered.datastores.items()} == \
        {n: n.replace("-cluster", "-dr-cluster").replace("-cna", "-dr-cna") for n in names.values()}
    pg_names = {g.urn: g.name for g in groups}
    assert {point_port_groups(point)[s]: pg_names[t] for s, t in offered.port_groups.items()} == \
        {"prod-net": "dr-prod-net", "app-net": "dr-app-net"}
    offered_req = apply_mapping(point, offered, RestoreRequest(point.id, "new"))
    assert not (await plan_restore(client_b, repo, offered_req)).blocked
    # Mapped by hand, on one host: each source datastore to another B datastore of its class that the
    # host reaches; the first port group to a B port group, the second to none.
    host = next(h for h in hosts.values() if C.arch_family(h.arch) == arch and h.cluster_name.endswith("02"))
    ds_map: dict[str, str] = {}
    for d in point.disks:
        if d.datastore_urn not in ds_map:
            fit = [s for s in stores.values() if host.urn in s.hosts and s.status == "NORMAL"
                   and C.storage_class(s.storage_type) == C.storage_class(d.storage_type)
                   and s.name != names[d.datastore_urn] and s.urn not in ds_map.values()]
            ds_map[d.datastore_urn] = max(fit, key=lambda s: s.usable_free_gb or 0).urn
    pg_map = {src_groups[0]: groups[-1].urn, src_groups[1]: ""}
    # The storage class and architecture rules judge the mapped datastores as on the point's own site.
    bad = {}
    for d in point.disks:
        if d.datastore_urn not in bad:
            bad[d.datastore_urn] = next(s.urn for s in stores.values() if (
                C.storage_class(s.storage_type) != C.storage_class(d.storage_type) if bad else
                C.storage_class(s.storage_type) == C.storage_class(d.storage_type)
                and {C.arch_family(hosts[h].arch) for h in s.hosts} == {C.ARM}))
    wrong = await plan_restore(client_b, repo, apply_mapping(point, dataclasses.replace(
        offered, datastores=bad), RestoreRequest(point.id, "new")))
    assert {f.rule for f in wrong.blockers} >= {"cross-storage-restore", "restore-arch-mismatch"}
    store = SiteMappingStore(store_path)
    mapping = dataclasses.replace(offered, datastores=ds_map, port_groups=pg_map, location=host.urn)
    req = apply_mapping(point, mapping, RestoreRequest(point.id, "new", name="from-site-a"))
    plan = await plan_restore(client_b, repo, req)
    assert not plan.blocked, plan.findings
    assert plan.location == host.urn and UNMAPPED in [rule for rule, _ in plan.checks]
    assert any("left out" in c for c in plan.creates)
    remember(point, req, plan.target_site, store)
    job = await run_restore(client_b, repo, plan, settings=fast())
    assert job.state == "succeeded", job.error

    res = restore_result(job)
    new = await client_b.vm(res["vm"])
    assert new.urn.startswith(f"urn:sites:{plan.target_site}:") and new.host_urn == host.urn
    by_vol = {d.volume_urn: d for d in new.disks}
    for v in res["volumes"]:
        src = point.disk(v["source"])
        assert v["verified"] is True
        assert await digest(control_b, v["target"]) == repo.open_disk(point.id, src.volume_urn).sha256()
        ds = stores[by_vol[v["target"]].datastore_urn]
        assert ds.urn == ds_map[src.datastore_urn]
        assert C.storage_class(ds.storage_type) == C.storage_class(src.storage_type)
        assert {C.arch_family(hosts[h].arch) for h in ds.hosts} == {arch}
    # Each NIC on its mapped port group, the one mapped to none left out: as sent to B's VRM, and as
    # B reports the VM (a simulator that keeps created NICs).
    kept = [n["name"] for n in point.vm_config["nics"] if n["portGroupUrn"] == src_groups[0]]
    assert kept and len(kept) < len(point.vm_config["nics"])
    sent = [body for method, path, body in wire if method == "POST" and path == f"{site_b}/vms"]
    assert [(n["name"], n["portGroupUrn"]) for n in sent[0]["vmConfig"]["nics"]] == [(k, groups[-1].urn) for k in kept]
    nics = new.raw["vmConfig"].get("nics") or []
    assert [(n["name"], n["portGroupUrn"]) for n in nics] == [(k, groups[-1].urn) for k in kept]

    # Remembered for the site pair: the next restore needs no mapping.
    again = apply_mapping(point, store.get(site_id(point.vm_urn), plan.target_site), RestoreRequest(point.id, "new"))
    assert (again.datastores, again.port_groups, again.location) == (req.datastores, pg_map, host.urn)
    # The CLI: what is not given comes from the remembered mapping; names resolve on site B.
    cli_req, cli = await cli_plan(client_b, repo, point.id, store_path, "--map-network", f"{src_groups[0]}=none",
                                  "--location", host.name)
    assert not cli.blocked and cli_req.datastores == req.datastores and cli_req.location == host.urn
    assert cli_req.port_groups == {src_groups[0]: "", src_groups[1]: ""}
    (tmp_path / "site-mappings.json").write_text("{damaged")
    with pytest.raises(SiteMapError, match="damaged"):
        remember(point, req, plan.target_site, store)
    assert (tmp_path / "site-mappings.json").read_text() == "{damaged"
