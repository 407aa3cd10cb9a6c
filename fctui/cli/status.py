"""``fctui status``: is every VM protected? For people, for Nagios-style checks and for Prometheus.

Reads the VRM's inventory (as ``fctui check``), the policies, the repository's restore points and the job
records (from the running job agent, else its database file read-only; an agent is never started), then
judges each VM (fctui.jobs.protection): ok, at risk, RPO breached or not covered.

Exit codes are Nagios': 0 every VM ok, 1 any at risk, 2 any breached or not covered, 3 unknown (the VRM
cannot be read, the repository, the policies or the job records are unreadable, or the options do not say
which VRM: the reason on stderr). A wrong option argparse itself rejects exits 2 before anything is read.

Several sites (``--profile a,b``, ``--all-sites``, several ``--vrm``): each site is judged and reported
under its label (text, ``--json``'s ``sites``, ``--prometheus``'s ``site`` label); a VRM that cannot be
read makes its site UNKNOWN and never hides the others. The exit code is the worst site's in the order
CRITICAL (2) > UNKNOWN (3) > WARNING (1) > OK (0) (why: fctui.cli.sites). What all sites share -- the
policies, the repository, the job records -- unreadable is UNKNOWN for all, as with one site.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, Iterable, Sequence, TextIO

from .common import add_connection_options, add_json_option, err
from .policyio import add_repo_option

if TYPE_CHECKING:  # pragma: no cover
    from ..jobs.model import JobRecord
    from ..jobs.protection import VmProtection

EXIT_UNKNOWN = 3   # fctui.jobs.protection.EXIT_UNKNOWN; kept here so --help stays cheap

STATE_WORDS = {"ok": "ok", "at-risk": "at risk", "breached": "RPO breached", "not-covered": "not covered"}

PROMETHEUS_HELP = """\
--prometheus prints the text exposition format (0.0.4) for node_exporter's textfile collector. Write it
to a temporary file and rename it, so the collector never reads half a file:

    fctui status --prometheus > /var/lib/node_exporter/fctui.prom.tmp; \\
        mv /var/lib/node_exporter/fctui.prom.tmp /var/lib/node_exporter/fctui.prom

(`;`, not `&&`: exits 1, 2 and 3 write whole metrics too -- 3 with fctui_status_scrape_ok 0 -- and must
replace the old file as well).
Metrics: fctui_vm_last_success_timestamp_seconds{vm,urn,policy}, fctui_vm_rpo_breached{vm,urn,policy},
fctui_vm_protection_state{vm,urn,state}, fctui_jobs_total{type,outcome}, fctui_status_scrape_ok,
fctui_status_timestamp_seconds.

Exit codes (Nagios): 0 every VM ok, 1 any at risk, 2 any RPO breached or not covered, 3 unknown (VRM
unreachable, repository, policies or job records unreadable; fctui_status_scrape_ok 0).

