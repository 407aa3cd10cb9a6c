"""The client's session and paging where mutation testing found them unguarded (README, Mutation
testing): pages fetched concurrently really are, a list that grows by more than a page while it is read,
an early stop that cancels the pages still in flight and leaves no error behind, ``request`` passing
everything on, and a re-login that does not log out a session it never had. Against a tiny in-test VRM
over ASGI (our client over real HTTP, not a mock of our code); waits are on conditions with deadlines."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fctui.vrm import VrmAuthError, VrmClient, VrmError, VrmVersionError
import fctui.vrm.client as client_module
from fctui.vrm.client import gather_limited

SITE = "/service/sites/1"
DEADLINE = 10.0


class PagedVrm:
    """Session plus one listing (``/service/sites/1/vms``, or the same items as ``…/hosts``) whose pages
    can be held back."""

    def __init__(self, n: int) -> None:
        self.items = [{"urn": f"urn:sites:1:vms:i-{i}", "name": f"vm-{i}"} for i in range(n)]
        self.total_of: Any = lambda offset: len(self.items)     # the total a page reports (None: none)
        self.fail_at: int | None = None                         # this page answers 404
        self.hold_from: int | None = None                       # pages at this offset and later wait ...
        self.release = asyncio.Event()                          # ... until this is set
        self.in_flight = 0
        self.max_in_flight = 0
        self.offsets: list[int] = []
        self.answered: list[int] = []
        self.sessions: list[tuple[str, str]] = []               # (method, token)
        self.tokens: set[str] = set()
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.logout_refused = False                             # DELETE /service/session answers 500
        self.logout_hangs = False                               # ... or waits for release
        self.other_answer: Any = {"ok": True}                   # what every other request answers ...
        self.other_statuses: list[int] = []                     # ... after these statuses, one each
        self.refuse_sessions = 0                                # this many answer 401, session or not
        self.login_answer: Response | None = None               # every login answers this
        self.logins: list[tuple[dict[str, str], bytes]] = []    # headers and body of every login
        self.accepts: list[tuple[str, str]] = []                # (path, Accept) of every other request

    def app(self) -> Starlette:
        async def session(request: Request) -> Response:
            tok = request.headers.get("x-auth-token", "")
            self.sessions.append((request.method, tok))
            if request.method == "DELETE":
                if tok not in self.tokens:
                    return JSONResponse({"errorCode": "10000003", "errorDes": "not logged in"}, status_code=401)
                self.tokens.discard(tok)
                if self.logout_hangs:
                    await self.release.wait()
                if self.logout_refused:
                    return JSONResponse({"errorCode": "10000099", "errorDes": "busy"}, status_code=500)
                return Response(b"logged out", media_type="text/plain")   # not JSON: a logout reads no body
            self.logins.append((dict(request.headers), await request.body()))
            if self.login_answer is not None:
                return self.login_answer
            if request.headers.get("x-auth-key") != hashlib.sha256(b"pw").hexdigest():
                return JSONResponse({"errorCode": "10000001", "errorDes": "bad credentials"}, status_code=401)
            new = f"t{len(self.sessions)}"
            self.tokens.add(new)
            return JSONResponse({"userName": "admin"}, headers={"X-Auth-Token": new})

        async def listing(request: Request) -> Response:
            if request.headers.get("x-auth-token") not in self.tokens:
                return JSONResponse({"errorCode": "10000003", "errorDes": "not logged in"}, status_code=401)
            off = int(request.query_params.get("offset", 0))
            self.offsets.append(off)
            if off == self.fail_at:
                return JSONResponse({"errorCode": "10000040", "errorDes": "gone"}, status_code=404)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.hold_from is not None and off >= self.hold_from:
                    await self.release.wait()
                else:
                    for _ in range(3):          # stay in flight while the other pages are asked for
                        await asyncio.sleep(0)
            finally:
                self.in_flight -= 1
            body: dict[str, Any] = {request.url.path.rsplit("/", 1)[1]: self.items[off:off + 100]}
            total = self.total_of(off)
            if total is not None:
                body["total"] = total
            self.answered.append(off)
            return JSONResponse(body)

        async def other(request: Request) -> Response:
            if request.headers.get("x-auth-token") not in self.tokens or self.refuse_sessions:
                self.refuse_sessions = max(0, self.refuse_sessions - 1)
                return JSONResponse({"errorCode": "10000003", "errorDes": "not logged in"}, status_code=401)
            self.seen.append((request.method, request.url.path, dict(request.query_params), await request.body()))
            self.accepts.append((request.url.path, request.headers.get("accept", "")))
            if self.other_statuses:
                return JSONResponse({"errorCode": "10000099", "errorDes": "busy"},
                                    status_code=self.other_statuses.pop(0))
            return Response(b"raw answer", media_type="application/octet-stream") \
                if request.url.path.endswith("/raw") else JSONResponse(self.other_answer)

        return Starlette(routes=[Route("/service/session", session, methods=["POST", "DELETE"]),
                                 Route(SITE + "/vms", listing),
                                 Route(SITE + "/hosts", listing),     # the same items, as hosts
                                 Route("/{path:path}", other, methods=["GET", "POST", "PUT", "DELETE"])])

    def client(self, **kw: Any) -> VrmClient:
        kw.setdefault("api_version", "8.1")
        return VrmClient("http://vrm.test", "admin", "pw", transport=httpx.ASGITransport(app=self.app()), **kw)


async def login_refused(vrm: PagedVrm, exc: type[VrmError], **kw: Any) -> pytest.ExceptionInfo[Any]:
    """The error a login to ``vrm`` raises; the client holds no session after it, and is closed."""
    c = vrm.client(**kw)
    try:
        with pytest.raises(exc) as e:
            await c.login()
        assert not c.logged_in
    finally:
        await c.aclose()
    return e


async def until(cond: Any) -> None:
    async def spin() -> None:
        while not cond():
            await asyncio.sleep(0)
    await asyncio.wait_for(spin(), DEADLINE)


async def test_pages_after_the_first_are_fetched_together() -> None:
    vrm = PagedVrm(450)
    async with vrm.client() as c:
        got = [x async for page in c.iter_pages(SITE + "/vms", "vms", concurrency=4) for x in page]
    assert [x["name"] for x in got] == [f"vm-{i}" for i in range(450)]
    assert sorted(vrm.offsets) == [0, 100, 200, 300, 400]
    assert vrm.max_in_flight >= 2                        # not one after another


async def test_one_at_a_time_when_asked() -> None:
    vrm = PagedVrm(450)
    async with vrm.client() as c:
        got = [x async for page in c.iter_pages(SITE + "/vms", "vms", concurrency=1) for x in page]
    assert len(got) == 450 and vrm.offsets == [0, 100, 200, 300, 400] and vrm.max_in_flight == 1


async def test_vm_pages_one_at_a_time_when_asked() -> None:
    """The console's first page asks for one request at a time (tui.source.first_page)."""
    vrm = PagedVrm(450)
    async with vrm.client() as c:
        got = [v.urn async for page in c.iter_vm_pages(SITE, concurrency=1) for v in page]
    assert len(got) == 450 and vrm.max_in_flight == 1


