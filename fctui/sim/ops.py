"""VRM operations on the simulated state: snapshots, CBT, backup resources, power, volumes, VMs,
and the chain-breaking events of the control API. Pure Python; the app maps HTTP onto these."""

from __future__ import annotations

import fnmatch
import ipaddress
import math
import secrets
from typing import Any

from fctui.sim.content import TOOLS_VERSIONS, DiskContent, VolumeState, boot_record
from fctui.sim.state import (
    BACKUP_TYPES,
    MAX_RESOURCES_PER_HOST,
    MAX_SNAPSHOTS,
    OS_TYPE,
    RESTORE_TYPES,
    SNAPSHOT_TYPES,
    BackupResource,
    C,
    Datastore,
    Disk,
    Nic,
    Snapshot,
    Task,
    Vm,
    VolSnap,
    Volume,
    VrmError,
    VrmState,
    bad,
    os_kind,
)

SNAPSHOT_BLOCKED_STATES = ("migrating", "creating", "shutting-down", "fault-resuming", "unknown")


def _bool(body: dict[str, Any], key: str, default: bool = False) -> bool:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad(f"{key} must be a boolean.")
    return v


def _int(body: dict[str, Any], key: str, default: int | None = None) -> int | None:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool):
        raise bad(f"{key} must be an integer.")
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    if not isinstance(v, int):
        raise bad(f"{key} must be an integer.")
    return v


def task_ref(sim: VrmState, t: Task) -> dict[str, str]:
    urn = sim.task_urn(t)
    return {"taskUrn": urn, "taskUri": sim.uri(urn)}


# ---------------------------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------------------------
def _snap_volumes(vm: Vm) -> list[Volume]:
    return [d.volume for d in vm.disks if not d.volume.indep]


def _freeze(sim: VrmState, vm: Vm, cbt: bool) -> list[VolSnap]:
    out = []
    for vol in _snap_volumes(vm):
        if cbt:
            chg, ctime = sim.cbt_snapshot(vol)
        else:
            chg, ctime = vol.cbt_version, vol.cbt_create_time or ""
        out.append(VolSnap(vol, sim.new_uuid(), chg, ctime, vol.content.live.frozen()))
    return out


def _attach_snapshot(vm: Vm, s: Snapshot) -> None:
    vm.snapshots[s.id] = s
    if s.parent is not None:
        s.parent.children.append(s)
    vm.current_snapshot = s


def make_ready_snapshot(sim: VrmState, vm: Vm, name: str, type_: str) -> Snapshot:
    """Generator helper: a snapshot that already exists (no task)."""
    s = Snapshot(id=sim.new_id(), vm=vm, name=name, description="", type=type_, status="ready",
                 create_time=sim.now() - 3600, parent=vm.current_snapshot, need_memory=False,
                 is_consistent=False, vols=_freeze(sim, vm, type_ == "CBTbackup"))
    _attach_snapshot(vm, s)
    sim.touch()
    return s


def count_snapshots(vm: Vm) -> tuple[int, int]:
    normal = sum(1 for s in vm.snapshots.values() if s.type == "normal")
    return normal, len(vm.snapshots) - normal


def create_snapshot(sim: VrmState, vm: Vm, body: dict[str, Any]) -> dict[str, str]:
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 256:
        raise bad("name is required (1-256 characters).")
    desc = body.get("description", "") or ""
    if not isinstance(desc, str) or len(desc) > 1024:
        raise bad("description must be at most 1024 characters.")
    type_ = body.get("type", "normal")
    if type_ not in SNAPSHOT_TYPES:
        raise bad(f"type must be one of {', '.join(SNAPSHOT_TYPES)} (case-sensitive).")
    need_mem = _bool(body, "needMemoryShot")
    consistent = _bool(body, "isConsistent")
    if vm.is_template:
        raise bad("Snapshots cannot be taken of a template.", C.STATE)
    if vm.is_link_clone:
        raise bad("Snapshots cannot be taken of a linked clone VM.", C.STATE)
    if vm.status not in ("running", "stopped", "hibernated"):
        raise bad(f"The VM status {vm.status} does not allow a snapshot.", C.STATE)
    if any(d.volume.type == "share" for d in vm.disks) and type_ != "normal":
        raise bad("A VM with shared disks cannot take this snapshot.", C.STATE)
    if any(d.pci_type == "IDE" for d in vm.disks):
        raise bad("A VM with IDE disks cannot take a snapshot.", C.STATE)
    sim.vm_busy_check(vm)
    if any(s.status in ("creating", "deleting", "resuming") for s in vm.snapshots.values()):
        raise bad("Another snapshot operation of this VM is in progress.", C.VM_TASK_CONFLICT)
    if type_ == "CBTbackup":
        if not vm.tools_version:
            raise bad("VM Tools are not installed; a CBT snapshot is not possible.", C.STATE)
        if vm.status == "running" and vm.pv_status != "running":
            raise bad("VM Tools are not running; a CBT snapshot is not possible.", C.STATE)
        if vm.status == "hibernated":
            raise bad("A hibernated VM cannot take a CBT snapshot.", C.STATE)
        sim.vm_resource_check(vm)
        if sim.config.cbt_snapshot_resource_scope == "host":
            sim.host_resource_check(vm)
    if need_mem and vm.status != "running" and vm.status != "hibernated":
        raise bad("A memory snapshot needs a running VM.", C.STATE)
    normal, backup = count_snapshots(vm)
    if type_ == "normal" and normal >= MAX_SNAPSHOTS:
        raise bad("The VM already has 32 normal snapshots.", C.SNAPSHOT_LIMIT)
    if type_ != "normal" and backup >= MAX_SNAPSHOTS:
        raise bad("The VM already has 32 backup snapshots.", C.SNAPSHOT_LIMIT)
    if not _snap_volumes(vm):
        raise bad("The VM has no disk that can be included in a snapshot.", C.STATE)

    vols = _snap_volumes(vm)
    if type_ == "CBTbackup":
        sim.note_cbt_snapshot(vm)
    gb = sum(v.size_mb for v in vols) / 1024
    pause = sim.draw_pause(vm, len(vols), gb)
    s = Snapshot(id=sim.new_id(), vm=vm, name=name, description=desc, type=type_,
                 status="creating", create_time=sim.now(), parent=vm.current_snapshot,
                 need_memory=need_mem, is_consistent=consistent,
                 vols=_freeze(sim, vm, type_ == "CBTbackup"))
    _attach_snapshot(vm, s)
    urn = sim.snap_urn(s)

    def done() -> None:
        s.status = "ready"

    def failed() -> None:
        _drop_snapshot(vm, s)

    t = sim.start_task("CreateVmSnapshot", urn, name,
                       pause + sim.config.task_seconds["snapshot_overhead"], on_success=done,
                       on_fail=failed, vm=vm)
    t.params["pause_s"] = f"{pause:.4f}"
    return {"urn": urn, "uri": sim.uri(urn), **task_ref(sim, t)}


