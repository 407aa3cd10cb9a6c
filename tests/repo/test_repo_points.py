"""Repository: full and incremental restore points read back identical; dedup; misuse is typed."""

from __future__ import annotations

import hashlib
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fctui.repo import PointNotFoundError, RepoError, Repository
from fctui.sim.content import BlockFactory, DiskContent

BS = 4096


def rand_block(rng: random.Random, n: int = BS) -> bytes:
    return rng.randbytes(n)


def disk_args(vol: str, size: int, base: str | None = None, bs: int = BS) -> dict:
    return dict(volume_urn=vol, disk_name=vol.rsplit(":", 1)[-1], sequence_num=1, pci_type="VIRTIO",
                size_bytes=size, block_size=bs, storage_type="LOCALPOME", datastore_urn="urn:ds:1",
                cbt={"volCBTCreateTime": "2026-11-25 10:00:00", "chgID": "3", "snapUuid": "u"},
                base_point_id=base)


def new_point(repo: Repository, vm: str = "urn:sites:1:vms:i-1", name: str = "vm1"):
    return repo.new_point(vm_urn=vm, vm_name=name, job_id="job-1", kind="cbt",
                          vm_config={"cpu": 2, "memoryMB": 4096}, snapshot_urn="urn:snap:1",
                          created=time.time())


def write_disk(repo: Repository, blocks: dict[int, bytes], size: int, *, vol: str = "urn:vol:1",
               base: str | None = None, vm: str = "urn:sites:1:vms:i-1", name: str = "vm1"):
    with new_point(repo, vm, name) as pw:
        dw = pw.add_disk(**disk_args(vol, size, base))
        outcomes = {i: dw.put_block(i, b) for i, b in sorted(blocks.items())}
        point = pw.commit()
    return point, outcomes, dw


def image(blocks: dict[int, bytes], size: int) -> bytes:
    out = bytearray(size)
    for i, b in blocks.items():
        out[i * BS: i * BS + len(b)] = b
    return bytes(out)


def read_all(repo: Repository, point_id: str, vol: str = "urn:vol:1") -> bytes:
    reader = repo.open_disk(point_id, vol)
    return b"".join(reader.read_block(i) for i in range(reader.block_count))



def test_full_then_incremental_read_back_identical(repo: Repository) -> None:
    rng = random.Random(1)
    size = 40 * BS + 123  # short last block
    base_blocks = {i: rand_block(rng) for i in (0, 1, 2, 5, 17, 30)}
    base_blocks[40] = rand_block(rng, 123)
    full, outcomes, dw = write_disk(repo, {**base_blocks, 7: bytes(BS)}, size)
    assert outcomes[7] == "zero" and outcomes[0] == "stored"
    assert dw.mode == "full" and full.disks[0].mode == "full"
    assert dw.stats.bytes_zero == BS and dw.stats.blocks == 8
    assert read_all(repo, full.id) == image(base_blocks, size)

    # Incremental: change 2 blocks, zero one, add a new one; everything else comes from the base.
    changed = {1: rand_block(rng), 30: bytes(BS), 33: rand_block(rng)}
    incr, outcomes, dw = write_disk(repo, changed, size, base=full.id)
    assert dw.mode == "incremental" and incr.disks[0].base_point_id == full.id
    assert dw.stats.bytes_in == 3 * BS  # only the changed blocks crossed put_block
    expected = dict(base_blocks)
    expected[1] = changed[1]
    expected[33] = changed[33]
    del expected[30]
    assert read_all(repo, incr.id) == image(expected, size)
    assert read_all(repo, full.id) == image(base_blocks, size)  # the base is untouched
    reader = repo.open_disk(incr.id, "urn:vol:1")
    assert set(reader.block_digests()) == set(expected)
    assert reader.block_digests()[0] == hashlib.sha256(base_blocks[0]).hexdigest()
    assert [(i, d) for i, d in reader.iter_blocks() if d is not None] == sorted(expected.items())
    assert sum(1 for _ in reader.iter_blocks(readahead=1)) == 41
    assert reader.sha256() == hashlib.sha256(image(expected, size)).hexdigest()
    # Each point is logically full: its manifest names every non-zero block itself.
    manifest = json.loads((repo.points_dir / f"{incr.id}.json").read_text())
    assert {i for i, _ in manifest["disks"][0]["blocks"]} == set(expected)


def test_sha256_matches_simulator_digest_and_is_cached(tmp_path: Path) -> None:
    bs = 64 * 1024
    factory = BlockFactory(seed=7, block_size=bs)
    disk = DiskContent(factory, seed=7, vol_id=3, size=50 * bs + 1000, fill=0.6)
    disk.write_generated([2, 9, 49], epoch=1)
    state = disk.live
    repo = Repository.open(tmp_path / "r")
    with new_point(repo) as pw:
        dw = pw.add_disk(**disk_args("urn:vol:3", state.size, bs=bs))
        for b in sorted(disk.written_blocks(state, 0, disk.blocks_in(state))):
            dw.put_block(b, disk.block_bytes(state, b)[: state.size - b * bs])
        point = pw.commit()
    assert point.disks[0].sha256 is None
    digest = repo.open_disk(point.id, "urn:vol:3").sha256()
    assert digest == disk.digest(state)
    again = Repository.open(tmp_path / "r", create=False)
    assert again.point(point.id).disks[0].sha256 == digest


