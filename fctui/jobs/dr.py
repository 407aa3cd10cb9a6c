"""Disaster recovery: recovery plans, and rehearsals/failovers that restore them into another site.

A *recovery plan* names the VMs to bring back (resolved to source VM URNs when the plan is made, from a
filter or a policy), the site they come back on (a config profile), how things map there (the site pair's
remembered :class:`~fctui.jobs.sitemap.SiteMapping`, overridable per plan), and a boot order in groups
(databases before applications).

A *rehearsal* restores each VM's latest good restore point into the target site (NICs on an isolated port
group, or none), powers the groups on in order, waits for each VM to answer (VM Tools ``running``, within
``tools_timeout_s``), records the recovery time per VM and for the plan, then removes everything it
created (unless kept). A *failover* does the same for real: production port groups, nothing removed.
Everything a run creates is journaled before it is created, so a crash leaves a record that it must be
cleaned (the engine's cleanup queue).

CONTRACT (issue 19): the dataclasses and the store's method names below are shared by the engine,
the CLI (``fctui dr``) and the console (plans, last result, live rehearsal). Helper "dr" implements
the store, the runner and the agent job; helper "dr-console" reads them. Times are floats in seconds
(epoch for instants) from the injected clock.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RUN_KINDS = ("rehearsal", "failover")
# a VM's way through a run, in order; "failed" and "no-point" end it early
VM_STATES = ("waiting", "restoring", "restored", "booting", "running", "failed", "no-point")
RUN_STATES = ("running", "succeeded", "failed", "cancelled")
CLEANUP_STATES = ("pending", "done", "kept", "failed", "none")   # "none": a failover removes nothing
OTHERS_GROUP = "others"   # the implicit last group: plan VMs no group matches


class DrError(Exception):
    """A plan or a run that cannot be made (unknown plan, bad group, no target profile ...); one line."""


@dataclass
class BootGroup:
    name: str                                         # "databases"
    match: list[str] = field(default_factory=list)    # VM name globs (case-insensitive) or URNs; first group wins

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BootGroup":
        return cls(name=str(d["name"]), match=[str(x) for x in d.get("match") or []])


@dataclass
class RecoveryPlan:
    name: str
    target: str                                       # config profile of the recovery site's VRM
    vms: list[str] = field(default_factory=list)      # source VM URNs (one source site)
    vm_names: dict[str, str] = field(default_factory=dict)   # URN -> name when resolved (display, globs)
    selection: str = ""                               # how vms were chosen: "filter:TEXT" or "policy:NAME"
    groups: list[BootGroup] = field(default_factory=list)    # boot order; unmatched VMs go last (OTHERS_GROUP)
    location: str = ""                                # target cluster/host URN; "" : the site pair's mapping
    datastores: dict[str, str] = field(default_factory=dict)     # overrides of the site pair's mapping
    port_groups: dict[str, str] = field(default_factory=dict)    # overrides (failover networks)
    rehearsal_network: str = ""                       # target port group URN for a rehearsal's NICs; "" : no NIC
    tools_timeout_s: float = 600.0                    # a VM whose Tools are not running by then failed to boot
    names: dict[str, str] = field(default_factory=dict)  # URN -> name of the datastores, port groups and
    #                                                   location above, as read when the plan was made (display)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["groups"] = [g.to_dict() for g in self.groups]
        return out

    def name_of(self, urn: str) -> str:
        """``urn`` as people know it: its name when the plan was made (the URN when it has none)."""
        return self.names.get(urn) or urn

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RecoveryPlan":
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "groups"}
        plan = cls(**kw)
        plan.groups = [BootGroup.from_dict(g) for g in d.get("groups") or []]
        return plan


@dataclass
class VmRecovery:
    vm_urn: str                       # the source VM
    vm_name: str
    group: str
    state: str = "waiting"            # VM_STATES
    point_id: str = ""                # the restore point used ("" : none good: state no-point)
    point_created: float | None = None
    restored_urn: str = ""            # the VM created on the target site
    restored_name: str = ""
    error: str = ""                   # why it failed (one line, names the cause: "Tools not running after 600 s")
    restore_s: float | None = None    # restore start -> restored
    boot_s: float | None = None       # power-on -> Tools running
    rto_s: float | None = None        # run start -> Tools running: what the business waits

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VmRecovery":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class RecoveryRun:
    id: str
    plan: str
    kind: str                         # RUN_KINDS
    target: str                       # profile (and site) recovered into
    job_id: str = ""                  # the agent job that runs it
    started: float = 0.0
    finished: float | None = None
    state: str = "running"            # RUN_STATES
    vms: list[VmRecovery] = field(default_factory=list)
    rto_s: float | None = None        # run start -> last VM running (set when every VM ran)
    cleanup: str = "pending"          # CLEANUP_STATES
    cleanup_error: str = ""
    error: str = ""

    @property
    def failed_vms(self) -> list[VmRecovery]:
        return [v for v in self.vms if v.state in ("failed", "no-point")]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["vms"] = [v.to_dict() for v in self.vms]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RecoveryRun":
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "vms"}
        run = cls(**kw)
        run.vms = [VmRecovery.from_dict(v) for v in d.get("vms") or []]
        return run


PLAN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
RUNS_KEPT = 20   # finished runs kept per plan (the newest); a running one is never dropped


def check_plan_name(name: str) -> str:
    if not PLAN_NAME_RE.match(name or ""):
        raise DrError(f"bad plan name {name!r}: letters, digits, '.', '_', '-' (at most 64, starting "
                      "with a letter or digit)")
    return name


class DrStore:
    """Plans and runs, persisted in the data dir (atomic writes; a damaged file is a clear DrError and
    is never overwritten). The console reads it from its own process.

    Layout under ``path`` (default ``<data dir>/dr``): ``plans.json`` (every plan, by name; edits are
    read-modify-write under a file lock so two editors never lose each other's change) and
    ``runs/<run id>.json`` (one file per run: the agent rewrites its run as it changes, the console
    polls it, and a write never touches another run). The newest :data:`RUNS_KEPT` finished runs per
    plan are kept.
    """

    def __init__(self, path: Any = None) -> None:
        from ..store import data_dir
        self.path = Path(path) if path is not None else data_dir() / "dr"
        self.plans_path = self.path / "plans.json"
        self.runs_dir = self.path / "runs"
        self.lock_path = self.path / "dr.lock"

    # --- files --------------------------------------------------------------------------------------

    def _mkdirs(self) -> None:
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise DrError(f"cannot create {self.runs_dir}: {e.strerror or e}") from e

    def _locked(self) -> Any:
        from ..store import StoreError, WriterLock
        self._mkdirs()
        lock = WriterLock(self.lock_path, timeout=10.0, purpose="recovery plan editor")
        try:
            return lock.acquire()
        except StoreError as e:
            raise DrError(str(e)) from e

    @staticmethod
    def _read(path: Path, what: str) -> dict[str, Any] | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise DrError(f"cannot read {what} {path}: {e.strerror or e}") from e
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise DrError(f"{what} {path} is damaged (not JSON: {e}); move it away or fix it, "
                          "it is not overwritten") from e
        if not isinstance(data, dict):
            raise DrError(f"{what} {path} is damaged (not a JSON object); move it away or fix it, "
                          "it is not overwritten")
        return data

    @staticmethod
    def _write(path: Path, data: dict[str, Any]) -> None:
        from ..store import StoreError, atomic_write_bytes
        try:
            atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())
        except StoreError as e:
            raise DrError(str(e)) from e

    def _plan_docs(self) -> dict[str, dict[str, Any]]:
        data = self._read(self.plans_path, "recovery plans file")
        if data is None:
            return {}
        plans = data.get("plans")
        if not isinstance(plans, dict):
            raise DrError(f"recovery plans file {self.plans_path} is damaged (no 'plans' object); move it "
                          "away or fix it, it is not overwritten")
        return plans

    @staticmethod
    def _plan_from(name: str, d: Any, path: Path) -> RecoveryPlan:
        try:
            return RecoveryPlan.from_dict(d)
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise DrError(f"recovery plan {name!r} in {path} is damaged ({e})") from e

    # --- plans --------------------------------------------------------------------------------------

    def plans(self) -> list[RecoveryPlan]:
        docs = self._plan_docs()
        return sorted((self._plan_from(n, d, self.plans_path) for n, d in docs.items()), key=lambda p: p.name)

    def plan(self, name: str) -> RecoveryPlan:
        docs = self._plan_docs()
        if name not in docs:
            known = ", ".join(sorted(docs)) or "none yet: fctui dr plan add"
            raise DrError(f"no recovery plan named {name!r} (plans: {known})")
        return self._plan_from(name, docs[name], self.plans_path)

    def save_plan(self, plan: RecoveryPlan) -> None:
        """Add the plan, or replace the one of the same name (its creation time is kept)."""
        check_plan_name(plan.name)
        lock = self._locked()
        try:
            docs = self._plan_docs()
            old = docs.get(plan.name)
            if isinstance(old, dict) and old.get("created"):
                plan.created = float(old["created"])
            plan.updated = time.time()
            docs[plan.name] = plan.to_dict()
            self._write(self.plans_path, {"plans": docs})
        finally:
            lock.release()

    def remove_plan(self, name: str) -> None:
        """Remove a plan (its runs stay readable in ``runs``)."""
        lock = self._locked()
        try:
            docs = self._plan_docs()
            if name not in docs:
                known = ", ".join(sorted(docs)) or "none yet"
                raise DrError(f"no recovery plan named {name!r} (plans: {known})")
            del docs[name]
            self._write(self.plans_path, {"plans": docs})
        finally:
            lock.release()

    # --- runs ---------------------------------------------------------------------------------------

    def _run_path(self, run_id: str) -> Path:
        if not RUN_ID_RE.match(run_id or ""):
            raise DrError(f"bad run id {run_id!r}")
        return self.runs_dir / f"{run_id}.json"

    def _load_run(self, path: Path) -> RecoveryRun | None:
        d = self._read(path, "recovery run file")
        if d is None:
            return None
        try:
            return RecoveryRun.from_dict(d)
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise DrError(f"recovery run file {path} is damaged ({e}); move it away or fix it") from e

    def _all_runs(self) -> list[RecoveryRun]:
        try:
            paths = sorted(self.runs_dir.glob("*.json"))
        except OSError:
            return []
        out = []
        for p in paths:
            run = self._load_run(p)
            if run is not None:   # removed meanwhile (pruned by another process)
                out.append(run)
        return out

    def runs(self, plan: str | None = None, limit: int = 20) -> list[RecoveryRun]:
        """Runs, newest first (of one plan, or all)."""
        runs = [r for r in self._all_runs() if plan is None or r.plan == plan]
        runs.sort(key=lambda r: (r.started, r.id), reverse=True)
        return runs[:limit] if limit else runs

    def run(self, run_id: str) -> RecoveryRun:
        run = self._load_run(self._run_path(run_id))
        if run is None:
            raise DrError(f"no recovery run {run_id!r}")
        return run

    def save_run(self, run: RecoveryRun) -> None:
        """Write the run (atomically: the console polls it); a damaged file of the same id is kept."""
        path = self._run_path(run.id)
        self._mkdirs()
        if path.exists():
            self._load_run(path)   # raises on a damaged file: never overwrite what cannot be read
        self._write(path, run.to_dict())
        if run.state != "running":
            self._prune(run.plan)

    def _prune(self, plan: str) -> None:
        try:
            finished = [r for r in self.runs(plan, limit=0) if r.state != "running"]
        except DrError:   # a damaged run file: nothing is dropped until someone looks at it
            return
        for old in finished[RUNS_KEPT:]:
            try:
                self._run_path(old.id).unlink()
            except FileNotFoundError:
                pass

    def last_run(self, plan: str, kind: str = "rehearsal") -> RecoveryRun | None:
        for r in self.runs(plan, limit=0):
            if r.kind == kind:
                return r
        return None
