"""What every repository backend shares (``RepositoryBase``) and the chunk helpers under it, pinned where
mutation testing found them unguarded (README, Mutation testing): the short-write and O_DIRECT paths of
the chunk writer, the per-thread zstd contexts and buffers, the chunk decoder's verdicts, a lease's record
and liveness, the catalog read as points and damaged entries, manifest loading and its cache, verify's
report to the last field, and prune's plans. Each expectation is worked out by hand from the data the test
writes; rare system conditions (a short write, O_DIRECT refused, a full disk) are faked at the os call."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import zstandard

from fctui.repo import PointNotFoundError, RepoError, Repository
from fctui.repo import repository as rmod
from fctui.repo.errors import ChunkError, ManifestError, RepoBusyError, RepoDamagedError
from fctui.repo.model import BlockDamage, DamagedEntry
from fctui.repo.repository import Lease
from fctui.repo.retention import Retention

BS = 4096
VM1, VM2 = "urn:sites:1:vms:i-1", "urn:sites:1:vms:i-2"
T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def in_thread(fn: Any) -> Any:
    """Run ``fn`` in a fresh thread (fresh thread-local state) and return its result."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


# ---------------------------------------------------------------- _write_all: a short writev is finished

class _ShortWritev:
    """os.writev that writes only the first ``first`` bytes; os.write that writes at most ``step``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, first: int, step: int = 3) -> None:
        self.real_write = os.write
        self.first, self.step = first, step
        self.calls = 0
        monkeypatch.setattr(os, "writev", self.writev)
        monkeypatch.setattr(os, "write", self.write)

    def writev(self, fd: int, bufs: list[bytes]) -> int:
        return self.real_write(fd, b"".join(bufs)[:self.first])

    def write(self, fd: int, data: Any) -> int:
        self.calls += 1
        return self.real_write(fd, bytes(data[:self.step]))


@pytest.mark.parametrize("first", [0, 2, 5, 7, 10, 15])
def test_write_all_finishes_a_short_writev_wherever_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               first: int) -> None:
    head, body = b"HEAD!", b"0123456789"  # 5 + 10 bytes; the writev stops before, in, at the end of head, ...
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fake = _ShortWritev(monkeypatch, first)
        rmod._write_all(fd, head, body)
    finally:
        monkeypatch.undo()
        os.close(fd)
    assert path.read_bytes() == b"HEAD!0123456789"
    assert fake.calls == math.ceil((15 - first) / 3)  # the rest, 3 bytes per os.write


# ---------------------------------------------------------------- per-thread contexts and cached buffers

def test_zstd_contexts_are_one_per_thread_and_reused() -> None:
    def run() -> tuple[Any, Any]:  # in a fresh thread: nothing cached yet
        c, d = rmod._compressor(), rmod._decompressor()
        assert isinstance(c, zstandard.ZstdCompressor) and isinstance(d, zstandard.ZstdDecompressor)
        assert rmod._compressor() is c and rmod._decompressor() is d
        return c, d
    one, other = in_thread(run), in_thread(run)
    assert one[0] is not other[0] and one[1] is not other[1]
    data = b" ".join(b"w%d" % (i * 7919 % 401) for i in range(20000))
    # Level 1 (ZSTD_LEVEL), not zstd's default level 3: the bytes are those of a level-1 frame.
    assert rmod._compressor().compress(data) == zstandard.ZstdCompressor(level=1).compress(data)
    assert rmod._compressor().compress(data) != zstandard.ZstdCompressor(level=3).compress(data)


def test_zero_blocks_are_cached_per_length() -> None:
    rmod._zero_cache.pop(4097, None)  # as in a fresh process
    z = rmod._zeros(4097)
    assert z == b"\0" * 4097 and rmod._zeros(4097) is z


def test_direct_buffer_is_page_padded_at_least_4_mib_reused_and_replaced_when_too_small() -> None:
    def run() -> None:
        small = rmod._direct_buffer(10)
        assert len(small) == 4 << 20
        assert rmod._direct_buffer(4 << 20) is small  # exactly its size: reused
        big = rmod._direct_buffer((4 << 20) + 1)
        assert len(big) == (4 << 20) + 4096 and big is not small
        assert small.closed and not big.closed  # the outgrown one is released
        assert rmod._direct_buffer(100) is big
        big2 = rmod._direct_buffer(5 * 4096 + (4 << 20) + 3)
        assert len(big2) == (4 << 20) + 6 * 4096
    in_thread(run)


# ---------------------------------------------------------------- _looks_incompressible's sample

SAMPLE = 16 * 1024


def _windows_random(n: int, seed: int = 7) -> bytes:
    """Zeros except the 4 windows the sampler reads: (n - 16 KiB) // 3 apart, 16 KiB each."""
    rng = random.Random(seed)
    data = bytearray(n)
    step = (n - SAMPLE) // 3
    for i in range(4):
        data[i * step:i * step + SAMPLE] = rng.randbytes(SAMPLE)
    return bytes(data)