def test_dedup_across_disks_and_vms(repo: Repository) -> None:
    rng = random.Random(2)
    shared = {i: rand_block(rng) for i in range(6)}
    a, out_a, dw_a = write_disk(repo, shared, 6 * BS, vol="urn:vol:a", vm="urn:vm:a", name="a")
    assert set(out_a.values()) == {"stored"}
    count, _ = repo.disk_usage()
    b, out_b, dw_b = write_disk(repo, {**shared, 6: rand_block(rng)}, 7 * BS, vol="urn:vol:b",
                                vm="urn:vm:b", name="b")
    assert [out_b[i] for i in range(6)] == ["reused"] * 6 and out_b[6] == "stored"
    assert dw_b.stats.bytes_reused == 6 * BS and dw_b.stats.blocks_stored == 1
    assert repo.disk_usage()[0] == count + 1
    # Two disks of one point sharing content also dedup.
    with new_point(repo) as pw:
        d1 = pw.add_disk(**disk_args("urn:vol:c1", BS))
        d2 = pw.add_disk(**disk_args("urn:vol:c2", BS))
        blk = rand_block(rng)
        assert d1.put_block(0, blk) == "stored" and d2.put_block(0, blk) == "reused"
        c = pw.commit()
    assert read_all(repo, c.id, "urn:vol:c2") == blk
    assert read_all(repo, b.id, "urn:vol:b")[: 6 * BS] == image(shared, 6 * BS)


def test_put_block_is_thread_safe(repo: Repository) -> None:
    rng = random.Random(3)
    blocks = {i: (rand_block(rng) if i % 3 else bytes(BS)) for i in range(96)}
    blocks.update({i: blocks[1] for i in range(90, 96)})  # duplicates racing each other
    with new_point(repo) as pw:
        dw = pw.add_disk(**disk_args("urn:vol:1", 96 * BS))
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda kv: dw.put_block(*kv), blocks.items()))
        point = pw.commit()
    assert dw.stats.blocks == 96 and dw.stats.bytes_in == 96 * BS
    assert read_all(repo, point.id) == b"".join(blocks[i] for i in range(96))
    assert point.disks[0].nonzero_blocks == sum(1 for b in blocks.values() if any(b))


def test_catalog_queries(repo: Repository) -> None:
    rng = random.Random(4)
    p1, _, _ = write_disk(repo, {0: rand_block(rng)}, BS, vm="urn:vm:a", name="a")
    p2, _, _ = write_disk(repo, {0: rand_block(rng)}, BS, vm="urn:vm:b", name="b")
    p3, _, _ = write_disk(repo, {0: rand_block(rng)}, BS, vm="urn:vm:a", name="a")
    assert [p.id for p in repo.points()] == [p1.id, p2.id, p3.id]
    assert [p.id for p in repo.points("urn:vm:a")] == [p1.id, p3.id]
    latest = repo.latest_point("urn:vm:a")
    assert latest is not None and latest.id == p3.id and latest.vm_config == {"cpu": 2, "memoryMB": 4096}
    assert repo.latest_point("urn:vm:none") is None
    assert repo.point(p2.id).disks[0].cbt == {"volCBTCreateTime": "2026-11-25 10:00:00", "chgID": "3",
                                              "snapUuid": "u"}
    with pytest.raises(PointNotFoundError):
        repo.point("nope")
    with pytest.raises(RepoError):
        repo.open_disk(p1.id, "urn:vol:other")


def test_exception_inside_writer_aborts(repo: Repository) -> None:
    with pytest.raises(ValueError):
        with new_point(repo) as pw:
            dw = pw.add_disk(**disk_args("urn:vol:1", BS))
            dw.put_block(0, b"\1" * BS)
            assert list(repo.pending_dir.iterdir())
            raise ValueError("read failed")
    assert repo.points() == []
    assert list(repo.pending_dir.iterdir()) == []
    with pytest.raises(RepoError, match="aborted"):
        pw.commit()
    with pytest.raises(RepoError, match="closed"):
        dw.put_block(0, b"\2" * BS)


