"""Typed, tolerant models of VRM objects.

A real VRM varies by release: fields come and go, enums grow. Every ``from_dict`` therefore accepts
unknown fields (kept in ``raw``), keeps an unknown enum value as the string it is, coerces sloppy types
(``"true"``, ``"7"``) and records the names of expected fields that were absent in ``missing`` so the
rules can say what data they lacked instead of crashing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from .urn import last_segment

# Enum spellings exactly as the VRM sends them (vrm-api.md §6-§10). Kept as data: values outside these
# sets are preserved, never rejected.
VM_STATUSES = frozenset({
    "running", "stopped", "unknown", "hibernated", "creating", "shutting-down", "migrating",
    "fault-resuming", "starting", "stopping", "hibernating", "pause", "recycling",
})
PV_DRIVER_STATUSES = frozenset({"starting", "running", "notRunning"})
HOST_STATUSES = frozenset({
    "rebooting", "normal", "fault", "initial", "unknow", "poweroff", "booting", "shutdowning",
})
DATASTORE_STATUSES = frozenset({
    "NORMAL", "ABNORMAL", "CREATING", "DELETING", "READONLY", "EXPANDING", "RESTORING",
    "CONNECTING", "CONNECTED", "DISCONNECTING",
})
TASK_STATUSES = frozenset({"waiting", "running", "success", "failed", "cancelling"})
SNAPSHOT_TYPES = frozenset({"normal", "backup", "CBTbackup"})
BACKUP_SNAPSHOT_TYPES = frozenset({"backup", "CBTbackup"})
SNAPSHOT_STATUSES = frozenset({"creating", "resuming", "ready", "deleting", "failed"})
PCI_TYPES = frozenset({"IDE", "SCSI", "VIRTIO"})
BACKUP_RESOURCE_TASK_TYPES = frozenset({
    "BackupVol", "SANBackup", "RestoreVol", "SANRestore", "CBTBackup", "CBTRestore",
})


# --- tolerant field readers -------------------------------------------------------------------

def _s(d: dict, key: str, missing: list[str] | None = None, default: str = "") -> str:
    v = d.get(key)
    if type(v) is str:  # the common case first: 10,000-VM listings call this ~40 times per VM
        return v
    if v is None:
        if missing is not None:
            missing.append(key)
        return default
    return v if isinstance(v, str) else str(v)


def as_int(v: Any) -> int | None:
    """A whole number from a VRM field however it is sent: ``40``, ``"40"``, ``" 40 "``, ``"40.0"``,
    ``40.0``; None when it is no number. Strings are read exactly (no float in between), so a large
    size sent as a string keeps every digit. Some VRM fields are strings by declaration (the eSDK types
    ``ioWeight`` as String, vrm-api.md §16), so any number may come as one."""
    if type(v) is int:
        return v
    if v is None or v == "":
        return None
    if isinstance(v, (bool, int)):
        return int(v)
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            pass
    try:
        return int(float(v))
    except (TypeError, ValueError, OverflowError):  # "n/a", "inf", a list
        return None


def _i(d: dict, key: str, missing: list[str] | None = None, default: int | None = None) -> int | None:
    v = d.get(key)
    if type(v) is int:  # the common case first
        return v
    n = as_int(v)
    if n is None:
        if missing is not None:
            missing.append(key)
        return default
    return n


def _f(d: dict, key: str, default: float | None = None) -> float | None:
    v = d.get(key)
    if v is None or v == "":
        return default
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _b(d: dict, key: str, missing: list[str] | None = None, default: bool = False) -> bool:
    v = d.get(key)
    if type(v) is bool:  # the common case first
        return v
    if v is None:
        if missing is not None:
            missing.append(key)
        return default
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return default


def _d(d: dict, key: str) -> dict:
    v = d.get(key)
    return v if isinstance(v, dict) else {}


def _l(d: dict, key: str) -> list:
    v = d.get(key)
    return v if isinstance(v, list) else []


def _dicts(items: list) -> Iterator[dict]:
    return (x for x in items if isinstance(x, dict))


def _as_dict(obj: Any) -> dict:
    return obj if isinstance(obj, dict) else {}


# --- session ------------------------------------------------------------------------------------

@dataclass(slots=True)
class LoginInfo:
    validity_ms: int | None
    user_name: str
    user_id: str
    role_list: list[str]
    right_type: str
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "LoginInfo":
        d = _as_dict(d)
        return cls(
            validity_ms=_i(d, "validity"),
            user_name=_s(d, "userName"),
            user_id=_s(d, "userId"),
            role_list=[str(r) for r in _l(d, "roleList")],
            right_type=_s(d, "rightType"),
            raw=d,
        )


@dataclass(slots=True)
class VersionInfo:
    version: str
    login_uri: str

    @classmethod
    def from_dict(cls, d: Any) -> "VersionInfo":
        d = _as_dict(d)
        return cls(version=_s(d, "version"), login_uri=_s(d, "loginUri"))


# --- inventory ----------------------------------------------------------------------------------

@dataclass(slots=True)
class Site:
    urn: str
    uri: str
    name: str
    ip: str
    is_dc: bool
    is_self: bool
    status: str
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "Site":
        d = _as_dict(d)
        return cls(_s(d, "urn"), _s(d, "uri"), _s(d, "name"), _s(d, "ip"), _b(d, "isDC"),
                   _b(d, "isSelf"), _s(d, "status"), d)

    @property
    def id(self) -> str:
        return last_segment(self.urn)


@dataclass(slots=True)
class Cluster:
    urn: str
    uri: str
    name: str
    parent_urn: str
    description: str
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "Cluster":
        d = _as_dict(d)
        return cls(_s(d, "urn"), _s(d, "uri"), _s(d, "name"), _s(d, "parentObjUrn"),
                   _s(d, "description"), d)


@dataclass(slots=True)
class Host:
    urn: str
    uri: str
    name: str
    ip: str
    cluster_urn: str
    cluster_name: str
    status: str
    is_maintaining: bool
    cpu_quantity: int | None
    mem_quantity_mb: int | None
    arch: str
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "Host":
        d = _as_dict(d)
        return cls(
            urn=_s(d, "urn"), uri=_s(d, "uri"), name=_s(d, "name"), ip=_s(d, "ip"),
            cluster_urn=_s(d, "clusterUrn"), cluster_name=_s(d, "clusterName"),
            status=_s(d, "status"), is_maintaining=_b(d, "isMaintaining"),
            cpu_quantity=_i(d, "cpuQuantity"), mem_quantity_mb=_i(d, "memQuantityMB"),
            arch=_s(d, "arch"), raw=d,
        )


@dataclass(slots=True)
class PortGroup:
    """A port group of a distributed switch (vrm-api.md §6: ``GET <dvsUri>/portgroups``), where a NIC
    is plugged (``vmConfig.nics[].portGroupUrn``)."""
    urn: str
    uri: str
    name: str
    vlan_id: int | None
    dvswitch_urn: str
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, dvswitch_urn: str = "") -> "PortGroup":
        d = _as_dict(d)
        urn = _s(d, "urn")
        if not dvswitch_urn and ":portgroups:" in urn:
            dvswitch_urn = urn.split(":portgroups:", 1)[0]
        return cls(urn=urn, uri=_s(d, "uri"), name=_s(d, "name"), vlan_id=_i(d, "vlanId"),
                   dvswitch_urn=dvswitch_urn, raw=d)


@dataclass(slots=True)
class Datastore:
    urn: str
    uri: str
    name: str
    storage_type: str
    status: str
    capacity_gb: int | None
    free_gb: int | None
    used_gb: int | None
    actual_capacity_gb: int | None
    actual_free_gb: int | None
    is_thin: bool
    hosts: list[str]
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "Datastore":
        d = _as_dict(d)
        return cls(
            urn=_s(d, "urn"), uri=_s(d, "uri"), name=_s(d, "name"),
            storage_type=_s(d, "storageType"), status=_s(d, "status"),
            capacity_gb=_i(d, "capacityGB"), free_gb=_i(d, "freeSizeGB"), used_gb=_i(d, "usedSizeGB"),
            actual_capacity_gb=_i(d, "actualCapacityGB"), actual_free_gb=_i(d, "actualFreeSizeGB"),
            is_thin=_b(d, "isThin"), hosts=[str(h) for h in _l(d, "hosts")], raw=d,
        )

    @property
    def usable_free_gb(self) -> int | None:
        """Physical free space when the VRM reports it (thin datastores), else logical."""
        return self.actual_free_gb if self.actual_free_gb is not None else self.free_gb


@dataclass(slots=True)
class Disk:
    """One entry of ``vmConfig.disks[]``."""
    sequence_num: int | None
    pci_type: str
    volume_urn: str
    volume_url: str
    disk_name: str
    quantity_gb: int | None
    datastore_urn: str
    datastore_name: str
    storage_type: str
    is_thin: bool
    indep_disk: bool
    persistent_disk: bool
    type: str
    system_volume: bool
    volume_format: str
    missing: list[str] = field(default_factory=list)
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "Disk":
        # Each field: the well-typed value as is, else the tolerant reader (which also notes what is
        # missing). Inline, positional: a 10,000-VM listing parses ~25,000 disks.
        if type(d) is not dict:
            d = _as_dict(d)
        m: list[str] = []
        g = d.get
        return cls(
            v if type(v := g("sequenceNum")) is int else _i(d, "sequenceNum", m),
            v if type(v := g("pciType")) is str else _s(d, "pciType", m),
            v if type(v := g("volumeUrn")) is str else _s(d, "volumeUrn", m),
            v if type(v := g("volumeUrl")) is str else _s(d, "volumeUrl"),
            v if type(v := g("diskName")) is str else _s(d, "diskName"),
            v if type(v := g("quantityGB")) is int else _i(d, "quantityGB", m),
            v if type(v := g("datastoreUrn")) is str else _s(d, "datastoreUrn", m),
            v if type(v := g("datastoreName")) is str else _s(d, "datastoreName"),
            v if type(v := g("storageType")) is str else _s(d, "storageType", m),
            v if type(v := g("isThin")) is bool else _b(d, "isThin"),
            v if type(v := g("indepDisk")) is bool else _b(d, "indepDisk", m),
            v if type(v := g("persistentDisk")) is bool else _b(d, "persistentDisk", default=True),
            v if type(v := g("type")) is str else _s(d, "type", default="normal"),
            v if type(v := g("systemVolume")) is bool else _b(d, "systemVolume"),
            v if type(v := g("volumeFormat")) is str else _s(d, "volumeFormat"),
            m, d,
        )

    @property
    def is_shared(self) -> bool:
        return self.type == "share"

    @property
    def label(self) -> str:
        """How a person names the disk: its name, else bus and slot."""
        return self.disk_name or f"{self.pci_type or 'disk'}-{self.sequence_num}"


@dataclass(slots=True)
class Nic:
    name: str
    mac: str
    ip: str
    port_group_urn: str

    @classmethod
    def from_dict(cls, d: Any) -> "Nic":
        if type(d) is not dict:
            d = _as_dict(d)
        g = d.get
        return cls(v if type(v := g("name")) is str else _s(d, "name"),
                   v if type(v := g("mac")) is str else _s(d, "mac"),
                   v if type(v := g("ip")) is str else _s(d, "ip"),
                   v if type(v := g("portGroupUrn")) is str else _s(d, "portGroupUrn"))


@dataclass(slots=True)
class OsOptions:
    os_type: str
    os_version: int | None
    hostname: str
    guest_os_name: str

    @classmethod
    def from_dict(cls, d: Any) -> "OsOptions":
        d = _as_dict(d)
        return cls(_s(d, "osType"), _i(d, "osVersion"), _s(d, "hostname"), _s(d, "guestOSName"))


@dataclass(slots=True)
class Vm:
    """A VM or template, from a ``detail=2`` listing or a VM detail call."""
    urn: str
    uri: str
    uuid: str
    name: str
    description: str
    status: str
    pv_driver_status: str
    tool_install_status: str
    tools_version: str | None  # None: the field was absent (data incomplete), "" : never installed
    host_urn: str
    host_name: str
    cluster_urn: str
    cluster_name: str
    location: str
    is_template: bool
    is_link_clone: bool
    arch: str
    cpu_quantity: int | None
    memory_mb: int | None
    disks: list[Disk]
    nics: list[Nic]
    os: OsOptions
    create_time: str
    vm_type: int | None
    has_vm_config: bool
    missing: list[str] = field(default_factory=list)
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "Vm":
        # Inline and positional, as Disk.from_dict: this runs 10,000 times per refresh of a big site.
        if type(d) is not dict:
            d = _as_dict(d)
        m: list[str] = []
        g = d.get
        cfg = g("vmConfig")
        has_cfg = type(cfg) is dict or isinstance(cfg, dict)
        cfg = cfg if has_cfg else {}
        if not has_cfg:
            m.append("vmConfig")
        tools = g("toolsVersion")
        if tools is None:
            m.append("toolsVersion")
        disks = cfg.get("disks")
        nics = cfg.get("nics")
        return cls(
            v if type(v := g("urn")) is str else _s(d, "urn", m),
            v if type(v := g("uri")) is str else _s(d, "uri"),
            v if type(v := g("uuid")) is str else _s(d, "uuid"),
            v if type(v := g("name")) is str else _s(d, "name", m),
            v if type(v := g("description")) is str else _s(d, "description"),
            v if type(v := g("status")) is str else _s(d, "status", m),
            v if type(v := g("pvDriverStatus")) is str else _s(d, "pvDriverStatus", m),
            v if type(v := g("toolInstallStatus")) is str else _s(d, "toolInstallStatus"),
            None if tools is None else tools if type(tools) is str else str(tools),
            v if type(v := g("hostUrn")) is str else _s(d, "hostUrn"),
            v if type(v := g("hostName")) is str else _s(d, "hostName"),
            v if type(v := g("clusterUrn")) is str else _s(d, "clusterUrn"),
            v if type(v := g("clusterName")) is str else _s(d, "clusterName"),
            v if type(v := g("location")) is str else _s(d, "location"),
            v if type(v := g("isTemplate")) is bool else _b(d, "isTemplate", m),
            v if type(v := g("isLinkClone")) is bool else _b(d, "isLinkClone", m),
            v if type(v := g("arch")) is str else _s(d, "arch"),
            _i(_d(cfg, "cpu"), "quantity"), _i(_d(cfg, "memory"), "quantityMB"),
            [Disk.from_dict(x) for x in disks if isinstance(x, dict)] if type(disks) is list else
            [Disk.from_dict(x) for x in _dicts(_l(cfg, "disks"))],
            [Nic.from_dict(x) for x in nics if isinstance(x, dict)] if type(nics) is list else
            [Nic.from_dict(x) for x in _dicts(_l(cfg, "nics"))],
            OsOptions.from_dict(g("osOptions")),
            v if type(v := g("createTime")) is str else _s(d, "createTime"),
            v if type(v := g("vmType")) is int else _i(d, "vmType"),
            has_cfg, m, d,
        )

    @property
    def id(self) -> str:
        return last_segment(self.urn)

    @property
    def size_gb(self) -> int:
        return sum(x.quantity_gb or 0 for x in self.disks)

    @property
    def is_arm(self) -> bool:
        a = self.arch.lower()
        return a.startswith(("arm", "aarch"))


@dataclass(slots=True)
class OsVersion:
    id: int
    description: str
    family: str  # catalogue list it came from: "windows", "linux" or "other"
    raw: dict = field(repr=False, default_factory=dict)


@dataclass(slots=True)
class OsCatalogue:
    """``GET S/vms/osversions``: id -> description, the only way to tell EulerOS apart."""
    entries: dict[int, OsVersion]

    @classmethod
    def from_dict(cls, d: Any) -> "OsCatalogue":
        d = _as_dict(d)
        entries: dict[int, OsVersion] = {}
        for family in ("windows", "linux", "other"):
            for e in _dicts(_l(d, family)):
                i = _i(e, "id")
                if i is not None:
                    entries[i] = OsVersion(i, _s(e, "versionDes"), family, e)
        return cls(entries)

    def describe(self, os_version: int | None) -> str | None:
        e = self.entries.get(os_version) if os_version is not None else None
        return e.description if e else None


@dataclass(slots=True)
class Volume:
    urn: str
    uri: str
    uuid: str
    name: str
    quantity_gb: int | None
    status: str
    storage_type: str
    is_thin: bool
    type: str
    datastore_urn: str
    datastore_name: str
    indep_disk: bool
    persistent_disk: bool
    pci_type: str
    vm_urn: str
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "Volume":
        d = _as_dict(d)
        return cls(
            urn=_s(d, "urn"), uri=_s(d, "uri"), uuid=_s(d, "uuid"), name=_s(d, "name"),
            quantity_gb=_i(d, "quantityGB"), status=_s(d, "status"), storage_type=_s(d, "storageType"),
            is_thin=_b(d, "isThin"), type=_s(d, "type", default="normal"),
            datastore_urn=_s(d, "datastoreUrn"), datastore_name=_s(d, "datastoreName"),
            indep_disk=_b(d, "indepDisk"), persistent_disk=_b(d, "persistentDisk", default=True),
            pci_type=_s(d, "pciType"), vm_urn=_s(d, "vmUrn"), raw=d,
        )

    @property
    def used_bytes(self) -> int | None:
        """Bytes the guest has written (``userUsedSize``, MB), when the VRM says (vrm-api.md §7.2)."""
        v = self.raw.get("userUsedSize")
        n = None if isinstance(v, bool) else as_int(v)
        if n is None or n < 0:
            return None
        return n << 20


# --- snapshots ----------------------------------------------------------------------------------

@dataclass(slots=True)
class SnapshotNode:
    urn: str
    uri: str
    name: str
    description: str
    create_time: str
    type: str
    status: str
    children: list["SnapshotNode"]

    @classmethod
    def from_dict(cls, d: Any) -> "SnapshotNode":
        d = _as_dict(d)
        return cls(
            _s(d, "urn"), _s(d, "uri"), _s(d, "name"), _s(d, "description"), _s(d, "createTime"),
            _s(d, "type"), _s(d, "status"),
            [SnapshotNode.from_dict(c) for c in _dicts(_l(d, "childSnapshots"))],
        )


@dataclass(slots=True)
class SnapshotTree:
    current_urn: str
    roots: list[SnapshotNode]

    @classmethod
    def from_dict(cls, d: Any) -> "SnapshotTree":
        d = _as_dict(d)
        return cls(_s(_d(d, "currentSnapshot"), "urn"),
                   [SnapshotNode.from_dict(x) for x in _dicts(_l(d, "rootSnapshots"))])

    def walk(self) -> Iterator[SnapshotNode]:
        stack = list(reversed(self.roots))
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(n.children))

    def backup_snapshots(self) -> list[SnapshotNode]:
        return [n for n in self.walk() if n.type in BACKUP_SNAPSHOT_TYPES]


@dataclass(slots=True)
class VolSnapshot:
    volume_urn: str
    volume_uri: str
    storage_type: str
    datastore_urn: str
    snap_uuid: str
    vol_cbt_create_time: str
    chg_id: str
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "VolSnapshot":
        d = _as_dict(d)
        chg = d.get("chgID", d.get("ChgID"))
        return cls(_s(d, "volumeUrn"), _s(d, "volumeUri"), _s(d, "storageType"), _s(d, "datastoreUrn"),
                   _s(d, "snapUuid"), _s(d, "volCBTCreateTime"), "" if chg is None else str(chg), d)


@dataclass(slots=True)
class SnapshotDetail:
    urn: str
    uri: str
    name: str
    description: str
    type: str
    status: str
    create_time: str
    volume_size_sum_mb: int | None
    vol_snapshots: list[VolSnapshot]
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "SnapshotDetail":
        d = _as_dict(d)
        return cls(
            _s(d, "urn"), _s(d, "uri"), _s(d, "name"), _s(d, "description"), _s(d, "type"),
            _s(d, "status"), _s(d, "createTime"), _i(d, "volumeSizeSum"),
            [VolSnapshot.from_dict(x) for x in _dicts(_l(d, "volsnapshots"))], d,
        )


# --- tasks and backup resources -----------------------------------------------------------------

@dataclass(slots=True)
class TaskRef:
    """What an asynchronous call answers: the task, and for creations the new object."""
    task_urn: str
    task_uri: str
    urn: str
    uri: str

    @classmethod
    def from_dict(cls, d: Any) -> "TaskRef":
        d = _as_dict(d)
        return cls(_s(d, "taskUrn"), _s(d, "taskUri"), _s(d, "urn"), _s(d, "uri"))

    @property
    def task_id(self) -> str:
        return last_segment(self.task_uri or self.task_urn)


@dataclass(slots=True)
class Task:
    urn: str
    uri: str
    type: str
    entity_urn: str
    entity_name: str
    status: str
    progress: int
    reason: str
    reason_des: str
    start_time: str
    finish_time: str
    user: str
    cancelable: bool
    cancelled: bool
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "Task":
        d = _as_dict(d)
        return cls(
            urn=_s(d, "urn"), uri=_s(d, "uri"), type=_s(d, "type"), entity_urn=_s(d, "entityUrn"),
            entity_name=_s(d, "entityName"), status=_s(d, "status"), progress=_i(d, "progress") or 0,
            reason=_s(d, "reason"), reason_des=_s(d, "reasonDes"), start_time=_s(d, "startTime"),
            finish_time=_s(d, "finishTime"), user=_s(d, "user"), cancelable=_b(d, "cancelable"),
            cancelled=_b(d, "cancelled"), raw=d,
        )

    @property
    def id(self) -> str:
        return last_segment(self.uri or self.urn)

    @property
    def is_active(self) -> bool:
        return self.status in ("waiting", "running", "cancelling")

    @property
    def is_done(self) -> bool:
        return self.status in ("success", "failed")

    def times_ms(self) -> tuple[float | None, float | None]:
        """Start and finish as epoch milliseconds when the VRM sends them that way."""
        return _f(self.raw, "startTime"), _f(self.raw, "finishTime")


@dataclass(slots=True)
class BackupResource:
    urn: str
    uri: str
    resource_url: str
    host_ip: str
    host_port: int | None
    target_file: str
    token: str
    status: str
    reason: str
    reason_des: str
    ca_cert: str
    task_urn: str
    task_uri: str
    raw: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "BackupResource":
        d = _as_dict(d)
        return cls(
            urn=_s(d, "urn"), uri=_s(d, "uri"), resource_url=_s(d, "resourceUrl"),
            host_ip=_s(d, "hostIP"), host_port=_i(d, "hostPort"), target_file=_s(d, "targetFile"),
            token=_s(d, "token"), status=_s(d, "status"), reason=_s(d, "reason"),
            reason_des=_s(d, "reasonDes"), ca_cert=_s(d, "caCert"), task_urn=_s(d, "taskUrn"),
            task_uri=_s(d, "taskUri"), raw=d,
        )


# How the hex string of a getcbt ``bitMap`` maps to blocks (the profile setting ``cbt_bitmap``).
# vrm-api.md §16: eSDK says the string has roundup(bitNum/4) hex characters, that "in each byte the low
# bits are the lower-numbered blocks" and that the bitmap "needs conversion"; whether the hex digits are
# read one at a time or two to a byte is not stated.
#   "nibble" (default, [I]): hex character c holds blocks 4c..4c+3, its value's bit i = block 4c+i.
#            Fits the stated length exactly.
#   "byte":  characters 2k and 2k+1 are byte k written as usual hex (high digit first); bit i of
#            byte k = block 8k+i. Only whole bytes: an odd number of characters is refused.
# The two differ by swapping the digits of each pair (blocks 8k+i <-> 8k+4+i).
CBT_BITMAP_ORDERS = ("nibble", "byte")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class CbtBitmapError(ValueError):
    """A ``bitMap`` that cannot be read: not hex, or not whole bytes where bytes are expected. The
    client turns it into a :class:`~fctui.vrm.errors.VrmProtocolError` naming the request (models
    import nothing of the client's errors)."""


@dataclass(slots=True)
class CbtBitmap:
    """``POST <volUri>/getcbt``: which blocks changed between two CBT versions."""
    sector_of_block: int
    bit_num: int
    bit1_num: int
    bitmap: str
    start_block: int = 0
    order: str = "nibble"   # one of CBT_BITMAP_ORDERS
    _blocks: list[int] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Any, start_block: int = 0, order: str = "nibble") -> "CbtBitmap":
        d = _as_dict(d)
        return cls(_i(d, "sectorOfBlock") or 0, _i(d, "bitNum") or 0, _i(d, "bit1Num") or 0,
                   _s(d, "bitMap"), start_block, order)

    @property
    def block_size(self) -> int:
        return self.sector_of_block * 512

    def blocks(self) -> list[int]:
        """Absolute block numbers whose bit is set (ascending), read by ``order``; bits past
        ``bit_num`` are ignored. Raises :class:`CbtBitmapError` for a bitmap that is not hex."""
        if self._blocks is None:
            self._blocks = _decode_bitmap(self.bitmap, self.order, self.start_block, self.bit_num)
        return self._blocks

    def changed_blocks(self) -> Iterator[int]:
        return iter(self.blocks())


