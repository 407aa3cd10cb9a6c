"""Single-writer lock: an exclusive ``flock`` on a lock file.

The kernel drops the lock when the holder exits or is killed, so a crashed writer never leaves the
lock stuck. The lock file itself stays (unlinking it would let two processes lock two different
inodes); it carries the holder's pid for the error message.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from pathlib import Path
from types import TracebackType

from .errors import LockedError, StoreError


class WriterLock:
    """Exclusive, process-wide writer lock on ``path``.

    ``timeout`` 0 fails at once with :class:`LockedError` when another holder exists; a positive
    timeout keeps retrying that long first. Two ``WriterLock`` objects on one path conflict even
    inside one process (flock is per open file), which is what a second writer must see.
    """

    def __init__(self, path: Path | str, *, timeout: float = 0.0, purpose: str = "writer") -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.purpose = purpose
        self._fd: int | None = None
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder_pid(self) -> int | None:
        """The pid written by the current (or last) holder, if readable."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def acquire(self) -> "WriterLock":
        with self._mutex:
            if self._fd is not None:
                raise StoreError(f"{self.path} is already locked by this object")
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot open lock file {self.path}: {exc.strerror}") from exc
            deadline = time.monotonic() + self.timeout
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        os.close(fd)
                        raise StoreError(f"cannot lock {self.path}: {exc.strerror}") from exc
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        pid = self.holder_pid()
                        who = f"pid {pid}" if pid else "another process"
                        raise LockedError(
                            f"{self.path.parent} is locked by another {self.purpose} ({who}); "
                            "only one may write at a time",
                            path=str(self.path), holder_pid=pid,
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.1)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd
            return self

    def release(self) -> None:
        with self._mutex:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock must not outlive the object
        try:
            self.release()
        except Exception:
            pass
