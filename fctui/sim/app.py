"""The simulator's ASGI app: the VRM REST API under /service (also mirrored under
/OmsPortal/service), the backup-resource data endpoint under /sim-data, and the control API
under /sim (no VRM token).

Data endpoint (our documented stand-in for the non-public CNA socket, vrm-api.md §9.4): a ready
backup resource's ``resourceUrl`` is ``<base>/sim-data/resources/<taskId>``. Requests carry
``X-Resource-Token: <resource token>``. ``GET`` (optionally with ``Range: bytes=a-b``) streams the
point-in-time bytes of the snapshot in ``snapUrn2`` (206 for a range); ``PUT`` with
``Content-Range: bytes a-b/total`` writes bytes into the volume of a restore resource (204).

Dropped connections (fault injection ``drop``): the app starts a response and then raises
``SimulatedDrop`` (an ``httpx.RemoteProtocolError``). Under httpx.ASGITransport the client sees that
transport error; under uvicorn the socket is closed mid-response, which the client also sees as a
``RemoteProtocolError``.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from fctui.sim import guestdisks, guestfs, ops, views
from fctui.sim.generator import Simulator
from fctui.sim.state import C, Fault, ManualClock, OffsetClock, VrmError, bad, not_found

JSON_TYPE = "application/json;charset=UTF-8"
ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]
MAX_LIMIT = 100
STREAM_CHUNK = 1024 * 1024


class SimulatedDrop(httpx.RemoteProtocolError):
    """Raised by the app to cut a connection without a complete response."""


class _DropResponse(Response):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", JSON_TYPE.encode()), (b"content-length", b"64")]})
        raise SimulatedDrop("connection dropped by the simulator (fault injection)")


def _huge_answer(sim: Simulator, request: Request, n: int, status: int = 200) -> Response:
    """A JSON answer of ``n`` bytes (status 200 unless the fault gives one), produced as the client reads it; the bytes handed to the
    server are counted in stats (``faultBodyBytesSent``), so a test sees where the client stopped."""
    sim.stats["fault_body_bytes_sent"] = 0

    async def body() -> AsyncIterator[bytes]:
        head, tail = b'{"pad":"', b'"}'
        yield head
        sim.stats["fault_body_bytes_sent"] += len(head)
        left = max(0, n - len(head) - len(tail))
        piece = b"x" * (256 << 10)
        while left > 0:
            if await request.is_disconnected():  # the client gave up: stop producing
                return
            part = piece[:left]
            yield part
            sim.stats["fault_body_bytes_sent"] += len(part)
            left -= len(part)
        yield tail
        sim.stats["fault_body_bytes_sent"] += len(tail)
    return StreamingResponse(body(), status_code=status, media_type=JSON_TYPE)


def jresp(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, media_type=JSON_TYPE, headers=headers)


def err(e: VrmError) -> Response:
    return jresp(e.body(), e.status)


ERROR_SHAPES = ("errorCode", "error", "empty")


def _injected_error(f: Fault, code: str) -> Response:
    """The error answer of a fault: the VRM's ``{errorCode, errorDes}`` (vrm-api.md §4.1), or a shape
    a client must still read: ``{"error":{"code","message"}}`` (CNREF's) or nothing at all (as 404s
    may come, §4.1)."""
    assert f.status is not None
    des = f"Injected fault (errorCode {code})"
    if f.error_shape == "empty":
        return Response(b"", status_code=f.status)
    if f.error_shape == "error":
        return jresp({"error": {"code": code, "message": des}}, f.status)
    return jresp({"errorCode": code, "errorDes": des}, f.status)


def _stringify_numbers(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _stringify_numbers(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_stringify_numbers(v) for v in data]
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return str(data)
    return data


def reshape(resp: Response, faults: list[Fault]) -> Response:
    """Apply the matched faults' answer reshaping (content type, numbers as strings) to ``resp``."""
    ctype = next((f.content_type for f in faults if f.content_type is not None), None)
    strings = any(f.numbers_as_strings for f in faults)
    if (ctype is None and not strings) or isinstance(resp, StreamingResponse):
        return resp
    body = bytes(resp.body)
    if strings and body:
        body = json.dumps(_stringify_numbers(json.loads(body)), separators=(",", ":"),
                          ensure_ascii=False).encode()
    headers = {k: v for k, v in resp.headers.items() if k not in ("content-length", "content-type")}
    if ctype is None:
        ctype = resp.headers.get("content-type")
    if ctype:
        headers["content-type"] = ctype
    return Response(body, status_code=resp.status_code, headers=headers)


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise bad("The request body must be a JSON object.")
    return data


VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?$")


def normalise_version(v: str) -> str:
    return v.strip().lstrip("vV")


def check_accept(sim: Simulator, accept: str | None) -> None:
    """Accept: application/json;version=X;charset=UTF-8 — X with/without v, 2-3 parts, or none."""
    if not accept:
        return
    for part in accept.split(";"):
        part = part.strip()
        if part.lower().startswith("version="):
            v = part.split("=", 1)[1].strip()
            if not VERSION_RE.match(v):
                raise bad(f"The version number {v!r} is wrong.", C.VERSION)
            unsupported = {normalise_version(u) for u in sim.config.unsupported_versions}
            if normalise_version(v) in unsupported:
                raise bad(f"The version number {v} is not supported.", C.VERSION)


# ---------------------------------------------------------------------------------------------
# Query helpers
# ---------------------------------------------------------------------------------------------
def q_int(request: Request, key: str) -> int | None:
    v = request.query_params.get(key)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise bad(f"{key} must be an integer.") from None


def q_bool(request: Request, key: str) -> bool | None:
    v = request.query_params.get(key)
    if v is None or v == "":
        return None
    if v.lower() in ("true", "1"):
        return True
    if v.lower() in ("false", "0"):
        return False
    raise bad(f"{key} must be true or false.")