def test_incompressibility_is_judged_on_the_four_sampled_windows() -> None:
    rng = random.Random(3)
    limit = 4 * SAMPLE * 2  # 128 KiB and less: never sampled, just compressed
    assert rmod._looks_incompressible(rng.randbytes(limit)) is False
    assert rmod._looks_incompressible(rng.randbytes(limit + 1)) is True
    assert rmod._looks_incompressible(bytes(limit + 1)) is False
    # Only the sampled windows are random: judged incompressible, although 3/4 of the block is zeros.
    assert rmod._looks_incompressible(_windows_random(200_003)) is True
    # ... and the reverse: random everywhere except those windows.
    inverse = bytearray(rng.randbytes(200_003))
    step = (200_003 - SAMPLE) // 3
    for i in range(4):
        inverse[i * step:i * step + SAMPLE] = bytes(SAMPLE)
    assert rmod._looks_incompressible(bytes(inverse)) is False


# ---------------------------------------------------------------- _write_direct

def test_write_direct_writes_exactly_head_and_body_with_o_direct_exclusively(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    flags: list[int] = []
    real_open = os.open

    def spy(path: Any, fl: int, mode: int = 0o777) -> int:
        flags.append(fl)
        return real_open(path, fl, mode)
    monkeypatch.setattr(os, "open", spy)
    head, body = b"FCR1", random.Random(1).randbytes(3 * 4096 + 5)
    tmp = tmp_path / "c.tmp"
    assert rmod._write_direct(tmp, head, body) is True
    assert tmp.read_bytes() == head + body
    assert tmp.stat().st_mode & 0o777 == 0o600
    assert flags[-1] & os.O_DIRECT and flags[-1] & os.O_EXCL and flags[-1] & os.O_CREAT
    with pytest.raises(FileExistsError):
        rmod._write_direct(tmp, head, b"other")
    assert tmp.read_bytes() == head + body


def test_write_direct_finishes_short_aligned_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:8192]))
    head, body = b"FCZ1", random.Random(2).randbytes(5 * 4096 - 100)
    tmp = tmp_path / "c.tmp"
    assert rmod._write_direct(tmp, head, body) is True
    assert tmp.read_bytes() == head + body


def _raiser(code: int) -> Any:
    def f(*a: Any, **k: Any) -> Any:
        raise OSError(code, os.strerror(code))
    return f


def test_write_direct_refused_at_open_is_false_other_errors_raise(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = tmp_path / "c.tmp"
    monkeypatch.setattr(os, "open", _raiser(errno.EINVAL))
    assert rmod._write_direct(tmp, b"FCR1", b"x") is False
    monkeypatch.setattr(os, "open", _raiser(errno.EACCES))
    with pytest.raises(OSError) as e:
        rmod._write_direct(tmp, b"FCR1", b"x")
    assert e.value.errno == errno.EACCES
    assert not tmp.exists()


@pytest.mark.parametrize("code, unlink_fails", [(errno.EINVAL, False), (errno.ENOSPC, False),
                                                (errno.EINVAL, True)])
def test_write_direct_failing_write_leaves_nothing_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                code: int, unlink_fails: bool) -> None:
    tmp = tmp_path / "c.tmp"
    monkeypatch.setattr(os, "write", _raiser(code))
    if unlink_fails:
        monkeypatch.setattr(os, "unlink", _raiser(errno.EPERM))
    if code == errno.EINVAL:
        assert rmod._write_direct(tmp, b"FCR1", b"x" * 10) is False
    else:
        with pytest.raises(OSError) as e:
            rmod._write_direct(tmp, b"FCR1", b"x" * 10)
        assert e.value.errno == code
    monkeypatch.undo()
    assert tmp.exists() is unlink_fails
    assert sorted(p.name for p in tmp_path.iterdir()) == (["c.tmp"] if unlink_fails else [])


# ---------------------------------------------------------------- decode_chunk

def test_decode_chunk_verdicts() -> None:
    block = b"hello block " * 100
    d = sha(block)
    assert rmod.decode_chunk(d, b"FCR1", block, len(block), check=True) == block
    frame = zstandard.ZstdCompressor(level=1).compress(block)
    assert rmod.decode_chunk(d, b"FCZ1", frame, None, check=True) == block
    assert rmod.decode_chunk("0" * 64, b"FCR1", block, None, check=False) == block  # not hashed

    def err(marker: bytes, body: bytes, exp: int | None, digest: str = d) -> ChunkError:
        with pytest.raises(ChunkError) as e:
            rmod.decode_chunk(digest, marker, body, exp, check=True)
        assert e.value.digest == digest and e.value.problem == "corrupt"
        return e.value
    assert str(err(b"FCR2", block, None)) == f"chunk {d} has an unknown type marker"
    assert str(err(b"FCZ1", block, None)).startswith(f"chunk {d} does not decompress: ")
    assert str(err(b"FCR1", block, None, "f" * 64)) == f"chunk {'f' * 64} content does not match its hash"
    assert str(err(b"FCR1", block, 1300)) == f"chunk {d} has 1200 bytes, expected 1300"
    assert str(err(b"FCZ1", frame, 1201)) == f"chunk {d} has 1200 bytes, expected 1201"


# ---------------------------------------------------------------- _proc_start and Lease

def _fake_stat(monkeypatch: pytest.MonkeyPatch, text: str | None) -> None:
    real = Path.read_text

    def read_text(self: Path, *a: Any, **k: Any) -> str:
        if str(self) == "/proc/4242/stat":
            if text is None:
                raise FileNotFoundError(str(self))
            return text
        return real(self, *a, **k)
    monkeypatch.setattr(Path, "read_text", read_text)


