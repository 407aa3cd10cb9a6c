"""Finding the volumes of one disk: partition tables (GPT, MBR with extended partitions), LVM2 and the
filesystem (or swap, or LVM physical volume) in each, told by its own superblock, not by a partition type."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable

from dissect.util.stream import RangeStream

from .model import Volume

# A filesystem read through several stream layers (disk -> partition -> LV -> file runs): aligned reads of
# this size pass straight through each layer in one call.
_ALIGN = 4096

_GPT_ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
_GPT_BIOS_BOOT = "21686148-6449-6e6f-744e-656564454649"
_GPT_MS_RESERVED = "e3c9e316-0b5c-4db8-817d-f92dc00215ae"
_GPT_WIN_RECOVERY = "de94bba4-06d1-4d40-a16a-bfd50179d6ac"

# ext feature bits (fs/ext4/ext4.h): what an ext3 driver supports; anything beyond means ext4.
_EXT3_COMPAT_JOURNAL = 0x4
_EXT3_INCOMPAT_SUPP = 0x2 | 0x4 | 0x10  # filetype, recover, meta_bg
_EXT3_RO_COMPAT_SUPP = 0x1 | 0x2 | 0x4  # sparse_super, large_file, btree_dir

_SPECIAL = ("EFI system partition", "BIOS boot partition", "Microsoft reserved partition",
            "Windows recovery partition")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9+_.\-]")


@dataclass
class Probe:
    """What the first bytes of a volume say it holds."""

    kind: str  # ext2/ext3/ext4/xfs/ntfs/fat, "swap", "lvm", or "" (nothing known)
    label: str = ""


@dataclass
class FoundVolume:
    volume: Volume
    open: Callable[[], BinaryIO]  # a fresh stream over the volume's bytes
    partition_type: str = ""


@dataclass
class DiskLayout:
    volumes: list[FoundVolume] = field(default_factory=list)
    scheme: str = ""  # gpt | mbr | "" (no partition table)


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace").strip()


def probe(fh: BinaryIO) -> Probe:
    """Tell a volume's content by its own magic numbers (the partition type may lie or be generic)."""
    fh.seek(0)
    head = fh.read(8192)
    if len(head) < 1024:
        return Probe("")
    if head[:4] == b"XFSB":
        return Probe("xfs", _text(head[108:120]))
    if head[3:11] == b"NTFS    ":
        return Probe("ntfs", _ntfs_label(fh))
    if _looks_fat(head):
        off = 71 if head[82:87] == b"FAT32" else 43
        label = head[off:off + 11].decode("latin-1").strip()
        return Probe("fat", "" if label == "NO NAME" else label)
    if len(head) >= 1024 + 136 and head[1024 + 56:1024 + 58] == b"\x53\xef":
        sb = head[1024:]
        compat, incompat, ro_compat = struct.unpack_from("<III", sb, 92)
        if incompat & ~_EXT3_INCOMPAT_SUPP or ro_compat & ~_EXT3_RO_COMPAT_SUPP:
            kind = "ext4"
        elif compat & _EXT3_COMPAT_JOURNAL:
            kind = "ext3"
        else:
            kind = "ext2"
        return Probe(kind, _text(sb[120:136]))
    for sector in range(4):
        at = sector * 512
        if head[at:at + 8] == b"LABELONE" and head[at + 24:at + 32] == b"LVM2 001":
            return Probe("lvm")
    for page in (4096, 8192, 16384, 65536):
        if page <= len(head):
            sig = head[page - 10:page]
        else:
            fh.seek(page - 10)
            sig = fh.read(10)
        if sig in (b"SWAPSPACE2", b"SWAP-SPACE"):
            return Probe("swap")
    return Probe("")


def _ntfs_label(fh: BinaryIO) -> str:
    """NTFS keeps its label in the $Volume file, not in the boot sector."""
    from dissect.ntfs import NTFS

    try:
        return (NTFS(fh).volume_name or "").strip()
    except Exception:  # noqa: BLE001 - a label is not worth failing for; reading the volume will say more
        return ""


def _looks_fat(head: bytes) -> bool:
    """A FAT boot sector: a jump, a sane BIOS parameter block and the FAT type text (strict, so that an
    MBR with boot code is never taken for one)."""
    if not ((head[0] == 0xEB and head[2] == 0x90) or head[0] == 0xE9):
        return False
    if head[510:512] != b"\x55\xaa":
        return False
    bps, spc, reserved, nfats = struct.unpack_from("<HBHB", head, 11)
    if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1) or reserved == 0 or nfats not in (1, 2):
        return False
    return head[54:57] == b"FAT" or head[82:87] == b"FAT32"


def _fs_words(kind: str) -> str:
    return {"ext2": "ext2 filesystem", "ext3": "ext3 filesystem", "ext4": "ext4 filesystem",
            "xfs": "XFS filesystem", "ntfs": "NTFS filesystem", "fat": "FAT filesystem"}.get(kind, "")


def _safe(name: str) -> str:
    """A volume name from guest metadata, usable as one path component."""
    name = _SAFE_NAME.sub("_", name) or "_"
    return "_" + name if name.startswith(".") else name


