"""The listing fields fctui reads itself with ``struct`` (for 10,000-entry directories) agree with what the
dissect parsers make of the same records, entry by entry, on every committed guest image (both versions).

The fast path exists only for speed; the well-kept parser stays the reference for what a field means."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fctui.files.browse import PointFiles
from fctui.repo import Repository
from fctui.sim.guestfs import GUESTS, VERSIONS, image

from .images import write_point


def dissect_fields(fs_type: str, node: object) -> tuple[str, int, int, int]:
    """(kind, size, mtime_ns, permission bits) as dissect parses the entry's record."""
    if fs_type.startswith("ext") or fs_type == "xfs":
        raw_mode = node.inode.i_mode if fs_type.startswith("ext") else node.inode.di_mode  # type: ignore[attr-defined]
        fmt = stat.S_IFMT(raw_mode)
        kind = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink"}.get(fmt, "other")
        return kind, 0 if kind == "dir" else node.size, node.mtime_ns, raw_mode & 0o7777  # type: ignore[attr-defined]
    assert fs_type == "ntfs"
    from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

    record = node.record  # type: ignore[attr-defined]
    si = record.attributes[ATTRIBUTE_TYPE_CODE.STANDARD_INFORMATION][0]
    is_dir = record.is_dir()
    readonly = bool(si.attribute.file_attributes & 0x1)  # FILE_ATTRIBUTE_READONLY
    mode = 0o755 if is_dir else (0o444 if readonly else 0o644)
    return ("dir" if is_dir else "file"), (0 if is_dir else record.size()), si.last_modification_time_ns, mode


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("guest", GUESTS)
def test_fast_listing_fields_agree_with_dissect(tmp_path: Path, guest: str, version: int) -> None:
    repo = Repository.open(tmp_path / "repo")
    point = write_point(repo, [image(guest, version)])
    compared = 0
    with PointFiles(repo, point.id) as pf:
        for entry in pf.walk("/"):
            if entry.path.count("/") < 2 or entry.fs_type not in ("ext2", "ext3", "ext4", "xfs", "ntfs"):
                continue  # the disk and the volumes themselves; FAT is read by fctui alone (see filesystems.py)
            _d, _vol, _fs, node, _canon = pf._resolve(0, entry.path)
            expected = dissect_fields(entry.fs_type, node)
            assert (entry.kind, entry.size, entry.mtime_ns, entry.mode) == expected, entry.path
            compared += 1
    assert compared >= 20  # every guest's image holds more than that
    repo.close()
