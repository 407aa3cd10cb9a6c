"""The facts the rules look at for one VM, and what the product knows of its earlier backups.

Facts are plain data assembled by :mod:`fctui.inventory.gather` (or by a test from VRM-shaped
dicts). Shared objects (datastores, the OS catalogue) are the same instances for every VM of a site,
so building facts for 10,000 VMs costs one small object each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..vrm.models import Datastore, Host, OsCatalogue, SnapshotTree, Task, Vm

_EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True)
class VolumeCbtState:
    """The CBT position of one volume: what a backup recorded, or what a snapshot reports now."""
    volume_urn: str
    vol_cbt_create_time: str
    chg_id: str
    fully_backed_up: bool = True  # for a recorded state: was this disk's data read completely?
    size_gb: int | None = None    # provisioned size when recorded: a larger size now means an expansion


@dataclass(frozen=True, slots=True)
class BackupKnowledge:
    """What the product knows of a VM's earlier backups (from its restore points and job records).

    ``last_backup_time`` is epoch seconds. ``volumes`` is the CBT state per volume after the last
    backup. ``owned_snapshot_urns`` are the VRM snapshots a restore point or a running job owns
    (never leftovers). ``last_vm_status`` is the VM's status when it was last backed up.
    """
    last_backup_time: float | None = None
    volumes: Mapping[str, VolumeCbtState] = field(default_factory=dict)
    owned_snapshot_urns: frozenset[str] = frozenset()
    last_vm_status: str = "running"


@dataclass(slots=True)
class VmFacts:
    """Everything the inventory rules need about one VM.

    ``snapshot_tree`` is None when no tree was read; ``snapshots_known`` says whether that means
    "no snapshots" (the gatherer knows the VM owns no volume with snapshots) or "not read yet".
    ``active_tasks`` are the VM's waiting/running tasks (also those acting on its volumes);
    ``tasks_since_backup`` the finished tasks on the VM, its volumes and its host since the last
    backup. ``cbt_now`` is the current CBT state per volume when a recent CBT snapshot's detail was
    read. ``merge_load_gb`` is the snapshot-merge space other concurrent backups are expected to
    need per datastore (0 when not modelled). ``now`` is epoch seconds.
    """
    vm: Vm
    host: Host | None = None
    datastores: Mapping[str, Datastore] = field(default_factory=dict)
    os_catalogue: OsCatalogue | None = None
    snapshot_tree: SnapshotTree | None = None
    snapshots_known: bool = True
    active_tasks: Sequence[Task] = ()
    tasks_since_backup: Sequence[Task] = ()
    knowledge: BackupKnowledge | None = None
    cbt_now: Mapping[str, VolumeCbtState] = field(default_factory=dict)
    merge_load_gb: Mapping[str, float] = field(default_factory=dict)
    now: float = 0.0

    @classmethod
    def from_dicts(cls, vm: Mapping[str, Any], *, host: Mapping[str, Any] | None = None,
                   datastores: Iterable[Mapping[str, Any]] = (), os_catalogue: Mapping[str, Any] | None = None,
                   snapshots: Mapping[str, Any] | None = None, snapshots_known: bool = True,
                   active_tasks: Iterable[Mapping[str, Any]] = (),
                   tasks_since_backup: Iterable[Mapping[str, Any]] = (),
                   knowledge: BackupKnowledge | None = None,
                   cbt_now: Mapping[str, VolumeCbtState] | None = None,
                   merge_load_gb: Mapping[str, float] | None = None, now: float = 0.0) -> "VmFacts":
        """Facts from dicts shaped like the VRM's answers (VM detail, host, datastores,
        ``GET S/vms/osversions``, ``GET <vm>/snapshots``, tasks)."""
        ds = [Datastore.from_dict(d) for d in datastores]
        return cls(
            vm=Vm.from_dict(dict(vm)),
            host=Host.from_dict(dict(host)) if host is not None else None,
            datastores={d.urn: d for d in ds},
            os_catalogue=OsCatalogue.from_dict(dict(os_catalogue)) if os_catalogue is not None else None,
            snapshot_tree=SnapshotTree.from_dict(dict(snapshots)) if snapshots is not None else None,
            snapshots_known=snapshots_known,
            active_tasks=[Task.from_dict(dict(t)) for t in active_tasks],
            tasks_since_backup=[Task.from_dict(dict(t)) for t in tasks_since_backup],
            knowledge=knowledge, cbt_now=dict(cbt_now or _EMPTY),
            merge_load_gb=dict(merge_load_gb or _EMPTY), now=now,
        )
