"""gc on S3 beside writers on "other machines" (threads with their own repository objects, and other
processes): it never deletes a chunk a committed or in-flight point references; a writer that died
leaves nothing gc keeps; a writer whose lease was fenced cannot commit. Real SeaweedFS, short lease
timings (the store's clock has 1 s resolution, so a test waits a few seconds for leases to age)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fctui.repo import RepoBusyError, Repository
from fctui.repo.s3 import CLOCK_SLACK_S, GC_KEY, S3Repository
from tests.repo.s3_writer import BS, VOLUME, pool_block, start_point

ROOT = Path(__file__).resolve().parents[2]
RENEW, TTL, POLL = 0.5, 3.0, 0.1


def open_quick(url: str) -> S3Repository:
    """A repository object of its own (as another machine would have), with short lease timings."""
    repo = Repository.open(url)
    repo.lease_renew_s, repo.lease_ttl_s, repo.gc_poll_s = RENEW, TTL, POLL
    return repo


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def wait_store_clock_past(repo: S3Repository, t: float) -> None:
    """Until the store's clock (not ours) is past ``t``."""
    wait_for(lambda: repo._store_now() > t, 15, f"the store's clock to pass {t}")


def newest_chunk(repo: S3Repository) -> float:
    return max(m["last_modified"].timestamp() for m in repo._list("chunks/"))


def read_point(repo: S3Repository, point_id: str) -> bytes:
    reader = repo.open_disk(point_id, VOLUME)
    return b"".join(reader.read_block(i) for i in range(reader.block_count))


def spawn_writer(url: str, seed: int, first: list[int], second: list[int],
                 ttl: float = TTL) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.repo.s3_writer", url, str(seed), ",".join(map(str, first)),
         ",".join(map(str, second)), "--renew", str(RENEW), "--ttl", str(ttl), "--poll", str(POLL)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line and line[0] == "TOUCHED", f"writer process said {line!r}"
    return proc, line[1]


def finish_writer(proc: subprocess.Popen[str]) -> list[str]:
    out, _ = proc.communicate("go\n", timeout=60)
    return out.strip().split(maxsplit=1)


def gc_condemned(repo: S3Repository) -> bool:
    got = repo._get_json(GC_KEY)
    return got is not None and got[0].get("state") == "condemned"


def make_old_pool(url: str, seed: int, numbers: list[int]) -> None:
    """Chunks for these pool blocks that no point references, older (store clock) than any lease to come."""
    repo = open_quick(url)
    pw, dw = start_point(repo, len(numbers))
    for i, n in enumerate(numbers):
        dw.put_block(i, pool_block(seed, n))
    pw.abort()
    wait_store_clock_past(repo, newest_chunk(repo) + CLOCK_SLACK_S + 1)


