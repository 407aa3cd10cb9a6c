"""``fctui backup VM...``, ``fctui jobs [--json]``, ``fctui jobs cancel ID``, ``fctui jobs cleanup``.

Jobs run in the job agent (fctui.agent), started on demand, so they outlive this command; with a cluster
(``--cluster URL``, ``$FCTUI_CLUSTER`` or the config's ``cluster``) they run in its proxies, which have their
own VRM passwords: ``fctui backup`` then asks for none. Exit codes:
0 done (or submitted), 1 the job did not succeed / the agent refused, 2 usage error, 3 VRM unreachable or
login refused, 4 succeeded with warnings (every restore point is committed; a snapshot or backup resource
is still on the VRM, queued for the agent's snapshot hunter), 130 interrupted while waiting (the job keeps
running in the agent).

``fctui jobs --profile a,b`` (``--all-sites``, several ``--vrm``) lists the jobs of each named site under
its label. The list comes from the agent (or the cluster), never from the VRMs: a stopped VRM changes
nothing in it, and the exit codes are the ones above.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .common import (EXIT_FAILED, EXIT_OK, EXIT_VRM, EXIT_WARNINGS, Connection, UsageError, add_cluster_option,
                     add_connection_options, add_json_option, chosen_cluster, command, connection_from, err,
                     follow_job, given_connection_options, password_for, require_connection, size,
                     stopped_following, warn_insecure)

if TYPE_CHECKING:  # pragma: no cover
    from ..jobs.model import JobRecord


def register(sub: Any) -> None:
    b = sub.add_parser("backup", help="back up VMs (runs in the job agent)")
    b.add_argument("vms", nargs="+", metavar="VM", help="VM name or URN")
    add_connection_options(b)
    add_json_option(b, help="print the job result as JSON")
    b.add_argument("--full", action="store_true", help="read every written block even when CBT allows less")
    b.add_argument("--wait", action="store_true", help="follow the job until it ends")
    b.add_argument("--demo", action="store_true", help="back up from the demo simulator hosted by the agent")
    add_cluster_option(b)
    b.set_defaults(func=run_backup, connects=True, prints_json=True)

    j = sub.add_parser("jobs", help="list backup jobs; `jobs cancel ID`; `jobs cleanup`",
                       epilog="With --profile a,b, --all-sites or several --vrm: the jobs of each site under its "
                              "name (read from the agent, not from the VRMs: no password, and a stopped VRM "
                              "changes nothing). Exit codes: 0 listed, 1 the agent refused or cannot be had, "
                              "2 usage error.")
    add_json_option(j)
    add_cluster_option(j)
    add_connection_options(j)   # which sites' jobs (only --vrm/--profile/--all-sites matter: nothing connects)
    j.set_defaults(func=run_jobs, connects=True, prints_json=True)
    js = j.add_subparsers(dest="jobs_command", metavar="{cancel,cleanup}")
    c = js.add_parser("cancel", help="cancel a running job (its snapshot and resources are cleaned up)")
    c.add_argument("id", metavar="ID")
    add_json_option(c, help=argparse.SUPPRESS)
    add_cluster_option(c)
    c.set_defaults(func=run_jobs_cancel, connects=False)
    cl = js.add_parser("cleanup", help="clean leftovers of interrupted jobs on a VRM (needs its password)")
    add_connection_options(cl)
    cl.add_argument("--demo", action="store_true",
                    help="clean leftovers on the demo simulator hosted by the agent (it knows that password)")
    add_json_option(cl, help=argparse.SUPPRESS)
    add_cluster_option(cl)
    cl.set_defaults(func=run_jobs_cleanup, connects=True)


def job_exit(job: "JobRecord") -> int:
    if job.state != "succeeded":
        return EXIT_FAILED
    return EXIT_WARNINGS if job.warnings else EXIT_OK


async def _check_login(conn: Connection, password: str) -> None:
    from ..vrm import VrmClient
    async with VrmClient(conn.url, conn.user, password, verify=conn.verify, **conn.client_options()) as c:
        await c.sites()


def format_job(job: "JobRecord") -> str:
    lines = [f"job {job.id}: {job.outcome}" + (f" - {job.error}" if job.error and job.state != "succeeded" else "")]
    lines += [f"  warning: {w}" for w in job.warnings]
    for vm in job.vms:
        if job.is_recovery:   # a recovery run's VM: where it stands and its measured times, in words
            lines.append(f"  {vm.name or vm.urn}: {vm.reason or vm.state}")
            continue
        head = f"  {vm.name or vm.urn} [{vm.kind or '-'}] {vm.state}"
        if vm.reason:
            head += f": {vm.reason}"
        if vm.pause_s is not None:
            head += f" (pause {vm.pause_s:.2f} s)"
        if vm.point_id:
            head += f" -> restore point {vm.point_id}"
        lines.append(head)
        for d in vm.disks:
            if d.mode == "excluded":
                lines.append(f"    {d.name}: excluded - {d.reason}")
            else:
                lines.append(f"    {d.name}: {d.mode} ({d.reason}); planned {size(d.bytes_planned)}, "
                             f"read {size(d.bytes_read)}, new {size(d.bytes_written)}, "
                             f"reused {size(d.bytes_reused)}, zero {size(d.bytes_zero)}")
    return "\n".join(lines)


@command
def run_backup(ns: argparse.Namespace) -> int:
    from ..agent import AgentError
    from ..vrm import VrmError
    conn: Connection | None = None
    password = None
    cluster = chosen_cluster(ns)
    if cluster:
        # the proxies log in with their own passwords; a VRM named here (a profile, --vrm) goes with the job
        if ns.demo:
            raise UsageError("the demo simulator lives in the local agent: drop --demo, or --cluster/$FCTUI_CLUSTER")
        conn = connection_from(ns, command="backup")
        if conn is not None:
            warn_insecure(conn)
    elif not ns.demo:
        conn = require_connection(ns, "backup")    # or --demo
        password = password_for(conn)
        warn_insecure(conn)
        try:
            asyncio.run(_check_login(conn, password))
        except VrmError as e:
            err(f"cannot use VRM {conn.url}: {e}")
            return EXIT_VRM
    try:
        return asyncio.run(_backup(ns, conn, password, cluster))
    except KeyboardInterrupt:
        return stopped_following(cluster)
    except AgentError as e:
        err(str(e))
        return EXIT_FAILED


async def _backup(ns: argparse.Namespace, conn: Connection | None, password: str | None,
                  cluster: str | None = None) -> int:
    from ..agent import job_agent
    from ..jobs.model import JobRecord
    agent = await job_agent(cluster, demo=ns.demo)
    try:
        req: dict[str, Any] = {"targets": ns.vms, "full": ns.full, "demo": ns.demo}
        if conn is not None:
            req.update(vrm=conn.url, user=conn.user, verify=conn.verify, **conn.client_options(),
                       **conn.job_options())
            if password is not None:
                req["password"] = password
        job_id = (await agent.request("submit", **req))["job"]
        if not ns.wait:
            if ns.json:
                job = JobRecord.from_dict((await agent.request("get", job=job_id))["job"])
                print(json.dumps(result_json(job)))
            else:
                where = f"the cluster at {cluster}" if cluster else "the agent"
                print(f"job {job_id} submitted; follow it with `fctui jobs` (it runs in {where})")
            return EXIT_OK
        final = await follow_job(agent, job_id, quiet=ns.json)
    finally:
        await agent.close()
    if ns.json:
        print(json.dumps(result_json(final)))
    else:
        print(format_job(final))
    return job_exit(final)


def result_json(job: "JobRecord") -> dict[str, Any]:
    """The ``fctui backup --json`` document: the keys of :meth:`JobRecord.summary_json`, plus why the job
    failed (``error``), each VM's name, state and why it failed or was refused (``reason``), and each
    disk's name and error."""
    out = job.summary_json() | {"error": job.error}
    for vm, progress in zip(out["vms"], job.vms):
        vm.update(name=progress.name, state=progress.state, reason=progress.reason)
        for d, disk in zip(vm["disks"], [d for d in progress.disks if d.mode != "excluded"]):
            d.update(name=disk.name, error=disk.error)
    return out


