"""``fctui repo verify|prune|gc|forget``: checking and upkeep of the backup repository.

Each ``run_*`` takes the parsed args (and, for tests, the output streams) and returns the exit code:
0 fine, 1 damage found (also: gc/prune refused because of it), 2 error (message on stderr, or
``{"error": ...}`` with ``--json``). The repository helpers here are shared with ``fctui points`` (restore.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from .common import EXIT_FAILED, EXIT_OK, REPO_HELP, REPO_METAVAR, add_json_option, non_negative_int, size

if TYPE_CHECKING:  # pragma: no cover
    from ..repo import Repository

EXIT_DAMAGED = EXIT_FAILED  # damage found, or gc/prune refused because of it
EXIT_ERROR = 2              # no repository, unreadable catalog, bad argument
PERIOD_RULES = ("hourly", "daily", "weekly", "monthly", "yearly")   # PBS's order after keep-last
PERIOD_WORDS = {"hourly": "hours", "daily": "days", "weekly": "ISO weeks", "monthly": "months", "yearly": "years"}


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError("must be in (0, 100]")
    return value




def add_repo_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", metavar=REPO_METAVAR, default=None, help=REPO_HELP)
    add_json_option(p, help="machine-readable output")



def register(subparsers: Any) -> None:
    repo = subparsers.add_parser("repo", help="verify, prune and garbage-collect the backup repository")
    repo.set_defaults(connects=False, prints_json=True)
    rsub = repo.add_subparsers(dest="repo_command", metavar="{verify,prune,gc,forget}", required=True)

    v = rsub.add_parser("verify", help="re-read and re-hash chunks; report damaged restore points")
    v.add_argument("--sample", metavar="PCT", type=_percent, default=100.0,
                   help="check a random PCT percent of the chunks (default 100)")
    add_repo_option(v)
    v.set_defaults(func=run_repo_verify)

    p = rsub.add_parser("prune", help="keep restore points by PBS-style retention per VM, then collect garbage",
                        description="Keep, per VM, the points the --keep-* rules select as Proxmox Backup "
                                    "Server's prune does (rules applied in the order below, periods in the "
                                    "local time zone, weeks are ISO weeks); remove the others, then collect "
                                    "garbage. --keep-last alone keeps the newest N (0 with --vm: all go).")
    p.add_argument("--keep-last", metavar="N", type=non_negative_int, default=None, help="the newest N points")
    for period in PERIOD_RULES:
        p.add_argument(f"--keep-{period}", metavar="N", type=non_negative_int, default=None,
                       help=f"the newest point of each of N {PERIOD_WORDS[period]}, newest first ({PERIOD_WORDS[period]} "
                            f"without points, or holding one an earlier rule keeps, do not count)")
    p.add_argument("--dry-run", action="store_true",
                   help="print which points would be kept (and by which rule) and removed; remove nothing")
    p.add_argument("--vm", metavar="VM", default=None, help="only this VM (name or URN)")
    add_repo_option(p)
    p.set_defaults(func=run_repo_prune)

    g = rsub.add_parser("gc", help="delete chunks no restore point references")
    add_repo_option(g)
    g.set_defaults(func=run_repo_gc)

    f = rsub.add_parser("forget", help="drop one catalog entry (a damaged point); gc then frees its chunks")
    f.add_argument("point_id", metavar="POINT", help="restore point id, or #N for a catalog entry without one")
    add_repo_option(f)
    f.set_defaults(func=run_repo_forget)


# --- helpers ---------------------------------------------------------------------------------
def repo_spec(args: argparse.Namespace) -> str | None:
    """The repository the command names (--repo, $FCTUI_REPO, the config's repo), None: the data dir's.
    An S3 one is checked first (URL, credentials, bucket): RepoError says what is wrong."""
    from ..config import ConfigError, repository_spec
    from ..repo import RepoError
    from ..repo.s3config import is_s3_url, preflight
    try:
        spec = repository_spec(getattr(args, "repo", None))
    except ConfigError as e:
        raise RepoError(str(e)) from None
    if is_s3_url(spec):
        preflight(spec)
    return spec


def open_repo(args: argparse.Namespace) -> "Repository":
    from ..repo import Repository
    return Repository.open(repo_spec(args), create=False)


def fail(args: argparse.Namespace, err: Exception, out: TextIO, errout: TextIO) -> int:
    from ..repo import RepoDamagedError
    damaged = isinstance(err, RepoDamagedError)
    if getattr(args, "json", False):
        doc: dict[str, Any] = {"error": str(err)}
        if damaged:
            doc["damaged_entries"] = [e.to_dict() for e in err.entries]  # type: ignore[attr-defined]
        print(json.dumps(doc), file=out)
    else:
        print(f"fctui: error: {err}", file=errout)
    return EXIT_DAMAGED if damaged else EXIT_ERROR


def print_bad_entries(entries: list[Any], out: TextIO) -> None:
    for e in entries:
        print(f"DAMAGED catalog entry {e.ref}: {e.detail} (`fctui repo forget {e.ref}` drops it)", file=out)


def iso_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def match_vm(repo: "Repository", vm: str) -> str:
    """The VM URN for a name or URN found in the catalog."""
    from ..repo import RepoError
    urns = {p.vm_urn: p.vm_name for p in repo.points()}
    if vm in urns:
        return vm
    by_name = sorted(u for u, name in urns.items() if name == vm)
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise RepoError(f"several VMs are named {vm!r}; give the URN: {', '.join(by_name)}")
    raise RepoError(f"no restore points for VM {vm!r}")


# --- repo verify / prune / gc ----------------------------------------------------------------
def run_repo_verify(args: argparse.Namespace, out: TextIO | None = None, errout: TextIO | None = None) -> int:
    out, errout = out or sys.stdout, errout or sys.stderr
    from ..repo import RepoError
    try:
        repo = open_repo(args)
        report = repo.verify(sample_pct=args.sample)
    except RepoError as err:
        return fail(args, err, out, errout)
    if args.json:
        print(json.dumps(report.to_json(), indent=2), file=out)
    else:
        print(f"checked {report.chunks_checked} of {report.chunks_total} chunks "
              f"({size(report.bytes_checked)}) in {len(report.points_checked)} restore points, "
              f"{report.seconds:.1f} s", file=out)
        if report.ok:
            print("no damage found", file=out)
        print_bad_entries(report.bad_entries, out)
        for pid in report.damaged_points:
            ds = [d for d in report.damaged if d.point_id == pid]
            print(f"DAMAGED {pid}: {len(ds)} block(s)", file=out)
            for d in ds[:20]:
                where = "manifest" if d.block is None else f"block {d.block}"
                obj = repo.damage_where(d.digest) if d.digest else None  # S3: the object's key
                print(f"  {d.disk_name or d.volume_urn} {where}: {d.problem}"
                      + (f" (object {obj})" if obj else f" (chunk {d.digest[:16]}…)" if d.digest else ""), file=out)
            if len(ds) > 20:
                print(f"  … and {len(ds) - 20} more", file=out)
    return EXIT_OK if report.ok else EXIT_DAMAGED


def run_repo_prune(args: argparse.Namespace, out: TextIO | None = None, errout: TextIO | None = None) -> int:
    out, errout = out or sys.stdout, errout or sys.stderr
    from ..repo import RepoError
    from ..repo.retention import Retention, RetentionError
    periods = {f"keep_{period}": getattr(args, f"keep_{period}", None) for period in PERIOD_RULES}
    dry_run = getattr(args, "dry_run", False)
    if args.keep_last is None and all(n is None for n in periods.values()):
        return fail(args, RepoError("repo prune needs at least one of --keep-last, "
                                    + ", ".join(f"--keep-{period}" for period in PERIOD_RULES)), out, errout)
    try:
        repo = open_repo(args)
        vm = match_vm(repo, args.vm) if getattr(args, "vm", None) else None
        if all(n is None for n in periods.values()):
            pruned = repo.prune(args.keep_last, vm, dry_run=dry_run)
        else:
            retention = Retention(keep_last=args.keep_last or 0, **{k: n or 0 for k, n in periods.items()})
            # Periods in the system's local zone (None), as the operator reads the times
            pruned = repo.prune_retention(retention, vm_urn=vm, tz=None, dry_run=dry_run)
        if dry_run:
            _print_prune_plan(repo, pruned, args.json, out)
            return EXIT_OK
        gc = repo.gc()
    except (RepoError, RetentionError) as err:
        return fail(args, err, out, errout)
    if args.json:
        print(json.dumps({"prune": pruned.to_json(), "gc": gc.to_json()}, indent=2), file=out)
    else:
        print(f"removed {len(pruned.removed)} restore point(s), kept {len(pruned.kept)}", file=out)
        for pid in pruned.removed:
            print(f"  removed {pid}", file=out)
        _print_gc(gc, out)
    return EXIT_OK


def _print_prune_plan(repo: "Repository", pruned: Any, as_json: bool, out: TextIO) -> None:
    """A dry run: every point of the pruned VMs, newest first per VM, with what would happen to it and why."""
    if as_json:
        print(json.dumps({"dry_run": True, "prune": pruned.to_json()}, indent=2), file=out)
        return
    print(f"dry run: would remove {len(pruned.removed)} restore point(s), keep {len(pruned.kept)}", file=out)
    involved = set(pruned.kept) | set(pruned.removed)
    points = sorted((p for p in repo.points() if p.id in involved), key=lambda p: (p.vm_name, p.vm_urn, -p.created))
    removed = set(pruned.removed)
    for p in points:
        what = "remove" if p.id in removed else "keep  "
        rule = "" if p.id in removed else f"  {pruned.why.get(p.id, '')}"
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(p.created))
        print(f"  {what} {p.id}  {p.vm_name or p.vm_urn}  {when}{rule}".rstrip(), file=out)


def _print_gc(gc: Any, out: TextIO) -> None:
    print(f"gc: {gc.chunks_removed} chunk(s) deleted ({size(gc.bytes_removed)} freed), "
          f"{gc.chunks_referenced} referenced, {gc.chunks_kept_recent} kept for running backups, "
          f"{gc.leases_removed} stale lease(s) cleared", file=out)
    for name in gc.leases_unreadable:
        print(f"  WARNING pending/{name} is not a lease (ignored; remove it if no backup is running)", file=out)


def run_repo_gc(args: argparse.Namespace, out: TextIO | None = None, errout: TextIO | None = None) -> int:
    out, errout = out or sys.stdout, errout or sys.stderr
    from ..repo import RepoError
    try:
        gc = open_repo(args).gc()
    except RepoError as err:
        return fail(args, err, out, errout)
    if args.json:
        print(json.dumps(gc.to_json(), indent=2), file=out)
    else:
        _print_gc(gc, out)
    return EXIT_OK


def run_repo_forget(args: argparse.Namespace, out: TextIO | None = None, errout: TextIO | None = None) -> int:
    out, errout = out or sys.stdout, errout or sys.stderr
    from ..repo import RepoError
    try:
        what = open_repo(args).forget(args.point_id)
    except RepoError as err:
        return fail(args, err, out, errout)
    if args.json:
        print(json.dumps({"forgotten": args.point_id, "what": what}), file=out)
    else:
        print(f"forgot {what}: its catalog entry is removed; `fctui repo gc` frees the chunks "
              f"no other point uses", file=out)
    return EXIT_OK