async def test_a_whole_listing_without_its_list_names_the_request() -> None:
    vrm = PagedVrm(0)               # datastores answer {"ok": true}: no "datastores" list
    async with vrm.client() as c:
        with pytest.raises(VrmError) as e:
            await c.datastores(SITE, scope="urn:sites:1:clusters:7")
    assert (e.value.method, e.value.path) == ("GET", SITE + "/datastores")
    assert str(e.value).startswith(f"VRM answer to GET {SITE}/datastores lacks the 'datastores' list")
    assert vrm.seen == [("GET", SITE + "/datastores", {"scope": "urn:sites:1:clusters:7"}, b"")]


@pytest.mark.parametrize("total", [0, "0"])
async def test_an_empty_listing_may_leave_out_its_list(total: object) -> None:
    """A VRM may answer an empty listing with only {"total": 0} (as a number or a string)."""
    vrm = PagedVrm(0)
    vrm.other_answer = {"total": total}
    async with vrm.client() as c:
        assert await c.datastores(SITE) == []
        assert [x async for page in c.iter_pages(SITE + "/clusters", "clusters") for x in page] == []


@pytest.mark.parametrize("answer, message", [
    ([{"name": "ds-1"}], "VRM answered GET {path} with a JSON list, expected an object"),
    ({"datastores": "ds-1", "total": 1}, "VRM answer to GET {path}: 'datastores' is not a list"),
])
async def test_a_listing_of_the_wrong_shape_names_the_request(answer: Any, message: str) -> None:
    vrm = PagedVrm(0)
    vrm.other_answer = answer
    async with vrm.client() as c:
        with pytest.raises(VrmError) as e:
            await c.datastores(SITE)
    assert (e.value.method, e.value.path) == ("GET", SITE + "/datastores")
    assert str(e.value) == message.format(path=SITE + "/datastores")


