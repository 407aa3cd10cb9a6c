"""The site's volume listing, reduced to what the readiness rules need: which volumes have snapshots
(``volumeUseType`` 4). Also the helper process that reads it in parallel with the VM listing.

This module imports the VRM client only (no rules engine): it is the entry of the helper process,
whose start-up is on the check's critical path.

Sharing the pages (helper and parent each read some):
  parent -> helper  the client arguments, then ``("list", site_uri, concurrency)``, then any number
                    of ``("steal",)`` once the parent has nothing else to do;
  helper -> parent  ``("pages", [offsets])`` per steal: the back half of the pages it has not started
                    (empty when none are left), then ``("ok", [(volume_urn, vm_urn)...], use_type_seen,
                    count, largest_total, end)`` for the pages it read itself, or ``("error", kind,
                    text, status)``. Meanwhile ``("snaps", [(volume_urn, vm_urn)...])`` as soon as a
                    page shows volumes with snapshots, so that their VMs' trees can be read early.
The helper reads from the front, the parent from the back; a page is handed over before anyone
started it, so each page is read exactly once. ``end`` is where the pages known from the first
page's ``total`` stop (None: the helper read the whole listing alone); should the listing have grown
meanwhile the parent reads on from there.
"""

from __future__ import annotations

import asyncio
import gc
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable

Found = Callable[[list[tuple[str, str]]], None]

from ..vrm.client import PAGE_LIMIT, VrmClient
from ..vrm.errors import VrmApiError, VrmAuthError, VrmConnectionError, VrmError, VrmProtocolError, VrmTimeoutError

VOLUME_WITH_SNAPSHOTS = 4  # vrm-api §7.2 volumeUseType

HELPER_ERRORS: dict[str, type[VrmError]] = {
    "api": VrmApiError, "protocol": VrmProtocolError, "connection": VrmConnectionError,
    "timeout": VrmTimeoutError, "auth": VrmAuthError,
}


@dataclass(slots=True)
class VolumeUse:
    """What the gatherer needs of the volume listing: the volumes with snapshots (URN, owner VM URN
    when the VRM names it), whether the VRM reports ``volumeUseType`` at all, how many volumes."""
    with_snapshots: list[tuple[str, str]]
    use_type_seen: bool
    count: int

    def merge(self, other: "VolumeUse") -> None:
        self.with_snapshots.extend(other.with_snapshots)
        self.use_type_seen = self.use_type_seen or other.use_type_seen
        self.count += other.count


def use_of(page: list, acc: VolumeUse, found: Found | None = None) -> None:
    """Count the page's volumes into ``acc``; ``found`` hears of its volumes with snapshots."""
    n0 = len(acc.with_snapshots)
    for x in page:
        if not isinstance(x, dict):
            continue
        acc.count += 1
        ut = x.get("volumeUseType")
        if ut is None:
            continue
        acc.use_type_seen = True
        try:
            if int(ut) == VOLUME_WITH_SNAPSHOTS:
                acc.with_snapshots.append((str(x.get("urn") or ""), str(x.get("vmUrn") or "")))
        except (TypeError, ValueError):
            continue
    if found is not None and len(acc.with_snapshots) > n0:
        found(acc.with_snapshots[n0:])


def volumes_path(client: VrmClient, site_uri: str) -> str:
    return client._path(site_uri + "/volumes")


async def volume_use(client: VrmClient, site_uri: str, conc: int) -> VolumeUse:
    """The whole listing, read in this process."""
    acc = VolumeUse([], False, 0)
    async for page in client.iter_pages(site_uri + "/volumes", "volumes", {}, concurrency=conc):
        use_of(page, acc)
    return acc


async def read_pages(client: VrmClient, path: str, todo: deque[int], conc: int, acc: VolumeUse,
                     found: Found | None = None) -> int | None:
    """Read the pages at the offsets in ``todo``, ``conc`` at a time, taking them from the front
    (someone else may take from the back meanwhile); the largest ``total`` the pages gave."""
    largest: int | None = None

    async def worker() -> None:
        nonlocal largest
        while todo:
            items, total = await client._page(path, "volumes", {}, todo.popleft())
            use_of(items, acc, found)
            if total is not None and (largest is None or total > largest):
                largest = total

    tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, min(conc, len(todo))))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return largest


