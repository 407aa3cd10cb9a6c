"""PointFiles over restore points written by the real repository from disk images built here (mke2fs -d,
partition tables written byte by byte). Expectations come from the tree written to the source directory
(TREE) and from debugfs, never from the reader under test."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import pytest

from fctui.files import FileDamagedError, FilesError, NotADirectoryInPointError, PathNotFoundError
from fctui.files.browse import PointFiles
from fctui.repo import Repository

from .images import (GPT_BIOS_BOOT, GPT_LINUX, MiB, SECTOR, ebr, fs_block_of, gpt_disk, mbr, mke2fs,
                     write_point, write_tree)

BS = 64 * 1024  # repository block (chunk) size: small, so that files span several chunks
FS_BLOCK = 4096
T0 = 1_600_000_000  # whole seconds: every e2fsprogs version keeps them exactly

BIG = random.Random(17).randbytes(300_000)  # spans several chunks
SPARSE_TAIL = b"end of a sparse file\n"
MANY = [f"entry-{i:04d}-{'x' * 48}" for i in range(2000)]  # a directory of ~36 blocks

TREE: dict[str, tuple] = {
    "etc/nginx/nginx.conf": ("file", b"worker_processes 2;\n", 0o640, T0 + 1),
    "etc/hostname": ("file", b"web01\n", 0o644, T0 + 2),
    "etc/shadow": ("file", b"root:*:19000:0:99999:7:::\n", 0o600, T0 + 3),
    "etc/README.conf": ("file", b"upper case name\n", 0o444, T0 + 4),
    "usr/bin/tool": ("file", b"#!/bin/sh\necho tool\n", 0o4755, T0 + 5),
    "big.bin": ("file", BIG, 0o600, T0 + 6),
    "empty": ("file", b"", 0o644, T0 + 7),
    "slash/name": ("file", b"the real slash/name\n", 0o644, T0 + 8),
    "slashXname": ("file", b"a name that will hold a slash\n", 0o644, T0 + 9),
    "dirXslash/inner": ("file", b"below a directory whose name will hold a slash\n", 0o644, T0 + 9),
    "etc/link": ("symlink", "nginx/nginx.conf"),
    "etc/longlink": ("symlink", "/very/long/target/" + "t" * 100),
    "etc/nginx": ("dir", 0o750, T0 + 20),
    "etc": ("dir", 0o755, T0 + 21),
    "usr/bin": ("dir", 0o755, T0 + 22),
    "usr": ("dir", 0o755, T0 + 23),
    "slash": ("dir", 0o755, T0 + 24),
    **{f"many/{n}": ("file", n.encode(), 0o644, T0 + 30) for n in MANY},
    "many": ("dir", 0o755, T0 + 31),
}


def _file(rel: str) -> tuple:
    return TREE[rel]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tree, an ext4 image of it, and a GPT disk: p1 BIOS boot (no filesystem), p2 the ext4."""
    tmp = tmp_path_factory.mktemp("browse")
    tree = tmp / "tree"
    write_tree(tree, TREE)
    # a sparse file: a 1 MiB hole, then data
    with open(tree / "sparse", "wb") as f:
        f.seek(MiB)
        f.write(SPARSE_TAIL)
    os.utime(tree / "sparse", (T0 + 10, T0 + 10))
    fs_path = tmp / "root.ext4"
    fs = mke2fs(tree, 24 * MiB, fs_path, label="rootfs")
    # guest names with a slash, written into the directory entries as a damaged/hostile fs would have them
    # (debugfs keeps reading the unpatched fs_path)
    assert fs.count(b"slashXname") == 1 and fs.count(b"dirXslash") == 1
    fs = fs.replace(b"slashXname", b"slash/name").replace(b"dirXslash", b"dir/slash")
    p2_first = 2 * MiB // SECTOR
    p2_last = p2_first + len(fs) // SECTOR - 1
    disk = gpt_disk(len(fs) + 3 * MiB, [(1, GPT_BIOS_BOOT, 2048, 4095, "bios"),
                                        (2, GPT_LINUX, p2_first, p2_last, "root")])
    disk[2 * MiB:2 * MiB + len(fs)] = fs
    return {"tree": tree, "fs_path": fs_path, "disk": bytes(disk), "p2_offset": 2 * MiB}


