"""The volume listing helper process: over a loopback socket, ``gather`` reads the site's volumes in a
helper process of its own (a second VRM session) and reaches the same verdicts as reading them in
process; a refused volume listing is a gap either way, never a failure."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Iterator

import pytest

from fctui.inventory.gather import Inventory, _Gatherer, gather
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


# --- page sharing: the helper reads from the front, this process from the back ----------------------

@pytest.fixture(scope="module")
def es7() -> Iterator[EmbeddedSimulator]:
    # ~645 volumes: 7 pages, so there is something to share
    with EmbeddedSimulator(SimConfig(vms=300, seed=5)) as e:
        yield e


async def _slow_volume_pages(es: EmbeddedSimulator, ms: float) -> None:
    """Every volume page takes ``ms`` longer: the listing outlasts the VMs' assessment."""
    async with __import__("httpx").AsyncClient(base_url=es.url) as control:
        (await control.delete("/sim/faults")).raise_for_status()
        if ms:
            r = await control.post("/sim/faults", json={"path": "/volumes$", "method": "GET", "latency_ms": ms})
            r.raise_for_status()


def _volume_pages_of(client: VrmClient) -> list[str]:
    """The volume pages this client (not the helper) asks for, from now on."""
    seen: list[str] = []

    async def record(request: Any) -> None:
        if request.url.path.endswith("/volumes"):
            seen.append(request.url.params.get("offset", ""))

    client._http.event_hooks["request"].append(record)
    return seen


def _report(inv: Inventory) -> dict[str, dict[str, Any]]:
    # VM and template pages are listed concurrently: the order of arrival may differ between runs
    return {a.urn: a.to_json() for a in inv.assessments}


async def test_shared_volume_pages_give_the_same_result_as_one_process(es7: EmbeddedSimulator) -> None:
    async with VrmClient(es7.url, es7.sim.config.user, es7.sim.config.password, page_concurrency=1) as c:
        mine = _volume_pages_of(c)
        await _slow_volume_pages(es7, 80)
        try:
            shared = await gather(c, concurrency=1)
            taken = list(mine)
            mine.clear()
            here = await gather(c, concurrency=1, helper=False)
        finally:
            await _slow_volume_pages(es7, 0)
    pages = len(mine)
    assert pages >= 6
    # this process read some of the pages (from the back), the helper the others, none twice
    assert 0 < len(taken) < pages, (taken, pages)
    assert len(set(taken)) == len(taken) and "0" not in taken
    assert max(int(o) for o in taken) == max(int(o) for o in mine)
    assert shared.gaps == here.gaps == []
    assert shared.trees_fetched == here.trees_fetched > 0
    assert _report(shared) == _report(here)
    assert any(a.has("snapshot-limit") for a in shared.assessments)


async def test_helper_dying_mid_listing_still_gives_the_right_result(es7: EmbeddedSimulator) -> None:
    async with VrmClient(es7.url, es7.sim.config.user, es7.sim.config.password, page_concurrency=1) as c:
        here = await gather(c, concurrency=1, helper=False)
        await _slow_volume_pages(es7, 80)
        fault = es7.sim.faults[0]
        g = _Gatherer(c, None, {}, 1, time.time, provisional=False)
        killed = False

        async def kill_when_listing() -> None:
            nonlocal killed
            while not (g._helper is not None and fault.hits >= 2):   # the helper is past its first page
                await asyncio.sleep(0.01)
            g._helper.proc.kill()
            killed = True

        killer = asyncio.ensure_future(kill_when_listing())
        try:
            inv = None
            async for u in g.run():
                if u.kind == "final":
                    inv = u.inventory
        finally:
            killer.cancel()
            await _slow_volume_pages(es7, 0)
    assert killed
    assert inv is not None
    assert inv.gaps == []                 # read again here: nothing missing
    assert _report(inv) == _report(here)
    assert sum(1 for s in es7.sim.sessions.values() if not s.expired) >= 1


async def test_pages_taken_before_the_helper_started_agree(es: EmbeddedSimulator, client: VrmClient) -> None:
    """A small site: this process is idle before the helper has read its first page; whatever it
    takes (never the first page, never a page twice), the verdicts are those of one process."""
    mine = _volume_pages_of(client)
    shared = await gather(client)
    assert "0" not in mine and len(set(mine)) == len(mine)
    here = await gather(client, helper=False)
    assert _report(shared) == _report(here)



PREFORK_SCRIPT = r"""
import asyncio, json, os, sys
from fctui.inventory import gather as G
from fctui.vrm import VrmClient
url, user, password = sys.argv[1:4]
G.prefork_volume_helper()
pre = G._preforked
assert pre is not None
pid = pre[1].pid

async def main():
    async with VrmClient(url, user, password, page_concurrency=4) as c:
        forked = await G.gather(c)
        used = G._preforked is None and pre[1].poll() is not None   # taken, and it exited
        here = await G.gather(c, helper=False)
    return forked, here, used

forked, here, used = asyncio.run(main())
print(json.dumps({"used": used, "pid": pid, "requests": [forked.requests, here.requests],
                  "forked": sorted([a.urn, a.verdict, a.rules] for a in forked.assessments),
                  "here": sorted([a.urn, a.verdict, a.rules] for a in here.assessments),
                  "gaps": forked.gaps + here.gaps}))
"""


def test_a_forked_helper_is_taken_and_agrees_with_in_process(es: EmbeddedSimulator) -> None:
    """The refresh process forks its helper before its event loop starts; the first gather takes it
    (no interpreter start-up), it logs in, lists, logs out and exits like a spawned one. Run in a
    fresh interpreter: forking this threaded test process would not be safe."""
    import json
    import subprocess
    import sys

    n0 = _logins(es)
    out = subprocess.run([sys.executable, "-c", PREFORK_SCRIPT, es.url, es.sim.config.user,
                          es.sim.config.password], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["used"] and got["gaps"] == []
    assert got["forked"] == got["here"] and any("snapshot-limit" in r for _, _, r in got["forked"])
    assert got["requests"][0] < got["requests"][1]     # the helper read the volumes, not the gather
    assert _logins(es) - n0 == 2                        # the script's session and the helper's
    assert sum(1 for s in es.sim.sessions.values() if not s.expired) <= 1   # both logged out
