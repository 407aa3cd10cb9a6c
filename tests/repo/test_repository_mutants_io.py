"""Writing and reading restore points exactly, where mutation testing found PointWriter, DiskWriter and
DiskReader unguarded (README, Mutation testing): the counters and disk record a backup reports, the
manifest and lease on disk, every refusal's message, the point's life (open, committing, committed,
aborted), incremental healing, when chunks are fsynced (in the background; a failed fsync fails the
commit; abort stops them), and how far a reader reads ahead.

Expected values are worked out here (block sizes, SHA-256 of the bytes put, chunk sizes read from the
files), not read back from the code under test. System calls (os.fsync, os.replace) are faked only to
observe or to simulate a concurrent caller.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import socket
import threading
from array import array
from collections import Counter
from pathlib import Path

import pytest
import zstandard

import fctui.repo.repository as repository
from fctui.repo import RepoError, Repository
from fctui.repo.errors import ChunkError, ManifestError, RepoFullError
from fctui.repo.model import DiskStats

BS = 4096
VOL = "urn:vol:1"
SIZE = 4 * BS + 100  # five blocks, the last one 100 bytes
FSYNC_THREADS = "fctui-fsync"


def rb(seed: int, n: int = BS) -> bytes:
    return random.Random(seed).randbytes(n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def start(repo: Repository):  # type: ignore[no-untyped-def]
    return repo.new_point(vm_urn="urn:sites:1:vms:i-1", vm_name="vm1", job_id="job-1", kind="cbt",
                          vm_config={"cpu": 2}, snapshot_urn="urn:snap:1", created=1_780_000_000.0)


def disk_kw(**over: object) -> dict:
    kw = dict(volume_urn=VOL, disk_name="d0", sequence_num=1, pci_type="VIRTIO", size_bytes=SIZE,
              block_size=BS, storage_type="LOCALPOME", datastore_urn="urn:ds:1", cbt={"chgID": "3"},
              base_point_id=None)
    kw.update(over)
    return kw


def chunk(repo: Repository, digest: str) -> Path:
    return repo.path / "chunks" / digest[:2] / digest


def lease_of(repo: Repository, point_id: str) -> dict:
    return json.loads((repo.path / "pending" / f"{point_id}.json").read_bytes())


def message(exc: pytest.ExceptionInfo) -> str:
    return str(exc.value)


def fsync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(FSYNC_THREADS)]


def settle_fsync_threads() -> None:
    """Let the fsync threads of points aborted by earlier tests (abort does not wait) finish first."""
    for t in fsync_threads():
        t.join(10)


class FsyncLog:
    """os.fsync that records (thread name, path) of every call, then calls the real one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, repo: Repository) -> None:
        self.real = os.fsync
        self.chunks = os.path.realpath(repo.path / "chunks")  # as /proc/self/fd shows it
        self.calls: list[tuple[str, str]] = []
        self.chunk_synced = threading.Event()
        self.before = None  # callable(path) run first, in the calling thread
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if self.before is not None:
            self.before(path)
        self.calls.append((threading.current_thread().name, path))
        self.real(fd)
        if self.is_chunk(path):
            self.chunk_synced.set()

    def is_chunk(self, path: str) -> bool:
        return path.startswith(self.chunks + "/") and len(os.path.basename(path)) == 64

    def chunk_files(self) -> Counter:
        return Counter(os.path.basename(p) for _, p in self.calls if self.is_chunk(p))

    def shard_dirs(self) -> Counter:
        return Counter(os.path.basename(p) for _, p in self.calls
                       if os.path.dirname(p) == self.chunks and len(os.path.basename(p)) == 2)


# --- a full point: outcomes, counters, the disk record, manifest, lease ----------------------------

