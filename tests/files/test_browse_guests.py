"""PointFiles over the simulator's known guest disks (fctui/sim/guestfs: committed images of an Ubuntu-like
GPT disk with a FAT EFI partition and ext4, an EulerOS-like MBR disk with ext2 /boot and XFS on LVM, a
Windows NTFS disk), checked against their spec — written independently of the reader."""

from __future__ import annotations

from typing import Any

import pytest

from fctui.files import FileDamagedError
from fctui.files.browse import PointFiles
from fctui.repo import Repository
from fctui.sim.guestfs import image, spec

from .images import write_point

BS = 256 * 1024


@pytest.mark.parametrize("guest", ["ext4", "xfs", "ntfs"])
def test_every_entry_of_a_known_guest_matches_its_spec(repo: Repository, guest: str) -> None:
    sp = spec(guest, 1)
    point = write_point(repo, [image(guest, 1)], block_size=BS)
    with PointFiles(repo, point.id) as files:
        vols = files.volumes()
        assert [(v.name, v.fs_type, v.offset, v.size, v.label) for v in vols] == [
            (v.name, v.fs_type, v.offset, v.size, v.label) for v in sp.volumes]
        with_fs = [v.name for v in sp.volumes if v.fs_type]
        assert [e.name for e in files.listdir("/")] == sorted(with_fs)
        got = {e.path: e for e in files.walk("/")}
        want = {e.path: e for e in sp.entries}
        assert set(want) - set(got) == set()
        assert set(got) - set(want) <= {"/"} | {f"/{n}" for n in with_fs}
        for path, w in want.items():
            g = got[path]
            if path.count("/") == 1:
                continue  # a volume's root: its own mode and time, not part of the guest's files
            assert (g.kind, g.mode, g.mtime_ns, g.uid, g.gid, g.target) == (
                w.kind, w.mode, w.mtime_ns, w.uid, w.gid, w.target), path
            if w.kind == "file":
                assert g.size == len(w.data), path
                with files.open(path) as f:
                    assert f.read() == w.data, path


def test_lvm_physical_volume_and_logical_volume_are_told_apart(repo: Repository) -> None:
    point = write_point(repo, [image("xfs", 1)], block_size=BS)
    with PointFiles(repo, point.id) as files:
        vols = {v.name: v for v in files.volumes()}
        assert vols["p2"].what == "LVM physical volume of euleros"
        assert vols["euleros-root"].fs_type == "xfs"
        assert "euleros" in vols["euleros-root"].what


def test_fat_and_ntfs_modes_follow_the_read_only_rule(repo: Repository) -> None:
    for guest in ("ext4", "ntfs"):
        sp = spec(guest, 1)
        point = write_point(repo, [image(guest, 1)], block_size=BS)
        vol = "p1"
        fs_dirs = [e for e in sp.under(vol) if e.kind == "dir" and e.path.count("/") > 1]
        fs_files = [e for e in sp.under(vol) if e.kind == "file"]
        assert fs_dirs and fs_files
        with PointFiles(repo, point.id) as files:
            for e in fs_dirs:
                assert files.stat(e.path).mode == 0o755
            for e in fs_files:
                assert files.stat(e.path).mode in (0o644, 0o444)
                assert files.stat(e.path).mode == e.mode


def test_ntfs_metadata_files_are_hidden(repo: Repository) -> None:
    point = write_point(repo, [image("ntfs", 1)], block_size=BS)
    with PointFiles(repo, point.id) as files:
        names = {e.name for e in files.listdir("/p1")}
        assert not {"$MFT", "$MFTMirr", "$LogFile", "$Volume", "$AttrDef", "$Bitmap", "$Boot", "$BadClus",
                    "$Secure", "$UpCase", "$Extend", "."} & names
        assert names == {e.name for e in spec("ntfs", 1).under("p1") if e.path.count("/") == 2}


def _chunk_only_of(raw: bytes, data: bytes) -> int:
    """A repository block that holds nothing but bytes of ``data`` (found by content, not by our reader)."""
    for at in range(len(data) // 2 - len(data) // 2 % 4096, len(data) - 4096, 4096):
        pos = raw.find(data[at:at + 4096])
        if pos < 0:
            continue
        chunk = pos // BS + 1
        piece = raw[chunk * BS:(chunk + 1) * BS]
        if len(piece) == BS and piece in data:
            return chunk
    raise AssertionError("test precondition: no block holds only this file")


@pytest.mark.parametrize("guest", ["ext4", "xfs", "ntfs"])
def test_a_damaged_chunk_names_the_file_and_spares_the_others(repo: Repository, guest: str) -> None:
    sp = spec(guest, 1)
    raw = image(guest, 1)
    victim = max(sp.files(), key=lambda e: len(e.data))
    chunk = _chunk_only_of(raw, victim.data)
    point = write_point(repo, [raw], block_size=BS)
    reader = repo.open_disk(point.id, point.disks[0].volume_urn)
    digest = reader.block_digests()[chunk]
    repo.chunk_path(digest).write_bytes(b"garbage")
    with PointFiles(repo, point.id) as files:
        with pytest.raises(FileDamagedError) as err:
            files.open(victim.path).read()
        e: Any = err.value
        assert (e.path, e.digest, e.block, e.problem) == (victim.path, digest, chunk, "corrupt")
        assert str(e).startswith(f"cannot read {victim.path} from restore point {point.id} (disk 0): "
                                 f"chunk {digest[:12]} is corrupt")
        for other in sp.files():
            if other.path != victim.path:
                assert files.open(other.path).read() == other.data, other.path


def test_xfs_unwritten_extent_reads_as_zeros(repo: Repository) -> None:
    """XFS marks preallocated space 'unwritten': it reads as zeros whatever the blocks hold. The extent
    record of a known file is found by its on-disk format (from the spec's bytes and the superblock, not
    through our reader) and flagged unwritten; its old content must not come back."""
    import struct

    sp = spec("xfs", 1)
    raw = bytearray(image("xfs", 1))
    lv = sp.volume("euleros-root")
    victim = sp.entry("/euleros-root/var/lib/pgsql/data/base/16384/16385_fsm")
    sb = bytes(raw[lv.offset:lv.offset + 512])
    assert sb[:4] == b"XFSB"
    (block_size,), (ag_blocks,) = struct.unpack_from(">I", sb, 4), struct.unpack_from(">I", sb, 84)
    ag_blocklog = sb[124]
    where = raw.find(victim.data)
    assert where > 0 and (where - lv.offset) % block_size == 0
    agno, agbno = divmod((where - lv.offset) // block_size, ag_blocks)
    fsb = agno << ag_blocklog | agbno
    count = -(-len(victim.data) // block_size)
    record = struct.pack(">QQ", fsb >> 43, (fsb & ((1 << 43) - 1)) << 21 | count)  # file offset 0, written
    assert raw.count(record) >= 1, "test precondition: the file is one extent"
    flagged = bytes([record[0] | 0x80]) + record[1:]
    raw = bytearray(bytes(raw).replace(record, flagged))
    point = write_point(repo, [bytes(raw)], block_size=BS)
    with PointFiles(repo, point.id) as files:
        assert files.open(victim.path).read() == bytes(len(victim.data))
        other = sp.entry("/euleros-root/var/lib/pgsql/data/base/16384/16385")
        assert files.open(other.path).read() == other.data
