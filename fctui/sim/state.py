"""The whole simulated VRM as plain Python objects (no HTTP).

Time is lazy: nothing runs in the background. Every time-based transition (task progress and
completion, snapshot readiness, backup-resource expiry and release, background guest writes) is an
event in a heap; ``VrmState.advance()`` applies every due event in time order and is called by the
app before each request. This behaves identically under httpx.ASGITransport and uvicorn.

Durations: a task's wall duration is its nominal duration divided by ``time_scale``; the task's
reported ``startTime``/``finishTime`` use the *nominal* (unscaled) duration, so a snapshot's observed
pause is meaningful even in drills with ``time_scale > 1`` (finishTime may then lie slightly in the
future of the wall clock — a deliberate choice).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import secrets
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

from fctui.sim.content import BlockFactory, DiskContent, VolumeState, mix64

GiB = 1024**3
MiB = 1024**2


# --------------------------------------------------------------------------------------------
# Clock
# --------------------------------------------------------------------------------------------
class Clock(Protocol):
    def now(self) -> float: ...


class RealClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to (tests, snapshot screenshots)."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01 00:00:00 UTC
        self._t = float(start)

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._t += seconds


class OffsetClock:
    """The real clock plus an offset that only grows: tasks progress by themselves as on the real
    clock, and ``advance(seconds)`` jumps ahead (a simulated week of schedules in seconds). After a
    jump the event heap applies every transition that fell due, in time order, so tasks already
    running finish (or expire) as if the time had passed."""

    def __init__(self, start: float | None = None) -> None:
        # start: what now() says at once (e.g. a Monday midnight for a scheduling test); None: real time
        self._offset = 0.0 if start is None else float(start) - time.time()

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._offset += seconds


# --------------------------------------------------------------------------------------------
# Config and errors
# --------------------------------------------------------------------------------------------
DEFAULT_TASK_SECONDS: dict[str, float] = {
    "power": 2.0,  # start/stop/reboot/pause/resume/hibernate
    "resource": 1.0,  # prepare backup resource
    "release": 1.0,  # release backup resource (still visible meanwhile)
    "delete": 1.0,  # snapshot / volume / VM deletion
    "volume": 1.0,  # create volume, attach, detach
    "expand": 2.0,
    "revert": 2.0,
    "create_vm": 2.0,
    "migrate": 8.0,  # compute migration
    "storage_migration": 30.0,
    "modify": 1.0,
    "cancel": 0.5,  # cancelling -> failed
    # added to the pause for the snapshot task's duration; 0: the product measures the pause as the
    # snapshot task's start -> finish, so the task lasts exactly the drawn pause
    "snapshot_overhead": 0.0,
}

DEFAULT_VERSIONS: tuple[str, ...] = ("6.0", "6.3", "6.5", "8.0", "8.1")

# X-Auth-UserType values real clients send (vrm-api.md §2.1, §16): 0 (Commvault helper, SITEAPP, CMP,
# FCC) and 2 (NOVA, CINDER, the Go SDKs). Meaning [I]: 0 a local (ordinary) user, 2 an interface user.
USER_TYPES = (0, 2)


@dataclass(frozen=True)
class SimUser:
    """A VRM account besides the default one: logs in only with its own ``X-Auth-UserType``."""

    name: str
    password: str
    user_type: int = 2


# The default accounts besides SimConfig.user (type 2): a local user of type 0, so that both user
# types real clients send are exercised.
DEFAULT_USERS: tuple[SimUser, ...] = (SimUser("operator", "Operator@123", 0),)


@dataclass
class SimConfig:
    vms: int = 60
    seed: int = 1
    latency_ms: float = 0.0
    time_scale: float = 1.0
    user: str = "admin"
    password: str = "Admin@123"
    user_type: int = 2  # X-Auth-UserType of the default account (an interface user, as NOVA logs in)
    users: tuple[SimUser, ...] = DEFAULT_USERS  # more accounts, each with its own type
    versions_need_token: bool = False  # [I] GET /service/versions answers 401 without a token
    token_idle_s: float = 600.0
    sector_of_block: int = 4096  # 2 MiB CBT blocks; tests may use 128 (64 KiB)
    unsupported_versions: tuple[str, ...] = ()
    guest_write_rate: float = 0.0  # blocks/s per running VM (demos); never to a guest filesystem's disk
    # three more VMs whose disks hold real partitions and filesystems (guestdisks.py; on in demo_config)
    guest_filesystems: bool = False
    task_seconds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TASK_SECONDS))
    api_version: str = "8.1"
    versions: tuple[str, ...] = DEFAULT_VERSIONS
    require_snap_uuid: bool = True  # getcbt without snapUuid -> 10430041
    cbt_bitmap: str = "nibble"  # getcbt bitMap hex layout: "nibble" or "byte" (ops.encode_bitmap; [I])
    edge_disk_gb: int = 1  # size of edge-case VM disks (data tests read them)
    edge_fill: float = 0.1  # written fraction of edge-case disks
    fill_scale: float = 1.0  # multiplies the written fraction of regular and template disks (not edge cases)
    # more VMs ready to back up, (n1, n2, ...) on the first x86 hosts (cna-01, cna-02, ...), each with one
    # disk like the edge cases' (edge_disk_gb, edge_fill written), on datastores taken in turn from the
    # host's cluster and its local one: scale tests put many VMs on few hosts without a big inventory
    ready_vms_per_host: tuple[int, ...] = ()
    # vrm-api.md §16 NOTES: no prepared backup resource may exist when a CBT snapshot is created, scope
    # not stated. "vm" (§15 item 40): a resource on one of the VM's own volumes refuses it; "host": a
    # live resource on any volume served by the VM's host does [I].
    cbt_snapshot_resource_scope: str = "vm"
    # vrm-api.md §16: no public client shows a VRM setting volumeUseType 4 ("volume with snapshots")
    # for VM snapshots. False: volumes keep their own use type whatever snapshots include them.
    volume_use_type_snapshots: bool = True
    tls_ca_pem: str = ""  # filled by EmbeddedSimulator when serving HTTPS (backup resource caCert)
    # Several sites (`fctui sim --sites N`): 0 is the inventory of one simulator as it always was; 1, 2, ...
    # get their own site id, names (site-02, dr-cluster-01, ...), port groups and arch mix, from the same
    # seed. Generated block bytes depend on the seed alone, so sites of one seed recognise each other's
    # blocks after a restore (stored as keys, not bytes).
    site_index: int = 0
    # Guest boot: after a power-on pvDriverStatus is "starting", then "running" this many seconds of sim time
    # later (divided by time_scale like tasks) if the guest has Tools, else "notRunning".
    boot_seconds: float = 20.0
    # name globs (fnmatch) of VMs whose guest never gets Tools running (DR drills); POST /sim/boot-failures
    boot_failures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.vms < 0:
            raise ValueError("vms must be >= 0")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if self.cbt_bitmap not in ("nibble", "byte"):
            raise ValueError("cbt_bitmap must be nibble or byte")
        if not 0 <= self.fill_scale <= 1:
            raise ValueError("fill_scale must be between 0 and 1")
        if self.sector_of_block <= 0 or self.sector_of_block % 8:
            raise ValueError("sector_of_block must be a positive multiple of 8")
        # the default account wins over a same-named extra one (`fctui sim --user operator`)
        self.users = tuple(u for u in self.users if u.name != self.user)
        for t in (self.user_type, *(u.user_type for u in self.users)):
            if t not in USER_TYPES:
                raise ValueError(f"user types must be 0 or 2, got {t!r}")
        names = [u.name for u in self.users]
        if len(set(names)) != len(names):
            raise ValueError("user names must be unique")
        if any(n < 0 for n in self.ready_vms_per_host):
            raise ValueError("ready_vms_per_host must hold counts >= 0")
        if self.site_index < 0:
            raise ValueError("site_index must be >= 0")
        if self.boot_seconds < 0:
            raise ValueError("boot_seconds must be >= 0")
        self.boot_failures = tuple(str(g) for g in self.boot_failures)
        if self.cbt_snapshot_resource_scope not in ("vm", "host"):
            raise ValueError("cbt_snapshot_resource_scope must be vm or host")
        merged = dict(DEFAULT_TASK_SECONDS)
        merged.update(self.task_seconds)
        self.task_seconds = merged


# `fctui demo`: regular VMs' disks keep their realistic provisioned sizes (40-500 GB) but hold 1/1000 of
# the data (a few tens of MiB each; the edge-case VMs keep theirs: 1 GB disks, 10 % written). Backing up
# every ready VM of the 60-VM demo (26 VMs) then reads and stores 4.1 GiB (measured; the random content
# does not compress) instead of ~3.2 TiB.
DEMO_FILL_SCALE = 0.001


def demo_config(**kw: Any) -> SimConfig:
    """The simulator configuration of ``fctui demo`` (``kw`` as for :class:`SimConfig`): small data, and
    the three VMs whose disks hold real filesystems (their files can be browsed in a backup)."""
    kw.setdefault("fill_scale", DEMO_FILL_SCALE)
    kw.setdefault("guest_filesystems", True)
    return SimConfig(**kw)


# --------------------------------------------------------------------------------------------
# Guest OS catalogue (what GET .../vms/osversions lists; ops and the generator both use it)
# --------------------------------------------------------------------------------------------
OS_CATALOG: dict[str, list[tuple[int, str]]] = {
    "windows": [
        (24, "Windows Server 2008 R2 Standard 64bit"),
        (26, "Windows Server 2012 R2 Standard 64bit"),
        (32, "Windows Server 2016 Datacenter 64bit"),
        (35, "Windows Server 2019 Datacenter 64bit"),
        (201, "Other Windows(32 bit)"),
        (202, "Other Windows(64 bit)"),
    ],
    "linux": [
        (10088, "CentOS 7.6 64bit"),
        (10090, "Red Hat Enterprise Linux 7.9 64bit"),
        (10101, "Ubuntu 20.04 server 64bit"),
        (10110, "SUSE Linux Enterprise Server 12 SP5 64bit"),
        (10120, "EulerOS 2.0 SP8 64bit"),
        (10121, "EulerOS 2.0 SP9 64bit"),
        (10122, "EulerOS 2.0 SP10 64bit"),
        (10130, "openEuler 22.03 LTS 64bit"),
        (301, "Other Linux(32 bit)"),
        (302, "Other Linux(64 bit)"),
    ],
    "other": [(401, "Other(32 bit)"), (402, "Other(64 bit)")],
}
OS_TYPE = {"windows": "Windows", "linux": "Linux", "other": "Other"}


def os_kind(os_version: int) -> str:
    for kind, entries in OS_CATALOG.items():
        if any(i == os_version for i, _ in entries):
            return kind
    return "other"


def build_os_catalog() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, entries in OS_CATALOG.items():
        out[kind] = [
            {"id": i, "versionDes": des, "cpuQuantityLimit": 64, "cpuSocketLimit": 8,
             "memQuantityLimit": 1048576, "defaultCPUQuantity": 2, "defaultMemoryQuantity": 4096,
             "supportCpuHotPlug": kind != "other", "supportMemHotPlug": kind != "other",
             "supportDiskHotPlug": True, "supportUEFIFirmware": kind != "other"}
            for i, des in entries
        ]
    return out


class C:
    """errorCode values (8-digit strings). Observed codes per vrm-api.md §4.3; [I] = our choice."""

    BAD_CREDENTIALS = "10000001"  # [I]
    NOT_LOGGED_IN = "10000002"  # [I] missing/unknown/expired token
    INVALID_PARAM = "10000003"  # [I]
    NOT_FOUND = "10000004"  # [I] unknown object or path
    BUSY = "10000009"
    VERSION = "10000022"
    VM_NOT_FOUND = "10300004"  # [I]
    STATE = "10300026"
    VM_TASK_CONFLICT = "10300060"  # [I] VM has an unfinished task
    SNAPSHOT_LIMIT = "10300061"  # [I]
    RESOURCE_PREPARED = "10300062"  # [I] disk operation refused while a backup resource exists
    VM_HAS_SNAPSHOTS = "10300153"
    SNAPSHOT_NOT_FOUND = "10300109"
    RESOURCE_HOST_LIMIT = "10300412"
    RESOURCE_VOLUME_BUSY = "10300413"
    RESOURCE_NOT_FOUND = "10300414"  # [I]
    SNAPSHOT_DELETE_FAILED = "10400004"
    VOLUME_BUSY = "10420005"
    VOLUME_ATTACHED = "10420009"
    VOLUME_NOT_FOUND = "10420004"
    NO_SPACE = "10420010"  # [I]
    SNAP_UUID_REQUIRED = "10430041"
    CBT_CHGID_INVALID = "10430042"  # [I]
    CBT_NOT_ENABLED = "10430043"
    CBT_CREATE_TIME_MISMATCH = "10430044"  # [I]
    TASK_NOT_FOUND = "10000014"  # [I]
    TASK_NOT_CANCELABLE = "10000015"  # [I]
    RESOURCE_TOKEN = "10300415"  # [I] data endpoint: wrong token
    PORTGROUP_NOT_FOUND = "10510004"  # [I] vmConfig.nics[].portGroupUrn names no port group of this site


class VrmError(Exception):
    """A VRM error answer: HTTP status plus errorCode/errorDes."""

    def __init__(self, status: int, code: str, des: str) -> None:
        super().__init__(f"{code}: {des}")
        self.status = status
        self.code = code
        self.des = des

    def body(self) -> dict[str, str]:
        return {"errorCode": self.code, "errorDes": f"{self.des} (errorCode {self.code})"}


def bad(des: str, code: str = C.INVALID_PARAM) -> VrmError:
    return VrmError(400, code, des)


def not_found(des: str, code: str = C.NOT_FOUND) -> VrmError:
    return VrmError(404, code, des)


def fmt_time(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def site_seed(seed: int, site_index: int) -> int:
    """The seed of everything site ``site_index`` generates (site 0: ``seed`` itself, as before sites)."""
    return seed if site_index == 0 else mix64(seed, 0x5173, site_index) & 0x7FFF_FFFF_FFFF_FFFF


# --------------------------------------------------------------------------------------------
# Inventory objects
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Site:
    id: str
    name: str
    ip: str


@dataclass(eq=False)
class PortGroup:
    id: int
    name: str
    vlan_id: int
    isolated: bool = False  # no uplink: DR rehearsals plug restored NICs here


@dataclass(eq=False)
class DvSwitch:
    id: int
    name: str
    port_groups: dict[int, PortGroup] = field(default_factory=dict)


@dataclass(eq=False)
class Cluster:
    id: int
    name: str
    arch: str  # x86_64 / aarch64


@dataclass(eq=False)
class Host:
    id: int
    name: str
    ip: str
    cluster: Cluster
    arch: str
    cpu_quantity: int
    mem_mb: int
    perf_class: str  # hidden pause model: fast / ordinary / slow
    pause_base: float
    pause_per_disk: float
    pause_per_gb: float
    host_factor: float
    noise_sigma: float
    status: str = "normal"
    bmc_ip: str = ""


@dataclass(eq=False)
class Datastore:
    id: int
    name: str
    storage_type: str
    capacity_gb: int
    used_gb: int
    hosts: list[Host]
    is_thin: bool = True
    status: str = "NORMAL"

    @property
    def free_gb(self) -> int:
        return self.capacity_gb - self.used_gb


@dataclass(eq=False)
class Volume:
    id: int
    name: str
    uuid: str
    size_mb: int
    datastore: Datastore
    content: DiskContent
    is_thin: bool = True
    type: str = "normal"  # normal / share
    indep: bool = False
    persistent: bool = True
    vol_type: int = 0
    status: str = "USE"
    volume_format: str = "raw"
    is_diff: bool = False
    use_type: int = 0
    link_clone_parent: str = ""
    pvscsi: int = 0
    vm: "Vm | None" = None
    cbt_create_time: str | None = None  # set by the first CBT snapshot of the chain
    cbt_version: int = 0  # chgID of the newest CBT snapshot
    last_cbt_create_time: str | None = None
    resource: "BackupResource | None" = None
    busy_task: "Task | None" = None
    gone: bool = False
    guest_fs: str = ""  # a guest of fctui.sim.guestfs whose image the volume holds (guestdisks.py)
    guest_fs_version: int = 0  # the version it was last moved to

    @property
    def quantity_gb(self) -> int:
        return max(1, self.size_mb // 1024)

    def epoch(self) -> int:
        """CBT version a write made now belongs to."""
        return self.cbt_version + 1 if self.cbt_create_time else 0


@dataclass(eq=False)
class Disk:
    volume: Volume
    sequence_num: int
    pci_type: str  # IDE / SCSI / VIRTIO


@dataclass(eq=False)
class Nic:
    name: str
    mac: str
    ip: str
    port_group_urn: str
    sequence_num: int


@dataclass(eq=False)
class VolSnap:
    volume: Volume
    snap_uuid: str
    chg_id: int
    cbt_create_time: str
    state: VolumeState


@dataclass(eq=False)
class Snapshot:
    id: int
    vm: "Vm"
    name: str
    description: str
    type: str
    status: str
    create_time: float
    parent: "Snapshot | None"
    need_memory: bool
    is_consistent: bool
    vols: list[VolSnap]
    children: list["Snapshot"] = field(default_factory=list)


@dataclass(eq=False)
class Vm:
    id: str
    uuid: str
    name: str
    status: str
    host: Host
    cluster: Cluster
    os_type: str
    os_version: int
    cpu: int
    mem_mb: int
    disks: list[Disk]
    nics: list[Nic]
    tools_version: str
    pv_status: str
    create_time: float
    description: str = ""
    hostname: str = ""
    guest_os_name: str = ""
    is_template: bool = False
    is_link_clone: bool = False
    tool_install_status: str = "empty"
    cdrom_status: str = "empty"
    vm_type: int = 0
    group: str = ""
    idle: int = 0
    boot_firmware: str = "BIOS"
    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    current_snapshot: Snapshot | None = None
    busy_task: "Task | None" = None
    gone: bool = False
    boot_seq: int = 0  # bumped by every power-on: a boot that completes after a later power-off is void

    @property
    def arch(self) -> str:
        return self.host.arch


@dataclass(eq=False)
class Task:
    id: int
    type: str
    entity_urn: str
    entity_name: str
    user: str
    created: float  # sim time the request arrived
    run_at: float  # waiting -> running
    end_at: float  # running -> success (math.inf: until stopped)
    nominal_s: float  # unscaled duration, for reported times
    cancelable: bool
    on_success: Callable[[], None] | None = None
    on_fail: Callable[[], None] | None = None
    fail_code: str | None = None
    final: str | None = None  # success / failed once done
    finished_at: float | None = None
    cancelling_until: float | None = None
    cancelled: bool = False
    reason: str = ""
    reason_des: str = ""
    vm: Vm | None = None  # VM whose busy slot this task holds
    volume: Volume | None = None  # volume whose busy slot this task holds
    params: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.final is None


@dataclass(eq=False)
class BackupResource:
    id: int  # == task id
    volume: Volume
    task: Task
    task_type: str
    trans_mode: str
    delay: int
    snapshot: Snapshot | None
    snapshot1: Snapshot | None
    ip: str
    token: str
    host: Host
    host_port: int
    created: float
    expires_at: float
    state: VolumeState | None  # point-in-time content for backups
    status: str = "waiting"  # waiting/running/success/failed, then released
    released_at: float | None = None
    bytes_read: int = 0
    bytes_written: int = 0

    @property
    def is_restore(self) -> bool:
        return self.task_type in RESTORE_TYPES

    @property
    def live(self) -> bool:
        return self.released_at is None and self.status in ("waiting", "running", "success")


BACKUP_TYPES = ("BackupVol", "SANBackup", "CBTBackup")
RESTORE_TYPES = ("RestoreVol", "SANRestore", "CBTRestore")
SNAPSHOT_TYPES = ("normal", "backup", "CBTbackup")
MAX_SNAPSHOTS = 32
MAX_RESOURCES_PER_HOST = 8


@dataclass
class Session:
    token: str
    user: str
    last_used: float
    expired: bool = False


@dataclass
class Fault:
    """Fault injection rule matched against each VRM/data request (and task types)."""

    path: str | None = None  # regex searched in the path
    method: str | None = None
    latency_ms: float = 0.0
    status: int | None = None
    error_code: str | None = None
    count: int | None = None  # remaining uses; None = unlimited
    probability: float = 1.0
    drop: bool = False
    task_type: str | None = None  # fail tasks of this type instead of requests
    body_bytes: int = 0  # answer 200 with a JSON body this long, streamed (no Content-Length)
    # Reshape the answer as some VRMs (or proxies before them) may: None leaves it; "" sends no
    # Content-Type; anything else replaces it (e.g. "text/plain" on JSON).
    content_type: str | None = None
    numbers_as_strings: bool = False  # every JSON number in the answer sent as a string ("total": "3")
    error_shape: str = "errorCode"  # injected error bodies: errorCode | error ({"error":{code,message}}) | empty
    hits: int = 0


# --------------------------------------------------------------------------------------------
# The simulated VRM
# --------------------------------------------------------------------------------------------
class VrmState:
    """The VRM's objects, clock, task engine and sessions, built empty: ops.py changes it,
    views.py shows it, and generator.Simulator is the one way to get one with an inventory."""

    def __init__(self, config: SimConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or SimConfig()
        self.clock: Clock = clock or RealClock()
        cfg = self.config
        # everything of this site derives from `seed` (the config's seed for site 0); the block pool from
        # the config's seed, shared by every site of that seed
        self.seed = site_seed(cfg.seed, cfg.site_index)
        self.rng = random.Random(mix64(self.seed, 0x51))
        self.block_size = cfg.sector_of_block * 512
        self.factory = BlockFactory(cfg.seed, self.block_size)
        self.site = Site(id=f"{mix64(self.seed, 0x517E) & 0xFFFFFFFF:08X}",
                         name=f"site-{cfg.site_index + 1:02d}", ip=f"192.168.{cfg.site_index % 256}.10")
        self.dvswitches: dict[int, DvSwitch] = {}
        self.boot_failures: list[str] = list(cfg.boot_failures)  # POST /sim/boot-failures replaces them
        self.clusters: dict[int, Cluster] = {}
        self.hosts: dict[int, Host] = {}
        self.datastores: dict[int, Datastore] = {}
        self.volumes: dict[int, Volume] = {}
        self.vms: dict[str, Vm] = {}
        self.tasks: dict[int, Task] = {}
        self.resources: dict[int, BackupResource] = {}
        self.sessions: dict[str, Session] = {}
        self.faults: list[Fault] = []
        self.edge_cases: dict[str, list[str]] = {}
        self.os_catalog: dict[str, list[dict[str, Any]]] = {"windows": [], "linux": [], "other": []}
        self._ids = itertools.count(1000)
        self._vm_ids = itertools.count(0x100)
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._event_seq = itertools.count()
        self._now_override: float | None = None
        self._last_bg = self.clock.now()
        self.version = 0  # bumped on every visible change (list caches key on it)
        self.list_cache: dict[Any, Any] = {}
        self.stats: dict[str, Any] = {"requests": 0, "by_method": {}, "resource_max_per_host": {},
                                      "resource_refused_per_host": {}}
        self.pauses: list[dict[str, Any]] = []  # ground truth of every snapshot pause

    # --- time ----------------------------------------------------------------------------------
    def now(self) -> float:
        return self._now_override if self._now_override is not None else self.clock.now()

    def scaled(self, nominal: float) -> float:
        return nominal / self.config.time_scale

    def schedule(self, at: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (at, next(self._event_seq), fn))

    def advance(self) -> None:
        """Apply every transition due by now, in time order."""
        now = self.clock.now()
        while self._events and self._events[0][0] <= now:
            at, _, fn = heapq.heappop(self._events)
            self._now_override = at
            try:
                fn()
            finally:
                self._now_override = None
        rate = self.config.guest_write_rate
        if rate > 0 and now - self._last_bg >= 1.0:
            n = int(rate * (now - self._last_bg))
            if n > 0:
                self._last_bg += n / rate
                for vm in self.vms.values():
                    if vm.status == "running" and not vm.is_template:
                        for d in vm.disks:
                            if not d.volume.indep and not d.volume.guest_fs:
                                self.guest_write(d.volume, n)
                                break
        elif rate <= 0:
            self._last_bg = now

    def touch(self) -> None:
        self.version += 1
        if self.list_cache:
            self.list_cache.clear()

    def new_id(self) -> int:
        return next(self._ids)

    def new_vm_id(self) -> str:
        return f"i-{next(self._vm_ids):08X}"

    def new_uuid(self) -> str:
        return str(uuidlib.UUID(int=self.rng.getrandbits(128), version=4))

    # --- URNs ------------------------------------------------------------------------------------
    @property
    def site_urn(self) -> str:
        return f"urn:sites:{self.site.id}"

    def urn(self, kind: str, oid: Any) -> str:
        return f"{self.site_urn}:{kind}:{oid}"

    @staticmethod
    def uri(urn: str) -> str:
        return "/service" + urn[3:].replace(":", "/")

    def vm_urn(self, vm: Vm) -> str:
        return self.urn("vms", vm.id)

    def snap_urn(self, s: Snapshot) -> str:
        return f"{self.vm_urn(s.vm)}:snapshots:{s.id}"

    def task_urn(self, t: Task) -> str:
        return self.urn("tasks", t.id)

    def parse_urn(self, urn: str) -> tuple[str, str] | None:
        """'urn:sites:S:kind:id' -> (kind, id) for our site; snapshots -> ('snapshots', id)."""
        parts = urn.split(":")
        if len(parts) < 5 or parts[0] != "urn" or parts[1] != "sites" or parts[2] != self.site.id:
            return None
        if len(parts) == 7 and parts[3] == "vms" and parts[5] == "snapshots":
            return ("snapshots", parts[6])
        if len(parts) != 5:
            return None
        return (parts[3], parts[4])

    # --- lookups -------------------------------------------------------------------------------
    def get_vm(self, vm_id: str) -> Vm:
        vm = self.vms.get(vm_id)
        if vm is None or vm.gone:
            raise not_found(f"The VM {vm_id} does not exist.", C.VM_NOT_FOUND)
        return vm

    def get_volume(self, vol_id: Any) -> Volume:
        try:
            vol = self.volumes.get(int(vol_id))
        except (TypeError, ValueError):
            vol = None
        if vol is None or vol.gone:
            raise not_found(f"The volume {vol_id} does not exist.", C.VOLUME_NOT_FOUND)
        return vol

    def get_snapshot(self, vm: Vm, snap_id: Any) -> Snapshot:
        try:
            s = vm.snapshots.get(int(snap_id))
        except (TypeError, ValueError):
            s = None
        if s is None:
            raise not_found(f"The snapshot {snap_id} does not exist.", C.SNAPSHOT_NOT_FOUND)
        return s

    def snapshot_by_urn(self, urn: Any) -> Snapshot | None:
        if not isinstance(urn, str):
            return None
        p = urn.split(":")
        if len(p) != 7 or p[2] != self.site.id or p[5] != "snapshots":
            return None
        vm = self.vms.get(p[4])
        if vm is None or vm.gone:
            return None
        try:
            return vm.snapshots.get(int(p[6]))
        except ValueError:
            return None

    def get_task(self, task_id: Any) -> Task:
        try:
            t = self.tasks.get(int(task_id))
        except (TypeError, ValueError):
            t = None
        if t is None:
            raise not_found(f"The task {task_id} does not exist.", C.TASK_NOT_FOUND)
        return t

    def port_group_urn(self, dvs: DvSwitch, pg: PortGroup) -> str:
        return f"{self.urn('dvswitchs', dvs.id)}:portgroups:{pg.id}"

    def by_dvswitch_urn(self, urn: str) -> DvSwitch | None:
        p = urn.split(":")
        if len(p) != 5 or p[:2] != ["urn", "sites"] or p[2] != self.site.id or p[3] != "dvswitchs" or not p[4].isdigit():
            return None
        return self.dvswitches.get(int(p[4]))

    def port_group_by_urn(self, urn: Any) -> tuple[DvSwitch, PortGroup] | None:
        """``urn:sites:S:dvswitchs:D:portgroups:P`` of this site -> (switch, port group)."""
        p = urn.split(":") if isinstance(urn, str) else []
        if (len(p) != 7 or p[:2] != ["urn", "sites"] or p[2] != self.site.id or p[3] != "dvswitchs"
                or p[5] != "portgroups" or not p[4].isdigit() or not p[6].isdigit()):
            return None
        dvs = self.dvswitches.get(int(p[4]))
        pg = dvs.port_groups.get(int(p[6])) if dvs is not None else None
        return None if dvs is None or pg is None else (dvs, pg)

    def by_urn(self, urn: str, kind: str) -> Any:
        p = self.parse_urn(urn)
        if p is None or p[0] != kind:
            return None
        if kind == "vms":
            vm = self.vms.get(p[1])
            return None if vm is None or vm.gone else vm
        try:
            oid = int(p[1])
        except ValueError:
            return None
        table = {"clusters": self.clusters, "hosts": self.hosts, "datastores": self.datastores,
                 "volumes": self.volumes}.get(kind)
        if table is None:
            return None
        obj = table.get(oid)
        if obj is not None and getattr(obj, "gone", False):
            return None
        return obj

    # --- auth ----------------------------------------------------------------------------------
    def accounts(self) -> tuple[SimUser, ...]:
        """Every account: the default one first, then ``SimConfig.users``."""
        cfg = self.config
        return (SimUser(cfg.user, cfg.password, cfg.user_type), *cfg.users)

    def login(self, user: str | None, key: str | None, plaintext: bool,
              user_type: int | None = None) -> Session:
        """Open a session. ``user_type`` is the X-Auth-UserType sent (None: header omitted, as the
        eSDKs do, vrm-api.md §2.1 -- accepted for any account [I]); another type than the account's
        is refused like a wrong password [I: a VRM looks the user up among accounts of that type]."""
        import hashlib

        account = next((a for a in self.accounts() if a.name == user), None)
        expected = None
        if account is not None:
            expected = account.password if plaintext else hashlib.sha256(account.password.encode()).hexdigest()
        if (account is None or key is None or key != expected
                or (user_type is not None and user_type != account.user_type)):
            # constant message: never say which part was wrong, never echo the key
            raise VrmError(401, C.BAD_CREDENTIALS, "The user name or password is incorrect.")
        s = Session(token=secrets.token_hex(24), user=account.name, last_used=self.now())
        self.sessions[s.token] = s
        return s

    def check_token(self, token: str | None) -> Session:
        if not token:
            raise VrmError(401, C.NOT_LOGGED_IN, "The user is not logged in.")
        s = self.sessions.get(token)
        if s is None:
            raise VrmError(401, C.NOT_LOGGED_IN, "The token is invalid.")
        now = self.now()
        if s.expired or now - s.last_used > self.config.token_idle_s:
            s.expired = True
            raise VrmError(401, C.NOT_LOGGED_IN, "The token has expired.")
        s.last_used = now
        return s

    def logout(self, token: str | None) -> None:
        if token:
            self.sessions.pop(token, None)

    def expire_tokens(self, token: str | None = None) -> int:
        n = 0
        for s in self.sessions.values():
            if token is None or s.token == token:
                s.expired = True
                n += 1
        return n

    # --- tasks ---------------------------------------------------------------------------------
    def start_task(
        self,
        type_: str,
        entity_urn: str,
        entity_name: str,
        nominal_s: float,
        *,
        on_success: Callable[[], None] | None = None,
        on_fail: Callable[[], None] | None = None,
        vm: Vm | None = None,
        volume: Volume | None = None,
        cancelable: bool = False,
        user: str | None = None,
        forever: bool = False,
    ) -> Task:
        now = self.now()
        wall = self.scaled(nominal_s)
        wait = min(0.5, wall * 0.1)
        t = Task(
            id=self.new_id(), type=type_, entity_urn=entity_urn, entity_name=entity_name,
            user=user if user is not None else self.config.user, created=now, run_at=now + wait,
            end_at=math.inf if forever else now + wall, nominal_s=nominal_s,
            cancelable=cancelable, on_success=on_success, on_fail=on_fail, vm=vm, volume=volume,
        )
        fault = self.task_fault(type_)
        if fault is not None:
            t.fail_code = fault
        self.tasks[t.id] = t
        if vm is not None:
            vm.busy_task = t
        if volume is not None:
            volume.busy_task = t
        if not forever:
            self.schedule(t.end_at, lambda: self._complete(t))
        self.touch()
        return t

    def record_task(self, type_: str, entity_urn: str, entity_name: str, user: str) -> Task:
        """A task that already finished successfully now: what the VRM keeps of something that
        happened on its own (HA restart, a guest power-off, a host reboot), so a client sees it in
        the task list like any other operation."""
        now = self.now()
        t = Task(id=self.new_id(), type=type_, entity_urn=entity_urn, entity_name=entity_name, user=user,
                 created=now, run_at=now, end_at=now, nominal_s=0.0, cancelable=False, final="success",
                 finished_at=now)
        self.tasks[t.id] = t
        self.touch()
        return t

    def _release_slots(self, t: Task) -> None:
        if t.vm is not None and t.vm.busy_task is t:
            t.vm.busy_task = None
        if t.volume is not None and t.volume.busy_task is t:
            t.volume.busy_task = None

    def _complete(self, t: Task) -> None:
        if not t.active or t.cancelling_until is not None:
            return
        if t.fail_code:
            self.fail_task(t, t.fail_code, "The task failed (injected fault).")
            return
        t.final = "success"
        t.finished_at = self.now()
        self._release_slots(t)
        if t.on_success:
            t.on_success()
        self.touch()

    def fail_task(self, t: Task, code: str, des: str, cancelled: bool = False) -> None:
        if not t.active:
            return
        t.final = "failed"
        t.finished_at = self.now()
        t.reason = code
        t.reason_des = des
        t.cancelled = cancelled
        self._release_slots(t)
        if t.on_fail:
            t.on_fail()
        self.touch()

    def finish_forever_task(self, t: Task) -> None:
        """Stop a task that runs until told (storage migration): completes it successfully."""
        if t.active:
            t.end_at = self.now()
            self._complete(t)

    def cancel_task(self, t: Task) -> None:
        if not t.active:
            raise bad("The task has already finished.", C.TASK_NOT_CANCELABLE)
        if not t.cancelable:
            raise bad("The task cannot be cancelled.", C.TASK_NOT_CANCELABLE)
        if t.cancelling_until is not None:
            return
        t.cancelling_until = self.now() + self.scaled(self.config.task_seconds["cancel"])
        self.schedule(t.cancelling_until,
                      lambda: self.fail_task(t, "10000016", "The task was cancelled.", True))
        self.touch()

    def task_view_state(self, t: Task) -> tuple[str, int]:
        """(status, progress) of a task now."""
        if t.final == "success":
            return "success", 100
        now = self.now()
        if t.final == "failed":
            return "failed", self._progress(t, t.finished_at or now)
        if t.cancelling_until is not None:
            return "cancelling", self._progress(t, now)
        if now < t.run_at:
            return "waiting", 0
        return "running", self._progress(t, now)

    def _progress(self, t: Task, at: float) -> int:
        if at < t.run_at:
            return 0
        if math.isinf(t.end_at):
            # runs until stopped: creep towards 99 on the nominal duration
            span = max(self.scaled(t.nominal_s), 1e-6)
            return min(99, int(99 * (at - t.run_at) / span))
        span = t.end_at - t.run_at
        if span <= 0:
            return 99
        return max(0, min(99, int(100 * (at - t.run_at) / span)))

    def task_times(self, t: Task) -> tuple[str, str]:
        """startTime/finishTime as epoch-ms strings; durations are the unscaled nominal ones."""
        start_ms = int(t.run_at * 1000)
        if t.final is None:
            return str(start_ms), ""
        if t.final == "success" and not math.isinf(t.end_at) and t.end_at == t.finished_at:
            return str(start_ms), str(start_ms + int(t.nominal_s * 1000))
        fin = t.finished_at or self.now()
        scale = self.config.time_scale
        return str(start_ms), str(start_ms + int(max(0.0, fin - t.run_at) * scale * 1000))

    # --- faults ----------------------------------------------------------------------------------
    def task_fault(self, type_: str) -> str | None:
        for f in self.faults:
            if f.task_type and f.task_type == type_ and self._fault_fires(f):
                return f.error_code or "10000009"
        return None

    def _fault_fires(self, f: Fault) -> bool:
        if f.count is not None and f.count <= 0:
            return False
        if f.probability < 1.0 and self.rng.random() >= f.probability:
            return False
        if f.count is not None:
            f.count -= 1
        f.hits += 1
        return True

    def match_faults(self, method: str, path: str) -> list[Fault]:
        import re

        out = []
        for f in self.faults:
            if f.task_type:
                continue
            if f.method and f.method.upper() != method.upper():
                continue
            if f.path and not re.search(f.path, path):
                continue
            if self._fault_fires(f):
                out.append(f)
        return out

    # --- busy checks -----------------------------------------------------------------------------
    def vm_busy_check(self, vm: Vm) -> None:
        t = vm.busy_task
        if t is not None and t.active:
            raise bad(f"The VM {vm.name} has an unfinished task ({t.type}).", C.VM_TASK_CONFLICT)
        for d in vm.disks:
            vt = d.volume.busy_task
            if vt is not None and vt.active:
                raise bad(f"A disk of VM {vm.name} has an unfinished task ({vt.type}).",
                          C.VM_TASK_CONFLICT)

    def vm_resource_check(self, vm: Vm) -> None:
        for d in vm.disks:
            r = d.volume.resource
            if r is not None and r.live:
                raise bad(f"VM {vm.name} has a prepared backup resource on volume "
                          f"{d.volume.name}; finish or release it first.", C.RESOURCE_PREPARED)

    def host_resource_check(self, vm: Vm) -> None:
        """The per-host reading of the CBT snapshot rule (``cbt_snapshot_resource_scope="host"``)."""
        r = next((r for r in self.resources.values() if r.live and r.host is vm.host), None)
        if r is not None:
            self.stats["cbt_snapshots_refused_host_resource"] = \
                self.stats.get("cbt_snapshots_refused_host_resource", 0) + 1
            raise bad(f"Host {vm.host.name} has a prepared backup resource on volume {r.volume.name}; "
                      "a CBT snapshot cannot be created until it is released.", C.RESOURCE_PREPARED)

    def note_cbt_snapshot(self, vm: Vm) -> None:
        """Count CBT snapshots created while a resource was live on the VM's host (GET /sim/stats)."""
        if any(r.live and r.host is vm.host for r in self.resources.values()):
            self.stats["cbt_snapshots_with_host_resource"] = \
                self.stats.get("cbt_snapshots_with_host_resource", 0) + 1

    def volume_resource_check(self, vol: Volume) -> None:
        r = vol.resource
        if r is not None and (r.live or r.released_at is not None):
            raise bad(f"Volume {vol.name} has a backup resource; release it first.",
                      C.RESOURCE_PREPARED)

    # --- guest writes and CBT ----------------------------------------------------------------
    def guest_write(self, vol: Volume, n: int | None = None,
                    ranges: list[tuple[int, int]] | None = None) -> int:
        """Dirty blocks: n random blocks (prefer already-used areas) or explicit ranges."""
        c = vol.content
        nb = c.blocks_in(c.live)
        blocks: list[int] = []
        if ranges:
            for start, count in ranges:
                if start < 0 or count < 0 or start + count > nb:
                    raise bad(f"Range {start}+{count} is outside the volume ({nb} blocks).")
                blocks.extend(range(start, start + count))
        elif n:
            n = min(n, nb)
            rng = random.Random(mix64(self.seed, vol.id, c.gen, n))
            blocks = rng.sample(range(nb), n)
            if c.boot_key and 0 in blocks and c.content_of(c.live, 0) == c.boot_key:
                # a running guest never rewrites its boot record: the write lands elsewhere
                taken = set(blocks)
                spare = next((b for b in range(1, nb) if b not in taken), None)
                blocks = [b for b in blocks if b != 0] + ([spare] if spare is not None else [])
        c.write_generated(blocks, vol.epoch())
        return len(blocks)

    def cbt_reset(self, vol: Volume) -> None:
        """CBT re-initialised (chain broken): next CBT snapshot restarts at chgID 1 with a new
        volCBTCreateTime."""
        if vol.cbt_create_time:
            vol.last_cbt_create_time = vol.cbt_create_time
        vol.cbt_create_time = None
        vol.cbt_version = 0
        vol.content.reset_epochs()

    def cbt_snapshot(self, vol: Volume) -> tuple[int, str]:
        if not vol.cbt_create_time:
            t = fmt_time(self.now())
            # a re-initialised chain must be distinguishable even within the same second
            if vol.last_cbt_create_time and t <= vol.last_cbt_create_time:
                prev = datetime.strptime(vol.last_cbt_create_time, "%Y-%m-%d %H:%M:%S").replace(
                    tzinfo=timezone.utc).timestamp()
                t = fmt_time(prev + 1)
            vol.cbt_create_time = t
            vol.cbt_version = 0
        vol.cbt_version += 1
        return vol.cbt_version, vol.cbt_create_time

    # --- pause model (hidden ground truth) -------------------------------------------------------
    def expected_pause(self, host: Host, disks: int, gb: float) -> float:
        """The host's pause before noise: (base + per disk x disks + per GB x GB) x host factor (README,
        "Pause model"; the coefficients come from the host's class, never from the client's estimator)."""
        return (host.pause_base + host.pause_per_disk * disks + host.pause_per_gb * gb) \
            * host.host_factor

    def draw_pause(self, vm: Vm, disks: int, gb: float) -> float:
        host = vm.host
        noise = math.exp(self.rng.gauss(0.0, host.noise_sigma))
        expected = self.expected_pause(host, disks, gb)
        pause = expected * noise
        self.pauses.append({"vm": self.vm_urn(vm), "host": self.urn("hosts", host.id),
                            "disks": disks, "gb": gb, "expected_s": round(expected, 4),
                            "pause_s": round(pause, 4)})
        return pause

    def resources_on_host(self, host: Host) -> int:
        return sum(1 for r in self.resources.values()
                   if r.host is host and (r.live or r.released_at is not None))

    def note_resource_peak(self, host: Host) -> None:
        key = self.urn("hosts", host.id)
        cur = self.resources_on_host(host)
        peaks = self.stats["resource_max_per_host"]
        if cur > peaks.get(key, 0):
            peaks[key] = cur

    def note_resource_refused(self, host: Host) -> None:
        """Count a prepare refused because the host already serves 8 resources (10300412): a client
        that keeps the per-host limit itself never sees one (GET /sim/stats)."""
        refused = self.stats["resource_refused_per_host"]
        key = self.urn("hosts", host.id)
        refused[key] = refused.get(key, 0) + 1
