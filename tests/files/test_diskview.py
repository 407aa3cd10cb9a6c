"""PointDiskView: a restore point's disk read as a file, byte for byte what was backed up, and loud on damage."""

from __future__ import annotations

import io
import random
import time
from pathlib import Path

import pytest

from fctui.files import PointDiskView
from fctui.repo import ChunkError, Repository

BLOCK = 4096
SIZE = 9 * BLOCK + 700  # the last block is short


def make_point(repo: Repository) -> tuple[str, bytes]:
    rng = random.Random(17)
    blocks = {i: rng.randbytes(BLOCK) for i in (0, 1, 2, 4, 5, 6, 7)}
    blocks[9] = rng.randbytes(700)
    image = bytearray(SIZE)
    for i, data in blocks.items():
        image[i * BLOCK:i * BLOCK + len(data)] = data
    with repo.new_point(vm_urn="urn:sites:1:vms:i-1", vm_name="vm1", job_id="job-1", kind="cbt", vm_config={},
                        snapshot_urn="urn:snap:1", created=time.time()) as pw:
        dw = pw.add_disk(volume_urn="urn:vol:1", disk_name="d1", sequence_num=1, pci_type="VIRTIO",
                         size_bytes=SIZE, block_size=BLOCK, storage_type="LOCALPOME", datastore_urn="urn:ds:1",
                         cbt=None, base_point_id=None)
        for i, data in sorted(blocks.items()):
            dw.put_block(i, data)
        return pw.commit().id, bytes(image)


@pytest.fixture
def point(tmp_path: Path) -> tuple[Repository, str, bytes]:
    repo = Repository.open(tmp_path / "repo")
    pid, image = make_point(repo)
    return repo, pid, image


def test_random_reads_give_the_backed_up_bytes(point: tuple[Repository, str, bytes]) -> None:
    repo, pid, image = point
    view = PointDiskView(repo.open_disk(pid, "urn:vol:1"), cache_chunks=2)
    rng = random.Random(3)
    for _ in range(300):
        off = rng.randrange(0, SIZE + 100)
        n = rng.randrange(0, 3 * BLOCK)
        view.seek(off)
        data = view.read(n)
        assert data == image[off:off + n]
        assert view.tell() == off + len(data)
    view.seek(-10, io.SEEK_END)
    assert view.read() == image[-10:]


def test_sequential_reads_with_readahead_and_buffered_wrapper(point: tuple[Repository, str, bytes]) -> None:
    repo, pid, image = point
    view = PointDiskView(repo.open_disk(pid, "urn:vol:1"), readahead=3)
    stream = io.BufferedReader(view, buffer_size=1000)
    got = b"".join(iter(lambda: stream.read(777), b""))
    assert got == image
    view.close()


def test_a_damaged_chunk_raises_and_is_remembered(point: tuple[Repository, str, bytes]) -> None:
    repo, pid, image = point
    reader = repo.open_disk(pid, "urn:vol:1")
    digest = reader.block_digests()[5]
    path = repo.chunk_path(digest)
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    view = PointDiskView(reader)
    view.seek(4 * BLOCK)
    assert view.read(BLOCK) == image[4 * BLOCK:5 * BLOCK]  # the block before is intact
    with pytest.raises(ChunkError) as err:
        view.read(10)  # block 5: damaged
    assert err.value.digest == digest
    assert view.damage is err.value and view.damage_block == 5
    view.seek(6 * BLOCK)
    assert view.read(BLOCK) == image[6 * BLOCK:7 * BLOCK]
