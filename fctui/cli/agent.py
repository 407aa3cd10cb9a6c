"""``fctui agent``: run the job agent (normally started on demand by ``backup``, ``restore`` and the console).

``fctui agent --service`` runs it unattended (systemd, in the foreground, logging to stderr, never idle):
it logs in to the VRM of a profile with the password of a file only its user reads
(fctui.vrm.credentials.service_password) and runs the protection policies (fctui.agent.service).
``fctui agent install --print`` prints the systemd unit for that (fctui.agent.unit).
Exit codes of ``--service``: 2 no usable password file, a refused login, a bad profile (systemd does not
restart it: RestartPreventExitStatus=2); 3 the VRM cannot be reached (restarted); 1 another agent runs.

``fctui agent --cluster nats://...`` runs one proxy of a cluster (fctui.agent.cluster): the VRM and the
password as ``--service`` has them, the jobs from the cluster's shared queue; foreground, logs to stderr,
the same exit codes (3 also when the cluster cannot be reached). Several may run on one machine: it takes
no lock and no socket.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from .common import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, EXIT_VRM, REPO_HELP, REPO_METAVAR, UsageError,
                     add_connection_options, command, err, given_connection_options, require_connection,
                     warn_insecure)

if TYPE_CHECKING:  # pragma: no cover
    from ..jobs.runner import RunnerSettings
    from .common import Connection

def register(sub: Any) -> None:
    a = sub.add_parser("agent", help="run the job agent (normally started on demand)")
    add_agent_options(a)
    a.add_argument("--service", action="store_true",
                   help="run protection policies unattended (systemd): foreground, never idle, the VRM of "
                        "--profile (or --vrm/--user), its password from $FCTUI_PASSWORD_FILE or systemd's "
                        "$CREDENTIALS_DIRECTORY/fctui-password")
    a.add_argument("--cluster", metavar="URL", default=None,
                   help="be a proxy of the cluster at nats://HOST:PORT (foreground, logs to stderr): back up the "
                        "jobs of its shared queue with the VRM of --profile (or --vrm/--user) and the password "
                        "file of --service; --repo is then normally s3://bucket/prefix, shared by every proxy")
    # hidden: tests and benchmarks shorten the cluster's timing (fctui.cluster.layout.ClusterSettings)
    a.add_argument("--agent-id", default=None, help=argparse.SUPPRESS)
    a.add_argument("--ack-wait", type=float, default=None, help=argparse.SUPPRESS)
    a.add_argument("--slot-ttl", type=float, default=None, help=argparse.SUPPRESS)
    add_connection_options(a)
    # connects: the connection options are --service's and --cluster's (run_agent refuses them without)
    a.set_defaults(func=run_agent, connects=True, prints_json=False)
    asub = a.add_subparsers(dest="agent_command", metavar="{install}")
    i = asub.add_parser("install", help="print a systemd unit that runs `fctui agent --service`")
    i.add_argument("--print", dest="print_unit", action="store_true",
                   help="write the unit to stdout (the only form: nothing is written to disk)")
    # --user here is the account the service runs as, not the VRM user (that is the profile's)
    i.add_argument("--user", dest="service_user", metavar="SERVICE_USER", default=None,
                   help="the account the service runs as (default: you, or $SUDO_USER under sudo)")
    i.add_argument("--profile", metavar="NAME", default=argparse.SUPPRESS,
                   help="the profile whose VRM the service protects (default: the config's default profile)")
    i.add_argument("--repo", metavar=REPO_METAVAR, default=None,
                   help="a directory or s3://BUCKET/PREFIX (default: the service user's data dir)")
    i.set_defaults(func=run_install)


def add_agent_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true", help="host the embedded VRM simulator for the demo")
    p.add_argument("--foreground", action="store_true", help="do not detach from the terminal")
    p.add_argument("--repo", metavar=REPO_METAVAR, default=None, help=REPO_HELP)
    p.add_argument("--per-host", type=int, default=8, help="backup resources per host (1-8)")
    p.add_argument("--per-datastore", type=int, default=8, help="volumes per target datastore (1-8)")
    p.add_argument("--global-limit", type=int, default=16, help="VMs backed up at once")
    p.add_argument("--idle-exit", type=float, default=900.0, metavar="S",
                   help="exit after S seconds with no job, no watcher and no request (0: never; default 900)")
    p.add_argument("--demo-vms", type=int, default=60, help=argparse.SUPPRESS)
    p.add_argument("--demo-time-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--watch-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    # None: RunnerSettings' defaults (importing the engine here would slow every command's start)
    p.add_argument("--hunt-interval", type=float, default=None, metavar="S",
                   help="seconds between the snapshot hunter's tries to remove leftovers (default 30)")
    p.add_argument("--cleanup-budget", type=float, default=None, help=argparse.SUPPRESS)


def agent_repo(ns: argparse.Namespace) -> str | None:
    """The repository the agent writes (--repo, $FCTUI_REPO, the config's repo; None: the data dir's).
    An S3 one is checked before the agent starts (URL, credentials, one LIST of the bucket): UsageError
    (exit 2; the service is not restarted) when they are wrong; RepoError when the endpoint does not
    answer (exit 1; systemd retries the service)."""
    from ..config import repository_spec
    from ..repo.s3config import S3ConfigError, is_s3_url, preflight
    spec = repository_spec(ns.repo)
    if is_s3_url(spec):
        try:
            preflight(spec)
        except S3ConfigError as e:
            raise UsageError(str(e)) from None
    return spec


def agent_settings(ns: argparse.Namespace) -> "RunnerSettings":
    from ..jobs.runner import RunnerSettings
    defaults = RunnerSettings()
    hunt = ns.hunt_interval or defaults.hunt_interval_s
    budget = defaults.cleanup_budget_s if ns.cleanup_budget is None else ns.cleanup_budget
    return RunnerSettings(watch_interval=ns.watch_interval, hunt_interval_s=hunt, hunt_max_interval_s=2 * hunt,
                          cleanup_budget_s=budget, cleanup_floor_s=min(5.0, budget))


@command
def run_agent(ns: argparse.Namespace) -> int:
    if ns.cluster:
        if ns.service:
            raise UsageError("--cluster and --service are two ways to run the agent: choose one")
        return run_cluster(ns)
    if ns.service:
        return run_service(ns)
    given = given_connection_options(ns)
    if given:
        raise UsageError(f"the agent connects to a VRM only with --service or --cluster; drop {', '.join(given)}")
    from ..repo import RepoError
    try:
        repo = agent_repo(ns)
    except RepoError as e:
        err(str(e), "fctui agent")
        return EXIT_FAILED
    from ..agent import AgentClient, AgentError, socket_path
    from ..agent.server import Agent, daemonize
    from ..store import LockedError, StoreError
    if not ns.foreground:
        # refuse early (before detaching) when an agent already runs
        try:
            asyncio.run(AgentClient().request("hello"))
            print(f"fctui agent: already running ({socket_path()})")
            return EXIT_OK
        except AgentError:
            pass
        print(f"fctui agent: starting in the background ({socket_path()})")
        sys.stdout.flush()
        daemonize()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        agent = Agent(repo_path=repo, demo=ns.demo, per_host=ns.per_host, per_datastore=ns.per_datastore,
                      global_limit=ns.global_limit, demo_vms=ns.demo_vms, demo_time_scale=ns.demo_time_scale,
                      settings=agent_settings(ns),
                      idle_exit_s=ns.idle_exit or None)
    except LockedError as e:
        # not answering on our socket, yet holding the lock: most likely the service with its own runtime dir
        print(f"fctui agent: another agent (pid {e.holder_pid or '?'}) already runs for this user; if it is "
              "the service (`fctui agent --service`), reach it with FCTUI_RUNTIME_DIR set to its runtime "
              "directory (/run/fctui under systemd)", file=sys.stderr)
        return EXIT_FAILED
    except (StoreError, ValueError) as e:
        print(f"fctui agent: {e}", file=sys.stderr)
        return EXIT_FAILED
    asyncio.run(agent.serve())
    return EXIT_OK


# --- the unattended service -------------------------------------------------------------------------

def _unattended(ns: argparse.Namespace, prog: str, no_demo: str) -> "tuple[Connection, Any, str, Any] | int":
    """What ``--service`` and ``--cluster`` both check once, loudly, before they serve: the profile's VRM
    (the insecure warning), the repository (an S3 one checked now), the service password file, and the
    agent settings the profile asks for. The connection, repository, password and settings; else the exit
    code, the reason said on stderr."""
    from ..repo import RepoError
    from ..vrm.credentials import CredentialsError, service_password
    if ns.demo:
        raise UsageError(no_demo)
    conn = require_connection(ns, prog)
    warn_insecure(conn)
    try:
        repo = agent_repo(ns)   # --repo, $FCTUI_REPO or the config's
    except RepoError as e:
        err(str(e), prog)
        return EXIT_FAILED
    try:
        password = service_password()
    except CredentialsError as e:
        err(str(e), prog)
        return EXIT_USAGE
    settings = agent_settings(ns)
    if conn.host_snapshot_gate:
        import dataclasses
        settings = dataclasses.replace(settings, host_snapshot_gate=True)
    return conn, repo, password, settings


def run_service(ns: argparse.Namespace) -> int:
    """``fctui agent --service``: check everything it needs once, loudly, then serve until stopped."""
    from ..agent.server import Agent
    from ..store import LockedError, StoreError
    from ..vrm import VrmError
    from ..vrm.errors import VrmAuthError
    from .jobs import _check_login
    prog = "fctui agent --service"
    start = _unattended(ns, prog, "--service protects the VRM of a profile; --demo does not go with it")
    if isinstance(start, int):
        return start
    conn, repo, password, settings = start
    pid = _running_agent_pid()
    if pid is not None:
        err(_ALREADY_RUNNING.format(pid=pid), prog)
        return EXIT_FAILED
    _log_to_stderr()
    try:
        asyncio.run(_check_login(conn, password))
    except VrmAuthError as e:
        err(f"the VRM {conn.url} refused {conn.user}: {e} (is the password file right?)", prog)
        return EXIT_USAGE
    except VrmError as e:
        err(f"cannot use the VRM {conn.url}: {e}", prog)
        return EXIT_VRM
    log.info("logged in to %s as %s (profile %s)", conn.url, conn.user, conn.label or "-")
    try:
        from ..agent.service import PolicyService, ServiceConnection
    except ModuleNotFoundError as e:
        if e.name != "fctui.agent.service":
            raise
        err("this installation has no policy service (fctui.agent.service): it cannot run policies", prog)
        return EXIT_FAILED
    try:
        agent = Agent(repo_path=repo, per_host=ns.per_host, per_datastore=ns.per_datastore,
                      global_limit=ns.global_limit, settings=settings, idle_exit_s=None)
    except LockedError as e:
        err(_ALREADY_RUNNING.format(pid=e.holder_pid or "?"), prog)
        return EXIT_FAILED
    except (StoreError, ValueError) as e:
        err(str(e), prog)
        return EXIT_FAILED
    agent.service = PolicyService(agent, ServiceConnection(vrm=conn.url, user=conn.user, password=password,
                                                           access=service_access(conn)))
    asyncio.run(agent.serve())
    return EXIT_OK


def cluster_settings(ns: argparse.Namespace) -> Any:
    """The cluster's timing: production defaults, or what the hidden test options shorten (a dead proxy's
    slots must outlive its item: without --slot-ttl it is twice --ack-wait)."""
    from ..cluster.layout import ClusterSettings
    defaults = ClusterSettings()
    ack = defaults.ack_wait_s if ns.ack_wait is None else ns.ack_wait
    ttl = ns.slot_ttl if ns.slot_ttl is not None else (defaults.slot_ttl_s if ns.ack_wait is None else 2 * ack)
    try:
        return ClusterSettings(ack_wait_s=ack, slot_ttl_s=ttl, agent_ttl_s=min(defaults.agent_ttl_s, max(ttl, 1.0)))
    except ValueError as e:
        raise UsageError(str(e)) from None


def run_cluster(ns: argparse.Namespace) -> int:
    """``fctui agent --cluster URL``: one proxy of the cluster, in the foreground until SIGTERM/SIGINT.
    The VRM and the password as ``--service`` has them (a profile, the password file); exit codes too
    (3 also when the cluster cannot be reached: systemd restarts it)."""
    from ..agent.cluster import ClusterAgent
    from ..jobs.model import JobError
    from ..repo.errors import RepoError
    from ..vrm import VrmError
    from ..vrm.errors import VrmAuthError
    prog = "fctui agent --cluster"
    settings_c = cluster_settings(ns)
    start = _unattended(ns, prog, "--cluster backs up the VRM of a profile; --demo does not go with it")
    if isinstance(start, int):
        return start
    conn, repo, password, settings = start
    _log_to_stderr()
    agent = ClusterAgent(ns.cluster, repo, conn.url, conn.user, password, access=service_access(conn),
                         settings=settings, cluster_settings=settings_c, per_host=ns.per_host,
                         per_datastore=ns.per_datastore, global_limit=ns.global_limit, agent_id=ns.agent_id)
    try:
        asyncio.run(agent.run())
    except VrmAuthError as e:
        err(f"the VRM {conn.url} refused {conn.user}: {e} (is the password file right?)", prog)
        return EXIT_USAGE
    except VrmError as e:
        err(f"cannot use the VRM {conn.url}: {e}", prog)
        return EXIT_VRM
    except RepoError as e:
        err(f"repository {repo or '(default)'}: {e}", prog)
        return EXIT_FAILED
    except JobError as e:   # ClusterError: the cluster cannot be reached
        err(str(e), prog)
        return EXIT_VRM
    return EXIT_OK


def service_access(conn: "Connection") -> dict[str, Any]:
    """The VrmClient settings the service's jobs use, as the agent reads a submitted job's: TLS checked
    unless the profile or the line says --insecure (then with the CA file when one is given), and the
    profile's user_type, proxy_ip and cbt_bitmap."""
    from ..agent.server import client_access
    return client_access({"verify": conn.verify, **conn.client_options()})


