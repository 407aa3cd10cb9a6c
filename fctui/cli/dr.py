"""``fctui dr``: recovery plans, rehearsals and failovers (issue 19; README "Disaster recovery").

* ``dr plan add NAME --target PROFILE (--vms FILTER | --policy NAME) [--group NAME=GLOB,GLOB ...]
  [--rehearsal-network PG|none] [--tools-timeout S] [--map-datastore SRC=DST ...] [--map-network SRC=DST ...]
  [--location NAME|URN]`` -- the VMs are resolved now, on the source VRM (``--profile``/``--vrm``, the
  default profile), with the console's filter language or a policy's selection; ``--rehearsal-network`` is a
  port group of the target site (URN, or a name looked up there); the ``--map-*`` and ``--location`` options
  override the site pair's remembered mapping for this plan (sources looked up on the source site, targets
  on the target site).
* ``dr plan list``, ``dr plan show NAME``, ``dr plan remove NAME``
* ``dr rehearse PLAN [--keep] [--no-verify]`` -- runs in the job agent against the plan's target profile, follows it like
  ``fctui backup --wait`` and prints each VM's restore, boot and recovery time and the plan's RTO
  (``--no-verify``: restored disks are not read back, a quicker rehearsal).
* ``dr failover PLAN`` -- the same for real, nothing removed; needs the plan's name typed (or ``--confirm PLAN``).
* ``dr runs [PLAN] [--json]`` -- the recorded runs, newest first.

Exit codes: 0 every VM recovered (and a rehearsal's clean-up done) / listed; 1 a VM not recovered, the run
failed or was cancelled, the agent refused, an unknown plan; 2 usage error (bad option, no password,
confirmation not typed); 3 a VRM unreachable or login refused; 4 every VM recovered but the rehearsal's
clean-up left something (queued for the agent's cleanup); 130 interrupted while following (the run goes on
in the agent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .common import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, EXIT_VRM, EXIT_WARNINGS, Connection, UsageError,
                     add_connection_options, add_json_option, command, err, follow_job, password_for,
                     require_connection, stopped_following, warn_insecure)

if TYPE_CHECKING:  # pragma: no cover
    from ..jobs.dr import RecoveryPlan, RecoveryRun


def register(sub: Any) -> None:
    dr = sub.add_parser("dr", help="disaster recovery: plans, rehearsals, failover")
    dr.set_defaults(func=lambda ns: (dr.print_help(), EXIT_USAGE)[1], connects=False, prints_json=False)
    ds = dr.add_subparsers(dest="dr_command", metavar="{plan,rehearse,failover,runs}")

    plan = ds.add_parser("plan", help="recovery plans: add, list, show, remove")
    plan.set_defaults(func=lambda ns: (plan.print_help(), EXIT_USAGE)[1], connects=False, prints_json=False)
    ps = plan.add_subparsers(dest="plan_command", metavar="{add,list,show,remove}")
    a = ps.add_parser("add", help="make (or replace) a recovery plan; its VMs are resolved now on the source VRM")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--target", required=True, metavar="PROFILE", help="config profile of the recovery site's VRM")
    sel = a.add_mutually_exclusive_group(required=True)
    sel.add_argument("--vms", metavar="FILTER", help="the VMs: a filter as in the console (e.g. 're:^erp-')")
    sel.add_argument("--policy", metavar="NAME", help="the VMs a protection policy backs up")
    a.add_argument("--group", metavar="NAME=GLOB,GLOB", action="append", default=[],
                   help="a boot group, in boot order (repeat); VM name globs or URNs; the rest boot last")
    a.add_argument("--rehearsal-network", metavar="PG|none", default="none",
                   help="port group of the target site for a rehearsal's NICs (URN or name), or none "
                        "(default: the NICs are left out)")
    a.add_argument("--tools-timeout", metavar="S", type=float, default=600.0,
                   help="a VM whose VM Tools are not running this long after power-on failed (default 600)")
    a.add_argument("--map-datastore", metavar="SRC=DST", action="append", default=[],
                   help="this plan's disks on source datastore SRC go to datastore DST of the target site "
                        "(names or URNs), whatever the site pair's remembered mapping says; repeat per datastore")
    a.add_argument("--map-network", metavar="SRC=DST", action="append", default=[],
                   help="a failover plugs the NICs on source port group SRC into port group DST of the target "
                        "site (name or URN), or leaves them out with DST none; repeat per port group")
    a.add_argument("--location", metavar="NAME|URN",
                   help="the cluster or host of the target site the VMs are created on (default: the site "
                        "pair's remembered one, else a host that reaches every datastore)")
    add_connection_options(a)
    add_json_option(a)
    a.set_defaults(func=run_plan_add, connects=True, prints_json=True)
    ls = ps.add_parser("list", help="the recovery plans and their last rehearsal")
    add_json_option(ls)
    ls.set_defaults(func=run_plan_list, connects=False, prints_json=True)
    sh = ps.add_parser("show", help="one plan: VMs in boot order, mappings, last runs")
    sh.add_argument("name", metavar="NAME")
    add_json_option(sh)
    sh.set_defaults(func=run_plan_show, connects=False, prints_json=True)
    rm = ps.add_parser("remove", help="remove a plan (its runs stay listed)")
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(func=run_plan_remove, connects=False, prints_json=False)

    for kind in ("rehearse", "failover"):
        p = ds.add_parser(kind, help="rehearse a plan into its target site (everything removed after)"
                          if kind == "rehearse" else "fail over for real into the target site (typed confirmation)")
        p.add_argument("plan", metavar="PLAN")
        if kind == "rehearse":
            p.add_argument("--keep", action="store_true", help="keep the VMs and volumes the rehearsal creates")
            p.add_argument("--no-verify", action="store_true",
                           help="do not read restored disks back (a quicker rehearsal: the boot still shows "
                                "the VM works; its RTO then leaves the read-back out)")
        else:
            p.add_argument("--confirm", metavar="PLAN", help="the plan's name, typed (else asked on the terminal)")
        p.add_argument("--no-wait", action="store_true", help="submit and return (follow with `fctui jobs`)")
        add_json_option(p, help="print the run as JSON")
        p.set_defaults(func=run_rehearse if kind == "rehearse" else run_failover, connects=False, prints_json=True)

    r = ds.add_parser("runs", help="recorded rehearsals and failovers, newest first")
    r.add_argument("plan", nargs="?", metavar="PLAN")
    r.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    add_json_option(r)
    r.set_defaults(func=run_runs, connects=False, prints_json=True)


# --- helpers -------------------------------------------------------------------------------------------

def _store() -> Any:
    from ..jobs.dr import DrStore
    return DrStore()


def parse_group(spec: str) -> Any:
    from ..jobs.dr import BootGroup
    name, sep, globs = spec.partition("=")
    match = [g.strip() for g in globs.split(",") if g.strip()]
    if not sep or not name.strip() or not match:
        raise UsageError(f"--group {spec!r}: expected NAME=GLOB[,GLOB...] (e.g. databases=db-*,sql-*)")
    return BootGroup(name.strip(), match)


def _target_connection(profile: str) -> Connection:
    ns = argparse.Namespace(profile=profile)
    return require_connection(ns, f"the target profile {profile!r}")


async def _login(conn: Connection, password: str) -> Any:
    from ..vrm import VrmClient
    return await VrmClient.open_session(conn.url, conn.user, password, verify=conn.verify, **conn.client_options())


def fmt_s(s: float | None) -> str:
    from ..jobs.progress import duration_text
    return duration_text(s)


def format_run(run: "RecoveryRun") -> str:
    """The per-VM table and the totals of a run (``dr rehearse``/``failover``, ``dr runs PLAN``)."""
    head = f"{run.kind} {run.id} of plan {run.plan} into {run.target}: {run.state}"
    if run.rto_s is not None:
        head += f", RTO {fmt_s(run.rto_s)}"
    lines = [head]
    width = max([len(v.vm_name) for v in run.vms] + [2])
    gwidth = max([len(v.group) for v in run.vms] + [5])
    lines.append(f"  {'VM':<{width}}  {'group':<{gwidth}}  {'state':<8}  {'restore':>9}  {'boot':>9}  {'RTO':>9}")
    for v in run.vms:
        line = (f"  {v.vm_name:<{width}}  {v.group:<{gwidth}}  {v.state:<8}  {fmt_s(v.restore_s):>9}  "
                f"{fmt_s(v.boot_s):>9}  {fmt_s(v.rto_s):>9}")
        if v.error:
            line += f"  {v.error}"
        lines.append(line)
    up = sum(v.state == "running" for v in run.vms)
    total = (run.finished - run.started) if run.finished else None
    lines.append(f"  {up}/{len(run.vms)} VMs running; plan RTO {fmt_s(run.rto_s)}; run took {fmt_s(total)}")
    if run.kind == "rehearsal":
        lines.append(f"  clean-up: {run.cleanup}" + (f" - {run.cleanup_error}" if run.cleanup_error else ""))
    if run.error and run.state != "succeeded":
        lines.append(f"  {run.error}")
    return "\n".join(lines)


def run_exit(run: "RecoveryRun") -> int:
    if run.state != "succeeded":
        return EXIT_FAILED
    return EXIT_WARNINGS if run.cleanup == "failed" else EXIT_OK


# --- plan add/list/show/remove ------------------------------------------------------------------------

@command
def run_plan_add(ns: argparse.Namespace) -> int:
    from ..jobs.dr import DrError, RecoveryPlan, check_plan_name
    from ..vrm import VrmError
    try:
        check_plan_name(ns.name)
    except DrError as e:
        raise UsageError(str(e)) from None
    groups = [parse_group(g) for g in ns.group]
    if len({g.name for g in groups}) != len(groups):
        raise UsageError("two --group options have the same name")
    if ns.tools_timeout <= 0:
        raise UsageError("--tools-timeout must be more than zero seconds")
    from ..config import load_config
    if load_config().profiles.get(ns.target) is None:
        raise UsageError(f"--target {ns.target!r}: no such profile in the config file")
    from ..jobs.restore import RestoreError
    from .restore import mapping_pairs
    try:
        ds_specs = mapping_pairs(ns.map_datastore, "--map-datastore")
        pg_specs = mapping_pairs(ns.map_network, "--map-network")
    except RestoreError as e:
        raise UsageError(str(e)) from None
    source = require_connection(ns, "dr plan add")
    warn_insecure(source)
    network = ns.rehearsal_network.strip()
    if network.lower() == "none":
        network = ""
    location = (ns.location or "").strip()
    target = _target_connection(ns.target)
    src_password = password_for(source)
    tgt_password = None
    # names are looked up on the target site, and so are the URNs a mapping gives: a plan names only what is there
    if (network and not network.startswith("urn:")) or ds_specs or pg_specs or location:
        tgt_password = src_password if (target.url, target.user) == (source.url, source.user) else password_for(target)
    try:
        vms, names, selection = asyncio.run(_resolve_vms(ns, source, src_password))
        if not vms:
            err(f"no VM matches {selection}: the plan would be empty")
            return EXIT_FAILED
        places = asyncio.run(_resolve_places(source, src_password, target, tgt_password, network, location,
                                             ds_specs, pg_specs))
    except VrmError as e:
        err(f"cannot use VRM: {e}")
        return EXIT_VRM
    except (DrError, RestoreError) as e:
        err(str(e))
        return EXIT_FAILED
    plan = RecoveryPlan(name=ns.name, target=ns.target, vms=vms, vm_names=names, selection=selection, groups=groups,
                        rehearsal_network=places.network, tools_timeout_s=float(ns.tools_timeout),
                        location=places.location, datastores=places.datastores, port_groups=places.port_groups,
                        names=places.names)
    store = _store()
    try:
        store.save_plan(plan)
    except DrError as e:
        err(str(e))
        return EXIT_FAILED
    if ns.json:
        print(json.dumps(plan.to_dict()))
    else:
        print(f"recovery plan {plan.name}: {len(vms)} VM(s) into {plan.target}, boot order "
              + " -> ".join(f"{g}({len(u)})" for g, u in _groups(plan)))
    return EXIT_OK


def _groups(plan: "RecoveryPlan") -> list[tuple[str, list[str]]]:
    from ..jobs.drrun import assign_groups
    return assign_groups(plan)


async def _resolve_vms(ns: argparse.Namespace, source: Connection, src_password: str
                       ) -> tuple[list[str], dict[str, str], str]:
    """The plan's VMs on the source VRM, now: (URNs, URN -> name, how they were chosen)."""
    from ..jobs.dr import DrError
    from ..jobs.policyrun import choose_vms, policy_rows
    from ..repo import Repository
    points: list[Any] = []
    try:
        points = Repository.open(create=False).points()
    except Exception:   # no repository yet: the rules' backup knowledge is only a nicety here
        points = []
    client = await _login(source, src_password)
    try:
        rows = await policy_rows(client, points)
    finally:
        await client.close()
    if ns.vms:
        from ..inventory.query import FilterError, parse_filter
        try:
            flt = parse_filter(ns.vms)
        except FilterError as e:
            raise DrError(f"--vms {ns.vms!r}: {e}") from None
        chosen = sorted((r for r in rows if flt.matches(r)), key=lambda r: r.name)
        selection = f"filter:{ns.vms}"
    else:
        from ..jobs.policy import PolicyError
        from ..jobs.policystore import PolicyStore
        try:
            store = PolicyStore()
            policy = store.get(ns.policy)
            chosen, _ = choose_vms(policy, store.all(), rows)
        except PolicyError as e:
            raise DrError(str(e)) from None
        selection = f"policy:{ns.policy}"
    return [r.key for r in chosen], {r.key: r.name for r in chosen}, selection


