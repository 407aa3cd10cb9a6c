"""Issue 17's acceptance, end to end: the simulator's guest VMs backed up through the real engine (the
backup runner, CBT, the repository), then every file of the known images got back from the points.

Expectations come from fctui/sim/guestfs/spec.py (every file's bytes, mode and mtime, written down
independently of any parser) and from what the test itself finds in the repository's chunks, never from
the file-level restore code under test.

1. For each guest (ext4 + FAT EFI on GPT; ext2 /boot + XFS on LVM on MBR; NTFS on MBR): a full backup, every
   volume extracted with extract_to_dir and compared, entry by entry, with the spec: the same set of paths,
   byte-identical content, mode and mtime (symlinks: their text). Then the guest moves to version 2 (the
   simulator writes the differing blocks, CBT sees them), an incremental backup reads exactly those, and the
   "before" point still gives version 1 of the changed file (and the removed one), the "after" point
   version 2 (and the added one); every file of the after point matches version 2.
2. A damaged chunk (corrupt, and separately deleted) under a known multi-chunk file: found by searching the
   point's blocks for the file's own bytes; extraction names the file in its errors and does not write it,
   no temporary file stays, every other file is still written with the right bytes, `fctui files get`
   exits 1 naming it, a tar stops there holding only right bytes.
"""

from __future__ import annotations

import dataclasses
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import small_disks
from tests.jobs.test_jobs_runner import backup

from fctui.cli import main
from fctui.files import FileDamagedError, PathNotFoundError
from fctui.files.browse import PointFiles
from fctui.files.extract import extract_tar, extract_to_dir
from fctui.repo import Repository, RestorePoint
from fctui.sim.guestfs import CHANGES, GuestSpec, spec
from fctui.vrm import VrmClient

from .damage import chunk_under, damage

BLOCK = 128 * 512   # 64 KiB CBT blocks (sector_of_block=128): the repository's chunks
# written down here, not read from the simulator: the guest VMs and their volumes holding filesystems
VMS = {"ext4": "web-ubuntu-ext4", "xfs": "db-euleros-xfs", "ntfs": "win-fileserver-ntfs"}
VOLUMES = {"ext4": {"p1": "fat", "p2": "ext4"}, "xfs": {"p1": "ext2", "euleros-root": "xfs"},
           "ntfs": {"p1": "ntfs"}}


@pytest.fixture
def sim_config() -> Any:
    # the edge-case disks stay small (1 GB, 2 % written); the guest VMs' disks hold only their images
    return dataclasses.replace(small_disks(), vms=0, guest_filesystems=True)


async def back_up(client: VrmClient, repo: Repository, guest: str, job_id: str) -> tuple[RestorePoint, dict]:
    job, _ = await backup(client, repo, [VMS[guest]], job_id=job_id)
    assert job.state == "succeeded", job.error
    [pid] = job.restore_points
    [disk] = job.summary_json()["vms"][0]["disks"]
    return repo.point(pid), disk


def on_disk(dest: Path, volume: str) -> dict[str, os.stat_result]:
    """Every path below ``dest/volume`` (as /volume/..., like the spec) with its lstat."""
    out = {}
    for root, dirs, files in os.walk(dest / volume):
        for name in dirs + files:
            p = Path(root) / name
            out["/" + str(p.relative_to(dest))] = p.lstat()
    return out


def assert_volume_matches(dest: Path, sp: GuestSpec, volume: str, *, damaged: set[str] = frozenset()) -> int:
    """``dest/<volume>`` holds exactly the spec's entries of ``volume`` (less ``damaged``), each with its
    bytes, mode and mtime. Returns the number of files compared."""
    want = {e.path: e for e in sp.under(volume) if e.path != f"/{volume}" and e.path not in damaged}
    got = on_disk(dest, volume)
    assert sorted(set(got) - set(want)) == [] and sorted(set(want) - set(got)) == []
    files = 0
    for path, e in want.items():
        st = got[path]
        where = dest / path.lstrip("/")
        assert st.st_mtime_ns == e.mtime_ns, path
        if e.kind == "symlink":
            assert stat.S_ISLNK(st.st_mode) and os.readlink(where) == e.target, path
            continue
        assert stat.S_IMODE(st.st_mode) == e.mode, (path, oct(stat.S_IMODE(st.st_mode)), oct(e.mode))
        if e.kind == "dir":
            assert stat.S_ISDIR(st.st_mode), path
        else:
            assert stat.S_ISREG(st.st_mode) and where.read_bytes() == e.data, path
            files += 1
    root = sp.by_path.get(f"/{volume}")
    if root is not None:   # the filesystem's root directory (FAT has none: no times, no attributes)
        st = (dest / volume).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (root.mode, root.mtime_ns)
    return files


def extract_all(files: PointFiles, guest: str, version: int, dest: Path) -> None:
    sp = spec(guest, version)
    report = extract_to_dir(files, [f"/{v}" for v in VOLUMES[guest]], dest)
    assert report.ok, report.errors
    assert report.skipped == []
    counted = sum(assert_volume_matches(dest, sp, v) for v in VOLUMES[guest])
    assert counted == report.files == len(sp.files())
    assert report.bytes == sum(len(e.data) for e in sp.files())


# --- 1. every file of every filesystem kind, before and after -------------------------------------------

