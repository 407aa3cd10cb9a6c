"""Backup repository: deduplicated, compressed, verifiable restore points (see repository.py)."""

from .errors import ChunkError, PointNotFoundError, RepoBusyError, RepoError, RepoFullError
from .model import (
    BlockDamage, DiskStats, GcReport, PruneReport, RestorePoint, RestorePointDisk, VerifyReport,
)
from .repository import DiskReader, DiskWriter, PointWriter, Repository

__all__ = [
    "BlockDamage", "ChunkError", "DiskReader", "DiskStats", "DiskWriter", "GcReport", "PointNotFoundError",
    "PointWriter", "PruneReport", "RepoBusyError", "RepoError", "RepoFullError", "Repository", "RestorePoint",
    "RestorePointDisk", "VerifyReport",
]
