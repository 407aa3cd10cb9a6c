"""Evaluate the inventory rules of one VM: ``assess(facts) -> Assessment``.

Pure and fast (about 10 µs per ordinary VM): every table lookup is precomputed in
:mod:`fctui.rules.catalog`, kinds are a bitmask, message strings are only built for findings that fire,
and per-catalogue / per-task-type classifications are cached.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..units import human_bytes
from ..vrm.models import BACKUP_SNAPSHOT_TYPES, VM_STATUSES, Disk, OsCatalogue
from . import catalog as C
from .facts import VmFacts

GIB = 1 << 30   # the VRM gives datastore and disk sizes in (binary) GB

__all__ = ["Finding", "Assessment", "assess", "assess_many", "classify_task_type", "os_class",
           "leftover_backup_snapshots", "with_owned_snapshots", "with_snapshot_tree"]


class Finding:
    """One rule that fired for a VM (or for a planned job)."""
    __slots__ = ("rule", "severity", "message", "remediation", "disks")

    def __init__(self, rule: str, severity: str, message: str, remediation: str,
                 disks: list[str] | None = None) -> None:
        self.rule = rule
        self.severity = severity
        self.message = message
        self.remediation = remediation
        self.disks: list[str] = disks if disks is not None else []

    @classmethod
    def of(cls, info: C.RuleInfo, message: str, disks: list[str] | None = None,
           remediation: str | None = None) -> "Finding":
        return cls(info.id, info.severity, message, remediation or info.remediation, disks)

    @property
    def info(self) -> C.RuleInfo:
        return C.RULES[self.rule]

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "severity": self.severity, "message": self.message,
                "remediation": self.remediation, "disks": list(self.disks)}

    def __repr__(self) -> str:
        return f"Finding({self.rule!r}, {self.severity!r}, {self.message!r}, disks={self.disks!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Finding) and self.rule == other.rule and self.message == other.message
                and self.disks == other.disks and self.severity == other.severity)

    __hash__ = None  # type: ignore[assignment]


class Assessment:
    """The verdict on one VM: ``verdict``, the snapshot ``kinds`` still possible, and ``findings``
    (worst first; ``main_reason`` is the first). ``provisional`` is True when the snapshot tree was
    not read yet, so snapshot rules may still fire."""
    __slots__ = ("urn", "name", "verdict", "kinds_mask", "findings", "provisional")

    def __init__(self, urn: str, name: str, verdict: str, kinds_mask: int, findings: list[Finding],
                 provisional: bool = False) -> None:
        self.urn = urn
        self.name = name
        self.verdict = verdict
        self.kinds_mask = kinds_mask
        self.findings = findings
        self.provisional = provisional

    @property
    def kinds(self) -> dict[str, bool]:
        return C.kinds_dict(self.kinds_mask)

    @property
    def main_reason(self) -> Finding | None:
        """The finding a person should read first: the worst, then the most fundamental."""
        return self.findings[0] if self.findings else None

    @property
    def rules(self) -> list[str]:
        return [f.rule for f in self.findings]

    def has(self, rule: str) -> bool:
        return any(f.rule == rule for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        m = self.main_reason
        return {
            "urn": self.urn, "name": self.name, "verdict": self.verdict,
            "kinds": C.kinds_dict(self.kinds_mask),
            "findings": [f.to_json() for f in self.findings],
            "main_reason": m.rule if m is not None and m.severity != C.INFO else None,
            "provisional": self.provisional,
        }

    def __repr__(self) -> str:
        return f"Assessment({self.urn!r}, {self.verdict!r}, kinds={self.kinds}, rules={self.rules})"


# --- cached classifications -----------------------------------------------------------------------

_R = C.RULES
_TEMPLATE = _R["template"]
_LINKED = _R["linked-clone"]
_NO_DISKS = _R["no-disks"]
_TOOLS_MISSING = _R["tools-missing"]
_TOOLS_NOT_RUNNING = _R["tools-not-running"]
_HIBERNATED = _R["state-hibernated"]
_UNSUPPORTED_STATE = _R["state-unsupported"]
_STOPPED = _R["state-stopped"]
_IDE = _R["disk-ide"]
_SHARED = _R["disk-shared"]
_SHARED_X86 = _R["shared-disk-x86"]
_INDEP = _R["disk-independent"]
_ALL_INDEP = _R["all-disks-independent"]
_STORAGE = _R["storage-unsupported"]
_LIMIT = _R["snapshot-limit"]
_NEAR = _R["snapshot-limit-near"]
_LEFTOVER = _R["leftover-backup-snapshot"]
_TASK = _R["task-in-progress"]
_NOT_EULER = _R["consistency-not-euleros"]
_CHAIN = _R["cbt-chain-broken"]
_SPACE = _R["target-space-low"]
_UNLISTED = _R["guest-os-unlisted"]
_INCOMPLETE = _R["data-incomplete"]
_SNAP_UNKNOWN = _R["snapshots-unknown"]

_ORDER = C.RULE_ORDER
_RANK = C.SEVERITY_RANK
_SUPPORTED = C.SUPPORTED_STORAGE_TYPES
_STORAGE_TYPES = C.STORAGE_TYPES
_ACTIVE = C.ACTIVE_TASK_STATUSES
_DISK_FIELDS_NEEDED = frozenset({"pciType", "indepDisk", "volumeUrn", "quantityGB"})
_VM_FIELDS_REPORTED = ("urn", "name", "status", "toolsVersion", "pvDriverStatus", "isTemplate", "isLinkClone")

# per-task-type classification: type -> (excludes snapshots, chain-breaking cause or None)
_TASK_CLASS: dict[str, tuple[bool, str | None]] = {}


def classify_task_type(task_type: str) -> tuple[bool, str | None]:
    """(does a running task of this type exclude snapshots, what CBT-breaking cause it is if any)."""
    c = _TASK_CLASS.get(task_type)
    if c is None:
        t = task_type.lower()
        exclusive = any(k in t for k in C.EXCLUSIVE_TASK_KEYWORDS)
        cause = None
        for k, why in C.CHAIN_BREAKING_TASK_KEYWORDS.items():
            if k in t:
                cause = why
                break
        c = (exclusive, cause)
        if len(_TASK_CLASS) < 4096:  # bounded: a hostile VRM cannot grow it forever
            _TASK_CLASS[task_type] = c
    return c


class _OsInfo:
    __slots__ = ("euler", "listed", "not_euler_msg", "unlisted_msg")

    def __init__(self, os_id: int, description: str, euler: bool, listed: bool) -> None:
        self.euler = euler
        self.listed = listed
        # messages built once per catalogue entry, not once per VM
        self.not_euler_msg = f"guest OS {description} is not EulerOS: backups are crash-consistent"
        self.unlisted_msg = f"guest OS {description} (id {os_id}) is not on the supported guest OS list"


def _words(text: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    for ch in text.lower():
        if ch.isalnum():
            cur.append(ch)
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return out


def _has_words(words: list[str], seq: tuple[str, ...]) -> bool:
    n = len(seq)
    for i in range(len(words) - n + 1):
        if tuple(words[i:i + n]) == seq:
            return True
    # "EulerOS2.0" or "Windows Server 2019 Datacenter" style fused words: prefix match on one word
    if n == 1:
        return any(w.startswith(seq[0]) for w in words)
    return False


def os_class(description: str, family: str) -> tuple[bool, bool]:
    """(is EulerOS, is on the supported list) for one catalogue entry."""
    words = _words(description)
    euler = _has_words(words, C.EULEROS_WORDS)
    listed = family not in C.UNLISTED_OS_FAMILIES and any(_has_words(words, s) for s in C.SUPPORTED_OS_WORDS)
    return euler, listed


_OS_CACHE: dict[int, tuple[OsCatalogue, dict[int, _OsInfo]]] = {}


def _os_table(cat: OsCatalogue) -> dict[int, _OsInfo]:
    hit = _OS_CACHE.get(id(cat))
    if hit is not None and hit[0] is cat:
        return hit[1]
    table = {}
    for i, e in cat.entries.items():
        euler, listed = os_class(e.description, e.family)
        table[i] = _OsInfo(i, e.description, euler, listed)
    if len(_OS_CACHE) >= 8:
        _OS_CACHE.clear()
    _OS_CACHE[id(cat)] = (cat, table)  # the catalogue is kept alive so its id cannot be reused
    return table


def _disk_id(d: Disk) -> str:
    return d.volume_urn or d.label


def _labels(disks: Iterable[Disk]) -> str:
    return ", ".join(d.label for d in disks)


def _task_at(t: Any) -> float | None:
    start, finish = t.times_ms()
    v = finish if finish is not None else start
    return v / 1000.0 if v is not None else None


# --- the engine -------------------------------------------------------------------------------------

def assess(facts: VmFacts) -> Assessment:
    """Every inventory rule of ``shared/rules.md`` (plus the documented extensions) for one VM."""
    vm = facts.vm
    findings: list[Finding] = []
    add = findings.append
    missing: list[str] = []

    if vm.missing:
        for m in _VM_FIELDS_REPORTED:
            if m in vm.missing:
                missing.append(m)

    if vm.is_template:
        add(Finding.of(_TEMPLATE, "this is a template; templates cannot be snapshotted"))
    if vm.is_link_clone:
        add(Finding.of(_LINKED, "linked clone: its system disk is a differencing volume that cannot be snapshotted"))

    status = vm.status
    tools = vm.tools_version
    if tools is not None and not tools.strip():
        add(Finding.of(_TOOLS_MISSING, "VM Tools were never installed (toolsVersion empty)"))
    elif status == C.RUNNING:
        pv = vm.pv_driver_status
        if pv == "":
            if "pvDriverStatus" not in missing:
                missing.append("pvDriverStatus")
        elif pv != "running":
            what = f"VM Tools {tools} installed but not running" if tools else "VM Tools not running"
            add(Finding.of(_TOOLS_NOT_RUNNING, f"{what} (pvDriverStatus {pv})"))

    if status == C.RUNNING:
        pass
    elif status == C.STOPPED:
        add(Finding.of(_STOPPED, "VM is stopped: only a full standard snapshot is possible (no CBT, memory or consistent snapshot)"))
    elif status == C.HIBERNATED:
        add(Finding.of(_HIBERNATED, "VM is hibernated: only memory snapshots are possible, which hold no disk backup"))
    elif not status:
        add(Finding.of(_UNSUPPORTED_STATE, "the VRM reported no status for this VM; no snapshot can be planned",
                       remediation="Refresh; check the VM in the FusionCompute portal if the status stays missing."))
    elif status in VM_STATUSES:
        add(Finding.of(_UNSUPPORTED_STATE, f"VM state is {status}: no snapshot is allowed in this state; retry when the VM settles"))
    else:
        add(Finding.of(_UNSUPPORTED_STATE, f"VM is in an unknown state {status!r}: no snapshot can be planned",
                       remediation="Retry when the VM settles in running or stopped; check the VM in the portal."))

    # --- disks
    disks = vm.disks
    datastores = facts.datastores
    backed: list[Disk] = []  # disks a snapshot would contain (neither independent nor shared)
    if not vm.has_vm_config:
        add(Finding.of(_NO_DISKS, "the VRM sent no vmConfig for this VM: its disks are unknown"))
    elif not disks:
        add(Finding.of(_NO_DISKS, "the VM has no disks: there is nothing to back up"))
    else:
        ide = shared = indep = unsupported = None
        for d in disks:
            if d.missing:
                for m in d.missing:
                    if m in _DISK_FIELDS_NEEDED:
                        missing.append(f"disk {d.label} {m}")
            if d.pci_type == "IDE":
                (ide := ide or []).append(d)
            st = d.storage_type
            if not st:
                ds = datastores.get(d.datastore_urn)
                st = ds.storage_type if ds is not None else ""
            if st not in _SUPPORTED:
                if st:
                    (unsupported := unsupported or []).append((d, st))
                else:
                    missing.append(f"disk {d.label} storageType")
            if d.type == "share":
                (shared := shared or []).append(d)
            elif d.indep_disk:
                (indep := indep or []).append(d)
            else:
                backed.append(d)
        if ide:
            add(Finding.of(_IDE, f"disk on the IDE bus: {_labels(ide)}", [_disk_id(d) for d in ide]))
        if shared:
            add(Finding.of(_SHARED, f"shared disk attached: {_labels(shared)}; no snapshot of this VM is possible",
                           [_disk_id(d) for d in shared]))
            arm = vm.is_arm
            if not arm and facts.host is not None and not vm.arch:
                a = facts.host.arch.lower()
                arm = a.startswith(("arm", "aarch"))
            if not arm:
                guess = "" if vm.arch or (facts.host is not None and facts.host.arch) else " (architecture not reported; x86 assumed)"
                add(Finding.of(_SHARED_X86, "x86 VM with a shared disk: no memory or consistent snapshot, and a "
                               f"standard snapshot would leave the shared disk out{guess}",
                               [_disk_id(d) for d in shared]))
        if indep:
            if not backed:
                add(Finding.of(_ALL_INDEP, f"every disk is independent or shared ({_labels(disks)}): nothing a snapshot would hold",
                               [_disk_id(d) for d in indep]))
            else:
                add(Finding.of(_INDEP, f"independent disks are left out of the backup: {_labels(indep)}",
                               [_disk_id(d) for d in indep]))
        if unsupported:
            parts = []
            for d, st in unsupported:
                info = _STORAGE_TYPES.get(st)
                parts.append(f"{d.label} on {st} ({info.wording if info else 'unknown storage type'})")
            add(Finding.of(_STORAGE, "storage type without snapshot support: " + ", ".join(parts),
                           [_disk_id(d) for d, _ in unsupported]))

    # --- snapshots
    tree = facts.snapshot_tree
    if tree is not None:
        findings.extend(_snapshot_findings(tree, facts.knowledge))
    elif not facts.snapshots_known:
        add(Finding.of(_SNAP_UNKNOWN, "snapshot tree not read yet: snapshot limit and leftovers not checked"))

    # --- tasks running on the VM
    if facts.active_tasks:
        busy = []
        for t in facts.active_tasks:
            if t.status in _ACTIVE and classify_task_type(t.type)[0]:
                busy.append(t)
        if busy:
            what = ", ".join(f"{t.type} ({t.status}, {t.progress}%)" for t in busy)
            add(Finding.of(_TASK, f"conflicting task in progress: {what}; retry when it ends"))

    # --- guest OS
    cat = facts.os_catalogue
    osv = vm.os.os_version
    if osv is None:
        missing.append("osOptions.osVersion")
        add(Finding.of(_NOT_EULER, "guest OS unknown: backups are crash-consistent (consistent and memory snapshots need EulerOS)"))
    elif cat is None:
        add(Finding.of(_NOT_EULER, f"guest OS id {osv} not resolved (no OS catalogue): backups are crash-consistent"))
    else:
        info = _os_table(cat).get(osv)
        if info is None:
            add(Finding.of(_NOT_EULER, f"guest OS id {osv} is not in the VRM's OS catalogue: backups are crash-consistent"))
            add(Finding.of(_UNLISTED, f"guest OS id {osv} is not in the VRM's OS catalogue, so not on the supported list"))
        else:
            if not info.euler:
                add(Finding(_NOT_EULER.id, _NOT_EULER.severity, info.not_euler_msg, _NOT_EULER.remediation, []))
            if not info.listed:
                add(Finding(_UNLISTED.id, _UNLISTED.severity, info.unlisted_msg, _UNLISTED.remediation, []))

    # --- CBT chain, from what the product knows of the last backup
    # (No earlier backup, no chain to break: the first backup is full, and the planner says so.)
    k = facts.knowledge
    if k is not None and backed and (k.last_backup_time is not None or k.volumes):
        _cbt_chain(facts, k, backed, add)

    # --- merge space on the datastores of the backed-up disks
    if backed and datastores:
        _merge_space(facts, backed, add)

    if missing:
        add(Finding.of(_INCOMPLETE, "the VRM did not report: " + ", ".join(missing)))

    verdict, mask = _verdict(findings)
    return Assessment(vm.urn, vm.name, verdict, mask, findings,
                      provisional=tree is None and not facts.snapshots_known)


def _verdict(findings: list[Finding]) -> tuple[str, int]:
    """(verdict, kinds mask) of ``findings``, which it sorts worst first."""
    mask = C.ALL_KINDS
    worst = 0
    for f in findings:
        info_ = _R[f.rule]
        mask &= ~info_.rules_out
        r = _RANK[f.severity]
        if r > worst:
            worst = r
    if len(findings) > 1:
        findings.sort(key=_sort_key)
    return C.VERDICT_BY_RANK[worst], mask


def leftover_backup_snapshots(tree: Any, knowledge: Any, also_owned: Iterable[str] = ()) -> list[Any]:
    """The backup snapshots of ``tree`` no restore point or running job owns. Without ``knowledge``
    (nothing is known of our backups) only snapshots named as ours count; ``also_owned``: snapshots
    of running or queued jobs that ``knowledge`` does not list yet."""
    if tree is None or not tree.roots:
        return []
    owned = knowledge.owned_snapshot_urns if knowledge is not None else frozenset()
    extra = frozenset(also_owned)
    ours = knowledge is not None
    return [s for s in tree.walk() if s.type in BACKUP_SNAPSHOT_TYPES and s.urn not in owned
            and s.urn not in extra and (ours or s.name.startswith(C.SNAPSHOT_NAME_PREFIX))]


def _snapshot_findings(tree: Any, knowledge: Any, also_owned: Iterable[str] = ()) -> list[Finding]:
    """The findings ``tree`` alone decides: the snapshot limit (or near it) and leftovers."""
    out: list[Finding] = []
    if tree is None or not tree.roots:
        return out
    n = sum(1 for s in tree.walk() if s.type in BACKUP_SNAPSHOT_TYPES)
    if n >= C.SNAPSHOT_LIMIT:
        out.append(Finding.of(_LIMIT, f"{n} backup snapshots: the limit of {C.SNAPSHOT_LIMIT} is reached"))
    elif n >= C.SNAPSHOT_NEAR_LIMIT:
        out.append(Finding.of(_NEAR, f"{n} backup snapshots: {C.SNAPSHOT_LIMIT - n} left before the limit of {C.SNAPSHOT_LIMIT}"))
    left = leftover_backup_snapshots(tree, knowledge, also_owned)
    if left:
        out.append(_leftover_finding(left))
    return out


_TREE_RULES = frozenset((_LIMIT.id, _NEAR.id, _LEFTOVER.id))


def with_snapshot_tree(a: Assessment, tree: Any, knowledge: Any, owned: Iterable[str] = ()) -> Assessment:
    """``a`` with its snapshot findings (limit, leftovers) derived again from ``tree``, a tree read
    after the rules ran (a job created or deleted a snapshot since), ``owned`` counted as a running
    job's. ``a`` itself when nothing changes or when ``a`` never saw a tree (provisional: confirming
    it is the refresh's business)."""
    if tree is None or a.provisional:
        return a
    kept = [f for f in a.findings if f.rule not in _TREE_RULES]
    fresh = _snapshot_findings(tree, knowledge, owned)
    if sorted(map(repr, fresh)) == sorted(repr(f) for f in a.findings if f.rule in _TREE_RULES):
        return a
    findings = kept + fresh
    verdict, mask = _verdict(findings)
    return Assessment(a.urn, a.name, verdict, mask, findings, a.provisional)


