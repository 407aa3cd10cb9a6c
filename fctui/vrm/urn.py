"""URN <-> URI conversion. The VRM derives one from the other mechanically
(``urn:sites:S:vms:i-1`` <-> ``/service/sites/S/vms/i-1``), and clients rely on it."""

from __future__ import annotations


def urn_to_uri(urn: str) -> str:
    if not urn.startswith("urn:"):
        raise ValueError(f"not a URN: {urn!r}")
    return "/service/" + urn[4:].replace(":", "/")


def uri_to_urn(uri: str) -> str:
    path = uri.split("?", 1)[0]
    if not path.startswith("/service/"):
        raise ValueError(f"not a VRM URI: {uri!r}")
    return "urn:" + path[len("/service/"):].strip("/").replace("/", ":")


def site_uri(urn: str) -> str:
    """The URI of the site an object belongs to (``/service/sites/<id>``)."""
    parts = urn.split(":")
    if len(parts) < 3 or parts[0] != "urn" or parts[1] != "sites":
        raise ValueError(f"not a site-scoped URN: {urn!r}")
    return f"/service/sites/{parts[2]}"


def site_id(urn: str) -> str:
    """The site id inside a site-scoped URN (``urn:sites:4D9D0815:vms:i-1`` -> ``4D9D0815``): which VRM
    site a VM, a volume or a restore point's VM belongs to. Real sites have distinct ids, so a VM URN
    names its VM across every VRM the console shows."""
    parts = urn.split(":")
    if len(parts) < 3 or parts[0] != "urn" or parts[1] != "sites" or not parts[2]:
        raise ValueError(f"not a site-scoped URN: {urn!r}")
    return parts[2]


def last_segment(urn_or_uri: str) -> str:
    """The object id: the last ``:`` or ``/`` separated part (VM ``i-000000E5``, task ``4962``)."""
    s = urn_or_uri.rstrip("/")
    return s.replace("/", ":").rsplit(":", 1)[-1]
