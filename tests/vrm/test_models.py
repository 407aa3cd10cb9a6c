"""The models must accept whatever a VRM release sends: unknown fields, unknown enum values, sloppy
types, missing fields (recorded, not fatal), and outright garbage."""

import pytest
from hypothesis import given, strategies as st

from fctui.vrm import urn as urnlib
from fctui.vrm.models import (
    BackupResource, CbtBitmap, Datastore, OsCatalogue, SnapshotDetail, SnapshotTree, Task, Vm,
)


def test_urn_uri_round_trip():
    urn = "urn:sites:4D9D0815:vms:i-000000E5:snapshots:1688"
    uri = urnlib.urn_to_uri(urn)
    assert uri == "/service/sites/4D9D0815/vms/i-000000E5/snapshots/1688"
    assert urnlib.uri_to_urn(uri) == urn
    assert urnlib.site_uri(urn) == "/service/sites/4D9D0815"
    assert urnlib.last_segment(urn) == "1688"
    with pytest.raises(ValueError):
        urnlib.urn_to_uri("/service/sites/x")
    with pytest.raises(ValueError):
        urnlib.uri_to_urn("urn:sites:x")


def test_vm_unknown_enum_kept_and_unknown_fields_tolerated():
    vm = Vm.from_dict({
        "urn": "urn:sites:A:vms:i-0000000A", "name": "db", "status": "teleporting",
        "pvDriverStatus": "dreaming", "toolsVersion": "", "isTemplate": "false", "isLinkClone": 0,
        "brandNewField": {"x": 1},
        "vmConfig": {"cpu": {"quantity": "4"}, "memory": {"quantityMB": 8192},
                     "disks": [{"sequenceNum": 1, "pciType": "NVME", "volumeUrn": "urn:sites:A:volumes:1",
                                "quantityGB": 40, "datastoreUrn": "urn:sites:A:datastores:1",
                                "storageType": "QUANTUM", "indepDisk": False, "type": "share"}]},
    })
    assert vm.status == "teleporting"
    assert vm.pv_driver_status == "dreaming"
    assert vm.tools_version == ""          # present and empty: never installed
    assert vm.is_template is False and vm.is_link_clone is False
    assert vm.cpu_quantity == 4 and vm.memory_mb == 8192
    assert vm.disks[0].pci_type == "NVME" and vm.disks[0].storage_type == "QUANTUM"
    assert vm.disks[0].is_shared
    assert vm.raw["brandNewField"] == {"x": 1}
    assert vm.missing == []


def test_vm_missing_fields_are_recorded():
    vm = Vm.from_dict({"urn": "urn:sites:A:vms:i-0000000B", "name": "x", "status": "running"})
    assert vm.tools_version is None
    assert "toolsVersion" in vm.missing and "vmConfig" in vm.missing
    assert vm.disks == [] and not vm.has_vm_config


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))
def test_models_never_raise_on_garbage(doc):
    for model in (Vm, Task, Datastore, BackupResource, SnapshotDetail, SnapshotTree, OsCatalogue):
        model.from_dict(doc)
    if isinstance(doc, dict):
        Vm.from_dict({**doc, "vmConfig": doc, "osOptions": doc})


def test_snapshot_tree_walk_and_backup_count():
    tree = SnapshotTree.from_dict({
        "currentSnapshot": {"urn": "u2"},
        "rootSnapshots": [
            {"urn": "u1", "type": "CBTbackup", "childSnapshots": [
                {"urn": "u2", "type": "normal", "childSnapshots": [{"urn": "u3", "type": "backup"}]}]},
            {"urn": "u4", "type": "normal", "childSnapshots": None},
        ],
    })
    assert [n.urn for n in tree.walk()] == ["u1", "u2", "u3", "u4"]
    assert [n.urn for n in tree.backup_snapshots()] == ["u1", "u3"]
    assert tree.current_urn == "u2"


def test_os_catalogue_resolves_ids():
    cat = OsCatalogue.from_dict({"linux": [{"id": 10088, "versionDes": "EulerOS 2.0 SP8 64bit"}],
                                 "other": [{"id": "402", "versionDes": "Other 64bit"}, {"versionDes": "no id"}]})
    assert cat.describe(10088) == "EulerOS 2.0 SP8 64bit"
    assert cat.entries[402].family == "other"
    assert cat.describe(None) is None and cat.describe(1) is None


def test_cbt_bitmap_low_bit_is_lower_block_and_respects_bitnum():
    # "1" -> block 0; "8" -> block 7; "f" in the last char is cut at bit_num.
    bm = CbtBitmap(sector_of_block=4096, bit_num=10, bit1_num=4, bitmap="18f", start_block=1024)
    assert list(bm.changed_blocks()) == [1024, 1031, 1032, 1033]
    assert bm.block_size == 2 * 1024 * 1024


def test_task_times_and_state():
    t = Task.from_dict({"uri": "/service/sites/A/tasks/7", "status": "cancelling", "progress": "40",
                        "startTime": "1700000000000", "finishTime": ""})
    assert t.id == "7" and t.progress == 40 and t.is_active and not t.is_done
    assert t.times_ms() == (1700000000000.0, None)