def _leftover_finding(left: list[Any]) -> Finding:
    names = ", ".join(f"{s.name or s.urn} ({s.type}, {s.create_time or 'time unknown'})" for s in left[:5])
    more = f" and {len(left) - 5} more" if len(left) > 5 else ""
    return Finding.of(_LEFTOVER, f"backup snapshot owned by no restore point or running job: {names}{more}")


def with_owned_snapshots(a: Assessment, tree: Any, knowledge: Any, owned: Iterable[str]) -> Assessment:
    """``a`` once the snapshots in ``owned`` (a running or queued job's, known after the rules ran)
    are counted as owned: its ``leftover-backup-snapshot`` finding narrowed or gone, the verdict
    derived again. ``a`` itself when nothing changes."""
    owned = frozenset(owned)
    if tree is None or not owned or _LEFTOVER.id not in a.rules:
        return a
    left = leftover_backup_snapshots(tree, knowledge, owned)
    before = leftover_backup_snapshots(tree, knowledge)
    if len(left) == len(before):
        return a
    findings = [f for f in a.findings if f.rule != _LEFTOVER.id] + ([_leftover_finding(left)] if left else [])
    verdict, mask = _verdict(findings)
    return Assessment(a.urn, a.name, verdict, mask, findings, a.provisional)


