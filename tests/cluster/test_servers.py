"""The real servers the cluster tests start (tests/servers.py) answer as the product uses them."""

from __future__ import annotations

import os
from typing import Any

import obstore
import pytest
from obstore.store import S3Store


async def test_nats_server_has_jetstream(nats_server: Any) -> None:
    import nats
    nc = await nats.connect(nats_server.url)
    try:
        kv = await nc.jetstream().create_key_value(bucket="probe")
        await kv.create("k", b"1")
        with pytest.raises(Exception):
            await kv.create("k", b"2")   # create refuses an existing key: what slot leases rely on
        assert (await kv.get("k")).value == b"1"
    finally:
        await nc.close()


def test_s3_server_takes_conditional_writes_with_env_credentials(s3_repo_url: str) -> None:
    bucket = s3_repo_url.removeprefix("s3://").split("/", 1)[0]
    store = S3Store(bucket)   # endpoint and keys from the AWS_* environment, as an operator sets them
    key = s3_repo_url.split("/", 3)[3] + "/probe"
    obstore.put(store, key, b"one", mode="create")
    with pytest.raises(Exception):
        obstore.put(store, key, b"two", mode="create")
    etag = obstore.head(store, key)["e_tag"]
    obstore.put(store, key, b"three", mode={"e_tag": etag})
    with pytest.raises(Exception):
        obstore.put(store, key, b"four", mode={"e_tag": etag})   # stale: compare-and-set refuses
    assert bytes(obstore.get(store, key).bytes()) == b"three"
    wrong = S3Store(bucket, access_key_id="nobody", secret_access_key="nothing")
    with pytest.raises(Exception):
        obstore.get(wrong, key)
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
