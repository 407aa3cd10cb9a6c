"""What screens may ask of the console.

Screens reach the console's state and calls through :class:`Console`, which
:class:`~fctui.tui.app.FctuiApp` implements, instead of importing app.py: the app imports the screens, so
an import back would close a circle. Textual's own calls (push_screen, notify, …) stay on ``self.app``.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from rich.console import RenderableType
from textual.dom import DOMNode

from ..inventory.query import RowStore
from ..vrm.models import Cluster, Datastore, Site, Vm
from .source import InventoryFeed


class Console(Protocol):
    """The console as the screens see it: inventory state owned by the app, and the calls that change it."""

    read_only: bool
    paused: bool
    sort_column: str
    sort_reverse: bool
    store: RowStore                    # rows and marks of the VM table
    vms: dict[str, Vm]
    datastores: dict[str, Datastore]
    site: Site | None
    clusters: list[Cluster]
    feed: InventoryFeed | None         # the first VRM's (the only one's); a VM's own: feed_of(urn)
    sites: list[Any]                   # app.SiteState per VRM: label, state, site, clusters, feed
    multi_site: bool

    # the inventory view
    def set_filter(self, text: str, *, from_input: bool = False, update_input: bool = False) -> None: ...
    def set_sort(self, column: str, reverse: bool) -> None: ...
    def update_status(self) -> None: ...
    def refresh_now(self) -> None: ...
    def vm_count_by_host(self, site: str | None = None) -> dict[str, int]: ...

    # the detail of one VM
    def show_detail(self, key: str | None, *, now: bool = False) -> None: ...
    def layout_detail(self) -> None: ...
    def detail_renderable(self, key: str | None) -> RenderableType: ...
    def load_snapshots(self, key: str) -> None: ...

    # the VRM connection
    async def feed_call(self, coro: Any, *, urn: str | None = None, site: int | None = None) -> Any: ...
    def feed_of(self, urn: str | None) -> InventoryFeed | None: ...
    def site_of(self, urn: str | None) -> Any: ...
    def spec_of(self, urn: str | None) -> Any: ...
    def start_vm(self, vm: Vm) -> None: ...
    def start_demo(self) -> None: ...
    def connect_from_form(self, url: str, user: str, password: str, *, insecure: bool, save: bool) -> None: ...


def console_of(node: DOMNode) -> Console:
    """The console a screen or widget runs in."""
    return cast(Console, node.app)