def test_a_full_point_counts_every_block_and_records_the_disk_exactly(repo: Repository) -> None:
    a, b, tail = rb(1), rb(2), rb(3, 100)
    ha, hb, ht = sha(a), sha(b), sha(tail)
    # proc(5): field 22 (starttime) is the 20th after the parenthesised command name
    proc_start = Path("/proc/self/stat").read_text().rsplit(")", 1)[-1].split()[19]
    with start(repo) as pw:
        lease = lease_of(repo, pw.point_id)
        assert isinstance(lease.pop("started_ns"), int)
        assert lease == {"point_id": pw.point_id, "vm_urn": "urn:sites:1:vms:i-1", "job_id": "job-1",
                         "pid": os.getpid(), "proc_start": proc_start, "host": socket.gethostname(),
                         "base_point_ids": []}
        dw = pw.add_disk(**disk_kw())
        assert (dw.mode, dw.heal_blocks, dw.block_count) == ("full", [], 5)
        outcomes = [dw.put_block(0, a), dw.put_block(1, bytes(BS)), dw.put_block(2, a), dw.put_block(3, b),
                    dw.put_block(4, tail)]
        point = pw.commit()
    assert outcomes == ["stored", "zero", "reused", "stored", "stored"]
    stored = sum(chunk(repo, h).stat().st_size for h in (ha, hb, ht))
    assert dw.stats == DiskStats(bytes_in=4 * BS + 100, bytes_stored=stored, bytes_reused=BS, bytes_zero=BS,
                                 blocks=5, blocks_stored=3, blocks_reused=1, blocks_zero=1)
    disk = {"volume_urn": VOL, "disk_name": "d0", "sequence_num": 1, "pci_type": "VIRTIO", "size_bytes": SIZE,
            "block_size": BS, "storage_type": "LOCALPOME", "datastore_urn": "urn:ds:1", "mode": "full",
            "cbt": {"chgID": "3"}, "bytes_in": 4 * BS + 100, "bytes_stored": stored, "bytes_reused": BS,
            "bytes_zero": BS, "sha256": None, "base_point_id": None, "nonzero_blocks": 4}
    assert [d.to_dict() for d in point.disks] == [disk]
    assert [d.to_dict() for d in repo.point(point.id).disks] == [disk]
    assert list((repo.path / "pending").iterdir()) == []

    raw = (repo.path / "points" / f"{point.id}.json").read_bytes()
    manifest = json.loads(raw)
    assert raw == json.dumps(manifest, separators=(",", ":")).encode()  # compact
    assert manifest["format"] == 1 and manifest["id"] == point.id
    assert manifest["disks"] == [{**disk, "blocks": [[0, ha], [2, ha], [3, hb], [4, ht]]}]

    reader = repo.open_disk(point.id, VOL)
    assert (reader.point_id, reader.volume_urn, reader.size_bytes, reader.block_size, reader.block_count) == (
        point.id, VOL, SIZE, BS, 5)
    assert reader.block_digests() == {0: ha, 2: ha, 3: hb, 4: ht}
    assert [reader.read_block(i) for i in range(5)] == [a, bytes(BS), a, b, tail]


def test_sha256_is_computed_once_then_cached_on_the_reader_and_in_the_catalog(repo: Repository) -> None:
    a, b, tail = rb(1), rb(2), rb(3, 100)
    with start(repo) as pw:
        dw = pw.add_disk(**disk_kw())
        dw.put_block(0, a)
        dw.put_block(3, b)
        point = pw.commit()
    whole = a + bytes(2 * BS) + b + bytes(100)
    assert len(whole) == SIZE and tail
    reader = repo.open_disk(point.id, VOL)
    assert reader.sha256() == sha(whole)
    assert reader.disk.sha256 == sha(whole)
    assert repo.point(point.id).disk(VOL).sha256 == sha(whole)
    shutil.rmtree(repo.path / "chunks")  # from now on no chunk can be read: the answers are cached
    assert reader.sha256() == sha(whole)
    assert repo.open_disk(point.id, VOL).sha256() == sha(whole)


# --- refusals: add_disk, put_block, the point's state ------------------------------------------------

