"""``fctui files``: its three forms (list, get, find), --json, exit codes and messages, against a real
repository whose point holds a real ext4 filesystem (tests/files/ext4_points.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from fctui.cli import build_parser
from fctui.repo import Repository
from tests.files.ext4_points import (damage_file, file_blocks, make_ext4, mbr_disk, set_modes_and_times,
                                     store_point)

T0 = 1_700_000_000
HOSTILE = "ctl\x1b]0;pwned\x07"   # a name that would retitle the terminal if printed as it is
# path below /p1 -> (kind, content or link text, mode, mtime seconds)
TREE: dict[str, tuple[str, Any, int, int]] = {
    "etc": ("dir", None, 0o755, T0 + 100),
    "etc/nginx": ("dir", None, 0o750, T0 + 90),
    "etc/nginx/nginx.conf": ("file", b"worker_processes 1;\n", 0o640, T0 + 10),
    "etc/hosts": ("file", b"127.0.0.1 localhost\n", 0o644, T0 + 11),
    "etc/localtime": ("symlink", "/usr/share/zoneinfo/UTC", 0o777, T0 + 12),
    "etc/big.bin": ("file", bytes(range(256)) * 1200, 0o600, T0 + 13),
    f"etc/{HOSTILE}": ("file", b"x\n", 0o644, T0 + 14),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("cli-files")
    src = base / "src"
    src.mkdir()
    for rel, (kind, content, _, _) in TREE.items():
        if kind == "dir":
            (src / rel).mkdir()
        elif kind == "file":
            (src / rel).write_bytes(content)
        else:
            os.symlink(content, src / rel)
    set_modes_and_times(src, TREE)
    image = base / "fs.img"
    make_ext4(src, image)
    disk = mbr_disk(image)
    repo_dir = base / "repo"
    repo = Repository.open(repo_dir)
    point = store_point(repo, disk)
    two = store_point(repo, disk, disks=2)
    bad_dir = base / "bad"
    bad_repo = Repository.open(bad_dir)
    bad = store_point(bad_repo, disk)
    damage_file(bad_repo, bad, file_blocks(image, "/etc/big.bin"))
    return {"repo": str(repo_dir), "point": point, "two": two, "bad_repo": str(bad_dir), "bad": bad,
            "image": image}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(*argv: str, out: Any = None, err: Any = None) -> tuple[int, str, str]:
    ns = build_parser().parse_args(list(argv))
    out = out if out is not None else io.StringIO()
    err = err if err is not None else io.StringIO()
    code = ns.func(ns, out, err)
    text = out.getvalue() if isinstance(out, io.StringIO) else ""
    return code, text, err.getvalue()


def local(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


# --- listing ---------------------------------------------------------------------------------------------

def test_list_volumes_at_the_top(world: dict[str, Any]) -> None:
    code, out, err = run("files", world["point"], "--repo", world["repo"])
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert world["point"] in lines[0] and "guest" in lines[0] and "disk 0: sda" in lines[0]
    assert lines[1].split() == ["NAME", "TYPE", "SIZE", "LABEL", "WHAT"]
    assert lines[2].split()[:4] == ["/p1", "ext4", "8.0", "MiB"] and "files-test" in lines[2]


def test_list_a_directory(world: dict[str, Any]) -> None:
    code, out, _ = run("files", world["point"], "/p1/etc", "--repo", world["repo"])
    assert code == 0
    rows = {line.split("  ")[-1].strip(): line for line in out.splitlines()}
    assert set(rows) == {"big.bin", "hosts", "localtime -> /usr/share/zoneinfo/UTC", "nginx",
                         "ctl\\x1b]0;pwned\\x07"}
    assert rows["nginx"].startswith("drwxr-x---") and local(T0 + 90) in rows["nginx"]
    assert rows["hosts"].startswith("-rw-r--r--") and "20 B" in rows["hosts"] and local(T0 + 11) in rows["hosts"]
    assert rows["big.bin"].startswith("-rw-------") and "300.0 KiB" in rows["big.bin"]
    assert rows["localtime -> /usr/share/zoneinfo/UTC"].startswith("lrwxrwxrwx")
    assert "\x1b" not in out and "\x07" not in out   # the hostile name is escaped


def test_list_options_before_and_after_the_point(world: dict[str, Any]) -> None:
    """--disk, --json and --repo parse wherever they stand; a file lists as itself."""
    a = run("files", "--json", "--disk", "0", world["point"], "/p1/etc/hosts", "--repo", world["repo"])
    b = run("files", world["point"], "--repo", world["repo"], "/p1/etc/hosts", "--json")
    c = run("--json", "files", world["point"], "/p1/etc/hosts", "--repo", world["repo"])
    assert a == b == c and a[0] == 0
    [entry] = json.loads(a[1])
    assert (entry["path"], entry["kind"], entry["size"], entry["mode"], entry["mtime_ns"]) == \
        ("/p1/etc/hosts", "file", 20, 0o644, (T0 + 11) * 1_000_000_000)


def test_list_json_and_recursive(world: dict[str, Any]) -> None:
    code, out, _ = run("files", world["point"], "/p1/etc", "--json", "--repo", world["repo"])
    doc = json.loads(out)
    assert code == 0 and sorted(e["name"] for e in doc) == sorted(r.split("/")[-1] for r in TREE if r.count("/") == 1)
    link = next(e for e in doc if e["name"] == "localtime")
    assert link["kind"] == "symlink" and link["target"] == "/usr/share/zoneinfo/UTC"
    code, out, _ = run("files", world["point"], "/p1/etc", "-r", "--json", "--repo", world["repo"])
    assert sorted(e["path"] for e in json.loads(out)) == sorted(f"/p1/{r}" for r in TREE if r != "etc")
    code, out, _ = run("files", world["point"], "/p1/etc", "--recursive", "--repo", world["repo"])
    assert code == 0 and any(line.endswith("/p1/etc/nginx/nginx.conf") for line in out.splitlines())


def test_list_errors_are_one_line(world: dict[str, Any]) -> None:
    code, out, err = run("files", world["point"], "/p1/nope", "--repo", world["repo"])
    assert code == 1 and out == "" and err.count("\n") == 1 and "/p1/nope" in err and "Traceback" not in err
    code, _, err = run("files", "20990101T000000Z-0000", "--repo", world["repo"])
    assert code == 2 and "no restore point '20990101T000000Z-0000'" in err
    code, _, err = run("files", world["point"], "--disk", "3", "--repo", world["repo"])
    assert code == 2 and "no disk 3" in err and "0: sda" in err
    code, out, _ = run("files", world["point"], "/p1/nope", "--json", "--repo", world["repo"])
    assert code == 1 and "/p1/nope" in json.loads(out)["error"]


# --- find ------------------------------------------------------------------------------------------------

def test_find(world: dict[str, Any]) -> None:
    code, out, _ = run("files", "find", world["point"], "*.CONF", "--repo", world["repo"])
    assert code == 0 and out.split()[-1] == "/p1/etc/nginx/nginx.conf" and out.startswith("-rw-r-----")
    code, out, _ = run("files", "find", world["two"], "hosts", "--json", "--repo", world["repo"])
    assert code == 0 and [(e["disk"], e["path"]) for e in json.loads(out)] == [(0, "/p1/etc/hosts"), (1, "/p1/etc/hosts")]
    code, out, _ = run("files", "find", world["two"], "hosts", "--repo", world["repo"])
    assert [line.split()[:2] for line in out.splitlines()] == [["disk", "0"], ["disk", "1"]]
    code, out, _ = run("files", "find", world["two"], "hosts", "--disk", "1", "--json", "--repo", world["repo"])
    assert [e["disk"] for e in json.loads(out)] == [1]
    code, out, err = run("files", "find", world["point"], "nothing-like-this", "--repo", world["repo"])
    assert code == 0 and out == "" and "nothing matches" in err


# --- get -------------------------------------------------------------------------------------------------

def test_get_to_a_directory(world: dict[str, Any], tmp_path: Path) -> None:
    dest = tmp_path / "out"
    code, out, _ = run("files", "get", world["point"], "/p1/etc/nginx", "/p1/etc/hosts", "--to", str(dest),
                       "--repo", world["repo"])
    assert code == 0
    assert out.splitlines() == [f"wrote 2 files (40 B), 1 directory, 0 links to {dest}"]
    assert (dest / "nginx" / "nginx.conf").read_bytes() == TREE["etc/nginx/nginx.conf"][1]
    assert os.stat(dest / "nginx").st_mtime_ns == (T0 + 90) * 1_000_000_000
    assert oct(os.stat(dest / "hosts").st_mode & 0o7777) == oct(0o644)
    # again: nothing overwritten, said so, exit 1
    code, out, _ = run("files", "get", world["point"], "/p1/etc/hosts", "--to", str(dest), "--repo", world["repo"])
    assert code == 1 and f"ERROR /p1/etc/hosts: {dest / 'hosts'} already exists: not overwritten" in out


def test_get_names_a_damaged_file_and_writes_the_others(world: dict[str, Any], tmp_path: Path) -> None:
    dest = tmp_path / "out"
    code, out, _ = run("files", "get", world["bad"], "/p1/etc", "--to", str(dest), "--repo", world["bad_repo"])
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and errors[0].startswith("ERROR /p1/etc/big.bin: cannot read /p1/etc/big.bin")
    assert "1 error: not written" in out and "ctl\\x1b]0;pwned\\x07" not in out   # written files are not listed
    assert not (dest / "etc" / "big.bin").exists()
    assert (dest / "etc" / "hosts").read_bytes() == TREE["etc/hosts"][1]
    code, out, _ = run("files", "get", world["bad"], "/p1/etc", "--to", str(tmp_path / "j"), "--json",
                       "--repo", world["bad_repo"])
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False and [e["path"] for e in doc["errors"]] == ["/p1/etc/big.bin"]


def test_get_tar_file(world: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "etc.tar"
    code, out, _ = run("files", "get", world["point"], "/p1/etc", "--tar", str(target), "--repo", world["repo"])
    assert code == 0 and "wrote 4 files" in out
    with tarfile.open(target) as tar:
        names = tar.getnames()
        assert sorted(names) == sorted(TREE)
        assert tar.extractfile("etc/big.bin").read() == TREE["etc/big.bin"][1]
        assert tar.getmember("etc/localtime").linkname == "/usr/share/zoneinfo/UTC"
        assert tar.getmember("etc/nginx").mode == 0o750
    code, _, err = run("files", "get", world["point"], "/p1/etc", "--tar", str(target), "--repo", world["repo"])
    assert code == 1 and "already exists" in err
    code, _, err = run("files", "get", world["bad"], "/p1/etc", "--tar", str(tmp_path / "bad.tar"),
                       "--repo", world["bad_repo"])
    assert code == 1 and "cannot read /p1/etc/big.bin" in err and "truncated" in err
    code, out, _ = run("files", "get", world["bad"], "/p1/etc", "--tar", str(tmp_path / "bad2.tar"), "--json",
                       "--repo", world["bad_repo"])
    doc = json.loads(out)
    assert code == 1 and doc["path"] == "/p1/etc/big.bin" and doc["problem"] == "corrupt" and "truncated" in doc["error"]


def test_get_tar_to_stdout(world: dict[str, Any]) -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8")
    err = io.StringIO()
    code, _, text = run("files", "get", world["point"], "/p1/etc/hosts", "--tar", "-", "--repo", world["repo"],
                        out=out, err=err)
    assert code == 0 and "wrote 1 file " in text   # the summary goes to stderr: stdout is the tar
    out.flush()
    with tarfile.open(fileobj=io.BytesIO(raw.getvalue())) as tar:
        assert tar.getnames() == ["hosts"] and tar.extractfile("hosts").read() == TREE["etc/hosts"][1]


def test_get_tar_refuses_a_terminal(world: dict[str, Any]) -> None:
    code, _, err = run("files", "get", world["point"], "/p1/etc", "--tar", "-", "--repo", world["repo"], out=Tty())
    assert code == 2 and "refusing to write a tar to a terminal" in err


def test_get_progress_on_a_terminal(world: dict[str, Any], tmp_path: Path) -> None:
    err = Tty()
    code, _, text = run("files", "get", world["point"], "/p1/etc", "--to", str(tmp_path / "o"),
                        "--repo", world["repo"], err=err)
    assert code == 0 and "files · " in text and text.endswith("\r") and "\x1b" not in text


def test_usage_errors(world: dict[str, Any]) -> None:
    code, _, err = run("files")
    assert code == 2 and "needs a POINT" in err
    code, _, err = run("files", "get", world["point"], "/p1/etc", "--repo", world["repo"])
    assert code == 2 and "--to DIR or --tar" in err
    code, _, err = run("files", "--recursive", "get", world["point"], "/p1/etc", "--to", "x")
    assert code == 2 and "does not take --recursive" in err
    code, _, err = run("files", "get", world["point"], "/x", "--tar", "-", "--json", "--repo", world["repo"])
    assert code == 2 and "stdout" in err
    with pytest.raises(SystemExit) as exc:
        run("files", world["point"], "--to", "somewhere")
    assert exc.value.code == 2


def test_the_command_line_end_to_end(world: dict[str, Any], tmp_path: Path) -> None:
    """As a user runs it: `fctui files --help` explains the three forms; `get --tar -` pipes a tar."""
    env = {**os.environ, "FCTUI_DATA_DIR": str(tmp_path / "data")}
    helped = subprocess.run([sys.executable, "-m", "fctui.cli", "files", "--help"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert helped.returncode == 0
    for form in ("fctui files POINT [PATH]", "fctui files get POINT PATH...", "fctui files find POINT PATTERN"):
        assert form in helped.stdout
    piped = subprocess.run([sys.executable, "-m", "fctui.cli", "files", "get", world["point"], "/p1/etc/nginx",
                            "--tar", "-", "--repo", world["repo"]], capture_output=True, env=env, timeout=60)
    assert piped.returncode == 0, piped.stderr
    with tarfile.open(fileobj=io.BytesIO(piped.stdout)) as tar:
        assert sorted(tar.getnames()) == ["nginx", "nginx/nginx.conf"]


def test_a_known_guest_with_lvm_and_xfs(tmp_path: Path) -> None:
    """The simulator's EulerOS-like guest (MBR: ext2 /boot, an LVM physical volume holding an XFS root):
    the volume table, and a directory of the XFS volume got as a tar, checked against the guest's spec."""
    from fctui.sim.guestfs import image, spec
    from tests.files.images import write_point
    repo_dir = tmp_path / "repo"
    point = write_point(Repository.open(repo_dir), [image("xfs", 1)], block_size=256 * 1024).id
    sp = spec("xfs", 1)
    code, out, _ = run("files", point, "--repo", str(repo_dir))
    assert code == 0
    table = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(table) == {f"/{v.name}" for v in sp.volumes}
    for v in sp.volumes:
        assert table[f"/{v.name}"][1] == (v.fs_type or "-")
    etc = [e for e in sp.entries if e.path.startswith("/euleros-root/etc/")]
    assert etc, "the spec has files under /euleros-root/etc"
    raw = io.BytesIO()
    out_stream = io.TextIOWrapper(raw, encoding="utf-8")
    code, _, _ = run("files", "get", point, "/euleros-root/etc", "--tar", "-", "--repo", str(repo_dir),
                     out=out_stream)
    assert code == 0
    out_stream.flush()
    with tarfile.open(fileobj=io.BytesIO(raw.getvalue())) as tar:
        for e in etc:
            m = tar.getmember(e.path[len("/euleros-root/"):])
            assert (m.mode, m.mtime, m.uid, m.gid) == (e.mode, e.mtime, e.uid, e.gid), e.path
            if e.kind == "file":
                assert tar.extractfile(m).read() == e.data, e.path
            elif e.kind == "symlink":
                assert m.issym() and m.linkname == e.target, e.path