def test_gc_keeps_what_concurrent_writers_reuse(s3_repo_url: str) -> None:
    """Each round: writers (3 threads, 1 process) reuse old unreferenced chunks, a gc condemns them and
    every other old one; the writers then touch more condemned chunks and commit. Every committed
    point must read back, and every round's gc must have deleted what nobody used."""
    url, seed, rounds, threads = s3_repo_url, 7, 3, 3
    writers = threads + 1
    per = 8  # pool blocks per writer and round: 4 reused before the gc condemns, 4 after
    shared = [rounds * writers * per + k for k in range(2)]  # reused by everyone, every round
    gc_repo = open_quick(url)
    committed: dict[str, bytes] = {}
    failures: list[BaseException] = []
    removed = []
    for r in range(rounds):
        def blocks(w: int) -> tuple[list[int], list[int]]:
            base = (r * writers + w) * per
            return list(range(base, base + 4)) + shared, list(range(base + 4, base + per))

        firsts, seconds = zip(*(blocks(w) for w in range(writers)))
        # old unreferenced chunks: this round's blocks, and a few nobody uses (every gc deletes them)
        spare = [10_000 + r * 10 + k for k in range(3)]
        make_old_pool(url, seed, sorted({n for b in firsts + seconds for n in b} | set(spare)))
        # in-flight writers: they reused their first blocks (HEAD found the old chunks)
        open_points = []
        for w in range(threads):
            repo = open_quick(url)
            pw, dw = start_point(repo, len(firsts[w]) + len(seconds[w]))
            for i, n in enumerate(firsts[w]):
                assert dw.put_block(i, pool_block(seed, n)) == "reused"
            open_points.append((pw, dw, w))
        proc, proc_point = spawn_writer(url, seed, firsts[threads], seconds[threads])

        reports: list[Any] = []

        def run_gc() -> None:
            while True:
                try:
                    reports.append(gc_repo.gc())
                    return
                except RepoBusyError:
                    time.sleep(0.1)  # a gc left by an earlier round is finishing
        gc_thread = threading.Thread(target=run_gc)
        gc_thread.start()
        wait_for(lambda: gc_condemned(gc_repo) or not gc_thread.is_alive(), 30, "gc to condemn chunks")

        # now the writers touch condemned chunks (they wait for the gc to end) and commit
        def finish(pw: Any, dw: Any, w: int) -> None:
            try:
                for i, n in enumerate(seconds[w], len(firsts[w])):
                    dw.put_block(i, pool_block(seed, n))
                point = pw.commit()
            except Exception as exc:  # noqa: BLE001 - reported by the test's thread below
                failures.append(exc)
                raise
            committed[point.id] = b"".join(pool_block(seed, n) for n in firsts[w] + seconds[w])
        finishers = [threading.Thread(target=finish, args=p) for p in open_points]
        for t in finishers:
            t.start()
        said = finish_writer(proc)
        assert said[0] == "COMMITTED", said
        committed[said[1]] = b"".join(pool_block(seed, n) for n in firsts[threads] + seconds[threads])
        gc_thread.join(60)
        for t in finishers:
            t.join(60)
        assert not failures, failures
        assert reports, "gc did not finish"
        removed.append(reports[0].chunks_removed)
        assert proc_point in committed

    assert len(committed) == rounds * writers
    assert all(n > 0 for n in removed), f"every gc deleted unused old chunks: {removed}"
    reader = open_quick(url)
    for pid, image in committed.items():
        assert read_point(reader, pid) == image, f"point {pid} lost a chunk to gc"
    assert reader.verify().ok
    # the spare blocks nobody used are gone; a final gc finds nothing more to delete of the points
    final = reader.gc()
    assert final.chunks_referenced == len({c for p in committed for c in
                                           reader.open_disk(p, VOLUME).block_digests().values()})
    for pid, image in committed.items():
        assert read_point(reader, pid) == image


def test_a_condemned_chunk_is_not_reused_until_the_gc_ends(s3_repo_url: str) -> None:
    """A writer that needs a chunk gc has condemned (and its ack did not keep) waits for that gc to end,
    then writes the chunk again, instead of reusing the copy gc is about to delete. The gc is held in
    its acknowledgement step by a second writer process, stopped meanwhile."""
    url, seed, ttl = s3_repo_url, 11, 8.0
    make_old_pool(url, seed, [0, 1])
    repo = open_quick(url)
    repo.lease_ttl_s = ttl
    pw, dw = start_point(repo, 1)
    proc, _ = spawn_writer(url, seed + 1, [0], [1], ttl=ttl)
    os.kill(proc.pid, signal.SIGSTOP)
    gc_repo = open_quick(url)
    gc_repo.lease_ttl_s = ttl
    reports: list[Any] = []
    gc_thread = threading.Thread(target=lambda: reports.append(gc_repo.gc()))
    outcome: list[str] = []
    try:
        gc_thread.start()
        wait_for(lambda: gc_condemned(gc_repo), 10, "gc to condemn the old chunks")
        lease = repo._lease(pw.point_id)
        wait_for(lambda: lease.honour_id is not None, 10, "the writer to acknowledge the gc")
        put = threading.Thread(target=lambda: outcome.append(dw.put_block(0, pool_block(seed, 0))))
        put.start()
        wait_for(lambda: lease.waiting or not put.is_alive(), 10, "the put to wait or finish")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    gc_thread.join(30)
    put.join(30)
    assert reports and reports[0].chunks_removed == 2
    assert outcome == ["stored"]  # written again after the gc deleted the old copy
    point = pw.commit()
    assert read_point(repo, point.id) == pool_block(seed, 0)
    assert finish_writer(proc)[0] == "COMMITTED"


