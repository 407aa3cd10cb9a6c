"""Catalog entries read from disk (fctui/repo/model.py): which ones are restore points, and the exact
reason given for each one that is not. A hand edit or another program may leave anything in the
catalog; gc, prune and `repo list` show these reasons to the operator, so each is pinned word for word."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fctui.repo.model import RestorePoint, RestorePointDisk, point_problem


def disk_doc(**over: Any) -> dict[str, Any]:
    d = {"volume_urn": "urn:sites:1:volumes:7", "disk_name": "sys", "sequence_num": 1, "pci_type": "VIRTIO",
         "size_bytes": 5 * 2**20, "block_size": 2**20, "storage_type": "LOCAL", "datastore_urn": "urn:ds:1",
         "mode": "full", "cbt": None, "bytes_in": 3, "bytes_stored": 2, "bytes_reused": 1, "bytes_zero": 0,
         "sha256": None, "base_point_id": None, "nonzero_blocks": 4}
    d.update(over)
    return d


def point_doc(**over: Any) -> dict[str, Any]:
    p = {"id": "20261204T101500-ab12", "vm_urn": "urn:sites:1:vms:i-1", "vm_name": "db-1", "created": 1.5e9,
         "kind": "cbt", "job_id": "j-1", "snapshot_urn": "urn:sites:1:snapshots:9", "vm_config": {"cpu": 2},
         "disks": [disk_doc()], "verified_at": None}
    p.update(over)
    return p


def without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    del doc[key]
    return doc


def test_a_whole_point_is_a_point() -> None:
    assert point_problem(point_doc()) is None
    assert point_problem(point_doc(verified_at=2e9, created=7)) is None
    assert point_problem(without(point_doc(), "verified_at")) is None                       # optional
    assert point_problem(point_doc(id="a")) is None and point_problem(point_doc(id="A" + "x" * 99)) is None


@pytest.mark.parametrize("doc, problem", [
    (["not", "a", "dict"], "not a JSON object"),
    (without(point_doc(), "id"), "no valid id"),
    (point_doc(id=None), "no valid id"),
    (point_doc(id=7), "id 7 is not a restore point id"),
    (point_doc(id="../x"), "id '../x' is not a restore point id"),
    (point_doc(id="-x"), "id '-x' is not a restore point id"),
    (point_doc(id="a" * 101), f"id {'a' * 101!r} is not a restore point id"),
    (point_doc(id="x\n"), "id 'x\\n' is not a restore point id"),
    (without(point_doc(), "vm_urn"), "field vm_urn missing"),
    (point_doc(vm_urn=""), "field vm_urn is not a non-empty string"),
    (point_doc(vm_urn=3), "field vm_urn is not a non-empty string"),
    (without(point_doc(), "created"), "field created missing"),
    (point_doc(created="2026"), "field created is not a number"),
    (point_doc(created=True), "field created is not a number"),
    (without(point_doc(), "kind"), "field kind missing"),
    (point_doc(kind=1), "field kind is not a string"),
    (without(point_doc(), "vm_config"), "field vm_config missing"),
    (point_doc(vm_config=[]), "field vm_config is not an object"),
    (without(point_doc(), "disks"), "field disks missing"),
    (point_doc(disks=[]), "field disks is not a non-empty list"),
    (point_doc(disks={"0": disk_doc()}), "field disks is not a non-empty list"),
    (point_doc(vm_name=1), "field vm_name is not a string"),
    (point_doc(job_id=None), "field job_id is not a string"),
    (point_doc(snapshot_urn=[]), "field snapshot_urn is not a string"),
    (point_doc(verified_at="yesterday"), "field verified_at is not a number"),
    (point_doc(verified_at=False), "field verified_at is not a number"),
    (point_doc(disks=[disk_doc(), "sda"]), "disk 1 is not an object"),
    (point_doc(disks=[disk_doc(volume_urn="")]), "disk 0 has no volume_urn"),
    (point_doc(disks=[without(disk_doc(), "volume_urn")]), "disk 0 has no volume_urn"),
    (point_doc(disks=[disk_doc(size_bytes=0)]), "disk 0 field size_bytes is not a positive whole number"),
    (point_doc(disks=[disk_doc(size_bytes=1.5)]), "disk 0 field size_bytes is not a positive whole number"),
    (point_doc(disks=[disk_doc(size_bytes=True)]), "disk 0 field size_bytes is not a positive whole number"),
    (point_doc(disks=[disk_doc(block_size=-1)]), "disk 0 field block_size is not a positive whole number"),
    (point_doc(disks=[without(disk_doc(), "block_size")]), "disk 0 field block_size is not a positive whole number"),
    (point_doc(disks=[disk_doc(disk_name=2)]), "disk 0 field disk_name is not a string"),
    (point_doc(disks=[disk_doc(mode=None)]), "disk 0 field mode is not a string"),
    (point_doc(disks=[disk_doc(pci_type=0)]), "disk 0 field pci_type is not a string"),
    (point_doc(disks=[disk_doc(storage_type={})]), "disk 0 field storage_type is not a string"),
    (point_doc(disks=[disk_doc(datastore_urn=[])]), "disk 0 field datastore_urn is not a string"),
    (point_doc(disks=[disk_doc(bytes_in="3")]), "disk 0 field bytes_in is not a whole number"),
    (point_doc(disks=[disk_doc(bytes_stored=2.0)]), "disk 0 field bytes_stored is not a whole number"),
    (point_doc(disks=[disk_doc(bytes_reused=None)]), "disk 0 field bytes_reused is not a whole number"),
    (point_doc(disks=[disk_doc(bytes_zero=False)]), "disk 0 field bytes_zero is not a whole number"),
    (point_doc(disks=[disk_doc(nonzero_blocks=True)]), "disk 0 field nonzero_blocks is not a whole number"),
])
def test_each_flaw_is_named(doc: Any, problem: str) -> None:
    assert point_problem(doc) == problem


@pytest.mark.parametrize("doc, field", [
    (without(point_doc(), "vm_name"), "vm_name"),
    (point_doc(disks=[without(disk_doc(), "mode")]), "mode"),
])
def test_a_field_the_record_requires_is_named(doc: dict[str, Any], field: str) -> None:
    """Fields the checks above let pass when absent (they are optional there) but the record needs."""
    problem = point_problem(doc)
    assert problem is not None and problem.startswith("not a restore point (") and f"'{field}'" in problem


def test_optional_disk_counters_may_be_absent() -> None:
    d = disk_doc()
    for key in ("bytes_in", "bytes_stored", "bytes_reused", "bytes_zero", "nonzero_blocks", "sha256",
                "base_point_id"):
        del d[key]
    assert point_problem(point_doc(disks=[d])) is None
    disk = RestorePointDisk.from_dict(d)
    assert (disk.bytes_in, disk.bytes_stored, disk.bytes_reused, disk.bytes_zero, disk.nonzero_blocks) == (0,) * 5


def test_a_point_reads_back_what_it_wrote_and_sums_its_disks() -> None:
    doc = point_doc(disks=[disk_doc(), disk_doc(volume_urn="urn:v:2", size_bytes=2**20 + 1, bytes_in=10,
                                                bytes_stored=20)], extra="ignored")
    p = RestorePoint.from_dict(doc)
    assert p.to_dict() == {k: v for k, v in doc.items() if k != "extra"}
    assert (p.size_bytes, p.bytes_in, p.bytes_stored) == (6 * 2**20 + 1, 13, 22)
    assert p.disk("urn:v:2") is p.disks[1] and p.disk("urn:v:3") is None
    assert [d.block_count for d in p.disks] == [5, 2]                 # a partial last block counts
