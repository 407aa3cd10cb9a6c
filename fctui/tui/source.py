"""Where the console's data comes from: one VRM connection and its refresh stream.

Headless on purpose (no textual import): the app's refresh worker iterates :meth:`InventoryFeed.refresh`
and posts what it yields as messages; handlers on the UI side own all state.
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field, fields
from typing import Any, AsyncIterator, Callable, Mapping

import httpx

from ..inventory.query import VmRow, row_from_vm
from ..rules.engine import confirms
from ..vrm.errors import VrmError
from ..vrm.models import Cluster, Datastore, Disk, Host, Nic, OsCatalogue, OsOptions, Site, Vm


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
    user_type: int = 2                 # X-Auth-UserType (profile user_type, --user-type)
    proxy_ip: str | None = None        # backup resources' requester ip (profile proxy_ip, --proxy-ip)
    cbt_bitmap: str = "nibble"         # getcbt bitmap layout (profile cbt_bitmap)
    host_snapshot_gate: bool = False   # per-host snapshot/resource order (profile host_snapshot_gate)

    @property
    def title(self) -> str:
        return self.label or f"{self.user}@{self.url}"

    @property
    def site_label(self) -> str:
        """The VRM's name in a multi-site console (tree, site column, ``site:`` filter): the profile name,
        else the address's host[:port]."""
        if self.label:
            return self.label
        from urllib.parse import urlsplit
        try:
            return urlsplit(self.url).netloc.rsplit("@", 1)[-1] or self.url
        except ValueError:
            return self.url

    def client_options(self) -> dict[str, Any]:
        """VRM client keyword arguments beyond address, user and TLS: for this console's clients, its
        refresh process and the jobs it submits to the agent (the same fields as the CLI's Connection)."""
        return {"user_type": self.user_type, "proxy_ip": self.proxy_ip, "cbt_bitmap": self.cbt_bitmap}

    def job_options(self) -> dict[str, Any]:
        """The fields of a backup submitted to the job agent that set how its runner works on this VRM."""
        return {"host_snapshot_gate": self.host_snapshot_gate}


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
    # VMs whose provisional verdict and row this refresh sent stand as final (rules.engine.confirmed,
    # VmRow.confirmed): neither is sent again. On a first refresh that is most of the site.
    confirmed: set[str] = field(default_factory=set)


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
        # What the consumer already has, per VM URN: (model, row, assessment), each as a fingerprint
        # or, during a refresh, as the object sent. A refresh sends only what differs, so a 10,000-VM
        # refresh where little changed moves kilobytes, not megabytes. Between refreshes fingerprints,
        # not the objects: keeping last refresh's 10,000 models, rows and verdicts alive while the next
        # refresh builds its own cost ~35 MB of the peak. They are computed once this refresh's
        # Complete is out (:meth:`_settle_sent`): ~0.15 s of a 10,000-VM refresh the user no longer waits for.
        self._sent: dict[str, tuple[Any, Any, Any]] = {}
        self._strings: dict[str, str] = {}   # one object per repeated value (host, datastore, ...)
        # This refresh's provisional models, by identity: the final page carries the same objects,
        # which need no comparing.
        self._this_refresh: dict[int, Vm] = {}
        self._provisional: dict[str, Any] = {}   # this refresh's provisional verdicts sent, by VM URN
        self._confirmed: set[str] = set()        # ... and those the final verdicts confirmed

    def _make_client(self) -> Any:
        from ..vrm.client import VrmClient
        return VrmClient(self.spec.url, self.spec.user, self.spec.password, api_version=self.spec.api_version,
                         verify=self.spec.verify, timeout=self.spec.timeout, transport=self.spec.transport,
                         page_concurrency=self.spec.page_concurrency, **self.spec.client_options())

    async def connect(self) -> Connected:
        """Log in and pick the site. Raises :class:`VrmError` (the caller shows it and retries)."""
        if self.client is None:
            self.client = self._make_client()
        if not self.client.logged_in:  # a reconnect keeps its session (a 401 logs in again by itself)
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
                await self.client.close()  # logs out: the VRM caps live sessions per user
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
        """One refresh, page by page, with table rows prepared here (on the feed thread). Only what
        the consumer does not have yet is sent: new or changed VMs, rows and verdicts."""
        # Provisional pages: the first goes out at once (first rows on screen), the next ones in
        # batches of PROVISIONAL_BATCH VMs, so the consumer re-sorts and re-filters a few times per
        # refresh, not once per 100 VMs.
        try:
            async for ev in self._events():
                yield ev
        finally:
            self._this_refresh.clear()
            self._provisional.clear()
            self._confirmed.clear()
            self._settle_sent()

    async def _events(self) -> AsyncIterator[FeedEvent]:
        pending: list[VmPage] = []
        pending_n = 0
        first = True
        async for ev in self._refresh():
            if isinstance(ev, VmPage) and ev.provisional:
                self._add_rows(ev)
                self._remember(ev.vms, ev.rows, ev.assessments)
                if not ev.vms:
                    continue
                if first:
                    first = False
                    yield ev
                    continue
                pending.append(ev)
                pending_n += len(ev.vms)
                if pending_n >= PROVISIONAL_BATCH:
                    yield _merge_pages(pending)
                    pending, pending_n = [], 0
                continue
            if pending:
                yield _merge_pages(pending)
                pending, pending_n = [], 0
            if isinstance(ev, VmPage):
                for chunk in self._final_pages(ev):
                    yield chunk
                continue
            if isinstance(ev, Complete):
                ev = self._complete(ev)
            yield ev
        if pending:
            yield _merge_pages(pending)

    def _add_rows(self, page: VmPage) -> None:
        """A provisional page's rows (the final page's are made in :meth:`_final_pages`)."""
        # On a re-refresh the provisional verdict (snapshot rules not run yet) would only flicker
        # over the last full one; keep those VMs for the final page.
        page.vms = [vm for vm in page.vms if vm.urn not in self._final]
        get = page.assessments.get
        page.rows = [row_from_vm(vm, get(vm.urn), provisional=True) for vm in page.vms]

    def _remember(self, vms: list[Vm], rows: list[VmRow], assessments: Mapping[str, Any]) -> None:
        # What was sent, and each VM's provisional verdict: the final page compares the final
        # verdict with it (a confirmed one is not sent again, see _final_pages).
        sent, seen, prov = self._sent, self._this_refresh, self._provisional
        get = assessments.get
        for vm, row in zip(vms, rows):
            seen[id(vm)] = vm
            sent[vm.urn] = (vm, row, None)
            a = get(vm.urn)
            if a is not None:
                prov[vm.urn] = a

    def _settle_sent(self) -> None:
        """What the consumer has, as fingerprints (see ``_sent``)."""
        sent = self._sent
        for urn, (v, r, a) in sent.items():
            if not (_is_fp(v) and _is_fp(r) and _is_fp(a)):
                sent[urn] = (_fp(v, vm_fingerprint), _fp(r, row_fingerprint), _fp(a, assessment_fingerprint))

    def _final_pages(self, page: VmPage) -> list[VmPage]:
        """The assessed VMs as pages of at most FINAL_CHUNK changed VMs/rows (the verdicts follow in
        :class:`Complete`): small messages keep the consumer responsive and the pipe buffers small."""
        self._final.update(vm.urn for vm in page.vms)
        sent = self._sent
        vms: list[Vm] = []
        rows: list[VmRow] = []
        seen, prov, confirmed = self._this_refresh, self._provisional, self._confirmed
        get = page.assessments.get
        for vm in page.vms:
            urn = vm.urn
            old = sent.get(urn)
            a = get(urn)
            new_vm = old is None or (seen.get(id(vm)) is not vm and not _same(old[0], vm, vm_fingerprint))
            if new_vm:
                vms.append(vm)
            else:
                p = prov.get(urn)
                old_row = old[1]
                if (p is not None and a is not None and type(old_row) is VmRow and old_row.provisional
                        and confirms(p, a)):
                    confirmed.add(urn)
                    sent[urn] = (vm, old_row.confirmed(), old[2])
                    continue
            row = row_from_vm(vm, a, provisional=False)
            if new_vm or not _same(old[1], row, row_fingerprint):
                rows.append(row)
            sent[urn] = (vm, row, old[2] if old is not None else None)
        seen.clear()
        out = []
        for i in range(0, max(len(rows), len(vms)), FINAL_CHUNK):
            out.append(VmPage(vms[i:i + FINAL_CHUNK] if i < len(vms) else [], {}, False,
                              rows[i:i + FINAL_CHUNK] if i < len(rows) else []))
        # rows and models are independent lists: a chunk may carry rows of VMs sent earlier
        if not out:
            out.append(VmPage([], {}, False, []))
        return out

    def _complete(self, ev: Complete) -> Complete:
        """The end of a refresh: only the verdicts that changed since they were last sent."""
        sent, confirmed = self._sent, self._confirmed
        changed: dict[str, Any] = {}
        for urn, a in ev.assessments.items():
            old = sent.get(urn)
            if urn in confirmed:
                sent[urn] = (old[0], old[1], a)
                continue
            if old is None or old[2] is None or not _same(old[2], a, assessment_fingerprint):
                changed[urn] = a
                if old is not None:
                    sent[urn] = (old[0], old[1], a)
        for urn in [u for u in sent if u not in ev.keys]:
            del sent[urn]
        return Complete(ev.keys, changed, ev.facts, ev.seconds, set(confirmed))

    def _share_strings(self, vms: list[Vm]) -> None:
        """Values that repeat across thousands of VMs (host, cluster, datastore, states) as one object
        each: less memory here and, since pickle sends a shared object once, in the console too."""
        pool = self._strings
        if len(pool) > 200_000:   # a bound, should a VRM send unique values where we expect few
            pool.clear()
        g = pool.setdefault
        for vm in vms:
            if not vm.raw:
                vm.raw = _NO_RAW
            if not vm.missing:
                vm.missing = _NOTHING_MISSING
            vm.status = g(vm.status, vm.status)
            vm.pv_driver_status = g(vm.pv_driver_status, vm.pv_driver_status)
            vm.tool_install_status = g(vm.tool_install_status, vm.tool_install_status)
            if vm.tools_version is not None:
                vm.tools_version = g(vm.tools_version, vm.tools_version)
            vm.host_urn = g(vm.host_urn, vm.host_urn)
            vm.host_name = g(vm.host_name, vm.host_name)
            vm.cluster_urn = g(vm.cluster_urn, vm.cluster_urn)
            vm.cluster_name = g(vm.cluster_name, vm.cluster_name)
            vm.location = g(vm.location, vm.location)
            vm.arch = g(vm.arch, vm.arch)
            os_ = vm.os
            os_.os_type = g(os_.os_type, os_.os_type)
            for d in vm.disks:
                if not d.raw:
                    d.raw = _NO_RAW
                if not d.missing:
                    d.missing = _NOTHING_MISSING
                d.pci_type = g(d.pci_type, d.pci_type)
                d.datastore_urn = g(d.datastore_urn, d.datastore_urn)
                d.datastore_name = g(d.datastore_name, d.datastore_name)
                d.storage_type = g(d.storage_type, d.storage_type)
                d.type = g(d.type, d.type)
                d.volume_format = g(d.volume_format, d.volume_format)
            for n in vm.nics:
                n.port_group_urn = g(n.port_group_urn, n.port_group_urn)

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
        # The first refresh reads the volume listing in a helper process (full inventory sooner);
        # later ones read it here, so a console open for days does not log in again every refresh.
        # The first also takes the site connect() just read; later ones read it again (renamed, gone).
        site = self.site if not self._final else self.site.urn
        async for upd in gather_stream(self.client, site, concurrency=self.spec.page_concurrency,
                                       keep_raw=False, helper=not self._final):
            kind = getattr(upd, "kind", "")
            if kind == "static":
                yield StaticInfo(upd.site or self.site, list(upd.clusters), list(upd.hosts),
                                 list(upd.datastores), upd.os_catalogue)
            elif kind == "vms":
                facts = list(upd.facts)
                vms = [f.vm for f in facts]
                self._share_strings(vms)
                yield VmPage(vms, _assessment_map(upd.assessments, facts), True)
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


