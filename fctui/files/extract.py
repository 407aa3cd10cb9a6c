"""Getting files out of a restore point: into a directory, or as a tar stream.

The tree comes from a guest filesystem, which is untrusted: names may hold ``/``, NUL, ``.``/``..``, links
may point anywhere, a hostile image may list a name twice. So nothing here joins paths. Every directory
under the destination is one this run created (``mkdir`` fails on anything already there, a symlink
included) and is reached through its file descriptor (``O_NOFOLLOW``); each file, link and directory is
made inside its parent's descriptor by one name that was checked to be a plain name. A link is written
as a link (its text as stored) and never followed, so nothing can land outside the destination.
"""

from __future__ import annotations

import errno
import os
import queue
import secrets
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
import stat as statmod
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .browse import PointFiles
from .errors import FilesError
from .model import FsEntry
from .names import encodable, unsafe_name

READ_SIZE = 1 << 20            # bytes per read of a file's content
PIPELINE_FROM = 4 << 20        # files at least this big are read ahead in a thread while written
PIPELINE_DEPTH = 4             # pieces read ahead at most
PROGRESS_EVERY_S = 0.2         # the progress callback runs at most this often (and once at the end)
# A file is named only once its bytes are on disk (fsync), so a crash never leaves a named file with
# missing content that a second run would then refuse to replace. One fsync costs milliseconds; a few
# threads seal complete files while the next ones are written (the journal commits them together).
SEAL_THREADS = 4
SEAL_IN_FLIGHT = 64            # complete files waiting for their fsync at most (each holds a descriptor)
# A big file's pages are sent to the disk as it is written, so that its fsync does not wait for all of it
# at the end (and a 1 GiB extraction does not fill the page cache with pages nobody reads again).
WRITEBACK_EVERY = 16 << 20
SPECIAL = "special file (device, fifo or socket): not extracted"
BAD_TARGET = "symlink whose target is empty, holds NUL or cannot be written here"
# the local filesystem cannot take more: stop instead of failing every remaining file the same way
_FATAL_ERRNO = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
_DROP_BITS = statmod.S_ISUID | statmod.S_ISGID   # never hand out a set-id file or directory


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
    errors: list[tuple[str, str]] = field(default_factory=list)  # (point path, message): damaged, exists, not written
    cancelled: bool = False  # the cancel event stopped it (what was complete stays; no partial file)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.cancelled


@dataclass
class _Item:
    """One step of the plan: an entry and the names it takes under the destination, or why it is left out."""

    entry: FsEntry
    parts: tuple[str, ...]   # local path components below the destination (each a checked plain name)
    skip: str | None = None  # left out, not a failure (unsafe name, special file)
    error: FilesError | None = None  # could not be read (a directory's damaged listing)


# --- planning -----------------------------------------------------------------------------------------

def _top_entries(files: PointFiles, path: str, disk: int) -> list[FsEntry]:
    """What one requested path stands for: itself, or at ``/`` every volume (the disk has no name)."""
    path = path.strip()
    if path.rstrip("/") == "":
        return files.listdir("/", disk=disk)
    return [files.stat(path.rstrip("/"), disk=disk)]


def _walk(files: PointFiles, top: FsEntry, disk: int) -> Iterator[_Item]:
    """``top`` and everything below it, depth first, a directory before its contents; names checked.

    A damaged filesystem can hold a directory entry that leads back to a directory above it; FsEntry has
    no inode number, so such a loop is told by what it is: a directory with the same own fields and the
    same listing (names and their fields) as one of its ancestors. It is skipped (its contents are written
    once, where the ancestor is); any real tree changes a field somewhere down a chain of lookalikes."""
    why = unsafe_name(top.name)
    if why is not None:
        yield _Item(top, (), skip=why)
        return
    stack: list[Iterator[tuple[FsEntry, tuple[str, ...]]]] = [iter([(top, (top.name,))])]
    chain: list[tuple[tuple[object, ...], tuple[object, ...], str]] = []   # the open directories below top
    while stack:
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
            del chain[max(0, len(stack) - 1):]
            continue
        entry, parts = step
        if entry.kind == "other":
            yield _Item(entry, parts, skip=SPECIAL)
            continue
        if entry.kind != "dir":
            yield _Item(entry, parts)
            continue
        try:
            children = files.listdir(entry.path, disk=disk)
        except FilesError as exc:   # a damaged directory: made (empty), said so, the rest goes on
            yield _Item(entry, parts)
            yield _Item(entry, parts, error=exc)
            continue
        own = (entry.mtime_ns, entry.mode, entry.uid, entry.gid)
        listing = tuple((c.name, c.kind, c.size, c.mtime_ns, c.mode, c.uid, c.gid, c.target) for c in children)
        above = next((path for o, li, path in chain if o == own and li == listing), None) if listing else None
        if above is not None:
            yield _Item(entry, parts, skip=f"the same directory as {above} above it (a directory loop in a "
                                           "damaged filesystem): its contents are written there")
            continue
        yield _Item(entry, parts)
        ok: list[tuple[FsEntry, tuple[str, ...]]] = []
        for child in children:
            why = unsafe_name(child.name)
            if why is not None:
                yield _Item(child, parts, skip=why)
            else:
                ok.append((child, parts + (child.name,)))
        stack.append(iter(ok))
        chain.append((own, listing, entry.path))


