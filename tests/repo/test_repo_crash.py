"""Crashes and concurrency: aborted and SIGKILLed writers, gc beside live writers and leases."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fctui.repo import RepoError, Repository
from tests.repo.gcclock import GcClock, age_chunks

BS = 4096


@pytest.fixture
def gc_clock(tmp_path: Path) -> GcClock:
    return GcClock(tmp_path / "gc-clock.probe")


@pytest.fixture
def repo(tmp_path: Path, gc_clock: GcClock) -> Repository:
    return Repository.open(tmp_path / "repo", clock=gc_clock)


def disk_args(vol: str, size: int, base: str | None = None) -> dict:
    return dict(volume_urn=vol, disk_name="disk", sequence_num=1, pci_type="VIRTIO", size_bytes=size,
                block_size=BS, storage_type="LOCALPOME", datastore_urn="urn:ds:1", cbt=None,
                base_point_id=base)


def new_point(repo: Repository, vm: str = "urn:vm:1"):
    return repo.new_point(vm_urn=vm, vm_name="vm", job_id="j", kind="cbt", vm_config={},
                          snapshot_urn="urn:snap", created=time.time())


def write_point(repo: Repository, blocks: dict[int, bytes], size: int = 64 * BS, *,
                base: str | None = None, vm: str = "urn:vm:1"):
    with new_point(repo, vm) as pw:
        dw = pw.add_disk(**disk_args("urn:vol:1", size, base))
        for i, b in blocks.items():
            dw.put_block(i, b)
        return pw.commit()


def read_all(repo: Repository, point_id: str) -> bytes:
    r = repo.open_disk(point_id, "urn:vol:1")
    return b"".join(r.read_block(i) for i in range(r.block_count))


def image(blocks: dict[int, bytes], size: int = 64 * BS) -> bytes:
    out = bytearray(size)
    for i, b in blocks.items():
        out[i * BS:(i + 1) * BS] = b
    return bytes(out)



def test_abort_mid_write_leaves_only_orphans_that_gc_collects(repo: Repository, gc_clock: GcClock) -> None:
    rng = random.Random(1)
    keep = {i: rng.randbytes(BS) for i in range(4)}
    point = write_point(repo, keep)
    pw = new_point(repo)
    dw = pw.add_disk(**disk_args("urn:vol:1", 64 * BS))
    for i in range(10):
        dw.put_block(i, rng.randbytes(BS))
    dw.put_block(10, keep[0])  # shared with the committed point: must survive gc
    pw.abort()
    assert [p.id for p in repo.points()] == [point.id]
    assert list(repo.pending_dir.iterdir()) == []
    gc_clock.advance()  # the orphans are older than gc's start
    gc = repo.gc()
    assert gc.chunks_removed == 10 and gc.chunks_referenced == 4 and gc.live_leases == 0
    assert repo.disk_usage()[0] == 4
    assert read_all(repo, point.id) == image(keep)


def test_gc_spares_unreferenced_chunks_as_new_as_its_clock(tmp_path: Path) -> None:
    """gc's injected clock decides what is old enough: at the epoch nothing is, an hour on everything is."""
    repo = Repository.open(tmp_path / "repo", clock=lambda: 0.0)
    rng = random.Random(5)
    pw = new_point(repo)
    dw = pw.add_disk(**disk_args("urn:vol:1", 64 * BS))
    for i in range(3):
        dw.put_block(i, rng.randbytes(BS))
    pw.abort()
    gc = repo.gc()
    assert gc.chunks_removed == 0 and gc.chunks_kept_recent == 3
    clock = GcClock(tmp_path / "gc-clock.probe")
    repo.clock = clock
    clock.advance()
    gc = repo.gc()
    assert gc.chunks_removed == 3 and gc.chunks_kept_recent == 0
    assert repo.disk_usage()[0] == 0


CHILD = r"""
import os, random, signal, sys, time
from fctui.repo import RepoError, Repository
path, base, mode = sys.argv[1], sys.argv[2], sys.argv[3]
BS = 4096
rng = random.Random(99)
repo = Repository.open(path, create=False)
pw = repo.new_point(vm_urn="urn:vm:1", vm_name="vm", job_id="j2", kind="cbt", vm_config={},
                    snapshot_urn="urn:snap2", created=time.time())
dw = pw.add_disk(volume_urn="urn:vol:1", disk_name="disk", sequence_num=1, pci_type="VIRTIO",
                 size_bytes=64 * BS, block_size=BS, storage_type="LOCALPOME", datastore_urn="urn:ds:1",
                 cbt=None, base_point_id=base)
for i in range(20):
    dw.put_block(i, rng.randbytes(BS))
if mode == "commit":
    # Die at the commit point: chunks fsynced and manifest written, catalog entry not yet.
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    repo._txn = die
    pw.commit()
print("ready", flush=True)
i = 20
while True:
    dw.put_block(20 + i % 40, rng.randbytes(BS))
    i += 1
    time.sleep(0.001)
"""


