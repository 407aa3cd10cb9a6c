"""Damaging a restore point's chunk under a known file, found from the file's own bytes (not from the
file-level restore code under test)."""

from __future__ import annotations

import os

from fctui.repo import Repository, RestorePoint


def chunk_under(repo: Repository, point: RestorePoint, data: bytes) -> tuple[int, str]:
    """The disk block (and its chunk) that holds the middle of ``data``, found by searching every stored
    block for a piece of it; the whole block must be ``data``'s own bytes (no other file shares it)."""
    page = len(data) // 2 // 4096 * 4096   # a filesystem block of the file: never split between chunks
    needle = data[page:page + 64]
    assert data.count(needle) == 1
    reader = repo.open_disk(point.id, point.disks[0].volume_urn)
    hits = [(i, d) for i, d in sorted(reader.block_digests().items()) if needle in reader.read_block(i)]
    assert len(hits) == 1, hits
    index, digest = hits[0]
    assert reader.read_block(index) in data   # only this file's bytes: the damage touches no other file
    return index, digest


def damage(repo: Repository, digest: str, how: str) -> None:
    """``corrupt``: one byte of the stored chunk flipped (its hash, or its zstd frame, no longer checks);
    ``deleted``: the chunk file removed."""
    path = repo.chunk_path(digest)
    if how == "deleted":
        path.unlink()
        return
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x5A
    os.chmod(path, 0o600)
    path.write_bytes(bytes(raw))
