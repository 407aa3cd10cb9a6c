"""A restore stays on the source VM's CPU architecture (issue 15, bug 1): the datastores offered for an
x86_64 VM are reachable from x86_64 hosts (its own cluster first), the new VM's host is x86_64, and a
datastore that only aarch64 hosts reach is a ``restore-arch-mismatch`` blocker in the engine and the CLI.
Simulator on a loopback socket; one real backup of ``edge-ready-euleros-02`` (three 1 GiB disks)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator

import pytest
from tests.conftest import small_disks
from tests.jobs.test_restore_engine import backup

from fctui.jobs.restore import RestoreRequest, datastore_choices, plan_restore
from fctui.cli import build_parser
from fctui.repo import Repository
from fctui.rules import catalog as C
from fctui.vrm import VrmClient

VM = "edge-ready-euleros-02"
ARCH = "restore-arch-mismatch"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, str]]:
    """A simulator on loopback and a repository with one restore point of the x86_64 VM."""
    from fctui.sim import EmbeddedSimulator
    cfg = small_disks()
    repo_dir = tmp_path_factory.mktemp("arch") / "repo"
    with EmbeddedSimulator(cfg) as es:
        async def make_point() -> str:
            repo = Repository.open(repo_dir)
            async with VrmClient(es.url, cfg.user, cfg.password) as client:
                return await backup(client, repo, VM, "arch-b1")
        yield es, str(repo_dir), asyncio.run(make_point())


def _run(es: Any, fn: Any) -> Any:
    async def go() -> Any:
        async with VrmClient(es.url, "admin", "Admin@123") as client:
            return await fn(client)
    return asyncio.run(go())


async def _site(client: VrmClient, point_vm: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    site = (await client.sites())[0].uri
    hosts = {h.urn: h for h in await client.hosts(site)}
    stores = {d.urn: d for d in await client.datastores(site)}
    return await client.vm(point_vm), hosts, stores


def _arm_only(ds: Any, hosts: dict[str, Any]) -> bool:
    return bool(ds.hosts) and all(C.arch_family(hosts[h].arch) == C.ARM for h in ds.hosts)


def test_default_choices_and_host_stay_on_the_source_architecture_and_cluster(served: Any) -> None:
    es, repo_dir, point_id = served
    repo = Repository.open(repo_dir)
    point = repo.point(point_id)

    async def go(client: VrmClient) -> None:
        vm, hosts, stores = await _site(client, point.vm_urn)
        assert vm.arch == "x86_64" and point.vm_config.get("arch") == "x86_64"
        assert any(_arm_only(ds, hosts) and ds.storage_type == "NAS" for ds in stores.values())
        picked: dict[str, str] = {}
        for d in point.disks:
            choices = await datastore_choices(client, repo, point_id, d.volume_urn)
            first = next(c for c in choices if c.compatible)  # what the walkthrough highlights
            assert not _arm_only(first.datastore, hosts)
            assert {hosts[h].cluster_urn for h in first.datastore.hosts} == {vm.cluster_urn}
            assert first.in_source_cluster and vm.cluster_name in first.where
            for c in choices:
                if _arm_only(c.datastore, hosts):
                    assert not c.compatible and "aarch64" in c.reason and "x86_64" in c.reason
            picked[d.volume_urn] = first.datastore.urn
        plan = await plan_restore(client, repo, RestoreRequest(point_id, "new", datastores=picked))
        assert not plan.blockers and not [f for f in plan.findings if f.rule == ARCH]
        assert hosts[plan.location].arch == "x86_64" and hosts[plan.location].cluster_urn == vm.cluster_urn
    _run(es, go)


@pytest.mark.parametrize("target", ["new", "disk"])
def test_an_arm_only_datastore_is_a_blocker(served: Any, target: str) -> None:
    es, repo_dir, point_id = served
    repo = Repository.open(repo_dir)
    point = repo.point(point_id)

    async def go(client: VrmClient) -> None:
        _, hosts, stores = await _site(client, point.vm_urn)
        arm = next(ds for ds in stores.values() if _arm_only(ds, hosts) and ds.storage_type == "NAS")
        disk = point.disks[0]
        req = RestoreRequest(point_id, target, datastores={disk.volume_urn: arm.urn},
                             disk_volume=disk.volume_urn if target == "disk" else None)
        plan = await plan_restore(client, repo, req)
        found = [f for f in plan.blockers if f.rule == ARCH]
        assert plan.blocked and found and found[0].disks == [disk.volume_urn]
        assert arm.name in found[0].message and "x86_64" in found[0].message
        if target == "new":  # never an aarch64 host for the new VM
            assert plan.location == "" or C.arch_family(hosts[plan.location].arch) == C.X86
    _run(es, go)


def test_cli_dry_run_shows_the_blocker(served: Any, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    es, repo_dir, point_id = served
    monkeypatch.setenv("FCTUI_PASSWORD", "Admin@123")

    async def arm_nas(client: VrmClient) -> str:
        _, hosts, stores = await _site(client, Repository.open(repo_dir).point(point_id).vm_urn)
        return next(ds.urn for ds in stores.values() if _arm_only(ds, hosts) and ds.storage_type == "NAS")
    arm = _run(es, arm_nas)
    p = build_parser()
    base = ["restore", point_id, "--to", "new", "--datastore", arm, "--vrm", es.url, "--user", "admin",
            "--repo", repo_dir]
    ns = p.parse_args(base)
    assert ns.func(ns) == 1
    out = capsys.readouterr().out
    assert "BLOCKED" in out and ARCH in out and "aarch64" in out
    assert out.count(f"BLOCKER {ARCH}") == 1  # one datastore for every disk: said once
    ns = p.parse_args([*base, "--json"])
    ns.func(ns)
    doc = json.loads(capsys.readouterr().out)
    assert doc["plan"]["blocked"] and ARCH in {f["rule"] for f in doc["plan"]["findings"]}


def test_source_architecture_of_old_points(served: Any) -> None:
    """A point without ``vm_config.arch`` (older fctui): the original VM's, else the architecture of the hosts
    that reached the backed-up disks' datastores; with neither, a warning says it is unknown."""
    import dataclasses

    from fctui.jobs.restore import _original_vm, _pick_host, _source
    es, repo_dir, point_id = served
    point = Repository.open(repo_dir).point(point_id)
    old = dataclasses.replace(point, vm_config={k: v for k, v in point.vm_config.items() if k != "arch"})

    async def go(client: VrmClient) -> None:
        vm, hosts, stores = await _site(client, point.vm_urn)
        by_vm = await _source(client, old, stores, await _original_vm(client, old))
        assert by_vm.arch == C.X86 and by_vm.clusters == {vm.cluster_urn}
        by_disks = await _source(client, old, stores, None)      # the original VM is gone
        assert by_disks.arch == C.X86 and by_disks.clusters == {vm.cluster_urn}
        lost = dataclasses.replace(old, disks=[dataclasses.replace(d, datastore_urn="") for d in old.disks])
        unknown = await _source(client, lost, stores, None)
        f = unknown.unknown_arch()
        assert unknown.arch == "" and f is not None and f.rule == ARCH and f.severity == C.WARNING
        assert by_vm.unknown_arch() is None
        # with the architecture unknown the host is still picked among those that reach every disk
        plan = await plan_restore(client, Repository.open(repo_dir), RestoreRequest(point_id, "new"))
        picked = _pick_host(plan, stores, None, unknown)
        assert picked in hosts and all(picked in stores[d.target_datastore_urn].hosts for d in plan.disks)
    _run(es, go)