def _plan(files: PointFiles, paths: list[str], disk: int) -> list[_Item]:
    # every requested path is looked up before anything is written: a typo fails the whole request
    tops = [e for p in paths for e in _top_entries(files, p, disk)]
    return [item for top in tops for item in _walk(files, top, disk)]


def plan(files: PointFiles, paths: list[str], *, disk: int = 0) -> list[FsEntry]:
    """Everything ``paths`` name that would be extracted, directories walked (for totals before extracting):
    entries with unsafe names, special files and what lies below an unreadable directory are left out.
    ``/`` stands for every volume of the disk. Raises PathNotFoundError for a path that is not there."""
    return [i.entry for i in _plan(files, paths, disk) if i.skip is None and i.error is None]


class _Progress:
    """Calls the callback at most every PROGRESS_EVERY_S seconds, and always for the last step."""

    def __init__(self, callback: Callable[[ExtractProgress], None] | None, items: list[_Item],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.callback = callback
        self.clock = clock
        todo = [i.entry for i in items if i.skip is None and i.error is None and i.entry.kind == "file"]
        self.state = ExtractProgress(0, len(todo), 0, sum(e.size for e in todo), "")
        self._at: float | None = None

    def tick(self, current: str | None = None, *, nbytes: int = 0, file_done: bool = False,
             force: bool = False) -> None:
        s = self.state
        s.bytes_done += nbytes
        s.files_done += int(file_done)
        if current is not None:
            s.current = current
        if self.callback is None:
            return
        now = self.clock()
        if force or self._at is None or now - self._at >= PROGRESS_EVERY_S:
            self._at = now
            self.callback(ExtractProgress(s.files_done, s.files_total, s.bytes_done, s.bytes_total, s.current))


class _Cancelled(Exception):
    pass


def _writable_target(target: str) -> bool:
    return bool(target) and "\0" not in target and encodable(target)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise _Cancelled


# --- into a directory ---------------------------------------------------------------------------------

@dataclass
class _OpenDir:
    parts: tuple[str, ...]
    fd: int
    entry: FsEntry | None  # None for the destination itself (its mode and times are the user's)


class _DirWriter:
    def __init__(self, files: PointFiles, dest: Path, disk: int, report: ExtractReport, progress: _Progress,
                 cancel: threading.Event | None) -> None:
        self.files, self.disk, self.report = files, disk, report
        self.dest, self.progress, self.cancel = dest, progress, cancel
        self.stack: list[_OpenDir] = []
        self.pool: ThreadPoolExecutor | None = None
        self.sealing: deque[tuple[_Item, int, Future[None]]] = deque()   # in the order written
        self.fatal: OSError | None = None

    def local(self, parts: tuple[str, ...]) -> str:
        return os.path.join(self.dest, *parts)

    # The open directories are the chain from the destination to the item's parent. An item whose parent
    # is not on it was not made (refused, failed), and neither is the item: its parent was reported.
    def parent_fd(self, parts: tuple[str, ...]) -> int | None:
        while len(self.stack) > 1 and not (len(self.stack[-1].parts) < len(parts)
                                           and parts[:len(self.stack[-1].parts)] == self.stack[-1].parts):
            self.finish(self.stack[-1])
            self.stack.pop()
        top = self.stack[-1]
        return top.fd if top.parts == parts[:-1] else None

    def finish(self, d: _OpenDir) -> None:
        """A directory's contents are complete: now its own mode and times (writing into it would change
        its mtime, and its mode may forbid writing), then make its entries durable."""
        self.collect()   # its files are named (and its descriptor is no longer needed) first
        try:
            if d.entry is not None:
                os.chmod(d.fd, d.entry.mode & 0o7777 & ~_DROP_BITS)
                os.utime(d.fd, ns=(d.entry.mtime_ns, d.entry.mtime_ns))
            os.fsync(d.fd)
        except OSError as exc:
            self.report.errors.append((d.entry.path if d.entry else str(self.dest),
                                       f"cannot set mode or times of {self.local(d.parts)}: {exc.strerror}"))
        finally:
            os.close(d.fd)

    def close_all(self) -> None:
        try:
            while self.stack:
                self.finish(self.stack[-1])
                self.stack.pop()
        finally:   # interrupted (Ctrl-C): what is sealing still gets its name, no descriptor stays open
            try:
                self.collect()
            finally:
                for d in self.stack:
                    os.close(d.fd)
                self.stack.clear()
                if self.pool is not None:
                    self.pool.shutdown(wait=True)

    def seal(self, item: _Item, written: int, fd: int, tmp: str, parent: int) -> None:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=SEAL_THREADS, thread_name_prefix="fctui-extract")
        self.sealing.append((item, written, self.pool.submit(_seal, fd, tmp, item.parts[-1], parent)))
        if len(self.sealing) > SEAL_IN_FLIGHT:
            self.collect(1)

    def collect(self, limit: int | None = None) -> None:
        """Wait for sealed files (the oldest first) and put what became of them in the report."""
        n = 0
        while self.sealing and (limit is None or n < limit):
            item, written, fut = self.sealing.popleft()
            n += 1
            try:
                fut.result()
            except FileExistsError:
                self.refuse_existing(item)
            except OSError as exc:
                self.report.errors.append((item.entry.path, f"cannot write {self.local(item.parts)}: "
                                                            f"{exc.strerror or exc}"))
                if exc.errno in _FATAL_ERRNO:
                    self.fatal = exc
            else:
                self.report.files += 1
                self.report.bytes += written
                self.report.written.append(self.local(item.parts))

    def exists(self, name: str, parent: int) -> bool:
        try:
            os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def refuse_existing(self, item: _Item) -> None:
        self.report.errors.append((item.entry.path, f"{self.local(item.parts)} already exists: not overwritten"))

    def write(self, item: _Item) -> None:
        e = item.entry
        before = self.progress.state.bytes_done
        try:
            self._write(item)
        finally:   # written, refused or failed: the file is behind us, the progress moves past it
            if e.kind == "file":
                self.progress.state.bytes_done = before + e.size
                self.progress.tick(file_done=True)

    def _write(self, item: _Item) -> None:
        e = item.entry
        if self.fatal is not None:
            raise self.fatal
        parent = self.parent_fd(item.parts)
        if parent is None:
            return
        name = item.parts[-1]
        try:
            if e.kind == "dir":
                self.make_dir(item, parent, name)
            elif e.kind == "symlink":
                self.make_link(item, parent, name)
            else:
                self.make_file(item, parent, name)
        except FileExistsError:
            self.refuse_existing(item)
        except OSError as exc:
            self.report.errors.append((e.path, f"cannot write {self.local(item.parts)}: {exc.strerror or exc}"))
            if exc.errno in _FATAL_ERRNO:
                raise

    def make_dir(self, item: _Item, parent: int, name: str) -> None:
        # 0o700 while it is filled: the stored mode (maybe read-only) is set when its contents are done
        os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        self.stack.append(_OpenDir(item.parts, fd, item.entry))
        self.report.dirs += 1
        self.report.written.append(self.local(item.parts))

    def make_link(self, item: _Item, parent: int, name: str) -> None:
        e = item.entry
        target = e.target or ""
        if not _writable_target(target):
            self.report.skipped.append((e.path, BAD_TARGET))
            return
        os.symlink(target, name, dir_fd=parent)
        if os.utime in os.supports_follow_symlinks and os.utime in os.supports_dir_fd:
            os.utime(name, ns=(e.mtime_ns, e.mtime_ns), dir_fd=parent, follow_symlinks=False)
        self.report.symlinks += 1
        self.report.written.append(self.local(item.parts))

    def make_file(self, item: _Item, parent: int, name: str) -> None:
        e = item.entry
        if self.exists(name, parent):   # before reading it all: the final link would refuse it anyway
            raise FileExistsError
        self.progress.tick(e.path)
        tmp = f".fctui-{secrets.token_hex(6)}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=parent)
        written = flushed = 0
        try:
            with self.files.open(e.path, disk=self.disk) as src:
                for chunk in _content(src, e.size, self.cancel):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    written += len(chunk)
                    if written - flushed >= WRITEBACK_EVERY:
                        _start_writeback(fd, flushed, written - flushed)
                        flushed = written
                    self.progress.tick(nbytes=len(chunk))
            os.fchmod(fd, e.mode & 0o7777 & ~_DROP_BITS)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        except FilesError as exc:   # damaged: nothing of it stays; the other files go on
            os.close(fd)
            _unlink_quietly(tmp, parent)
            self.report.errors.append((e.path, str(exc)))
            return
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp, parent)
            raise
        self.seal(item, written, fd, tmp, parent)   # fsync, close, name it: in a sealing thread


