"""Restoring into another VRM: what differs between two sites, and the mapping remembered per site pair.

A restore point keeps its VM's configuration as the source site had it (datastore URNs per disk, port
group URNs per NIC, the cluster). On another site none of those URNs exist, so a restore there needs a
mapping: source datastore -> target datastore, source port group -> target port group (or "" = the NIC is
left out), and where the new VM goes (a target cluster or host URN). The mapping the operator confirmed
is remembered per (source site id, target site id) and offered next time (issue 19).

Site ids are the ``urn:sites:<id>`` part of URNs (:func:`fctui.vrm.urn.site_id`).

CONTRACT (issue 19, helper "restore"): the dataclass below is fixed; the store and :func:`apply_mapping`
are yours to build (persistence under fctui.store.paths' data dir, atomic like the other stores, a
clear error on a damaged file, nothing lost).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from ..repo import RestorePoint
    from ..vrm.models import Datastore, PortGroup

    # fctui.jobs.restore.RestoreRequest (restore imports this module: no import back, even for types)
    RestoreRequest = Any


@dataclass
class SiteMapping:
    source_site: str                 # site id of the restore points (from their VM URNs)
    target_site: str                 # site id of the VRM restored into
    location: str = ""               # target cluster or host URN for new VMs ("" : the planner picks)
    datastores: dict[str, str] = field(default_factory=dict)    # source datastore URN -> target datastore URN
    port_groups: dict[str, str] = field(default_factory=dict)   # source port group URN -> target URN, "" = no NIC
    updated: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return f"{self.source_site}->{self.target_site}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SiteMapping":
        return cls(source_site=str(d["source_site"]), target_site=str(d["target_site"]),
                   location=str(d.get("location") or ""),
                   datastores={str(k): str(v) for k, v in (d.get("datastores") or {}).items()},
                   port_groups={str(k): str(v) for k, v in (d.get("port_groups") or {}).items()},
                   updated=float(d.get("updated") or 0.0))


__all__ = ["SiteMapping", "SiteMapError", "SiteMappingStore", "UnmappedItem", "apply_mapping", "remember",
           "mapping_from_request", "point_datastores", "point_port_groups", "suggest_mapping", "unmapped_items", "strip_dr"]

VERSION = 1
FILE_NAME = "site-mappings.json"


class SiteMapError(Exception):
    """The mapping store cannot be read or written (damaged file, no directory); one line."""


class SiteMappingStore:
    """The remembered mappings, one per (source site, target site), in ``site-mappings.json`` under the
    data dir. Every change is a read-modify-write under a short file lock with an atomic replace, so two
    editors never lose each other's change. A damaged file is an error naming it, never overwritten."""

    def __init__(self, path: "Path | str | None" = None) -> None:
        from pathlib import Path
        if path is None:
            from ..store import data_dir
            path = data_dir() / FILE_NAME
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def _read(self) -> dict[str, SiteMapping]:
        import json
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise SiteMapError(f"cannot read {self.path}: {e.strerror or e}") from None
        damaged = (f"{self.path} is damaged ({{}}): fix or remove it; nothing was changed "
                   "(the remembered site mappings are in it)")
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise SiteMapError(damaged.format(f"not JSON: {e}")) from None
        if not isinstance(data, dict) or not isinstance(data.get("mappings"), dict):
            raise SiteMapError(damaged.format("no 'mappings' object"))
        if isinstance(data.get("version"), int) and data["version"] > VERSION:
            raise SiteMapError(f"{self.path} was written by a newer fctui (format {data['version']}): "
                               "upgrade to change it")
        out: dict[str, SiteMapping] = {}
        for key, d in data["mappings"].items():
            try:
                m = SiteMapping.from_dict(d)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise SiteMapError(damaged.format(f"mapping {key!r}: {e!r}")) from None
            out[m.key] = m
        return out

    def _write(self, mappings: dict[str, SiteMapping]) -> None:
        import json
        from ..store import StoreError, atomic_write_bytes
        doc = {"version": VERSION, "mappings": {k: mappings[k].to_dict() for k in sorted(mappings)}}
        try:
            atomic_write_bytes(self.path, json.dumps(doc, indent=1, sort_keys=True).encode())
        except StoreError as e:
            raise SiteMapError(str(e)) from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Held around a read-modify-write, so two editors (console, CLI) never lose a change."""
        from ..store import StoreError, WriterLock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock = WriterLock(self.lock_path, timeout=10.0, purpose="site mapping editor").acquire()
        except OSError as e:
            raise SiteMapError(f"cannot create {self.path.parent}: {e.strerror or e}") from None
        except StoreError as e:
            raise SiteMapError(str(e)) from None
        try:
            yield
        finally:
            lock.release()

    def all(self) -> list[SiteMapping]:
        return [m for _, m in sorted(self._read().items())]

    def get(self, source_site: str, target_site: str) -> SiteMapping | None:
        return self._read().get(f"{source_site}->{target_site}")

    def save(self, mapping: SiteMapping, *, now: float | None = None) -> SiteMapping:
        """Store ``mapping`` as the one of its site pair (replacing the previous one)."""
        with self._locked():
            current = self._read()   # raises on a damaged file: never overwritten
            mapping.updated = time.time() if now is None else now
            current[mapping.key] = mapping
            self._write(current)
        return mapping

    def remove(self, source_site: str, target_site: str) -> bool:
        with self._locked():
            current = self._read()
            if current.pop(f"{source_site}->{target_site}", None) is None:
                return False
            self._write(current)
        return True


# --------------------------------------------------------------------------------------------------
# a point's items and a request (pure)
# --------------------------------------------------------------------------------------------------

def point_port_groups(point: "RestorePoint") -> dict[str, str]:
    """Source port group URN -> its name as the point recorded it ("" when not), in NIC order."""
    out: dict[str, str] = {}
    for n in point.vm_config.get("nics") or []:
        if isinstance(n, dict) and n.get("portGroupUrn"):
            urn = str(n["portGroupUrn"])
            if not out.get(urn):
                out[urn] = str(n.get("portGroupName") or "")
    return out


def point_datastores(point: "RestorePoint") -> dict[str, str]:
    """Source datastore URN -> its name as the point's VM configuration recorded it ("" when not), for
    the point's disks in disk order."""
    names = {str(x.get("datastoreUrn") or ""): str(x.get("datastoreName") or "")
             for x in point.vm_config.get("disks") or [] if isinstance(x, dict)}
    out: dict[str, str] = {}
    for d in point.disks:
        if d.datastore_urn and not out.get(d.datastore_urn):
            out[d.datastore_urn] = names.get(d.datastore_urn, "")
    return out


