"""Issue #14 items 4-6: the session and the reading of answers as real VRMs give them.

4. ``X-Auth-UserType`` is a setting (0 or 2) and must match the account (the simulator has a type-2
   ``admin`` and a type-0 ``operator``).
5. Version discovery never blocks login (vrm-api.md §1, §16: ``/service/versions`` may want a token).
6. Tolerant reading: JSON labelled ``text/plain`` or unlabelled, numbers as strings, other error shapes.

Against the simulator over in-process HTTP (faults via ``/sim/faults``), or an ``httpx.MockTransport``
answering as a real VRM may where the simulator has no such answer.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import httpx
import pytest

from fctui.sim import SimConfig, Simulator, create_app
from fctui.vrm import (VrmAuthError, VrmClient, VrmConflictError, VrmError, VrmNotFoundError,
                       VrmProtocolError, VrmVersionError)

BASE = "http://vrm.sim"
OPERATOR = ("operator", "Operator@123")  # the simulator's default account of type 0


def small() -> SimConfig:
    return SimConfig(vms=12, seed=1, sector_of_block=128, time_scale=100.0)


def for_account(sim: Simulator, user: str, password: str, **kw: Any) -> VrmClient:
    return VrmClient(BASE, user, password, transport=httpx.ASGITransport(app=create_app(sim)), **kw)


def admin(sim: Simulator, **kw: Any) -> VrmClient:
    return for_account(sim, sim.config.user, sim.config.password, **kw)


async def fault(sim: Simulator, **rule: Any) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sim)), base_url=BASE) as c:
        r = await c.post("/sim/faults", json=rule)
        assert r.status_code == 200, r.text


def mock_vrm(route: Callable[[httpx.Request], httpx.Response | None]) -> httpx.MockTransport:
    """A VRM whose answers ``route`` chooses; login, logout and sites answer normally otherwise."""
    def handler(request: httpx.Request) -> httpx.Response:
        got = route(request)
        if got is not None:
            return got
        if request.url.path == "/service/session":
            if request.method == "DELETE":
                return httpx.Response(200)
            return httpx.Response(200, json={"validity": 600000, "userName": "admin", "userId": "7",
                                             "rightType": "1"}, headers={"X-Auth-Token": "t-1"})
        if request.url.path == "/service/versions":
            return httpx.Response(200, json={"versions": [{"version": "8.1", "loginUri": "/service/session"}]})
        return httpx.Response(200, json={"sites": [{"urn": "urn:sites:4D9D0815", "uri": "/service/sites/4D9D0815"}]})
    return httpx.MockTransport(handler)


def version_of(request: httpx.Request) -> str:
    accept = request.headers.get("accept", "")
    return next((p.split("=", 1)[1] for p in accept.split(";") if p.startswith("version=")), "")


# --- 4. X-Auth-UserType ------------------------------------------------------------------------------

@pytest.mark.parametrize("user_type", [0, "0", " 0 "])
async def test_type_0_account_logs_in_with_int_or_str_type(user_type: Any) -> None:
    sim = Simulator(small())
    async with for_account(sim, *OPERATOR, user_type=user_type) as c:
        assert c.user_type == "0"
        assert c.login_info is not None and c.login_info.user_name == "operator"
        assert (await c.sites())[0].id == sim.site.id
        assert c.clone_args() is None or c.clone_args()["user_type"] == "0"  # type: ignore[index]


@pytest.mark.parametrize("user_type", [2, "2"])
async def test_type_2_account_logs_in(user_type: Any) -> None:
    sim = Simulator(small())
    async with admin(sim, user_type=user_type) as c:
        assert c.user_type == "2" and (await c.sites())[0].id == sim.site.id


@pytest.mark.parametrize("user, password, user_type", [("admin", "Admin@123", 0), (*OPERATOR, 2)])
async def test_user_type_of_another_account_is_a_clear_auth_error(user: str, password: str, user_type: int) -> None:
    sim = Simulator(small())
    c = for_account(sim, user, password, user_type=user_type)
    with pytest.raises(VrmAuthError) as ei:
        await c.login()
    await c.aclose()
    e = ei.value
    assert e.status == 401 and len(e.error_code) == 8
    # the VRM says only "bad credentials": the message points at the user type setting too
    assert user in str(e) and f"user type {user_type}" in str(e) and password not in str(e)


@pytest.mark.parametrize("user_type", [1, 3, -2, "x", "", "02", True, 2.0, None])
def test_bad_user_type_is_a_vrm_error(user_type: Any) -> None:
    with pytest.raises(VrmError) as ei:
        VrmClient(BASE, "admin", "pw", user_type=user_type)
    assert "user type" in str(ei.value) and "0 or 2" in str(ei.value)


# --- 5. version discovery never blocks login -------------------------------------------------------

@pytest.mark.parametrize("rule", [
    {"status": 401, "errorCode": "10000002"},            # needs a token (before login)
    {"status": 403, "errorCode": "10000050"},
    {"status": 500},
    {"status": 503, "errorShape": "empty"},
    {"status": 400, "errorCode": "10000022"},            # a version error on the discovery itself
    {"status": 404, "errorShape": "empty"},
    {"drop": True},                                       # connection dropped mid-answer
], ids=["401", "403", "500", "503-empty", "400-10000022", "404-empty", "drop"])
async def test_versions_error_falls_back_to_the_default(rule: dict[str, Any]) -> None:
    sim = Simulator(small())
    await fault(sim, path="^/service/versions$", **rule)
    async with admin(sim, retries_5xx=0) as c:
        # default: no version in Accept, which every VRM accepts (vrm-api.md §1: CV sends none)
        assert c.logged_in and c.api_version == ""
        assert (await c.sites())[0].id == sim.site.id


@pytest.mark.parametrize("body", [b"<html>login</html>", b'{"versions": "8.1"}', b"[1]", b'{"versions": [3]}'])
async def test_versions_bad_body_falls_back(body: bytes) -> None:
    def route(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/service/versions":
            return httpx.Response(200, content=body, headers={"content-type": "application/json"})
        return None
    async with VrmClient("http://vrm.test", "admin", "pw", transport=mock_vrm(route)) as c:
        assert c.logged_in and c.api_version == ""


async def test_configured_version_is_the_fallback() -> None:
    sim = Simulator(small())
    await fault(sim, path="^/service/versions$", status=500)
    async with admin(sim, api_version="v6.3") as c:
        assert c.api_version == "6.3" and (await c.sites())[0].id == sim.site.id


async def test_versions_needing_a_token_are_read_after_login() -> None:
    # vrm-api.md §16: the Commvault helper calls /service/versions after login, the eSDK with its token
    sim = Simulator(SimConfig(vms=0, versions_need_token=True, unsupported_versions=("8.1",)))
    async with admin(sim) as c:
        assert c.logged_in and c.api_version == "8.0"  # newest offered and accepted
        assert (await c.sites())[0].id == sim.site.id
        vs = await c.versions()  # the public call sends the token once logged in
        assert vs[-1].version == "8.1"
    assert not [s for s in sim.sessions.values() if not s.expired]  # every session was closed


async def test_versions_read_after_login_that_name_the_working_one_keep_the_session() -> None:
    """The login without a version is refused (10000022), 8.1 works, and the versions then read name
    8.1 newest: the session is kept, not closed and opened again."""
    sim = Simulator(SimConfig(vms=0, versions_need_token=True))
    await fault(sim, path="^/service/session$", method="POST", status=400, errorCode="10000022", count=1)
    sent: list[str] = []
    inner = httpx.ASGITransport(app=create_app(sim))

    async def record(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.method} {request.url.path}")
        return await inner.handle_async_request(request)

    async with VrmClient(BASE, sim.config.user, sim.config.password, transport=httpx.MockTransport(record)) as c:
        assert c.api_version == sim.config.versions[-1] == "8.1"
    assert sent == ["GET /service/versions", "POST /service/session", "POST /service/session",
                    "GET /service/versions", "DELETE /service/session"]


async def test_versions_read_after_login_that_all_fail_keep_the_working_one(
        caplog: pytest.LogCaptureFixture) -> None:
    sim = Simulator(SimConfig(vms=0, versions_need_token=True, versions=("8.0", "8.1"),
                              unsupported_versions=("8.0", "8.1")))
    with caplog.at_level(logging.INFO, logger="fctui.vrm.client"):
        async with admin(sim) as c:
            assert c.api_version == ""
            assert (await c.sites())[0].id == sim.site.id
    assert "VRM refused every API version it offers; keeping none" in [r.getMessage() for r in caplog.records]


async def test_a_failed_logout_does_not_stop_the_login_that_follows() -> None:
    """Logging in again (a second login(), or the newer version found after login) ends the old session
    first; a VRM that fails that logout still gets the new login."""
    sim = Simulator(SimConfig(vms=0, versions_need_token=True))
    await fault(sim, path="^/service/session$", method="DELETE", status=500, count=1)
    async with admin(sim) as c:             # logs in without a version, reads 8.1, logs in again with it
        assert c.api_version == "8.1" and c.logged_in
        await fault(sim, path="^/service/session$", method="DELETE", status=500, count=1)
        await c.login()
        assert c.logged_in and (await c.sites())[0].id == sim.site.id


async def test_version_error_moves_to_the_next_older() -> None:
    sim = Simulator(SimConfig(vms=0, unsupported_versions=("8.1", "8.0")))
    async with admin(sim) as c:
        assert c.api_version == "6.5"


@pytest.mark.parametrize("status, body", [
    (400, {"errorCode": "10000022", "errorDes": "版本号错误"}),
    (400, {"error": {"code": "10000022", "message": "version"}}),
    (406, {"errorCode": 10000022, "errorDes": "version"}),
    (401, {"errorCode": "10000022", "errorDes": "version"}),
])
async def test_version_error_in_any_status_or_shape_after_failed_discovery(status: int, body: dict) -> None:
    """Discovery failed, and the VRM refuses an Accept without a version too: the known versions are
    tried newest first (vrm-api.md §1 lists those seen in clients)."""
    tried: list[str] = []

    def route(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/service/versions":
            return httpx.Response(503)
        if request.url.path == "/service/session" and request.method == "POST":
            tried.append(version_of(request))
            if version_of(request) != "6.5":
                return httpx.Response(status, json=body)
        return None
    async with VrmClient("http://vrm.test", "admin", "pw", transport=mock_vrm(route), retries_5xx=0) as c:
        assert c.api_version == "6.5"
    assert tried == ["", "8.1", "8.0", "6.5"]


async def test_every_version_refused_is_a_version_error() -> None:
    def route(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/service/session" and request.method == "POST":
            return httpx.Response(400, json={"errorCode": "10000022", "errorDes": "version"})
        return None
    c = VrmClient("http://vrm.test", "admin", "pw", transport=mock_vrm(route))
    with pytest.raises(VrmVersionError) as ei:
        await c.login()
    await c.aclose()
    assert ei.value.error_code == "10000022"


# --- 6. tolerant reading -----------------------------------------------------------------------------

@pytest.mark.parametrize("ctype", ["text/plain", "text/plain;charset=UTF-8", ""])
async def test_json_labelled_text_plain_or_unlabelled_is_read(ctype: str) -> None:
    sim = Simulator(small())
    async with admin(sim) as c:
        site = (await c.sites())[0]
        want = [v.urn for v in await c.vms(site.uri)]
        await fault(sim, path="/vms$|/sites$|^/service/session$", contentType=ctype)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sim)), base_url=BASE) as raw:
            r = await raw.get("/service/sites", headers={"X-Auth-Token": c._token or ""})
            assert r.headers.get("content-type", "") == ctype and r.json()["sites"]  # labelled as asked
        assert (await c.sites())[0].id == sim.site.id
        assert [v.urn for v in await c.vms(site.uri)] == want
        await c.logout()
        await c.login()  # the login answer too
        assert c.logged_in


@pytest.mark.parametrize("headers", [{"content-type": "text/plain"}, {}, {"content-type": "text/html"}])
async def test_json_body_is_read_whatever_its_label(headers: dict[str, str]) -> None:
    def route(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/service/sites":
            return httpx.Response(200, content=b'{"total": "1", "sites": [{"urn": "urn:sites:0A0B0C0D"}]}',
                                  headers=headers)
        return None
    async with VrmClient("http://vrm.test", "admin", "pw", api_version="8.1", transport=mock_vrm(route)) as c:
        assert [s.id for s in await c.sites()] == ["0A0B0C0D"]


async def test_non_json_body_is_still_a_protocol_error_naming_the_type() -> None:
    def route(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/service/sites":
            return httpx.Response(200, content=b"maintenance", headers={"content-type": "text/plain"})
        return None
    async with VrmClient("http://vrm.test", "admin", "pw", api_version="8.1", transport=mock_vrm(route)) as c:
        with pytest.raises(VrmProtocolError) as ei:
            await c.sites()
    assert "text/plain" in str(ei.value) and "JSON" in str(ei.value)


async def test_numbers_as_strings_read_as_numbers() -> None:
    sim = Simulator(SimConfig(vms=120, seed=1, sector_of_block=128, time_scale=100.0))  # > 1 page of VMs
    async with admin(sim) as c:
        site = (await c.sites())[0].uri
        before = (await c.vms(site), await c.hosts(site), await c.datastores(site), await c.volumes(site))
        await fault(sim, path=".", numbersAsStrings=True)
        after = (await c.vms(site), await c.hosts(site), await c.datastores(site), await c.volumes(site))
        assert isinstance(after[0][0].raw["vmConfig"]["disks"][0]["quantityGB"], str)  # the fault works
        vms0, vms1 = before[0], after[0]
        assert len(vms1) == len(vms0) > 100
        assert [(v.urn, v.cpu_quantity, v.memory_mb, v.os.os_version, [(d.sequence_num, d.quantity_gb)
                 for d in v.disks]) for v in vms1] == [(v.urn, v.cpu_quantity, v.memory_mb, v.os.os_version,
                 [(d.sequence_num, d.quantity_gb) for d in v.disks]) for v in vms0]
        assert [(h.urn, h.cpu_quantity, h.mem_quantity_mb) for h in after[1]] == \
            [(h.urn, h.cpu_quantity, h.mem_quantity_mb) for h in before[1]]
        assert [(d.urn, d.capacity_gb, d.free_gb, d.used_gb, d.actual_capacity_gb, d.actual_free_gb)
                for d in after[2]] == [(d.urn, d.capacity_gb, d.free_gb, d.used_gb, d.actual_capacity_gb,
                                        d.actual_free_gb) for d in before[2]]
        vol0, vol1 = before[3], after[3]
        assert len(vol1) == len(vol0) > 100
        assert [(v.urn, v.quantity_gb, v.used_bytes) for v in vol1] == [(v.urn, v.quantity_gb, v.used_bytes)
                                                                       for v in vol0]
        assert any(v.used_bytes for v in vol1)
        assert c.login_info is not None
        await c.logout()
        await c.login()  # "validity": "600000"
        assert c.login_info is not None and c.login_info.validity_ms == 600000


def test_models_read_numbers_as_strings_exactly() -> None:
    from fctui.vrm.models import Datastore, Volume
    vol = Volume.from_dict({"quantityGB": " 40 ", "userUsedSize": "1024"})
    assert vol.quantity_gb == 40 and vol.used_bytes == 1024 << 20
    ds = Datastore.from_dict({"capacityGB": "9007199254740993", "freeSizeGB": "12.0", "usedSizeGB": "n/a"})
    assert ds.capacity_gb == 9007199254740993  # exact, not through a float
    assert ds.free_gb == 12 and ds.used_gb is None
    assert Volume.from_dict({"userUsedSize": "-1"}).used_bytes is None


@pytest.mark.parametrize("shape, status, code, exc", [
    ("error", 400, "10300109", VrmNotFoundError),   # a not-found code in the other shape
    ("error", 400, "10300026", VrmConflictError),
    ("error", 403, "10000050", VrmAuthError),
    ("empty", 404, "", VrmNotFoundError),
    ("empty", 400, "", VrmConflictError),
])
async def test_other_error_shapes_are_typed_errors(shape: str, status: int, code: str, exc: type) -> None:
    sim = Simulator(small())
    async with admin(sim) as c:
        site = (await c.sites())[0].uri
        await fault(sim, path="/clusters$", status=status, errorCode=code or "10000004", errorShape=shape,
                    contentType="text/plain" if shape == "error" else None)
        with pytest.raises(exc) as ei:
            await c.clusters(site)
    e = ei.value
    assert e.status == status and e.error_code == code and e.path.endswith("/clusters")
    assert (code in str(e)) if code else (f"HTTP {status}" in str(e))


@pytest.mark.parametrize("body, code, des", [
    ({"error": {"code": 10300109, "message": "snapshot does not exist"}}, "10300109", "snapshot does not exist"),
    ({"error": {"errorCode": "10300109", "errorDes": "gone"}}, "10300109", "gone"),
    ({"code": "10300109", "message": "gone"}, "10300109", "gone"),
    ({"error": "snapshot does not exist"}, "", "snapshot does not exist"),
    ({"errorCode": 10300109}, "10300109", ""),
])
async def test_error_fields_in_other_shapes(body: dict, code: str, des: str) -> None:
    def route(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/snapshots/1"):
            return httpx.Response(400 if code else 404, content=json.dumps(body).encode(),
                                  headers={"content-type": "text/plain"})
        return None
    async with VrmClient("http://vrm.test", "admin", "pw", api_version="8.1", transport=mock_vrm(route)) as c:
        with pytest.raises(VrmNotFoundError) as ei:
            await c.snapshot("/service/sites/4D9D0815/vms/i-00000001/snapshots/1")
    assert ei.value.error_code == code and ei.value.error_des == des

