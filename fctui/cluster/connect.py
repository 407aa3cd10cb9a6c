"""One connection to the cluster's NATS, and the stream, consumer and buckets every proxy shares.

Every agent, client and console that starts creates what is missing; creating what already exists with
the same settings is a no-op for JetStream, and one that exists with other settings (another proxy
started with other timings) is used as it is, so several agents starting at once never fail each other.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
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
                 jobs_kv: KeyValue, slots_kv: KeyValue | None, agents_kv: KeyValue | None) -> None:
        # slots_kv and agents_kv are None only on a client's connection (``connect(proxy=False)``)
        self.url = url
        self.settings = settings
        self.nc = nc
        self.js = js
        self.jobs_kv = jobs_kv
        self.slots_kv = slots_kv
        self.agents_kv = agents_kv

    @classmethod
    async def connect(cls, url: str, settings: ClusterSettings | None = None, *,
                      timeout: float = CONNECT_TIMEOUT_S, proxy: bool = True) -> "Cluster":
        """Connect and make sure the stream, the consumer and the buckets exist. Raises
        :class:`ClusterError` "cannot reach the cluster at URL: ..." when no server answers in ``timeout``.

        ``proxy`` False (a client: the CLI, a console): only what a client writes is created (the stream
        for its job items, the JOBS bucket); the consumer and the expiring buckets carry the proxies'
        timings, so a client that comes first must not fix them with its defaults. Its ``slots_kv`` and
        ``agents_kv`` are None until a proxy has created them."""
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
            jobs_kv = await _ensure_bucket(js, api.KeyValueConfig(bucket=JOBS_BUCKET, history=1))
            if not proxy:
                return cls(url, settings, nc, js, jobs_kv, await existing_bucket(js, SLOTS_BUCKET),
                           await existing_bucket(js, AGENTS_BUCKET))
            ack_wait = await _ensure_consumer(js, settings)
            slots_kv = await _ensure_bucket(js, api.KeyValueConfig(bucket=SLOTS_BUCKET, history=1,
                                                                   ttl=settings.slot_ttl_s),
                                            expiry_markers=settings.slot_ttl_s)
            agents_kv = await _ensure_bucket(js, api.KeyValueConfig(bucket=AGENTS_BUCKET, history=1,
                                                                    ttl=settings.agent_ttl_s),
                                             expiry_markers=settings.agent_ttl_s)
            settings = _effective(settings, ack_wait, (await slots_kv.status()).ttl,
                                  (await agents_kv.status()).ttl)
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


async def _ensure_consumer(js: Any, settings: ClusterSettings) -> float | None:
    """Create (or find) the shared consumer; its ack_wait as JetStream has it."""
    config = api.ConsumerConfig(durable_name=WORK_CONSUMER, ack_policy=api.AckPolicy.EXPLICIT,
                                deliver_policy=api.DeliverPolicy.ALL, ack_wait=settings.ack_wait_s,
                                max_ack_pending=MAX_ACK_PENDING, max_deliver=-1)
    try:
        info = await js.add_consumer(WORK_STREAM, config)
    except nats.js.errors.BadRequestError:   # exists with other timings (another proxy's): keep them
        info = await js.consumer_info(WORK_STREAM, WORK_CONSUMER)
    return info.config.ack_wait


def _effective(settings: ClusterSettings, ack_wait: float | None, slot_ttl: float | None,
               agent_ttl: float | None) -> ClusterSettings:
    """The timings the cluster already has (the first proxy's) win over this one's: a slot renewed at a
    third of *this* agent's slot_ttl in a bucket whose entries live shorter would expire while held."""
    found = {k: v for k, v in (("ack_wait_s", ack_wait), ("slot_ttl_s", slot_ttl), ("agent_ttl_s", agent_ttl))
             if v and abs(v - getattr(settings, k)) > 0.001}
    if not found:
        return settings
    log.warning("the cluster at its timings (%s), not this agent's",
                ", ".join(f"{k} {v:g} s instead of {getattr(settings, k):g}" for k, v in found.items()))
    try:
        return replace(settings, **found)
    except ValueError as e:   # mixed timings left by proxies started differently: keep the safe side
        raise ClusterError(f"the cluster's timings do not fit together ({e}): recreate its consumer and "
                           "buckets with one set of timings") from None


async def existing_bucket(js: Any, name: str) -> KeyValue | None:
    """The bucket ``name`` if it exists (never created: see ``Cluster.connect(proxy=False)``)."""
    try:
        return await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        return None


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


LISTING_IDLE_S = 5.0   # a listing's consumer the server has not deleted goes after this (nats-py: 5 min)


async def entries(kv: KeyValue, keys: str = ">") -> dict[str, KeyValue.Entry]:
    """The current entries of ``kv`` under ``keys`` (a NATS subject pattern, e.g. ``vm.J1.*``), deleted
    and expired ones left out: one ordered consumer of each key's last message, not one request per key.

    Not nats-py's ``KeyValue.watch``: its "initial values done" marker can come before values the server
    has already sent (its consumer then has nothing pending and none received yet), so now and then a
    listing came back empty; and its consumer outlived the listing by five minutes, so a thousand
    listings within that time hit the server's consumer limit and every later one failed. Here the end
    is the message with nothing pending after it, an empty listing is the consumer's word that it has
    nothing to deliver, and the consumer is deleted at the end."""
    from nats.js.kv import KV_DEL, KV_MARKER_REASON, KV_OP, KV_PURGE
    js, stream, prefix = kv._js, kv._stream, kv._pre   # the bucket's stream, as nats-py's own methods use it
    got: asyncio.Queue[Any] = asyncio.Queue()
    sub = await js.subscribe(prefix + keys, stream=stream, cb=got.put, ordered_consumer=True,
                             deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT, inactive_threshold=LISTING_IDLE_S)
    out: dict[str, KeyValue.Entry] = {}
    name = ""
    try:
        info = await sub.consumer_info()
        name = info.name
        if not info.num_pending and not info.delivered.consumer_seq:
            return out
        while True:
            try:
                msg = await asyncio.wait_for(got.get(), 10.0)
            except asyncio.TimeoutError:
                raise ClusterError("the cluster stopped answering while listing its records") from None
            meta = msg.metadata
            key = msg.subject[len(prefix):]
            headers = msg.header or {}
            if headers.get(KV_OP) in (KV_DEL, KV_PURGE) or KV_MARKER_REASON in headers or not msg.data:
                out.pop(key, None)
            else:
                out[key] = KeyValue.Entry(bucket=kv._name, key=key, value=msg.data, revision=meta.sequence.stream,
                                          delta=meta.num_pending, created=meta.timestamp,
                                          operation=headers.get(KV_OP))
            if not meta.num_pending:
                return out
    finally:
        try:
            await sub.unsubscribe()
            if name:
                await js.delete_consumer(stream, name)
        except nats.errors.Error:   # gone already, or the connection is: the idle limit removes it
            pass


async def current(kv: KeyValue, key: str) -> KeyValue.Entry | None:
    """The live entry of ``key``: None when it is absent, deleted or expired (the marker an expired entry
    leaves has no value; the cluster's values never are empty)."""
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None
    return entry if entry.value else None


async def create(kv: KeyValue, key: str, data: bytes) -> int:
    """Create ``key`` (KeyWrongLastSequenceError when it has a live value). nats-py's ``create`` takes
    the place of a deleted key but not of an expired one (the server's marker is no KV delete): without
    this a dead proxy's slot would stay taken until its marker expires too, twice slot_ttl."""
    try:
        return await kv.create(key, data)
    except nats.js.errors.KeyWrongLastSequenceError:
        pass
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:   # gone meanwhile
        return await kv.create(key, data)
    if entry.value:
        raise nats.js.errors.KeyWrongLastSequenceError(description=f"{key} exists")
    return await kv.update(key, data, last=entry.revision)