def _content(src: BinaryIO, size: int, cancel: threading.Event | None) -> Iterator[bytes]:
    """A file's content in READ_SIZE pieces. A big file is read one piece ahead in a thread, so reading
    the point (decompress, hash, parse) and writing here overlap instead of taking turns: on two cores
    that is what brings extraction near the repository's own read rate. Errors (a damaged chunk) surface
    here, in order, after the bytes before them."""
    if size < PIPELINE_FROM:
        while True:
            _check_cancel(cancel)
            chunk = src.read(READ_SIZE)
            if not chunk:
                return
            yield chunk
    ahead: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=PIPELINE_DEPTH)
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                chunk = src.read(READ_SIZE)
                ahead.put(chunk or None)
                if not chunk:
                    return
        except BaseException as exc:  # handed to the consumer, raised there in order
            ahead.put(exc)

    thread = threading.Thread(target=reader, name="fctui-extract-read", daemon=True)
    thread.start()
    try:
        while True:
            _check_cancel(cancel)
            item = ahead.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():   # unblock a reader waiting on a full queue, then let it end
            try:
                ahead.get_nowait()
            except queue.Empty:
                thread.join(0.01)


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range of the file out without waiting for it (Linux: POSIX_FADV_DONTNEED starts
    write-back of dirty pages and drops the clean ones); a no-op where the system has no such advice."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        try:
            advise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def _seal(fd: int, tmp: str, name: str, parent: int) -> None:
    """A complete temporary file made durable, then given its name (or removed when that fails)."""
    try:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _place(tmp, name, parent)
    except BaseException:
        _unlink_quietly(tmp, parent)
        raise