async def test_requests_carry_the_api_version_and_version_discovery_none() -> None:
    """vrm-api §2: the version goes in Accept; /service/versions is asked without one (it is how a
    client learns which to send)."""
    vrm = PagedVrm(0)
    vrm.other_answer = {"total": 0, "versions": [{"version": "8.1"}]}
    async with vrm.client() as c:
        await c.datastores(SITE)
        await c.versions()
    assert vrm.accepts == [(SITE + "/datastores", "application/json;version=8.1;charset=UTF-8"),
                           ("/service/versions", "application/json;charset=UTF-8")]


async def test_a_call_after_logout_opens_a_new_session() -> None:
    vrm = PagedVrm(0)
    vrm.other_answer = {"total": 0}
    async with vrm.client() as c:
        await c.logout()
        assert await c.datastores(SITE) == []
        assert c.logged_in
    assert [m for m, _ in vrm.sessions] == ["POST", "DELETE", "POST", "DELETE"]


class _LogoutOnFirstFailure(httpx.AsyncBaseTransport):
    """Passes requests to the VRM; when the first 5xx comes back, the client logs out before it sees it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.client: VrmClient | None = None
        self.done = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        if resp.status_code >= 500 and not self.done and self.client is not None:
            self.done = True
            await self.client.logout()
        return resp


async def test_a_retry_after_the_session_ended_is_not_sent_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """``/service/versions`` asked within a session that ends while a 5xx is retried: the retry is not
    sent without a token, and the caller is told the client is not logged in (it asked not to log in
    again, as discovery does)."""
    monkeypatch.setattr(client_module, "_RETRY_BACKOFF_S", (0.0,))
    vrm = PagedVrm(0)
    vrm.other_statuses = [503]
    transport = _LogoutOnFirstFailure(httpx.ASGITransport(app=vrm.app()))
    c = VrmClient("http://vrm.test", "admin", "pw", transport=transport, api_version="8.1", retries_5xx=1)
    transport.client = c
    async with c:
        with pytest.raises(VrmAuthError) as e:
            await c.versions()
    assert (str(e.value), e.value.status, e.value.method, e.value.path) == (
        "not logged in to the VRM", 401, "GET", "/service/versions")
    assert [p for p, _ in vrm.accepts] == ["/service/versions"]          # asked once, not again tokenless
    assert [m for m, _ in vrm.sessions] == ["POST", "DELETE"]            # and no new session for it


async def test_an_expired_session_is_reopened_once_and_told(caplog: pytest.LogCaptureFixture) -> None:
    vrm = PagedVrm(0)
    vrm.other_answer = {"total": 0}
    async with vrm.client() as c:
        vrm.tokens.clear()                                    # the VRM forgot the session
        with caplog.at_level(logging.INFO, logger="fctui.vrm.client"):
            assert await c.datastores(SITE) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"VRM answered 401 to GET {SITE}/datastores; logging in again",
        "logged in to http://vrm.test as admin (API version 8.1)"]
    assert [m for m, _ in vrm.sessions] == ["POST", "POST", "DELETE"]
    assert [p for p, _ in vrm.accepts] == [SITE + "/datastores"]      # the refused one is not recorded


async def test_a_get_answered_5xx_is_retried_with_backoff_and_told(caplog: pytest.LogCaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Each retry waits the next backoff step, the last step again once they run out."""
    monkeypatch.setattr(client_module, "_RETRY_BACKOFF_S", (0.0, 0.1))
    vrm = PagedVrm(0)
    vrm.other_answer = {"total": 0}
    vrm.other_statuses = [500, 502, 503]
    async with vrm.client(retries_5xx=3) as c:
        with caplog.at_level(logging.INFO, logger="fctui.vrm.client"):
            assert await c.datastores(SITE) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"VRM answered 500 to GET {SITE}/datastores; retry 1 in 0.0 s",
        f"VRM answered 502 to GET {SITE}/datastores; retry 2 in 0.1 s",
        f"VRM answered 503 to GET {SITE}/datastores; retry 3 in 0.1 s"]
    assert [p for p, _ in vrm.accepts] == [SITE + "/datastores"] * 4