@dataclass
class _Places:
    """Where a plan's VMs go on the target site, as URNs, and the names they were given by."""
    network: str = ""
    location: str = ""
    datastores: dict[str, str] = field(default_factory=dict)    # source datastore URN -> target's
    port_groups: dict[str, str] = field(default_factory=dict)   # source port group URN -> target's ("" none)
    names: dict[str, str] = field(default_factory=dict)         # URN -> name, both sites


async def _site_of(client: Any, conn: Connection) -> Any:
    """The site of ``conn`` on its VRM: its profile's ``site`` URN, else the VRM's first site."""
    from ..jobs.dr import DrError
    sites = await client.sites()
    for s in sites:
        if not conn.site or conn.site in (s.urn, s.uri):
            return s
    raise DrError(f"site {conn.site} not found on {conn.label or conn.url} "
                  f"(its sites: {', '.join(s.urn for s in sites) or 'none'})")


async def _resolve_places(source: Connection, src_password: str, target: Connection, tgt_password: str | None,
                          network: str, location: str, ds_specs: list[tuple[str, str]],
                          pg_specs: list[tuple[str, str]]) -> _Places:
    """The rehearsal network, location and per-plan mappings as URNs: sources looked up on the source site,
    targets on the target site (a name must be unique there, a URN must exist there)."""
    from ..jobs.dr import DrError
    from ..rules.launch import cross_storage_restore
    from .restore import pick_named
    out = _Places(network=network, location=location)
    src_stores: dict[str, Any] = {}
    src_ds: dict[str, str] = {}
    src_pg: dict[str, str] = {}
    if ds_specs or pg_specs:
        sc = await _login(source, src_password)
        try:
            site = await _site_of(sc, source)
            src_stores = {d.urn: d for d in await sc.datastores(site.uri)} if ds_specs else {}
            src_ds = {u: d.name for u, d in src_stores.items()}
            src_pg = {g.urn: g.name for g in await sc.port_groups(site.uri)} if pg_specs else {}
        finally:
            await sc.close()
    if tgt_password is None:
        return out
    tc = await _login(target, tgt_password)
    try:
        site = await _site_of(tc, target)
        tgt_pg = {g.urn: g.name for g in await tc.port_groups(site.uri)} if (network or pg_specs) else {}
        tgt_stores = {d.urn: d for d in await tc.datastores(site.uri)} if ds_specs else {}
        tgt_ds = {u: d.name for u, d in tgt_stores.items()}
        places: dict[str, str] = {}
        if location:
            places = {c.urn: c.name for c in await tc.clusters(site.uri)}
            places |= {h.urn: h.name for h in await tc.hosts(site.uri)}
    finally:
        await tc.close()
    where = f" (site {target.label or target.url})"
    src_where = f" (site {source.label or source.url})"
    if network:
        out.network = pick_named(network, tgt_pg, "--rehearsal-network" + where + ": port group")
        out.names[out.network] = tgt_pg[out.network]
    if location:
        out.location = pick_named(location, places, "--location" + where + ": cluster or host")
        out.names[out.location] = places[out.location]
    for src, dst in ds_specs:
        s_urn = pick_named(src, src_ds, "--map-datastore" + src_where + ": datastore")
        d_urn = pick_named(dst, tgt_ds, "--map-datastore" + where + ": datastore")
        # refused now, not at a 3 a.m. failover: a restore never crosses storage classes
        crossing = cross_storage_restore(src_stores[s_urn].storage_type, tgt_stores[d_urn])
        if crossing is not None:
            raise DrError(f"--map-datastore {src}={dst}: {crossing.rule}: {crossing.message}")
        out.datastores[s_urn] = d_urn
        out.names |= {s_urn: src_ds[s_urn], d_urn: tgt_ds[d_urn]}
    for src, dst in pg_specs:
        s_urn = pick_named(src, src_pg, "--map-network" + src_where + ": port group")
        out.names[s_urn] = src_pg[s_urn]
        if dst.lower() == "none":
            out.port_groups[s_urn] = ""
            continue
        d_urn = pick_named(dst, tgt_pg, "--map-network" + where + ": port group")
        out.port_groups[s_urn] = d_urn
        out.names[d_urn] = tgt_pg[d_urn]
    return out


