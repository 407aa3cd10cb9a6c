"""A restore range written as several parts (the blocks of a coalesced range, never joined) and the
simulator storing a request body from its received pieces (never joined): the bytes that land on the
volume are the bytes sent, shown by digest, over the in-process ASGI path and a real loopback socket."""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import AsyncIterator, Iterator

import httpx
import pytest

from tests.servers import sim_control

from fctui.sim import EmbeddedSimulator, SimConfig, create_app
from fctui.sim.content import BlockFactory, DiskContent
from fctui.vrm import VrmClient
from fctui.vrm.errors import VrmApiError
from fctui.vrm.transport import HttpResourceTransport

BS = 4096


def _split(rnd: random.Random, data: bytes) -> list[bytes]:
    """``data`` cut at random places, with an empty piece now and then."""
    cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 12)))) if len(data) > 1 else []
    out, prev = [], 0
    for c in cuts + [len(data)]:
        out.append(data[prev:c])
        if rnd.random() < 0.1:
            out.append(b"")
        prev = c
    return out


def test_write_pieces_equals_one_body() -> None:
    """Pieces crossing block edges, partial first and last blocks, zeros over data: the volume equals a
    plain byte model after every write."""
    rnd = random.Random(7)
    size = 16 * BS + 1000  # the last block is short
    content = DiskContent(BlockFactory(1, BS), 1, 1, size, 0.0)
    model = bytearray(size)
    for _ in range(150):
        off = rnd.randrange(size)
        n = rnd.randint(1, min(size - off, 5 * BS))
        data = bytes(n) if rnd.random() < 0.2 else rnd.randbytes(n)
        content.write_pieces(off, _split(rnd, data), epoch=1)
        model[off:off + n] = data
        for b in {off // BS, (off + n - 1) // BS}:  # the edge blocks, merged with what was there
            assert content.block_bytes(content.live, b)[:len(model[b * BS:(b + 1) * BS])] == \
                model[b * BS:(b + 1) * BS]
    assert content.digest(content.live) == hashlib.sha256(model).hexdigest()


def test_whole_block_piece_is_kept_and_zero_block_stays_sparse() -> None:
    content = DiskContent(BlockFactory(1, BS), 1, 1, 8 * BS, 0.0)
    block = random.Random(1).randbytes(BS)
    content.write_pieces(2 * BS, [block, bytes(BS)], epoch=3)
    assert content.live.overlay[2][0] is block  # stored as received, no copy
    assert 3 not in content.live.overlay  # zeros over nothing: still sparse
    content.write_pieces(2 * BS + 10, [b"ab", b"", b"cd"], epoch=4)
    got = content.block_bytes(content.live, 2)
    assert got == block[:10] + b"abcd" + block[14:]


class _Recording(httpx.AsyncBaseTransport):
    """httpx's ASGI transport, remembering the PUT requests' headers."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.puts: list[httpx.Headers] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            self.puts.append(request.headers)
        return await self.inner.handle_async_request(request)


async def _restore_resource(client: VrmClient, name: str) -> tuple[str, str, str, str]:
    """(volume URI, volume id, task id, resource URL + token) of a fresh 1 GB volume's RestoreVol resource."""
    site = (await client.sites())[0]
    ds = next(d for d in await client.datastores(site.uri) if d.status == "NORMAL")
    ref = await client.create_volume(site.uri, name=name, quantity_gb=1, datastore_urn=ds.urn)
    await client.wait_task(ref, timeout=30, interval=0.02)
    vol = await client.volume(ref.uri)
    rref = await client.prepare_backup_resource(vol.uri, "RestoreVol", delay=300)
    res = await client.wait_backup_resource(vol.uri, rref.task_id, timeout=30, interval=0.02)
    return vol.uri, vol.urn.rsplit(":", 1)[-1], rref.task_id, f"{res.resource_url} {res.token}"


def _expected_digest(size: int, writes: list[tuple[int, bytes]]) -> str:
    vol = bytearray(size)
    for off, data in writes:
        vol[off:off + len(data)] = data
    return hashlib.sha256(vol).hexdigest()


async def test_parts_over_asgi_are_one_plain_body(sim_config: SimConfig) -> None:
    from fctui.sim import Simulator
    sim = Simulator(sim_config)
    rec = _Recording(httpx.ASGITransport(app=create_app(sim)))
    async with VrmClient("http://vrm.sim", sim.config.user, sim.config.password, transport=rec) as client:
        vol_uri, vol_id, task_id, url_token = await _restore_resource(client, "fctui-parts")
        url, token = url_token.split(" ")
        bs = sim.block_size
        rnd = random.Random(3)
        parts = [rnd.randbytes(bs), b"", bytearray(rnd.randbytes(bs // 2)), memoryview(rnd.randbytes(bs // 2 + 5))]
        off = 3 * bs + 7  # not block aligned: partial blocks at both ends
        size = 1 << 30
        async with HttpResourceTransport(url, token, size=size, transport=rec) as tr:
            await tr.write(off, parts)
            await tr.write(0, [])  # nothing to write: no request
        assert len(rec.puts) == 1
        h = rec.puts[0]
        total = sum(len(p) for p in parts)
        assert h["content-length"] == str(total) and "transfer-encoding" not in h
        assert h["content-range"] == f"bytes {off}-{off + total - 1}/{size}"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sim)),
                                     base_url="http://vrm.sim") as control:
            digest = (await control.get(f"/sim/volumes/{vol_id}/digest")).json()
        assert digest["sha256"] == _expected_digest(size, [(off, b"".join(bytes(p) for p in parts))])
        await client.release_backup_resource(vol_uri, task_id)


@pytest.fixture(scope="module")
def es() -> Iterator[EmbeddedSimulator]:
    with EmbeddedSimulator(SimConfig(vms=4, seed=11, time_scale=100.0)) as e:
        yield e


@pytest.fixture
async def loop_client(es: EmbeddedSimulator) -> AsyncIterator[VrmClient]:
    async with VrmClient(es.url, es.sim.config.user, es.sim.config.password) as c:
        yield c


async def test_parts_over_a_socket_async_and_from_threads(es: EmbeddedSimulator, loop_client: VrmClient) -> None:
    """Coalesced ranges of whole blocks, as the restore engine sends them: from the event loop and,
    several at once, from worker threads; the volume's digest equals the bytes sent."""
    vol_uri, vol_id, task_id, url_token = await _restore_resource(loop_client, "fctui-parts-socket")
    url, token = url_token.split(" ")
    bs = es.sim.block_size
    size = 1 << 30
    rnd = random.Random(5)
    writes = [(i * 4 * bs, [rnd.randbytes(bs) for _ in range(4)]) for i in range(6)]
    async with HttpResourceTransport(url, token, size=size) as tr:
        await tr.write(*writes[0])
        await asyncio.gather(*(asyncio.to_thread(tr.write_blocking, off, parts) for off, parts in writes[1:]))
    async with sim_control(es.url) as control:
        digest = (await control.get(f"/sim/volumes/{vol_id}/digest")).json()
    assert digest["sha256"] == _expected_digest(size, [(off, b"".join(p)) for off, p in writes])
    await loop_client.release_backup_resource(vol_uri, task_id)


async def test_a_deleted_volume_lets_go_of_its_restored_bytes(sim_config: SimConfig) -> None:
    """The simulator keeps restored bytes in memory; deleting the volume frees them (a simulator run
    for hours of drills would otherwise only grow)."""
    from fctui.sim import Simulator
    sim = Simulator(sim_config)
    t = httpx.ASGITransport(app=create_app(sim))
    async with VrmClient("http://vrm.sim", sim.config.user, sim.config.password, transport=t) as client:
        vol_uri, vol_id, task_id, url_token = await _restore_resource(client, "fctui-freed")
        url, token = url_token.split(" ")
        async with HttpResourceTransport(url, token, size=1 << 30, transport=t) as tr:
            await tr.write(0, [random.Random(5).randbytes(4 * sim.block_size)])
        vol = sim.volumes[int(vol_id)]
        assert len(vol.content.live.overlay) == 4
        await client.release_backup_resource(vol_uri, task_id)
        deadline = asyncio.get_running_loop().time() + 30
        while True:   # the volume is busy until its resource is gone
            try:
                await client.wait_task(await client.delete_volume(vol_uri), timeout=30, interval=0.02)
                break
            except VrmApiError:
                assert asyncio.get_running_loop().time() < deadline, "the volume stayed busy"
                await asyncio.sleep(0.05)
        assert vol.gone and vol.content.live.overlay == {}