async def test_a_session_refused_right_after_logging_in_again_is_opened_once_more() -> None:
    """After a logout the next call logs in; a 401 to that call (the VRM dropped the new session) gets
    one more login, as any 401 does."""
    vrm = PagedVrm(0)
    vrm.other_answer = {"total": 0}
    async with vrm.client() as c:
        await c.logout()
        vrm.refuse_sessions = 1
        assert await c.datastores(SITE) == []
    assert [m for m, _ in vrm.sessions] == ["POST", "DELETE", "POST", "POST", "DELETE"]


async def test_a_raw_request_refused_with_400_raises_the_vrm_error() -> None:
    """A call that reads no JSON still reads the error of a refusal (4xx: never retried)."""
    vrm = PagedVrm(0)
    vrm.other_statuses = [400]
    async with vrm.client(retries_5xx=3) as c:
        with pytest.raises(VrmError) as e:
            await c.request("GET", SITE + "/raw", expect_json=False)
    assert (e.value.status, e.value.error_code, e.value.method, e.value.path) == (400, "10000099", "GET", SITE + "/raw")
    assert str(e.value) == f"VRM refused GET {SITE}/raw: busy [10000099] (HTTP 400)"
    assert len(vrm.accepts) == 1


async def test_a_login_sends_the_user_its_hashed_key_and_type_with_an_empty_object() -> None:
    """vrm-api §2.1: X-Auth-User, X-Auth-Key (SHA-256 hex), X-Auth-UserType, and a `{}` body."""
    vrm = PagedVrm(0)
    async with vrm.client(user_type="0"):
        pass
    ((headers, body),) = vrm.logins
    assert body == b"{}"
    assert (headers["x-auth-user"], headers["x-auth-key"], headers["x-auth-usertype"]) == (
        "admin", hashlib.sha256(b"pw").hexdigest(), "0")
    assert "x-encript-algorithm" not in headers
    assert headers["accept"] == "application/json;version=8.1;charset=UTF-8"


async def test_a_plaintext_login_says_so_in_huaweis_spelling() -> None:
    vrm = PagedVrm(0)
    vrm.login_answer = JSONResponse({"errorCode": "10000001", "errorDes": "bad credentials"}, status_code=401)
    await login_refused(vrm, VrmAuthError, plaintext_key=True)
    ((headers, _),) = vrm.logins
    assert (headers["x-auth-key"], headers["x-encript-algorithm"]) == ("pw", "1")


