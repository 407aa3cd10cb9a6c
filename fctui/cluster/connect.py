"""One connection to the cluster's NATS, and the stream, consumer and buckets every proxy shares.

Every agent, client and console that starts creates what is missing; creating what already exists with
the same settings is a no-op for JetStream, and one that exists with other settings (another proxy
started with other timings) is used as it is, so several agents starting at once never fail each other.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api
from nats.js.kv import KeyValue

from ..jobs.model import JobError
from .layout import (AGENTS_BUCKET, JOBS_BUCKET, SLOTS_BUCKET, WORK_CONSUMER, WORK_STREAM, WORK_SUBJECT_JOB,
                     WORK_SUBJECT_VM, ClusterSettings)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0   # an unreachable cluster is told at once, not after nats-py's minutes of retries
MAX_ACK_PENDING = 100_000  # every VM of every job may be in progress at once; capacity is the agents' business


class ClusterError(JobError):
    """The cluster cannot be used (unreachable, refused, lost): one line for the user."""


class Cluster:
    """A connection to the cluster: ``nc`` (NATS), ``js`` (JetStream), the three buckets, the settings."""

    def __init__(self, url: str, settings: ClusterSettings, nc: Client, js: Any,
                 jobs_kv: KeyValue, slots_kv: KeyValue, agents_kv: KeyValue) -> None:
        self.url = url
        self.settings = settings
        self.nc = nc
        self.js = js
        self.jobs_kv = jobs_kv
        self.slots_kv = slots_kv
        self.agents_kv = agents_kv

    @classmethod
    async def connect(cls, url: str, settings: ClusterSettings | None = None, *,
                      timeout: float = CONNECT_TIMEOUT_S) -> "Cluster":
        """Connect and make sure the stream, the consumer and the buckets exist. Raises
        :class:`ClusterError` "cannot reach the cluster at URL: ..." when no server answers in ``timeout``."""
        settings = settings or ClusterSettings()
        last_error: list[BaseException] = []

        async def on_error(e: Exception) -> None:
            last_error[:] = [e]
            log.debug("cluster connection %s: %s", url, e)

        nc = Client()
        try:
            # Reconnect forever once connected (a proxy outlives a NATS restart); the first connection
            # is bounded here instead.
            await asyncio.wait_for(nc.connect(url, connect_timeout=min(2.0, timeout), error_cb=on_error,
                                              max_reconnect_attempts=-1, reconnect_time_wait=1.0,
                                              name="fctui"), timeout)
        except (asyncio.TimeoutError, OSError, nats.errors.Error) as e:
            await _quiet_close(nc)
            why = last_error[0] if last_error else e
            raise ClusterError(f"cannot reach the cluster at {url}: {_one_line(why)}") from None
        except BaseException:
            await _quiet_close(nc)
            raise
        try:
            js = nc.jetstream()
            await _ensure_stream(js, settings)
            await _ensure_consumer(js, settings)
            jobs_kv = await _ensure_bucket(js, api.KeyValueConfig(bucket=JOBS_BUCKET, history=1))
            slots_kv = await _ensure_bucket(js, api.KeyValueConfig(bucket=SLOTS_BUCKET, history=1,
                                                                   ttl=settings.slot_ttl_s),
                                            expiry_markers=settings.slot_ttl_s)
            agents_kv = await _ensure_bucket(js, api.KeyValueConfig(bucket=AGENTS_BUCKET, history=1,
                                                                    ttl=settings.agent_ttl_s),
                                             expiry_markers=settings.agent_ttl_s)
        except nats.js.errors.ServiceUnavailableError:
            await _quiet_close(nc)
            raise ClusterError(f"the cluster at {url} has no JetStream: start nats-server with -js") from None
        except (asyncio.TimeoutError, nats.errors.Error) as e:
            await _quiet_close(nc)
            raise ClusterError(f"cannot set up the cluster at {url}: {_one_line(e)}") from None
        except BaseException:
            await _quiet_close(nc)
            raise
        return cls(url, settings, nc, js, jobs_kv, slots_kv, agents_kv)

    async def close(self) -> None:
        """Flush what was published and disconnect."""
        if self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except Exception:   # a lost server: nothing left to flush
            await _quiet_close(self.nc)

    async def __aenter__(self) -> "Cluster":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text and text[0] else type(e).__name__


async def _quiet_close(nc: Client) -> None:
    try:
        await nc.close()
    except Exception:
        pass


async def _ensure_stream(js: Any, settings: ClusterSettings) -> None:
    config = api.StreamConfig(name=WORK_STREAM, subjects=[WORK_SUBJECT_JOB, WORK_SUBJECT_VM],
                              retention=api.RetentionPolicy.WORK_QUEUE, storage=api.StorageType.FILE)
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:   # exists with other settings: use it as it is
        await js.stream_info(WORK_STREAM)


async def _ensure_consumer(js: Any, settings: ClusterSettings) -> None:
    config = api.ConsumerConfig(durable_name=WORK_CONSUMER, ack_policy=api.AckPolicy.EXPLICIT,
                                deliver_policy=api.DeliverPolicy.ALL, ack_wait=settings.ack_wait_s,
                                max_ack_pending=MAX_ACK_PENDING, max_deliver=-1)
    try:
        await js.add_consumer(WORK_STREAM, config)
    except nats.js.errors.BadRequestError:   # exists with other timings (another proxy's): keep them
        info = await js.consumer_info(WORK_STREAM, WORK_CONSUMER)
        if info.config.ack_wait and abs(info.config.ack_wait - settings.ack_wait_s) > 0.001:
            log.warning("the cluster's work consumer has ack_wait %.1f s (this agent was given %.1f s)",
                        info.config.ack_wait, settings.ack_wait_s)


async def _ensure_bucket(js: Any, config: api.KeyValueConfig, expiry_markers: float | None = None) -> KeyValue:
    """Create (or open) a bucket. ``expiry_markers``: entries that expire leave a marker watchers see
    (nats-server 2.11+), living that long; without server support expiry is only found by asking."""
    if expiry_markers:
        try:
            return await js.create_key_value(config.evolve(limit_marker_ttl=expiry_markers))
        except nats.js.errors.KeyValueLimitMarkerTTLNotSupportedError:
            pass
        except nats.js.errors.BadRequestError:
            return await js.key_value(config.bucket)
    try:
        return await js.create_key_value(config)
    except nats.js.errors.BadRequestError:
        return await js.key_value(config.bucket)


async def entries(kv: KeyValue, keys: str = ">") -> dict[str, KeyValue.Entry]:
    """The current entries of ``kv`` under ``keys`` (a NATS subject pattern, e.g. ``vm.J1.*``), deleted
    and expired ones left out: one ordered consumer, not one request per key."""
    watcher = await kv.watch(keys, ignore_deletes=True)
    out: dict[str, KeyValue.Entry] = {}
    try:
        while True:
            entry = await watcher.updates(timeout=10.0)
            if entry is None:
                return out
            out[entry.key] = entry
    finally:
        await watcher.stop()
