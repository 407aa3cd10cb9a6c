"""Undo what a job created on the VRM: release backup resources, delete snapshots.

Used by the runner on every failure and cancel, and by the agent after a crash for the journal's
leftover intents. Everything here tolerates "already gone" (10300109, 404) and retries while the VRM
says busy (someone else's task on the VM, a resource still releasing), within a bound.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from ..vrm.errors import VrmConflictError, VrmError, VrmNotFoundError, TaskFailedError
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


def is_busy(e: BaseException) -> bool:
    if isinstance(e, VrmConflictError) and e.error_code in BUSY_CODES:
        return True
    if isinstance(e, TaskFailedError) and not e.cancelled and e.reason in BUSY_CODES:
        return True
    return False


async def retry_busy(fn: Callable[[], Awaitable[T]], *, within: float, interval: float = 0.5,
                     codes: frozenset[str] = BUSY_CODES) -> T:
    """Call ``fn`` until it does not fail with a busy code, for at most ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    delay = interval
    while True:
        try:
            return await fn()
        except (VrmConflictError, TaskFailedError) as e:
            code = e.error_code if isinstance(e, VrmConflictError) else e.reason
            if code not in codes or loop.time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)


async def release_resource(client: "VrmClient", volume_uri: str, task_id: str, *, wait_gone: float = 30.0,
                           interval: float = 0.2) -> None:
    """Release a backup resource and wait until the VRM no longer shows it (a released resource still
    counts against the host's 8 for a while; NOTES: wait until GET shows it gone)."""
    try:
        await retry_busy(lambda: client.release_backup_resource(volume_uri, task_id), within=wait_gone)
    except VrmNotFoundError:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_gone
    while loop.time() < deadline:
        try:
            await client.backup_resource(volume_uri, task_id)
        except VrmNotFoundError:
            return
        await asyncio.sleep(interval)
    log.info("backup resource %s on %s still visible %.0f s after release", task_id, volume_uri, wait_gone)


async def delete_snapshot(client: "VrmClient", snapshot_uri: str, *, within: float = 120.0,
                          task_timeout: float = 300.0, interval: float = 0.5) -> None:
    """Delete a snapshot and wait for the task; gone already is fine; busy is retried."""
    async def once() -> None:
        ref = await client.delete_snapshot(snapshot_uri)
        await client.wait_task(ref, timeout=task_timeout, interval=interval)
    try:
        await retry_busy(once, within=within, interval=interval)
    except VrmNotFoundError:
        return
    except TaskFailedError as e:
        if e.reason in ("10300109",):
            return
        raise


async def find_snapshots_named(client: "VrmClient", vm_uri: str, name: str) -> list[str]:
    tree = await client.snapshot_tree(vm_uri)
    return [n.uri or urn_to_uri(n.urn) for n in tree.walk() if n.name == name]


async def cleanup_intent(client: "VrmClient", intent: dict[str, Any], *, within: float = 120.0) -> None:
    """Undo one journal intent (``what`` = ``resource`` or ``snapshot``). Raises VrmError when the VRM
    refuses for longer than ``within``; the caller keeps the record then."""
    what = intent.get("what")
    if what == "resource":
        vol_uri = intent.get("volume_uri", "")
        task_id = intent.get("task_id") or ""
        if task_id:
            await release_resource(client, vol_uri, str(task_id), wait_gone=within)
            return
        # Died between POST and recording the task id: find our prepare task on that volume.
        vol_urn = intent.get("volume_urn", "")
        if not vol_urn:
            return
        since_ms = float(intent.get("time", 0)) * 1000.0 - 5000.0
        for t in await client.tasks(site_uri(vol_urn)):
            start, _ = t.times_ms()
            if t.type in PREPARE_TASK_TYPES and t.entity_urn == vol_urn and (start or 0) >= since_ms:
                await release_resource(client, vol_uri, t.id, wait_gone=within)
        return
    if what == "snapshot":
        uri = intent.get("snapshot_uri") or (urn_to_uri(intent["snapshot_urn"]) if intent.get("snapshot_urn") else "")
        if uri:
            await delete_snapshot(client, uri, within=within)
            return
        name, vm_urn = intent.get("name", ""), intent.get("vm", "")
        if not name or not vm_urn:
            return
        try:
            uris = await find_snapshots_named(client, urn_to_uri(vm_urn), name)
        except VrmNotFoundError:
            return  # the VM is gone, and its snapshots with it
        for u in uris:
            await delete_snapshot(client, u, within=within)
        return
    if what == "restore-vm":  # a VM an interrupted restore created: remove it with its new disks
        uri = intent.get("vm_uri") or (urn_to_uri(intent["vm_urn_created"]) if intent.get("vm_urn_created") else "")
        if not uri:
            return  # never created (or unknown): a name match could hit someone else's VM, so leave it
        async def drop_vm() -> None:
            await client.wait_task(await client.delete_vm(uri, reserve_disks=False), timeout=within)
        try:
            await retry_busy(drop_vm, within=within)
        except VrmNotFoundError:
            pass
        return
    if what == "restore-volume":  # a volume an interrupted restore created and half wrote
        uri = intent.get("volume_uri") or (urn_to_uri(intent["volume_urn"]) if intent.get("volume_urn") else "")
        if not uri:
            return
        async def drop_volume() -> None:
            await client.wait_task(await client.delete_volume(uri), timeout=within)
        try:
            await retry_busy(drop_volume, within=within, codes=BUSY_CODES | {"10420005", "10300062"})
        except VrmNotFoundError:
            pass
        return
    if what == "restore-overwrite":
        # Nothing on the VRM to undo: the interrupted job's record says the VM's disks were being
        # overwritten and must be restored again.
        return
    raise VrmError(f"unknown journal intent {what!r}")


async def cleanup_intents(client: "VrmClient", intents: list[dict[str, Any]],
                          done: Callable[[int], None], *, within: float = 120.0) -> list[tuple[dict, str]]:
    """Resources first (a snapshot in use by a resource cannot be deleted), then snapshots. Returns the
    intents that could not be cleaned, with the reason; ``done(key)`` is called for each success."""
    failed: list[tuple[dict, str]] = []
    rank = {"resource": 0, "restore-vm": 1, "restore-volume": 2}
    order = sorted(intents, key=lambda i: rank.get(str(i.get("what")), 3))
    for intent in order:
        try:
            await cleanup_intent(client, intent, within=within)
        except VrmError as e:
            failed.append((intent, str(e)))
            continue
        done(intent["key"])
    return failed
