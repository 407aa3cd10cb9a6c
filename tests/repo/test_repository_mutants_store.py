"""The local repository's store (creation, opening, leases, chunks, gc, disk usage), where mutation testing
found it unguarded (README, Mutation testing): exact layout and files on disk, exact error messages, the
rare race paths (a file gone between a listing and its use) and gc's report counts. Races and full disks
are simulated by faking the system call; time is gc's injected clock, never a sleep."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import time
from pathlib import Path

import pytest

import fctui.repo.repository as repository
from fctui.repo import RepoError, Repository
from fctui.repo.errors import ChunkError, ManifestError, NoRepositoryError, RepoFullError
from fctui.repo.repository import Lease
from fctui.store import StoreError

from .gcclock import GRACE_S, GcClock
from .test_repo_points import new_point

BS = 4096
DEAD_PID = 2_000_000_000  # beyond any pid_max: no such process


def disk_args(vol: str = "urn:vol:1", size: int = 2 * BS) -> dict:
    return dict(volume_urn=vol, disk_name="disk", sequence_num=1, pci_type="VIRTIO", size_bytes=size,
                block_size=BS, storage_type="LOCALPOME", datastore_urn="urn:ds:1", cbt=None, base_point_id=None)


def backup(repo: Repository, blocks: list[bytes], vm_name: str = "vm1") -> str:
    with repo.new_point(vm_urn="urn:sites:1:vms:i-1", vm_name=vm_name, job_id="job-1", kind="cbt",
                        vm_config={}, snapshot_urn="urn:snap:1", created=time.time()) as pw:
        dw = pw.add_disk(**disk_args(size=len(blocks) * BS))
        for i, b in enumerate(blocks):
            dw.put_block(i, b)
        return pw.commit().id


def block(tag: int) -> bytes:
    return bytes([tag]) * BS  # compressible: stored zstd


def noise(seed: int, size: int = BS) -> bytes:
    """Incompressible bytes, the same on every run: random bytes could land in another chunk's shard by chance."""
    return random.Random(seed).randbytes(size)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def clock(tmp_path: Path) -> GcClock:
    return GcClock(tmp_path / "probe")


@pytest.fixture
def repo(tmp_path: Path, clock: GcClock) -> Repository:
    return Repository.open(tmp_path / "repo", clock=clock)


# --- creating -------------------------------------------------------------------------------
def test_a_new_repository_has_its_exact_layout(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "repo"  # parents created too
    before = time.time()
    r = Repository.open(root)
    after = time.time()
    assert r.path == root and r.clock is None
    assert sorted(p.name for p in root.iterdir()) == ["chunks", "pending", "points", "repo.json", "repo.lock"]
    shards = sorted(p.name for p in (root / "chunks").iterdir())
    assert shards == [f"{i:02x}" for i in range(256)]
    for d in [root, root / "points", root / "pending", root / "chunks", root / "chunks" / "00", root / "chunks" / "ff"]:
        assert d.stat().st_mode & 0o777 == 0o700, d
    text = (root / "repo.json").read_text()
    meta = json.loads(text)
    created = meta.pop("created")
    assert meta == {"format": "fctui-repo", "version": 1, "chunk_hash": "sha256",
                    "compression": "zstd-1 (raw when incompressible)"}
    assert before - 1 <= created <= after + 1
    assert text.startswith('{\n "format": "fctui-repo",\n "version": 1,')
    assert r.chunks_dir == root / "chunks" and r.points_dir == root / "points"
    assert r.pending_dir == root / "pending" and r.catalog_path == root / "catalog.json"
    assert r.lock_path == root / "repo.lock"


def test_create_beside_only_a_lock_file_and_in_an_empty_directory(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "repo.lock").write_bytes(b"")
    Repository.open(root)
    assert (root / "repo.json").is_file() and (root / "chunks" / "ab").is_dir()
    empty = tmp_path / "e"
    empty.mkdir()
    Repository.open(empty)
    assert (empty / "repo.json").is_file()


def test_create_tolerates_another_creator_making_the_directories_meanwhile(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "r"
    for sub in ("points", "pending", "chunks", "chunks/00", "chunks/ff"):
        (root / sub).mkdir(parents=True, mode=0o700)
    real = os.listdir
    # The emptiness check saw an empty directory; another process created the layout right after.
    monkeypatch.setattr(os, "listdir", lambda p=".": [] if Path(p) == root else real(p))
    Repository._create(root)
    monkeypatch.undo()
    assert json.loads((root / "repo.json").read_text())["format"] == "fctui-repo"


def test_create_refuses_a_file_and_a_foreign_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RepoError) as e:
        Repository.open(f)
    assert str(e.value) == f"{f} exists and is not a directory"
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    with pytest.raises(RepoError) as e:
        Repository.open(d)
    assert str(e.value) == f"{d} is not empty and not an fctui repository; refusing to write there"
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]


def test_create_failing_names_the_place_and_the_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path, mode=0o777, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(os, "mkdir", refuse)
    root = tmp_path / "r"
    with pytest.raises(RepoError) as e:
        Repository.open(root)
    assert str(e.value) == f"cannot create repository at {root}: [Errno 28] No space left on device: '{root}'"


# --- opening --------------------------------------------------------------------------------
def test_open_without_create_names_the_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(NoRepositoryError) as e:
        Repository.open(tmp_path / "none", create=False)
    assert str(e.value) == f"no repository at {tmp_path / 'none'} (create one by running a backup)"
    assert not (tmp_path / "none").exists()


