"""Typed errors of the backup repository; ``str(err)`` is one human line."""

from __future__ import annotations


class RepoError(Exception):
    """Base of every repository error: bad path, unknown restore point, misuse, I/O failure."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PointNotFoundError(RepoError):
    """No restore point with that id in the catalog."""

    def __init__(self, point_id: str) -> None:
        super().__init__(f"no restore point {point_id!r} in the repository")
        self.point_id = point_id


class RepoBusyError(RepoError):
    """Another process held the repository lock longer than we were willing to wait."""


class ChunkError(RepoError):
    """A chunk is missing or its content does not match its SHA-256 name."""

    def __init__(self, message: str, *, digest: str, problem: str) -> None:
        super().__init__(message)
        self.digest = digest
        self.problem = problem  # 'missing' | 'corrupt'


class RepoFullError(RepoError):
    """The repository's filesystem is full (ENOSPC, or the user's quota: EDQUOT) while writing."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path
