"""The models must accept whatever a VRM release sends: unknown fields, unknown enum values, sloppy
types, missing fields (recorded, not fatal), and outright garbage."""

import pytest
from hypothesis import given, strategies as st

from fctui.vrm import urn as urnlib
from fctui.vrm.models import (
    BackupResource, CbtBitmap, Datastore, Disk, OsCatalogue, SnapshotDetail, SnapshotTree, Task, Vm,
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
        vm = Vm.from_dict({**doc, "vmConfig": doc, "osOptions": doc})
        # whatever came, the required fields that were absent are named, and only those
        for key in ("urn", "name", "status"):
            assert (key in vm.missing) == (doc.get(key) is None), key
        assert vm.disks == [] or isinstance(doc.get("disks"), list)


# --- the tolerant readers against an oracle written here -----------------------------------------
# A VRM field arrives well-typed, absent, null, as a string of a number or bool, or as junk (a list).
# The model's contract (module docstring and field readers): a well-typed value as is; a string field
# from anything else by str(); a number from a string of digits (spaces allowed); a bool from
# "true"/"1"/"yes" or a non-zero number; absent or null -> the default, and a required field is then
# named in ``missing``; junk -> the default (a number: None, named missing).

_ABSENT = object()


def _oracle_str(v, default=""):
    return default if v is _ABSENT or v is None else (v if isinstance(v, str) else str(v))


def _oracle_int(v):
    if v is _ABSENT or v is None or isinstance(v, list):
        return None
    if isinstance(v, str):
        return int(v.strip()) if v.strip().lstrip("-").isdigit() else None
    return int(v)


def _oracle_bool(v, default=False):
    if v is _ABSENT or v is None or isinstance(v, list):
        return default
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return v != 0


_str_v = st.one_of(st.just(_ABSENT), st.none(), st.text(max_size=8), st.integers(-5, 99), st.lists(st.integers(), max_size=2))
_int_v = st.one_of(st.just(_ABSENT), st.none(), st.integers(-10, 10**6), st.integers(0, 999).map(lambda n: f" {n} "),
                   st.text(alphabet="xyz", min_size=1, max_size=3), st.booleans(), st.lists(st.integers(), max_size=2))
_bool_v = st.one_of(st.just(_ABSENT), st.none(), st.booleans(), st.integers(-1, 2),
                    st.sampled_from(["true", "False", " yes ", "0", "1", "no", "maybe"]), st.lists(st.integers(), max_size=1))

# Disk field -> (VRM key, reader, required: named in ``missing`` when absent/unreadable)
_DISK_FIELDS = {
    "sequence_num": ("sequenceNum", "int", True), "pci_type": ("pciType", "str", True),
    "volume_urn": ("volumeUrn", "str", True), "volume_url": ("volumeUrl", "str", False),
    "disk_name": ("diskName", "str", False), "quantity_gb": ("quantityGB", "int", True),
    "datastore_urn": ("datastoreUrn", "str", True), "storage_type": ("storageType", "str", True),
    "is_thin": ("isThin", "bool", False), "indep_disk": ("indepDisk", "bool", True),
    "persistent_disk": ("persistentDisk", "bool", False), "type": ("type", "str", False),
    "system_volume": ("systemVolume", "bool", False),
}
_DISK_DEFAULTS = {"persistent_disk": True, "type": "normal"}


@given(st.fixed_dictionaries({f: {"int": _int_v, "str": _str_v, "bool": _bool_v}[kind]
                              for f, (_, kind, _) in _DISK_FIELDS.items()}))
def test_disk_fields_follow_the_tolerant_reader_contract(values):
    doc = {_DISK_FIELDS[f][0]: v for f, v in values.items() if v is not _ABSENT}
    d = Disk.from_dict(doc)
    want_missing = set()
    for f, v in values.items():
        key, kind, required = _DISK_FIELDS[f]
        got = getattr(d, f)
        if kind == "str":
            assert got == _oracle_str(v, _DISK_DEFAULTS.get(f, "")), f
            if required and (v is _ABSENT or v is None):
                want_missing.add(key)
        elif kind == "int":
            assert got == _oracle_int(v) and (got is None or type(got) is int), f
            if required and got is None:
                want_missing.add(key)
        else:
            assert got is _oracle_bool(v, _DISK_DEFAULTS.get(f, False)), f
            if required and (v is _ABSENT or v is None):
                want_missing.add(key)
    assert set(d.missing) == want_missing


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
