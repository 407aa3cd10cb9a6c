"""Deterministic inventory generator: sites, clusters, hosts (x86 + ARM), datastores of every
storage type, realistic VMs, templates, and one or more VMs for every VRM-visible readiness rule
(names ``edge-<rule-id>-NN``, mapping exposed at ``GET /sim/edge-cases``).

``Simulator`` is a ``VrmState`` with this inventory: built on state.py and ops.py, never
imported by them."""

from __future__ import annotations

import gc
import math
import random
from typing import Any

from fctui.sim import guestdisks, ops
from fctui.sim.content import DiskContent, boot_key, mix64
from fctui.sim.state import (
    OS_TYPE,
    Clock,
    Cluster,
    Datastore,
    Disk,
    DvSwitch,
    Host,
    Nic,
    PortGroup,
    SimConfig,
    Vm,
    Volume,
    VrmState,
    build_os_catalog,
    os_kind,
)

EULER_IDS = (10120, 10121, 10122)
WINDOWS_COMMON = (24, 26, 32, 35)
LINUX_COMMON = (10088, 10090, 10101, 10110, 10120, 10121, 10122, 10130)
ARM_LINUX = (10121, 10122, 10130, 10088)

APPS = ("erp", "crm", "web", "hr", "mail", "bi", "git", "ci", "mon", "log", "file", "pay", "inv",
        "wms", "edi", "sap", "oa", "vpn", "dns", "proxy", "bill", "cms", "iam", "k8s")
ROLES = ("db", "app", "nginx", "api", "cache", "mq", "batch", "fe", "worker", "es", "redis",
         "kafka")
TEMPLATES = ("tpl-centos76-base", "tpl-win2019-std", "tpl-euleros-sp9", "tpl-ubuntu2004",
             "tpl-rhel79-hardened", "tpl-win2016-sql")

PAUSE_CLASSES: dict[str, tuple[float, float, float]] = {
    # class: (base s, per disk s, per GB s)  — 10 x 200 GB on "ordinary" lands in 1-3 s
    "fast": (0.25, 0.03, 0.00035),
    "ordinary": (0.40, 0.05, 0.00060),
    "slow": (0.70, 0.09, 0.00110),
}
# sequenceNum of IDE data disks on older releases (vrm-api.md §16: NOVA MOUNT_DEVICE_SEQNUM_MAP_IDE)
IDE_DATA_SEQ = (1001, 1002, 1003, 1004)
CLASS_CYCLE = ("ordinary", "fast", "ordinary", "slow", "ordinary", "fast")
# port groups of every site's switch: (name, VLAN, isolated); generated NICs go to the non-isolated ones
PORT_GROUPS = (("prod-net", 100, False), ("app-net", 200, False), ("isolated", 999, True))


def site_prefix(site_index: int) -> str:
    """Names (clusters, hosts, datastores, port groups; not VMs) of site 1 are as they always were; site
    2's start "dr-" (its DR site), later ones "sN-"."""
    return "" if site_index == 0 else "dr-" if site_index == 1 else f"s{site_index + 1}-"


def arm_share(site_index: int) -> float:
    """Share of regular VMs on ARM: 8 % on site 1, 35 % on the even-numbered (DR) sites."""
    return 0.08 if site_index % 2 == 0 else 0.35


