"""The rule catalog as data: rule metadata, storage types, guest OS list, VM states, task types.

Everything a reviewer may want to change (which storage type is supported, which OS counts as
listed, which task type breaks the CBT chain) lives here as plain tables, so the engine stays a
sequence of lookups. Ids and severities follow ``shared/rules.md``; rules marked ``extension`` are
ours (the catalog has no id for "the VRM did not tell us").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

# --- severities and snapshot kinds ----------------------------------------------------------------

BLOCKER = "blocker"
WARNING = "warning"
INFO = "info"
SEVERITY_RANK: Mapping[str, int] = {INFO: 0, WARNING: 1, BLOCKER: 2}

VERDICT_READY = "ready"
VERDICT_DEGRADED = "degraded"
VERDICT_BLOCKED = "blocked"
VERDICTS = (VERDICT_READY, VERDICT_DEGRADED, VERDICT_BLOCKED)
# verdict by the rank of the worst finding (info never changes it)
VERDICT_BY_RANK = (VERDICT_READY, VERDICT_DEGRADED, VERDICT_BLOCKED)

KINDS = ("cbt", "standard", "memory", "consistent")
# Kinds are a 4-bit mask in the hot path; dicts are built only for output.
CBT, STANDARD, MEMORY, CONSISTENT = 1, 2, 4, 8
ALL_KINDS = CBT | STANDARD | MEMORY | CONSISTENT
KIND_BITS: Mapping[str, int] = {"cbt": CBT, "standard": STANDARD, "memory": MEMORY, "consistent": CONSISTENT}


def kinds_dict(mask: int) -> dict[str, bool]:
    return {"cbt": bool(mask & CBT), "standard": bool(mask & STANDARD),
            "memory": bool(mask & MEMORY), "consistent": bool(mask & CONSISTENT)}


# --- rules ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RuleInfo:
    id: str
    severity: str
    rules_out: int          # bitmask of KINDS this rule's finding removes
    stage: str              # "inventory" (verdict), "launch" or "restore" (job planner), "connect"
    source: str
    title: str
    remediation: str
    extension: bool = False  # not in shared/rules.md; documented here

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity]

    @property
    def rules_out_kinds(self) -> tuple[str, ...]:
        return tuple(k for k in KINDS if self.rules_out & KIND_BITS[k])


_NONE = 0
_R = RuleInfo

# Order matters: it is the tie-break for "the finding a person should read first" (after severity),
# so the most fundamental and least transient causes come first.
_RULE_LIST: tuple[RuleInfo, ...] = (
    _R("template", BLOCKER, ALL_KINDS, "inventory", "seed §2 VM Backup Scenario Limitations",
       "templates cannot be snapshotted",
       "Back up a VM deployed from the template instead, or convert the template to a VM."),
    _R("linked-clone", BLOCKER, ALL_KINDS, "inventory", "seed §2 VM Backup Scenario Limitations",
       "linked clones cannot be snapshotted",
       "Make a full clone of the VM and back that up, or protect the clone's parent image."),
    _R("no-disks", BLOCKER, ALL_KINDS, "inventory", "extension: nothing to back up without disk data",
       "no disks known",
       "Check the VM in the FusionCompute portal: attach a disk, or refresh once the VRM reports vmConfig.",
       extension=True),
    _R("tools-missing", BLOCKER, ALL_KINDS, "inventory", "seed, top warning",
       "VM Tools not installed",
       "Install VM Tools in the guest (portal: VM > Install Tools), then reboot the guest."),
    _R("tools-not-running", BLOCKER, ALL_KINDS, "inventory", "seed, top warning and §1",
       "VM Tools installed but not running",
       "Start the Tools service in the guest or reinstall Tools; check pvDriverStatus becomes running."),
    _R("state-hibernated", BLOCKER, CBT | STANDARD | CONSISTENT, "inventory", "seed §1 Virtual Machine State Requirements",
       "VM is hibernated",
       "Wake the VM (start it) to back it up with CBT, or stop it for a full standard backup."),
    _R("state-unsupported", BLOCKER, ALL_KINDS, "inventory", "seed §1 Virtual Machine State Requirements",
       "VM state allows no snapshot",
       "Retry when the VM settles in running or stopped."),
    _R("disk-ide", BLOCKER, ALL_KINDS, "inventory", "seed §1 Virtual Machine Disk Requirements",
       "disk on the IDE bus",
       "Stop the VM, move the disk to the VIRTIO or SCSI bus (install the guest driver first), start it again."),
    _R("disk-shared", BLOCKER, ALL_KINDS, "inventory", "seed §1 Virtual Machine Disk Requirements",
       "shared disk attached",
       "Detach the shared disk for the backup window, or protect the shared data from inside the cluster that owns it."),
    _R("all-disks-independent", BLOCKER, ALL_KINDS, "inventory", "seed §1 (follows from disk-independent)",
       "every disk is independent",
       "Switch at least the system disk to dependent mode (VM stopped) or protect the data with an in-guest agent."),
    _R("storage-unsupported", BLOCKER, ALL_KINDS, "inventory", "seed §3 Disk Storage Type Requirements",
       "disk on a storage type without snapshot support",
       "Migrate the disk to virtualized (LOCALPOME, LUNPOME, NAS), eVol or distributed block storage."),
    _R("snapshot-limit", BLOCKER, CBT | STANDARD, "inventory", "seed §1 Snapshot Quantity Limit, §2",
       "32 backup snapshots reached",
       "Delete backup snapshots that no restore point needs (`fctui jobs cleanup` deletes those its jobs left)."),
    _R("task-in-progress", BLOCKER, ALL_KINDS, "inventory", "seed §2 VM State and Operation Mutually Exclusive",
       "a conflicting VM task is running",
       "Wait for the task to finish (it is transient), then retry."),
    _R("state-stopped", WARNING, CBT | MEMORY | CONSISTENT, "inventory", "seed §1 Virtual Machine State Requirements",
       "VM is stopped: full backup only",
       "Start the VM to get CBT incrementals; while stopped a full standard backup still works."),
    _R("disk-independent", WARNING, _NONE, "inventory", "seed §1 Virtual Machine Disk Requirements",
       "independent disks are left out",
       "Switch the named disks to dependent mode (VM stopped) if they must be protected."),
    _R("cbt-chain-broken", WARNING, _NONE, "inventory", "seed §2 Backup Failure Risks",
       "next backup is full",
       "Nothing to fix: the next backup of the named disks reads them in full and restarts the chain."),
    _R("snapshot-limit-near", WARNING, _NONE, "inventory", "seed §1 Snapshot Quantity Limit (early warning)",
       "close to the 32 backup snapshot limit",
       "Delete backup snapshots that no restore point needs before the limit is hit."),
    _R("leftover-backup-snapshot", WARNING, _NONE, "inventory", "product knowledge: restore points and running jobs",
       "backup snapshot left by an earlier run",
       "Delete the leftover snapshot (`fctui jobs cleanup`, or `fctui jobs cleanup --demo` for the demo) so it "
       "stops holding space and counting toward the limit."),
    _R("target-space-low", WARNING, _NONE, "inventory", "seed §2 Storage and Resource Allocation Requirements",
       "datastore may lack space for snapshot merges",
       "Free space on the datastore or lower backup concurrency on it; merges need room for the snapshot deltas."),
    _R("guest-os-unlisted", WARNING, _NONE, "inventory", "seed Supported Guest OS",
       "guest OS not on the supported list",
       "Test a backup and a restore of this VM before relying on it; the vendor list does not cover this OS."),
    _R("data-incomplete", WARNING, _NONE, "inventory", "extension: the VRM omitted fields a rule needs",
       "VRM data incomplete",
       "Refresh; if the fields stay missing, check the VM in the FusionCompute portal (the VRM release may not report them).",
       extension=True),
    _R("shared-disk-x86", INFO, MEMORY | CONSISTENT, "inventory", "seed §1 Architecture Limitations",
       "x86 VM with a shared disk",
       "Expect crash-consistent snapshots without the shared disk on x86."),
    _R("consistency-not-euleros", INFO, CONSISTENT | MEMORY, "inventory", "seed §3 System and Storage Type Compatibility",
       "crash-consistent only (guest is not EulerOS)",
       "Nothing to do: backups are crash-consistent; quiesce applications in the guest if they need it."),
    _R("snapshots-unknown", INFO, _NONE, "inventory", "extension: the snapshot tree was not (yet) read",
       "snapshot count not known yet",
       "Wait for the inventory to finish loading; the snapshot rules are evaluated then.",
       extension=True),
    # launch-time and restore-time rules: evaluated by the job planner, never part of the verdict
    _R("host-sockets-busy", INFO, _NONE, "launch", "seed §3 Resource Allocation and Connection Limits",
       "host has 8 backup connections open",
       "Nothing to do: the job waits for a free connection on the host."),
    _R("target-volumes-busy", INFO, _NONE, "launch", "seed §2 Storage and Resource Allocation Requirements",
       "8 volumes already backing up on this storage",
       "Nothing to do: the job waits until a volume on that storage finishes."),
    _R("business-hours", WARNING, _NONE, "launch", "seed §2 Storage I/O Performance Impact",
       "inside business hours",
       "Schedule the job outside business hours to spare storage I/O, or start it knowingly."),
    _R("repo-space-low", BLOCKER, ALL_KINDS, "launch", "common sense",
       "repository too full for this backup",
       "Run `fctui repo prune --keep-last N` then `fctui repo gc`, free space on the repository's "
       "filesystem, or back up fewer VMs at once."),
    _R("cross-storage-restore", BLOCKER, ALL_KINDS, "restore", "seed §2 Cross-Storage Type Backup Restrictions",
       "restore across storage classes",
       "Pick a target datastore of the same storage class as the backup."),
    _R("restore-space", BLOCKER, ALL_KINDS, "restore", "common sense",
       "target datastore too small",
       "Pick a datastore with enough free space or free space on this one."),
    _R("restore-overwrite-running", BLOCKER, ALL_KINDS, "restore", "common sense",
       "original VM is running",
       "Stop the VM first (fctui asks before it stops it), or restore to a new VM."),
    _R("restore-arch-mismatch", BLOCKER, ALL_KINDS, "restore", "common sense: the guest does not boot",
       "restore target of another CPU architecture",
       "Pick a datastore reachable from hosts of the source VM's architecture (x86_64 or aarch64)."),
    _R("restore-point-damaged", BLOCKER, ALL_KINDS, "restore", "common sense",
       "restore point damaged",
       "Run `fctui repo verify` to see the damage, then restore an earlier point of this VM; the next "
       "backup of the VM heals the missing blocks."),
    # Into another VRM (issue 19) the source URNs do not exist: every disk, NIC and the location need a target.
    _R("restore-unmapped", BLOCKER, ALL_KINDS, "restore", "common sense",
       "no mapping for the target site",
       "Map every cluster, datastore and port group of the source to one of the target site."),
    _R("vrm-version-untested", WARNING, _NONE, "connect", "seed Compatibility",
       "VRM version not tested",
       "Proceed with care; run a test backup and restore first."),
)

RULES: Mapping[str, RuleInfo] = {r.id: r for r in _RULE_LIST}
RULE_ORDER: Mapping[str, int] = {r.id: i for i, r in enumerate(_RULE_LIST)}

# The ids of shared/rules.md's main table (inventory verdict) and its launch/restore table.
MAIN_RULE_IDS: tuple[str, ...] = (
    "tools-missing", "tools-not-running", "state-stopped", "state-hibernated", "state-unsupported",
    "template", "linked-clone", "disk-ide", "disk-shared", "shared-disk-x86", "disk-independent",
    "all-disks-independent", "storage-unsupported", "snapshot-limit", "snapshot-limit-near",
    "leftover-backup-snapshot", "task-in-progress", "consistency-not-euleros", "cbt-chain-broken",
    "target-space-low", "guest-os-unlisted",
)
LAUNCH_RULE_IDS: tuple[str, ...] = (
    "host-sockets-busy", "target-volumes-busy", "business-hours", "cross-storage-restore",
    "restore-space", "restore-overwrite-running", "restore-arch-mismatch", "restore-point-damaged",
    "restore-unmapped", "repo-space-low", "vrm-version-untested",
)
EXTENSION_RULE_IDS: tuple[str, ...] = tuple(r.id for r in _RULE_LIST if r.extension)
INVENTORY_RULE_IDS: tuple[str, ...] = tuple(r.id for r in _RULE_LIST if r.stage == "inventory")

# --- storage types --------------------------------------------------------------------------------

VIRTUALIZED = "virtualized"
DISTRIBUTED = "distributed"
BLOCK = "block"
UNKNOWN_CLASS = "unknown"


@dataclass(frozen=True, slots=True)
class StorageType:
    name: str
    wording: str
    storage_class: str
    supported: bool


STORAGE_TYPES: Mapping[str, StorageType] = {s.name: s for s in (
    StorageType("LOCALPOME", "virtualized local disk", VIRTUALIZED, True),
    StorageType("LUNPOME", "virtualized SAN storage", VIRTUALIZED, True),
    StorageType("NAS", "NAS storage", VIRTUALIZED, True),
    StorageType("advanceSan", "eVol storage", VIRTUALIZED, True),
    StorageType("DSWARE", "distributed block storage (FusionStorage)", DISTRIBUTED, True),
    StorageType("FusionOneStorage", "distributed block storage", DISTRIBUTED, True),
    StorageType("LOCAL", "raw local disk (not virtualized)", BLOCK, False),
    StorageType("LUN", "raw SAN LUN (device passthrough)", BLOCK, False),
    StorageType("san", "non-virtualized SAN", BLOCK, False),
)}
SUPPORTED_STORAGE_TYPES = frozenset(k for k, v in STORAGE_TYPES.items() if v.supported)


def storage_class(storage_type: str) -> str:
    st = STORAGE_TYPES.get(storage_type)
    return st.storage_class if st else UNKNOWN_CLASS


# --- CPU architectures ----------------------------------------------------------------------------

X86 = "x86_64"
ARM = "aarch64"


def arch_family(arch: str) -> str:
    """``x86_64``, ``aarch64`` or "" (not reported / not recognised) for an ``arch`` the VRM reports."""
    a = (arch or "").strip().lower()
    if a.startswith(("arm", "aarch")):
        return ARM
    if a.startswith(("x86", "amd64", "i386", "i686", "x64")):
        return X86
    return ""


# --- VM states ------------------------------------------------------------------------------------

RUNNING = "running"
STOPPED = "stopped"
HIBERNATED = "hibernated"
SNAPSHOT_STATES = frozenset({RUNNING, STOPPED, HIBERNATED})
# Known states that pass on their own (the remediation is "retry when the VM settles").
TRANSIENT_STATES = frozenset({
    "migrating", "starting", "stopping", "hibernating", "creating", "fault-resuming", "shutting-down",
    "recycling", "pause", "unknown",
})

# --- guest OS -------------------------------------------------------------------------------------

# The product's supported guest OS list, as words to find in the catalogue description
# (``versionDes``). A description is matched once per catalogue, by words, never in the hot path.
# Each entry: a tuple of lowercase words that must all appear (in order, as consecutive words).
SUPPORTED_OS_WORDS: tuple[tuple[str, ...], ...] = (
    ("euleros",), ("openeuler",), ("centos",), ("red", "hat"), ("redhat",), ("rhel",),
    ("suse",), ("sles",), ("ubuntu",), ("debian",), ("kylin",), ("neokylin",), ("uos",),
    ("uniontech",), ("oracle", "linux"), ("rocky",), ("almalinux",),
    ("windows", "server", "2008"), ("windows", "server", "2012"), ("windows", "server", "2016"),
    ("windows", "server", "2019"), ("windows", "server", "2022"), ("windows", "server", "2025"),
)
EULEROS_WORDS: tuple[str, ...] = ("euleros",)
# Catalogue families whose entries are never on the list ("other": ids 201/202/301/302/401/402 ...)
UNLISTED_OS_FAMILIES = frozenset({"other"})

# --- tasks ----------------------------------------------------------------------------------------

ACTIVE_TASK_STATUSES = frozenset({"waiting", "running", "cancelling"})

# The VRM's task type catalogue is not public (vrm-api §10). Types are classified by lowercase
# keywords, once per distinct type string (cached by the engine). A type matching nothing is ignored.
# Task types that exclude a snapshot while they run (vrm-api §12, seed §2 mutual exclusion).
EXCLUSIVE_TASK_KEYWORDS: tuple[str, ...] = (
    "migrat",                       # storage migration, VM (compute) migration
    "expand", "extend", "resize",   # disk expansion
    "attach", "detach",             # online disk binding
    "start", "stop", "poweron", "poweroff", "shutdown", "reboot", "restart", "hibernat",
    "pause", "resume",              # suspend/unpause and snapshot revert (resumevm)
    "revert",
    "snapshot",                     # another snapshot being created, deleted or reverted
    "clone", "deletevm",
)
# Task types that invalidate CBT when they succeed (seed §2 Backup Failure Risks; vrm-api §9.1).
CHAIN_BREAKING_TASK_KEYWORDS: Mapping[str, str] = {
    # keyword -> cause as a person reads it
    "harestart": "HA restart", "ha_restart": "HA restart", "ha-restart": "HA restart",
    "hareboot": "HA restart",
    "stop": "power-off", "poweroff": "power-off", "power-off": "power-off", "shutdown": "power-off",
    # "ResumeVm" alone is an unpause; the revert task is "ResumeVmSnapshot" (POST .../resumevm)
    "resumevmsnapshot": "snapshot revert", "revert": "snapshot revert", "restorevm": "snapshot revert",
    "expand": "volume expansion", "extend": "volume expansion", "resize": "volume expansion",
    "rebootcna": "host reboot", "hostreboot": "host reboot", "host-reboot": "host reboot",
    "reboothost": "host reboot",
}

# --- thresholds -----------------------------------------------------------------------------------

SNAPSHOT_LIMIT = 32
SNAPSHOT_NEAR_LIMIT = 28
MERGES_PER_TARGET = 8          # the product merges at most 8 volumes at once per target storage
SOCKETS_PER_HOST = 8
# Expected snapshot delta during a backup, as a share of the disk's provisioned size, for the
# merge-space estimate (target-space-low). The floor covers the overlay's own allocation and the
# writes of a busy guest during a short backup, so even a small disk needs a few GB to merge.
MERGE_DELTA_SHARE = 0.10
MERGE_DELTA_MIN_GB = 5.0

# Our own snapshots carry this name prefix, so a leftover of ours is recognisable even for a VM the
# product has no restore point of. Snapshots of other products are never called leftovers.
SNAPSHOT_NAME_PREFIX = "fctui-"

# --- VRM versions -----------------------------------------------------------------------------------

# The seed tested FusionCompute 6.3.0 with VRM interface 8.7.0. The version the API negotiates
# (``GET /service/versions``: "6.3", "v8.0", "8.0.1") follows the FusionCompute release line, so a
# negotiated major.minor of 6.3 is the tested release; 8.7 is accepted too, should a VRM report the
# interface version itself. Anything else warns once at connect.
TESTED_API_VERSIONS = frozenset({(6, 3), (8, 7)})
TESTED_DESCRIPTION = "FusionCompute 6.3.0 / VRM interface 8.7.0"
