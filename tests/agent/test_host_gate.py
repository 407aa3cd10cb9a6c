"""The per-host snapshot/resource gate as an operator turns it on (issue 14 item 9): a profile's
``host_snapshot_gate = true`` or ``--host-snapshot-gate`` reaches the job agent's runner, so a VRM that
refuses a CBT snapshot while any backup resource is prepared on its host still backs up every VM."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from tests.conftest import AgentProc, small_disks
from tests.jobs.test_fidelity_jobs import ONE_HOST
from tests.servers import sim_control

from fctui.cli import build_parser, main
from fctui.cli.common import connection_from
from fctui.config import Profile, load_config, save_profile


@pytest.fixture
def strict_es() -> Iterator[Any]:
    from fctui.sim import EmbeddedSimulator
    cfg = small_disks(0.005)
    cfg.cbt_snapshot_resource_scope = "host"   # the stricter reading of the engineering notes
    with EmbeddedSimulator(cfg) as server:
        yield server


def test_the_setting_from_a_profile_or_the_flag(dirs: dict[str, str]) -> None:
    save_profile(Profile(name="p", vrm="https://prod:7443", user="ops", host_snapshot_gate=True))
    assert load_config().profile("p").host_snapshot_gate is True
    ns = build_parser().parse_args(["backup", "vm1"])
    assert connection_from(ns).job_options() == {"host_snapshot_gate": True}
    save_profile(Profile(name="p", vrm="https://prod:7443", user="ops"))
    for argv in (["--host-snapshot-gate", "backup", "vm1"], ["backup", "vm1", "--host-snapshot-gate"]):
        assert connection_from(build_parser().parse_args(argv)).host_snapshot_gate is True
    assert connection_from(build_parser().parse_args(["backup", "vm1"])).host_snapshot_gate is False


async def test_backup_with_the_profiles_gate_succeeds_on_a_strict_vrm(
        strict_es: Any, agent: AgentProc, dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    es = strict_es
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    save_profile(Profile(name="strict", vrm=es.url, user=es.sim.config.user, host_snapshot_gate=True))
    await agent.start("--per-host", "2")   # the third VM's snapshot comes while two VMs read their disks
    rc = await asyncio.to_thread(main, ["backup", *ONE_HOST, "--wait", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert out["state"] == "succeeded" and len(out["restore_points"]) == len(ONE_HOST)
    async with sim_control(es.url) as ctl:
        stats = (await ctl.get("/sim/stats")).json()
    assert stats["cbtSnapshotsWithHostResource"] == 0 and stats["cbtSnapshotsRefusedForHostResource"] == 0
    assert Path(dirs["FCTUI_DATA_DIR"], "repo").is_dir()