FINAL_CHUNK = 5000
# 2,500, not more: one pickle of 5,000 VMs (its memo, its buffer) cost the refresh process ~15 MB of
# its peak and the console a 6 MB message to unpickle at once.
PROVISIONAL_BATCH = 2500

# What an emptied ``raw`` and an empty ``missing`` become on this path: one shared object each (never
# mutated: the rules and the console only read them). 10,000 VMs have ~30,000 models; an empty dict
# and an empty list each are ~140 bytes more per model, here and, as pickle sends a shared object
# once per message, in the console too.
_NO_RAW: dict = {}
_NOTHING_MISSING: list = []


def _merge_pages(pages: list[VmPage]) -> VmPage:
    if len(pages) == 1:
        return pages[0]
    vms: list[Vm] = []
    rows: list[VmRow] = []
    assessments: dict[str, Any] = {}
    for p in pages:
        vms.extend(p.vms)
        rows.extend(p.rows)
        assessments.update(p.assessments)
    return VmPage(vms, assessments, True, rows)


def _values_getter(cls: type, skip: tuple[str, ...] = ()) -> Callable[[Any], tuple]:
    return operator.attrgetter(*(f.name for f in fields(cls) if f.name not in skip))


# The parsed fields only: ``raw`` is emptied on this path (keep_raw=False) and never sent.
_vm_values = _values_getter(Vm, ("disks", "nics", "os", "missing", "raw"))
_disk_values = _values_getter(Disk, ("missing", "raw"))
_nic_values = _values_getter(Nic)
_os_values = _values_getter(OsOptions)
_row_values = _values_getter(VmRow)


