"""Local persistence: atomic tinydb files, the single-writer lock and XDG paths."""

from .atomic import AtomicJSONStorage, atomic_write_bytes, fsync_dir, open_db, pid_alive, remove_stale_temps
from .errors import CorruptDatabaseError, LockedError, StoreError
from .lock import WriterLock
from .paths import data_dir, repo_dir, runtime_dir, state_dir

__all__ = [
    "AtomicJSONStorage", "CorruptDatabaseError", "LockedError", "StoreError", "WriterLock",
    "atomic_write_bytes", "data_dir", "fsync_dir", "open_db", "pid_alive", "remove_stale_temps",
    "repo_dir", "runtime_dir", "state_dir",
]
