"""Where policies and their runs are kept.

* **Policies** live in ``policies.json`` under the data directory (tinydb, atomic writes). They are
  edited by the CLI and the console, read by the service at each tick. Every change is a
  read-modify-write under a short file lock, so two editors never lose each other's change.
* **Runs** (one per policy per scheduled time: when it was due, when it started, the job, what
  happened to each VM) live in the agent's own database (``JobStore``, one writer: the agent), in the
  table ``policy_runs``: see :class:`PolicyRun` and ``JobStore.record_run``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tinydb import Query

from .policy import Policy, PolicyError, policy_from_mapping

Q = Query()

__all__ = ["PolicyStore", "PolicyRun", "RUN_STATES"]

# a run's outcome: waiting (due, its window is closed: starts at the next opening); running; ok (every
# VM backed up); partial (some VMs failed or were not started); failed (none backed up, or the run could
# not start); skipped (nothing to do: no VM matched, or superseded while it waited)
RUN_STATES = ("waiting", "running", "ok", "partial", "failed", "skipped")


@dataclass
class PolicyRun:
    policy: str
    scheduled: float                 # the schedule time this run is for (epoch s)
    started: float | None = None     # when it started (None: waiting for its window)
    finished: float | None = None
    state: str = "running"
    job_id: str = ""
    catch_up: bool = False           # a missed time caught up after downtime
    window_end: float | None = None  # the window's closing time for this run
    overran: bool = False            # still running when the window closed
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)   # urn -> {name, result, reason, kind}
    note: str = ""                   # one line for the user (why skipped/failed, covered-by counts)
    manual: bool = False             # started by hand (run now): not a schedule time, due times ignore it

    @property
    def key(self) -> str:
        return f"{self.policy}@{int(self.scheduled)}"

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), key=self.key)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PolicyRun":
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in names})


class PolicyStore:
    """The policies, by name. Open it for each use (cheap); it holds no lock between calls."""

    def __init__(self, path: Path | str | None = None) -> None:
        from ..store import data_dir
        self.path = Path(path) if path is not None else data_dir() / "policies.json"
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def _db(self) -> Any:
        from ..store import open_db
        return open_db(self.path)

    def _locked(self) -> Any:
        from ..store import WriterLock
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)  # a store given a path of a new directory
        return WriterLock(self.lock_path, timeout=10.0, purpose="policy editor")

    def all(self) -> list[Policy]:
        if not self.path.exists():
            return []
        db = self._db()
        try:
            docs = [dict(d) for d in db.table("policies").all()]
        finally:
            db.close()
        out = []
        for d in docs:
            out.append(policy_from_mapping(d, f"{self.path} policy"))
        return sorted(out, key=lambda p: p.name)

    def __iter__(self) -> Iterator[Policy]:
        return iter(self.all())

    def get(self, name: str) -> Policy:
        for p in self.all():
            if p.name == name:
                return p
        names = ", ".join(p.name for p in self.all()) or "none yet"
        raise PolicyError(f"no policy named {name!r} (policies: {names})")

    def add(self, policy: Policy, *, now: float | None = None) -> Policy:
        with self._locked():
            db = self._db()
            try:
                t = db.table("policies")
                if t.contains(Q.name == policy.name):
                    raise PolicyError(f"a policy named {policy.name!r} exists already (use 'fctui policy edit')")
                if not policy.created:
                    policy = policy.with_changes(created=time.time() if now is None else now)
                t.insert(policy.to_dict())
            finally:
                db.close()
        return policy

    def replace(self, policy: Policy) -> Policy:
        """Store ``policy`` over the one of the same name (keeps its creation time)."""
        with self._locked():
            db = self._db()
            try:
                t = db.table("policies")
                old = t.get(Q.name == policy.name)
                if old is None:
                    raise PolicyError(f"no policy named {policy.name!r} to change (use 'fctui policy add')")
                policy = policy.with_changes(created=float(dict(old).get("created") or 0.0))
                t.update(_replace_doc(policy.to_dict()), Q.name == policy.name)
            finally:
                db.close()
        return policy

    def remove(self, name: str) -> None:
        with self._locked():
            db = self._db()
            try:
                if not db.table("policies").remove(Q.name == name):
                    raise PolicyError(f"no policy named {name!r}")
            finally:
                db.close()

    def import_policies(self, policies: list[Policy], *, now: float | None = None) -> tuple[int, int]:
        """Add or replace each policy by name, all in one write. Returns (added, replaced)."""
        added = replaced = 0
        with self._locked():
            db = self._db()
            try:
                t = db.table("policies")
                for p in policies:
                    old = t.get(Q.name == p.name)
                    if old is None:
                        t.insert(p.with_changes(created=p.created or (time.time() if now is None else now)).to_dict())
                        added += 1
                    else:
                        p = p.with_changes(created=float(dict(old).get("created") or 0.0))
                        t.update(_replace_doc(p.to_dict()), Q.name == p.name)
                        replaced += 1
            finally:
                db.close()
        return added, replaced


def _replace_doc(new: dict[str, Any]) -> Any:
    """A tinydb update that makes a document exactly ``new`` (a plain update would keep removed keys)."""
    def transform(doc: dict[str, Any]) -> None:
        doc.clear()
        doc.update(new)
    return transform