log = logging.getLogger("fctui.agent")

_ALREADY_RUNNING = ("an agent (pid {pid}) already runs for this user, started on demand by the console or a "
                    "backup; only one may run. Let its jobs end and stop it (`kill {pid}`; it also exits after "
                    "--idle-exit seconds idle), then start the service again")


def _running_agent_pid() -> int | None:
    """The pid of the agent answering on this user's socket, None when none answers."""
    from ..agent import running_agent
    client = asyncio.run(running_agent())
    if client is None:
        return None
    try:
        return int(asyncio.run(client.request("hello")).get("pid") or 0) or None
    except Exception:   # it went away in between: nothing runs
        return None


def _log_to_stderr() -> None:
    """The service's log: stderr, which systemd hands to journald (it stamps the time itself)."""
    from ..vrm.credentials import install_log_redaction
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    install_log_redaction()


@command
def run_install(ns: argparse.Namespace) -> int:
    """``fctui agent install --print``: the systemd unit on stdout."""
    from ..agent.unit import ServiceUnit, UnitError, service_unit
    if not ns.print_unit:
        raise UsageError("`agent install` only prints the unit: add --print and redirect it to "
                         "/etc/systemd/system/fctui-agent.service (nothing is written by fctui)")
    given = [o for o in given_connection_options(ns) if o not in ("--profile",)]
    if given:
        raise UsageError(f"the unit names a profile (--profile NAME), which holds the VRM settings; drop "
                         f"{', '.join(given)}")
    user = ns.service_user or _invoking_user()
    dirs = _service_dirs(user)
    profile = getattr(ns, "profile", None)
    if profile and "," in profile:   # one service, one VRM, one password file (README "Several sites")
        raise UsageError(f"the service protects one VRM; --profile {profile} names several: write one unit per "
                         "site, each on a proxy of its own (--profile NAME)")
    if not profile:
        profile = _default_profile(user, dirs["config"])
    try:
        text = service_unit(ServiceUnit(fctui=_fctui_command(), user=user, profile=profile,
                                        config_dir=dirs["config"], data_dir=dirs["data"], state_dir=dirs["state"],
                                        repo=_unit_repo(ns.repo or _config_repo(user, dirs["config"]))))
    except UnitError as e:
        raise UsageError(str(e)) from None
    sys.stdout.write(text)
    return EXIT_OK


