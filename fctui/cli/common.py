"""What every command shares: exit codes, the global options, the VRM connection they name, following a job.

Global options (``--vrm``, ``--user``, ``--profile``, ``--insecure``, ``--ca-file``, ``--user-type``,
``--proxy-ip``, ``--json``) parse the
same way before and after the command: the top-level parser declares them with real defaults, each
command's parser declares them again with ``argparse.SUPPRESS`` defaults, so a value given after the
command wins and one given before it is not overwritten by the command's default.

Only argparse and the standard library are imported at module level: ``fctui check --help`` must not pay
for textual, httpx or the simulator.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TextIO

from ..config import Config, ConfigError, check_proxy_ip, check_user_type

if TYPE_CHECKING:  # pragma: no cover
    from ..jobs.model import JobRecord

EXIT_OK = 0
EXIT_FAILED = 1        # the job did not succeed, the agent refused, damage found
EXIT_USAGE = 2         # bad option, no password, bad config file
EXIT_VRM = 3           # VRM unreachable or login refused
EXIT_WARNINGS = 4      # succeeded with warnings (a leftover waits for the snapshot hunter)
EXIT_INTERRUPTED = 130

# Every command's --repo: a directory or an S3 URL (fctui.config.repository_spec says which wins)
REPO_METAVAR = "REPO"
REPO_HELP = ("the repository: a directory or s3://BUCKET/PREFIX (default: $FCTUI_REPO, else the config's repo, "
             "else the data dir's repo; S3 credentials from AWS_* or AWS_PROFILE)")

CONNECTION_OPTIONS = ("vrm", "user", "profile", "all_sites", "insecure", "ca_file", "user_type", "proxy_ip",
                      "host_snapshot_gate")


class UsageError(Exception):
    """The command line or the config file does not say what to do; ``str()`` says why (exit 2)."""


def err(msg: str, prog: str = "fctui") -> None:
    print(f"{prog}: {msg}", file=sys.stderr)


def command(run: Callable[..., int]) -> Callable[..., int]:
    """A command's ``run``: a usage or config error becomes one line on stderr and exit 2, never a traceback."""
    @functools.wraps(run)
    def guarded(ns: argparse.Namespace, *args: Any, **kw: Any) -> int:
        try:
            return run(ns, *args, **kw)
        except (UsageError, ConfigError) as e:
            err(str(e))
            return EXIT_USAGE
    return guarded


# --- global options ---------------------------------------------------------------------------------

def add_connection_options(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--vrm/--user/--profile/--insecure/--ca-file`` on the top-level parser (``top``) or a command's."""
    keep = argparse.SUPPRESS  # a command's parser must not overwrite what was given before the command
    g = p.add_argument_group("connection")
    # --vrm may be repeated (several sites, one --user); a list once given (connections_from reads both forms)
    g.add_argument("--vrm", metavar="URL", action="append", default=None if top else keep,
                   help="VRM address, e.g. https://vrm.example:7443 (repeat it for several sites: check, "
                        "status and jobs report each)")
    g.add_argument("--user", metavar="USER", default=None if top else keep,
                   help="VRM user (password from FCTUI_PASSWORD_<SITE>, FCTUI_PASSWORD or a prompt per VRM, "
                        "never an argument)")
    g.add_argument("--profile", metavar="NAME[,NAME…]", default=None if top else keep,
                   help="a [profiles.NAME] table of the config file (default: default_profile, or the only one); "
                        "a comma list names several sites")
    g.add_argument("--all-sites", action="store_true", default=False if top else keep,
                   help="every profile of the config file, each a site")
    tls = g.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", default=False if top else keep,
                     help="do not verify the VRM's TLS certificate (warns)")
    tls.add_argument("--ca-file", metavar="FILE", default=None if top else keep,
                     help="CA bundle that signed the VRM's certificate")
    # A string, so "0" counts as given (given_connection_options); connection_from makes it an int.
    g.add_argument("--user-type", metavar="0|2", choices=("0", "2"), default=None if top else keep,
                   help="X-Auth-UserType of the VRM account: 2 (default) or 0 (profile: user_type)")
    g.add_argument("--proxy-ip", metavar="IP", default=None if top else keep,
                   help="this machine's address the VRM serves backup data to (default: the local address "
                        "that routes to the VRM; profile: proxy_ip)")
    g.add_argument("--host-snapshot-gate", action="store_true", default=False if top else keep,
                   help="for a VRM that refuses a CBT snapshot while any backup resource is prepared on its "
                        "host: order them per host (slower, never failing; profile: host_snapshot_gate)")


