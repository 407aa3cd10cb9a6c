"""``fctui policy list|show|add|edit|remove|export|import|run``: protection policies from the command line.

Policies live in the data directory (fctui.jobs.policystore); their meaning is in fctui.jobs.policy.
Exit codes: 0 done, 1 a run's job did not succeed (or the agent refused), 2 bad input (a policy that does
not validate, an unknown policy, an unreadable or invalid TOML file: nothing is stored), 3 the VRM cannot be
reached or refuses the login, 4 a run succeeded with warnings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, Sequence, TextIO

from .common import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, EXIT_VRM, Connection, UsageError, add_connection_options,
                     add_json_option, command, err, non_negative_int, password_for, require_connection,
                     stopped_following, warn_insecure)
from .policyio import add_repo_option

if TYPE_CHECKING:  # pragma: no cover
    from ..inventory.query import VmRow
    from ..jobs.policy import Policy
    from ..jobs.policystore import PolicyStore

RETENTION_OPTIONS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
NEXT_RUNS_SHOWN = 3




def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="protection policies: list, show, add, edit, remove, export, import, run")
    p.set_defaults(connects=False, prints_json=False)
    ps = p.add_subparsers(dest="policy_command", metavar="{list,show,add,edit,remove,export,import,run}",
                          required=True)

    ls = ps.add_parser("list", help="every policy in one table")
    add_json_option(ls, help="print the policies as JSON")
    ls.set_defaults(func=run_policy_list, prints_json=True)

    sh = ps.add_parser("show", help="one policy's settings and its next runs")
    sh.add_argument("name", metavar="NAME")
    add_json_option(sh, help="print the policy as JSON")
    sh.set_defaults(func=run_policy_show, prints_json=True)

    add = ps.add_parser("add", help="add a policy (--vms, --schedule and --rpo are required)")
    add.add_argument("name", metavar="NAME")
    _policy_options(add)
    add.set_defaults(func=run_policy_add)

    ed = ps.add_parser("edit", help="change the given settings of a policy (the others stay)")
    ed.add_argument("name", metavar="NAME")
    _policy_options(ed)
    ed.set_defaults(func=run_policy_edit)

    rm = ps.add_parser("remove", help="remove a policy (its restore points stay)")
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(func=run_policy_remove)

    ex = ps.add_parser("export", help="write every policy as TOML ([[policy]] tables) to FILE or stdout")
    ex.add_argument("file", metavar="FILE", nargs="?", default="-")
    ex.set_defaults(func=run_policy_export)

    im = ps.add_parser("import", help="add or replace policies by name from a TOML file (all or none)")
    im.add_argument("file", metavar="FILE")
    im.set_defaults(func=run_policy_import)

    run = ps.add_parser("run", help="run a policy now (in the job agent), or with --dry-run say what it would do")
    run.add_argument("name", metavar="NAME")
    run.add_argument("--dry-run", action="store_true",
                     help="print which VMs the run would take, full or incremental and why, and the estimated "
                          "pause; nothing is created on the VRM")
    run.add_argument("--no-follow", action="store_true", help="submit the job and return (it runs in the agent)")
    run.add_argument("--site", metavar="URN", help="site to read (default: the profile's, else the first site)")
    add_repo_option(run)
    add_connection_options(run)
    add_json_option(run, help="print the job result (with --dry-run: the plan) as JSON")
    run.set_defaults(func=run_policy_run, connects=True, prints_json=True)


def _policy_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("policy settings")
    g.add_argument("--vms", metavar="FILTER",
                   help="which VMs, in the console's filter language, e.g. 're:^db- !rule:template'")
    g.add_argument("--schedule", metavar="TEXT", help="'daily 02:00', 'mon-fri 01:00,13:00' or 'cron 0 2 * * 1-5'")
    g.add_argument("--window", metavar="TEXT", help="off-peak window runs start in, e.g. 'daily 22:00-06:00' "
                                                     "('any' for none)")
    g.add_argument("--rpo", metavar="DUR", help="recovery point objective, e.g. 24h, 1d12h")
    for key in RETENTION_OPTIONS:
        g.add_argument("--" + key.replace("_", "-"), metavar="N", type=non_negative_int, dest=key,
                       help=f"retention: {key[5:]} points to keep (0: this rule keeps none)")
    g.add_argument("--full-every", metavar="N", type=non_negative_int, dest="full_every",
                   help="every Nth backup of a VM reads every block (0: never)")
    en = g.add_mutually_exclusive_group()
    en.add_argument("--enable", dest="enabled", action="store_const", const=True, default=None,
                    help="the schedule runs it (the default for a new policy)")
    en.add_argument("--disable", dest="enabled", action="store_const", const=False,
                    help="keep it, but the schedule does not run it")


def _given_settings(ns: argparse.Namespace) -> dict[str, Any]:
    """The settings on the command line, as :func:`fctui.jobs.policy.policy_from_mapping` keys."""
    out: dict[str, Any] = {}
    for key in ("vms", "schedule", "window", "rpo", *RETENTION_OPTIONS, "full_every", "enabled"):
        value = getattr(ns, key, None)
        if value is not None:
            out[key.replace("_", "-")] = value
    return out


def _store() -> "PolicyStore":
    from ..jobs.policystore import PolicyStore
    return PolicyStore()


def _policy_error(e: Exception) -> int:
    err(str(e))
    return EXIT_USAGE


# --- list / show -----------------------------------------------------------------------------------

def policy_json(p: "Policy") -> dict[str, Any]:
    """One policy in ``--json``: its stored settings, with every field present and the RPO in seconds."""
    d = p.to_dict()
    d.update(enabled=p.enabled, rpo_s=p.rpo_s, window=p.window.describe() if p.window else None,
             retention=p.retention.describe(), full_every=p.full_every)
    d.pop("full-every", None)
    return d


def run_policy_list(ns: argparse.Namespace, *, out: TextIO | None = None, width: int | None = None) -> int:
    from ..jobs.policy import PolicyError, format_duration
    from .policyio import fit_table
    out = out or sys.stdout
    try:
        policies = _store().all()
    except PolicyError as e:
        return _policy_error(e)
    if getattr(ns, "json", False):
        print(json.dumps({"policies": [policy_json(p) for p in policies]}), file=out)
        return EXIT_OK
    if not policies:
        print("no policies (add one with `fctui policy add NAME --vms FILTER --schedule TEXT --rpo DUR`)", file=out)
        return EXIT_OK
    rows = [(p.name, p.vms, p.schedule.text, p.describe_window(), format_duration(p.rpo_s), p.retention.describe(),
             "yes" if p.enabled else "no") for p in policies]
    headers = ("NAME", "VMS", "SCHEDULE", "WINDOW", "RPO", "RETENTION", "ENABLED")
    for line in fit_table(headers, rows, width=width, shrink=(1, 5, 2, 3)):
        print(line, file=out)
    return EXIT_OK


def run_policy_show(ns: argparse.Namespace, *, out: TextIO | None = None, now: float | None = None,
                    tz: tzinfo | None = None) -> int:
    from ..jobs.policy import PolicyError, format_duration
    from ..jobs.policy import local_tz
    from .policyio import when
    out = out or sys.stdout
    now = time.time() if now is None else now
    tz = tz or local_tz()
    try:
        p = _store().get(ns.name)
    except PolicyError as e:
        return _policy_error(e)
    from ..jobs.protection import run_starts
    runs = run_starts(p, now, tz, NEXT_RUNS_SHOWN) if p.enabled else []
    if getattr(ns, "json", False):
        print(json.dumps(policy_json(p) | {"next_runs": [datetime.fromtimestamp(t, tz).isoformat() for t in runs]}),
              file=out)
        return EXIT_OK
    lines = [
        ("name", p.name),
        ("vms", p.vms),
        ("schedule", p.schedule.text),
        ("window", p.describe_window()),
        ("rpo", format_duration(p.rpo_s)),
        ("retention", p.retention.describe()),
        ("full every", f"{p.full_every} backups" if p.full_every else "never (CBT incrementals)"),
        ("enabled", "yes" if p.enabled else "no (the schedule does not run it)"),
        ("created", when(p.created, tz) if p.created else "-"),
    ]
    for key, value in lines:
        print(f"{key:<11} {value}", file=out)
    if runs:
        print(f"{'next runs':<11} " + ("\n" + " " * 12).join(when(t, tz) for t in runs), file=out)
    return EXIT_OK


# --- add / edit / remove ---------------------------------------------------------------------------

@command
def run_policy_add(ns: argparse.Namespace) -> int:
    from ..jobs.policy import PolicyError, policy_from_mapping
    settings = _given_settings(ns) | {"name": ns.name}
    try:
        policy = _store().add(policy_from_mapping(settings))
    except PolicyError as e:
        return _policy_error(e)
    print(f"added policy {policy.name}")
    return EXIT_OK


@command
def run_policy_edit(ns: argparse.Namespace) -> int:
    from ..jobs.policy import PolicyError, policy_from_mapping
    given = _given_settings(ns)
    if not given:
        raise UsageError("policy edit: give at least one setting to change (see `fctui policy edit --help`)")
    store = _store()
    try:
        old = store.get(ns.name)
        settings = old.to_dict() | given
        policy = store.replace(policy_from_mapping(settings))
    except PolicyError as e:
        return _policy_error(e)
    print(f"changed policy {policy.name}: {', '.join(sorted(given))}")
    return EXIT_OK


@command
def run_policy_remove(ns: argparse.Namespace) -> int:
    from ..jobs.policy import PolicyError
    try:
        _store().remove(ns.name)
    except PolicyError as e:
        return _policy_error(e)
    print(f"removed policy {ns.name} (its restore points stay; `fctui repo prune` removes points)")
    return EXIT_OK


# --- export / import -------------------------------------------------------------------------------

@command
def run_policy_export(ns: argparse.Namespace) -> int:
    from ..jobs.policy import PolicyError, policies_to_toml
    try:
        text = policies_to_toml(_store().all())
    except PolicyError as e:
        return _policy_error(e)
    if ns.file == "-":
        sys.stdout.write(text)
        return EXIT_OK
    from ..store.atomic import atomic_write_bytes
    try:
        atomic_write_bytes(ns.file, text.encode(), mode=0o644)
    except OSError as e:
        raise UsageError(f"cannot write {ns.file}: {e.strerror or e}") from None
    print(f"exported {text.count('[[policy]]')} policies to {ns.file}", file=sys.stderr)
    return EXIT_OK


@command
def run_policy_import(ns: argparse.Namespace) -> int:
    from ..jobs.policy import PolicyError, policies_from_toml
    try:
        with open(ns.file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {ns.file}: {getattr(e, 'strerror', None) or e}") from None
    try:
        policies = policies_from_toml(text, where=ns.file)   # every policy valid, or nothing is stored
        added, replaced = _store().import_policies(policies)
    except PolicyError as e:
        return _policy_error(e)
    print(f"added {added}, replaced {replaced}")
    return EXIT_OK


# --- run -------------------------------------------------------------------------------------------

def take_vms(policy: "Policy", policies: Sequence["Policy"], rows: Sequence["VmRow"]
             ) -> tuple[list["VmRow"], list[tuple["VmRow", str]]]:
    """The VMs a run of ``policy`` backs up, and those its selector matches that another enabled policy
    wins (with that policy's name): the same choice the agent makes (fctui.jobs.policy.winning_policy).
    A policy run by hand takes part even while disabled."""
    from ..jobs.policy import winning_policy
    from ..jobs.protection import selected_vms
    mine = policy.with_changes(enabled=True)
    others = [p for p in policies if p.enabled and p.name != policy.name]
    chosen = selected_vms(mine, rows)
    keys = {p.name: {r.key for r in selected_vms(p, chosen)} for p in others}
    taken: list[VmRow] = []
    covered: list[tuple[VmRow, str]] = []
    for row in chosen:
        win = winning_policy([mine] + [p for p in others if row.key in keys[p.name]])
        if win is None or win.name == policy.name:
            taken.append(row)
        else:
            covered.append((row, win.name))
    return taken, covered


def window_line(policy: "Policy", now: float, tz: tzinfo) -> str:
    from ..jobs.policy import next_window_open, window_bounds
    from .policyio import when
    if policy.window is None:
        return "no window: runs start at their time"
    local = datetime.fromtimestamp(now, tz)
    bounds = window_bounds(policy.window, local)
    if bounds is not None:
        return f"now is inside the window {policy.window.describe()} (it closes {when(bounds[1].timestamp(), tz)})"
    opens = next_window_open(policy.window, local)
    return f"now is outside the window {policy.window.describe()} (it opens {when(opens.timestamp(), tz)})"


@command
def run_policy_run(ns: argparse.Namespace, *, out: TextIO | None = None, now: float | None = None,
                   tz: tzinfo | None = None) -> int:
    from ..agent import AgentError
    from ..jobs.policy import PolicyError
    out = out or sys.stdout
    store = _store()
    try:
        policy = store.get(ns.name)
        policies = store.all()
    except PolicyError as e:
        return _policy_error(e)
    conn = require_connection(ns, "policy run")
    password = password_for(conn)
    warn_insecure(conn)
    try:
        if ns.dry_run:
            return asyncio.run(_dry_run(ns, conn, password, policy, policies, out=out,
                                        now=time.time() if now is None else now, tz=tz))
        return asyncio.run(_run_now(ns, conn, password, policy, policies, out=out))
    except KeyboardInterrupt:
        return stopped_following()
    except AgentError as e:
        err(str(e))
        return EXIT_FAILED


async def _dry_run(ns: argparse.Namespace, conn: Connection, password: str, policy: "Policy",
                   policies: Sequence["Policy"], *, out: TextIO, now: float, tz: tzinfo | None) -> int:
    from ..jobs.planner import GIB, add_launch_findings, build_plan, next_backup_mode
    from ..jobs.protection import next_run
    from ..vrm import VrmError
    from ..jobs.policy import format_duration, local_tz
    from .policyio import (Unreadable, chain_marks, gather_rows, job_records, open_repository,
                           pause_estimator, read_agent_db, vrm_session, when)
    tz = tz or local_tz()
    try:
        repo = open_repository(ns.repo)
        doc = read_agent_db()
        jobs = await job_records(doc)
    except Unreadable as e:
        err(str(e))
        return EXIT_FAILED
    try:
        async with vrm_session(conn, password) as client:
            got = await gather_rows(client, ns.site or conn.site)
            taken, covered = take_vms(policy, policies, got.rows)
            try:
                plan = await build_plan(client, [r.key for r in taken], repo, chain_marks=chain_marks(doc))
            except VrmError as e:
                raise Unreadable(f"cannot plan on the VRM at {conn.url}: {e}") from None
    except Unreadable as e:
        err(str(e))
        return EXIT_VRM
    if repo is not None:
        add_launch_findings(plan, repo=repo)
    estimator = pause_estimator(jobs, got.sizes())

    nxt = next_run(policy.with_changes(enabled=True), now, tz)
    pauses = {vp.vm_urn: estimator.estimate(vp.host_name or vp.host_urn, len(vp.disks),
                                            sum(d.size_bytes for d in vp.disks) / GIB) if vp.disks else None
              for vp in plan.runnable}
    if getattr(ns, "json", False):
        from ..jobs.policy import window_bounds
        doc = {"policy": policy.name, "enabled": policy.enabled, "next_run": nxt,
               "window_open": window_bounds(policy.window, datetime.fromtimestamp(now, tz)) is not None,
               "vms": [], "refused": [], "covered": [{"urn": r.key, "name": r.name, "by": w} for r, w in covered]}
        for vp in plan.runnable:
            mode, why = next_backup_mode(vp)
            est = pauses[vp.vm_urn]
            doc["vms"].append({"urn": vp.vm_urn, "name": vp.vm_name, "mode": mode, "reason": why, "kind": vp.kind,
                               "host": vp.host_name or vp.host_urn,
                               "disks": [{"name": d.disk_name, "mode": d.mode, "reason": d.reason}
                                         for d in vp.disks + vp.excluded],
                               "pause_s": None if est is None else
                               {"estimate": est.seconds, "low": est.low, "high": est.high,
                                "observations": est.observations}})
        doc["refused"] = ([{"urn": vp.vm_urn, "name": vp.vm_name, "reason": vp.reason} for vp in plan.refused]
                          + [{"urn": None, "name": t, "reason": why} for t, why in plan.unresolved])
        print(json.dumps(doc), file=out)
        return EXIT_OK
    print(f"policy {policy.name}: dry run, nothing is created on the VRM", file=out)
    print(f"  VMs {policy.vms} · schedule {policy.schedule.text} · RPO {format_duration(policy.rpo_s)}"
          + ("" if policy.enabled else " · disabled (the schedule does not run it)"), file=out)
    print(f"  next scheduled run: {when(nxt, tz)}; {window_line(policy, now, tz)}", file=out)
    run, refused = plan.runnable, plan.refused
    print(f"  {len(run)} VM(s) to back up, {len(refused) + len(plan.unresolved)} refused, "
          f"{len(covered)} covered by another policy", file=out)
    for vp in run:
        mode, why = next_backup_mode(vp)
        est = pauses[vp.vm_urn]
        kind = "CBT snapshot" if vp.kind == "cbt" else f"standard snapshot ({vp.reason})"
        print(f"\n  {vp.vm_name}: {mode} — {why}", file=out)
        print(f"    {kind} on {vp.host_name or vp.host_urn or '?'}; pause "
              + (est.describe() if est is not None else "-"), file=out)
        for d in vp.disks:
            if len(vp.disks) > 1:
                print(f"    {d.disk_name}: {d.mode} — {d.reason}", file=out)
        for d in vp.excluded:
            print(f"    {d.disk_name}: excluded — {d.reason}", file=out)
        for f in vp.launch:
            if f.severity in ("warning", "blocker"):
                print(f"    {f.severity}: {f.message}", file=out)
    if refused or plan.unresolved:
        print("\n  refused:", file=out)
        for vp in refused:
            print(f"    {vp.vm_name}: {vp.reason}", file=out)
        for target, why in plan.unresolved:
            print(f"    {target}: {why}", file=out)
    if covered:
        print("\n  covered by another policy:", file=out)
        for row, winner in covered:
            print(f"    {row.name}: covered by {winner}, skipped", file=out)
    if not taken and not covered:
        print(f"\n  no VM matches {policy.vms!r}", file=out)
    return EXIT_OK


async def _run_now(ns: argparse.Namespace, conn: Connection, password: str, policy: "Policy",
                   policies: Sequence["Policy"], *, out: TextIO) -> int:
    from ..agent import ensure_agent
    from ..jobs.model import JobRecord
    from .common import follow_job
    from .jobs import format_job, job_exit, result_json
    from .policyio import Unreadable, gather_rows, vrm_session
    try:
        async with vrm_session(conn, password) as client:
            got = await gather_rows(client, ns.site or conn.site)
    except Unreadable as e:
        err(str(e))
        return EXIT_VRM
    taken, covered = take_vms(policy, policies, got.rows)
    for row, winner in covered:
        print(f"{row.name}: covered by {winner}, skipped", file=sys.stderr)
    if not taken:
        print(f"policy {policy.name}: no VM to back up" + (f" ({len(covered)} covered by other policies)"
                                                          if covered else f" (none matches {policy.vms!r})"),
              file=out)
        return EXIT_OK
    agent = await ensure_agent()
    req: dict[str, Any] = {"targets": [r.key for r in taken], "full": False, "policy": policy.name,
                           "vrm": conn.url, "user": conn.user, "password": password, "verify": conn.verify,
                           **conn.client_options(), **conn.job_options()}
    job_id = (await agent.request("submit", **req))["job"]
    if ns.no_follow:
        if ns.json:
            job = JobRecord.from_dict((await agent.request("get", job=job_id))["job"])
            print(json.dumps(result_json(job) | {"policy": policy.name}), file=out)
        else:
            print(f"policy {policy.name}: job {job_id} submitted for {len(taken)} VM(s); follow it with "
                  "`fctui jobs` (it runs in the agent)", file=out)
        return EXIT_OK
    final = await follow_job(agent, job_id, quiet=ns.json)
    if ns.json:
        print(json.dumps(result_json(final) | {"policy": policy.name}), file=out)
    else:
        print(format_job(final), file=out)
    return job_exit(final)
