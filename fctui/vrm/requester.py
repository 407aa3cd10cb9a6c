"""The requester's IP address that a backup-resource prepare must carry.

vrm-api.md §16: eSDK declares ``ip`` of ``POST <volUri>/backupresources`` mandatory, "申请方IP地址" (the
requesting side's IP); the VRM/CNA then accepts the data connection from that address (§9.3 [I]). Ours
is the local address the operating system picks to reach the VRM, unless the profile's ``proxy_ip``
(or ``--proxy-ip``) says otherwise (a NAT, several interfaces, a data network apart from management).
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from .errors import VrmError

log = logging.getLogger("fctui.vrm.client")

# Any address outside this machine will do: connecting a UDP socket only asks the routing table which
# local address would be used; no packet is sent. (TEST-NET-1, RFC 5737.)
_DEFAULT_ROUTE_PROBE = "192.0.2.1"


def check_ip(value: str, what: str = "proxy_ip") -> str:
    """``value`` as a plain IPv4/IPv6 address (what a VRM takes in ``ip``); VrmError otherwise."""
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        raise VrmError(f"{what} must be an IP address such as 10.0.0.5, got {value!r}") from None


def _via_udp(host: str, port: int) -> str:
    """The local address the routing table picks towards ``host`` (raises OSError)."""
    last: OSError | None = None
    for family, _, _, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect(addr)
                ip = s.getsockname()[0]
        except OSError as e:
            last = e
            continue
        if ip and ip not in ("0.0.0.0", "::"):
            return str(ipaddress.ip_address(ip.split("%", 1)[0]))
    raise last or OSError(f"no usable address for {host}")


def local_address_towards(host: str, port: int) -> str:
    """This machine's address as seen by ``host``: the route to it, else (a name this machine cannot
    resolve, e.g. behind an HTTP proxy or an in-process test VRM) the default route's, else the host
    name's. Blocking (name resolution): call it off the event loop. Raises VrmError when none is known."""
    tried: list[str] = []
    for what, probe in ((host, lambda: _via_udp(host, port)),
                        ("the default route", lambda: _via_udp(_DEFAULT_ROUTE_PROBE, port)),
                        ("this host's name", lambda: check_ip(socket.gethostbyname(socket.gethostname())))):
        try:
            ip = probe()
        except (OSError, VrmError) as e:
            tried.append(f"{what}: {e}")
            continue
        if what != host:
            log.info("no route to %s (%s): using %s's address %s as the backup requester's IP",
                     host, "; ".join(tried), what, ip)
        return ip
    raise VrmError(f"cannot tell this machine's address towards {host} ({'; '.join(tried)}): "
                   "set proxy_ip in the profile or --proxy-ip")
