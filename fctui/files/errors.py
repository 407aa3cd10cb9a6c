"""Typed errors of file-level restore; ``str(err)`` is one human line."""

from __future__ import annotations


class FilesError(Exception):
    """Base of every file-level restore error (bad path, unreadable volume, damaged data)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PathNotFoundError(FilesError):
    """No such file, directory or volume in the restore point."""


class NotADirectoryInPointError(FilesError):
    """A path used as a directory names a file."""


class FileDamagedError(FilesError):
    """A chunk under a file (or a directory, or a volume's metadata) is missing or corrupt.

    ``path`` is the file or directory being read (``/p2/etc/nginx/nginx.conf``), ``digest``/``problem``
    those of the :class:`fctui.repo.ChunkError` behind it, ``block`` the disk block it held."""

    def __init__(self, message: str, *, point_id: str, disk: int, path: str, digest: str | None,
                 problem: str, block: int | None) -> None:
        super().__init__(message)
        self.point_id = point_id
        self.disk = disk
        self.path = path
        self.digest = digest
        self.problem = problem
        self.block = block