def test_a_killed_writer_leaves_nothing_gc_keeps(s3_repo_url: str) -> None:
    url = s3_repo_url
    repo = open_quick(url)
    pw, dw = start_point(repo, 2)
    dw.put_block(0, pool_block(1, 0))
    dw.put_block(1, pool_block(1, 1))
    kept = pw.commit()
    proc, point_id = spawn_writer(url, 2, [0, 1, 2, 3], [4])
    assert repo._head(f"leases/{point_id}.json") is not None
    proc.kill()
    proc.wait(10)
    lease_meta = repo._head(f"leases/{point_id}.json")
    wait_store_clock_past(repo, lease_meta["last_modified"].timestamp() + TTL + 1)
    report = repo.gc()
    assert report.leases_removed == 1 and report.live_leases == 0
    assert report.chunks_removed == 4
    assert repo._head(f"leases/{point_id}.json") is None and repo._head(f"points/{point_id}.json") is None
    assert [p.id for p in repo.points()] == [kept.id]
    assert point_id in repo._catalog_doc()[0]["fenced"]
    assert repo.disk_usage()[0] == 2
    assert read_point(repo, kept.id) == pool_block(1, 0) + pool_block(1, 1)
    assert repo._head(GC_KEY) is None


def test_a_fenced_writer_cannot_commit(s3_repo_url: str) -> None:
    """A writer that stalls past the lease TTL (SIGSTOP: a long pause, a partition) is fenced by gc, which
    then deletes the chunks it wrote; when it wakes up its commit is refused."""
    url = s3_repo_url
    repo = open_quick(url)
    proc, point_id = spawn_writer(url, 3, [0, 1, 2], [3])
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        lease_meta = repo._head(f"leases/{point_id}.json")
        wait_store_clock_past(repo, lease_meta["last_modified"].timestamp() + TTL + 1)
        report = repo.gc()
        assert report.leases_removed == 1 and report.chunks_removed == 3
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    said = finish_writer(proc)
    assert said[0] == "REFUSED" and "lease lost" in said[1], said
    assert repo.points() == []
    assert point_id in repo._catalog_doc()[0]["fenced"]


def test_fenced_commit_is_refused_by_the_catalog(s3_repo_url: str) -> None:
    """The catalog's fence alone refuses the commit (even where the writer has not noticed yet)."""
    repo = open_quick(url := s3_repo_url)
    pw, dw = start_point(repo, 1)
    dw.put_block(0, pool_block(4, 0))
    open_quick(url)._fence(pw.point_id)
    with pytest.raises(Exception, match="lease lost"):
        pw.commit()
    assert repo.points() == []


def test_an_incremental_keeps_its_base_through_prune_and_gc(s3_repo_url: str) -> None:
    """The base is named in the writer's lease before the catalog is read: prune removes the base's
    entry but keeps its manifest, gc keeps its chunks, and the incremental commits and reads back whole."""
    url = s3_repo_url
    repo = open_quick(url)
    pw, dw = start_point(repo, 4)
    for i in range(4):
        dw.put_block(i, pool_block(5, i))
    base = pw.commit()
    wait_store_clock_past(repo, newest_chunk(repo) + CLOCK_SLACK_S + 1)
    pw = repo.new_point(vm_urn="urn:sites:1:vms:i-s3", vm_name="s3vm", job_id="job-s3", kind="cbt",
                        vm_config={}, snapshot_urn="urn:snap:2", created=time.time())
    dw = pw.add_disk(volume_urn=VOLUME, disk_name="d0", sequence_num=1, pci_type="VIRTIO", size_bytes=4 * BS,
                     block_size=BS, storage_type="LOCALPOME", datastore_urn="urn:ds:1", cbt=None,
                     base_point_id=base.id)
    other = open_quick(url)
    assert other.prune(0, "urn:sites:1:vms:i-s3").removed == [base.id]
    assert other._head(f"points/{base.id}.json") is not None  # a live lease names it as base
    assert other.gc().chunks_removed == 0
    dw.put_block(2, pool_block(5, 9))
    incr = pw.commit()
    assert read_point(other, incr.id) == b"".join(pool_block(5, i) for i in (0, 1, 9, 3))
    wait_store_clock_past(other, newest_chunk(other) + CLOCK_SLACK_S + 1)
    report = other.gc()  # the base is gone now: its manifest and its one unshared chunk
    assert report.chunks_removed == 1 and report.manifests_removed == 1
    assert read_point(other, incr.id) == b"".join(pool_block(5, i) for i in (0, 1, 9, 3))


