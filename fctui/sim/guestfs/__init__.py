"""Guest disks with real partition tables and filesystems, for the simulator's guest-filesystem VMs.

:mod:`.spec` says what each disk holds (every file, mode, owner, time and byte, in two versions);
``images/<guest>-v<N>.img.zst`` are the raw disk images ``build_images.py`` made from it (committed: tests
never build them). :func:`image` gives a version's raw bytes::

    from fctui.sim.guestfs import GUESTS, image, spec
    raw = image("ext4", 1)               # 64 MiB, GPT: p1 FAT EFI system partition, p2 ext4
    spec("ext4", 2).entry("/p2/etc/nginx/nginx.conf").data
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import zstandard

from fctui.sim.guestfs.spec import CHANGES, GUESTS, VERSIONS, Change, GuestSpec, SpecEntry, SpecVolume
from fctui.sim.guestfs.spec import guest as spec

IMAGES = Path(__file__).resolve().parent / "images"

__all__ = ["CHANGES", "GUESTS", "VERSIONS", "Change", "GuestSpec", "SpecEntry", "SpecVolume", "image",
           "image_path", "read_image", "spec"]


def image_path(guest: str, version: int) -> Path:
    """The committed compressed image of one guest version."""
    if guest not in GUESTS or version not in VERSIONS:
        raise KeyError(f"no guest {guest!r} version {version!r}")
    return IMAGES / f"{guest}-v{version}.img.zst"


def read_image(guest: str, version: int) -> bytes:
    """The raw disk image of one guest version, decompressed now (64-128 MiB; not kept)."""
    raw = zstandard.ZstdDecompressor().decompress(image_path(guest, version).read_bytes())
    expected = spec(guest, version).disk_size
    if len(raw) != expected:
        raise ValueError(f"{image_path(guest, version).name}: {len(raw)} bytes, its spec says {expected}")
    return raw


@lru_cache(maxsize=None)
def image(guest: str, version: int) -> bytes:
    """:func:`read_image`, decompressed once and then cached (tests compare with it)."""
    return read_image(guest, version)