def apply_mapping(point: "RestorePoint", mapping: SiteMapping | None, request: "RestoreRequest") -> "RestoreRequest":
    """A copy of ``request`` with what it does not say taken from ``mapping``: the target datastore of each
    disk (by the disk's source datastore), the port group of each NIC's port group, the location. What
    the request names already wins (the operator's choice for this restore)."""
    import dataclasses
    datastores = dict(request.datastores)
    port_groups = dict(request.port_groups)
    location = request.location
    if mapping is not None:
        for d in point.disks:
            if d.volume_urn not in datastores and mapping.datastores.get(d.datastore_urn):
                datastores[d.volume_urn] = mapping.datastores[d.datastore_urn]
        for pg in point_port_groups(point):
            if pg not in port_groups and pg in mapping.port_groups:
                port_groups[pg] = mapping.port_groups[pg]
        location = location or mapping.location
    return dataclasses.replace(request, datastores=datastores, port_groups=port_groups, location=location)


def mapping_from_request(point: "RestorePoint", request: "RestoreRequest", target_site: str,
                         base: SiteMapping | None = None) -> SiteMapping:
    """The site pair's mapping after this restore: ``base`` (the remembered one) updated with what the
    request maps (per disk -> per source datastore; the first disk of a datastore wins)."""
    from ..vrm.urn import site_id
    m = SiteMapping(source_site=site_id(point.vm_urn), target_site=target_site)
    if base is not None:
        m.location = base.location
        m.datastores = dict(base.datastores)
        m.port_groups = dict(base.port_groups)
    seen: set[str] = set()
    for d in point.disks:
        target = request.datastores.get(d.volume_urn)
        if target and d.datastore_urn and d.datastore_urn not in seen:
            m.datastores[d.datastore_urn] = target
            seen.add(d.datastore_urn)
    for src, dst in request.port_groups.items():
        m.port_groups[src] = dst
    if request.location:
        m.location = request.location
    return m


