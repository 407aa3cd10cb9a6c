"""The backup repository: content-addressed chunks, one manifest per restore point, a catalog.

Layout under the repository directory::

    repo.json                 format marker
    repo.lock                 flock held briefly by whoever changes the catalog, leases or runs gc
    catalog.json              tinydb (atomic writes): one entry per committed restore point
    points/<id>.json          manifest: every non-zero block index -> chunk digest, for every disk
    pending/<id>.json         lease of a writer in progress (pid, start, base points)
    chunks/<2 hex>/<64 hex>   zstd-1 compressed block, named by SHA-256 of the uncompressed bytes

Commit order is chunks (fsynced) -> manifest (atomic) -> catalog entry, so a crash at any moment
leaves at worst chunks nobody references, a manifest the catalog does not name, and a lease whose
pid is gone; :meth:`Repository.open` and :meth:`Repository.gc` clean those up.

Garbage collection runs beside writers (in this or another process). It never deletes a chunk
referenced by a catalog point, by the base point of a live lease, or written/reused after the
oldest live lease began (writers refresh the mtime of every chunk they reuse). The last race --
a writer reusing a chunk while gc unlinks it -- is closed by renaming the chunk aside first and
re-checking its mtime after the rename.

:class:`RepositoryBase` holds what does not depend on where the repository is (the catalog read as
points, manifests, writers and readers, verify, prune's planning); :class:`Repository` is the local
directory above, :class:`fctui.repo.s3.S3Repository` the same model on S3 (``s3://bucket/prefix``,
which :meth:`Repository.open` dispatches to).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import mmap
import os
import random
import re
import secrets
import shutil
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import tzinfo
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator

import zstandard
from tinydb import Query

from fctui.store import LockedError, StoreError, WriterLock, atomic_write_bytes, fsync_dir, open_db, pid_alive
from fctui.store import paths as store_paths
from fctui.store.atomic import remove_stale_temps, temp_name_for

from .errors import (
    ChunkError, ManifestError, NoRepositoryError, PointNotFoundError, RepoBusyError, RepoDamagedError, RepoError,
    RepoFullError,
)
from .model import (
    BlockDamage, DamagedEntry, DiskStats, GcReport, PruneReport, RestorePoint, RestorePointDisk, VerifyReport,
    POINT_ID_RE, point_problem,
)
from .retention import Retention, RetentionPlan, select

FORMAT_NAME = "fctui-repo"
FORMAT_VERSION = 1
ZSTD_LEVEL = 1  # PBS's choice: fast enough not to bound a backup stream
# Every chunk file starts with a 4-byte type marker: zstd frame, or the block as is when it does
# not compress (random-looking data; zstd would cost ~1.3 s/GB of CPU for nothing).
CHUNK_ZSTD = b"FCZ1"
CHUNK_RAW = b"FCR1"
SAMPLE_PIECES, SAMPLE_LEN = 4, 16 * 1024
INCOMPRESSIBLE = 0.95  # sample compressed/original above this -> store raw
DIGEST_RE = re.compile(r"\A[0-9a-f]{64}\Z")  # \Z: `$` would let a digest with a line break through
KINDS = ("cbt", "standard")
SPACE_MARGIN_MIN = 1 << 30        # kept free: manifests, catalog, job state, and the estimate's error
SPACE_MARGIN_FRACTION = 0.02      # ... or this share of the filesystem, whichever is more

# Repositories that are not a local directory, by URL prefix ("s3://" -> S3Repository). Each backend's
# module registers itself (fctui/repo/__init__.py imports them), so this module imports none of them.
REMOTE_BACKENDS: dict[str, Any] = {}

_tls = threading.local()
log = logging.getLogger("fctui.repo")


def _compressor() -> zstandard.ZstdCompressor:
    # zstd contexts are not thread-safe: one per thread.
    c = getattr(_tls, "cctx", None)
    if c is None:
        c = _tls.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_tls, "dctx", None)
    if d is None:
        d = _tls.dctx = zstandard.ZstdDecompressor()
    return d


_zero_cache: dict[int, bytes] = {}


def _zeros(n: int) -> bytes:
    z = _zero_cache.get(n)
    if z is None:
        z = _zero_cache[n] = bytes(n)
    return z


def _looks_incompressible(data: bytes) -> bool:
    """Compress a few slices spread over the block; a 2 MiB block costs ~3 % of a full pass."""
    n = len(data)
    if n <= SAMPLE_PIECES * SAMPLE_LEN * 2:
        return False  # small: just compress it
    step = (n - SAMPLE_LEN) // (SAMPLE_PIECES - 1)
    sample = b"".join(data[i * step:i * step + SAMPLE_LEN] for i in range(SAMPLE_PIECES))
    return len(_compressor().compress(sample)) > INCOMPRESSIBLE * len(sample)


def _write_all(fd: int, head: bytes, body: bytes) -> None:
    written = os.writev(fd, [head, body])
    total = len(head) + len(body)
    if written < total:  # short write (rare): finish from where it stopped
        rest = memoryview(head + body)[written:] if written < len(head) else memoryview(body)[written - len(head):]
        while rest:
            rest = rest[os.write(fd, rest):]


FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})  # the filesystem (or the user's quota) is full


# Chunk files are written with O_DIRECT where the filesystem takes it: the bytes go from our buffer to
# the device without a page-cache copy. Measured on this project's machine (ext4 on virtio), buffered
# writes of new files cost 3-4 CPU s/GB in the kernel, as much as reading the resource and hashing
# together; direct writes 0.15. Where O_DIRECT is refused, chunks are written buffered as before.
DIRECT_ALIGN = 4096  # a multiple of any device's logical block size


def _direct_buffer(n: int) -> mmap.mmap:
    """A page-aligned buffer of at least ``n`` bytes (padded to DIRECT_ALIGN), one per thread, reused."""
    size = -(-n // DIRECT_ALIGN) * DIRECT_ALIGN
    buf = getattr(_tls, "direct", None)
    if buf is None or len(buf) < size:
        if buf is not None:
            buf.close()
        buf = _tls.direct = mmap.mmap(-1, max(size, 4 << 20))
    return buf


def _write_direct(tmp: Path, head: bytes, body: bytes) -> bool:
    """Write ``head + body`` as the new file ``tmp`` with O_DIRECT. False (nothing left behind) when
    the filesystem refuses direct I/O; OSError for any other failure."""
    n = len(head) + len(body)
    buf = _direct_buffer(n)
    buf[:len(head)] = head
    buf[len(head):n] = body
    padded = -(-n // DIRECT_ALIGN) * DIRECT_ALIGN
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o600)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    try:
        view = memoryview(buf)[:padded]
        pos = 0
        while pos < padded:  # direct writes stay aligned: a short one ends on a block boundary
            pos += os.write(fd, view[pos:])
        del view
        os.ftruncate(fd, n)  # drop the padding: the file holds exactly head + body
    except OSError as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.errno == errno.EINVAL:
            return False
        raise
    os.close(fd)
    return True


def decode_chunk(digest: str, marker: bytes, body: bytes, expected_len: int | None, *, check: bool) -> bytes:
    """A chunk's block from its stored form (type marker + body), checked as :meth:`Repository.read_chunk` says."""
    if marker == CHUNK_RAW:
        data = body
    elif marker == CHUNK_ZSTD:
        try:
            data = _decompressor().decompress(body)
        except zstandard.ZstdError as exc:
            raise ChunkError(f"chunk {digest} does not decompress: {exc}", digest=digest,
                             problem="corrupt") from exc
    else:
        raise ChunkError(f"chunk {digest} has an unknown type marker", digest=digest, problem="corrupt")
    if check and hashlib.sha256(data).hexdigest() != digest:
        raise ChunkError(f"chunk {digest} content does not match its hash", digest=digest,
                         problem="corrupt")
    if expected_len is not None and len(data) != expected_len:
        raise ChunkError(f"chunk {digest} has {len(data)} bytes, expected {expected_len}",
                         digest=digest, problem="corrupt")
    return data


