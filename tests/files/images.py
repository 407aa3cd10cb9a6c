"""Disk images for file-level restore tests, built at test time from Python and e2fsprogs only (mke2fs -d,
debugfs): the tools a fresh CI machine has. Partition tables are written here byte by byte."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
import uuid
import zlib
from pathlib import Path

import pytest

from fctui.repo import Repository, RestorePoint

MiB = 1 << 20
SECTOR = 512


def tool(name: str) -> str:
    for cand in (shutil.which(name), f"/sbin/{name}", f"/usr/sbin/{name}"):
        if cand and os.path.exists(cand):
            return cand
    pytest.skip(f"{name} (e2fsprogs) is not installed")


def write_tree(root: Path, spec: dict[str, tuple]) -> None:
    """``spec``: path -> ("file", bytes, mode, mtime) | ("dir", mode, mtime) | ("symlink", target).
    Directories' modes and times are set after their contents."""
    dirs = []
    for rel, what in spec.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if what[0] == "file":
            p.write_bytes(what[1])
            os.chmod(p, what[2])
            os.utime(p, (what[3], what[3]))
        elif what[0] == "dir":
            p.mkdir(exist_ok=True)
            dirs.append((p, what))
        else:
            os.symlink(what[1], p)
    for p, what in sorted(dirs, key=lambda d: -len(d[0].parts)):
        os.chmod(p, what[1])
        os.utime(p, (what[2], what[2]))


