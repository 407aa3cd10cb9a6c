"""``fctui mount POINT MOUNTPOINT``: a restore point's disk as a read-only FUSE filesystem (optional: needs
``pip install 'fctui[mount]'`` and libfuse). Runs in the foreground until unmounted.

Exit codes: 0 unmounted, 1 FUSE not available or the mount failed, 2 usage or no such repository/point."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, REPO_HELP, REPO_METAVAR, UsageError, non_negative_int


def register(sub: Any) -> None:
    p = sub.add_parser("mount", help="a restore point's disk as a read-only filesystem (FUSE, optional)",
                       description="Mount one disk of a restore point read-only (FUSE), read in place from the "
                                   "repository: its volumes at the top (/p1, /p2, /<vg>-<lv>, /whole). Runs "
                                   "until `fusermount -u MOUNTPOINT` or Ctrl-C. Needs pip install "
                                   "'fctui[mount]' and libfuse.")
    p.add_argument("point", metavar="POINT", help="restore point id (see `fctui points`)")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an empty directory")
    p.add_argument("--disk", metavar="N", type=non_negative_int, default=0,
                   help="the disk of the point (0 = the first)")
    p.add_argument("--repo", metavar=REPO_METAVAR, default=None, help=REPO_HELP)
    p.set_defaults(func=run_mount, connects=False, prints_json=False)


def run_mount(ns: argparse.Namespace, out: TextIO | None = None, errout: TextIO | None = None) -> int:
    errout = errout or sys.stderr
    from ..files.browse import PointFiles
    from ..files.errors import FilesError
    from ..files.mount import load_fuse, mount
    from ..repo import RepoError
    from .repo import fail, open_repo
    try:
        where = os.path.abspath(ns.mountpoint)
        if not os.path.isdir(where):
            raise UsageError(f"mount point {where} is not a directory")
        if os.listdir(where):
            raise UsageError(f"mount point {where} is not empty")
        repo = open_repo(ns)
        point = repo.point(ns.point)
        if ns.disk >= len(point.disks):
            raise UsageError(f"restore point {point.id} has no disk {ns.disk} (it has {len(point.disks)})")
        load_fuse()   # says what to install
        with PointFiles(repo, point) as files:
            print(f"restore point {point.id} disk {ns.disk} mounted read-only at {where}; "
                  f"`fusermount -u {where}` (or Ctrl-C) unmounts it", file=errout, flush=True)
            mount(files, where, disk=ns.disk, log=errout)
        return EXIT_OK
    except UsageError as e:
        print(f"fctui: {e}", file=errout)
        return EXIT_USAGE
    except RepoError as e:
        return fail(ns, e, out or sys.stdout, errout)
    except FilesError as e:
        print(f"fctui: error: {e}", file=errout)
        return EXIT_FAILED
