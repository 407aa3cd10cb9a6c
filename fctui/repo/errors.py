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


class NoRepositoryError(RepoError):
    """There is no repository at the given (or default) place yet."""


class ManifestError(RepoError):
    """A restore point's manifest is missing or does not hold a point's block maps."""

    def __init__(self, point_id: str, *, problem: str, detail: str) -> None:
        super().__init__(f"manifest of restore point {point_id} {detail}")
        self.point_id = point_id
        self.problem = problem  # 'manifest-missing' | 'manifest-corrupt'
        self.detail = detail    # what is wrong, without the point: "is missing (path)", ...


class RepoDamagedError(RepoError):
    """A sweep (gc, prune) refused to run: deleting now could destroy what a listed point needs.

    ``entries`` are the :class:`~fctui.repo.model.DamagedEntry` records that stopped it."""

    def __init__(self, message: str, *, entries: list) -> None:
        super().__init__(message)
        self.entries = entries


class RepoFullError(RepoError):
    """The repository's filesystem is full (ENOSPC, or the user's quota: EDQUOT) while writing."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path
