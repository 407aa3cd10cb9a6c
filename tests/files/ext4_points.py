"""Restore points whose disk holds a real ext4 filesystem for the extraction and ``fctui files`` tests, on
top of tests/files/images.py (mke2fs -d, a hand-written MBR, the repository's own writer): the tools a
fresh CI machine has. Here: what those tests add (nanosecond mtimes and hostile names set in the image,
a chunk under one file damaged).

The disk is an MBR with one partition at 1 MiB (``/p1``), stored in 64 KiB chunks.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fctui.repo import Repository

from .images import MiB, mbr, mke2fs, tool, write_point

BS = 64 * 1024          # the repository's block (chunk) size of these points (images.write_point's default)
FS_OFFSET = MiB         # partition 1 starts at LBA 2048


def make_ext4(src: Path, image: Path, size_mib: int = 8) -> None:
    """An ext4 filesystem holding ``src``'s tree (modes, mtimes in whole seconds, owners, links, fifos)."""
    mke2fs(src, size_mib * MiB, image, label="files-test")


def set_modes_and_times(src: Path, tree: dict[str, tuple]) -> None:
    """``tree``: path -> (kind, content, mode, mtime). Modes and times deepest first, so filling a directory
    does not move its time afterwards; a symlink keeps its own mode and gets only its time."""
    for rel in sorted(tree, key=lambda r: -r.count("/")):
        kind, _, mode, mtime = tree[rel]
        if kind != "symlink":
            os.chmod(src / rel, mode)
        os.utime(src / rel, (mtime, mtime), follow_symlinks=False)


def debugfs(image: Path, *requests: str, write: bool = False) -> str:
    run = subprocess.run([tool("debugfs")] + (["-w"] if write else []) + ["-f", "-", str(image)],
                         input="\n".join(requests) + "\n", check=True, capture_output=True, text=True)
    # with -f, each request's output follows an echo of the request ("debugfs: blocks /x")
    return "".join(line for line in run.stdout.splitlines(keepends=True) if not line.startswith("debugfs: "))


def set_mtime_ns(image: Path, path: str, mtime_ns: int) -> None:
    """An inode's mtime to the nanosecond (mke2fs -d keeps whole seconds only)."""
    seconds, nanos = divmod(mtime_ns, 1_000_000_000)
    debugfs(image, f"sif {path} mtime {seconds}", f"sif {path} mtime_extra {nanos << 2}", write=True)


def rename_entry(image: Path, old: bytes, new: bytes) -> None:
    """Rewrite a directory entry's name in place (same length): how a hostile image gets names no
    filesystem API would create ('a/b', 'a\\0b'). ``old`` must occur once in the image."""
    assert len(old) == len(new)
    raw = bytearray(image.read_bytes())
    at = raw.find(old)
    assert at >= 0 and raw.find(old, at + 1) < 0, f"{old!r} must occur exactly once in the image"
    raw[at:at + len(old)] = new
    image.write_bytes(bytes(raw))


def file_blocks(image: Path, path: str) -> list[int]:
    """The filesystem blocks (4 KiB) holding a file's data, in file order (debugfs, not our reader)."""
    return [int(b) for b in debugfs(image, f"blocks {path}").split()]


def mbr_disk(image: Path) -> bytes:
    """A disk: an MBR with partition 1 (type 0x83) at 1 MiB holding the image, then 1 MiB of nothing."""
    fs = image.read_bytes()
    return mbr([(0x83, FS_OFFSET // 512, len(fs) // 512)]).ljust(FS_OFFSET, b"\0") + fs + bytes(MiB)


def store_point(repo: Repository, disk: bytes, *, disks: int = 1) -> str:
    """A committed restore point whose disk(s) hold ``disk`` (the same bytes each); its id."""
    return write_point(repo, [disk] * disks, block_size=BS).id


def damage_file(repo: Repository, point_id: str, blocks: list[int], *, disk: int = 0) -> int:
    """Corrupt one chunk that holds only a file's data (``blocks``: its :func:`file_blocks`, read before
    any name is patched: debugfs refuses a directory whose checksum no longer matches) with a flipped
    byte in the stored chunk; returns the chunk's block index. The file must span a whole chunk."""
    fs_blocks = set(blocks)
    per_chunk = BS // 4096
    owned = [c for c in sorted({(FS_OFFSET + b * 4096) // BS for b in fs_blocks})
             if all((c * BS - FS_OFFSET) // 4096 + k in fs_blocks for k in range(per_chunk))]
    assert owned, "the file holds no whole chunk"
    block = owned[len(owned) // 2]
    point = repo.point(point_id)
    digest = repo.open_disk(point_id, point.disks[disk].volume_urn).block_digests()[block]
    chunk = repo.chunk_path(digest)
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    chunk.write_bytes(bytes(raw))
    return block
