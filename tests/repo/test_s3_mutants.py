"""The S3 repository (a real SeaweedFS on loopback), where mutation testing found it unguarded (README,
Mutation testing): ``forget`` as a caller sees it (which entry ``#N`` is, what is left in the catalog and
on the store, the exact sentence it returns, the same as the local repository's), the message of an S3
error (what an operator reads when the store refuses), and the warning when a chunk cannot be quarantined.
Catalog entries a hand edit or another program left are written straight into ``catalog.json``."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from datetime import timedelta
import types
from typing import Any

import obstore
import pytest
from obstore.exceptions import GenericError, PreconditionError

from fctui.repo import PointNotFoundError, RepoError, Repository
from fctui.repo.errors import ChunkError, ManifestError, NoRepositoryError, RepoBusyError
import fctui.repo.s3 as s3
from fctui.repo.s3 import S3Repository, _GcHeartbeat, _Lease
from tests.repo.test_repo_points import BS, disk_args, new_point, read_all, write_disk
from tests.repo.test_s3_gc import wait_for

VM = "urn:sites:1:vms:i-7"


@pytest.fixture
def repo(s3_repo_url: str) -> S3Repository:
    r = Repository.open(s3_repo_url)
    assert isinstance(r, S3Repository)
    return r


def set_catalog(repo: S3Repository, points: list[Any]) -> None:
    obstore.put(repo.store, "catalog.json", json.dumps({"points": points, "fenced": []}).encode())


def catalog_points(repo: S3Repository) -> list[Any]:
    return json.loads(bytes(obstore.get(repo.store, "catalog.json").bytes()))["points"]


def exists(repo: S3Repository, key: str) -> bool:
    return repo._head(key) is not None


def store_refuses(m: pytest.MonkeyPatch, op: str, message: str = "  ", under: str = "") -> None:
    """The store fails ``obstore.<op>`` (GenericError) for keys under ``under`` (all by default)."""
    real = getattr(obstore, op)

    def refuse(store: Any, key: Any, *args: Any, **kwargs: Any) -> Any:
        if str(key).startswith(under):
            raise GenericError(message)
        return real(store, key, *args, **kwargs)
    m.setattr(obstore, op, refuse)


# --- forget ---------------------------------------------------------------------------------
def test_forget_by_number_counts_entries_from_one(repo: S3Repository) -> None:
    set_catalog(repo, [{"id": "a"}, {"id": "b"}, {"id": "c"}])
    assert repo.forget("#1") == "catalog entry #1"
    assert catalog_points(repo) == [{"id": "b"}, {"id": "c"}]  # the others kept as they were
    assert repo.forget("#2") == "catalog entry #2"  # numbers are positions in the catalog as it is now
    assert catalog_points(repo) == [{"id": "b"}]


def test_forget_a_non_object_entry_by_number(repo: S3Repository) -> None:
    set_catalog(repo, ["junk", 7, {"id": "x", "vm_name": "", "vm_urn": ""}])
    assert repo.forget("x") == "catalog entry x"  # found past the entries that are not objects
    assert catalog_points(repo) == ["junk", 7]
    assert repo.forget("#2") == "catalog entry #2"
    assert repo.forget("#1") == "catalog entry #1"
    assert catalog_points(repo) == []


def test_forget_an_unknown_ref_names_it_and_changes_nothing(repo: S3Repository) -> None:
    set_catalog(repo, [{"id": "a"}])
    with pytest.raises(PointNotFoundError) as caught:
        repo.forget("nope")
    assert caught.value.point_id == "nope"
    assert str(caught.value) == "no restore point 'nope' in the repository"
    with pytest.raises(PointNotFoundError, match=r"^no restore point '#2' in the repository$"):
        repo.forget("#2")
    assert catalog_points(repo) == [{"id": "a"}]


def test_forget_a_point_names_it_and_its_vm_and_drops_its_manifest(repo: S3Repository) -> None:
    point, _, _ = write_disk(repo, {0: b"x" * BS}, BS, vm=VM, name="web-01")
    assert repo._load_manifest(point.id)["maps"]  # cached
    assert repo.forget(point.id) == f"restore point {point.id} of VM web-01"
    assert repo.points() == [] and catalog_points(repo) == []
    assert not exists(repo, f"points/{point.id}.json")
    with pytest.raises(ManifestError):
        repo._load_manifest(point.id)  # the forgotten point's cached manifest went too


def test_forget_a_damaged_entry_leaves_its_manifest_for_gc(repo: S3Repository) -> None:
    """As the local repository: only restore points lose their manifest at once; what a damaged entry
    names is gc's to judge (its id is data from the catalog, not a point this code wrote)."""
    set_catalog(repo, [{"id": "p-dam", "vm_name": "web-02"}])  # no vm_urn, created, ...: not a point
    obstore.put(repo.store, "points/p-dam.json", b"{}")
    assert repo.forget("p-dam") == "catalog entry p-dam of VM web-02"
    assert catalog_points(repo) == []
    assert exists(repo, "points/p-dam.json")


def test_forget_names_the_vm_by_name_else_by_urn_else_not_at_all(repo: S3Repository) -> None:
    set_catalog(repo, [{"id": "n", "vm_name": "db-1", "vm_urn": VM},
                       {"id": "u", "vm_urn": VM},
                       {"id": "e", "vm_name": "", "vm_urn": ""},
                       {"id": "z", "vm_name": 5}])
    assert repo.forget("n") == "catalog entry n of VM db-1"
    assert repo.forget("u") == f"catalog entry u of VM {VM}"
    assert repo.forget("e") == "catalog entry e"
    assert repo.forget("z") == "catalog entry z"  # a name that is not text is not shown
    assert catalog_points(repo) == []