def test_add_disk_refuses_bad_sizes_and_a_second_copy_of_a_disk_by_name(repo: Repository) -> None:
    with start(repo) as pw:
        with pytest.raises(RepoError) as e:
            pw.add_disk(**disk_kw(size_bytes=0))
        assert message(e) == "disk d0: size must be positive"
        with pytest.raises(RepoError) as e:
            pw.add_disk(**disk_kw(size_bytes=-1, disk_name=""))
        assert message(e) == "disk urn:vol:1: size must be positive"
        for bs, name, who in ((0, "d0", "d0"), (1000, "d0", "d0"), (-512, "", VOL), (513, "d0", "d0")):
            with pytest.raises(RepoError) as e:
                pw.add_disk(**disk_kw(block_size=bs, disk_name=name))
            assert message(e) == f"disk {who}: block size must be a positive multiple of 512"
        tiny = pw.add_disk(**disk_kw(volume_urn="urn:vol:tiny", size_bytes=1, block_size=512))
        assert tiny.put_block(0, b"\x07") == "stored"
        second = pw.add_disk(**disk_kw(volume_urn="urn:vol:2", block_size=512))
        assert second.block_count == 33  # 16484 bytes in 512-byte blocks
        with pytest.raises(RepoError) as e:
            pw.add_disk(**disk_kw(volume_urn="urn:vol:tiny"))
        assert message(e) == f"disk urn:vol:tiny is already in restore point {pw.point_id}"
        point = pw.commit()
    assert [d.volume_urn for d in point.disks] == ["urn:vol:tiny", "urn:vol:2"]
    assert repo.open_disk(point.id, "urn:vol:tiny").read_block(0) == b"\x07"


def test_put_block_refuses_a_block_outside_the_disk_or_of_the_wrong_length(repo: Repository) -> None:
    with start(repo) as pw:
        dw = pw.add_disk(**disk_kw())
        for index in (5, -1):
            with pytest.raises(RepoError) as e:
                dw.put_block(index, rb(1))
            assert message(e) == f"block {index} outside disk d0 (0..4)"
        with pytest.raises(RepoError) as e:
            dw.put_block(4, rb(1))
        assert message(e) == "block 4 has 4096 bytes, expected 100"
        with pytest.raises(RepoError) as e:
            dw.put_block(0, rb(1, 100))
        assert message(e) == "block 0 has 100 bytes, expected 4096"
        unnamed = pw.add_disk(**disk_kw(volume_urn="urn:vol:2", disk_name=""))
        with pytest.raises(RepoError) as e:
            unnamed.put_block(9, rb(1))
        assert message(e) == "block 9 outside disk urn:vol:2 (0..4)"
        pw.abort()


def test_put_block_takes_any_bytes_like_object_by_its_bytes(repo: Repository) -> None:
    a, b, c = rb(1), rb(2), rb(3)
    with start(repo) as pw:
        dw = pw.add_disk(**disk_kw())
        assert dw.put_block(0, bytearray(a)) == "stored"
        assert dw.put_block(1, memoryview(b)) == "stored"
        assert dw.put_block(2, array("Q", c)) == "stored"  # 512 items of 8 bytes: one 4096-byte block
        assert dw.put_block(3, bytearray(BS)) == "zero"
        point = pw.commit()
    assert dw.stats.bytes_in == 4 * BS
    reader = repo.open_disk(point.id, VOL)
    assert [reader.read_block(i) for i in range(4)] == [a, b, c, bytes(BS)]


def test_the_counters_add_up_over_repeated_outcomes_and_a_block_put_twice_ends_as_the_last_put(
        repo: Repository) -> None:
    a = rb(1)
    with start(repo) as pw:
        dw = pw.add_disk(**disk_kw())
        outcomes = [dw.put_block(i, a) for i in range(4)] + [dw.put_block(4, bytes(100)), dw.put_block(1, bytes(BS))]
        point = pw.commit()
    assert outcomes == ["stored", "reused", "reused", "reused", "zero", "zero"]
    assert dw.stats == DiskStats(bytes_in=5 * BS + 100, bytes_stored=chunk(repo, sha(a)).stat().st_size,
                                 bytes_reused=3 * BS, bytes_zero=BS + 100, blocks=6, blocks_stored=1,
                                 blocks_reused=3, blocks_zero=2)
    assert point.disks[0].nonzero_blocks == 3
    reader = repo.open_disk(point.id, VOL)
    assert [reader.read_block(i) for i in range(5)] == [a, bytes(BS), a, a, bytes(100)]


