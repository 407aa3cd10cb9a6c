"""``fctui files``: browse a restore point's filesystems and get files back, with no restore and no root.

Three forms share the command::

    fctui files POINT [PATH] [--disk N] [--recursive] [--json]
    fctui files get POINT PATH... (--to DIR | --tar FILE|-) [--disk N] [--json]
    fctui files find POINT PATTERN [--disk N] [--json]

argparse cannot have both a positional POINT and sub-commands on one parser, so the ``files`` parser takes
the words after it as they are, and each form's own parser reads them (intermixed: options may stand
between the paths). The options common to the forms also parse before the first word
(``fctui files --disk 1 POINT``).

Exit codes: 0 done (``get``: every file written; skipped unsafe names and special files do not count),
1 failed (a damaged file or directory, a path not in the point, a destination that exists), 2 usage or
no such repository/point (as ``fctui points``). Every name printed comes from an untrusted guest
filesystem: control characters are escaped (fctui.files.names.printable).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat as statmod
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .common import (
    EXIT_FAILED, EXIT_OK, EXIT_USAGE, REPO_HELP, REPO_METAVAR, UsageError, add_json_option, non_negative_int, size,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..files.browse import PointFiles
    from ..files.extract import ExtractProgress, ExtractReport
    from ..files.model import FsEntry

USAGE = """\
fctui files POINT [PATH] [--disk N] [--recursive] [--json]
       fctui files get POINT PATH... (--to DIR | --tar FILE|-) [--disk N] [--json]
       fctui files find POINT PATTERN [--disk N] [--json]"""

DESCRIPTION = """\
Browse the filesystems of a restore point and get files back, read in place from the repository
(no restore, no root). POINT is a restore point id (`fctui points`). Each disk's top level is its
volumes: /p1, /p2 (partitions), /<vg>-<lv> (LVM logical volumes), /whole (a filesystem on the whole
disk). --disk N picks the disk (0, the first, by default).

  fctui files POINT [PATH]       list a directory (at /, the disk's volumes with type, size and label);
                                 --recursive: everything below it; --json: a list of entries
  fctui files get POINT PATH...  copy files and directories out, with mode and modification time:
                                 --to DIR writes DIR/<name> for each PATH (as cp -rp; never outside DIR,
                                 never following links, never overwriting), --tar FILE (or - for stdout)
                                 writes a pax tar
  fctui files find POINT PATTERN names matching a shell pattern (*.conf; case-insensitive), every disk
                                 unless --disk

Exit codes: 0 done, 1 failed (a damaged file is named; the others are still written), 2 usage.
A damaged chunk under a file never gives wrong bytes: the file is not written (a tar stops there)."""

FORMS = ("get", "find")
# which options each form takes (dest names), to refuse one given before the words to the wrong form
FORM_OPTIONS = {"list": {"disk", "repo", "recursive"}, "get": {"disk", "repo", "to", "tar"},
                "find": {"disk", "repo"}}
ALL_OPTIONS = {"disk", "repo", "recursive", "to", "tar"}


def _add_options(p: argparse.ArgumentParser, form: str | None) -> None:
    """The options of one form (``None``: all of them, on the ``files`` parser, without defaults so the
    form's parser sees only what was given)."""
    keep = argparse.SUPPRESS if form is None else None
    wants = ALL_OPTIONS if form is None else FORM_OPTIONS[form]
    p.add_argument("--disk", metavar="N", type=non_negative_int, default=keep,
                   help="the disk of the point (0 = the first; find: every disk unless given)")
    p.add_argument("--repo", metavar=REPO_METAVAR, default=keep, help=REPO_HELP)
    if "recursive" in wants:
        p.add_argument("-r", "--recursive", action="store_true", default=keep or False,
                       help="everything below PATH, with full paths")
    if "to" in wants:
        p.add_argument("--to", metavar="DIR", default=keep,
                       help="write each PATH as DIR/<its name> (DIR is created if missing)")
    if "tar" in wants:
        p.add_argument("--tar", metavar="FILE", default=keep,
                       help="write a pax tar to FILE (not overwritten if it exists), or - for stdout")


def register(sub: Any) -> None:
    p = sub.add_parser("files", help="browse a restore point's files and get them back (no restore)",
                       usage=USAGE, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    _add_options(p, None)
    add_json_option(p, help="print JSON")
    p.set_defaults(func=run_files, connects=False, prints_json=True)


def _form_parser(form: str) -> argparse.ArgumentParser:
    if form == "list":
        p = argparse.ArgumentParser(prog="fctui files", usage=USAGE.splitlines()[0],
                                    description="List a directory of a restore point's disk.")
        p.add_argument("point", metavar="POINT", help="restore point id (see `fctui points`)")
        p.add_argument("path", metavar="PATH", nargs="?", default="/",
                       help="a directory or file (default /: the disk's volumes)")
    elif form == "get":
        p = argparse.ArgumentParser(prog="fctui files get",
                                    description="Copy files and directories out of a restore point.")
        p.add_argument("point", metavar="POINT", help="restore point id (see `fctui points`)")
        p.add_argument("paths", metavar="PATH", nargs="+", help="files or directories (/p2/etc/nginx)")
    else:
        p = argparse.ArgumentParser(prog="fctui files find",
                                    description="Find entries whose name matches a shell pattern.")
        p.add_argument("point", metavar="POINT", help="restore point id (see `fctui points`)")
        p.add_argument("pattern", metavar="PATTERN", help="shell pattern of names (*.conf; case-insensitive)")
    _add_options(p, form)
    add_json_option(p, help="print JSON" if form != "get" else "print the summary as JSON (not with --tar -)")
    return p


def parse_words(ns: argparse.Namespace) -> str:
    """Read the words after ``files`` into ``ns``; returns the form (``list``, ``get``, ``find``)."""
    words = list(ns.words or [])
    if not words:
        raise UsageError("files needs a POINT (`fctui files --help` shows the three forms)")
    form = words[0] if words[0] in FORMS else "list"
    wrong = sorted(k for k in ALL_OPTIONS - FORM_OPTIONS[form] if hasattr(ns, k))
    if wrong:
        raise UsageError(f"files {form if form != 'list' else 'POINT'} does not take "
                         f"{', '.join('--' + k for k in wrong)}")
    _form_parser(form).parse_intermixed_args(words[1:] if form in FORMS else words, namespace=ns)
    return form


# --- printing ------------------------------------------------------------------------------------------

_KIND_BITS = {"dir": statmod.S_IFDIR, "symlink": statmod.S_IFLNK, "file": statmod.S_IFREG}


def mode_text(e: "FsEntry") -> str:
    """``drwxr-xr-x`` as ls writes it; ``?`` first for a device, fifo or socket."""
    text = statmod.filemode(_KIND_BITS.get(e.kind, 0) | (e.mode & 0o7777))
    return text if e.kind in _KIND_BITS else "?" + text[1:]


def local_time(mtime_ns: int) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime_ns // 1_000_000_000))
    except (OverflowError, OSError, ValueError):   # a guest's nonsense timestamp
        return "?"


def _entry_rows(entries: list["FsEntry"], *, full_path: bool, disk_column: bool) -> list[tuple[str, ...]]:
    from ..files.names import printable
    rows = []
    for e in entries:
        name = printable(e.path if full_path else e.name)
        if e.kind == "symlink":
            name += f" -> {printable(e.target or '')}"
        row = (mode_text(e), "-" if e.is_dir else size(e.size), local_time(e.mtime_ns), name)
        rows.append(((f"disk {e.disk}",) if disk_column else ()) + row)
    return rows


def _print_rows(rows: list[tuple[str, ...]], out: TextIO, *, right: tuple[int, ...] = ()) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        print("  ".join(cells + [r[-1]]).rstrip(), file=out)


def _print_volumes(files: "PointFiles", disk: int, out: TextIO) -> None:
    from ..files.names import printable
    point = files.point
    d = point.disks[disk]
    others = f" (disk {disk} of {len(point.disks)}: --disk N)" if len(point.disks) > 1 else ""
    print(f"restore point {point.id} ({printable(point.vm_name or point.vm_urn)}), disk {disk}: "
          f"{printable(d.disk_name or d.volume_urn)} ({size(d.size_bytes)}){others}", file=out)
    rows = [("NAME", "TYPE", "SIZE", "LABEL", "WHAT")]
    for v in files.volumes(disk):
        rows.append((f"/{printable(v.name)}", v.fs_type or "-", size(v.size), printable(v.label) or "-",
                     printable(v.what)))
    _print_rows(rows, out, right=(2,))


# --- the three forms -----------------------------------------------------------------------------------

def run_files(ns: argparse.Namespace, out: TextIO | None = None, errout: TextIO | None = None) -> int:
    out, errout = out or sys.stdout, errout or sys.stderr
    from ..files.errors import FileDamagedError, FilesError
    from ..files.names import printable
    from ..repo import RepoError
    from .repo import fail
    try:
        form = parse_words(ns)
        with _open(ns) as files:
            if form == "list":
                return _list(ns, files, out)
            if form == "find":
                return _find(ns, files, out, errout)
            return _get(ns, files, out, errout)
    except UsageError as e:
        print(f"fctui: {printable(str(e))}", file=errout)
        return EXIT_USAGE
    except RepoError as e:
        return fail(ns, e, out, errout)
    except FilesError as e:
        if getattr(ns, "json", False) and getattr(ns, "tar", None) != "-":
            doc: dict[str, Any] = {"error": str(e)}
            if isinstance(e, FileDamagedError):
                doc.update(path=e.path, disk=e.disk, block=e.block, problem=e.problem, digest=e.digest)
            print(json.dumps(doc), file=out)
        else:
            print(f"fctui: error: {printable(str(e))}", file=errout)
        return EXIT_FAILED


def _open(ns: argparse.Namespace) -> "PointFiles":
    """The point's files (RepoError: no repository, no such point; UsageError: no such disk)."""
    from ..files.browse import PointFiles
    from .repo import open_repo
    repo = open_repo(ns)
    point = repo.point(ns.point)
    if ns.disk is not None and ns.disk >= len(point.disks):
        disks = ", ".join(f"{i}: {d.disk_name or d.volume_urn}" for i, d in enumerate(point.disks))
        raise UsageError(f"restore point {point.id} has no disk {ns.disk}; its disks: {disks}")
    return PointFiles(repo, point)


def _list(ns: argparse.Namespace, files: "PointFiles", out: TextIO) -> int:
    disk = ns.disk or 0
    path = ns.path
    if path.strip().rstrip("/") == "" and not ns.recursive and not ns.json:
        _print_volumes(files, disk, out)   # every volume, also those without a readable filesystem
        return EXIT_OK
    if ns.recursive:
        walk = files.walk(path, disk=disk)
        next(walk, None)   # the path itself
        entries = list(walk)
    else:
        entry = files.stat(path, disk=disk)
        entries = files.listdir(path, disk=disk) if entry.is_dir else [entry]
    if ns.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2), file=out)
        return EXIT_OK
    _print_rows(_entry_rows(entries, full_path=ns.recursive, disk_column=False), out, right=(1,))
    return EXIT_OK


def _find(ns: argparse.Namespace, files: "PointFiles", out: TextIO, errout: TextIO) -> int:
    from ..files.names import printable
    entries = list(files.find(ns.pattern, disk=ns.disk))
    if ns.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2), file=out)
        return EXIT_OK
    if not entries:
        print(f"nothing matches {printable(ns.pattern)}", file=errout)
        return EXIT_OK
    several = ns.disk is None and len(files.point.disks) > 1
    _print_rows(_entry_rows(entries, full_path=True, disk_column=several), out, right=(2 if several else 1,))
    return EXIT_OK


