"""The repository on S3 (a real SeaweedFS): points read back byte-identical through the same DiskReader
the restore uses, incrementals, dedup, prune/gc, verify naming the damaged object."""

from __future__ import annotations

import argparse
import hashlib
import io
import random

import obstore
import pytest

from fctui.repo import ChunkError, NoRepositoryError, PointNotFoundError, RepoError, Repository
from fctui.repo.s3 import CLOCK_SLACK_S, S3Repository
from tests.repo.test_repo_points import BS, image, rand_block, read_all, write_disk
from tests.repo.test_s3_gc import newest_chunk, wait_store_clock_past


def test_open_dispatches_on_s3_url_and_creates_once(s3_repo_url: str) -> None:
    with pytest.raises(NoRepositoryError):
        Repository.open(s3_repo_url, create=False)
    repo = Repository.open(s3_repo_url)
    assert isinstance(repo, S3Repository) and repo.room() is None
    again = Repository.open(s3_repo_url, create=False)  # a second opener finds it, nothing recreated
    assert again.points() == [] and again.damaged_entries() == []
    keys = sorted(m["path"] for batch in obstore.list(repo.store) for m in batch)
    assert keys == ["catalog.json", "repo.json"]


def test_full_and_incremental_read_back_identical(s3_repo_url: str) -> None:
    repo = Repository.open(s3_repo_url)
    rng = random.Random(1)
    size = 40 * BS + 123  # short last block
    base_blocks = {i: rand_block(rng) for i in (0, 1, 2, 5, 17, 30)}
    base_blocks[40] = rand_block(rng, 123)
    text = b"a compressible line of text\n" * (BS // 28 + 1)
    base_blocks[9] = text[:BS]
    full, outcomes, dw = write_disk(repo, {**base_blocks, 7: bytes(BS)}, size)
    assert outcomes[7] == "zero" and outcomes[0] == "stored"
    assert read_all(repo, full.id) == image(base_blocks, size)

    changed = {1: rand_block(rng), 30: bytes(BS), 33: rand_block(rng), 34: base_blocks[0]}
    incr, outcomes, dw = write_disk(repo, changed, size, base=full.id)
    assert outcomes[34] == "reused"  # dedup across points: the same chunk object
    assert dw.mode == "incremental" and incr.disks[0].base_point_id == full.id
    expected = {**base_blocks, 1: changed[1], 33: changed[33], 34: base_blocks[0]}
    del expected[30]
    # Another process's view: a fresh object over the same prefix, read the way a restore reads
    other = Repository.open(s3_repo_url, create=False)
    assert [p.id for p in other.points()] == [full.id, incr.id]
    reader = other.open_disk(incr.id, "urn:vol:1")
    streamed = b"".join(data if data is not None else bytes(min(BS, size - i * BS))
                        for i, data in reader.iter_blocks())
    assert streamed == image(expected, size)
    assert reader.sha256() == hashlib.sha256(image(expected, size)).hexdigest()
    assert other.point(incr.id).disks[0].sha256 == reader.sha256()  # cached in the catalog (CAS)
    assert read_all(repo, full.id) == image(base_blocks, size)
    assert reader.unavailable_blocks() == []
    assert repo.verify().ok

    # prune keeps the newest; the incremental still restores (it is logically full); gc frees chunks
    before = repo.disk_usage()[0]
    pruned = repo.prune(1)
    assert pruned.removed == [full.id]
    with pytest.raises(PointNotFoundError):
        repo.point(full.id)
    wait_store_clock_past(repo, newest_chunk(repo) + CLOCK_SLACK_S + 1)  # the store's clock: they are old
    gc = repo.gc()
    assert gc.chunks_total == before and gc.live_leases == 0
    assert gc.chunks_removed == 2 and gc.manifests_removed == 0  # the full's blocks 1 and 30
    assert repo.disk_usage()[0] == before - 2
    assert read_all(repo, incr.id) == image(expected, size)
    assert repo.verify().ok


def test_verify_names_the_damaged_object_and_quarantines_it(s3_repo_url: str) -> None:
    from fctui.cli.repo import run_repo_verify
    repo = Repository.open(s3_repo_url)
    rng = random.Random(2)
    blocks = {0: rand_block(rng), 1: rand_block(rng), 2: rand_block(rng)}
    point, _, _ = write_disk(repo, blocks, 3 * BS)
    digest = repo.open_disk(point.id, "urn:vol:1").block_digests()[1]
    key = f"chunks/{digest[:2]}/{digest}"
    raw = bytearray(obstore.get(repo.store, key).bytes())
    raw[len(raw) // 2] ^= 0xFF
    obstore.put(repo.store, key, bytes(raw))
    with pytest.raises(ChunkError):
        read_all(repo, point.id)

    out, err = io.StringIO(), io.StringIO()
    code = run_repo_verify(argparse.Namespace(repo=s3_repo_url, sample=100.0, json=False), out, err)
    assert code != 0
    assert f"(object {s3_repo_url}/{key})" in out.getvalue()
    assert f"DAMAGED {point.id}" in out.getvalue()
    # quarantined: the next backup writes the block again instead of reusing the bad chunk
    assert repo._head(key) is None and repo._head(key + ".bad") is not None
    reader = repo.open_disk(point.id, "urn:vol:1")
    assert reader.unavailable_blocks() == [(1, digest, "quarantined")]
    again, outcomes, _ = write_disk(repo, blocks, 3 * BS)
    assert outcomes[1] == "stored" and outcomes[0] == "reused"
    assert read_all(repo, point.id) == image(blocks, 3 * BS)  # healed by the rewrite


def test_forget_and_misuse_are_typed(s3_repo_url: str) -> None:
    repo = Repository.open(s3_repo_url)
    point, _, _ = write_disk(repo, {0: b"x" * BS}, BS)
    with pytest.raises(PointNotFoundError):
        repo.forget("nope")
    assert repo.forget(point.id).startswith(f"restore point {point.id}")
    assert repo.points() == []
    assert repo._head(f"points/{point.id}.json") is None
    with pytest.raises(RepoError):
        Repository.open("s3://")