Several sites (--profile a,b, --all-sites, --vrm twice): every metric gets a site label (the profile name,
else the VRM's host:port), fctui_status_scrape_ok{site} is 0 for a site whose VRM cannot be read, and the
exit code is the worst site's: CRITICAL 2 > UNKNOWN 3 > WARNING 1 > OK 0 -- a breach on a site that answered
is never masked by another site being unreachable, and an unreachable site outranks one merely at risk."""


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="protection of every VM (Nagios exit codes, --json, --prometheus)",
                       description="Which VMs are not protected, and why: each VM's policy, newest restore "
                                   "point, next run and RPO state.",
                       epilog=PROMETHEUS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_connection_options(p)
    add_json_option(p, help="print the summary and every VM as JSON")
    p.add_argument("--prometheus", action="store_true",
                   help="print metrics in the Prometheus text format (see below: write them atomically)")
    p.add_argument("--site", metavar="URN", help="site to read (default: the profile's, else the first site)")
    p.add_argument("--vms", metavar="FILTER", default="",
                   help="judge only the VMs this filter matches (the console's filter language, e.g. "
                        "'!rule:template'; default: every VM)")
    add_repo_option(p)
    p.set_defaults(func=run_status, connects=True, prints_json=True)


@dataclass
class StatusReport:
    protections: list["VmProtection"]    # worst first
    jobs: list["JobRecord"]
    now: float
    exit: int
    tz: tzinfo | None = None              # the zone times are shown in (None: this machine's)

    def counts(self) -> dict[str, int]:
        from ..jobs.protection import PROTECTION_STATES
        c = Counter(p.state for p in self.protections)
        return {s: c.get(s, 0) for s in reversed(PROTECTION_STATES)}


class _Unknown(Exception):
    """Status cannot be judged; ``str()`` says why (exit 3)."""


def run_status(ns: argparse.Namespace, *, now: float | None = None, tz: tzinfo | None = None,
               out: TextIO | None = None) -> int:
    """``fctui status`` for parsed options. ``now`` (epoch s) and ``tz`` judge the VMs at another time
    than this moment in this machine's zone (tests build a time situation this way)."""
    from ..config import ConfigError
    from .common import UsageError, connections_from, password_for, require_connection, warn_insecure
    from ..jobs.policy import local_tz
    out = out or sys.stdout
    prom, as_json = bool(getattr(ns, "prometheus", False)), bool(getattr(ns, "json", False))
    try:
        if prom and as_json:
            raise _Unknown("--json and --prometheus exclude each other")
        conns = connections_from(ns)
        if len(conns) > 1:
            from .sites import refuse_site_option
            refuse_site_option(ns, len(conns))
            from .sites import passwords as site_passwords
            passwords = site_passwords(conns)   # every prompt before any VRM is read, one per VRM
            for c in conns:
                warn_insecure(c)
            sites = asyncio.run(collect_sites(ns, conns, passwords, now=now, tz=tz or local_tz()))
            return _write_sites(sites, prom=prom, as_json=as_json, out=out)
        conn = require_connection(ns, "status")
        password = password_for(conn)
        warn_insecure(conn)
        report = asyncio.run(collect(ns, conn, password, now=now, tz=tz or local_tz()))
    except (_Unknown, UsageError, ConfigError) as e:
        return _unknown(str(e), prom=prom, as_json=as_json, out=out, now=time.time() if now is None else now)
    if prom:
        out.write(prometheus_text(report))
    elif as_json:
        out.write(json.dumps(status_json(report)) + "\n")
    else:
        write_text(report, out)
    return report.exit


@dataclass
class Shared:
    """What every site's judgement reads alike: the --vms scope, the policies, the newest good points, the jobs."""
    scope: Any
    policies: list[Any]
    good: dict[str, float]
    jobs: list["JobRecord"]


async def read_shared(ns: argparse.Namespace) -> Shared:
    """The policies, the repository's newest good points and the job records; raises :class:`_Unknown`."""
    from ..inventory.query import FilterError, parse_filter
    from ..jobs.policy import PolicyError
    from ..jobs.policystore import PolicyStore
    from ..jobs.protection import last_good_points
    from ..repo.errors import RepoError
    from ..store import StoreError
    from .policyio import Unreadable, job_records, open_repository
    try:
        scope = parse_filter(getattr(ns, "vms", "") or "")
    except FilterError as e:
        raise _Unknown(f"--vms {ns.vms!r}: {e}") from None
    try:
        try:
            policies = PolicyStore().all()
        except (PolicyError, StoreError) as e:
            raise Unreadable(f"the policies cannot be read: {e}") from None
        repo = open_repository(getattr(ns, "repo", None))
        try:
            good = last_good_points(repo.points()) if repo is not None else {}
        except (RepoError, StoreError, OSError) as e:
            raise Unreadable(f"the repository cannot be read: {e}") from None
        finally:
            if repo is not None:
                repo.close()
        jobs = await job_records()
    except Unreadable as e:
        raise _Unknown(str(e)) from None
    return Shared(scope, list(policies), good, jobs)


async def read_site(ns: argparse.Namespace, conn: Any, password: str) -> list[Any]:
    """One VRM's VM rows; raises :class:`_Unknown` when it cannot be read."""
    from .policyio import Unreadable, gather_rows, vrm_session
    try:
        async with vrm_session(conn, password) as client:
            return (await gather_rows(client, getattr(ns, "site", None) or conn.site)).rows
    except Unreadable as e:
        raise _Unknown(str(e)) from None


def judge(rows: list[Any], shared: Shared, jobs: list["JobRecord"], *, now: float | None,
          tz: tzinfo) -> StatusReport:
    """Every row in scope judged (fctui.jobs.protection), worst first."""
    from ..jobs.protection import STATE_ORDER, assess_protection, exit_code, last_attempts
    rows = [r for r in rows if shared.scope.matches(r)]
    when = time.time() if now is None else now
    judged = assess_protection(rows, shared.policies, last_good=shared.good, last_attempt=last_attempts(jobs),
                               now=when, tz=tz)
    worst = sorted(judged.values(), key=lambda p: (STATE_ORDER[p.state], -(p.age(when) or math.inf), p.name))
    return StatusReport(worst, jobs, when, exit_code(p.state for p in worst), tz)


async def collect(ns: argparse.Namespace, conn: Any, password: str, *, now: float | None,
                  tz: tzinfo) -> StatusReport:
    """Read everything and judge every VM; raises :class:`_Unknown` when something cannot be read."""
    shared = await read_shared(ns)
    rows = await read_site(ns, conn, password)
    return judge(rows, shared, shared.jobs, now=now, tz=tz)


@dataclass
class SiteStatus:
    """One site of several: its report, or why its VRM could not be read (then UNKNOWN)."""
    label: str
    vrm: str
    report: StatusReport | None
    error: str | None = None

    @property
    def exit(self) -> int:
        return self.report.exit if self.report is not None else EXIT_UNKNOWN


async def collect_sites(ns: argparse.Namespace, conns: list[Any], passwords: list[str], *, now: float | None,
                        tz: tzinfo) -> list[SiteStatus]:
    """Every site judged on its own, the VRMs read at once; a VRM that cannot be read is that site's
    UNKNOWN, never the others'. Each site's report holds the jobs of its VRM. Raises :class:`_Unknown`
    only when what the sites share cannot be read."""
    from .check import _vrm_key
    from .common import site_label
    shared = await read_shared(ns)
    when = time.time() if now is None else now

    async def one(conn: Any, password: str) -> SiteStatus:
        label = site_label(conn)
        try:
            rows = await read_site(ns, conn, password)
        except _Unknown as e:
            err(f"status of site {label} unknown: {e}")
            return SiteStatus(label, conn.url, None, str(e))
        mine = [j for j in shared.jobs if _vrm_key(j.vrm or "") == _vrm_key(conn.url)]
        return SiteStatus(label, conn.url, judge(rows, shared, mine, now=when, tz=tz))
    return list(await asyncio.gather(*(one(c, p) for c, p in zip(conns, passwords))))


def _unknown(reason: str, *, prom: bool, as_json: bool, out: TextIO, now: float) -> int:
    err(f"status unknown: {reason}")
    if prom:
        out.write(_metric_block("fctui_status_scrape_ok", "gauge", SCRAPE_OK_HELP, [({}, 0)])
                  + _metric_block("fctui_status_timestamp_seconds", "gauge", TIMESTAMP_HELP, [({}, now)]))
    elif as_json:
        out.write(json.dumps({"summary": None, "vms": [], "exit": EXIT_UNKNOWN, "error": reason}) + "\n")
    return EXIT_UNKNOWN


def _write_sites(sites: list[SiteStatus], *, prom: bool, as_json: bool, out: TextIO) -> int:
    from .sites import worst_status
    worst = worst_status(s.exit for s in sites)
    if prom:
        out.write(prometheus_sites(sites))
    elif as_json:
        out.write(json.dumps(sites_json(sites, worst)) + "\n")
    else:
        write_sites_text(sites, out)
    return worst


# --- text ------------------------------------------------------------------------------------------

def summary_line(report: StatusReport) -> str:
    c = report.counts()
    return f"{len(report.protections)} VMs · " + " · ".join(f"{STATE_WORDS[s]} {n}" for s, n in c.items())


def write_text(report: StatusReport, out: TextIO, width: int | None = None) -> None:
    from ..jobs.policy import local_tz
    from .policyio import age_text, fit_table, when
    print(summary_line(report), file=out)
    bad = [p for p in report.protections if p.state != "ok"]
    if not bad:
        return
    tz = report.tz or local_tz()
    rows = [(STATE_WORDS[p.state], p.name, p.policy or "-", age_text(p.age(report.now)),
             when(p.next_run, tz) if p.next_run else "-", p.reason) for p in bad]
    print(file=out)
    for line in fit_table(("STATE", "VM", "POLICY", "NEWEST POINT", "NEXT RUN", "REASON"), rows, width=width,
                          shrink=(5, 1, 2)):
        print(line, file=out)


def total_counts(sites: Sequence[SiteStatus]) -> dict[str, int]:
    """The states counted over every site that could be read."""
    from ..jobs.protection import PROTECTION_STATES
    total = {st: 0 for st in reversed(PROTECTION_STATES)}
    for site in sites:
        if site.report is not None:
            for st, n in site.report.counts().items():
                total[st] += n
    return total


def write_sites_text(sites: Sequence[SiteStatus], out: TextIO, width: int | None = None) -> None:
    """Each site under its label (its summary line and its VMs that are not ok), then the total."""
    for site in sites:
        if site.report is None:
            print(f"site {site.label} ({site.vrm}): unknown -- {site.error}", file=out)
        else:
            print(f"site {site.label} ({site.vrm}): {summary_line(site.report)}", file=out)
            buf = io.StringIO()   # its table indented under the site: two columns narrower
            write_text(site.report, buf, (width or shutil.get_terminal_size((120, 24)).columns) - 2)
            rest = buf.getvalue().splitlines()[1:]
            for line in rest:
                print(f"  {line}" if line else "", file=out)
        print(file=out)
    c = total_counts(sites)
    vms = sum(len(s.report.protections) for s in sites if s.report is not None)
    unknown = sum(1 for s in sites if s.report is None)
    print(f"{len(sites)} sites · {vms} VMs · " + " · ".join(f"{STATE_WORDS[s]} {n}" for s, n in c.items())
          + (f" · {unknown} site(s) unknown" if unknown else ""), file=out)


# --- JSON ------------------------------------------------------------------------------------------

def status_json(report: StatusReport) -> dict[str, Any]:
    return {
        "summary": {"vms": len(report.protections), **report.counts()},
        "vms": [{"urn": p.urn, "name": p.name, "state": p.state, "reason": p.reason, "policy": p.policy or None,
                 "also": list(p.also), "last_good": p.last_good, "age_s": p.age(report.now),
                 "next_run": p.next_run, "rpo_s": p.rpo_s} for p in report.protections],
        "exit": report.exit,
    }


def sites_json(sites: Sequence[SiteStatus], worst: int) -> dict[str, Any]:
    """``--json`` over several sites: each site's document (as one site's, with ``site``, ``vrm`` and
    ``error``; ``summary`` null when its VRM could not be read), the total, the worst exit code."""
    out = []
    for site in sites:
        doc = status_json(site.report) if site.report is not None else {"summary": None, "vms": [],
                                                                         "exit": EXIT_UNKNOWN}
        out.append({"site": site.label, "vrm": site.vrm, **doc, "error": site.error})
    vms = sum(len(s.report.protections) for s in sites if s.report is not None)
    return {"sites": out, "summary": {"sites": len(sites), "sites_unknown": sum(1 for s in sites if s.report is None),
                                      "vms": vms, **total_counts(sites)}, "exit": worst}


# --- Prometheus ------------------------------------------------------------------------------------

SCRAPE_OK_HELP = "1 when fctui status could read the VRM, the repository, the policies and the job records."
TIMESTAMP_HELP = "When fctui status judged the VMs (epoch seconds)."


def escape_label(value: str) -> str:
    """A label value in the text format: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(v: float) -> str:
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 53):
        return str(int(v))
    return repr(float(v))


def _metric_block(name: str, kind: str, help_text: str,
                  samples: Iterable[tuple[dict[str, str], float]]) -> str:
    lines = [f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}",
             f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def job_outcome(job: "JobRecord") -> str:
    """A finished job's outcome label: its state, ``warnings`` for a success that left a leftover."""
    return "warnings" if job.state == "succeeded" and job.warnings else job.state


METRICS = (  # name, type, help
    ("fctui_vm_last_success_timestamp_seconds", "gauge",
     "Creation time of the VM's newest good restore point (epoch seconds)."),
    ("fctui_vm_rpo_breached", "gauge", "1 when the VM's newest good restore point is older than its policy's RPO."),
    ("fctui_vm_protection_state", "gauge",
     "The VM's protection state (ok, at-risk, breached, not-covered): one series per VM."),
    ("fctui_jobs_total", "counter", "Finished jobs the job agent remembers, by type and outcome."),
)


def _samples(report: StatusReport, site: dict[str, str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The per-VM and per-job samples of one report, each labelled with ``site`` first (empty: one site)."""
    ps: Sequence[VmProtection] = report.protections
    covered = [p for p in ps if p.policy]
    jobs = Counter((j.type, job_outcome(j)) for j in report.jobs if j.is_final)
    return {
        "fctui_vm_last_success_timestamp_seconds":
            [(site | {"vm": p.name, "urn": p.urn, "policy": p.policy}, p.last_good) for p in ps
             if p.last_good is not None],
        "fctui_vm_rpo_breached":
            [(site | {"vm": p.name, "urn": p.urn, "policy": p.policy}, int(p.state == "breached")) for p in covered],
        "fctui_vm_protection_state": [(site | {"vm": p.name, "urn": p.urn, "state": p.state}, 1) for p in ps],
        "fctui_jobs_total": [(site | {"type": t, "outcome": o}, n) for (t, o), n in sorted(jobs.items())],
    }


def prometheus_text(report: StatusReport) -> str:
    samples = _samples(report, {})
    return "".join([_metric_block(name, kind, help_text, samples[name]) for name, kind, help_text in METRICS] + [
        _metric_block("fctui_status_scrape_ok", "gauge", SCRAPE_OK_HELP, [({}, 1)]),
        _metric_block("fctui_status_timestamp_seconds", "gauge", TIMESTAMP_HELP, [({}, report.now)]),
    ])


def prometheus_sites(sites: Sequence[SiteStatus]) -> str:
    """Several sites: every series labelled ``site``; a site whose VRM could not be read has
    ``fctui_status_scrape_ok{site} 0`` and no VM series."""
    merged: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name, _, _ in METRICS}
    for site in sites:
        if site.report is not None:
            for name, got in _samples(site.report, {"site": site.label}).items():
                merged[name] += got
    now = next((s.report.now for s in sites if s.report is not None), time.time())
    return "".join([_metric_block(name, kind, help_text, merged[name]) for name, kind, help_text in METRICS] + [
        _metric_block("fctui_status_scrape_ok", "gauge", SCRAPE_OK_HELP,
                      [({"site": s.label}, int(s.report is not None)) for s in sites]),
        _metric_block("fctui_status_timestamp_seconds", "gauge", TIMESTAMP_HELP, [({}, now)]),
    ])
