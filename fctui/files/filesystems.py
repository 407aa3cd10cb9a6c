"""One adapter per filesystem kind over the ``dissect`` parsers: the same few questions asked of ext2/3/4,
XFS, NTFS and FAT (a directory's children, an entry's kind/size/mtime/mode/owner, a file's content).

Nodes are the parser's own objects; :class:`Info` is what :class:`~fctui.files.browse.PointFiles` turns
into an :class:`~fctui.files.model.FsEntry`. Guest metadata is untrusted: a structure that makes no sense
raises :class:`BadFilesystem` (a message for the user, never a traceback)."""

from __future__ import annotations

import calendar
import datetime
import io
import stat
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO

from dissect.util.stream import RunlistStream


class BadFilesystem(Exception):
    """The filesystem's metadata cannot be used for this (inconsistent, or a feature not supported)."""


@dataclass(frozen=True)
class Info:
    kind: str  # file | dir | symlink | other
    size: int
    mtime_ns: int
    mode: int  # permission bits only
    uid: int = 0
    gid: int = 0
    target: str | None = None


def _kind(fmt: int) -> str:
    if fmt == stat.S_IFREG:
        return "file"
    if fmt == stat.S_IFDIR:
        return "dir"
    if fmt == stat.S_IFLNK:
        return "symlink"
    return "other"


class Filesystem:
    """The questions every adapter answers."""

    fs_type: str

    def root(self) -> Any:
        raise NotImplementedError

    def children(self, node: Any) -> list[tuple[str, Any]]:
        """(name, node) of a directory, without ``.``/``..`` and without the filesystem's own metadata."""
        raise NotImplementedError

    def info(self, node: Any) -> Info:
        raise NotImplementedError

    def open(self, node: Any) -> BinaryIO:
        """A regular file's content (a stream with a ``size`` attribute)."""
        raise NotImplementedError

    def key(self, node: Any) -> Any:
        """Identity of a directory (to refuse directory loops in a damaged filesystem)."""
        raise NotImplementedError


# --- ext2/3/4 --------------------------------------------------------------------------------------
_EXT_INLINE_DATA_FL = 0x10000000
_EXT_INCOMPAT_FILETYPE = 0x2
_EXT_DIRENT_HEAD = struct.Struct("<IHBB")
_EXT_DIRENT_HEAD_OLD = struct.Struct("<IHH")
_EXT_INODE = struct.Struct("<HHIIIIIHHII")  # mode uid size_lo atime ctime mtime dtime gid links blocks flags
_EXT_WINDOW = 1 << 16  # inode-table bytes read at a time: a directory's inodes are mostly neighbours


