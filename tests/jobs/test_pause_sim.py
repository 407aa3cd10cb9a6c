"""The pause estimator against the simulator's hidden per-host model (issue 6): it learns from real
snapshot tasks (their startTime/finishTime) and must then predict drawn pauses within 25 % (median)."""

from __future__ import annotations

import random
import statistics
from collections import defaultdict

import httpx
import pytest

from fctui.jobs.pause import PauseEstimator, PauseObservation, observed_pause_s
from fctui.vrm import VrmClient


@pytest.fixture
def sim_config():
    from fctui.sim import SimConfig
    # enough VMs that hosts of every performance class carry some (the default fixture has 30)
    return SimConfig(vms=200, seed=7, sector_of_block=128, time_scale=200.0)


async def test_estimator_learns_each_host_class_from_snapshot_tasks(client: VrmClient, control: httpx.AsyncClient,
                                                                    site_uri: str) -> None:
    truth = (await control.get("/sim/hosts")).json()
    klass = {h["urn"]: h["perfClass"] for h in truth["hosts"]}
    by_host: dict[str, list] = defaultdict(list)
    for vm in await client.vms(site_uri):
        if (not vm.name.startswith("edge-") and vm.status == "running" and vm.pv_driver_status == "running"
                and vm.tools_version and vm.disks and vm.host_urn in klass
                and all(d.pci_type != "IDE" and not d.is_shared and not d.indep_disk for d in vm.disks)):
            by_host[vm.host_urn].append(vm)
    rng = random.Random(3)
    est = PauseEstimator()
    errors: dict[str, list[float]] = defaultdict(list)
    for host, vms in by_host.items():
        for i in range(8):  # 5 to learn from, then 3 predictions
            vm = rng.choice(vms)
            disks, gb = len(vm.disks), float(sum(d.quantity_gb or 0 for d in vm.disks))
            before = est.estimate(host, disks, gb)
            ref = await client.create_snapshot(vm.uri, f"pause-test-{i}")
            task = await client.wait_task(ref, interval=0.01, max_interval=0.05, timeout=60)
            drawn = (await control.get("/sim/hosts")).json()["pauses"][-1]
            assert drawn["vm"] == vm.urn
            await client.wait_task(await client.delete_snapshot(ref.uri), interval=0.01, max_interval=0.05)
            if i >= 5:
                assert before.observations >= 5  # the prediction came from this host's own history
                errors[klass[host]].append(abs(before.seconds - drawn["pause_s"]) / drawn["pause_s"])
            observed = observed_pause_s(*task.times_ms())
            assert observed is not None
            est.observe(PauseObservation(host, disks, gb, observed, vm.urn))
    assert set(errors) == {"fast", "ordinary", "slow"}, "the seeded inventory has every host class"
    for k, errs in errors.items():
        assert statistics.median(errs) < 0.25, (k, errs)