@command
def run_plan_list(ns: argparse.Namespace) -> int:
    from ..jobs.dr import DrError
    store = _store()
    try:
        plans = store.plans()
        last = {p.name: store.last_run(p.name) for p in plans}
    except DrError as e:
        err(str(e))
        return EXIT_FAILED
    if ns.json:
        print(json.dumps({"plans": [p.to_dict() | {"last_rehearsal": last[p.name].to_dict() if last[p.name] else None}
                                    for p in plans]}))
        return EXIT_OK
    if not plans:
        print("no recovery plan (add one: fctui dr plan add NAME --target PROFILE --vms FILTER)")
        return EXIT_OK
    for p in plans:
        r = last[p.name]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)) if r else ""
        result = (f"last rehearsal {when}: {r.state}, RTO {fmt_s(r.rto_s)}" if r else "never rehearsed")
        print(f"{p.name}: {len(p.vms)} VM(s) into {p.target}, {len(_groups(p))} boot group(s); {result}")
    return EXIT_OK


@command
def run_plan_show(ns: argparse.Namespace) -> int:
    from ..jobs.dr import DrError
    store = _store()
    try:
        plan = store.plan(ns.name)
        runs = store.runs(plan.name, limit=5)
    except DrError as e:
        err(str(e))
        return EXIT_FAILED
    if ns.json:
        print(json.dumps(plan.to_dict() | {"boot_order": [{"group": g, "vms": u} for g, u in _groups(plan)],
                                           "runs": [r.to_dict() for r in runs]}))
        return EXIT_OK
    print(f"recovery plan {plan.name} into {plan.target} ({plan.selection or 'VMs listed'})")
    network = plan.name_of(plan.rehearsal_network) if plan.rehearsal_network else "none (NICs left out)"
    print(f"  rehearsal network: {network}; VM Tools timeout {fmt_s(plan.tools_timeout_s)}")
    if plan.location:
        print(f"  location: {plan.name_of(plan.location)}")
    for i, (g, urns) in enumerate(_groups(plan), 1):
        print(f"  {i}. {g}: " + ", ".join(plan.vm_names.get(u, u) for u in urns))
    for what, m in (("datastore", plan.datastores), ("port group (failover)", plan.port_groups)):
        for k, v in m.items():
            print(f"  {what}: {plan.name_of(k)} -> {plan.name_of(v) if v else 'none'}")
    if not (plan.location or plan.datastores or plan.port_groups):
        print("  mapping: the one remembered for the site pair (set by `fctui restore --map-datastore` or the "
              "console's restore walkthrough)")
    for r in runs:
        print(f"  {r.kind} {r.id}: {r.state}, RTO {fmt_s(r.rto_s)}"
              + (f", clean-up {r.cleanup}" if r.kind == "rehearsal" else ""))
    return EXIT_OK


