"""A small known guest for the file browser's tests: ext4 images made with ``mke2fs -d`` (e2fsprogs, the
only filesystem tool a fresh CI machine has), written into a real restore point of a real repository.

Disk 1 (system): an MBR with partition 1 (ext4, the tree of GUEST below) and partition 2 (type swap, no
filesystem). Disk 2 (data): ext4 on the whole disk. Every expectation in the tests comes from the tables
here, never from fctui.files.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1 << 20
T0 = 1_780_000_000.0          # the restore point's time (2026-05-28 20:26 UTC)
FS_TIME = 1_700_000_000       # mke2fs's clock (E2FSPROGS_FAKE_TIME): lost+found and the root
BLOCK = 64 * 1024             # the point's block size: one damaged chunk hits one file only
PART1_LBA = 2048              # 1 MiB, as partitioning tools align
PART1_BYTES = 8 * MIB
PART2_BYTES = 2 * MIB
VM_URN = "urn:sites:1:vms:i-00000042"


def _data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@dataclass(frozen=True)
class Item:
    path: str            # inside the filesystem
    mode: int
    mtime: int
    content: bytes | None = None   # None: a directory
    target: str | None = None      # a symlink


SPOOL = 600
# hand-written: what the guest holds (directories first, as they are made)
GUEST = [
    Item("etc", 0o755, 1_700_000_500),
    Item("etc/nginx", 0o755, 1_700_000_600),
    Item("etc/hostname", 0o644, 1_700_000_100, b"web-01\n"),
    Item("etc/secret", 0o600, 1_700_000_150, b"s3cret\n"),
    Item("etc/nginx/nginx.conf", 0o640, 1_700_000_200, b"worker_processes 2;\n" * 50),
    Item("etc/nginx/mime.types", 0o644, 1_700_000_250, b"types { text/html html; }\n"),
    Item("etc/localtime", 0o777, 1_700_000_300, target="/usr/share/zoneinfo/UTC"),
    Item("home", 0o755, 1_700_000_700),
    Item("home/alice", 0o700, 1_700_000_800),
    Item("home/alice/notes.txt", 0o600, 1_700_000_900, b"remember the milk\n"),
    Item("var", 0o755, 1_700_001_000),
    Item("var/lib", 0o755, 1_700_001_100),
    Item("var/lib/data.bin", 0o644, 1_700_001_200, _data(384 * 1024, 7)),   # the one the damage hits
    Item("var/spool", 0o755, 1_700_001_300),
    # a directory longer than any screen: the cursor must walk it, not the view alone
    *(Item(f"var/spool/msg{i:04d}", 0o644, 1_700_001_400 + i, b"m") for i in range(SPOOL)),
]
# what /p1/etc holds below it, counted by hand: hostname 7 + secret 7 + nginx.conf 1000 + mime.types 26
ETC_FILES = 4
ETC_BYTES = 7 + 7 + 1000 + 26

DATA_DISK = [
    Item("data", 0o755, 1_700_002_000),
    Item("data/readme.txt", 0o644, 1_700_002_100, b"the data disk\n"),
]


def _mke2fs(items: list[Item], size: int, work: Path, name: str) -> bytes:
    src = work / f"{name}-src"
    src.mkdir()
    for it in items:
        p = src / it.path
        if it.target is not None:
            os.symlink(it.target, p)
        elif it.content is None:
            p.mkdir()
        else:
            p.write_bytes(it.content)
    for it in sorted(items, key=lambda i: -i.path.count("/")):   # children before the directory's mtime
        p = src / it.path
        if it.target is None:
            os.chmod(p, it.mode)
        os.utime(p, ns=(it.mtime * 10**9, it.mtime * 10**9), follow_symlinks=False)
    img = work / f"{name}.img"
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(FS_TIME)}
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", name, "-U",
                    "6c6f7374-2b66-6f75-6e64-000000000001", "-E", "root_owner=0:0,hash_seed="
                    "6c6f7374-2b66-6f75-6e64-000000000002", "-d", str(src), str(img), f"{size // 1024}k"],
                   check=True, env=env, capture_output=True)
    # owners as on the guest whoever runs the tests (mke2fs -d copies the runner's uid)
    cmds = "".join(f"sif /{it.path} uid 0\nsif /{it.path} gid 0\n" for it in items)
    cmds += "sif / mtime 1700000000\nsif /lost+found mtime 1700000000\n"
    (work / f"{name}.cmds").write_text(cmds)
    subprocess.run(["debugfs", "-w", "-f", str(work / f"{name}.cmds"), str(img)], check=True, env=env,
                   capture_output=True)
    return img.read_bytes()


def _mbr(parts: list[tuple[int, int, int]]) -> bytes:
    """A DOS partition table: (type, first LBA, sectors) per primary partition."""
    mbr = bytearray(512)
    for i, (ptype, lba, sectors) in enumerate(parts):
        mbr[446 + 16 * i: 446 + 16 * (i + 1)] = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", ptype,
                                                            b"\xfe\xff\xff", lba, sectors)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def fs_blocks(fs: bytes, path: str, work: Path) -> list[int]:
    """The filesystem blocks of a file (debugfs ``blocks``) of an ext2/3/4 filesystem image."""
    f = work / "probe.img"
    f.write_bytes(fs)
    out = subprocess.run(["debugfs", "-R", f"blocks /{path}", str(f)], check=True, capture_output=True,
                         text=True).stdout
    f.unlink()
    return [int(x) for x in out.split()]


@dataclass
class Guest:
    repo: Any
    point: Any
    system_fs: bytes     # the ext4 filesystem holding the files damage() may hit
    fs_offset: int       # where it starts on disk 1
    damaged_chunk: str | None = None

    def damage(self, path: str, work: Path) -> None:
        """Corrupt one chunk of disk 1 that holds only bytes of ``path`` (a file of ``system_fs``)."""
        fs_block = 1024 << struct.unpack_from("<I", self.system_fs, 1024 + 24)[0]   # s_log_block_size
        blocks = set(fs_blocks(self.system_fs, path, work))
        per = BLOCK // fs_block
        for b in sorted(blocks):
            idx = -(-(self.fs_offset + b * fs_block) // BLOCK)    # the first chunk starting at or after it
            first = (idx * BLOCK - self.fs_offset) // fs_block
            if all(first + k in blocks for k in range(per)):
                break
        else:
            raise AssertionError(f"no chunk holds only {path}")
        reader = self.repo.open_disk(self.point.id, self.point.disks[0].volume_urn)
        digest = reader.block_digests()[idx]
        chunk = self.repo.chunk_path(digest)
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0xFF
        chunk.write_bytes(bytes(data))
        self.damaged_chunk = digest


def _point(repo: Any, images: list[bytes], *, vm_urn: str, vm_name: str, created: float) -> Any:
    with repo.new_point(vm_urn=vm_urn, vm_name=vm_name, job_id="j-files", kind="cbt", vm_config={},
                        snapshot_urn=f"{vm_urn}:snapshots:1", created=created) as w:
        for n, image in enumerate(images):
            d = w.add_disk(volume_urn=f"urn:sites:1:volumes:{hashlib.sha1(vm_urn.encode()).hexdigest()[:6]}{n}",
                           disk_name=f"{vm_name}-disk{n + 1}", sequence_num=n + 1, pci_type="VIRTIO",
                           size_bytes=len(image), block_size=BLOCK, storage_type="LOCALPOME",
                           datastore_urn="urn:sites:1:datastores:1", cbt=None, base_point_id=None)
            for i in range(0, len(image), BLOCK):
                d.put_block(i // BLOCK, image[i:i + BLOCK])
        return w.commit()


def sim_guest(repo: Any, *, guest: str = "ext4", version: int = 1, vm_name: str = "ubuntu-web-01",
              created: float = T0) -> Guest:
    """A one-disk restore point of a simulator guest's committed image (fctui.sim.guestfs): what the
    snapshots show, the same on every machine (no mke2fs of whatever version)."""
    from fctui.sim.guestfs import image, spec
    raw = image(guest, version)
    root = next((v for v in spec(guest, version).volumes if v.fs_type == "ext4"), None)
    point = _point(repo, [raw], vm_urn=VM_URN, vm_name=vm_name, created=created)
    if root is None:
        return Guest(repo, point, b"", 0)
    return Guest(repo, point, raw[root.offset:root.offset + root.size], root.offset)


def make_guest(repo: Any, work: Path, *, vm_urn: str = VM_URN, vm_name: str = "web-01",
               created: float = T0) -> Guest:
    """A committed restore point of a two-disk guest, in ``repo``."""
    work.mkdir(parents=True, exist_ok=True)
    system_fs = _mke2fs(GUEST, PART1_BYTES, work, "rootfs")
    data_fs = _mke2fs(DATA_DISK, 4 * MIB, work, "data")
    part2_lba = PART1_LBA + PART1_BYTES // 512
    disk0 = bytearray(PART1_LBA * 512 + PART1_BYTES + PART2_BYTES)
    disk0[:512] = _mbr([(0x83, PART1_LBA, PART1_BYTES // 512), (0x82, part2_lba, PART2_BYTES // 512)])
    disk0[PART1_LBA * 512: PART1_LBA * 512 + PART1_BYTES] = system_fs
    point = _point(repo, [bytes(disk0), data_fs], vm_urn=vm_urn, vm_name=vm_name, created=created)
    return Guest(repo, point, system_fs, PART1_LBA * 512)