async def test_a_password_given_as_a_function_is_asked_for_at_login() -> None:
    """The console and the CLI pass a prompt (or a credential-file reader), never the password itself."""
    vrm = PagedVrm(0)
    asked: list[int] = []

    def password() -> str:
        asked.append(1)
        return "pw"

    async with VrmClient("http://vrm.test", "admin", password, api_version="8.1",
                         transport=httpx.ASGITransport(app=vrm.app())) as c:
        assert c.logged_in and asked == [1]


async def test_a_login_answer_without_a_token_is_a_protocol_error() -> None:
    vrm = PagedVrm(0)
    vrm.login_answer = JSONResponse({"userName": "admin"})
    e = await login_refused(vrm, VrmError)
    assert (str(e.value), e.value.method, e.value.path, e.value.status) == (
        "VRM login answered without an X-Auth-Token header", "POST", "/service/session", 200)


async def test_a_login_without_a_version_is_logged_with_a_dash(caplog: pytest.LogCaptureFixture) -> None:
    vrm = PagedVrm(0)
    with caplog.at_level(logging.INFO, logger="fctui.vrm.client"):
        async with vrm.client(api_version=""):
            pass
    assert "logged in to http://vrm.test as admin (API version -)" in [r.getMessage() for r in caplog.records]


async def test_a_login_answer_that_is_not_json_names_the_request() -> None:
    vrm = PagedVrm(0)
    vrm.login_answer = Response(b"<html>portal</html>", media_type="text/html", headers={"X-Auth-Token": "t"})
    e = await login_refused(vrm, VrmError)
    assert (e.value.method, e.value.path) == ("POST", "/service/session")
    assert str(e.value) == "VRM answered POST /service/session with text/html; charset=utf-8 instead of JSON"


@pytest.mark.parametrize("user_type, status, answer, message", [
    ("2", 401, {"errorCode": "10000001", "errorDes": "bad credentials"},
     "VRM login refused for user 'admin': bad credentials [10000001]; check the password, and that the account "
     "is of user type 2 (X-Auth-UserType; the other type is 0)"),
    ("0", 401, {"errorCode": "10000001", "errorDes": ""},
     "VRM login refused for user 'admin': bad user name or password [10000001]; check the password, and that "
     "the account is of user type 0 (X-Auth-UserType; the other type is 2)"),
    ("2", 401, {"errorCode": "10000040", "errorDes": "licence 10000040 expired"},   # a licence: no hint
     "VRM login refused for user 'admin': licence 10000040 expired"),
    ("2", 403, {"errorCode": "10000004", "errorDes": "locked"},                     # not a password matter
     "VRM login refused for user 'admin': locked [10000004]"),
    ("2", 401, {}, "VRM login refused for user 'admin': bad user name or password; check the password, and that "
     "the account is of user type 2 (X-Auth-UserType; the other type is 0)"),
])
async def test_a_refused_login_says_why_and_whom_to_suspect(user_type: str, status: int, answer: dict[str, Any],
                                                           message: str) -> None:
    vrm = PagedVrm(0)
    vrm.login_answer = JSONResponse(answer, status_code=status)
    e = await login_refused(vrm, VrmAuthError, user_type=user_type)
    assert str(e.value) == message
    assert (e.value.status, e.value.error_code, e.value.error_des, e.value.method, e.value.path) == (
        status, answer.get("errorCode", ""), answer.get("errorDes", ""), "POST", "/service/session")


@pytest.mark.parametrize("status", [401, 403])
async def test_a_login_refused_for_its_version_is_a_version_error(status: int) -> None:
    vrm = PagedVrm(0)
    vrm.login_answer = JSONResponse({"errorCode": "10000022", "errorDes": "version not supported"}, status_code=status)
    e = await login_refused(vrm, VrmVersionError)
    assert str(e.value) == "VRM does not support this API version: version not supported [10000022]"
    assert (e.value.status, e.value.error_code, e.value.error_des, e.value.method, e.value.path) == (
        status, "10000022", "version not supported", "POST", "/service/session")


