"""The console's protection status: which policy protects each VM and whether its RPO holds (issue 16).

:func:`assess` reads the policies (``PolicyStore``) and the repository's newest good points, takes the
last backup attempts from the job records the console already follows, and runs
``jobs.protection.assess_protection``. It does file I/O and, at 10,000 VMs, tens of ms of matching:
the app calls it from a thread worker and applies the :class:`ProtectionAssessed` it posts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import tzinfo
from typing import Any, Iterable, Sequence

from textual.message import Message

from ..inventory.query import VmRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProtectionResult:
    """Each VM's protection by URN; with ``error`` (one line) the status is unknown."""
    by_vm: dict[str, Any]
    error: str = ""
    policies: int = 0
    assessed_with: tuple[Any, ...] = ()   # the policies it was assessed with (a screen reading newer ones
                                          # knows the map is stale)


class ProtectionAssessed(Message):
    """An assessment, and the rows it changes as (the row assessed, that row with its new protection):
    made in the worker, so 10,000 new rows cost the event loop a dict lookup each, not a copy."""

    def __init__(self, result: ProtectionResult, changes: dict[str, tuple[VmRow, VmRow]]) -> None:
        super().__init__()
        self.result = result
        self.changes = changes


def row_changes(rows: Iterable[VmRow], result: ProtectionResult) -> dict[str, tuple[VmRow, VmRow]]:
    """The rows whose protection or policy the assessment changes, each with its new copy."""
    out = {}
    for r in rows:
        p = result.by_vm.get(r.key)
        state, policy = (p.state, p.policy) if p is not None else ("", "")
        if (r.protection, r.policy) != (state, policy):
            out[r.key] = (r, replace(r, protection=state, policy=policy))
    return out


def assess(rows: Sequence[VmRow], jobs: Iterable[Any], *, now: float, tz: tzinfo) -> ProtectionResult:
    """Every row's protection now. Never raises: what cannot be read makes the status unknown, with
    a one-line reason for the user."""
    from ..jobs.policy import PolicyError
    from ..jobs.policystore import PolicyStore
    from ..jobs.protection import assess_protection, last_attempts, last_good_points
    from ..repo import NoRepositoryError, RepoError
    from .repository import open_repository

    from ..store import StoreError

    try:
        policies = PolicyStore().all()
    except PolicyError as e:
        return ProtectionResult({}, f"policies: {e}")
    except (StoreError, OSError, ValueError) as e:    # unreadable, not JSON
        return ProtectionResult({}, f"cannot read the policies: {e}")
    except Exception as e:   # a document tinydb cannot make sense of
        return ProtectionResult({}, f"cannot read the policies: {type(e).__name__}: {e}")
    try:
        repo = open_repository()
    except NoRepositoryError:
        points: list[Any] = []            # nothing backed up yet: no VM has a point
    except (RepoError, OSError) as e:
        return ProtectionResult({}, f"cannot read the repository: {e}", len(policies))
    else:
        try:
            points = repo.points()
        except (RepoError, OSError) as e:
            return ProtectionResult({}, f"cannot read the repository: {e}", len(policies))
        finally:
            repo.close()
    try:
        by_vm = assess_protection(rows, policies, last_good=last_good_points(points),
                                  last_attempt=last_attempts(jobs), now=now, tz=tz)
    except Exception as e:   # a bug here must not end the console: the status shows unknown
        log.exception("assessing protection")
        return ProtectionResult({}, f"cannot assess protection: {type(e).__name__}: {e}", len(policies))
    return ProtectionResult(by_vm, "", len(policies), tuple(policies))
