"""JSON shapes of the simulated objects, with VRM's exact field names and enum spellings."""

from __future__ import annotations

import weakref
from typing import Any

from fctui.sim.ops import count_snapshots, resource_status
from fctui.sim.state import (
    BackupResource,
    Cluster,
    Datastore,
    Disk,
    DvSwitch,
    Host,
    PortGroup,
    Snapshot,
    Task,
    Vm,
    Volume,
    VrmState,
    fmt_time,
)


def site(sim: VrmState) -> dict[str, Any]:
    urn = sim.site_urn
    return {"urn": urn, "uri": sim.uri(urn), "name": sim.site.name, "ip": sim.site.ip,
            "isDC": False, "isSelf": True, "status": "normal"}


def cluster(sim: VrmState, c: Cluster) -> dict[str, Any]:
    urn = sim.urn("clusters", c.id)
    hosts = [h for h in sim.hosts.values() if h.cluster is c]
    cpu = sum(h.cpu_quantity for h in hosts)
    mem = sum(h.mem_mb for h in hosts)
    return {"urn": urn, "uri": sim.uri(urn), "name": c.name, "parentObjUrn": sim.site_urn,
            "parentObjName": sim.site.name, "description": "", "tag": "",
            "arch": c.arch,
            "cpuResource": {"totalSizeMHz": cpu * 2600, "allocatedSizeMHz": cpu * 900},
            "memResource": {"totalSizeMB": mem, "allocatedSizeMB": mem // 3},
            "params": {}}


# [I] server models by architecture: the values are ours, the fields are NOVA's (vrm-api.md §16)
HOST_MODELS = {"x86_64": "2288H V5", "aarch64": "TaiShan 200 (Model 2280)"}


def host(sim: VrmState, h: Host) -> dict[str, Any]:
    urn = sim.urn("hosts", h.id)
    curn = sim.urn("clusters", h.cluster.id)
    return {"urn": urn, "uri": sim.uri(urn), "name": h.name, "description": "", "ip": h.ip,
            "bmcIp": h.bmc_ip, "clusterUrn": curn, "clusterName": h.cluster.name,
            "status": h.status, "isMaintaining": False, "memQuantityMB": h.mem_mb,
            "cpuQuantity": h.cpu_quantity, "cpuMHz": 2600,
            # vrm-api.md §16: NOVA's cluster.py reads vendor, model and physicalCpuQuantity of hosts
            "vendor": "Huawei", "model": HOST_MODELS.get(h.arch, "2288H V5"),
            "physicalCpuQuantity": 2, "nicQuantity": 4, "arch": h.arch,
            "haState": "normal", "haRole": "slave", "hostRealName": h.name,
            "computeResourceStatics": "", "cpuResource": {"totalSizeMHz": h.cpu_quantity * 2600},
            "memResource": {"totalSizeMB": h.mem_mb}, "params": {}}


def datastore(sim: VrmState, d: Datastore, link_status: bool = False) -> dict[str, Any]:
    urn = sim.urn("datastores", d.id)
    free = d.free_gb
    return {"urn": urn, "uri": sim.uri(urn), "name": d.name, "storageType": d.storage_type,
            "status": "CONNECTED" if link_status else d.status,
            "capacityGB": d.capacity_gb, "usedSizeGB": d.used_gb, "freeSizeGB": free,
            "actualCapacityGB": d.capacity_gb, "actualFreeSizeGB": free, "isThin": d.is_thin,
            "thinRate": 100, "clusterSize": 1024, "dsLockType": 0,
            "hosts": [sim.urn("hosts", h.id) for h in d.hosts], "suUrn": "", "suName": "",
            "refreshTime": fmt_time(sim.now()), "version": "", "description": "",
            "storageUnits": [], "siocFlag": 0, "params": {}}


def volume(sim: VrmState, v: Volume, owner: bool = False) -> dict[str, Any]:
    urn = sim.urn("volumes", v.id)
    ds = v.datastore
    disk = _disk_of(v)
    out: dict[str, Any] = {
        "urn": urn, "uri": sim.uri(urn), "uuid": v.uuid, "name": v.name,
        "quantityGB": v.quantity_gb, "status": v.status, "storageType": ds.storage_type,
        "isThin": v.is_thin, "type": v.type, "datastoreUrn": sim.urn("datastores", ds.id),
        "datastoreName": ds.name, "indepDisk": v.indep, "persistentDisk": v.persistent,
        "volNameOnDev": f"vol_{v.uuid[:8]}", "volProvisionSize": v.size_mb,
        "userUsedSize": int(v.size_mb * min(1.0, v.content.fill)), "isDiffVol": v.is_diff, "volType": v.vol_type,
        **volume_qos(v),
        "pciType": disk.pci_type if disk else "VIRTIO", "occupiedVolume": False,
        "bindToVm": 3 if v.vm is not None else 2, "srcVolumeUrn": "",
        "volumeUseType": 4 if (sim.config.volume_use_type_snapshots and v.use_type == 0 and _has_snapshots(v))
        else v.use_type,
        # vrm-api.md §16: the eSDK declares siocFlag an Integer and ioWeight a String
        "ioWeight": "0", "siocFlag": 0, "volumeUrl": _volume_url(sim, v),
        "linkCloneParent": v.link_clone_parent, "volInfoUrl": "", "drExtParams": "",
        "params": {}, "pvscsiSupport": v.pvscsi, "storageVersion": "", "storageSN": "",
        "lunId": "", "sdUrn": None, "sdUri": None, "iscsi": None,
        "volumeFormat": v.volume_format, "customProperties": {},
    }
    if owner:
        vm = v.vm
        out.update({"vmName": vm.name if vm else "", "vmUrn": sim.vm_urn(vm) if vm else "",
                    "vmStatus": vm.status if vm else "",
                    "clusterName": vm.cluster.name if vm else "",
                    "clusterUrn": sim.urn("clusters", vm.cluster.id) if vm else ""})
    return out


# IO limits set by POST <volume>/modifyIOpropertyOfVolume (0 = unlimited). Kept beside the volumes
# rather than in them: only that call changes them.
QOS_FIELDS = ("maxReadBytes", "maxWriteBytes", "maxReadRequest", "maxWriteRequest")
VOLUME_IO: "weakref.WeakKeyDictionary[Volume, dict[str, int]]" = weakref.WeakKeyDictionary()


def volume_qos(v: Volume) -> dict[str, int]:
    io = VOLUME_IO.get(v)
    return {k: (io or {}).get(k, 0) for k in QOS_FIELDS}


def _has_snapshots(v: Volume) -> bool:
    vm = v.vm
    return vm is not None and any(vs.volume is v for s in vm.snapshots.values() for vs in s.vols)


def _disk_of(v: Volume) -> Disk | None:
    vm = v.vm
    if vm is None:
        return None
    return next((d for d in vm.disks if d.volume is v), None)


def _volume_url(sim: VrmState, v: Volume) -> str:
    st = v.datastore.storage_type
    if st in ("LOCALPOME", "LUNPOME", "NAS", "advanceSan"):
        return f"/POME/{v.datastore.name}/{v.name}.img"
    return f"/dev/disk/by-id/{st.lower()}-{v.uuid[:13]}:0:{v.size_mb * 1024 * 1024}"


def vm_disk(sim: VrmState, d: Disk) -> dict[str, Any]:
    v = d.volume
    ds = v.datastore
    return {
        "sequenceNum": d.sequence_num, "pciType": d.pci_type,
        "volumeUrn": sim.urn("volumes", v.id), "volumeUri": sim.uri(sim.urn("volumes", v.id)),
        "volumeUuid": v.uuid, "volumeUrl": _volume_url(sim, v), "diskName": v.name,
        "quantityGB": v.quantity_gb, "datastoreUrn": sim.urn("datastores", ds.id),
        "datastoreName": ds.name, "storageType": ds.storage_type, "isThin": v.is_thin,
        "volType": v.vol_type, "indepDisk": v.indep, "persistentDisk": v.persistent,
        "type": v.type, "systemVolume": d.sequence_num == 1, "volumeFormat": v.volume_format,
        **volume_qos(v),
        "ioWeight": "0", "totalRWBytes": 0, "totalRWRequest": 0, "isCoverData": False,
        "isDataCopy": False, "devName": _dev_name(d),
        "bootOrder": 1 if d.sequence_num == 1 else -1, "ioMode": "dataplane",
    }


def _dev_name(d: Disk) -> str:
    """Guest device name [I]: IDE slot 1 is hda and IDE data disks 1001-1004 are hdb.. (NOVA's mapping,
    vrm-api.md §16); the other buses count from vda."""
    if d.pci_type == "IDE":
        slot = 0 if d.sequence_num == 1 else (d.sequence_num - 1000 if d.sequence_num > 1000 else d.sequence_num - 1)
        return f"hd{chr(ord('a') + slot % 26)}"
    return f"vd{chr(ord('a') + (d.sequence_num - 1) % 26)}"


def _port_group_name(sim: VrmState, urn: str) -> str:
    hit = sim.port_group_by_urn(urn)
    return hit[1].name if hit else ""


def _nics(sim: VrmState, vm: Vm, full: bool) -> list[dict[str, Any]]:
    out = []
    for n in vm.nics:
        nic: dict[str, Any] = {"mac": n.mac, "sequenceNum": n.sequence_num, "ip": n.ip,
                               "ipList": n.ip, "ips6": []}
        if full:
            nic.update({"name": n.name, "portGroupUrn": n.port_group_urn,
                        "portGroupName": _port_group_name(sim, n.port_group_urn), "urn": f"{sim.vm_urn(vm)}:nics:{n.sequence_num}",
                        "virtIo": 1, "nicType": 2})
        out.append(nic)
    return out


def vm(sim: VrmState, v: Vm, detail: int = 2) -> dict[str, Any]:
    urn = sim.vm_urn(v)
    out: dict[str, Any] = {"uri": sim.uri(urn), "urn": urn, "uuid": v.uuid, "name": v.name,
                           "status": v.status, "idle": v.idle}
    if detail == 0:
        return out
    hurn = sim.urn("hosts", v.host.id)
    curn = sim.urn("clusters", v.cluster.id)
    out.update({
        "description": v.description, "group": v.group, "location": curn,
        "locationName": v.cluster.name, "hostUrn": hurn, "clusterUrn": curn,
        "pvDriverStatus": v.pv_status, "toolInstallStatus": v.tool_install_status,
        "cdRomStatus": v.cdrom_status, "isTemplate": v.is_template,
        "isLinkClone": v.is_link_clone, "createTime": fmt_time(v.create_time),
        # vrm-api.md §16: imcSetting is a String in the eSDK ("" = no IMC mode set) [I: value]
        "imcSetting": "", "minCompatibleimcSetting": "", "toolsVersion": v.tools_version,
        "isBindingHost": False, "hostName": v.host.name, "clusterName": v.cluster.name,
        "drStatus": 0, "vmType": v.vm_type, "rpoStatus": 0, "initSyncStatus": 0,
    })
    if detail == 1:
        out["vmConfig"] = {"nics": _nics(sim, v, False),
                           "properties": {"secureVmType": ""}}
        return out
    out.update({
        "dataStoreUrns": sorted({sim.urn("datastores", d.volume.datastore.id) for d in v.disks}),
        "isMultiDiskSpeedup": False, "deleteTime": "", "additionalStatus": [],
        "vmConfig": {
            "cpu": {"quantity": v.cpu, "coresPerSocket": 1, "reservation": 0, "weight": 1000,
                    "limit": 0, "cpuHotPlug": 0, "affinitySet": []},
            "memory": {"quantityMB": v.mem_mb, "reservation": 0, "weight": v.mem_mb * 10,
                       "limit": 0, "memHotPlug": 0},
            "disks": [vm_disk(sim, d) for d in v.disks],
            "nics": _nics(sim, v, True), "usb": [], "gpu": [],
            "properties": {"bootOption": "disk", "isEnableHa": True, "vmFaultProcess": "notify",
                           "clockMode": "freeClock", "isEnableMemVol": False,
                           "isAutoUpgrade": True, "secureVmType": "",
                           "bootFirmware": v.boot_firmware},
        },
        "vmRebootConfig": {"cpu": {"quantity": v.cpu}, "memory": {"quantityMB": v.mem_mb}},
        "osOptions": {"osType": v.os_type, "osVersion": v.os_version, "hostname": v.hostname,
                      "guestOSName": v.guest_os_name},
        "objectPrivs": [], "params": {}, "customProperties": {},
        "haConfig": {"isEnableHa": True}, "arch": v.arch, "hugePage": "4K",
        "snapshotNum": len(v.snapshots),
    })
    if not v.is_template:
        out["vncAcessInfo"] = {"hostIp": v.host.ip, "vncPort": 5900 + int(v.id[2:], 16) % 1000,
                               "vncPassword": ""}
    return out


def snapshot_node(sim: VrmState, s: Snapshot) -> dict[str, Any]:
    urn = sim.snap_urn(s)
    return {"urn": urn, "uri": sim.uri(urn), "name": s.name, "description": s.description,
            "createTime": fmt_time(s.create_time), "type": s.type, "status": s.status,
            "childSnapshots": [snapshot_node(sim, c) for c in sorted(s.children, key=lambda c: c.id)]}


def snapshot_tree(sim: VrmState, v: Vm) -> dict[str, Any]:
    roots = sorted((s for s in v.snapshots.values() if s.parent is None), key=lambda s: s.id)
    cur = v.current_snapshot
    out: dict[str, Any] = {"rootSnapshots": [snapshot_node(sim, s) for s in roots]}
    if cur is not None and cur.id in v.snapshots:
        urn = sim.snap_urn(cur)
        out["currentSnapshot"] = {"urn": urn, "uri": sim.uri(urn), "name": cur.name}
    else:
        out["currentSnapshot"] = None
    normal, backup = count_snapshots(v)
    out["normalSnapshotNum"] = normal
    out["backupSnapshotNum"] = backup
    return out


def snapshot_detail(sim: VrmState, s: Snapshot) -> dict[str, Any]:
    urn = sim.snap_urn(s)
    vols = []
    total_mb = 0
    for vs in s.vols:
        v = vs.volume
        vurn = sim.urn("volumes", v.id)
        size_mb = vs.state.size // (1024 * 1024)
        total_mb += size_mb
        vols.append({"volumeUrn": vurn, "volumeUri": sim.uri(vurn),
                     "storageType": v.datastore.storage_type,
                     "datastoreUrn": sim.urn("datastores", v.datastore.id),
                     "snapUuid": vs.snap_uuid, "snapNameOnDev": f"snap_{vs.snap_uuid[:8]}",
                     "snapIscsi": None, "sdUrn": None, "sdUri": None,
                     "volCBTCreateTime": vs.cbt_create_time, "chgID": str(vs.chg_id),
                     "quantityMB": size_mb})
    return {"urn": urn, "uri": sim.uri(urn), "name": s.name, "description": s.description,
            "type": s.type, "status": s.status, "createTime": fmt_time(s.create_time),
            "snapProvisionSize": total_mb // 8, "coreNum": s.vm.cpu,
            "memorySize": s.vm.mem_mb if s.need_memory else 0, "volumeSizeSum": total_mb,
            "includingMemorySnapshot": s.need_memory, "isConsistent": s.is_consistent,
            "volsnapshots": vols}


def task(sim: VrmState, t: Task) -> dict[str, Any]:
    urn = sim.task_urn(t)
    status, progress = sim.task_view_state(t)
    start, finish = sim.task_times(t)
    return {"urn": urn, "uri": sim.uri(urn), "type": t.type, "entityUrn": t.entity_urn,
            "entityName": t.entity_name, "startTime": start, "finishTime": finish,
            "user": t.user, "status": status, "progress": progress, "reason": t.reason,
            "reasonDes": t.reason_des, "cancelable": t.cancelable and t.active,
            "cancelled": t.cancelled, "params": dict(t.params)}


def resource(sim: VrmState, r: BackupResource, base_url: str) -> dict[str, Any]:
    vurn = sim.urn("volumes", r.volume.id)
    urn = f"{vurn}:backupresources:{r.id}"
    turn = sim.task_urn(r.task)
    status = resource_status(sim, r)
    ready = status == "success"
    # vrm-api.md §16: the eSDK's BackupResource declares hostPort a String
    return {
        "urn": urn, "uri": sim.uri(vurn) + f"/backupresources/{r.id}",
        "resourceUrl": f"{base_url.rstrip('/')}/sim-data/resources/{r.id}" if ready else "",
        "hostIP": r.host.ip if ready else "", "hostPort": str(r.host_port) if ready else "",
        "targetFile": (f"/POME/{r.volume.datastore.name}/{r.volume.name}"
                       + (f"_snap{r.snapshot.id}.img" if r.snapshot else ".img")) if ready else "",
        "token": r.token if ready else "", "status": status,
        "reason": r.task.reason, "reasonDes": r.task.reason_des,
        "runningTime": int(max(0.0, sim.now() - r.created)),
        "caCert": sim.config.tls_ca_pem if (ready and r.trans_mode == "lanssl") else "",
        "taskType": r.task_type, "transMode": r.trans_mode,
        "taskUri": sim.uri(turn), "taskUrn": turn,
        "releasing": r.released_at is not None,
    }


def cluster_vm_compute_resource(sim: VrmState, c: Cluster, need_vcpus: bool,
                                detail: bool) -> dict[str, Any]:
    """``GET <cluster>/allvmcomputeresource``: what the cluster has and what its VMs take. NOVA reads
    cpuResource.{totalVcpus, allocatedVcpus, totalSizeMHz, allocatedSizeMHz}, memResource.{totalSizeMB,
    allocatedSizeMB} and, with detail, the part held by stopped VMs (vrm-api.md §16) [I: the rest]."""
    base = cluster(sim, c)
    vms = [v for v in sim.vms.values() if v.cluster is c and not v.gone and not v.is_template]
    by_state: dict[str, tuple[int, int]] = {}
    for v in vms:
        key = "Running" if v.status == "running" else "Stopped" if v.status == "stopped" else "Other"
        cpu, mem = by_state.get(key, (0, 0))
        by_state[key] = (cpu + v.cpu, mem + v.mem_mb)
    vcpus = sum(h.cpu_quantity for h in sim.hosts.values() if h.cluster is c)
    cpu_res: dict[str, Any] = {**base["cpuResource"], "totalVcpus": vcpus}
    if need_vcpus:
        cpu_res["allocatedVcpus"] = sum(x[0] for x in by_state.values())
    mem_res = {"totalSizeMB": base["memResource"]["totalSizeMB"],
               "allocatedSizeMB": sum(x[1] for x in by_state.values())}
    out: dict[str, Any] = {"cpuResource": cpu_res, "memResource": mem_res}
    if detail:
        states = ("Running", "Stopped", "Other")
        out["detailCpuResource"] = {"allocatedVcpus": {k: by_state.get(k, (0, 0))[0] for k in states}}
        out["detailMemResource"] = {"allocatedSizeMB": {k: by_state.get(k, (0, 0))[1] for k in states}}
    return out


def dvswitch(sim: VrmState, d: DvSwitch) -> dict[str, Any]:
    urn = sim.urn("dvswitchs", d.id)
    return {"urn": urn, "uri": sim.uri(urn), "name": d.name, "description": "", "type": 0, "params": {}}


def portgroup(sim: VrmState, d: DvSwitch, pg: PortGroup) -> dict[str, Any]:
    """[I] fields besides urn/uri/name/vlanId: what ESDK-CS reads; ``isolated`` is the simulator's own
    (a port group without uplink, for DR rehearsals)."""
    urn = sim.port_group_urn(d, pg)
    return {"urn": urn, "uri": sim.uri(urn), "name": pg.name, "description": "", "vlanId": pg.vlan_id,
            "portType": 0, "dvSwitchUrn": sim.urn("dvswitchs", d.id), "isolated": pg.isolated}