class ExtAdapter(Filesystem):
    """ext2/3/4 through dissect.extfs; directory entries and the inode fields a listing shows are read
    here with ``struct`` (dissect's generic inode parse costs ~70 us, too slow for a 10,000-entry
    directory), file content and symlinks through dissect."""

    def __init__(self, fh: BinaryIO, fs_type: str) -> None:
        from dissect.extfs import ExtFS

        self.fs = ExtFS(fh)
        self.fs_type = fs_type
        sb = self.fs.sb
        self._isize = sb.s_inode_size if sb.s_rev_level else 128
        self._filetype = bool(sb.s_feature_incompat & _EXT_INCOMPAT_FILETYPE)
        self._windows: OrderedDict[int, bytes] = OrderedDict()
        self._infos: dict[int, Info] = {}

    def root(self) -> Any:
        return self.fs.root

    def key(self, node: Any) -> Any:
        return node.inum

    def _raw_inode(self, inum: int) -> bytes:
        fs = self.fs
        if not 1 <= inum <= fs.sb.s_inodes_count:
            raise BadFilesystem(f"inode number {inum} is out of range")
        group, index = divmod(inum - 1, fs.sb.s_inodes_per_group)
        desc = fs._read_group_desc(group)
        table = desc.bg_inode_table_lo
        if hasattr(desc, "bg_inode_table_hi"):
            table |= desc.bg_inode_table_hi << 32
        at = table * fs.block_size + index * self._isize
        win = at // _EXT_WINDOW
        out = b""
        while len(out) < self._isize:
            data = self._windows.get(win)
            if data is None:
                fs.fh.seek(win * _EXT_WINDOW)
                data = fs.fh.read(_EXT_WINDOW)
                self._windows[win] = data
                if len(self._windows) > 64:
                    self._windows.popitem(last=False)
            else:
                self._windows.move_to_end(win)
            lo = at + len(out) - win * _EXT_WINDOW
            piece = data[lo:lo + self._isize - len(out)]
            if not piece:
                raise BadFilesystem(f"inode {inum} lies outside the filesystem")
            out += piece
            win += 1
        return out

    def _info(self, inum: int) -> Info:
        got = self._infos.get(inum)
        if got is not None:
            return got
        raw = self._raw_inode(inum)
        mode, uid, size_lo, _a, _c, mtime, _d, gid, _links, _blocks, _flags = _EXT_INODE.unpack_from(raw)
        size = size_lo | (struct.unpack_from("<I", raw, 108)[0] << 32)
        uid |= struct.unpack_from("<H", raw, 120)[0] << 16
        gid |= struct.unpack_from("<H", raw, 122)[0] << 16
        sec = mtime - (1 << 32) if mtime & 0x80000000 else mtime
        ns = 0
        if self._isize > 128 and struct.unpack_from("<H", raw, 128)[0] >= 12:
            extra = struct.unpack_from("<I", raw, 136)[0]
            sec += (extra & 3) << 32
            ns = extra >> 2
        kind = _kind(stat.S_IFMT(mode))
        info = Info(kind, 0 if kind == "dir" else size, sec * 1_000_000_000 + ns, mode & 0o7777, uid, gid)
        if len(self._infos) > 200_000:
            self._infos.clear()
        self._infos[inum] = info
        return info

    def children(self, node: Any) -> list[tuple[str, Any]]:
        if stat.S_IFMT(node.inode.i_mode) != stat.S_IFDIR:
            raise BadFilesystem(f"inode {node.inum} is not a directory")
        out: list[tuple[str, Any]] = []
        if node.inode.i_flags & _EXT_INLINE_DATA_FL:
            # the parent's number, then entries in the rest of the inode, more in "system.data"
            self._dirents(node, bytes(node.inode.i_block)[4:60], out)
            extra = next((x.value for x in node.xattr if x.name == "system.data"), b"")
            if extra:
                self._dirents(node, bytes(extra), out)
            return out
        size = node.size
        data = node.open().read(size)
        if len(data) != size:
            raise BadFilesystem(f"directory inode {node.inum} is shorter than its size")
        self._dirents(node, data, out)
        return out

    def _dirents(self, node: Any, data: bytes, out: list[tuple[str, Any]]) -> None:
        from dissect.extfs.extfs import INode

        head = _EXT_DIRENT_HEAD if self._filetype else _EXT_DIRENT_HEAD_OLD
        limit = self.fs.sb.s_inodes_count
        size = len(data)
        at = 0
        while at + 8 <= size:
            if self._filetype:
                inum, rec_len, name_len, _ftype = head.unpack_from(data, at)
            else:
                inum, rec_len, name_len = head.unpack_from(data, at)
            if rec_len < 8 or at + rec_len > size or 8 + name_len > rec_len:
                raise BadFilesystem(f"directory inode {node.inum} has a damaged entry at byte {at}")
            if inum:
                if inum > limit:
                    raise BadFilesystem(f"directory inode {node.inum} names inode {inum}, out of range")
                name = data[at + 8:at + 8 + name_len].decode("utf-8", errors="surrogateescape")
                if name not in (".", "..", ""):
                    out.append((name, INode(self.fs, inum, name)))
            at += rec_len

    def info(self, node: Any) -> Info:
        info = self._info(node.inum)
        if info.kind == "symlink":
            target = node.link
            return Info("symlink", info.size, info.mtime_ns, info.mode, info.uid, info.gid, target)
        return info

    def open(self, node: Any) -> BinaryIO:
        if node.inode.i_flags & _EXT_INLINE_DATA_FL and node.size > 60:
            # the first 60 bytes in the inode, the rest in the "system.data" extended attribute
            extra = next((x.value for x in node.xattr if x.name == "system.data"), b"")
            data = bytes(node.inode.i_block)[:60] + bytes(extra)
            if len(data) < node.size:
                raise BadFilesystem("inline data is shorter than the file")
            buf = io.BytesIO(data[:node.size])
            buf.size = node.size  # type: ignore[attr-defined]
            return buf
        return node.open()