@command
def run_plan_remove(ns: argparse.Namespace) -> int:
    from ..jobs.dr import DrError
    try:
        _store().remove_plan(ns.name)
    except DrError as e:
        err(str(e))
        return EXIT_FAILED
    print(f"recovery plan {ns.name} removed")
    return EXIT_OK


@command
def run_runs(ns: argparse.Namespace) -> int:
    from ..jobs.dr import DrError
    try:
        runs = _store().runs(ns.plan, limit=max(1, ns.limit))
    except DrError as e:
        err(str(e))
        return EXIT_FAILED
    if ns.json:
        print(json.dumps({"runs": [r.to_dict() for r in runs]}))
        return EXIT_OK
    if not runs:
        print("no recorded run" + (f" of plan {ns.plan}" if ns.plan else ""))
        return EXIT_OK
    if ns.plan:
        print("\n\n".join(format_run(r) for r in runs))
        return EXIT_OK
    for r in runs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started))
        up = sum(v.state == "running" for v in r.vms)
        print(f"{when}  {r.plan}  {r.kind} {r.id}: {r.state}, {up}/{len(r.vms)} VMs, RTO {fmt_s(r.rto_s)}"
              + (f", clean-up {r.cleanup}" if r.kind == "rehearsal" else ""))
    return EXIT_OK


