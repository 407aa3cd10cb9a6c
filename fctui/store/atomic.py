"""Crash-safe file replacement and a tinydb storage built on it.

A reader (or a restart after ``kill -9`` or power loss) sees either the old file or the new one,
never a half-written mix: bytes go to a temp file in the same directory, are fsynced, renamed over
the target (atomic on POSIX), and the directory is fsynced so the rename itself is durable.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage

from .errors import CorruptDatabaseError, StoreError

_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def fsync_dir(path: Path | str) -> None:
    """Make directory entries (creations, renames, unlinks) in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name_for(path: Path) -> Path:
    """Temp file beside ``path``; the pid in the name lets a later process spot dead writers' leftovers."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write_bytes(path: Path | str, data: bytes, *, mode: int = 0o600, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably (temp, fsync, rename, fsync dir)."""
    path = Path(path)
    tmp = temp_name_for(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileNotFoundError as exc:
        raise StoreError(f"directory {path.parent} does not exist") from exc
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    if sync_dir:
        fsync_dir(path.parent)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (EPERM means it exists under another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(directory: Path | str, name: str | None = None) -> int:
    """Delete temp files left in ``directory`` by writers that no longer run; returns how many."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if not m or (name is not None and m.group("name") != name):
            continue
        if pid_alive(int(m.group("pid"))):
            continue
        try:
            os.unlink(entry.path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


class AtomicJSONStorage(Storage):
    """tinydb storage whose every write atomically replaces the whole JSON file.

    tinydb rewrites the full document on each change anyway, so the atomic replace costs one fsync
    pair per write and makes a torn file impossible. Concurrent writers are not coordinated here:
    hold a :class:`fctui.store.WriterLock` around writes from more than one process.
    """

    def __init__(self, path: Path | str, create_dirs: bool = True, **json_kwargs: Any) -> None:
        super().__init__()
        self.path = Path(path)
        if create_dirs:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        elif not self.path.parent.is_dir():
            raise StoreError(f"directory {self.path.parent} does not exist")
        self._json_kwargs = json_kwargs
        remove_stale_temps(self.path.parent, self.path.name)

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror}") from exc
        if not raw.strip():
            return None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise CorruptDatabaseError(f"{self.path} is not valid JSON ({exc.msg} at byte {exc.pos})") from exc
        if not isinstance(data, dict):
            raise CorruptDatabaseError(f"{self.path} does not hold a tinydb document")
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        payload = json.dumps(data, **self._json_kwargs).encode()
        atomic_write_bytes(self.path, payload)

    def close(self) -> None:
        pass


def open_db(path: Path | str) -> TinyDB:
    """A TinyDB whose writes are atomic (see :class:`AtomicJSONStorage`)."""
    return TinyDB(path, storage=AtomicJSONStorage)