async def test_a_whole_listing_the_vrm_pages_anyway_is_read_to_its_latest_total() -> None:
    """Hosts asked for whole, answered in pages of 100 whose total grows (hosts added meanwhile): the
    client reads on page by page to the latest total, each item once."""
    vrm = PagedVrm(250)
    vrm.total_of = lambda off: 150 if off == 0 else 250
    async with vrm.client() as c:
        hosts = await c.hosts(SITE)
    assert [h.name for h in hosts] == [f"vm-{i}" for i in range(250)]
    assert vrm.offsets == [0, 100, 200]
    vrm.total_of = lambda off: 250 if off == 0 else None     # later pages without a total: the first holds
    vrm.offsets.clear()
    async with vrm.client() as c:
        assert len(await c.hosts(SITE)) == 250
    assert vrm.offsets == [0, 100, 200]


async def test_a_short_first_page_without_a_total_is_the_whole_list() -> None:
    vrm = PagedVrm(50)
    vrm.total_of = lambda off: None
    async with vrm.client() as c:
        got = [x async for page in c.iter_pages(SITE + "/vms", "vms", concurrency=1) for x in page]
    assert len(got) == 50 and vrm.offsets == [0]


async def test_a_full_first_page_that_is_the_total_is_the_whole_list() -> None:
    vrm = PagedVrm(100)
    async with vrm.client() as c:
        got = [x async for page in c.iter_pages(SITE + "/vms", "vms", concurrency=1) for x in page]
    assert len(got) == 100 and vrm.offsets == [0]


async def test_two_pages_at_a_time_when_asked_for_two() -> None:
    vrm = PagedVrm(450)
    async with vrm.client() as c:
        got = [x async for page in c.iter_pages(SITE + "/vms", "vms", concurrency=2) for x in page]
    assert len(got) == 450 and vrm.max_in_flight == 2


async def test_one_at_a_time_stops_at_the_short_page_when_the_total_overstates() -> None:
    """Page by page (concurrency 1) nothing is asked for beyond the short page, whatever the total says."""
    vrm = PagedVrm(250)
    vrm.total_of = lambda off: 450
    async with vrm.client() as c:
        got = [x async for page in c.iter_pages(SITE + "/vms", "vms", concurrency=1) for x in page]
    assert len(got) == 250 and vrm.offsets == [0, 100, 200]


async def test_a_refused_page_names_its_request() -> None:
    vrm = PagedVrm(450)
    vrm.fail_at = 200
    async with vrm.client() as c:
        with pytest.raises(VrmError) as e:
            _ = [x async for page in c.iter_pages(SITE + "/vms", "vms", concurrency=1) for x in page]
    assert (e.value.method, e.value.path, e.value.status) == ("GET", SITE + "/vms", 404)


async def test_a_page_without_its_list_names_the_request() -> None:
    vrm = PagedVrm(0)               # clusters answer {"ok": true}: no "clusters" list
    async with vrm.client() as c:
        with pytest.raises(VrmError) as e:
            _ = [x async for page in c.iter_pages(SITE + "/clusters", "clusters") for x in page]
    assert (e.value.method, e.value.path) == ("GET", SITE + "/clusters")
    assert str(e.value).startswith(f"VRM answer to GET {SITE}/clusters lacks the 'clusters' list")


async def test_a_refused_logout_is_logged_and_the_session_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    """close() never raises: a VRM that refuses the logout is told in the log, and the token is dropped."""
    vrm = PagedVrm(0)
    vrm.logout_refused = True
    c = vrm.client(retries_5xx=0)
    await c.login()
    with caplog.at_level(logging.INFO, logger="fctui.vrm.client"):
        await c.close()
    assert not c.logged_in
    (rec,) = [r for r in caplog.records if r.getMessage().startswith("logout failed: ")]
    assert "busy" in rec.getMessage()


