"""The job agent's client: one connection per request, ``watch`` streams; starts the agent on demand.

:func:`job_agent` / :func:`job_client` are the one seam between the CLI or the console and whoever runs
their jobs: the local agent (this module), or, given a cluster URL (``--cluster``, ``$FCTUI_CLUSTER``, the
config's ``cluster``: :func:`fctui.config.cluster_url`), the cluster's proxies through a
:class:`~fctui.agent.cluster_client.ClusterClient` that answers the same requests and events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Union

from ..store import state_dir
from .protocol import MAX_LINE, AgentError, socket_path

if TYPE_CHECKING:  # pragma: no cover
    from .cluster_client import ClusterClient


class AgentClient:
    """Talks to the agent over its socket (one connection per request; ``watch`` streams)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else socket_path()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_unix_connection(str(self.path), limit=MAX_LINE)
        except (FileNotFoundError, ConnectionRefusedError, OSError) as e:
            raise AgentError(f"the job agent is not running ({self.path}: {e.strerror or e})") from None

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        reader, writer = await self._open()
        try:
            writer.write(json.dumps({"op": op, **fields}).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if not line:
            raise AgentError("the job agent closed the connection")
        try:
            resp = json.loads(line)
        except ValueError:
            raise AgentError("the job agent sent an unreadable answer") from None
        if not resp.get("ok", False):
            raise AgentError(resp.get("error") or "the job agent refused the request")
        return resp

    async def watch(self, job: str | None = None) -> AsyncIterator[dict[str, Any]]:
        reader, writer = await self._open()
        try:
            writer.write(json.dumps({"op": "watch", "job": job}).encode() + b"\n")
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    return
                ev = json.loads(line)
                if ev.get("event") == "error":
                    raise AgentError(ev.get("error") or "watch failed")
                yield ev
                if job and ev.get("event") == "end":
                    return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        """Nothing held between requests (the same call as a ClusterClient's, which holds a connection)."""

    async def policy_runs(self, policy: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """``{"runs": [PolicyRun dicts, oldest first], "service": status or None}``: the runs recorded by
        the agent (of ``policy``, or all; ``limit``: the newest ones), whether or not a policy service runs."""
        fields: dict[str, Any] = {}
        if policy is not None:
            fields["policy"] = policy
        if limit is not None:
            fields["limit"] = limit
        resp = await self.request("policy_runs", **fields)
        return {"runs": resp.get("runs") or [], "service": resp.get("service")}

    async def run_policy(self, name: str) -> dict[str, Any]:
        """Run policy ``name`` now in the policy service; its PolicyRun dict. AgentError when the agent
        runs no policy service (`fctui agent --service`) or refuses the name."""
        return (await self.request("run_policy", name=name))["run"]

    async def wait(self, job: str, on_event: Any = None) -> dict[str, Any]:
        """Follow ``job`` to its end; returns the final job record."""
        async for ev in self.watch(job):
            if on_event is not None:
                on_event(ev)
        return (await self.request("get", job=job))["job"]


async def running_agent(cluster: str | None = None) -> JobAgent | None:
    """The agent if one runs for this user, else None; never starts one (a command that only looks,
    e.g. ``fctui check``, must not leave an agent behind) and never creates the runtime directory.
    ``cluster``: that cluster's client instead, if it answers (close it when done)."""
    from ..store import StoreError, runtime_dir
    if cluster:
        try:
            return await job_agent(cluster)
        except AgentError:
            return None
    if not runtime_dir(create=False).is_dir():
        return None
    try:
        client = AgentClient()
        await client.request("hello")
    except (StoreError, AgentError):   # a runtime dir not ours, no socket, no answer: no agent to ask
        return None
    return client


def agent_command(*, demo: bool = False, extra: list[str] | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "fctui.cli", "agent", "--foreground"]
    if demo:
        cmd.append("--demo")
    return cmd + list(extra or [])


async def ensure_agent(*, demo: bool = False, timeout: float = 15.0, extra: list[str] | None = None) -> AgentClient:
    """Connect to the agent, starting it (detached, own session) when it is not running."""
    import subprocess
    client = AgentClient()
    try:
        await client.request("hello")
        return client
    except AgentError:
        pass
    logf = open(os.open(state_dir() / "agent.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    try:
        subprocess.Popen(agent_command(demo=demo, extra=extra), stdin=subprocess.DEVNULL, stdout=logf,
                         stderr=logf, start_new_session=True, close_fds=True, cwd="/")
    finally:
        logf.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await client.request("hello")
            return client
        except AgentError:
            if loop.time() > deadline:
                raise AgentError(f"the job agent did not start within {timeout:g} s; see "
                                 f"{state_dir() / 'agent.log'}") from None
            await asyncio.sleep(0.1)


JobAgent = Union[AgentClient, "ClusterClient"]


def job_client(cluster: str | None = None) -> JobAgent:
    """Who runs the jobs, not yet asked anything: the cluster at ``cluster`` (a NATS URL), else the
    local agent (which may not be running: :func:`job_agent` starts it)."""
    if cluster:
        from .cluster_client import ClusterClient
        return ClusterClient(cluster)
    return AgentClient()


async def job_agent(cluster: str | None = None, *, demo: bool = False) -> JobAgent:
    """The jobs' agent, answering: the cluster at ``cluster`` (AgentError when it cannot be reached; it
    hosts no demo simulator), else the local agent, started when it is not running (:func:`ensure_agent`)."""
    if not cluster:
        return await ensure_agent(demo=demo)
    if demo:
        raise AgentError("the demo simulator lives in the local agent, not in a cluster: drop --cluster")
    client = job_client(cluster)
    try:
        await client.request("hello")
    except AgentError:
        await client.close()
        raise
    return client
