"""Job, VM and disk progress records shared by the runner, the agent, the CLI and the TUI.

Plain dataclasses that round-trip through JSON (the agent persists them in tinydb and streams them over
its socket), so no textual and no httpx here.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .dr import RUN_KINDS

# Job states. ``interrupted``: the agent died while the job ran (found on the next agent start).
# A ``succeeded`` job may carry ``warnings``: every restore point is committed, but something it created
# on the VRM (a snapshot, a backup resource) is still there, queued for the agent's snapshot hunter.
# Shown as "succeeded with warnings" (:attr:`JobRecord.outcome`); the state stays ``succeeded`` so
# every consumer of the state keeps working.
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINAL_JOB_STATES = frozenset({"succeeded", "failed", "cancelled", "interrupted"})

# VM states inside a job.
VM_STATES = ("queued", "waiting", "snapshot", "reading", "cleanup", "done", "failed", "cancelled", "refused")
FINAL_VM_STATES = frozenset({"done", "failed", "cancelled", "refused"})

# Disk states inside a VM.
DISK_STATES = ("waiting", "reading", "done", "failed", "cancelled", "excluded")


class JobError(Exception):
    """A job-level failure with a one-line human message (never a traceback for the user)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class DiskProgress:
    volume: str                      # volume URN
    name: str = ""
    mode: str = "full"               # full | incremental | excluded
    reason: str = ""                 # why this mode (or why excluded)
    state: str = "waiting"
    wait_reason: str = ""            # host-sockets-busy, target-volumes-busy, previous disk of the VM, ...
    bytes_planned: int | None = None  # known from the CBT bitmap after the snapshot
    bytes_read: int = 0
    bytes_written: int = 0           # read bytes that were new to the repository (not reused, not zero)
    bytes_reused: int = 0
    bytes_zero: int = 0
    bytes_stored: int = 0            # compressed bytes actually added to the repository
    blocks_planned: int | None = None
    blocks_healed: int = 0           # unchanged per CBT, but the base point's chunk was gone: read again
    started: float | None = None
    finished: float | None = None
    error: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiskProgress":
        return _from_dict(cls, d)

    @property
    def planned(self) -> int | None:
        """The bytes this disk's progress counts up to. A disk that is done without a plan (an overwrite
        restore recorded before restores planned their read-back) did exactly what it read."""
        if self.bytes_planned is None and self.state == "done":
            return self.bytes_read
        return self.bytes_planned


@dataclass
class VmProgress:
    urn: str
    name: str = ""
    host: str = ""
    kind: str | None = None          # cbt | standard | None (refused)
    state: str = "queued"
    reason: str = ""                 # refusal reason, wait reason or failure message
    snapshot_urn: str = ""
    pause_s: float | None = None     # observed snapshot task duration (VRM start/finish)
    point_id: str | None = None
    chain: str = ""                  # how the CBT chain stands after this run
    blocks_healed: int = 0           # sum over its disks (see DiskProgress.blocks_healed)
    disks: list[DiskProgress] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VmProgress":
        vm = _from_dict(cls, {k: v for k, v in d.items() if k != "disks"})
        vm.disks = [DiskProgress.from_dict(x) for x in d.get("disks") or []]
        return vm

    @property
    def bytes_planned(self) -> int:
        return sum(d.bytes_planned or 0 for d in self.disks)

    @property
    def bytes_read(self) -> int:
        return sum(d.bytes_read for d in self.disks)


@dataclass
class JobRecord:
    id: str
    type: str = "backup"
    state: str = "queued"
    vrm: str = ""
    user: str = ""
    demo: bool = False
    targets: list[str] = field(default_factory=list)  # VM names or URNs as the user gave them
    full: bool = False
    policy: str = ""                  # the protection policy whose run this job is ("" : started by hand)
    full_vms: dict[str, str] = field(default_factory=dict)  # VM URN -> why read fully (a periodic full)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str = ""
    restore_points: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # leftovers queued for cleanup, one line each
    vms: list[VmProgress] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)  # bounded, newest last

    LOG_LIMIT = 200

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JobRecord":
        job = _from_dict(cls, {k: v for k, v in d.items() if k != "vms"})
        job.vms = [VmProgress.from_dict(x) for x in d.get("vms") or []]
        return job

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add_log(self, message: str, level: str = "info", when: float | None = None) -> dict[str, Any]:
        entry = {"time": time.time() if when is None else when, "level": level, "message": message}
        self.log.append(entry)
        if len(self.log) > self.LOG_LIMIT:
            del self.log[: len(self.log) - self.LOG_LIMIT]
        return entry

    def settle(self, cancelled: bool = False) -> None:
        """The end of a job from its VMs' states (one rule for a local run and a cluster's): cancelled
        when asked or a VM was; succeeded when every VM is done; else failed, naming each VM not done."""
        states = [v.state for v in self.vms]
        if cancelled or any(s == "cancelled" for s in states):
            self.state = "cancelled"
        elif states and all(s == "done" for s in states):
            self.state = "succeeded"
        else:
            self.state = "failed"
            bad = [v for v in self.vms if v.state != "done"]
            self.error = "; ".join(f"{v.name or v.urn}: {v.reason or v.state}" for v in bad)[:2000]
        self.finished = time.time()

    def end_message(self) -> tuple[str, str]:
        """The log line of a settled job's end, and its level."""
        return (f"job {self.outcome}" + (f": {self.error}" if self.error else "")
                + (f": {'; '.join(self.warnings)}" if self.outcome != self.state else ""),
                "info" if self.outcome == "succeeded" else "warning" if self.state == "succeeded" else "error")

    def vm(self, urn: str) -> VmProgress | None:
        return next((v for v in self.vms if v.urn == urn), None)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_JOB_STATES

    @property
    def is_recovery(self) -> bool:
        """A rehearsal or failover of a recovery plan: its VMs are restored and booted, its bytes not totalled."""
        return self.type in RUN_KINDS

    @property
    def outcome(self) -> str:
        """The state as shown to people: ``succeeded with warnings`` when a leftover was queued."""
        return "succeeded with warnings" if self.state == "succeeded" and self.warnings else self.state

    def totals(self) -> dict[str, int]:
        keys = ("bytes_read", "bytes_written", "bytes_reused", "bytes_zero", "bytes_stored")
        out = {k: 0 for k in keys}
        out["bytes_planned"] = 0
        for v in self.vms:
            for d in v.disks:
                for k in keys:
                    out[k] += getattr(d, k)
                out["bytes_planned"] += d.planned or 0
        return out

    def owned_snapshots(self) -> dict[str, str]:
        """Snapshot URN -> VM URN of the snapshots this job made and still needs (none once it ended):
        not leftovers, whatever the rules would say of them."""
        if self.is_final:
            return {}
        return {v.snapshot_urn: v.urn for v in self.vms if v.snapshot_urn}

    def summary_json(self) -> dict[str, Any]:
        """The ``fctui backup --json`` document (issue 5 §6 contract)."""
        return {
            "job": self.id,
            "state": self.state,
            "warnings": list(self.warnings),  # non-empty: succeeded with warnings
            "restore_points": list(self.restore_points),
            "vms": [
                {"urn": v.urn, "kind": v.kind, "blocks_healed": v.blocks_healed,
                 "disks": [{"volume": d.volume, "mode": d.mode, "reason": d.reason,
                            "bytes_planned": d.planned or 0, "bytes_read": d.bytes_read,
                            "bytes_written": d.bytes_written, "blocks_healed": d.blocks_healed}
                           for d in v.disks if d.mode != "excluded"]}
                for v in self.vms
            ],
        }