def listing_json(job: "JobRecord") -> dict[str, Any]:
    """One job of ``fctui jobs --json``: the ``backup --json`` document (:func:`result_json`) plus what a
    listing needs to tell jobs apart: when, and its type (backup/restore)."""
    return result_json(job) | {"created": job.created, "finished": job.finished, "targets": job.targets,
                               "type": job.type}


def _job_line(j: "JobRecord") -> str:
    t = j.totals()
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(j.created))
    state = "warnings" if j.outcome != j.state else j.state
    names = ", ".join(v.name or v.urn for v in j.vms) or ", ".join(j.targets)
    if j.is_recovery:   # VMs up, not bytes
        figures = f"plan {', '.join(j.targets)}: {sum(v.state == 'done' for v in j.vms)} up"
    else:
        figures = f"read {size(t['bytes_read'])} of {size(t['bytes_planned'])}"
    return (f"{j.id}  {when}  {j.type:<7} {state:<11} {len(j.vms)} VM(s) ({names})  {figures}"
            + (f"  {j.error[:80]}" if j.error else "")
            + (f"  {j.warnings[0][:80]}" if j.warnings and not j.error else ""))


def _named_sites(ns: argparse.Namespace) -> list[Connection] | None:
    """The sites whose jobs to list when the line names some (--vrm, --profile, --all-sites); None: every job,
    as without sites (the default profile does not narrow ``fctui jobs``)."""
    from .common import connections_from
    if not any(getattr(ns, k, None) for k in ("vrm", "profile", "all_sites")):
        return None
    return connections_from(ns)