def _drop_snapshot(vm: Vm, s: Snapshot) -> None:
    vm.snapshots.pop(s.id, None)
    parent = s.parent
    if parent is not None and s in parent.children:
        parent.children.remove(s)
    for ch in s.children:
        ch.parent = parent
        if parent is not None:
            parent.children.append(ch)
    if vm.current_snapshot is s:
        vm.current_snapshot = parent


def modify_snapshot(sim: VrmState, s: Snapshot, body: dict[str, Any]) -> None:
    if "name" in body:
        name = body["name"]
        if not isinstance(name, str) or not 1 <= len(name) <= 256:
            raise bad("name must be 1-256 characters.")
        s.name = name
    if "description" in body:
        desc = body["description"]
        if not isinstance(desc, str) or len(desc) > 1024:
            raise bad("description must be at most 1024 characters.")
        s.description = desc
    sim.touch()


def _snapshot_in_use(sim: VrmState, s: Snapshot) -> bool:
    return any(r.live and (r.snapshot is s or r.snapshot1 is s) for r in sim.resources.values())


def delete_snapshot(sim: VrmState, s: Snapshot) -> dict[str, str]:
    vm = s.vm
    if s.status != "ready":
        raise bad(f"The snapshot is {s.status}.", C.BUSY)
    if _snapshot_in_use(sim, s):
        raise bad("The snapshot is used by a prepared backup resource.", C.BUSY)
    sim.vm_busy_check(vm)
    s.status = "deleting"
    urn = sim.snap_urn(s)

    def done() -> None:
        _drop_snapshot(vm, s)

    def failed() -> None:
        s.status = "ready"

    t = sim.start_task("DeleteVmSnapshot", urn, s.name, sim.config.task_seconds["delete"],
                       on_success=done, on_fail=failed, vm=vm)
    return task_ref(sim, t)


def revert_snapshot(sim: VrmState, s: Snapshot) -> dict[str, str]:
    vm = s.vm
    if s.status != "ready":
        raise bad(f"The snapshot is {s.status}.", C.BUSY)
    if vm.status not in ("running", "stopped"):
        raise bad(f"The VM status {vm.status} does not allow a revert.", C.STATE)
    sim.vm_busy_check(vm)
    sim.vm_resource_check(vm)
    s.status = "resuming"

    def done() -> None:
        s.status = "ready"
        apply_revert(sim, vm, s)

    def failed() -> None:
        s.status = "ready"

    t = sim.start_task("ResumeVmSnapshot", sim.snap_urn(s), s.name,
                       sim.config.task_seconds["revert"], on_success=done, on_fail=failed, vm=vm)
    return task_ref(sim, t)