def _unit_repo(repo: str | None) -> str | None:
    """--repo as the unit names it: an S3 URL as given (checked), a directory made absolute."""
    from ..repo import RepoError
    from ..repo.s3config import is_s3_url, parse_s3_url
    if not repo:
        return None
    if is_s3_url(repo):
        try:
            return parse_s3_url(repo).url
        except RepoError as e:
            raise UsageError(str(e)) from None
    return os.path.abspath(repo)


def _invoking_user() -> str:
    """Who the unit runs as by default: the one running this, or the one who ran sudo."""
    import getpass
    me = getpass.getuser()
    return (os.environ.get("SUDO_USER") or me) if me == "root" else me


def _service_dirs(user: str) -> dict[str, str]:
    """The service user's config, data and state directories (absolute): ours as this program resolves them when
    the service runs as us, else that user's default XDG layout under their home."""
    import getpass
    import pwd
    from pathlib import Path
    try:
        home = Path(pwd.getpwnam(user).pw_dir)
    except KeyError:
        raise UsageError(f"no user {user!r} on this machine: create it (useradd --system --create-home "
                         f"{user}) or name another with --user") from None
    if user == getpass.getuser():
        from ..config import config_dir
        from ..store import data_dir, state_dir
        found = {"config": config_dir(), "data": data_dir(create=False), "state": state_dir(create=False)}
    else:
        found = {"config": home / ".config/fctui", "data": home / ".local/share/fctui",
                 "state": home / ".local/state/fctui"}
    return {k: os.path.abspath(v) for k, v in found.items()}


def _config_repo(user: str, config: str) -> str | None:
    """The repository the service user's config names (readable when that user runs this), so that the
    unit hands an S3 repository its keys even without --repo."""
    import getpass
    from pathlib import Path

    from ..config import load_config
    return load_config(Path(config) / "config.toml").repo if user == getpass.getuser() else None


def _default_profile(user: str, config: str) -> str:
    import getpass
    from pathlib import Path

    from ..config import load_config
    if user == getpass.getuser():
        cfg = load_config(Path(config) / "config.toml")
        profile = cfg.profile(None)
        if profile is not None:
            return profile.name
    raise UsageError(f"name the profile the service protects: --profile NAME (a [profiles.NAME] table of "
                     f"{Path(config) / 'config.toml'})")


def _fctui_command() -> list[str]:
    """The installed ``fctui``, absolute: the script beside this Python (a venv's bin), else the one on
    PATH, else this Python running the package."""
    import shutil
    from pathlib import Path
    beside = Path(os.path.abspath(sys.executable)).parent / "fctui"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("fctui")
    if found:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "fctui.cli"]
