"""The volume listing helper process: over a loopback socket, ``gather`` reads the site's volumes in a
helper process of its own (a second VRM session) and reaches the same verdicts as reading them in
process; a refused volume listing is a gap either way, never a failure."""

from __future__ import annotations

from typing import AsyncIterator, Iterator

import pytest

from fctui.inventory.gather import gather
from fctui.sim import EmbeddedSimulator, SimConfig
from fctui.vrm import VrmClient


@pytest.fixture(scope="module")
def es() -> Iterator[EmbeddedSimulator]:
    # more than a page of volumes, and VMs with snapshots (edge cases)
    with EmbeddedSimulator(SimConfig(vms=60, seed=5)) as e:
        yield e


@pytest.fixture
async def client(es: EmbeddedSimulator) -> AsyncIterator[VrmClient]:
    async with VrmClient(es.url, es.sim.config.user, es.sim.config.password, page_concurrency=4) as c:
        yield c


def _logins(es: EmbeddedSimulator) -> int:
    return int(es.sim.stats["by_method"].get("POST", 0))


async def test_helper_reads_the_volumes_and_agrees_with_in_process(es: EmbeddedSimulator,
                                                                   client: VrmClient) -> None:
    assert client.clone_args() is not None
    n0 = _logins(es)
    with_helper = await gather(client)
    helper_logins = _logins(es) - n0
    n1 = _logins(es)
    here = await gather(client, helper=False)
    assert _logins(es) - n1 == 0          # in process: no second session
    assert helper_logins == 1             # the helper logged in once (its own session)
    assert with_helper.gaps == [] and here.gaps == []
    assert with_helper.trees_fetched == here.trees_fetched > 0
    # the helper's listing is not counted as this client's requests: ~1 page of volumes fewer at least
    assert with_helper.requests < here.requests
    verdicts = {a.urn: (a.verdict, a.rules) for a in here.assessments}
    assert {a.urn: (a.verdict, a.rules) for a in with_helper.assessments} == verdicts
    assert any(a.has("snapshot-limit") for a in with_helper.assessments)
    # the helper logged out: no session left behind besides ours
    assert sum(1 for s in es.sim.sessions.values() if not s.expired) == 1


async def test_refused_volume_listing_in_the_helper_is_a_gap(es: EmbeddedSimulator, client: VrmClient) -> None:
    async with __import__("httpx").AsyncClient(base_url=es.url) as control:
        r = await control.post("/sim/faults", json={"path": "/volumes$", "method": "GET", "status": 403,
                                                    "errorCode": "10000003"})
        r.raise_for_status()
        try:
            inv = await gather(client)
        finally:
            (await control.delete("/sim/faults")).raise_for_status()
    assert any("volumes not read" in g for g in inv.gaps), inv.gaps
    assert len(inv.facts) > 0


def test_no_helper_for_an_in_process_transport(sim_client_args: None = None) -> None:
    import httpx

    from fctui.sim import Simulator, create_app
    sim = Simulator(SimConfig(vms=5))
    c = VrmClient("http://vrm.sim", "admin", "x", transport=httpx.ASGITransport(app=create_app(sim)))
    assert c.clone_args() is None
    c2 = VrmClient("http://vrm.sim", "admin", lambda: "asked-late")
    assert c2.clone_args() is None
