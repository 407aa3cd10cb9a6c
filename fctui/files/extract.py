"""Getting files out of a restore point: into a directory, or as a tar stream (CONTRACT: the helper of item 2
implements)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

from .browse import PointFiles
from .model import FsEntry


@dataclass
class ExtractProgress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    current: str  # path being written


@dataclass
class ExtractReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    written: list[str] = field(default_factory=list)  # destination paths (dir mode) or tar member names
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (point path, why): unsafe name, special file
    errors: list[tuple[str, str]] = field(default_factory=list)  # (point path, message): damaged, not written

    @property
    def ok(self) -> bool:
        return not self.errors


def plan(files: PointFiles, paths: list[str], *, disk: int = 0) -> list[FsEntry]:
    """Everything ``paths`` name, directories walked (for totals before extracting)."""
    raise NotImplementedError


def extract_to_dir(files: PointFiles, paths: list[str], dest: Path, *, disk: int = 0,
                   progress: Callable[[ExtractProgress], None] | None = None,
                   cancel: threading.Event | None = None) -> ExtractReport:
    """Write each path under ``dest`` as ``cp -rp`` would (``/p2/etc/nginx`` -> ``dest/nginx/...``), with
    mode (setuid/setgid dropped) and mtime. Never writes outside ``dest``: names with ``/``, NUL, ``.`` or
    ``..`` are skipped, symlinks are created as links and never followed, existing paths are refused
    (nothing is overwritten). A file is written to a temporary name and renamed when complete: a damaged
    file leaves nothing behind and is listed in ``errors``; the others are still extracted."""
    raise NotImplementedError


def extract_tar(files: PointFiles, paths: list[str], out: BinaryIO, *, disk: int = 0,
                progress: Callable[[ExtractProgress], None] | None = None,
                cancel: threading.Event | None = None) -> ExtractReport:
    """A POSIX (pax) tar of the paths to ``out``, members named as :func:`extract_to_dir` names files.
    A damaged file stops the stream (raises FileDamagedError): a truncated archive, never wrong bytes."""
    raise NotImplementedError