# --- XFS -------------------------------------------------------------------------------------------
_XFS_INODE = struct.Struct(">HHBBHII")  # magic mode version format onlink uid gid
_XFS_DIFLAG2_BIGTIME = 1 << 3
_XFS_WINDOW = 1 << 16


class XfsAdapter(Filesystem):
    fs_type = "xfs"

    def __init__(self, fh: BinaryIO) -> None:
        from dissect.xfs import XFS
        from dissect.xfs.c_xfs import c_xfs

        self._c = c_xfs
        self.fs = XFS(fh)
        self._windows: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._infos: dict[int, Info] = {}

    def root(self) -> Any:
        return self.fs.root

    def key(self, node: Any) -> Any:
        return node.inum

    def children(self, node: Any) -> list[tuple[str, Any]]:
        return [(c.filename, c) for c in node.iterdir() if c.filename not in (".", "..", "")]

    def _raw_inode(self, node: Any) -> bytes:
        ag = node.ag
        isize = ag.sb.sb_inodesize
        at = node.relative_inum * isize
        win = at // _XFS_WINDOW
        data = self._windows.get((ag.num, win))
        if data is None:
            ag.fh.seek(win * _XFS_WINDOW)
            data = ag.fh.read(_XFS_WINDOW)
            self._windows[(ag.num, win)] = data
            if len(self._windows) > 64:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end((ag.num, win))
        lo = at - win * _XFS_WINDOW
        raw = data[lo:lo + isize]
        if len(raw) < min(isize, 128):
            raise BadFilesystem(f"inode {node.inum} lies outside the filesystem")
        return raw

    def info(self, node: Any) -> Info:
        """The fields a listing shows, read with ``struct`` (dissect's inode parse costs ~95 us)."""
        got = self._infos.get(node.inum)
        if got is None:
            raw = self._raw_inode(node)
            magic, mode, version, _fmt, _onlink, uid, gid = _XFS_INODE.unpack_from(raw)
            if magic != 0x494E:
                raise BadFilesystem(f"inode {node.inum} has no inode magic")
            (ts,) = struct.unpack_from(">Q", raw, 40)
            (size,) = struct.unpack_from(">Q", raw, 56)
            bigtime = version >= 3 and struct.unpack_from(">Q", raw, 120)[0] & _XFS_DIFLAG2_BIGTIME
            if bigtime:
                sec, nsec = divmod(ts, 1_000_000_000)
                sec -= 1 << 31
            else:
                sec, nsec = ts >> 32, ts & 0xFFFFFFFF
                if sec & 0x80000000:
                    sec -= 1 << 32
            kind = _kind(stat.S_IFMT(mode))
            got = Info(kind, 0 if kind == "dir" else size, sec * 1_000_000_000 + nsec, mode & 0o7777, uid, gid)
            if len(self._infos) > 200_000:
                self._infos.clear()
            self._infos[node.inum] = got
        if got.kind == "symlink":
            target = node.link
            return Info("symlink", got.size, got.mtime_ns, got.mode, got.uid, got.gid, target)
        return got

    def open(self, node: Any) -> BinaryIO:
        from dissect.xfs.xfs import fsb_to_bb

        c = self._c
        if node.inode.di_format != c.xfs_dinode_fmt.XFS_DINODE_FMT_EXTENTS and \
                node.inode.di_format != c.xfs_dinode_fmt.XFS_DINODE_FMT_BTREE:
            return node.open()  # local (in the inode)
        # dissect's own runlist reads an unwritten (preallocated) extent from disk; it reads as zeros
        sb = node.ag.sb
        bs = self.fs.block_size
        runs: list[tuple[int | None, int]] = []
        at = 0
        for offset, block, count, unwritten in node._iter_blocks():
            if offset < at:
                raise BadFilesystem(f"extents out of order in inode {node.inum}")
            if offset > at:
                runs.append((None, offset - at))
            agnum, blknum = fsb_to_bb(block, sb.sb_agblklog)
            runs.append((None if unwritten else agnum * sb.sb_agblocks + blknum, count))
            at = offset + count
        need = (node.size + bs - 1) // bs
        if at < need:
            runs.append((None, need - at))
        return RunlistStream(self.fs.fh, runs, node.size, bs)


