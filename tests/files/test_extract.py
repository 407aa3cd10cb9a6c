"""Getting files out of a restore point (fctui.files.extract): into a directory and as a tar.

The point is a real backup-shaped repository whose disk holds a real ext4 filesystem built from the tree
below (``mke2fs -d``), with the hostile parts a filesystem API cannot create patched into the image (a
name holding '/', one holding NUL). Expectations come from the table TREE, written by hand.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from fctui.files.browse import PointFiles
from fctui.files.errors import FileDamagedError, FilesError, PathNotFoundError
from fctui.files.extract import ExtractProgress, extract_tar, extract_to_dir, plan
from fctui.files.names import printable, unsafe_name
from fctui.repo import Repository

from .ext4_points import (damage_file, debugfs, file_blocks, make_ext4, mbr_disk, rename_entry, set_modes_and_times,
                          set_mtime_ns, store_point)

T0 = 1_600_000_000  # 2020-09-13, seconds
BIG = bytes((i * 7 + i // 251) % 256 for i in range(300_000))   # spans several whole 64 KiB chunks

# path below /p1 -> (kind, content or link text, mode as stored, mtime in seconds)
TREE: dict[str, tuple[str, Any, int, int]] = {
    "etc": ("dir", None, 0o755, T0 + 100),
    "etc/nginx": ("dir", None, 0o750, T0 + 90),
    "etc/nginx/nginx.conf": ("file", b"worker_processes 1;\n", 0o640, T0 + 10),
    "etc/secret": ("file", b"s3cret\n", 0o600, T0 + 11),
    "etc/empty": ("file", b"", 0o644, T0 + 12),
    "etc/big.bin": ("file", BIG, 0o644, T0 + 13),
    "etc/suid": ("file", b"#!/bin/sh\n", 0o4755, T0 + 14),
    "etc/sgid": ("file", b"x", 0o2711, T0 + 15),
    "etc/readonly": ("dir", None, 0o555, T0 + 80),
    "etc/readonly/ro.txt": ("file", b"read only\n", 0o444, T0 + 16),
    "etc/sticky": ("dir", None, 0o1777, T0 + 70),
    "etc/up": ("symlink", "../../../outside", 0o777, T0 + 17),
    "etc/abs": ("symlink", "/etc/passwd", 0o777, T0 + 18),
    "etc/a": ("dir", None, 0o755, T0 + 60),
    "etc/a/evil": ("symlink", "OUTSIDE", 0o777, T0 + 19),   # OUTSIDE: replaced by the outside dir's path
    "etc/b": ("dir", None, 0o755, T0 + 50),
    "etc/b/evil": ("dir", None, 0o755, T0 + 40),
    "etc/b/evil/payload": ("file", b"must not leave DEST\n", 0o644, T0 + 20),
    "etc/ctl\x1b[31m": ("file", b"escape in the name\n", 0o644, T0 + 21),
    "etc/caf\udce9": ("file", b"a Latin-1 name: bytes 63 61 66 e9\n", 0o644, T0 + 22),   # not UTF-8
}
NS_FILE, NS_FILE_NS = "etc/nginx/nginx.conf", (T0 + 10) * 1_000_000_000 + 123_456_789
NS_DIR, NS_DIR_NS = "etc/nginx", (T0 + 90) * 1_000_000_000 + 987_654_321
# hostile entries patched into the image: (name written by mke2fs, name after the patch)
HOSTILE = {"etc/SLASHxNAME": "etc/SLASH/NAME", "etc/NULxxNAME": "etc/NUL\0xNAME", "etc/DIRxSLASH": "etc/DIR/SLASH"}
HOSTILE_CHILD = "etc/DIRxSLASH/inner.txt"   # below a directory with a hostile name: never reached
SPECIAL = "etc/fifo"
# a directory of ~37 blocks (long names, empty files: no data blocks among its own), for a damaged listing
MANY = [f"{i:03d}-" + "m" * 196 for i in range(700)]


def expected_mtime_ns(rel: str) -> int:
    return {NS_FILE: NS_FILE_NS, NS_DIR: NS_DIR_NS}.get(rel, TREE[rel][3] * 1_000_000_000)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("extract")
    outside = base / "outside"
    outside.mkdir()
    src = base / "src"
    src.mkdir()
    for rel, (kind, content, mode, _) in TREE.items():
        p = src / rel
        if kind == "dir":
            p.mkdir()
        elif kind == "file":
            p.write_bytes(content)
        else:
            os.symlink(str(outside) if content == "OUTSIDE" else content, p)
    for rel in (*HOSTILE, HOSTILE_CHILD):
        (src / rel).mkdir() if rel == "etc/DIRxSLASH" else (src / rel).write_bytes(b"hostile\n")
    os.mkfifo(src / SPECIAL)
    (src / "loop").mkdir()
    (src / "loop" / "f").write_bytes(b"in the loop\n")
    (src / "loop" / "LOOPxDIR1").mkdir()   # patched below into an entry that leads back to /loop
    (src / "many").mkdir()
    for name in MANY:
        (src / "many" / name).touch()
    set_modes_and_times(src, TREE)
    image = base / "fs.img"
    make_ext4(src, image)
    set_mtime_ns(image, "/" + NS_FILE, NS_FILE_NS)
    set_mtime_ns(image, "/" + NS_DIR, NS_DIR_NS)
    big_blocks = file_blocks(image, "/etc/big.bin")
    many_blocks = file_blocks(image, "/many")
    loop_inode = int(debugfs(image, "stat /loop").split("Inode:")[1].split()[0])
    raw = bytearray(image.read_bytes())
    at = raw.find(b"LOOPxDIR1")
    assert at > 0 and raw.find(b"LOOPxDIR1", at + 1) < 0
    raw[at - 8:at - 4] = loop_inode.to_bytes(4, "little")   # the entry's inode field
    image.write_bytes(bytes(raw))
    for old, new in HOSTILE.items():
        rename_entry(image, old.split("/")[-1].encode(), new.split("/", 1)[1].encode())
    repo = Repository.open(base / "repo")
    point = store_point(repo, mbr_disk(image))
    return {"base": base, "outside": outside, "image": image, "repo": repo, "point": point, "src": src,
            "big_blocks": big_blocks, "many_blocks": many_blocks}


@pytest.fixture
def files(world: dict[str, Any]) -> Any:
    with PointFiles(world["repo"], world["point"]) as f:
        yield f


def all_below(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def check_written(dest: Path, rel_under_dest: str, rel: str, *, strip_setid: bool = True) -> None:
    kind, content, mode, _ = TREE[rel]
    p = dest / rel_under_dest
    st = os.lstat(p)
    if kind == "symlink":
        assert stat.S_ISLNK(st.st_mode)
    else:
        want = mode & ~(stat.S_ISUID | stat.S_ISGID) if strip_setid else mode
        assert stat.S_IMODE(st.st_mode) == want, (rel, oct(st.st_mode), oct(want))
    assert st.st_mtime_ns == expected_mtime_ns(rel), rel
    if kind == "file":
        assert stat.S_ISREG(st.st_mode) and p.read_bytes() == content, rel
    elif kind == "dir":
        assert stat.S_ISDIR(st.st_mode)


# --- names ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,why", [
    ("", "empty name"), (".", "name is '.'"), ("..", "name is '..'"), ("a/b", "name holds '/'"),
    ("/", "name holds '/'"), ("../x", "name holds '/'"), ("a\0b", "name holds NUL"),
    ("...", None), ("..a", None), (" ", None), ("nginx.conf", None), ("ctl\x1b[31m", None), ("\udcff", None),
    ("half\ud800pair", "name holds characters this system cannot write (an unpaired UTF-16 surrogate)"),
])
def test_unsafe_names(name: str, why: str | None) -> None:
    assert unsafe_name(name) == why


@pytest.mark.parametrize("text,shown", [
    ("nginx.conf", "nginx.conf"), ("a\x1b[31mb", "a\\x1b[31mb"), ("line\nfeed", "line\\nfeed"),
    ("tab\there", "tab\\there"), ("back\\slash", "back\\\\slash"), ("bell\x07", "bell\\x07"),
    ("c1\x9b", "c1\\x9b"), ("bidi\u202eevil", "bidi\\u202eevil"), ("not-utf8-\udcff", "not-utf8-\\xff"),
    ("héllo wörld", "héllo wörld"), ("del\x7f", "del\\x7f"), ("half\ud800pair", "half\\ud800pair"),
])
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


# --- into a directory ----------------------------------------------------------------------------------

def test_extract_dir_modes_times_links_and_skips(files: Any, world: dict[str, Any], tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    report = extract_to_dir(files, ["/p1/etc"], dest)
    for rel in TREE:
        check_written(dest, rel, rel)
    # links keep their text and are links, never followed
    assert os.readlink(dest / "etc/up") == "../../../outside"
    assert os.readlink(dest / "etc/a/evil") == str(world["outside"])
    assert os.readlink(dest / "etc/abs") == "/etc/passwd"
    # the hostile names, the fifo and what lies below a hostile directory are not written
    assert all_below(dest) == sorted(TREE)
    skipped = dict(report.skipped)
    assert skipped["/p1/etc/SLASH\u2215NAME"] == "name holds '/'"
    assert skipped["/p1/etc/DIR\u2215SLASH"] == "name holds '/'"
    assert skipped["/p1/etc/NUL\u2400xNAME"] == "name holds NUL"
    assert skipped["/p1/etc/fifo"].startswith("special file")
    assert len(report.skipped) == 4 and report.errors == [] and report.ok
    files_in_tree = [r for r, v in TREE.items() if v[0] == "file"]
    assert report.files == len(files_in_tree)
    assert report.bytes == sum(len(TREE[r][1]) for r in files_in_tree)
    assert report.dirs == sum(v[0] == "dir" for v in TREE.values())
    assert report.symlinks == sum(v[0] == "symlink" for v in TREE.values())
    assert sorted(report.written) == sorted(str(dest / r) for r in TREE)
    assert list(world["outside"].iterdir()) == []
    assert b"caf\xe9" in os.listdir(os.fsencode(dest / "etc"))   # a name that is not UTF-8: the same bytes


def test_extract_like_cp_rp_names(files: Any, tmp_path: Path) -> None:
    """Each path lands as DEST/<its name>; / stands for every volume."""
    dest = tmp_path / "d"
    report = extract_to_dir(files, ["/p1/etc/nginx", "/p1/etc/nginx/nginx.conf", "p1/etc/secret"], dest)
    assert all_below(dest) == ["nginx", "nginx.conf", "nginx/nginx.conf", "secret"]
    check_written(dest, "nginx", "etc/nginx")
    check_written(dest, "nginx.conf", "etc/nginx/nginx.conf")
    check_written(dest, "nginx/nginx.conf", "etc/nginx/nginx.conf")
    assert report.ok and report.files == 3
    whole = tmp_path / "whole"
    extract_to_dir(files, ["/"], whole)
    check_written(whole, "p1/etc/readonly/ro.txt", "etc/readonly/ro.txt")
    assert (whole / "p1" / "lost+found").is_dir()


def test_plan_lists_what_would_be_written(files: Any) -> None:
    entries = plan(files, ["/p1/etc"])
    assert sorted(e.path for e in entries) == sorted(f"/p1/{r}" for r in TREE)
    assert sum(e.size for e in entries if e.kind == "file") == sum(len(v[1]) for v in TREE.values() if v[0] == "file")


def test_a_missing_path_writes_nothing(files: Any, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    with pytest.raises(PathNotFoundError):
        extract_to_dir(files, ["/p1/etc/nginx", "/p1/etc/nope"], dest)
    assert not dest.exists() or all_below(dest) == []


def test_dest_must_be_a_directory(files: Any, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(FilesError, match="not a directory"):
        extract_to_dir(files, ["/p1/etc/secret"], tmp_path / "f")


def test_link_then_directory_of_the_same_name_stays_inside(files: Any, world: dict[str, Any],
                                                            tmp_path: Path) -> None:
    """/p1/etc/a/evil is a link to a directory outside; /p1/etc/b/evil a directory with a file. Both land
    on DEST/evil: the link is written, the directory is refused, nothing reaches the outside."""
    dest = tmp_path / "d"
    report = extract_to_dir(files, ["/p1/etc/a/evil", "/p1/etc/b/evil"], dest)
    assert os.readlink(dest / "evil") == str(world["outside"])
    assert list(world["outside"].iterdir()) == []
    assert report.errors == [("/p1/etc/b/evil", f"{dest / 'evil'} already exists: not overwritten")]
    assert not report.ok and report.files == 0


def test_existing_paths_are_refused_and_kept(files: Any, world: dict[str, Any], tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "secret").write_text("mine")
    os.symlink(world["outside"], dest / "nginx")                # a planted link where a directory goes
    os.symlink(world["outside"] / "ro.txt", dest / "ro.txt")    # ... and a dangling one where a file goes
    report = extract_to_dir(files, ["/p1/etc/nginx", "/p1/etc/readonly/ro.txt", "/p1/etc/secret",
                                    "/p1/etc/empty"], dest)
    assert (dest / "secret").read_text() == "mine"
    assert list(world["outside"].iterdir()) == []
    assert [p for p, _ in report.errors] == ["/p1/etc/nginx", "/p1/etc/readonly/ro.txt", "/p1/etc/secret"]
    assert [m for _, m in report.errors] == [f"{dest / n} already exists: not overwritten"
                                             for n in ("nginx", "ro.txt", "secret")]
    check_written(dest, "empty", "etc/empty")   # what is not in the way is written
    assert report.files == 1 and not report.ok
    second = extract_to_dir(files, ["/p1/etc/empty"], dest)
    assert second.errors and second.files == 0
    # the same name twice in one request (the first may still be waiting for its fsync): one is written
    twice = extract_to_dir(files, ["/p1/etc/nginx/nginx.conf", "/p1/etc/nginx/nginx.conf"], tmp_path / "t")
    assert (twice.files, twice.errors) == (1, [("/p1/etc/nginx/nginx.conf",
                                                f"{tmp_path / 't' / 'nginx.conf'} already exists: not overwritten")])
    assert all_below(tmp_path / "t") == ["nginx.conf"]


def test_damaged_file_leaves_nothing_and_the_others_extract(world: dict[str, Any], tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    point = store_point(repo, mbr_disk(world["image"]))
    damage_file(repo, point, world["big_blocks"])
    dest = tmp_path / "d"
    with PointFiles(repo, point) as files:
        report = extract_to_dir(files, ["/p1/etc"], dest)
    assert not (dest / "etc" / "big.bin").exists()
    assert [p for p in all_below(dest) if ".part" in p or p.startswith(".fctui")] == []
    assert all_below(dest) == sorted(r for r in TREE if r != "etc/big.bin")
    for rel in TREE:
        if rel != "etc/big.bin":
            check_written(dest, rel, rel)
    [(path, message)] = report.errors
    assert path == "/p1/etc/big.bin" and "/p1/etc/big.bin" in message and "corrupt" in message
    assert not report.ok and report.files == sum(v[0] == "file" for v in TREE.values()) - 1


def test_a_damaged_directory_is_named_and_the_rest_extracts(world: dict[str, Any], tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    point = store_point(repo, mbr_disk(world["image"]))
    damage_file(repo, point, world["many_blocks"])
    dest = tmp_path / "d"
    with PointFiles(repo, point) as files:
        report = extract_to_dir(files, ["/p1/many", "/p1/etc/secret"], dest)
        assert all_below(dest) == ["many", "secret"]   # the directory itself is made; its listing is lost
        [(path, message)] = report.errors
        assert path == "/p1/many" and message.startswith("cannot read /p1/many from restore point")
        assert not report.ok and report.files == 1
        with pytest.raises(FileDamagedError) as exc:   # a tar cannot be complete: it stops
            extract_tar(files, ["/p1/etc/secret", "/p1/many"], io.BytesIO())
        assert exc.value.path == "/p1/many"


def test_a_local_write_error_names_the_file_and_the_rest_extracts(files: Any, tmp_path: Path) -> None:
    """The destination refuses big.bin (a file size limit: EFBIG, as a full quota would): it is named,
    its temporary file is gone, the other files are written."""
    import resource
    dest = tmp_path / "d"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))   # Python ignores SIGXFSZ: write fails
    try:
        report = extract_to_dir(files, ["/p1/etc"], dest)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    [(path, message)] = report.errors
    assert path == "/p1/etc/big.bin" and message == f"cannot write {dest / 'etc' / 'big.bin'}: File too large"
    assert all_below(dest) == sorted(r for r in TREE if r != "etc/big.bin")
    check_written(dest, "etc/nginx/nginx.conf", "etc/nginx/nginx.conf")


def test_a_directory_loop_ends(files: Any, tmp_path: Path) -> None:
    """/p1/loop/LOOPxDIR1 is an entry of a damaged filesystem that leads back to /p1/loop itself: written
    once, the loop skipped with its reason (not an endless tree), in a directory and in a tar."""
    dest = tmp_path / "d"
    report = extract_to_dir(files, ["/p1/loop"], dest)
    assert all_below(dest) == ["loop", "loop/f"] and (dest / "loop" / "f").read_bytes() == b"in the loop\n"
    assert report.skipped == [("/p1/loop/LOOPxDIR1", "the same directory as /p1/loop above it (a directory "
                                                      "loop in a damaged filesystem): its contents are written there")]
    assert report.ok
    buf = io.BytesIO()
    assert extract_tar(files, ["/p1/loop"], buf).written == ["loop", "loop/f"]


def test_cancel_stops_and_removes_the_partial_file(files: Any, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    cancel = threading.Event()
    seen: list[ExtractProgress] = []

    def progress(p: ExtractProgress) -> None:
        seen.append(p)
        if p.current == "/p1/etc/big.bin":
            cancel.set()   # while big.bin is being written: the next read stops it

    ticks = iter(range(10_000))   # a clock that moves a second a call: every step is reported
    report = extract_to_dir(files, ["/p1/etc"], dest, progress=progress, cancel=cancel,
                            clock=lambda: float(next(ticks)))
    assert report.cancelled and not report.ok
    assert not (dest / "etc" / "big.bin").exists()
    assert not any(".part" in p for p in all_below(dest))
    assert "etc/secret" not in all_below(dest)   # after big.bin in name order: never reached
    check_written(dest, "etc", "etc")            # the directories made get their mode and time all the same


def test_progress_is_paced_by_the_clock(files: Any, tmp_path: Path) -> None:
    calls: list[ExtractProgress] = []
    now = [0.0]
    report = extract_to_dir(files, ["/p1/etc"], tmp_path / "d", progress=calls.append, clock=lambda: now[0])
    # a clock that never moves: the first call and the final one, however many files and reads
    assert len(calls) == 2
    last = calls[-1]
    assert last.files_done == last.files_total == report.files
    assert last.bytes_done == last.bytes_total == report.bytes

    ticks = iter(range(10_000))
    calls.clear()
    extract_to_dir(files, ["/p1/etc"], tmp_path / "e", progress=calls.append, clock=lambda: next(ticks) * 0.5)
    assert len(calls) > 2   # every tick 0.5 s apart: it reports as it goes


# --- tar -----------------------------------------------------------------------------------------------

def test_tar_members_modes_times_owners_links(files: Any, world: dict[str, Any]) -> None:
    buf = io.BytesIO()
    report = extract_tar(files, ["/p1/etc"], buf)
    buf.seek(0)
    members = {}
    with tarfile.open(fileobj=buf, mode="r:") as tar:
        for m in tar:
            members[m.name] = (m, tar.extractfile(m).read() if m.isfile() else None)
    assert sorted(members) == sorted(TREE)
    src_stat = os.lstat(world["src"] / "etc" / "secret")
    for rel, (kind, content, mode, _) in TREE.items():
        m, data = members[rel]
        assert {"dir": m.isdir(), "file": m.isfile(), "symlink": m.issym()}[kind], rel
        if kind != "symlink":
            assert m.mode == mode, rel   # the archive keeps the set-id bits as stored
        assert m.uid == src_stat.st_uid and m.gid == src_stat.st_gid
        if kind == "file":
            assert data == content, rel
        if kind == "symlink":
            assert m.linkname == (str(world["outside"]) if content == "OUTSIDE" else content)
        want = expected_mtime_ns(rel)
        if want % 1_000_000_000:
            secs, nanos = divmod(want, 1_000_000_000)
            assert m.pax_headers["mtime"] == f"{secs}.{nanos:09d}", rel
        else:
            assert m.mtime == want // 1_000_000_000, rel
    assert {p for p, _ in report.skipped} == {"/p1/etc/SLASH\u2215NAME", "/p1/etc/DIR\u2215SLASH",
                                             "/p1/etc/NUL\u2400xNAME", "/p1/etc/fifo"}
    assert report.ok and sorted(report.written) == sorted(TREE)


def test_tar_stops_at_a_damaged_file_never_wrong_bytes(world: dict[str, Any], tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    point = store_point(repo, mbr_disk(world["image"]))
    damage_file(repo, point, world["big_blocks"])
    buf = io.BytesIO()
    with PointFiles(repo, point) as files, pytest.raises(FileDamagedError) as exc:
        extract_tar(files, ["/p1/etc"], buf)
    assert exc.value.path == "/p1/etc/big.bin" and "/p1/etc/big.bin" in str(exc.value)
    raw = buf.getvalue()
    buf.seek(0)
    good = []
    with pytest.raises(tarfile.ReadError):   # truncated: the archive never claims to be complete
        with tarfile.open(fileobj=buf, mode="r|") as tar:
            for m in tar:
                if m.name == "etc/big.bin":
                    # what follows its header is a prefix of its content: no padding, no zeros, no end
                    tail = raw[m.offset_data:]
                    assert len(tail) < len(BIG) and tail == BIG[:len(tail)]
                data = tar.extractfile(m).read() if m.isfile() else None
                if m.isfile():
                    assert data == TREE[m.name][1], m.name   # every member there is whole and right
                good.append(m.name)
    assert "etc/big.bin" not in good and "etc/secret" not in good   # after it in name order
    assert "etc/abs" in good                                       # before it


def test_tar_cancel(files: Any) -> None:
    cancel = threading.Event()
    cancel.set()
    report = extract_tar(files, ["/p1/etc"], io.BytesIO(), cancel=cancel)
    assert report.cancelled and report.files == 0