def remember(point: "RestorePoint", request: "RestoreRequest", target_site: str,
             store: SiteMappingStore | None = None) -> SiteMapping:
    """Store what ``request`` maps as the site pair's mapping (merged into the remembered one); call it
    once the restore was planned without blockers and is submitted."""
    from ..vrm.urn import site_id
    store = store or SiteMappingStore()
    with store._locked():
        current = store._read()
        key = f"{site_id(point.vm_urn)}->{target_site}"
        m = mapping_from_request(point, request, target_site, current.get(key))
        m.updated = time.time()
        current[m.key] = m
        store._write(current)
    return m


@dataclass
class UnmappedItem:
    """One thing of the point with no target on the other site (the ``restore-unmapped`` pre-check)."""
    kind: str          # "datastore" (a disk's) | "port-group" (a NIC's) | "location"
    source: str        # source datastore / port group URN, or the location asked for
    source_name: str   # its name as the point recorded it ("" when unknown)
    item: str          # the disk's volume URN, the NIC's name, or ""
    item_name: str     # disk name, NIC name

    def describe(self) -> str:
        src = f"{self.source_name} ({self.source})" if self.source_name else self.source
        if self.kind == "datastore":
            return f"disk {self.item_name or self.item}: datastore {src}"
        if self.kind == "port-group":
            return f"NIC {self.item_name or self.item}: port group {src}"
        return f"location {src}"


def unmapped_items(point: "RestorePoint", request: "RestoreRequest", target_datastores: "Iterable[str]",
                   target_port_groups: "Iterable[str]", target_locations: "Iterable[str] | None" = None,
                   disks: "Iterable[str] | None" = None) -> list[UnmappedItem]:
    """Every disk whose target datastore is not on the target site (mapped or its own), every NIC whose
    port group is not there (mapped, or its own; "" = left out is mapped), and a location that is not a
    target cluster/host. ``disks``: the volume URNs to restore (default: all of the point's)."""
    ds = set(target_datastores)
    pgs = set(target_port_groups)
    want = set(disks) if disks is not None else None
    ds_names = point_datastores(point)
    out: list[UnmappedItem] = []
    for d in point.disks:
        if want is not None and d.volume_urn not in want:
            continue
        target = request.datastores.get(d.volume_urn) or d.datastore_urn
        if target not in ds:
            out.append(UnmappedItem("datastore", target if d.volume_urn in request.datastores else d.datastore_urn,
                                    "" if d.volume_urn in request.datastores else ds_names.get(d.datastore_urn, ""),
                                    d.volume_urn, d.disk_name))
    if disks is None or request.target == "new":
        for n in point.vm_config.get("nics") or []:
            if not isinstance(n, dict) or not n.get("portGroupUrn"):
                continue
            src = str(n["portGroupUrn"])
            target = request.port_groups.get(src, src)
            if target == "" or target in pgs:
                continue
            mapped = src in request.port_groups
            out.append(UnmappedItem("port-group", target if mapped else src,
                                    "" if mapped else str(n.get("portGroupName") or ""),
                                    str(n.get("urn") or n.get("name") or ""), str(n.get("name") or "")))
    if request.location and target_locations is not None and request.location not in set(target_locations):
        out.append(UnmappedItem("location", request.location, "", "", ""))
    return out


# --------------------------------------------------------------------------------------------------
# suggestions (pure): what the console offers for what is not mapped yet
# --------------------------------------------------------------------------------------------------

def strip_dr(name: str) -> str:
    """A name without the recovery site's ``dr-`` part, lower case (``dr-prod-net`` -> ``prod-net``,
    ``ds-nas-dr-cluster-01`` -> ``ds-nas-cluster-01``): how a DR site usually names its copies."""
    import re
    return re.sub(r"(^|[-_.])dr[-_.]", r"\1", name.lower())


