"""The filesystems of one restore point as trees, one per disk.

What is read: GPT and MBR partition tables (logical partitions numbered 5, 6, ... as Linux does), LVM2
linear logical volumes (also of volume groups spanning several disks of the point), a filesystem
on a whole disk; ext2/3/4 (including inline data), XFS (v4/v5), NTFS, FAT12/16/32. Each volume's kind is
told by its own superblock, never by the partition type.

Not read (listed, with a reason, instead of wrong bytes): LVM striped, thin, RAID, cache and snapshot volumes;
NTFS encrypted (EFS) files and files behind reparse points other than symlinks and junctions (shown as
kind "other": WOF-compressed, deduplicated); NTFS alternate data streams are left out; ext4 encrypted
directories show their encrypted names. FAT times have no zone and are taken as UTC."""

from __future__ import annotations

import contextlib
import fnmatch
import io
from collections import OrderedDict
from typing import Any, BinaryIO, Iterator

from ..repo import ChunkError, RepoError, Repository, RestorePoint
from ..units import human_bytes
from .diskview import PointDiskView
from .errors import FileDamagedError, FilesError, NotADirectoryInPointError, PathNotFoundError
from .filesystems import BadFilesystem, Filesystem, Info, mount
from .model import FsEntry, Volume
from .volumes import DiskLayout, FoundVolume, physical_volumes, scan

# Directories whose children were listed, kept so that opening every file of a big directory (an
# extraction) does not list the directory again for each file.
_DIR_CACHE = 32


def entry_path(parent: str, name: str) -> str:
    """The path of ``name`` in directory ``parent``. A guest name may hold '/' or NUL: shown as U+2215 and
    U+2400 so that the path never names another place (looking names up matches whole names only, so such
    an entry cannot be reached by path; extraction refuses it anyway)."""
    shown = name.replace("/", "\u2215").replace("\x00", "\u2400")
    return (parent.rstrip("/") or "") + "/" + shown


def split_path(path: str) -> list[str]:
    """Components of a path in a disk's tree; ``/``, ``p2/etc`` and ``/p2/etc/`` are accepted."""
    if not isinstance(path, str):
        raise PathNotFoundError(f"not a path: {path!r}")
    inner = path.strip("/") if path not in ("", "/") else ""
    if path.startswith("//") or path.endswith("//"):
        raise PathNotFoundError(f"bad path {path!r}: empty component")
    if not inner:
        return []
    parts = inner.split("/")
    for p in parts:
        if p in ("", ".", ".."):
            raise PathNotFoundError(f"bad path {path!r}: '.', '..' and empty components are not allowed")
    return parts


class _Disk:
    """One disk of the point, opened: its view, volumes, mounted filesystems, recently listed directories."""

    def __init__(self, index: int, view: PointDiskView) -> None:
        self.index = index
        self.view = view
        self.layout: DiskLayout | None = None
        self.pvs: dict[str, Any] | None = None  # its LVM physical volumes, for volume groups spanning disks
        self.mounts: dict[str, Filesystem | FilesError] = {}
        self.dirs: OrderedDict[str, dict[str, Any]] = OrderedDict()