def confirmed(provisional: Assessment) -> Assessment:
    """What a provisional verdict becomes once the VM is known to own no snapshots and nothing else
    changed: the same, without the ``snapshots-unknown`` finding (an info finding that rules nothing
    out). A consumer that was told so derives the final verdict without receiving it again."""
    return Assessment(provisional.urn, provisional.name, provisional.verdict, provisional.kinds_mask,
                      [f for f in provisional.findings if f.rule != _SNAP_UNKNOWN.id], False)


def confirms(provisional: Assessment, final: Assessment) -> bool:
    """Whether ``final`` is exactly :func:`confirmed` of ``provisional``."""
    if not provisional.provisional or final.provisional or provisional.verdict != final.verdict \
            or provisional.kinds_mask != final.kinds_mask:
        return False
    return [f for f in provisional.findings if f.rule != _SNAP_UNKNOWN.id] == final.findings


def _sort_key(f: Finding) -> tuple[int, int]:
    return (-_RANK[f.severity], _ORDER[f.rule])


def _cbt_chain(facts: VmFacts, k: Any, backed: list[Disk], add: Any) -> None:
    vm_causes: list[str] = []
    disk_causes: dict[str, list[str]] = {}
    by_urn = {d.volume_urn: d for d in backed}
    since = k.last_backup_time
    for t in facts.tasks_since_backup:
        if t.status != "success":
            continue
        cause = classify_task_type(t.type)[1]
        if cause is None:
            continue
        at = _task_at(t)
        if since is not None and at is not None and at < since:
            continue
        if t.entity_urn in by_urn:
            disk_causes.setdefault(t.entity_urn, []).append(cause)
        elif cause not in vm_causes:
            vm_causes.append(cause)
    if facts.vm.status == C.STOPPED and k.last_vm_status != C.STOPPED and "power-off" not in vm_causes:
        vm_causes.append("power-off")
    for d in backed:
        urn = d.volume_urn
        rec = k.volumes.get(urn)
        if rec is None:
            disk_causes.setdefault(urn, []).append("no CBT state from an earlier backup")
            continue
        if not rec.fully_backed_up:
            disk_causes.setdefault(urn, []).append("the last backup of this disk did not finish")
        if rec.size_gb is not None and d.quantity_gb is not None and d.quantity_gb != rec.size_gb:
            disk_causes.setdefault(urn, []).append(f"volume expansion ({rec.size_gb} -> {d.quantity_gb} GB)")
        now = facts.cbt_now.get(urn)
        if now is not None:
            if now.vol_cbt_create_time and now.vol_cbt_create_time != rec.vol_cbt_create_time:
                disk_causes.setdefault(urn, []).append("CBT re-initialised (volCBTCreateTime changed)")
            else:
                try:
                    if int(now.chg_id) < int(rec.chg_id):
                        disk_causes.setdefault(urn, []).append(f"chgID reset ({rec.chg_id} -> {now.chg_id})")
                except ValueError:
                    disk_causes.setdefault(urn, []).append("chgID unreadable")
    if not vm_causes and not disk_causes:
        return
    parts = []
    if vm_causes:
        parts.append(f"all disks: {', '.join(vm_causes)}")
        affected = [d.volume_urn for d in backed]
    else:
        affected = [d.volume_urn for d in backed if d.volume_urn in disk_causes]
    for urn, causes in disk_causes.items():
        d = by_urn.get(urn)
        parts.append(f"{d.label if d is not None else urn}: {', '.join(causes)}")
    add(Finding.of(_CHAIN, "next backup is full (CBT chain broken): " + "; ".join(parts), affected))


