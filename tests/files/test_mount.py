"""``fctui mount``: a restore point's disk as a read-only FUSE filesystem (issue 17 item 5, optional).

Without the bindings the command says what to install; with them (and /dev/fuse, fusermount), the sim's
known ext4 guest (GPT: FAT EFI partition and ext4) mounted in a subprocess serves every file of its spec
with its bytes, mode and mtime, refuses writes, and fails the read of a file over a damaged chunk with EIO
naming it in its log, never with wrong bytes."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from fctui.cli import main
from fctui.files.mount import FuseUnavailableError, load_fuse
from fctui.repo import Repository
from fctui.sim.guestfs import image, spec

from .images import write_point
from .damage import chunk_under, damage

BS = 64 * 1024
BIG = "/p2/var/www/html/downloads/catalogue-2025.bin"   # 7 MiB on ext4: its middle chunk is damaged


def fuse_missing() -> str | None:
    try:
        load_fuse()
    except FuseUnavailableError as exc:
        return str(exc)
    if not (shutil.which("fusermount3") or shutil.which("fusermount")):
        return "fusermount (fuse3) is not installed"
    return None


def test_without_the_bindings_mount_says_what_to_install(repo: Repository, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    point = write_point(repo, [image("ext4", 1)], block_size=BS)
    monkeypatch.setitem(sys.modules, "mfusepy", None)   # as if not installed: import raises ImportError
    (tmp_path / "mnt").mkdir()
    assert main(["mount", point.id, str(tmp_path / "mnt"), "--repo", str(repo.path)]) == 1
    err = capsys.readouterr().err
    assert "pip install 'fctui[mount]'" in err and "Traceback" not in err


def test_mount_refuses_a_bad_mount_point_or_disk(repo: Repository, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    point = write_point(repo, [image("ext4", 1)], block_size=BS)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    assert main(["mount", point.id, str(full), "--repo", str(repo.path)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["mount", point.id, str(tmp_path / "nowhere"), "--repo", str(repo.path)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "mnt").mkdir()
    assert main(["mount", point.id, str(tmp_path / "mnt"), "--disk", "1", "--repo", str(repo.path)]) == 2
    assert "has no disk 1" in capsys.readouterr().err


@pytest.fixture
def mounted(repo: Repository, tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str], str]]:
    missing = fuse_missing()
    if missing:
        pytest.skip(missing)
    point = write_point(repo, [image("ext4", 1)], block_size=BS)
    _, digest = chunk_under(repo, point, spec("ext4", 1).entry(BIG).data)
    damage(repo, digest, "corrupt")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "from fctui.cli import main; raise SystemExit(main())",
                             "mount", point.id, str(mnt), "--repo", str(repo.path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mnt):
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                if "cannot mount" in err:
                    pytest.skip(f"this machine refuses FUSE mounts: {err.strip()}")
                raise AssertionError(f"fctui mount exited {proc.returncode}: {err}")
            assert time.monotonic() < deadline, "not mounted within 20 s"
            time.sleep(0.05)
        yield mnt, proc, point.id
    finally:
        if os.path.ismount(mnt):
            subprocess.run([shutil.which("fusermount3") or "fusermount", "-u", "-z", str(mnt)], check=False)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_a_mounted_point_serves_every_file_read_only(mounted: tuple[Path, subprocess.Popen[str], str]) -> None:
    mnt, proc, point_id = mounted
    sp = spec("ext4", 1)
    assert sorted(os.listdir(mnt)) == ["p1", "p2"]
    want = {e.path: e for e in sp.entries if e.path.count("/") > 1}
    got = set()
    for root, dirs, files in os.walk(mnt):
        got |= {"/" + str((Path(root) / n).relative_to(mnt)) for n in dirs + files}
    assert got == set(want) | {"/p1", "/p2"}
    root = sp.entry("/p2")   # ext4's root directory (FAT's has no times)
    assert (stat.S_IMODE((mnt / "p2").stat().st_mode), (mnt / "p2").stat().st_mtime_ns) == (root.mode, root.mtime_ns)
    for path, e in want.items():
        where = mnt / path.lstrip("/")
        st = where.lstat()
        assert st.st_mtime_ns == e.mtime_ns, path
        if e.kind == "symlink":
            assert stat.S_ISLNK(st.st_mode) and os.readlink(where) == e.target
            continue
        assert stat.S_IMODE(st.st_mode) == e.mode, path
        if e.kind == "file" and path != BIG:
            assert st.st_size == len(e.data) and where.read_bytes() == e.data, path
    with pytest.raises(OSError) as err:
        (mnt / BIG.lstrip("/")).read_bytes()
    assert err.value.errno == errno.EIO
    with pytest.raises(OSError) as err:
        (mnt / "p2" / "etc" / "new.conf").write_text("x")
    assert err.value.errno == errno.EROFS

    subprocess.run([shutil.which("fusermount3") or "fusermount", "-u", str(mnt)], check=True)
    assert proc.wait(timeout=10) == 0
    log = proc.stderr.read() if proc.stderr else ""
    assert f"restore point {point_id} disk 0 mounted read-only" in log
    assert "fctui mount: " in log and BIG in log and "corrupt" in log
