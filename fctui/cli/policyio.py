"""What ``fctui policy run`` and ``fctui status`` both read: the VRM's inventory as table rows, the job
agent's records (from the running agent, else its database file, read-only), the repository, and a
table that fits the terminal.

Never starts a job agent: a command that only looks must not leave one behind (as ``fctui check``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Sequence

from .common import REPO_HELP, REPO_METAVAR, Connection

if TYPE_CHECKING:  # pragma: no cover
    from ..inventory.gather import Inventory
    from ..inventory.query import VmRow
    from ..jobs.model import JobRecord
    from ..jobs.pause import PauseEstimator
    from ..repo import Repository
    from ..vrm import VrmClient


class Unreadable(Exception):
    """Something status depends on could not be read (the VRM, the repository, the policies, the job
    records); ``str()`` says what and why, in one line."""


def add_repo_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", metavar=REPO_METAVAR, default=None, help=f"as the agent's --repo: {REPO_HELP}")


# --- the VRM ---------------------------------------------------------------------------------------

@dataclass
class Gathered:
    inventory: "Inventory"
    rows: list["VmRow"]

    def sizes(self) -> dict[str, tuple[int, float]]:
        """VM URN -> (disks, GB) a snapshot covers (the console's pause model input)."""
        out = {}
        for f in self.inventory.facts:
            disks = [d for d in f.vm.disks if not d.indep_disk and d.persistent_disk and not d.is_shared]
            out[f.vm.urn] = (len(disks), float(sum(d.quantity_gb or 0 for d in disks)))
        return out


@contextlib.asynccontextmanager
async def vrm_session(conn: Connection, password: str, *, concurrency: int = 8) -> AsyncIterator["VrmClient"]:
    """A logged-in client of the VRM (logged out on every path). Raises :class:`Unreadable`."""
    from ..vrm import VrmClient, VrmError
    try:
        client = VrmClient(conn.url, conn.user, password, verify=conn.verify, page_concurrency=concurrency,
                           **conn.client_options())
    except VrmError as e:
        raise Unreadable(str(e)) from None
    try:
        try:
            await client.login()
        except VrmError as e:
            raise Unreadable(f"cannot log in to the VRM at {conn.url}: {e}") from None
        yield client
    finally:
        await client.close()


async def gather_rows(client: "VrmClient", site: str | None = None, *, concurrency: int = 8) -> Gathered:
    """The whole inventory of the site, assessed by the rules as ``fctui check`` does, as table rows.
    Raises :class:`Unreadable` when the VRM cannot be read."""
    from ..inventory.gather import GatherError, gather
    from ..inventory.query import row_from_vm
    from ..vrm import VrmError
    try:
        inv = await gather(client, site, concurrency=concurrency)
    except GatherError as e:
        raise Unreadable(str(e)) from None
    except VrmError as e:
        raise Unreadable(f"cannot read the VRM at {client.base_url}: {e}") from None
    rows = [row_from_vm(f.vm, a) for f, a in zip(inv.facts, inv.assessments)]
    return Gathered(inv, rows)


# --- the job agent's records ------------------------------------------------------------------------

def agent_db_path() -> Path:
    from ..store import state_dir
    return state_dir(create=False) / "jobs.json"


def read_agent_db(path: Path | None = None) -> dict[str, Any]:
    """The agent's tinydb document as plain JSON, read without opening it as a database (the agent is
    its one writer; its writes replace the file atomically, so a plain read sees a whole version).
    No file yet: empty. Raises :class:`Unreadable`."""
    path = path or agent_db_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise Unreadable(f"cannot read the job records {path}: {e.strerror}") from None
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise Unreadable(f"the job records {path} are not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise Unreadable(f"the job records {path} do not hold a tinydb document")
    return doc


def _table(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    t = doc.get(name) or {}
    return [d for d in t.values() if isinstance(d, dict)] if isinstance(t, dict) else []


def chain_marks(doc: dict[str, Any]) -> dict[str, str]:
    """Volume URN -> why an earlier job found its CBT chain broken (what the agent's planner reads)."""
    return {str(r["volume"]): str(r.get("reason") or "") for r in _table(doc, "chain_marks") if r.get("volume")}


async def job_records(doc: dict[str, Any] | None = None) -> list["JobRecord"]:
    """Every job record: asked of the running agent (it knows the live ones) or of the cluster when one
    is named ($FCTUI_CLUSTER, the config's cluster), else read from the local agent's file."""
    from ..agent import AgentError, running_agent
    from ..config import cluster_url
    from ..jobs.model import JobRecord
    agent = await running_agent(cluster_url())
    try:
        if agent is not None:
            try:
                return [JobRecord.from_dict(j) for j in (await agent.request("list"))["jobs"]]
            except AgentError:
                pass   # it went away meanwhile: its file says the same of finished jobs
            finally:
                await agent.close()
        if doc is None:
            doc = read_agent_db()
        return [JobRecord.from_dict(j) for j in _table(doc, "jobs")]
    except (KeyError, TypeError, ValueError) as e:
        raise Unreadable(f"the job records cannot be read: {e}") from None


def open_repository(path: str | None) -> "Repository | None":
    """The repository the agent writes to, or None when none exists yet (no backup ran). Raises
    :class:`Unreadable` when it exists and cannot be read."""
    from ..config import ConfigError, repository_spec
    from ..repo import Repository
    from ..repo.errors import NoRepositoryError, RepoError
    from ..repo.s3config import is_s3_url, preflight
    try:
        spec = repository_spec(path)
    except ConfigError as e:
        raise Unreadable(str(e)) from None
    try:
        if is_s3_url(spec):
            preflight(spec)
        return Repository.open(spec, create=False)
    except NoRepositoryError:
        return None
    except (RepoError, OSError) as e:
        raise Unreadable(f"the repository cannot be read: {e}") from None


def pause_estimator(jobs: Sequence["JobRecord"], sizes: dict[str, tuple[int, float]]) -> "PauseEstimator":
    """The console's pause model, learnt from the snapshots earlier jobs observed (per host), with each
    VM's size (disks, GB) from the inventory."""
    from ..jobs.pause import PauseEstimator, PauseObservation
    obs = []
    for job in jobs:
        for vm in job.vms:
            size = sizes.get(vm.urn)
            if vm.pause_s is None or not vm.host or size is None:
                continue
            obs.append(PauseObservation(vm.host, size[0], size[1], vm.pause_s, vm.urn, job.started or 0.0))
    return PauseEstimator(obs)


# --- printing ---------------------------------------------------------------------------------------

def fit_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, width: int | None = None,
              shrink: Sequence[int] = ()) -> list[str]:
    """Rows as aligned columns within ``width`` (default: the terminal's). When too wide, the columns
    in ``shrink`` give way, widest first, cut with an ellipsis (never narrower than 8 cells)."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    cols = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    gap = 2
    while sum(cols) + gap * (len(cols) - 1) > width:
        candidates = [i for i in shrink if cols[i] > 8]
        if not candidates:
            break
        i = max(candidates, key=lambda j: cols[j])
        cols[i] -= 1

    def cut(text: str, n: int) -> str:
        return text if len(text) <= n else text[: max(0, n - 1)] + "…"

    def line(cells: Sequence[str]) -> str:
        return (" " * gap).join(cut(c, n).ljust(n) for c, n in zip(cells, cols)).rstrip()

    return [line(headers)] + [line(r) for r in rows]


def when(ts: float | None, tz: tzinfo, now: float | None = None) -> str:
    """An epoch time for people, in ``tz``: ``2026-12-04 01:00 +0100``."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M %z").strip()


def age_text(seconds: float | None) -> str:
    """An age in the largest fitting unit: ``45 min``, ``5 h``, ``3 d``."""
    if seconds is None:
        return "never"
    if seconds < 3600:
        return f"{max(0, round(seconds / 60))} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"
