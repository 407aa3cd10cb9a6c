"""Launch-time, restore-time and connect-time rules, as functions the job planner calls.

Each returns a :class:`~fctui.rules.engine.Finding` when its rule fires, else None. None of them is
part of the inventory verdict. Time is always injected (``now``), so they are pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from typing import Iterable, Mapping

from ..units import human_bytes
from ..vrm.models import Datastore, Vm
from . import catalog as C
from .engine import Finding

GIB = 1 << 30   # the VRM gives datastore and disk sizes in (binary) GB

__all__ = [
    "BusinessHours", "BusinessHoursError", "describe_days", "host_sockets_busy", "target_volumes_busy", "business_hours",
    "cross_storage_restore", "restore_space", "restore_overwrite_running", "vrm_version_untested",
    "parse_api_version", "repository_space",
]

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class BusinessHoursError(ValueError):
    """A business-hours window that cannot be read (says what was wrong)."""


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """A weekly window in local time: ``days`` (0 = Monday) and ``start``..``end``.
    ``end`` before ``start`` means the window runs past midnight (into the next day)."""
    days: frozenset[int] = frozenset({0, 1, 2, 3, 4})
    start: time = time(8, 0)
    end: time = time(18, 0)

    @classmethod
    def parse(cls, text: str) -> "BusinessHours":
        """``"mon-fri 08:00-18:00"``, ``"mon,wed,sat 9:30-17"``, ``"daily 07:00-19:00"``."""
        parts = text.strip().lower().split()
        if len(parts) != 2:
            raise BusinessHoursError(f"business hours {text!r}: expected 'DAYS HH:MM-HH:MM', e.g. 'mon-fri 08:00-18:00'")
        days = _parse_days(parts[0], text)
        if "-" not in parts[1]:
            raise BusinessHoursError(f"business hours {text!r}: hours must be START-END")
        a, b = parts[1].split("-", 1)
        start, end = _parse_time(a, text), _parse_time(b, text)
        if start == end:
            raise BusinessHoursError(f"business hours {text!r}: start and end are equal")
        return cls(days, start, end)

    def contains(self, now: datetime) -> bool:
        t = now.time()
        wd = now.weekday()
        if self.start < self.end:
            return wd in self.days and self.start <= t < self.end
        # past midnight: the part before midnight belongs to today, the rest to yesterday's window
        if t >= self.start:
            return wd in self.days
        return t < self.end and (wd - 1) % 7 in self.days

    def describe(self) -> str:
        """The form ``parse`` reads, shortest: ``daily 22:00-06:00``, ``mon-fri 08:00-18:00``, ``sat,sun ...``."""
        return f"{describe_days(self.days)} {self.start.strftime('%H:%M')}-{self.end.strftime('%H:%M')}"


def describe_days(days: frozenset[int]) -> str:
    """``daily``, ``mon-fri``, ``mon,wed,sat``: runs of three or more days as ranges."""
    if len(days) == 7:
        return "daily"
    ds = sorted(days)
    groups: list[list[int]] = []
    for d in ds:
        if groups and d == groups[-1][-1] + 1:
            groups[-1].append(d)
        else:
            groups.append([d])
    parts = []
    for g in groups:
        if len(g) >= 3:
            parts.append(f"{_DAY_NAMES[g[0]]}-{_DAY_NAMES[g[-1]]}")
        else:
            parts.extend(_DAY_NAMES[d] for d in g)
    return ",".join(parts)


def _parse_days(s: str, text: str) -> frozenset[int]:
    if s in ("daily", "all", "*"):
        return frozenset(range(7))
    out: set[int] = set()
    for item in s.split(","):
        if "-" in item:
            a, b = item.split("-", 1)
            ia, ib = _day(a, text), _day(b, text)
            i = ia
            while True:
                out.add(i)
                if i == ib:
                    break
                i = (i + 1) % 7
        else:
            out.add(_day(item, text))
    return frozenset(out)


def _day(s: str, text: str) -> int:
    key = s.strip()[:3]
    if key not in _DAY_NAMES:
        raise BusinessHoursError(f"business hours {text!r}: unknown day {s!r} (use mon..sun)")
    return _DAY_NAMES.index(key)


def _parse_time(s: str, text: str) -> time:
    hh, _, mm = s.partition(":")
    try:
        h, m = int(hh), int(mm or 0)
        if h == 24 and m == 0:
            return time(23, 59, 59)
        return time(h, m)
    except ValueError:
        raise BusinessHoursError(f"business hours {text!r}: bad time {s!r} (use HH:MM)") from None


def host_sockets_busy(host_name: str, open_connections: int, limit: int = C.SOCKETS_PER_HOST) -> Finding | None:
    """The VM's host already has ``limit`` backup connections open: the job queues."""
    if open_connections < limit:
        return None
    return Finding.of(C.RULES["host-sockets-busy"],
                      f"host {host_name} has {open_connections} of {limit} backup connections open: the job waits")


def target_volumes_busy(datastore_name: str, volumes_in_progress: int,
                        limit: int = C.MERGES_PER_TARGET) -> Finding | None:
    """``limit`` volumes are already being backed up onto the same target storage: the job queues."""
    if volumes_in_progress < limit:
        return None
    return Finding.of(C.RULES["target-volumes-busy"],
                      f"{volumes_in_progress} of {limit} volumes already backing up on {datastore_name}: the job waits")