class PointFiles:
    """Browse and read the files of one restore point, in place (no restore, no root).

    Disks are numbered as in ``point.disks`` (0 = the first, the system disk). Each disk's tree has its
    volumes at the top (see :class:`~fctui.files.model.Volume` for names). Paths are absolute
    (``/p2/etc/nginx/nginx.conf``); a missing leading ``/`` and a trailing ``/`` are accepted,
    ``.``/``..``/empty components are not (:class:`~fctui.files.errors.PathNotFoundError`). Disks,
    volumes and filesystems are opened on first use and kept until :meth:`close`. Safe to use from one
    thread at a time.

    While open, the point is protected from prune and gc (a read lease, as a restore takes), when the
    repository can be written."""

    def __init__(self, repo: Repository, point: RestorePoint | str, *, cache_chunks: int = 16) -> None:
        self.repo = repo
        self.point = repo.point(point) if isinstance(point, str) else point
        self._cache_chunks = cache_chunks
        self._disks: dict[int, _Disk] = {}
        self._lease = contextlib.ExitStack()
        try:
            self._lease.enter_context(repo.protect([self.point.id]))
        except (RepoError, OSError):
            pass  # a read-only repository: browse without the lease

    point: RestorePoint

    def close(self) -> None:
        for d in self._disks.values():
            d.view.close()
        self._disks.clear()
        self._lease.close()

    def __enter__(self) -> "PointFiles":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- disks and volumes ---------------------------------------------------------------------
    def _disk(self, disk: int) -> _Disk:
        d = self._disks.get(disk)
        if d is not None:
            return d
        disks = self.point.disks
        if not isinstance(disk, int) or isinstance(disk, bool) or not 0 <= disk < len(disks):
            listed = ", ".join(f"{i} {x.disk_name or x.volume_urn} ({human_bytes(x.size_bytes)})"
                               for i, x in enumerate(disks)) or "none"
            raise PathNotFoundError(f"restore point {self.point.id} has no disk {disk} (disks: {listed})")
        try:
            reader = self.repo.open_disk(self.point.id, disks[disk].volume_urn)
        except RepoError as exc:
            raise FilesError(f"cannot open disk {disk} of restore point {self.point.id}: {exc}") from exc
        d = self._disks[disk] = _Disk(disk, PointDiskView(reader, cache_chunks=self._cache_chunks))
        return d

    def _layout(self, d: _Disk) -> DiskLayout:
        if d.layout is None:
            with self._guard(d, "/", what="the partitions and volumes of"):
                d.layout = scan(d.view, d.view.size, d.index, lambda vg, pv_id: self._pv_elsewhere(d.index, pv_id))
        return d.layout

    def _pv_elsewhere(self, disk: int, pv_id: str) -> Any:
        """A physical volume of a volume group that spans disks, found on another disk of the point."""
        for j in range(len(self.point.disks)):
            if j == disk:
                continue
            try:
                other = self._disk(j)
                if other.pvs is None:
                    with self._guard(other, "/", what="the LVM physical volumes of"):
                        other.pvs = physical_volumes(other.view, other.view.size)
            except FilesError:
                continue  # that disk's own listing says what is wrong with it (and is asked again later)
            if pv_id in other.pvs:
                return other.pvs[pv_id]
        return None

    def volumes(self, disk: int = 0) -> list[Volume]:
        """Every volume found on the disk, in disk order (LVM volumes after the partitions holding them)."""
        d = self._disk(disk)
        return [f.volume for f in self._layout(d).volumes]

    def _volume(self, d: _Disk, name: str) -> FoundVolume:
        found = [f for f in self._layout(d).volumes if f.volume.fs_type]
        for f in found:
            if f.volume.name == name:
                return f
        names = ", ".join("/" + f.volume.name for f in found) or "none"
        raise PathNotFoundError(f"no volume /{name} with a filesystem on disk {d.index} of restore point "
                                f"{self.point.id} (volumes: {names})")

    def _mount(self, d: _Disk, found: FoundVolume) -> Filesystem:
        name = found.volume.name
        got = d.mounts.get(name)
        if got is None:
            try:
                with self._guard(d, "/" + name, what=f"the {found.volume.fs_type} filesystem of"):
                    got = mount(found.open(), found.volume.fs_type)
            except FilesError as exc:
                got = exc
            d.mounts[name] = got
        if isinstance(got, FilesError):
            raise got
        return got

    # --- errors ---------------------------------------------------------------------------------
    def _damaged(self, d: _Disk, path: str, exc: ChunkError, block: int | None,
                 what: str = "") -> FileDamagedError:
        where = f" (disk block {block})" if block is not None else ""
        subject = f"{what} {path}" if what else path
        return FileDamagedError(
            f"cannot read {subject} from restore point {self.point.id} (disk {d.index}): chunk "
            f"{exc.digest[:12]} is {exc.problem}{where}",
            point_id=self.point.id, disk=d.index, path=path, digest=exc.digest, problem=exc.problem,
            block=block)

    @contextlib.contextmanager
    def _guard(self, d: _Disk, path: str, *, what: str = "") -> Iterator[None]:
        """Turn whatever a parser raises into a FilesError naming ``path``; a damaged chunk (raised, or
        swallowed by a parser and kept in the view) into FileDamagedError."""
        before = d.view.damage
        try:
            yield
        except FilesError:
            raise
        except ChunkError as exc:
            raise self._damaged(d, path, exc, d.view.damage_block if d.view.damage is exc else None,
                                what) from exc
        except Exception as exc:  # noqa: BLE001 - guest metadata makes parsers fail in any way
            if d.view.damage is not None and d.view.damage is not before:
                raise self._damaged(d, path, d.view.damage, d.view.damage_block, what) from exc
            subject = f"{what} {path}" if what else path
            why = str(exc) if isinstance(exc, BadFilesystem) else \
                f"the filesystem's metadata makes no sense ({type(exc).__name__}: {exc})"
            raise FilesError(f"cannot read {subject} from restore point {self.point.id} (disk {d.index}): "
                             f"{why}") from exc
        if d.view.damage is not None and d.view.damage is not before:
            raise self._damaged(d, path, d.view.damage, d.view.damage_block, what)

    # --- paths ----------------------------------------------------------------------------------
    def _children(self, d: _Disk, fs: Filesystem, dir_path: str, node: Any) -> dict[str, Any]:
        key = dir_path
        kids = d.dirs.get(key)
        if kids is not None:
            d.dirs.move_to_end(key)
            return kids
        with self._guard(d, dir_path):
            kids = {}
            for name, child in fs.children(node):
                kids.setdefault(name, child)  # a damaged directory may repeat a name: the first wins
        d.dirs[key] = kids
        while len(d.dirs) > _DIR_CACHE:
            d.dirs.popitem(last=False)
        return kids

    def _info(self, d: _Disk, fs: Filesystem, path: str, node: Any) -> Info:
        with self._guard(d, path):
            return fs.info(node)

    def _resolve(self, disk: int, path: str) -> tuple[_Disk, FoundVolume | None, Filesystem | None, Any, str]:
        """(disk, volume, filesystem, node, canonical path); node None for ``/``."""
        parts = split_path(path)
        d = self._disk(disk)
        if not parts:
            return d, None, None, None, "/"
        found = self._volume(d, parts[0])
        fs = self._mount(d, found)
        canon = "/" + parts[0]
        with self._guard(d, canon):
            node = fs.root()
        for comp in parts[1:]:
            info = self._info(d, fs, canon, node)
            if info.kind != "dir":
                raise NotADirectoryInPointError(f"{canon} is not a directory (in restore point "
                                                f"{self.point.id}, disk {d.index})")
            kids = self._children(d, fs, canon, node)
            if comp not in kids:
                raise PathNotFoundError(f"no {canon}/{comp} in restore point {self.point.id} (disk {d.index})")
            node = kids[comp]
            canon = entry_path(canon, comp)
        return d, found, fs, node, canon

    def _entry(self, d: _Disk, found: FoundVolume, fs: Filesystem, node: Any, path: str, name: str) -> FsEntry:
        i = self._info(d, fs, path, node)
        return FsEntry(disk=d.index, path=path, name=name, kind=i.kind, size=i.size, mtime_ns=i.mtime_ns,
                       mode=i.mode & 0o7777, uid=i.uid, gid=i.gid, target=i.target,
                       fs_type=found.volume.fs_type)

    def _volume_entry(self, d: _Disk, found: FoundVolume) -> FsEntry:
        name = found.volume.name
        try:
            fs = self._mount(d, found)
            with self._guard(d, "/" + name):
                i = fs.info(fs.root())
            mtime_ns, mode, uid, gid = i.mtime_ns, i.mode & 0o7777, i.uid, i.gid
        except FilesError:
            mtime_ns, mode, uid, gid = 0, 0o755, 0, 0  # listed all the same: entering it says what is wrong
        return FsEntry(disk=d.index, path="/" + name, name=name, kind="dir", size=0, mtime_ns=mtime_ns,
                       mode=mode, uid=uid, gid=gid, fs_type=found.volume.fs_type)

    # --- the contract ---------------------------------------------------------------------------
    def stat(self, path: str, *, disk: int = 0) -> FsEntry:
        """The entry at ``path`` (``/`` is the disk itself, a directory; ``/p2`` a volume's root)."""
        d, found, fs, node, canon = self._resolve(disk, path)
        if found is None:
            return FsEntry(disk=d.index, path="/", name="", kind="dir", size=0, mtime_ns=0, mode=0o755)
        if canon.count("/") == 1:
            return self._volume_entry(d, found)
        return self._entry(d, found, fs, node, canon, split_path(path)[-1])

    def listdir(self, path: str = "/", *, disk: int = 0) -> list[FsEntry]:
        """Entries of a directory sorted by name (``.`` and ``..`` left out); at ``/`` the volumes that hold
        a readable filesystem. Raises NotADirectoryInPointError for a file, FileDamagedError naming the
        directory when a chunk of its metadata is damaged."""
        d, found, fs, node, canon = self._resolve(disk, path)
        if found is None:
            vols = [f for f in self._layout(d).volumes if f.volume.fs_type]
            return sorted((self._volume_entry(d, f) for f in vols), key=lambda e: e.name)
        assert fs is not None
        if self._info(d, fs, canon, node).kind != "dir":
            raise NotADirectoryInPointError(f"{canon} is not a directory (in restore point {self.point.id}, "
                                            f"disk {d.index})")
        kids = self._children(d, fs, canon, node)
        out = [self._entry(d, found, fs, child, entry_path(canon, name), name) for name, child in kids.items()]
        out.sort(key=lambda e: e.name)
        return out

    def walk(self, path: str = "/", *, disk: int = 0) -> Iterator[FsEntry]:
        """``path`` itself, then everything below it, depth first, a directory before its contents.
        Symlinks are yielded, never followed. A directory is walked once even if a damaged filesystem
        links it twice; one whose name holds '/' is yielded but not entered."""
        top = self.stat(path, disk=disk)
        yield top
        if not top.is_dir:
            return
        seen: set[tuple[str, Any]] = set()
        stack: list[Iterator[FsEntry]] = [iter(self._list_for_walk(top, seen))]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            yield entry
            if entry.is_dir and "/" not in entry.name and "\x00" not in entry.name:
                # (a directory whose guest name holds '/' has no path to reach it by: not descended)
                stack.append(iter(self._list_for_walk(entry, seen)))

    def _list_for_walk(self, entry: FsEntry, seen: set[tuple[str, Any]]) -> list[FsEntry]:
        if entry.path != "/":
            # a damaged filesystem can link a directory into itself: walk each directory once
            d, found, fs, node, _ = self._resolve(entry.disk, entry.path)
            assert found is not None and fs is not None
            with self._guard(d, entry.path):
                key = (found.volume.name, fs.key(node))
            if key in seen:
                return []
            seen.add(key)
        return self.listdir(entry.path, disk=entry.disk)

    def find(self, pattern: str, *, disk: int | None = None, path: str = "/") -> Iterator[FsEntry]:
        """Entries whose name matches the shell pattern (``*.conf``; case-insensitive), below ``path``;
        every disk when ``disk`` is None (disks without ``path`` are skipped)."""
        pat = pattern.lower()
        disks = range(len(self.point.disks)) if disk is None else [disk]
        found_any = False
        for i in disks:
            try:
                entries = self.walk(path, disk=i)
                top = next(entries)
            except PathNotFoundError:
                if disk is not None:
                    raise
                continue
            found_any = True
            del top  # the place searched is not a match of the search
            for e in entries:
                if fnmatch.fnmatchcase(e.name.lower(), pat):
                    yield e
        if not found_any and disk is None:
            raise PathNotFoundError(f"no {path} on any disk of restore point {self.point.id}")

    def open(self, path: str, *, disk: int = 0) -> BinaryIO:
        """A file's content as a read-only stream; a damaged chunk raises FileDamagedError naming the file
        (never wrong or zeroed bytes)."""
        d, found, fs, node, canon = self._resolve(disk, path)
        if found is None or fs is None or canon.count("/") == 1:
            raise FilesError(f"{canon} is a directory, not a file (restore point {self.point.id}, disk {disk})")
        info = self._info(d, fs, canon, node)
        if info.kind != "file":
            what = {"dir": "a directory", "symlink": "a symbolic link"}.get(info.kind, "not a regular file")
            raise FilesError(f"{canon} is {what}, not a file (restore point {self.point.id}, disk {disk})")
        with self._guard(d, canon):
            inner = fs.open(node)
        return _FileReader(self, d, canon, inner, info.size)


class _FileReader(io.RawIOBase):
    """A file of a point as a read-only binary stream. Every read is checked: a damaged chunk raises
    FileDamagedError naming the file, and content that ends before the file's size (a damaged block map)
    is an error too, never silently short."""

    def __init__(self, owner: PointFiles, d: _Disk, path: str, inner: BinaryIO, size: int) -> None:
        super().__init__()
        self._owner = owner
        self._d = d
        self.path = path
        self._inner = inner
        self.size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence] + offset
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read of a closed file")
        left = max(0, self.size - self._pos)
        n = left if size is None or size < 0 else min(size, left)
        if n <= 0:
            return b""
        with self._owner._guard(self._d, self.path):
            self._inner.seek(self._pos)
            data = self._inner.read(n)
            if len(data) != n:
                raise BadFilesystem(f"the file's content ends at byte {self._pos + len(data)} of {self.size} "
                                    "(its block map is damaged)")
        self._pos += n
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)
