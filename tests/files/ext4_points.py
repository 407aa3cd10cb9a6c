"""Restore points whose disk holds a real ext4 filesystem, built at test time with e2fsprogs only
(``mke2fs -d`` from a directory, ``debugfs`` to set what a directory cannot say): what CI has.

The disk is an MBR with one partition at 1 MiB (``/p1``), stored in a real repository as a backup stores
it: one chunk per non-zero block of BS bytes.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from fctui.repo import Repository

BS = 64 * 1024          # the repository's block (chunk) size for these points
FS_OFFSET = 1 << 20     # partition 1 starts at LBA 2048
VOL = "urn:sites:1:volumes:files-1"

needs_e2fsprogs = pytest.mark.skipif(shutil.which("mke2fs") is None or shutil.which("debugfs") is None,
                                     reason="e2fsprogs (mke2fs, debugfs) not installed")


def make_ext4(src: Path, image: Path, size_mib: int = 8) -> None:
    """An ext4 filesystem holding ``src``'s tree (modes, mtimes in seconds, owners, links, fifos). Without
    metadata_csum and dir_index, so a test may patch a name in place (a hostile directory entry)."""
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-O", "^metadata_csum,^dir_index",
                    "-L", "files-test", "-d", str(src), str(image), f"{size_mib}M"],
                   check=True, capture_output=True)


def debugfs(image: Path, *requests: str, write: bool = False) -> str:
    run = subprocess.run(["debugfs"] + (["-w"] if write else []) + ["-f", "-", str(image)],
                         input="\n".join(requests) + "\n", check=True, capture_output=True, text=True)
    # with -f, each request's output follows an echo of the request ("debugfs: blocks /x")
    return "".join(line for line in run.stdout.splitlines(keepends=True) if not line.startswith("debugfs: "))


def set_mtime_ns(image: Path, path: str, mtime_ns: int) -> None:
    """The nanoseconds of an inode's mtime (mke2fs -d keeps whole seconds only)."""
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
    """The filesystem blocks (4 KiB) holding a file's data, in file order."""
    return [int(b) for b in debugfs(image, f"blocks {path}").split()]


def mbr_disk(image: Path) -> bytes:
    """A disk: an MBR with partition 1 (type 0x83) at 1 MiB holding the image, then 1 MiB of nothing."""
    fs = image.read_bytes()
    sectors = len(fs) // 512
    mbr = bytearray(512)
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", FS_OFFSET // 512, sectors)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr) + bytes(FS_OFFSET - 512) + fs + bytes(1 << 20)


def store_point(repo: Repository, disk: bytes, *, vm_name: str = "web01", disks: int = 1) -> str:
    """A committed restore point of VM ``vm_name`` whose disk(s) hold ``disk`` (the same bytes each)."""
    size = -(-len(disk) // BS) * BS
    with repo.new_point(vm_urn=f"urn:sites:1:vms:{vm_name}", vm_name=vm_name, job_id="test", kind="standard",
                        vm_config={}, snapshot_urn="s", created=time.time()) as pw:
        for n in range(disks):
            dw = pw.add_disk(volume_urn=f"{VOL}-{n}", disk_name=f"sd{'abcd'[n]}", sequence_num=n + 1,
                             pci_type="VIRTIO", size_bytes=size, block_size=BS, storage_type="LOCAL",
                             datastore_urn="ds", cbt=None, base_point_id=None)
            for i in range(0, len(disk), BS):
                block = disk[i:i + BS].ljust(BS, b"\0")
                if block.count(0) != BS:
                    dw.put_block(i // BS, block)
        return pw.commit().id


def damage_file(repo: Repository, point_id: str, image: Path, path: str, *, disk: int = 0) -> int:
    """Corrupt one chunk that holds only ``path``'s data (a flipped byte in the stored chunk); returns
    its block index. The file must span at least one whole chunk."""
    fs_blocks = set(file_blocks(image, path))
    per_chunk = BS // 4096
    owned = [c for c in sorted({(FS_OFFSET + b * 4096) // BS for b in fs_blocks})
             if all((c * BS - FS_OFFSET) // 4096 + k in fs_blocks for k in range(per_chunk))]
    assert owned, f"{path} holds no whole chunk"
    block = owned[len(owned) // 2]
    reader = repo.open_disk(point_id, f"{VOL}-{disk}")
    digest = reader.block_digests()[block]
    chunk = repo.chunk_path(digest)
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    chunk.write_bytes(bytes(raw))
    return block