@pytest.fixture
def point(repo: Repository, built: dict[str, Any]) -> Any:
    return write_point(repo, [built["disk"]], block_size=BS)


def test_volumes_of_a_gpt_disk_and_the_top_level(repo: Repository, point: Any, built: dict[str, Any]) -> None:
    with PointFiles(repo, point.id) as files:
        vols = files.volumes(0)
        assert [(v.name, v.fs_type, v.offset, v.label) for v in vols] == [
            ("p1", "", 1 * MiB, ""), ("p2", "ext4", 2 * MiB, "rootfs")]
        assert vols[0].what == "BIOS boot partition"
        assert vols[1].size == len(built["disk"]) - 3 * MiB
        top = files.listdir("/")
        assert [(e.name, e.path, e.kind, e.fs_type) for e in top] == [("p2", "/p2", "dir", "ext4")]
        assert files.stat("/").kind == "dir"


def test_entries_carry_kind_size_mtime_mode_owner(repo: Repository, point: Any, built: dict[str, Any]) -> None:
    tree = built["tree"]
    with PointFiles(repo, point.id) as files:
        etc = {e.name: e for e in files.listdir("/p2/etc")}
        assert sorted(etc) == ["README.conf", "hostname", "link", "longlink", "nginx", "shadow"]
        for name in ("hostname", "shadow", "README.conf"):
            kind, data, mode, mtime = _file(f"etc/{name}")
            e = etc[name]
            src = os.lstat(tree / "etc" / name)
            assert (e.kind, e.size, e.mode, e.mtime_ns, e.path) == ("file", len(data), mode, mtime * 10**9,
                                                                    f"/p2/etc/{name}")
            assert (e.uid, e.gid, e.fs_type, e.disk) == (src.st_uid, src.st_gid, "ext4", 0)
        assert (etc["nginx"].kind, etc["nginx"].mode, etc["nginx"].mtime_ns) == ("dir", 0o750, (T0 + 20) * 10**9)
        assert (etc["link"].kind, etc["link"].target, etc["link"].size) == ("symlink", "nginx/nginx.conf", 16)
        assert etc["longlink"].target == TREE["etc/longlink"][1]
        tool = files.stat("p2/usr/bin/tool")  # no leading slash is fine
        assert (tool.mode, tool.path, tool.name) == (0o4755, "/p2/usr/bin/tool", "tool")
        assert files.stat("/p2/sparse").size == MiB + len(SPARSE_TAIL)


def test_open_reads_every_byte(repo: Repository, point: Any) -> None:
    with PointFiles(repo, point.id) as files:
        for rel in ("etc/nginx/nginx.conf", "big.bin", "empty", "usr/bin/tool"):
            with files.open(f"/p2/{rel}") as f:
                assert f.read() == _file(rel)[1]
        with files.open("/p2/big.bin") as f:
            f.seek(100_000)
            assert f.read(70_000) == BIG[100_000:170_000]
            assert f.tell() == 170_000
            buf = bytearray(50_000)
            assert f.readinto(buf) == 50_000 and bytes(buf) == BIG[170_000:220_000]
        data = files.open("/p2/sparse").read()
        assert data == bytes(MiB) + SPARSE_TAIL


