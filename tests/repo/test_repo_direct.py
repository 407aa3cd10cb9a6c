"""Chunk files written with O_DIRECT (where the filesystem takes it) hold exactly the chunk format, and
a filesystem that refuses O_DIRECT gets buffered writes with nothing lost."""

from __future__ import annotations

import errno
import os
import random
import time
from pathlib import Path

import pytest

from fctui.repo import Repository
from fctui.repo.repository import CHUNK_RAW, CHUNK_ZSTD

BLOCK = 4096


def write_disk(repo: Repository, blocks: dict[int, bytes], size: int):  # type: ignore[no-untyped-def]
    with repo.new_point(vm_urn="urn:sites:1:vms:i-1", vm_name="vm1", job_id="job-1", kind="cbt",
                        vm_config={}, snapshot_urn="urn:snap:1", created=time.time()) as pw:
        dw = pw.add_disk(volume_urn="urn:vol:1", disk_name="d1", sequence_num=1, pci_type="VIRTIO",
                         size_bytes=size, block_size=BLOCK, storage_type="LOCALPOME", datastore_urn="urn:ds:1",
                         cbt=None, base_point_id=None)
        for i, b in sorted(blocks.items()):
            dw.put_block(i, b)
        return pw.commit(), None, dw


def image(blocks: dict[int, bytes], size: int) -> bytes:
    out = bytearray(size)
    for i, b in blocks.items():
        out[i * BLOCK: i * BLOCK + len(b)] = b
    return bytes(out)


def read_all(repo: Repository, point_id: str) -> bytes:
    reader = repo.open_disk(point_id, "urn:vol:1")
    return b"".join(reader.read_block(i) for i in range(reader.block_count))


def blocks_of(seed: int) -> dict[int, bytes]:
    rng = random.Random(seed)
    text = b"compressible text line 0123456789\n" * (BLOCK // 34 + 1)
    # odd sizes: the last block of the disk is short, so a chunk's length is no multiple of the alignment
    return {0: rng.randbytes(BLOCK), 1: text[:BLOCK], 3: rng.randbytes(BLOCK), 5: rng.randbytes(1000)}


def chunk_files(repo: Repository) -> list[Path]:
    return [p for p in repo.chunks_dir.rglob("*") if p.is_file()]


def test_direct_written_chunks_are_exact(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    blocks = blocks_of(1)
    size = 5 * BLOCK + 1000
    point, _, _ = write_disk(repo, blocks, size)
    assert read_all(repo, point.id) == image(blocks, size)
    files = chunk_files(repo)
    assert len(files) == 4
    for f in files:
        body = f.read_bytes()
        assert body[:4] in (CHUNK_RAW, CHUNK_ZSTD)
        if body[:4] == CHUNK_RAW:  # exactly marker + block: the alignment padding was cut off
            assert len(body) - 4 in (BLOCK, 1000)
    report = repo.verify()
    assert report.ok and report.chunks_checked == 4


def test_filesystem_refusing_direct_io_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    real_open = os.open
    refused = []

    def no_direct(path, flags, *a, **kw):  # type: ignore[no-untyped-def]
        if flags & os.O_DIRECT:
            refused.append(path)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", no_direct)
    repo = Repository.open(tmp_path / "repo")
    blocks = blocks_of(2)
    size = 5 * BLOCK + 1000
    with caplog.at_level("INFO", logger="fctui.repo"):
        point, _, _ = write_disk(repo, blocks, size)
    assert len(refused) == 1  # asked once, then buffered for good
    assert "refuses O_DIRECT" in caplog.text
    assert read_all(repo, point.id) == image(blocks, size)
    assert not [p for p in repo.chunks_dir.rglob("*") if p.name.endswith(".tmp")]  # no temp file left
