"""Restore point records (catalog entries) and the reports of verify, prune and gc."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

POINT_ID_RE = re.compile(r"\A[0-9A-Za-z][0-9A-Za-z._-]{0,99}\Z")  # \Z: `$` would let "x\n" through


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def point_problem(doc: Any) -> str | None:
    """Why a catalog entry is not a restore point this code can use; None when it is one.

    Catalog entries are data from disk: a hand edit or another program may leave anything there,
    and nothing downstream (listing, gc, restore) may crash on it."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    pid = doc.get("id")
    if not isinstance(pid, str) or not POINT_ID_RE.match(pid):
        return "no valid id" if pid is None else f"id {pid!r} is not a restore point id"
    for key, ok, what in (("vm_urn", lambda v: isinstance(v, str) and v, "a non-empty string"),
                          ("created", _is_num, "a number"),
                          ("kind", lambda v: isinstance(v, str), "a string"),
                          ("vm_config", lambda v: isinstance(v, dict), "an object"),
                          ("disks", lambda v: isinstance(v, list) and v, "a non-empty list")):
        if key not in doc:
            return f"field {key} missing"
        if not ok(doc[key]):
            return f"field {key} is not {what}"
    for key in ("vm_name", "job_id", "snapshot_urn"):
        if not isinstance(doc.get(key, ""), str):
            return f"field {key} is not a string"
    if doc.get("verified_at") is not None and not _is_num(doc["verified_at"]):
        return "field verified_at is not a number"
    for n, d in enumerate(doc["disks"]):
        if not isinstance(d, dict):
            return f"disk {n} is not an object"
        if not isinstance(d.get("volume_urn"), str) or not d["volume_urn"]:
            return f"disk {n} has no volume_urn"
        for key in ("size_bytes", "block_size"):
            if not _is_count(d.get(key)):
                return f"disk {n} field {key} is not a positive whole number"
        for key in ("disk_name", "mode", "pci_type", "storage_type", "datastore_urn"):
            if not isinstance(d.get(key, ""), str):
                return f"disk {n} field {key} is not a string"
        for key in ("bytes_in", "bytes_stored", "bytes_reused", "bytes_zero", "nonzero_blocks"):
            if not isinstance(d.get(key, 0), int) or isinstance(d.get(key, 0), bool):
                return f"disk {n} field {key} is not a whole number"
    try:
        RestorePoint.from_dict(doc)
    except (TypeError, ValueError) as exc:  # a field the dataclass requires and the entry lacks
        return f"not a restore point ({exc})"
    return None


@dataclass
class RestorePointDisk:
    """One disk of a restore point: what a restore needs to recreate it, and what the backup did."""

    volume_urn: str
    disk_name: str
    sequence_num: int | None
    pci_type: str
    size_bytes: int
    block_size: int
    storage_type: str
    datastore_urn: str
    mode: str  # 'full' | 'incremental'
    cbt: dict[str, Any] | None  # {"volCBTCreateTime", "chgID", "snapUuid"} at this snapshot
    bytes_in: int = 0
    bytes_stored: int = 0
    bytes_reused: int = 0
    bytes_zero: int = 0
    sha256: str | None = None
    base_point_id: str | None = None
    nonzero_blocks: int = 0  # blocks in the disk map (logical, including inherited ones)

    @property
    def block_count(self) -> int:
        return (self.size_bytes + self.block_size - 1) // self.block_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RestorePointDisk":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class RestorePoint:
    """A committed backup of one VM; logically full (restores on its own)."""

    id: str
    vm_urn: str
    vm_name: str
    created: float
    kind: str  # 'cbt' | 'standard'
    job_id: str
    snapshot_urn: str
    vm_config: dict[str, Any]
    disks: list[RestorePointDisk] = field(default_factory=list)
    verified_at: float | None = None

    @property
    def size_bytes(self) -> int:
        return sum(d.size_bytes for d in self.disks)

    @property
    def bytes_stored(self) -> int:
        return sum(d.bytes_stored for d in self.disks)

    @property
    def bytes_in(self) -> int:
        return sum(d.bytes_in for d in self.disks)

    def disk(self, volume_urn: str) -> RestorePointDisk | None:
        return next((d for d in self.disks if d.volume_urn == volume_urn), None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["disks"] = [d.to_dict() for d in self.disks]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RestorePoint":
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["disks"] = [RestorePointDisk.from_dict(d) for d in data.get("disks", [])]
        return cls(**kwargs)


@dataclass
class DiskStats:
    """Counters of one disk writer (bytes are uncompressed unless said otherwise)."""

    bytes_in: int = 0
    bytes_stored: int = 0  # compressed size of chunks this disk wrote new
    bytes_reused: int = 0
    bytes_zero: int = 0
    blocks: int = 0  # put_block calls
    blocks_stored: int = 0
    blocks_reused: int = 0
    blocks_zero: int = 0


@dataclass
class BlockDamage:
    """One damaged block of one disk of one restore point."""

    point_id: str
    volume_urn: str
    disk_name: str
    block: int | None  # None when the whole manifest is unreadable
    digest: str | None
    problem: str  # 'missing' | 'corrupt' | 'manifest-missing' | 'manifest-corrupt'

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DamagedEntry:
    """A catalog entry gc/prune cannot trust: not a point, or its manifest is missing or unreadable.

    ``ref`` is what ``fctui repo forget`` takes: the point id, or ``#N`` (the catalog entry number)
    for an entry without a usable id."""

    ref: str
    problem: str  # 'not-a-point' | 'manifest-missing' | 'manifest-corrupt'
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.ref} ({self.detail})"


@dataclass
class VerifyReport:
    points_checked: list[str] = field(default_factory=list)
    chunks_total: int = 0
    chunks_checked: int = 0
    bytes_checked: int = 0  # uncompressed bytes re-hashed
    sample_pct: float = 100.0
    bad_chunks: dict[str, str] = field(default_factory=dict)  # digest -> problem
    damaged: list[BlockDamage] = field(default_factory=list)
    bad_entries: list[DamagedEntry] = field(default_factory=list)  # catalog entries that are not points
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.bad_entries

    @property
    def damaged_points(self) -> list[str]:
        return sorted({d.point_id for d in self.damaged})

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "points_checked": self.points_checked, "sample_pct": self.sample_pct,
            "chunks_total": self.chunks_total, "chunks_checked": self.chunks_checked,
            "bytes_checked": self.bytes_checked, "bad_chunks": self.bad_chunks,
            "damaged_points": self.damaged_points, "damaged": [d.to_dict() for d in self.damaged],
            "damaged_entries": [e.to_dict() for e in self.bad_entries],
            "seconds": round(self.seconds, 3),
        }


@dataclass
class PruneReport:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)  # kept point id -> the retention rule that kept it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GcReport:
    chunks_total: int = 0
    chunks_referenced: int = 0
    chunks_removed: int = 0
    bytes_removed: int = 0  # on-disk (compressed) bytes freed
    chunks_kept_recent: int = 0  # unreferenced but possibly in use by a running writer
    manifests_removed: int = 0
    leases_removed: int = 0  # stale leases of writers that died
    temp_removed: int = 0
    live_leases: int = 0
    leases_unreadable: list[str] = field(default_factory=list)  # files in pending/ that are not leases

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
