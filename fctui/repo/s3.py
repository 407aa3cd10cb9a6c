"""The backup repository on S3: the local repository's model and guarantees over objects.

Layout under ``s3://bucket/prefix``::

    repo.json                 format marker (created with a conditional put: one creator wins)
    catalog.json              the whole catalog {"points": [...], "fenced": [...]}; every change is a
                              compare-and-set (read with its e_tag, put if it is unchanged, else retry)
    points/<id>.json          manifest, as local
    leases/<id>.json          writer/reader lease {point_id, host, pid, started, base_point_ids, reader?,
                              gc_ack, gc_keep}, renewed every LEASE_RENEW_S
    chunks/<2 hex>/<64 hex>   chunk, same encoding as local (FCZ1/FCR1 marker + zstd or raw)
    gc.json                   the running gc: {id, state, candidates}, renewed every LEASE_TTL_S/4
    clock                     empty; written by gc to read the store's clock

Commit order as local: chunks (a PUT is durable when it returns) -> manifest -> catalog CAS -> lease
deleted. No clock of this machine is trusted: a lease is dead when the store says it was last modified
more than LEASE_TTL_S before an object gc has just written.

Safety of gc with writers on other machines (see :meth:`S3Repository.gc`): gc condemns old unreferenced
chunks in gc.json, then waits until every live lease acknowledged the set, naming the condemned chunks
its writer touched (written or reused: ``gc_keep``); from the acknowledgement on, the writer neither
reuses nor writes a condemned chunk until that gc ends. A lease that stops renewing is fenced in the
catalog before gc treats it as dead, and a fenced writer's commit is refused: a stalled writer can never
commit a point whose chunks gc may have deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Iterator

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError

from .errors import ChunkError, ManifestError, NoRepositoryError, PointNotFoundError, RepoBusyError, RepoError
from .model import GcReport, point_problem
from .repository import (
    _HOST, CHUNK_RAW, CHUNK_ZSTD, DIGEST_RE, FORMAT_NAME, FORMAT_VERSION, REMOTE_BACKENDS, ZSTD_LEVEL, PointWriter,
    RepositoryBase, _compressor, _looks_incompressible, decode_chunk,
)

log = logging.getLogger("fctui.repo.s3")

LEASE_RENEW_S = 10.0   # a writer renews its lease this often
LEASE_TTL_S = 60.0     # ... and is dead when the store last saw a renewal longer ago than this
GC_POLL_S = 1.0        # writers look at gc.json this often; gc polls the acknowledgements as often
CLOCK_SLACK_S = 2.0    # the store's last_modified has 1 s resolution (SeaweedFS): margin on comparisons
CAS_TRIES = 200
DELETE_BATCH = 500
# Transient errors (5xx, dropped connections, timeouts) are retried by obstore itself, with back-off.
RETRY = {"max_retries": 5, "retry_timeout": timedelta(seconds=60),
         "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5), "base": 2}}

GC_KEY = "gc.json"
CATALOG_KEY = "catalog.json"
MARKER_KEY = "repo.json"


def _stamp(meta: dict[str, Any]) -> float:
    """An object's last_modified as seconds since the epoch (the store's clock)."""
    return float(meta["last_modified"].timestamp())


class _Lease:
    """One lease object kept alive by a thread: renewed, and answering gc's condemned sets.

    ``touch`` is the writer's side of the gc protocol: every chunk a writer is about to reuse or write
    goes through it first, so a condemned chunk is either in the writer's ``gc_keep`` or waits for the
    gc to end."""

    def __init__(self, repo: "S3Repository", lease_id: str, data: dict[str, Any]) -> None:
        self.repo = repo
        self.id = lease_id
        self.key = f"leases/{lease_id}.json"
        self.data = dict(data)
        self.data.setdefault("base_point_ids", [])
        self.data.update({"point_id": lease_id, "host": _HOST, "pid": os.getpid(), "gc_ack": None, "gc_keep": []})
        self._etag: str | None = None
        self._io = threading.Lock()          # one lease put at a time (renewal, acknowledgement, bases)
        self._cond = threading.Condition()   # touched/condemned: the writer's lock of the gc protocol
        self.touched: set[str] = set()
        self.condemned: frozenset[str] = frozenset()
        self.honour_id: str | None = None    # the gc whose condemned set this writer honours
        self.waiting = 0                     # put_blocks waiting for that gc to end
        self._gc_etag: str | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed = 0.0
        self.store_now = 0.0

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        repo = self.repo
        try:
            res = obstore.put(repo.store, self.key, json.dumps(self.data).encode(), mode="create")
        except AlreadyExistsError:
            raise RepoError(f"lease {self.id} exists already") from None
        except BaseError as exc:
            raise repo._error("cannot create the writer lease", exc) from exc
        self._etag = res["e_tag"]
        try:
            meta = repo._head(self.key)
            self.data["started"] = _stamp(meta) if meta else 0.0  # the store's clock: gc compares chunks with it
            self._put()
            # Right after creating the lease, before any chunk is touched: a gc that condemned a set before
            # it could see this lease is honoured at once (it will not wait for this lease's answer).
            self._check_gc(initial=True)
        except BaseException:
            self.stop(delete=True)
            raise
        self._thread = threading.Thread(target=self._run, name=f"fctui-lease-{self.id}", daemon=True)
        self._thread.start()

    def stop(self, *, delete: bool = True) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._cond:
            self.condemned, self.honour_id = frozenset(), None
            self._cond.notify_all()
        if delete:
            with contextlib.suppress(FileNotFoundError, BaseError):
                obstore.delete(self.repo.store, self.key)

    def _run(self) -> None:
        repo = self.repo
        while not self._stop.wait(repo.gc_poll_s):
            try:
                self._check_gc()
                if time.monotonic() - self._renewed >= repo.lease_renew_s:
                    self._put()
            except Exception as exc:  # noqa: BLE001 - keep renewing; a lease left to expire gets fenced
                log.warning("lease %s: %s", self.id, exc)
            if self.lost:
                with self._cond:
                    self._cond.notify_all()
                return

    def _put(self) -> None:
        """CAS put of the lease: it fails only when gc fenced and deleted it (the writer lost it)."""
        with self._io:
            if self.lost:
                return
            try:
                res = obstore.put(self.repo.store, self.key, json.dumps(self.data).encode(),
                                  mode={"e_tag": self._etag} if self._etag else "create")
            except (PreconditionError, AlreadyExistsError, FileNotFoundError):
                self.lost = (f"lease lost: gc fenced restore point {self.id}'s writer (its lease was not "
                             f"renewed for {self.repo.lease_ttl_s:g} s)")
                return
            except BaseError as exc:
                raise self.repo._error("cannot renew the writer lease", exc) from exc
            self._etag = res["e_tag"]
            self._renewed = time.monotonic()
        meta = self.repo._head(self.key)
        if meta is not None:
            self.store_now = max(self.store_now, _stamp(meta))  # the store's clock, as of this renewal

    def add_base(self, point_id: str) -> None:
        with self._io:
            bases = self.data["base_point_ids"]
            if point_id in bases:
                return
            bases.append(point_id)
        self._put()
        if self.lost:
            raise RepoError(self.lost)

    # --- the gc protocol, writer side -------------------------------------------------------
    def _check_gc(self, initial: bool = False) -> None:
        repo = self.repo
        meta = repo._head(GC_KEY)
        if meta is not None and self.store_now - _stamp(meta) > repo.lease_ttl_s:
            meta = None  # a gc that has not renewed its gc.json for a TTL is dead, or stops before deleting
        if meta is None:
            if self.honour_id is not None:
                with self._cond:
                    self.condemned, self.honour_id = frozenset(), None
                    self._cond.notify_all()
            self._gc_etag = None
            return
        if meta["e_tag"] == self._gc_etag and not initial:
            return
        got = repo._get_json(GC_KEY)
        if got is None:
            return self._check_gc(initial)
        doc, etag = got
        self._gc_etag = etag
        gc_id = doc.get("id")
        if gc_id != self.honour_id and self.honour_id is not None:
            with self._cond:  # that gc ended (gc.json replaced): its set no longer binds
                self.condemned, self.honour_id = frozenset(), None
                self._cond.notify_all()
        if doc.get("state") != "condemned" or gc_id == self.data.get("gc_ack"):
            return
        with self._cond:
            # Under the writer's lock: every touch before this is in gc_keep, every touch after waits.
            self.condemned = frozenset(doc.get("candidates", []))
            self.honour_id = gc_id
            with self._io:
                self.data["gc_ack"] = gc_id
                self.data["gc_keep"] = sorted(self.touched & self.condemned)
        self._put()

    def touch(self, digest: str) -> None:
        """Record that the writer is about to reuse or write ``digest``; waits (bounded) while a gc has
        it condemned."""
        deadline = time.monotonic() + self.repo.honour_wait_s
        with self._cond:
            while digest in self.condemned and self.honour_id is not None:
                if self.lost:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RepoError(f"chunk {digest[:12]} stayed condemned by gc {self.honour_id} for "
                                    f"{self.repo.honour_wait_s:g} s; is a gc stuck? (its gc.json is replaced "
                                    f"once older than {self.repo.lease_ttl_s:g} s)")
                self.waiting += 1
                try:
                    self._cond.wait(min(left, self.repo.gc_poll_s))
                finally:
                    self.waiting -= 1
            if self.lost:
                raise RepoError(self.lost)
            self.touched.add(digest)


class _GcHeartbeat:
    """Renews a running gc's gc.json every TTL/4 from a thread of its own, so writers see it alive
    however long a step takes. ``check()`` before each deletion: the gc stops when it lost gc.json
    (another gc replaced it as stale) or when it was itself paused past TTL/2 -- writers stop honouring
    a gc.json older than TTL, so a gc that woke up after that must not delete what it condemned."""

    def __init__(self, repo: "S3Repository", gc_id: str, etag: str) -> None:
        self.repo, self.gc_id, self.etag = repo, gc_id, etag
        self._doc = json.dumps({"id": gc_id, "host": _HOST, "pid": os.getpid(), "state": "collecting"})
        self._mu = threading.Lock()
        self._ok = time.monotonic()
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fctui-gc-{gc_id}", daemon=True)
        self._thread.start()

    def put(self, doc: dict[str, Any]) -> None:
        """Write ``doc`` as gc.json now, and from now on."""
        with self._mu:
            self._doc = json.dumps(doc)
            self._renew()
        self.check()

    def _renew(self) -> None:
        if self.lost:
            return
        try:
            res = self.repo._put_raw(GC_KEY, self._doc.encode(), mode={"e_tag": self.etag})
        except PreconditionError:
            self.lost = True
            return
        except RepoError as exc:
            log.warning("gc %s: %s", self.gc_id, exc)
            return
        self.etag, self._ok = res["e_tag"], time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.repo.lease_ttl_s / 4):
            with self._mu:
                self._renew()

    def check(self) -> None:
        ttl = self.repo.lease_ttl_s
        if self.lost:
            raise RepoError(f"gc {self.gc_id} lost {GC_KEY} (another gc replaced it as stale); stopped")
        gap = time.monotonic() - self._ok
        if gap > ttl / 2:
            raise RepoError(f"gc {self.gc_id} could not renew {GC_KEY} for {gap:.0f} s (over half the lease "
                            f"TTL of {ttl:g} s); stopped before deleting anything more")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class S3Repository(RepositoryBase):
    """A backup repository under ``s3://bucket/prefix``. Thread-safe; any number of processes on any
    number of machines may share it (see the module's docstring for how gc stays safe)."""

    DURABLE_PUTS = True

    def __init__(self, url: str, store: Any) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.store = store
        self.lease_renew_s = LEASE_RENEW_S
        self.lease_ttl_s = LEASE_TTL_S
        self.gc_poll_s = GC_POLL_S
        self._leases_mine: dict[str, _Lease] = {}

    @property
    def honour_wait_s(self) -> float:
        return 10 * self.lease_ttl_s

    # --- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str, *, create: bool = True, store: Any = None) -> "S3Repository":
        """Open (and by default create) the repository at ``url``. ``store``: an obstore store for the
        prefix (default: one configured as the S3 ecosystem does: ``AWS_*`` variables, else a profile;
        fctui.repo.s3config)."""
        from .s3config import open_store, parse_s3_url
        location = parse_s3_url(url)
        if store is None:
            store = open_store(location, retry_config=RETRY)
        repo = cls(url, store)
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "chunk_hash": "sha256",
                "compression": f"zstd-{ZSTD_LEVEL} (raw when incompressible)", "created": time.time()}
        got = repo._get_json(MARKER_KEY)
        if got is None:
            if not create:
                raise NoRepositoryError(f"no repository at {url} (create one by running a backup)")
            with contextlib.suppress(AlreadyExistsError):  # another process created it first: fine
                repo._put_raw(MARKER_KEY, json.dumps(meta, indent=1).encode(), mode="create")
            got = repo._get_json(MARKER_KEY)
            if got is None:
                raise RepoError(f"cannot create repository at {url}: repo.json vanished")
        found = got[0]
        if not isinstance(found, dict) or found.get("format") != FORMAT_NAME:
            raise RepoError(f"{url} is not an fctui repository")
        if int(found.get("version", 0)) > FORMAT_VERSION:
            raise RepoError(f"{url} was written by a newer fctui (format {found.get('version')})")
        with contextlib.suppress(AlreadyExistsError):
            repo._put_raw(CATALOG_KEY, json.dumps({"points": [], "fenced": []}).encode(), mode="create")
        repo._catalog_entries()  # fail at open, clearly, if the catalog is unreadable
        return repo

    # --- objects -------------------------------------------------------------------------
    def _error(self, what: str, exc: BaseException) -> RepoError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return RepoError(f"repository {self.url}: {what}: {first}")

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return obstore.head(self.store, key)  # type: ignore[return-value]
        except FileNotFoundError:
            return None
        except BaseError as exc:
            raise self._error(f"cannot read {key}", exc) from exc

    def _get_json(self, key: str) -> tuple[Any, str] | None:
        """(parsed JSON, e_tag), or None when the object is absent."""
        try:
            res = obstore.get(self.store, key)
            raw = bytes(res.bytes())
        except FileNotFoundError:
            return None
        except BaseError as exc:
            raise self._error(f"cannot read {key}", exc) from exc
        try:
            return json.loads(raw), res.meta["e_tag"]
        except ValueError as exc:
            raise RepoError(f"repository {self.url}: {key} is not JSON: {exc}") from exc

    def _put_raw(self, key: str, data: bytes, mode: Any = None) -> dict[str, Any]:
        """A put; AlreadyExistsError/PreconditionError pass through for the caller's CAS logic."""
        try:
            return obstore.put(self.store, key, data, mode=mode)  # type: ignore[return-value]
        except (AlreadyExistsError, PreconditionError):
            raise
        except BaseError as exc:
            raise self._error(f"cannot write {key}", exc) from exc

    def _delete(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            obstore.delete(self.store, keys)
        except FileNotFoundError:
            pass
        except BaseError as exc:
            raise self._error("cannot delete objects", exc) from exc

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        try:
            for batch in obstore.list(self.store, prefix, chunk_size=1000):
                yield from batch  # type: ignore[misc]
        except BaseError as exc:
            raise self._error(f"cannot list {prefix}", exc) from exc

    def _store_now(self) -> float:
        """The store's clock: the last_modified of an object written just now."""
        self._put_raw("clock", b"")
        meta = self._head("clock")
        return _stamp(meta) if meta else 0.0

    # --- catalog -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _txn(self, timeout: float | None = None) -> Iterator[None]:
        yield  # every catalog change is its own compare-and-set

    def _catalog_doc(self) -> tuple[dict[str, Any], str]:
        got = self._get_json(CATALOG_KEY)
        if got is None:
            raise RepoError(f"catalog unreadable: {self.url}/{CATALOG_KEY} is missing")
        doc, etag = got
        if not isinstance(doc, dict) or not isinstance(doc.get("points"), list) \
                or not isinstance(doc.get("fenced", []), list):
            raise RepoError(f"catalog unreadable: {self.url}/{CATALOG_KEY} is not a table of restore points")
        doc.setdefault("fenced", [])
        return doc, etag

    def _catalog_cas(self, mutate: Callable[[dict[str, Any]], Any]) -> Any:
        """Read the catalog, ``mutate`` it in place (it may raise to refuse), put it if nobody changed it
        meanwhile, else again. ``mutate`` must be idempotent: a put whose answer was lost is retried."""
        for attempt in range(CAS_TRIES):
            doc, etag = self._catalog_doc()
            result = mutate(doc)
            try:
                self._put_raw(CATALOG_KEY, json.dumps(doc, separators=(",", ":")).encode(), mode={"e_tag": etag})
                return result
            except PreconditionError:
                time.sleep(random.uniform(0, min(0.5, 0.01 * (attempt + 1))))  # back off from the other writer
        raise RepoBusyError(f"repository {self.url}: the catalog changed {CAS_TRIES} times while updating it")

    def _catalog_entries(self) -> list[tuple[int, dict[str, Any]]]:
        return [(n, d if isinstance(d, dict) else {"value": d})
                for n, d in enumerate(self._catalog_doc()[0]["points"], 1)]

    def _find_entry(self, point_id: str) -> dict[str, Any] | None:
        return next((d for _, d in self._catalog_entries() if d.get("id") == point_id), None)

    def _update_point(self, point_id: str, mutate: Any) -> None:
        def change(doc: dict[str, Any]) -> None:
            for d in doc["points"]:
                if isinstance(d, dict) and d.get("id") == point_id:
                    mutate(d)
        self._catalog_cas(change)

    def _mark_verified(self, point_ids: list[str], when: float) -> None:
        ids = set(point_ids)
        self._update_many(ids, lambda d: d.__setitem__("verified_at", when))

    def _update_many(self, ids: set[str], mutate: Callable[[dict[str, Any]], None]) -> None:
        def change(doc: dict[str, Any]) -> None:
            for d in doc["points"]:
                if isinstance(d, dict) and d.get("id") in ids:
                    mutate(d)
        self._catalog_cas(change)

    def _drop_points(self, point_ids: list[str]) -> None:
        """Catalog CAS first, then the leases: a writer that named a point as its base before reading
        the catalog (Dekker order) is seen here, and that manifest stays for gc to drop later."""
        if not point_ids:
            return
        ids = set(point_ids)

        def change(doc: dict[str, Any]) -> None:
            doc["points"] = [d for d in doc["points"] if not (isinstance(d, dict) and d.get("id") in ids)]
        self._catalog_cas(change)
        self._drop_manifests(ids)

    def _drop_manifests(self, ids: set[str]) -> None:
        leased = {b for lease in self._list_leases() for b in lease[2].get("base_point_ids", [])}
        self._delete([f"points/{pid}.json" for pid in sorted(ids - leased)])

    def forget(self, ref: str) -> str:
        """Drop one catalog entry (a point id, or ``#N``); its manifest goes unless a lease names it."""
        found: list[dict[str, Any]] = []

        def change(doc: dict[str, Any]) -> None:
            found.clear()
            keep = []
            for n, d in enumerate(doc["points"], 1):
                if not found and ref in ((d.get("id") if isinstance(d, dict) else None), f"#{n}"):
                    found.append(d if isinstance(d, dict) else {})
                else:
                    keep.append(d)
            if not found:
                raise PointNotFoundError(ref)
            doc["points"] = keep
        self._catalog_cas(change)
        doc = found[0]
        pid = doc.get("id")
        if isinstance(pid, str) and point_problem(doc) is None:
            with self._mutex:
                self._manifests.pop(pid, None)
            self._drop_manifests({pid})
        what = f"restore point {pid}" if point_problem(doc) is None else f"catalog entry {ref}"
        vm = doc.get("vm_name") or doc.get("vm_urn")
        return what + (f" of VM {vm}" if isinstance(vm, str) and vm else "")

    # --- manifests -----------------------------------------------------------------------
    def _manifest_key(self, point_id: str) -> str:
        return f"points/{point_id}.json"

    def _manifest_bytes(self, point_id: str) -> bytes:
        try:
            return bytes(obstore.get(self.store, self._manifest_key(point_id)).bytes())
        except FileNotFoundError:
            raise
        except BaseError as exc:
            raise self._error(f"cannot read the manifest of {point_id}", exc) from exc

    def _manifest_where(self, point_id: str) -> str:
        return f"{self.url}/{self._manifest_key(point_id)}"

    def _write_manifest(self, point_id: str, data: bytes) -> None:
        self._put_raw(self._manifest_key(point_id), data)

    # --- leases --------------------------------------------------------------------------
    def _list_leases(self) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(lease id, object meta, lease data) of every lease object (unreadable data: {})."""
        out = []
        for meta in self._list("leases/"):
            name = meta["path"].rsplit("/", 1)[-1]
            if not name.endswith(".json"):
                continue
            try:
                got = self._get_json(f"leases/{name}")
            except RepoError:
                got = ({}, "")
            if got is None:
                continue  # deleted meanwhile: its writer committed or gave up
            data = got[0] if isinstance(got[0], dict) else {}
            if not isinstance(data.get("base_point_ids", []), list):
                data["base_point_ids"] = []
            out.append((name[:-5], meta, data))
        return out

    def _lease_begin(self, writer: PointWriter) -> None:
        lease = _Lease(self, writer.point_id, {k: v for k, v in writer._lease.items() if k != "proc_start"})
        lease.start()
        with self._mutex:
            self._leases_mine[writer.point_id] = lease

    def _lease(self, point_id: str) -> _Lease:
        with self._mutex:
            lease = self._leases_mine.get(point_id)
        if lease is None:
            raise RepoError(f"restore point {point_id} has no lease (aborted?)")
        return lease

    def _lease_add_base(self, writer: PointWriter, base_point_id: str) -> None:
        """Before the caller reads the catalog to confirm the base (Dekker order with prune)."""
        self._lease(writer.point_id).add_base(base_point_id)

    def _commit_entry(self, writer: PointWriter) -> None:
        lease = self._lease(writer.point_id)
        if lease.lost:
            raise RepoError(lease.lost)
        entry = writer.point.to_dict()

        def change(doc: dict[str, Any]) -> None:
            if writer.point_id in doc["fenced"]:
                raise RepoError(f"lease lost: gc fenced restore point {writer.point_id}'s writer (it stalled "
                                f"longer than {self.lease_ttl_s:g} s); nothing committed")
            if not any(isinstance(d, dict) and d.get("id") == writer.point_id for d in doc["points"]):
                doc["points"].append(entry)
        self._catalog_cas(change)
        with self._mutex:
            self._leases_mine.pop(writer.point_id, None)
        lease.stop(delete=True)

    def _abort_point(self, writer: PointWriter) -> None:
        with self._mutex:
            lease = self._leases_mine.pop(writer.point_id, None)
        with contextlib.suppress(RepoError):
            if self._find_entry(writer.point_id) is None:
                self._delete([self._manifest_key(writer.point_id)])
        if lease is not None:
            lease.stop(delete=True)

    @contextlib.contextmanager
    def protect(self, point_ids: list[str]) -> Iterator[None]:
        """Keep these points' chunks and manifests from prune+gc while a restore reads them (a reader
        lease naming them as bases, written before the catalog is checked)."""
        token = f"read-{secrets.token_hex(6)}"
        lease = _Lease(self, token, {"base_point_ids": list(point_ids), "reader": True})
        lease.start()
        try:
            for pid in point_ids:
                self.point(pid)  # must still be in the catalog, as for an incremental's base
            yield
        finally:
            lease.stop(delete=True)

    # --- chunks --------------------------------------------------------------------------
    @staticmethod
    def _chunk_key(digest: str) -> str:
        return f"chunks/{digest[:2]}/{digest}"

    def _store_chunk(self, digest: str, data: bytes, writer: PointWriter | None = None) -> tuple[str, int]:
        if writer is not None:
            self._lease(writer.point_id).touch(digest)  # before the HEAD: see _Lease.touch
        key = self._chunk_key(digest)
        if self._head(key) is not None:
            return "reused", 0
        if _looks_incompressible(data):
            marker, payload = CHUNK_RAW, data
        else:
            marker, payload = CHUNK_ZSTD, _compressor().compress(data)
        self._put_raw(key, marker + payload)
        return "stored", len(marker) + len(payload)

    def read_chunk(self, digest: str, expected_len: int | None = None, *, check: bool = True) -> bytes:
        """Decompressed chunk bytes, checked against the digest (raises :class:`ChunkError`)."""
        try:
            raw = obstore.get(self.store, self._chunk_key(digest)).bytes()
        except FileNotFoundError:
            raise ChunkError(f"chunk {digest} is missing", digest=digest, problem="missing") from None
        except BaseError as exc:
            raise ChunkError(f"chunk {digest} unreadable: {str(exc).splitlines()[0]}", digest=digest,
                             problem="missing") from exc
        view = memoryview(raw)
        return decode_chunk(digest, bytes(view[:4]), bytes(view[4:]), expected_len, check=check)

    def _absent_chunks(self, digests: set[str]) -> set[str]:
        if not digests:
            return set()
        with ThreadPoolExecutor(max_workers=min(16, len(digests))) as pool:
            found = dict(zip(digests, pool.map(lambda d: self._head(self._chunk_key(d)) is not None, digests)))
        return {d for d, there in found.items() if not there}

    def _chunk_state(self, digest: str) -> str | None:
        key = self._chunk_key(digest)
        if self._head(key) is not None:
            return None
        return "quarantined" if self._head(key + ".bad") is not None else "missing"

    def _quarantine_chunk(self, digest: str) -> None:
        key = self._chunk_key(digest)
        try:
            obstore.copy(self.store, key, key + ".bad")
            obstore.delete(self.store, key)
        except (FileNotFoundError, BaseError) as exc:
            log.warning("cannot quarantine %s: %s", key, exc)

    def damage_where(self, digest: str) -> str | None:
        """The object a damaged chunk is (reports name it)."""
        return f"{self.url}/{self._chunk_key(digest)}"

    def room(self) -> tuple[int, int] | None:
        return None  # an object store tells no free space

    def disk_usage(self) -> tuple[int, int]:
        """(chunk objects, bytes stored) of the chunk store."""
        n = size = 0
        for meta in self._list("chunks/"):
            if DIGEST_RE.match(meta["path"].rsplit("/", 1)[-1]):
                n += 1
                size += int(meta["size"])
        return n, size

    def close(self) -> None:
        pass  # the store holds no handle to release

    # --- gc ------------------------------------------------------------------------------
    def _fence(self, lease_id: str) -> None:
        """Make a dead lease's writer unable to commit (catalog CAS), then remove the lease and its
        uncommitted manifest."""
        def change(doc: dict[str, Any]) -> None:
            if lease_id not in doc["fenced"]:
                doc["fenced"].append(lease_id)
            committed = any(isinstance(d, dict) and d.get("id") == lease_id for d in doc["points"])
            found.append(committed)
        found: list[bool] = []
        self._catalog_cas(change)
        self._delete([f"leases/{lease_id}.json"])
        if not found[-1]:
            self._delete([self._manifest_key(lease_id)])

    def _referenced(self) -> tuple[set[str], set[str], set[str]]:
        """(chunks referenced, catalog point ids, point ids leases name): the catalog first, then the
        leases (so a writer that named its base before reading the catalog is seen)."""
        maps = self.sweep_check()
        referenced = {h for pmaps in maps.values() for m in pmaps.values() for h in m.values()}
        leases = self._list_leases()
        named = {b for _, _, data in leases for b in data.get("base_point_ids", [])} | {lid for lid, _, _ in leases}
        for pid in sorted(named - set(maps)):
            try:
                pmaps = self._load_manifest(pid, fresh=True)["maps"]
            except ManifestError:
                continue  # a live writer's own manifest is usually not written yet (an S3 error stops gc)
            referenced.update(h for m in pmaps.values() for h in m.values())
        return referenced, set(maps), named

    def _gc_begin(self, gc_id: str) -> tuple[float, str]:
        """Create gc.json (one gc at a time; a stale one is replaced). (its last_modified T0, e_tag)."""
        body = json.dumps({"id": gc_id, "host": _HOST, "pid": os.getpid(), "state": "collecting"}).encode()
        try:
            res = self._put_raw(GC_KEY, body, mode="create")
        except AlreadyExistsError:
            meta = self._head(GC_KEY)
            if meta is None:
                return self._gc_begin(gc_id)
            age = self._store_now() - _stamp(meta)
            if age <= self.lease_ttl_s:
                raise RepoBusyError(f"repository {self.url}: another gc is running ({GC_KEY} is {age:.0f} s old)")
            try:
                res = self._put_raw(GC_KEY, body, mode={"e_tag": meta["e_tag"]})
            except PreconditionError:
                raise RepoBusyError(f"repository {self.url}: another gc is starting") from None
        meta = self._head(GC_KEY)
        if meta is None or meta["e_tag"] != res["e_tag"]:
            raise RepoBusyError(f"repository {self.url}: another gc took {GC_KEY}")
        return _stamp(meta), res["e_tag"]

    def gc(self) -> GcReport:
        """Delete chunks no restore point references and no running writer may still use.

        (1) create gc.json, its last_modified is T0; (2) fence dead leases; (3) catalog, then leases ->
        referenced; (4) candidates = unreferenced chunks modified before min(T0, oldest live lease's
        start) - slack; (5) condemn them in gc.json; (6) wait until every live lease acknowledged (or
        died: fenced); (7) delete candidates - acknowledged gc_keep - referenced (read again), with
        gc.json renewed all along; (8) delete gc.json."""
        report = GcReport()
        gc_id = secrets.token_hex(8)
        t0, etag = self._gc_begin(gc_id)
        beat = _GcHeartbeat(self, gc_id, etag)
        try:
            self._gc(report, gc_id, t0, beat)
        finally:
            beat.stop()
            meta = self._head(GC_KEY)
            if meta is not None and meta["e_tag"] == beat.etag:
                self._delete([GC_KEY])
        return report

    def _gc(self, report: GcReport, gc_id: str, t0: float, beat: "_GcHeartbeat") -> None:
        ttl = self.lease_ttl_s
        # (2) dead leases: fenced before anything treats them as gone
        live: dict[str, float] = {}
        for lid, meta, data in self._list_leases():
            if t0 - _stamp(meta) > ttl:
                self._fence(lid)
                report.leases_removed += 1
            else:
                live[lid] = float(data.get("started") or _stamp(meta))
        report.live_leases = len(live)
        # (3)
        referenced, _, _ = self._referenced()
        # (4)
        cutoff = min([t0, *live.values()]) - CLOCK_SLACK_S
        candidates: dict[str, int] = {}
        bad: list[str] = []
        for meta in self._list("chunks/"):
            name = meta["path"].rsplit("/", 1)[-1]
            if name.endswith(".bad"):
                bad.append(name[:-4])
                continue
            if not DIGEST_RE.match(name):
                continue
            report.chunks_total += 1
            if name in referenced:
                continue
            if _stamp(meta) >= cutoff:
                report.chunks_kept_recent += 1
                continue
            candidates[name] = int(meta["size"])
        report.chunks_referenced = len(referenced)
        keep: set[str] = set()
        if candidates:
            # (5) condemn
            doc = {"id": gc_id, "host": _HOST, "pid": os.getpid(), "state": "condemned",
                   "candidates": sorted(candidates)}
            beat.put(doc)
            now = self._store_now()
            # (6) every live lease acknowledges, or dies (fenced)
            deadline = time.monotonic() + 2 * ttl + 10 * self.gc_poll_s
            acked: set[str] = set()
            while True:
                pending = []
                for lid, meta, data in self._list_leases():
                    if lid in acked:
                        continue
                    if data.get("gc_ack") == gc_id:
                        acked.add(lid)
                        keep.update(h for h in data.get("gc_keep", []) if isinstance(h, str))
                    elif now - _stamp(meta) > ttl:
                        self._fence(lid)
                        report.leases_removed += 1
                    else:
                        pending.append(lid)
                if not pending:
                    break
                if time.monotonic() > deadline:
                    raise RepoError(f"gc: lease(s) {', '.join(pending)} neither answered nor expired within "
                                    f"{2 * ttl:g} s; nothing deleted")
                time.sleep(self.gc_poll_s / 2)
                beat.check()
                now = self._store_now()
            # (7) what is still unreferenced after the acknowledgements
            referenced, _, _ = self._referenced()
            doomed = sorted(set(candidates) - keep - referenced)
            report.chunks_kept_recent += len(candidates) - len(doomed)
            for i in range(0, len(doomed), DELETE_BATCH):
                batch = doomed[i:i + DELETE_BATCH]
                beat.check()  # right before deleting: this gc still holds gc.json, and did not stall
                self._delete([self._chunk_key(d) for d in batch])
                report.chunks_removed += len(batch)
                report.bytes_removed += sum(candidates[d] for d in batch)
        else:
            referenced, _, _ = self._referenced()
        # Quarantined copies nobody references, and manifests nobody names (old enough that no writer
        # this gc cannot see wrote them).
        self._delete([self._chunk_key(d) + ".bad" for d in bad if d not in referenced])
        _, catalog_ids, named = self._referenced()
        doomed_manifests = []
        for meta in self._list("points/"):
            name = meta["path"].rsplit("/", 1)[-1]
            pid = name[:-5] if name.endswith(".json") else None
            if pid and pid not in catalog_ids and pid not in named and _stamp(meta) < cutoff:
                doomed_manifests.append(meta["path"])
        self._delete(doomed_manifests)
        report.manifests_removed = len(doomed_manifests)


REMOTE_BACKENDS["s3://"] = S3Repository