def test_proc_start_is_field_22_counted_after_the_command_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # The command name holds ") " and spaces; after its last ")" come fields 3.. (state first).
    fields = [f"f{i}" for i in range(3, 60)]  # f22 is the start time
    _fake_stat(monkeypatch, "4242 (we) ird) name) " + " ".join(fields))
    assert rmod._proc_start(4242) == "f22"
    _fake_stat(monkeypatch, "4242 (x) " + " ".join(fields[:20]))  # exactly 20 fields after ")"
    assert rmod._proc_start(4242) == "f22"
    _fake_stat(monkeypatch, "4242 (x) " + " ".join(fields[:19]))  # 19: no field 22
    assert rmod._proc_start(4242) is None
    _fake_stat(monkeypatch, None)
    assert rmod._proc_start(4242) is None


def test_proc_start_of_this_process_is_its_kernel_start_time() -> None:
    stat = Path("/proc/self/stat").read_text()
    assert rmod._proc_start(os.getpid()) == stat[stat.rindex(")") + 2:].split(" ")[19]


def test_lease_reads_its_record_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "20260101T000000Z-abcd0123.json"
    full = Lease(path, {"point_id": "P-1", "pid": 77, "proc_start": "123", "host": "h1", "started_ns": 55,
                        "base_point_ids": ["B-1", "B-2"]}, 99)
    assert (full.path, full.point_id, full.pid, full.proc_start, full.host, full.started_ns, full.base_point_ids) \
        == (path, "P-1", 77, "123", "h1", 55, ["B-1", "B-2"])
    empty = Lease(path, {}, 99)
    assert (empty.point_id, empty.pid, empty.proc_start, empty.host, empty.started_ns, empty.base_point_ids) \
        == ("20260101T000000Z-abcd0123", 0, None, "", 99, [])
    zeros = Lease(path, {"pid": 0, "started_ns": 0}, 99)
    assert (zeros.pid, zeros.started_ns) == (0, 99)
    for bad in ("B-1", ["B-1", 3], {"B-1": 1}):
        with pytest.raises(ValueError, match=r"^base_point_ids is not a list of point ids$"):
            Lease(path, {"base_point_ids": bad}, 99)


def test_lease_alive_by_host_pid_and_start_time(tmp_path: Path) -> None:
    me = os.getpid()
    mine = rmod._proc_start(me)
    assert mine is not None

    def lease(**data: Any) -> Lease:
        return Lease(tmp_path / "p.json", data, 1)
    assert lease(pid=me).alive() is True
    assert lease(pid=me, host=rmod._HOST).alive() is True
    assert lease(pid=me, proc_start=mine).alive() is True
    assert lease(pid=me, proc_start=mine + "0").alive() is False  # pid recycled
    assert lease(pid=0).alive() is False
    assert lease(pid=0, host="another-machine").alive() is True  # not ours to check


# ---------------------------------------------------------------- writing points for the rest

def disk_args(vol: str, size: int, name: str | None = None, base: str | None = None) -> dict[str, Any]:
    return dict(volume_urn=vol, disk_name=name if name is not None else vol.rsplit(":", 1)[-1], sequence_num=1,
                pci_type="VIRTIO", size_bytes=size, block_size=BS, storage_type="LOCALPOME",
                datastore_urn="urn:ds:1", cbt=None, base_point_id=base)


def put(repo: Repository, disks: dict[str, dict[int, bytes]], *, vm: str = VM1, created: float = T0,
        sizes: dict[str, int] | None = None, names: dict[str, str] | None = None) -> str:
    with repo.new_point(vm_urn=vm, vm_name="vm", job_id="j", kind="cbt", vm_config={}, snapshot_urn="s",
                        created=created) as pw:
        for vol, blocks in disks.items():
            size = (sizes or {}).get(vol, 4 * BS)
            dw = pw.add_disk(**disk_args(vol, size, (names or {}).get(vol)))
            for i, b in sorted(blocks.items()):
                dw.put_block(i, b)
        return pw.commit().id


def blk(tag: int, n: int = BS) -> bytes:
    return random.Random(tag).randbytes(n)


def chunk_file(repo: Repository, digest: str) -> Path:
    return repo.path / "chunks" / digest[:2] / digest


def catalog_edit(repo: Repository, edit: Any) -> Repository:
    path = repo.path / "catalog.json"
    doc = json.loads(path.read_text())
    edit(doc["points"])
    path.write_text(json.dumps(doc))
    return Repository.open(repo.path)


def manifest_edit(repo: Repository, pid: str, edit: Any) -> None:
    path = repo.path / "points" / f"{pid}.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


# ---------------------------------------------------------------- new_point, point, catalog, points

def test_new_point_records_what_it_was_given(repo: Repository) -> None:
    with repo.new_point(vm_urn=VM1, vm_name="web", job_id="job-9", kind="standard", vm_config={"cpu": 2},
                        snapshot_urn="urn:snap:7", created=1_767_225_599) as pw:
        pw.add_disk(**disk_args("urn:vol:1", BS)).put_block(0, blk(1))
        p = pw.commit()
    assert p.id[:17] == "20251231T235959Z-" and len(p.id) == 25 and int(p.id[17:], 16) >= 0
    assert (p.vm_urn, p.vm_name, p.job_id, p.kind, p.vm_config, p.snapshot_urn) == \
        (VM1, "web", "job-9", "standard", {"cpu": 2}, "urn:snap:7")
    assert p.created == 1_767_225_599.0 and isinstance(p.created, float)
    again = repo.point(p.id)
    assert (again.id, again.vm_urn, again.vm_name, again.job_id, again.kind, again.snapshot_urn, again.created) == \
        (p.id, VM1, "web", "job-9", "standard", "urn:snap:7", 1_767_225_599.0)