def business_hours(window: BusinessHours | None, now: datetime) -> Finding | None:
    """The job would start inside the configured business-hours window (``now`` is local time)."""
    if window is None or not window.contains(now):
        return None
    return Finding.of(C.RULES["business-hours"],
                      f"starting at {now.strftime('%a %H:%M')}, inside business hours ({window.describe()}): "
                      "backup reads load the production storage")


def repository_space(need: int, need_before: int, free: int, margin: int, basis: str) -> Finding:
    """``repo-space-low``: a backup's estimated repository bytes (``need``, on top of ``need_before`` for
    the job's earlier VMs) against the repository's free space less a ``margin``. A blocker when they do
    not fit, a warning within 10 % of fitting (rules.md), else an info finding with the numbers."""
    room = free - margin
    total = need_before + need
    job = f"; with the job's earlier VMs ~{human_bytes(total)}" if need_before else ""
    numbers = (f"needs ~{human_bytes(need)} in the repository ({basis}){job}; "
               f"{human_bytes(free)} free, {human_bytes(margin)} kept as margin")
    info = C.RULES["repo-space-low"]
    if total > room:
        return Finding.of(info, f"repository too full: {numbers}")
    if total > 0.9 * room:
        return Finding(info.id, C.WARNING, f"repository nearly full: {numbers}", info.remediation)
    return Finding(info.id, C.INFO, numbers, "Nothing to do.")


def cross_storage_restore(backup_storage_type: str, target: Datastore) -> Finding | None:
    """The target datastore's storage class differs from the one the disk was backed up from."""
    src = C.storage_class(backup_storage_type)
    dst = C.storage_class(target.storage_type)
    if src == dst and src != C.UNKNOWN_CLASS:
        return None
    if C.UNKNOWN_CLASS in (src, dst):
        msg = (f"cannot tell the storage class of {backup_storage_type or 'the backup'} -> "
               f"{target.name} ({target.storage_type or 'no type reported'}): restore refused")
    else:
        msg = (f"backup is from {src} storage ({backup_storage_type}), target {target.name} is {dst} "
               f"({target.storage_type}): restore across storage classes is not supported")
    return Finding.of(C.RULES["cross-storage-restore"], msg)


def restore_arch_mismatch(source_arch: str, target: Datastore, host_arch: Mapping[str, str],
                          disk_urns: list[str] | None = None) -> Finding | None:
    """The target datastore is reachable only from hosts of another CPU architecture than the source VM.

    ``host_arch`` maps host URNs to their reported ``arch``. Nothing fires when the source architecture
    is unknown, or when no host of the datastore reports one (nothing to compare)."""
    src = C.arch_family(source_arch)
    seen = {C.arch_family(host_arch.get(h, "")) for h in target.hosts} - {""}
    if not src or not seen or src in seen:
        return None
    return Finding.of(C.RULES["restore-arch-mismatch"],
                      f"the backup is of an {src} VM; {target.name} is reachable only from "
                      f"{'/'.join(sorted(seen))} hosts: the restored guest would not boot", disk_urns,
                      remediation=f"Pick a datastore that {src} hosts reach (the VM's own cluster's are offered "
                                  "first).")


def restore_space(target: Datastore, disks_gb: Iterable[float], disk_urns: list[str] | None = None) -> Finding | None:
    """The target datastore lacks free space for the restored disks (their provisioned sizes)."""
    need = float(sum(disks_gb))
    free = target.usable_free_gb
    if free is None:
        return Finding.of(C.RULES["restore-space"],
                          f"{target.name} reports no free space; {human_bytes(need * GIB)} are needed", disk_urns,
                          remediation="Refresh the datastore, or pick one that reports its free space.")
    if free >= need:
        return None
    return Finding.of(C.RULES["restore-space"],
                      f"{target.name} has {human_bytes(free * GIB)} free, the restored disks need {human_bytes(need * GIB)}",
                      disk_urns)


def restore_overwrite_running(vm: Vm, *, stop_confirmed: bool = False) -> Finding | None:
    """Restoring over the original VM while it is not stopped (until the user confirms a stop)."""
    if vm.status == C.STOPPED or stop_confirmed:
        return None
    return Finding.of(C.RULES["restore-overwrite-running"],
                      f"{vm.name or vm.urn} is {vm.status or 'in an unreported state'}: its disks cannot be "
                      "overwritten until it is stopped")


def parse_api_version(version: str) -> tuple[int, ...] | None:
    """``"v8.0"``, ``"8.0.1"``, ``"6.3"`` -> numeric parts; None when unreadable."""
    v = version.strip().lower().lstrip("v")
    if not v:
        return None
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        return None


def vrm_version_untested(api_version: str) -> Finding | None:
    """The negotiated API version is outside the tested range (see catalog.TESTED_API_VERSIONS)."""
    parts = parse_api_version(api_version)
    if parts is not None and tuple((parts + (0,))[:2]) in C.TESTED_API_VERSIONS:
        return None
    shown = api_version or "none reported"
    return Finding.of(C.RULES["vrm-version-untested"],
                      f"VRM API version {shown} is outside the tested range ({C.TESTED_DESCRIPTION})")