def _merge_space(facts: VmFacts, backed: list[Disk], add: Any) -> None:
    share = C.MERGE_DELTA_SHARE
    floor = C.MERGE_DELTA_MIN_GB
    dss = facts.datastores
    load = facts.merge_load_gb
    need: dict[str, float] = {}
    for d in backed:
        delta = (d.quantity_gb or 0) * share
        if delta < floor:
            delta = floor
        u = d.datastore_urn
        need[u] = need.get(u, 0.0) + delta
    short = None
    for ds_urn, own in need.items():
        ds = dss.get(ds_urn)
        if ds is None:
            continue
        free = ds.usable_free_gb
        if free is None:
            continue
        total = own + load.get(ds_urn, 0.0)
        if free < total:
            (short := short or []).append((ds, own, total, free))
    if short:
        parts = [f"{ds.name or ds.urn}: {human_bytes(free * GIB)} free, merges need about {human_bytes(total * GIB)} "
                 f"({human_bytes(own * GIB)} for this VM)" for ds, own, total, free in short]
        urns = {ds.urn for ds, _, _, _ in short}
        add(Finding(_SPACE.id, _SPACE.severity, "datastore may lack space for snapshot merges: " + "; ".join(parts),
                    _SPACE.remediation, [d.volume_urn for d in backed if d.datastore_urn in urns]))


def assess_many(facts: Iterable[VmFacts]) -> list[Assessment]:
    return [assess(f) for f in facts]