class _Gen:
    def __init__(self, sim: VrmState) -> None:
        self.sim = sim
        self.rng = random.Random(mix64(sim.seed, 0x6E4))
        self.name_counts: dict[str, int] = {}
        self.nic_seq = 0
        self.site_index = sim.config.site_index
        self.prefix = site_prefix(self.site_index)
        self.nic_groups: list[str] = []

    def network(self) -> None:
        """One distributed switch with PORT_GROUPS (names prefixed per site); no random draws, so the
        rest of the inventory is what it was before port groups."""
        sim = self.sim
        dvs = DvSwitch(id=1, name="ManagementDVS")
        for i, (name, vlan, isolated) in enumerate(PORT_GROUPS, start=1):
            dvs.port_groups[i] = PortGroup(id=i, name=self.prefix + name,
                                           vlan_id=vlan + 1000 * self.site_index, isolated=isolated)
        sim.dvswitches[dvs.id] = dvs
        self.nic_groups = [sim.port_group_urn(dvs, pg) for pg in dvs.port_groups.values() if not pg.isolated]

    # --- infrastructure ----------------------------------------------------------------------
    def infrastructure(self, n_vms: int) -> None:
        sim, rng = self.sim, self.rng
        n_clusters = max(2, math.ceil(n_vms / 1500))
        per_cluster = max(3, math.ceil(n_vms / (n_clusters * 40)))
        host_no = 0
        px = self.prefix
        specs = [(f"{px}cluster-{i + 1:02d}", "x86_64", per_cluster) for i in range(n_clusters)]
        arm_hosts = max(2, per_cluster // 3) if self.site_index % 2 == 0 else max(3, per_cluster)
        specs.append((f"{px}cluster-arm-01", "aarch64", arm_hosts))
        net = 20 + 2 * self.site_index
        self.x86_clusters: list[Cluster] = []
        self.arm_cluster: Cluster | None = None
        self.cluster_hosts: dict[int, list[Host]] = {}
        self.cluster_ds: dict[int, list[Datastore]] = {}
        self.host_local: dict[int, Datastore] = {}
        for cname, arch, nh in specs:
            cl = Cluster(id=sim.new_id(), name=cname, arch=arch)
            sim.clusters[cl.id] = cl
            hosts = []
            for j in range(nh):
                host_no += 1
                klass = CLASS_CYCLE[(host_no - 1) % len(CLASS_CYCLE)]
                base, per_disk, per_gb = PAUSE_CLASSES[klass]
                h = Host(
                    id=sim.new_id(), name=f"{px}cna-{host_no:02d}",
                    ip=f"10.{net}.{host_no // 250}.{host_no % 250 + 1}",
                    cluster=cl, arch=arch, cpu_quantity=rng.choice((32, 48, 64, 96)),
                    mem_mb=rng.choice((256, 384, 512, 768)) * 1024, perf_class=klass,
                    pause_base=base, pause_per_disk=per_disk, pause_per_gb=per_gb,
                    host_factor=round(rng.uniform(0.9, 1.1), 3), noise_sigma=0.08,
                    bmc_ip=f"10.{net + 1}.{host_no // 250}.{host_no % 250 + 1}",
                )
                sim.hosts[h.id] = h
                hosts.append(h)
            self.cluster_hosts[cl.id] = hosts
            shared: list[Datastore] = []
            kinds = (("nas", "NAS", 20480), ("lunpome", "LUNPOME", 10240))
            if arch == "x86_64":
                kinds += (("advsan", "advanceSan", 10240), ("dsware", "DSWARE", 30720),
                          ("fos", "FusionOneStorage", 30720))
                self.x86_clusters.append(cl)
            else:
                self.arm_cluster = cl
            for short, stype, cap in kinds:
                shared.append(self.datastore(f"ds-{short}-{cname}", stype, cap * 4, hosts))
            for h in hosts:
                self.host_local[h.id] = self.datastore(f"ds-local-{h.name}", "LOCALPOME", 4096, [h])
            self.cluster_ds[cl.id] = shared
        c1 = self.x86_clusters[0]
        hosts1 = self.cluster_hosts[c1.id]
        self.raw_local = self.datastore(f"{px}ds-raw-local-01", "LOCAL", 2048, hosts1[:1], thin=False)
        self.raw_lun = self.datastore(f"{px}ds-rdm-lun-01", "LUN", 500, hosts1, thin=False)
        self.raw_san = self.datastore(f"{px}ds-san-01", "san", 8192, hosts1, thin=False)
        self.nearly_full = self.datastore(f"{px}ds-nas-nearly-full-01", "NAS", 500, hosts1)

    def datastore(self, name: str, stype: str, cap: int, hosts: list[Host],
                  thin: bool = True) -> Datastore:
        ds = Datastore(id=self.sim.new_id(), name=name, storage_type=stype, capacity_gb=cap,
                       used_gb=int(cap * 0.05), hosts=list(hosts), is_thin=thin)
        self.sim.datastores[ds.id] = ds
        return ds

    # --- VMs -----------------------------------------------------------------------------------
    def volume(self, name: str, gb: int, ds: Datastore, fill: float, **kw: Any) -> Volume:
        sim = self.sim
        vid = sim.new_id()
        content = DiskContent(sim.factory, sim.seed, vid, gb * 1024**3, fill)
        vol = Volume(id=vid, name=name, uuid=sim.new_uuid(), size_mb=gb * 1024, datastore=ds,
                     content=content, is_thin=ds.is_thin, **kw)
        ds.used_gb += gb
        sim.volumes[vid] = vol
        return vol

    def vm(self, name: str, host: Host, os_version: int, status: str = "running", *,
           tools: bool = True, pv: str | None = None,
           disks: list[dict[str, Any]] | None = None, template: bool = False,
           link_clone: bool = False, fill: float = 0.4, cpu: int = 2, mem_gb: int = 4) -> Vm:
        sim, rng = self.sim, self.rng
        kind = os_kind(os_version)
        vm_id = sim.new_vm_id()
        vm_disks: list[Disk] = []
        for i, spec in enumerate(disks or [{"gb": 40}]):
            ds = spec.get("ds") or self.host_local[host.id]
            vol = self.volume(
                spec.get("diskName", f"{name}-disk{i}"), spec["gb"], ds, spec.get("fill", fill),
                type=spec.get("type", "normal"), indep=spec.get("indep", False),
                persistent=spec.get("persistent", True), pvscsi=spec.get("pvscsi", 0),
                is_diff=spec.get("is_diff", False), use_type=spec.get("use_type", 0),
                volume_format="qcow2" if ds.storage_type in ("NAS", "LOCALPOME", "LUNPOME")
                else "raw",
            )
            vm_disks.append(Disk(vol, spec.get("seq", i + 1), spec.get("pci", "VIRTIO")))
        nics = []
        for k in range(rng.choice((1, 1, 2))):
            self.nic_seq += 1
            n = self.nic_seq
            nics.append(Nic(name=f"Nic{k}", mac=f"28:6e:{0xd4 + self.site_index & 255:02x}:{(n >> 16) & 255:02x}:{(n >> 8) & 255:02x}:{n & 255:02x}",
                            ip=f"10.{100 + k}.{(n >> 8) & 255}.{n & 255}",
                            port_group_urn=self.nic_groups[n % len(self.nic_groups)], sequence_num=k))
        if pv is None:
            pv = "running" if tools and status == "running" else "notRunning"
        vm = Vm(
            id=vm_id, uuid=sim.new_uuid(), name=name, status=status, host=host,
            cluster=host.cluster, os_type=OS_TYPE[kind], os_version=os_version, cpu=cpu,
            mem_mb=mem_gb * 1024, disks=vm_disks, nics=nics,
            tools_version=(rng.choice(("2.5.0.156", "2.5.0.301", "8.0.0.12")) if tools else ""),
            pv_status=pv, create_time=sim.now() - rng.randint(86400, 86400 * 900),
            hostname=name, is_template=template, is_link_clone=link_clone,
            guest_os_name="FreeBSD 13.2" if os_version in (401, 402) else "",
            boot_firmware="UEFI" if host.arch == "aarch64" else "BIOS",
        )
        for d in vm_disks:
            d.volume.vm = vm
        if tools and vm_disks:
            # the guest's system disk holds its boot record: a backup copies it, a restore writes it back
            system = next((d for d in vm_disks if d.sequence_num == 1), vm_disks[0]).volume
            system.content.boot_key = boot_key(sim.seed, system.id, vm.tools_version)
        sim.vms[vm_id] = vm
        return vm

    def unique_name(self, base: str) -> str:
        n = self.name_counts.get(base, 0) + 1
        self.name_counts[base] = n
        return f"{base}-{n:02d}"

    def regular(self, count: int) -> None:
        rng = self.rng
        for _ in range(count):
            arm = self.arm_cluster is not None and rng.random() < arm_share(self.site_index)
            cl = self.arm_cluster if arm else rng.choice(self.x86_clusters)
            assert cl is not None
            host = rng.choice(self.cluster_hosts[cl.id])
            if arm:
                osv = rng.choice(ARM_LINUX)
            elif rng.random() < 0.4:
                osv = rng.choice(WINDOWS_COMMON)
            else:
                osv = rng.choice(LINUX_COMMON)
            r = rng.random()
            status = "running" if r < 0.86 else "stopped"
            tools = rng.random() < 0.94
            name = self.unique_name(f"{rng.choice(APPS)}-{rng.choice(ROLES)}")
            candidates = self.cluster_ds[cl.id] + [self.host_local[host.id]]
            ndisks = rng.choice((1, 1, 2, 2, 3, 4))
            disks = []
            for i in range(ndisks):
                gb = rng.choice((40, 60, 80, 100)) if i == 0 else rng.choice((100, 200, 300, 500))
                disks.append({"gb": gb, "ds": rng.choice(candidates),
                              "pci": "SCSI" if rng.random() < 0.15 else "VIRTIO"})
            self.vm(name, host, osv, status, tools=tools, disks=disks,
                    fill=round(rng.uniform(0.15, 0.6), 2) * self.sim.config.fill_scale, cpu=rng.choice((2, 4, 8, 16)),
                    mem_gb=rng.choice((4, 8, 16, 32, 64)))

    def templates(self, count: int) -> list[Vm]:
        out = []
        cl = self.x86_clusters[0]
        for i in range(count):
            name = TEMPLATES[i % len(TEMPLATES)] + (f"-{i // len(TEMPLATES) + 1}" if i >= len(TEMPLATES) else "")
            host = self.cluster_hosts[cl.id][i % len(self.cluster_hosts[cl.id])]
            osv = 35 if "win" in name else (10121 if "euler" in name else 10088)
            out.append(self.vm(name, host, osv, "stopped", tools=True,
                               disks=[{"gb": 40, "ds": self.cluster_ds[cl.id][0]}], template=True,
                               fill=0.3 * self.sim.config.fill_scale))
        return out

    # --- edge cases ------------------------------------------------------------------------
    def edges(self, tpl: Vm | None) -> None:
        sim = self.sim
        gb = sim.config.edge_disk_gb
        fill = sim.config.edge_fill
        c1 = self.x86_clusters[0]
        hosts = self.cluster_hosts[c1.id]
        host = next(h for h in hosts if h.perf_class == "ordinary")
        nas = self.cluster_ds[c1.id][0]
        local = self.host_local[host.id]
        edge: dict[str, list[str]] = {}

        def add(name: str, rules: list[str], osv: int, status: str = "running", **kw: Any) -> Vm:
            kw.setdefault("disks", [{"gb": gb, "ds": nas}])
            vm = self.vm(name, kw.pop("host", host), osv, status, fill=fill, **kw)
            for r in rules:
                edge.setdefault(r, []).append(sim.vm_urn(vm))
            return vm

        def d(ds: Any = None, **kw: Any) -> dict[str, Any]:
            return {"gb": gb, "ds": ds or nas, **kw}

        add("edge-ready-euleros-01", ["ready"], 10121)
        add("edge-ready-euleros-02", ["ready"], 10120, disks=[d(), d(local), d()])
        add("edge-tools-missing-01", ["tools-missing"], 10088, tools=False)
        add("edge-tools-not-running-01", ["tools-not-running"], 26, pv="notRunning")
        add("edge-state-stopped-01", ["state-stopped"], 10121, "stopped")
        add("edge-state-hibernated-01", ["state-hibernated"], 10120, "hibernated", pv="notRunning")
        add("edge-state-unsupported-01", ["state-unsupported"], 10122, "pause", pv="notRunning")
        add("edge-state-unsupported-02", ["state-unsupported"], 10088, "fault-resuming",
            pv="notRunning")
        add("edge-template-01", ["template"], 10121, "stopped", template=True)
        parent = tpl.disks[0].volume if tpl else None
        lc = add("edge-linked-clone-01", ["linked-clone"], 10088,
                 disks=[d(is_diff=True, use_type=8)], link_clone=True)
        if parent is not None:
            lc.disks[0].volume.link_clone_parent = sim.urn("volumes", parent.id)
        # older releases number IDE data disks 1001-1004 (vrm-api.md §16, NOVA constant.py); slot 1 stays
        # the boot disk
        add("edge-disk-ide-01", ["disk-ide"], 10121, disks=[d(), d(pci="IDE", seq=IDE_DATA_SEQ[0])])
        add("edge-disk-shared-01", ["disk-shared", "shared-disk-x86"], 10121,
            disks=[d(), d(type="share", indep=True, pci="SCSI")])
        if self.arm_cluster is not None:
            arm_host = self.cluster_hosts[self.arm_cluster.id][0]
            arm_nas = self.cluster_ds[self.arm_cluster.id][0]
            add("edge-disk-shared-arm-01", ["disk-shared"], 10122, host=arm_host,
                disks=[d(arm_nas), d(arm_nas, type="share", indep=True, pci="SCSI")])
        add("edge-disk-independent-01", ["disk-independent"], 10121, disks=[d(), d(indep=True)])
        add("edge-all-disks-independent-01", ["all-disks-independent"], 10121,
            disks=[d(indep=True), d(indep=True)])
        add("edge-storage-unsupported-local-01", ["storage-unsupported"], 10121,
            disks=[d(), d(self.raw_local)])
        add("edge-storage-unsupported-lun-01", ["storage-unsupported"], 10121,
            disks=[d(), d(self.raw_lun, indep=True, pci="SCSI", pvscsi=1)])
        add("edge-storage-unsupported-san-01", ["storage-unsupported"], 10121,
            disks=[d(), d(self.raw_san)])
        full = add("edge-snapshot-limit-01", ["snapshot-limit"], 10121)
        for i in range(32):
            ops.make_ready_snapshot(sim, full, f"bk-{i + 1:02d}", "CBTbackup")
        near = add("edge-snapshot-limit-near-01", ["snapshot-limit-near"], 10120)
        for i in range(29):
            ops.make_ready_snapshot(sim, near, f"bk-{i + 1:02d}", "backup" if i % 2 else "CBTbackup")
        left = add("edge-leftover-backup-snapshot-01", ["leftover-backup-snapshot"], 10121)
        ops.make_ready_snapshot(sim, left, "fctui-leftover-20251231T020000", "CBTbackup")
        mig = add("edge-task-in-progress-01", ["task-in-progress"], 10121)
        t = ops.start_storage_migration(sim, mig, user="other-admin")
        t.run_at = t.created = sim.now() - 600  # already running for ten minutes
        add("edge-consistency-not-euleros-01", ["consistency-not-euleros"], 35)
        add("edge-guest-os-unlisted-01", ["guest-os-unlisted"], 402)
        add("edge-target-space-low-01", ["target-space-low"], 10121,
            disks=[{"gb": gb, "ds": self.nearly_full}])
        add("edge-combo-template-lun-01", ["template", "storage-unsupported", "state-stopped"],
            10088, "stopped", template=True, disks=[d(self.raw_lun, indep=True, pci="SCSI")])
        add("edge-combo-indep-shared-01", ["disk-independent", "disk-shared", "shared-disk-x86"],
            10121, disks=[d(), d(indep=True), d(type="share", indep=True, pci="SCSI")])
        add("edge-combo-stopped-notools-ide-01", ["state-stopped", "tools-missing", "disk-ide"],
            10088, "stopped", tools=False,
            disks=[d(pci="IDE"), d(pci="IDE", seq=IDE_DATA_SEQ[0]), d(pci="IDE", seq=IDE_DATA_SEQ[1])])
        # leave the nearly-full datastore nearly full whatever its volumes use
        self.nearly_full.used_gb = self.nearly_full.capacity_gb - 4
        sim.edge_cases = edge


    def guest_filesystem_vms(self) -> None:
        """The VMs of guestdisks.GUEST_VMS: running, Tools running, one VIRTIO disk on cluster-01's NAS
        datastore holding a guest image (version 1)."""
        c1 = self.x86_clusters[0]
        host = next(h for h in self.cluster_hosts[c1.id] if h.perf_class == "ordinary")
        nas = self.cluster_ds[c1.id][0]
        for g in guestdisks.GUEST_VMS:
            vm = self.vm(g.name, host, g.os_version, "running", tools=True, fill=0.0, cpu=g.cpu, mem_gb=g.mem_gb,
                         disks=[{"gb": guestdisks.GUEST_DISK_GB, "ds": nas}])
            vm.boot_firmware = g.boot_firmware
            vm.disks[0].volume.content.boot_key = 0  # its image's own boot sector instead
            guestdisks.install_guest_fs(vm.disks[0].volume, g.guest, 1)

    def ready_vms(self, per_host: tuple[int, ...]) -> None:
        """SimConfig.ready_vms_per_host: running EulerOS VMs with Tools, one small disk each, ``n`` on the
        i-th x86 host; a host's disks alternate over its cluster's datastores and its local one, so a
        datastore's limit never hides a host's."""
        hosts = [h for cl in self.x86_clusters for h in self.cluster_hosts[cl.id]]
        if len(per_host) > len(hosts):
            raise ValueError(f"ready_vms_per_host names {len(per_host)} hosts; the inventory has {len(hosts)} x86 hosts")
        cfg = self.sim.config
        for host, n in zip(hosts, per_host):
            stores = self.cluster_ds[host.cluster.id] + [self.host_local[host.id]]
            for i in range(n):
                self.vm(self.unique_name(f"ready-{host.name}"), host, EULER_IDS[i % len(EULER_IDS)], "running",
                        disks=[{"gb": cfg.edge_disk_gb, "ds": stores[i % len(stores)]}], fill=cfg.edge_fill)

    # --- capacity ------------------------------------------------------------------------------
    def size_datastores(self) -> None:
        """Give every datastore a capacity its volumes fit in, the way an administrator sizes
        storage to what it holds: 45-80 % used, whatever the inventory size (a fixed capacity
        would be over-provisioned -- negative free space -- at 10,000 VMs). One local datastore in
        NEARLY_FULL_EVERY is left nearly full (a realistic few, so target-space-low fires on a
        small share of a big site); the edge-case datastores keep their hand-set sizes."""
        rng = random.Random(mix64(self.sim.seed, 0xD5))
        fixed = {id(self.nearly_full), id(self.raw_local), id(self.raw_lun), id(self.raw_san)}
        local = {id(ds) for ds in self.host_local.values()}
        n_local = 0
        for ds in self.sim.datastores.values():
            util = rng.uniform(0.45, 0.80)
            if id(ds) in fixed:
                if ds.used_gb >= ds.capacity_gb:  # more edge VMs than foreseen: still never negative
                    ds.capacity_gb = ds.used_gb + 4
                continue
            if id(ds) in local:
                n_local += 1
                if n_local % NEARLY_FULL_EVERY == 0:
                    util = NEARLY_FULL_UTIL
            need = math.ceil(ds.used_gb / util)
            ds.capacity_gb = max(ds.capacity_gb if util < NEARLY_FULL_UTIL else 0, need, ds.used_gb + 1)


NEARLY_FULL_EVERY = 40      # one local datastore in 40 is nearly full (none below 40 hosts)
NEARLY_FULL_UTIL = 0.985


def populate(sim: VrmState) -> None:
    g = _Gen(sim)
    n = sim.config.vms
    sim.os_catalog = build_os_catalog()
    g.network()
    g.infrastructure(max(n, 1))
    n_templates = max(1, min(len(TEMPLATES), n // 50)) if n else 1
    tpls = g.templates(n_templates)
    g.edges(tpls[0] if tpls else None)
    already = len(sim.vms)
    g.regular(max(0, n - already))
    if sim.config.guest_filesystems:  # after every other VM: the others keep their ids and names
        g.guest_filesystem_vms()
    g.ready_vms(sim.config.ready_vms_per_host)  # last too, for the same reason
    g.size_datastores()


class Simulator(VrmState):
    """The simulated VRM with its deterministic inventory (``config.seed``, ``config.vms``)."""

    def __init__(self, config: SimConfig | None = None, clock: Clock | None = None) -> None:
        super().__init__(config, clock)
        populate(self)
        if len(self.vms) >= 2000:
            # tens of thousands of long-lived objects: keep the cyclic GC from rescanning them
            # on every collection (it doubled listing times); they live as long as the process
            gc.collect()
            gc.freeze()