def _partitions(fh: BinaryIO) -> tuple[str, list[tuple[int, int, int, str]]]:
    """(scheme, [(number, offset, size, type words)]) from dissect.volume, numbered as Linux does."""
    from dissect.volume.disk import Disk
    from dissect.volume.disk.schemes import GPT, MBR

    fh.seek(0)
    disk = Disk(fh)
    out: list[tuple[int, int, int, str]] = []
    if isinstance(disk.scheme, GPT):
        for p in disk.partitions:
            if p.guid is None or p.raw is None:
                continue  # a hybrid MBR's own entries: the GPT is the truth
            # dissect counts last_lba as exclusive; the GPT says inclusive
            size = (p.raw.last_lba - p.raw.first_lba + 1) * 512
            if p.raw.last_lba < p.raw.first_lba:
                continue
            type_id = str(p.type).lower()
            words = {_GPT_ESP: "EFI system partition", _GPT_BIOS_BOOT: "BIOS boot partition",
                     _GPT_MS_RESERVED: "Microsoft reserved partition",
                     _GPT_WIN_RECOVERY: "Windows recovery partition"}.get(type_id, p.type_name)
            out.append((p.number, p.offset, size, words))
        return "gpt", out
    if isinstance(disk.scheme, MBR):
        # dissect numbers logical partitions after their extended slot; Linux calls them 5, 6, ...
        primary = {}
        for slot, entry in enumerate(disk.scheme.mbr.part):
            if entry.type not in (0x00, 0x05, 0x0F, 0x85):
                primary[entry.sector_ofs * 512] = slot + 1
        logical = 5
        for p in disk.partitions:
            if p.offset in primary and p.number == primary[p.offset]:
                number = p.number
            else:
                number, logical = logical, logical + 1
            words = "EFI system partition" if p.type == 0xEF else p.type_name
            out.append((number, p.offset, p.size, words))
        return "mbr", out
    return "", []


# (vg name, PV uuid without dashes) -> that PV on another disk of the point, or None
PvLookup = Callable[[str, str], Any]


def scan(fh: BinaryIO, size: int, disk: int, pv_lookup: PvLookup | None = None) -> DiskLayout:
    """Every volume of a disk (``fh`` a seekable view of it), in disk order, LVM volumes after their PVs.
    A volume group with physical volumes on other disks of the point gets them from ``pv_lookup``; its
    logical volumes are listed on the disk holding their first extent."""
    layout = _plain(fh, size, disk)
    _add_lvm(layout, disk, pv_lookup)
    return layout


def physical_volumes(fh: BinaryIO, size: int) -> dict[str, Any]:
    """The LVM physical volumes of a disk by PV uuid (without dashes), as dissect devices."""
    from dissect.volume.lvm.physical import LVM2Device

    out = {}
    for found in _plain(fh, size, -1).volumes:
        if found.partition_type == "lvm":
            try:
                dev = LVM2Device(found.open())
            except Exception:  # noqa: BLE001 - guest metadata
                continue
            out[dev.id] = dev
    return out


def _plain(fh: BinaryIO, size: int, disk: int) -> DiskLayout:
    """Partitions (or the whole disk) and what each holds; no LVM logical volumes yet."""
    from dissect.volume.exceptions import DiskError

    whole = probe(fh)
    layout = DiskLayout()
    parts: list[tuple[int, int, int, str]] = []
    # A FAT/NTFS/XFS superblock at sector 0 is a filesystem on the whole disk even though a FAT or NTFS
    # boot sector also ends in 55 AA like an MBR.
    if whole.kind not in ("xfs", "ntfs", "fat"):
        try:
            layout.scheme, parts = _partitions(fh)
        except (DiskError, EOFError, RecursionError, ValueError):
            layout.scheme, parts = "", []
    if not layout.scheme:
        if whole.kind:
            layout.volumes.append(_found(fh, disk, "whole", 0, size, whole, "whole disk"))
        return layout
    for number, offset, psize, words in parts:
        if offset >= size or psize <= 0:
            continue
        psize = min(psize, size - offset)
        stream = RangeStream(fh, offset, psize, align=_ALIGN)
        layout.volumes.append(_found(fh, disk, f"p{number}", offset, psize, probe(stream), words))
    return layout


def _found(fh: BinaryIO, disk: int, name: str, offset: int, size: int, pr: Probe, words: str) -> FoundVolume:
    fs_type = pr.kind if pr.kind in ("ext2", "ext3", "ext4", "xfs", "ntfs", "fat") else ""
    if pr.kind == "swap":
        what = "swap"
    elif pr.kind == "lvm":
        what = "LVM physical volume"
    elif words == "EFI system partition" or (words in _SPECIAL and not fs_type):
        what = words
    elif fs_type:
        what = _fs_words(fs_type)
    else:
        what = f"{words}, no filesystem found" if words and words not in ("whole disk",) else "no filesystem found"
    return FoundVolume(Volume(disk=disk, name=name, fs_type=fs_type, offset=offset, size=size,
                              label=pr.label, what=what),
                       lambda: RangeStream(fh, offset, size, align=_ALIGN),
                       partition_type="lvm" if pr.kind == "lvm" else "")