def jobs_by_site(jobs: list["JobRecord"], sites: list[Connection]) -> list[tuple[Connection, list["JobRecord"]]]:
    """Each named site with the jobs on its VRM (the address compared as the client reaches it), in order."""
    from .check import _vrm_key
    return [(c, [j for j in jobs if _vrm_key(j.vrm or "") == _vrm_key(c.url)]) for c in sites]


@command
def run_jobs(ns: argparse.Namespace) -> int:
    from ..agent import job_agent
    from ..jobs.cleanup import describe_leftover
    from ..jobs.model import JobRecord
    from .common import site_label
    cluster = chosen_cluster(ns)
    sites = _named_sites(ns)

    async def go() -> int:
        agent = await job_agent(cluster)
        try:
            jobs = [JobRecord.from_dict(j) for j in (await agent.request("list"))["jobs"]]
            cleanup = await agent.request("cleanup-status")
            # a cluster: which proxies are alive (their heartbeats) tells whether queued jobs will move
            proxies = (await agent.request("hello"))["agents"] if cluster else None
        finally:
            await agent.close()
        per_site = None if sites is None else jobs_by_site(jobs, sites)
        if ns.json:
            doc: dict[str, Any] = {"jobs": [listing_json(j) for j in jobs], "cleanup_pending": cleanup["pending"]}
            if per_site is not None:   # the named sites' jobs, each under its label
                doc = {"sites": [{"site": site_label(c), "vrm": c.url, "jobs": [listing_json(j) for j in mine]}
                                 for c, mine in per_site], "cleanup_pending": cleanup["pending"]}
            if cluster:
                doc["cluster"] = {"url": cluster, "proxies": proxies}
            print(json.dumps(doc))
            return EXIT_OK
        if cluster:
            print(f"cluster {cluster}: " + (f"{len(proxies)} proxies alive ({', '.join(proxies)})" if proxies
                                             else "no proxy alive (start `fctui agent --cluster URL` on one)"))
        if per_site is not None:
            for i, (c, mine) in enumerate(per_site):
                print(("\n" if i else "") + f"site {site_label(c)} ({c.url}): "
                      + (f"{len(mine)} job(s)" if mine else "no jobs"))
                for j in mine:
                    print(f"  {_job_line(j)}")
        elif not jobs:
            print("no jobs")
        else:
            for j in jobs:
                print(_job_line(j))
        if cleanup["pending"]:
            now = time.time()
            who = "the cluster's proxies remove" if cluster else "the agent removes"
            print(f"\ncleanup pending: {len(cleanup['pending'])} leftover(s) on "
                  + ", ".join(f"{v} ({u})" for v, u in cleanup["vrms"])
                  + f"; {who} them when the VRM accepts (the next backup of that VRM also does)")
            for p in cleanup["pending"]:
                print(f"  {describe_leftover(p, now)}")
        return EXIT_OK
    return _talk_to_agent(go)


@command
def run_jobs_cancel(ns: argparse.Namespace) -> int:
    from ..agent import job_client
    cluster = chosen_cluster(ns)

    async def go() -> int:
        agent = job_client(cluster)   # the local agent is not started to cancel: no agent, no job running
        try:
            await agent.request("cancel", job=ns.id)
        finally:
            await agent.close()
        print(f"job {ns.id}: cancel requested (its snapshot and backup resources are being cleaned up)")
        return EXIT_OK
    return _talk_to_agent(go)


def _talk_to_agent(go: Callable[[], Awaitable[int]]) -> int:
    """Run a conversation with the agent; one it refuses (or cannot have) is one line and exit 1."""
    from ..agent import AgentError
    try:
        return asyncio.run(go())
    except AgentError as e:
        err(str(e))
        return EXIT_FAILED


@command
def run_jobs_cleanup(ns: argparse.Namespace) -> int:
    from ..agent import AgentError, ensure_agent
    if chosen_cluster(ns):
        raise UsageError("in a cluster the proxies clean up leftovers themselves, with their own VRM passwords "
                         "(`fctui jobs` lists what is pending); jobs cleanup is for the local agent")
    req: dict[str, Any] = {"demo": True}
    if ns.demo and given_connection_options(ns):  # the demo VRM is the agent's: nothing to connect to
        raise UsageError(f"jobs cleanup --demo cleans the agent's demo VRM; drop {', '.join(given_connection_options(ns))}")
    if not ns.demo:
        conn = require_connection(ns, "jobs cleanup")    # or --demo
        password = password_for(conn)
        warn_insecure(conn)
        req = {"vrm": conn.url, "user": conn.user, "password": password, "verify": conn.verify,
               **conn.client_options()}

    async def go() -> int:
        agent = await ensure_agent()
        r = await agent.request("credentials", **req)
        print(f"cleaned {r['cleaned']} leftover(s)" + (f"; still pending: {'; '.join(r['failed'])}" if r["failed"] else ""))
        return EXIT_OK if not r["failed"] else EXIT_FAILED
    try:
        return asyncio.run(go())
    except AgentError as e:
        err(str(e))
        return EXIT_VRM if "cannot log in" in str(e) else EXIT_FAILED
