"""Concurrent re-login without paging: many requests in flight get 401 at once when the session expires
under them; the client logs in again exactly once and every request succeeds with the right answer."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import sim_client
from fctui.sim import SimConfig, Simulator, create_app


@pytest.mark.parametrize("n", [20])
async def test_concurrent_gets_after_expiry_log_in_once(n: int) -> None:
    sim = Simulator(SimConfig(vms=40, seed=5))
    async with sim_client(sim) as c, httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sim)),
                                                      base_url="http://vrm.sim") as ctl:
        site = f"/service/sites/{sim.site.id}"
        vms = (await c.vms(site))[:n]
        assert len(vms) == n
        expected = [(v.urn, v.name, v.status) for v in vms]
        sessions_before = len(sim.sessions)
        # every VM GET waits 300 ms in the simulator (a wide margin on a loaded machine): all n are in
        # flight, with the old token, before the first 401 comes back; the fault's hit count says how
        # many requests reached the VRM
        r = await ctl.post("/sim/faults", json={"path": r"/vms/i-[0-9A-F]+$", "method": "GET", "latencyMs": 300})
        assert r.status_code < 300, r.text
        # and a login takes 300 ms too: the requests that got 401 meanwhile must wait for it, not log in
        r = await ctl.post("/sim/faults", json={"path": r"^/service/session$", "method": "POST", "latencyMs": 300})
        assert r.status_code < 300, r.text
        r = await ctl.post("/sim/tokens/expire", json={})
        assert r.status_code < 300, r.text
        old = c._token
        got = await asyncio.gather(*(c.vm(v.uri) for v in vms))
        assert [(v.urn, v.name, v.status) for v in got] == expected  # every request succeeded, in order
        assert len(sim.sessions) - sessions_before == 1                # one new session for all of them
        assert c._token != old
        hits = (await ctl.get("/sim/faults")).json()["faults"][0]["hits"]
        assert hits == 2 * n  # each request: once with the expired token (401), once more after the login
