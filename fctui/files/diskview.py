"""A random-access, read-only file over one disk of one restore point, served from the repository's chunks."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

from ..repo import ChunkError, DiskReader


class PointDiskView(io.RawIOBase):
    """The bytes of a point's disk as a seekable binary file (what the ``dissect`` parsers read).

    Chunks are read through :meth:`DiskReader.read_block` (checked against their SHA-256, zeros for blocks
    the point does not store) and kept in a small LRU cache of ``cache_chunks`` blocks, because
    filesystem metadata reads hit the same few blocks again and again. When reads run forward through
    the disk (a large file's extents), the next blocks are read by ``readahead`` parallel threads:
    decompression and hashing release the GIL, so a file extracts at close to the repository's raw rate.

    A damaged chunk raises :class:`fctui.repo.ChunkError` from :meth:`read`; the view also keeps it in
    :attr:`damage`, because a parser may catch exceptions while it probes (a partition scheme, a
    superblock) and the caller must still learn that the data was damaged, not absent."""

    def __init__(self, reader: DiskReader, *, cache_chunks: int = 16, readahead: int = 4) -> None:
        super().__init__()
        self.reader = reader
        self.size = reader.size_bytes
        self.block_size = reader.block_size
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_max = max(2, cache_chunks)
        self._lock = threading.Lock()
        self._readahead = readahead
        self._pending: dict[int, Future[bytes]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._last_block = -2
        self.damage: ChunkError | None = None
        self.damage_block: int | None = None

    # --- io.RawIOBase --------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: "bytearray | memoryview") -> int:  # type: ignore[override]
        data = self.pread(self._pos, len(buffer))
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        data = self.pread(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        super().close()

    # --- reads ---------------------------------------------------------------------------------
    def pread(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer at the end of the disk); does not move the position."""
        end = min(offset + max(0, size), self.size)
        if offset >= end:
            return b""
        bs = self.block_size
        first, last = offset // bs, (end - 1) // bs
        if first == last:
            block = self.block(first)
            lo = offset - first * bs
            return block[lo:lo + (end - offset)]
        parts = []
        for b in range(first, last + 1):
            block = self.block(b)
            lo = offset - b * bs if b == first else 0
            hi = end - b * bs if b == last else bs
            parts.append(block[lo:hi] if (lo or hi != len(block)) else block)
        return b"".join(parts)

    def block(self, index: int) -> bytes:
        """One whole disk block (a chunk), from the cache or the repository."""
        with self._lock:
            data = self._cache.get(index)
            if data is not None:
                self._cache.move_to_end(index)
                return data
            fut = self._pending.pop(index, None)
        sequential = index == self._last_block + 1
        self._last_block = index
        try:
            data = fut.result() if fut is not None else self.reader.read_block(index)
        except ChunkError as exc:
            self.damage, self.damage_block = exc, index
            raise
        if sequential and self._readahead > 1:
            self._prefetch(index + 1)
        with self._lock:
            self._cache[index] = data
            while len(self._cache) > self._cache_max:
                self._cache.popitem(last=False)
        return data

    def _prefetch(self, start: int) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._readahead, thread_name_prefix="fctui-files")
        # twice as many blocks in flight as threads, as DiskReader.iter_blocks keeps: a thread that
        # finishes finds the next block queued instead of waiting for the reader to ask
        stop = min(start + 2 * self._readahead, self.reader.block_count)
        with self._lock:
            for b in range(start, stop):
                if b not in self._cache and b not in self._pending:
                    self._pending[b] = self._pool.submit(self.reader.read_block, b)
            # forget prefetches the reader jumped away from (their result is dropped, never trusted stale)
            for b in [b for b in self._pending if b < start - 1 or b >= stop + self._readahead]:
                self._pending.pop(b).cancel()
