"""target-space-low (rules.md; seed §2 "Storage and Resource Allocation Requirements"): a backed-up disk's
datastore must hold the snapshot merge. The estimate, written out here rather than read from the engine:
each disk's delta is 10 % of its size, at least 5 GB; a datastore needs the sum over this VM's disks on it
plus the merge load other concurrent backups put there; it is short when its free space (the actual free
space where the VRM reports it, else the free size) is below that. Equal is enough."""

from __future__ import annotations

from typing import Any

import pytest

from fctui.rules.engine import assess
from fctui.rules.facts import VmFacts
from tests.rules.test_rules_engine import DS_NAS, HOST_X86, OS_CATALOGUE, SITE, disk, vm

DS_A = f"{SITE}:datastores:21"
DS_B = f"{SITE}:datastores:22"


def ds(urn: str, free: float | None, actual: float | None = None, name: str | None = "ds-a") -> dict[str, Any]:
    d: dict[str, Any] = {"urn": urn, "storageType": "NAS", "capacityGB": 1000}
    if name is not None:
        d["name"] = name
    if free is not None:
        d["freeSizeGB"] = free
    if actual is not None:
        d["actualFreeSizeGB"] = actual
    return d


def space_finding(disks: list[dict[str, Any]], datastores: list[dict[str, Any]],
                  load: dict[str, float] | None = None) -> Any:
    f = VmFacts.from_dicts(vm(vmConfig={"disks": disks}), host=HOST_X86, datastores=datastores,
                           os_catalogue=OS_CATALOGUE, merge_load_gb=load)
    found = [x for x in assess(f).findings if x.rule == "target-space-low"]
    assert len(found) <= 1
    return found[0] if found else None


def on(n: int, urn: str, gb: float | None) -> dict[str, Any]:
    return disk(n, datastoreUrn=urn, quantityGB=gb)


@pytest.mark.parametrize(("gb", "free", "short"), [
    (40, 5.0, False),      # 10 % is 4 GB: the 5 GB floor, and 5 GB free is enough
    (40, 4.0, True),
    (None, 5.0, False),    # a size the VRM did not report still needs the floor
    (None, 4.0, True),
    (300, 30.0, False),    # 10 % of 300 GB
    (300, 29.0, True),
])
def test_one_disk_needs_a_tenth_of_its_size_and_at_least_5_gb(gb: float | None, free: float, short: bool) -> None:
    assert (space_finding([on(1, DS_A, gb)], [ds(DS_A, free)]) is not None) == short


def test_the_disks_of_a_datastore_add_up_with_the_load_of_other_backups() -> None:
    disks = [on(1, DS_A, 200), on(2, DS_A, 100)]          # 20 + 10 GB on one datastore
    assert space_finding(disks, [ds(DS_A, 30.0)]) is None
    assert space_finding(disks, [ds(DS_A, 29.0)]) is not None
    assert space_finding(disks, [ds(DS_A, 31.0)], load={DS_A: 1.0}) is None
    assert space_finding(disks, [ds(DS_A, 31.0)], load={DS_A: 1.5}) is not None
    assert space_finding(disks, [ds(DS_A, 30.0)], load={DS_B: 100.0}) is None   # another datastore's load


def test_the_actual_free_space_wins_over_the_free_size() -> None:
    d = [on(1, DS_A, 40)]
    assert space_finding(d, [ds(DS_A, free=100.0, actual=4.0)]) is not None
    assert space_finding(d, [ds(DS_A, free=4.0, actual=100.0)]) is None
    assert space_finding(d, [ds(DS_A, free=4.0)]) is not None          # no actual free space reported


def test_a_datastore_that_cannot_be_judged_does_not_hide_the_next() -> None:
    unknown = f"{SITE}:datastores:99"
    disks = [on(1, unknown, 40), on(2, DS_A, 40), on(3, DS_B, 40)]
    # the first disk's datastore is not listed, the second's reports no free space: the third is still judged
    found = space_finding(disks, [ds(DS_A, None), ds(DS_B, 1.0, name="ds-b")])
    assert found is not None and found.disks == [f"{SITE}:volumes:103"]


def test_the_finding_names_each_short_datastore_with_its_figures() -> None:
    disks = [on(1, DS_A, 40), on(2, DS_NAS, 40), on(3, DS_B, 300)]
    found = space_finding(disks, [ds(DS_A, 4.0), ds(DS_B, 20.0, name=None),
                                  {"urn": DS_NAS, "name": "ds-nas", "storageType": "NAS", "freeSizeGB": 15000}],
                          load={DS_B: 2.0})
    assert found.message == ("datastore may lack space for snapshot merges: "
                             "ds-a: 4.0 GiB free, merges need about 5.0 GiB (5.0 GiB for this VM); "
                             f"{DS_B}: 20.0 GiB free, merges need about 32.0 GiB (30.0 GiB for this VM)")
    assert found.severity == "warning"
    assert found.disks == [f"{SITE}:volumes:101", f"{SITE}:volumes:103"]
