"""Messages workers post to the app. Workers never touch widgets; handlers own the state."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from ..inventory.query import Summary, View
from .source import Connected, FeedEvent


class FeedConnected(Message):
    def __init__(self, info: Connected, site: int = 0) -> None:
        super().__init__()
        self.info = info
        self.site = site           # which VRM of the console (its index in FctuiApp.sites)


class FeedUpdate(Message):
    def __init__(self, event: FeedEvent, site: int = 0) -> None:
        super().__init__()
        self.event = event
        self.site = site

    def __repr__(self) -> str:
        return f"FeedUpdate({type(self.event).__name__})"


class FeedLost(Message):
    """A refresh failed; the last data stays on screen, marked stale."""

    def __init__(self, reason: str, retry_in: float | None, fatal: bool = False, site: int = 0) -> None:
        super().__init__()
        self.site = site
        self.reason = reason
        self.retry_in = retry_in   # None: not retrying automatically (login refused)
        self.fatal = fatal


class RefreshStarted(Message):
    def __init__(self, site: int = 0) -> None:
        super().__init__()
        self.site = site


class ViewReady(Message):
    def __init__(self, view: View, summary: Summary) -> None:
        super().__init__()
        self.view = view
        self.summary = summary


class ViewFailed(Message):
    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class SnapshotsLoaded(Message):
    def __init__(self, vm_urn: str, tree: Any, error: str = "") -> None:
        super().__init__()
        self.vm_urn = vm_urn
        self.tree = tree
        self.error = error