async def test_a_logout_that_hangs_is_given_up(caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "LOGOUT_TIMEOUT_S", 0.05)
    vrm = PagedVrm(0)
    vrm.logout_hangs = True
    c = vrm.client()
    await c.login()
    try:
        with caplog.at_level(logging.INFO, logger="fctui.vrm.client"):
            await asyncio.wait_for(c.close(), DEADLINE)
    finally:
        vrm.release.set()
    assert not c.logged_in
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("logout")] == ["logout failed: timed out"]


async def test_close_ends_the_session_once_and_quietly(caplog: pytest.LogCaptureFixture) -> None:
    vrm = PagedVrm(0)
    c = vrm.client()
    await c.login()
    with caplog.at_level(logging.INFO, logger="fctui.vrm.client"):
        await c.close()
    assert [m for m, _ in vrm.sessions] == ["POST", "DELETE"] and vrm.tokens == set()
    assert [r.getMessage() for r in caplog.records if "logout" in r.getMessage()] == []


async def test_close_with_an_expired_session_does_not_log_in_again() -> None:
    """Logging in only to log out would open a session for nothing (a real VRM caps them per user)."""
    vrm = PagedVrm(0)
    c = vrm.client()
    await c.login()
    vrm.tokens.clear()                                  # the session expired on the VRM
    await c.close()
    assert [m for m, _ in vrm.sessions] == ["POST", "DELETE"] and not c.logged_in


async def test_a_list_that_grows_by_pages_while_read_is_read_to_its_new_end() -> None:
    vrm = PagedVrm(480)
    vrm.total_of = lambda off: 250 if off == 0 else 480      # page 1 announced 250
    async with vrm.client() as c:
        got = [x async for page in c.iter_pages(SITE + "/vms", "vms", concurrency=4) for x in page]
    assert [x["name"] for x in got] == [f"vm-{i}" for i in range(480)]
    assert sorted(vrm.offsets) == [0, 100, 200, 300, 400]


async def test_without_later_totals_the_first_one_ends_the_list() -> None:
    vrm = PagedVrm(300)
    vrm.total_of = lambda off: 300 if off == 0 else None     # only page 1 says how many
    async with vrm.client() as c:
        got = [x async for page in c.iter_pages(SITE + "/vms", "vms", concurrency=4) for x in page]
    assert len(got) == 300
    assert sorted(vrm.offsets) == [0, 100, 200]              # no page past the announced end


async def test_a_failing_page_cancels_the_pages_in_flight_and_its_error_comes_out() -> None:
    vrm = PagedVrm(900)
    vrm.hold_from = 300                                      # pages 300.. never answer by themselves
    vrm.fail_at = 200                                        # page 200 is refused
    got: list[str] = []
    in_flight_when_raised: list[int] = []

    async def read(c: VrmClient) -> None:
        try:
            async for page in c.iter_pages(SITE + "/vms", "vms", concurrency=3):
                got.append(page[0]["name"])
        except VrmError:                                     # not CancelledError: the page's own error
            # the held pages were cancelled and awaited before the error came out: none is in flight
            in_flight_when_raised.append(vrm.in_flight)

    async with vrm.client() as c:
        try:
            await asyncio.wait_for(read(c), DEADLINE)
        finally:
            vrm.release.set()
    assert got == ["vm-0", "vm-100"] and in_flight_when_raised == [0]
    assert 300 in vrm.offsets and 300 not in vrm.answered


async def test_stopping_early_after_a_page_failed_leaves_no_unretrieved_error() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    vrm = PagedVrm(900)
    vrm.fail_at = 300
    vrm.hold_from = 400
    try:
        async with vrm.client() as c:
            pages = c.iter_pages(SITE + "/vms", "vms", concurrency=3)
            await pages.__anext__()
            await asyncio.wait_for(pages.__anext__(), DEADLINE)
            await until(lambda: 300 in vrm.offsets and vrm.in_flight >= 1)
            for _ in range(20):                              # the refused page's task ends with its error
                await asyncio.sleep(0)
            await asyncio.wait_for(pages.aclose(), DEADLINE)
            await until(lambda: vrm.in_flight == 0)
            vrm.release.set()
            for _ in range(10):
                await asyncio.sleep(0)
            gc.collect()
            for _ in range(10):
                await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(old)
    assert [e.get("message") for e in errors] == []