# --- NTFS ------------------------------------------------------------------------------------------
_NTFS_FIRST_USER_RECORD = 24  # records 0-23: $MFT, $MFTMirr, $LogFile, ... and reserved ones
_NTFS_READONLY = 0x1
_NTFS_NAMESPACE_DOS = 2
_NTFS_WINDOW = 1 << 16
_NTFS_ENCRYPTED = 0x4000


def _fixup(raw: bytes, magic: bytes) -> bytearray | None:
    """An NTFS multi-sector record with its update sequence applied; None when torn or not ``magic``."""
    if len(raw) < 48 or raw[:4] != magic:
        return None
    usa_ofs, usa_count = struct.unpack_from("<HH", raw, 4)
    rec = bytearray(raw)
    if usa_count < 1 or usa_ofs + 2 * usa_count > len(rec):
        return None
    usn = rec[usa_ofs:usa_ofs + 2]
    for i in range(1, usa_count):
        end = i * 512
        if end > len(rec) or rec[end - 2:end] != usn:
            return None
        rec[end - 2:end] = rec[usa_ofs + 2 * i:usa_ofs + 2 * i + 2]
    return rec


class NtfsAdapter(Filesystem):
    fs_type = "ntfs"

    def __init__(self, fh: BinaryIO) -> None:
        from dissect.ntfs import NTFS

        self.fs = NTFS(fh)
        self._windows: OrderedDict[int, bytes] = OrderedDict()

    def root(self) -> Any:
        return self.fs.mft.get(5)

    def key(self, node: Any) -> Any:
        return node.segment

    def children(self, node: Any) -> list[tuple[str, Any]]:
        """The directory's $I30 index read here: the root's entries, then every index block the
        index's $BITMAP marks in use (dissect also reads freed blocks, whose stale entries would list
        deleted files, and parses each entry with cstruct, ~50 us)."""
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE as T

        rec = node.record if isinstance(node, _NtfsNode) else node
        root = rec.open("$I30", T.INDEX_ROOT).read()
        if len(root) < 32:
            raise BadFilesystem(f"directory record {node.segment} has a damaged index root")
        block_size = struct.unpack_from("<I", root, 8)[0]
        out: list[tuple[str, Any]] = []
        seen: set[tuple[str, int]] = set()
        self._index_entries(root, 16, out, seen)
        if rec.has_stream("$I30", T.INDEX_ALLOCATION):
            if block_size < 512 or block_size & (block_size - 1):
                raise BadFilesystem(f"directory record {node.segment} has a bad index block size")
            bitmap = rec.open("$I30", T.BITMAP).read() if rec.has_stream("$I30", T.BITMAP) else b""
            alloc = rec.open("$I30", T.INDEX_ALLOCATION)
            data = alloc.read()
            for n in range(len(data) // block_size):
                if n // 8 >= len(bitmap) or not bitmap[n // 8] >> (n % 8) & 1:
                    continue
                buf = _fixup(data[n * block_size:(n + 1) * block_size], b"INDX")
                if buf is None:
                    raise BadFilesystem(f"index block {n} of directory record {node.segment} is damaged")
                self._index_entries(buf, 24, out, seen)
        return out

    def _index_entries(self, buf: bytes | bytearray, header_at: int, out: list[tuple[str, Any]],
                       seen: set[tuple[str, int]]) -> None:
        if header_at + 16 > len(buf):
            raise BadFilesystem("a directory index header is cut short")
        first, total = struct.unpack_from("<II", buf, header_at)
        at, end = header_at + first, min(header_at + total, len(buf))
        while at + 16 <= end:
            ref, length, key_len, flags = struct.unpack_from("<QHHH", buf, at)
            if flags & 0x2 or length < 16:  # the last entry (holds no name)
                break
            key = buf[at + 16:at + 16 + key_len]
            at += length
            # the key is the child's $FILE_NAME: parent(8) times(32) sizes(16) attributes(8) length namespace name
            if len(key) < 66 or key[65] == _NTFS_NAMESPACE_DOS:
                continue  # too short, or the 8.3 alias of a long name
            segment = ref & 0xFFFFFFFFFFFF
            if segment < _NTFS_FIRST_USER_RECORD:
                continue  # the filesystem's own metadata files
            # (an unpaired UTF-16 surrogate cannot become a file name anywhere: shown as U+FFFD)
            name = bytes(key[66:66 + 2 * key[64]]).decode("utf-16-le", errors="replace")
            if (name, segment) not in seen:
                seen.add((name, segment))
                out.append((name, _NtfsNode(self.fs, segment)))

    def _raw_record(self, segment: int) -> bytes:
        size = self.fs._record_size
        at = segment * size
        win = at // _NTFS_WINDOW
        data = self._windows.get(win)
        if data is None:
            fh = self.fs.mft.fh
            fh.seek(win * _NTFS_WINDOW)
            data = fh.read(_NTFS_WINDOW)
            self._windows[win] = data
            if len(self._windows) > 64:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(win)
        lo = at - win * _NTFS_WINDOW
        return data[lo:lo + size]

    def _fast_info(self, segment: int) -> Info | None:
        """Kind, size, mtime and mode from the raw MFT record with ``struct`` (dissect parses every
        attribute of a record, ~1 ms); None when the record needs dissect (reparse point, attribute
        list, anything unusual)."""
        rec = _fixup(self._raw_record(segment), b"FILE")
        if rec is None:
            return None  # torn or odd: dissect decides
        attrs_at, flags = struct.unpack_from("<HH", rec, 20)
        if not flags & 0x1:
            return None
        mtime = attributes = None
        size = 0
        at = attrs_at
        while at + 16 <= len(rec):
            atype, alen = struct.unpack_from("<II", rec, at)
            if atype == 0xFFFFFFFF:
                break
            if alen < 16 or at + alen > len(rec):
                return None
            non_resident, name_len = rec[at + 8], rec[at + 9]
            if atype in (0x20, 0xC0):  # attribute list, reparse point
                return None
            if atype == 0x10 and not non_resident:
                vlen, voff = struct.unpack_from("<IH", rec, at + 16)
                if vlen < 36:
                    return None
                ft, attributes = struct.unpack_from("<Q", rec, at + voff + 8)[0], \
                    struct.unpack_from("<I", rec, at + voff + 32)[0]
                mtime = (ft - 116444736000000000) * 100
            elif atype == 0x80 and name_len == 0:
                if non_resident:
                    if struct.unpack_from("<Q", rec, at + 16)[0] == 0:  # the first piece says the size
                        size = struct.unpack_from("<Q", rec, at + 48)[0]
                else:
                    size = struct.unpack_from("<I", rec, at + 16)[0]
            at += alen
        if mtime is None or attributes is None:
            return None
        if flags & 0x2:
            return Info("dir", 0, mtime, 0o755)
        return Info("file", size, mtime, 0o444 if attributes & _NTFS_READONLY else 0o644)

    def info(self, node: Any) -> Info:
        from dissect.ntfs.c_ntfs import IO_REPARSE_TAG

        fast = self._fast_info(node.segment)
        if fast is not None:
            return fast
        rec = node.record if isinstance(node, _NtfsNode) else node
        si = rec.attributes.STANDARD_INFORMATION
        if not si:
            raise BadFilesystem(f"MFT record {rec.segment} has no $STANDARD_INFORMATION")
        mtime = si.last_modification_time_ns
        attrs = int(si.file_attributes)
        if rec.is_reparse_point():
            rp = rec.attributes.REPARSE_POINT
            if rp.tag in (IO_REPARSE_TAG.SYMLINK, IO_REPARSE_TAG.MOUNT_POINT):
                target = rp.print_name or rp.substitute_name or ""
                return Info("symlink", len(target.encode("utf-8", "surrogateescape")), mtime, 0o777,
                            target=target)
            if not rec.is_dir():
                return Info("other", 0, mtime, 0o444 if attrs & _NTFS_READONLY else 0o644)
        if rec.is_dir():
            return Info("dir", 0, mtime, 0o755)
        try:
            size = rec.size()
        except FileNotFoundError:
            size = 0
        return Info("file", size, mtime, 0o444 if attrs & _NTFS_READONLY else 0o644)

    def open(self, node: Any) -> BinaryIO:
        rec = node.record if isinstance(node, _NtfsNode) else node
        si = rec.attributes.STANDARD_INFORMATION
        if si and int(si.file_attributes) & _NTFS_ENCRYPTED:
            raise BadFilesystem("the file is encrypted (EFS); its content cannot be read without the key")
        try:
            return rec.open()
        except FileNotFoundError:
            buf = io.BytesIO(b"")
            buf.size = 0  # type: ignore[attr-defined]
            return buf


class _NtfsNode:
    """An MFT record read when first needed (a directory's index already names its children)."""

    __slots__ = ("_fs", "segment", "_record")

    def __init__(self, fs: Any, segment: int) -> None:
        self._fs = fs
        self.segment = segment
        self._record = None

    @property
    def record(self) -> Any:
        if self._record is None:
            self._record = self._fs.mft.get(self.segment)
        return self._record

    def __getattr__(self, name: str) -> Any:
        return getattr(self.record, name)


# --- FAT -------------------------------------------------------------------------------------------
# name attr ntres tenth ctime cdate adate clus_hi wtime wdate clus_lo size
_FAT_DIRENT = struct.Struct("<11sBBBHHHHHHHI")
_FAT_ATTR_RO, _FAT_ATTR_VOLUME, _FAT_ATTR_DIR, _FAT_ATTR_LFN = 0x01, 0x08, 0x10, 0x0F
_FAT_MAX_DIR = 4 << 20  # FAT allows 65,536 entries of 32 bytes in a directory


class _FatNode:
    __slots__ = ("name", "attr", "cluster", "size", "mtime_ns", "root")

    def __init__(self, name: str, attr: int, cluster: int, size: int, mtime_ns: int, root: bool = False) -> None:
        self.name, self.attr, self.cluster, self.size, self.mtime_ns, self.root = \
            name, attr, cluster, size, mtime_ns, root


def _dos_time_ns(date: int, time_: int) -> int:
    """A FAT date and time (no zone: taken as UTC); 0 for an impossible one."""
    try:
        when = (1980 + (date >> 9), (date >> 5) & 0xF, date & 0x1F, time_ >> 11, (time_ >> 5) & 0x3F,
                (time_ & 0x1F) * 2)
        datetime.datetime(*when)  # validates
        return calendar.timegm(when + (0, 0, 0)) * 1_000_000_000
    except ValueError:
        return 0


def _short_checksum(name: bytes) -> int:
    total = 0
    for c in name:
        total = (((total & 1) << 7) + (total >> 1) + c) & 0xFF
    return total


class FatAdapter(Filesystem):
    """FAT12/16/32: the boot sector and the FAT through dissect.fat, directories read here with
    ``struct`` (long names checked against their short entry's checksum, lower-case short names as their
    NT flags say, cluster chains walked with a limit so a looping FAT cannot hang). FAT stores local time
    with no zone: timestamps are taken as UTC. No owners or modes: directories 0o755, files 0o644,
    read-only files 0o444."""

    fs_type = "fat"

    def __init__(self, fh: BinaryIO) -> None:
        from dissect.fat import FATFS
        from dissect.fat.c_fat import Fattype

        self.fs = FATFS(fh)
        self._fat32 = self.fs.type == Fattype.FAT32
        bits = self.fs.fat.bits_per_entry
        self._end = {12: 0xFF8, 16: 0xFFF8, 32: 0x0FFFFFF8}[bits]
        self._bad = self._end - 1
        cluster = self.fs.bpb_ext.BPB_RootClus if self._fat32 else 0
        self._root = _FatNode("", _FAT_ATTR_DIR, cluster, 0, 0, root=True)

    def root(self) -> Any:
        return self._root

    def key(self, node: Any) -> Any:
        return node.cluster

    def _runs(self, node: _FatNode, need: int | None) -> list[tuple[int, int]]:
        """The cluster runs of a chain (``need`` clusters at most), walked with a limit."""
        fat = self.fs.fat
        runs: list[tuple[int, int]] = []
        cluster, seen = node.cluster, set()
        while need is None or len(seen) < need:
            if not 2 <= cluster < fat.entry_count:
                raise BadFilesystem(f"the cluster chain of {node.name or 'the root directory'!r} leaves the "
                                    "filesystem")
            if cluster in seen:
                raise BadFilesystem(f"the cluster chain of {node.name or 'the root directory'!r} loops")
            seen.add(cluster)
            if runs and runs[-1][0] + runs[-1][1] == cluster - 2:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((cluster - 2, 1))
            value = fat.get(cluster)
            if value >= self._end:
                break
            if value < 2 or value == self._bad:
                raise BadFilesystem(f"the cluster chain of {node.name!r} is broken (free or bad cluster)")
            cluster = value
        return runs

    def _dir_bytes(self, node: _FatNode) -> bytes:
        fs = self.fs
        if node.root and not self._fat32:
            bpb = fs.bpb
            fs.fh.seek((bpb.BPB_RsvdSecCnt + bpb.BPB_NumFATs * fs.fat_size) * fs.sector_size)
            return fs.fh.read(bpb.BPB_RootEntCnt * 32)
        if node.cluster == 0:
            return b""
        runs = self._runs(node, _FAT_MAX_DIR // fs.cluster_size + 1)
        total = sum(n for _, n in runs) * fs.cluster_size
        if total > _FAT_MAX_DIR:
            raise BadFilesystem(f"directory {node.name!r} is larger than FAT allows")
        return RunlistStream(fs.data_stream, runs, total, fs.cluster_size).read(total)

    def children(self, node: Any) -> list[tuple[str, Any]]:
        data = self._dir_bytes(node)
        out: list[tuple[str, Any]] = []
        lfn: dict[int, bytes] = {}
        lfn_sum = lfn_count = -1
        for at in range(0, len(data) - 31, 32):
            first = data[at]
            if first == 0x00:
                break
            if first == 0xE5:
                lfn, lfn_count = {}, -1
                continue
            (raw_name, attr, ntres, _tenth, _ct, _cd, _ad, hi, wtime, wdate, lo, size) = \
                _FAT_DIRENT.unpack_from(data, at)
            if attr & 0x3F == _FAT_ATTR_LFN:
                order = first & 0x3F
                if first & 0x40:
                    lfn, lfn_count, lfn_sum = {}, order, data[at + 13]
                if lfn_count > 0 and data[at + 13] == lfn_sum and 1 <= order <= lfn_count:
                    lfn[order] = data[at + 1:at + 11] + data[at + 14:at + 26] + data[at + 28:at + 32]
                continue
            long_name = None
            if lfn and len(lfn) == lfn_count and _short_checksum(raw_name) == lfn_sum:
                units = b"".join(lfn[i] for i in range(1, lfn_count + 1))
                text = units.decode("utf-16-le", errors="replace")
                long_name = text.split("\x00", 1)[0]
            lfn, lfn_count = {}, -1
            if attr & _FAT_ATTR_VOLUME:
                continue
            name = long_name or self._short_name(raw_name, ntres)
            if name in (".", "..", ""):
                continue
            cluster = (hi << 16 | lo) if self._fat32 else lo
            out.append((name, _FatNode(name, attr, cluster, size, _dos_time_ns(wdate, wtime))))
        return out

    @staticmethod
    def _short_name(raw: bytes, ntres: int) -> str:
        """An 8.3 name; shown in lower case where the NT flags say so (mtools and Windows write those
        instead of a long name)."""
        raw = (b"\xe5" + raw[1:]) if raw[:1] == b"\x05" else raw
        base = raw[:8].rstrip(b" ").decode("cp437")
        ext = raw[8:].rstrip(b" ").decode("cp437")
        if ntres & 0x08:
            base = base.lower()
        if ntres & 0x10:
            ext = ext.lower()
        return f"{base}.{ext}" if ext else base

    def info(self, node: Any) -> Info:
        if node.attr & _FAT_ATTR_DIR:
            return Info("dir", 0, node.mtime_ns, 0o755)
        return Info("file", node.size, node.mtime_ns, 0o444 if node.attr & _FAT_ATTR_RO else 0o644)

    def open(self, node: Any) -> BinaryIO:
        if node.size == 0:
            buf = io.BytesIO(b"")
            buf.size = 0  # type: ignore[attr-defined]
            return buf
        cs = self.fs.cluster_size
        runs = self._runs(node, (node.size + cs - 1) // cs)
        return RunlistStream(self.fs.data_stream, runs, node.size, cs)


def mount(fh: BinaryIO, fs_type: str) -> Filesystem:
    if fs_type in ("ext2", "ext3", "ext4"):
        return ExtAdapter(fh, fs_type)
    if fs_type == "xfs":
        return XfsAdapter(fh)
    if fs_type == "ntfs":
        return NtfsAdapter(fh)
    if fs_type == "fat":
        return FatAdapter(fh)
    raise BadFilesystem(f"no reader for a {fs_type or 'unknown'} filesystem")