@pytest.mark.parametrize("guest", ["ext4", "xfs", "ntfs"])
async def test_every_file_of_a_backed_up_guest_then_before_and_after(
        guest: str, client: VrmClient, control: httpx.AsyncClient, repo: Repository, tmp_path: Path) -> None:
    v1, v2, change = spec(guest, 1), spec(guest, 2), CHANGES[guest]
    guests = (await control.get("/sim/guestfs")).json()["vms"]
    assert {g["name"]: (g["guest"], g["version"]) for g in guests}[VMS[guest]] == (guest, 1)

    before, disk = await back_up(client, repo, guest, "full")
    assert disk["mode"] == "full"
    with PointFiles(repo, before) as files:
        assert {v.name: v.fs_type for v in files.volumes() if v.fs_type} == VOLUMES[guest]
        extract_all(files, guest, 1, tmp_path / "v1")

    # version 2: the simulator writes the blocks that differ; the incremental reads exactly those
    vm_urn = before.vm_urn
    moved = await control.post(f"/sim/vms/{vm_urn.rsplit(':', 1)[1]}/guestfs", json={"version": 2})
    assert moved.status_code == 200, moved.text
    written = moved.json()["written"]
    assert 0 < written < v1.disk_size // BLOCK
    after, disk = await back_up(client, repo, guest, "incr")
    assert disk["mode"] == "incremental" and "CBT chain intact" in disk["reason"]
    assert disk["bytes_read"] == written * BLOCK
    assert after.disks[0].base_point_id == before.id

    with PointFiles(repo, before) as old, PointFiles(repo, after) as new:
        with old.open(change.changed) as f:
            assert f.read() == v1.entry(change.changed).data
        with new.open(change.changed) as f:
            assert f.read() == v2.entry(change.changed).data != v1.entry(change.changed).data
        assert old.stat(change.changed).mtime_ns == v1.entry(change.changed).mtime_ns
        assert new.stat(change.changed).mtime_ns == v2.entry(change.changed).mtime_ns
        with old.open(change.removed) as f:
            assert f.read() == v1.entry(change.removed).data
        with pytest.raises(PathNotFoundError):
            new.stat(change.removed)
        with pytest.raises(PathNotFoundError):
            old.stat(change.added)
        with new.open(change.added) as f:
            assert f.read() == v2.entry(change.added).data
        extract_all(new, guest, 2, tmp_path / "v2")


# --- 2. a damaged chunk under a known file ---------------------------------------------------------------

BIG = "/p2/var/www/html/downloads/catalogue-2025.bin"   # 7 MiB + 12345 bytes on ext4: ~113 chunks


@pytest.mark.parametrize("how", ["corrupt", "deleted"])
async def test_a_damaged_chunk_names_the_file_and_never_gives_wrong_bytes(
        how: str, client: VrmClient, repo: Repository, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sp = spec("ext4", 1)
    data = sp.entry(BIG).data
    assert len(data) > 3 * BLOCK
    point, _ = await back_up(client, repo, "ext4", "full")
    block, digest = chunk_under(repo, point, data)
    damage(repo, digest, how)

    # the file itself: an error naming it, never its bytes
    with PointFiles(repo, point) as files:
        with pytest.raises(FileDamagedError) as err:
            with files.open(BIG) as f:
                while f.read(1 << 20):
                    pass
        assert err.value.path == BIG and BIG in str(err.value)
        assert (err.value.problem, err.value.digest, err.value.block) == (
            "corrupt" if how == "corrupt" else "missing", digest, block)

    # extraction of the whole volume: that file named and not written, every other file right
    dest = tmp_path / "out"
    with PointFiles(repo, point) as files:
        report = extract_to_dir(files, ["/p2"], dest)
    assert [p for p, _ in report.errors] == [BIG]
    assert BIG in report.errors[0][1]
    assert not (dest / BIG.lstrip("/")).exists()
    assert os.listdir(dest) == ["p2"]
    assert not [p for p in on_disk(dest, "p2") if ".part" in p or ".fctui" in p]   # no temporary left behind
    assert assert_volume_matches(dest, sp, "p2", damaged={BIG}) == len(
        [e for e in sp.under("p2") if e.kind == "file"]) - 1

    # the command: exit 1, the file named, nothing written for it
    out = tmp_path / "cli"
    out.mkdir()
    rc = main(["files", "get", point.id, BIG, "/p2/etc/nginx/nginx.conf", "--to", str(out),
               "--repo", str(repo.path)])
    printed = capsys.readouterr()
    assert rc == 1
    # the summary (stdout; stderr when the tar owns stdout) names it in an ERROR line
    assert f"ERROR {BIG}: " in printed.out + printed.err
    assert sorted(os.listdir(out)) == ["nginx.conf"]
    assert (out / "nginx.conf").read_bytes() == sp.entry("/p2/etc/nginx/nginx.conf").data

    # a tar stops at the damaged file: whatever it holds is right
    buf = io.BytesIO()
    with PointFiles(repo, point) as files:
        with pytest.raises(FileDamagedError, match="catalogue-2025.bin"):
            extract_tar(files, ["/p2/var/www/html"], buf)
    seen = 0
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue()), mode="r|") as tar:
        try:
            for member in tar:
                e = sp.entry("/p2/var/www/" + member.name)
                if member.isfile():
                    content = tar.extractfile(member).read()  # type: ignore[union-attr]
                    assert content == e.data, member.name
                    seen += 1
        except tarfile.ReadError:
            pass   # the truncated end, where the damaged file began
    assert seen >= 1