async def test_stopping_early_cancels_the_pages_still_in_flight() -> None:
    vrm = PagedVrm(900)
    vrm.hold_from = 200
    async with vrm.client() as c:
        pages = c.iter_pages(SITE + "/vms", "vms", concurrency=3)
        first = await pages.__anext__()
        second = await asyncio.wait_for(pages.__anext__(), DEADLINE)
        assert (first[0]["name"], second[0]["name"]) == ("vm-0", "vm-100")
        await until(lambda: {200, 300} <= set(vrm.offsets))
        await asyncio.wait_for(pages.aclose(), DEADLINE)
        await until(lambda: vrm.in_flight == 0)             # cancelled, not left waiting for an answer
        assert not {200, 300} & set(vrm.answered)
        vrm.release.set()


# --- request and the session -------------------------------------------------------------------------------

async def test_request_passes_method_params_body_and_raw_answers_on() -> None:
    vrm = PagedVrm(0)
    async with vrm.client() as c:
        assert await c.request("post", SITE + "/things", params={"a": 1, "skip": None}, json={"x": 2}) == {"ok": True}
        raw = await c.request("GET", SITE + "/raw", expect_json=False)
    assert raw == b"raw answer"
    assert vrm.seen[0] == ("POST", SITE + "/things", {"a": "1"}, b'{"x":2}')
    assert vrm.seen[1][:3] == ("GET", SITE + "/raw", {})


async def test_a_relogin_after_401_does_not_log_out_a_session_it_never_had() -> None:
    vrm = PagedVrm(5)
    async with vrm.client() as c:
        vrm.tokens.clear()                                   # the VRM forgets the session
        got = [x async for page in c.iter_pages(SITE + "/vms", "vms") for x in page]
        assert len(got) == 5
        assert vrm.sessions == [("POST", ""), ("POST", "")]  # logged in again, no DELETE in between
        await c.login()                                      # a second login ends the first session
        assert vrm.sessions[2:] == [("DELETE", "t2"), ("POST", "")]


async def test_open_session_passes_its_options_on_and_closes_on_a_refused_login() -> None:
    vrm = PagedVrm(3)
    c = await VrmClient.open_session("http://vrm.test", "admin", "pw", transport=httpx.ASGITransport(app=vrm.app()),
                                     api_version="8.1", page_concurrency=3)
    try:
        assert c.logged_in and c.page_concurrency == 3 and c.api_version == "8.1"
        assert [x["name"] async for page in c.iter_pages(SITE + "/vms", "vms") for x in page] == ["vm-0", "vm-1", "vm-2"]
    finally:
        await c.close()
    assert vrm.sessions == [("POST", ""), ("DELETE", "t1")]
    try:
        await VrmClient.open_session("http://vrm.test", "admin", "wrong", transport=httpx.ASGITransport(app=vrm.app()),
                                     api_version="8.1")
    except VrmError as e:
        assert "bad credentials" in str(e)
    else:
        raise AssertionError("a refused login opened a session")


def test_gather_limited_keeps_to_its_limit_and_the_input_order() -> None:
    async def run(limit: int, n: int) -> tuple[list[int], int]:
        running = peak = 0

        async def one(i: int) -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0)  # let the others start if the limit allows
            await asyncio.sleep(0)
            running -= 1
            return i * 10
        return await gather_limited([one(i) for i in range(n)], limit), peak

    assert asyncio.run(run(1, 5)) == ([0, 10, 20, 30, 40], 1)
    assert asyncio.run(run(0, 3)) == ([0, 10, 20], 1)   # 0 or less: one at a time, never none
    assert asyncio.run(run(3, 7)) == ([0, 10, 20, 30, 40, 50, 60], 3)
