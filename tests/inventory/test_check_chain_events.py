"""cbt-chain-broken from VRM data alone: each chain-breaking control event of the simulator leaves a VRM
task behind, and ``gather`` with what the product knows of the last backup finds it in the task list."""

from __future__ import annotations

import time

import httpx
import pytest

from fctui.inventory.gather import gather
from fctui.rules.engine import classify_task_type
from fctui.rules.facts import BackupKnowledge, VolumeCbtState
from fctui.sim import Simulator
from fctui.sim.ops import EVENT_TASKS
from fctui.vrm import VrmClient

# event -> (the cause the rules name, whether the finding concerns one disk only)
EXPECTED = {
    "power-off": ("power-off", False),
    "ha-restart": ("HA restart", False),
    "snapshot-revert": ("snapshot revert", False),
    "volume-expansion": ("volume expansion", True),
    "host-reboot": ("host reboot", False),
}


def _urn_of(sim: Simulator, name: str) -> str:
    return next(sim.vm_urn(v) for v in sim.vms.values() if v.name == name)


def test_event_task_types_are_the_ones_the_rules_classify() -> None:
    assert set(EVENT_TASKS) == set(EXPECTED)
    for event, task_type in EVENT_TASKS.items():
        assert classify_task_type(task_type)[1] == EXPECTED[event][0], task_type


@pytest.mark.parametrize("event", sorted(EXPECTED))
async def test_event_breaks_the_chain_seen_through_the_task_list(
        event: str, client: VrmClient, control: httpx.AsyncClient, sim: Simulator) -> None:
    urn = _urn_of(sim, "edge-ready-euleros-02")  # three disks, running, Tools, supported storage
    vid = urn.rsplit(":", 1)[1]
    uri = "/service/" + urn[4:].replace(":", "/")
    if event == "snapshot-revert":
        # something to revert to (a normal snapshot: it says nothing about the CBT position)
        ref = await client.create_snapshot(uri, "before-change", type="normal")
        await client.wait_task(ref, timeout=30, interval=0.01, max_interval=0.05)
    vm = await client.vm(uri)
    # The knowledge matches the VRM's current state exactly -- same sizes, the VM's status at that
    # backup is its status after the event -- so only the task list can tell what happened.
    vols = {d.volume_urn: VolumeCbtState(d.volume_urn, "2026-01-01 00:00:00", "3") for d in vm.disks}
    after_status = "stopped" if event == "power-off" else "running"
    know = {urn: BackupKnowledge(last_backup_time=time.time() - 1, volumes=vols, last_vm_status=after_status)}
    before = (await gather(client, knowledge=know)).by_urn()[urn][1]
    assert not before.has("cbt-chain-broken"), before.findings

    r = await control.post(f"/sim/vms/{vid}/events", json={"event": event})
    r.raise_for_status()
    body = r.json()
    task = await client.task(body["taskUri"])
    assert task.type == EVENT_TASKS[event] and task.status == "success"
    assert task.user in ("system", "other-admin")

    inv = await gather(client, knowledge=know)
    a = inv.by_urn()[urn][1]
    chain = next((f for f in a.findings if f.rule == "cbt-chain-broken"), None)
    assert chain is not None, f"{event}: {a.rules}"
    cause, one_disk = EXPECTED[event]
    assert cause in chain.message, chain.message
    disks = [d.volume_urn for d in vm.disks]
    if one_disk:
        assert chain.disks == [task.entity_urn] and task.entity_urn in disks
    else:
        assert sorted(chain.disks) == sorted(disks)
    # without knowledge of a backup there is nothing to compare with
    assert not (await gather(client)).by_urn()[urn][1].has("cbt-chain-broken")


async def test_tasks_before_the_last_backup_do_not_count(client: VrmClient, control: httpx.AsyncClient,
                                                         sim: Simulator) -> None:
    urn = _urn_of(sim, "edge-ready-euleros-01")
    vid = urn.rsplit(":", 1)[1]
    (await control.post(f"/sim/vms/{vid}/events", json={"event": "ha-restart"})).raise_for_status()
    vm = await client.vm(urn)
    vols = {d.volume_urn: VolumeCbtState(d.volume_urn, "2026-01-01 00:00:00", "3") for d in vm.disks}
    # a backup taken after the HA restart: the chain is whole again
    know = {urn: BackupKnowledge(last_backup_time=time.time() + 2, volumes=vols)}
    assert not (await gather(client, knowledge=know)).by_urn()[urn][1].has("cbt-chain-broken")
