"""Backup repository: deduplicated, compressed, verifiable restore points (see repository.py)."""

from .errors import (
    ChunkError, ManifestError, NoRepositoryError, PointNotFoundError, RepoBusyError, RepoDamagedError, RepoError,
    RepoFullError,
)
from .model import (
    BlockDamage, DamagedEntry, DiskStats, GcReport, PruneReport, RestorePoint, RestorePointDisk, VerifyReport,
)
from .repository import DiskReader, DiskWriter, PointWriter, Repository

__all__ = [
    "BlockDamage", "ChunkError", "DamagedEntry", "DiskReader", "DiskStats", "DiskWriter", "GcReport",
    "ManifestError", "NoRepositoryError", "PointNotFoundError", "PointWriter", "PruneReport", "RepoBusyError",
    "RepoDamagedError", "RepoError", "RepoFullError", "Repository", "RestorePoint",
    "RestorePointDisk", "VerifyReport",
]
