"""Job records in ``FCTUI_JOBS``: a header per job, a record per VM, the CBT chain marks; and a watch of
them in the local agent's event protocol, so a console anywhere follows any proxy's jobs.

* ``job.<job>``: :meth:`JobRecord.to_dict` without ``vms``, plus ``vm_keys`` (the VMs' record keys in
  order), ``access`` (the client options the proxies use: verify, user_type, proxy_ip, cbt_bitmap; never
  a password), ``cancel`` (asked to cancel) and ``cluster`` (True). Several proxies change it: always
  by compare-and-set (:meth:`ClusterJobs.update_header`).
* ``vm.<job>.<vm key>``: :class:`VmProgress` fields plus ``agent`` (the proxy working on it),
  ``attempt``, ``intents`` (its journal: ``{key: intent}``), ``log`` (its lines, the newest
  :data:`VM_LOG_LIMIT`) and ``warnings``. One proxy at a time writes it (:class:`VmRecordWriter`).
* ``chain.<volume key>``: ``{"volume", "reason", "time"}``, a broken CBT chain (the planner's input).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict
from typing import Any, AsyncIterator, Callable, Iterable

import nats.errors
import nats.js.errors
from nats.js.kv import KV_DEL, KV_PURGE

from ..jobs.model import FINAL_JOB_STATES, FINAL_VM_STATES, JobRecord, VmProgress
from .connect import Cluster, ClusterError, entries
from .layout import (WORK_SUBJECT_JOB, WORK_SUBJECT_VM, chain_key, job_key, key_part, vm_key,
                     vm_record_key)

log = logging.getLogger(__name__)

VM_LOG_LIMIT = 50          # log lines kept in a VM record (the job's view merges them with the header's)
WATCH_INTERVAL_S = 0.25    # a watch sends a job at most this often (bursts of progress are coalesced)
HEADER_EXTRAS = ("vm_keys", "access", "cancel", "cluster")
VM_EXTRAS = ("agent", "attempt", "intents", "log", "warnings")

_Wrong = nats.js.errors.KeyWrongLastSequenceError


def dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def load(data: bytes | None) -> dict[str, Any]:
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def header_of(job: JobRecord, access: dict[str, Any] | None = None) -> dict[str, Any]:
    header = job.to_dict()
    vms = header.pop("vms")
    header.update(vm_keys=[vm_key(v["urn"]) for v in vms], access=dict(access or {}), cancel=False,
                  cluster=True)
    return header


def record_of(vm: VmProgress, **extras: Any) -> dict[str, Any]:
    """A VM record from its progress; ``extras``: agent, attempt, intents, log, warnings."""
    record: dict[str, Any] = asdict(vm)
    record.update({"agent": "", "attempt": 0, "intents": {}, "log": [], "warnings": []})
    record.update(extras)
    return record


def assemble(header: dict[str, Any], records: dict[str, dict[str, Any]]) -> JobRecord:
    """The :class:`JobRecord` of a header and its VM records (by vm key): VMs in ``vm_keys`` order,
    logs merged by time, the VMs' warnings and restore points added to the header's."""
    job = JobRecord.from_dict({k: v for k, v in header.items() if k not in HEADER_EXTRAS})
    logs = list(job.log)
    for k in header.get("vm_keys") or []:
        record = records.get(k)
        if record is None:
            continue
        job.vms.append(VmProgress.from_dict(record))
        logs.extend(e for e in record.get("log") or [] if isinstance(e, dict))
        job.warnings.extend(w for w in record.get("warnings") or [] if w not in job.warnings)
        point = record.get("point_id")
        if point and record.get("state") == "done" and point not in job.restore_points:
            job.restore_points.append(point)
    logs.sort(key=lambda e: e.get("time") or 0)
    job.log = logs[-JobRecord.LOG_LIMIT:]
    return job


class ClusterJobs:
    """The job records of a cluster (one per :class:`Cluster` connection; no state of its own)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.kv = cluster.jobs_kv

    # --- writing ----------------------------------------------------------------------------------

    async def create_job(self, job: JobRecord, access: dict[str, Any] | None = None) -> None:
        """Write a new job's header (and its VM records, if it has VMs already) and queue its job item
        for a proxy to plan."""
        try:
            await self.kv.create(job_key(job.id), dump(header_of(job, access)))
        except _Wrong:
            raise ClusterError(f"job {job.id} exists already") from None
        for vm in job.vms:
            await self.put_vm(job.id, record_of(vm))
        await self.cluster.js.publish(WORK_SUBJECT_JOB, dump({"job": job.id}))

    async def add_vms(self, job_id: str, vms: Iterable[VmProgress], agent: str = "") -> None:
        """Write the records of a job's VMs (the planning proxy: runnable ones queued, refused ones
        final) and add them to the header's ``vm_keys`` (in order, once each)."""
        vms = list(vms)
        for vm in vms:
            await self.put_vm(job_id, record_of(vm, agent=agent))

        def add(header: dict[str, Any]) -> None:
            keys = header.setdefault("vm_keys", [])
            keys.extend(k for k in dict.fromkeys(vm_key(v.urn) for v in vms) if k not in keys)
        await self.update_header(job_id, add)

    async def publish_vm_items(self, job_id: str, vm_urns: Iterable[str]) -> None:
        """Queue one VM item per VM: each is taken by one proxy."""
        for urn in vm_urns:
            await self.cluster.js.publish(WORK_SUBJECT_VM, dump({"job": job_id, "vm": urn, "vm_key": vm_key(urn)}))

    async def header(self, job_id: str) -> tuple[dict[str, Any], int] | None:
        """A job's header and its revision (None: no such job)."""
        try:
            entry = await self.kv.get(job_key(job_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        return load(entry.value), entry.revision  # type: ignore[return-value]

    async def update_header(self, job_id: str,
                            mutate: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any]:
        """Change a header by compare-and-set: ``mutate`` gets the current header (changes it in place
        or returns a new one) and runs again whenever another writer came first. Returns what was
        written."""
        for _ in range(1000):
            found = await self.header(job_id)
            if found is None:
                raise ClusterError(f"no job {job_id!r} in the cluster")
            header, revision = found
            before = dump(header)
            new = mutate(header)
            new = header if new is None else new
            data = dump(new)
            if data == before:
                return new   # nothing to change: no write (watchers are not woken for nothing)
            try:
                await self.kv.update(job_key(job_id), data, last=revision)
                return new
            except _Wrong:
                continue
        raise ClusterError(f"could not update job {job_id}: its record keeps changing")

    async def put_vm(self, job_id: str, record: dict[str, Any], last: int | None = None) -> int:
        """Write a VM record (``record["urn"]`` names the VM); ``last``: only if the stored record is
        still that revision (else :class:`ClusterError`: another proxy took the VM over). Returns the
        new revision."""
        key = vm_record_key(job_id, record["urn"])
        if last is None:
            return await self.kv.put(key, dump(record))
        try:
            return await self.kv.update(key, dump(record), last=last)
        except _Wrong:
            raise ClusterError(f"the record of {record.get('name') or record['urn']} in job {job_id} "
                               "was written by another proxy") from None

    async def request_cancel(self, job_id: str) -> dict[str, Any]:
        """Ask the proxies to cancel a job (they watch ``cancel`` in its header)."""
        def cancel(header: dict[str, Any]) -> None:
            if not header.get("cancel") and header.get("state") not in FINAL_JOB_STATES:
                header["cancel"] = True
                _add_log(header, "cancel requested")
        return await self.update_header(job_id, cancel)

    async def finish_if_done(self, job_id: str) -> JobRecord | None:
        """Settle the job once every VM record is final (the rules of a local run: succeeded, failed
        with "name: reason; ...", cancelled). Returns the job when it is final (now or before), else None.
        Any proxy may call it; the header's compare-and-set makes one of them the one that ends it."""
        found = await self.header(job_id)
        if found is None:
            return None
        header = found[0]
        if header.get("state") in FINAL_JOB_STATES:
            return await self.job(job_id)
        records = await self.vm_records(job_id)
        keys = header.get("vm_keys") or []
        if not keys or any(k not in records or not _final(records[k]) for k in keys):
            return None

        def settle(current: dict[str, Any]) -> dict[str, Any]:
            if current.get("state") in FINAL_JOB_STATES:
                return current
            job = assemble(current, records)
            job.settle()
            new = dict(current)
            new.update(state=job.state, finished=job.finished, error=job.error,
                       restore_points=job.restore_points, warnings=job.warnings)
            _add_log(new, *job.end_message())
            return new
        await self.update_header(job_id, settle)
        return await self.job(job_id)

    # --- reading ----------------------------------------------------------------------------------

    async def vm_entry(self, job_id: str, vm_urn: str) -> tuple[dict[str, Any], int] | None:
        """A VM record and its revision (for :class:`VmRecordWriter` taking it over)."""
        try:
            entry = await self.kv.get(vm_record_key(job_id, vm_urn))
        except nats.js.errors.KeyNotFoundError:
            return None
        return load(entry.value), entry.revision  # type: ignore[return-value]

    async def vm_record(self, job_id: str, vm_urn: str) -> dict[str, Any] | None:
        found = await self.vm_entry(job_id, vm_urn)
        return found[0] if found else None

    async def vm_records(self, job_id: str) -> dict[str, dict[str, Any]]:
        """A job's VM records by vm key (one ordered consumer, not one request per VM)."""
        found = await entries(self.kv, f"vm.{key_part(job_id)}.*")
        return {k.split(".", 2)[2]: load(e.value) for k, e in found.items()}

    async def leftovers(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """The intents left in the records of final VMs (what a proxy could not clean up on the VRM),
        each with its ``key`` and ``job``: the cluster's cleanup status (of ``job_id``'s VMs only, if given)."""
        out = []
        for entry in (await entries(self.kv, f"vm.{key_part(job_id)}.*" if job_id else "vm.>")).values():
            record = load(entry.value)
            if not _final(record):
                continue
            for k, intent in (record.get("intents") or {}).items():
                if str(k).isdigit() and isinstance(intent, dict):
                    out.append(dict(intent, key=int(k), vm=intent.get("vm") or record.get("urn")))
        return sorted(out, key=lambda i: i.get("time") or 0)

    async def job(self, job_id: str) -> JobRecord | None:
        found = await self.header(job_id)
        if found is None:
            return None
        return assemble(found[0], await self.vm_records(job_id))

    async def jobs(self) -> list[JobRecord]:
        """Every job, oldest first."""
        headers, records = _split(await entries(self.kv))
        out = [assemble(h, records.get(jk, {})) for jk, h in headers.items()]
        return sorted(out, key=lambda j: j.created)

    async def prune_history(self, keep: int = 500) -> int:
        """Drop the oldest final jobs beyond ``keep`` (their headers and VM records), as the local
        agent's store does; returns how many."""
        headers, records = _split(await entries(self.kv))
        final = sorted((h.get("created") or 0, jk) for jk, h in headers.items()
                       if h.get("state") in FINAL_JOB_STATES)
        drop = [jk for _, jk in final[:-keep]] if len(final) > keep else []
        for jk in drop:
            for vk in records.get(jk, {}):
                await self.kv.purge(f"vm.{jk}.{vk}")
            await self.kv.purge(f"job.{jk}")
        return len(drop)

    # --- CBT chain marks --------------------------------------------------------------------------

    async def chain_marks(self) -> dict[str, str]:
        """Volume URN -> why its next backup is full."""
        out = {}
        for entry in (await entries(self.kv, "chain.*")).values():
            mark = load(entry.value)
            if mark.get("volume"):
                out[mark["volume"]] = str(mark.get("reason") or "")
        return out

    async def mark_chain(self, volume_urn: str, reason: str) -> None:
        await self.kv.put(chain_key(volume_urn), dump({"volume": volume_urn, "reason": reason,
                                                       "time": time.time()}))

    async def clear_chain(self, volume_urns: Iterable[str]) -> None:
        for urn in volume_urns:
            try:
                await self.kv.get(chain_key(urn))
            except nats.js.errors.KeyNotFoundError:
                continue   # no mark: leave no tombstone either
            await self.kv.delete(chain_key(urn))

    # --- watching ---------------------------------------------------------------------------------

    async def watch(self, job_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Events as the local agent sends them: first ``{"event": "job", "job": ...}`` for every job
        (or the one asked for), then one whenever a header or a VM record changes (coalesced: at most
        one per job per :data:`WATCH_INTERVAL_S`), and ``{"event": "end", "job": id, "state": s}`` when a
        job turns final. Watching one job ends after its end (at once when it is final already);
        an unknown job gives ``{"event": "error", "error": ...}``. Jobs are sent without their log."""
        # One job: only its header and its VM records travel (not every other job's progress).
        watcher = await _Watch.open(self.kv, [f"job.{key_part(job_id)}", f"vm.{key_part(job_id)}.*"]
                                    if job_id else [">"])
        headers: dict[str, dict[str, Any]] = {}
        records: dict[str, dict[str, dict[str, Any]]] = {}
        want = key_part(job_id) if job_id else None
        sent: dict[str, float] = {}
        dirty: set[str] = set()
        ended: set[str] = set()

        def apply(entry: Any) -> str | None:
            parts = entry.key.split(".")
            deleted = entry.operation in (KV_DEL, KV_PURGE)
            if parts[0] == "job" and len(parts) == 2:
                jk = parts[1]
                if deleted:
                    headers.pop(jk, None)
                    return None
                headers[jk] = load(entry.value)
            elif parts[0] == "vm" and len(parts) == 3:
                jk = parts[1]
                if deleted:
                    records.get(jk, {}).pop(parts[2], None)
                else:
                    records.setdefault(jk, {})[parts[2]] = load(entry.value)
            else:
                return None
            return jk if want is None or jk == want else None

        def event(jk: str) -> dict[str, Any]:
            sent[jk] = time.monotonic()
            d = assemble(headers[jk], records.get(jk, {})).to_dict()
            d.pop("log", None)
            return {"event": "job", "job": d}

        def is_final(jk: str) -> bool:
            return headers[jk].get("state") in FINAL_JOB_STATES

        try:
            while True:   # the current entries, up to the marker
                entry = await watcher.next(30.0)
                if entry is None:
                    break
                if entry is _Watch.STOP:
                    raise ClusterError(f"lost the cluster at {self.cluster.url}")
                apply(entry)
            if want is not None:
                if want not in headers:
                    yield {"event": "error", "error": f"no job {job_id!r} in the cluster"}
                    return
                yield event(want)
                if is_final(want):
                    yield {"event": "end", "job": headers[want].get("id", job_id), "state": headers[want]["state"]}
                    return
            else:
                for jk in sorted(headers, key=lambda k: headers[k].get("created") or 0):
                    yield event(jk)
                    if is_final(jk):
                        ended.add(jk)
            while True:
                now = time.monotonic()
                due = [jk for jk in dirty if now - sent.get(jk, 0.0) >= WATCH_INTERVAL_S]
                for jk in due:
                    dirty.discard(jk)
                    if jk not in headers:
                        continue
                    yield event(jk)
                    if is_final(jk) and jk not in ended:
                        ended.add(jk)
                        yield {"event": "end", "job": headers[jk].get("id", jk), "state": headers[jk]["state"]}
                        if want is not None:
                            return
                timeout = 1.0   # at most this long before looking whether the connection is gone for good
                if dirty:
                    timeout = max(0.0, min(sent.get(jk, 0.0) + WATCH_INTERVAL_S for jk in dirty) - time.monotonic())
                try:
                    entry = await watcher.next(timeout)
                except asyncio.TimeoutError:
                    if self.cluster.nc.is_closed:   # (a reconnecting one resumes by itself)
                        raise ClusterError(f"lost the cluster at {self.cluster.url}") from None
                    continue
                if entry is _Watch.STOP:
                    raise ClusterError(f"lost the cluster at {self.cluster.url}")
                if entry is None:
                    continue
                jk = apply(entry)
                if jk is not None:
                    dirty.add(jk)
        finally:
            await watcher.stop()


class _Watch:
    """KV watchers of several key patterns read as one: entries as they come, and one None once every
    watcher has delivered the entries that existed when it started."""

    STOP = object()   # a watcher ended (its connection was closed)

    def __init__(self, watchers: list[Any]) -> None:
        self.watchers = watchers
        self.queue: asyncio.Queue = asyncio.Queue()
        self.starting = len(watchers)
        self.pumps = [asyncio.get_running_loop().create_task(self._pump(w)) for w in watchers]

    @classmethod
    async def open(cls, kv: Any, patterns: list[str]) -> "_Watch":
        watchers = []
        try:
            for pattern in patterns:
                watchers.append(await kv.watch(pattern))
        except BaseException:
            for w in watchers:
                await _stop(w)
            raise
        return cls(watchers)

    async def _pump(self, watcher: Any) -> None:
        async for entry in watcher:
            await self.queue.put(entry)
        await self.queue.put(self.STOP)

    async def next(self, timeout: float) -> Any:
        """The next entry (None: all initial entries are in; :attr:`STOP`); asyncio.TimeoutError."""
        while True:
            entry = await asyncio.wait_for(self.queue.get(), timeout)
            if entry is None:
                self.starting -= 1
                if self.starting:
                    continue
            return entry

    async def stop(self) -> None:
        for pump in self.pumps:
            pump.cancel()
        for w in self.watchers:
            await _stop(w)


async def _stop(watcher: Any) -> None:
    try:
        await watcher.stop()
    except Exception:   # the connection is gone already
        pass


def _final(record: dict[str, Any]) -> bool:
    return record.get("state") in FINAL_VM_STATES


def _split(found: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, dict[str, Any]]]]:
    headers: dict[str, dict[str, Any]] = {}
    records: dict[str, dict[str, dict[str, Any]]] = {}
    for key, entry in found.items():
        parts = key.split(".")
        if parts[0] == "job" and len(parts) == 2:
            headers[parts[1]] = load(entry.value)
        elif parts[0] == "vm" and len(parts) == 3:
            records.setdefault(parts[1], {})[parts[2]] = load(entry.value)
    return headers, records


def _add_log(record: dict[str, Any], message: str, level: str = "info", limit: int = JobRecord.LOG_LIMIT) -> None:
    logs = record.setdefault("log", [])
    logs.append({"time": time.time(), "level": level, "message": message})
    del logs[:-limit]


class VmRecordWriter:
    """The one writer of a VM record on this proxy: the runner's progress, its log lines and the
    journal's intents all go through it, so none overwrites another. Writes are serialized and
    coalesced (the latest state wins); :meth:`flush` returns once every change so far is stored.

    ``revision``: the stored record's revision when this proxy took it over: every write is then a
    compare-and-set, and a proxy that stalled while another took the VM over stops writing (its
    flush raises :class:`ClusterError`) instead of overwriting the new proxy's record. Without it the
    first write is unconditional.

    ``merge``: this writer is not the record's only writer; ``record`` holds only what changes here
    (its fields, its intents, its new log lines), and every write re-reads the stored record and
    applies them to it by compare-and-set (what others wrote stays; never "taken over")."""

    RETRY_S = 30.0   # how long a write keeps trying while NATS is away

    def __init__(self, jobs: ClusterJobs, job_id: str, record: dict[str, Any], revision: int | None = None,
                 *, merge: bool = False) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self.record = record
        record.setdefault("intents", {})
        record.setdefault("log", [])
        self.revision = revision
        self.merge = merge
        self._forgotten: set[str] = set()   # intents done here (merge: removed from the stored ones)
        self._new_log: list[dict[str, Any]] = []   # merge: lines not written yet
        self.error: ClusterError | None = None
        self._version = 0      # changes made
        self._written = 0      # changes stored
        self._pump: asyncio.Task | None = None
        self._stored = asyncio.Event()

    @classmethod
    async def open(cls, jobs: ClusterJobs, job_id: str, vm_urn: str, **extras: Any) -> "VmRecordWriter":
        """The writer of a VM record as stored now (a bare one when there is none), every later write a
        compare-and-set; ``extras`` (e.g. agent, attempt) are set and written at once."""
        found = await jobs.vm_entry(job_id, vm_urn)
        record, revision = found if found is not None else ({"urn": vm_urn}, None)
        record.update(extras)
        writer = cls(jobs, job_id, record, revision)
        if extras:
            writer.changed()
        return writer

    def forget_intent(self, key: str) -> None:
        """An intent of the stored record that is done (kept out when merging)."""
        self._forgotten.add(key)

    def set_progress(self, vm: VmProgress) -> None:
        """The VM's progress (its :class:`VmProgress` fields) as the runner sees it now."""
        self.record.update(asdict(vm))
        self.changed()

    def log(self, message: str, level: str = "info", when: float | None = None) -> None:
        entry = {"time": time.time() if when is None else when, "level": level, "message": message}
        logs = self.record["log"]
        logs.append(entry)
        del logs[:-VM_LOG_LIMIT]
        if self.merge:
            self._new_log.append(entry)
        self.changed()

    def changed(self) -> None:
        """Something in ``record`` changed: write it (soon)."""
        self._version += 1
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._write_all())

    async def flush(self) -> None:
        """Return once every change so far is stored; :class:`ClusterError` when it cannot be."""
        target = self._version
        while self._written < target:
            if self.error is not None:
                raise self.error
            if self._pump is None or self._pump.done():
                self._pump = asyncio.get_running_loop().create_task(self._write_all())
            self._stored.clear()
            await self._stored.wait()
        if self.error is not None and self._written < target:
            raise self.error

    async def _write_all(self) -> None:
        try:
            while self._written < self._version and self.error is None:
                version = self._version
                if self.merge:
                    await self._write_merged()
                else:
                    await self._write(dump(self.record))   # the state now: later changes get the next round
                self._written = max(self._written, version)
                self._stored.set()
        except ClusterError as e:
            self.error = e
            log.warning("%s", e)
        except Exception as e:   # never leave a flush waiting on a dead pump
            self.error = ClusterError(f"cannot write the record of {self.record.get('urn')}: {e}")
            log.warning("%s", self.error)
        finally:
            self._stored.set()

    async def _write_merged(self) -> None:
        key = vm_record_key(self.job_id, self.record["urn"])
        for _ in range(1000):
            found = await self.jobs.vm_entry(self.job_id, self.record["urn"])
            stored, revision = found if found is not None else ({}, None)
            record = dict(stored)
            record.update({k: v for k, v in self.record.items() if k not in ("intents", "log")})
            intents = {k: v for k, v in (stored.get("intents") or {}).items() if k not in self._forgotten}
            intents.update(self.record["intents"])
            lines = list(self._new_log)
            record["intents"] = intents
            record["log"] = ((stored.get("log") or []) + lines)[-VM_LOG_LIMIT:]
            try:
                if revision is None:
                    self.revision = await self.jobs.kv.create(key, dump(record))
                else:
                    self.revision = await self.jobs.kv.update(key, dump(record), last=revision)
            except _Wrong:
                continue   # another writer came first: apply to theirs
            del self._new_log[:len(lines)]
            return
        raise ClusterError(f"could not write the record of {self.record['urn']}: it keeps changing")

    async def _write(self, data: bytes) -> None:
        key = vm_record_key(self.job_id, self.record["urn"])
        deadline = time.monotonic() + self.RETRY_S
        delay = 0.2
        while True:
            try:
                if self.revision is None:
                    self.revision = await self.jobs.kv.put(key, data)
                else:
                    self.revision = await self.jobs.kv.update(key, data, last=self.revision)
                return
            except _Wrong:
                # A write whose answer was lost may have been stored: then that revision is ours.
                try:
                    entry = await self.jobs.kv.get(key)
                except nats.js.errors.KeyNotFoundError:
                    entry = None
                if entry is not None and entry.value == data:
                    self.revision = entry.revision
                    return
                raise ClusterError(f"the record of {self.record.get('name') or self.record['urn']} in job "
                                   f"{self.job_id} was taken over by another proxy") from None
            except (nats.errors.Error, asyncio.TimeoutError) as e:
                if time.monotonic() > deadline:
                    raise ClusterError(f"cannot write to the cluster: {e}") from None
                await asyncio.sleep(delay)   # NATS away: back off, bounded by RETRY_S
                delay = min(delay * 2, 2.0)
