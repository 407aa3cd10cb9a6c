"""The client's HTTP handling against tiny in-test ASGI apps that answer in ways the simulator does not:
the three paging termination styles, malformed and non-JSON bodies, wrong content types, odd error
bodies, persistent 5xx/401. This is our client over real HTTP (ASGI), not a mock of our code."""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fctui.vrm import (VrmApiError, VrmAuthError, VrmClient, VrmConflictError, VrmError, VrmNotFoundError,
                       VrmProtocolError, VrmServerError, VrmTimeoutError, VrmVersionError)

SITE = "/service/sites/4D9D0815"
TOKEN = "tok-123"


class FakeVrm:
    """A minimal VRM: session, versions, and one listing whose paging style is chosen per test."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
        self.items = [{"urn": f"urn:sites:4D9D0815:vms:i-{i:08X}", "name": f"vm-{i}"} for i in range(250)]
        self.style = "total"  # total | short | empty
        self.handler: Callable[[Request], Response] | None = None
        self.logins = 0
        self.valid_tokens: set[str] = set()
        self.always_401 = False

    def app(self) -> Starlette:
        async def session(request: Request) -> Response:
            self.requests.append((request.method, request.url.path, dict(request.query_params),
                                  dict(request.headers)))
            if request.method == "DELETE":
                self.valid_tokens.discard(request.headers.get("x-auth-token", ""))
                return Response(status_code=200)
            key = request.headers.get("x-auth-key")
            ok = (key == hashlib.sha256(b"Secret#1").hexdigest()
                  or (request.headers.get("x-encript-algorithm") == "1" and key == "Secret#1"))
            if request.headers.get("x-auth-user") != "admin" or not ok:
                return JSONResponse({"errorCode": "10000001", "errorDes": "bad credentials"}, status_code=401)
            self.logins += 1
            tok = f"{TOKEN}-{self.logins}"
            self.valid_tokens.add(tok)
            return JSONResponse({"validity": 600000, "userName": "admin", "userId": "7", "roleList": ["a"],
                                 "rightType": "1"}, headers={"X-Auth-Token": tok})

        async def versions(request: Request) -> Response:
            return JSONResponse({"versions": [{"version": "6.3", "loginUri": "/service/session"},
                                              {"version": "8.1", "loginUri": "/service/session"}]})

        async def anything(request: Request) -> Response:
            self.requests.append((request.method, request.url.path, dict(request.query_params),
                                  dict(request.headers)))
            if self.always_401 or request.headers.get("x-auth-token") not in self.valid_tokens:
                return JSONResponse({"errorCode": "10000003", "errorDes": "not logged in"}, status_code=401)
            if self.handler is not None:
                return self.handler(request)
            if request.url.path == "/service/sites":
                return JSONResponse({"sites": []})
            return self.vms(request)

        return Starlette(routes=[
            Route("/service/session", session, methods=["POST", "DELETE"]),
            Route("/service/versions", versions),
            Route("/{path:path}", anything, methods=["GET", "POST", "PUT", "DELETE"]),
        ])

    def vms(self, request: Request) -> Response:
        q = request.query_params
        off, lim = int(q.get("offset", 0)), min(int(q.get("limit", 100)), 100)
        page = self.items[off:off + lim]
        body: dict[str, Any] = {"vms": page}
        if self.style == "total":
            body["total"] = len(self.items)
        return JSONResponse(body)

    def offsets(self) -> list[int]:
        return [int(q["offset"]) for m, p, q, _ in self.requests if p.endswith("/vms") and "offset" in q]


@pytest.fixture
def fake() -> FakeVrm:
    return FakeVrm()


def make_client(fake: FakeVrm, **kw: Any) -> VrmClient:
    kw.setdefault("api_version", "8.1")
    return VrmClient("http://vrm.test", "admin", "Secret#1",
                     transport=httpx.ASGITransport(app=fake.app()), **kw)


# --- login and headers ---------------------------------------------------------------------------

async def test_login_sends_sha256_key_and_headers(fake: FakeVrm) -> None:
    async with make_client(fake) as c:
        assert c.login_info is not None and c.login_info.user_name == "admin"
    method, path, _, headers = fake.requests[0]
    assert (method, path) == ("POST", "/service/session")
    assert headers["x-auth-key"] == hashlib.sha256(b"Secret#1").hexdigest()
    assert headers["x-auth-usertype"] == "2"
    assert "x-encript-algorithm" not in headers
    assert headers["accept"] == "application/json;version=8.1;charset=UTF-8"
    assert headers["accept-language"] == "en_US"
    assert fake.requests[-1][0] == "DELETE"  # __aexit__ logged out
    assert not fake.valid_tokens


async def test_login_plaintext_mode(fake: FakeVrm) -> None:
    async with make_client(fake, plaintext_key=True, user_type="0"):
        pass
    headers = fake.requests[0][3]
    assert headers["x-auth-key"] == "Secret#1"
    assert headers["x-encript-algorithm"] == "1"
    assert headers["x-auth-usertype"] == "0"


async def test_bad_password_is_auth_error_with_fields(fake: FakeVrm) -> None:
    c = VrmClient("http://vrm.test", "admin", "wrong", api_version="8.1",
                  transport=httpx.ASGITransport(app=fake.app()))
    with pytest.raises(VrmAuthError) as ei:
        async with c:
            pass
    assert ei.value.status == 401 and ei.value.error_code == "10000001"
    assert "admin" in str(ei.value) and "wrong" not in str(ei.value)


async def test_password_callable_and_version_discovery(fake: FakeVrm) -> None:
    calls = []

    def pw() -> str:
        calls.append(1)
        return "Secret#1"

    c = VrmClient("http://vrm.test", "admin", pw, transport=httpx.ASGITransport(app=fake.app()))
    async with c:
        assert c.api_version == "8.1"  # newest = last of /service/versions
    assert calls == [1]


async def test_persistent_401_does_not_loop(fake: FakeVrm) -> None:
    async with make_client(fake) as c:
        fake.always_401 = True
        with pytest.raises(VrmAuthError) as ei:
            await c.request("GET", SITE + "/clusters")
        assert ei.value.status == 401
        # one original request, one re-login, one retry: then give up
        gets = [r for r in fake.requests if r[1].endswith("/clusters")]
        assert len(gets) == 2 and fake.logins == 2
        fake.always_401 = False


async def test_secrets_never_logged(fake: FakeVrm, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with make_client(fake) as c:
        fake.valid_tokens.clear()  # force a 401 and re-login
        await c.request("GET", SITE + "/vms", params={"limit": 1})
    text = caplog.text
    assert "Secret#1" not in text
    assert hashlib.sha256(b"Secret#1").hexdigest() not in text
    assert TOKEN not in text


# --- paging -------------------------------------------------------------------------------------

@pytest.mark.parametrize("concurrency", [1, 8])
async def test_paging_stops_on_offset_ge_total(fake: FakeVrm, concurrency: int) -> None:
    fake.items = fake.items[:200]  # exact multiple: only `total` tells the pager to stop
    async with make_client(fake) as c:
        got = [x async for page in c.iter_pages(SITE + "/vms", "vms", concurrency=concurrency) for x in page]
    assert [x["name"] for x in got] == [f"vm-{i}" for i in range(200)]
    assert sorted(fake.offsets()) == [0, 100]


async def test_paging_stops_on_short_page(fake: FakeVrm) -> None:
    fake.style = "short"  # no total at all
    async with make_client(fake) as c:
        got = [x async for page in c.iter_pages(SITE + "/vms", "vms") for x in page]
    assert len(got) == 250
    assert fake.offsets() == [0, 100, 200]


async def test_paging_stops_on_empty_page(fake: FakeVrm) -> None:
    fake.style = "short"
    fake.items = fake.items[:200]  # no total, last page full: only the empty page ends it
    async with make_client(fake) as c:
        got = [x async for page in c.iter_pages(SITE + "/vms", "vms", concurrency=4) for x in page]
    assert len(got) == 200
    assert fake.offsets() == [0, 100, 200]


async def test_concurrent_paging_is_ordered_and_identical(fake: FakeVrm) -> None:
    fake.items = [{"urn": f"urn:sites:4D9D0815:vms:i-{i:08X}", "name": f"vm-{i}"} for i in range(1234)]
    async with make_client(fake) as c:
        seq = await c.vms(SITE, concurrency=1)
        n_seq = len(fake.offsets())
        par = await c.vms(SITE, concurrency=8)
    assert [v.urn for v in seq] == [v.urn for v in par] == [x["urn"] for x in fake.items]
    assert n_seq == 13 and len(fake.offsets()) == 26


async def test_concurrent_paging_when_total_understates(fake: FakeVrm) -> None:
    """The list grew after page 1 reported total: the pager continues past the announced end."""
    total_seen = {"n": 0}

    def handler(request: Request) -> Response:
        q = request.query_params
        off = int(q["offset"])
        body = {"vms": fake.items[off:off + 100], "total": 150 if off == 0 else len(fake.items)}
        total_seen["n"] += 1
        return JSONResponse(body)

    fake.handler = handler
    async with make_client(fake) as c:
        got = [x async for page in c.iter_pages(SITE + "/vms", "vms", concurrency=4) for x in page]
    assert len(got) == 250


async def test_vms_templates_none_lists_both(fake: FakeVrm) -> None:
    seen: list[tuple[str, list[str]]] = []

    def handler(request: Request) -> Response:
        seen.append((request.query_params["isTemplate"], request.query_params.getlist("status")))
        return fake.vms(request)

    fake.handler = handler
    fake.items = fake.items[:30]
    async with make_client(fake) as c:
        got = await c.vms(SITE, templates=None, name="db", status=["running", "stopped"])
    assert len(got) == 60  # this fake ignores filters: both listings return its 30 items
    assert seen == [("false", ["running", "stopped"]), ("true", ["running", "stopped"])]
    q = [q for m, p, q, _ in fake.requests if p.endswith("/vms")]
    assert q[0]["name"] == "db" and q[0]["detail"] == "2"


# --- malformed answers --------------------------------------------------------------------------

def answer(resp: Response) -> Callable[[Request], Response]:
    return lambda request: resp


@pytest.mark.parametrize("resp, fragment", [
    (Response("<html>maintenance</html>", media_type="text/html"), "text/html"),
    (Response("{not json", media_type="application/json"), "malformed JSON"),
    (Response("maintenance", media_type="text/plain"), "text/plain"),  # JSON labelled so is read
    (JSONResponse([1, 2, 3]), "list"),
    (JSONResponse({"total": 3}), "lacks"),
    (JSONResponse({"sites": {"a": 1}}), "not a list"),
])
async def test_malformed_answers_are_protocol_errors(fake: FakeVrm, resp: Response, fragment: str) -> None:
    fake.handler = answer(resp)
    async with make_client(fake) as c:
        with pytest.raises(VrmProtocolError) as ei:
            await c.sites()
    assert fragment in str(ei.value)
    assert ei.value.path == "/service/sites"


async def test_missing_fields_and_unknown_enums_are_tolerated(fake: FakeVrm) -> None:
    fake.handler = answer(JSONResponse({"urn": "urn:sites:4D9D0815:vms:i-00000001", "status": "levitating",
                                        "pvDriverStatus": "dreaming", "newField": {"x": 1}}))
    async with make_client(fake) as c:
        vm = await c.vm("urn:sites:4D9D0815:vms:i-00000001")
    assert vm.status == "levitating" and vm.pv_driver_status == "dreaming"
    assert "vmConfig" in vm.missing and "name" in vm.missing and vm.disks == []


@pytest.mark.parametrize("status, body, exc, code", [
    (400, {"errorCode": "10300026", "errorDes": "VM state does not allow this"}, VrmConflictError, "10300026"),
    (404, None, VrmNotFoundError, ""),
    (400, {"errorCode": "10300109", "errorDes": "snapshot does not exist"}, VrmNotFoundError, "10300109"),
    (400, {"errorCode": "10000022", "errorDes": "bad version"}, VrmVersionError, "10000022"),
    (403, {"errorCode": "10000050", "errorDes": "forbidden"}, VrmAuthError, "10000050"),
    (418, {"error": {"code": "1", "message": "teapot"}}, VrmApiError, "1"),
])
async def test_error_bodies_map_to_types(fake: FakeVrm, status: int, body: Any, exc: type, code: str) -> None:
    fake.handler = answer(JSONResponse(body, status_code=status) if body is not None
                          else Response(status_code=status))
    async with make_client(fake) as c:
        with pytest.raises(exc) as ei:
            await c.request("POST", SITE + "/vms/i-00000001/action/start")
    e = ei.value
    assert e.status == status and e.error_code == code and e.method == "POST"
    assert e.path == SITE + "/vms/i-00000001/action/start"
    assert "\n" not in str(e) and str(e) == e.message


async def test_5xx_get_is_retried_then_typed(fake: FakeVrm) -> None:
    fake.handler = answer(Response("boom", status_code=503, media_type="text/plain"))
    async with make_client(fake, retries_5xx=2) as c:
        with pytest.raises(VrmServerError) as ei:
            await c.clusters(SITE)
    assert ei.value.status == 503 and "boom" in str(ei.value)
    assert len([r for r in fake.requests if r[1].endswith("/clusters")]) == 3


async def test_5xx_post_is_not_retried(fake: FakeVrm) -> None:
    fake.handler = answer(JSONResponse({"errorCode": "10000001", "errorDes": "internal"}, status_code=500))
    async with make_client(fake, retries_5xx=2) as c:
        with pytest.raises(VrmServerError):
            await c.start_vm(SITE + "/vms/i-00000001")
    assert len([r for r in fake.requests if r[1].endswith("/start")]) == 1


async def test_5xx_then_success(fake: FakeVrm) -> None:
    n = {"c": 0}

    def flaky(request: Request) -> Response:
        n["c"] += 1
        if n["c"] == 1:
            return Response(status_code=502)
        return JSONResponse({"clusters": [{"urn": "urn:sites:4D9D0815:clusters:1", "name": "c1"}]})

    fake.handler = flaky
    async with make_client(fake) as c:
        cl = await c.clusters(SITE)
    assert [x.name for x in cl] == ["c1"]


async def test_task_answer_without_task_uri_is_protocol_error(fake: FakeVrm) -> None:
    fake.handler = answer(JSONResponse({"hello": "world"}))
    async with make_client(fake) as c:
        with pytest.raises(VrmProtocolError):
            await c.start_vm(SITE + "/vms/i-00000001")


async def test_bad_inputs_are_typed(fake: FakeVrm) -> None:
    with pytest.raises(VrmError):
        VrmClient("vrm.example", "u", "p")
    with pytest.raises(VrmError) as ei:
        VrmClient("https://vrm.example:7443", "u", "p", verify="/nonexistent/ca.pem")
    assert "/nonexistent/ca.pem" in str(ei.value)
    async with make_client(fake) as c:
        with pytest.raises(VrmError):
            await c.request("GET", "sites")
        with pytest.raises(VrmError):
            await c.request("GET", "/service/sites/\x00\n")
        with pytest.raises(VrmError):
            await c.vm("i-00000001")  # an id is neither a URI nor a URN
        with pytest.raises(VrmError):
            await c.create_snapshot(SITE + "/vms/i-00000001", "")
        with pytest.raises(VrmError):
            await c.get_cbt(SITE + "/volumes/1", snap_uuid="x", vol_cbt_create_time="t", chg_id=0,
                            start_block=3, block_num=8)


async def test_slow_answer_is_timeout_error(fake: FakeVrm) -> None:
    import asyncio

    app = fake.app()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/clusters"):
            await asyncio.sleep(5)
        await app(scope, receive, send)

    c = VrmClient("http://vrm.test", "admin", "Secret#1", api_version="8.1", timeout=0.2,
                  transport=httpx.ASGITransport(app=slow_app))
    async with c:
        with pytest.raises(VrmTimeoutError) as ei:
            await c.clusters(SITE)
        assert "0.2" in str(ei.value)
        assert await c.sites() == []  # the client is still usable afterwards


async def test_standard_json_fallback(fake: FakeVrm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the optional orjson the standard parser gives the same results and errors."""
    import fctui.vrm.client as client_mod
    monkeypatch.setattr(client_mod, "_orjson", None)
    async with make_client(fake) as c:
        assert len(await c.vms(SITE)) == 250
        fake.handler = answer(Response("{not json", media_type="application/json"))
        with pytest.raises(VrmProtocolError):
            await c.sites()