def _proc_start(pid: int) -> str | None:
    """Kernel start time of a process, to tell a live writer from a recycled pid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 counted after the parenthesised command name (which may contain spaces).
    tail = raw.rsplit(")", 1)[-1].split()
    return tail[19] if len(tail) > 19 else None


_HOST = socket.gethostname()


class Lease:
    """A writer in progress, as recorded in ``pending/<point id>.json``."""

    def __init__(self, path: Path, data: dict[str, Any], mtime_ns: int) -> None:
        self.path = path
        self.point_id: str = str(data.get("point_id", path.stem))
        self.pid: int = int(data.get("pid", 0) or 0)
        self.proc_start: str | None = data.get("proc_start")
        self.host: str = str(data.get("host", ""))
        self.started_ns: int = int(data.get("started_ns", mtime_ns) or mtime_ns)
        bases = data.get("base_point_ids", [])
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise ValueError("base_point_ids is not a list of point ids")
        self.base_point_ids: list[str] = bases

    def alive(self) -> bool:
        if self.host and self.host != _HOST:
            return True  # cannot check another machine's processes: assume it still writes
        if not pid_alive(self.pid):
            return False
        if self.proc_start is not None:
            current = _proc_start(self.pid)
            if current is not None and current != self.proc_start:
                return False  # pid recycled by an unrelated process
        return True


class RepositoryBase:
    """What every backend shares: the catalog read as restore points, manifests, readers and
    writers, verify's bookkeeping and prune's planning. A backend (:class:`Repository` on a
    local directory, :class:`fctui.repo.s3.S3Repository` on S3) provides the narrow rest:

    - catalog: ``_catalog_entries()``, ``_find_entry(point_id)``, ``_update_point(point_id, mutate)``,
      ``_mark_verified(point_ids, when)``, ``_drop_points(point_ids)`` (prune: entries, then manifests
      no live lease names as base), ``_txn()`` (a context: one catalog change at a time where needed);
    - manifests: ``_manifest_bytes(point_id)`` (FileNotFoundError when absent), ``_manifest_where(point_id)``,
      ``_write_manifest(point_id, data)``;
    - chunks: ``_store_chunk(digest, data, writer)``, ``read_chunk``, ``_absent_chunks``, ``_chunk_state``,
      ``_quarantine_chunk(digest)``, ``_sync_chunk``/``_sync_chunks`` (not called when ``DURABLE_PUTS``);
    - writers: ``_lease_begin(writer)``, ``_lease_add_base(writer, point_id)``, ``_commit_entry(writer)``,
      ``_abort_point(writer)``.
    """

    MANIFEST_CACHE = 8
    DURABLE_PUTS = False  # True: a chunk is durable when its write returns (nothing to fsync at commit)

    def __init__(self) -> None:
        self._mutex = threading.RLock()
        self._manifests: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def _catalog_docs(self) -> list[dict[str, Any]]:
        return [doc for _, doc in self._catalog_entries()]

    @staticmethod
    def _entry_ref(doc_id: int, doc: dict[str, Any]) -> str:
        pid = doc.get("id")
        return pid if isinstance(pid, str) and POINT_ID_RE.match(pid) else f"#{doc_id}"

    def catalog(self) -> tuple[list[RestorePoint], list[DamagedEntry]]:
        """Every catalog entry: the restore points (oldest first) and the entries that are not points."""
        good: list[RestorePoint] = []
        bad: list[DamagedEntry] = []
        for doc_id, doc in self._catalog_entries():
            problem = point_problem(doc)
            if problem is None:
                good.append(RestorePoint.from_dict(doc))
            else:
                bad.append(DamagedEntry(self._entry_ref(doc_id, doc), "not-a-point",
                                        f"catalog entry is not a restore point: {problem}"))
        good.sort(key=lambda p: (p.created, p.id))
        return good, bad

    def damaged_entries(self) -> list[DamagedEntry]:
        """Catalog entries that are not restore points (cheap: reads the catalog only)."""
        return self.catalog()[1]

    def points(self, vm_urn: str | None = None) -> list[RestorePoint]:
        """Committed restore points, oldest first (optionally of one VM). Entries that are not
        points are left out here; :meth:`damaged_entries`, verify and gc report them."""
        return [p for p in self.catalog()[0] if vm_urn is None or p.vm_urn == vm_urn]

    def point(self, point_id: str) -> RestorePoint:
        doc = self._find_entry(point_id)
        if doc is None:
            raise PointNotFoundError(point_id)
        problem = point_problem(doc)
        if problem is not None:
            entry = DamagedEntry(point_id, "not-a-point", f"catalog entry is not a restore point: {problem}")
            raise RepoDamagedError(f"restore point {point_id}: {entry.detail}; `fctui repo forget {point_id}` "
                                   f"drops it", entries=[entry])
        return RestorePoint.from_dict(doc)

    def sweep_check(self) -> dict[str, dict[str, dict[int, str]]]:
        """Block maps of every catalog point, read fresh from disk, or :class:`RepoDamagedError`
        naming every entry whose chunks cannot be known -- a sweep then could delete them."""
        points, damaged = self.catalog()
        maps: dict[str, dict[str, dict[int, str]]] = {}
        for p in points:
            try:
                pmaps = self._load_manifest(p.id, fresh=True)["maps"]
            except ManifestError as exc:
                damaged.append(DamagedEntry(p.id, exc.problem, f"manifest {exc.detail}"))
                continue
            absent = [d.disk_name or d.volume_urn for d in p.disks if d.volume_urn not in pmaps]
            if absent:
                damaged.append(DamagedEntry(p.id, "manifest-corrupt",
                                            f"manifest has no block map for disk(s) {', '.join(absent)}"))
                continue
            maps[p.id] = pmaps
        if damaged:
            names = "; ".join(str(e) for e in damaged)
            raise RepoDamagedError(
                f"refusing to delete anything: {len(damaged)} catalog entr{'y' if len(damaged) == 1 else 'ies'} "
                f"cannot be read, so the chunks they need are unknown: {names}. Run `fctui repo verify` to "
                f"see the damage; `fctui repo forget POINT` drops an entry you give up on", entries=damaged)
        return maps

    def latest_point(self, vm_urn: str) -> RestorePoint | None:
        pts = self.points(vm_urn)
        return pts[-1] if pts else None

    def _load_manifest(self, point_id: str, *, fresh: bool = False) -> dict[str, Any]:
        """``fresh``: read the file even when cached (a sweep must see a manifest deleted meanwhile)."""
        with self._mutex:
            cached = None if fresh else self._manifests.get(point_id)
            if cached is not None:
                self._manifests.move_to_end(point_id)
                return cached
        try:
            raw = json.loads(self._manifest_bytes(point_id))
            maps = {d["volume_urn"]: {int(i): str(h) for i, h in d["blocks"]} for d in raw["disks"]}
            if sum(len(m) for m in maps.values()) != sum(len(d["blocks"]) for d in raw["disks"]):
                raise ValueError("a disk or block is listed twice")
            bad = next((h for m in maps.values() for h in m.values() if not DIGEST_RE.match(h)), None)
            if bad is not None:
                raise ValueError(f"block digest {bad[:70]!r} is not a SHA-256")
        except FileNotFoundError:
            raise ManifestError(point_id, problem="manifest-missing",
                                detail=f"is missing ({self._manifest_where(point_id)})") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            what = f"{type(exc).__name__} {exc}" if isinstance(exc, (KeyError, TypeError, AttributeError)) else exc
            raise ManifestError(point_id, problem="manifest-corrupt", detail=f"is unreadable: {what}") from exc
        manifest = {"raw": raw, "maps": maps}
        with self._mutex:
            self._manifests[point_id] = manifest
            while len(self._manifests) > self.MANIFEST_CACHE:
                self._manifests.popitem(last=False)
        return manifest

    def _disk_map(self, point_id: str, volume_urn: str) -> dict[int, str]:
        maps = self._load_manifest(point_id)["maps"]
        if volume_urn not in maps:  # the catalog names the disk (callers check): the manifest lost it
            raise ManifestError(point_id, problem="manifest-corrupt",
                                detail=f"has no block map for disk {volume_urn}")
        return maps[volume_urn]

    def new_point(self, *, vm_urn: str, vm_name: str, job_id: str, kind: str, vm_config: dict[str, Any],
                  snapshot_urn: str, created: float) -> "PointWriter":
        """Start a restore point; nothing is visible in :meth:`points` until ``commit()``."""
        if kind not in KINDS:
            raise RepoError(f"restore point kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if not vm_urn:
            raise RepoError("a restore point needs the VM URN")
        try:
            json.dumps(vm_config)
        except (TypeError, ValueError) as exc:
            raise RepoError(f"vm_config is not JSON-serialisable: {exc}") from exc
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created))
        point_id = f"{stamp}-{secrets.token_hex(4)}"
        return PointWriter(self, RestorePoint(
            id=point_id, vm_urn=vm_urn, vm_name=vm_name, created=float(created), kind=kind,
            job_id=job_id, snapshot_urn=snapshot_urn, vm_config=vm_config))

    def open_disk(self, point_id: str, volume_urn: str) -> "DiskReader":
        point = self.point(point_id)
        disk = point.disk(volume_urn)
        if disk is None:
            raise RepoError(f"restore point {point_id} has no disk {volume_urn}")
        return DiskReader(self, point, disk, self._disk_map(point_id, volume_urn))

    def _record_sha256(self, point_id: str, volume_urn: str, digest: str) -> None:
        def mutate(doc: dict[str, Any]) -> None:
            for d in doc.get("disks", []):
                if d.get("volume_urn") == volume_urn:
                    d["sha256"] = digest
        try:
            self._update_point(point_id, mutate)
        except RepoBusyError:
            pass  # a cache: skip it rather than fail the caller

    def verify(self, *, sample_pct: float = 100.0, point_ids: list[str] | None = None,
               quarantine: bool = True, threads: int = 4, seed: int | None = None) -> VerifyReport:
        """Re-read and re-hash the chunks of the given points (all by default), or a random
        ``sample_pct`` percent of them. Corrupt chunks are renamed ``<digest>.bad`` (when
        ``quarantine``) so the next backup writes them again instead of reusing them."""
        if not (0 < sample_pct <= 100) or math.isnan(sample_pct):
            raise RepoError(f"sample must be a percentage in (0, 100], not {sample_pct}")
        started = time.monotonic()
        bad_entries: list[DamagedEntry] = []
        if point_ids is None:
            points, bad_entries = self.catalog()
        else:
            points = [self.point(pid) for pid in point_ids]
        report = VerifyReport(points_checked=[p.id for p in points], sample_pct=float(sample_pct),
                              bad_entries=bad_entries)
        # digest -> where it is used: (point id, volume, disk name, block, expected length)
        refs: dict[str, list[tuple[str, str, str, int, int]]] = {}
        for p in points:
            try:
                maps = self._load_manifest(p.id, fresh=True)["maps"]
            except ManifestError as exc:
                for d in p.disks:
                    report.damaged.append(BlockDamage(p.id, d.volume_urn, d.disk_name, None, None, exc.problem))
                continue
            for d in p.disks:
                blocks = maps.get(d.volume_urn)
                if blocks is None:
                    report.damaged.append(BlockDamage(p.id, d.volume_urn, d.disk_name, None, None,
                                                      "manifest-corrupt"))
                    continue
                for idx, digest in blocks.items():
                    exp = min(d.block_size, d.size_bytes - idx * d.block_size)
                    refs.setdefault(digest, []).append((p.id, d.volume_urn, d.disk_name, idx, exp))
        digests = sorted(refs)
        report.chunks_total = len(digests)
        if sample_pct < 100:
            k = min(len(digests), max(1, math.ceil(len(digests) * sample_pct / 100))) if digests else 0
            chosen = random.Random(seed).sample(digests, k)
        else:
            chosen = digests
        lock = threading.Lock()

        def check(digest: str) -> None:
            exp = refs[digest][0][4]
            try:
                data = self.read_chunk(digest, exp)
            except ChunkError as exc:
                with lock:
                    report.bad_chunks[digest] = exc.problem
                if quarantine and exc.problem == "corrupt":
                    self._quarantine_chunk(digest)
                return
            with lock:
                report.chunks_checked += 1
                report.bytes_checked += len(data)

        if chosen:
            with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
                list(pool.map(check, chosen))
        for digest, problem in report.bad_chunks.items():
            for pid, vol, name, idx, _ in refs[digest]:
                report.damaged.append(BlockDamage(pid, vol, name, idx, digest, problem))
        report.damaged.sort(key=lambda d: (d.point_id, d.volume_urn, -1 if d.block is None else d.block))
        report.chunks_checked += len(report.bad_chunks)
        if sample_pct >= 100:
            bad = set(report.damaged_points)
            now = time.time()
            good = [p.id for p in points if p.id not in bad]
            if good:
                try:
                    self._mark_verified(good, now)
                except RepoBusyError:
                    pass  # the result is in the report; only the catalog note is skipped
        report.seconds = time.monotonic() - started
        return report

    def prune(self, keep_last: int, vm_urn: str | None = None, *, dry_run: bool = False) -> PruneReport:
        """Keep the newest ``keep_last`` points of each VM (or of ``vm_urn``); drop the rest's
        catalog entries and manifests. Chunks are freed by :meth:`gc`. ``dry_run``: only report."""
        if keep_last < 0:
            raise RepoError("--keep-last must be 0 or more")
        if keep_last == 0 and vm_urn is None:
            raise RepoError("--keep-last 0 would delete every restore point; name one VM to do that")

        def plan(pts: list[RestorePoint]) -> RetentionPlan:
            if keep_last:
                return select(pts, Retention(keep_last=keep_last), None)
            return RetentionPlan(remove=[p.id for p in pts])  # 0 for one VM: it goes entirely
        return self._prune(plan, vm_urn, dry_run=dry_run)

    def prune_retention(self, retention: Retention, *, vm_urn: str | None = None, tz: tzinfo | None,
                        dry_run: bool = False) -> PruneReport:
        """Apply PBS-style ``retention`` to each VM's points (or to ``vm_urn``'s), periods read in local
        time of ``tz`` (None: the system's zone); see :func:`fctui.repo.retention.select`. The same
        guarantees as :meth:`prune`; a retention of all zeros keeps everything. ``dry_run``: only
        report what would go (refusing as the real prune would)."""
        return self._prune(lambda pts: select(pts, retention, tz), vm_urn, dry_run=dry_run)

    def _prune(self, plan: Callable[[list[RestorePoint]], RetentionPlan], vm_urn: str | None, *,
               dry_run: bool = False) -> PruneReport:
        """Drop the catalog entries and manifests of the points ``plan`` removes from each VM's points
        (oldest first). Chunks are freed by :meth:`gc`."""
        report = PruneReport()
        with self._txn():
            # Before dropping anything: a sweep follows, and it must not run blind (see sweep_check).
            self.sweep_check()
            by_vm: dict[str, list[RestorePoint]] = {}
            for p in self.points(vm_urn):
                by_vm.setdefault(p.vm_urn, []).append(p)
            removed: list[str] = []
            for pts in by_vm.values():
                chosen = plan(pts)
                ids = set(chosen.remove)
                report.kept.extend(p.id for p in pts if p.id not in ids)
                report.why.update({pid: chosen.why[pid] for pid in chosen.keep if pid in chosen.why})
                if not ids:
                    continue
                report.removed.extend(sorted(ids))
                removed.extend(sorted(ids))
            if not dry_run:
                self._drop_points(removed)
                with self._mutex:
                    for pid in removed:
                        self._manifests.pop(pid, None)
        return report


class Repository(RepositoryBase):
    """A local backup repository directory. Thread-safe; several processes may share it."""

    LOCK_TIMEOUT = 30.0  # seconds to wait for another process's short catalog transaction

    def __init__(self, path: Path, *, clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.path = path
        # gc's "now" in seconds since the epoch; None: the filesystem's clock (the mtime of a file gc
        # touches), which is what chunk mtimes and lease starts are written on. Tests inject a clock they
        # advance instead of sleeping until a coarse file clock ticks.
        self.clock = clock
        self.chunks_dir = path / "chunks"
        self.points_dir = path / "points"
        self.pending_dir = path / "pending"
        self.catalog_path = path / "catalog.json"
        self.lock_path = path / "repo.lock"
        self._txn_depth = 0
        self._direct_io = True  # until the filesystem refuses O_DIRECT
        self._db = open_db(self.catalog_path)
        # No query cache: other processes change the catalog file behind this object's back.
        self._points = self._db.table("points", cache_size=0)

    # --- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str | None = None, *, create: bool = True,
             clock: Callable[[], float] | None = None) -> Any:
        """Open (and by default create) the repository at ``path`` (None: the XDG data dir);
        ``s3://bucket/prefix`` opens an :class:`~fctui.repo.s3.S3Repository` there. ``clock``: gc's
        now for a local repository (seconds since the epoch; default: the filesystem's clock)."""
        if isinstance(path, str):
            for scheme, backend in REMOTE_BACKENDS.items():
                if path.startswith(scheme):
                    return backend.open(path, create=create)
        if path is None:
            try:
                root = store_paths.repo_dir(create=False)
            except StoreError as exc:
                raise RepoError(str(exc)) from exc
        else:
            root = Path(path).expanduser()
        root = root.absolute()
        marker = root / "repo.json"
        if marker.is_file():
            try:
                meta = json.loads(marker.read_text())
            except (OSError, ValueError) as exc:
                raise RepoError(f"{root} has an unreadable repo.json: {exc}") from exc
            if meta.get("format") != FORMAT_NAME:
                raise RepoError(f"{root} is not an fctui repository")
            if int(meta.get("version", 0)) > FORMAT_VERSION:
                raise RepoError(f"{root} was written by a newer fctui (format {meta.get('version')})")
        elif not create:
            raise NoRepositoryError(f"no repository at {root} (create one by running a backup)")
        else:
            cls._create(root)
        try:
            repo = cls(root, clock=clock)
            repo._catalog_docs()  # fail at open, clearly, if the catalog is unreadable
            repo._recover()
        except StoreError as exc:
            raise RepoError(f"repository {root}: {exc}") from exc
        return repo

    @staticmethod
    def _create(root: Path) -> None:
        if root.exists() and not root.is_dir():
            raise RepoError(f"{root} exists and is not a directory")
        if root.is_dir() and any(p.name != "repo.lock" for p in root.iterdir()):
            raise RepoError(f"{root} is not empty and not an fctui repository; refusing to write there")
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            for sub in ("points", "pending", "chunks"):
                (root / sub).mkdir(exist_ok=True, mode=0o700)
            # All 256 shards up front: put_block never has to mkdir.
            for i in range(256):
                (root / "chunks" / f"{i:02x}").mkdir(exist_ok=True, mode=0o700)
            for sub in ("points", "pending", "chunks"):
                fsync_dir(root / sub)
            meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "chunk_hash": "sha256",
                    "compression": f"zstd-{ZSTD_LEVEL} (raw when incompressible)", "created": time.time()}
            atomic_write_bytes(root / "repo.json", json.dumps(meta, indent=1).encode())
        except (OSError, StoreError) as exc:
            raise RepoError(f"cannot create repository at {root}: {exc}") from exc

    def _recover(self) -> None:
        """Forget what dead writers left (stale leases, uncommitted manifests); chunks wait for gc."""
        try:
            with self._txn(timeout=0.5):
                for lease in self._leases():
                    if not lease.alive():
                        self._drop_dead_lease(lease)
        except RepoBusyError:
            pass  # someone else is in a transaction; they or the next gc will clean up

    def _drop_dead_lease(self, lease: Lease) -> None:
        if not self._catalog_has(lease.point_id):
            with contextlib.suppress(FileNotFoundError):
                (self.points_dir / f"{lease.point_id}.json").unlink()
        with contextlib.suppress(FileNotFoundError):
            lease.path.unlink()

    # --- locking -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _txn(self, timeout: float | None = None) -> Iterator[None]:
        """In-process mutex plus the cross-process repo.lock, re-entrant within a thread."""
        with self._mutex:
            if self._txn_depth:
                self._txn_depth += 1
                try:
                    yield
                finally:
                    self._txn_depth -= 1
                return
            lock = WriterLock(self.lock_path, timeout=self.LOCK_TIMEOUT if timeout is None else timeout,
                              purpose="repository writer")
            try:
                lock.acquire()
            except LockedError as exc:
                raise RepoBusyError(f"repository {self.path} is busy: {exc}") from exc
            except StoreError as exc:
                raise RepoError(str(exc)) from exc
            self._txn_depth = 1
            try:
                yield
            except StoreError as exc:  # catalog or lease file I/O: keep errors in our own type
                raise RepoError(f"repository {self.path}: {exc}") from exc
            finally:
                self._txn_depth = 0
                lock.release()

    # --- catalog -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _catalog_io(self) -> Iterator[None]:
        """tinydb calls on catalog.json: a file it cannot parse, or a table whose entries are not
        objects (tinydb itself fails with TypeError/ValueError/AttributeError), is one clear error."""
        try:
            yield
        except StoreError as exc:
            raise RepoError(f"catalog unreadable: {exc}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise RepoError(f"catalog unreadable: {self.catalog_path} is not a table of restore points "
                            f"({exc})") from exc

    def _catalog_entries(self) -> list[tuple[int, dict[str, Any]]]:
        """(entry number, entry) of every catalog entry, points or not."""
        with self._catalog_io():
            return [(d.doc_id, dict(d)) for d in self._points.all()]

    def _catalog_has(self, point_id: str) -> bool:
        with self._catalog_io():
            return bool(self._points.search(Query().id == point_id))

    def _find_entry(self, point_id: str) -> dict[str, Any] | None:
        with self._catalog_io():
            docs = self._points.search(Query().id == point_id)
        return dict(docs[0]) if docs else None

    def _mark_verified(self, point_ids: list[str], when: float) -> None:
        with self._txn(), self._catalog_io():
            self._points.update({"verified_at": when}, Query().id.one_of(point_ids))

    def _drop_points(self, point_ids: list[str]) -> None:
        """Prune's removal (under the caller's lock): entries, then manifests no live writer reads."""
        if point_ids:
            leased_bases = {b for lease in self._leases() if lease.alive() for b in lease.base_point_ids}
            with self._catalog_io():
                self._points.remove(Query().id.one_of(sorted(point_ids)))
            for pid in sorted(point_ids):
                if pid not in leased_bases:  # a running incremental still reads it: gc drops it later
                    with contextlib.suppress(FileNotFoundError):
                        self._manifest_path(pid).unlink()
        fsync_dir(self.points_dir)

    def forget(self, ref: str) -> str:
        """Drop one catalog entry (a point id, or ``#N`` for an entry without a usable id) and
        nothing else: its manifest and chunks become garbage for the next gc. Returns what went."""
        with self._txn():
            match = None
            for doc_id, doc in self._catalog_entries():
                if ref in (doc.get("id"), f"#{doc_id}"):
                    match = (doc_id, doc)
                    break
            if match is None:
                raise PointNotFoundError(ref)
            doc_id, doc = match
            with self._catalog_io():
                self._points.remove(doc_ids=[doc_id])
            pid = doc.get("id")
            if isinstance(pid, str):
                with self._mutex:
                    self._manifests.pop(pid, None)
        what = f"restore point {pid}" if point_problem(doc) is None else f"catalog entry {ref}"
        vm = doc.get("vm_name") or doc.get("vm_urn")
        return what + (f" of VM {vm}" if isinstance(vm, str) and vm else "")

    def _update_point(self, point_id: str, mutate: Any) -> None:
        """Read-modify-write of one catalog entry under the repository lock."""
        with self._txn(), self._catalog_io():
            table = self._points
            docs = table.search(Query().id == point_id)
            if not docs:
                return  # pruned meanwhile: nothing to cache
            doc = dict(docs[0])
            mutate(doc)
            table.update(doc, Query().id == point_id)

    # --- manifests -----------------------------------------------------------------------
    def _manifest_path(self, point_id: str) -> Path:
        return self.points_dir / f"{point_id}.json"

    def _manifest_bytes(self, point_id: str) -> bytes:
        return self._manifest_path(point_id).read_bytes()

    def _manifest_where(self, point_id: str) -> str:
        return str(self._manifest_path(point_id))

    def _write_manifest(self, point_id: str, data: bytes) -> None:
        try:
            atomic_write_bytes(self._manifest_path(point_id), data)
        except StoreError as exc:
            if getattr(exc.__cause__, "errno", None) in FULL_ERRNOS:
                raise RepoFullError(f"repository {self.path} is full: cannot write the manifest of "
                                    f"restore point {point_id}", path=str(self.path)) from exc
            raise RepoError(f"cannot write manifest: {exc}") from exc

    # --- leases --------------------------------------------------------------------------
    def _leases(self, unreadable: list[str] | None = None) -> list[Lease]:
        """Leases in ``pending/``; the names of files that are not leases go to ``unreadable``."""
        out: list[Lease] = []
        try:
            entries = list(os.scandir(self.pending_dir))
        except FileNotFoundError:
            return out
        for e in entries:
            if not e.name.endswith(".json") or e.name.startswith("."):
                continue
            try:
                st = e.stat()
                data = json.loads(Path(e.path).read_bytes())
                out.append(Lease(Path(e.path), data if isinstance(data, dict) else {}, st.st_mtime_ns))
            except (OSError, ValueError, TypeError):
                # Half-written leases cannot exist (atomic writes); unreadable ones are foreign.
                if unreadable is not None:
                    unreadable.append(e.name)
                continue
        return out

    def _write_lease(self, point_id: str, data: dict[str, Any]) -> None:
        try:
            atomic_write_bytes(self.pending_dir / f"{point_id}.json", json.dumps(data).encode())
        except StoreError as exc:
            raise RepoError(f"cannot record the writer lease: {exc}") from exc

    def _lease_begin(self, writer: "PointWriter") -> None:
        lease = writer._lease
        self._write_lease(writer.point_id, lease)
        # The lease's own mtime is its start on the filesystem clock gc compares chunk mtimes with.
        lease["started_ns"] = (self.pending_dir / f"{writer.point_id}.json").stat().st_mtime_ns
        self._write_lease(writer.point_id, lease)

    def _lease_add_base(self, writer: "PointWriter", base_point_id: str) -> None:
        """Called under ``_txn`` before the base is read: gc keeps its chunks, prune its manifest."""
        if base_point_id not in writer._lease["base_point_ids"]:
            writer._lease["base_point_ids"].append(base_point_id)
            self._write_lease(writer.point_id, writer._lease)

    def _commit_entry(self, writer: "PointWriter") -> None:
        with self._txn(), self._catalog_io():
            # tinydb counts entry ids per object: another process (or Repository object) may have added
            # entries since, so the next id is read from the file, under the lock
            self._points._next_id = None
            self._points.insert(writer.point.to_dict())
            with contextlib.suppress(FileNotFoundError):
                (self.pending_dir / f"{writer.point_id}.json").unlink()

    def _abort_point(self, writer: "PointWriter") -> None:
        with contextlib.suppress(RepoError):
            with self._txn():
                if not self._catalog_has(writer.point_id):
                    with contextlib.suppress(FileNotFoundError):
                        self._manifest_path(writer.point_id).unlink()
                with contextlib.suppress(FileNotFoundError):
                    (self.pending_dir / f"{writer.point_id}.json").unlink()

    # --- chunks --------------------------------------------------------------------------
    def chunk_path(self, digest: str) -> Path:
        return self.chunks_dir / digest[:2] / digest

    def _store_chunk(self, digest: str, data: bytes, writer: "PointWriter | None" = None) -> tuple[str, int]:
        """('reused', 0) when present (its mtime refreshed for gc), else ('stored', compressed size)."""
        path = self.chunk_path(digest)
        try:
            os.utime(path)  # existence check and "in use now" mark in one syscall
            return "reused", 0
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RepoError(f"cannot access chunk {path}: {exc.strerror}") from exc
        if _looks_incompressible(data):
            marker, payload = CHUNK_RAW, data
        else:
            marker, payload = CHUNK_ZSTD, _compressor().compress(data)
        tmp = temp_name_for(path)
        try:
            if not (self._direct_io and _write_direct(tmp, marker, payload)):
                if self._direct_io:
                    self._direct_io = False
                    log.info("repository %s: the filesystem refuses O_DIRECT; writing chunks buffered",
                             self.path)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    _write_all(fd, marker, payload)
                finally:
                    os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if exc.errno in FULL_ERRNOS:
                raise RepoFullError(f"repository {self.path} is full: cannot write chunk {digest[:12]} "
                                    f"({exc.strerror})", path=str(self.path)) from exc
            raise RepoError(f"cannot write chunk {path}: {exc.strerror}") from exc
        return "stored", len(marker) + len(payload)

    def read_chunk(self, digest: str, expected_len: int | None = None, *, check: bool = True) -> bytes:
        """Decompressed chunk bytes, checked against the digest (raises :class:`ChunkError`).

        ``check=False`` skips the SHA-256 only for a caller that verifies the same bytes end to end
        against ``digest`` afterwards (a restore with read-back verification): hashing twice costs
        a third of a restore's CPU."""
        path = self.chunk_path(digest)
        try:
            # Unbuffered: the 4-byte marker, then the body in one read with no extra copy.
            with open(path, "rb", buffering=0) as f:
                marker = f.read(4)
                body = f.readall()
        except FileNotFoundError:
            raise ChunkError(f"chunk {digest} is missing", digest=digest, problem="missing") from None
        except OSError as exc:
            raise ChunkError(f"chunk {digest} unreadable: {exc.strerror}", digest=digest,
                             problem="missing") from exc
        return decode_chunk(digest, marker, body, expected_len, check=check)

    def _chunk_state(self, digest: str) -> str | None:
        """None when the chunk is there, else 'quarantined' (renamed ``.bad`` by verify) or 'missing'."""
        path = self.chunk_path(digest)
        return (None if path.exists() else
                "quarantined" if path.with_name(digest + ".bad").exists() else "missing")

    def _quarantine_chunk(self, digest: str) -> None:
        path = self.chunk_path(digest)
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(digest + ".bad"))

    def damage_where(self, digest: str) -> str | None:
        """Where a damaged chunk is, for a report that names objects (None here: the digest says it)."""
        return None

    def room(self) -> tuple[int, int] | None:
        """(free bytes, margin to keep free) of the filesystem that holds the repository."""
        usage = shutil.disk_usage(self.path)
        return usage.free, max(SPACE_MARGIN_MIN, int(usage.total * SPACE_MARGIN_FRACTION))

    def _absent_chunks(self, digests: set[str]) -> set[str]:
        """The digests without a chunk file (missing, or quarantined as ``.bad`` by verify).

        One stat per digest, no read: ~2.8 us each warm (10^5 chunks: 0.28 s). A scandir of all
        shards into a set costs ~1 us per chunk in the whole repository (10^5: 0.1 s), cheaper only
        while the repository holds under ~3x this disk's chunks; the stat's cost stays bounded by
        the disk being backed up however large the repository grows."""
        absent: set[str] = set()
        for digest in digests:
            try:
                os.stat(self.chunk_path(digest))
            except FileNotFoundError:
                absent.add(digest)
            except OSError as exc:
                raise RepoError(f"cannot access chunk {self.chunk_path(digest)}: {exc.strerror}") from exc
        return absent

    def _sync_chunk(self, digest: str) -> None:
        path = self.chunk_path(digest)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise RepoError(f"chunk {digest} vanished before commit") from None
        try:
            os.fsync(fd)
        except OSError as exc:  # written but not durable: the point must not be committed
            if exc.errno in FULL_ERRNOS:  # thin or network storage can refuse space only at fsync
                raise RepoFullError(f"repository {self.path} is full: cannot make chunk {digest[:12]} durable "
                                    f"({exc.strerror})", path=str(self.path)) from exc
            raise RepoError(f"cannot make chunk {path} durable: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def _sync_chunks(self, digests: set[str], already: "set[str] | frozenset[str]" = frozenset()) -> None:
        """fsync every chunk a point put (those not ``already`` synced), then the shard directories."""
        if not digests:
            return
        todo = digests - already
        if todo:
            with ThreadPoolExecutor(max_workers=min(8, len(todo))) as pool:
                list(pool.map(self._sync_chunk, todo))
        for shard in sorted({d[:2] for d in digests}):
            fsync_dir(self.chunks_dir / shard)

    # --- reading -------------------------------------------------------------------------
    @contextlib.contextmanager
    def protect(self, point_ids: list[str]) -> Iterator[None]:
        """Keep these points' chunks (and manifests) from prune+gc while a restore reads them.

        A read lease: same file and liveness rules as a writer's, naming the points as bases."""
        token = f"read-{secrets.token_hex(6)}"
        lease = {"point_id": token, "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
                 "host": _HOST, "base_point_ids": [], "reader": True}
        with self._txn():
            for pid in point_ids:
                self.point(pid)  # must still be in the catalog, as for an incremental's base
            lease["base_point_ids"] = list(point_ids)
            self._write_lease(token, lease)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                (self.pending_dir / f"{token}.json").unlink()

    # --- gc --------------------------------------------------------------------
    def gc(self) -> GcReport:
        """Delete chunks no restore point references; never one a live writer may still use."""
        report = GcReport()
        # The cutoff is a file mtime so it compares with chunk mtimes on the same (filesystem) clock.
        marker = self.path / "gc.marker"
        try:
            marker.touch()
            cutoff = marker.stat().st_mtime_ns
        except OSError as exc:
            raise RepoError(f"cannot write in {self.path}: {exc.strerror}") from exc
        if self.clock is not None:
            cutoff = int(self.clock() * 1e9)
        referenced: set[str] = set()
        with self._txn():
            live: list[Lease] = []
            for lease in self._leases(report.leases_unreadable):
                if lease.alive():
                    live.append(lease)
                else:
                    self._drop_dead_lease(lease)
                    report.leases_removed += 1
            report.live_leases = len(live)
            if live:
                cutoff = min(cutoff, min(lease.started_ns for lease in live))
            # Every catalog point's block maps, or a refusal naming the entries that cannot be read:
            # sweeping without one point's map would delete every chunk only that point holds.
            catalog_maps = self.sweep_check()
            for pmaps in catalog_maps.values():
                for m in pmaps.values():
                    referenced.update(m.values())
            catalog_ids = set(catalog_maps)
            leased_own = {lease.point_id for lease in live}
            keep_ids = catalog_ids | {b for lease in live for b in lease.base_point_ids}
            for pid in sorted((keep_ids | leased_own) - catalog_ids):
                try:
                    maps = self._load_manifest(pid)["maps"]
                except ManifestError:
                    continue  # a live writer's manifest is usually not written yet
                for m in maps.values():
                    referenced.update(m.values())
            for entry in list(os.scandir(self.points_dir)):
                name = entry.name
                if name.endswith(".json") and not name.startswith("."):
                    pid = name[:-5]
                    if pid not in keep_ids and pid not in leased_own:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                        with self._mutex:
                            self._manifests.pop(pid, None)
                        report.manifests_removed += 1
            report.temp_removed += remove_stale_temps(self.points_dir) + remove_stale_temps(self.pending_dir)
            report.temp_removed += remove_stale_temps(self.path)
        report.chunks_referenced = len(referenced)
        # Sweep outside the lock: writers keep going; the mtime rules above protect their chunks.
        for shard in sorted(os.scandir(self.chunks_dir), key=lambda e: e.name):
            if not shard.is_dir():
                continue
            report.temp_removed += remove_stale_temps(shard.path)
            for entry in os.scandir(shard.path):
                name = entry.name
                if name.endswith(".gc"):
                    self._restore_trash(Path(entry.path))
                    continue
                if name.endswith(".bad"):
                    if name[:-4] not in referenced:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                    continue
                if not DIGEST_RE.match(name):
                    continue
                report.chunks_total += 1
                if name in referenced:
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                if st.st_mtime_ns >= cutoff:
                    report.chunks_kept_recent += 1
                    continue
                freed = self._collect_chunk(Path(entry.path), cutoff)
                if freed is None:
                    report.chunks_kept_recent += 1
                else:
                    report.chunks_removed += 1
                    report.bytes_removed += freed
            if report.chunks_removed:
                fsync_dir(shard.path)
        return report

    @staticmethod
    def _collect_chunk(path: Path, cutoff: int) -> int | None:
        """Rename aside, re-check the mtime (a writer may have just reused it), then delete."""
        trash = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.gc")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return None
        st = trash.stat()
        if st.st_mtime_ns >= cutoff:
            os.replace(trash, path)  # reused meanwhile: put it back (same bytes if rewritten)
            return None
        os.unlink(trash)
        return st.st_size

    @staticmethod
    def _restore_trash(trash: Path) -> None:
        """A gc that died between its rename and its re-check: put the chunk back (the next gc
        decides again) -- deleting it could lose a chunk a writer reused in that instant."""
        m = re.match(r"^\.([0-9a-f]{64})\.(\d+)\.[0-9a-f]{8}\.gc$", trash.name)
        if not m or pid_alive(int(m.group(2))):
            return
        final = trash.with_name(m.group(1))
        with contextlib.suppress(FileNotFoundError):
            if final.exists():
                trash.unlink()
            else:
                os.replace(trash, final)

    def disk_usage(self) -> tuple[int, int]:
        """(chunk files, bytes on disk) of the chunk store."""
        n = size = 0
        for shard in os.scandir(self.chunks_dir):
            if shard.is_dir():
                for e in os.scandir(shard.path):
                    if DIGEST_RE.match(e.name):
                        n += 1
                        with contextlib.suppress(FileNotFoundError):
                            size += e.stat().st_size
        return n, size

    def close(self) -> None:
        self._db.close()


class PointWriter:
    """A restore point being written. Use as a context manager: an exception inside aborts."""

    def __init__(self, repo: RepositoryBase, point: RestorePoint) -> None:
        self.repo = repo
        self.point = point
        self.point_id = point.id
        self._disks: list[DiskWriter] = []
        self._state = "open"  # open | committing | committed | aborted
        self._mu = threading.Lock()
        # Chunks are fsynced in the background as they are written, so the disk writes them while
        # the backup still reads; commit then waits only for the last few (not the whole point).
        self._syncer: ThreadPoolExecutor | None = None
        self._syncing: list[Any] = []
        self._synced: set[str] = set()
        self._lease: dict[str, Any] = {
            "point_id": point.id, "vm_urn": point.vm_urn, "job_id": point.job_id, "pid": os.getpid(),
            "proc_start": _proc_start(os.getpid()), "host": _HOST, "base_point_ids": [],
        }
        repo._lease_begin(self)

    def __enter__(self) -> "PointWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._state != "committed":
            self.abort()

    def _check_open(self) -> None:
        if self._state != "open":
            raise RepoError(f"restore point {self.point_id} is {self._state}; no more writes")

    def _sync_later(self, digest: str) -> None:
        """Called from put_block for a chunk it just wrote."""
        def sync() -> None:
            self.repo._sync_chunk(digest)
            with self._mu:
                self._synced.add(digest)
        if self.repo.DURABLE_PUTS:
            return
        with self._mu:
            if self._state != "open":
                return  # commit syncs whatever is not synced yet
            if self._syncer is None:
                self._syncer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fctui-fsync")
            self._syncing.append(self._syncer.submit(sync))

    def _stop_syncer(self, wait: bool) -> None:
        with self._mu:
            syncer, self._syncer = self._syncer, None
            futures, self._syncing = self._syncing, []
        if syncer is None:
            return
        syncer.shutdown(wait=wait, cancel_futures=not wait)
        if wait:
            for f in futures:
                f.result()  # a failed background fsync fails the commit

    def add_disk(self, *, volume_urn: str, disk_name: str, sequence_num: int | None, pci_type: str,
                 size_bytes: int, block_size: int, storage_type: str, datastore_urn: str,
                 cbt: dict[str, Any] | None, base_point_id: str | None) -> "DiskWriter":
        """Add a disk; with ``base_point_id`` it is incremental and unchanged blocks come from there."""
        self._check_open()
        if size_bytes <= 0:
            raise RepoError(f"disk {disk_name or volume_urn}: size must be positive")
        if block_size <= 0 or block_size % 512:
            raise RepoError(f"disk {disk_name or volume_urn}: block size must be a positive multiple of 512")
        if any(d.disk.volume_urn == volume_urn for d in self._disks):
            raise RepoError(f"disk {volume_urn} is already in restore point {self.point_id}")
        base_map: dict[int, str] = {}
        if base_point_id is not None:
            repo = self.repo
            with repo._txn():
                # Register the base before reading it: from here on gc keeps its chunks and
                # prune keeps its manifest even if its catalog entry goes.
                repo._lease_add_base(self, base_point_id)
                base = repo.point(base_point_id)
                bdisk = base.disk(volume_urn)
                if bdisk is None:
                    raise RepoError(f"base point {base_point_id} has no disk {volume_urn}; back it up full")
                if bdisk.size_bytes != size_bytes or bdisk.block_size != block_size:
                    raise RepoError(
                        f"disk {disk_name or volume_urn} changed size or block size since base point "
                        f"{base_point_id}; an incremental is impossible, back it up full")
                try:
                    base_map = dict(repo._disk_map(base_point_id, volume_urn))
                except ManifestError as exc:
                    raise ManifestError(base_point_id, problem=exc.problem, detail=(
                        f"{exc.detail}: no incremental can build on it; `fctui repo verify` shows the "
                        f"damage, `fctui repo forget {base_point_id}` drops it and the next backup is full"
                    )) from exc
        # An inherited block must have its chunk: the base may have lost one (quarantined by
        # verify, deleted by hand). The caller reads those blocks again (DiskWriter.heal_blocks);
        # commit refuses a point that still inherits one.
        absent = self.repo._absent_chunks(set(base_map.values())) if base_map else set()
        heal = sorted(i for i, h in base_map.items() if h in absent) if absent else []
        disk = RestorePointDisk(
            volume_urn=volume_urn, disk_name=disk_name, sequence_num=sequence_num, pci_type=pci_type,
            size_bytes=int(size_bytes), block_size=int(block_size), storage_type=storage_type,
            datastore_urn=datastore_urn, mode="incremental" if base_point_id else "full",
            cbt=dict(cbt) if cbt is not None else None, base_point_id=base_point_id)
        writer = DiskWriter(self, disk, base_map, heal)
        with self._mu:
            self._disks.append(writer)
        return writer

    def commit(self) -> RestorePoint:
        """Make the point durable and visible: chunks fsynced -> manifest -> catalog entry."""
        with self._mu:
            self._check_open()
            if not self._disks:
                raise RepoError(f"restore point {self.point_id} has no disks")
            self._state = "committing"
        repo = self.repo
        try:
            touched: set[str] = set()
            manifest_disks = []
            for w in self._disks:
                with w._mu:
                    w._closed = True
                    if w._heal_pending:
                        raise RepoError(
                            f"disk {w.disk.disk_name or w.disk.volume_urn}: {len(w._heal_pending)} block(s) "
                            f"inherited from base point {w.disk.base_point_id} have no chunk and were not "
                            f"read again (first: block {min(w._heal_pending)}); the point would be damaged")
                    touched |= w._touched
                    w.disk.nonzero_blocks = len(w._map)
                    s = w.stats
                    w.disk.bytes_in, w.disk.bytes_stored = s.bytes_in, s.bytes_stored
                    w.disk.bytes_reused, w.disk.bytes_zero = s.bytes_reused, s.bytes_zero
                    blocks = sorted(w._map.items())
                self.point.disks.append(w.disk)
                manifest_disks.append({**w.disk.to_dict(), "blocks": [[i, h] for i, h in blocks]})
            self._stop_syncer(wait=True)
            if not repo.DURABLE_PUTS:
                repo._sync_chunks(touched, self._synced)
            manifest = {**self.point.to_dict(), "format": FORMAT_VERSION, "disks": manifest_disks}
            repo._write_manifest(self.point_id, json.dumps(manifest, separators=(",", ":")).encode())
            repo._commit_entry(self)
        except BaseException:
            self.point.disks.clear()
            self._state = "open"
            self.abort()
            raise
        self._state = "committed"
        return self.point

    def abort(self) -> None:
        """Give up: no catalog entry, lease removed; chunks already written wait for gc."""
        with self._mu:
            if self._state in ("committed", "aborted"):
                return
            self._state = "aborted"
        self._stop_syncer(wait=False)
        for w in self._disks:
            w._closed = True
        self.repo._abort_point(self)


class DiskWriter:
    """Receives one disk's blocks. ``put_block`` is thread-safe (hashing/compression outside locks)."""

    def __init__(self, point: PointWriter, disk: RestorePointDisk, base_map: dict[int, str],
                 heal_blocks: list[int] | None = None) -> None:
        self._point = point
        self.disk = disk
        # Blocks the base maps to a chunk that is gone: they must be put again before commit.
        self.heal_blocks: list[int] = list(heal_blocks or [])
        self._heal_pending: set[int] = set(self.heal_blocks)
        self.mode = disk.mode
        self.stats = DiskStats()
        self.block_count = disk.block_count
        self._map: dict[int, str] = base_map
        self._touched: set[str] = set()
        self._mu = threading.Lock()
        self._closed = False

    def _expected_len(self, index: int) -> int:
        return min(self.disk.block_size, self.disk.size_bytes - index * self.disk.block_size)

    def put_block(self, index: int, data: bytes) -> str:
        """Store block ``index`` (exactly one block; the last one may be short). Returns
        'zero' (not stored), 'reused' (chunk already in the repository) or 'stored'."""
        if self._closed:
            raise RepoError(f"disk {self.disk.volume_urn} of point {self._point.point_id} is closed")
        if not 0 <= index < self.block_count:
            raise RepoError(f"block {index} outside disk {self.disk.disk_name or self.disk.volume_urn} "
                            f"(0..{self.block_count - 1})")
        if not isinstance(data, bytes):
            data = bytes(data)
        n = len(data)
        if n != self._expected_len(index):
            raise RepoError(f"block {index} has {n} bytes, expected {self._expected_len(index)}")
        if data == _zeros(n):
            with self._mu:
                self._map.pop(index, None)  # an incremental block that became zero
                self._heal_pending.discard(index)
                s = self.stats
                s.bytes_in += n
                s.bytes_zero += n
                s.blocks += 1
                s.blocks_zero += 1
            return "zero"
        digest = hashlib.sha256(data).hexdigest()
        outcome, stored = self._point.repo._store_chunk(digest, data, self._point)
        with self._mu:
            if self._closed:
                raise RepoError(f"disk {self.disk.volume_urn} was closed while block {index} was written")
            self._map[index] = digest
            self._heal_pending.discard(index)
            self._touched.add(digest)
            s = self.stats
            s.bytes_in += n
            s.blocks += 1
            if outcome == "stored":
                s.bytes_stored += stored
                s.blocks_stored += 1
            else:
                s.bytes_reused += n
                s.blocks_reused += 1
        if outcome == "stored":
            self._point._sync_later(digest)
        return outcome


class DiskReader:
    """Reads one disk of a restore point; every chunk is checked against its hash on read."""

    def __init__(self, repo: RepositoryBase, point: RestorePoint, disk: RestorePointDisk,
                 blocks: dict[int, str]) -> None:
        self._repo = repo
        self.point_id = point.id
        self.disk = disk
        self.volume_urn = disk.volume_urn
        self.size_bytes = disk.size_bytes
        self.block_size = disk.block_size
        self.block_count = disk.block_count
        self._blocks = blocks

    def _expected_len(self, index: int) -> int:
        return min(self.block_size, self.size_bytes - index * self.block_size)

    def read_block(self, index: int, *, check: bool = True) -> bytes:
        """The block's bytes (zeros when not stored); raises :class:`ChunkError` on damage.
        ``check=False``: see :meth:`Repository.read_chunk`."""
        if not 0 <= index < self.block_count:
            raise RepoError(f"block {index} outside disk {self.volume_urn} (0..{self.block_count - 1})")
        digest = self._blocks.get(index)
        if digest is None:
            return _zeros(self._expected_len(index))
        return self._repo.read_chunk(digest, self._expected_len(index), check=check)

    def block_digests(self) -> dict[int, str]:
        """Non-zero blocks only: index -> SHA-256 of the block."""
        return dict(self._blocks)

    def unavailable_blocks(self) -> list[tuple[int, str, str]]:
        """Stored blocks whose chunk the repository does not hold, by block: (block, digest, problem),
        problem 'quarantined' (renamed ``.bad`` by verify) or 'missing'. One stat per distinct chunk,
        no re-hash: cheap enough for a plan."""
        seen: dict[str, str | None] = {}
        out: list[tuple[int, str, str]] = []
        for index in sorted(self._blocks):
            digest = self._blocks[index]
            if digest not in seen:
                seen[digest] = self._repo._chunk_state(digest)
            problem = seen[digest]
            if problem is not None:
                out.append((index, digest, problem))
        return out

    def iter_blocks(self, *, readahead: int = 4) -> Iterator[tuple[int, bytes | None]]:
        """Every block in order; None for a zero block. Reads ``readahead`` chunks in parallel."""
        if readahead <= 1:
            for i in range(self.block_count):
                yield i, (self.read_block(i) if i in self._blocks else None)
            return
        with ThreadPoolExecutor(max_workers=readahead) as pool:
            window: list[tuple[int, Any]] = []
            stored = iter(sorted(self._blocks))
            nxt = next(stored, None)
            for i in range(self.block_count):
                while nxt is not None and len(window) < readahead * 2:
                    window.append((nxt, pool.submit(self.read_block, nxt)))
                    nxt = next(stored, None)
                if window and window[0][0] == i:
                    _, fut = window.pop(0)
                    yield i, fut.result()
                else:
                    yield i, None

    def sha256(self) -> str:
        """SHA-256 of the whole disk's bytes; cached in the catalog after the first computation."""
        if self.disk.sha256:
            return self.disk.sha256
        h = hashlib.sha256()
        for i, data in self.iter_blocks():
            h.update(data if data is not None else _zeros(self._expected_len(i)))
        digest = h.hexdigest()
        self.disk.sha256 = digest
        self._repo._record_sha256(self.point_id, self.volume_urn, digest)
        return digest
