"""The runner's write-ahead journal kept in the VM's record in ``FCTUI_JOBS`` (``intents``), so that the
proxy that takes over a dead proxy's VM finds what it created on the VRM and cleans it up.

:class:`KvJournal` has the synchronous methods of :class:`fctui.jobs.journal.JournalLike` (the runner
calls them as it does the local journal's) and ``async flush()``: the runner awaits it after an intent
and before acting on the VRM, which makes the intent write-ahead across machines.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterable

from .jobs import ClusterJobs, VmRecordWriter


class KvJournal:
    """The journal of one VM of one job. ``writer``: the VM record's writer shared with the runner's
    progress (see :class:`VmRecordWriter`); without one, each write applies this journal's intents to
    the stored record (whoever else writes it), and :meth:`pending` knows only this journal's."""

    def __init__(self, jobs: ClusterJobs, job_id: str, vm_urn: str, writer: VmRecordWriter | None = None) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self.vm_urn = vm_urn
        self.writer = writer if writer is not None else VmRecordWriter(jobs, job_id, {"urn": vm_urn}, merge=True)
        keys = [int(k) for k in self.writer.record["intents"] if str(k).isdigit()]
        # Keys stay unique in the record: after its intents, or (stored ones unknown) after this moment's.
        self._next = max(keys) + 1 if keys else (int(time.time() * 1000) if self.writer.merge else 1)
        self._chain: set[asyncio.Task] = set()
        self._chain_error: BaseException | None = None

    @property
    def intents(self) -> dict[str, dict[str, Any]]:
        return self.writer.record["intents"]

    def intend(self, *, job_id: str, vrm: str, user: str, what: str, vm_urn: str, **fields: Any) -> int:
        key = self._next
        self._next += 1
        self.intents[str(key)] = {"job": job_id, "vrm": vrm, "user": user, "what": what, "vm": vm_urn,
                                  "time": time.time(), "state": "intended", **fields}
        self.writer.changed()
        return key

    def update(self, key: int, **fields: Any) -> None:
        intent = self.intents.get(str(key))
        if intent is not None:
            intent.update(fields)
            self.writer.changed()

    def done(self, key: int) -> None:
        if self.intents.pop(str(key), None) is not None or self.writer.merge:   # (merge: maybe a stored one)
            self.writer.forget_intent(str(key))
            self.writer.changed()

    def pending(self) -> list[dict[str, Any]]:
        return [dict(v, key=int(k)) for k, v in self.intents.items() if str(k).isdigit()]

    def mark_chain(self, volume_urn: str, reason: str) -> None:
        self._spawn(self.jobs.mark_chain(volume_urn, reason))

    def clear_chain(self, volume_urns: Iterable[str]) -> None:
        self._spawn(self.jobs.clear_chain(list(volume_urns)))

    async def flush(self) -> None:
        """Return once every change so far is in the cluster (:class:`ClusterError` when it cannot be)."""
        await self.writer.flush()
        while self._chain:
            await asyncio.gather(*list(self._chain), return_exceptions=True)
        if self._chain_error is not None:
            error, self._chain_error = self._chain_error, None
            raise error

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._chain.add(task)

        def done(t: asyncio.Task) -> None:
            self._chain.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self._chain_error = t.exception()
        task.add_done_callback(done)
