"""VMs whose system disk holds real partition tables and filesystems (``SimConfig.guest_filesystems``).

Three running VMs with VM Tools, ready for backup like the inventory's ordinary VMs (one VIRTIO disk on a
NAS datastore): ``web-ubuntu-ext4``, ``db-euleros-xfs`` and ``win-fileserver-ntfs``. The disk of each is
1 GiB (FusionCompute sizes disks in whole GB) and starts with the image of guest ``ext4``, ``xfs`` or
``ntfs`` of :mod:`fctui.sim.guestfs`, version 1; the rest of it was never written (reads as zeros), like a
disk grown after the guest was installed.

The image's non-zero blocks sit in the volume's overlay as raw bytes with epoch 0: written before CBT was
enabled, so a full backup reads them and no incremental does. Background guest writes
(``guest_write_rate``) never go to these disks. :func:`move_guest_fs` (control call ``POST
/sim/vms/{vm}/guestfs``) moves a disk to another version by writing, with the CBT epoch of the moment
(like a guest write), exactly the blocks whose bytes differ: getcbt then reports those blocks as changed.

This module imports only content, state and guestfs (the simulator's order: content, state, ops,
guestdisks, views, generator, app, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from fctui.sim import guestfs
from fctui.sim.state import Volume, bad

GUEST_DISK_GB = 1  # the smallest disk FusionCompute makes; every image is smaller


@dataclass(frozen=True)
class GuestVm:
    name: str
    guest: str  # in guestfs.GUESTS
    os_version: int  # id in the simulator's OS catalogue
    boot_firmware: str
    cpu: int
    mem_gb: int


GUEST_VMS: tuple[GuestVm, ...] = (
    GuestVm("web-ubuntu-ext4", "ext4", 10101, "UEFI", 2, 4),   # Ubuntu 20.04; GPT with an EFI partition
    GuestVm("db-euleros-xfs", "xfs", 10122, "BIOS", 4, 16),    # EulerOS 2.0 SP10; MBR, LVM
    GuestVm("win-fileserver-ntfs", "ntfs", 35, "BIOS", 4, 8),  # Windows Server 2019; MBR
)


@lru_cache(maxsize=None)
def image_blocks(guest: str, version: int, block_size: int) -> dict[int, bytes]:
    """The non-zero ``block_size`` blocks of a guest image (block number -> bytes), shared by every simulator
    of the process (a few tens of MiB per guest version; the raw image is not kept)."""
    raw = guestfs.read_image(guest, version)
    zero = bytes(block_size)
    out: dict[int, bytes] = {}
    for b in range(-(-len(raw) // block_size)):
        data = raw[b * block_size:(b + 1) * block_size]
        if len(data) < block_size:
            data += bytes(block_size - len(data))
        if data != zero:
            out[b] = data
    return out


def install_guest_fs(vol: Volume, guest: str, version: int = 1) -> None:
    """Make ``vol``'s content the image of ``guest``/``version``, as written before CBT (epoch 0)."""
    c = vol.content
    blocks = image_blocks(guest, version, c.block_size)
    if guestfs.spec(guest, version).disk_size > c.live.size:
        raise ValueError(f"the {guest} image does not fit on volume {vol.name}")
    c.live.overlay.update((b, (data, 0)) for b, data in blocks.items())
    c.live.mutations += 1
    # what the guest uses, for the volume's userUsedSize (no generated fill: initial_blocks stays 0)
    c.fill = len(blocks) * c.block_size / c.live.size
    vol.guest_fs, vol.guest_fs_version = guest, version


def move_guest_fs(vol: Volume, version: int) -> list[int]:
    """Write, with the current CBT epoch, every block of the image's extent whose bytes differ from
    ``version``'s image; returns those block numbers (ascending). Comparing with what the disk holds now
    (not with the other image) keeps the result exact even after a restore overwrote the disk."""
    if not vol.guest_fs:
        raise bad(f"The volume {vol.name} holds no guest filesystem.")
    if version not in guestfs.VERSIONS:
        raise bad(f"version must be one of {', '.join(map(str, guestfs.VERSIONS))}.")
    c = vol.content
    bs = c.block_size
    target = image_blocks(vol.guest_fs, version, bs)
    zero = c.factory.zero
    epoch = vol.epoch()
    written = []
    for b in range(-(-guestfs.spec(vol.guest_fs, version).disk_size // bs)):
        want = target.get(b, zero)
        if c.block_bytes(c.live, b) != want:
            c.write_bytes(b * bs, want, epoch)
            written.append(b)
    vol.guest_fs_version = version
    return written