class _ProgressLine:
    """One live line on a terminal (stderr), rewritten in place; the extraction already throttles calls."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.width = shutil.get_terminal_size((100, 24)).columns
        self.shown = 0

    def __call__(self, p: "ExtractProgress") -> None:
        from ..files.names import printable
        line = (f"{p.files_done}/{p.files_total} files · {size(p.bytes_done)} of {size(p.bytes_total)}"
                f" · {printable(p.current)}")[: max(10, self.width - 1)]
        self.out.write("\r" + line.ljust(self.shown))
        self.shown = len(line)
        self.out.flush()

    def close(self) -> None:
        if self.shown:
            self.out.write("\r" + " " * self.shown + "\r")
            self.out.flush()
            self.shown = 0


def _get(ns: argparse.Namespace, files: "PointFiles", out: TextIO, errout: TextIO) -> int:
    from ..files.extract import extract_tar, extract_to_dir
    from ..files.errors import FilesError
    if (ns.to is None) == (ns.tar is None):
        raise UsageError("files get needs one of --to DIR or --tar FILE|-")
    if ns.tar == "-":
        if ns.json:
            raise UsageError("--json and --tar - would both write to stdout; give --tar FILE")
        if out.isatty():
            raise UsageError("refusing to write a tar to a terminal: redirect stdout (--tar - > x.tar) "
                             "or give --tar FILE")
    disk = ns.disk or 0
    live = _ProgressLine(errout) if errout.isatty() else None
    try:
        if ns.to is not None:
            report = extract_to_dir(files, ns.paths, Path(ns.to), disk=disk, progress=live)
            where = ns.to
        elif ns.tar == "-":
            out.flush()
            stream = getattr(out, "buffer", out)
            report = extract_tar(files, ns.paths, stream, disk=disk, progress=live)
            stream.flush()
            where = "stdout"
        else:
            try:
                fobj = open(ns.tar, "xb")
            except FileExistsError:
                raise FilesError(f"{ns.tar} already exists: not overwritten") from None
            except OSError as e:
                raise FilesError(f"cannot create {ns.tar}: {e.strerror or e}") from None
            with fobj:
                try:
                    report = extract_tar(files, ns.paths, fobj, disk=disk, progress=live)
                except FilesError as e:   # same error (a FileDamagedError keeps its fields), told more
                    e.message = f"{e.message}; {ns.tar} stops before it (a truncated tar)"
                    raise
                os.fsync(fobj.fileno())
            where = ns.tar
    finally:
        if live is not None:
            live.close()
    # the tar owns stdout: the summary goes to stderr then
    summary_out = errout if ns.tar == "-" else out
    if ns.json:
        print(json.dumps(_report_json(report, where), indent=2), file=summary_out)
    else:
        _print_report(report, where, summary_out)
    return EXIT_OK if report.ok else EXIT_FAILED


def _report_json(report: "ExtractReport", where: str) -> dict[str, Any]:
    return {"to": where, "ok": report.ok, "files": report.files, "dirs": report.dirs,
            "symlinks": report.symlinks, "bytes": report.bytes, "written": report.written,
            "skipped": [{"path": p, "why": w} for p, w in report.skipped],
            "errors": [{"path": p, "message": m} for p, m in report.errors]}


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _print_report(report: "ExtractReport", where: str, out: TextIO) -> None:
    from ..files.names import printable
    print(f"wrote {_count(report.files, 'file', 'files')} ({size(report.bytes)}), "
          f"{_count(report.dirs, 'directory', 'directories')}, {_count(report.symlinks, 'link', 'links')} "
          f"to {printable(where)}", file=out)
    for path, why in report.skipped:
        print(f"skipped {printable(path)}: {printable(why)}", file=out)
    for path, message in report.errors:
        print(f"ERROR {printable(path)}: {printable(message)}", file=out)
    if report.cancelled:
        print("cancelled: what is listed above was written; no partial file is left", file=out)
    if report.errors:
        print(f"{_count(len(report.errors), 'error', 'errors')}: not written", file=out)
