"""Backup repository: deduplicated, compressed, verifiable restore points (see repository.py)."""

from .errors import (
    ChunkError, ManifestError, NoRepositoryError, PointNotFoundError, RepoBusyError, RepoDamagedError, RepoError,
    RepoFullError,
)
from .model import (
    BlockDamage, DamagedEntry, DiskStats, GcReport, PruneReport, RestorePoint, RestorePointDisk, VerifyReport,
)
from .repository import DiskReader, DiskWriter, PointWriter, Repository
from .s3 import S3Repository  # registers s3:// with Repository.open

__all__ = [
    "BlockDamage", "ChunkError", "DamagedEntry", "DiskReader", "DiskStats", "DiskWriter", "GcReport",
    "ManifestError", "NoRepositoryError", "PointNotFoundError", "PointWriter", "PruneReport", "RepoBusyError",
    "RepoDamagedError", "RepoError", "RepoFullError", "Repository", "RestorePoint", "S3Repository",
    "RestorePointDisk", "VerifyReport",
]