def mke2fs(tree: Path, size: int, out: Path, *, fs_type: str = "ext4", label: str = "",
           block_size: int = 4096) -> bytes:
    """An ext2/3/4 filesystem of ``size`` bytes holding ``tree`` (4 KiB blocks, 256-byte inodes)."""
    out.unlink(missing_ok=True)
    with open(out, "wb") as f:
        f.truncate(size)
    cmd = [tool("mke2fs"), "-q", "-F", "-t", fs_type, "-b", str(block_size), "-I", "256", "-d", str(tree)]
    if label:
        cmd += ["-L", label]
    subprocess.run(cmd + [str(out)], check=True, capture_output=True,
                   env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"})
    return out.read_bytes()


def fs_block_of(image: Path, path: str, index: int = 0) -> int:
    """The filesystem block holding block ``index`` of ``path`` in an ext image (debugfs, not our reader)."""
    res = subprocess.run([tool("debugfs"), "-R", f"bmap {path} {index}", str(image)], check=True,
                         capture_output=True, text=True)
    return int(res.stdout.strip().splitlines()[-1])


def mbr(parts: list[tuple[int, int, int]], *, extended_start: int | None = None) -> bytes:
    """A 512-byte MBR: ``parts`` (type, first sector, sectors) in slots 1-4."""
    sector = bytearray(SECTOR)
    for slot, (ptype, first, count) in enumerate(parts):
        struct.pack_into("<B3sB3sII", sector, 446 + 16 * slot, 0, b"\xfe\xff\xff", ptype, b"\xfe\xff\xff",
                         first, count)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def ebr(logical: tuple[int, int, int], next_link: tuple[int, int] | None) -> bytes:
    """An extended boot record: its logical partition (type, sectors after this EBR, sectors) and the
    link to the next EBR (sectors from the start of the extended partition, sectors)."""
    entries = [logical]
    if next_link is not None:
        entries.append((0x05, *next_link))
    return mbr(entries)


GPT_LINUX = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
GPT_BIOS_BOOT = uuid.UUID("21686148-6449-6E6F-744E-656564454649")
GPT_ESP = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")


def gpt_disk(size: int, parts: list[tuple[int, uuid.UUID, int, int, str]]) -> bytearray:
    """A disk of ``size`` bytes with a protective MBR and a primary GPT (with CRCs): ``parts`` are
    (number, type, first LBA, last LBA inclusive, name). Contents are written by the caller."""
    disk = bytearray(size)
    lbas = size // SECTOR
    disk[0:SECTOR] = mbr([(0xEE, 1, min(lbas - 1, 0xFFFFFFFF))])
    table = bytearray(128 * 128)
    for number, ptype, first, last, name in parts:
        at = (number - 1) * 128
        struct.pack_into("<16s16sQQQ72s", table, at, ptype.bytes_le, uuid.uuid4().bytes_le, first, last, 0,
                         name.encode("utf-16-le"))
    header = bytearray(92)
    struct.pack_into("<8sIIIIQQQQ16sQIII", header, 0, b"EFI PART", 0x10000, 92, 0, 0, 1, lbas - 1, 34,
                     lbas - 34, uuid.uuid4().bytes_le, 2, 128, 128, zlib.crc32(table))
    struct.pack_into("<I", header, 16, zlib.crc32(header))
    disk[SECTOR:SECTOR + 92] = header
    disk[2 * SECTOR:2 * SECTOR + len(table)] = table
    return disk


def write_point(repo: Repository, disks: list[bytes], *, block_size: int = 64 * 1024,
                names: tuple[str, ...] = ("sda", "sdb", "sdc")) -> RestorePoint:
    """A restore point of the given disk images written through the repository's own writer."""
    with repo.new_point(vm_urn="urn:sites:1:vms:i-00000001", vm_name="guest", job_id="job-1", kind="cbt",
                        vm_config={}, snapshot_urn="urn:snap:1", created=time.time()) as pw:
        for n, image in enumerate(disks):
            dw = pw.add_disk(volume_urn=f"urn:sites:1:volumes:v{n}", disk_name=names[n], sequence_num=n + 1,
                             pci_type="VIRTIO", size_bytes=len(image), block_size=block_size,
                             storage_type="LOCAL", datastore_urn="urn:ds:1", cbt=None, base_point_id=None)
            view = memoryview(image)
            for i in range(0, len(image), block_size):
                dw.put_block(i // block_size, bytes(view[i:i + block_size]))
        return pw.commit()


LVM_EXTENT = 4 * MiB
LVM_PE_START = 1 * MiB


def lvm_pv(size: int, vg: str, lvs: dict[str, list[tuple[int, int]]]) -> bytearray:
    """A disk that is one LVM2 physical volume (label, metadata area, data from 1 MiB), written here
    from the on-disk format: volume group ``vg`` with logical volumes ``lvs`` = name -> [(PV extent,
    extent count)] in LV order (one linear segment each). Contents are written by the caller at
    ``LVM_PE_START + pv_extent * LVM_EXTENT``."""
    return lvm_pvs([size], vg, {lv: [(0, e, n) for e, n in runs] for lv, runs in lvs.items()})[0]


def lvm_pvs(sizes: list[int], vg: str, lvs: dict[str, list[tuple[int, int, int]]]) -> list[bytearray]:
    """Disks that are the physical volumes of one volume group (as :func:`lvm_pv`); ``lvs`` = name ->
    [(PV index, PV extent, extent count)]: a logical volume may span the disks. A segment given as
    (((PV index, PV extent), ...), extent count) is striped over those PVs (64 KiB stripes)."""
    uuids = [f"Pv{n:04d}Aa1111Bb2222Cc3333Dd4444Ee" for n in range(len(sizes))]  # 32 characters
    segments = []
    for lv, runs in lvs.items():
        segs, at = [], 0
        for n, run in enumerate(runs, 1):
            if isinstance(run[0], tuple):  # ((pv, pv_extent), (pv, pv_extent), ...), count: striped
                stripes, count = run
                listed = ", ".join(f'"pv{pv}", {e}' for pv, e in stripes)
                segs.append(f'segment{n} {{\nstart_extent = {at}\nextent_count = {count}\ntype = "striped"\n'
                            f'stripe_count = {len(stripes)}\nstripe_size = 128\nstripes = [\n{listed}\n]\n}}\n')
            else:
                pv, pv_extent, count = run
                segs.append(f'segment{n} {{\nstart_extent = {at}\nextent_count = {count}\ntype = "striped"\n'
                            f'stripe_count = 1\nstripes = [\n"pv{pv}", {pv_extent}\n]\n}}\n')
            at += count
        segments.append(f'{lv} {{\nid = "lv-{lv}"\nstatus = ["READ", "WRITE", "VISIBLE"]\nflags = []\n'
                        f'segment_count = {len(segs)}\n' + "".join(segs) + "}\n")
    pvs_text = ""
    for n, (size, pv_uuid) in enumerate(zip(sizes, uuids)):
        pv_id = "-".join((pv_uuid[:6], pv_uuid[6:10], pv_uuid[10:14], pv_uuid[14:18], pv_uuid[18:22],
                          pv_uuid[22:26], pv_uuid[26:]))
        pvs_text += (f'pv{n} {{\nid = "{pv_id}"\nstatus = ["ALLOCATABLE"]\nflags = []\n'
                     f'dev_size = {size // SECTOR}\npe_start = {LVM_PE_START // SECTOR}\n'
                     f'pe_count = {(size - LVM_PE_START) // LVM_EXTENT}\n}}\n')
    text = (f'{vg} {{\nid = "vg-{vg}"\nseqno = 1\nformat = "lvm2"\nstatus = ["RESIZEABLE", "READ", "WRITE"]\n'
            f'flags = []\nextent_size = {LVM_EXTENT // SECTOR}\nmax_lv = 0\nmax_pv = 0\n'
            f'physical_volumes {{\n{pvs_text}}}\n'
            f'logical_volumes {{\n' + "".join(segments) + "}\n}\n"
            'contents = "Text Format Volume Group"\nversion = 1\ndescription = ""\n').encode() + b"\x00"
    disks = []
    for size, pv_uuid in zip(sizes, uuids):
        disk = bytearray(size)
        label = struct.pack("<8sQII8s", b"LABELONE", 1, 0, 32, b"LVM2 001")
        pv_header = struct.pack("<32sQ", pv_uuid.encode(), size)
        locations = struct.pack("<QQQQ", LVM_PE_START, 0, 0, 0) + struct.pack("<QQQQ", 4096, LVM_PE_START - 4096, 0, 0)
        disk[512:512 + len(label) + len(pv_header) + len(locations)] = label + pv_header + locations
        mda = struct.pack("<I16sIQQ", 0, b" LVM2 x[5A%r0N*>", 1, 4096, LVM_PE_START - 4096)
        mda += struct.pack("<QQII", 512, len(text), 0, 0) + bytes(24)
        disk[4096:4096 + len(mda)] = mda
        disk[4096 + 512:4096 + 512 + len(text)] = text
        disks.append(disk)
    return disks


def _lfn_checksum(short: bytes) -> int:
    total = 0
    for c in short:
        total = (((total & 1) << 7) + (total >> 1) + c) & 0xFF
    return total


def fat_dirents(entries: list[tuple]) -> bytes:
    """32-byte FAT directory entries from (long name | None, 11-byte short name, attr, cluster, size,
    (year, month, day, hour, minute, second)), long names as VFAT slots before their short entry; a
    ("raw", bytes) item is copied as it is (deleted entries, labels, bad slots)."""
    out = bytearray()
    for e in entries:
        if e[0] == "raw":
            out += e[1]
            continue
        long_name, short, attr, cluster, size, (y, mo, d, h, mi, s) = e
        if long_name:
            units = long_name.encode("utf-16-le") + b"\x00\x00"
            units += b"\xff" * (-len(units) % 26)
            slots = [units[i:i + 26] for i in range(0, len(units), 26)]
            for n in range(len(slots), 0, -1):
                part = slots[n - 1]
                out += (bytes([n | (0x40 if n == len(slots) else 0)]) + part[:10] + bytes([0x0F, 0,
                        _lfn_checksum(short)]) + part[10:22] + b"\x00\x00" + part[22:26])
        date = (y - 1980) << 9 | mo << 5 | d
        time_ = h << 11 | mi << 5 | s // 2
        out += struct.pack("<11sBBBHHHHHHHI", short, attr, 0, 0, time_, date, date, cluster >> 16, time_, date,
                           cluster & 0xFFFF, size)
    return bytes(out)


def fat16(files: dict[int, bytes], root: bytes, fat_chain: dict[int, int], *, label: bytes = b"TESTFAT    ",
          size: int = 16 * MiB) -> bytearray:
    """A FAT16 filesystem (512-byte sectors, 2 KiB clusters, 2 FATs, 512 root entries), written here from
    the on-disk format: ``root`` the root directory's entries, ``files`` cluster -> bytes (<= one
    cluster each), ``fat_chain`` cluster -> next cluster (0xFFFF ends a chain)."""
    sectors, spc, reserved, nfats, root_entries = size // SECTOR, 4, 1, 2, 512
    fat_sectors = 32
    fs = bytearray(size)
    fs[0:3] = b"\xeb\x3c\x90"
    fs[3:11] = b"MSWIN4.1"
    struct.pack_into("<HBHBHHBHHHII", fs, 11, SECTOR, spc, reserved, nfats, root_entries, 0, 0xF8, fat_sectors,
                     32, 64, 0, sectors)
    struct.pack_into("<BBBI11s8s", fs, 36, 0x80, 0, 0x29, 0x12345678, label, b"FAT16   ")
    fs[510:512] = b"\x55\xaa"
    fat = bytearray(fat_sectors * SECTOR)
    struct.pack_into("<HH", fat, 0, 0xFFF8, 0xFFFF)
    for cluster, nxt in fat_chain.items():
        struct.pack_into("<H", fat, cluster * 2, nxt)
    for n in range(nfats):
        at = (reserved + n * fat_sectors) * SECTOR
        fs[at:at + len(fat)] = fat
    root_at = (reserved + nfats * fat_sectors) * SECTOR
    fs[root_at:root_at + len(root)] = root
    data_at = root_at + root_entries * 32
    for cluster, data in files.items():
        at = data_at + (cluster - 2) * spc * SECTOR
        fs[at:at + len(data)] = data
    return fs
