"""Launch-, restore- and connect-time rules at their edges, where mutation testing found them unguarded
(README, Mutation testing): the business-hours grammar and window, the exact limits, the three bands of
repository space, the messages a person reads. Expected texts are written out here."""

from __future__ import annotations

from datetime import datetime, time

import pytest

from fctui.rules.launch import (BusinessHours, BusinessHoursError, business_hours, cross_storage_restore,
                                describe_days, host_sockets_busy, parse_api_version, repository_space,
                                restore_arch_mismatch, restore_overwrite_running, restore_space,
                                target_volumes_busy, vrm_version_untested)
from fctui.vrm.models import Datastore, Vm

GIB = 1 << 30
MON = datetime(2026, 11, 23)  # a Monday


def at(day: int, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    """Day 0 = Monday 2026-11-23."""
    return MON.replace(day=23 + day, hour=hh, minute=mm, second=ss)


def ds(storage_type: str = "NAS", *, name: str = "ds-1", free: int | None = 100, actual: int | None = None,
       hosts: tuple[str, ...] = ()) -> Datastore:
    d: dict = {"urn": "urn:sites:1:datastores:1", "name": name, "storageType": storage_type, "hosts": list(hosts)}
    if free is not None:
        d["freeSizeGB"] = free
    if actual is not None:
        d["actualFreeSizeGB"] = actual
    return Datastore.from_dict(d)


# --- business hours: the grammar ----------------------------------------------------------------------

@pytest.mark.parametrize("text,days,start,end", [
    ("mon-fri 08:00-18:00", {0, 1, 2, 3, 4}, time(8), time(18)),
    ("  MON,Wed,sat   9:30-17 ", {0, 2, 5}, time(9, 30), time(17)),
    ("daily 07:00-19:00", set(range(7)), time(7), time(19)),
    ("all 07:00-19:00", set(range(7)), time(7), time(19)),
    ("* 07:00-19:00", set(range(7)), time(7), time(19)),
    ("fri-mon 22:00-06:00", {4, 5, 6, 0}, time(22), time(6)),     # a range across the week's end
    ("sun-sun 00:00-24:00", {6}, time(0), time(23, 59, 59)),       # 24:00 is the end of the day
    ("monday,tuesday 8-9", {0, 1}, time(8), time(9)),              # day names by their first three letters
    ("tue-thu,sun 10:05-10:06", {1, 2, 3, 6}, time(10, 5), time(10, 6)),
    ("mon-wed-fri 8-9", {0, 1, 2}, time(8), time(9)),              # a range ends at its second name
])
def test_business_hours_parse(text: str, days: set[int], start: time, end: time) -> None:
    w = BusinessHours.parse(text)
    assert (w.days, w.start, w.end) == (frozenset(days), start, end)


@pytest.mark.parametrize("text,error", [
    ("mon-fri", "business hours 'mon-fri': expected 'DAYS HH:MM-HH:MM', e.g. 'mon-fri 08:00-18:00'"),
    ("mon-fri 08:00 18:00", "business hours 'mon-fri 08:00 18:00': expected 'DAYS HH:MM-HH:MM', e.g. 'mon-fri 08:00-18:00'"),
    ("mon-fri 0800", "business hours 'mon-fri 0800': hours must be START-END"),
    ("mon-fri 08:00-08:00", "business hours 'mon-fri 08:00-08:00': start and end are equal"),
    ("mon-fru 08:00-18:00", "business hours 'mon-fru 08:00-18:00': unknown day 'fru' (use mon..sun)"),
    ("xyz 08:00-18:00", "business hours 'xyz 08:00-18:00': unknown day 'xyz' (use mon..sun)"),
    ("mon 8h-18", "business hours 'mon 8h-18': bad time '8h' (use HH:MM)"),
    ("mon 08:00-18:xx", "business hours 'mon 08:00-18:xx': bad time '18:xx' (use HH:MM)"),
    ("mon 08:00-25:00", "business hours 'mon 08:00-25:00': bad time '25:00' (use HH:MM)"),
    ("mon 08:00-24:01", "business hours 'mon 08:00-24:01': bad time '24:01' (use HH:MM)"),
    ("mon 08:00-18:00-20:00", "business hours 'mon 08:00-18:00-20:00': bad time '18:00-20:00' (use HH:MM)"),
    ("xyz-fri 08:00-18:00", "business hours 'xyz-fri 08:00-18:00': unknown day 'xyz' (use mon..sun)"),
])
def test_business_hours_parse_errors_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(BusinessHoursError) as e:
        BusinessHours.parse(text)
    assert str(e.value) == error


def test_the_default_window_is_weekdays_eight_to_six() -> None:
    w = BusinessHours()
    assert w.days == frozenset({0, 1, 2, 3, 4}) and w.start == time(8) and w.end == time(18)
    assert w.describe() == "mon-fri 08:00-18:00"


# --- business hours: the window -----------------------------------------------------------------------

def test_a_day_window_includes_its_start_and_excludes_its_end() -> None:
    w = BusinessHours.parse("mon-fri 08:00-18:00")
    assert not w.contains(at(0, 7, 59, 59))
    assert w.contains(at(0, 8))
    assert w.contains(at(4, 17, 59, 59))
    assert not w.contains(at(4, 18))
    assert not w.contains(at(5, 12))          # Saturday
    assert not w.contains(at(6, 12))          # Sunday


def test_a_window_past_midnight_belongs_to_the_day_it_starts() -> None:
    w = BusinessHours.parse("fri 22:00-06:00")
    assert not w.contains(at(4, 21, 59))
    assert w.contains(at(4, 22))              # Friday evening
    assert w.contains(at(5, 5, 59))           # Saturday early morning: Friday's window
    assert not w.contains(at(5, 6))           # its end is excluded
    assert not w.contains(at(5, 22))          # Saturday evening: no window starts on Saturday
    assert not w.contains(at(4, 5))           # Friday early morning: Thursday had no window
    sun = BusinessHours.parse("sun 22:00-06:00")
    assert sun.contains(at(0, 1))             # Monday 01:00 is Sunday's window (the week wraps)
    assert not sun.contains(at(1, 1))


@pytest.mark.parametrize("days,text", [
    (range(7), "daily"),
    ({0, 1, 2, 3, 4}, "mon-fri"),
    ({0, 1}, "mon,tue"),
    ({5, 6}, "sat,sun"),
    ({0, 2, 4}, "mon,wed,fri"),
    ({0, 1, 2, 4, 5}, "mon-wed,fri,sat"),
    ({1, 2, 3, 5, 6}, "tue-thu,sat,sun"),
    ({3}, "thu"),
])
def test_describe_days_uses_ranges_of_three_or_more(days: set[int], text: str) -> None:
    assert describe_days(frozenset(days)) == text


def test_describe_is_what_parse_reads() -> None:
    w = BusinessHours.parse("sat,sun 22:00-06:30")
    assert w.describe() == "sat,sun 22:00-06:30"
    assert BusinessHours.parse(w.describe()) == w


def test_business_hours_finding_names_the_time_and_the_window() -> None:
    w = BusinessHours.parse("mon-fri 08:00-18:00")
    assert business_hours(None, at(2, 12)) is None
    assert business_hours(w, at(2, 19)) is None
    f = business_hours(w, at(2, 12, 5))
    assert f is not None and f.rule == "business-hours" and f.severity == "warning"
    assert f.message == ("starting at Wed 12:05, inside business hours (mon-fri 08:00-18:00): "
                         "backup reads load the production storage")


# --- the limits ---------------------------------------------------------------------------------------

def test_host_sockets_busy_at_the_limit_exactly() -> None:
    assert host_sockets_busy("cna-01", 7) is None
    f = host_sockets_busy("cna-01", 8)
    assert f is not None and f.message == "host cna-01 has 8 of 8 backup connections open: the job waits"
    assert host_sockets_busy("cna-01", 9) is not None
    assert host_sockets_busy("cna-01", 1, limit=2) is None
    assert host_sockets_busy("cna-01", 2, limit=2) is not None


def test_target_volumes_busy_at_the_limit_exactly() -> None:
    assert target_volumes_busy("ds-nas", 7) is None
    f = target_volumes_busy("ds-nas", 8)
    assert f is not None and f.message == "8 of 8 volumes already backing up on ds-nas: the job waits"
    assert target_volumes_busy("ds-nas", 2, limit=3) is None
    assert target_volumes_busy("ds-nas", 3, limit=3) is not None


# --- repository space: blocker, warning within 10 %, else info ------------------------------------------

def test_repository_space_bands() -> None:
    free, margin = 110 * GIB, 10 * GIB         # room: 100 GiB
    ok = repository_space(50 * GIB, 0, free, margin, "estimate")
    assert (ok.rule, ok.severity, ok.remediation) == ("repo-space-low", "info", "Nothing to do.")
    assert ok.message == "needs ~50.0 GiB in the repository (estimate); 110.0 GiB free, 10.0 GiB kept as margin"
    at90 = repository_space(90 * GIB, 0, free, margin, "estimate")
    assert at90.severity == "info"             # exactly 90 %: not yet "nearly"
    over = repository_space(60 * GIB, 41 * GIB, free, margin, "estimate")
    near = repository_space(60 * GIB, 31 * GIB, free, margin, "last backup")
    assert near.severity == "warning"
    assert near.remediation == over.remediation == ("Run `fctui repo prune --keep-last N` then `fctui repo gc`, free "
                                                    "space on the repository's filesystem, or back up fewer VMs at once.")
    assert near.message == ("repository nearly full: needs ~60.0 GiB in the repository (last backup); with the job's "
                            "earlier VMs ~91.0 GiB; 110.0 GiB free, 10.0 GiB kept as margin")
    full_exactly = repository_space(100 * GIB, 0, free, margin, "estimate")
    assert full_exactly.severity == "warning"  # exactly the room: fits
    assert over.severity == "blocker"
    assert over.message.startswith("repository too full: needs ~60.0 GiB in the repository (estimate); "
                                   "with the job's earlier VMs ~101.0 GiB;")


# --- restore-time rules ---------------------------------------------------------------------------------

def test_cross_storage_restore_messages() -> None:
    assert cross_storage_restore("NAS", ds("LOCALPOME")) is None          # both virtualized
    assert cross_storage_restore("DSWARE", ds("FusionOneStorage")) is None
    f = cross_storage_restore("NAS", ds("DSWARE", name="fs-1"))
    assert f is not None and f.rule == "cross-storage-restore"
    assert f.message == ("backup is from virtualized storage (NAS), target fs-1 is distributed (DSWARE): "
                         "restore across storage classes is not supported")
    u = cross_storage_restore("", ds("", name="x"))
    assert u is not None and u.message == ("cannot tell the storage class of the backup -> x (no type reported): "
                                           "restore refused")
    u2 = cross_storage_restore("ODD", ds("NAS", name="n"))
    assert u2 is not None and u2.message == "cannot tell the storage class of ODD -> n (NAS): restore refused"
    u3 = cross_storage_restore("NAS", ds("ODD", name="n"))
    assert u3 is not None and u3.message.startswith("cannot tell the storage class of NAS -> n (ODD)")
    same_unknown = cross_storage_restore("ODD", ds("ODD", name="n"))
    assert same_unknown is not None                                       # unknown is never "the same"


def test_restore_arch_mismatch() -> None:
    arch = {"h1": "x86_64", "h2": "aarch64", "h3": ""}
    assert restore_arch_mismatch("x86_64", ds(hosts=("h1",)), arch) is None
    assert restore_arch_mismatch("x86_64", ds(hosts=("h1", "h2")), arch) is None    # an x86 host reaches it
    assert restore_arch_mismatch("", ds(hosts=("h2",)), arch) is None               # source unknown
    assert restore_arch_mismatch("x86_64", ds(hosts=("h3", "h9")), arch) is None    # no host reports one
    f = restore_arch_mismatch("x86_64", ds(name="arm-ds", hosts=("h2", "h3")), arch, ["v1"])
    assert f is not None and f.rule == "restore-arch-mismatch" and f.disks == ["v1"]
    assert f.message == ("the backup is of an x86_64 VM; arm-ds is reachable only from aarch64 hosts: "
                         "the restored guest would not boot")
    assert f.remediation == ("Pick a datastore that x86_64 hosts reach (the VM's own cluster's are offered first).")


def test_restore_space_uses_physical_free_space_and_exact_need() -> None:
    assert restore_space(ds(free=100), [60, 40]) is None                   # exactly fits
    f = restore_space(ds(name="d", free=100), [60, 40.5], ["v1", "v2"])
    assert f is not None and f.rule == "restore-space" and f.disks == ["v1", "v2"]
    assert f.message == "d has 100.0 GiB free, the restored disks need 100.5 GiB"
    thin = restore_space(ds(name="t", free=500, actual=50), [60])           # the physical free space counts
    assert thin is not None and thin.message == "t has 50.0 GiB free, the restored disks need 60.0 GiB"
    none = restore_space(ds(name="n", free=None), [1.5], ["v"])
    assert none is not None and none.disks == ["v"]
    assert none.message == "n reports no free space; 1.5 GiB are needed"
    assert none.remediation == "Refresh the datastore, or pick one that reports its free space."


def test_restore_overwrite_running() -> None:
    def vm(**kw: str) -> Vm:
        return Vm.from_dict({"urn": "urn:sites:1:vms:i-1", "name": "db", "status": "running", **kw})
    assert restore_overwrite_running(vm(status="stopped")) is None
    assert restore_overwrite_running(vm(), stop_confirmed=True) is None
    f = restore_overwrite_running(vm())
    assert f is not None and f.rule == "restore-overwrite-running"
    assert f.message == "db is running: its disks cannot be overwritten until it is stopped"
    g = restore_overwrite_running(vm(name="", status=""))
    assert g is not None and g.message == ("urn:sites:1:vms:i-1 is in an unreported state: its disks cannot be "
                                           "overwritten until it is stopped")


# --- the VRM's API version ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,parts", [
    ("v8.0", (8, 0)), ("8.0.1", (8, 0, 1)), (" V6.3 ", (6, 3)), ("8", (8,)), ("", None), ("v", None),
    ("8.x", None), ("  ", None),
])
def test_parse_api_version(text: str, parts: tuple[int, ...] | None) -> None:
    assert parse_api_version(text) == parts


def test_vrm_version_untested() -> None:
    assert vrm_version_untested("v8.7") is None
    assert vrm_version_untested("8.7.0") is None
    assert vrm_version_untested("6.3") is None
    f = vrm_version_untested("v8.0")
    assert f is not None and f.rule == "vrm-version-untested"
    assert f.message == ("VRM API version v8.0 is outside the tested range "
                         "(FusionCompute 6.3.0 / VRM interface 8.7.0)")
    assert vrm_version_untested("8") is not None          # 8 reads as 8.0
    n = vrm_version_untested("")
    assert n is not None and n.message.startswith("VRM API version none reported is outside")
    assert vrm_version_untested("garbage") is not None