def suggest_mapping(point: "RestorePoint", target_site: str, target_datastores: "Iterable[Datastore]",
                    target_port_groups: "Iterable[PortGroup]", base: SiteMapping | None = None, *,
                    arch: str = "", host_arch: "Mapping[str, str] | None" = None,
                    source_port_groups: "Iterable[PortGroup] | None" = None,
                    source_datastores: "Iterable[Datastore] | None" = None) -> SiteMapping:
    """``base`` (the remembered mapping, or an empty one) completed with a default for each source
    datastore and port group of the point that it does not map (or maps to something absent):

    * datastore: the target one of the same name (or the same but for a ``dr-`` part) if it suits, else
      one of the disk's storage class (and reached by hosts of ``arch`` when given, ``host_arch``: host
      URN -> arch), one sharing a host with the datastores already picked first (the VM needs a host
      reaching all), then one of the same storage type, then the most free space;
    * port group: the same name, else the same name without/with a ``dr-`` prefix; none found: not
      suggested (the operator picks one, or leaves the NIC out).

    ``source_port_groups`` / ``source_datastores``: the source site's, when connected to it (names for
    points that did not record them). Pure: nothing is read or stored. A datastore or port group with
    no fitting target stays unmapped."""
    from ..rules import catalog as C
    from ..vrm.urn import site_id
    stores = list(target_datastores)
    groups = list(target_port_groups)
    by_urn = {ds.urn for ds in stores}
    pg_urns = {pg.urn for pg in groups}
    m = SiteMapping(source_site=site_id(point.vm_urn), target_site=target_site)
    if base is not None:
        m.location = base.location
        m.datastores = {k: v for k, v in base.datastores.items() if v in by_urn}
        m.port_groups = {k: v for k, v in base.port_groups.items() if v == "" or v in pg_urns}
    host_arch = host_arch or {}
    fam = C.arch_family(arch)
    # names of the source's datastores: as the point recorded them, else the source site's listing
    listed = {ds.urn: ds.name for ds in source_datastores or []}
    ds_names = {u: n or listed.get(u, "") for u, n in point_datastores(point).items()}

    def fits(ds: "Datastore", storage_type: str) -> bool:
        if C.storage_class(ds.storage_type) != C.storage_class(storage_type) or \
                C.storage_class(storage_type) == C.UNKNOWN_CLASS:
            return False
        if ds.status and ds.status != "NORMAL":
            return False
        if fam:
            seen = {C.arch_family(host_arch.get(h, "")) for h in ds.hosts} - {""}
            if seen and fam not in seen:
                return False
        return True

    by = {ds.urn: ds for ds in stores}
    for d in point.disks:
        src = d.datastore_urn
        if not src or src in m.datastores:
            continue
        name = ds_names.get(src) or ""
        same = [ds for ds in stores if ds.name == name and fits(ds, d.storage_type)] or \
               [ds for ds in stores if name and strip_dr(ds.name) == strip_dr(name) and fits(ds, d.storage_type)]
        pool = same or [ds for ds in stores if fits(ds, d.storage_type)]
        if pool:
            reach = [set(by[u].hosts) for u in m.datastores.values() if u in by]
            common = set.intersection(*reach) if reach else set()
            best = max(pool, key=lambda ds: (bool(common & set(ds.hosts)) or not reach,
                                             ds.storage_type == d.storage_type, ds.usable_free_gb or 0, ds.name))
            m.datastores[src] = best.urn
    names = {pg.urn: pg.name for pg in source_port_groups or []}
    for src, name in point_port_groups(point).items():
        if src in m.port_groups:
            continue
        name = names.get(src) or name
        if not name:
            continue
        exact = [pg for pg in groups if pg.name == name]
        loose = [pg for pg in groups if strip_dr(pg.name) == strip_dr(name)]
        pick = (exact or loose or [None])[0]
        if pick is not None:
            m.port_groups[src] = pick.urn
    return m