def _decode_bitmap(bitmap: str, order: str, base: int, bit_num: int) -> list[int]:
    if order not in CBT_BITMAP_ORDERS:
        raise CbtBitmapError(f"unknown CBT bitmap order {order!r} (nibble or byte)")
    if not _HEX_DIGITS.issuperset(bitmap):   # bytes.fromhex alone would let spaces through
        bad = next(ch for ch in bitmap if ch not in _HEX_DIGITS)
        raise CbtBitmapError(f"the CBT bitmap is not a hex string (found {bad!r})")
    if order == "byte":
        if len(bitmap) % 2:
            raise CbtBitmapError(f"the CBT bitmap has {len(bitmap)} hex digits: not whole bytes, as "
                                 "cbt_bitmap = \"byte\" expects (is this VRM's bitmap per nibble?)")
        data = bytes.fromhex(bitmap)
    else:   # per nibble: the first digit of each pair holds the lower blocks, so swap the digits
        data = bytes.fromhex(bitmap + "0" * (len(bitmap) % 2)).translate(_SWAP_NIBBLES)
    out: list[int] = []
    for k, byte in enumerate(data):
        if byte:
            first = k * 8
            out.extend(base + first + i for i in range(8) if byte >> i & 1 and first + i < bit_num)
    return out


_SWAP_NIBBLES = bytes(((b & 0x0F) << 4) | (b >> 4) for b in range(256))
