"""The site mapping store and its pure helpers (issue 19): remembered per site pair, merged, never lost;
what a request says wins over the remembered mapping; defaults for what is not mapped."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fctui.jobs.restore import RestoreRequest
from fctui.jobs.sitemap import (SiteMapError, SiteMapping, SiteMappingStore, apply_mapping, remember, strip_dr,
                                suggest_mapping)
from fctui.repo import RestorePoint
from fctui.vrm.models import Datastore, PortGroup

A, B = "urn:sites:AAAA0001", "urn:sites:BBBB0002"


def point(names: bool = True) -> RestorePoint:
    disks = [("v1", "ds1", "NAS"), ("v2", "ds2", "LOCALPOME"), ("v3", "ds1", "NAS")]
    return RestorePoint.from_dict({
        "id": "p1", "vm_urn": f"{A}:vms:i-1", "vm_name": "db", "created": 0.0, "kind": "cbt", "job_id": "j",
        "snapshot_urn": "", "vm_config": {
            "arch": "x86_64",
            "disks": [{"volumeUrn": f"{A}:volumes:{v}", "datastoreUrn": f"{A}:datastores:{ds}",
                       **({"datastoreName": f"ds-{t.lower()}-{ds}"} if names else {})} for v, ds, t in disks],
            "nics": [{"name": "Nic0", "portGroupUrn": f"{A}:dvswitchs:1:portgroups:1", "portGroupName": "prod-net"},
                     {"name": "Nic1", "portGroupUrn": f"{A}:dvswitchs:1:portgroups:2", "portGroupName": "backup"}]},
        "disks": [{"volume_urn": f"{A}:volumes:{v}", "disk_name": v, "sequence_num": i, "pci_type": "VIRTIO",
                   "size_bytes": 1 << 30, "block_size": 1 << 20, "storage_type": t,
                   "datastore_urn": f"{A}:datastores:{ds}", "mode": "full", "cbt": None}
                  for i, (v, ds, t) in enumerate(disks)]})


def ds(n: int, name: str, kind: str, free: int, hosts: list[str]) -> Datastore:
    return Datastore.from_dict({"urn": f"{B}:datastores:{n}", "name": name, "storageType": kind, "status": "NORMAL",
                                "freeSizeGB": free, "hosts": [f"{B}:hosts:{h}" for h in hosts]})


def test_store_remembers_per_site_pair_and_never_overwrites_a_damaged_file(tmp_path: Path) -> None:
    store = SiteMappingStore(tmp_path / "m.json")
    p = point()
    req = RestoreRequest("p1", "new", datastores={f"{A}:volumes:v1": f"{B}:datastores:7"},
                         port_groups={f"{A}:dvswitchs:1:portgroups:2": ""}, location=f"{B}:clusters:1")
    remember(p, req, "BBBB0002", store)
    store.save(SiteMapping("AAAA0001", "CCCC0003", location="x"))
    # a second restore adds to the pair's mapping, keeping what it does not say
    remember(p, RestoreRequest("p1", "new", datastores={f"{A}:volumes:v2": f"{B}:datastores:8"}), "BBBB0002", store)
    m = store.get("AAAA0001", "BBBB0002")
    assert m is not None and m.location == f"{B}:clusters:1"
    assert m.datastores == {f"{A}:datastores:ds1": f"{B}:datastores:7", f"{A}:datastores:ds2": f"{B}:datastores:8"}
    assert [x.key for x in SiteMappingStore(tmp_path / "m.json").all()] == ["AAAA0001->BBBB0002", "AAAA0001->CCCC0003"]

    # the request's own choice wins; the rest comes from the mapping (disk v3 shares ds1 with v1)
    got = apply_mapping(p, m, RestoreRequest("p1", "new", port_groups={f"{A}:dvswitchs:1:portgroups:2": f"{B}:pg:9"}))
    assert got.datastores == {f"{A}:volumes:v1": f"{B}:datastores:7", f"{A}:volumes:v2": f"{B}:datastores:8",
                              f"{A}:volumes:v3": f"{B}:datastores:7"}
    assert got.port_groups == {f"{A}:dvswitchs:1:portgroups:2": f"{B}:pg:9"} and got.location == m.location

    # concurrent editors: no change lost
    def add(i: int) -> None:
        remember(p, RestoreRequest("p1", "new", location=f"{B}:hosts:{i}"), f"T{i}", store)
    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.all()) == 8

    before = b'{"version": 1, "mappings": {"x": {"source_site": 1}}}'   # a mapping without target_site
    (tmp_path / "m.json").write_bytes(before)
    with pytest.raises(SiteMapError, match="m.json is damaged"):
        store.all()
    with pytest.raises(SiteMapError):
        store.save(SiteMapping("A", "B"))
    assert (tmp_path / "m.json").read_bytes() == before


def test_suggestions_by_name_then_class_sharing_a_host() -> None:
    stores = [ds(1, "ds-nas-dr-ds1", "NAS", 100, ["h1", "h2"]), ds(2, "big-nas", "NAS", 900, ["h3"]),
              ds(3, "local-h1", "LOCALPOME", 50, ["h1"]), ds(4, "local-h3", "LOCALPOME", 40, ["h3"]),
              ds(5, "arm-local", "LOCALPOME", 999, ["h9"])]
    groups = [PortGroup.from_dict({"urn": f"{B}:dvswitchs:1:portgroups:{i}", "name": n})
              for i, n in enumerate(["dr-prod-net", "dr-isolated"], 1)]
    arch = {f"{B}:hosts:h{i}": "x86_64" for i in (1, 2, 3)} | {f"{B}:hosts:h9": "aarch64"}
    m = suggest_mapping(point(), "BBBB0002", stores, groups, arch="x86_64", host_arch=arch)
    # ds1 by its name but for dr-; ds2 (no such name): LOCALPOME x86 sharing a host with ds1's pick (h1),
    # not the roomier aarch64 one nor local-h3
    assert m.datastores == {f"{A}:datastores:ds1": f"{B}:datastores:1", f"{A}:datastores:ds2": f"{B}:datastores:3"}
    # prod-net -> dr-prod-net; "backup" has no counterpart: left for the operator
    assert m.port_groups == {f"{A}:dvswitchs:1:portgroups:1": f"{B}:dvswitchs:1:portgroups:1"}
    # without recorded names: by class, most free space, and a remembered choice that still exists is kept
    base = SiteMapping("AAAA0001", "BBBB0002", datastores={f"{A}:datastores:ds2": f"{B}:datastores:4",
                                                          f"{A}:datastores:gone": f"{B}:datastores:77"})
    m = suggest_mapping(point(names=False), "BBBB0002", stores, groups, base, arch="x86_64", host_arch=arch)
    assert m.datastores == {f"{A}:datastores:ds2": f"{B}:datastores:4", f"{A}:datastores:ds1": f"{B}:datastores:2"}
    assert strip_dr("dr-prod-net") == strip_dr("PROD-NET") == "prod-net"