def _is_fp(x: Any) -> bool:
    return x is None or type(x) is int


def _fp(x: Any, fingerprint: Callable[[Any], int | None]) -> int | None:
    """A remembered value as a fingerprint (it may still be the object sent)."""
    return x if _is_fp(x) else fingerprint(x)


def _same(old: Any, new: Any, fingerprint: Callable[[Any], int | None]) -> bool:
    """Whether ``new`` equals what was sent (an object or its fingerprint); unknown is not equal."""
    if old is None:
        return False
    a = _fp(old, fingerprint)
    return a is not None and a == fingerprint(new)


def vm_fingerprint(vm: Any) -> int | None:
    """A VM model's parsed fields as one int (equal models, equal ints); None when it cannot be
    computed (then the VM counts as changed)."""
    try:
        return hash((_vm_values(vm), tuple(vm.missing),
                     tuple((_disk_values(d), tuple(d.missing)) for d in vm.disks),
                     tuple(_nic_values(n) for n in vm.nics), _os_values(vm.os)))
    except (TypeError, AttributeError):
        return None


def row_fingerprint(row: Any) -> int | None:
    try:
        return hash(_row_values(row))
    except (TypeError, AttributeError):
        return None


def assessment_fingerprint(a: Any) -> int | None:
    """What makes two verdicts the same for the console: verdict, snapshot kinds, provisional and the
    findings (rule, severity, message, disks). None for no assessment or an unreadable one."""
    if a is None:
        return None
    try:
        return hash((a.verdict, a.kinds_mask, a.provisional,
                     tuple((f.rule, f.severity, f.message, tuple(f.disks)) for f in a.findings)))
    except (TypeError, AttributeError):
        return None


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
    vm.raw = _NO_RAW
    for d in vm.disks:
        d.raw = _NO_RAW
