"""A client with no agent and no VRM password drives real proxies: ``submit`` through ClusterClient, two
in-process ClusterAgents (fctui.agent.cluster) back the VMs up from the simulator, the client follows the
job to its end with progress and log lines, and ``fctui jobs --cluster`` lists it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from fctui.agent.cluster_client import ClusterClient
from fctui.jobs.model import JobRecord
from tests.cluster.test_cluster_agent import FAST, VM_NAMES, Proxies, es, urn_of  # noqa: F401 -- fixture


@pytest.fixture
async def proxies(nats_server: Any, es: Any, tmp_path: Path) -> AsyncIterator[Proxies]:
    p = Proxies(nats_server.url, es, tmp_path / "repo")
    await p.connect()
    yield p
    await p.close()


async def test_a_client_submits_and_follows_a_job_the_proxies_run(nats_server: Any, es: Any, proxies: Proxies,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    await proxies.start("proxy-1")
    await proxies.start("proxy-2")
    client = ClusterClient(nats_server.url, FAST)
    try:
        assert (await client.request("hello"))["agents"] == ["proxy-1", "proxy-2"]
        targets = [urn_of(es, n) for n in VM_NAMES[:2]]
        job_id = (await client.request("submit", targets=targets, vrm=es.url, user=es.sim.config.user,
                                       password=es.sim.config.password, verify=True))["job"]
        events: list[dict[str, Any]] = []
        final = JobRecord.from_dict(await asyncio.wait_for(client.wait(job_id, events.append), 90))
    finally:
        await client.close()
    assert final.state == "succeeded", (final.error, [(v.name, v.state, v.reason) for v in final.vms])
    assert sorted(v.urn for v in final.vms) == sorted(targets) and len(final.restore_points) == 2
    assert any(e.get("event") == "job" and any(v["state"] == "reading" for v in e["job"]["vms"]) for e in events)
    assert any(e.get("event") == "log" for e in events)
    assert events[-1] == {"event": "end", "job": job_id, "state": "succeeded"}

    from fctui.cli import main
    monkeypatch.setenv("FCTUI_CLUSTER", nats_server.url)
    assert await asyncio.to_thread(main, ["jobs", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [(j["job"], j["state"]) for j in listing["jobs"]] == [(job_id, "succeeded")]
