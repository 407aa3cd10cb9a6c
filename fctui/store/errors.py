"""Typed errors of the persistence layer; ``str(err)`` is one human line."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every persistence error (unreadable database, bad directory, lock held)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class LockedError(StoreError):
    """Another process already holds the writer lock of this database or repository."""

    def __init__(self, message: str, *, path: str, holder_pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.holder_pid = holder_pid


class CorruptDatabaseError(StoreError):
    """A database file exists but is not valid JSON (never produced by our atomic writes)."""
