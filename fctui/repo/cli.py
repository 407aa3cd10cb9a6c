"""Command-line pieces for the repository: ``repo verify|prune|gc|forget`` and ``points [VM] | points verify ID``.

The lead's ``fctui/cli.py`` calls :func:`add_repo_arguments` on its subparsers; each parser sets
``func`` to a ``run_*`` function taking the parsed args and returning the exit code:
0 fine, 1 damage found (also: gc/prune refused because of it), 2 error (message on stderr, or
``{"error": ...}`` with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

import humanize

from .errors import ChunkError, NoRepositoryError, RepoDamagedError, RepoError
from .model import RestorePoint
from .repository import Repository

EXIT_OK, EXIT_DAMAGED, EXIT_ERROR = 0, 1, 2


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError("must be in (0, 100]")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", metavar="DIR", default=None,
                   help="repository directory (default: $FCTUI_DATA_DIR or the XDG data dir, /repo)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_repo_arguments(subparsers: Any) -> None:
    """Add the ``repo`` and ``points`` commands to an argparse subparsers object."""
    repo = subparsers.add_parser("repo", help="verify, prune and garbage-collect the backup repository")
    rsub = repo.add_subparsers(dest="repo_command", metavar="{verify,prune,gc,forget}", required=True)

    v = rsub.add_parser("verify", help="re-read and re-hash chunks; report damaged restore points")
    v.add_argument("--sample", metavar="PCT", type=_percent, default=100.0,
                   help="check a random PCT percent of the chunks (default 100)")
    _common(v)
    v.set_defaults(func=run_repo_verify)

    p = rsub.add_parser("prune", help="keep the newest N restore points per VM, then collect garbage")
    p.add_argument("--keep-last", metavar="N", type=_non_negative, required=True)
    p.add_argument("--vm", metavar="VM", default=None, help="only this VM (name or URN)")
    _common(p)
    p.set_defaults(func=run_repo_prune)

    g = rsub.add_parser("gc", help="delete chunks no restore point references")
    _common(g)
    g.set_defaults(func=run_repo_gc)

    f = rsub.add_parser("forget", help="drop one catalog entry (a damaged point); gc then frees its chunks")
    f.add_argument("point_id", metavar="POINT", help="restore point id, or #N for a catalog entry without one")
    _common(f)
    f.set_defaults(func=run_repo_forget)

    pts = subparsers.add_parser("points", help="list restore points, or `points verify ID`")
    pts.add_argument("target", nargs="*", metavar="VM | verify ID",
                     help="a VM name or URN to filter by, or `verify ID` to check one restore point")
    _common(pts)
    pts.set_defaults(func=run_points)


# --- helpers ---------------------------------------------------------------------------------
def _open(args: argparse.Namespace) -> Repository:
    return Repository.open(getattr(args, "repo", None), create=False)


def _fail(args: argparse.Namespace, err: Exception, out: TextIO, errout: TextIO) -> int:
    damaged = isinstance(err, RepoDamagedError)
    if getattr(args, "json", False):
        doc: dict[str, Any] = {"error": str(err)}
        if damaged:
            doc["damaged_entries"] = [e.to_dict() for e in err.entries]  # type: ignore[attr-defined]
        print(json.dumps(doc), file=out)
    else:
        print(f"fctui: error: {err}", file=errout)
    return EXIT_DAMAGED if damaged else EXIT_ERROR


def _print_bad_entries(entries: list[Any], out: TextIO) -> None:
    for e in entries:
        print(f"DAMAGED catalog entry {e.ref}: {e.detail} (`fctui repo forget {e.ref}` drops it)", file=out)


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _size(n: int) -> str:
    return humanize.naturalsize(n, binary=True)


def _match_vm(repo: Repository, vm: str) -> str:
    """The VM URN for a name or URN found in the catalog."""
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
def run_repo_verify(args: argparse.Namespace, out: TextIO = sys.stdout, errout: TextIO = sys.stderr) -> int:
    try:
        report = _open(args).verify(sample_pct=args.sample)
    except RepoError as err:
        return _fail(args, err, out, errout)
    if args.json:
        print(json.dumps(report.to_json(), indent=2), file=out)
    else:
        print(f"checked {report.chunks_checked} of {report.chunks_total} chunks "
              f"({_size(report.bytes_checked)}) in {len(report.points_checked)} restore points, "
              f"{report.seconds:.1f} s", file=out)
        if report.ok:
            print("no damage found", file=out)
        _print_bad_entries(report.bad_entries, out)
        for pid in report.damaged_points:
            ds = [d for d in report.damaged if d.point_id == pid]
            print(f"DAMAGED {pid}: {len(ds)} block(s)", file=out)
            for d in ds[:20]:
                where = "manifest" if d.block is None else f"block {d.block}"
                print(f"  {d.disk_name or d.volume_urn} {where}: {d.problem}"
                      + (f" (chunk {d.digest[:16]}…)" if d.digest else ""), file=out)
            if len(ds) > 20:
                print(f"  … and {len(ds) - 20} more", file=out)
    return EXIT_OK if report.ok else EXIT_DAMAGED


def run_repo_prune(args: argparse.Namespace, out: TextIO = sys.stdout, errout: TextIO = sys.stderr) -> int:
    try:
        repo = _open(args)
        vm = _match_vm(repo, args.vm) if getattr(args, "vm", None) else None
        pruned = repo.prune(args.keep_last, vm)
        gc = repo.gc()
    except RepoError as err:
        return _fail(args, err, out, errout)
    if args.json:
        print(json.dumps({"prune": pruned.to_json(), "gc": gc.to_json()}, indent=2), file=out)
    else:
        print(f"removed {len(pruned.removed)} restore point(s), kept {len(pruned.kept)}", file=out)
        for pid in pruned.removed:
            print(f"  removed {pid}", file=out)
        _print_gc(gc, out)
    return EXIT_OK


def _print_gc(gc: Any, out: TextIO) -> None:
    print(f"gc: {gc.chunks_removed} chunk(s) deleted ({_size(gc.bytes_removed)} freed), "
          f"{gc.chunks_referenced} referenced, {gc.chunks_kept_recent} kept for running backups, "
          f"{gc.leases_removed} stale lease(s) cleared", file=out)
    for name in gc.leases_unreadable:
        print(f"  WARNING pending/{name} is not a lease (ignored; remove it if no backup is running)", file=out)


def run_repo_gc(args: argparse.Namespace, out: TextIO = sys.stdout, errout: TextIO = sys.stderr) -> int:
    try:
        gc = _open(args).gc()
    except RepoError as err:
        return _fail(args, err, out, errout)
    if args.json:
        print(json.dumps(gc.to_json(), indent=2), file=out)
    else:
        _print_gc(gc, out)
    return EXIT_OK


def run_repo_forget(args: argparse.Namespace, out: TextIO = sys.stdout, errout: TextIO = sys.stderr) -> int:
    try:
        what = _open(args).forget(args.point_id)
    except RepoError as err:
        return _fail(args, err, out, errout)
    if args.json:
        print(json.dumps({"forgotten": args.point_id, "what": what}), file=out)
    else:
        print(f"forgot {what}: its catalog entry is removed; `fctui repo gc` frees the chunks "
              f"no other point uses", file=out)
    return EXIT_OK


# --- points ----------------------------------------------------------------------------------
def _point_json(p: RestorePoint) -> dict[str, Any]:
    return p.to_dict()


def run_points(args: argparse.Namespace, out: TextIO = sys.stdout, errout: TextIO = sys.stderr) -> int:
    target = list(getattr(args, "target", []) or [])
    if target and target[0] == "verify":
        if len(target) != 2:
            return _fail(args, RepoError("usage: fctui points verify ID"), out, errout)
        args.point_id = target[1]
        return run_points_verify(args, out, errout)
    if len(target) > 1:
        return _fail(args, RepoError("give at most one VM"), out, errout)
    bad: list[Any] = []
    try:
        try:
            repo = _open(args)
        except NoRepositoryError:
            if getattr(args, "repo", None) is not None or target:
                raise
            repo = None  # nothing backed up yet on this machine: an empty list, not an error
        if repo is not None:
            bad = repo.damaged_entries()
        points = [] if repo is None else repo.points(_match_vm(repo, target[0]) if target else None)
    except RepoError as err:
        return _fail(args, err, out, errout)
    code = EXIT_DAMAGED if bad else EXIT_OK
    if args.json:  # stdout stays a list of points; the damage goes to stderr and the exit code
        print(json.dumps([_point_json(p) for p in points], indent=2), file=out)
        _print_bad_entries(bad, errout)
        return code
    _print_bad_entries(bad, out)
    if not points:
        print("no restore points", file=out)
        return code
    rows = [("ID", "VM", "CREATED", "KIND", "DISKS", "SIZE", "STORED", "VERIFIED")]
    for p in points:
        modes = ",".join("F" if d.mode == "full" else "I" for d in p.disks)
        rows.append((p.id, p.vm_name or p.vm_urn, _iso(p.created), p.kind, f"{len(p.disks)} [{modes}]",
                     _size(p.size_bytes), _size(p.bytes_stored), _iso(p.verified_at)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)
    return code


def run_points_verify(args: argparse.Namespace, out: TextIO = sys.stdout, errout: TextIO = sys.stderr) -> int:
    """Re-hash every chunk of one restore point and compute each disk's SHA-256 (no restore)."""
    point_id = args.point_id
    try:
        repo = _open(args)
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
    except RepoError as err:
        return _fail(args, err, out, errout)
    ok = report.ok and all(not d["damaged_blocks"] for d in disks)
    if args.json:
        print(json.dumps({"point": point_id, "ok": ok, "disks": disks,
                          "chunks_checked": report.chunks_checked}, indent=2), file=out)
    else:
        print(f"restore point {point_id} ({point.vm_name or point.vm_urn}, {_iso(point.created)}): "
              f"{'OK' if ok else 'DAMAGED'}, {report.chunks_checked} chunks checked", file=out)
        for d in disks:
            state = f"sha256 {d['sha256']}" if d["sha256"] else f"{len(d['damaged_blocks'])} damaged block(s)"
            print(f"  {d['name'] or d['volume']} ({d['mode']}, {_size(d['size_bytes'])}): {state}", file=out)
    return EXIT_OK if ok else EXIT_DAMAGED
