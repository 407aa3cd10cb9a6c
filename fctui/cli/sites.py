"""Several sites in one command (issue 19): ``fctui check``, ``fctui status`` and ``fctui jobs`` with
``--profile a,b``, ``--all-sites`` or several ``--vrm``. Each site is read on its own (concurrently) and
reported under its label (the profile name, else the VRM's host:port); a site that cannot be read is
reported as such and never hides the others. The command's exit code is the worst site's:

* ``fctui check``: the highest code of the sites -- 3 when any VRM cannot be reached or refuses the login,
  else 2 when a site's settings are wrong (its profile's site URN is not on that VRM), else 0.
* ``fctui status`` (Nagios): CRITICAL (2) > UNKNOWN (3) > WARNING (1) > OK (0). A breached or uncovered
  VM on a site that answered is certain and urgent, so a stopped VRM elsewhere (UNKNOWN) must not turn
  the alert into "the check is broken"; a site that cannot be read may hide breaches, so it outranks
  another site's mere "at risk".

Only the standard library at module level: ``--help`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from .common import Connection

# Nagios codes by how bad they are (status): OK < WARNING < UNKNOWN < CRITICAL
STATUS_SEVERITY = {0: 0, 1: 1, 3: 2, 2: 3}


def worst_status(codes: Iterable[int]) -> int:
    """The Nagios code of several sites: the most severe by :data:`STATUS_SEVERITY` (0 for none)."""
    return max(codes, key=lambda c: STATUS_SEVERITY.get(c, 2), default=0)


def worst_check(codes: Iterable[int]) -> int:
    """The exit code of ``fctui check`` over several sites: the highest (0 ran, 2 settings, 3 VRM)."""
    return max(codes, default=0)


def passwords(conns: "list[Connection]") -> list[str]:
    """Each site's password, asked before any VRM is contacted: every prompt comes first, one per VRM
    and naming it (common.password_for). Two profiles of one VRM and user (two of its sites) share the
    first one's answer unless the second has its own ``FCTUI_PASSWORD_<LABEL>``: one prompt per VRM.
    Raises UsageError for the first site without one. Kept in memory only."""
    import os

    from ..vrm.credentials import site_password_env
    from .common import password_for
    known: dict[tuple[str, str], str] = {}
    out = []
    for c in conns:
        key = (c.url.rstrip("/").lower(), c.user)
        own = bool(c.label and os.environ.get(site_password_env(c.label)))
        if key in known and not own:
            out.append(known[key])
            continue
        out.append(password_for(c))
        known.setdefault(key, out[-1])
    return out


def refuse_site_option(ns: object, count: int) -> None:
    """``--site URN`` names a site of one VRM: with several VRMs each reads its profile's site (else its first)."""
    from .common import UsageError
    if getattr(ns, "site", None) and count > 1:
        raise UsageError(f"--site names a site of one VRM; with {count} VRMs set site = \"URN\" in each profile")