def test_a_point_refuses_writes_once_committed_and_abort_after_commit_keeps_it(repo: Repository) -> None:
    a, b = rb(1), rb(2)
    pw = start(repo)
    with pytest.raises(RepoError) as e:
        pw.commit()
    assert message(e) == f"restore point {pw.point_id} has no disks"
    dw = pw.add_disk(**disk_kw())  # still open after that refusal
    dw.put_block(0, a)
    point = pw.commit()
    for call in (pw.commit, lambda: pw.add_disk(**disk_kw(volume_urn="urn:vol:2"))):
        with pytest.raises(RepoError) as e:
            call()
        assert message(e) == f"restore point {point.id} is committed; no more writes"
    pw.abort()  # nothing to give up any more
    with pytest.raises(RepoError) as e:
        pw.add_disk(**disk_kw(volume_urn="urn:vol:2"))
    assert message(e) == f"restore point {point.id} is committed; no more writes"
    with pytest.raises(RepoError) as e:
        dw.put_block(1, b)
    assert message(e) == f"disk urn:vol:1 of point {point.id} is closed"
    assert [p.id for p in repo.points()] == [point.id]
    assert repo.open_disk(point.id, VOL).read_block(0) == a


def test_an_error_inside_the_with_block_aborts_the_point(repo: Repository) -> None:
    with pytest.raises(KeyError):
        with start(repo) as pw:
            dw = pw.add_disk(**disk_kw())
            dw.put_block(0, rb(1))
            assert (repo.path / "pending" / f"{pw.point_id}.json").exists()
            raise KeyError("boom")
    assert list((repo.path / "pending").iterdir()) == []
    assert repo.points() == [] and not (repo.path / "points" / f"{pw.point_id}.json").exists()
    with pytest.raises(RepoError) as e:
        pw.add_disk(**disk_kw(volume_urn="urn:vol:2"))
    assert message(e) == f"restore point {pw.point_id} is aborted; no more writes"
    with pytest.raises(RepoError) as e:
        dw.put_block(1, rb(2))
    assert message(e) == f"disk urn:vol:1 of point {pw.point_id} is closed"
    pw.abort()  # twice: nothing more happens
    assert repo.points() == []


