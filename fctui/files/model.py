"""What file-level restore shows: volumes found on a disk, and entries of their filesystems."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ENTRY_KINDS = ("file", "dir", "symlink", "other")


@dataclass(frozen=True)
class Volume:
    """One place on a disk that may hold a filesystem: a partition, an LVM logical volume, or the whole disk.

    ``name`` is the top-level directory of the disk's tree: ``p<N>`` for partition N (the number in the
    partition table), ``<vg>-<lv>`` for an LVM logical volume (as /dev/mapper names it), ``whole`` for a
    filesystem on the unpartitioned disk. ``fs_type`` is ``ext2``/``ext3``/``ext4``/``xfs``/``ntfs``/
    ``fat`` or ``""`` when no readable filesystem is there (swap, an LVM physical volume, empty space);
    ``what`` says in words what it is ("EFI system partition", "LVM physical volume of euleros", "swap")."""

    disk: int  # index in the restore point's disks
    name: str
    fs_type: str
    offset: int  # bytes from the start of the disk (for an LV: of its first extent)
    size: int
    label: str = ""
    what: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FsEntry:
    """One file, directory or link of a point's filesystem (or a volume, as a directory at the top level).

    ``path`` is absolute in the disk's tree, volume first: ``/p2/etc/nginx/nginx.conf``; ``/`` is the disk.
    ``mode`` holds the permission bits (``& 0o7777``). NTFS has no POSIX modes: directories are 0o755,
    files 0o644, read-only files 0o444 (FAT the same). ``mtime_ns`` is nanoseconds since the epoch (UTC);
    FAT stores local time with no zone, taken as UTC (2-second resolution). NTFS times come from
    $STANDARD_INFORMATION. ``name`` is the guest's name as stored (it may hold '/', NUL or control
    characters: consumers writing files must refuse unsafe names); in ``path`` a '/' inside a name is
    shown as U+2215 and NUL as U+2400, so a path never names another entry (such an entry cannot be
    looked up by path)."""

    disk: int
    path: str
    name: str
    kind: str  # one of ENTRY_KINDS
    size: int  # bytes of content (files), of the link text (symlinks), 0 for directories
    mtime_ns: int
    mode: int
    uid: int = 0
    gid: int = 0
    target: str | None = None  # a symlink's text, as stored (never followed)
    fs_type: str = ""  # of the volume the entry lives in

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mtime"] = self.mtime
        return out