# --- rehearse / failover ------------------------------------------------------------------------------

@command
def run_rehearse(ns: argparse.Namespace) -> int:
    return _run(ns, "rehearsal")


@command
def run_failover(ns: argparse.Namespace) -> int:
    return _run(ns, "failover")


def _confirm_failover(ns: argparse.Namespace, plan: "RecoveryPlan") -> None:
    what = (f"FAILOVER of plan {plan.name}: {len(plan.vms)} VM(s) restored into {plan.target} for real, on "
            "production port groups, nothing removed afterwards")
    if ns.confirm is not None:
        if ns.confirm != plan.name:
            raise UsageError(f"--confirm {ns.confirm!r} is not the plan's name ({plan.name}): nothing done")
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{what}: confirm with --confirm {plan.name} (no terminal to ask on)")
    print(what, file=sys.stderr)
    typed = input(f"type the plan's name ({plan.name}) to go on: ").strip()
    if typed != plan.name:
        raise UsageError("not confirmed: nothing done")


def _run(ns: argparse.Namespace, kind: str) -> int:
    from ..agent import AgentError
    from ..jobs.dr import DrError
    from ..vrm import VrmError
    try:
        plan = _store().plan(ns.plan)
    except DrError as e:
        err(str(e))
        return EXIT_FAILED
    conn = _target_connection(plan.target)
    if kind == "failover":
        _confirm_failover(ns, plan)
    warn_insecure(conn)
    password = password_for(conn)

    async def check() -> None:
        client = await _login(conn, password)
        await client.close()
    try:
        asyncio.run(check())
    except VrmError as e:
        err(f"cannot use VRM {conn.url} (profile {plan.target}): {e}")
        return EXIT_VRM
    try:
        return asyncio.run(_submit(ns, kind, plan, conn, password))
    except KeyboardInterrupt:
        return stopped_following()
    except AgentError as e:
        err(str(e))
        return EXIT_FAILED