def apply_revert(sim: VrmState, vm: Vm, s: Snapshot) -> None:
    """Disk contents back to the snapshot; the CBT chain of every reverted volume is broken."""
    for vs in s.vols:
        vol = vs.volume
        if vol.gone:
            continue
        vol.content.live = vs.state.frozen()
        vol.size_mb = max(1, vs.state.size // (1024 * 1024))
        sim.cbt_reset(vol)
    vm.current_snapshot = s
    sim.touch()


# ---------------------------------------------------------------------------------------------
# CBT
# ---------------------------------------------------------------------------------------------
def _parse_chg(v: Any) -> int:
    if v is None or v == "" or v == 0:
        return 0
    try:
        n = int(str(v))
    except ValueError:
        raise bad("chgID must be a decimal string.", C.CBT_CHGID_INVALID) from None
    if n < 0:
        raise bad("chgID must not be negative.", C.CBT_CHGID_INVALID)
    return n


def get_cbt(sim: VrmState, vol: Volume, body: dict[str, Any]) -> dict[str, Any]:
    type_ = body.get("type", "DiffBitmapAndBit1Num")
    if type_ not in ("DiffBitmapAndBit1Num", "DiffBitmapBit1Num"):
        raise bad("type must be DiffBitmapAndBit1Num or DiffBitmapBit1Num.")
    ctime = body.get("volCBTCreateTime")
    if not isinstance(ctime, str) or not ctime:
        raise bad("volCBTCreateTime is required.")
    snap_uuid = body.get("snapUuid")
    if snap_uuid:
        vs = _vol_snap_by_uuid(vol, str(snap_uuid))
        if vs is None:
            raise bad("No snapshot of this volume has that snapUuid.", C.SNAP_UUID_REQUIRED)
        state, top, ref_ctime = vs.state, vs.chg_id, vs.cbt_create_time
    else:
        if sim.config.require_snap_uuid:
            raise bad("snapUuid is required for this query.", C.SNAP_UUID_REQUIRED)
        state, top, ref_ctime = vol.content.live, vol.cbt_version, vol.cbt_create_time or ""
    if not ref_ctime:
        raise bad("CBT is not enabled on this volume (no CBT snapshot).", C.CBT_NOT_ENABLED)
    if ctime != ref_ctime:
        raise bad("volCBTCreateTime does not match the volume's CBT file; the chain was "
                  "re-initialised.", C.CBT_CREATE_TIME_MISMATCH)
    since = _parse_chg(body.get("chgID"))
    if since > top:
        raise bad(f"chgID {since} is newer than the snapshot's chgID {top}.", C.CBT_CHGID_INVALID)
    content = vol.content
    total = content.blocks_in(state)
    start_raw, num_raw = body.get("startBlock"), body.get("blockNum")
    if start_raw is None or num_raw is None:
        start, count = 0, total
    else:
        start = _int(body, "startBlock")
        count = _int(body, "blockNum")
        assert start is not None and count is not None
        if start < 0 or count < 0:
            raise bad("startBlock and blockNum must not be negative.")
        if start % 8 or count % 8:
            raise bad("startBlock and blockNum must be multiples of 8.")
        # vrm-api.md §16: nothing documents a query starting at or past the disk's last block; a real
        # VRM may refuse it (400), so this one does [I: code 10000003].
        if start > 0 and start >= total:
            raise bad(f"startBlock {start} is past the end of the volume ({total} blocks).")
    bit_num = max(0, min(count, total - start))
    end = start + bit_num
    if bit_num == 0:
        blocks: set[int] = set()
    elif since == 0:
        blocks = content.written_blocks(state, start, end)
    else:
        blocks = content.changed_blocks(state, since, start, end)
    out: dict[str, Any] = {"sectorOfBlock": sim.config.sector_of_block, "bitNum": bit_num,
                           "bit1Num": len(blocks)}
    out["bitMap"] = (encode_bitmap(blocks, start, bit_num, sim.config.cbt_bitmap)
                     if type_ == "DiffBitmapAndBit1Num" else "")
    return out


_HEX = "0123456789abcdef"


def encode_bitmap(blocks: set[int], start: int, bit_num: int, order: str = "nibble") -> str:
    """The ``bitMap`` of blocks ``start .. start+bit_num-1``. vrm-api.md §16: in each byte the low bits
    are the lower-numbered blocks; the hex layout is not stated, so both readings ([I], SimConfig.cbt_bitmap):
    "nibble": one hex character per 4 blocks (roundup(bitNum/4) characters), the low bit of each
    character's value the lowest block; "byte": one byte per 8 blocks written as two hex characters
    (high digit first), bit i of byte k = block 8k+i."""
    if order == "byte":
        data = bytearray((bit_num + 7) // 8)
        for b in blocks:
            rel = b - start
            data[rel >> 3] |= 1 << (rel & 7)
        return data.hex()
    nibbles = bytearray((bit_num + 3) // 4)
    for b in blocks:
        rel = b - start
        nibbles[rel >> 2] |= 1 << (rel & 3)
    return nibbles.translate(_NIBBLE_TABLE).decode()


_NIBBLE_TABLE = bytes((ord(_HEX[i]) if i < 16 else 0) for i in range(256))


def decode_bitmap(bitmap: str, start: int, bit_num: int, order: str = "nibble") -> list[int]:
    """Inverse of encode_bitmap (used by tests and clients of the sim)."""
    if order == "byte":
        data = bytes.fromhex(bitmap)
        return [start + k * 8 + i for k, v in enumerate(data) for i in range(8) if v >> i & 1 and k * 8 + i < bit_num]
    out = []
    for i, ch in enumerate(bitmap):
        v = int(ch, 16)
        for k in range(4):
            if v & (1 << k) and i * 4 + k < bit_num:
                out.append(start + i * 4 + k)
    return out


def _vol_snap_by_uuid(vol: Volume, snap_uuid: str) -> VolSnap | None:
    vm = vol.vm
    if vm is None:
        return None
    for s in vm.snapshots.values():
        for vs in s.vols:
            if vs.volume is vol and vs.snap_uuid == snap_uuid:
                return vs
    return None


# ---------------------------------------------------------------------------------------------
# Backup resources
# ---------------------------------------------------------------------------------------------
def resource_host(sim: VrmState, vol: Volume):  # type: ignore[no-untyped-def]
    if vol.vm is not None:
        return vol.vm.host
    return vol.datastore.hosts[0] if vol.datastore.hosts else next(iter(sim.hosts.values()))


def prepare_resource(sim: VrmState, vol: Volume, body: dict[str, Any]) -> dict[str, str]:
    task_type = body.get("taskType")
    if task_type not in BACKUP_TYPES + RESTORE_TYPES:
        raise bad("taskType must be one of " + ", ".join(BACKUP_TYPES + RESTORE_TYPES) + ".")
    trans = body.get("transMode", "lan")
    if trans not in ("lan", "lanssl"):
        raise bad("transMode must be lan or lanssl.")
    delay = _int(body, "delay", 7200)
    assert delay is not None
    if not 60 <= delay <= 7200:
        raise bad("delay must be between 60 and 7200 seconds.")
    # vrm-api.md §16: eSDK declares ip mandatory, the requesting side's IP address; a VRM refuses a
    # missing, empty or malformed one [I: code 10000003 and its wording].
    ip = body.get("ip")
    if not isinstance(ip, str) or not ip.strip():
        raise bad("ip (the requester's IP address) is required.")
    try:
        ipaddress.ip_address(ip.strip())
    except ValueError:
        raise bad(f"ip {ip!r} is not a valid IP address.") from None
    snap2 = snap1 = None
    state: VolumeState | None = None
    if task_type in BACKUP_TYPES:
        urn2 = body.get("snapUrn2")
        if not urn2:
            raise bad("snapUrn2 is required for a backup.")
        snap2 = sim.snapshot_by_urn(urn2)
        if snap2 is None or snap2.status in ("deleting",):
            raise bad("The snapshot in snapUrn2 does not exist.", C.SNAPSHOT_NOT_FOUND)
        if snap2.status != "ready":
            raise bad("The snapshot in snapUrn2 is not ready yet.", C.BUSY)
        vs = next((v for v in snap2.vols if v.volume is vol), None)
        if vs is None:
            raise bad("The snapshot in snapUrn2 does not contain this volume.", C.INVALID_PARAM)
        state = vs.state
        if body.get("snapUrn1"):
            snap1 = sim.snapshot_by_urn(body["snapUrn1"])
            if snap1 is None:
                raise bad("The snapshot in snapUrn1 does not exist.", C.SNAPSHOT_NOT_FOUND)
    r = vol.resource
    if r is not None and (r.live or r.released_at is not None):
        raise bad("A backup resource is already prepared for this volume.",
                  C.RESOURCE_VOLUME_BUSY)
    if vol.busy_task is not None and vol.busy_task.active:
        raise bad("The volume has an unfinished task.", C.VM_TASK_CONFLICT)
    host = resource_host(sim, vol)
    if sim.resources_on_host(host) >= MAX_RESOURCES_PER_HOST:
        sim.note_resource_refused(host)
        raise bad(f"Host {host.name} already serves 8 backup resources.", C.RESOURCE_HOST_LIMIT)

    vol_urn = sim.urn("volumes", vol.id)
    port_vm = vol.vm.id if vol.vm is not None else str(vol.id)

    holder: dict[str, BackupResource] = {}

    def ready() -> None:
        res = holder["r"]
        res.status = "success"
        res.expires_at = sim.now() + res.delay
        sim.schedule(res.expires_at, lambda: _expire(sim, res))

    def failed() -> None:
        res = holder["r"]
        res.status = "failed"
        _forget(sim, res)

    t = sim.start_task("PrepareBackupResource", vol_urn, vol.name,
                       sim.config.task_seconds["resource"], on_success=ready, on_fail=failed,
                       cancelable=True)
    res = BackupResource(
        id=t.id, volume=vol, task=t, task_type=task_type, trans_mode=trans, delay=delay,
        snapshot=snap2, snapshot1=snap1, ip=ip or "", token=secrets.token_hex(16), host=host,
        host_port=35001 + (sum(map(ord, port_vm)) % 900), created=sim.now(),
        expires_at=math.inf, state=state,
    )
    holder["r"] = res
    sim.resources[res.id] = res
    vol.resource = res
    sim.note_resource_peak(host)
    return task_ref(sim, t)


def resource_status(sim: VrmState, r: BackupResource) -> str:
    if r.status in ("success", "failed"):
        return r.status
    st, _ = sim.task_view_state(r.task)
    return "running" if st == "running" else "waiting"


def _expire(sim: VrmState, r: BackupResource) -> None:
    if r.released_at is None and r.expires_at <= sim.now():
        r.released_at = sim.now()
        # a resource its client never released (GET /sim/stats): what a crashed client leaves behind
        sim.stats["resources_expired"] = sim.stats.get("resources_expired", 0) + 1
        _forget(sim, r)


def _forget(sim: VrmState, r: BackupResource) -> None:
    sim.resources.pop(r.id, None)
    if r.volume.resource is r:
        r.volume.resource = None
    sim.touch()


def get_resource(sim: VrmState, vol: Volume, rid: Any) -> BackupResource:
    try:
        r = sim.resources.get(int(rid))
    except (TypeError, ValueError):
        r = None
    if r is None or r.volume is not vol:
        raise VrmError(404, C.RESOURCE_NOT_FOUND, f"The backup resource {rid} does not exist.")
    return r


def extend_resource(sim: VrmState, r: BackupResource, body: dict[str, Any]) -> None:
    delay = _int(body, "delay")
    if delay is None or not 60 <= delay <= 7200:
        raise bad("delay must be between 60 and 7200 seconds.")
    if r.released_at is not None or r.status != "success":
        raise bad("The backup resource is not ready or is being released.", C.BUSY)
    remaining = max(0.0, r.expires_at - sim.now())
    if remaining + delay > 7200:
        raise bad("The remaining time plus delay must not exceed 7200 seconds.")
    r.expires_at = sim.now() + remaining + delay
    sim.schedule(r.expires_at, lambda: _expire(sim, r))


def release_resource(sim: VrmState, r: BackupResource) -> None:
    if r.released_at is not None:
        return
    if r.task.active:
        sim.fail_task(r.task, "10000016", "The backup resource was released before it was ready.",
                      cancelled=True)
    r.released_at = sim.now()
    r.status = "success" if r.status == "success" else r.status
    sim.schedule(sim.now() + sim.scaled(sim.config.task_seconds["release"]),
                 lambda: _forget(sim, r))
    sim.touch()


def data_resource(sim: VrmState, rid: Any, token: str | None) -> BackupResource:
    """The resource behind a data-endpoint request (checks token, readiness, expiry)."""
    try:
        r = sim.resources.get(int(rid))
    except (TypeError, ValueError):
        r = None
    if r is None or r.released_at is not None:
        raise VrmError(404, C.RESOURCE_NOT_FOUND, "The backup resource does not exist.")
    if not token or not secrets.compare_digest(token, r.token):
        raise VrmError(403, C.RESOURCE_TOKEN, "The resource token is wrong.")
    if r.status != "success":
        raise VrmError(409, C.BUSY, "The backup resource is not ready yet.")
    # the resource is "kept if unused": each access restarts the idle timer
    new_exp = sim.now() + r.delay
    if new_exp > r.expires_at:
        r.expires_at = new_exp
        sim.schedule(r.expires_at, lambda: _expire(sim, r))
    return r


# ---------------------------------------------------------------------------------------------
# Power and VM operations
# ---------------------------------------------------------------------------------------------
POWER_RULES: dict[str, tuple[tuple[str, ...], str, str]] = {
    # action: (allowed from, transitional status, final status)
    "start": (("stopped", "hibernated"), "starting", "running"),
    "stop": (("running", "pause"), "stopping", "stopped"),
    "reboot": (("running",), "running", "running"),
    "pause": (("running",), "running", "pause"),
    "resume": (("pause",), "running", "running"),
    "hibernate": (("running",), "hibernating", "hibernated"),
}
TASK_NAMES = {"start": "StartVm", "stop": "StopVm", "reboot": "RebootVm", "pause": "PauseVm",
              "resume": "ResumeVm", "hibernate": "HibernateVm"}


def power(sim: VrmState, vm: Vm, action: str, body: dict[str, Any],
          user: str | None = None) -> dict[str, str]:
    allowed, transitional, final = POWER_RULES[action]
    if action in ("stop", "reboot"):
        mode = body.get("mode", "safe")
        if mode not in ("safe", "force"):
            raise bad("mode must be safe or force.")
    if vm.is_template:
        raise bad("A template cannot be powered on or off.", C.STATE)
    if vm.status not in allowed:
        raise bad(f"The VM is {vm.status}; {action} needs {' or '.join(allowed)}.", C.STATE)
    sim.vm_busy_check(vm)
    before = vm.status
    vm.status = transitional

    def done() -> None:
        vm.status = final
        if final == "running" and action in ("start", "reboot"):
            boot_vm(sim, vm)
        elif final == "running":
            vm.pv_status = "running" if vm.tools_version else "notRunning"
        else:
            vm.pv_status = "notRunning"
        if action == "stop":
            # a power-off invalidates CBT (product document): the next backup is full
            for d in vm.disks:
                sim.cbt_reset(d.volume)

    def failed() -> None:
        vm.status = before

    t = sim.start_task(TASK_NAMES[action], sim.vm_urn(vm), vm.name,
                       sim.config.task_seconds["power"], on_success=done, on_fail=failed, vm=vm,
                       user=user)
    sim.touch()
    return task_ref(sim, t)


# ---------------------------------------------------------------------------------------------
# Guest boot
# ---------------------------------------------------------------------------------------------
def boot_fails(sim: VrmState, vm: Vm) -> bool:
    """The VM's name matches a boot-failure glob (SimConfig.boot_failures, POST /sim/boot-failures)."""
    return any(fnmatch.fnmatchcase(vm.name, g) for g in sim.boot_failures)


def system_disk(vm: Vm) -> Disk | None:
    return next((d for d in vm.disks if d.sequence_num == 1), vm.disks[0] if vm.disks else None)


def guest_tools(sim: VrmState, vm: Vm) -> str | None:
    """The Tools version the guest starts, read from its system disk's block 0 (a boot record, or a real
    image's boot sector), or None: the guest never gets Tools running (empty or garbled boot disk, no
    Tools, or a boot-failure drill)."""
    disk = system_disk(vm)
    if disk is None or boot_fails(sim, vm):
        return None
    c = disk.volume.content
    data = c.block_bytes(c.live, 0)
    version = boot_record(data)
    if version is not None:
        return version
    if data[510:512] == b"\x55\xaa":  # a real image's boot sector (guestdisks.py: their guests have Tools)
        return vm.tools_version or TOOLS_VERSIONS[-1]
    return None


def boot_vm(sim: VrmState, vm: Vm) -> None:
    """The VM was just powered on: Tools are ``starting``; ``boot_seconds`` (scaled) later they run if the
    guest has them (guest_tools), else ``notRunning``. A power-off before then voids the boot."""
    vm.boot_seq += 1
    seq = vm.boot_seq
    vm.pv_status = "starting"

    def booted() -> None:
        if vm.gone or vm.status != "running" or vm.boot_seq != seq:
            return
        version = guest_tools(sim, vm)
        if version is None:
            vm.pv_status = "notRunning"
        else:
            vm.tools_version = vm.tools_version or version
            vm.pv_status = "running"
        sim.touch()

    delay = sim.scaled(sim.config.boot_seconds)
    if delay <= 0:
        booted()
    else:
        sim.schedule(sim.now() + delay, booted)
    sim.touch()


def migrate_vm(sim: VrmState, vm: Vm, body: dict[str, Any], user: str | None = None
               ) -> dict[str, str]:
    loc = body.get("location")
    target = None
    if isinstance(loc, str):
        target = sim.by_urn(loc, "hosts")
        if target is None:
            cl = sim.by_urn(loc, "clusters")
            if cl is not None:
                target = next((h for h in sim.hosts.values()
                               if h.cluster is cl and h is not vm.host), None)
    if target is None:
        raise bad("location must be a host or cluster URN.")
    if vm.status != "running":
        raise bad("Only a running VM can be migrated.", C.STATE)
    sim.vm_busy_check(vm)
    vm.status = "migrating"

    def done() -> None:
        vm.status = "running"
        vm.host = target
        vm.cluster = target.cluster

    def failed() -> None:
        vm.status = "running"

    t = sim.start_task("MigrateVm", sim.vm_urn(vm), vm.name, sim.config.task_seconds["migrate"],
                       on_success=done, on_fail=failed, vm=vm, cancelable=True, user=user)
    return task_ref(sim, t)


def start_storage_migration(sim: VrmState, vm: Vm, user: str | None = None,
                            datastore: Datastore | None = None, forever: bool = True,
                            volumes: list[Volume] | None = None) -> Task:
    vols = volumes or [d.volume for d in vm.disks if d.volume.type != "share"]
    if not vols:
        raise bad("The VM has no disk that can be migrated.")
    sim.vm_busy_check(vm)
    sim.vm_resource_check(vm)
    for v in vols:
        v.status = "MAGRATING"
    target = datastore

    def restore_status() -> None:
        for v in vols:
            v.status = "USE"

    def done() -> None:
        restore_status()
        if target is not None:
            for v in vols:
                gb = v.quantity_gb
                v.datastore.used_gb -= gb
                v.datastore = target
                target.used_gb += gb

    t = sim.start_task("MigrateVolume", sim.vm_urn(vm), vm.name,
                       sim.config.task_seconds["storage_migration"], on_success=done,
                       on_fail=restore_status, vm=vm, cancelable=True, user=user, forever=forever)
    return t


def migrate_vm_volumes(sim: VrmState, vm: Vm, body: dict[str, Any]) -> dict[str, str]:
    disks = body.get("disks")
    speed = _int(body, "speed", 100)
    if speed is not None and speed < 20:
        raise bad("speed must be at least 20 MB/s.")
    if not isinstance(disks, list) or not disks or len(disks) > 11:
        raise bad("disks must list 1-11 disks.")
    vols: list[Volume] = []
    target: Datastore | None = None
    for d in disks:
        if not isinstance(d, dict):
            raise bad("disks entries must be objects.")
        vol = sim.by_urn(str(d.get("volumeUrn", "")), "volumes")
        ds = sim.by_urn(str(d.get("datastoreUrn", "")), "datastores")
        if vol is None or vol.vm is not vm:
            raise bad("volumeUrn is not a disk of this VM.", C.VOLUME_NOT_FOUND)
        if ds is None:
            raise bad("datastoreUrn does not exist.")
        if vol.type == "share":
            continue  # shared disks are silently skipped, like VRM
        vols.append(vol)
        target = ds
    if not vols:
        raise bad("No disk to migrate.")
    t = start_storage_migration(sim, vm, datastore=target, forever=False, volumes=vols)
    return task_ref(sim, t)


def migrate_volume(sim: VrmState, vol: Volume, body: dict[str, Any]) -> dict[str, str]:
    ds = sim.by_urn(str(body.get("datastoreUrn", "")), "datastores")
    if ds is None:
        raise bad("datastoreUrn does not exist.")
    speed = _int(body, "speed", 100)
    if speed is not None and speed < 20:
        raise bad("speed must be at least 20 MB/s.")
    sim.volume_resource_check(vol)
    if vol.vm is not None:
        t = start_storage_migration(sim, vol.vm, datastore=ds, forever=False, volumes=[vol])
        return task_ref(sim, t)
    if vol.busy_task is not None and vol.busy_task.active:
        raise bad("The volume has an unfinished task.", C.VM_TASK_CONFLICT)
    vol.status = "MAGRATING"

    def done() -> None:
        vol.status = "USE"
        vol.datastore.used_gb -= vol.quantity_gb
        vol.datastore = ds
        ds.used_gb += vol.quantity_gb

    t = sim.start_task("MigrateVolume", sim.urn("volumes", vol.id), vol.name,
                       sim.config.task_seconds["storage_migration"], on_success=done,
                       on_fail=lambda: setattr(vol, "status", "USE"), volume=vol, cancelable=True)
    return task_ref(sim, t)


def expand_volume(sim: VrmState, vol: Volume, body: dict[str, Any],
                  user: str | None = None) -> dict[str, str]:
    size = _int(body, "size")
    if size is None:
        raise bad("size (new size in MB) is required.")
    if size <= vol.size_mb:
        raise bad(f"The new size {size} MB must exceed the current {vol.size_mb} MB.")
    if vol.type == "share" or vol.datastore.storage_type == "LUN":
        raise bad("This volume cannot be expanded.", C.STATE)
    sim.volume_resource_check(vol)
    if vol.vm is not None:
        sim.vm_busy_check(vol.vm)
    elif vol.busy_task is not None and vol.busy_task.active:
        raise bad("The volume has an unfinished task.", C.VM_TASK_CONFLICT)
    add_gb = math.ceil((size - vol.size_mb) / 1024)
    if vol.datastore.free_gb < add_gb:
        raise bad("The datastore does not have enough free space.", C.NO_SPACE)
    vol.status = "RESIZING"

    def done() -> None:
        vol.status = "USE"
        vol.datastore.used_gb += add_gb
        vol.size_mb = size
        vol.content.live.size = size * 1024 * 1024
        sim.cbt_reset(vol)  # volume expansion breaks the CBT chain

    t = sim.start_task("ExpandVolume", sim.urn("volumes", vol.id), vol.name,
                       sim.config.task_seconds["expand"], on_success=done,
                       on_fail=lambda: setattr(vol, "status", "USE"), vm=vol.vm, volume=vol,
                       user=user)
    return task_ref(sim, t)


def attach_volume(sim: VrmState, vm: Vm, body: dict[str, Any]) -> dict[str, str]:
    vol = sim.by_urn(str(body.get("volUrn", "")), "volumes")
    if vol is None:
        raise bad("volUrn does not exist.", C.VOLUME_NOT_FOUND)
    pci = body.get("pciType", "VIRTIO")
    if pci not in ("IDE", "SCSI", "VIRTIO"):
        raise bad("pciType must be IDE, SCSI or VIRTIO.")
    if vm.status not in ("running", "stopped"):
        raise bad(f"The VM is {vm.status}; attach needs running or stopped.", C.STATE)
    if vol.vm is not None:
        raise bad("The volume is already attached.", C.VOLUME_ATTACHED)
    sim.vm_busy_check(vm)
    sim.vm_resource_check(vm)
    used = {d.sequence_num for d in vm.disks if d.pci_type == pci}
    seq = _int(body, "sequenceNum")
    if seq is None:
        seq = next((i for i in range(1, 61) if i not in used), None)
        if seq is None:
            raise bad("No free slot on that bus.", C.STATE)
    if not 1 <= seq <= 60:
        raise bad("sequenceNum must be 1-60.")
    if seq in used:
        raise bad(f"sequenceNum {seq} is already used on the {pci} bus.")
    vol.vm = vm  # reserve at once so a second attach is refused
    disk = Disk(vol, seq, pci)

    def done() -> None:
        vm.disks.append(disk)
        vm.disks.sort(key=lambda d: d.sequence_num)

    def failed() -> None:
        vol.vm = None

    t = sim.start_task("AttachVolume", sim.vm_urn(vm), vm.name, sim.config.task_seconds["volume"],
                       on_success=done, on_fail=failed, vm=vm)
    return task_ref(sim, t)


def detach_volume(sim: VrmState, vm: Vm, body: dict[str, Any]) -> dict[str, str]:
    vol = sim.by_urn(str(body.get("volUrn", "")), "volumes")
    disk = next((d for d in vm.disks if d.volume is vol), None)
    if vol is None or disk is None:
        raise bad("volUrn is not attached to this VM.", C.VOLUME_NOT_FOUND)
    if vm.status not in ("running", "stopped"):
        raise bad(f"The VM is {vm.status}; detach needs running or stopped.", C.STATE)
    sim.vm_busy_check(vm)
    sim.volume_resource_check(vol)
    if any(vs.volume is vol for s in vm.snapshots.values() for vs in s.vols):
        raise bad("The volume is part of a VM snapshot.", C.VOLUME_BUSY)

    def done() -> None:
        if disk in vm.disks:
            vm.disks.remove(disk)
        vol.vm = None

    t = sim.start_task("DetachVolume", sim.vm_urn(vm), vm.name, sim.config.task_seconds["volume"],
                       on_success=done, vm=vm)
    return task_ref(sim, t)


def create_volume(sim: VrmState, body: dict[str, Any]) -> dict[str, str]:
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise bad("name is required.")
    gb = _int(body, "quantityGB")
    if gb is None or gb <= 0:
        raise bad("quantityGB must be a positive integer.")
    ds = sim.by_urn(str(body.get("datastoreUrn", "")), "datastores")
    if ds is None:
        raise bad("datastoreUrn does not exist.")
    type_ = body.get("type", "normal")
    if type_ not in ("normal", "share"):
        raise bad("type must be normal or share.")
    if ds.free_gb < gb:
        raise bad(f"Datastore {ds.name} has only {ds.free_gb} GB free.", C.NO_SPACE)
    indep = _bool(body, "indepDisk")
    persistent = _bool(body, "persistentDisk", True)
    if type_ == "share" or ds.storage_type in ("LUN",):
        indep, persistent = True, True
    vol = new_volume(sim, name, gb * 1024, ds, is_thin=_bool(body, "isThin", ds.is_thin),
                     type_=type_, indep=indep, persistent=persistent,
                     vol_type=_int(body, "volType", 0) or 0)
    vol.status = "CREATING"

    def done() -> None:
        vol.status = "USE"

    def failed() -> None:
        vol.gone = True
        ds.used_gb -= gb

    urn = sim.urn("volumes", vol.id)
    t = sim.start_task("CreateVolume", urn, name, sim.config.task_seconds["volume"],
                       on_success=done, on_fail=failed, volume=vol)
    return {"urn": urn, "uri": sim.uri(urn), **task_ref(sim, t)}


def new_volume(sim: VrmState, name: str, size_mb: int, ds: Datastore, *, is_thin: bool = True,
               type_: str = "normal", indep: bool = False, persistent: bool = True,
               vol_type: int = 0) -> Volume:
    vid = sim.new_id()
    content = DiskContent(sim.factory, sim.seed, vid, size_mb * 1024 * 1024, 0.0)
    vol = Volume(id=vid, name=name, uuid=sim.new_uuid(), size_mb=size_mb, datastore=ds,
                 content=content, is_thin=is_thin, type=type_, indep=indep,
                 persistent=persistent, vol_type=vol_type)
    ds.used_gb += max(1, size_mb // 1024)
    sim.volumes[vid] = vol
    sim.touch()
    return vol


def modify_volume(sim: VrmState, vol: Volume, body: dict[str, Any]) -> None:
    if "name" in body:
        if not isinstance(body["name"], str) or not body["name"]:
            raise bad("name must be a non-empty string.")
        vol.name = body["name"]
    if "indepDisk" in body:
        vol.indep = _bool(body, "indepDisk")
    if "persistentDisk" in body:
        vol.persistent = _bool(body, "persistentDisk", True)
    if "type" in body:
        if body["type"] not in ("normal", "share"):
            raise bad("type must be normal or share.")
        vol.type = body["type"]
        if vol.type == "share":
            vol.indep, vol.persistent = True, True
    sim.touch()


def delete_volume(sim: VrmState, vol: Volume) -> dict[str, str]:
    if vol.vm is not None:
        raise bad("The volume is attached to a VM.", C.VOLUME_ATTACHED)
    if vol.resource is not None:
        raise bad("The volume has a backup resource.", C.VOLUME_BUSY)
    if vol.busy_task is not None and vol.busy_task.active:
        raise bad("The volume has an unfinished task.", C.VOLUME_BUSY)
    vol.status = "DELETING"

    def done() -> None:
        vol.gone = True
        vol.datastore.used_gb -= vol.quantity_gb
        # Its written blocks go with it (snapshots keep their own copies of the overlay): a
        # simulator that restores and deletes volumes for hours otherwise grows without bound, and
        # past ~2 GB every fresh page it touches costs the kernel several times more.
        vol.content.live.overlay.clear()
        vol.content.live.mutations += 1
        vol.content.live.digest_cache = None

    t = sim.start_task("DeleteVolume", sim.urn("volumes", vol.id), vol.name,
                       sim.config.task_seconds["delete"], on_success=done,
                       on_fail=lambda: setattr(vol, "status", "USE"), volume=vol)
    return task_ref(sim, t)


# Fields a VM detail carries that a create body may not (vrm-api.md §6.2-§6.3, §11 create VM): state the
# VRM reports (status, host, Tools, times), `cpu.affinitySet`, the disks' `volumeUrl` and `storageType`
# ("query only"), the Tools-reported `osOptions.hostname`. Refusing them with 10000003 is [I]: how a
# real VRM answers unknown or read-only fields is not public; a strict one answers 400.
VM_QUERY_ONLY = frozenset({"urn", "uri", "status", "hostUrn", "hostName", "clusterUrn", "clusterName",
                           "locationName", "pvDriverStatus", "toolInstallStatus", "cdRomStatus", "toolsVersion",
                           "createTime", "deleteTime", "idle", "vncAcessInfo", "drStatus", "rpoStatus",
                           "initSyncStatus", "additionalStatus", "dataStoreUrns", "objectPrivs"})
VM_QUERY_ONLY_CPU = frozenset({"affinitySet"})
VM_QUERY_ONLY_DISK = frozenset({"volumeUrl", "storageType"})
VM_QUERY_ONLY_OS = frozenset({"hostname"})


def _query_only_fields(body: dict[str, Any]) -> list[str]:
    found = sorted(VM_QUERY_ONLY & set(body))
    cfg = body.get("vmConfig")
    if isinstance(cfg, dict):
        cpu = cfg.get("cpu")
        if isinstance(cpu, dict):
            found += [f"vmConfig.cpu.{k}" for k in sorted(VM_QUERY_ONLY_CPU & set(cpu))]
        for i, d in enumerate(cfg.get("disks") or []):
            if isinstance(d, dict):
                found += [f"vmConfig.disks[{i}].{k}" for k in sorted(VM_QUERY_ONLY_DISK & set(d))]
    os_opts = body.get("osOptions")
    if isinstance(os_opts, dict):
        found += [f"osOptions.{k}" for k in sorted(VM_QUERY_ONLY_OS & set(os_opts))]
    return found


def create_vm(sim: VrmState, body: dict[str, Any]) -> dict[str, str]:
    query_only = _query_only_fields(body)
    if query_only:
        raise bad("These fields cannot be set when creating a VM: " + ", ".join(query_only) + ".")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise bad("name is required.")
    loc = body.get("location")
    host = sim.by_urn(str(loc), "hosts") if loc else None
    if host is None and loc:
        cl = sim.by_urn(str(loc), "clusters")
        if cl is not None:
            host = next((h for h in sim.hosts.values() if h.cluster is cl), None)
    if host is None:
        raise bad("location must be an existing host or cluster URN.")
    cfg = body.get("vmConfig") or {}
    if not isinstance(cfg, dict):
        raise bad("vmConfig must be an object.")
    os_opts = body.get("osOptions") or {}
    osv = _int(os_opts, "osVersion", 302) if isinstance(os_opts, dict) else 302
    assert osv is not None
    cpu = _int(cfg.get("cpu") or {}, "quantity", 2) or 2
    mem = _int(cfg.get("memory") or {}, "quantityMB", 4096) or 4096
    disks_in = cfg.get("disks") or []
    if not isinstance(disks_in, list) or len(disks_in) > 60:
        raise bad("vmConfig.disks must be a list.")
    # validate everything before changing anything
    plan: list[tuple[dict[str, Any], Volume | None, Datastore | None]] = []
    seen: set[tuple[str, int]] = set()
    for i, dj in enumerate(disks_in):
        if not isinstance(dj, dict):
            raise bad("disk entries must be objects.")
        seq = _int(dj, "sequenceNum", i + 1) or i + 1
        pci = dj.get("pciType", "VIRTIO")
        if pci not in ("IDE", "SCSI", "VIRTIO"):
            raise bad("pciType must be IDE, SCSI or VIRTIO.")
        if (pci, seq) in seen:
            raise bad(f"sequenceNum {seq} is used twice on the {pci} bus.")
        seen.add((pci, seq))
        if dj.get("volumeUrn"):
            vol = sim.by_urn(str(dj["volumeUrn"]), "volumes")
            if vol is None:
                raise bad(f"Volume {dj['volumeUrn']} does not exist.", C.VOLUME_NOT_FOUND)
            if vol.vm is not None:
                raise bad(f"Volume {vol.name} is already attached.", C.VOLUME_ATTACHED)
            plan.append((dj, vol, None))
        else:
            ds = sim.by_urn(str(dj.get("datastoreUrn", "")), "datastores")
            gb = _int(dj, "quantityGB")
            if ds is None or not gb or gb <= 0:
                raise bad("A new disk needs quantityGB and datastoreUrn.")
            if ds.free_gb < gb:
                raise bad(f"Datastore {ds.name} has only {ds.free_gb} GB free.", C.NO_SPACE)
            plan.append((dj, None, ds))
    nics = _plan_nics(sim, cfg.get("nics"))
    auto = _bool(body, "autoBoot")
    vm = Vm(id=sim.new_vm_id(), uuid=str(body.get("uuid") or sim.new_uuid()), name=name,
            status="creating", host=host, cluster=host.cluster, os_type=OS_TYPE[os_kind(osv)],
            os_version=osv, cpu=cpu, mem_mb=mem, disks=[], nics=nics, tools_version="",
            pv_status="notRunning", create_time=sim.now(),
            description=str(body.get("description", "")), group=str(body.get("group", "")),
            is_template=_bool(body, "isTemplate"))
    for i, (dj, vol, ds) in enumerate(plan):
        if vol is None:
            assert ds is not None
            vol = new_volume(sim, f"{name}-disk{i}", int(dj["quantityGB"]) * 1024, ds,
                             is_thin=bool(dj.get("isThin", True)))
        vol.vm = vm
        vm.disks.append(Disk(vol, _int(dj, "sequenceNum", i + 1) or i + 1,
                             dj.get("pciType", "VIRTIO")))
    sim.vms[vm.id] = vm
    urn = sim.vm_urn(vm)

    def done() -> None:
        vm.status = "stopped"
        if auto and not vm.is_template:
            vm.status = "running"
            boot_vm(sim, vm)

    def failed() -> None:
        vm.gone = True
        for d in vm.disks:
            d.volume.vm = None

    t = sim.start_task("CreateVm", urn, name, sim.config.task_seconds["create_vm"],
                       on_success=done, on_fail=failed, vm=vm)
    return {"urn": urn, "uri": sim.uri(urn), **task_ref(sim, t)}


def _plan_nics(sim: VrmState, nics_in: Any) -> list[Nic]:
    """``vmConfig.nics[]`` of a create body: each on an existing port group of this site (an unknown
    ``portGroupUrn`` is refused before anything is created)."""
    if nics_in is None:
        return []
    if not isinstance(nics_in, list) or len(nics_in) > 12:
        raise bad("vmConfig.nics must be a list (at most 12).")
    out: list[Nic] = []
    for k, nj in enumerate(nics_in):
        if not isinstance(nj, dict):
            raise bad("nic entries must be objects.")
        pg_urn = nj.get("portGroupUrn")
        if not isinstance(pg_urn, str) or not pg_urn:
            raise bad(f"vmConfig.nics[{k}].portGroupUrn is required.")
        if sim.port_group_by_urn(pg_urn) is None:
            raise bad(f"The port group {pg_urn} does not exist.", C.PORTGROUP_NOT_FOUND)
        seq = _int(nj, "sequenceNum", k) or 0
        mac = nj.get("mac")
        if not isinstance(mac, str) or not mac:
            n = sim.rng.getrandbits(24)
            mac = f"28:6e:d4:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"
        out.append(Nic(name=str(nj.get("name") or f"Nic{k}"), mac=mac, ip="", port_group_urn=pg_urn,
                       sequence_num=seq))
    return out


def delete_vm(sim: VrmState, vm: Vm, reserve_disks: bool) -> dict[str, str]:
    if vm.status in ("unknown", "fault-resuming"):
        raise bad(f"The VM is {vm.status}; it cannot be deleted now.", C.STATE)
    sim.vm_busy_check(vm)
    if vm.snapshots:
        raise bad("The VM has snapshots; delete them first.", C.VM_HAS_SNAPSHOTS)
    if any(d.volume.resource is not None for d in vm.disks):
        raise bad("A disk of the VM has a backup resource.", C.RESOURCE_PREPARED)
    if vm.status not in ("stopped", "running", "hibernated", "pause"):
        raise bad(f"The VM is {vm.status}.", C.STATE)
    before = vm.status
    vm.status = "shutting-down"

    def done() -> None:
        vm.gone = True
        for d in vm.disks:
            d.volume.vm = None
            if not reserve_disks:
                d.volume.gone = True
                d.volume.datastore.used_gb -= d.volume.quantity_gb
        sim.touch()

    def failed() -> None:
        vm.status = before

    t = sim.start_task("DeleteVm", sim.vm_urn(vm), vm.name, sim.config.task_seconds["delete"],
                       on_success=done, on_fail=failed, vm=vm)
    return task_ref(sim, t)


def modify_vm(sim: VrmState, vm: Vm, body: dict[str, Any]) -> dict[str, str]:
    sim.vm_busy_check(vm)
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise bad("name must be a non-empty string.")
    cfg = body.get("vmConfig") or {}
    cpu = _int(cfg.get("cpu") or {}, "quantity") if isinstance(cfg, dict) else None
    mem = _int(cfg.get("memory") or {}, "quantityMB") if isinstance(cfg, dict) else None
    if cpu is not None and not 1 <= cpu <= 64:
        raise bad("cpu quantity must be 1-64.")

    def done() -> None:
        if name:
            vm.name = name
        if "description" in body:
            vm.description = str(body["description"])
        if cpu:
            vm.cpu = cpu
        if mem:
            vm.mem_mb = mem

    t = sim.start_task("ModifyVm", sim.vm_urn(vm), vm.name, sim.config.task_seconds["modify"],
                       on_success=done, vm=vm)
    return task_ref(sim, t)


# ---------------------------------------------------------------------------------------------
# Control API: events and operations by "someone else"
# ---------------------------------------------------------------------------------------------
EVENTS = ("power-off", "ha-restart", "snapshot-revert", "volume-expansion", "host-reboot")


# Task types the chain-breaking events leave behind, as a VRM records them ([I]: the catalogue of
# task types is not public; names follow the API's own, e.g. StopVm, ResumeVmSnapshot, ExpandVolume).
EVENT_TASKS = {"power-off": "StopVm", "ha-restart": "HARestartVm", "snapshot-revert": "ResumeVmSnapshot",
               "volume-expansion": "ExpandVolume", "host-reboot": "RebootHost"}
SYSTEM_USER = "system"


def apply_event(sim: VrmState, vm: Vm, event: str) -> dict[str, Any]:
    """Chain-breaking events, applied at once. Each leaves a finished VRM task behind (by "system" for
    what the platform did on its own, by another administrator for a revert or an expansion), so a
    client can tell from the task list alone that the CBT chain broke. Returns what changed."""
    touched: list[Volume] = []
    entity, entity_name, user = sim.vm_urn(vm), vm.name, SYSTEM_USER
    if event == "power-off":
        vm.status = "stopped"
        vm.pv_status = "notRunning"
        touched = [d.volume for d in vm.disks]
    elif event == "ha-restart":
        # the VM is restarted by HA, possibly elsewhere; CBT bitmaps in memory are lost
        others = [h for h in sim.hosts.values() if h.cluster is vm.cluster and h is not vm.host]
        if others:
            vm.host = others[0]
        vm.status = "running"
        vm.pv_status = "running" if vm.tools_version else "notRunning"
        touched = [d.volume for d in vm.disks]
    elif event == "snapshot-revert":
        target = vm.current_snapshot or next(
            (s for s in sorted(vm.snapshots.values(), key=lambda s: -s.id)
             if s.status == "ready"), None)
        if target is not None and target.status == "ready":
            apply_revert(sim, vm, target)
            entity, entity_name = sim.snap_urn(target), target.name  # as POST .../resumevm does
        user = OTHER_USER
        touched = [d.volume for d in vm.disks]
    elif event == "volume-expansion":
        vol = next((d.volume for d in vm.disks if not d.volume.indep), vm.disks[0].volume
                   if vm.disks else None)
        if vol is None:
            raise bad("The VM has no disk.")
        vol.size_mb += 1024
        vol.content.live.size = vol.size_mb * 1024 * 1024
        vol.datastore.used_gb += 1
        touched = [vol]
        entity, entity_name, user = sim.urn("volumes", vol.id), vol.name, OTHER_USER
    elif event == "host-reboot":
        host = vm.host
        for other in sim.vms.values():
            if other.host is host and not other.gone:
                touched.extend(d.volume for d in other.disks)
        entity, entity_name = sim.urn("hosts", host.id), host.name
    else:
        raise bad(f"event must be one of {', '.join(EVENTS)}.")
    for vol in touched:
        sim.cbt_reset(vol)
    t = sim.record_task(EVENT_TASKS[event], entity, entity_name, user)
    sim.touch()
    return {"event": event, "volumes": [sim.urn("volumes", v.id) for v in touched],
            "taskUrn": sim.task_urn(t), "taskUri": sim.uri(sim.task_urn(t))}


OTHER_USER = "other-admin"


def other_operation(sim: VrmState, vm: Vm, op: str) -> dict[str, str]:
    if op == "power-on":
        return power(sim, vm, "start", {}, user=OTHER_USER)
    if op == "power-off":
        return power(sim, vm, "stop", {"mode": "force"}, user=OTHER_USER)
    if op == "expand":
        vol = next((d.volume for d in vm.disks if not d.volume.indep), None)
        if vol is None:
            raise bad("The VM has no expandable disk.")
        return expand_volume(sim, vol, {"size": vol.size_mb + 1024}, user=OTHER_USER)
    if op == "migrate":
        target = next((h for h in sim.hosts.values()
                       if h.cluster is vm.cluster and h is not vm.host), None)
        if target is None:
            raise bad("No other host in the cluster.")
        return migrate_vm(sim, vm, {"location": sim.urn("hosts", target.id)}, user=OTHER_USER)
    raise bad("op must be power-on, power-off, expand or migrate.")


def storage_migration(sim: VrmState, vm: Vm, action: str) -> dict[str, Any]:
    if action == "start":
        t = start_storage_migration(sim, vm, user=OTHER_USER)
        return task_ref(sim, t)
    if action == "stop":
        t = vm.busy_task
        if t is None or not t.active or t.type != "MigrateVolume":
            raise bad("No storage migration is running on this VM.")
        sim.finish_forever_task(t)
        return task_ref(sim, t)
    raise bad("action must be start or stop.")


def write_ranges(body: dict[str, Any]) -> tuple[int | None, list[tuple[int, int]] | None]:
    if "blocks" in body:
        n = _int(body, "blocks")
        if n is None or n < 0:
            raise bad("blocks must be a non-negative integer.")
        return n, None
    ranges = body.get("ranges")
    if not isinstance(ranges, list):
        raise bad("Give blocks: N or ranges: [[start, count], ...].")
    out = []
    for r in ranges:
        if (not isinstance(r, (list, tuple)) or len(r) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in r)):
            raise bad("each range is [start, count].")
        out.append((r[0], r[1]))
    return None, out


def cbt_state(sim: VrmState, vol: Volume) -> dict[str, Any]:
    return {"volCBTCreateTime": vol.cbt_create_time or "", "chgID": str(vol.cbt_version),
            "blocks": vol.content.blocks_in(vol.content.live), "blockSize": sim.block_size}

