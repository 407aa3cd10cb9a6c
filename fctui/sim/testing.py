"""A small harness for tests that talk raw HTTP to an in-process simulator
(httpx.ASGITransport, base URL http://vrm.sim) on a ManualClock."""

from __future__ import annotations

import hashlib
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import httpx

from fctui.sim.app import create_app
from fctui.sim.generator import Simulator
from fctui.sim.state import ManualClock, SimConfig

ACCEPT = "application/json;version=8.1;charset=UTF-8"


class SimHarness:
    def __init__(self, sim: Simulator, clock: ManualClock, client: httpx.AsyncClient) -> None:
        self.sim = sim
        self.clock = clock
        self.client = client
        self.token = ""

    @property
    def site(self) -> str:
        return "/service/sites/" + self.sim.site.id

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.token, "Accept": ACCEPT}

    async def login(self) -> str:
        key = hashlib.sha256(self.sim.config.password.encode()).hexdigest()
        r = await self.client.post("/service/session", headers={
            "X-Auth-User": self.sim.config.user, "X-Auth-Key": key, "X-Auth-UserType": "2",
            "Accept": ACCEPT})
        r.raise_for_status()
        self.token = r.headers["X-Auth-Token"]
        return self.token

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.post(path, json=json,
                                      headers={**self.headers, **kw.pop("headers", {})}, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.put(path, json=json,
                                     headers={**self.headers, **kw.pop("headers", {})}, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.delete(path, headers={**self.headers, **kw.pop("headers", {})},
                                        **kw)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.sim.advance()

    async def wait_task(self, task_uri: str, step: float = 0.5, limit: float = 600) -> dict[str, Any]:
        """Move the clock until the task ends; return the final task object."""
        spent = 0.0
        while True:
            r = await self.get(task_uri)
            r.raise_for_status()
            t: dict[str, Any] = r.json()
            if t["status"] in ("success", "failed"):
                return t
            if spent >= limit:
                raise AssertionError(f"task {task_uri} still {t['status']} after {limit} s")
            self.advance(step)
            spent += step

    async def edge(self, rule: str) -> str:
        """URN of the first edge-case VM for a rule id."""
        r = await self.client.get("/sim/edge-cases")
        return str(r.json()[rule][0])

    def uri(self, urn: str) -> str:
        return self.sim.uri(urn)


@asynccontextmanager
async def sim_harness(config: SimConfig | None = None, *, login: bool = True,
                      sim: Simulator | None = None) -> AsyncIterator[SimHarness]:
    clock = ManualClock()
    if sim is None:
        sim = Simulator(config or SimConfig(sector_of_block=128), clock=clock)
    else:
        assert isinstance(sim.clock, ManualClock)
        clock = sim.clock
    transport = httpx.ASGITransport(app=create_app(sim))
    async with httpx.AsyncClient(transport=transport, base_url="http://vrm.sim") as client:
        h = SimHarness(sim, clock, client)
        if login:
            await h.login()
        yield h