def test_new_point_refuses_what_it_cannot_record(repo: Repository) -> None:
    def new(**kw: Any) -> None:
        args = dict(vm_urn=VM1, vm_name="v", job_id="j", kind="cbt", vm_config={}, snapshot_urn="s", created=T0)
        args.update(kw)
        repo.new_point(**args)
    with pytest.raises(RepoError) as e:
        new(kind="full")
    assert str(e.value) == "restore point kind must be one of cbt, standard, not 'full'"
    with pytest.raises(RepoError) as e:
        new(vm_urn="")
    assert str(e.value) == "a restore point needs the VM URN"
    with pytest.raises(RepoError) as e:
        new(vm_config={"x": {1, 2}})
    assert str(e.value).startswith("vm_config is not JSON-serialisable: ") and "set" in str(e.value)


def test_points_by_vm_oldest_first_and_latest(repo: Repository) -> None:
    a2 = put(repo, {"urn:vol:1": {0: blk(1)}}, created=T0 + 20)
    b1 = put(repo, {"urn:vol:2": {0: blk(2)}}, vm=VM2, created=T0 + 5)
    a1 = put(repo, {"urn:vol:1": {0: blk(3)}}, created=T0 + 10)
    a3 = put(repo, {"urn:vol:1": {0: blk(4)}}, created=T0 + 30)
    assert [p.id for p in repo.points()] == [b1, a1, a2, a3]
    assert [p.id for p in repo.points(VM1)] == [a1, a2, a3]
    assert [p.id for p in repo.points(VM2)] == [b1]
    assert repo.latest_point(VM1).id == a3
    assert repo.latest_point(VM2).id == b1
    assert repo.latest_point("urn:sites:1:vms:none") is None
    assert repo.damaged_entries() == []


def test_catalog_sorts_same_time_points_by_id_and_names_bad_entries(repo: Repository) -> None:
    ids = [put(repo, {"urn:vol:1": {0: blk(i)}}, created=T0) for i in range(4)]

    def edit(points: dict[str, Any]) -> None:
        points["90"] = {"id": "not an id", "vm_urn": VM1}
        good = next(iter(points.values()))
        points["91"] = dict(good, created="noon", id="20260101T000000Z-0000beef")
    repo = catalog_edit(repo, edit)
    points, bad = repo.catalog()
    assert [p.id for p in points] == sorted(ids)
    assert [(b.ref, b.problem) for b in bad] == [("#90", "not-a-point"), ("20260101T000000Z-0000beef", "not-a-point")]
    assert [b.detail for b in bad] == ["catalog entry is not a restore point: id 'not an id' is not a restore point id",
                                       "catalog entry is not a restore point: field created is not a number"]
    assert repo.damaged_entries() == bad
    with pytest.raises(RepoDamagedError) as e:
        repo.point("20260101T000000Z-0000beef")
    assert e.value.entries == [bad[1]]
    assert str(e.value) == (f"restore point 20260101T000000Z-0000beef: {bad[1].detail}; "
                            "`fctui repo forget 20260101T000000Z-0000beef` drops it")
    with pytest.raises(PointNotFoundError) as e2:
        repo.point("20260101T000000Z-00000000")
    assert e2.value.point_id == "20260101T000000Z-00000000"


# ---------------------------------------------------------------- open_disk, _disk_map, _record_sha256

def test_open_disk_reads_the_right_disk_and_says_what_is_missing(repo: Repository) -> None:
    a, b = blk(1), blk(2)
    pid = put(repo, {"urn:vol:1": {0: a}, "urn:vol:2": {1: b}})
    r = repo.open_disk(pid, "urn:vol:2")
    assert r.point_id == pid and r.disk.volume_urn == "urn:vol:2" and r.disk.disk_name == "2"
    assert r.block_digests() == {1: sha(b)}
    assert r.read_block(1) == b and r.read_block(0) == bytes(BS)
    with pytest.raises(RepoError) as e:
        repo.open_disk(pid, "urn:vol:9")
    assert str(e.value) == f"restore point {pid} has no disk urn:vol:9"
    manifest_edit(repo, pid, lambda doc: doc["disks"].pop(1))
    repo = Repository.open(repo.path)
    with pytest.raises(ManifestError) as e2:
        repo.open_disk(pid, "urn:vol:2")
    assert (e2.value.point_id, e2.value.problem, e2.value.detail) == \
        (pid, "manifest-corrupt", "has no block map for disk urn:vol:2")