# --- S3 errors ------------------------------------------------------------------------------
def test_an_s3_refusal_names_the_repository_the_object_and_the_first_line(
        s3_repo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Repository.open(s3_repo_url)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key")
    with pytest.raises(RepoError) as caught:
        Repository.open(s3_repo_url, create=False)
    msg = str(caught.value)
    cause = caught.value.__cause__
    assert cause is not None and len(str(cause).splitlines()) > 1  # the store's answer runs on (XML)
    assert msg == f"repository {s3_repo_url}: cannot read repo.json: {str(cause).splitlines()[0]}"
    assert "403 Forbidden" in msg and "\n" not in msg and "SignatureDoesNotMatch" not in msg


def test_an_s3_error_without_text_is_named_by_its_type(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    store_refuses(monkeypatch, "list")
    with pytest.raises(RepoError) as caught:
        repo.disk_usage()
    assert str(caught.value) == f"repository {repo.url}: cannot list chunks/: GenericError"


# --- quarantine -----------------------------------------------------------------------------
def test_a_chunk_that_cannot_be_quarantined_is_logged(repo: S3Repository, caplog: pytest.LogCaptureFixture) -> None:
    digest = hashlib.sha256(b"never stored").hexdigest()
    key = f"chunks/{digest[:2]}/{digest}"
    with caplog.at_level(logging.WARNING, logger="fctui.repo.s3"):
        repo._quarantine_chunk(digest)  # already gone (another verify, a gc): nothing to copy
    [rec] = [r for r in caplog.records if r.name == "fctui.repo.s3"]
    assert rec.levelno == logging.WARNING
    assert isinstance(rec.args, tuple) and len(rec.args) == 2
    exc = rec.args[1]
    assert isinstance(exc, FileNotFoundError) and str(exc)
    assert rec.getMessage() == f"cannot quarantine {key}: {exc}"
    assert not exists(repo, key) and not exists(repo, key + ".bad")


# --- what a reader finds --------------------------------------------------------------------
def test_unavailable_blocks_tell_missing_from_quarantined(repo: S3Repository) -> None:
    blocks = {0: b"\x01" * BS, 1: b"\x02" * BS, 2: b"\x03" * BS}
    point, _, _ = write_disk(repo, blocks, 3 * BS)
    gone, bad = (hashlib.sha256(blocks[i]).hexdigest() for i in (0, 1))
    obstore.delete(repo.store, repo._chunk_key(gone))
    repo._quarantine_chunk(bad)
    reader = repo.open_disk(point.id, "urn:vol:1")
    assert reader.unavailable_blocks() == [(0, gone, "missing"), (1, bad, "quarantined")]


def test_a_disk_digest_is_recorded_on_its_own_point_only(repo: S3Repository) -> None:
    a, _, _ = write_disk(repo, {0: b"\x01" * BS}, BS)
    b, _, _ = write_disk(repo, {0: b"\x02" * BS}, BS)
    assert repo.open_disk(a.id, "urn:vol:1").sha256() == hashlib.sha256(b"\x01" * BS).hexdigest()
    again = Repository.open(repo.url)
    assert again.point(a.id).disks[0].sha256 == hashlib.sha256(b"\x01" * BS).hexdigest()
    assert again.point(b.id).disks[0].sha256 is None


# --- an incremental whose base lost a chunk --------------------------------------------------
def test_an_incremental_reads_again_the_base_blocks_whose_chunk_is_gone(repo: S3Repository) -> None:
    blocks = {0: b"\x01" * BS, 1: b"\x02" * BS, 2: b"\x03" * BS}
    base, _, _ = write_disk(repo, blocks, 3 * BS)
    with new_point(repo) as pw:
        assert pw.add_disk(**disk_args("urn:vol:1", 3 * BS, base.id)).heal_blocks == []
    obstore.delete(repo.store, repo._chunk_key(hashlib.sha256(blocks[1]).hexdigest()))
    with new_point(repo) as pw:
        assert pw.add_disk(**disk_args("urn:vol:1", 3 * BS, base.id)).heal_blocks == [1]


# --- fencing a dead writer's lease (gc) --------------------------------------------------------
def test_fencing_a_committed_point_keeps_its_manifest(repo: S3Repository) -> None:
    """A writer killed between its catalog entry and removing its lease: gc fences the lease, and the
    point, committed, keeps its manifest and reads back."""
    write_disk(repo, {0: b"\x04" * BS}, BS)
    point, _, _ = write_disk(repo, {0: b"\x05" * BS}, BS)
    obstore.put(repo.store, f"leases/{point.id}.json", json.dumps({"point_id": point.id}).encode())
    repo._fence(point.id)
    assert not exists(repo, f"leases/{point.id}.json")
    assert exists(repo, repo._manifest_key(point.id))
    assert point.id in repo._catalog_doc()[0]["fenced"]
    assert read_all(Repository.open(repo.url), point.id) == b"\x05" * BS


def test_fencing_an_uncommitted_point_removes_its_manifest(repo: S3Repository) -> None:
    """A writer killed after writing its manifest, before its catalog entry: gc removes both the lease and
    the manifest, and nothing of the committed points beside it."""
    committed, _, _ = write_disk(repo, {0: b"\x04" * BS}, BS)
    dead = "p-dead"
    obstore.put(repo.store, repo._manifest_key(dead), b"{}")
    obstore.put(repo.store, f"leases/{dead}.json", json.dumps({"point_id": dead}).encode())
    repo._fence(dead)
    assert not exists(repo, repo._manifest_key(dead)) and not exists(repo, f"leases/{dead}.json")
    assert exists(repo, repo._manifest_key(committed.id))
    assert [p.id for p in repo.points()] == [committed.id]


# --- gc.json heartbeat ---------------------------------------------------------------------
def gc_json(repo: S3Repository) -> Any:
    return json.loads(bytes(obstore.get(repo.store, "gc.json").bytes()))


def test_a_gc_json_renewal_the_store_fails_is_logged_and_tried_again(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _, etag = repo._gc_begin("gc-old")
    beat = _GcHeartbeat(repo, "gc-old", etag)
    try:
        with monkeypatch.context() as m, caplog.at_level(logging.WARNING, logger="fctui.repo.s3"):
            store_refuses(m, "put")
            beat.put({"id": "gc-old", "state": "condemning"})        # not lost: the next renewal may work
        assert [r.getMessage() for r in caplog.records] == [
            f"gc gc-old: repository {repo.url}: cannot write gc.json: GenericError"]
        assert not beat.lost
        beat.put({"id": "gc-old", "state": "deleting"})
        assert gc_json(repo) == {"id": "gc-old", "state": "deleting"}
    finally:
        beat.stop()
        obstore.delete(repo.store, "gc.json")


def test_a_gc_renews_its_gc_json_only_while_it_holds_it(repo: S3Repository) -> None:
    """Each write of gc.json is conditional on the gc's last one; when another gc replaced it (taking
    it over as stale), the first stops, leaving the other's in place."""
    _, etag = repo._gc_begin("gc-old")
    beat = _GcHeartbeat(repo, "gc-old", etag)
    try:
        beat.put({"id": "gc-old", "state": "condemning"})
        beat.put({"id": "gc-old", "state": "deleting"})             # conditional on the write before
        assert gc_json(repo) == {"id": "gc-old", "state": "deleting"} and not beat.lost
        obstore.put(repo.store, "gc.json", json.dumps({"id": "gc-new"}).encode())
        with pytest.raises(RepoError) as e:
            beat.put({"id": "gc-old", "state": "deleting", "again": True})
        assert str(e.value) == "gc gc-old lost gc.json (another gc replaced it as stale); stopped"
        assert gc_json(repo) == {"id": "gc-new"} and beat.lost
    finally:
        beat.stop()
        obstore.delete(repo.store, "gc.json")


def test_a_gc_paused_past_half_the_ttl_stops_before_deleting(repo: S3Repository) -> None:
    """Writers stop honouring a gc.json older than the TTL: a gc that could not renew it for more than
    half the TTL must not delete anything more (the gap is set back by hand: the heartbeat's clock)."""
    _, etag = repo._gc_begin("gc-old")
    beat = _GcHeartbeat(repo, "gc-old", etag)
    try:
        ttl = repo.lease_ttl_s
        beat._ok = time.monotonic() - 0.4 * ttl
        beat.check()                                              # under half the TTL: goes on
        beat._ok = time.monotonic() - 0.6 * ttl
        with pytest.raises(RepoError) as e:
            beat.check()
        msg = str(e.value)
        assert msg.startswith("gc gc-old could not renew gc.json for ") and msg.endswith(
            f" s (over half the lease TTL of {ttl:g} s); stopped before deleting anything more")
        assert float(msg.split(" for ")[1].split(" s ")[0]) == pytest.approx(0.6 * ttl, abs=1)
    finally:
        beat.stop()
        obstore.delete(repo.store, "gc.json")


def test_a_missing_chunk_is_named_by_its_digest(repo: S3Repository) -> None:
    _, _, _ = write_disk(repo, {0: b"\x09" * BS}, BS)
    digest = hashlib.sha256(b"\x09" * BS).hexdigest()
    obstore.delete(repo.store, repo._chunk_key(digest))
    with pytest.raises(ChunkError) as e:
        repo.read_chunk(digest)
    assert (str(e.value), e.value.digest, e.value.problem) == (f"chunk {digest} is missing", digest, "missing")


def test_a_chunk_the_store_cannot_read_is_named_with_the_stores_first_line(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = hashlib.sha256(b"\x0a" * BS).hexdigest()
    with monkeypatch.context() as m:
        store_refuses(m, "get", "store says no\nand more lines")
        with pytest.raises(ChunkError) as e:
            repo.read_chunk(digest)
    assert (str(e.value), e.value.digest, e.value.problem) == (
        f"chunk {digest} unreadable: store says no", digest, "missing")


def test_a_chunk_read_for_another_length_is_refused(repo: S3Repository) -> None:
    write_disk(repo, {0: b"\x0b" * BS}, BS)
    digest = hashlib.sha256(b"\x0b" * BS).hexdigest()
    assert repo.read_chunk(digest, BS) == b"\x0b" * BS
    with pytest.raises(ChunkError) as e:
        repo.read_chunk(digest, BS + 1)
    assert e.value.digest == digest and e.value.problem == "corrupt"


def test_a_manifest_the_store_cannot_read_names_the_point(repo: S3Repository,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    point, _, _ = write_disk(repo, {0: b"\x0c" * BS}, BS)
    fresh = Repository.open(repo.url)
    with monkeypatch.context() as m:
        store_refuses(m, "get", under="points/")
        with pytest.raises(RepoError) as e:
            fresh.open_disk(point.id, "urn:vol:1")
    assert str(e.value) == f"repository {repo.url}: cannot read the manifest of {point.id}: GenericError"


def test_a_writers_lease_names_its_point_and_no_bases_yet(repo: S3Repository) -> None:
    with new_point(repo) as pw:
        lease = lease_doc(repo, pw.point_id)
        assert lease["point_id"] == pw.point_id and lease["base_point_ids"] == []
        assert lease["gc_ack"] is None and lease["gc_keep"] == [] and lease["vm_urn"] == "urn:sites:1:vms:i-1"
        # when it began, on the store's clock (gc keeps chunks newer than the oldest live lease); the
        # store runs on this machine, so its clock is this one
        assert abs(lease["started"] - time.time()) < 60
        pw.abort()


def test_a_lease_is_created_once_and_a_store_failure_named(repo: S3Repository,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease is created only if absent: a second writer of the same id is refused, and the first
    lease is left as it was; a store that refuses the create is named."""
    first = _Lease(repo, "p-twice", {"base_point_ids": []})
    first.start()
    try:
        before = bytes(obstore.get(repo.store, "leases/p-twice.json").bytes())
        with pytest.raises(RepoError) as e:
            _Lease(repo, "p-twice", {"base_point_ids": ["other"]}).start()
        assert str(e.value) == "lease p-twice exists already"
        assert bytes(obstore.get(repo.store, "leases/p-twice.json").bytes()) == before
    finally:
        first.stop(delete=True)
    with monkeypatch.context() as m:
        store_refuses(m, "put")
        with pytest.raises(RepoError) as e:
            _Lease(repo, "p-refused", {"base_point_ids": []}).start()
    assert str(e.value) == f"repository {repo.url}: cannot create the writer lease: GenericError"
    assert not exists(repo, "leases/p-refused.json")


# --- abort ----------------------------------------------------------------------------------
def test_an_aborted_point_leaves_neither_manifest_nor_lease(repo: S3Repository) -> None:
    """A writer that wrote its manifest and then failed before its catalog entry: abort removes both."""
    committed, _, _ = write_disk(repo, {0: b"\x04" * BS}, BS)
    with new_point(repo) as pw:
        pw.add_disk(**disk_args("urn:vol:1", BS)).put_block(0, b"\x06" * BS)
        obstore.put(repo.store, repo._manifest_key(pw.point_id), b"{}")
        assert exists(repo, f"leases/{pw.point_id}.json")
        pw.abort()
    assert not exists(repo, repo._manifest_key(pw.point_id)) and not exists(repo, f"leases/{pw.point_id}.json")
    assert [p.id for p in repo.points()] == [committed.id] and exists(repo, repo._manifest_key(committed.id))


def test_an_aborted_writer_whose_entry_is_listed_keeps_its_manifest(repo: S3Repository) -> None:
    """Never delete what a listed point needs: a writer whose catalog entry was written (its commit failed
    after it) keeps its manifest when it aborts; only its lease goes."""
    with new_point(repo) as pw:
        pw.add_disk(**disk_args("urn:vol:1", BS)).put_block(0, b"\x07" * BS)
        obstore.put(repo.store, repo._manifest_key(pw.point_id), b"{}")
        set_catalog(repo, [{"id": pw.point_id}])
        pw.abort()
    assert exists(repo, repo._manifest_key(pw.point_id)) and not exists(repo, f"leases/{pw.point_id}.json")


def test_an_abort_that_cannot_read_the_catalog_deletes_nothing_and_ends(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store fails the catalog read during abort: the manifest is kept (the point may be listed),
    abort does not raise, and the lease is still removed."""
    with new_point(repo) as pw:
        obstore.put(repo.store, repo._manifest_key(pw.point_id), b"{}")
        with monkeypatch.context() as m:
            store_refuses(m, "get", "store unavailable")
            pw.abort()
    assert exists(repo, repo._manifest_key(pw.point_id)) and not exists(repo, f"leases/{pw.point_id}.json")


def test_a_missing_manifest_names_where_it_should_be(repo: S3Repository) -> None:
    point, _, _ = write_disk(repo, {0: b"\x08" * BS}, BS)
    obstore.delete(repo.store, repo._manifest_key(point.id))
    with pytest.raises(ManifestError) as e:
        Repository.open(repo.url).open_disk(point.id, "urn:vol:1")
    assert str(e.value) == f"manifest of restore point {point.id} is missing ({repo.url}/points/{point.id}.json)"
    assert e.value.problem == "manifest-missing"


def test_a_fenced_writer_cannot_name_a_base(repo: S3Repository) -> None:
    base, _, _ = write_disk(repo, {0: b"\x01" * BS}, BS)
    with new_point(repo) as pw:
        repo._fence(pw.point_id)
        with pytest.raises(RepoError) as e:
            pw.add_disk(**disk_args("urn:vol:1", BS, base.id))
        assert str(e.value) == (f"lease lost: gc fenced restore point {pw.point_id}'s writer (its lease was not "
                                f"renewed for {repo.lease_ttl_s:g} s)")


# --- forget and prune beside leases; usage --------------------------------------------------
def test_forget_beside_a_lease_that_names_no_bases(repo: S3Repository) -> None:
    """A live lease whose object has no ``base_point_ids`` (a reader's, or one written by hand) names no
    base: forget still drops the manifest of the point it forgets."""
    point, _, _ = write_disk(repo, {0: b"\x06" * BS}, BS)
    obstore.put(repo.store, "leases/p-other.json", json.dumps({"point_id": "p-other"}).encode())
    repo.forget(point.id)
    assert not exists(repo, repo._manifest_key(point.id))


def test_disk_usage_counts_the_chunk_objects_and_their_bytes(repo: S3Repository) -> None:
    blocks = {0: bytes(range(256)) * (BS // 256), 1: hashlib.sha256(b"x").digest() * (BS // 32)}
    write_disk(repo, blocks, 2 * BS)
    obstore.put(repo.store, "chunks/zz/not-a-chunk", b"x" * 10)
    sizes = [int(repo._head(repo._chunk_key(hashlib.sha256(b).hexdigest()))["size"]) for b in blocks.values()]
    assert repo.disk_usage() == (2, sum(sizes))


def test_verify_records_when_each_point_was_verified(repo: S3Repository) -> None:
    a, _, _ = write_disk(repo, {0: b"\x07" * BS}, BS)
    b, _, _ = write_disk(repo, {0: b"\x08" * BS}, BS)
    before = time.time()
    assert repo.verify(point_ids=[a.id]).ok
    again = Repository.open(repo.url)
    got = again.point(a.id).verified_at
    assert got is not None and before - 2 <= got <= time.time() + 2     # the store's clock may differ a little
    assert again.point(b.id).verified_at is None                        # not asked for


# --- the writer's side of gc: touch ----------------------------------------------------------
def honouring(repo: S3Repository, condemned: set[str], ttl: float = 0.05) -> _Lease:
    """A lease (not started: no renewal thread) that honours gc "gc-1" condemning ``condemned``, as
    ``_check_gc`` leaves it; honour_wait_s is 10 TTLs."""
    repo.lease_ttl_s, repo.gc_poll_s = ttl, 0.01
    lease = _Lease(repo, "p-touch", {"base_point_ids": []})
    lease.condemned, lease.honour_id = frozenset(condemned), "gc-1"
    return lease


def in_thread(fn: Any) -> tuple[threading.Thread, list[BaseException]]:
    """``fn()`` in a daemon thread; what it raised is in the list once the thread ends."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def touch_in_thread(lease: _Lease, digest: str) -> tuple[threading.Thread, list[BaseException]]:
    return in_thread(lambda: lease.touch(digest))


def test_touching_a_chunk_the_honoured_gc_did_not_condemn_does_not_wait(repo: S3Repository) -> None:
    lease = honouring(repo, {"a" * 64}, ttl=60.0)  # a wait would last 10 minutes
    t, errors = touch_in_thread(lease, "b" * 64)
    t.join(30)
    assert not t.is_alive() and errors == [] and lease.touched == {"b" * 64} and lease.waiting == 0


def test_a_condemned_chunk_waits_for_the_gc_to_end_and_counts_as_waiting(repo: S3Repository) -> None:
    lease = honouring(repo, {"a" * 64}, ttl=60.0)
    waiters = [touch_in_thread(lease, "a" * 64) for _ in range(2)]  # two disks' writers
    wait_for(lambda: lease.waiting == 2, 30, "both puts to wait")
    assert all(t.is_alive() for t, _ in waiters) and lease.touched == set()
    with lease._cond:  # the gc ends, as _check_gc sees it
        lease.condemned, lease.honour_id = frozenset(), None
        lease._cond.notify_all()
    for t, errors in waiters:
        t.join(30)
        assert not t.is_alive() and errors == []
    assert lease.touched == {"a" * 64} and lease.waiting == 0


def test_a_chunk_condemned_past_the_honour_wait_is_refused_by_name(repo: S3Repository) -> None:
    lease = honouring(repo, {"a" * 64}, ttl=0.05)
    began = time.monotonic()
    t, errors = touch_in_thread(lease, "a" * 64)
    t.join(30)
    assert time.monotonic() - began >= 0.5  # it waited the whole honour wait (10 TTLs) first
    assert not t.is_alive() and lease.touched == set() and lease.waiting == 0
    assert [type(e) for e in errors] == [RepoError]
    assert str(errors[0]) == ("chunk aaaaaaaaaaaa stayed condemned by gc gc-1 for 0.5 s; is a gc stuck? "
                              "(its gc.json is replaced once older than 0.05 s)")


def test_a_writer_whose_lease_was_lost_is_refused_even_while_waiting(repo: S3Repository) -> None:
    lease = honouring(repo, {"a" * 64}, ttl=60.0)
    lease.lost = "lease lost: gc fenced restore point p-touch's writer (its lease was not renewed for 60 s)"
    for digest in ("a" * 64, "b" * 64):  # condemned (the wait ends at once) or not
        t, errors = touch_in_thread(lease, digest)
        t.join(30)
        assert not t.is_alive() and [str(e) for e in errors] == [lease.lost] and lease.touched == set()


def test_a_lease_that_fails_after_its_creation_is_removed(repo: S3Repository,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        store_refuses(m, "head", "slow down", under="leases/")
        with pytest.raises(RepoError) as e:
            _Lease(repo, "p-half", {"base_point_ids": []}).start()
    assert str(e.value) == f"repository {repo.url}: cannot read leases/p-half.json: slow down"
    assert not exists(repo, "leases/p-half.json")


def test_a_lease_renews_from_a_daemon_thread_named_after_it(repo: S3Repository) -> None:
    """A daemon: a writer that was never stopped does not hold the process open at exit; named: a thread
    dump says whose lease it renews."""
    lease = _Lease(repo, "p-thread", {"base_point_ids": []})
    lease.start()
    try:
        threads = [t for t in threading.enumerate() if t.name == "fctui-lease-p-thread"]
        assert len(threads) == 1 and threads[0].daemon and threads[0].is_alive()
    finally:
        lease.stop(delete=True)
    assert not threads[0].is_alive()


def test_stopping_a_lease_the_store_will_not_delete_does_not_raise(repo: S3Repository,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() runs on the way out of commit and abort: a lease the store keeps expires and is fenced."""
    lease = _Lease(repo, "p-kept", {"base_point_ids": []})
    lease.start()
    with monkeypatch.context() as m:
        store_refuses(m, "delete", under="leases/")
        lease.stop(delete=True)
    assert exists(repo, "leases/p-kept.json")
    obstore.delete(repo.store, "leases/p-kept.json")


def test_a_lease_looks_at_gc_every_poll_and_renews_only_every_renew_interval(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    repo.lease_renew_s, repo.gc_poll_s = 3600.0, 0.01
    puts: list[str] = []
    gc_looks: list[str] = []
    real_put, real_head = obstore.put, obstore.head

    def put(store: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        puts.append(key)
        return real_put(store, key, *args, **kwargs)

    def head(store: Any, key: str) -> Any:
        gc_looks.extend([key] if key == "gc.json" else [])
        return real_head(store, key)
    monkeypatch.setattr(obstore, "put", put)
    monkeypatch.setattr(obstore, "head", head)
    lease = _Lease(repo, "p-renew", {"base_point_ids": []})
    lease.start()
    try:
        assert puts == ["leases/p-renew.json"] * 2  # created, then written with its start time
        wait_for(lambda: len(gc_looks) >= 10, 30, "ten looks at gc.json")
        assert puts == ["leases/p-renew.json"] * 2
        repo.lease_renew_s = 0.02
        wait_for(lambda: len(puts) >= 4, 30, "renewals once the interval is short")
    finally:
        lease.stop(delete=True)


def test_a_failing_look_at_gc_is_logged_by_the_lease_which_goes_on(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    repo.gc_poll_s = 0.01
    lease = _Lease(repo, "p-log", {"base_point_ids": []})
    lease.start()
    try:
        with monkeypatch.context() as m, caplog.at_level(logging.WARNING, logger="fctui.repo.s3"):
            store_refuses(m, "head", "slow down", under="gc.json")
            wait_for(lambda: len(caplog.records) >= 2, 30, "two warnings")
        assert {r.getMessage() for r in caplog.records} == {
            f"lease p-log: repository {repo.url}: cannot read gc.json: slow down"}
        assert lease.lost is None and lease._thread is not None and lease._thread.is_alive()
    finally:
        lease.stop(delete=True)


def put_gc_json(repo: S3Repository, doc: dict[str, Any]) -> None:
    obstore.put(repo.store, "gc.json", json.dumps(doc).encode())


def lease_doc(repo: S3Repository, point_id: str) -> dict[str, Any]:
    return json.loads(bytes(obstore.get(repo.store, f"leases/{point_id}.json").bytes()))


def quiet_lease(repo: S3Repository, point_id: str) -> _Lease:
    """A started lease whose thread does not look at gc by itself (the test calls _check_gc)."""
    repo.gc_poll_s = 3600.0
    lease = _Lease(repo, point_id, {"base_point_ids": []})
    lease.start()
    return lease


def test_a_lease_honours_a_gc_across_its_renewals_and_lets_go_when_another_replaces_it(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = "a" * 64, "b" * 64
    lease = quiet_lease(repo, "p-honour")
    try:
        lease.touched.add(b)
        put_gc_json(repo, {"id": "gc-1", "state": "condemned", "candidates": [a, b]})
        lease._check_gc()
        assert lease.honour_id == "gc-1" and lease.condemned == {a, b}
        assert lease_doc(repo, "p-honour")["gc_ack"] == "gc-1" and lease_doc(repo, "p-honour")["gc_keep"] == [b]
        lease_puts: list[str] = []
        gc_reads: list[str] = []
        real_put, real_get = obstore.put, obstore.get

        def put(store: Any, key: str, *args: Any, **kwargs: Any) -> Any:
            lease_puts.extend([key] if key.startswith("leases/") else [])
            return real_put(store, key, *args, **kwargs)

        def get(store: Any, key: str, *args: Any, **kwargs: Any) -> Any:
            gc_reads.extend([key] if key == "gc.json" else [])
            return real_get(store, key, *args, **kwargs)
        with monkeypatch.context() as m:
            m.setattr(obstore, "put", put)
            m.setattr(obstore, "get", get)
            lease._check_gc()  # gc.json unchanged: not read again
            assert gc_reads == []
            # its renewal, with a new etag: S3's is the MD5 of the body, other stores' need not be
            obstore.put(repo.store, "gc.json",
                        json.dumps({"id": "gc-1", "state": "condemned", "candidates": [a, b]}, indent=1).encode())
            lease._check_gc()
            lease._check_gc()
            # still honoured (it is deleting what it condemned), acknowledged once, read once per change
            assert lease.honour_id == "gc-1" and lease.condemned == {a, b}
            assert lease_puts == [] and gc_reads == ["gc.json"]
        put_gc_json(repo, {"id": "gc-2", "state": "collecting"})  # gc-1 ended; another is collecting
        lease._check_gc()
        assert lease.honour_id is None and lease.condemned == frozenset()
    finally:
        lease.stop(delete=True)
        obstore.delete(repo.store, "gc.json")


def test_a_base_the_store_will_not_add_to_the_lease_is_refused_by_name(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    lease = quiet_lease(repo, "p-base")
    try:
        with monkeypatch.context() as m:
            store_refuses(m, "put", "slow down", under="leases/")
            with pytest.raises(RepoError) as e:
                lease.add_base("p-older")
        assert str(e.value) == f"repository {repo.url}: cannot renew the writer lease: slow down"
    finally:
        lease.stop(delete=True)


def test_the_leases_are_the_json_objects_under_leases_whatever_they_hold(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every lease object counts (gc keeps what a live writer may need), even one that cannot be read; a
    writer that died after writing its manifest leaves points/ID.json beside leases/ID.json: one lease."""
    objects = {"leases/a-stray.txt": b"x", "leases/b-gone.json": b"{}", "leases/c-bad.json": b"not json",
               "leases/d-list.json": b"[1, 2]", "leases/e-bases.json": json.dumps({"base_point_ids": "p-x"}).encode(),
               "leases/p-one.json": json.dumps({"base_point_ids": ["p-zero"]}).encode(),
               "leases/p-one.json.tmp": b"{}", "points/p-one.json": b"{}", "gc.json": b"{}"}
    for key, body in objects.items():
        obstore.put(repo.store, key, body)
    real_get = obstore.get

    def get(store: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        if key == "leases/b-gone.json":
            raise FileNotFoundError(key)  # its writer committed between the listing and this read
        return real_get(store, key, *args, **kwargs)
    monkeypatch.setattr(obstore, "get", get)
    try:
        assert [(lid, data) for lid, _, data in repo._list_leases()] == [
            ("c-bad", {}), ("d-list", {}), ("e-bases", {"base_point_ids": []}),
            ("p-one", {"base_point_ids": ["p-zero"]})]
    finally:
        for key in objects:
            obstore.delete(repo.store, key)


def test_a_delete_the_store_refuses_is_named(repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        store_refuses(m, "delete", "slow down")
        with pytest.raises(RepoError) as e:
            repo._delete(["points/p-1.json"])
    assert str(e.value) == f"repository {repo.url}: cannot delete objects: slow down"


def test_a_catalog_that_keeps_changing_is_tried_200_times_backing_off_up_to_half_a_second(
        repo: S3Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(s3, "time", types.SimpleNamespace(sleep=sleeps.append, monotonic=time.monotonic,
                                                          time=time.time))
    monkeypatch.setattr(s3, "random", random.Random(20))  # the same jitter every run
    changes = iter(range(10_000))

    def change_behind_its_back(doc: dict[str, Any]) -> None:  # another writer commits meanwhile
        set_catalog(repo, [{"n": next(changes)}])
    with pytest.raises(RepoBusyError) as e:
        repo._catalog_cas(change_behind_its_back)
    assert str(e.value) == f"repository {repo.url}: the catalog changed 200 times while updating it"
    assert len(sleeps) == 200
    # random from 0 up to 10 ms more each try, at most half a second
    assert all(0 <= s <= min(0.5, 0.01 * n) for n, s in enumerate(sleeps, 1))
    assert max(sleeps[:10]) > 0.05 and max(sleeps[100:]) > 0.45


# --- open -----------------------------------------------------------------------------------
def marker(repo: S3Repository) -> Any:
    return json.loads(bytes(obstore.get(repo.store, "repo.json").bytes()))


def test_opening_creates_the_repository_once_and_says_what_it_is(s3_repo_url: str) -> None:
    repo = S3Repository.open(s3_repo_url + "/")  # created by default; the URL is named without its slash
    assert repo.url == s3_repo_url and catalog_points(repo) == []
    first = marker(repo)
    assert set(first) == {"format", "version", "chunk_hash", "compression", "created"}
    assert (first["format"], first["version"], first["chunk_hash"]) == ("fctui-repo", 1, "sha256")
    assert first["compression"] == "zstd-1 (raw when incompressible)" and abs(first["created"] - time.time()) < 60
    again = S3Repository.open(s3_repo_url)
    assert marker(again) == first  # not written again: `created` is when the repository began
    # the store retries transient errors itself: 5 times within 60 s, backing off from 100 ms to 5 s
    assert again.store.retry_config == {"max_retries": 5, "retry_timeout": timedelta(seconds=60), "backoff": {
        "init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5), "base": 2.0}}
    # leases: renewed every 10 s, dead after 60 s without renewal (README), gc.json looked at every second
    assert (again.lease_renew_s, again.lease_ttl_s, again.gc_poll_s) == (10.0, 60.0, 1.0)


def test_a_url_ending_in_x_keeps_it(s3_repo_url: str) -> None:
    assert S3Repository.open(s3_repo_url + "-XX//").url == s3_repo_url + "-XX"


def test_opening_a_repository_another_process_creates_meanwhile(s3_repo_url: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real_put = obstore.put
    other = {"format": "fctui-repo", "version": 1, "chunk_hash": "sha256", "compression": "zstd-1", "created": 1.0}

    def put(store: Any, key: str, body: Any, *args: Any, **kwargs: Any) -> Any:
        if key == "repo.json":  # the other process's marker lands first
            real_put(store, key, json.dumps(other).encode())
        return real_put(store, key, body, *args, **kwargs)
    monkeypatch.setattr(obstore, "put", put)
    assert marker(S3Repository.open(s3_repo_url)) == other


def test_a_marker_that_vanishes_after_creation_is_named(s3_repo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_get = obstore.get

    def get(store: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        if key == "repo.json":
            raise FileNotFoundError(key)
        return real_get(store, key, *args, **kwargs)
    monkeypatch.setattr(obstore, "get", get)
    with pytest.raises(RepoError) as e:
        S3Repository.open(s3_repo_url)
    assert str(e.value) == f"cannot create repository at {s3_repo_url}: repo.json vanished"


def test_opening_without_create_names_the_missing_repository(s3_repo_url: str) -> None:
    with pytest.raises(NoRepositoryError) as e:
        S3Repository.open(s3_repo_url, create=False)
    assert str(e.value) == f"no repository at {s3_repo_url} (create one by running a backup)"


@pytest.mark.parametrize("found, message", [
    (["fctui-repo"], "{url} is not an fctui repository"),
    ({"format": "restic"}, "{url} is not an fctui repository"),
    ({"format": "fctui-repo", "version": 2}, "{url} was written by a newer fctui (format 2)"),
])
def test_a_marker_of_something_else_is_refused(s3_repo_url: str, found: Any, message: str) -> None:
    S3Repository.open(s3_repo_url)
    obstore.put(S3Repository.open(s3_repo_url).store, "repo.json", json.dumps(found).encode())
    with pytest.raises(RepoError) as e:
        S3Repository.open(s3_repo_url)
    assert str(e.value) == message.format(url=s3_repo_url)


def test_a_marker_without_a_version_is_the_first_format(s3_repo_url: str) -> None:
    repo = S3Repository.open(s3_repo_url)
    obstore.put(repo.store, "repo.json", json.dumps({"format": "fctui-repo"}).encode())
    assert S3Repository.open(s3_repo_url).url == s3_repo_url


# --- the catalog object ---------------------------------------------------------------------
@pytest.mark.parametrize("body, problem", [
    (b"not json", "catalog.json is not JSON: Expecting value: line 1 column 1 (char 0)"),
    (b"[]", "catalog unreadable: {url}/catalog.json is not a table of restore points"),
    (b'{"points": "p-1"}', "catalog unreadable: {url}/catalog.json is not a table of restore points"),
    (b'{"points": [], "fenced": "p-1"}', "catalog unreadable: {url}/catalog.json is not a table of restore points"),
])
def test_a_catalog_that_is_not_a_table_of_points_is_named(repo: S3Repository, body: bytes, problem: str) -> None:
    obstore.put(repo.store, "catalog.json", body)
    with pytest.raises(RepoError) as e:
        repo.points()
    expected = problem.format(url=repo.url)
    assert str(e.value) == (expected if expected.startswith("catalog unreadable") else
                            f"repository {repo.url}: {expected}")


def test_a_missing_catalog_is_named(repo: S3Repository) -> None:
    obstore.delete(repo.store, "catalog.json")
    with pytest.raises(RepoError) as e:
        repo.points()
    assert str(e.value) == f"catalog unreadable: {repo.url}/catalog.json is missing"


def test_a_catalog_without_fenced_points_takes_a_new_point(repo: S3Repository) -> None:
    obstore.put(repo.store, "catalog.json", b'{"points": []}')
    point, _, _ = write_disk(repo, {0: b"\x01" * BS}, BS)
    assert [p.id for p in repo.points()] == [point.id]


def test_entries_that_are_not_objects_are_numbered_from_one_as_damaged(repo: S3Repository) -> None:
    set_catalog(repo, [7, "junk"])
    assert [(e.ref, e.problem, e.detail) for e in repo.damaged_entries()] == [
        ("#1", "not-a-point", "catalog entry is not a restore point: no valid id"),
        ("#2", "not-a-point", "catalog entry is not a restore point: no valid id")]


# --- commit ---------------------------------------------------------------------------------
def test_a_commit_whose_catalog_put_answer_was_lost_is_listed_once(repo: S3Repository,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The put landed but its answer did not: the retry finds the entry and does not add it again."""
    real_put = obstore.put
    lost: list[bool] = []

    def put(store: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        res = real_put(store, key, *args, **kwargs)
        if key == "catalog.json" and not lost:
            lost.append(True)
            raise PreconditionError("the answer was lost")
        return res
    with new_point(repo) as pw:
        pw.add_disk(**disk_args("urn:vol:1", BS)).put_block(0, b"\x02" * BS)
        monkeypatch.setattr(obstore, "put", put)
        point = pw.commit()
    assert lost and [e["id"] for e in catalog_points(repo)] == [point.id]
    with pytest.raises(RepoError) as e:  # its lease is gone with the commit
        repo._lease(point.id)
    assert str(e.value) == f"restore point {point.id} has no lease (aborted?)"


def test_a_writer_whose_lease_was_lost_cannot_commit(repo: S3Repository) -> None:
    with new_point(repo) as pw:
        pw.add_disk(**disk_args("urn:vol:1", BS)).put_block(0, b"\x03" * BS)
        repo._lease(pw.point_id).lost = "lease lost: gc fenced restore point x's writer (its lease was not renewed)"
        with pytest.raises(RepoError) as e:
            pw.commit()
        assert str(e.value) == "lease lost: gc fenced restore point x's writer (its lease was not renewed)"
    assert catalog_points(repo) == []


def test_a_chunk_stored_raw_counts_its_marker_and_a_reused_one_nothing(repo: S3Repository) -> None:
    bs = 256 * 1024  # big enough to be sampled (smaller blocks are compressed without a look)
    data = b"".join(hashlib.sha256(n.to_bytes(4, "big")).digest() for n in range(bs // 32))  # incompressible

    def backup() -> Any:
        with new_point(repo) as pw:
            dw = pw.add_disk(**disk_args("urn:vol:1", bs, bs=bs))
            dw.put_block(0, data)
            pw.commit()
        return dw.stats
    first = backup()
    assert (first.blocks_stored, first.bytes_stored) == (1, 4 + bs)  # "FCR1" and the block as it is
    key = repo._chunk_key(hashlib.sha256(data).hexdigest())
    assert bytes(obstore.get(repo.store, key).bytes()) == b"FCR1" + data
    second = backup()
    assert (second.blocks_reused, second.bytes_stored) == (1, 0)