@pytest.mark.parametrize("mode", ["mid-point", "commit"])
def test_sigkill_writer_then_open_and_gc_recover(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "repo"
    repo = Repository.open(path)
    rng = random.Random(2)
    base_blocks = {i: rng.randbytes(BS) for i in range(8)}
    base = write_point(repo, base_blocks)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(path), base.id, mode],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if mode == "mid-point":
        assert proc.stdout.readline().strip() == "ready"
        # Kill it while it writes past its first 20 blocks (8 + 20 chunks exist at "ready").
        deadline = time.monotonic() + 30
        while sum(1 for _ in (path / "chunks").glob("*/*")) <= 8 + 20:
            assert time.monotonic() < deadline, "the writer wrote nothing after ready"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    leases = list((path / "pending").iterdir())
    assert len(leases) == 1  # the dead writer's lease is still there...
    if mode == "commit":
        assert len(list((path / "points").iterdir())) == 2  # ...and its uncommitted manifest

    gc_clock = GcClock(tmp_path / "gc-clock.probe")
    again = Repository.open(path, create=False, clock=gc_clock)  # ...until the next open recognises it as dead
    assert list((path / "pending").iterdir()) == []
    assert [p.name for p in (path / "points").iterdir()] == [f"{base.id}.json"]
    assert [p.id for p in again.points()] == [base.id]
    assert again.verify().ok
    gc_clock.advance()  # the dead writer's chunks are older than gc's start
    gc = again.gc()
    assert gc.chunks_removed >= 20 and gc.chunks_referenced == 8
    assert again.disk_usage()[0] == 8
    assert not [p for p in (path / "chunks").rglob("*.tmp")]
    assert read_all(again, base.id) == image(base_blocks)
    # The next backup (an incremental on the same base) works.
    nxt = write_point(again, {3: b"\7" * BS}, base=base.id)
    assert read_all(again, nxt.id) == image({**base_blocks, 3: b"\7" * BS})


def test_gc_beside_a_live_writer_keeps_its_new_and_reused_chunks(repo: Repository) -> None:
    rng = random.Random(3)
    committed = write_point(repo, {0: rng.randbytes(BS)})
    orphan_reused, orphan_dead = rng.randbytes(BS), rng.randbytes(BS)
    pw = new_point(repo)
    dw = pw.add_disk(**disk_args("urn:vol:1", 64 * BS))
    dw.put_block(0, orphan_reused)
    dw.put_block(1, orphan_dead)
    pw.abort()
    # Orphans of a backup that failed long ago: older than the live writer's lease, which gc compares
    # them with (its start is a file mtime, so the chunks are aged rather than gc's clock advanced).
    age_chunks(repo.chunks_dir)
    live = new_point(repo)
    ldw = live.add_disk(**disk_args("urn:vol:1", 64 * BS))
    assert ldw.put_block(5, orphan_reused) == "reused"  # an orphan becomes referenced again
    fresh = rng.randbytes(BS)
    assert ldw.put_block(6, fresh) == "stored"
    gc = repo.gc()
    assert gc.live_leases == 1
    assert gc.chunks_removed == 1  # only the orphan nobody reused
    assert gc.chunks_kept_recent == 2
    point = live.commit()
    report = repo.verify()
    assert report.ok and report.chunks_total == 3
    assert read_all(repo, point.id) == image({5: orphan_reused, 6: fresh})
    assert read_all(repo, committed.id)[:BS] != bytes(BS)


def test_pruned_base_of_a_running_incremental_survives_gc(repo: Repository, gc_clock: GcClock) -> None:
    rng = random.Random(4)
    base_blocks = {i: rng.randbytes(BS) for i in range(6)}
    base = write_point(repo, base_blocks)
    writer = new_point(repo)
    dw = writer.add_disk(**disk_args("urn:vol:1", 64 * BS, base=base.id))
    dw.put_block(2, b"\5" * BS)
    pruned = repo.prune(0, "urn:vm:1")  # someone prunes the base mid-backup
    assert pruned.removed == [base.id] and repo.points() == []
    gc_clock.advance()  # only the lease protects the base now, not recency
    gc = repo.gc()
    assert gc.chunks_removed == 0 and gc.chunks_referenced >= 6  # the lease still holds the base
    point = writer.commit()
    assert read_all(repo, point.id) == image({**base_blocks, 2: b"\5" * BS})
    gc_clock.advance()  # the base's overwritten block is older than gc's start
    gc = repo.gc()  # now the base's manifest and its overwritten block go
    assert gc.manifests_removed == 1 and gc.chunks_removed == 1
    assert repo.verify().ok