def add_cluster_option(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--cluster URL``: the commands that talk to the job agent talk to a cluster's proxies instead."""
    p.add_argument("--cluster", metavar="URL", default=None if top else argparse.SUPPRESS,
                   help="the NATS address of a cluster of proxies (fctui agent --cluster) that runs the jobs "
                        "(default: $FCTUI_CLUSTER, else cluster in the config file, else the local agent)")


def chosen_cluster(ns: argparse.Namespace) -> str | None:
    """The cluster this command talks to (:func:`fctui.config.cluster_url`); None: the local agent."""
    from ..config import cluster_url
    return cluster_url(getattr(ns, "cluster", None))


def add_json_option(p: argparse.ArgumentParser, *, top: bool = False, help: str = "print JSON") -> None:
    p.add_argument("--json", action="store_true", default=False if top else argparse.SUPPRESS, help=help)


def given_connection_options(ns: argparse.Namespace) -> list[str]:
    """The connection options set on the line (to refuse them where a command has no VRM)."""
    return ["--" + k.replace("_", "-") for k in CONNECTION_OPTIONS if getattr(ns, k, None)]


# --- the VRM a command talks to --------------------------------------------------------------------

@dataclass(slots=True)
class Connection:
    """A VRM named by ``--vrm/--user`` or a config profile; the password is asked separately."""

    url: str
    user: str
    verify: bool | str
    site: str | None = None
    api_version: str | None = None
    label: str = ""
    insecure: bool = False
    user_type: int = 2                 # X-Auth-UserType (flag --user-type, profile user_type)
    proxy_ip: str | None = None        # backup resources' requester ip (--proxy-ip, proxy_ip)
    cbt_bitmap: str = "nibble"         # getcbt bitmap layout (profile cbt_bitmap)
    host_snapshot_gate: bool = False   # per-host snapshot/resource order (--host-snapshot-gate, profile)

    def job_options(self) -> dict[str, Any]:
        """The fields of a backup submitted to the job agent that set how its runner works on this VRM."""
        return {"host_snapshot_gate": self.host_snapshot_gate}

    def client_options(self) -> dict[str, Any]:
        """The VRM client keyword arguments of this connection beyond address, user and TLS: for a
        :class:`~fctui.vrm.VrmClient` this command opens and, as the same fields, in requests to the
        job agent (fctui.agent.server reads them back) and in the console's ConnectSpec."""
        return {"user_type": self.user_type, "proxy_ip": self.proxy_ip, "cbt_bitmap": self.cbt_bitmap}


def _profile_names(ns: argparse.Namespace) -> list[str]:
    """``--profile a,b`` as names (blanks dropped)."""
    given = getattr(ns, "profile", None) or ""
    return [n.strip() for n in given.split(",") if n.strip()]


def _vrm_urls(ns: argparse.Namespace) -> list[str]:
    """``--vrm`` as a list: the parser gives a list (action append), a hand-built Namespace may give a str."""
    given = getattr(ns, "vrm", None)
    if not given:
        return []
    return [given] if isinstance(given, str) else [u for u in given if u]


def vrm_label(url: str) -> str:
    """The site label of a VRM named by ``--vrm`` among several: its host[:port], as the operator typed it."""
    from urllib.parse import urlsplit
    try:
        return urlsplit(url).netloc.lower() or url
    except ValueError:
        return url


def site_label(conn: "Connection") -> str:
    """How reports name a connection's site: the profile name, else the VRM's host[:port]."""
    return conn.label or vrm_label(conn.url)


def connections_from(ns: argparse.Namespace, config: Config | None = None) -> list["Connection"]:
    """Every VRM (site) the options name, in the order given: several ``--vrm URL`` with one ``--user``,
    else ``--profile a,b`` (a comma list), else ``--all-sites`` (every profile of the config file), else
    the one :func:`connection_from` reads today (``[]`` when nothing names a VRM). The TLS and connection
    options on the line apply to each. A site named twice is a UsageError: its report would come twice.

    Raises UsageError (incomplete or contradictory options) or ConfigError (bad config file, unknown profile).
    """
    urls, names = _vrm_urls(ns), _profile_names(ns)
    all_sites = bool(getattr(ns, "all_sites", False))
    if all_sites and (urls or names):
        raise UsageError("--all-sites and --vrm/--profile exclude each other")
    if urls:
        if len(set(urls)) != len(urls):
            raise UsageError("a VRM is named twice by --vrm")
        if len(urls) == 1:
            conn = _one_connection(ns, config, vrm=urls[0])
            return [conn] if conn is not None else []
        conns = [c for c in (_one_connection(ns, config, vrm=u) for u in urls) if c is not None]
        for c in conns:   # the label names the site in reports and in FCTUI_PASSWORD_<LABEL>
            c.label = vrm_label(c.url)
        if len({c.label for c in conns}) != len(conns):
            raise UsageError("two --vrm addresses name the same host and port")
        return conns
    if all_sites:
        if config is None:
            from ..config import load_config
            config = load_config()
        names = list(config.profiles)
        if not names:
            raise UsageError(f"--all-sites: no profiles in {config.path} (add [profiles.NAME] tables)")
    elif len(names) > 1 and len(set(names)) != len(names):
        raise UsageError(f"--profile {getattr(ns, 'profile', '')}: a profile is named twice")
    if len(names) <= 1 and not all_sites:
        conn = _one_connection(ns, config, profile=names[0] if names else None)
        return [conn] if conn is not None else []
    if config is None:
        from ..config import load_config
        config = load_config()
    return [c for c in (_one_connection(ns, config, profile=n) for n in names) if c is not None]


def connection_from(ns: argparse.Namespace, config: Config | None = None, *,
                    command: str | None = None) -> Connection | None:
    """The connection the options ask for, as the console reads it: ``--vrm`` and ``--user`` if given,
    else ``--profile NAME``, else the config's default (or only) profile. None when nothing names a VRM.
    A command that talks to one VRM refuses several (``--profile a,b``, ``--all-sites`` with more than one
    profile, ``--vrm`` twice) with one line.

    Raises UsageError (incomplete or contradictory options) or ConfigError (bad config file, unknown profile).
    """
    conns = connections_from(ns, config)
    if len(conns) > 1:
        raise UsageError(f"{command or 'this command'} takes one VRM, not {len(conns)} "
                         f"({', '.join(site_label(c) for c in conns)}): name one with --profile NAME or --vrm URL")
    return conns[0] if conns else None


def _one_connection(ns: argparse.Namespace, config: Config | None, *, vrm: str | None = None,
                    profile: str | None = None) -> Connection | None:
    """One VRM: ``vrm`` with ``--user``, else the ``profile`` (None: the default or only one)."""
    user = getattr(ns, "user", None)
    insecure, ca_file = bool(getattr(ns, "insecure", False)), getattr(ns, "ca_file", None)
    if insecure and ca_file:
        raise UsageError("--insecure and --ca-file exclude each other")
    site = api_version = None
    label = ""
    settings: dict[str, Any] = {}
    if vrm or user:
        if not (vrm and user):
            raise UsageError("--vrm and --user go together")
        if not vrm.startswith(("http://", "https://")):
            raise UsageError(f"--vrm must start with https:// (got {vrm!r})")
    else:
        if config is None:
            from ..config import load_config
            config = load_config()
        prof = config.profile(profile)
        if prof is None:
            return None
        vrm, user, label = prof.vrm, prof.user, prof.name
        insecure = insecure or (prof.insecure and not ca_file)
        ca_file = ca_file or prof.ca_file
        site, api_version = prof.site, prof.api_version
        settings = {"user_type": prof.user_type, "proxy_ip": prof.proxy_ip, "cbt_bitmap": prof.cbt_bitmap,
                    "host_snapshot_gate": prof.host_snapshot_gate}
    check_vrm_url(vrm)
    if ca_file and not os.path.isfile(ca_file):
        raise UsageError(f"CA file {ca_file!r} does not exist")
    if ca_file:   # absolute: the job agent that also reads it runs in / (fctui.agent.client.ensure_agent)
        ca_file = os.path.abspath(ca_file)
    try:   # the command line wins over the profile
        if getattr(ns, "user_type", None) is not None:
            settings["user_type"] = check_user_type(ns.user_type, "--user-type")
        if getattr(ns, "proxy_ip", None):
            settings["proxy_ip"] = check_proxy_ip(ns.proxy_ip, "--proxy-ip")
        if getattr(ns, "host_snapshot_gate", False):
            settings["host_snapshot_gate"] = True
    except ConfigError as e:
        raise UsageError(str(e)) from None
    verify: bool | str = False if insecure else (ca_file or True)
    return Connection(url=vrm, user=user, verify=verify, site=site, api_version=api_version, label=label,
                      insecure=insecure, **settings)


def check_vrm_url(url: str) -> None:
    """A VRM address the client can use, or UsageError (exit 2) with one line: an unclosed IPv6 bracket
    (``http://[::1``), a port outside 0-65535, no host -- before any command opens a connection."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a port outside 0-65535
    except ValueError as e:
        raise UsageError(f"VRM address {url!r} is not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"VRM address must look like https://host:7443, got {url!r}")


def require_connection(ns: argparse.Namespace, command: str) -> Connection:
    """:func:`connection_from`, where the command cannot run without a VRM."""
    conn = connection_from(ns, command=command)
    if conn is None:
        raise UsageError(f"{command} needs --vrm URL and --user USER, or a profile (--profile NAME or "
                         "default_profile in the config file)")
    return conn


def warn_insecure(conn: Connection) -> None:
    """One warning on stderr when certificate checks are off (--insecure, or the profile's insecure = true)."""
    if conn.insecure:
        from ..vrm import INSECURE_WARNING
        err(f"warning: {INSECURE_WARNING}")


def password_for(conn: Connection) -> str:
    """The password of this VRM: ``FCTUI_PASSWORD_<LABEL>`` (the site's label upper-cased, anything not a
    letter or digit as ``_``), else ``FCTUI_PASSWORD``, else a prompt naming the VRM (``VRM password for
    user@label:``) -- once per call, so once per VRM for a command that calls it once per connection.
    Raises UsageError when none is possible. Kept in memory only."""
    from ..vrm.credentials import CredentialsError, resolve_password
    try:
        return resolve_password(conn.user, label=conn.label)
    except CredentialsError as e:
        raise UsageError(str(e)) from None


# --- printing --------------------------------------------------------------------------------------

def size(n: int | float | None) -> str:
    """Every size a command prints: binary units, the console's formatter (fctui.units)."""
    from ..units import human_bytes
    return human_bytes(n)


LIVE_REDRAW_S = 0.25     # a live progress line is rewritten at most 4 times a second
PLAIN_STEP = 0.10        # piped: one progress line per 10 % of the job ...
PLAIN_EVERY_S = 60.0     # ... or per minute in which it moved, whichever comes first


def progress_line(job: "JobRecord", fig: Any, width: int | None = None) -> str:
    """One line of a job's progress: percentage, bytes, read rate, ETA and VMs done (the figures of
    fctui.jobs.progress, as the console's jobs screen shows them). Within ``width``, the VMs, then the
    ETA, then the rate give way (never cut mid-word)."""
    from ..jobs.model import FINAL_VM_STATES
    from ..jobs.progress import human_rate
    kind = "restore" if job.type == "restore" else "backup"
    runnable = [v for v in job.vms if v.state != "refused"]
    done = sum(1 for v in runnable if v.state in FINAL_VM_STATES)
    vms = f"VMs {done}/{len(runnable)} done"
    if not runnable:
        return f"{kind} {job.state}: planning"
    if fig is None or fig.fraction is None:
        return f"{kind} {job.state}: sizes known after the snapshot · {vms}"
    parts = [f"{kind} {fig.fraction * 100:3.0f} %",
             f"{size(int(fig.fraction * (fig.planned or 0)))} of {size(fig.planned)}"
             + (f" (+{fig.unplanned} disk(s) not sized yet)" if fig.unplanned else ""),
             human_rate(fig.read_rate) if fig.read_rate > 0 else "",
             f"ETA {fig.eta_text}" if fig.eta_text and fig.fraction < 1 else "", vms]
    parts = [p for p in parts if p]
    while width is not None and len(parts) > 2 and len(" · ".join(parts)) > width:
        parts.pop()
    return " · ".join(parts)


class JobFollower:
    """What a followed job does, on ``out`` (stderr): its log lines, and its progress. On a terminal one
    live line (percentage, rate, ETA) rewritten in place with ``\\r``; piped or redirected, a plain line
    per 10 % or per minute, so a log file gets the story, not a flood. ``out``'s own isatty decides: a
    progress line belongs on a terminal even when stdout (the result, the JSON) goes to a file."""

    def __init__(self, out: TextIO, *, live: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 width: int | None = None) -> None:
        from ..jobs.progress import JobsBoard
        self.out = out
        self.live = out.isatty() if live is None else live
        self.clock = clock
        self.board = JobsBoard(clock)
        self.width = width or shutil.get_terminal_size((100, 24)).columns
        self._shown = 0                 # characters of the live line now on the terminal
        self._drawn_at: float | None = None
        self._step = -1                 # the last 10 % step a plain line was printed for
        self._plain_at: float | None = None
        self._plain_fraction: float | None = None

    def event(self, ev: dict[str, Any]) -> None:
        job_id, _ = self.board.apply(ev)
        if ev.get("event") == "log":
            self._clear()
            stamp = time.strftime("%H:%M:%S", time.localtime(ev.get("time", time.time())))
            print(f"{stamp} {ev.get('message')}", file=self.out)
            self._drawn_at = None       # redraw the live line under it now
        if job_id is None:
            return
        job = self.board.get(job_id)
        if job is None or job.is_final:
            return
        if self.live:
            self._draw(job)
        else:
            self._plain(job)
        self.out.flush()

    def close(self) -> None:
        """Take the live line away (the job's summary follows)."""
        self._clear()
        self.out.flush()

    def _draw(self, job: "JobRecord") -> None:
        now = self.clock()
        if self._drawn_at is not None and now - self._drawn_at < LIVE_REDRAW_S:
            return
        self._drawn_at = now
        line = progress_line(job, self.board.figures(job.id), self.width - 1)[: max(10, self.width - 1)]
        self.out.write("\r" + line.ljust(self._shown))
        self._shown = len(line)

    def _clear(self) -> None:
        if self._shown:
            self.out.write("\r" + " " * self._shown + "\r")
            self._shown = 0

    def _plain(self, job: "JobRecord") -> None:
        fig = self.board.figures(job.id)
        if fig is None or fig.fraction is None:
            return
        now = self.clock()
        step = int(fig.fraction / PLAIN_STEP + 1e-9)
        moved = fig.fraction != self._plain_fraction
        if step > self._step or (moved and self._plain_at is not None and now - self._plain_at >= PLAIN_EVERY_S):
            self._step, self._plain_at, self._plain_fraction = step, now, fig.fraction
            stamp = time.strftime("%H:%M:%S", time.localtime())
            print(f"{stamp} {progress_line(job, fig)}", file=self.out)


async def follow_job(agent: Any, job_id: str, *, quiet: bool, out: TextIO | None = None,
                     live: bool | None = None, clock: Callable[[], float] = time.monotonic) -> "JobRecord":
    """Wait for a job in the agent to end, showing its log and progress on stderr unless ``quiet``
    (:class:`JobFollower`)."""
    from ..jobs.model import JobRecord
    follower = None if quiet else JobFollower(out or sys.stderr, live=live, clock=clock)
    try:
        return JobRecord.from_dict(await agent.wait(job_id, follower.event if follower else None))
    finally:
        if follower is not None:
            follower.close()


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of 0 or more (counts: keep-N, full-every N)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def stopped_following(cluster: str | None = None) -> int:
    """Ctrl-C while following a job: the job goes on in the agent (or the cluster); say so and how to reach it."""
    where = f"the cluster at {cluster}" if cluster else "the agent"
    print(f"\nstopped waiting; the job keeps running in {where} (`fctui jobs`, `fctui jobs cancel ID`)",
          file=sys.stderr)
    return EXIT_INTERRUPTED
