"""Undo what a job created on the VRM: release backup resources, delete snapshots.

Used by the runner at the end of every VM (and on every failure and cancel), and by the agent's
snapshot hunter for the journal's leftover intents. Everything here tolerates "already gone"
(10300109, 404) and retries what is transient -- "busy" answers (someone else's task on the VM, a
resource still releasing), any 5xx, a 401 the client's own re-login did not cure, a dropped connection,
a timeout -- with back-off, within ONE :class:`Budget` per cleanup: steps share its deadline, so retries
never nest and a cleanup ends in bounded time whatever the VRM does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from ..vrm.errors import (TaskFailedError, VrmApiError, VrmConflictError, VrmConnectionError, VrmError,
                          VrmNotFoundError, VrmTimeoutError)
from ..vrm.urn import site_uri, urn_to_uri

if TYPE_CHECKING:  # pragma: no cover
    from ..vrm.client import VrmClient

log = logging.getLogger("fctui.jobs.cleanup")
T = TypeVar("T")

# VRM answers that mean "not now": retry (vrm-api.md §4.3; 10300060 is the simulator's VM-has-a-task).
BUSY_CODES = frozenset({"10000009", "10300060", "10300057", "10300153", "10300162", "10300170",
                        "10300318", "10300421", "10400004", "10300413"})
HOST_LIMIT_CODES = frozenset({"10300412", "10300413"})
PREPARE_TASK_TYPES = frozenset({"PrepareBackupResource"})
GONE_REASONS = frozenset({"10300109"})  # the snapshot does not exist (any more)

# One cleanup (the end of one VM's backup, or one round of the hunter) gets this long: with the
# client's own per-request timeout inside it, a VRM that stays broken ends the job well within 2 min.
CLEANUP_BUDGET_S = 90.0


def is_busy(e: BaseException, codes: frozenset[str] = BUSY_CODES) -> bool:
    if isinstance(e, VrmConflictError) and e.error_code in codes:
        return True
    if isinstance(e, TaskFailedError) and not e.cancelled and e.reason in codes:
        return True
    return False


def is_transient(e: BaseException) -> bool:
    """A VRM error worth trying again: the VRM may accept the same request a little later."""
    if isinstance(e, (VrmConnectionError, VrmTimeoutError)):
        return True
    # 401: the client already logged in again once for this request; a session storm or a VRM
    # restarting its auth service passes, a wrong password only spends the budget.
    return isinstance(e, VrmApiError) and (e.status >= 500 or e.status == 401)


class Budget:
    """The time one cleanup may spend, shared by all its steps (and their task waits). It counts the
    time spent inside cleanup steps only (a VM's disks are read between its releases), so a VM's
    cleanup as a whole ends within ``seconds`` (plus ``floor`` per step that starts with nothing left)."""

    def __init__(self, seconds: float, *, floor: float = 5.0) -> None:
        self.seconds = seconds
        # A step that starts after the budget is spent still gets one attempt this long: the VRM may
        # have recovered, and a leftover we can remove now need not wait for the hunter.
        self.floor = floor
        self.used = 0.0
        self._depth = 0
        self._since = 0.0

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    @contextlib.contextmanager
    def running(self) -> Any:
        """Around a cleanup step: its time counts (nested steps count once)."""
        if self._depth == 0:
            self._since = self._now()
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.used += self._now() - self._since

    def remaining(self) -> float:
        current = self._now() - self._since if self._depth else 0.0
        return self.seconds - self.used - current

    @property
    def spent(self) -> bool:
        return self.remaining() <= 0

    def extend(self, seconds: float) -> None:
        """Leave ``seconds`` out of the budget (time spent on something that went well)."""
        self.used -= max(0.0, seconds)

    def attempt_s(self) -> float:
        """How long the next attempt may take."""
        return max(self.remaining(), self.floor)


def _budget(within: "Budget | float") -> Budget:
    return within if isinstance(within, Budget) else Budget(within, floor=min(5.0, within))


async def retry(fn: Callable[[], Awaitable[T]], *, within: "Budget | float", interval: float = 0.5,
                max_interval: float = 5.0, codes: frozenset[str] = BUSY_CODES, transient: bool = True,
                cut: bool = True, transient_s: float | None = None,
                on_retry: Callable[[VrmError], None] | None = None) -> T:
    """``fn()`` until it succeeds or fails with an error that is not worth repeating, within the budget.

    Busy answers (``codes``) are always retried; with ``transient`` also 5xx, 401, dropped connections
    and timeouts (for requests that are safe to repeat: every cleanup step is), and each attempt is
    cut at the budget's end (a stalled request must not outlive it) but always gets the budget's
    floor. ``cut=False`` bounds only the waits between attempts, never an attempt itself: for an ``fn``
    that waits for a long task it started (cutting it would start a second one). ``transient_s``
    bounds the retries of transient errors more tightly than the busy ones (a VRM that keeps failing
    is not going to be "not busy" soon). ``on_retry`` hears each error that is retried. The last error
    is raised when the budget is spent."""
    budget = _budget(within)
    delay = interval
    started = asyncio.get_running_loop().time()
    with budget.running():
        while True:
            try:
                if not (transient and cut):  # bound the waits, not a long task inside fn
                    return await fn()
                try:
                    async with asyncio.timeout(budget.attempt_s()):
                        return await fn()
                except TimeoutError:
                    raise VrmTimeoutError(f"the VRM did not finish within the cleanup budget of "
                                          f"{budget.seconds:g} s") from None
            except VrmError as e:
                busy = is_busy(e, codes)
                if not (busy or (transient and is_transient(e))):
                    raise
                if budget.remaining() < delay:
                    raise
                if (not busy and transient_s is not None
                        and asyncio.get_running_loop().time() - started + delay > transient_s):
                    raise
                log.info("retrying in %.1f s: %s", delay, e)
                if on_retry is not None:
                    on_retry(e)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, max_interval)


async def retry_busy(fn: Callable[[], Awaitable[T]], *, within: "Budget | float", interval: float = 0.5,
                     codes: frozenset[str] = BUSY_CODES) -> T:
    """Call ``fn`` until it does not fail with a busy code, for at most ``within`` seconds (for
    requests that must not be repeated blindly after a transport error, e.g. a create)."""
    return await retry(fn, within=within, interval=interval, codes=codes, transient=False)


async def release_resource(client: "VrmClient", volume_uri: str, task_id: str, *, wait_gone: float = 30.0,
                           interval: float = 0.2, within: "Budget | float | None" = None) -> None:
    """Release a backup resource and wait (at most ``wait_gone``) until the VRM no longer shows it (a
    released resource still counts against the host's 8 for a while; NOTES: wait until GET shows it
    gone). Transient errors are retried within ``within`` (default: ``wait_gone``); raises VrmError
    when the release itself does not go through."""
    budget = _budget(wait_gone if within is None else within)
    with budget.running():
        await _release(client, volume_uri, task_id, wait_gone=wait_gone, interval=interval, budget=budget)


async def _release(client: "VrmClient", volume_uri: str, task_id: str, *, wait_gone: float, interval: float,
                   budget: Budget) -> None:
    try:
        await retry(lambda: client.release_backup_resource(volume_uri, task_id), within=budget,
                    interval=max(interval, 0.05))
    except VrmNotFoundError:
        return
    # Not part of the budget: the release went through (the VRM is answering); this only waits, at
    # most ``wait_gone``, until the host's count frees up for the next disk.
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        while loop.time() < start + wait_gone:
            try:
                await client.backup_resource(volume_uri, task_id)
            except VrmNotFoundError:
                return
            except VrmError as e:  # released already; whether it still shows is only a courtesy wait
                log.info("backup resource %s: %s", task_id, e)
            await asyncio.sleep(interval)
        log.info("backup resource %s on %s still visible after release", task_id, volume_uri)
    finally:
        budget.extend(loop.time() - start)


async def delete_snapshot(client: "VrmClient", snapshot_uri: str, *, within: "Budget | float" = 120.0,
                          task_timeout: float = 300.0, interval: float = 0.5) -> None:
    """Delete a snapshot and wait for the task; gone already is fine; transient errors are retried
    (a DELETE repeated after the first one went through answers "gone" or "busy": both are handled)."""
    budget = _budget(within)

    async def once() -> None:
        ref = await client.delete_snapshot(snapshot_uri)
        await client.wait_task(ref, timeout=min(task_timeout, budget.attempt_s()), interval=interval)
    try:
        await retry(once, within=budget, interval=interval)  # (retry counts the time)
    except VrmNotFoundError:
        return
    except TaskFailedError as e:
        if e.reason in GONE_REASONS:
            return
        raise


def describe_leftover(p: dict[str, Any], now: float) -> str:
    """One queued leftover (a ``cleanup-status`` row) for people: what, why, and when the agent's
    snapshot hunter tries next (or that it needs the VRM's password)."""
    what = {"snapshot": "snapshot", "resource": "backup resource"}.get(str(p.get("what")), str(p.get("what")))
    obj = p.get("snapshot_urn") or p.get("name") or p.get("task_id") or p.get("volume_urn") or p.get("vm") or ""
    nxt = p.get("next_try")
    if p.get("cluster"):   # a cluster's proxies retry it with their own passwords (fctui.cluster)
        when = "the cluster's proxies retry it"
    elif not isinstance(nxt, (int, float)):
        when = "needs the VRM password: fctui jobs cleanup --vrm URL --user USER"
    else:
        when = f"the agent retries in {round(nxt - now)} s" if nxt - now >= 1 else "the agent is retrying now"
    return f"{what} {obj} of job {p.get('job')}" + (f": {p['error']}" if p.get("error") else "") + f" ({when})"


async def find_snapshots_named(client: "VrmClient", vm_uri: str, name: str) -> list[str]:
    tree = await client.snapshot_tree(vm_uri)
    return [n.uri or urn_to_uri(n.urn) for n in tree.walk() if n.name == name]


async def find_prepare_tasks(client: "VrmClient", volume_urn: str, since: float) -> list[str]:
    """Ids of the resource-prepare tasks on a volume that started after ``since`` (epoch s, 5 s slack
    for clock skew): the resource a prepare created when its answer never reached us."""
    since_ms = since * 1000.0 - 5000.0
    out = []
    for t in await client.tasks(site_uri(volume_urn)):
        start, _ = t.times_ms()
        if t.type in PREPARE_TASK_TYPES and t.entity_urn == volume_urn and (start or 0) >= since_ms:
            out.append(t.id)
    return out


class CreateOutcomeUnknown(VrmError):
    """A create failed in a way that may hide a success, and the VRM shows (or cannot tell) that it
    happened: trying again could make a second one. Not transient: the VM fails, and its journal
    intent removes what was created."""


async def create_checked(call: Callable[[], Awaitable[T]], created_meanwhile: Callable[[], Awaitable[list]],
                         what: str) -> T:
    """One attempt at a create (snapshot, backup resource), safe to repeat in :func:`retry`.

    After a 5xx, a 401 or a dropped connection the VRM has finished with the request, but may have done
    the work before failing: the create is repeated (by the caller's retry) only when
    ``created_meanwhile()`` finds nothing. After a timeout the request may still be running on the
    VRM, where nothing can be looked up reliably yet: the create is not repeated."""
    try:
        return await call()
    except VrmError as e:
        if not is_transient(e):
            raise
        if isinstance(e, VrmTimeoutError):
            raise CreateOutcomeUnknown(f"{what}: {e} (the VRM may still be creating it; not repeated)") from e
        try:
            found = await created_meanwhile()
        except VrmError as e2:
            raise CreateOutcomeUnknown(f"{what}: {e}; whether it was created cannot be told: {e2}") from e
        if found:
            raise CreateOutcomeUnknown(f"{what}: {e}, although the VRM created it; it is removed, "
                                       "the next run takes the VM again") from e
        raise


async def cleanup_intent(client: "VrmClient", intent: dict[str, Any], *, within: "Budget | float" = CLEANUP_BUDGET_S,
                         release_wait: float = 30.0) -> None:
    """Undo one journal intent (``what`` = ``resource``, ``snapshot``, ``restore-vm``, ...). Raises
    VrmError when the VRM still refuses at the end of the budget; the caller keeps the record then."""
    budget = _budget(within)
    with budget.running():
        await _undo(client, intent, budget, release_wait)


async def _undo(client: "VrmClient", intent: dict[str, Any], budget: Budget, release_wait: float) -> None:
    what = intent.get("what")
    if what == "resource":
        vol_uri = intent.get("volume_uri", "")
        task_id = intent.get("task_id") or ""
        if task_id:
            await release_resource(client, vol_uri, str(task_id), wait_gone=release_wait, within=budget)
            return
        # Died between POST and recording the task id: find our prepare task on that volume.
        vol_urn = intent.get("volume_urn", "")
        if not vol_urn:
            return
        since = float(intent.get("time", 0))
        for tid in await retry(lambda: find_prepare_tasks(client, vol_urn, since), within=budget):
            await release_resource(client, vol_uri, tid, wait_gone=release_wait, within=budget)
        return
    if what == "snapshot":
        uri = intent.get("snapshot_uri") or (urn_to_uri(intent["snapshot_urn"]) if intent.get("snapshot_urn") else "")
        if uri:
            await delete_snapshot(client, uri, within=budget)
            return
        name, vm_urn = intent.get("name", ""), intent.get("vm", "")
        if not name or not vm_urn:
            return
        try:
            uris = await retry(lambda: find_snapshots_named(client, urn_to_uri(vm_urn), name), within=budget)
        except VrmNotFoundError:
            return  # the VM is gone, and its snapshots with it
        for u in uris:
            await delete_snapshot(client, u, within=budget)
        return
    if what == "restore-vm":  # a VM an interrupted restore created: remove it with its new disks
        uri = intent.get("vm_uri") or (urn_to_uri(intent["vm_urn_created"]) if intent.get("vm_urn_created") else "")
        if not uri:
            return  # never created (or unknown): a name match could hit someone else's VM, so leave it
        async def drop_vm() -> None:
            await client.wait_task(await client.delete_vm(uri, reserve_disks=False), timeout=budget.attempt_s())
        try:
            await retry(drop_vm, within=budget)
        except VrmNotFoundError:
            pass
        return
    if what == "restore-volume":  # a volume an interrupted restore created and half wrote
        uri = intent.get("volume_uri") or (urn_to_uri(intent["volume_urn"]) if intent.get("volume_urn") else "")
        if not uri:
            return
        async def drop_volume() -> None:
            await client.wait_task(await client.delete_volume(uri), timeout=budget.attempt_s())
        try:
            await retry(drop_volume, within=budget, codes=BUSY_CODES | {"10420005", "10300062"})
        except VrmNotFoundError:
            pass
        return
    if what == "restore-overwrite":
        # Nothing on the VRM to undo: the interrupted job's record says the VM's disks were being
        # overwritten and must be restored again.
        return
    raise VrmError(f"unknown journal intent {what!r}")


async def cleanup_intents(client: "VrmClient", intents: list[dict[str, Any]],
                          done: Callable[[int], None], *, within: "Budget | float" = CLEANUP_BUDGET_S
                          ) -> list[tuple[dict, str]]:
    """Resources first (a snapshot in use by a resource cannot be deleted), then snapshots, all within
    one budget. Returns the intents that could not be cleaned, with the reason; ``done(key)`` is
    called for each success."""
    budget = _budget(within)
    failed: list[tuple[dict, str]] = []
    rank = {"resource": 0, "restore-vm": 1, "restore-volume": 2}
    order = sorted(intents, key=lambda i: rank.get(str(i.get("what")), 3))
    for intent in order:
        try:
            await cleanup_intent(client, intent, within=budget)
        except VrmError as e:
            failed.append((intent, str(e)))
            continue
        done(intent["key"])
    return failed


Opener = Callable[[], Awaitable[Any]]


class SnapshotHunter:
    """Removes leftovers (journal intents no running job owns) in the background until the VRM
    accepts -- like Veeam's Snapshot Hunter. It holds, per (VRM, user), an ``opener`` that logs in
    (a closure over the password: memory only) for as long as that VRM has leftovers, and forgets it
    once they are gone. A VRM that refuses is tried again after ``interval``, doubling up to
    ``max_interval``.

    ``leftovers(vrm)`` lists the VRM's leftovers; ``sweep(client, vrm)`` removes them (returns what
    :func:`cleanup_intents` does); ``close(client)`` ends the session an opener opened (default: the
    client's ``close``, which logs out); ``on_change()`` is told after every round (for watchers)."""

    def __init__(self, *, leftovers: Callable[[str], list[dict[str, Any]]],
                 sweep: Callable[[Any, str], Awaitable[Any]], interval: float, max_interval: float,
                 on_change: Callable[[], None] = lambda: None,
                 close: Callable[[Any], Awaitable[None]] | None = None) -> None:
        self.leftovers = leftovers
        self.sweep = sweep
        self.close = close
        self.interval = interval
        self.max_interval = max(interval, max_interval)
        self.on_change = on_change
        self.openers: dict[tuple[str, str], Opener] = {}
        self.next_try: dict[tuple[str, str], float] = {}   # epoch seconds
        self.failures: dict[tuple[str, str], int] = {}
        self.login_errors: dict[str, str] = {}              # vrm -> why the last login failed
        self._wake: asyncio.Event | None = None

    def hold(self, vrm: str, user: str, opener: Opener) -> bool:
        """Keep ``opener`` for ``vrm`` if it has leftovers (True), first try after one interval."""
        if not self.leftovers(vrm):
            return False
        key = (vrm, user)
        self.openers[key] = opener
        self.next_try.setdefault(key, time.time() + self.interval)
        if self._wake is not None:
            self._wake.set()
        return True

    def forget(self, key: tuple[str, str]) -> None:
        self.openers.pop(key, None)
        self.next_try.pop(key, None)
        self.failures.pop(key, None)
        self.login_errors.pop(key[0], None)

    def next_try_of(self, vrm: str) -> float | None:
        return min((t for (v, _), t in self.next_try.items() if v == vrm), default=None)

    def _failed(self, key: tuple[str, str]) -> None:
        n = self.failures[key] = self.failures.get(key, 0) + 1
        self.next_try[key] = time.time() + min(self.interval * 2 ** (n - 1), self.max_interval)

    async def round(self, key: tuple[str, str]) -> None:
        """One try at one VRM's leftovers."""
        vrm = key[0]
        if not self.leftovers(vrm):
            self.forget(key)
            return
        try:
            client = await self.openers[key]()
        except VrmError as e:
            self.login_errors[vrm] = f"cannot log in: {e}"
            self._failed(key)
            return
        self.login_errors.pop(vrm, None)
        try:
            done, _ = await self.sweep(client, vrm)
        finally:
            with contextlib.suppress(Exception):
                await (self.close(client) if self.close is not None else client.close())
        if done:
            log.info("snapshot hunter: removed %d leftover(s) on %s", done, vrm)
        if self.leftovers(vrm):
            self._failed(key)
        else:
            self.forget(key)

    async def run(self) -> None:
        """Forever: each held VRM when it is due."""
        self._wake = asyncio.Event()
        while True:
            now = time.time()
            for key in [k for k, t in list(self.next_try.items()) if t <= now]:
                try:
                    await self.round(key)
                except Exception:  # the hunter outlives any surprise; the next round tries again
                    log.exception("snapshot hunter round for %s failed", key[0])
                    self._failed(key)
                self.on_change()
            wait = min([t - time.time() for t in self.next_try.values()] + [self.interval])
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, wait))
