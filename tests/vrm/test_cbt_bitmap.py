"""Issue 14 item 3: the getcbt bitmap's hex layout is a stated, selectable assumption (vrm-api.md §16).

"nibble" (default): each hex character holds 4 blocks, low bit first. "byte": two hex characters are one
byte, bit i of byte k = block 8k+i. The simulator encodes either way (SimConfig.cbt_bitmap), the client
decodes by its ``cbt_bitmap`` (profile setting), and an unreadable bitmap is a typed VrmError.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import httpx
import pytest

from fctui.sim import SimConfig, Simulator, create_app
from fctui.sim.ops import decode_bitmap, encode_bitmap
from fctui.vrm import CbtBitmap, VrmClient, VrmError, VrmProtocolError

SIM_URL = "http://vrm.sim"


# --- the two readings, by hand -------------------------------------------------------------------

@pytest.mark.parametrize("bitmap, order, blocks", [
    ("10", "nibble", [0]),
    ("01", "nibble", [4]),
    ("8f", "nibble", [3, 4, 5, 6, 7]),
    ("10", "byte", [4]),            # 0x10: bit 4 of byte 0
    ("01", "byte", [0]),
    ("8f", "byte", [0, 1, 2, 3, 7]),
    ("0080", "byte", [15]),
    ("0080", "nibble", [11]),
])
def test_each_reading_by_hand(bitmap: str, order: str, blocks: list[int]) -> None:
    assert CbtBitmap(4096, len(bitmap) * 4, len(blocks), bitmap, 0, order).blocks() == blocks
    assert CbtBitmap(4096, len(bitmap) * 4, len(blocks), bitmap, 2048, order).blocks() == [2048 + b for b in blocks]


# Vectors written by hand from vrm-api.md §9.2/§16: bitMap covers bitNum blocks from startBlock, "low bit =
# lower block number". Per nibble: ceil(bitNum/4) hex digits, digit j holds blocks 4j..4j+3, its value's
# bit k (1, 2, 4, 8) = block 4j+k. Per byte: ceil(bitNum/8) bytes as two hex digits each (high digit first),
# bit k of byte j (0x01 .. 0x80) = block 8j+k. (start, bit_num, changed blocks relative to start, nibble, byte)
HAND_VECTORS = [
    (0, 16, [], "0000", "0000"),                         # an empty map
    (0, 16, [0], "1000", "0100"),
    (0, 16, [1], "2000", "0200"),
    (0, 16, [2], "4000", "0400"),
    (0, 16, [3], "8000", "0800"),                         # last bit of the first digit
    (0, 16, [4], "0100", "1000"),                         # first bit of the second digit
    (0, 16, [7], "0800", "8000"),                         # last bit of the first byte
    (0, 16, [8], "0010", "0001"),                         # first bit of the second byte
    (0, 16, [15], "0008", "0080"),
    (0, 16, [0, 15], "1008", "0180"),
    (0, 16, [3, 4, 5, 6, 7, 8, 9], "8f30", "f803"),       # a run across a digit and a byte boundary
    (0, 16, list(range(16)), "ffff", "ffff"),
    (0, 24, list(range(6, 18)), "0cff30", "c0ff03"),      # a run over three bytes
    (0, 10, [9], "002", "0002"),                          # bitNum not a multiple of 4 (or 8): the end of a disk
    (0, 10, [0, 8], "101", "0101"),
    (2048, 8, [5], "02", "20"),                           # a window that starts at block 2048
    (1024, 32, [0, 31], "10000008", "01000080"),
]


@pytest.mark.parametrize("start, bit_num, rel, nibble, byte", HAND_VECTORS)
def test_hand_vectors_client_and_simulator(start: int, bit_num: int, rel: list[int], nibble: str,
                                           byte: str) -> None:
    blocks = [start + b for b in rel]
    for order, hexmap in (("nibble", nibble), ("byte", byte)):
        # the simulator writes exactly this string ...
        assert encode_bitmap(set(blocks), start, bit_num, order) == hexmap, order
        # ... and the client reads exactly these blocks from it (upper-case digits too)
        for text in (hexmap, hexmap.upper()):
            assert CbtBitmap(128, bit_num, len(blocks), text, start, order).blocks() == blocks, order
            assert CbtBitmap.from_dict({"sectorOfBlock": 128, "bitNum": bit_num, "bit1Num": len(blocks),
                                        "bitMap": text}, start, order).blocks() == blocks, order


@pytest.mark.parametrize("order", ["nibble", "byte"])
def test_simulator_encoding_and_client_decoding_agree(order: str) -> None:
    changed = {0, 1, 7, 8, 9, 15, 16, 63, 100, 1023}
    for bit_num in (1024, 104, 101):
        want = sorted(b for b in changed if b < bit_num)
        s = encode_bitmap({b + 512 for b in want}, 512, bit_num, order)
        assert decode_bitmap(s, 512, bit_num, order) == [512 + b for b in want]
        assert CbtBitmap(128, bit_num, len(want), s, 512, order).blocks() == [512 + b for b in want]
    other = "byte" if order == "nibble" else "nibble"
    s = encode_bitmap(changed, 0, 1024, order)
    assert CbtBitmap(128, 1024, len(changed), s, 0, other).blocks() != sorted(changed)


@pytest.mark.parametrize("bitmap, order", [("0g", "nibble"), ("0f 1", "nibble"), ("-1", "byte"),
                                           ("f", "byte"), ("0f0", "byte")])
def test_an_unreadable_bitmap_is_a_typed_error_of_the_model(bitmap: str, order: str) -> None:
    from fctui.vrm.models import CbtBitmapError
    with pytest.raises(CbtBitmapError):
        CbtBitmap(128, 16, 1, bitmap, 0, order).blocks()


# --- against the simulator ---------------------------------------------------------------------------

def sim_of(order: str, **kw: Any) -> Simulator:
    base: dict[str, Any] = dict(vms=30, seed=1, sector_of_block=128, time_scale=100.0, edge_disk_gb=1,
                                edge_fill=0.02)
    return Simulator(SimConfig(**{**base, **kw}, cbt_bitmap=order))


class Rewriting(httpx.AsyncBaseTransport):
    """The simulator, with getcbt answers passed through ``edit`` (a VRM answering badly)."""

    def __init__(self, sim: Simulator, edit: Any = None) -> None:
        self.inner = httpx.ASGITransport(app=create_app(sim))
        self.edit = edit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        if self.edit is None or not request.url.path.endswith("/getcbt") or resp.status_code != 200:
            return resp
        body = json.loads(await resp.aread())
        self.edit(body)
        return httpx.Response(200, json=body, headers={"content-type": "application/json;charset=UTF-8"})


async def client_of(sim: Simulator, order: str, edit: Any = None) -> VrmClient:
    c = VrmClient(SIM_URL, sim.config.user, sim.config.password, transport=Rewriting(sim, edit), cbt_bitmap=order)
    await c.login()
    return c


@pytest.fixture
async def control_of() -> AsyncIterator[Any]:
    made: list[httpx.AsyncClient] = []

    def make(sim: Simulator) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sim)), base_url=SIM_URL)
        made.append(c)
        return c
    yield make
    for c in made:
        await c.aclose()


async def two_cbt_snapshots(client: VrmClient, control: httpx.AsyncClient, written: list[tuple[int, int]]) -> Any:
    edges = (await control.get("/sim/edge-cases")).json()
    vm = min([await client.vm(u) for u in edges["ready"]], key=lambda v: len(v.disks))
    snaps = []
    for name in ("base", "incr"):
        if name == "incr":
            vol_id = snaps[0].vol_snapshots[0].volume_urn.rsplit(":", 1)[1]
            r = await control.post(f"/sim/volumes/{vol_id}/write", json={"ranges": [list(x) for x in written]})
            assert r.status_code < 300, r.text
        ref = await client.create_snapshot(vm.uri, name, type="CBTbackup")
        await client.wait_task(ref, timeout=30, interval=0.02)
        snaps.append(await client.snapshot(ref.uri))
    return snaps[0].vol_snapshots[0], snaps[1].vol_snapshots[0]


@pytest.mark.parametrize("order", ["nibble", "byte"])
async def test_matching_setting_gives_exactly_the_changed_blocks(order: str, control_of: Any) -> None:
    sim = sim_of(order)
    client = await client_of(sim, order)
    try:
        written = [(1, 1), (4, 1), (9, 3), (1030, 2), (8190, 9), (16383, 1)]
        vs1, vs2 = await two_cbt_snapshots(client, control_of(sim), written)
        bs, total, changed = await client.changed_blocks(vs2.volume_uri, snap_uuid=vs2.snap_uuid,
                                                         vol_cbt_create_time=vs2.vol_cbt_create_time,
                                                         chg_id=vs1.chg_id)
        assert changed == sorted(b for s, n in written for b in range(s, s + n))
        assert (bs, total) == (128 * 512, 16384)
    finally:
        await client.close()


async def test_a_mismatched_setting_is_caught_where_it_shows(control_of: Any) -> None:
    """The readings differ by swapping the two digits of each byte: blocks 8k+i <-> 8k+4+i. Inside whole
    bytes the count still matches; where a disk ends inside a byte, bit1Num no longer does and the
    client says so rather than lose blocks. (12 KiB blocks: a 1 GiB disk has 87382, 6 past a byte.)"""
    sim = sim_of("byte", sector_of_block=24)
    client = await client_of(sim, "nibble")
    try:
        # block 87378 = 8k+2 of the last, partial byte: read per nibble it would be 8k+6 = 87382, past the end
        written = [(1, 1), (87378, 1)]
        vs1, vs2 = await two_cbt_snapshots(client, control_of(sim), written)
        first = await client.get_cbt(vs2.volume_uri, snap_uuid=vs2.snap_uuid,
                                     vol_cbt_create_time=vs2.vol_cbt_create_time, chg_id=vs1.chg_id,
                                     start_block=0, block_num=1024)
        assert list(first.changed_blocks()) == [5]          # wrong (1 was written), undetectable here
        with pytest.raises(VrmProtocolError, match="bit1Num.*cbt_bitmap"):
            await client.changed_blocks(vs2.volume_uri, snap_uuid=vs2.snap_uuid,
                                        vol_cbt_create_time=vs2.vol_cbt_create_time, chg_id=vs1.chg_id)
    finally:
        await client.close()


@pytest.mark.parametrize("bad", ["zz", "0f 0f", "0f\n"])
async def test_a_non_hex_bitmap_is_a_vrm_error_not_a_value_error(bad: str, control_of: Any) -> None:
    sim = sim_of("nibble")

    def garble(body: dict[str, Any]) -> None:
        body["bitMap"] = bad + body["bitMap"][len(bad):]
    client = await client_of(sim, "nibble", garble)
    try:
        vs1, vs2 = await two_cbt_snapshots(client, control_of(sim), [(3, 1)])
        with pytest.raises(VrmProtocolError, match="not a hex string") as ei:
            await client.changed_blocks(vs2.volume_uri, snap_uuid=vs2.snap_uuid,
                                        vol_cbt_create_time=vs2.vol_cbt_create_time, chg_id=vs1.chg_id)
        assert "getcbt" in str(ei.value) and not isinstance(ei.value, ValueError)
    finally:
        await client.close()


def test_an_unknown_order_is_refused_by_client_and_simulator() -> None:
    with pytest.raises(VrmError, match="cbt_bitmap"):
        VrmClient(SIM_URL, "u", "p", cbt_bitmap="bit")
    with pytest.raises(ValueError, match="cbt_bitmap"):
        SimConfig(cbt_bitmap="bit")