def test_gc_puts_back_a_chunk_reused_while_it_was_being_collected(repo: Repository) -> None:
    digest = "ab" * 32
    path = repo.chunk_path(digest)
    path.write_bytes(b"x")
    os.utime(path, ns=(1, 1))
    marker = repo.path / "marker"
    marker.touch()
    cutoff = marker.stat().st_mtime_ns  # gc's cutoff is on the filesystem clock, like this
    os.utime(path)  # a writer reused it after gc looked at it
    assert repo._collect_chunk(path, cutoff) is None
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    os.utime(path, ns=(1, 1))
    assert repo._collect_chunk(path, cutoff) == 1
    assert not path.exists()


def test_gc_and_prune_wait_for_the_repository_lock(tmp_path: Path) -> None:
    from fctui.repo import RepoBusyError
    from fctui.store import WriterLock

    repo = Repository.open(tmp_path / "repo")
    repo.LOCK_TIMEOUT = 0.1
    with WriterLock(repo.lock_path):
        with pytest.raises(RepoBusyError, match=f"pid {os.getpid()}"):
            repo.gc()
        with pytest.raises(RepoBusyError):
            repo.prune(1)
    assert repo.gc().chunks_total == 0


def test_chunk_left_aside_by_a_killed_gc_is_put_back(repo: Repository) -> None:
    blocks = {0: b"\3" * BS, 1: b"\4" * BS}
    point = write_point(repo, blocks)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    digest = repo.open_disk(point.id, "urn:vol:1").block_digests()[1]
    chunk = repo.chunk_path(digest)
    os.rename(chunk, chunk.with_name(f".{digest}.{int(dead.stdout)}.0badc0de.gc"))
    assert not repo.verify(quarantine=False).ok
    repo.gc()
    assert chunk.exists() and not list(chunk.parent.glob("*.gc"))
    assert repo.verify().ok and read_all(repo, point.id) == image(blocks)


STRESS_CHILD = r"""
import random, sys, time
from fctui.repo import RepoError, Repository
path, seed = sys.argv[1], int(sys.argv[2])
BS = 4096
repo = Repository.open(path, create=False)
orphans = [random.Random(seed + i).randbytes(BS) for i in range(40)]
rng = random.Random(7)
base = None
for n in range(4):
    with repo.new_point(vm_urn="urn:vm:s", vm_name="s", job_id=f"j{n}", kind="cbt", vm_config={},
                        snapshot_urn="s", created=time.time()) as pw:
        if n == 0:
            print("leased", flush=True)
            sys.stdin.readline()  # the parent starts its gc loop now
        dw = pw.add_disk(volume_urn="urn:vol:1", disk_name="d", sequence_num=1, pci_type="VIRTIO",
                         size_bytes=80 * BS, block_size=BS, storage_type="L", datastore_urn="ds",
                         cbt=None, base_point_id=base)
        # Chunks that exist only as orphans (older than this lease: gc wants them) raced with gc ...
        for i in range(40):
            dw.put_block(i, orphans[(i + n) % 40])
        # ... then new ones, slowly, so gc runs many times while this point is open.
        for i in range(40, 80):
            dw.put_block(i, rng.randbytes(BS))
            time.sleep(0.001)
        base = pw.commit().id
    print(base, flush=True)
"""


def test_gc_in_a_loop_beside_another_process_writing(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    repo = Repository.open(path)
    seed = 1000
    # Orphans the child will reuse: written by an aborted point, so only mtimes protect them.
    pw = new_point(repo)
    dw = pw.add_disk(**disk_args("urn:vol:1", 64 * BS))
    for i in range(40):
        dw.put_block(i, random.Random(seed + i).randbytes(BS))
    pw.abort()
    age_chunks(repo.chunks_dir)  # older than the child's lease: only its reuse (mtime refresh) protects them
    script = tmp_path / "stress.py"
    script.write_text(STRESS_CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(seed)], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "leased"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    gcs = 0
    while proc.poll() is None:
        repo.gc()
        gcs += 1
    out, _ = proc.communicate()
    assert proc.returncode == 0
    ids = out.split()
    assert len(ids) == 4 and gcs > 1
    assert [p.id for p in repo.points()] == ids
    report = repo.verify()
    assert report.ok, report.damaged[:3]


def test_points_being_restored_are_protected_from_prune_and_gc(repo: Repository, gc_clock: GcClock) -> None:
    rng = random.Random(11)
    blocks = {i: rng.randbytes(BS) for i in range(5)}
    point = write_point(repo, blocks)
    with repo.protect([point.id]):
        reader = repo.open_disk(point.id, "urn:vol:1")
        assert repo.prune(0, "urn:vm:1").removed == [point.id]
        age_chunks(repo.chunks_dir)  # older than the read lease: only the lease protects them
        gc_clock.advance()
        gc = repo.gc()
        assert gc.chunks_removed == 0 and gc.live_leases == 1
        assert b"".join(reader.read_block(i) for i in range(reader.block_count)) == image(blocks)
    gc_clock.advance()
    assert repo.gc().chunks_removed == 5
    assert list(repo.pending_dir.iterdir()) == [] and list(repo.points_dir.iterdir()) == []
    with pytest.raises(RepoError):
        with repo.protect(["gone"]):
            pass