def test_walk_is_depth_first_and_find_is_case_insensitive(repo: Repository, point: Any) -> None:
    with PointFiles(repo, point.id) as files:
        paths = [e.path for e in files.walk("/p2/etc")]
        assert paths == ["/p2/etc", "/p2/etc/README.conf", "/p2/etc/hostname", "/p2/etc/link",
                         "/p2/etc/longlink", "/p2/etc/nginx", "/p2/etc/nginx/nginx.conf", "/p2/etc/shadow"]
        everything = [e.path for e in files.walk("/")]
        assert everything[:2] == ["/", "/p2"]
        expected = {f"/p2/{rel}" for rel in TREE} | {"/p2/sparse", "/p2/lost+found"}
        expected -= {"/p2/slashXname", "/p2/dirXslash", "/p2/dirXslash/inner"}
        expected |= {"/p2/slash\u2215name", "/p2/dir\u2215slash"}  # a directory that cannot be entered
        assert set(everything) - {"/", "/p2"} == expected
        assert len(everything) == len(set(everything))
        found = sorted(e.path for e in files.find("*.CONF"))
        assert found == ["/p2/etc/README.conf", "/p2/etc/nginx/nginx.conf"]
        assert [e.path for e in files.find("nginx*", path="/p2/etc")] == ["/p2/etc/nginx", "/p2/etc/nginx/nginx.conf"]


def test_a_big_directory_lists_completely(repo: Repository, point: Any) -> None:
    with PointFiles(repo, point.id) as files:
        many = files.listdir("/p2/many")
        assert [e.name for e in many] == sorted(MANY)
        assert all(e.size == len(e.name) and e.mtime_ns == (T0 + 30) * 10**9 for e in many)
        assert files.open(f"/p2/many/{MANY[1234]}").read() == MANY[1234].encode()


def test_a_guest_name_with_a_slash_never_names_another_path(repo: Repository, point: Any) -> None:
    with PointFiles(repo, point.id) as files:
        odd_dir, odd = sorted((e for e in files.listdir("/p2") if "/" in e.name), key=lambda e: e.name)
        assert (odd_dir.name, odd_dir.kind, odd_dir.path) == ("dir/slash", "dir", "/p2/dir\u2215slash")
        assert odd.name == "slash/name"  # kept as the guest wrote it: the extractor refuses it
        assert odd.path == "/p2/slash\u2215name"
        with pytest.raises(PathNotFoundError):
            files.stat(odd.path)
        # the real /p2/slash/name is the file in directory "slash", not the odd entry
        assert files.open("/p2/slash/name").read() == TREE["slash/name"][1]


def test_bad_paths_and_disks_are_typed_errors(repo: Repository, point: Any) -> None:
    with PointFiles(repo, point.id) as files:
        for bad in ("/p2/etc/../etc", "/p2/./etc", "/p2//etc", "/p9", "/p1", "/p2/nope"):
            with pytest.raises(PathNotFoundError):
                files.stat(bad)
        with pytest.raises(NotADirectoryInPointError):
            files.listdir("/p2/etc/hostname")
        with pytest.raises(NotADirectoryInPointError):
            files.stat("/p2/etc/hostname/x")
        with pytest.raises(FilesError, match="directory"):
            files.open("/p2/etc")
        with pytest.raises(FilesError, match="symbolic link"):
            files.open("/p2/etc/link")
        with pytest.raises(PathNotFoundError, match=r"no disk 3 \(disks: 0 sda"):
            files.listdir("/", disk=3)


def _damage_chunk(repo: Repository, point: Any, block: int) -> str:
    reader = repo.open_disk(point.id, point.disks[0].volume_urn)
    digest = reader.block_digests()[block]
    repo.chunk_path(digest).write_bytes(b"not the chunk that was stored")
    return digest


def _chunk_of(built: dict[str, Any], path: str, index: int = 0) -> int:
    return (built["p2_offset"] + fs_block_of(built["fs_path"], path, index) * FS_BLOCK) // BS


