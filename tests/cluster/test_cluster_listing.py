"""fctui.cluster.connect.entries, the one way the cluster lists a bucket's records, against a real NATS."""

from __future__ import annotations

from typing import Any

from fctui.cluster.connect import entries


async def test_entries_lists_the_live_keys_under_a_pattern(nats_server: Any) -> None:
    import nats
    nc = await nats.connect(nats_server.url)
    try:
        kv = await nc.jetstream().create_key_value(bucket="listing", history=1)
        assert await entries(kv) == {}
        for i in range(5):
            await kv.put(f"vm.J1.v{i}", f"{i}".encode())
        await kv.put("vm.J2.v0", b"other job")
        await kv.put("job.J1", b"header")
        await kv.put("vm.J1.v1", b"again")
        await kv.delete("vm.J1.v3")
        got = await entries(kv, "vm.J1.*")
        assert {k: e.value for k, e in got.items()} == {"vm.J1.v0": b"0", "vm.J1.v1": b"again", "vm.J1.v2": b"2",
                                                        "vm.J1.v4": b"4"}
        assert got["vm.J1.v1"].revision == (await kv.get("vm.J1.v1")).revision
        assert set(await entries(kv)) == {"vm.J1.v0", "vm.J1.v1", "vm.J1.v2", "vm.J1.v4", "vm.J2.v0", "job.J1"}
        assert await entries(kv, "vm.J3.*") == {}
    finally:
        await nc.close()


async def test_many_listings_in_a_row_are_each_complete(nats_server: Any) -> None:
    """A proxy, a console and the CLI list often. nats-py's watcher left each listing's consumer on the
    server for five minutes (listing 1001 failed: "maximum consumers limit reached") and its end-of-values
    marker could overtake values already sent (an empty listing now and then: 2 in 1000 here)."""
    import nats
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="many", history=1)
        for i in range(31):
            await kv.put(f"vm.J.v{i:02d}", b"x" * 2000)
        sizes = [len(await entries(kv, "vm.J.*")) for _ in range(1050)]
        assert sizes == [31] * 1050
        assert (await js.stream_info("KV_many")).state.consumer_count == 0
    finally:
        await nc.close()