def test_record_sha256_sets_the_named_disk_only_and_busy_is_skipped(repo: Repository,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pid = put(repo, {"urn:vol:1": {0: blk(1)}, "urn:vol:2": {0: blk(2)}})
    other = put(repo, {"urn:vol:3": {0: blk(3)}})
    other_before = repo.point(other)
    repo._record_sha256(pid, "urn:vol:2", "ab" * 32)
    assert [d.sha256 for d in repo.point(pid).disks] == [None, "ab" * 32]
    # only that point's catalog entry is rewritten: the other keeps its own disks and id
    assert repo.point(other) == other_before and {p.id for p in repo.points()} == {pid, other}

    def busy(*a: Any) -> None:
        raise RepoBusyError("busy")
    monkeypatch.setattr(repo, "_update_point", busy)
    repo._record_sha256(pid, "urn:vol:1", "cd" * 32)  # no error
    monkeypatch.undo()
    # An entry that lost its disks (not a point any more): nothing to record, and no error either.
    repo = catalog_edit(repo, lambda pts: next(iter(pts.values())).pop("disks"))
    repo._record_sha256(pid, "urn:vol:1", "cd" * 32)
    assert "disks" not in json.loads((repo.path / "catalog.json").read_text())["points"]["1"]


# ---------------------------------------------------------------- _load_manifest

def test_load_manifest_maps_and_cache(repo: Repository) -> None:
    a, b = blk(1), blk(2)
    pid = put(repo, {"urn:vol:1": {0: a, 3: b}, "urn:vol:2": {}})
    m = repo._load_manifest(pid)
    assert m["maps"] == {"urn:vol:1": {0: sha(a), 3: sha(b)}, "urn:vol:2": {}}
    assert [d["volume_urn"] for d in m["raw"]["disks"]] == ["urn:vol:1", "urn:vol:2"]
    assert repo._load_manifest(pid) is m  # cached
    (repo.path / "points" / f"{pid}.json").unlink()
    assert repo._load_manifest(pid) is m
    with pytest.raises(ManifestError) as e:
        repo._load_manifest(pid, fresh=True)
    assert (e.value.point_id, e.value.problem) == (pid, "manifest-missing")
    assert e.value.detail == f"is missing ({repo.path / 'points' / (pid + '.json')})"


def test_manifest_cache_keeps_the_8_most_recently_used(repo: Repository) -> None:
    ids = [put(repo, {"urn:vol:1": {0: blk(i)}}, created=T0 + i) for i in range(9)]
    repo = Repository.open(repo.path)
    first = [repo._load_manifest(p) for p in ids[:8]]
    assert repo._load_manifest(ids[0]) is first[0]  # used again: now the most recent
    repo._load_manifest(ids[8])  # the 9th pushes out the least recently used: ids[1]
    assert list(repo._manifests) == ids[2:8] + [ids[0], ids[8]]
    assert repo._load_manifest(ids[0]) is first[0]
    assert repo._load_manifest(ids[1]) is not first[1]


UNREADABLE = [
    (lambda d: d["disks"].append(dict(d["disks"][0])), "is unreadable: a disk or block is listed twice"),
    (lambda d: d["disks"][0]["blocks"].append(list(d["disks"][0]["blocks"][0])),
     "is unreadable: a disk or block is listed twice"),
    (lambda d: d["disks"][0]["blocks"][0].__setitem__(1, "x" * 80),
     "is unreadable: block digest '" + "x" * 70 + "' is not a SHA-256"),
    (lambda d: d["disks"][0].pop("blocks"), "is unreadable: KeyError 'blocks'"),
    (lambda d: d["disks"][0].pop("volume_urn"), "is unreadable: KeyError 'volume_urn'"),
    (lambda d: d.pop("disks"), "is unreadable: KeyError 'disks'"),
    (lambda d: d["disks"][0]["blocks"][0].__setitem__(0, "seven"),
     "is unreadable: invalid literal for int() with base 10: 'seven'"),
    (lambda d: d.__setitem__("disks", [3]), "is unreadable: TypeError 'int' object is not subscriptable"),
]


def test_load_manifest_says_what_is_wrong(repo: Repository) -> None:
    for n, (edit, detail) in enumerate(UNREADABLE):
        pid = put(repo, {"urn:vol:1": {0: blk(1)}}, created=T0 + n)
        manifest_edit(repo, pid, edit)
        with pytest.raises(ManifestError) as e:
            repo._load_manifest(pid, fresh=True)
        assert (e.value.point_id, e.value.problem, e.value.detail) == (pid, "manifest-corrupt", detail)


def test_load_manifest_block_digest_is_cut_at_70_characters(repo: Repository) -> None:
    pid = put(repo, {"urn:vol:1": {0: blk(1)}})
    manifest_edit(repo, pid, lambda d: d["disks"][0]["blocks"][0].__setitem__(1, "0123456789" * 8))
    with pytest.raises(ManifestError) as e:
        repo._load_manifest(pid, fresh=True)
    assert e.value.detail == f"is unreadable: block digest {('0123456789' * 7)!r} is not a SHA-256"


# ---------------------------------------------------------------- sweep_check

def test_sweep_check_gives_fresh_maps_of_every_point(repo: Repository) -> None:
    a, b = blk(1), blk(2)
    p1 = put(repo, {"urn:vol:1": {0: a}})
    p2 = put(repo, {"urn:vol:1": {1: b}, "urn:vol:2": {}}, created=T0 + 1)
    assert repo.sweep_check() == {p1: {"urn:vol:1": {0: sha(a)}}, p2: {"urn:vol:1": {1: sha(b)}, "urn:vol:2": {}}}
    repo._load_manifest(p1)
    (repo.path / "points" / f"{p1}.json").unlink()
    with pytest.raises(RepoDamagedError) as e:
        repo.sweep_check()  # cached or not, the file is read again
    where = repo.path / "points" / f"{p1}.json"
    assert e.value.entries == [DamagedEntry(p1, "manifest-missing", f"manifest is missing ({where})")]
    assert str(e.value) == (
        f"refusing to delete anything: 1 catalog entry cannot be read, so the chunks they need are unknown: "
        f"{p1} (manifest is missing ({where})). Run `fctui repo verify` to see the damage; "
        f"`fctui repo forget POINT` drops an entry you give up on")


def test_sweep_check_names_every_damaged_entry(repo: Repository) -> None:
    p1 = put(repo, {"urn:vol:1": {0: blk(1)}})
    p2 = put(repo, {"urn:vol:1": {0: blk(2)}, "urn:vol:2": {}, "urn:vol:3": {}}, created=T0 + 1,
             names={"urn:vol:2": "", "urn:vol:3": "data"})
    p3 = put(repo, {"urn:vol:1": {0: blk(3)}}, created=T0 + 2)
    p4 = put(repo, {"urn:vol:1": {0: blk(4)}}, created=T0 + 3)
    manifest_edit(repo, p1, lambda d: d.pop("disks"))
    manifest_edit(repo, p2, lambda d: d.__setitem__("disks", d["disks"][:1]))
    (repo.path / "points" / f"{p4}.json").unlink()
    repo = catalog_edit(repo, lambda pts: pts.__setitem__("77", {"id": 5}))
    with pytest.raises(RepoDamagedError) as e:
        repo.sweep_check()
    bad = DamagedEntry("#77", "not-a-point", "catalog entry is not a restore point: id 5 is not a restore point id")
    where = repo.path / "points" / f"{p4}.json"
    assert e.value.entries == [
        bad,
        DamagedEntry(p1, "manifest-corrupt", "manifest is unreadable: KeyError 'disks'"),
        DamagedEntry(p2, "manifest-corrupt", "manifest has no block map for disk(s) urn:vol:2, data"),
        DamagedEntry(p4, "manifest-missing", f"manifest is missing ({where})"),
    ]
    assert str(e.value).startswith(
        "refusing to delete anything: 4 catalog entries cannot be read, so the chunks they need are unknown: "
        f"#77 ({bad.detail}); {p1} (manifest is unreadable: KeyError 'disks'); "
        f"{p2} (manifest has no block map for disk(s) urn:vol:2, data); {p4} (manifest is missing ({where})). Run")
    assert p3 not in str(e.value)


# ---------------------------------------------------------------- verify

def _digests_ordered_against_blocks(n: int) -> list[bytes]:
    """n blocks whose digests sort in the reverse order of their block numbers."""
    found: list[bytes] = []
    tag = 100
    while len(found) < n:
        b = blk(tag)
        tag += 1
        if not found or sha(b) < sha(found[-1]):
            found.append(b)
    return found


def test_verify_everything_clean(repo: Repository) -> None:
    a, b, c = blk(1), blk(2), blk(3, 1000)
    p1 = put(repo, {"urn:vol:1": {0: a, 1: b}}, created=T0)
    # p2 shares a, adds a short last block c (disk of 2 blocks + 1000 bytes)
    p2 = put(repo, {"urn:vol:1": {0: a, 2: c}}, created=T0 + 1, sizes={"urn:vol:1": 2 * BS + 1000})
    before = time.time()
    r = repo.verify(threads=0)
    assert r.points_checked == [p1, p2] and r.sample_pct == 100.0 and isinstance(r.sample_pct, float)
    assert (r.chunks_total, r.chunks_checked, r.bytes_checked) == (3, 3, 2 * BS + 1000)
    assert r.bad_chunks == {} and r.damaged == [] and r.bad_entries == [] and r.ok
    assert 0 <= r.seconds < 60
    for pid in (p1, p2):
        assert before <= repo.point(pid).verified_at <= time.time()


def test_verify_defaults_quarantine_and_reports_each_use_of_a_bad_chunk(repo: Repository) -> None:
    b0, b1 = _digests_ordered_against_blocks(2)  # digest(b1) < digest(b0)
    good = blk(5)
    p1 = put(repo, {"urn:vol:1": {0: b0, 1: b1, 2: good}}, created=T0)
    p2 = put(repo, {"urn:vol:1": {3: b0}, "urn:vol:2": {0: good}}, created=T0 + 1)
    p3 = put(repo, {"urn:vol:1": {0: good}}, created=T0 + 2)
    for b in (b0, b1):
        path = chunk_file(repo, sha(b))
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 1
        path.write_bytes(bytes(raw))
    r = repo.verify(threads=1)
    assert r.bad_chunks == {sha(b0): "corrupt", sha(b1): "corrupt"}
    assert r.damaged == [
        BlockDamage(p1, "urn:vol:1", "1", 0, sha(b0), "corrupt"),
        BlockDamage(p1, "urn:vol:1", "1", 1, sha(b1), "corrupt"),
        BlockDamage(p2, "urn:vol:1", "1", 3, sha(b0), "corrupt"),
    ]
    assert (r.chunks_total, r.chunks_checked, r.bytes_checked) == (3, 3, BS)
    for b in (b0, b1):  # quarantined by default
        assert not chunk_file(repo, sha(b)).exists()
        assert chunk_file(repo, sha(b)).with_name(sha(b) + ".bad").exists()
    assert repo.point(p1).verified_at is None and repo.point(p2).verified_at is None
    assert repo.point(p3).verified_at is not None


def test_verify_without_quarantine_and_missing_chunks_stay_put(repo: Repository) -> None:
    a, b = blk(1), blk(2)
    pid = put(repo, {"urn:vol:1": {0: a, 1: b}})
    path = chunk_file(repo, sha(a))
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    chunk_file(repo, sha(b)).unlink()
    r = repo.verify(quarantine=False)
    assert r.bad_chunks == {sha(a): "corrupt", sha(b): "missing"}
    assert path.exists() and not path.with_name(sha(a) + ".bad").exists()
    r = repo.verify()
    assert r.bad_chunks == {sha(a): "corrupt", sha(b): "missing"}
    assert not path.exists() and path.with_name(sha(a) + ".bad").exists()
    assert not chunk_file(repo, sha(b)).with_name(sha(b) + ".bad").exists()
    assert r.damaged == [BlockDamage(pid, "urn:vol:1", "1", 0, sha(a), "corrupt"),
                         BlockDamage(pid, "urn:vol:1", "1", 1, sha(b), "missing")]


def test_verify_checks_each_chunk_against_its_block_length(repo: Repository) -> None:
    short = blk(1, 1000)
    pid = put(repo, {"urn:vol:1": {1: short}}, sizes={"urn:vol:1": BS + 1000})
    other = put(repo, {"urn:vol:1": {0: short}}, created=T0 + 1, sizes={"urn:vol:1": 1000})
    r = repo.verify(point_ids=[pid])
    assert r.points_checked == [pid] and r.ok and r.bytes_checked == 1000
    assert r.bad_entries == [] and r.to_json()["damaged_entries"] == []
    # One chunk used by two points (each as a 1000-byte last block): checked once.
    r = repo.verify(point_ids=[other, pid])
    assert r.ok and r.chunks_checked == 1
    manifest_edit(repo, pid, lambda d: d["disks"][0]["blocks"][0].__setitem__(0, 0))
    repo = Repository.open(repo.path)
    r = repo.verify(point_ids=[pid])
    assert r.bad_chunks == {sha(short): "corrupt"}
    assert r.damaged == [BlockDamage(pid, "urn:vol:1", "1", 0, sha(short), "corrupt")]


def test_verify_reports_manifest_damage_per_disk_and_catalog_damage(repo: Repository) -> None:
    a = blk(1)
    p1 = put(repo, {"urn:vol:2": {0: a}, "urn:vol:1": {0: blk(2)}}, names={"urn:vol:2": "sys"})
    p2 = put(repo, {"urn:vol:1": {0: blk(3)}, "urn:vol:2": {0: a}}, created=T0 + 1, names={"urn:vol:2": "sys"})
    ok = put(repo, {"urn:vol:1": {0: blk(4)}}, created=T0 + 2)
    repo = catalog_edit(repo, lambda pts: pts.__setitem__("50", {"id": 7}))
    repo._load_manifest(p1), repo._load_manifest(p2)  # cached: verify reads the files again all the same
    (repo.path / "points" / f"{p1}.json").unlink()
    manifest_edit(repo, p2, lambda d: d["disks"].pop(0))  # its first disk's map is gone
    r = repo.verify()
    assert r.points_checked == [p1, p2, ok]
    assert [e.ref for e in r.bad_entries] == ["#50"]
    assert r.damaged == [
        BlockDamage(p1, "urn:vol:1", "1", None, None, "manifest-missing"),
        BlockDamage(p1, "urn:vol:2", "sys", None, None, "manifest-missing"),
        BlockDamage(p2, "urn:vol:1", "1", None, None, "manifest-corrupt"),
    ]
    assert (r.chunks_total, r.chunks_checked) == (2, 2)  # p2's second disk's block and ok's block
    assert repo.point(ok).verified_at is not None and repo.point(p2).verified_at is None


def test_verify_sample_takes_the_ceiling_share_seeded(repo: Repository) -> None:
    blocks = {i: blk(i) for i in range(7)}
    pid = put(repo, {"urn:vol:1": blocks}, sizes={"urn:vol:1": 7 * BS})
    for pct, k in ((1, 1), (14.3, 2), (50, 4), (99.9, 7)):
        r = repo.verify(sample_pct=pct, seed=5)
        assert (r.chunks_total, r.chunks_checked, r.bytes_checked, r.sample_pct) == (7, k, k * BS, float(pct))
    assert repo.point(pid).verified_at is None  # a sample does not mark the point verified
    digests = sorted(sha(b) for b in blocks.values())
    chosen = random.Random(11).sample(digests, 3)
    for d in digests:
        if d not in chosen:
            chunk_file(repo, d).unlink()
    r = repo.verify(sample_pct=40, seed=11)  # ceil(2.8) = 3: exactly those, all present
    assert r.ok and r.chunks_checked == 3
    r = repo.verify(sample_pct=40, seed=12)
    assert not r.ok


def test_verify_of_no_chunk_and_the_sample_bounds(repo: Repository) -> None:
    pid = put(repo, {"urn:vol:1": {}})
    r = repo.verify(sample_pct=0.5)
    assert (r.points_checked, r.chunks_total, r.chunks_checked) == ([pid], 0, 0) and r.ok
    assert repo.verify(sample_pct=100).chunks_total == 0
    assert repo.point(pid).verified_at is not None
    for bad in (0, -1, 100.01, 101, float("nan"), float("inf")):
        with pytest.raises(RepoError) as e:
            repo.verify(sample_pct=bad)
        assert str(e.value) == f"sample must be a percentage in (0, 100], not {bad}"


def test_verify_unknown_point_and_busy_catalog(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    pid = put(repo, {"urn:vol:1": {0: blk(1)}})
    with pytest.raises(PointNotFoundError):
        repo.verify(point_ids=["20260101T000000Z-00000000"])

    def busy(*a: Any) -> None:
        raise RepoBusyError("busy")
    monkeypatch.setattr(repo, "_mark_verified", busy)
    r = repo.verify(point_ids=[pid])
    assert r.ok and r.chunks_checked == 1


# ---------------------------------------------------------------- prune and prune_retention

def _three_each(repo: Repository) -> tuple[list[str], list[str]]:
    a = [put(repo, {"urn:vol:1": {0: blk(i)}}, created=T0 + i * 10) for i in range(3)]
    b = [put(repo, {"urn:vol:2": {0: blk(10 + i)}}, vm=VM2, created=T0 + i * 10 + 5) for i in range(3)]
    return a, b


def test_prune_keep_last_per_vm(repo: Repository) -> None:
    a, b = _three_each(repo)
    for pid in a + b:
        repo._load_manifest(pid)
    r = repo.prune(1, dry_run=True)
    assert sorted(r.removed) == sorted(a[:2] + b[:2]) and sorted(r.kept) == sorted([a[2], b[2]])
    assert r.why == {a[2]: "last", b[2]: "last"}
    assert len(repo.points()) == 6
    r = repo.prune(2)
    assert r.removed == sorted(a[:1]) + sorted(b[:1]) and r.kept == a[1:] + b[1:]
    assert [p.id for p in repo.points()] == [a[1], b[1], a[2], b[2]]
    assert a[0] not in repo._manifests and b[0] not in repo._manifests and a[1] in repo._manifests
    assert not (repo.path / "points" / f"{a[0]}.json").exists()


def test_prune_one_vm_and_zero(repo: Repository) -> None:
    a, b = _three_each(repo)
    r = repo.prune(1, VM2)
    assert r.removed == sorted(b[:2]) and r.kept == [b[2]]
    r = repo.prune(0, VM1)
    assert r.removed == sorted(a) and r.kept == [] and r.why == {}
    assert [p.id for p in repo.points()] == [b[2]]
    with pytest.raises(RepoError) as e:
        repo.prune(-1)
    assert str(e.value) == "--keep-last must be 0 or more"
    with pytest.raises(RepoError) as e:
        repo.prune(0)
    assert str(e.value) == "--keep-last 0 would delete every restore point; name one VM to do that"


def test_prune_refuses_when_a_manifest_is_unreadable(repo: Repository) -> None:
    a, _ = _three_each(repo)
    (repo.path / "points" / f"{a[2]}.json").unlink()
    with pytest.raises(RepoDamagedError):
        repo.prune(1, VM2, dry_run=True)
    assert len(repo.points()) == 6


def test_prune_retention_reads_days_in_the_given_zone(repo: Repository) -> None:
    # 21:30 and 22:30 UTC on one day: two days at UTC+2 (23:30, 00:30), one day at UTC.
    day = datetime(2026, 3, 10, 21, 30, tzinfo=timezone.utc).timestamp()
    a = [put(repo, {"urn:vol:1": {0: blk(i)}}, created=day + i * 3600) for i in range(2)]
    b = [put(repo, {"urn:vol:2": {0: blk(9 + i)}}, vm=VM2, created=day + i * 3600) for i in range(2)]
    plus2 = timezone(timedelta(hours=2))
    r = repo.prune_retention(Retention(keep_daily=2), tz=plus2, dry_run=True)
    assert r.removed == [] and sorted(r.kept) == sorted(a + b)
    assert r.why == {a[1]: "daily 2026-03-11", a[0]: "daily 2026-03-10", b[1]: "daily 2026-03-11",
                     b[0]: "daily 2026-03-10"}
    r = repo.prune_retention(Retention(keep_daily=1), vm_urn=VM1, tz=timezone.utc, dry_run=True)
    assert r.removed == [a[0]] and r.kept == [a[1]]
    assert len(repo.points()) == 4
    r = repo.prune_retention(Retention(keep_daily=1), vm_urn=VM1, tz=timezone.utc)
    assert r.removed == [a[0]]
    assert [p.id for p in repo.points()] == [b[0]] + sorted([a[1], b[1]])


def test_prune_drops_removed_manifests_from_the_cache_even_when_not_cached(repo: Repository) -> None:
    # 10 points: the sweep before pruning caches only the newest 8, the oldest 2 are not in the cache.
    ids = [put(repo, {"urn:vol:1": {0: blk(i)}}, created=T0 + i) for i in range(10)]
    r = repo.prune(1, VM1)
    assert r.removed == sorted(ids[:9]) and r.kept == [ids[9]]
    assert [p.id for p in repo.points()] == [ids[9]]
    assert not set(ids[:9]) & set(repo._manifests)
