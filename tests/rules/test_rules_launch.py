"""Launch-time, restore-time and connect-time rules (the job planner calls these)."""

from __future__ import annotations

from datetime import datetime, time

import pytest

from fctui.rules import catalog as C
from fctui.rules.launch import (BusinessHours, BusinessHoursError, business_hours, cross_storage_restore,
                                host_sockets_busy, parse_api_version, restore_arch_mismatch,
                                restore_overwrite_running, restore_space,
                                target_volumes_busy, vrm_version_untested)
from fctui.vrm.models import Datastore, Vm


def ds(storage_type: str, free: int | None = 100, name: str = "ds-1") -> Datastore:
    d = {"urn": "urn:sites:1:datastores:1", "name": name, "storageType": storage_type}
    if free is not None:
        d["freeSizeGB"] = free
    return Datastore.from_dict(d)


def test_host_sockets_busy() -> None:
    assert host_sockets_busy("cna-01", 7) is None
    f = host_sockets_busy("cna-01", 8)
    assert f is not None and f.rule == "host-sockets-busy" and f.severity == "info" and "cna-01" in f.message
    assert host_sockets_busy("cna-01", 3, limit=3) is not None  # a configured lower limit


def test_target_volumes_busy() -> None:
    assert target_volumes_busy("ds-nas", 0) is None
    f = target_volumes_busy("ds-nas", 8)
    assert f is not None and f.rule == "target-volumes-busy" and f.severity == "info"


def test_business_hours_window() -> None:
    w = BusinessHours.parse("mon-fri 08:00-18:00")
    wed_noon = datetime(2026, 11, 25, 12, 0)  # a Wednesday
    f = business_hours(w, wed_noon)
    assert f is not None and f.rule == "business-hours" and f.severity == "warning"
    assert business_hours(w, datetime(2026, 11, 25, 18, 0)) is None      # end is exclusive
    assert business_hours(w, datetime(2026, 11, 25, 7, 59)) is None
    assert business_hours(w, datetime(2026, 11, 28, 12, 0)) is None      # Saturday
    assert business_hours(None, wed_noon) is None


def test_business_hours_past_midnight_and_parse_forms() -> None:
    night = BusinessHours.parse("fri 22:00-02:00")
    assert night.contains(datetime(2026, 11, 27, 23, 0))                 # Friday 23:00
    assert night.contains(datetime(2026, 11, 28, 1, 0))                  # Saturday 01:00, Friday's window
    assert not night.contains(datetime(2026, 11, 28, 23, 0))             # Saturday 23:00
    assert BusinessHours.parse("daily 9-17").days == frozenset(range(7))
    assert BusinessHours.parse("sat-mon 10:30-12").days == frozenset({5, 6, 0})
    assert BusinessHours.parse("mon,wed 08:00-09:00").start == time(8, 0)
    for bad in ("", "mon-fri", "funday 08:00-09:00", "mon 8-8", "mon 25:00-26:00", "mon 08:00"):
        with pytest.raises(BusinessHoursError):
            BusinessHours.parse(bad)


def test_restore_arch_mismatch_fires_only_when_no_host_of_the_source_arch_reaches_the_datastore() -> None:
    shared = Datastore.from_dict({"urn": "urn:sites:1:datastores:9", "name": "ds-nas-arm", "storageType": "NAS",
                                  "hosts": ["h-arm1", "h-arm2"]})
    arch = {"h-arm1": "aarch64", "h-arm2": "ARM64", "h-x86": "x86_64"}
    f = restore_arch_mismatch("x86_64", shared, arch, ["urn:vol:1"])
    assert f is not None and f.rule == "restore-arch-mismatch" and f.severity == "blocker"
    assert f.disks == ["urn:vol:1"] and "ds-nas-arm" in f.message and "aarch64" in f.message
    assert restore_arch_mismatch("aarch64", shared, arch) is None
    assert restore_arch_mismatch("", shared, arch) is None                 # unknown source: said elsewhere
    assert restore_arch_mismatch("x86_64", shared, {}) is None             # no host reports an arch
    shared.hosts.append("h-x86")                                            # one x86 host reaches it
    assert restore_arch_mismatch("x86_64", shared, arch) is None
    assert [C.arch_family(a) for a in ("x86_64", "AMD64", "aarch64", "arm64", "", "sparc")] == \
        [C.X86, C.X86, C.ARM, C.ARM, "", ""]


def test_cross_storage_restore_compares_class() -> None:
    assert cross_storage_restore("NAS", ds("LOCALPOME")) is None          # virtualized -> virtualized
    assert cross_storage_restore("DSWARE", ds("FusionOneStorage")) is None
    f = cross_storage_restore("NAS", ds("DSWARE"))
    assert f is not None and f.rule == "cross-storage-restore" and f.severity == "blocker"
    assert "virtualized" in f.message and "distributed" in f.message
    assert cross_storage_restore("LUNPOME", ds("san")) is not None
    assert cross_storage_restore("NAS", ds("")) is not None               # unknown class is refused


def test_restore_space() -> None:
    assert restore_space(ds("NAS", free=100), [40, 60]) is None
    f = restore_space(ds("NAS", free=99), [40, 60], ["urn:v:1"])
    assert f is not None and f.rule == "restore-space" and f.disks == ["urn:v:1"]
    assert restore_space(ds("NAS", free=None), [1]) is not None           # free space unknown: refuse


def test_restore_overwrite_running() -> None:
    running = Vm.from_dict({"urn": "urn:sites:1:vms:i-1", "name": "db", "status": "running"})
    stopped = Vm.from_dict({"urn": "urn:sites:1:vms:i-1", "name": "db", "status": "stopped"})
    f = restore_overwrite_running(running)
    assert f is not None and f.rule == "restore-overwrite-running" and f.severity == "blocker"
    assert restore_overwrite_running(running, stop_confirmed=True) is None
    assert restore_overwrite_running(stopped) is None


@pytest.mark.parametrize("version,untested", [
    ("6.3", False), ("v6.3", False), ("6.3.0", False), ("8.7.0", False), ("8.7", False),
    ("8.1", True), ("v8.0", True), ("6.0", True), ("", True), ("garbage", True)])
def test_vrm_version_untested(version: str, untested: bool) -> None:
    f = vrm_version_untested(version)
    assert (f is not None) is untested
    if f is not None:
        assert f.rule == "vrm-version-untested" and f.severity == "warning"


def test_parse_api_version() -> None:
    assert parse_api_version("v8.0.1") == (8, 0, 1)
    assert parse_api_version("x") is None


def test_launch_rules_are_not_inventory_rules() -> None:
    for r in C.LAUNCH_RULE_IDS:
        assert C.RULES[r].stage in ("launch", "restore", "connect")