def _add_lvm(layout: DiskLayout, disk: int, pv_lookup: PvLookup | None) -> None:
    """Logical volumes of the volume groups whose physical volumes are on this disk."""
    from dissect.volume.exceptions import LVM2Error
    from dissect.volume.lvm import LVM2
    from dissect.volume.lvm.physical import LVM2Device

    groups: dict[str, list[tuple[int, Any]]] = {}
    metadata: dict[str, dict] = {}
    for i, found in enumerate(layout.volumes):
        if found.partition_type != "lvm":
            continue
        try:
            dev = LVM2Device(found.open())
            meta = dev.metadata or {}
            vg_name = next((k for k, v in meta.items() if isinstance(v, dict)), None)
        except Exception:  # noqa: BLE001 - guest metadata; the PV stays listed as a PV without its LVs
            continue
        if vg_name is None:
            continue
        v = found.volume
        layout.volumes[i] = FoundVolume(
            Volume(disk=v.disk, name=v.name, fs_type="", offset=v.offset, size=v.size, label=v.label,
                   what=f"LVM physical volume of {vg_name}"), found.open, "lvm")
        groups.setdefault(vg_name, []).append((i, dev))
        # the newest metadata (highest seqno) of any PV describes the group
        if vg_name not in metadata or meta[vg_name].get("seqno", 0) > metadata[vg_name][vg_name].get("seqno", 0):
            metadata[vg_name] = meta
    taken = {f.volume.name for f in layout.volumes}
    for vg_name, members in groups.items():
        local = {dev.id: (idx, dev) for idx, dev in members}
        devices = [dev for _, dev in members]
        pv_ids = [str(pv.get("id", "")).replace("-", "") for pv in
                  metadata[vg_name][vg_name].get("physical_volumes", {}).values() if isinstance(pv, dict)]
        elsewhere = set()
        for pv_id in pv_ids:
            if pv_id not in local and pv_lookup is not None:
                other = pv_lookup(vg_name, pv_id)
                if other is not None:
                    devices.append(other)
                    elsewhere.add(pv_id)
        # dissect takes the group's description from the first device
        first = next((dev for dev in devices if dev.metadata is metadata[vg_name]), devices[0])
        devices.remove(first)
        try:
            lvm = LVM2([first, *devices])
        except Exception:  # noqa: BLE001
            continue
        vg = lvm.volume_group
        extent = vg.extent_size * 512
        pv_offsets = {}
        for pv in vg.pv:
            here = local.get(pv.id.replace("-", ""))
            if here is not None:
                pv_offsets[pv.name] = layout.volumes[here[0]].volume.offset + pv.pe_start * 512
        for lv in vg.lv:
            if not lv.is_visible:
                continue
            first_seg = lv.segments[0] if lv.segments else None
            stripes = getattr(first_seg, "stripes", None)
            first_pv = vg.physical_volumes.get(stripes[0][0]) if stripes else None
            if first_pv is not None and first_pv.id.replace("-", "") in elsewhere:
                continue  # listed on the disk that holds its first extent
            name = _safe(vg_name.replace("-", "--")) + "-" + _safe(lv.name.replace("-", "--"))
            while name in taken:
                name += "_"
            taken.add(name)
            offset, size = 0, 0
            try:
                size = sum(s.extent_count for s in lv.segments) * extent
                if stripes and stripes[0][0] in pv_offsets:
                    offset = pv_offsets[stripes[0][0]] + stripes[0][1] * extent
                for seg in lv.segments:
                    # dissect lays several stripes end to end instead of interleaving them: wrong bytes
                    if seg.type not in ("striped", "linear") or getattr(seg, "stripe_count", 1) != 1:
                        raise LVM2Error(f"{seg.type} segments over {getattr(seg, 'stripe_count', 1)} "
                                        "devices are not supported")
                stream = lv.open()
                pr = probe(stream)
                opener = _lv_opener(lv)
                what = f"LVM logical volume {lv.name} of {vg_name}"
            except Exception as exc:  # noqa: BLE001 - thin/raid/cache LVs, a PV on no disk of the point
                pr, opener = Probe(""), _no_stream(str(exc))
                what = f"LVM logical volume {lv.name} of {vg_name} (cannot be read here: {exc})"
            fs_type = pr.kind if pr.kind in ("ext2", "ext3", "ext4", "xfs", "ntfs", "fat") else ""
            if pr.kind == "swap":
                what = f"swap (LVM logical volume {lv.name} of {vg_name})"
            layout.volumes.append(FoundVolume(
                Volume(disk=disk, name=name, fs_type=fs_type, offset=offset, size=size, label=pr.label,
                       what=what), opener))


def _lv_opener(lv: object) -> Callable[[], BinaryIO]:
    return lambda: lv.open()  # type: ignore[attr-defined]


def _no_stream(why: str) -> Callable[[], BinaryIO]:
    def fail() -> BinaryIO:
        raise OSError(why)
    return fail