def test_a_damaged_chunk_under_a_file_names_the_file(repo: Repository, point: Any, built: dict[str, Any]) -> None:
    victim = _chunk_of(built, "/big.bin", 128 * 1024 // FS_BLOCK)  # inside the file, not at its edges
    first = _chunk_of(built, "/big.bin", 0)
    others = {_chunk_of(built, p) for p in ("/etc/nginx/nginx.conf", "/etc/hostname", "/", "/etc")}
    assert victim not in others | {first}, "test precondition: the damaged chunk holds only big.bin"
    digest = _damage_chunk(repo, point, victim)
    with PointFiles(repo, point.id) as files:
        f = files.open("/p2/big.bin")
        assert f.read(FS_BLOCK) == BIG[:FS_BLOCK]  # before the damage: right bytes
        with pytest.raises(FileDamagedError) as err:
            f.read()
        e = err.value
        assert (e.path, e.digest, e.problem, e.block, e.disk, e.point_id) == (
            "/p2/big.bin", digest, "corrupt", victim, 0, point.id)
        assert str(e) == (f"cannot read /p2/big.bin from restore point {point.id} (disk 0): "
                          f"chunk {digest[:12]} is corrupt (disk block {victim})")
        # everything else still reads
        assert files.open("/p2/etc/nginx/nginx.conf").read() == TREE["etc/nginx/nginx.conf"][1]
        assert len(files.listdir("/p2/etc")) == 6
        with pytest.raises(FileDamagedError):
            files.open("/p2/big.bin").read()  # and again: never cached as good


def test_a_damaged_directory_is_named(repo: Repository, point: Any, built: dict[str, Any]) -> None:
    victim = _chunk_of(built, "/many", 18)
    others = {_chunk_of(built, p) for p in ("/", "/etc", "/etc/hostname")}
    assert victim not in others, "test precondition: the damaged chunk holds only /many's entries"
    reader = repo.open_disk(point.id, point.disks[0].volume_urn)
    digest = reader.block_digests()[victim]
    repo.chunk_path(digest).unlink()
    with PointFiles(repo, point.id) as files:
        with pytest.raises(FileDamagedError) as err:
            files.listdir("/p2/many")
        assert (err.value.path, err.value.problem, err.value.digest) == ("/p2/many", "missing", digest)
        assert "cannot read /p2/many from restore point" in str(err.value)
        assert files.open("/p2/etc/hostname").read() == b"web01\n"


# --- other partition layouts ---------------------------------------------------------------------
SMALL_SIZE = 8 * MiB  # the smallest size mke2fs gives a journal (ext3)
SMALL = {"hello.txt": ("file", b"hello\n", 0o644, T0), "sub/other.conf": ("file", b"x=1\n", 0o600, T0)}


@pytest.fixture(scope="module")
def small_fs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("small")
    tree = tmp / "tree"
    write_tree(tree, SMALL)
    return {kind: mke2fs(tree, SMALL_SIZE, tmp / f"{kind}.img", fs_type=kind, label=kind)
            for kind in ("ext2", "ext3", "ext4")}


def test_mbr_with_logical_partitions_and_ext_kinds(repo: Repository, small_fs: dict[str, bytes]) -> None:
    fs_sectors = SMALL_SIZE // SECTOR
    disk = bytearray(36 * MiB)
    # p1 ext2 at 1 MiB; p2 extended from 10 MiB: logical p5 ext3 (EBR at 10 MiB, data at 11 MiB),
    # logical p6 swap (EBR at 20 MiB, data at 21 MiB); p3 ext4 at 26 MiB
    ext_start = 10 * MiB // SECTOR
    disk[0:SECTOR] = mbr([(0x83, 2048, fs_sectors), (0x05, ext_start, 26 * MiB // SECTOR - ext_start),
                          (0x83, 26 * MiB // SECTOR, fs_sectors)])
    disk[10 * MiB:10 * MiB + SECTOR] = ebr((0x83, 2048, fs_sectors), (10 * MiB // SECTOR, 5 * MiB // SECTOR))
    disk[20 * MiB:20 * MiB + SECTOR] = ebr((0x82, 2048, 4 * MiB // SECTOR), None)
    disk[1 * MiB:9 * MiB] = small_fs["ext2"]
    disk[11 * MiB:19 * MiB] = small_fs["ext3"]
    disk[21 * MiB + 4086:21 * MiB + 4096] = b"SWAPSPACE2"
    disk[26 * MiB:34 * MiB] = small_fs["ext4"]
    point = write_point(repo, [bytes(disk)], block_size=BS)
    with PointFiles(repo, point.id) as files:
        vols = [(v.name, v.fs_type, v.offset, v.what) for v in files.volumes()]
        assert vols == [("p1", "ext2", 1 * MiB, "ext2 filesystem"), ("p5", "ext3", 11 * MiB, "ext3 filesystem"),
                        ("p6", "", 21 * MiB, "swap"), ("p3", "ext4", 26 * MiB, "ext4 filesystem")]
        assert [e.name for e in files.listdir("/")] == ["p1", "p3", "p5"]
        for vol in ("p1", "p3", "p5"):
            assert files.open(f"/{vol}/sub/other.conf").read() == b"x=1\n"
            assert files.stat(f"/{vol}/sub/other.conf").mode == 0o600


def test_whole_disk_filesystem_and_find_over_every_disk(repo: Repository, small_fs: dict[str, bytes],
                                                         built: dict[str, Any]) -> None:
    point = write_point(repo, [built["disk"], small_fs["ext4"] + bytes(MiB)], block_size=BS)
    with PointFiles(repo, point.id) as files:
        assert [(v.name, v.fs_type, v.offset) for v in files.volumes(1)] == [("whole", "ext4", 0)]
        assert files.open("/whole/hello.txt", disk=1).read() == b"hello\n"
        hits = sorted((e.disk, e.path) for e in files.find("*.conf"))
        assert hits == [(0, "/p2/etc/README.conf"), (0, "/p2/etc/nginx/nginx.conf"),
                        (1, "/whole/sub/other.conf")]
        assert [e.path for e in files.find("other*", disk=1)] == ["/whole/sub/other.conf"]


def test_a_blank_disk_has_no_volumes(repo: Repository) -> None:
    point = write_point(repo, [bytes(4 * MiB)], block_size=BS)
    with PointFiles(repo, point.id) as files:
        assert files.volumes() == []
        assert files.listdir("/") == []
        with pytest.raises(PathNotFoundError, match="volumes: none"):
            files.listdir("/whole")


def test_listing_takes_big_reads_not_one_per_block(repo: Repository, point: Any) -> None:
    """A 300 KB file in 64 KiB chunks: each chunk fetched from the repository once."""
    with PointFiles(repo, point.id, cache_chunks=64) as files:
        view = files._disk(0).view
        calls = []
        real = view.reader.read_block
        view.reader.read_block = lambda i, **kw: (calls.append(i), real(i, **kw))[1]  # type: ignore[method-assign]
        view._readahead = 1  # count fetches in this thread only
        data = files.open("/p2/big.bin").read()
        assert hashlib.sha256(data).digest() == hashlib.sha256(BIG).digest()
        assert len(calls) == len(set(calls))


def test_lvm_on_a_whole_disk_with_a_logical_volume_in_two_pieces(repo: Repository,
                                                                   small_fs: dict[str, bytes]) -> None:
    from .images import LVM_EXTENT, LVM_PE_START, lvm_pv

    ext4 = small_fs["ext4"]  # 8 MiB: two extents, stored in the PV in the opposite order
    disk = lvm_pv(24 * MiB, "data-vg", {"srv": [(3, 1), (1, 1)], "swap": [(0, 1)]})
    disk[LVM_PE_START + 3 * LVM_EXTENT:LVM_PE_START + 4 * LVM_EXTENT] = ext4[:LVM_EXTENT]
    disk[LVM_PE_START + 1 * LVM_EXTENT:LVM_PE_START + 2 * LVM_EXTENT] = ext4[LVM_EXTENT:]
    disk[LVM_PE_START + 4086:LVM_PE_START + 4096] = b"SWAPSPACE2"
    point = write_point(repo, [bytes(disk)], block_size=BS)
    with PointFiles(repo, point.id) as files:
        vols = [(v.name, v.fs_type, v.offset, v.size, v.what) for v in files.volumes()]
        assert vols == [
            ("whole", "", 0, 24 * MiB, "LVM physical volume of data-vg"),
            ("data--vg-srv", "ext4", LVM_PE_START + 3 * LVM_EXTENT, 2 * LVM_EXTENT,
             "LVM logical volume srv of data-vg"),
            ("data--vg-swap", "", LVM_PE_START, LVM_EXTENT, "swap (LVM logical volume swap of data-vg)")]
        assert [e.name for e in files.listdir("/")] == ["data--vg-srv"]
        assert files.open("/data--vg-srv/sub/other.conf").read() == b"x=1\n"
        assert files.open("/data--vg-srv/hello.txt").read() == b"hello\n"


def test_a_damaged_partition_table_is_named(repo: Repository, point: Any) -> None:
    digest = _damage_chunk(repo, point, 0)
    with PointFiles(repo, point.id) as files:
        with pytest.raises(FileDamagedError) as err:
            files.volumes()
        assert (err.value.path, err.value.digest, err.value.block) == ("/", digest, 0)
        assert str(err.value) == (f"cannot read the partitions and volumes of / from restore point {point.id} "
                                  f"(disk 0): chunk {digest[:12]} is corrupt (disk block 0)")
        with pytest.raises(FileDamagedError):
            files.listdir("/")


def test_a_volume_group_spanning_two_disks(repo: Repository, small_fs: dict[str, bytes]) -> None:
    """The LV starts on disk 1 and continues on disk 0: listed on disk 1, read from both."""
    from .images import LVM_EXTENT, LVM_PE_START, lvm_pvs

    ext4 = small_fs["ext4"]
    d0, d1 = lvm_pvs([12 * MiB, 12 * MiB], "vg", {"home": [(1, 1, 1), (0, 0, 1)]})
    d1[LVM_PE_START + LVM_EXTENT:LVM_PE_START + 2 * LVM_EXTENT] = ext4[:LVM_EXTENT]
    d0[LVM_PE_START:LVM_PE_START + LVM_EXTENT] = ext4[LVM_EXTENT:]
    point = write_point(repo, [bytes(d0), bytes(d1)], block_size=BS)
    with PointFiles(repo, point.id) as files:
        assert [(v.name, v.fs_type, v.what) for v in files.volumes(0)] == [
            ("whole", "", "LVM physical volume of vg")]
        assert [(v.name, v.fs_type, v.offset, v.size) for v in files.volumes(1)] == [
            ("whole", "", 0, 12 * MiB), ("vg-home", "ext4", LVM_PE_START + LVM_EXTENT, 2 * LVM_EXTENT)]
        assert files.open("/vg-home/hello.txt", disk=1).read() == b"hello\n"
        assert [e.path for e in files.find("*.conf")] == ["/vg-home/sub/other.conf"]


def test_a_logical_volume_whose_disk_is_not_in_the_point_says_so(repo: Repository,
                                                                   small_fs: dict[str, bytes]) -> None:
    from .images import LVM_EXTENT, LVM_PE_START, lvm_pvs

    d0, _ = lvm_pvs([12 * MiB, 12 * MiB], "vg", {"home": [(1, 1, 1), (0, 0, 1)], "tmp": [(0, 1, 1)]})
    d0[LVM_PE_START + LVM_EXTENT:LVM_PE_START + 2 * LVM_EXTENT] = small_fs["ext4"][:LVM_EXTENT]
    point = write_point(repo, [bytes(d0)], block_size=BS)
    with PointFiles(repo, point.id) as files:
        vols = {v.name: v for v in files.volumes()}
        assert vols["vg-home"].fs_type == "" and "cannot be read here" in vols["vg-home"].what
        assert vols["vg-tmp"].fs_type == "ext4"  # (its first half: enough to be recognised)
        assert [e.name for e in files.listdir("/")] == ["vg-tmp"]


def test_fat_long_names_fragmented_chains_and_broken_ones(repo: Repository) -> None:
    """A FAT16 written byte by byte (tests/files/images.py): long names, an orphan long-name slot, a
    deleted entry, a read-only file, a subdirectory, a file in three clusters out of order, a loop."""
    import calendar

    from .images import fat16, fat_dirents

    notes = random.Random(5).randbytes(5000)
    label = b"TESTFAT    " + bytes([0x08]) + bytes(20)
    deleted = b"\xe5OLD    TXT" + bytes([0x20]) + bytes(20)
    orphan = fat_dirents([("Not mine.txt", b"OTHER   TXT", 0x20, 0, 0, (2020, 1, 1, 0, 0, 0))])[:-32]
    root = b"".join([
        label,
        fat_dirents([("A Long File Name.txt", b"ALONGF~1TXT", 0x20, 4, 11, (2024, 5, 6, 7, 8, 10))]),
        deleted,
        fat_dirents([(None, b"README  TXT", 0x21, 5, 3, (2023, 1, 2, 3, 4, 6))]),
        fat_dirents([("Sub Dir", b"SUBDIR     ", 0x10, 3, 0, (2022, 2, 2, 2, 2, 2))]),
        orphan + fat_dirents([(None, b"ORPHAN  TXT", 0x20, 6, 2, (2021, 1, 1, 0, 0, 0))]),
        fat_dirents([(None, b"LOOP    BIN", 0x20, 20, 10_000, (2021, 1, 1, 0, 0, 0))]),
    ])
    sub = fat_dirents([(None, b".          ", 0x10, 3, 0, (2022, 2, 2, 2, 2, 2)),
                       (None, b"..         ", 0x10, 0, 0, (2022, 2, 2, 2, 2, 2)),
                       ("Notes for 2025.txt", b"NOTESF~1TXT", 0x20, 10, 5000, (2025, 1, 1, 0, 0, 0))])
    files = {3: sub, 4: b"long name!\n", 5: b"ro\n", 6: b"o\n",
             10: notes[:2048], 12: notes[2048:4096], 11: notes[4096:]}
    chain = {3: 0xFFFF, 4: 0xFFFF, 5: 0xFFFF, 6: 0xFFFF, 10: 12, 12: 11, 11: 0xFFFF, 20: 21, 21: 20}
    fs = fat16(files, root, chain)
    disk = bytearray(18 * MiB)
    disk[0:SECTOR] = mbr([(0x0E, 2048, len(fs) // SECTOR)])
    disk[MiB:MiB + len(fs)] = fs
    point = write_point(repo, [bytes(disk)], block_size=BS)
    with PointFiles(repo, point.id) as pf:
        assert [(v.name, v.fs_type, v.label) for v in pf.volumes()] == [("p1", "fat", "TESTFAT")]
        top = {e.name: e for e in pf.listdir("/p1")}
        assert sorted(top) == ["A Long File Name.txt", "LOOP.BIN", "ORPHAN.TXT", "README.TXT", "Sub Dir"]
        ro = top["README.TXT"]
        assert (ro.kind, ro.size, ro.mode, ro.mtime_ns) == (
            "file", 3, 0o444, calendar.timegm((2023, 1, 2, 3, 4, 6)) * 10**9)
        assert top["A Long File Name.txt"].mode == 0o644
        assert (top["Sub Dir"].kind, top["Sub Dir"].mode) == ("dir", 0o755)
        assert pf.open("/p1/A Long File Name.txt").read() == b"long name!\n"
        assert pf.open("/p1/ORPHAN.TXT").read() == b"o\n"
        assert [e.name for e in pf.listdir("/p1/Sub Dir")] == ["Notes for 2025.txt"]
        assert pf.open("/p1/Sub Dir/Notes for 2025.txt").read() == notes
        with pytest.raises(FilesError, match="loops"):
            pf.open("/p1/LOOP.BIN").read()


def test_ext4_preallocated_extent_after_a_hole_reads_as_zeros_in_place(repo: Repository, tmp_path: Path) -> None:
    import subprocess

    from .images import tool

    tree = tmp_path / "tree"
    tree.mkdir()
    with open(tree / "pre", "wb") as f:  # data, a hole, data, a hole, one byte
        f.write(b"A" * FS_BLOCK)
        f.seek(20 * FS_BLOCK)
        f.write(b"B" * FS_BLOCK)
        f.seek(60 * FS_BLOCK - 1)
        f.write(b"C")
    expected = (tree / "pre").read_bytes()
    img = tmp_path / "fs.img"
    mke2fs(tree, 8 * MiB, img, block_size=1024)
    # 1 KiB blocks 30-40 preallocated (unwritten) inside the first hole
    subprocess.run([tool("debugfs"), "-w", "-R", "fallocate /pre 30 40", str(img)], check=True, capture_output=True)
    extents = subprocess.run([tool("debugfs"), "-R", "ex /pre", str(img)], check=True, capture_output=True,
                             text=True).stdout
    assert "Uninit" in extents, "test precondition: an unwritten extent"
    point = write_point(repo, [img.read_bytes()], block_size=BS)
    with PointFiles(repo, point.id) as files:
        assert files.open("/whole/pre").read() == expected


def test_ext4_inline_data_files_and_directories(repo: Repository, tmp_path: Path) -> None:
    import subprocess

    from .images import tool

    # four short names: what mke2fs keeps in the directory's inode (a fifth makes it a block)
    spec = {"small/one": ("file", b"30 bytes in the inode itself\n!", 0o644, T0),
            "small/two": ("file", b"y" * 100, 0o644, T0),  # 60 in the inode, 40 in an attribute
            "small/ten": ("file", random.Random(3).randbytes(5000), 0o600, T0),
            "small/six": ("file", b"", 0o644, T0),
            "small": ("dir", 0o755, T0)}
    tree = tmp_path / "tree"
    write_tree(tree, spec)
    img = tmp_path / "fs.img"
    subprocess.run([tool("mke2fs"), "-q", "-F", "-t", "ext4", "-O", "inline_data", "-I", "256", "-d", str(tree),
                    str(img), "8M"], check=True, capture_output=True)
    for path in ("/small", "/small/two"):
        flags = subprocess.run([tool("debugfs"), "-R", f"stat {path}", str(img)], check=True, capture_output=True,
                               text=True).stdout
        assert "Flags: 0x10000000" in flags, f"test precondition: {path} is inline"
    point = write_point(repo, [img.read_bytes()], block_size=BS)
    with PointFiles(repo, point.id) as files:
        listed = {e.name: e for e in files.listdir("/whole/small")}
        assert sorted(listed) == sorted(p.split("/")[1] for p in spec if p != "small")
        for rel, what in spec.items():
            if what[0] == "file":
                assert files.open(f"/whole/{rel}").read() == what[1], rel
                assert (listed[rel.split("/")[1]].size, listed[rel.split("/")[1]].mode) == (len(what[1]), what[2])


def test_a_striped_logical_volume_is_listed_as_not_readable(repo: Repository) -> None:
    from .images import lvm_pvs

    d0, d1 = lvm_pvs([12 * MiB, 12 * MiB], "vg", {"fast": [(((0, 0), (1, 0)), 2)], "plain": [(0, 1, 1)]})
    point = write_point(repo, [bytes(d0), bytes(d1)], block_size=BS)
    with PointFiles(repo, point.id) as files:
        vols = {v.name: v for v in files.volumes(0)}
        assert vols["vg-fast"].fs_type == "" and "not supported" in vols["vg-fast"].what
        assert "cannot be read here" not in vols["vg-plain"].what
