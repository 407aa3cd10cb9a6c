"""``fctui points [VM | verify ID]`` and ``fctui restore POINT --to new|original|disk ...``.

``restore`` plans a restore and, with ``--confirm``, runs it in the job agent. Without ``--confirm`` the plan
is printed and nothing changes on the VRM. ``--json`` prints ``{"job", "state", "vm", "volumes": [{"source",
"target", "verified"}]}`` for a submitted restore, and ``{"job": null, "state": "planned"|"blocked",
"plan": {...}, ...}`` without ``--confirm``.

Exit codes as for ``fctui backup``: 0 done/planned, 1 failed or blocked, 2 usage, 3 VRM unreachable.
``points`` exits as the ``repo`` commands do: 0 fine, 1 a damaged catalog entry, 2 error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from .common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_VRM, Connection, add_connection_options,
                     add_json_option, command, err, follow_job, password_for, require_connection, size, warn_insecure)
from .repo import (
    EXIT_DAMAGED, add_repo_option, fail, iso_time, match_vm, open_repo, print_bad_entries, repo_spec,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..jobs.restore import RestorePlan, RestoreRequest
    from ..jobs.sitemap import SiteMappingStore
    from ..repo import Repository, RestorePoint
    from ..vrm.client import VrmClient


def register(sub: Any) -> None:
    pts = sub.add_parser("points", help="list restore points, or `points verify ID`")
    pts.add_argument("target", nargs="*", metavar="VM | verify ID",
                     help="a VM name or URN to filter by, or `verify ID` to check one restore point")
    add_repo_option(pts)
    pts.set_defaults(func=run_points, connects=False, prints_json=True)

    r = sub.add_parser("restore", help="restore a restore point (plan only, unless --confirm)")
    r.add_argument("point", metavar="POINT", help="restore point id (see `fctui points`)")
    r.add_argument("--to", dest="target", required=True, choices=("new", "original", "disk"),
                   help="a new VM, over the original VM, or one disk to a new volume")
    r.add_argument("--name", metavar="NAME", help="name of the new VM (or of the new volume with --to disk)")
    r.add_argument("--datastore", metavar="URN", nargs="+", action="extend", default=[],
                   help="target datastore: one URN for every disk, several in disk order, or SOURCE_VOLUME=URN")
    r.add_argument("--map-datastore", metavar="SRC=DST", action="append", default=[],
                   help="into another site (--profile/--vrm of its VRM): the disks on source datastore SRC go "
                        "to datastore DST there (names or URNs); repeat per datastore")
    r.add_argument("--map-network", metavar="SRC=DST", action="append", default=[],
                   help="the NICs on source port group SRC are plugged into port group DST (name or URN), or "
                        "left out with DST none; repeat per port group")
    r.add_argument("--location", metavar="NAME|URN",
                   help="the cluster or host of the new VM (default: a host that reaches every datastore)")
    r.add_argument("--vm", metavar="VM", help="--to disk: attach the new volume to this VM (name or URN)")
    r.add_argument("--disk", metavar="VOLUME", help="--to disk: the disk of the point (volume URN or disk name)")
    r.add_argument("--power-on", action="store_true", help="power the VM on after the restore")
    r.add_argument("--stop-vm", action="store_true", help="--to original: stop the VM if it is running")
    r.add_argument("--keep-on-failure", action="store_true", help="keep what a failed restore created")
    r.add_argument("--confirm", action="store_true", help="really restore (without it: print the plan only)")
    r.add_argument("--wait", action="store_true", help="follow the restore until it ends")
    add_connection_options(r)
    add_json_option(r)
    r.add_argument("--demo", action="store_true", help="restore into the demo simulator hosted by the agent")
    r.add_argument("--repo", metavar="DIR", help=argparse.SUPPRESS)  # tests; the agent uses its own repository
    r.set_defaults(func=run_restore, connects=True, prints_json=True)


def _resolve_disk(point: "RestorePoint", spec: str) -> str:
    from ..jobs.restore import RestoreError
    for d in point.disks:
        if spec in (d.volume_urn, d.disk_name, d.volume_urn.rsplit(":", 1)[-1]):
            return d.volume_urn
    names = ", ".join(f"{d.disk_name} ({d.volume_urn})" for d in point.disks)
    raise RestoreError(f"restore point {point.id} has no disk {spec!r}; its disks: {names}")


def _datastore_map(point: "RestorePoint", specs: list[str], disk: str | None) -> dict[str, str]:
    from ..jobs.restore import RestoreError, _point_disks
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
    from ..jobs.restore import RestoreError
    if spec.startswith("urn:"):
        return spec
    matches = [v for v in await client.vms(site, detail=0, name=spec) if v.name == spec]
    if len(matches) != 1:
        raise RestoreError(f"VM {spec!r}: {'not found' if not matches else 'several VMs have that name; give its URN'}")
    return matches[0].urn


def mapping_pairs(specs: list[str], option: str) -> list[tuple[str, str]]:
    from ..jobs.restore import RestoreError
    out = []
    for s in specs:
        src, sep, dst = s.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise RestoreError(f"{option} {s!r}: give SRC=DST")
        out.append((src.strip(), dst.strip()))
    return out


def pick_named(spec: str, known: dict[str, str], what: str) -> str:
    """``spec`` (a URN or a name) as one of ``known`` (URN -> name); a name must be unique."""
    from ..jobs.restore import RestoreError
    if spec in known:
        return spec
    urns = [u for u, n in known.items() if n == spec]
    if len(urns) == 1:
        return urns[0]
    names = ", ".join(sorted({n or u for u, n in known.items()})) or "none"
    raise RestoreError(f"{what} {spec!r}: " + ("several have that name; give its URN" if urns
                                               else f"not found (known: {names})"))


async def _mapped_request(client: "VrmClient", point: "RestorePoint", site: str, ns: argparse.Namespace,
                          datastores: dict[str, str]) -> tuple[dict[str, str], dict[str, str], str]:
    """--map-datastore, --map-network and --location resolved against the point (sources) and the site
    restored into (targets): (datastores per disk volume, port groups, location URN)."""
    from ..jobs.sitemap import point_datastores, point_port_groups
    ds_specs = mapping_pairs(getattr(ns, "map_datastore", None) or [], "--map-datastore")
    pg_specs = mapping_pairs(getattr(ns, "map_network", None) or [], "--map-network")
    location = getattr(ns, "location", None) or ""
    datastores = dict(datastores)
    port_groups: dict[str, str] = {}
    if ds_specs:
        targets = {d.urn: d.name for d in await client.datastores(site)}
        sources = point_datastores(point)
        for src, dst in ds_specs:
            s_urn, d_urn = pick_named(src, sources, "source datastore"), pick_named(dst, targets, "datastore")
            for d in point.disks:
                if d.datastore_urn == s_urn:
                    datastores.setdefault(d.volume_urn, d_urn)   # --datastore for one disk wins
    if pg_specs:
        targets = {g.urn: g.name for g in await client.port_groups(site)}
        sources = point_port_groups(point)
        for src, dst in pg_specs:
            port_groups[pick_named(src, sources, "source port group")] = \
                "" if dst.lower() == "none" else pick_named(dst, targets, "port group")
    if location and not location.startswith("urn:"):
        places = {c.urn: c.name for c in await client.clusters(site)}
        places |= {h.urn: h.name for h in await client.hosts(site)}
        location = pick_named(location, places, "cluster or host")
    return datastores, port_groups, location


def format_plan(plan: "RestorePlan") -> str:
    p = plan.point
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.created))
    lines = [f"restore point {p.id}: {p.vm_name}, {when}, {p.kind}, {size(p.size_bytes)}",
             f"target: {plan.request.target}" + (f" -> {plan.vm_name}" if plan.vm_name else "")]
    if plan.cross_site:
        lines.append(f"into site {plan.target_site} (the point is of site {p.vm_urn.split(':')[2]})"
                     + (f", on {plan.location}" if plan.location else ""))
        for item in plan.unmapped:
            lines.append(f"  UNMAPPED {item.describe()}")
    for d in plan.disks:
        lines.append(f"  {d.disk_name}: {size(d.size_bytes)} -> {d.target_datastore_name or d.target_datastore_urn}"
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


def format_restore_result(res: dict[str, Any], point: str) -> str:
    """The text summary of a restore job (:func:`fctui.jobs.restore.restore_result`): the VM and each disk
    by name, with their URNs, and why it failed."""
    lines = [f"restore {res['job']} of point {point}: {res['state']}" + (f" - {res['error']}" if res.get("error") else ""),
             f"  VM {res.get('vm_name') or '?'}" + (f" ({res['vm']})" if res.get("vm") else "")]
    for v in res["volumes"]:
        ok = {True: "verified", None: "not verifiable", False: "NOT verified"}[v["verified"]]
        lines.append(f"    {v.get('name') or '?'}: {v['source']} -> {v['target'] or '-'}: {ok}"
                     + (f" - {v['error']}" if v.get("error") else ""))
    return "\n".join(lines)


async def build_request_and_plan(client: "VrmClient", repo: "Repository",
                                 ns: argparse.Namespace) -> tuple["RestoreRequest", "RestorePlan"]:
    from ..jobs.restore import RestoreError, RestoreRequest, plan_restore, restore_site
    from ..jobs.sitemap import apply_mapping
    from ..repo import RepoError
    from ..vrm.urn import site_id, site_uri
    try:
        point = repo.point(ns.point)
    except RepoError as e:
        raise RestoreError(str(e)) from None
    disk = _resolve_disk(point, ns.disk) if ns.disk else None
    if ns.target == "disk" and disk is None:
        raise RestoreError("--to disk needs --disk VOLUME (a volume URN or disk name of the point)")
    if ns.target != "disk" and (ns.disk or ns.vm):
        raise RestoreError("--disk and --vm go with --to disk")
    own = site_uri(point.vm_urn)
    site = own if ns.target == "original" else await restore_site(client, point)
    attach = await _resolve_vm(client, site, ns.vm) if ns.vm else None
    datastores, port_groups, location = await _mapped_request(
        client, point, site, ns, _datastore_map(point, ns.datastore, disk))
    req = RestoreRequest(point_id=point.id, target=ns.target, name=ns.name, datastores=datastores,
                         power_on=ns.power_on, stop_vm=ns.stop_vm, disk_volume=disk, attach_to_vm=attach,
                         keep_on_failure=ns.keep_on_failure, location=location, port_groups=port_groups)
    if site != own:  # into another site: what is not given comes from the site pair's remembered mapping
        req = apply_mapping(point, _mapping_store(ns).get(site_id(point.vm_urn), site.rstrip("/").rsplit("/", 1)[-1]), req)
    return req, await plan_restore(client, repo, req)


def _mapping_store(ns: argparse.Namespace) -> "SiteMappingStore":
    from ..jobs.sitemap import SiteMappingStore
    return SiteMappingStore(getattr(ns, "site_mappings", None))


@command
def run_restore(ns: argparse.Namespace) -> int:
    from ..jobs.model import JobError
    from ..jobs.restore import RestoreError
    from ..jobs.sitemap import SiteMapError
    from ..vrm import VrmError
    conn = None if ns.demo else require_connection(ns, "restore")   # or --demo
    try:
        return asyncio.run(_restore(ns, conn))
    except KeyboardInterrupt:
        print("\nstopped waiting; the restore keeps running in the agent (`fctui jobs`)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RestoreError, JobError, SiteMapError) as e:
        err(str(e))
        return EXIT_FAILED
    except VrmError as e:
        err(f"cannot use VRM {conn.url if conn else '(demo)'}: {e}")
        return EXIT_VRM


async def _restore(ns: argparse.Namespace, conn: Connection | None) -> int:
    from ..agent import ensure_agent
    from ..jobs.model import JobRecord
    from ..jobs.restore import RestoreError, restore_result
    from ..repo import RepoError, Repository
    from ..vrm import VrmClient
    agent = None
    if conn is None:   # --demo: the agent hosts the simulated VRM
        agent = await ensure_agent(demo=True)
        d = await agent.request("demo")
        vrm, user, password, verify = d["url"], d["user"], d["password"], True
        options: dict[str, Any] = {}
    else:
        vrm, user, verify = conn.url, conn.user, conn.verify
        options = conn.client_options()
        password = password_for(conn)
        warn_insecure(conn)
    try:
        repo = Repository.open(repo_spec(ns), create=False)
    except RepoError as e:
        raise RestoreError(str(e)) from None
    async with VrmClient(vrm, user, password, verify=verify, **options) as client:
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
        agent = await ensure_agent()
    sub: dict[str, Any] = {"type": "restore", "restore": req.to_json(), "targets": [req.point_id],
                           "demo": conn is None}
    if conn is not None:
        sub.update(vrm=vrm, user=user, password=password, verify=verify, **options)
    job_id = (await agent.request("submit", **sub))["job"]
    if plan.cross_site:  # the mapping used is the site pair's default from now on
        from ..jobs.sitemap import remember
        remember(plan.point, req, plan.target_site, _mapping_store(ns))
    if not ns.wait:
        if ns.json:
            job = JobRecord.from_dict((await agent.request("get", job=job_id))["job"])
            print(json.dumps(restore_result(job)))
        else:
            print(f"restore job {job_id} submitted; follow it with `fctui jobs` (it runs in the agent)")
        return EXIT_OK
    final = await follow_job(agent, job_id, quiet=ns.json)
    res = restore_result(final)
    if ns.json:
        print(json.dumps(res))
    else:
        print(format_restore_result(res, point=req.point_id))
    return EXIT_OK if final.state == "succeeded" else EXIT_FAILED


def run_points(args: argparse.Namespace, out: TextIO | None = None, errout: TextIO | None = None) -> int:
    out, errout = out or sys.stdout, errout or sys.stderr
    from ..repo import NoRepositoryError, RepoError
    target = list(getattr(args, "target", []) or [])
    if target and target[0] == "verify":
        if len(target) != 2:
            return fail(args, RepoError("usage: fctui points verify ID"), out, errout)
        args.point_id = target[1]
        return run_points_verify(args, out, errout)
    if len(target) > 1:
        return fail(args, RepoError("give at most one VM"), out, errout)
    bad: list[Any] = []
    try:
        try:
            repo = open_repo(args)
        except NoRepositoryError:
            if repo_spec(args) is not None or target:   # a repository named but absent is an error
                raise
            repo = None  # nothing backed up yet on this machine: an empty list, not an error
        if repo is not None:
            bad = repo.damaged_entries()
        points = [] if repo is None else repo.points(match_vm(repo, target[0]) if target else None)
    except RepoError as e:
        return fail(args, e, out, errout)
    code = EXIT_DAMAGED if bad else EXIT_OK
    if args.json:  # stdout stays a list of points; the damage goes to stderr and the exit code
        print(json.dumps([p.to_dict() for p in points], indent=2), file=out)
        print_bad_entries(bad, errout)
        return code
    print_bad_entries(bad, out)
    if not points:
        print("no restore points", file=out)
        return code
    rows = [("ID", "VM", "CREATED", "KIND", "DISKS", "SIZE", "STORED", "VERIFIED")]
    for p in points:
        modes = ",".join("F" if d.mode == "full" else "I" for d in p.disks)
        rows.append((p.id, p.vm_name or p.vm_urn, iso_time(p.created), p.kind, f"{len(p.disks)} [{modes}]",
                     size(p.size_bytes), size(p.bytes_stored), iso_time(p.verified_at)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)
    return code


def run_points_verify(args: argparse.Namespace, out: TextIO | None = None, errout: TextIO | None = None) -> int:
    """Re-hash every chunk of one restore point and compute each disk's SHA-256 (no restore)."""
    out, errout = out or sys.stdout, errout or sys.stderr
    from ..repo import ChunkError, RepoError
    point_id = args.point_id
    try:
        repo = open_repo(args)
        point = repo.point(point_id)
        report = repo.verify(point_ids=[point_id])
        disks = []
        for d in point.disks:
            bad = [x.block for x in report.damaged if x.volume_urn == d.volume_urn]
            digest = None
            if not bad:
                try:
                    digest = repo.open_disk(point_id, d.volume_urn).sha256()
                except ChunkError as exc:  # damaged between verify and read
                    bad = [exc.digest]
            disks.append({"volume": d.volume_urn, "name": d.disk_name, "size_bytes": d.size_bytes,
                          "mode": d.mode, "sha256": digest, "damaged_blocks": bad})
    except RepoError as e:
        return fail(args, e, out, errout)
    ok = report.ok and all(not d["damaged_blocks"] for d in disks)
    if args.json:
        print(json.dumps({"point": point_id, "ok": ok, "disks": disks,
                          "chunks_checked": report.chunks_checked}, indent=2), file=out)
    else:
        print(f"restore point {point_id} ({point.vm_name or point.vm_urn}, {iso_time(point.created)}): "
              f"{'OK' if ok else 'DAMAGED'}, {report.chunks_checked} chunks checked", file=out)
        for d in disks:
            state = f"sha256 {d['sha256']}" if d["sha256"] else f"{len(d['damaged_blocks'])} damaged block(s)"
            print(f"  {d['name'] or d['volume']} ({d['mode']}, {size(d['size_bytes'])}): {state}", file=out)
    return EXIT_OK if ok else EXIT_DAMAGED
