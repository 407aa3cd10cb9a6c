"""Where the console's data comes from: one VRM connection and its refresh stream.

Headless on purpose (no textual import): the app's refresh worker iterates :meth:`InventoryFeed.refresh`
and posts what it yields as messages; handlers on the UI side own all state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping

import httpx

from ..inventory.query import VmRow, row_from_vm
from ..vrm.errors import VrmError
from ..vrm.models import Cluster, Datastore, Host, OsCatalogue, Site, Vm


@dataclass(slots=True)
class ConnectSpec:
    """How to reach a VRM. The password lives only in memory (a callable may ask for it late)."""
    url: str
    user: str
    password: str | Callable[[], str] = field(repr=False)
    verify: bool | str = True
    api_version: str | None = None
    site: str | None = None
    label: str = ""
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False)  # tests: in-process ASGI
    page_concurrency: int = 8
    timeout: float = 15.0

    @property
    def title(self) -> str:
        return self.label or f"{self.user}@{self.url}"


@dataclass(slots=True)
class Connected:
    api_version: str
    site: Site
    warning: str = ""        # vrm-version-untested, shown at connect


@dataclass(slots=True)
class StaticInfo:
    site: Site
    clusters: list[Cluster]
    hosts: list[Host]
    datastores: list[Datastore]
    os_catalogue: OsCatalogue | None


@dataclass(slots=True)
class VmPage:
    vms: list[Vm]
    assessments: Mapping[str, Any]   # VM URN -> rules Assessment (may be empty while rules are unknown)
    provisional: bool                # snapshot data not known yet for these verdicts
    rows: list[VmRow] = field(default_factory=list)   # table rows, built on the feed thread
    early: bool = False              # a first look before the rules ran: never overrides assessed rows

    def __repr__(self) -> str:       # cheap: never format 100 VMs into a log line
        return f"VmPage({len(self.vms)} VMs, provisional={self.provisional})"


@dataclass(slots=True)
class Complete:
    keys: set[str]                   # every VM URN of this refresh (others have disappeared)
    assessments: Mapping[str, Any]
    facts: Mapping[str, Any]         # VM URN -> VmFacts (snapshot tree, tasks …) when the gatherer gives them
    seconds: float


FeedEvent = StaticInfo | VmPage | Complete


def _version_warning(api_version: str) -> str:
    """Apply the rules' ``vrm-version-untested`` check when the rules package provides it."""
    try:
        from ..rules import launch as launch_rules  # type: ignore[attr-defined]
    except Exception:  # rules not installed yet: no warning rather than a crash
        return ""
    fn = getattr(launch_rules, "vrm_version_untested", None)
    if fn is None:
        return ""
    try:
        finding = fn(api_version)
    except Exception:
        return ""
    if not finding:
        return ""
    return str(getattr(finding, "message", finding))