def test_open_an_existing_repository_keeps_it_and_its_clock(tmp_path: Path, clock: GcClock) -> None:
    Repository.open(tmp_path / "r")
    before = (tmp_path / "r" / "repo.json").read_bytes()
    r = Repository.open(str(tmp_path / "r"), create=False, clock=clock)
    assert r.path == tmp_path / "r" and r.clock is clock
    assert (tmp_path / "r" / "repo.json").read_bytes() == before


def test_open_a_relative_path_and_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = Repository.open("rel")
    assert r.path == tmp_path / "rel" and (tmp_path / "rel" / "repo.json").is_file()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    r = Repository.open("~/repo")
    assert r.path == tmp_path / "home" / "repo"


def test_open_none_uses_the_data_dir_without_creating_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # this test's own data dir (the session's is shared with every other test of this process)
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(NoRepositoryError) as e:
        Repository.open(None, create=False)
    assert str(e.value) == f"no repository at {tmp_path / 'data' / 'repo'} (create one by running a backup)"
    assert not (tmp_path / "data").exists()     # looking for a repository creates no directory
    r = Repository.open(None)
    assert r.path == tmp_path / "data" / "repo" and (r.path / "repo.json").is_file()


def test_open_refuses_foreign_unreadable_and_newer_markers(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    marker = root / "repo.json"
    marker.write_text("{not json")
    with pytest.raises(RepoError) as e:
        Repository.open(root)
    assert str(e.value).startswith(f"{root} has an unreadable repo.json: Expecting property name")
    marker.write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(RepoError) as e:
        Repository.open(root)
    assert str(e.value) == f"{root} is not an fctui repository"
    marker.write_text(json.dumps({"format": "fctui-repo", "version": 2}))
    with pytest.raises(RepoError) as e:
        Repository.open(root)
    assert str(e.value) == f"{root} was written by a newer fctui (format 2)"
    marker.write_text(json.dumps({"format": "fctui-repo"}))  # no version: the first format
    assert Repository.open(root).path == root
    marker.write_text(json.dumps({"format": "fctui-repo", "version": 1}))
    assert Repository.open(root).path == root


def test_open_an_unreadable_catalog_is_a_repo_error(tmp_path: Path) -> None:
    Repository.open(tmp_path / "r")
    (tmp_path / "r" / "catalog.json").write_text("{broken")
    with pytest.raises(RepoError) as e:
        Repository.open(tmp_path / "r")
    assert str(e.value).startswith(f"catalog unreadable: {tmp_path / 'r' / 'catalog.json'} is not valid JSON (")


# --- leases and recovery --------------------------------------------------------------------
def write_lease(repo: Repository, point_id: str, pid: int, bases: list[str] | None = None) -> Path:
    p = repo.pending_dir / f"{point_id}.json"
    p.write_text(json.dumps({"point_id": point_id, "pid": pid, "host": "", "base_point_ids": bases or []}))
    return p


def test_open_drops_a_dead_writers_lease_and_its_uncommitted_manifest_only(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "r")
    kept = backup(repo, [block(1)])
    write_lease(repo, kept, DEAD_PID)  # a dead lease naming a committed point: its manifest stays
    write_lease(repo, "ghost", DEAD_PID)
    (repo.points_dir / "ghost.json").write_text("{}")
    write_lease(repo, "live", os.getpid())
    Repository.open(tmp_path / "r")
    assert sorted(p.name for p in repo.pending_dir.iterdir()) == ["live.json"]
    assert sorted(p.name for p in repo.points_dir.iterdir()) == [f"{kept}.json"]


def test_dropping_a_lease_already_gone_is_quiet(repo: Repository) -> None:
    lease = Lease(repo.pending_dir / "gone.json", {"point_id": "gone", "pid": DEAD_PID}, 0)
    repo._drop_dead_lease(lease)
    assert list(repo.pending_dir.iterdir()) == []


def test_leases_skip_hidden_and_foreign_files_and_name_the_unreadable(repo: Repository) -> None:
    write_lease(repo, "p1", DEAD_PID, ["b1"])
    (repo.pending_dir / ".p2.json").write_text("{}")
    (repo.pending_dir / "note.txt").write_text("x")
    (repo.pending_dir / "bad.json").write_text("{nope")
    (repo.pending_dir / "list.json").write_text("[1, 2]")
    unreadable: list[str] = []
    leases = sorted(repo._leases(unreadable), key=lambda lease: lease.point_id)
    assert [(lease.point_id, lease.pid, lease.base_point_ids) for lease in leases] == [
        ("list", 0, []), ("p1", DEAD_PID, ["b1"])]
    assert unreadable == ["bad.json"]


def test_a_writer_lease_records_its_start_and_bases(repo: Repository) -> None:
    base = backup(repo, [block(1)])
    pw = repo.new_point(vm_urn="urn:sites:1:vms:i-1", vm_name="vm1", job_id="job-1", kind="cbt",
                        vm_config={}, snapshot_urn="urn:snap:1", created=time.time())
    path = repo.pending_dir / f"{pw.point_id}.json"
    data = json.loads(path.read_text())
    assert data["point_id"] == pw.point_id and data["pid"] == os.getpid() and data["base_point_ids"] == []
    assert isinstance(data["started_ns"], int) and data["started_ns"] > 0
    pw.add_disk(**{**disk_args(size=BS), "base_point_id": base})
    assert json.loads(path.read_text())["base_point_ids"] == [base]
    pw.add_disk(**{**disk_args(vol="urn:vol:2", size=BS), "base_point_id": None})
    pw.abort()
    assert not path.exists()


# --- catalog --------------------------------------------------------------------------------
def test_forget_names_the_point_and_its_vm(repo: Repository) -> None:
    pid = backup(repo, [block(1)], vm_name="web-01")
    assert repo._load_manifest(pid)["maps"]  # cached
    assert repo.forget(pid) == f"restore point {pid} of VM web-01"
    assert repo.points() == []
    repo._manifest_path(pid).unlink()
    with pytest.raises(ManifestError):
        repo._load_manifest(pid)  # the forgotten point's cached manifest went too


def test_forget_an_entry_without_a_vm_says_no_vm(repo: Repository) -> None:
    repo._points.insert({"junk": 1})
    repo._points.insert({"id": "x", "vm_name": "", "vm_urn": ""})
    assert repo.forget("#1") == "catalog entry #1"
    assert repo.forget("x") == "catalog entry x"
    assert repo._catalog_entries() == []


def test_prune_removal_tolerates_a_manifest_already_gone(repo: Repository) -> None:
    pid = backup(repo, [block(1)])
    repo._manifest_path(pid).unlink()
    with repo._txn():
        repo._drop_points([pid])
    assert repo.points() == []


def test_manifest_where_is_the_file(repo: Repository) -> None:
    assert repo._manifest_where("p-1") == str(repo.path / "points" / "p-1.json")


# --- chunks ---------------------------------------------------------------------------------
def test_chunk_state_there_quarantined_missing(repo: Repository) -> None:
    backup(repo, [block(1), block(2)])
    d1, d2 = digest(block(1)), digest(block(2))
    assert repo._chunk_state(d1) is None
    repo._quarantine_chunk(d2)
    assert repo._chunk_state(d2) == "quarantined"
    assert repo.chunk_path(d2).with_name(d2 + ".bad").is_file()
    assert repo._chunk_state("0" * 64) == "missing"
    repo._quarantine_chunk("0" * 64)  # nothing there: quiet
    assert repo._chunk_state("0" * 64) == "missing"


def test_a_missing_chunk_is_named_by_its_digest(repo: Repository) -> None:
    """Restore and verify read which chunk failed from the error, to name and heal it."""
    backup(repo, [block(1)])
    d = digest(block(1))
    repo.chunk_path(d).unlink()
    with pytest.raises(ChunkError) as e:
        repo.read_chunk(d)
    assert (str(e.value), e.value.digest, e.value.problem) == (f"chunk {d} is missing", d, "missing")


def test_an_unreadable_chunk_is_named_by_its_digest_and_why(repo: Repository) -> None:
    backup(repo, [block(1)])
    d = digest(block(1))
    path = repo.chunk_path(d)
    path.unlink()
    path.mkdir()        # opening it fails, but not with "no such file"
    with pytest.raises(ChunkError) as e:
        repo.read_chunk(d)
    assert (str(e.value), e.value.digest, e.value.problem) == (f"chunk {d} unreadable: Is a directory", d, "missing")


def test_a_lease_that_cannot_be_written_refuses_the_point(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(path: Path, data: bytes) -> None:
        raise StoreError(f"cannot write {path.name}: No space left on device")
    monkeypatch.setattr(repository, "atomic_write_bytes", full)
    with pytest.raises(RepoError) as e:
        new_point(repo)
    assert str(e.value).startswith("cannot record the writer lease: cannot write ")
    assert str(e.value).endswith(".json: No space left on device")


def test_a_writer_killed_between_its_two_lease_writes_leaves_a_readable_lease(
        repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease is written, then written again with its file's mtime as its start: a crash between the
    two leaves the first, which already names the point (gc reads it as a writer's lease)."""
    real, calls = repository.atomic_write_bytes, []

    def dies_second(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt     # the process stops here
        real(path, data)
    monkeypatch.setattr(repository, "atomic_write_bytes", dies_second)
    with pytest.raises(KeyboardInterrupt):
        new_point(repo)
    lease = json.loads(calls[0].read_bytes())
    assert lease["point_id"] == calls[0].stem and lease["base_point_ids"] == []


def test_store_chunk_stores_then_reuses_with_exact_sizes(repo: Repository) -> None:
    data = block(7)
    d = digest(data)
    outcome, size = repo._store_chunk(d, data)
    assert outcome == "stored"
    raw = repo.chunk_path(d).read_bytes()
    assert raw[:4] == b"FCZ1" and size == len(raw) and 4 < size < 100
    assert repo.chunk_path(d) == repo.path / "chunks" / d[:2] / d
    assert repo.chunk_path(d).stat().st_mode & 0o777 == 0o600
    old = time.time() - 7200
    os.utime(repo.chunk_path(d), (old, old))
    assert repo._store_chunk(d, data) == ("reused", 0)
    assert repo.chunk_path(d).stat().st_mtime > old + 3600  # refreshed for gc
    rnd = noise(1)
    outcome, size = repo._store_chunk(digest(rnd), rnd)
    assert outcome == "stored" and size == repo.chunk_path(digest(rnd)).stat().st_size > BS
    assert repo.read_chunk(d) == data and repo.read_chunk(digest(rnd)) == rnd
    assert d[:2] != digest(rnd)[:2]  # other shards, so the listing is this chunk alone, no temp file
    assert [p.name for p in repo.chunk_path(d).parent.iterdir()] == [d]


def test_store_chunk_buffered_when_o_direct_is_refused(repo: Repository, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    real_open = os.open

    def no_direct(path, flags, mode=0o777, **kw):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode, **kw)
    monkeypatch.setattr(os, "open", no_direct)
    caplog.set_level("INFO", logger="fctui.repo")
    data, rnd = block(9), noise(2)
    assert repo._store_chunk(digest(data), data)[0] == "stored"
    assert repo._store_chunk(digest(rnd), rnd) == ("stored", repo.chunk_path(digest(rnd)).stat().st_size)
    assert repo._direct_io is False
    # this repository's records only: a thread an earlier test left winding down may log meanwhile
    assert [r.getMessage() for r in caplog.records if str(repo.path) in r.getMessage()] == [
        f"repository {repo.path}: the filesystem refuses O_DIRECT; writing chunks buffered"]
    assert repo.read_chunk(digest(data)) == data and repo.read_chunk(digest(rnd)) == rnd
    assert repo.chunk_path(digest(rnd)).stat().st_mode & 0o777 == 0o600
    assert digest(data)[:2] != digest(rnd)[:2]  # other shards, so the listing is this chunk alone, no temp file
    assert [p.name for p in repo.chunk_path(digest(rnd)).parent.iterdir()] == [digest(rnd)]


def test_store_chunk_full_disk_and_other_errors(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    data = block(3)
    d = digest(data)
    real_replace = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(RepoFullError) as e:
        repo._store_chunk(d, data)
    assert str(e.value) == f"repository {repo.path} is full: cannot write chunk {d[:12]} (No space left on device)"
    assert e.value.path == str(repo.path)
    assert list(repo.chunk_path(d).parent.iterdir()) == []  # the temp file went

    def eio(src, dst):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "replace", eio)
    with pytest.raises(RepoError) as e2:
        repo._store_chunk(d, data)
    assert not isinstance(e2.value, RepoFullError)
    assert str(e2.value) == f"cannot write chunk {repo.chunk_path(d)}: Input/output error"
    monkeypatch.setattr(os, "replace", real_replace)

    def eacces(path, *a, **k):
        raise OSError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(os, "utime", eacces)
    with pytest.raises(RepoError) as e3:
        repo._store_chunk(d, data)
    assert str(e3.value) == f"cannot access chunk {repo.chunk_path(d)}: Permission denied"


def test_disk_usage_counts_chunk_files_and_bytes(repo: Repository) -> None:
    assert repo.disk_usage() == (0, 0)
    rnd1, rnd2 = noise(3), noise(4, 100)
    repo._store_chunk(digest(rnd1), rnd1)
    repo._store_chunk(digest(rnd2), rnd2)
    (repo.chunk_path(digest(rnd1)).parent / "stray.tmp").write_bytes(b"12345")
    (repo.chunks_dir / "file-not-shard").write_bytes(b"1")
    sizes = [repo.chunk_path(digest(b)).stat().st_size for b in (rnd1, rnd2)]
    assert repo.disk_usage() == (2, sizes[0] + sizes[1])


def test_disk_usage_skips_a_chunk_gone_between_listing_and_stat(repo: Repository,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rnd1, rnd2 = noise(5), noise(6)
    repo._store_chunk(digest(rnd1), rnd1)
    repo._store_chunk(digest(rnd2), rnd2)
    real = os.scandir
    gone = repo.chunk_path(digest(rnd1))

    def racing(p="."):
        if isinstance(p, int) or Path(p) != gone.parent:
            return real(p)
        entries = list(real(p))
        gone.unlink()  # gc took it right after the listing
        return iter(entries)
    size2 = repo.chunk_path(digest(rnd2)).stat().st_size
    monkeypatch.setattr(os, "scandir", racing)
    assert repo.disk_usage() == (2, size2)


# --- gc -------------------------------------------------------------------------------------
def test_gc_report_counts_exactly(repo: Repository, clock: GcClock) -> None:
    keep = backup(repo, [block(1), block(2)])
    gone = backup(repo, [block(2), block(3), block(4)])
    repo.forget(gone)
    bad_ref = digest(block(1))
    write_lease(repo, "dead-1", DEAD_PID)
    write_lease(repo, "dead-2", DEAD_PID)
    (repo.pending_dir / "junk.json").write_text("{nope")
    (repo.points_dir / "orphan.json").write_text("{}")
    (repo.points_dir / ".hidden.json").write_text("{}")
    (repo.points_dir / "keepme.txt").write_text("x")
    tmps = [repo.points_dir / f".x.json.{DEAD_PID}.0badc0de.tmp", repo.pending_dir / f".y.json.{DEAD_PID}.0badc0de.tmp",
            repo.path / f".z.json.{DEAD_PID}.0badc0de.tmp", repo.chunks_dir / "aa" / f".q.{DEAD_PID}.0badc0de.tmp"]
    for t in tmps:
        t.write_bytes(b"t")
    (repo.chunks_dir / "0-not-a-shard").write_bytes(b"x")  # sorts before shard 00
    (repo.chunks_dir / "aa" / "README").write_bytes(b"x")
    unref_bad = "e" * 64 + ".bad"
    (repo.chunks_dir / "ee" / unref_bad).write_bytes(b"x")
    (repo.chunks_dir / bad_ref[:2] / (bad_ref + ".bad")).write_bytes(b"x")
    sizes = sum(repo.chunk_path(digest(block(t))).stat().st_size for t in (3, 4))
    clock.advance()
    r = repo.gc()
    assert (r.leases_removed, r.live_leases, r.leases_unreadable) == (2, 0, ["junk.json"])
    assert (r.manifests_removed, r.temp_removed) == (2, 4)  # orphan.json and the forgotten point's
    assert (r.chunks_referenced, r.chunks_total, r.chunks_removed, r.chunks_kept_recent) == (2, 4, 2, 0)
    assert r.bytes_removed == sizes
    assert sorted(p.name for p in repo.points_dir.iterdir()) == [".hidden.json", f"{keep}.json", "keepme.txt"]
    assert not any(t.exists() for t in tmps)
    assert not (repo.chunks_dir / "ee" / unref_bad).exists()
    assert (repo.chunks_dir / bad_ref[:2] / (bad_ref + ".bad")).exists()
    assert (repo.chunks_dir / "aa" / "README").exists() and (repo.chunks_dir / "0-not-a-shard").exists()
    assert repo.read_chunk(digest(block(1))) == block(1) and repo.read_chunk(digest(block(2))) == block(2)
    assert repo._chunk_state(digest(block(3))) == "missing"
    assert (repo.path / "gc.marker").is_file()


def test_gc_keeps_chunks_as_new_as_its_clock_to_the_nanosecond(tmp_path: Path) -> None:
    now = [1_000_000_000.0]  # exact in binary: gc's cutoff is 10**18 ns
    repo = Repository.open(tmp_path / "r", clock=lambda: now[0])
    pid = backup(repo, [block(1), block(2), block(3)])
    repo.forget(pid)
    at = {1: 10**18, 2: 10**18 - 1, 3: 10**18 + 10**9 - 1}
    for t, ns in at.items():
        os.utime(repo.chunk_path(digest(block(t))), ns=(ns, ns))
    r = repo.gc()
    assert (r.chunks_total, r.chunks_kept_recent, r.chunks_removed, r.manifests_removed) == (3, 2, 1, 1)
    assert [repo._chunk_state(digest(block(t))) for t in (1, 2, 3)] == [None, "missing", None]
    now[0] += 1.0
    r = repo.gc()
    assert (r.chunks_total, r.chunks_kept_recent, r.chunks_removed) == (2, 0, 2)
    assert repo.disk_usage() == (0, 0)


def test_gc_without_a_clock_uses_the_marker_mtime(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "r")
    pid = backup(repo, [block(1)])
    repo.forget(pid)
    old = time.time() - 7200
    for c in repo.chunks_dir.glob("*/*"):
        os.utime(c, (old, old))
    r = repo.gc()
    assert (r.chunks_total, r.chunks_removed) == (1, 1)


def test_gc_keeps_what_a_live_writer_uses(repo: Repository, clock: GcClock) -> None:
    base = backup(repo, [block(1)])
    other = backup(repo, [block(5)])
    pw = repo.new_point(vm_urn="urn:sites:1:vms:i-1", vm_name="vm1", job_id="job-1", kind="cbt",
                        vm_config={}, snapshot_urn="urn:snap:1", created=time.time())
    pw.add_disk(**{**disk_args(size=BS), "base_point_id": base})
    repo.forget(base)
    repo.forget(other)
    # The writer's own manifest (a crashed commit's) names a chunk only it holds.
    own = noise(7)
    repo._store_chunk(digest(own), own)
    (repo.points_dir / f"{pw.point_id}.json").write_text(json.dumps(
        {"disks": [{"volume_urn": "urn:vol:9", "blocks": [[0, digest(own)]]}]}))
    write_lease(repo, "0-first", os.getpid())  # another live writer, sorted first, with no manifest yet
    assert "0-first" < min(base, pw.point_id)
    old = time.time() - 7200
    for c in repo.chunks_dir.glob("*/*"):
        os.utime(c, (old, old))
    clock.advance()
    r = repo.gc()
    assert (r.live_leases, r.leases_removed, r.manifests_removed) == (2, 0, 1)
    assert (r.chunks_referenced, r.chunks_total, r.chunks_removed) == (2, 3, 1)
    assert sorted(p.name for p in repo.points_dir.iterdir()) == sorted([f"{base}.json", f"{pw.point_id}.json"])
    assert repo.read_chunk(digest(block(1))) == block(1) and repo.read_chunk(digest(own)) == own
    assert repo._chunk_state(digest(block(5))) == "missing"
    pw.abort()


def test_gc_cutoff_is_the_oldest_live_lease_start(repo: Repository, clock: GcClock) -> None:
    pid = backup(repo, [block(1)])
    repo.forget(pid)
    pw = repo.new_point(vm_urn="urn:sites:1:vms:i-1", vm_name="vm1", job_id="job-1", kind="cbt",
                        vm_config={}, snapshot_urn="urn:snap:1", created=time.time())
    lease = json.loads((repo.pending_dir / f"{pw.point_id}.json").read_text())
    chunk = repo.chunk_path(digest(block(1)))
    t = lease["started_ns"]
    os.utime(chunk, ns=(t, t))  # written at the lease's start: kept
    clock.advance()
    r = repo.gc()
    assert (r.chunks_kept_recent, r.chunks_removed) == (1, 0)
    os.utime(chunk, ns=(t - 1, t - 1))
    r = repo.gc()
    assert (r.chunks_kept_recent, r.chunks_removed) == (0, 1)
    pw.abort()


def test_gc_puts_back_a_dead_gcs_trash_and_leaves_a_live_ones(repo: Repository, clock: GcClock) -> None:
    pid = backup(repo, [block(1), block(2)])
    d1, d2 = digest(block(1)), digest(block(2))
    p1, p2 = repo.chunk_path(d1), repo.chunk_path(d2)
    dead = p1.with_name(f".{d1}.{DEAD_PID}.0badc0de.gc")
    os.rename(p1, dead)
    live = p2.with_name(f".{d2}.{os.getpid()}.0badc0de.gc")
    os.rename(p2, live)
    r = repo.gc()
    assert p1.is_file() and not dead.exists()
    assert live.exists() and not p2.exists()
    assert r.chunks_total == 0 or r.chunks_total == 1
    assert repo.points()[0].id == pid


def test_restore_trash_cases(tmp_path: Path) -> None:
    d = "a" * 64
    final = tmp_path / d
    dup = tmp_path / f".{d}.{DEAD_PID}.0badc0de.gc"
    final.write_bytes(b"new")
    dup.write_bytes(b"old")
    Repository._restore_trash(dup)  # the chunk was written again meanwhile: the trash goes
    assert final.read_bytes() == b"new" and not dup.exists()
    odd = tmp_path / "foo.gc"
    odd.write_bytes(b"x")
    Repository._restore_trash(odd)  # not gc's name: left alone
    assert odd.exists()
    Repository._restore_trash(tmp_path / f".{'b' * 64}.{DEAD_PID}.0badc0de.gc")  # gone already: quiet
    assert not (tmp_path / ("b" * 64)).exists()


def test_collect_chunk_trash_name_is_one_restore_trash_recognises(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    d = "c" * 64
    chunk = tmp_path / d
    chunk.write_bytes(b"12345")
    old = time.time() - 7200
    os.utime(chunk, (old, old))
    names: list[str] = []
    real = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (names.append(Path(b).name), real(a, b))[1])
    assert Repository._collect_chunk(chunk, time.time_ns()) == 5
    assert len(names) == 1 and re.fullmatch(rf"\.{d}\.{os.getpid()}\.[0-9a-f]{{8}}\.gc", names[0])
    assert list(tmp_path.iterdir()) == []


# --- the object's state ---------------------------------------------------------------------
def test_a_second_repository_object_sees_the_firsts_catalog_changes(tmp_path: Path) -> None:
    one = Repository.open(tmp_path / "r")
    two = Repository.open(tmp_path / "r")
    pid = backup(one, [block(1)])
    assert two._catalog_has(pid) and two._find_entry(pid)["id"] == pid  # type: ignore[index]
    one.forget(pid)
    assert not two._catalog_has(pid) and two._find_entry(pid) is None  # no stale query cache


def test_a_transaction_holds_the_lock_file_against_another_object(tmp_path: Path) -> None:
    from fctui.repo.errors import RepoBusyError
    one = Repository.open(tmp_path / "r")
    two = Repository.open(tmp_path / "r")
    with one._txn():
        with pytest.raises(RepoBusyError):
            with two._txn(timeout=0.05):
                pass
    with two._txn(timeout=0.05):
        pass


def test_open_does_not_wait_long_for_a_busy_repository(tmp_path: Path) -> None:
    one = Repository.open(tmp_path / "r")
    write_lease(one, "ghost", DEAD_PID)
    with one._txn():
        t0 = time.monotonic()
        Repository.open(tmp_path / "r")  # recovery skipped: someone else is in a transaction
        assert time.monotonic() - t0 < 10.0  # 0.5 s budget; LOCK_TIMEOUT (30 s) would be far over
    assert (one.pending_dir / "ghost.json").exists()


def test_chunks_are_first_written_with_o_direct(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT here")
    flags_seen: list[int] = []
    real_open = os.open

    def spy(path, flags, mode=0o777, **kw):
        flags_seen.append(flags)
        return real_open(path, flags, mode, **kw)
    monkeypatch.setattr(os, "open", spy)
    data = block(11)
    repo._store_chunk(digest(data), data)
    assert flags_seen and flags_seen[0] & os.O_DIRECT


def test_store_chunk_full_before_any_temp_file_exists(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(path, flags, mode=0o777, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "open", full)
    data = block(4)
    with pytest.raises(RepoFullError) as e:
        repo._store_chunk(digest(data), data)
    assert str(e.value) == (f"repository {repo.path} is full: cannot write chunk {digest(data)[:12]} "
                            "(No space left on device)")
    assert list(repo.chunk_path(digest(data)).parent.iterdir()) == []


def test_gc_in_a_read_only_repository_says_so(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open, real_utime = os.open, os.utime

    def ro_open(path, flags, mode=0o777, **kw):
        if str(path).endswith("gc.marker"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, mode, **kw)

    def ro_utime(path, *a, **kw):
        if str(path).endswith("gc.marker"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_utime(path, *a, **kw)
    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "utime", ro_utime)
    with pytest.raises(RepoError) as e:
        repo.gc()
    assert str(e.value) == f"cannot write in {repo.path}: Read-only file system"


def test_sync_chunks_syncs_the_unsynced_and_names_a_vanished_one(repo: Repository) -> None:
    data = block(5)
    d = digest(data)
    repo._store_chunk(d, data)
    repo._sync_chunks(set())
    repo._sync_chunks({d})
    missing = "ab" + "0" * 62
    repo._sync_chunks({d, missing}, already=frozenset({missing}))  # already synced: only its shard dir
    with pytest.raises(RepoError) as e:
        repo._sync_chunks({d, missing})
    assert str(e.value) == f"chunk {missing} vanished before commit"


def test_write_manifest_full_and_other_failures(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    repo._write_manifest("p-1", b'{"x": 1}')
    assert (repo.points_dir / "p-1.json").read_bytes() == b'{"x": 1}'
    real_open = os.open
    err = [errno.ENOSPC, "No space left on device"]

    def failing(path, flags, mode=0o777, **kw):
        if Path(path).parent == repo.points_dir:
            raise OSError(*err)
        return real_open(path, flags, mode, **kw)
    monkeypatch.setattr(os, "open", failing)
    with pytest.raises(RepoFullError) as e:
        repo._write_manifest("p-2", b"{}")
    assert str(e.value) == f"repository {repo.path} is full: cannot write the manifest of restore point p-2"
    assert e.value.path == str(repo.path)
    err[:] = [errno.EIO, "Input/output error"]
    with pytest.raises(RepoError) as e2:
        repo._write_manifest("p-3", b"{}")
    assert not isinstance(e2.value, RepoFullError)
    assert str(e2.value) == f"cannot write manifest: cannot write {repo.points_dir / 'p-3.json'}: Input/output error"


def test_a_large_incompressible_block_is_stored_raw(repo: Repository) -> None:
    rnd = noise(8, 160 * 1024)  # above the 128 KiB sampling threshold
    d = digest(rnd)
    assert repo._store_chunk(d, rnd) == ("stored", len(rnd) + 4)
    assert repo.chunk_path(d).read_bytes() == b"FCR1" + rnd
    assert repo.read_chunk(d) == rnd


def test_gc_removing_an_orphan_manifest_drops_it_from_the_cache(tmp_path: Path, clock: GcClock) -> None:
    one = Repository.open(tmp_path / "r", clock=clock)
    pid = backup(one, [block(1)])
    assert one._load_manifest(pid)["maps"]  # cached by this object
    Repository.open(tmp_path / "r").forget(pid)  # another object (process) forgets it
    assert one.gc().manifests_removed == 1
    with pytest.raises(ManifestError):
        one._load_manifest(pid)


def test_the_catalog_file_keeps_entries_in_its_points_table(tmp_path: Path) -> None:
    Repository.open(tmp_path / "r")
    (tmp_path / "r" / "catalog.json").write_text(json.dumps({"points": {"1": {"id": "x"}}}))
    assert Repository.open(tmp_path / "r")._catalog_entries() == [(1, {"id": "x"})]


# --- a writer that gives up ------------------------------------------------------------------

def open_point(repo: Repository):  # noqa: ANN201 - a PointWriter with one disk of two blocks put
    pw = repo.new_point(vm_urn="urn:sites:1:vms:i-1", vm_name="vm1", job_id="job-1", kind="cbt", vm_config={},
                        snapshot_urn="urn:snap:1", created=time.time())
    dw = pw.add_disk(**disk_args())
    dw.put_block(0, block(1))
    dw.put_block(1, block(2))
    return pw


def test_a_commit_refused_at_the_catalog_removes_its_manifest_and_lease(repo: Repository,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pw = open_point(repo)
    real_replace = os.replace

    def catalog_full(src, dst):  # the manifest and chunks are written; the catalog's replace finds no room
        if Path(dst) == repo.catalog_path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", catalog_full)
    with pytest.raises(RepoError):
        pw.commit()
    monkeypatch.setattr(os, "replace", real_replace)
    assert not repo._manifest_path(pw.point_id).exists()
    assert not (repo.pending_dir / f"{pw.point_id}.json").exists()
    assert repo.points() == [] and list(repo.points_dir.iterdir()) == []


def test_a_commit_failing_after_its_catalog_entry_keeps_the_manifest(repo: Repository,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalog never names a point without its manifest, even when the commit fails afterwards."""
    pw = open_point(repo)
    lease = repo.pending_dir / f"{pw.point_id}.json"
    real_unlink = os.unlink
    failed: list[str] = []

    def eio_once(path, *a, **k):  # the lease's removal right after the catalog insert fails once
        if Path(path) == lease and not failed:
            failed.append(str(path))
            raise OSError(errno.EIO, "Input/output error")
        return real_unlink(path, *a, **k)
    monkeypatch.setattr(os, "unlink", eio_once)
    with pytest.raises(OSError):
        pw.commit()
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert failed == [str(lease)]
    assert [p.id for p in repo.points()] == [pw.point_id]
    assert repo._manifest_path(pw.point_id).exists()
    reader = repo.open_disk(pw.point_id, "urn:vol:1")
    assert [reader.read_block(i) for i in range(2)] == [block(1), block(2)]
    assert not lease.exists()  # abort removed it


def test_abort_after_the_lease_is_gone_is_quiet(repo: Repository) -> None:
    pw = open_point(repo)
    (repo.pending_dir / f"{pw.point_id}.json").unlink()  # e.g. dropped as a dead writer's
    pw.abort()
    assert repo.points() == [] and list(repo.pending_dir.iterdir()) == []


def test_an_abort_never_hides_the_error_that_caused_it(repo: Repository) -> None:
    with pytest.raises(ValueError, match="the reader died"):
        with open_point(repo):
            repo.catalog_path.write_text("not json")  # abort cannot read the catalog now
            raise ValueError("the reader died")


def test_an_incremental_names_a_base_chunk_it_cannot_stat(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    base = backup(repo, [block(1), block(2)])
    d = digest(block(1))
    real_stat = os.stat

    def eacces(path, *a, **k):
        if Path(path) == repo.chunk_path(d):
            raise OSError(errno.EACCES, "Permission denied")
        return real_stat(path, *a, **k)
    pw = repo.new_point(vm_urn="urn:sites:1:vms:i-1", vm_name="vm1", job_id="job-2", kind="cbt", vm_config={},
                        snapshot_urn="urn:snap:2", created=time.time())
    monkeypatch.setattr(os, "stat", eacces)
    with pytest.raises(RepoError) as e:
        pw.add_disk(**dict(disk_args(), base_point_id=base))
    monkeypatch.setattr(os, "stat", real_stat)
    pw.abort()
    assert str(e.value) == f"cannot access chunk {repo.chunk_path(d)}: Permission denied"


def same_shard_blocks(n: int) -> list[bytes]:
    """``n`` distinct blocks whose chunks share one shard directory (the first two hex digits)."""
    by_shard: dict[str, list[bytes]] = {}
    i = 0
    while True:
        b = i.to_bytes(4, "big") * (BS // 4)
        group = by_shard.setdefault(digest(b)[:2], [])
        group.append(b)
        if len(group) == n:
            return group
        i += 1


def test_the_sweep_goes_on_past_every_entry_it_skips(repo: Repository, clock: GcClock) -> None:
    """A stray file among the shards, and in a shard foreign files, quarantined copies and a live gc's
    trash are each dealt with and passed: the sweep still reaches every collectible chunk after them
    (eight of each kind beside four chunks, so a sweep that stopped at the first would miss a chunk)."""
    blocks = same_shard_blocks(5)
    keep = backup(repo, blocks[:1])
    gone = backup(repo, blocks[1:])
    repo.forget(gone)
    shard = repo.chunks_dir / digest(blocks[0])[:2]
    ref = digest(blocks[0])
    (repo.chunks_dir / "0").write_bytes(b"x")                      # sorts before every shard
    for i in range(8):
        (shard / f"foreign-{i}").write_bytes(b"x")
        (shard / f".{ref}.{os.getpid()}.{i:08x}.gc").write_bytes(b"x")   # this process: a live gc's
        (shard / f"{ref[:2]}{'f' * 61}{i}.bad").write_bytes(b"x")   # nobody's: deleted
    clock.advance()
    r = repo.gc()
    assert (r.chunks_total, r.chunks_removed, r.chunks_referenced) == (5, 4, 1)
    assert [repo._chunk_state(digest(b)) for b in blocks[1:]] == ["missing"] * 4
    assert repo.read_chunk(ref) == blocks[0] and repo.point(keep).id == keep
    assert not any(shard.glob("*.bad")) and len(list(shard.glob("foreign-*"))) == 8


def test_gc_tolerates_files_another_process_removes_under_it(repo: Repository, clock: GcClock,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An orphan manifest and an unreferenced quarantined copy vanish between gc's listing and its
    unlink (another gc, an operator): gc goes on and finishes its sweep."""
    keep = backup(repo, [block(1)])
    gone = backup(repo, [block(2)])
    repo.forget(gone)
    orphan = repo.points_dir / "orphan.json"
    orphan.write_text("{}")
    bad = repo.chunks_dir / "ee" / ("e" * 64 + ".bad")
    bad.write_bytes(b"x")
    real_unlink = os.unlink
    raced: list[str] = []

    def removed_first(path, *a, **k):
        if Path(path) in (orphan, bad):
            real_unlink(path)              # the other process was quicker
            raced.append(Path(path).name)
        return real_unlink(path, *a, **k)
    monkeypatch.setattr(os, "unlink", removed_first)
    clock.advance()
    r = repo.gc()
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert sorted(raced) == sorted(["orphan.json", bad.name])
    assert (r.manifests_removed, r.chunks_removed) == (2, 1)   # the forgotten point's manifest and chunk too
    assert not orphan.exists() and not bad.exists() and repo._chunk_state(digest(block(2))) == "missing"
    assert repo.read_chunk(digest(block(1))) == block(1) and repo.point(keep).id == keep


def test_gc_counts_every_chunk_it_keeps_and_sweeps_on_past_them(repo: Repository, clock: GcClock,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """In one shard: eight chunks newer than gc's start, two that a writer reuses between gc's look and
    its rename (gc puts them back), two to collect. Every kept one is counted once, and the sweep does
    not stop at the first one it keeps."""
    blocks = same_shard_blocks(12)
    gone = backup(repo, blocks)
    repo.forget(gone)
    clock.advance()
    future = int((clock() + GRACE_S) * 1e9)
    recent, raced, old = blocks[:8], blocks[8:10], blocks[10:]
    for b in recent:
        os.utime(repo.chunk_path(digest(b)), ns=(future, future))
    raced_paths = {str(repo.chunk_path(digest(b))) for b in raced}
    real_rename = os.rename

    def reused_meanwhile(src, dst, *a, **k):
        if str(src) in raced_paths:
            os.utime(src, ns=(future, future))   # a writer's put_block touched it just now
        return real_rename(src, dst, *a, **k)
    monkeypatch.setattr(os, "rename", reused_meanwhile)
    r = repo.gc()
    monkeypatch.setattr(os, "rename", real_rename)
    assert (r.chunks_total, r.chunks_kept_recent, r.chunks_removed) == (12, 10, 2)
    assert [repo._chunk_state(digest(b)) for b in recent + raced] == [None] * 10
    assert [repo._chunk_state(digest(b)) for b in old] == ["missing"] * 2


def test_gc_sweeps_on_past_a_chunk_that_vanishes_before_its_stat(repo: Repository, clock: GcClock,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk another process removes between gc's listing of its shard and its stat is passed over;
    the rest of the shard is still swept (not left for the next gc)."""
    blocks = same_shard_blocks(3)
    gone = backup(repo, blocks)
    repo.forget(gone)
    clock.advance()
    shard = repo.chunk_path(digest(blocks[0])).parent
    real_scandir = os.scandir
    vanished: list[str] = []

    class Listed:
        """A shard's directory entry whose first stat finds its file gone (another process was quicker)."""
        def __init__(self, entry: os.DirEntry) -> None:
            self._entry, self.name, self.path = entry, entry.name, entry.path

        def is_dir(self) -> bool:
            return self._entry.is_dir()

        def stat(self) -> os.stat_result:
            if not vanished:
                os.unlink(self.path)
                vanished.append(self.name)
            return self._entry.stat()

    def one_removed_meanwhile(path=".", *a, **k):
        entries = list(real_scandir(path, *a, **k))
        return iter([Listed(e) for e in entries] if Path(path) == shard else entries)
    monkeypatch.setattr(os, "scandir", one_removed_meanwhile)
    r = repo.gc()
    monkeypatch.setattr(os, "scandir", real_scandir)
    assert len(vanished) == 1
    assert (r.chunks_total, r.chunks_removed, r.chunks_kept_recent) == (3, 2, 0)
    assert [repo._chunk_state(digest(b)) for b in blocks] == ["missing"] * 3