def test_a_disk_closed_while_its_block_is_written_refuses_that_block(repo: Repository,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace
    pw = start(repo)
    dw = pw.add_disk(**disk_kw())

    def replace(src, dst, *args, **kw):  # type: ignore[no-untyped-def]
        if str(dst).startswith(str(repo.path / "chunks")):
            pw.abort()  # another thread gives up the point meanwhile
        return real_replace(src, dst, *args, **kw)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(RepoError) as e:
        dw.put_block(3, rb(1))
    assert message(e) == "disk urn:vol:1 was closed while block 3 was written"
    assert list((repo.path / "pending").iterdir()) == []


def test_a_second_caller_during_commit_is_told_the_point_is_committing(repo: Repository,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    log = FsyncLog(monkeypatch, repo)
    pw = start(repo)
    dw = pw.add_disk(**disk_kw())
    dw.put_block(0, rb(1))
    seen: list[str] = []

    def late_add_disk(path: str) -> None:
        if not seen and threading.current_thread() is threading.main_thread():
            try:
                pw.add_disk(**disk_kw(volume_urn="urn:vol:late"))
                seen.append("accepted")
            except RepoError as exc:
                seen.append(str(exc))

    log.before = late_add_disk
    point = pw.commit()
    assert seen == [f"restore point {point.id} is committing; no more writes"]
    assert [d.volume_urn for d in repo.point(point.id).disks] == [VOL]


# --- incremental points: the base, its checks, healing lost chunks ------------------------------------

def _full(repo: Repository, blocks: dict[int, bytes]):  # type: ignore[no-untyped-def]
    with start(repo) as pw:
        dw = pw.add_disk(**disk_kw())
        for i, data in blocks.items():
            dw.put_block(i, data)
        return pw.commit()


def test_an_incremental_heals_the_blocks_whose_base_chunk_is_gone(repo: Repository) -> None:
    a, b, c, d, tail, b2 = rb(1), rb(2), rb(3), rb(4), rb(5, 100), rb(6)
    full = _full(repo, {0: a, 1: b, 2: c, 3: d, 4: tail})
    chunk(repo, sha(c)).unlink()  # lost by hand
    chunk(repo, sha(d)).rename(chunk(repo, sha(d)).with_name(sha(d) + ".bad"))  # quarantined by verify

    # Not healed: commit refuses, and the point is given up.
    pw = start(repo)
    dw = pw.add_disk(**disk_kw(base_point_id=full.id))
    assert lease_of(repo, pw.point_id)["base_point_ids"] == [full.id]
    assert (dw.mode, dw.heal_blocks) == ("incremental", [2, 3])
    with pytest.raises(RepoError) as e:
        pw.commit()
    assert message(e) == (f"disk d0: 2 block(s) inherited from base point {full.id} have no chunk and were not "
                          f"read again (first: block 2); the point would be damaged")
    assert list((repo.path / "pending").iterdir()) == [] and [p.id for p in repo.points()] == [full.id]
    with pytest.raises(RepoError) as e:
        pw.add_disk(**disk_kw(volume_urn="urn:vol:2"))
    assert message(e) == f"restore point {pw.point_id} is aborted; no more writes"

    # Healed: block 2 read again, block 3 now zero; block 1 changed; 0 and 4 inherited.
    with start(repo) as pw:
        dw = pw.add_disk(**disk_kw(base_point_id=full.id, cbt=None))
        assert dw.heal_blocks == [2, 3]
        assert [dw.put_block(2, c), dw.put_block(3, bytes(BS)), dw.put_block(1, b2)] == ["stored", "zero", "stored"]
        incr = pw.commit()
    stored = chunk(repo, sha(c)).stat().st_size + chunk(repo, sha(b2)).stat().st_size
    assert incr.disks[0].to_dict() == {
        "volume_urn": VOL, "disk_name": "d0", "sequence_num": 1, "pci_type": "VIRTIO", "size_bytes": SIZE,
        "block_size": BS, "storage_type": "LOCALPOME", "datastore_urn": "urn:ds:1", "mode": "incremental",
        "cbt": None, "bytes_in": 3 * BS, "bytes_stored": stored, "bytes_reused": 0, "bytes_zero": BS,
        "sha256": None, "base_point_id": full.id, "nonzero_blocks": 4}
    reader = repo.open_disk(incr.id, VOL)
    assert reader.block_digests() == {0: sha(a), 1: sha(b2), 2: sha(c), 4: sha(tail)}
    assert list(reader.iter_blocks()) == [(0, a), (1, b2), (2, c), (3, None), (4, tail)]


def test_an_incremental_refuses_a_base_without_the_disk_or_of_another_geometry(repo: Repository) -> None:
    full = _full(repo, {0: rb(1)})
    with start(repo) as pw:
        with pytest.raises(RepoError) as e:
            pw.add_disk(**disk_kw(volume_urn="urn:vol:9", base_point_id=full.id))
        assert message(e) == f"base point {full.id} has no disk urn:vol:9; back it up full"
        for change in ({"size_bytes": SIZE + BS}, {"block_size": 512}):
            with pytest.raises(RepoError) as e:
                pw.add_disk(**disk_kw(base_point_id=full.id, **change))
            assert message(e) == (f"disk d0 changed size or block size since base point {full.id}; "
                                  f"an incremental is impossible, back it up full")
        pw.abort()


def test_an_incremental_on_a_base_whose_manifest_is_gone_says_what_to_do(repo: Repository) -> None:
    full = _full(repo, {0: rb(1)})
    manifest = repo.path / "points" / f"{full.id}.json"
    manifest.unlink()
    fresh = Repository.open(repo.path)  # no manifest cached
    with start(fresh) as pw:
        with pytest.raises(ManifestError) as e:
            pw.add_disk(**disk_kw(base_point_id=full.id))
        detail = (f"is missing ({manifest}): no incremental can build on it; `fctui repo verify` shows the "
                  f"damage, `fctui repo forget {full.id}` drops it and the next backup is full")
        assert (e.value.point_id, e.value.problem, e.value.detail) == (full.id, "manifest-missing", detail)
        assert message(e) == f"manifest of restore point {full.id} {detail}"
        pw.abort()


# --- fsync: in the background while writing, failures fail the commit, abort stops them --------------

def test_chunks_are_fsynced_once_in_the_background_and_reused_ones_at_commit(
        repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = rb(1), rb(2)
    settle_fsync_threads()
    log = FsyncLog(monkeypatch, repo)
    _full(repo, {0: x})
    log.calls.clear()
    log.chunk_synced.clear()
    with start(repo) as pw:
        reuse = pw.add_disk(**disk_kw())
        assert reuse.put_block(0, x) == "reused"  # a chunk of another point: maybe a crashed writer's
        new = pw.add_disk(**disk_kw(volume_urn="urn:vol:2"))
        assert new.put_block(1, y) == "stored"
        assert log.chunk_synced.wait(10)  # while the backup still runs
        pw.commit()
    assert fsync_threads() == []  # commit waited for them
    assert log.chunk_files() == Counter({sha(x): 1, sha(y): 1})
    # the chunk it wrote by the background threads, the one it reused by commit
    assert {(name.startswith(FSYNC_THREADS + "_"), os.path.basename(p)) for name, p in log.calls
            if log.is_chunk(p)} == {(True, sha(y)), (False, sha(x))}
    assert log.shard_dirs() == Counter({shard: 1 for shard in {sha(x)[:2], sha(y)[:2]}})


def test_a_failed_background_fsync_fails_the_commit(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    settle_fsync_threads()
    log = FsyncLog(monkeypatch, repo)
    failed: list[str] = []

    def eio_once(path: str) -> None:  # the disk fails once; a retry would (wrongly) succeed
        if log.is_chunk(path) and not failed and threading.current_thread().name.startswith(FSYNC_THREADS):
            failed.append(path)
            raise OSError(errno.EIO, "Input/output error")

    log.before = eio_once
    pw = start(repo)
    dw = pw.add_disk(**disk_kw())
    dw.put_block(0, rb(1))
    with pytest.raises(RepoError) as e:
        pw.commit()
    assert not isinstance(e.value, RepoFullError) and len(failed) == 1
    assert str(e.value) == f"cannot make chunk {failed[0]} durable: Input/output error"
    assert isinstance(e.value.__cause__, OSError) and e.value.__cause__.errno == errno.EIO
    assert repo.points() == [] and list((repo.path / "pending").iterdir()) == []
    assert not (repo.path / "points" / f"{pw.point_id}.json").exists()


def test_a_full_disk_at_fsync_is_a_full_repository(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """Thin or network storage can refuse the space only when the data is made durable."""
    settle_fsync_threads()
    log = FsyncLog(monkeypatch, repo)

    def full(path: str) -> None:
        if log.is_chunk(path):
            raise OSError(errno.ENOSPC, "No space left on device")

    log.before = full
    pw = start(repo)
    dw = pw.add_disk(**disk_kw())
    dw.put_block(0, rb(1))
    with pytest.raises(RepoFullError) as e:
        pw.commit()
    assert e.value.path == str(repo.path)
    assert str(e.value) == (f"repository {repo.path} is full: cannot make chunk {sha(rb(1))[:12]} durable "
                            f"(No space left on device)")
    assert repo.points() == [] and list((repo.path / "pending").iterdir()) == []


def test_abort_neither_waits_for_the_fsyncs_in_progress_nor_runs_the_queued_ones(
        repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    settle_fsync_threads()
    log = FsyncLog(monkeypatch, repo)
    release = threading.Event()
    state = threading.Condition()
    counts = {"entered": 0, "finished": 0}

    def slow_disk(path: str) -> None:
        if not threading.current_thread().name.startswith(FSYNC_THREADS):
            return
        with state:
            counts["entered"] += 1
            state.notify_all()
        if not release.wait(5):  # only a broken abort waits here
            release.set()
        with state:
            counts["finished"] += 1

    log.before = slow_disk
    pw = start(repo)
    dw = pw.add_disk(**disk_kw())
    for i in range(4):
        assert dw.put_block(i, rb(10 + i)) == "stored"
    with state:
        assert state.wait_for(lambda: counts["entered"] == 2, 5)  # two fsync threads busy, two queued
    pw.abort()
    assert counts["finished"] == 0  # abort returned while both still ran
    release.set()
    for t in fsync_threads():
        t.join(10)
    assert counts == {"entered": 2, "finished": 2}  # the queued two were cancelled
    assert list((repo.path / "pending").iterdir()) == []


# --- reading: zeros, damage, ranges, read-ahead ------------------------------------------------------

def test_read_block_gives_zeros_for_blocks_not_stored_and_refuses_outside_the_disk(repo: Repository) -> None:
    a = rb(1)
    point = _full(repo, {1: a})
    reader = repo.open_disk(point.id, VOL)
    assert [reader.read_block(i) for i in range(5)] == [bytes(BS), a, bytes(BS), bytes(BS), bytes(100)]
    for index in (5, -1):
        with pytest.raises(RepoError) as e:
            reader.read_block(index)
        assert message(e) == f"block {index} outside disk urn:vol:1 (0..4)"
    assert reader.sha256() == sha(bytes(BS) + a + bytes(2 * BS + 100))


def test_read_block_checks_the_hash_unless_told_not_to(repo: Repository) -> None:
    a, other = rb(1), rb(2)
    point = _full(repo, {0: a})
    # Same length, valid frame, wrong content: only the hash tells.
    chunk(repo, sha(a)).write_bytes(b"FCZ1" + zstandard.ZstdCompressor().compress(other))
    reader = repo.open_disk(point.id, VOL)
    with pytest.raises(ChunkError) as e:
        reader.read_block(0)
    assert (e.value.problem, message(e)) == ("corrupt", f"chunk {sha(a)} content does not match its hash")
    assert reader.read_block(0, check=False) == other


def test_a_manifest_mapping_the_short_last_block_to_a_full_chunk_is_damage(repo: Repository) -> None:
    a, tail = rb(1), rb(2, 100)
    point = _full(repo, {0: a, 4: tail})
    path = repo.path / "points" / f"{point.id}.json"
    manifest = json.loads(path.read_bytes())
    manifest["disks"][0]["blocks"] = [[0, sha(a)], [4, sha(a)]]
    path.write_text(json.dumps(manifest))
    reader = Repository.open(repo.path).open_disk(point.id, VOL)
    for check in (True, False):
        with pytest.raises(ChunkError) as e:
            reader.read_block(4, check=check)
        assert message(e) == f"chunk {sha(a)} has 4096 bytes, expected 100"


def test_unavailable_blocks_names_each_block_of_a_lost_or_quarantined_chunk(repo: Repository) -> None:
    a, b, c = rb(1), rb(2), rb(3)
    point = _full(repo, {0: a, 1: b, 2: a, 3: c})
    chunk(repo, sha(b)).unlink()
    chunk(repo, sha(a)).rename(chunk(repo, sha(a)).with_name(sha(a) + ".bad"))
    assert repo.open_disk(point.id, VOL).unavailable_blocks() == [
        (0, sha(a), "quarantined"), (1, sha(b), "missing"), (2, sha(a), "quarantined")]


def test_iter_blocks_gives_every_block_in_order_with_none_for_zeros(repo: Repository) -> None:
    a, b, c = rb(1), rb(2), rb(3)
    point = _full(repo, {0: a, 2: b, 3: c})
    reader = repo.open_disk(point.id, VOL)
    expected = [(0, a), (1, None), (2, b), (3, c), (4, None)]
    for readahead in (1, 2, 3, 4, 8):
        assert list(reader.iter_blocks(readahead=readahead)) == expected
    assert list(reader.iter_blocks()) == expected


def test_an_all_zero_disk_iterates_as_zeros_and_hashes_as_zeros(repo: Repository) -> None:
    point = _full(repo, {0: bytes(BS), 4: bytes(100)})
    reader = repo.open_disk(point.id, VOL)
    assert reader.block_digests() == {} and point.disks[0].nonzero_blocks == 0
    for readahead in (1, 4):
        assert list(reader.iter_blocks(readahead=readahead)) == [(i, None) for i in range(5)]
    assert reader.sha256() == sha(bytes(SIZE))


def test_iter_blocks_reads_at_most_twice_readahead_blocks_ahead(repo: Repository,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = {i: rb(20 + i, 512) for i in range(12)}
    with start(repo) as pw:
        dw = pw.add_disk(**disk_kw(size_bytes=12 * 512, block_size=512))
        for i, data in blocks.items():
            dw.put_block(i, data)
        point = pw.commit()
    reader = repo.open_disk(point.id, VOL)
    submitted = [0]

    class CountingPool(repository.ThreadPoolExecutor):  # the stdlib pool, counting reads handed to it
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            submitted[0] += 1
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(repository, "ThreadPoolExecutor", CountingPool)

    def ahead(**kw: int) -> list[int]:
        submitted[0] = 0
        out = []
        for i, data in reader.iter_blocks(**kw):
            assert data == blocks[i]
            out.append(submitted[0])
        return out

    assert ahead(readahead=1) == [0] * 12  # read in the caller's thread, one at a time
    assert ahead(readahead=2) == [min(12, i + 4) for i in range(12)]
    assert ahead(readahead=3) == [min(12, i + 6) for i in range(12)]
    assert ahead() == [min(12, i + 8) for i in range(12)]  # default: 4
