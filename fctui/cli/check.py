"""``fctui check``: which VMs can be backed up, and if not, why and what to do.

Exit status: 0 when the check ran (whatever the verdicts), 2 on a usage error (bad option, no
password, unknown site or rule, bad config), 3 when the VRM cannot be reached or refuses the login --
always with one line on stderr, never a traceback.

Several sites (``--profile a,b``, ``--all-sites``, several ``--vrm``): each is checked and reported under
its label, one that cannot be reached is reported as such; the exit status is the highest of the sites'
(fctui.cli.sites).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Mapping, TextIO

from .common import (EXIT_OK, EXIT_USAGE, EXIT_VRM, Connection, UsageError, add_connection_options,
                     add_json_option, connections_from, site_label, warn_insecure)

if TYPE_CHECKING:  # pragma: no cover
    from ..rules.facts import BackupKnowledge

VERDICTS = ("blocked", "degraded", "ready")  # fctui.rules.catalog.VERDICTS; kept here so --help stays cheap


def _err(msg: str) -> None:
    print(f"fctui check: {msg}", file=sys.stderr)


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="report which VMs can be backed up, and why not",
                       epilog="Exit status: 0 the check ran (whatever the verdicts), 2 usage error, 3 the VRM "
                              "cannot be reached or refuses the login. Several sites (--profile a,b, "
                              "--all-sites, --vrm twice): each is reported under its name; the exit status is "
                              "the highest of the sites' (3 if any VRM cannot be reached).")
    add_check_arguments(p)
    p.set_defaults(func=run_check, connects=True, prints_json=True)


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    add_connection_options(p)
    add_json_option(p, help="print the JSON report instead of a table")
    p.add_argument("--site", metavar="URN", help="site to check (default: the profile's, else the first site)")
    p.add_argument("--only", choices=VERDICTS, help="list only VMs with this verdict")
    p.add_argument("--rule", metavar="ID", help="list only VMs with a finding of this rule id")
    p.add_argument("--demo", action="store_true", help="check an embedded VRM simulator instead of a VRM")
    p.add_argument("--vms", type=int, metavar="N", help="with --demo: number of simulated VMs (default 60)")
    p.add_argument("--knowledge", metavar="FILE",
                   help="JSON file of earlier backups per VM URN (for cbt-chain-broken and leftovers)")
    p.add_argument("--concurrency", type=int, default=8, metavar="N",
                   help="concurrent VRM requests (default 8: enough to hide 20 ms of latency; the client is "
                        "CPU-bound beyond)")


class _DropInsecureWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from ..vrm import INSECURE_WARNING
        return record.getMessage() != INSECURE_WARNING


def _validate(ns: argparse.Namespace) -> list[Connection] | None:
    """The VRMs to check, one or several (None with --demo); raises UsageError."""
    from ..rules import catalog as C
    if ns.rule and ns.rule not in C.RULES:
        raise UsageError(f"unknown rule id {ns.rule!r} (known: {', '.join(C.INVENTORY_RULE_IDS)})")
    if ns.rule and C.RULES[ns.rule].stage != "inventory":
        raise UsageError(f"rule {ns.rule} is evaluated when a job is planned, not by check")
    if ns.vms is not None and not ns.demo:
        raise UsageError("--vms only goes with --demo")
    if ns.vms is not None and not 0 <= ns.vms <= 100_000:
        raise UsageError("--vms must be between 0 and 100000")
    if ns.concurrency < 1 or ns.concurrency > 256:
        raise UsageError("--concurrency must be between 1 and 256")
    if ns.demo:
        if getattr(ns, "vrm", None) or getattr(ns, "profile", None) or getattr(ns, "all_sites", False):
            raise UsageError("--demo and --vrm/--profile/--all-sites exclude each other")
        return None
    conns = connections_from(ns)
    if not conns:
        raise UsageError("--vrm URL and --user USER are required, or a profile (--profile NAME), or --demo")
    from .sites import refuse_site_option
    refuse_site_option(ns, len(conns))
    return conns


async def snapshots_of_running_jobs(vrm_url: str) -> dict[str, str]:
    """Snapshot URN -> VM URN of the running and queued jobs of the job agent (or of the cluster named by
    $FCTUI_CLUSTER or the config) on this VRM -- if one runs; none is started for this. A job's own snapshot is not a leftover: the console says so
    (rules.engine.with_owned_snapshots), and so does the check."""
    from ..agent import AgentError, running_agent
    from ..config import cluster_url
    from ..jobs.model import JobRecord
    agent = await running_agent(cluster_url())   # a cluster's proxies' snapshots are not leftovers either
    if agent is None:
        return {}
    try:
        jobs = [JobRecord.from_dict(j) for j in (await agent.request("list"))["jobs"]]
    except AgentError:
        return {}
    finally:
        await agent.close()
    same = _vrm_key(vrm_url)
    return {s: v for j in jobs if _vrm_key(j.vrm) == same for s, v in j.owned_snapshots().items()}


def _vrm_key(url: str) -> tuple[str, str, int | None]:
    """A VRM address compared as the client reaches it (case of the host, a trailing slash aside)."""
    from urllib.parse import urlsplit
    try:
        p = urlsplit(url.strip())
        return p.scheme.lower(), (p.hostname or "").lower(), p.port or (443 if p.scheme == "https" else 80)
    except ValueError:
        return "", url, None


async def _run(ns: argparse.Namespace, conn: Connection | None, password: str,
               knowledge: Mapping[str, "BackupKnowledge"], out: TextIO,
               say: Callable[[str], None] = _err) -> int:
    """Check one VRM: its report on ``out``, each problem one line through ``say``; the exit status."""
    from ..inventory.gather import GatherError, gather
    from ..inventory.report import own_snapshots, render_json, render_table, vm_json_text
    from ..rules.launch import vrm_version_untested
    from ..vrm import VrmClient, VrmError
    from ..vrm.errors import VrmApiError

    transport = None
    site = ns.site
    options: dict[str, Any] = {}
    if conn is None:   # --demo
        import httpx

        from ..sim import SimConfig, Simulator, create_app
        sim = Simulator(SimConfig(vms=60 if ns.vms is None else ns.vms))
        transport = httpx.ASGITransport(app=create_app(sim))
        url, user, password, verify = "http://vrm.demo", sim.config.user, sim.config.password, True
    else:
        url, user, verify = conn.url, conn.user, conn.verify
        site = site or conn.site
        options = conn.client_options()
    # The --insecure warning is already on stderr (warn_insecure); the client's log copy would repeat it.
    quiet = _DropInsecureWarning()
    client_log = logging.getLogger("fctui.vrm.client")
    client_log.addFilter(quiet)
    try:
        client = VrmClient(url, user, password, verify=verify, transport=transport,
                           page_concurrency=ns.concurrency, **options)
    except VrmError as e:
        say(str(e))
        return EXIT_USAGE
    finally:
        client_log.removeFilter(quiet)
    # --demo's simulator is this command's own: no job of the agent runs on it
    owned = await snapshots_of_running_jobs(url) if conn is not None else {}
    try:
        try:
            await client.login()
        except VrmError as e:
            say(f"cannot log in to the VRM at {url}: {e}")
            return EXIT_VRM
        # A one-shot command: everything gathered lives until exit. The cyclic GC stays off while the
        # inventory is read, and what was read is then frozen (exempt from collections) instead of
        # scanned once (~0.4 s for 10,000 VMs) and again and again while the report is built.
        gc_was = gc.isenabled()
        gc.disable()
        try:
            inv = await gather(client, site, knowledge=knowledge, concurrency=ns.concurrency,
                               render_vm=vm_json_text if ns.json else None)
            gc.freeze()
        except GatherError as e:
            say(str(e))
            return EXIT_USAGE
        except VrmApiError as e:
            say(f"the VRM at {url} refused a request: {e}")
            return EXIT_VRM
        except VrmError as e:
            say(f"lost the VRM at {url}: {e}")
            return EXIT_VRM
        finally:
            if gc_was:
                gc.enable()
    finally:
        await client.close()  # logs out on every path, failures included

    if conn is not None:
        # a job that ended while the VRM was read owned its snapshot then: asked before and after
        own_snapshots(inv, owned | await snapshots_of_running_jobs(url))
    if ns.json:
        out.write(render_json(inv, vrm_url=url, only=ns.only, rule=ns.rule))
        out.write("\n")
    else:
        untested = vrm_version_untested(inv.api_version)
        if untested:
            say(f"warning: {untested.message}")
        render_table(inv, out, only=ns.only, rule=ns.rule)
    return EXIT_OK


async def _run_sites(ns: argparse.Namespace, conns: list[Connection], passwords: list[str],
                     knowledge: Mapping[str, "BackupKnowledge"], out: TextIO) -> int:
    """Check several VRMs at once; each one's report under its label, in the order named. A site that
    cannot be read says why in its place (and on stderr) and its exit status counts: the worst wins."""
    import io
    import json

    from .sites import worst_check

    async def one(conn: Connection, password: str) -> tuple[int, str, list[str]]:
        buf, problems = io.StringIO(), []

        def say(msg: str) -> None:
            problems.append(msg)
            _err(f"{site_label(conn)}: {msg}")
        code = await _run(ns, conn, password, knowledge, buf, say)
        return code, buf.getvalue(), problems
    results = await asyncio.gather(*(one(c, p) for c, p in zip(conns, passwords)))
    worst = worst_check(code for code, _, _ in results)
    if ns.json:
        sites = []
        for conn, (code, text, problems) in zip(conns, results):
            entry: dict[str, Any] = {"site": site_label(conn), "vrm": conn.url, "exit": code,
                                     "error": problems[-1] if code != EXIT_OK and problems else None}
            entry["report"] = json.loads(text) if code == EXIT_OK and text.strip() else None
            sites.append(entry)
        out.write(json.dumps({"sites": sites, "exit": worst}))
        out.write("\n")
        return worst
    for i, (conn, (code, text, problems)) in enumerate(zip(conns, results)):
        if i:
            out.write("\n")
        state = "checked" if code == EXIT_OK else ("unreachable" if code == EXIT_VRM else "not checked")
        out.write(f"== site {site_label(conn)} ({conn.url}): {state}\n")
        if code == EXIT_OK:
            out.write(text)
        else:
            out.write(f"   {problems[-1] if problems else 'failed'}\n")
    return worst


def run_check(ns: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Run ``fctui check`` for parsed options; returns the exit status."""
    from ..config import ConfigError
    from ..inventory.report import KnowledgeError, load_knowledge
    try:
        conns = _validate(ns)
        conn = conns[0] if conns else None
        passwords = [""]
        if conns is not None:
            from .sites import passwords as site_passwords
            passwords = site_passwords(conns)   # every prompt before any VRM is read, one per VRM
            for c in conns:
                warn_insecure(c)
        knowledge: dict[str, BackupKnowledge] = load_knowledge(ns.knowledge) if ns.knowledge else {}
    except (UsageError, ConfigError, KnowledgeError) as e:
        _err(str(e))
        return EXIT_USAGE
    try:
        if conns is not None and len(conns) > 1:
            return asyncio.run(_run_sites(ns, conns, passwords, knowledge, out or sys.stdout))
        return asyncio.run(_run(ns, conn, passwords[0], knowledge, out or sys.stdout))
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: not an error of ours; keep Python from complaining at exit
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_OK