def test_bad_input_gives_typed_errors(repo: Repository, tmp_path: Path) -> None:
    with pytest.raises(RepoError, match="kind"):
        repo.new_point(vm_urn="v", vm_name="v", job_id="j", kind="magic", vm_config={},
                       snapshot_urn="s", created=0)
    with pytest.raises(RepoError, match="JSON"):
        repo.new_point(vm_urn="v", vm_name="v", job_id="j", kind="cbt", vm_config={"x": object()},
                       snapshot_urn="s", created=0)
    full, _, _ = write_disk(repo, {0: b"\1" * BS}, 2 * BS)
    with new_point(repo) as pw:
        with pytest.raises(RepoError, match="block size"):
            pw.add_disk(**disk_args("urn:vol:x", BS, bs=1000))
        dw = pw.add_disk(**disk_args("urn:vol:d", 2 * BS))
        with pytest.raises(RepoError, match="already"):
            pw.add_disk(**disk_args("urn:vol:d", 2 * BS))
        with pytest.raises(RepoError, match="expected"):
            dw.put_block(0, b"short")
        with pytest.raises(RepoError, match="outside"):
            dw.put_block(2, b"\1" * BS)
        with pytest.raises(RepoError, match="size"):
            pw.add_disk(**disk_args("urn:vol:1", 3 * BS, base=full.id))
        with pytest.raises(RepoError, match="no disk"):
            pw.add_disk(**disk_args("urn:vol:9", 2 * BS, base=full.id))
        with pytest.raises(PointNotFoundError):
            pw.add_disk(**disk_args("urn:vol:3", 2 * BS, base="missing"))
    with new_point(repo) as pw:
        with pytest.raises(RepoError, match="no disks"):
            pw.commit()
    with pytest.raises(RepoError, match="no repository"):
        Repository.open(tmp_path / "absent", create=False)
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RepoError, match="not empty"):
        Repository.open(foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_incompressible_blocks_stored_raw_compressible_ones_zstd(repo: Repository) -> None:
    bs = 256 * 1024
    rng = random.Random(9)
    noise = rng.randbytes(bs)
    text = (b"fctui restore point " * (bs // 20 + 1))[:bs]
    with new_point(repo) as pw:
        dw = pw.add_disk(**disk_args("urn:vol:big", 2 * bs, bs=bs))
        dw.put_block(0, noise)
        dw.put_block(1, text)
        point = pw.commit()
    digests = repo.open_disk(point.id, "urn:vol:big").block_digests()
    raw_file = repo.chunk_path(digests[0]).read_bytes()
    zst_file = repo.chunk_path(digests[1]).read_bytes()
    assert raw_file[:4] == b"FCR1" and len(raw_file) == bs + 4
    assert zst_file[:4] == b"FCZ1" and len(zst_file) < bs // 20
    assert dw.stats.bytes_stored == len(raw_file) + len(zst_file)
    reader = repo.open_disk(point.id, "urn:vol:big")
    assert reader.read_block(0) == noise and reader.read_block(1) == text
    flipped = bytearray(raw_file)
    flipped[1000] ^= 1
    repo.chunk_path(digests[0]).write_bytes(bytes(flipped))
    report = repo.verify()
    assert [(d.block, d.problem) for d in report.damaged] == [(0, "corrupt")]


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> Repository:
    # One repository for all examples (creating one costs 256 shard dirs); each example its own VM.
    return Repository.open(tmp_path_factory.mktemp("prop") / "repo")


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# A chain of backups: each step writes some blocks (content id 0 = zero block) full or incremental.
steps = st.lists(
    st.tuples(st.booleans(), st.dictionaries(st.integers(0, 11), st.integers(0, 5), max_size=8)),
    min_size=1, max_size=4)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain=steps, tail=st.integers(1, 512))
def test_every_point_of_a_chain_restores_alone(shared_repo: Repository, chain: list, tail: int) -> None:
    repo = shared_repo
    vm = f"urn:vm:prop-{time.monotonic_ns()}"
    size = 11 * 512 + tail  # 12 blocks of 512 bytes, the last one short
    bs = 512

    def content(cid: int, idx: int) -> bytes:
        n = min(bs, size - idx * bs)
        return bytes(n) if cid == 0 else hashlib.sha256(f"{cid}".encode()).digest()[:1] * n

    state: dict[int, bytes] = {}
    expected: list[tuple[str, bytes]] = []
    base = None
    for full, writes in chain:
        if full or base is None:
            state = {}
        with repo.new_point(vm_urn=vm, vm_name="p", job_id="j", kind="cbt", vm_config={},
                            snapshot_urn="s", created=time.time()) as pw:
            dw = pw.add_disk(**disk_args("urn:vol:p", size, None if (full or base is None) else base, bs=bs))
            for idx, cid in writes.items():
                data = content(cid, idx)
                dw.put_block(idx, data)
                state[idx] = data
            base = pw.commit().id
        img = bytearray(size)
        for idx, data in state.items():
            img[idx * bs: idx * bs + len(data)] = data
        expected.append((base, bytes(img)))
    for pid, img in expected:
        reader = repo.open_disk(pid, "urn:vol:p")
        assert b"".join(reader.read_block(i) for i in range(reader.block_count)) == img
        assert reader.sha256() == hashlib.sha256(img).hexdigest()