def test_a_dead_gc_binds_nobody_after_the_ttl(s3_repo_url: str) -> None:
    """gc.json left by a gc that was killed (it condemned a chunk and never renewed): a writer that needs
    that chunk waits only until the store says gc.json is a TTL old, and the next gc replaces it."""
    url, seed = s3_repo_url, 13
    make_old_pool(url, seed, [0])
    repo = open_quick(url)
    digest = __import__("hashlib").sha256(pool_block(seed, 0)).hexdigest()
    repo._put_raw(GC_KEY, json.dumps({"id": "killed", "state": "condemned", "candidates": [digest]}).encode())
    left = repo._head(GC_KEY)["last_modified"].timestamp()
    with pytest.raises(RepoBusyError):
        open_quick(url).gc()
    pw, dw = start_point(repo, 1)
    assert repo._lease(pw.point_id).honour_id == "killed"  # honoured at once, at the lease's start
    assert dw.put_block(0, pool_block(seed, 0)) == "reused"  # after the wait: the chunk is still there
    assert repo._store_now() - left > TTL
    point = pw.commit()
    report = open_quick(url).gc()  # replaces the stale gc.json
    assert report.chunks_referenced == 1 and repo._head(GC_KEY) is None
    assert read_point(repo, point.id) == pool_block(seed, 0)


def test_gc_in_a_loop_beside_free_running_writers(s3_repo_url: str) -> None:
    """Little choreography: writers (threads, and a process) keep writing points that reuse old
    unreferenced chunks and write new ones while gc runs round after round (every other point stays open
    over a whole gc round); every committed point reads back."""
    url, seed = s3_repo_url, 17
    pool = list(range(200))
    make_old_pool(url, seed, pool)
    committed: dict[str, bytes] = {}
    failures: list[BaseException] = []
    done = threading.Event()
    started = threading.Semaphore(0)  # a writer has touched the blocks of a point it keeps open

    def write(w: int) -> None:
        rng = random.Random(w)
        repo = open_quick(url)
        try:
            for k in range(4):
                numbers = rng.sample(pool, 6) + [1000 + w * 10 + k]  # reused old ones, and a new one
                pw, dw = start_point(repo, len(numbers))
                for i, n in enumerate(numbers):
                    dw.put_block(i, pool_block(seed, n))
                if k % 2 == 0:  # keep this point open across a whole gc round before committing it
                    started.release()
                    seen = len(rounds)
                    wait_for(lambda: len(rounds) > seen or failures, 60, "a gc round")
                point = pw.commit()
                committed[point.id] = b"".join(pool_block(seed, n) for n in numbers)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    rounds: list[Any] = []

    def collect() -> None:
        repo = open_quick(url)
        while not done.is_set() or len(rounds) < 3:
            try:
                rounds.append(repo.gc())
            except RepoBusyError:
                pass
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)
                return

    proc, proc_point = spawn_writer(url, seed, pool[:5], pool[30:35])
    writers = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    for t in writers:
        t.start()
    for _ in writers:  # the first gc finds every writer with a point open
        assert started.acquire(timeout=30)
    gc_thread = threading.Thread(target=collect)
    gc_thread.start()
    said = finish_writer(proc)
    for t in writers:
        t.join(120)
    done.set()
    gc_thread.join(120)
    assert not failures, failures
    assert said[0] == "COMMITTED", said
    committed[said[1]] = b"".join(pool_block(seed, n) for n in pool[:5] + pool[30:35])
    assert len(committed) == 13 and len(rounds) >= 3
    assert sum(r.chunks_removed for r in rounds) > 0  # the pool blocks nobody took were collected
    reader = open_quick(url)
    for pid, image in committed.items():
        assert read_point(reader, pid) == image, f"point {pid} lost a chunk to gc"
    assert reader.verify().ok


def test_a_restore_keeps_its_point_through_prune_and_gc(s3_repo_url: str) -> None:
    """protect(): a reader lease names the point before the catalog is checked; a prune and a gc from
    elsewhere meanwhile leave its manifest and chunks, and the reader reads it whole; afterwards gc frees them."""
    url = s3_repo_url
    repo = open_quick(url)
    pw, dw = start_point(repo, 3)
    for i in range(3):
        dw.put_block(i, pool_block(19, i))
    point = pw.commit()
    wait_store_clock_past(repo, newest_chunk(repo) + CLOCK_SLACK_S + 1)
    other = open_quick(url)
    with repo.protect([point.id]):
        reader = repo.open_disk(point.id, VOLUME)
        assert other.prune(0, "urn:sites:1:vms:i-s3").removed == [point.id]
        report = other.gc()
        assert report.live_leases == 1 and report.chunks_removed == 0 and report.manifests_removed == 0
        assert b"".join(reader.read_block(i) for i in range(3)) == b"".join(pool_block(19, i) for i in range(3))
    report = other.gc()
    assert report.chunks_removed == 3 and report.manifests_removed == 1 and other.disk_usage() == (0, 0)