async def read_tail(client: VrmClient, path: str, end: int, total: int, acc: VolumeUse) -> None:
    """The listing grew while it was read: go on from ``end`` one page at a time while the newest
    total says there is more (as :meth:`VrmClient.iter_pages` does)."""
    offset = end
    latest: int | None = total
    while latest is None or offset < latest:
        items, latest = await client._page(path, "volumes", {}, offset)
        use_of(items, acc)
        if len(items) < PAGE_LIMIT:
            return
        offset += PAGE_LIMIT


class Inbox:
    """Messages from the other process, read by the event loop as they arrive (no thread);
    ``get()`` gives None once the other end is gone."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._fd = conn.fileno()
        self._loop.add_reader(self._fd, self._readable)
        self._open = True

    def _readable(self) -> None:
        try:
            msg = self.conn.recv()
        except (EOFError, OSError):
            self.close()
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(msg)

    async def get(self) -> Any:
        return await self.queue.get()

    def close(self) -> None:
        if self._open:
            self._open = False
            self._loop.remove_reader(self._fd)


async def _serve(client: VrmClient, conn: Connection, inbox: Inbox, site_uri: str, conc: int) -> None:
    path = volumes_path(client, site_uri)
    acc = VolumeUse([], False, 0)
    todo: deque[int] = deque()
    steals = 0            # steal requests not answered yet
    listing = False       # todo holds the pages not started yet

    def found(snaps: list[tuple[str, str]]) -> None:
        conn.send(("snaps", snaps))

    def answer() -> None:
        nonlocal steals
        while steals:
            give = [todo.pop() for _ in range((len(todo) + 1) // 2)] if listing else []
            give.reverse()
            conn.send(("pages", give))
            steals -= 1

    async def requests() -> None:
        nonlocal steals
        while True:
            msg = await inbox.get()
            if msg is None:
                raise EOFError("the parent went away")
            if msg[0] == "steal":
                steals += 1
                if listing:
                    answer()

    watch = asyncio.ensure_future(requests())
    try:
        items, total = await client._page(path, "volumes", {}, 0)
        use_of(items, acc, found)
        end: int | None = None
        largest = total
        if not items or len(items) < PAGE_LIMIT or (total is not None and PAGE_LIMIT >= total):
            pass
        elif total is None:  # no total: one page after the other, alone
            offset = PAGE_LIMIT
            while True:
                items, total = await client._page(path, "volumes", {}, offset)
                use_of(items, acc, found)
                offset += PAGE_LIMIT
                if not items or len(items) < PAGE_LIMIT or (total is not None and offset >= total):
                    break
        else:
            todo.extend(range(PAGE_LIMIT, total, PAGE_LIMIT))
            end = todo[-1] + PAGE_LIMIT
            listing = True
            answer()   # a steal that came before the first page
            reading = asyncio.ensure_future(read_pages(client, path, todo, conc, acc, found))
            done, _ = await asyncio.wait((reading, watch), return_when=asyncio.FIRST_COMPLETED)
            if watch in done:   # the parent went away (EOFError) while we read
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
                watch.result()
            got = reading.result()
            if got is not None and (largest is None or got > largest):
                largest = got
            listing = False
        conn.send(("ok", acc.with_snapshots, acc.use_type_seen, acc.count, largest, end))
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        inbox.close()


def helper_main(fd: int) -> None:
    """Entry of the helper process: client arguments, log in, then ``("list", site_uri, conc)``, then
    read the volume pages (sharing them with the parent on request) and answer (see module doc)."""
    gc.disable()   # a short-lived process: nothing worth collecting before it exits
    conn = Connection(fd)
    try:
        args = conn.recv()
    except (EOFError, OSError):
        return

    async def run() -> None:
        base_url = args.pop("base_url")
        async with VrmClient(base_url, **args) as client:   # logs in while the parent starts
            inbox = Inbox(conn)
            msg = await inbox.get()
            if msg is None or msg[0] != "list":
                inbox.close()
                return    # the parent went away: log out and leave
            await _serve(client, conn, inbox, msg[1], msg[2])

    try:
        asyncio.run(run())
    except (EOFError, OSError):
        return   # the parent went away
    except VrmError as e:
        kind = next((k for k, c in HELPER_ERRORS.items() if isinstance(e, c) and k != "api"), None)
        if kind is None:
            kind = "api" if isinstance(e, VrmApiError) else "other"
        try:
            conn.send(("error", kind, str(e), getattr(e, "status", None)))
        except OSError:
            pass
    except Exception as e:  # a bug here must not take the check down: the parent reads them itself
        try:
            conn.send(("error", "other", f"{type(e).__name__}: {e}", None))
        except OSError:
            pass
