"""The filesystems of one restore point as trees, one per disk (CONTRACT: the helper of item 1 implements)."""

from __future__ import annotations

from typing import BinaryIO, Iterator

from ..repo import Repository, RestorePoint
from .model import FsEntry, Volume


class PointFiles:
    """Browse and read the files of one restore point, in place (no restore, no root).

    Disks are numbered as in ``point.disks`` (0 = the first, the system disk). Each disk's tree has its
    volumes at the top (see :class:`~fctui.files.model.Volume` for names). Paths are absolute
    (``/p2/etc/nginx/nginx.conf``); a missing leading ``/`` is accepted, ``.``/``..``/empty components
    are not (:class:`~fctui.files.errors.PathNotFoundError`). Disks, volumes and filesystems are opened
    on first use and kept until :meth:`close`. Safe to use from one thread at a time."""

    def __init__(self, repo: Repository, point: RestorePoint | str, *, cache_chunks: int = 16) -> None:
        raise NotImplementedError

    point: RestorePoint

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "PointFiles":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def volumes(self, disk: int = 0) -> list[Volume]:
        """Every volume found on the disk, in disk order (LVM volumes after the partitions holding them)."""
        raise NotImplementedError

    def stat(self, path: str, *, disk: int = 0) -> FsEntry:
        """The entry at ``path`` (``/`` is the disk itself, a directory; ``/p2`` a volume's root)."""
        raise NotImplementedError

    def listdir(self, path: str = "/", *, disk: int = 0) -> list[FsEntry]:
        """Entries of a directory sorted by name (``.`` and ``..`` left out); at ``/`` the volumes that hold
        a readable filesystem. Raises NotADirectoryInPointError for a file, FileDamagedError naming the
        directory when a chunk of its metadata is damaged."""
        raise NotImplementedError

    def walk(self, path: str = "/", *, disk: int = 0) -> Iterator[FsEntry]:
        """``path`` itself, then everything below it, depth first, a directory before its contents.
        Symlinks are yielded, never followed."""
        raise NotImplementedError

    def find(self, pattern: str, *, disk: int | None = None, path: str = "/") -> Iterator[FsEntry]:
        """Entries whose name matches the shell pattern (``*.conf``; case-insensitive), below ``path``;
        every disk when ``disk`` is None."""
        raise NotImplementedError

    def open(self, path: str, *, disk: int = 0) -> BinaryIO:
        """A file's content as a read-only stream; a damaged chunk raises FileDamagedError naming the file
        (never wrong or zeroed bytes)."""
        raise NotImplementedError
