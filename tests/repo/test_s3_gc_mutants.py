"""gc of the S3 repository (a real SeaweedFS on loopback), where mutation testing found it unguarded (README,
Mutation testing): the report's every count and what stays on the store after a gc (quarantined copies,
stray objects, orphan manifests, the empty ``clock``, more chunks than one delete request takes); which
chunks live leases keep (newer than their start, named through their bases and read fresh from the store,
kept in their answer, or not); dead leases fenced and counted, before and while gc waits for answers, and
leases exactly a TTL old not; how long gc waits for leases that never answer and what it says; objects
exactly at the cutoff; what an operator finds in ``gc.json`` and the thread dump while a gc runs; and the
races for ``gc.json`` (a stale one taken by another first, one taken or ended under a starting gc, one a
TTL old). Leases and stray objects another program left are written straight to the store. The store's
clock ticks in whole seconds: "old" is waited for, and an exact boundary is tried until it is hit."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import obstore
import pytest

from fctui.repo import RepoBusyError, RepoError, Repository
from fctui.repo.model import GcReport
from fctui.repo.repository import _HOST
from fctui.repo.s3 import CLOCK_SLACK_S, GC_KEY, S3Repository, _Lease, _stamp
from tests.repo.test_repo_points import BS, write_disk
from tests.repo.test_s3_gc import newest_chunk, wait_for, wait_store_clock_past
from tests.repo.test_s3_mutants import exists, gc_json, in_thread, lease_doc, put_gc_json, set_catalog


@pytest.fixture
def repo(s3_repo_url: str) -> S3Repository:
    r = Repository.open(s3_repo_url)
    assert isinstance(r, S3Repository)
    return r


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_size(repo: S3Repository, d: str) -> int:
    return int(repo._head(repo._chunk_key(d))["size"])


def store_keys(repo: S3Repository) -> set[str]:
    return {m["path"] for batch in obstore.list(repo.store, None) for m in batch}


def stamp(repo: S3Repository, key: str) -> float:
    return _stamp(repo._head(key))


def wait_until_old(repo: S3Repository, *keys: str) -> None:
    """Until the store's clock is far enough past these objects that a gc starting now finds them older
    than its start less the slack."""
    newest = max(stamp(repo, k) for k in keys)
    wait_store_clock_past(repo, newest + CLOCK_SLACK_S + 1)


def hand_lease(repo: S3Repository, lease_id: str, data: dict[str, Any]) -> None:
    obstore.put(repo.store, f"leases/{lease_id}.json", json.dumps(data).encode())


def answering_lease(url: str, lease_id: str, bases: list[str]) -> _Lease:
    """A writer's lease on "another machine" that looks at gc.json often, so it acknowledges a gc at once."""
    other = Repository.open(url)
    other.gc_poll_s = 0.05
    lease = _Lease(other, lease_id, {"base_point_ids": bases})
    lease.start()
    return lease


def gc_json_bodies(m: pytest.MonkeyPatch) -> list[Any]:
    """Every body written to gc.json from now on, in order."""
    bodies: list[Any] = []
    real = obstore.put

    def put(store: Any, key: str, data: Any, *args: Any, **kwargs: Any) -> Any:
        if key == GC_KEY:
            bodies.append(json.loads(bytes(data)))
        return real(store, key, data, *args, **kwargs)
    m.setattr(obstore, "put", put)
    return bodies


def on_first_lease_listing(m: pytest.MonkeyPatch, action: Any) -> None:
    """Run ``action`` when gc first lists the leases: it holds gc.json by then and has decided nothing."""
    real = obstore.list
    done: list[bool] = []

    def listing(store: Any, prefix: Any = None, *args: Any, **kwargs: Any) -> Any:
        if prefix == "leases/" and not done:
            done.append(True)
            action()
        return real(store, prefix, *args, **kwargs)
    m.setattr(obstore, "list", listing)


