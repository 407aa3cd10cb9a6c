"""The job agent's requests and events, answered from a cluster (fctui.cluster) instead of a local agent.

:class:`ClusterClient` has :class:`~fctui.agent.client.AgentClient`'s API (``request``, ``watch``, ``wait``,
``policy_runs``, ``close``), so ``fctui jobs``, ``fctui backup`` and the console's jobs screen work
unchanged when :func:`fctui.agent.client.job_agent` hands them one. It needs no agent and no VRM on this
machine: every job lives in the cluster's NATS (read and written through
:class:`~fctui.cluster.jobs.ClusterJobs`); the proxies (``fctui agent --cluster``) run them.

What differs from the local agent, and why:

* ``submit`` creates the job record and its job item; a password in the request is dropped (passwords
  never travel through NATS: each proxy logs in with its own). Restores run on the local agent for now.
* ``cancel`` sets the job's cancel flag; the proxies running its VMs stop them and clean up.
* ``cleanup-status`` lists the leftovers (journal intents) still held by VMs that are final: the
  proxies' sweep retries them with their own passwords, so ``credentials`` is refused.
* no policy service runs in a cluster: ``policy_runs`` is empty, ``run_policy`` refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

from ..jobs.model import FINAL_VM_STATES, JobError, JobRecord
from .protocol import AgentError

if TYPE_CHECKING:  # pragma: no cover
    from ..cluster.connect import Cluster
    from ..cluster.jobs import ClusterJobs
    from ..cluster.layout import ClusterSettings


class ClusterClient:
    """Talks to the cluster at ``url`` (one NATS connection, opened on first use, on the running event
    loop; :meth:`close` closes it)."""

    def __init__(self, url: str, settings: "ClusterSettings | None" = None) -> None:
        self.url = url
        self.settings = settings
        self._cluster: Cluster | None = None
        self._jobs: ClusterJobs | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _open(self) -> "ClusterJobs":
        from ..cluster.connect import Cluster
        from ..cluster.jobs import ClusterJobs
        from ..cluster.layout import ClusterSettings
        loop = asyncio.get_running_loop()
        if self._jobs is not None and self._loop is loop and not self._cluster.nc.is_closed:  # type: ignore[union-attr]
            return self._jobs
        # a connection belongs to the loop that opened it (each asyncio.run of the CLI has its own)
        self._cluster = self._jobs = None
        try:
            # a client: the consumer's and the expiring buckets' timings are the proxies' to set
            cluster = await Cluster.connect(self.url, self.settings or ClusterSettings(), proxy=False)
        except JobError as e:
            raise AgentError(e.message) from None
        self._cluster, self._jobs, self._loop = cluster, ClusterJobs(cluster), loop
        return self._jobs

    async def close(self) -> None:
        cluster, self._cluster, self._jobs = self._cluster, None, None
        if cluster is not None and self._loop is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                await cluster.close()

    # --- requests ------------------------------------------------------------------------------------

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request of the agent's protocol (fctui.agent.protocol), answered from the cluster; raises
        AgentError as the local agent's client does when it is refused or the cluster cannot be reached."""
        from nats.errors import Error as NatsError
        try:
            return await self._dispatch(op, fields)
        except AgentError:
            raise
        except JobError as e:
            raise AgentError(e.message) from None
        except (NatsError, OSError, asyncio.TimeoutError) as e:   # NATS lost mid-request
            raise AgentError(f"the cluster at {self.url} did not answer: {str(e) or type(e).__name__}") from None

    async def _dispatch(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        jobs = await self._open()
        if op == "hello":
            return {"ok": True, "cluster": self.url, "agents": await self._agents(), "demo": None,
                    "running": await self._running()}
        if op == "list":
            return {"ok": True, "jobs": [_without_log(j) for j in await jobs.jobs()]}
        if op == "get":
            return {"ok": True, "job": (await self._job(jobs, req.get("job"))).to_dict()}
        if op == "submit":
            return {"ok": True, "job": await self._submit(jobs, req)}
        if op == "cancel":
            job = await self._job(jobs, req.get("job"))
            if job.is_final:
                raise AgentError(f"job {job.id} is {job.state}, not running")
            await jobs.request_cancel(job.id)
            return {"ok": True, "job": job.id}
        if op == "cleanup-status":
            pending = await self._leftovers()
            return {"ok": True, "pending": pending, "vrms": sorted({(p["vrm"], p["user"]) for p in pending})}
        if op == "policy_runs":
            return {"ok": True, "runs": [], "service": None}
        if op == "run_policy":
            raise AgentError("no policy service runs in a cluster: run `fctui agent --service` on a machine "
                             "without --cluster, or back the policy's VMs up with `fctui backup --cluster`")
        if op == "credentials":
            raise AgentError("in a cluster the proxies clean up leftovers themselves, with their own VRM passwords")
        if op in ("demo", "shutdown"):
            raise AgentError(f"{op} is for the local agent; a cluster has no demo simulator and is not shut "
                             "down from a client")
        raise AgentError(f"unknown op {op!r}")

    @staticmethod
    async def _job(jobs: "ClusterJobs", job_id: Any) -> JobRecord:
        job = await jobs.job(str(job_id))
        if job is None:
            raise AgentError(f"no job {job_id!r}")
        return job

    async def _running(self) -> list[str]:
        """The ids of the jobs not final yet (their headers only: a hello stays cheap)."""
        from ..cluster.connect import entries
        from ..cluster.jobs import load
        from ..jobs.model import FINAL_JOB_STATES
        assert self._cluster is not None
        headers = [load(e.value) for e in (await entries(self._cluster.jobs_kv, "job.*")).values()]
        return sorted(str(h.get("id")) for h in headers if h.get("id") and h.get("state") not in FINAL_JOB_STATES)

    async def _agents(self) -> list[str]:
        """The live proxies' ids (their heartbeats in the AGENTS bucket)."""
        from ..cluster.connect import entries
        assert self._cluster is not None
        if self._cluster.agents_kv is None:   # no proxy had started when this client connected
            from ..cluster.connect import existing_bucket
            from ..cluster.layout import AGENTS_BUCKET
            self._cluster.agents_kv = await existing_bucket(self._cluster.js, AGENTS_BUCKET)
            if self._cluster.agents_kv is None:
                return []
        return sorted(k.split(".", 1)[1] for k in await entries(self._cluster.agents_kv) if k.startswith("agent."))

    async def _submit(self, jobs: "ClusterJobs", req: dict[str, Any]) -> str:
        from .server import client_access, new_job_id
        kind = str(req.get("type") or "backup")
        if kind == "restore":
            raise AgentError("restores run on the local agent: `fctui restore` without --cluster "
                             "(a cluster runs backups)")
        if kind != "backup":
            raise AgentError(f"unknown job type {kind!r} (backup or restore)")
        if req.get("demo"):
            raise AgentError("the demo simulator lives in the local agent, not in a cluster")
        targets = [str(t) for t in req.get("targets") or [] if str(t).strip()]
        if not targets:
            raise AgentError("no VM given: name at least one VM (name or URN)")
        # the password (a console's submit carries one) is dropped here: never in NATS
        access = client_access(req)
        if req.get("host_snapshot_gate"):
            access["host_snapshot_gate"] = True
        if req.get("business_hours"):
            from ..rules.launch import BusinessHours, BusinessHoursError
            try:
                BusinessHours.parse(str(req["business_hours"]))
            except BusinessHoursError as e:
                raise AgentError(str(e)) from None
            access["business_hours"] = str(req["business_hours"])
        policy = str(req.get("policy") or "")
        job = JobRecord(id=new_job_id(), type="backup", vrm=str(req.get("vrm") or ""), user=str(req.get("user") or ""),
                        targets=targets, full=bool(req.get("full")), policy=policy)
        job.add_log(f"backup submitted: {', '.join(targets)}" + (" (--full)" if job.full else "")
                    + (f" (policy {policy})" if policy else ""))
        await jobs.create_job(job, access)
        return job.id

    async def _leftovers(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """``cleanup-status`` rows (as the local agent's) of the intents left by final VMs (a running VM's
        are its proxy's business): what a proxy created on the VRM and could not remove; the proxies'
        sweep retries them. Of every job, or of ``job_id``'s only."""
        assert self._jobs is not None
        return [{f: i.get(f) for f in ("key", "job", "vrm", "user", "what", "vm", "name", "snapshot_urn",
                                       "volume_urn", "task_id", "time")}
                | {"error": str(i.get("last_error") or ""), "next_try": None, "cluster": True}
                for i in await self._jobs.leftovers(job_id)]

    # --- events ---------------------------------------------------------------------------------------

    async def watch(self, job: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """The local agent's event stream (fctui.agent.protocol ``watch``) from ClusterJobs.watch: ``job``
        events (whole records; the one job followed with its log first), ``end``; added here: ``log``
        events (the lines new since the last look, for the jobs that run: the console and ``--wait``
        show them as they come) and, watching every job, ``cleanup`` (the leftovers, at the start and
        whenever a VM ends)."""
        jobs = await self._open()
        want = str(job) if job else None
        since = time.time()
        logs = _LogLines()
        final_vms: dict[str, int] = {}   # job id -> how many of its VMs were final at the last event
        if not want:
            pending = await self._leftovers()
            left: dict[str, list[dict[str, Any]]] = {}   # by job: one job's are re-read when a VM of it ends
            for row in pending:
                left.setdefault(str(row["job"]), []).append(row)
            yield {"event": "cleanup", "pending": pending}
        changes = jobs.watch(want)
        try:
            async for ev in changes:
                kind = ev.get("event")
                if kind == "error":
                    raise AgentError(str(ev.get("error") or "watch failed"))
                if kind != "job" or not isinstance(ev.get("job"), dict):
                    yield ev
                    continue
                rec = JobRecord.from_dict(ev["job"])
                if not logs.known(rec.id):
                    # first sight: a job followed comes with its log, as from the local agent; a job
                    # submitted since the watch began has only new lines; an older one's are history
                    full = await jobs.job(rec.id) if want or not rec.is_final else None
                    if want and full is not None:
                        logs.seen(full)
                        yield {"event": "job", "job": full.to_dict()}
                    else:
                        if full is None:
                            logs.stop(rec.id)
                        else:
                            logs.seen(full if rec.created < since else None, rec.id)
                        yield ev
                        for line in logs.new(full) if full is not None else []:
                            yield {"event": "log", "job": rec.id, **line}
                else:
                    yield ev
                    full = await jobs.job(rec.id) if logs.following(rec.id) else None
                    for line in logs.new(full) if full is not None else []:
                        yield {"event": "log", "job": rec.id, **line}
                    if rec.is_final:
                        logs.stop(rec.id)
                done = _final_count(rec.vms)
                if not want and rec.id in final_vms and final_vms[rec.id] != done:
                    mine = await self._leftovers(rec.id)
                    if mine != left.get(rec.id, []):
                        left[rec.id] = mine
                        pending = sorted((row for rows in left.values() for row in rows), key=lambda r: r["time"] or 0)
                        yield {"event": "cleanup", "pending": pending}
                final_vms[rec.id] = done
        except AgentError:
            raise
        except JobError as e:   # the cluster's watch stopped (NATS lost)
            raise AgentError(e.message) from None
        finally:
            with contextlib.suppress(Exception):
                await changes.aclose()  # type: ignore[attr-defined]

    async def policy_runs(self, policy: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """No policy service runs in a cluster: no runs (the same answer as AgentClient.policy_runs's)."""
        resp = await self.request("policy_runs")
        return {"runs": resp.get("runs") or [], "service": resp.get("service")}

    async def wait(self, job: str, on_event: Any = None) -> dict[str, Any]:
        """Follow ``job`` to its end; returns the final job record."""
        async for ev in self.watch(job):
            if on_event is not None:
                on_event(ev)
        return (await self.request("get", job=job))["job"]


class _LogLines:
    """The log lines of each job already told, so only new ones become ``log`` events; a job no
    longer followed (final when first seen, or ended) costs no more reads."""

    def __init__(self) -> None:
        self._told: dict[str, set[tuple[Any, ...]] | None] = {}

    def known(self, job_id: str) -> bool:
        return job_id in self._told

    def following(self, job_id: str) -> bool:
        return self._told.get(job_id) is not None

    def seen(self, job: JobRecord | None, job_id: str | None = None) -> None:
        """``job``'s lines are told (None: none of ``job_id``'s are)."""
        if job is not None:
            self._told[job.id] = {_line_key(e) for e in job.log}
        elif job_id is not None:
            self._told[job_id] = set()

    def stop(self, job_id: str) -> None:
        self._told[job_id] = None

    def new(self, job: JobRecord) -> list[dict[str, Any]]:
        told = self._told.get(job.id)
        if told is None:
            return []
        fresh = [e for e in job.log if _line_key(e) not in told]
        told.update(_line_key(e) for e in fresh)
        return sorted(fresh, key=lambda e: e.get("time") or 0)


def _line_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (entry.get("time"), entry.get("level"), entry.get("message"))


def _job_id_of(ev: dict[str, Any]) -> str | None:
    j = ev.get("job")
    return j if isinstance(j, str) else (j.get("id") if isinstance(j, dict) else None)


def _final_count(vms: list[Any]) -> int:
    return sum(1 for v in vms if v.state in FINAL_VM_STATES)


def _without_log(job: JobRecord) -> dict[str, Any]:
    d = job.to_dict()
    d.pop("log", None)
    return d
