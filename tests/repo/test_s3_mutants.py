"""The S3 repository (a real SeaweedFS on loopback), where mutation testing found it unguarded (README,
Mutation testing): ``forget`` as a caller sees it (which entry ``#N`` is, what is left in the catalog and
on the store, the exact sentence it returns, the same as the local repository's), the message of an S3
error (what an operator reads when the store refuses), and the warning when a chunk cannot be quarantined.
Catalog entries a hand edit or another program left are written straight into ``catalog.json``."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import obstore
import pytest
from obstore.exceptions import GenericError

from fctui.repo import PointNotFoundError, RepoError, Repository
from fctui.repo.errors import ChunkError, ManifestError
from fctui.repo.s3 import S3Repository, _GcHeartbeat, _Lease
from tests.repo.test_repo_points import BS, disk_args, new_point, read_all, write_disk

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
        lease = json.loads(bytes(obstore.get(repo.store, f"leases/{pw.point_id}.json").bytes()))
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