# --- what gc removes and reports ------------------------------------------------------------
def test_gc_removes_exactly_what_nobody_references_and_reports_every_count(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, z, w = (bytes([n]) * BS for n in (0x31, 0x32, 0x33, 0x34))
    kept, _, _ = write_disk(repo, {0: x, 1: y}, 2 * BS)
    forgotten, _, _ = write_disk(repo, {0: x, 1: z, 2: w}, 3 * BS)  # x shared with the kept point
    repo.forget(forgotten.id)
    z_size = chunk_size(repo, digest(z))
    repo._quarantine_chunk(digest(y))  # the kept point's: its copy stays for a repair
    repo._quarantine_chunk(digest(w))  # nobody's any more: its copy goes
    # A stray quarantined copy listed before every chunk, a stray object in chunks/ that is no chunk (both
    # sort first: gc must look past them), an operator's copy of a chunk outside chunks/, a manifest
    # nobody names, a note beside the manifests that is none.
    stray_bad = f"chunks/00/{'0' * 64}.bad"
    junk = "chunks/00/1-not-a-chunk"
    saved = f"saved/{digest(x)}"
    orphan = "points/20261204T000000-00000000.json"
    note = "points/README"
    for key in (stray_bad, junk, saved, orphan, note):
        obstore.put(repo.store, key, b"{}")
    wait_until_old(repo, repo._chunk_key(digest(z)), orphan, junk, note)
    fresh = [bytes([n]) * BS for n in (0x35, 0x36)]  # unreferenced, but as new as the gc: a writer may use them
    for f in fresh:
        obstore.put(repo.store, repo._chunk_key(digest(f)), b"FCR1" + f)
    bodies = gc_json_bodies(monkeypatch)
    report = repo.gc()
    assert report == GcReport(chunks_total=4, chunks_referenced=2, chunks_removed=1, bytes_removed=z_size,
                              chunks_kept_recent=2, manifests_removed=1)  # total: x, z, fresh (y moved away)
    assert store_keys(repo) == {
        "repo.json", "catalog.json", "clock", f"points/{kept.id}.json", junk, saved, note,
        repo._chunk_key(digest(x)), repo._chunk_key(digest(y)) + ".bad",
        *(repo._chunk_key(digest(f)) for f in fresh)}
    assert int(repo._head("clock")["size"]) == 0  # written only for its last_modified
    condemned = [b for b in bodies if b.get("state") == "condemned"]
    assert condemned == [{"id": bodies[0]["id"], "host": _HOST, "pid": os.getpid(), "state": "condemned",
                          "candidates": [digest(z)]}]


def test_gc_beside_a_lease_that_names_no_bases_and_no_start(repo: S3Repository) -> None:
    """A lease another program wrote (or an older fctui's) with neither ``base_point_ids`` nor ``started``:
    live, so gc keeps it and counts it; its last renewal stands for its start."""
    hand_lease(repo, "p-hand", {"point_id": "p-hand"})
    fresh = bytes([0x36]) * BS
    obstore.put(repo.store, repo._chunk_key(digest(fresh)), b"FCR1" + fresh)
    report = repo.gc()
    assert report == GcReport(chunks_total=1, chunks_kept_recent=1, live_leases=1)
    assert exists(repo, "leases/p-hand.json") and exists(repo, repo._chunk_key(digest(fresh)))


def test_gc_keeps_chunks_newer_than_a_live_leases_start_though_it_renewed_since(
        repo: S3Repository, s3_repo_url: str) -> None:
    """The cutoff is the oldest live lease's start, not its last renewal: a chunk written after the writer
    began may be one it is about to use."""
    lease = answering_lease(s3_repo_url, "p-early", [])
    lease.repo.lease_renew_s = 0.1
    try:
        c = bytes([0x37]) * BS
        key = repo._chunk_key(digest(c))
        obstore.put(repo.store, key, b"FCR1" + c)
        assert lease_doc(repo, "p-early")["started"] <= stamp(repo, key)
        wait_for(lambda: stamp(repo, "leases/p-early.json") > stamp(repo, key) + CLOCK_SLACK_S + 1, 30,
                 "the lease to be renewed well after the chunk")
        report = repo.gc()
        assert (report.chunks_removed, report.chunks_kept_recent, report.live_leases) == (0, 1, 1)
        assert exists(repo, key)
    finally:
        lease.stop(delete=True)


def test_gc_keeps_the_chunks_of_every_base_a_live_lease_names(repo: S3Repository, s3_repo_url: str) -> None:
    """A lease names its own point (no manifest yet) and two bases out of the catalog: one whose manifest
    is on the store (its chunks kept, though it comes after the lease's own in order), one whose manifest
    is gone though this repository object read it before (its chunks go: gc reads the store, not a cache)."""
    b_blocks = {0: bytes([0x41]) * BS, 1: bytes([0x42]) * BS}
    c_blocks = {0: bytes([0x43]) * BS, 1: bytes([0x44]) * BS}
    b, _, _ = write_disk(repo, b_blocks, 2 * BS)
    c, _, _ = write_disk(repo, c_blocks, 2 * BS)
    assert repo._load_manifest(c.id)["maps"]
    set_catalog(repo, [])
    obstore.delete(repo.store, repo._manifest_key(c.id))
    c_sizes = sum(chunk_size(repo, digest(v)) for v in c_blocks.values())
    wait_until_old(repo, *(repo._chunk_key(digest(v)) for v in (*b_blocks.values(), *c_blocks.values())))
    lease = answering_lease(s3_repo_url, "0-writer", [b.id, c.id])  # sorts before the bases' ids
    try:
        report = repo.gc()
        assert report == GcReport(chunks_total=4, chunks_referenced=2, chunks_removed=2, bytes_removed=c_sizes,
                                  live_leases=1)
        assert all(exists(repo, repo._chunk_key(digest(v))) for v in b_blocks.values())
        assert not any(exists(repo, repo._chunk_key(digest(v))) for v in c_blocks.values())
        assert exists(repo, repo._manifest_key(b.id))  # named by a live lease
    finally:
        lease.stop(delete=True)


# --- dead leases -----------------------------------------------------------------------------
def test_gc_fences_and_counts_every_dead_lease(repo: S3Repository) -> None:
    repo.lease_ttl_s = 1.0
    for lid in ("p-dead1", "p-dead2"):
        hand_lease(repo, lid, {"point_id": lid, "base_point_ids": []})
    newest = max(stamp(repo, f"leases/{lid}.json") for lid in ("p-dead1", "p-dead2"))
    wait_store_clock_past(repo, newest + 2)
    report = repo.gc()
    assert (report.leases_removed, report.live_leases) == (2, 0)
    assert not exists(repo, "leases/p-dead1.json") and not exists(repo, "leases/p-dead2.json")
    assert sorted(repo._catalog_doc()[0]["fenced"]) == ["p-dead1", "p-dead2"]


def gc_starts(repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each gc from now on began on the store's clock: gc.json's last_modified as it lists the leases."""
    began: list[float] = []
    real = obstore.list

    def listing(store: Any, prefix: Any = None, *args: Any, **kwargs: Any) -> Any:
        if prefix == "leases/":
            began.append(stamp(repo, GC_KEY))
        return real(store, prefix, *args, **kwargs)
    monkeypatch.setattr(obstore, "list", listing)
    return began


def test_a_lease_exactly_a_ttl_old_is_live(repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dead means last renewed *more* than a TTL before gc began. The store's clock ticks in whole seconds,
    so a gc begun exactly a TTL after the lease's renewal happens; tried until it does."""
    repo.lease_ttl_s = 1.0
    began = gc_starts(repo, monkeypatch)
    for attempt in range(20):
        lid = f"p-edge{attempt}"
        hand_lease(repo, lid, {"point_id": lid, "base_point_ids": []})
        renewed = stamp(repo, f"leases/{lid}.json")
        wait_for(lambda: repo._store_now() >= renewed + 1, 30, "a second of the store's clock")
        began.clear()
        report = repo.gc()
        if began[0] == renewed + 1:
            assert (report.leases_removed, report.live_leases) == (0, 1)
            assert exists(repo, f"leases/{lid}.json") and lid not in repo._catalog_doc()[0]["fenced"]
            return
        obstore.delete(repo.store, f"leases/{lid}.json")
    pytest.fail("no gc began exactly a TTL after a lease's renewal in 20 tries")


# --- gc.json ------------------------------------------------------------------------------
def test_while_gc_runs_gc_json_and_a_thread_name_it(repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """What an operator finds while a gc collects: gc.json names the gc, its host and process, as created
    and as renewed, and the thread that renews it is a daemon named after the same gc."""
    repo.lease_ttl_s = 0.4  # renewed every 0.1 s
    found: list[Any] = []
    with monkeypatch.context() as m:
        bodies = gc_json_bodies(m)

        def look() -> None:
            wait_for(lambda: len(bodies) >= 3, 10, "two renewals of gc.json")
            found.append([(t.name, t.daemon) for t in threading.enumerate() if t.name.startswith("fctui-gc-")])
        on_first_lease_listing(m, look)
        repo.gc()
    [threads] = found
    gc_id = bodies[0]["id"]
    assert isinstance(gc_id, str) and gc_id
    assert all(b == {"id": gc_id, "host": _HOST, "pid": os.getpid(), "state": "collecting"} for b in bodies)
    assert threads == [(f"fctui-gc-{gc_id}", True)]
    assert not exists(repo, GC_KEY)


def test_a_gc_that_lost_gc_json_leaves_what_is_there(repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """gc deletes gc.json at its end only if it is still its own: another gc that took it over keeps
    it; one that is gone (deleted by hand) is no error."""
    with monkeypatch.context() as m:
        on_first_lease_listing(m, lambda: put_gc_json(repo, {"id": "gc-other", "state": "collecting"}))
        repo.gc()
    assert gc_json(repo) == {"id": "gc-other", "state": "collecting"}
    obstore.delete(repo.store, GC_KEY)
    with monkeypatch.context() as m:
        on_first_lease_listing(m, lambda: obstore.delete(repo.store, GC_KEY))
        assert repo.gc() == GcReport()
    assert not exists(repo, GC_KEY)


def test_a_gc_beside_another_refuses_as_busy_even_when_the_stores_clock_is_unreadable(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock object gone right after its write (a store that lost it): the age of the other gc.json is
    unknown, so it is not taken over."""
    put_gc_json(repo, {"id": "gc-other", "state": "collecting"})
    real = obstore.head

    def head(store: Any, key: str) -> Any:
        if key == "clock":
            raise FileNotFoundError(key)
        return real(store, key)
    with monkeypatch.context() as m:
        m.setattr(obstore, "head", head)
        with pytest.raises(RepoBusyError) as e:
            repo.gc()
    assert str(e.value).startswith(f"repository {repo.url}: another gc is running ({GC_KEY} is ")
    assert gc_json(repo) == {"id": "gc-other", "state": "collecting"}


# --- the acknowledgements -------------------------------------------------------------------
def old_unreferenced_chunks(repo: S3Repository, *fills: int) -> list[str]:
    """Chunks nobody references, old enough for a gc starting now (and beside leases written now)."""
    keys = []
    for n in fills:
        data = bytes([n]) * BS
        keys.append(repo._chunk_key(digest(data)))
        obstore.put(repo.store, keys[-1], b"FCR1" + data)
    wait_until_old(repo, *keys)
    return [k.rsplit("/", 1)[-1] for k in keys]


def condemning_gc(repo: S3Repository) -> Any:
    """gc.json once a gc has condemned chunks."""
    def condemned() -> Any:
        got = repo._get_json(GC_KEY)
        return got[0] if got and got[0].get("state") == "condemned" else None
    return wait_for(condemned, 30, "a gc to condemn chunks")


def test_gc_spares_what_acknowledging_leases_keep_and_nothing_for_a_lease_without_a_keep_list(
        repo: S3Repository) -> None:
    """Two leases another program keeps answer the gc: one keeps a chunk (beside an entry that is no
    digest), the other names no ``gc_keep`` at all, which keeps nothing."""
    repo.gc_poll_s = 0.05
    keep, doomed = old_unreferenced_chunks(repo, 0x51, 0x52)
    hand_lease(repo, "p-keep", {"point_id": "p-keep"})
    hand_lease(repo, "p-bare", {"point_id": "p-bare"})

    def answer() -> None:
        doc = condemning_gc(repo)
        assert sorted(doc["candidates"]) == sorted([keep, doomed])
        hand_lease(repo, "p-keep", {"point_id": "p-keep", "gc_ack": doc["id"], "gc_keep": [keep, 5]})
        hand_lease(repo, "p-bare", {"point_id": "p-bare", "gc_ack": doc["id"]})
    t, errors = in_thread(answer)
    report = repo.gc()
    t.join(30)
    assert errors == []
    assert report == GcReport(chunks_total=2, chunks_removed=1, bytes_removed=4 + BS, chunks_kept_recent=1,
                              live_leases=2)
    assert exists(repo, repo._chunk_key(keep)) and not exists(repo, repo._chunk_key(doomed))


def test_a_lease_that_dies_while_gc_waits_for_its_answer_is_fenced_and_counted(repo: S3Repository) -> None:
    """One lease was dead when gc began, another stops renewing without answering: both are fenced (their
    writers can no longer commit), both counted, and the condemned chunk goes."""
    repo.lease_ttl_s, repo.gc_poll_s = 2.0, 0.05
    hand_lease(repo, "p-gone", {"point_id": "p-gone"})
    [chunk] = old_unreferenced_chunks(repo, 0x53)
    wait_store_clock_past(repo, stamp(repo, "leases/p-gone.json") + 2)
    hand_lease(repo, "p-stall", {"point_id": "p-stall"})
    report = repo.gc()
    assert (report.leases_removed, report.live_leases, report.chunks_removed) == (2, 1, 1)
    assert not exists(repo, "leases/p-gone.json") and not exists(repo, "leases/p-stall.json")
    assert sorted(repo._catalog_doc()[0]["fenced"]) == ["p-gone", "p-stall"]
    assert not exists(repo, repo._chunk_key(chunk))


def test_gc_gives_up_after_two_ttls_on_leases_that_renew_but_never_answer(repo: S3Repository) -> None:
    """Leases kept alive by something that does not speak the gc protocol: gc waits two TTLs (and ten
    polls), names them, deletes nothing and leaves no gc.json."""
    repo.lease_ttl_s, repo.gc_poll_s = 2.0, 0.05
    [chunk] = old_unreferenced_chunks(repo, 0x54)
    stop = threading.Event()

    def renew() -> None:
        while not stop.is_set():
            for lid in ("p-mute1", "p-mute2"):
                hand_lease(repo, lid, {"point_id": lid})
            stop.wait(0.2)
    hand_lease(repo, "p-mute1", {"point_id": "p-mute1"})
    hand_lease(repo, "p-mute2", {"point_id": "p-mute2"})
    condemned_at: list[float] = []
    t, errors = in_thread(renew)
    watch, watch_errors = in_thread(lambda: condemned_at.append(condemning_gc(repo) and time.monotonic()))
    try:
        with pytest.raises(RepoError) as e:
            repo.gc()
        took = time.monotonic() - condemned_at[0]  # the wait for answers begins once the chunk is condemned
    finally:
        stop.set()
        t.join(30)
        watch.join(30)
    assert errors == [] and watch_errors == []
    assert str(e.value) == "gc: lease(s) p-mute1, p-mute2 neither answered nor expired within 4 s; nothing deleted"
    # 2 TTLs and 10 polls (4.5 s): not 10 polls less, nor a TTL more (the watcher sees the condemned
    # gc.json a little late, so took runs short by that)
    assert 4.0 <= took < 6.2
    assert exists(repo, repo._chunk_key(chunk)) and not exists(repo, GC_KEY)
    assert repo._catalog_doc()[0]["fenced"] == []


# --- the cutoff ---------------------------------------------------------------------------------
def test_a_chunk_and_a_manifest_exactly_at_the_cutoff_are_kept(repo: S3Repository,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept means as new as gc's start less the slack, or newer. The store's clock ticks in whole seconds,
    so an object exactly that old happens; tried until it does."""
    began = gc_starts(repo, monkeypatch)
    for attempt in range(20):
        data = bytes([0x60 + attempt]) * BS
        key, manifest = repo._chunk_key(digest(data)), f"points/20261204T000000-0000{attempt:04d}.json"
        obstore.put(repo.store, key, b"FCR1" + data)
        obstore.put(repo.store, manifest, b"{}")
        written = stamp(repo, key)
        if stamp(repo, manifest) != written:
            continue
        wait_for(lambda: repo._store_now() >= written + CLOCK_SLACK_S, 30, "the store's clock to reach the slack")
        began.clear()
        report = repo.gc()
        if began[0] == written + CLOCK_SLACK_S:
            assert (report.chunks_removed, report.chunks_kept_recent, report.manifests_removed) == (0, 1, 0)
            assert exists(repo, key) and exists(repo, manifest)
            return
    pytest.fail("no gc began exactly the slack after an object's write in 20 tries")


def test_gc_counts_every_chunk_and_byte_it_deletes_over_several_delete_requests(repo: S3Repository) -> None:
    """More unreferenced chunks than one delete request takes (500): every one goes, and the report
    counts them all, with their bytes."""
    bodies = {digest(n.to_bytes(4, "big")): b"FCR1" + n.to_bytes(4, "big") * (1 + n % 3) for n in range(501)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda d: obstore.put(repo.store, repo._chunk_key(d), bodies[d]), bodies))
    wait_store_clock_past(repo, newest_chunk(repo) + CLOCK_SLACK_S + 1)
    report = repo.gc()
    assert (report.chunks_total, report.chunks_removed, report.bytes_removed) == (
        501, 501, sum(len(b) for b in bodies.values()))
    assert repo.disk_usage() == (0, 0)


def test_a_lease_exactly_a_ttl_old_while_gc_waits_for_it_may_still_answer(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """While gc waits for answers, a lease is dead only once the store's clock is *more* than a TTL past
    its last renewal: one that answers while the clock reads exactly a TTL past it is not fenced. The clock
    ticks in whole seconds; tried until gc read that second twice before the answer."""
    repo.lease_ttl_s, repo.gc_poll_s = 1.0, 0.05
    gc_thread = threading.current_thread()
    gc_reads: list[float] = []  # the store's clock as the gc read it
    real = obstore.head

    def head(store: Any, key: str) -> Any:
        got = real(store, key)
        if key == "clock" and threading.current_thread() is gc_thread:
            gc_reads.append(got["last_modified"].timestamp())
        return got
    for attempt in range(20):
        old_unreferenced_chunks(repo, 0x70 + attempt)
        lid = f"p-late{attempt}"
        hand_lease(repo, lid, {"point_id": lid})
        renewed = stamp(repo, f"leases/{lid}.json")
        done = threading.Event()
        answered_after: list[list[float]] = []

        def answer() -> None:
            doc = condemning_gc(repo)
            wait_for(lambda: gc_reads.count(renewed + 1) >= 2 or done.is_set(), 30, "gc to read the clock a TTL on")
            answered_after.append(list(gc_reads))
            hand_lease(repo, lid, {"point_id": lid, "gc_ack": doc["id"], "gc_keep": []})
        gc_reads.clear()
        t, errors = in_thread(answer)
        try:
            with monkeypatch.context() as m:
                m.setattr(obstore, "head", head)
                report = repo.gc()
        finally:
            done.set()
            t.join(30)
        assert errors == []
        [reads] = answered_after
        if reads.count(renewed + 1) >= 2 and max(reads) == renewed + 1:
            assert (report.leases_removed, report.live_leases, report.chunks_removed) == (0, 1, 1)
            assert lid not in repo._catalog_doc()[0]["fenced"]
            return
        obstore.delete(repo.store, f"leases/{lid}.json")
    pytest.fail("gc never read the store's clock exactly a TTL past a lease's renewal twice in 20 tries")


# --- taking gc.json -----------------------------------------------------------------------------
def stale_gc_json(repo: S3Repository) -> None:
    """A gc.json a TTL (1 s) old: its gc died."""
    repo.lease_ttl_s = 1.0
    put_gc_json(repo, {"id": "gc-dead", "state": "condemned", "candidates": []})
    left = stamp(repo, GC_KEY)
    wait_store_clock_past(repo, left + 1)


def busy_gc(repo: S3Repository, monkeypatch: pytest.MonkeyPatch, op: str, rival: Any) -> str:
    """gc with ``obstore.<op>`` replaced by ``rival`` (which lets another gc in): it refuses as busy and
    leaves the other's gc.json; its message."""
    with monkeypatch.context() as m:
        m.setattr(obstore, op, rival)
        with pytest.raises(RepoBusyError) as e:
            repo.gc()
    assert gc_json(repo) == {"id": "gc-rival"}
    return str(e.value)


def test_a_gc_that_loses_the_race_to_replace_a_stale_gc_json_is_busy(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two gcs find the same dead gc.json; the other replaces it first: this one's replacement is
    conditional on the dead one, so it is refused and the other's gc.json stays."""
    stale_gc_json(repo)
    real = obstore.put

    def put(store: Any, key: str, data: Any, *args: Any, mode: Any = None, **kwargs: Any) -> Any:
        if key == GC_KEY and isinstance(mode, dict):
            real(store, key, json.dumps({"id": "gc-rival"}).encode())
        return real(store, key, data, *args, mode=mode, **kwargs)
    assert busy_gc(repo, monkeypatch, "put", put) == f"repository {repo.url}: another gc is starting"


def test_a_gc_whose_new_gc_json_another_took_at_once_is_busy(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another gc replaced gc.json between this one's create and its look at it: this one stops, and
    leaves the other's gc.json (it deleted nothing)."""
    real = obstore.head
    taken: list[bool] = []

    def head(store: Any, key: str) -> Any:
        if key == GC_KEY and not taken:
            taken.append(True)
            put_gc_json(repo, {"id": "gc-rival"})
        return real(store, key)
    assert busy_gc(repo, monkeypatch, "head", head) == f"repository {repo.url}: another gc took gc.json"


def test_a_gc_json_that_ends_while_gc_begins_is_created_afresh_with_the_gcs_id(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """The running gc ends between this one's refused create and its look: this one creates gc.json
    again, naming itself."""
    put_gc_json(repo, {"id": "gc-ending", "state": "collecting"})
    real = obstore.head
    ended: list[bool] = []

    def head(store: Any, key: str) -> Any:
        if key == GC_KEY and not ended:
            ended.append(True)
            obstore.delete(store, GC_KEY)
        return real(store, key)
    with monkeypatch.context() as m:
        bodies = gc_json_bodies(m)
        m.setattr(obstore, "head", head)
        assert repo.gc() == GcReport()
    assert ended and len(bodies) >= 2  # the refused create, then the one that took
    ids = {b["id"] for b in bodies}
    assert len(ids) == 1 and isinstance(bodies[0]["id"], str)


def test_a_gc_json_exactly_a_ttl_old_is_still_busy(repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stale means *more* than a TTL old on the store's clock, which ticks in whole seconds; tried until
    the gc read the clock exactly a TTL past gc.json."""
    repo.lease_ttl_s = 1.0
    reads: list[float] = []
    real = obstore.head

    def head(store: Any, key: str) -> Any:
        got = real(store, key)
        if key == "clock":
            reads.append(got["last_modified"].timestamp())
        return got
    for _ in range(20):
        put_gc_json(repo, {"id": "gc-other", "state": "collecting"})
        left = stamp(repo, GC_KEY)
        wait_for(lambda: repo._store_now() >= left + 1, 30, "a second of the store's clock")
        reads.clear()
        with monkeypatch.context() as m:
            m.setattr(obstore, "head", head)
            try:
                repo.gc()
                busy = None
            except RepoBusyError as exc:
                busy = exc
        if reads == [left + 1]:
            assert str(busy) == f"repository {repo.url}: another gc is running (gc.json is 1 s old)"
            return
    pytest.fail("no gc read the store's clock exactly a TTL past gc.json in 20 tries")
