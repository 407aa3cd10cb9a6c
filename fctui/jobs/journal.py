"""Write-ahead journal of what a job is about to create on the VRM, and the persisted job records.

Before the runner creates a snapshot or a backup resource it records the *intent* (job, VRM, VM, the
snapshot name that contains the job id); right after, the URN or task id. A clean finish clears the
entry. After a crash (``kill -9``) the next agent start finds the entries and cleans up on the VRM as
soon as it has credentials for that VRM (passwords are never on disk; a client supplies them), keeping
a visible "cleanup pending" record until then.

Also here: the CBT chain marks ("this volume's chain is broken because …", read by the planner) and the
job records themselves. Everything lives in one tinydb file written atomically (fctui.store).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from tinydb import Query, TinyDB

from .model import FINAL_JOB_STATES, JobRecord

if TYPE_CHECKING:
    from .policystore import PolicyRun

Q = Query()


class JournalLike(Protocol):
    def intend(self, *, job_id: str, vrm: str, user: str, what: str, vm_urn: str, **fields: Any) -> int: ...
    def update(self, key: int, **fields: Any) -> None: ...
    def done(self, key: int) -> None: ...
    def mark_chain(self, volume_urn: str, reason: str) -> None: ...
    def clear_chain(self, volume_urns: Iterable[str]) -> None: ...


class MemoryJournal:
    """In-memory journal (tests of the runner without an agent; nothing persisted)."""

    def __init__(self) -> None:
        self.intents: dict[int, dict[str, Any]] = {}
        self.marks: dict[str, str] = {}
        self._next = 1
        self._lock = threading.Lock()

    def intend(self, *, job_id: str, vrm: str, user: str, what: str, vm_urn: str, **fields: Any) -> int:
        with self._lock:
            key = self._next
            self._next += 1
            self.intents[key] = {"job": job_id, "vrm": vrm, "user": user, "what": what, "vm": vm_urn,
                                 "time": time.time(), **fields}
            return key

    def update(self, key: int, **fields: Any) -> None:
        if key in self.intents:
            self.intents[key].update(fields)

    def done(self, key: int) -> None:
        self.intents.pop(key, None)

    def pending(self) -> list[dict[str, Any]]:
        return [dict(v, key=k) for k, v in self.intents.items()]

    def mark_chain(self, volume_urn: str, reason: str) -> None:
        self.marks[volume_urn] = reason

    def clear_chain(self, volume_urns: Iterable[str]) -> None:
        for v in volume_urns:
            self.marks.pop(v, None)

    def chain_marks(self) -> dict[str, str]:
        return dict(self.marks)


class JobStore:
    """The agent's database: job records, intents, chain marks. One writer (the agent holds the lock).

    Writes are synchronous (atomic rename + fsync) and happen at state transitions, not per byte.
    """

    def __init__(self, path: Path | str) -> None:
        from ..store import open_db
        self.path = Path(path)
        self.db: TinyDB = open_db(self.path)
        self.jobs = self.db.table("jobs")
        self.intents = self.db.table("intents")
        self.marks = self.db.table("chain_marks")
        self.policy_runs = self.db.table("policy_runs")
        self._lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    # --- jobs ---------------------------------------------------------------------------------------

    def save_job(self, job: JobRecord) -> None:
        with self._lock:
            self.jobs.upsert(job.to_dict(), Q.id == job.id)

    def job(self, job_id: str) -> JobRecord | None:
        with self._lock:
            d = self.jobs.get(Q.id == job_id)
        return JobRecord.from_dict(dict(d)) if d else None

    def all_jobs(self) -> list[JobRecord]:
        with self._lock:
            rows = [dict(r) for r in self.jobs.all()]
        return sorted((JobRecord.from_dict(r) for r in rows), key=lambda j: j.created)

    def prune_history(self, keep: int = 500) -> int:
        """Drop the oldest finished jobs beyond ``keep`` (every write rewrites the whole file)."""
        jobs = [j for j in self.all_jobs() if j.is_final]
        drop = [j.id for j in jobs[:-keep]] if len(jobs) > keep else []
        if drop:
            with self._lock:
                self.jobs.remove(Q.id.one_of(drop))
        return len(drop)

    def mark_interrupted(self) -> list[JobRecord]:
        """Jobs that were running when the previous agent died become ``interrupted``."""
        out = []
        for job in self.all_jobs():
            if job.state not in FINAL_JOB_STATES:
                job.state = "interrupted"
                job.finished = job.finished or time.time()
                job.error = job.error or "the job agent stopped while the job ran"
                for vm in job.vms:
                    if vm.state not in ("done", "refused", "failed", "cancelled"):
                        vm.state, vm.reason = "failed", "interrupted: the job agent stopped"
                        for d in vm.disks:
                            if d.state in ("waiting", "reading"):
                                d.state = "failed"
                job.add_log("job interrupted: the agent stopped while it ran", "error")
                self.save_job(job)
                out.append(job)
        return out

    # --- intents ------------------------------------------------------------------------------------

    def intend(self, *, job_id: str, vrm: str, user: str, what: str, vm_urn: str, **fields: Any) -> int:
        doc = {"job": job_id, "vrm": vrm, "user": user, "what": what, "vm": vm_urn, "time": time.time(),
               "state": "intended", **fields}
        with self._lock:
            return int(self.intents.insert(doc))

    def update(self, key: int, **fields: Any) -> None:
        with self._lock:
            if self.intents.contains(doc_id=key):
                self.intents.update(fields, doc_ids=[key])

    def done(self, key: int) -> None:
        with self._lock:
            if self.intents.contains(doc_id=key):
                self.intents.remove(doc_ids=[key])

    def pending(self, vrm: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = [dict(r, key=r.doc_id) for r in self.intents.all()]
        return [r for r in rows if vrm is None or r.get("vrm") == vrm]

    # --- CBT chain marks ----------------------------------------------------------------------------

    def mark_chain(self, volume_urn: str, reason: str) -> None:
        with self._lock:
            self.marks.upsert({"volume": volume_urn, "reason": reason, "time": time.time()},
                              Q.volume == volume_urn)

    def clear_chain(self, volume_urns: Iterable[str]) -> None:
        vols = list(volume_urns)
        if not vols:
            return
        with self._lock:
            self.marks.remove(Q.volume.one_of(vols))

    def chain_marks(self) -> dict[str, str]:
        with self._lock:
            return {r["volume"]: r["reason"] for r in self.marks.all()}

    # --- policy runs (fctui.jobs.policystore.PolicyRun) -----------------------------------------------

    def record_run(self, run: "PolicyRun") -> None:
        with self._lock:
            self.policy_runs.upsert(run.to_dict(), Q.key == run.key)

    def policy_runs_of(self, policy: str | None = None, limit: int | None = None) -> list["PolicyRun"]:
        """Runs, oldest first (of one policy, or all); ``limit``: only the newest ones."""
        from .policystore import PolicyRun
        with self._lock:
            rows = [dict(r) for r in (self.policy_runs.search(Q.policy == policy) if policy
                                      else self.policy_runs.all())]
        runs = sorted((PolicyRun.from_dict(r) for r in rows), key=lambda r: (r.scheduled, r.policy))
        return runs[-limit:] if limit else runs

    def prune_runs(self, keep_per_policy: int = 200) -> int:
        """Drop the oldest finished runs beyond ``keep_per_policy`` per policy."""
        by_policy: dict[str, list["PolicyRun"]] = {}
        for r in self.policy_runs_of():
            by_policy.setdefault(r.policy, []).append(r)
        drop = [r.key for runs in by_policy.values() for r in runs[:-keep_per_policy] if r.finished]
        if drop:
            with self._lock:
                self.policy_runs.remove(Q.key.one_of(drop))
        return len(drop)
