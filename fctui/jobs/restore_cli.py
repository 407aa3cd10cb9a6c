"""``fctui restore POINT --to new|original|disk ...``: plan a restore and, with ``--confirm``, run it in the
job agent. Without ``--confirm`` the plan is printed and nothing changes on the VRM.

Register with :func:`add_restore_arguments` (one line in fctui/jobs/cli.py or fctui/cli.py).
``--json`` prints ``{"job", "state", "vm", "volumes": [{"source", "target", "verified"}]}`` for a submitted
restore, and ``{"job": null, "state": "planned"|"blocked", "plan": {...}, ...}`` without ``--confirm``.

Exit codes as for ``fctui backup``: 0 done/planned, 1 failed or blocked, 2 usage, 3 VRM unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from .model import JobError, JobRecord
from .restore import RestoreError, RestorePlan, RestoreRequest, plan_restore, restore_result

if TYPE_CHECKING:  # pragma: no cover
    from ..repo import Repository, RestorePoint
    from ..vrm.client import VrmClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_VRM, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def add_restore_arguments(subparsers: Any) -> None:
    r = subparsers.add_parser("restore", help="restore a restore point (plan only, unless --confirm)")
    r.add_argument("point", metavar="POINT", help="restore point id (see `fctui points`)")
    r.add_argument("--to", dest="target", required=True, choices=("new", "original", "disk"),
                   help="a new VM, over the original VM, or one disk to a new volume")
    r.add_argument("--name", metavar="NAME", help="name of the new VM (or of the new volume with --to disk)")
    r.add_argument("--datastore", metavar="URN", nargs="+", action="extend", default=[],
                   help="target datastore: one URN for every disk, several in disk order, or SOURCE_VOLUME=URN")
    r.add_argument("--vm", metavar="VM", help="--to disk: attach the new volume to this VM (name or URN)")
    r.add_argument("--disk", metavar="VOLUME", help="--to disk: the disk of the point (volume URN or disk name)")
    r.add_argument("--power-on", action="store_true", help="power the VM on after the restore")
    r.add_argument("--stop-vm", action="store_true", help="--to original: stop the VM if it is running")
    r.add_argument("--keep-on-failure", action="store_true", help="keep what a failed restore created")
    r.add_argument("--confirm", action="store_true", help="really restore (without it: print the plan only)")
    r.add_argument("--wait", action="store_true", help="follow the restore until it ends")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.add_argument("--vrm", metavar="URL", help="VRM address, e.g. https://vrm:7443")
    r.add_argument("--user", metavar="USER", help="VRM user (password from FCTUI_PASSWORD or a prompt)")
    r.add_argument("--demo", action="store_true", help="restore into the demo simulator hosted by the agent")
    r.add_argument("--repo", metavar="DIR", help=argparse.SUPPRESS)  # tests; the agent uses its own repository
    tls = r.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="do not verify the VRM's TLS certificate")
    tls.add_argument("--ca-file", metavar="FILE", help="CA bundle that signed the VRM's certificate")
    r.set_defaults(func=run_restore_cli)


def _err(msg: str) -> None:
    print(f"fctui: {msg}", file=sys.stderr)


def _gb(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 30):.2f} GiB"


def _resolve_disk(point: "RestorePoint", spec: str) -> str:
    for d in point.disks:
        if spec in (d.volume_urn, d.disk_name, d.volume_urn.rsplit(":", 1)[-1]):
            return d.volume_urn
    names = ", ".join(f"{d.disk_name} ({d.volume_urn})" for d in point.disks)
    raise RestoreError(f"restore point {point.id} has no disk {spec!r}; its disks: {names}")


def _datastore_map(point: "RestorePoint", specs: list[str], disk: str | None) -> dict[str, str]:
    from .restore import _point_disks
    order = [d.volume_urn for d in _point_disks(point)]
    if disk:
        order = [disk]
    out: dict[str, str] = {}
    plain = []
    for s in specs:
        if "=" in s:
            src, ds = s.split("=", 1)
            out[_resolve_disk(point, src)] = ds
        else:
            plain.append(s)
    if len(plain) == 1:
        for v in order:
            out.setdefault(v, plain[0])
    elif plain:
        if len(plain) != len(order):
            raise RestoreError(f"{len(plain)} datastores given for {len(order)} disk(s): give one for all, one "
                               "per disk in disk order, or SOURCE_VOLUME=URN")
        for v, ds in zip(order, plain):
            out.setdefault(v, ds)
    return out


async def _resolve_vm(client: "VrmClient", site: str, spec: str) -> str:
    if spec.startswith("urn:"):
        return spec
    matches = [v for v in await client.vms(site, detail=0, name=spec) if v.name == spec]
    if len(matches) != 1:
        raise RestoreError(f"VM {spec!r}: {'not found' if not matches else 'several VMs have that name; give its URN'}")
    return matches[0].urn


def format_plan(plan: RestorePlan) -> str:
    p = plan.point
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.created))
    lines = [f"restore point {p.id}: {p.vm_name}, {when}, {p.kind}, {_gb(p.size_bytes)}",
             f"target: {plan.request.target}" + (f" -> {plan.vm_name}" if plan.vm_name else "")]
    for d in plan.disks:
        lines.append(f"  {d.disk_name}: {_gb(d.size_bytes)} -> {d.target_datastore_name or d.target_datastore_urn}"
                     f" [{d.mode}: {d.reason}]")
    for title, items in (("will create", plan.creates), ("will OVERWRITE", plan.overwrites),
                         ("will power off", plan.powers_off)):
        for it in items:
            lines.append(f"{title}: {it}")
    for f in plan.findings:
        lines.append(f"{f.severity.upper()} {f.rule}: {f.message}" + (f" -> {f.remediation}" if f.remediation else ""))
    lines.append("BLOCKED: nothing can be restored until the blockers are resolved" if plan.blocked
                 else "nothing changed: add --confirm to restore")
    return "\n".join(lines)


def _verify_opt(ns: argparse.Namespace) -> bool | str:
    if getattr(ns, "insecure", False):
        from ..vrm import INSECURE_WARNING
        print(f"WARNING: {INSECURE_WARNING}", file=sys.stderr)
        return False
    return getattr(ns, "ca_file", None) or True


async def build_request_and_plan(client: "VrmClient", repo: "Repository",
                                 ns: argparse.Namespace) -> tuple[RestoreRequest, RestorePlan]:
    from ..repo import RepoError
    from ..vrm.urn import site_uri
    try:
        point = repo.point(ns.point)
    except RepoError as e:
        raise RestoreError(str(e)) from None
    disk = _resolve_disk(point, ns.disk) if ns.disk else None
    if ns.target == "disk" and disk is None:
        raise RestoreError("--to disk needs --disk VOLUME (a volume URN or disk name of the point)")
    if ns.target != "disk" and (ns.disk or ns.vm):
        raise RestoreError("--disk and --vm go with --to disk")
    attach = await _resolve_vm(client, site_uri(point.vm_urn), ns.vm) if ns.vm else None
    req = RestoreRequest(point_id=point.id, target=ns.target, name=ns.name,
                         datastores=_datastore_map(point, ns.datastore, disk), power_on=ns.power_on,
                         stop_vm=ns.stop_vm, disk_volume=disk, attach_to_vm=attach,
                         keep_on_failure=ns.keep_on_failure)
    return req, await plan_restore(client, repo, req)


def run_restore_cli(ns: argparse.Namespace) -> int:
    from ..vrm import VrmError
    if not ns.demo and (not ns.vrm or not ns.user):
        _err("restore needs --vrm URL and --user USER (or --demo)")
        return EXIT_USAGE
    try:
        return asyncio.run(_restore(ns))
    except KeyboardInterrupt:
        print("\nstopped waiting; the restore keeps running in the agent (`fctui jobs`)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RestoreError, JobError) as e:
        _err(str(e))
        return EXIT_FAILED
    except VrmError as e:
        _err(f"cannot use VRM {ns.vrm or '(demo)'}: {e}")
        return EXIT_VRM


async def _restore(ns: argparse.Namespace) -> int:
    from ..repo import RepoError, Repository
    from ..vrm import VrmClient, VrmError, resolve_password
    agent = None
    if ns.demo:
        from .agent import ensure_agent
        agent = await ensure_agent(demo=True)
        d = await agent.request("demo")
        vrm, user, password, verify = d["url"], d["user"], d["password"], True
    else:
        vrm, user, verify = ns.vrm, ns.user, _verify_opt(ns)
        try:
            password = resolve_password(ns.user)
        except VrmError as e:
            _err(str(e))
            return EXIT_USAGE
    try:
        repo = Repository.open(ns.repo, create=False)
    except RepoError as e:
        raise RestoreError(str(e)) from None
    async with VrmClient(vrm, user, password, verify=verify) as client:
        req, plan = await build_request_and_plan(client, repo, ns)
    if not ns.confirm or plan.blocked:
        if ns.json:
            print(json.dumps({"job": None, "state": "blocked" if plan.blocked else "planned",
                              "vm": plan.vm_urn or None,
                              "volumes": [{"source": d.source_volume, "target": d.target_volume_urn or None,
                                           "verified": False} for d in plan.disks],
                              "plan": plan.to_json()}))
        else:
            print(format_plan(plan))
        return EXIT_FAILED if plan.blocked else EXIT_OK
    if agent is None:
        from .agent import ensure_agent
        agent = await ensure_agent()
    sub: dict[str, Any] = {"type": "restore", "restore": req.to_json(), "targets": [req.point_id],
                           "demo": bool(ns.demo)}
    if not ns.demo:
        sub.update(vrm=vrm, user=user, password=password, verify=verify)
    job_id = (await agent.request("submit", **sub))["job"]
    if not ns.wait:
        if ns.json:
            job = JobRecord.from_dict((await agent.request("get", job=job_id))["job"])
            print(json.dumps(restore_result(job)))
        else:
            print(f"restore job {job_id} submitted; follow it with `fctui jobs` (it runs in the agent)")
        return EXIT_OK
    from .cli import follow_job  # cli imports this module at load time
    final = await follow_job(agent, job_id, quiet=ns.json)
    res = restore_result(final)
    if ns.json:
        print(json.dumps(res))
    else:
        print(f"restore {final.id}: {final.state}" + (f" - {final.error}" if final.error else ""))
        for v in res["volumes"]:
            ok = {True: "verified", None: "not verifiable", False: "NOT verified"}[v["verified"]]
            print(f"  {v['source']} -> {v['target'] or '-'}: {ok}")
    return EXIT_OK if final.state == "succeeded" else EXIT_FAILED
