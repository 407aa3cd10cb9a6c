"""A restore point's disk as a read-only FUSE filesystem (``fctui mount POINT MOUNTPOINT``).

Optional: it needs the ``mfusepy`` bindings (``pip install 'fctui[mount]'``), libfuse 2 or 3 and
``/dev/fuse``; :func:`load_fuse` says in one line which is missing. The tree is the one :class:`PointFiles`
shows (the disk's volumes at the top), served from the repository's chunks in place. Every read goes
through :class:`PointFiles`: a damaged chunk under a file fails that read with EIO (and the mount's log
names the file), never with wrong bytes. Names a guest filesystem holds that no path can carry (``/``,
NUL, ``.``, ``..``) and special files are left out of listings.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from typing import Any, BinaryIO, Callable, TextIO

from ..repo import RepoError
from .browse import PointFiles
from .errors import FileDamagedError, FilesError, NotADirectoryInPointError, PathNotFoundError
from .model import FsEntry

_KIND_BITS = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK}
READ_ONLY_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class FuseUnavailableError(FilesError):
    """The FUSE bindings, libfuse or /dev/fuse are not there."""


def load_fuse() -> Any:
    """The ``mfusepy`` module, or FuseUnavailableError saying what to install."""
    try:
        import mfusepy  # type: ignore[import-not-found]
    except ImportError:
        raise FuseUnavailableError(
            "fctui mount needs the FUSE bindings, an optional extra: pip install 'fctui[mount]' "
            "(mfusepy), and libfuse (apt install fuse3)") from None
    except OSError as exc:   # mfusepy found no libfuse (or a wrong one) when imported
        raise FuseUnavailableError(f"fctui mount needs libfuse 2 or 3 (apt install fuse3): {exc}") from None
    if not os.path.exists("/dev/fuse"):
        raise FuseUnavailableError("fctui mount needs /dev/fuse (modprobe fuse; in a container: --device /dev/fuse)")
    return mfusepy


def _visible(e: FsEntry) -> bool:
    return e.kind in _KIND_BITS and e.name not in ("", ".", "..") and "/" not in e.name and "\0" not in e.name


def attributes(e: FsEntry) -> dict[str, int]:
    """stat(2) fields of an entry (times in nanoseconds)."""
    return {"st_mode": _KIND_BITS[e.kind] | (e.mode & 0o7777), "st_nlink": 2 if e.is_dir else 1,
            "st_size": e.size, "st_uid": e.uid, "st_gid": e.gid,
            "st_mtime": e.mtime_ns, "st_atime": e.mtime_ns, "st_ctime": e.mtime_ns,
            "st_blocks": -(-e.size // 512)}


def operations(fuse: Any, files: PointFiles, *, disk: int = 0, log: TextIO | None = None) -> Any:
    """The FUSE operations serving ``files``' disk ``disk`` (``fuse``: the module :func:`load_fuse` gave).
    They run on FUSE's one thread (``nothreads``): PointFiles is used from one thread at a time."""
    log = log if log is not None else sys.stderr
    FuseOSError = fuse.FuseOSError

    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            try:
                return fn(*args)
            except FuseOSError:
                raise
            except PathNotFoundError:
                raise FuseOSError(errno.ENOENT) from None
            except NotADirectoryInPointError:
                raise FuseOSError(errno.ENOTDIR) from None
            except FileDamagedError as exc:
                print(f"fctui mount: {exc}", file=log, flush=True)
                raise FuseOSError(errno.EIO) from None
            except (FilesError, RepoError) as exc:
                print(f"fctui mount: {exc}", file=log, flush=True)
                raise FuseOSError(errno.EIO) from None
        return call

    class PointMount(fuse.Operations):  # type: ignore[misc, name-defined]
        use_ns = True   # times as nanoseconds, as the filesystems keep them

        def __init__(self) -> None:
            self._open: dict[int, BinaryIO] = {}
            self._next = 1

        @guarded
        def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
            e = files.stat(path, disk=disk)
            if e.kind not in _KIND_BITS:
                raise FuseOSError(errno.ENOENT)
            return attributes(e)

        @guarded
        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", ".."] + [e.name for e in files.listdir(path, disk=disk) if _visible(e)]

        @guarded
        def readlink(self, path: str) -> str:
            e = files.stat(path, disk=disk)
            if e.kind != "symlink":
                raise FuseOSError(errno.EINVAL)
            return e.target or ""

        @guarded
        def open(self, path: str, flags: int) -> int:
            if flags & READ_ONLY_FLAGS:
                raise FuseOSError(errno.EROFS)
            stream = files.open(path, disk=disk)
            fh, self._next = self._next, self._next + 1
            self._open[fh] = stream
            return fh

        @guarded
        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            stream = self._open.get(fh)
            if stream is None:
                raise FuseOSError(errno.EBADF)
            stream.seek(offset)
            return stream.read(size)

        def release(self, path: str, fh: int) -> int:
            stream = self._open.pop(fh, None)
            if stream is not None:
                stream.close()
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            size = files.point.disks[disk].size_bytes
            return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": size // 4096, "f_bfree": 0,
                    "f_bavail": 0, "f_namemax": 255}

        def destroy(self, path: str) -> None:
            for stream in self._open.values():
                stream.close()
            self._open.clear()

    return PointMount()


def mount(files: PointFiles, mountpoint: str, *, disk: int = 0, log: TextIO | None = None) -> None:
    """Serve the disk read-only at ``mountpoint`` until it is unmounted (``fusermount -u``, or Ctrl-C).
    Raises FuseUnavailableError when FUSE is not there, FilesError when the mount fails."""
    fuse = load_fuse()
    ops = operations(fuse, files, disk=disk, log=log)
    try:
        fuse.FUSE(ops, mountpoint, foreground=True, nothreads=True, ro=True,
                  fsname=f"fctui:{files.point.id}", subtype="fctui")
    except RuntimeError as exc:   # libfuse refused to mount (not empty, no permission, ...)
        raise FilesError(f"cannot mount at {mountpoint}: {exc}") from None