def paged(request: Request, items: list[Any], whole_without_paging: bool) -> tuple[list[Any], int]:
    limit = q_int(request, "limit")
    offset = q_int(request, "offset")
    total = len(items)
    if limit is None and offset is None and whole_without_paging:
        return items, total
    if limit is None:
        limit = MAX_LIMIT
    if limit <= 0:
        raise bad("limit must be positive.")
    limit = min(limit, MAX_LIMIT)
    offset = offset or 0
    if offset < 0:
        raise bad("offset must not be negative.")
    return items[offset : offset + limit], total


def name_filter(request: Request) -> str | None:
    name = request.query_params.get("name")
    if name is None:
        return None
    if name == "":
        raise bad("name must not be empty.")
    return name.lower()


# ---------------------------------------------------------------------------------------------
# Handlers for /service/sites/<site>/...
# ---------------------------------------------------------------------------------------------
Handler = Callable[[Request, Simulator, re.Match[str]], Awaitable[Response]]
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        ROUTES.append((method, re.compile("^" + pattern + "$"), fn))
        return fn

    return deco


@route("GET", "")
async def h_site(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return jresp(views.site(sim))


@route("GET", "/clusters")
async def h_clusters(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    name = name_filter(request)
    urns = set(request.query_params.getlist("clusterUrns"))
    parent = request.query_params.get("parentObjUrn")
    out = []
    for c in sim.clusters.values():
        urn = sim.urn("clusters", c.id)
        if name and name not in c.name.lower():
            continue
        if urns and urn not in urns:
            continue
        if parent and parent != sim.site_urn:
            continue
        out.append(views.cluster(sim, c))
    return jresp({"total": len(out), "clusters": out})


@route("GET", r"/clusters/(\d+)")
async def h_cluster(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    c = sim.clusters.get(int(m.group(1)))
    if c is None:
        raise not_found(f"The cluster {m.group(1)} does not exist.")
    return jresp(views.cluster(sim, c))


@route("GET", r"/clusters/(\d+)/computeresource")
async def h_cluster_res(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    c = sim.clusters.get(int(m.group(1)))
    if c is None:
        raise not_found(f"The cluster {m.group(1)} does not exist.")
    d = views.cluster(sim, c)
    return jresp({"cpuResource": d["cpuResource"], "memResource": d["memResource"]})


@route("GET", r"/clusters/(\d+)/allvmcomputeresource")
async def h_cluster_vm_res(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    """vrm-api.md §16: NOVA asks ``?isNeedAllocVcpus=true&detail=true``."""
    c = sim.clusters.get(int(m.group(1)))
    if c is None:
        raise not_found(f"The cluster {m.group(1)} does not exist.")
    return jresp(views.cluster_vm_compute_resource(
        sim, c, bool(q_bool(request, "isNeedAllocVcpus")), bool(q_bool(request, "detail"))))


@route("GET", "/monitors/getSysCurrentTime")
async def h_current_time(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    """vrm-api.md §16 (NOVA): ``currentUtcTime`` in epoch milliseconds [I: sent as an integer]."""
    return jresp({"currentUtcTime": int(sim.now() * 1000)})


@route("GET", "/dvswitchs")
async def h_dvswitchs(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    """vrm-api.md §6 (NOVA, ESDK-CS): the distributed switches; filters ``location`` (cluster or host
    URN) and ``name`` (fuzzy) [I: the ``dvSwitchs`` key and the fields]."""
    name = name_filter(request)
    loc = request.query_params.get("location")
    out = [views.dvswitch(sim, d) for d in sim.dvswitches.values()]
    if loc and sim.by_urn(loc, "clusters") is None and sim.by_urn(loc, "hosts") is None:
        out = []
    if name:
        out = [d for d in out if name in d["name"].lower()]
    return jresp({"dvSwitchs": out})


def _dvswitch(sim: Simulator, dvs_id: str) -> Any:
    d = sim.dvswitches.get(int(dvs_id))
    if d is None:
        raise not_found(f"The distributed switch {dvs_id} does not exist.")
    return d


@route("GET", r"/dvswitchs/(\d+)")
async def h_dvswitch(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return jresp(views.dvswitch(sim, _dvswitch(sim, m.group(1))))


def _port_groups(request: Request, sim: Simulator, switches: list[Any]) -> Response:
    name = name_filter(request)
    pgs = [views.portgroup(sim, d, pg) for d in switches for pg in d.port_groups.values()]
    if name:
        pgs = [p for p in pgs if name in p["name"].lower()]
    page, total = paged(request, pgs, True)
    return jresp({"total": total, "portGroups": page})


@route("GET", r"/dvswitchs/(\d+)/portgroups")
async def h_dvs_portgroups(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return _port_groups(request, sim, [_dvswitch(sim, m.group(1))])


@route("GET", r"/dvswitchs/(\d+)/portgroups/(\d+)")
async def h_portgroup(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    hit = sim.port_group_by_urn(sim.urn("dvswitchs", m.group(1)) + f":portgroups:{m.group(2)}")
    if hit is None:
        raise not_found(f"The port group {m.group(2)} does not exist.", C.PORTGROUP_NOT_FOUND)
    return jresp(views.portgroup(sim, *hit))


@route("GET", "/portgroups")
async def h_portgroups(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    """vrm-api.md §6: every port group of the site [I: the same shape as a switch's list]."""
    return _port_groups(request, sim, list(sim.dvswitches.values()))


@route("GET", "/hosts")
async def h_hosts(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    scope = request.query_params.get("scope")
    name = name_filter(request)
    ip = request.query_params.get("ip")
    hosts = list(sim.hosts.values())
    if scope:
        if scope == "default":
            hosts = []  # every simulated host belongs to a cluster
        else:
            cl = sim.by_urn(scope, "clusters")
            ds = sim.by_urn(scope, "datastores")
            if cl is not None:
                hosts = [h for h in hosts if h.cluster is cl]
            elif ds is not None:
                hosts = [h for h in hosts if h in ds.hosts]
            else:
                hosts = []
    if name:
        hosts = [h for h in hosts if name in h.name.lower()]
    if ip:
        hosts = [h for h in hosts if h.ip == ip]
    page, total = paged(request, hosts, True)
    return jresp({"total": total, "hosts": [views.host(sim, h) for h in page]})


@route("GET", r"/hosts/(\d+)")
async def h_host(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    h = sim.hosts.get(int(m.group(1)))
    if h is None:
        raise not_found(f"The host {m.group(1)} does not exist.")
    return jresp(views.host(sim, h))


@route("GET", "/datastores")
async def h_datastores(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    scope = request.query_params.get("scope")
    name = name_filter(request)
    status = request.query_params.get("status")
    dss = list(sim.datastores.values())
    host_scope = False
    if scope:
        cl = sim.by_urn(scope, "clusters")
        h = sim.by_urn(scope, "hosts")
        if cl is not None:
            dss = [d for d in dss if any(x.cluster is cl for x in d.hosts)]
        elif h is not None:
            dss = [d for d in dss if h in d.hosts]
            host_scope = True
        else:
            dss = []
    if name:
        dss = [d for d in dss if name in d.name.lower()]
    if status:
        dss = [d for d in dss if (("CONNECTED" if host_scope else d.status) == status)]
    page, total = paged(request, dss, True)
    return jresp({"total": total,
                  "datastores": [views.datastore(sim, d, host_scope) for d in page]})


@route("GET", r"/datastores/(\d+)")
async def h_datastore(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    d = sim.datastores.get(int(m.group(1)))
    if d is None:
        raise not_found(f"The datastore {m.group(1)} does not exist.")
    return jresp(views.datastore(sim, d))


@route("POST", r"/datastores/(\d+)/action/ifconcluster")
async def h_ds_ifcluster(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    d = sim.datastores.get(int(m.group(1)))
    if d is None:
        raise not_found(f"The datastore {m.group(1)} does not exist.")
    body = await read_json(request)
    cl = sim.by_urn(str(body.get("clusterUrn", "")), "clusters")
    if cl is None:
        raise bad("clusterUrn does not exist.")
    return jresp({"ifConnectFlag": any(h.cluster is cl for h in d.hosts)})


VM_STATUSES = ("running", "stopped", "unknown", "hibernated", "creating", "shutting-down",
               "migrating", "fault-resuming", "starting", "stopping", "hibernating", "pause",
               "recycling")


def filter_vms(request: Request, sim: Simulator) -> list[Any]:
    qp = request.query_params
    key = tuple(sorted((k, v) for k, v in qp.multi_items() if k not in ("limit", "offset", "detail")))
    cached = sim.list_cache.get(("vms", key))
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    name = name_filter(request)
    status = qp.get("status")
    is_tpl = q_bool(request, "isTemplate")
    is_lc = q_bool(request, "isLinkClone")
    uuid = qp.get("uuid")
    vm_id = qp.get("vmId")
    pv = qp.get("pvDriverStatus")
    scope = qp.get("scope")
    vmurns = set(qp.getlist("vmurns"))
    pred_scope: Callable[[Any], bool] | None = None
    if scope:
        cl = sim.by_urn(scope, "clusters")
        h = sim.by_urn(scope, "hosts")
        ds = sim.by_urn(scope, "datastores")
        vol = sim.by_urn(scope, "volumes")
        if cl is not None:
            pred_scope = lambda v: v.cluster is cl  # noqa: E731
        elif h is not None:
            pred_scope = lambda v: v.host is h  # noqa: E731
        elif ds is not None:
            pred_scope = lambda v: any(d.volume.datastore is ds for d in v.disks)  # noqa: E731
        elif vol is not None:
            pred_scope = lambda v: any(d.volume is vol for d in v.disks)  # noqa: E731
        elif sim.port_group_by_urn(scope) is not None:  # §6.1: portGroupUrn, DVSwitchUrn
            pred_scope = lambda v: any(n.port_group_urn == scope for n in v.nics)  # noqa: E731
        elif sim.by_dvswitch_urn(scope) is not None:
            prefix = scope + ":portgroups:"
            pred_scope = lambda v: any(n.port_group_urn.startswith(prefix) for n in v.nics)  # noqa: E731
        else:
            pred_scope = lambda v: False  # noqa: E731
    want_tpl = bool(is_tpl)  # default: VMs only
    out = []
    for v in sim.vms.values():
        if v.gone or v.is_template != want_tpl:
            continue
        if name and name not in v.name.lower():
            continue
        if status and v.status != status:
            continue
        if is_lc is not None and v.is_link_clone != is_lc:
            continue
        if uuid and v.uuid != uuid:
            continue
        if vm_id and vm_id.lower() not in v.id.lower():
            continue
        if pv and v.pv_status != pv:
            continue
        if vmurns and sim.vm_urn(v) not in vmurns:
            continue
        if pred_scope is not None and not pred_scope(v):
            continue
        out.append(v)
    sim.list_cache[("vms", key)] = out
    return out


def vm_json(sim: Simulator, v: Any, detail: int) -> bytes:
    """Serialised VM, cached until the next visible change (10k-VM listings stay cheap)."""
    key = ("vmjson", v.id, detail)
    data = sim.list_cache.get(key)
    if data is None:
        data = json.dumps(views.vm(sim, v, detail), separators=(",", ":"), ensure_ascii=False,
                          check_circular=False).encode()
        sim.list_cache[key] = data
    return data  # type: ignore[no-any-return]


def prewarm(sim: Simulator, details: tuple[int, ...] = (2,)) -> None:
    """Serialise every VM and volume once (large inventories), so the first full listing is as fast
    as the next ones. The cache lives until the next visible change."""
    for v in sim.vms.values():
        if not v.gone:
            for d in details:
                vm_json(sim, v, d)
    for vol in sim.volumes.values():
        if not vol.gone:
            volume_json(sim, vol)


@route("GET", "/vms")
async def h_vms(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    detail = q_int(request, "detail")
    detail = 1 if detail is None else detail
    if detail not in (0, 1, 2):
        raise bad("detail must be 0, 1 or 2.")
    vms = filter_vms(request, sim)
    page, total = paged(request, vms, False)
    body = b'{"total":%d,"vms":[%s]}' % (total, b",".join(vm_json(sim, v, detail) for v in page))
    return Response(body, media_type=JSON_TYPE)


@route("POST", "/vms")
async def h_vm_create(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return jresp(ops.create_vm(sim, await read_json(request)))


@route("GET", "/vms/osversions")
async def h_osversions(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return jresp(sim.os_catalog)


VM = r"/vms/(i-[0-9A-F]{8})"


@route("GET", VM)
async def h_vm(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return Response(vm_json(sim, sim.get_vm(m.group(1)), 2), media_type=JSON_TYPE)


@route("PUT", VM)
async def h_vm_modify(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return jresp(ops.modify_vm(sim, sim.get_vm(m.group(1)), await read_json(request)))


@route("DELETE", VM)
async def h_vm_delete(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    keep = request.query_params.get("isReserveDisks", "0")
    if keep not in ("0", "1"):
        raise bad("isReserveDisks must be 0 or 1.")
    return jresp(ops.delete_vm(sim, sim.get_vm(m.group(1)), keep == "1"))


@route("POST", VM + r"/action/(\w+)")
async def h_vm_action(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    vm = sim.get_vm(m.group(1))
    action = m.group(2)
    body = await read_json(request)
    if action in ops.POWER_RULES:
        return jresp(ops.power(sim, vm, action, body))
    if action == "migrate":
        return jresp(ops.migrate_vm(sim, vm, body))
    if action == "migratevol":
        return jresp(ops.migrate_vm_volumes(sim, vm, body))
    if action == "attachvol":
        return jresp(ops.attach_volume(sim, vm, body))
    if action == "detachvol":
        return jresp(ops.detach_volume(sim, vm, body))
    if action == "expandvol":
        vol = sim.by_urn(str(body.get("volUrn", "")), "volumes")
        if vol is None or vol.vm is not vm:
            raise bad("volUrn is not a disk of this VM.", C.VOLUME_NOT_FOUND)
        return jresp(ops.expand_volume(sim, vol, body))
    raise not_found(f"The action {action} is not supported by the simulator.")


@route("GET", VM + "/competition")
async def h_vm_competition(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    vm = sim.get_vm(m.group(1))
    t = vm.busy_task
    return jresp({"status": "busy" if t is not None and t.active else "free"})


@route("GET", VM + "/snapshots")
async def h_snaps(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return jresp(views.snapshot_tree(sim, sim.get_vm(m.group(1))))


@route("POST", VM + "/snapshots")
async def h_snap_create(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    vm = sim.get_vm(m.group(1))
    return jresp(ops.create_snapshot(sim, vm, await read_json(request)))


SNAP = VM + r"/snapshots/(\d+)"


@route("GET", SNAP)
async def h_snap(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    s = sim.get_snapshot(sim.get_vm(m.group(1)), m.group(2))
    return jresp(views.snapshot_detail(sim, s))


@route("PUT", SNAP)
async def h_snap_modify(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    s = sim.get_snapshot(sim.get_vm(m.group(1)), m.group(2))
    ops.modify_snapshot(sim, s, await read_json(request))
    return jresp({})


@route("DELETE", SNAP)
async def h_snap_delete(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    s = sim.get_snapshot(sim.get_vm(m.group(1)), m.group(2))
    return jresp(ops.delete_snapshot(sim, s))


@route("POST", SNAP + "/action/resumevm")
async def h_snap_revert(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    s = sim.get_snapshot(sim.get_vm(m.group(1)), m.group(2))
    return jresp(ops.revert_snapshot(sim, s))


def filter_volumes(request: Request, sim: Simulator) -> list[Any]:
    """Volumes matching the query, cached like the VM list until the next visible change."""
    qp = request.query_params
    key = tuple(sorted((k, v) for k, v in qp.multi_items() if k not in ("limit", "offset")))
    cached = sim.list_cache.get(("volumes", key))
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    vols = _filter_volumes(request, sim)
    sim.list_cache[("volumes", key)] = vols
    return vols


def _filter_volumes(request: Request, sim: Simulator) -> list[Any]:
    qp = request.query_params
    vols = [v for v in sim.volumes.values() if not v.gone]
    scope = qp.get("scope")
    if scope:
        ds = sim.by_urn(scope, "datastores")
        vm = sim.by_urn(scope, "vms")
        cl = sim.by_urn(scope, "clusters")
        if ds is not None:
            vols = [v for v in vols if v.datastore is ds]
        elif vm is not None:
            vols = [v for v in vols if v.vm is vm]
        elif cl is not None:
            vols = [v for v in vols if v.vm is not None and v.vm.cluster is cl]
        else:
            vols = []
    urns = set(qp.getlist("volUrns"))
    if urns:
        vols = [v for v in vols if sim.urn("volumes", v.id) in urns]
    name = name_filter(request)
    if name:
        vols = [v for v in vols if name in v.name.lower()]
    uuid = qp.get("uuid")
    if uuid:
        vols = [v for v in vols if v.uuid == uuid]
    attach = qp.get("attachstatus")
    if attach in ("attached", "1"):
        vols = [v for v in vols if v.vm is not None]
    elif attach in ("detached", "unattached", "0"):
        vols = [v for v in vols if v.vm is None]
    return vols


def volume_json(sim: Simulator, v: Any, owner: bool = False) -> bytes:
    """Serialised volume, cached until the next visible change (a 10k-VM site has ~27k volumes)."""
    key = ("voljson", v.id, owner)
    data = sim.list_cache.get(key)
    if data is None:
        data = json.dumps(views.volume(sim, v, owner), separators=(",", ":"), ensure_ascii=False,
                          check_circular=False).encode()
        sim.list_cache[key] = data
    return data  # type: ignore[no-any-return]


@route("GET", "/volumes")
async def h_volumes(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    page, total = paged(request, filter_volumes(request, sim), False)
    body = b'{"total":%d,"volumes":[%s]}' % (total, b",".join(volume_json(sim, v) for v in page))
    return Response(body, media_type=JSON_TYPE)


@route("GET", "/volumes/querydatastorevolumes")
async def h_ds_volumes(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    ds = sim.by_urn(request.query_params.get("dsUrn", ""), "datastores")
    if ds is None:
        raise bad("dsUrn must be an existing datastore URN.")
    vols = [v for v in sim.volumes.values() if not v.gone and v.datastore is ds]
    page, total = paged(request, vols, False)
    body = b'{"total":%d,"volumes":[%s]}' % (total, b",".join(volume_json(sim, v, True) for v in page))
    return Response(body, media_type=JSON_TYPE)


@route("POST", "/volumes")
async def h_volume_create(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return jresp(ops.create_volume(sim, await read_json(request)))


VOL = r"/volumes/(\d+)"


@route("GET", VOL)
async def h_volume(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return Response(volume_json(sim, sim.get_volume(m.group(1))), media_type=JSON_TYPE)


@route("PUT", VOL)
async def h_volume_modify(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    ops.modify_volume(sim, sim.get_volume(m.group(1)), await read_json(request))
    return jresp({})


@route("DELETE", VOL)
async def h_volume_delete(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return jresp(ops.delete_volume(sim, sim.get_volume(m.group(1))))


@route("POST", VOL + "/action/expandVol")
async def h_volume_expand(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return jresp(ops.expand_volume(sim, sim.get_volume(m.group(1)), await read_json(request)))


@route("POST", VOL + "/action/migratevol")
async def h_volume_migrate(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return jresp(ops.migrate_volume(sim, sim.get_volume(m.group(1)), await read_json(request)))


# eSDK ModifyIOpropertyOfVolumeReq: KB/s limits 0 or 8..2^53-1, request limits 0 or 16..2^32-1 (0 = no
# limit). A limit left out keeps its value [I: the eSDK marks all four required; NOVA may send fewer].
IO_LIMITS = {"maxReadBytes": (8, 2**53 - 1), "maxWriteBytes": (8, 2**53 - 1),
             "maxReadRequest": (16, 2**32 - 1), "maxWriteRequest": (16, 2**32 - 1)}


@route("POST", VOL + "/modifyIOpropertyOfVolume")
async def h_volume_io(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    """vrm-api.md §7.3 (ESDK-J, NOVA): set a volume's IO limits; answers a task."""
    vol = sim.get_volume(m.group(1))
    body = await read_json(request)
    limits: dict[str, int] = {}
    for key, (low, high) in IO_LIMITS.items():
        if key not in body:
            continue
        v = body[key]
        if isinstance(v, bool) or not isinstance(v, int) or not (v == 0 or low <= v <= high):
            raise bad(f"{key} must be 0 or an integer from {low} to {high}.")
        limits[key] = v

    def done() -> None:
        views.VOLUME_IO.setdefault(vol, {}).update(limits)

    t = sim.start_task("ModifyVolumeIO", sim.urn("volumes", vol.id), vol.name,
                       sim.config.task_seconds["modify"], on_success=done, volume=vol)
    return jresp(ops.task_ref(sim, t))


@route("POST", VOL + "/getcbt")
async def h_getcbt(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return jresp(ops.get_cbt(sim, sim.get_volume(m.group(1)), await read_json(request)))


@route("POST", VOL + "/backupresources")
async def h_res_prepare(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    vol = sim.get_volume(m.group(1))
    return jresp(ops.prepare_resource(sim, vol, await read_json(request)))


RES = VOL + r"/backupresources/(\d+)"


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@route("GET", RES)
async def h_res(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    r = ops.get_resource(sim, sim.get_volume(m.group(1)), m.group(2))
    return jresp(views.resource(sim, r, base_url(request)))


@route("PUT", RES)
async def h_res_extend(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    r = ops.get_resource(sim, sim.get_volume(m.group(1)), m.group(2))
    ops.extend_resource(sim, r, await read_json(request))
    return jresp({})


@route("DELETE", RES)
async def h_res_release(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    r = ops.get_resource(sim, sim.get_volume(m.group(1)), m.group(2))
    ops.release_resource(sim, r)
    return jresp({})


TASK_STATUSES = ("waiting", "running", "success", "failed", "cancelling")


@route("GET", "/tasks")
async def h_tasks(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    qp = request.query_params
    tasks = list(sim.tasks.values())
    urns = set(qp.getlist("taskUrns"))
    if urns:
        tasks = [t for t in tasks if sim.task_urn(t) in urns]
    if qp.get("type"):
        tasks = [t for t in tasks if t.type == qp["type"]]
    if qp.get("user"):
        tasks = [t for t in tasks if t.user == qp["user"]]
    if qp.get("scope"):
        scope = qp["scope"]
        tasks = [t for t in tasks if t.entity_urn == scope or t.entity_urn.startswith(scope + ":")]
    status = qp.get("status")
    if status:
        tasks = [t for t in tasks if sim.task_view_state(t)[0] == status]
    cancelled = q_bool(request, "cancelled")
    if cancelled is not None:
        tasks = [t for t in tasks if t.cancelled == cancelled]
    st = q_int(request, "startTime")
    if st is not None:
        tasks = [t for t in tasks if int(sim.task_times(t)[0]) >= st]
    ft = q_int(request, "finishTime")
    if ft is not None:
        tasks = [t for t in tasks if sim.task_times(t)[1] and int(sim.task_times(t)[1]) <= ft]
    tasks.reverse()  # newest first, stable
    page, total = paged(request, tasks, False)
    return jresp({"total": total, "tasks": [views.task(sim, t) for t in page]})


@route("GET", r"/tasks/(\d+)")
async def h_task(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    return jresp(views.task(sim, sim.get_task(m.group(1))))


@route("POST", r"/tasks/(\d+)/cancel")
async def h_task_cancel(request: Request, sim: Simulator, m: re.Match[str]) -> Response:
    sim.cancel_task(sim.get_task(m.group(1)))
    return jresp({})


# ---------------------------------------------------------------------------------------------
# Data endpoint
# ---------------------------------------------------------------------------------------------
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
CRANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


async def data_endpoint(request: Request, sim: Simulator, rid: str) -> Response:
    r = ops.data_resource(sim, rid, request.headers.get("x-resource-token"))
    vol = r.volume
    content = vol.content
    if request.method in ("GET", "HEAD"):
        state = r.state if r.state is not None else content.live
        size = state.size
        start, end = 0, size - 1
        status = 200
        rng = request.headers.get("range")
        if rng:
            mm = RANGE_RE.match(rng.strip())
            if not mm or (mm.group(1) == "" and mm.group(2) == ""):
                raise bad("Range must be bytes=a-b.")
            if mm.group(1) == "":
                start, end = max(0, size - int(mm.group(2))), size - 1
            else:
                start = int(mm.group(1))
                end = min(int(mm.group(2)), size - 1) if mm.group(2) else size - 1
            if start >= size or start > end:
                return jresp({"errorCode": C.INVALID_PARAM,
                              "errorDes": f"Range not satisfiable (errorCode {C.INVALID_PARAM})"},
                             416, {"Content-Range": f"bytes */{size}"})
            status = 206
        length = end - start + 1
        headers = {"Content-Length": str(length), "Accept-Ranges": "bytes",
                   "X-Block-Size": str(sim.block_size)}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if request.method == "HEAD":
            return Response(b"", status_code=status, headers=headers,
                            media_type="application/octet-stream")
        r.bytes_read += length
        sim.stats["data_bytes_read"] = sim.stats.get("data_bytes_read", 0) + length

        async def gen() -> AsyncIterator[bytes]:
            buf: list[bytes] = []
            n = 0
            for chunk in content.read(state, start, end + 1):
                buf.append(chunk)
                n += len(chunk)
                if n >= STREAM_CHUNK:
                    yield b"".join(buf)
                    buf, n = [], 0
                    await asyncio.sleep(0)
            if buf:
                yield b"".join(buf)

        return StreamingResponse(gen(), status_code=status, headers=headers,
                                 media_type="application/octet-stream")
    if request.method == "PUT":
        if not r.is_restore:
            raise VrmError(403, C.STATE, "This backup resource is read-only (backup task type).")
        # The body's pieces as the server received them, never joined: each block is cut out of them
        # with one copy (joining first would cost a second copy and a fresh multi-MB buffer per PUT).
        pieces = [chunk async for chunk in request.stream() if chunk]
        n = sum(len(c) for c in pieces)
        cr = request.headers.get("content-range")
        offset = 0
        if cr:
            mm = CRANGE_RE.match(cr.strip())
            if not mm:
                raise bad("Content-Range must be bytes a-b/total.")
            offset, last = int(mm.group(1)), int(mm.group(2))
            if last - offset + 1 != n:
                raise bad("Content-Range does not match the body length.")
        if offset + n > content.live.size:
            raise bad("The write goes past the end of the volume.")
        content.write_pieces(offset, pieces, vol.epoch())
        r.bytes_written += n
        sim.stats["data_bytes_written"] = sim.stats.get("data_bytes_written", 0) + n
        return Response(status_code=204)
    raise VrmError(405, C.INVALID_PARAM, "Use GET or PUT on a resource URL.")


# ---------------------------------------------------------------------------------------------
# Control API
# ---------------------------------------------------------------------------------------------
def _vm_ref(sim: Simulator, ref: str) -> Any:
    if ref.startswith("urn:"):
        vm = sim.by_urn(ref, "vms")
        if vm is None:
            raise not_found(f"The VM {ref} does not exist.", C.VM_NOT_FOUND)
        return vm
    return sim.get_vm(ref)


def _vol_ref(sim: Simulator, ref: str) -> Any:
    if ref.startswith("urn:"):
        vol = sim.by_urn(ref, "volumes")
        if vol is None:
            raise not_found(f"The volume {ref} does not exist.", C.VOLUME_NOT_FOUND)
        return vol
    return sim.get_volume(ref)


def stats(sim: Simulator) -> dict[str, Any]:
    per_host: dict[str, int] = {}
    for r in sim.resources.values():
        key = sim.urn("hosts", r.host.id)
        per_host[key] = per_host.get(key, 0) + 1
    snaps = {sim.vm_urn(v): len(v.snapshots) for v in sim.vms.values() if v.snapshots and not v.gone}
    return {
        "requests": sim.stats["requests"],
        "byMethod": sim.stats["by_method"],
        "resourcesPerHost": per_host,
        "maxResourcesPerHost": dict(sim.stats["resource_max_per_host"]),
        "resourcesRefusedPerHost": dict(sim.stats["resource_refused_per_host"]),  # 10300412 answers
        "resourcesExpired": sim.stats.get("resources_expired", 0),  # never released by their client
        "liveSnapshotsPerVm": snaps,
        "activeTasks": sum(1 for t in sim.tasks.values() if t.active),
        "sessions": sum(1 for s in sim.sessions.values() if not s.expired),
        "dataBytesRead": sim.stats.get("data_bytes_read", 0),
        "dataBytesWritten": sim.stats.get("data_bytes_written", 0),
        "faultBodyBytesSent": sim.stats.get("fault_body_bytes_sent", 0),
        "cbtSnapshotsWithHostResource": sim.stats.get("cbt_snapshots_with_host_resource", 0),
        "cbtSnapshotsRefusedForHostResource": sim.stats.get("cbt_snapshots_refused_host_resource", 0),
    }


def _guest_fs_view(sim: Simulator, vm: Any, vol: Any) -> dict[str, Any]:
    return {"vm": sim.vm_urn(vm), "name": vm.name, "volume": sim.urn("volumes", vol.id),
            "guest": vol.guest_fs, "version": vol.guest_fs_version,
            "imageBytes": guestfs.spec(vol.guest_fs, vol.guest_fs_version).disk_size}


def _move_guest_fs(sim: Simulator, vm: Any, body: dict[str, Any]) -> dict[str, Any]:
    """POST /sim/vms/{vm}/guestfs {"version": N}: the VM's guest filesystem becomes version N."""
    version = body.get("version")
    if type(version) is not int:
        raise bad("version must be an integer.")
    vol = next((d.volume for d in vm.disks if d.volume.guest_fs), None)
    if vol is None:
        raise bad(f"The VM {vm.name} has no disk with a guest filesystem.")
    blocks = guestdisks.move_guest_fs(vol, version)
    return {**_guest_fs_view(sim, vm, vol), "written": len(blocks), "writtenBlocks": blocks,
            **ops.cbt_state(sim, vol)}


async def control(request: Request, sim: Simulator, path: str) -> Response:
    method = request.method
    parts = [p for p in path.split("/") if p]  # after "sim"
    if method == "GET" and parts == ["edge-cases"]:
        return jresp(sim.edge_cases)
    if method == "GET" and parts == ["stats"]:
        return jresp(stats(sim))
    if method == "GET" and parts == ["info"]:
        return jresp({"siteUrn": sim.site_urn, "siteName": sim.site.name,
                      "siteIndex": sim.config.site_index, "bootSeconds": sim.config.boot_seconds,
                      "user": sim.config.user,
                      "users": [{"name": a.name, "userType": a.user_type} for a in sim.accounts()],
                      "vms": sum(1 for v in sim.vms.values() if not v.gone),
                      "blockSize": sim.block_size, "timeScale": sim.config.time_scale,
                      "apiVersion": sim.config.api_version})
    if parts == ["boot-failures"]:
        if method == "POST":
            body = await read_json(request)
            names = body.get("names")
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                raise bad('Give {"names": ["glob", ...]} (fnmatch globs of VM names; [] clears them).')
            sim.boot_failures[:] = names
        if method in ("GET", "POST"):
            return jresp({"names": list(sim.boot_failures)})
    if method == "GET" and parts == ["hosts"]:
        return jresp({"hosts": [
            {"urn": sim.urn("hosts", h.id), "name": h.name, "arch": h.arch,
             "perfClass": h.perf_class, "baseS": h.pause_base, "perDiskS": h.pause_per_disk,
             "perGbS": h.pause_per_gb, "hostFactor": h.host_factor, "noiseSigma": h.noise_sigma}
            for h in sim.hosts.values()], "pauses": sim.pauses})
    if parts == ["faults"]:
        if method == "GET":
            return jresp({"faults": [f.__dict__ for f in sim.faults]})
        if method == "DELETE":
            sim.faults.clear()
            return jresp({})
        if method == "POST":
            body = await read_json(request)
            # accept camelCase and snake_case spellings of every key
            for snake, camel in (("task_type", "taskType"), ("error_code", "errorCode"),
                                 ("latency_ms", "latencyMs"), ("body_bytes", "bodyBytes"),
                                 ("content_type", "contentType"), ("numbers_as_strings", "numbersAsStrings"),
                                 ("error_shape", "errorShape")):
                if snake in body and camel not in body:
                    body[camel] = body[snake]
                if camel in body and snake not in body:
                    body[snake] = body[camel]
            try:
                f = Fault(path=body.get("path"), method=body.get("method"),
                          latency_ms=float(body.get("latency_ms", 0) or 0),
                          status=int(body["status"]) if body.get("status") else None,
                          error_code=str(body["errorCode"]) if body.get("errorCode") else None,
                          count=int(body["count"]) if body.get("count") is not None else None,
                          probability=float(body.get("probability", 1.0)),
                          drop=bool(body.get("drop", False)), task_type=body.get("taskType"),
                          body_bytes=int(body.get("bodyBytes") or 0),
                          content_type=None if body.get("contentType") is None else str(body["contentType"]),
                          numbers_as_strings=bool(body.get("numbersAsStrings", False)),
                          error_shape=str(body.get("errorShape") or "errorCode"))
                if f.body_bytes < 0:
                    raise ValueError("bodyBytes must not be negative")
                if f.error_shape not in ERROR_SHAPES:
                    raise ValueError(f"errorShape must be one of {', '.join(ERROR_SHAPES)}")
                if f.path:
                    re.compile(f.path)
            except (TypeError, ValueError, re.error) as e:
                raise bad(f"Bad fault: {e}") from None
            sim.faults.append(f)
            return jresp({"faults": len(sim.faults)})
    if method == "POST" and parts == ["tokens", "expire"]:
        body = await read_json(request)
        return jresp({"expired": sim.expire_tokens(body.get("token"))})
    if method == "POST" and parts == ["clock", "advance"]:
        body = await read_json(request)
        if not isinstance(sim.clock, (ManualClock, OffsetClock)):
            raise bad("The simulator runs on the real clock; clock/advance needs a ManualClock or an "
                      "OffsetClock (fctui sim --jumpable-clock).")
        try:
            secs = float(body.get("seconds", 0))
        except (TypeError, ValueError):
            raise bad("seconds must be a number.") from None
        if secs < 0:
            raise bad("seconds must not be negative.")
        sim.clock.advance(secs)
        sim.advance()
        return jresp({"now": sim.clock.now()})
    if len(parts) == 3 and parts[0] == "volumes":
        vol = _vol_ref(sim, parts[1])
        if method == "POST" and parts[2] == "write":
            n, ranges = ops.write_ranges(await read_json(request))
            written = sim.guest_write(vol, n, ranges)
            return jresp({"written": written, **ops.cbt_state(sim, vol)})
        if method == "GET" and parts[2] == "digest":
            state = vol.content.live
            snap_urn = request.query_params.get("snapUrn")
            if snap_urn:
                s = sim.snapshot_by_urn(snap_urn)
                vs = next((x for x in s.vols if x.volume is vol), None) if s else None
                if vs is None:
                    raise not_found("That snapshot does not hold this volume.",
                                    C.SNAPSHOT_NOT_FOUND)
                state = vs.state
            digest = await asyncio.to_thread(vol.content.digest, state)
            return jresp({"sha256": digest, "bytes": state.size})
        if method == "GET" and parts[2] == "cbt":
            return jresp(ops.cbt_state(sim, vol))
    if len(parts) == 3 and parts[0] == "vms" and method == "POST":
        vm = _vm_ref(sim, parts[1])
        body = await read_json(request)
        if parts[2] == "events":
            return jresp(ops.apply_event(sim, vm, str(body.get("event", ""))))
        if parts[2] == "storage-migration":
            return jresp(ops.storage_migration(sim, vm, str(body.get("action", ""))))
        if parts[2] == "operations":
            return jresp(ops.other_operation(sim, vm, str(body.get("op", ""))))
        if parts[2] == "guestfs":
            return jresp(_move_guest_fs(sim, vm, body))
    if method == "GET" and parts == ["guestfs"]:
        return jresp({"vms": [_guest_fs_view(sim, vm, d.volume) for vm in sim.vms.values() if not vm.gone
                              for d in vm.disks if d.volume.guest_fs]})
    raise not_found(f"Unknown control path /sim/{path}.")


# ---------------------------------------------------------------------------------------------
# Entry
# ---------------------------------------------------------------------------------------------
SITE_RE = re.compile(r"^/service/sites/([0-9A-F]{8})(/.*)?$")


async def dispatch_service(request: Request, sim: Simulator, path: str) -> Response:
    method = request.method
    if path == "/service/versions" and method == "GET":
        if sim.config.versions_need_token:
            sim.check_token(request.headers.get("x-auth-token"))
        vs = [{"version": v, "loginUri": "/service/session"} for v in sim.config.versions]
        return jresp({"versions": vs})
    check_accept(sim, request.headers.get("accept"))
    if path == "/service/session":
        if method == "POST":
            return await login(request, sim)
        if method == "DELETE":
            sim.check_token(request.headers.get("x-auth-token"))
            sim.logout(request.headers.get("x-auth-token"))
            return jresp({})
        raise VrmError(405, C.INVALID_PARAM, "Use POST or DELETE on /service/session.")
    sim.check_token(request.headers.get("x-auth-token"))
    if path == "/service/sites" and method == "GET":
        return jresp({"sites": [views.site(sim)]})
    mm = SITE_RE.match(path)
    if mm is None or mm.group(1) != sim.site.id:
        raise not_found(f"The path {path} does not exist.")
    rest = mm.group(2) or ""
    if rest.endswith("/") and rest != "/":
        rest = rest.rstrip("/")
    for m_, rx, fn in ROUTES:
        if m_ != method:
            continue
        hit = rx.match(rest)
        if hit:
            return await fn(request, sim, hit)
    raise not_found(f"The path {path} does not exist.")


async def login(request: Request, sim: Simulator) -> Response:
    h = request.headers
    user_type = h.get("x-auth-usertype")
    if user_type not in (None, "", "0", "2"):
        raise bad("X-Auth-UserType must be 0 or 2.")
    auth_type = h.get("x-auth-authtype")
    if auth_type not in (None, "", "0"):
        raise bad("X-Auth-AuthType must be 0.")
    algo = h.get("x-encript-algorithm") or h.get("x-encrypt-algorithm") or "0"
    if algo not in ("0", "1"):
        raise bad("X-ENCRIPT-ALGORITHM must be 0 or 1.")
    await read_json(request)  # empty or {}
    s = sim.login(h.get("x-auth-user"), h.get("x-auth-key"), algo == "1",
                  int(user_type) if user_type else None)
    user_id = 7 + [a.name for a in sim.accounts()].index(s.user)
    # rightType: an integer, as the Go SDKs decode it (vrm-api.md §16; the eSDK declares a String)
    body = {"validity": int(sim.config.token_idle_s * 1000), "rightType": 1,
            "privilegeIds": [], "userId": str(user_id), "userName": s.user, "roleList": ["administrator"]}
    return jresp(body, headers={"X-Auth-Token": s.token})


def create_app(sim: Simulator) -> Starlette:
    cfg = sim.config

    async def handle(request: Request) -> Response:
        path = request.url.path
        if path.startswith("/OmsPortal/service"):
            path = path[len("/OmsPortal"):]
        faults: list[Fault] = []
        try:
            if path.startswith("/sim/") or path == "/sim":
                sim.advance()
                return await control(request, sim, path[len("/sim"):])
            sim.stats["requests"] += 1
            bm = sim.stats["by_method"]
            bm[request.method] = bm.get(request.method, 0) + 1
            if cfg.latency_ms > 0:
                await asyncio.sleep(cfg.latency_ms / 1000.0)
            faults = sim.match_faults(request.method, path) if sim.faults else []
            for f in faults:
                if f.latency_ms > 0:
                    await asyncio.sleep(f.latency_ms / 1000.0)
            for f in faults:
                if f.drop:
                    return _DropResponse()
                if f.body_bytes:
                    return _huge_answer(sim, request, f.body_bytes, f.status or 200)
                if f.status:
                    code = f.error_code or ("10000009" if f.status >= 500 else C.INVALID_PARAM)
                    return reshape(_injected_error(f, code), faults)
            sim.advance()
            if path.startswith("/sim-data/resources/"):
                return await data_endpoint(request, sim, path.rsplit("/", 1)[1])
            if path.startswith("/service/") or path == "/service":
                return reshape(await dispatch_service(request, sim, path), faults)
            raise not_found(f"The path {path} does not exist.")
        except VrmError as e:
            return reshape(err(e), faults)

    return Starlette(routes=[Route("/{path:path}", handle, methods=ALL_METHODS)])
