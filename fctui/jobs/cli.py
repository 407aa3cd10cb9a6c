"""CLI pieces: ``fctui backup``, ``fctui jobs [--json]``, ``fctui jobs cancel ID``, ``fctui jobs cleanup``,
``fctui agent``. The lead wires :func:`add_job_arguments` into fctui/cli.py; each parser sets
``func`` (and ``_run``, which fctui/cli.py prefers) to a ``run_*(ns) -> int`` function.

Exit codes: 0 done (or submitted), 1 the job did not succeed / the agent refused, 2 usage error,
3 VRM unreachable or login refused, 4 succeeded with warnings (every restore point is committed; a
snapshot or backup resource is still on the VRM, queued for the agent's snapshot hunter), 130 interrupted
while waiting (the job keeps running in the agent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from .agent import AgentClient, AgentError, add_agent_options, ensure_agent, run_agent
from .cleanup import describe_leftover
from .model import JobRecord
from .restore_cli import add_restore_arguments

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_VRM, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_WARNINGS = 4


def job_exit(job: JobRecord) -> int:
    if job.state != "succeeded":
        return EXIT_FAILED
    return EXIT_WARNINGS if job.warnings else EXIT_OK


def add_job_arguments(subparsers: Any) -> None:
    b = subparsers.add_parser("backup", help="back up VMs (runs in the job agent)")
    b.add_argument("vms", nargs="+", metavar="VM", help="VM name or URN")
    b.add_argument("--vrm", metavar="URL", help="VRM address, e.g. https://vrm:7443")
    b.add_argument("--user", metavar="USER", help="VRM user (password from FCTUI_PASSWORD or a prompt)")
    b.add_argument("--full", action="store_true", help="read every written block even when CBT allows less")
    b.add_argument("--wait", action="store_true", help="follow the job until it ends")
    b.add_argument("--json", action="store_true", help="print the job result as JSON")
    b.add_argument("--demo", action="store_true", help="back up from the demo simulator hosted by the agent")
    tls = b.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="do not verify the VRM's TLS certificate")
    tls.add_argument("--ca-file", metavar="FILE", help="CA bundle that signed the VRM's certificate")
    b.set_defaults(func=run_backup, _run=run_backup)

    j = subparsers.add_parser("jobs", help="list backup jobs; `jobs cancel ID`; `jobs cleanup`")
    j.add_argument("--json", action="store_true", help="print JSON")
    js = j.add_subparsers(dest="jobs_command", metavar="{cancel,cleanup}")
    c = js.add_parser("cancel", help="cancel a running job (its snapshot and resources are cleaned up)")
    c.add_argument("id", metavar="ID")
    c.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    c.set_defaults(func=run_jobs_cancel, _run=run_jobs_cancel)
    cl = js.add_parser("cleanup", help="clean leftovers of interrupted jobs on a VRM (needs its password)")
    cl.add_argument("--vrm", metavar="URL", required=True)
    cl.add_argument("--user", metavar="USER", required=True)
    cl.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    tls2 = cl.add_mutually_exclusive_group()
    tls2.add_argument("--insecure", action="store_true")
    tls2.add_argument("--ca-file", metavar="FILE")
    cl.set_defaults(func=run_jobs_cleanup, _run=run_jobs_cleanup)
    j.set_defaults(func=run_jobs, _run=run_jobs)

    add_restore_arguments(subparsers)  # fctui restore (issue 7): fctui/jobs/restore_cli.py

    a = subparsers.add_parser("agent", help="run the job agent (normally started on demand)")
    add_agent_options(a)
    a.set_defaults(func=run_agent, _run=run_agent)


def _err(msg: str) -> None:
    print(f"fctui: {msg}", file=sys.stderr)


def _verify(ns: argparse.Namespace) -> bool | str:
    if getattr(ns, "insecure", False):
        from ..vrm import INSECURE_WARNING
        print(f"WARNING: {INSECURE_WARNING}", file=sys.stderr)
        return False
    return getattr(ns, "ca_file", None) or True


async def follow_job(agent: Any, job_id: str, *, quiet: bool) -> JobRecord:
    """Wait for a job in the agent to end, printing its log lines on stderr unless ``quiet``."""
    def on_event(ev: dict[str, Any]) -> None:
        if not quiet and ev.get("event") == "log":
            stamp = time.strftime("%H:%M:%S", time.localtime(ev.get("time", time.time())))
            print(f"{stamp} {ev.get('message')}", file=sys.stderr)

    return JobRecord.from_dict(await agent.wait(job_id, on_event))


async def _check_login(vrm: str, user: str, password: str, verify: bool | str) -> None:
    from ..vrm import VrmClient
    async with VrmClient(vrm, user, password, verify=verify) as c:
        await c.sites()


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return str(n)


def format_job(job: JobRecord) -> str:
    lines = [f"job {job.id}: {job.outcome}" + (f" - {job.error}" if job.error and job.state != "succeeded" else "")]
    lines += [f"  warning: {w}" for w in job.warnings]
    for vm in job.vms:
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
                lines.append(f"    {d.name}: {d.mode} ({d.reason}); planned {_size(d.bytes_planned)}, "
                             f"read {_size(d.bytes_read)}, new {_size(d.bytes_written)}, "
                             f"reused {_size(d.bytes_reused)}, zero {_size(d.bytes_zero)}")
    return "\n".join(lines)


def run_backup(ns: argparse.Namespace) -> int:
    if not ns.demo and (not ns.vrm or not ns.user):
        _err("backup needs --vrm URL and --user USER (or --demo)")
        return EXIT_USAGE
    password = None
    verify: bool | str = True
    if not ns.demo:
        from ..vrm import VrmError, resolve_password
        try:
            password = resolve_password(ns.user)
        except VrmError as e:
            _err(str(e))
            return EXIT_USAGE
        verify = _verify(ns)
        try:
            asyncio.run(_check_login(ns.vrm, ns.user, password, verify))
        except VrmError as e:
            _err(f"cannot use VRM {ns.vrm}: {e}")
            return EXIT_VRM
    try:
        return asyncio.run(_backup(ns, password, verify))
    except KeyboardInterrupt:
        print("\nstopped waiting; the job keeps running in the agent (`fctui jobs`, `fctui jobs cancel ID`)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except AgentError as e:
        _err(str(e))
        return EXIT_FAILED


async def _backup(ns: argparse.Namespace, password: str | None, verify: bool | str) -> int:
    agent = await ensure_agent(demo=ns.demo)
    req: dict[str, Any] = {"targets": ns.vms, "full": ns.full, "demo": ns.demo}
    if not ns.demo:
        req.update(vrm=ns.vrm, user=ns.user, password=password, verify=verify)
    job_id = (await agent.request("submit", **req))["job"]
    if not ns.wait:
        if ns.json:
            job = JobRecord.from_dict((await agent.request("get", job=job_id))["job"])
            print(json.dumps(job.summary_json()))
        else:
            print(f"job {job_id} submitted; follow it with `fctui jobs` (it runs in the agent)")
        return EXIT_OK
    final = await follow_job(agent, job_id, quiet=ns.json)
    if ns.json:
        print(json.dumps(final.summary_json()))
    else:
        print(format_job(final))
    return job_exit(final)


def run_jobs(ns: argparse.Namespace) -> int:
    async def go() -> int:
        agent = await ensure_agent()
        jobs = [JobRecord.from_dict(j) for j in (await agent.request("list"))["jobs"]]
        cleanup = await agent.request("cleanup-status")
        if ns.json:
            print(json.dumps({"jobs": [j.summary_json() | {"created": j.created, "finished": j.finished,
                                                             "error": j.error, "targets": j.targets}
                                       for j in jobs],
                              "cleanup_pending": cleanup["pending"]}))
            return EXIT_OK
        if not jobs:
            print("no jobs")
        for j in jobs:
            t = j.totals()
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(j.created))
            state = "warnings" if j.outcome != j.state else j.state
            print(f"{j.id}  {when}  {state:<11} {len(j.vms)} VM(s)  read {_size(t['bytes_read'])} of "
                  f"{_size(t['bytes_planned'])}" + (f"  {j.error[:80]}" if j.error else "")
                  + (f"  {j.warnings[0][:80]}" if j.warnings and not j.error else ""))
        if cleanup["pending"]:
            now = time.time()
            print(f"\ncleanup pending: {len(cleanup['pending'])} leftover(s) on "
                  + ", ".join(f"{v} ({u})" for v, u in cleanup["vrms"])
                  + "; the agent removes them when the VRM accepts (the next backup of that VRM also does)")
            for p in cleanup["pending"]:
                print(f"  {describe_leftover(p, now)}")
        return EXIT_OK
    try:
        return asyncio.run(go())
    except AgentError as e:
        _err(str(e))
        return EXIT_FAILED


def run_jobs_cancel(ns: argparse.Namespace) -> int:
    async def go() -> int:
        agent = AgentClient()
        await agent.request("cancel", job=ns.id)
        print(f"job {ns.id}: cancel requested (its snapshot and backup resources are being cleaned up)")
        return EXIT_OK
    try:
        return asyncio.run(go())
    except AgentError as e:
        _err(str(e))
        return EXIT_FAILED


def run_jobs_cleanup(ns: argparse.Namespace) -> int:
    from ..vrm import VrmError, resolve_password
    try:
        password = resolve_password(ns.user)
    except VrmError as e:
        _err(str(e))
        return EXIT_USAGE

    async def go() -> int:
        agent = await ensure_agent()
        r = await agent.request("credentials", vrm=ns.vrm, user=ns.user, password=password, verify=_verify(ns))
        print(f"cleaned {r['cleaned']} leftover(s)" + (f"; still pending: {'; '.join(r['failed'])}" if r["failed"] else ""))
        return EXIT_OK if not r["failed"] else EXIT_FAILED
    try:
        return asyncio.run(go())
    except AgentError as e:
        _err(str(e))
        return EXIT_VRM if "cannot log in" in str(e) else EXIT_FAILED