async def _submit(ns: argparse.Namespace, kind: str, plan: "RecoveryPlan", conn: Connection, password: str) -> int:
    from ..agent import job_agent
    from ..jobs.dr import DrError
    agent = await job_agent(None)
    try:
        req: dict[str, Any] = {"type": kind, "targets": [plan.name], "vrm": conn.url, "user": conn.user,
                               "password": password, "verify": conn.verify, **conn.client_options(),
                               "dr": {"plan": plan.name, "keep": bool(getattr(ns, "keep", False)),
                                      "verify": not getattr(ns, "no_verify", False)}}
        job_id = (await agent.request("submit", **req))["job"]
        if ns.no_wait:
            run = _run_of(plan.name, job_id)
            if ns.json:
                print(json.dumps(run.to_dict() if run else {"job": job_id}))
            else:
                print(f"{kind} submitted as job {job_id}" + (f" (run {run.id})" if run else "")
                      + "; follow it with `fctui jobs` or `fctui dr runs`")
            return EXIT_OK
        final = await follow_job(agent, job_id, quiet=ns.json)
    finally:
        await agent.close()
    try:
        run = _run_of(plan.name, job_id)
    except DrError as e:
        err(str(e))
        return EXIT_FAILED
    if run is None:
        err(f"job {job_id} {final.state}" + (f": {final.error}" if final.error else "") + " (no run recorded)")
        return EXIT_FAILED
    if ns.json:
        print(json.dumps(run.to_dict()))
    else:
        print(format_run(run))
    return run_exit(run)


def _run_of(plan: str, job_id: str) -> "RecoveryRun | None":
    return next((r for r in _store().runs(plan, limit=0) if r.job_id == job_id), None)
