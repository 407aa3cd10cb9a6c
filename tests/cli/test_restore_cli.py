"""``fctui restore`` without ``--confirm``: prints the plan and changes nothing on the VRM (simulator on a
loopback socket, the CLI logging in with its own client as a user would)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from tests.conftest import small_disks
from tests.jobs.test_restore_engine import backup
from tests.servers import sim_control

from fctui.cli import build_parser
from fctui.repo import Repository
from fctui.vrm import VrmClient


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, str]]:
    """A simulator on loopback, a repository with one restore point of a multi-disk VM."""
    from fctui.sim import EmbeddedSimulator
    cfg = small_disks()
    repo_dir = tmp_path_factory.mktemp("cli") / "repo"
    with EmbeddedSimulator(cfg) as es:
        async def make_point() -> str:
            repo = Repository.open(repo_dir)
            async with VrmClient(es.url, cfg.user, cfg.password) as client:
                async with sim_control(es.url) as ctl:
                    ready = (await ctl.get("/sim/edge-cases")).json()["ready"]
                vm = next(v for v in [await client.vm(x) for x in ready] if len(v.disks) > 1)
                return await backup(client, repo, vm.name, "cli-b1")
        point_id = asyncio.run(make_point())
        yield es, str(repo_dir), point_id


def cli(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def vrm_state(url: str) -> tuple[Any, ...]:
    """What a change would show: VRM tasks (every creating, deleting or power operation is one), volumes,
    VMs, live snapshots and backup resources."""
    with httpx.Client(base_url=url) as ctl:
        stats = ctl.get("/sim/stats").json()

    async def listing() -> tuple[int, int, int]:
        async with VrmClient(url, "admin", "Admin@123") as c:
            site = (await c.sites())[0].uri
            return (len(await c.tasks(site)), len(await c.volumes(site)),
                    len(await c.vms(site, detail=0, templates=None)))
    return (*asyncio.run(listing()), stats["liveSnapshotsPerVm"], stats["resourcesPerHost"])


@pytest.mark.parametrize("target", ["new", "original", "disk"])
def test_without_confirm_prints_the_plan_and_changes_nothing(served: Any, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str], target: str) -> None:
    es, repo_dir, point_id = served
    monkeypatch.setenv("FCTUI_PASSWORD", "Admin@123")
    point = Repository.open(repo_dir).point(point_id)
    extra = ["--disk", point.disks[1].disk_name] if target == "disk" else []
    before = vrm_state(es.url)
    ns = cli(["restore", point_id, "--to", target, "--name", "cli-new", "--vrm", es.url, "--user", "admin",
              "--repo", repo_dir, *extra])
    code = ns.func(ns)
    out = capsys.readouterr().out
    assert vrm_state(es.url) == before  # only GETs reached the VRM, nothing was created
    assert "nothing changed: add --confirm" in out or "BLOCKED" in out
    if target == "original":  # the VM runs and no --stop-vm: an overwrite is refused
        assert code == 1 and "restore-overwrite-running" in out and "BLOCKED" in out
    else:
        assert code == 0
        assert "will create" in out and "will OVERWRITE" not in out
    if target == "disk":
        assert point.disks[1].disk_name in out and point.disks[0].disk_name not in out


def test_json_plan_and_errors(served: Any, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    es, repo_dir, point_id = served
    monkeypatch.setenv("FCTUI_PASSWORD", "Admin@123")
    point = Repository.open(repo_dir).point(point_id)
    before = vrm_state(es.url)
    ds = point.disks[0].datastore_urn
    ns = cli(["restore", point_id, "--to", "new", "--datastore", ds, "--json", "--vrm", es.url, "--user", "admin",
              "--repo", repo_dir])
    assert ns.func(ns) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["job"] is None and doc["state"] == "planned"
    assert [v["source"] for v in doc["volumes"]] == [d["volumeUrn"] for d in point.vm_config["disks"]
                                                     if point.disk(d["volumeUrn"])]
    assert {d["target_datastore_urn"] for d in doc["plan"]["disks"]} == {ds}
    assert vrm_state(es.url) == before

    ns = cli(["restore", "nope", "--to", "new", "--vrm", es.url, "--user", "admin", "--repo", repo_dir])
    assert ns.func(ns) == 1
    assert "nope" in capsys.readouterr().err
    ns = cli(["restore", point_id, "--to", "new"])
    assert ns.func(ns) == 2
    ns = cli(["restore", point_id, "--to", "disk", "--vrm", es.url, "--user", "admin", "--repo", repo_dir])
    assert ns.func(ns) == 1
    assert "--disk" in capsys.readouterr().err
    ns = cli(["restore", point_id, "--to", "new", "--datastore", "a", "b", "--vrm", es.url, "--user", "admin",
              "--repo", repo_dir])
    assert ns.func(ns) == 1
    assert "datastores given" in capsys.readouterr().err
    assert vrm_state(es.url) == before


def test_repo_path_must_exist(tmp_path: Path, served: Any, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    es, _, point_id = served
    monkeypatch.setenv("FCTUI_PASSWORD", "Admin@123")
    ns = cli(["restore", point_id, "--to", "new", "--vrm", es.url, "--user", "admin", "--repo", str(tmp_path / "x")])
    assert ns.func(ns) == 1
    assert "no repository" in capsys.readouterr().err
