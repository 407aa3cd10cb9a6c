"""File-level restore: a restore point's disks read in place, their partitions, LVM volumes and filesystems.

Nothing is restored and nothing needs root: :class:`PointDiskView` serves one disk of one point straight
from the repository's chunks (through the manifest, with a small chunk cache), the ``dissect.*`` parsers
read partition tables (MBR, GPT), LVM and the filesystems (ext2/3/4, XFS, NTFS, FAT) from that view, and
:class:`PointFiles` presents them as one tree per disk whose top level is the disk's volumes::

    /p1/EFI/BOOT/BOOTX64.EFI        partition 1 (vfat)
    /p2/etc/nginx/nginx.conf        partition 2 (ext4)
    /euleros-root/etc/fstab         LVM logical volume root of volume group euleros (xfs)
    /whole/...                      a filesystem on the whole disk (no partition table)

Every byte comes from a chunk checked against its SHA-256; a damaged chunk under a file raises
:class:`FileDamagedError` naming the file, never wrong bytes.
"""

from .diskview import PointDiskView
from .errors import FileDamagedError, FilesError, NotADirectoryInPointError, PathNotFoundError
from .model import FsEntry, Volume

__all__ = [
    "FileDamagedError", "FilesError", "FsEntry", "NotADirectoryInPointError", "PathNotFoundError",
    "PointDiskView", "Volume",
]