class InventoryFeed:
    """One VRM connection; :meth:`refresh` streams an inventory refresh page by page."""

    def __init__(self, spec: ConnectSpec, *, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.clock = clock
        self.client: Any = None
        self.site: Site | None = None
        self.api_version = ""
        self._final: set[str] = set()   # VMs that already have a full (non-provisional) verdict

    def _make_client(self) -> Any:
        from ..vrm.client import VrmClient
        return VrmClient(self.spec.url, self.spec.user, self.spec.password, api_version=self.spec.api_version,
                         verify=self.spec.verify, timeout=self.spec.timeout, transport=self.spec.transport,
                         page_concurrency=self.spec.page_concurrency)

    async def connect(self) -> Connected:
        """Log in and pick the site. Raises :class:`VrmError` (the caller shows it and retries)."""
        if self.client is None:
            self.client = self._make_client()
        await self.client.login()
        self.api_version = self.client.api_version
        sites = await self.client.sites()
        if not sites:
            raise VrmError("the VRM lists no site")
        site = sites[0]
        if self.spec.site:
            match = [s for s in sites if self.spec.site in (s.urn, s.uri, s.name, s.id)]
            if not match:
                raise VrmError(f"site {self.spec.site!r} not found; sites: {', '.join(s.name or s.urn for s in sites)}")
            site = match[0]
        self.site = site
        return Connected(self.api_version, site, _version_warning(self.api_version))

    async def aclose(self) -> None:
        if self.client is not None:
            try:
                await self.client.aclose()
            except Exception:
                pass
            self.client = None

    async def first_page(self) -> VmPage:
        """One page of VMs as the VRM lists them, unassessed: something to show while the full,
        assessed refresh is still on its way (one request, at start only)."""
        assert self.site is not None
        pages = self.client.iter_vm_pages(self.site.uri, detail=2, concurrency=1)
        try:
            vms = await pages.__anext__()
        except StopAsyncIteration:
            vms = []
        finally:
            await pages.aclose()
        page = VmPage(vms, {}, True, early=True)
        page.rows = [row_from_vm(vm, None, provisional=True) for vm in vms]
        return page

    async def hosts_of(self, cluster_urn: str) -> list[Host]:
        assert self.site is not None
        return await self.client.hosts(self.site.uri, scope=cluster_urn)

    async def snapshot_tree(self, vm_uri: str) -> Any:
        return await self.client.snapshot_tree(vm_uri)

    async def refresh(self) -> AsyncIterator[FeedEvent]:
        """One refresh, page by page, with table rows prepared here (on the feed thread)."""
        async for ev in self._refresh():
            if isinstance(ev, VmPage):
                self._add_rows(ev)
            yield ev

    def _add_rows(self, page: VmPage) -> None:
        if page.provisional:
            # On a re-refresh the provisional verdict (snapshot rules not run yet) would only flicker
            # over the last full one; keep those VMs for the final page.
            keep = [vm for vm in page.vms if vm.urn not in self._final]
            page.vms = keep
        else:
            self._final.update(vm.urn for vm in page.vms)
        get = page.assessments.get
        page.rows = [row_from_vm(vm, get(vm.urn), provisional=page.provisional) for vm in page.vms]

    async def _refresh(self) -> AsyncIterator[FeedEvent]:
        if self.client is None or self.site is None:
            await self.connect()
        assert self.site is not None
        started = time.perf_counter()
        try:
            from ..inventory.gather import gather_stream  # type: ignore[attr-defined]
        except ImportError:
            gather_stream = None
        if gather_stream is not None:
            async for ev in self._from_gather(gather_stream, started):
                yield ev
            return
        async for ev in self._plain_listing(started):
            yield ev

    async def _from_gather(self, gather_stream: Any, started: float) -> AsyncIterator[FeedEvent]:
        """Adapt the gatherer's updates: "static", then "vms" pages with provisional verdicts, then
        "final" with the whole assessed inventory."""
        assert self.site is not None
        async for upd in gather_stream(self.client, self.site.urn):
            kind = getattr(upd, "kind", "")
            if kind == "static":
                yield StaticInfo(upd.site or self.site, list(upd.clusters), list(upd.hosts),
                                 list(upd.datastores), upd.os_catalogue)
            elif kind == "vms":
                facts = list(upd.facts)
                yield VmPage([f.vm for f in facts], _assessment_map(upd.assessments, facts), True)
            elif kind == "final" and upd.inventory is not None:
                inv = upd.inventory
                facts = list(inv.facts)
                assessments = _assessment_map(inv.assessments, facts)
                for f in facts:
                    _drop_raw(f.vm)
                yield VmPage([f.vm for f in facts], assessments, False)
                yield Complete({f.vm.urn for f in facts}, assessments, {f.vm.urn: f for f in facts},
                               time.perf_counter() - started)
                return
        raise VrmError("the inventory stream ended without a final inventory")

    async def _plain_listing(self, started: float) -> AsyncIterator[FeedEvent]:
        """Without the rules package: the inventory as the VRM lists it, verdicts left empty."""
        assert self.site is not None
        c = self.client
        clusters = await c.clusters(self.site.uri)
        hosts = await c.hosts(self.site.uri)
        datastores = await c.datastores(self.site.uri)
        yield StaticInfo(self.site, clusters, hosts, datastores, None)
        keys: set[str] = set()
        async for page in c.iter_vm_pages(self.site.uri, detail=2, templates=None):
            keys.update(v.urn for v in page)
            yield VmPage(page, {}, False)
        yield Complete(keys, {}, {}, time.perf_counter() - started)


def _assessment_map(assessments: Any, facts: list[Any]) -> dict[str, Any]:
    """Assessments keyed by VM URN (the gatherer gives a list parallel to its facts)."""
    if isinstance(assessments, Mapping):
        return dict(assessments)
    out: dict[str, Any] = {}
    for f, a in zip(facts, assessments):
        out[getattr(a, "urn", None) or f.vm.urn] = a
    return out


def _drop_raw(vm: Vm) -> None:
    """The console keeps 10,000 VMs between refreshes; the parsed fields are all it shows, so the
    original JSON dicts (the bulk of the memory) are let go once the rules have run."""
    vm.raw = {}
    for d in vm.disks:
        d.raw = {}