def _place(tmp: str, name: str, parent: int) -> None:
    """Give the complete temporary file its name, never replacing what is there (a hard link fails with
    EEXIST where rename would overwrite); a filesystem without hard links gets a checked rename."""
    try:
        os.link(tmp, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        try:
            os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            return
        raise FileExistsError(errno.EEXIST, "File exists") from None
    os.unlink(tmp, dir_fd=parent)


def _unlink_quietly(name: str, parent: int) -> None:
    try:
        os.unlink(name, dir_fd=parent)
    except OSError:
        pass


def extract_to_dir(files: PointFiles, paths: list[str], dest: Path, *, disk: int = 0,
                   progress: Callable[[ExtractProgress], None] | None = None,
                   cancel: threading.Event | None = None,
                   clock: Callable[[], float] = time.monotonic) -> ExtractReport:
    """Write each path under ``dest`` as ``cp -rp`` would (``/p2/etc/nginx`` -> ``dest/nginx/...``; ``/``:
    every volume, ``dest/p1``, ``dest/p2``...), with mode (setuid/setgid dropped) and mtime (directories'
    after their contents, links' own where the system can). Never writes outside ``dest``: names with
    ``/``, NUL, ``.`` or ``..`` are skipped, symlinks are created as links and never followed, existing
    paths are refused (nothing is overwritten; listed in ``errors``). A file is written to a temporary name,
    fsynced and then named: a damaged file leaves nothing behind and is listed in ``errors``; the others are
    still extracted. Devices and fifos are skipped. ``cancel`` stops between reads (the partial file is
    removed, ``report.cancelled``). ``dest`` is created if missing and must be a directory. Raises
    PathNotFoundError (a path is not in the point) or FilesError (``dest`` unusable) before writing
    anything; a full local disk stops the extraction (listed in ``errors``). ``progress`` is called at
    most every PROGRESS_EVERY_S seconds of ``clock`` and once at the end."""
    items = _plan(files, paths, disk)
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileExistsError:
        raise FilesError(f"{dest} exists and is not a directory") from None
    except NotADirectoryError:
        raise FilesError(f"{dest} is not a directory") from None
    except OSError as exc:
        raise FilesError(f"cannot use {dest} as the destination: {exc.strerror or exc}") from None
    report = ExtractReport()
    prog = _Progress(progress, items, clock)
    writer = _DirWriter(files, dest, disk, report, prog, cancel)
    writer.stack.append(_OpenDir((), fd, None))
    try:
        for item in items:
            if item.skip is not None:
                report.skipped.append((item.entry.path, item.skip))
            elif item.error is not None:
                report.errors.append((item.entry.path, str(item.error)))
            else:
                _check_cancel(cancel)
                writer.write(item)
    except _Cancelled:
        report.cancelled = True
    except OSError as exc:
        if exc.errno not in _FATAL_ERRNO:
            raise   # pragma: no cover -- write() keeps every other OSError in the report
    finally:
        writer.close_all()
    prog.tick(force=True)
    return report


# --- as a tar stream ----------------------------------------------------------------------------------

class _Content:
    """A file's content for tarfile: stops on cancel, counts progress, and refuses to run short of the
    size the tar header already promised (tarfile would pad it with zeros: wrong bytes)."""

    def __init__(self, src: BinaryIO, entry: FsEntry, progress: _Progress, cancel: threading.Event | None):
        self.src, self.entry, self.progress, self.cancel = src, entry, progress, cancel
        self.left = entry.size

    def read(self, n: int = -1) -> bytes:
        _check_cancel(self.cancel)
        data = self.src.read(READ_SIZE if n is None or n < 0 else n)
        if not data and self.left > 0:
            raise FilesError(f"{self.entry.path}: the file ended {self.left} bytes before its size")
        self.left -= len(data)
        self.progress.tick(nbytes=len(data))
        return data


def _tar_info(item: _Item) -> tarfile.TarInfo:
    e = item.entry
    info = tarfile.TarInfo("/".join(item.parts))
    info.mode = e.mode & 0o7777
    info.uid, info.gid = e.uid, e.gid
    info.uname = info.gname = ""
    info.mtime = e.mtime_ns // 1_000_000_000
    if e.mtime_ns % 1_000_000_000:   # pax keeps the nanoseconds, as text (a float would round them)
        seconds, nanos = divmod(abs(e.mtime_ns), 1_000_000_000)
        info.pax_headers["mtime"] = f"{'-' if e.mtime_ns < 0 else ''}{seconds}.{nanos:09d}"
    if e.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif e.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = e.target or ""
    else:
        info.type = tarfile.REGTYPE
        info.size = e.size
    return info


def extract_tar(files: PointFiles, paths: list[str], out: BinaryIO, *, disk: int = 0,
                progress: Callable[[ExtractProgress], None] | None = None,
                cancel: threading.Event | None = None,
                   clock: Callable[[], float] = time.monotonic) -> ExtractReport:
    """A POSIX (pax) tar of the paths to ``out``, members named as :func:`extract_to_dir` names files, with
    mode, mtime (to the nanosecond), uid/gid and symlinks. Unsafe names and special files are skipped.
    A damaged file (or directory) stops the stream and raises FileDamagedError: a truncated archive, never
    wrong bytes. ``cancel`` stops it too (``report.cancelled``; the archive is left truncated). ``progress``
    as for :func:`extract_to_dir`."""
    items = _plan(files, paths, disk)
    report = ExtractReport()
    prog = _Progress(progress, items, clock)
    tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=READ_SIZE)
    try:
        for item in items:
            e = item.entry
            if item.skip is not None:
                report.skipped.append((e.path, item.skip))
                continue
            if item.error is not None:
                raise item.error
            if e.kind == "symlink" and not _writable_target(e.target or ""):
                report.skipped.append((e.path, BAD_TARGET))
                continue
            _check_cancel(cancel)
            info = _tar_info(item)
            if e.kind == "file":
                prog.tick(e.path)
                with files.open(e.path, disk=disk) as src:
                    tar.addfile(info, _Content(src, e, prog, cancel))
                report.files += 1
                report.bytes += e.size
                prog.tick(file_done=True)
            else:
                tar.addfile(info)
                if e.kind == "dir":
                    report.dirs += 1
                else:
                    report.symlinks += 1
            report.written.append(info.name)
    except _Cancelled:
        report.cancelled = True
        _abandon(tar)
        return report
    except BaseException:
        _abandon(tar)
        raise
    tar.close()
    prog.tick(force=True)
    return report


def _abandon(tar: tarfile.TarFile) -> None:
    """Stop without the end-of-archive blocks: closing would pad the interrupted member with zeros (bytes
    the file does not hold) and mark the archive complete. What is buffered is a correct prefix; send it."""
    stream = tar.fileobj
    tar.closed = True
    try:
        if stream is not None and getattr(stream, "buf", b""):
            stream.fileobj.write(stream.buf)   # type: ignore[union-attr]
            stream.buf = b""                  # type: ignore[union-attr]
    except (AttributeError, OSError):
        pass
    if stream is not None:
        stream.closed = True   # type: ignore[union-attr] -- its __del__ must not flush or close `out`
