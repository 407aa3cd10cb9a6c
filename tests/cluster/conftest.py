"""Connections to the test's NATS (fixture ``nats_server``) and a bounded wait for a state."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from fctui.cluster.connect import Cluster
from fctui.cluster.layout import ClusterSettings

# Short timings: slots expire within seconds; tests wait for states, bounded by multiples of these.
SHORT = ClusterSettings(ack_wait_s=1.0, slot_ttl_s=1.5, agent_ttl_s=2.0, progress_interval_s=0.1)


async def until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "the expected state") -> Any:
    """Poll ``cond`` (sync or async) until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def connect(nats_server: Any) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    """``await connect(settings=SHORT)``: a new connection (another "machine") to the test's NATS."""
    opened: list[Cluster] = []

    async def open_one(settings: ClusterSettings = SHORT) -> Cluster:
        cluster = await Cluster.connect(nats_server.url, settings)
        opened.append(cluster)
        return cluster

    yield open_one
    for cluster in opened:
        await cluster.close()
