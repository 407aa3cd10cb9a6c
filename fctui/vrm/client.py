"""Async client of the FusionCompute VRM REST API (vrm-api.md §1-§12).

One :class:`VrmClient` holds one login session. It re-logs-in once on HTTP 401, retries idempotent reads
on 5xx, pages lists (optionally several pages at a time), and turns every failure into a typed
:class:`~fctui.vrm.errors.VrmError`. Volume bytes move through :meth:`VrmClient.data_transport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import re
import ssl
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, TypeVar
from urllib.parse import urlsplit

import httpx

from .credentials import install_log_redaction
from .errors import (LICENCE_ERROR_CODE, VERSION_ERROR_CODE, BackupResourceError, TaskFailedError,
                     TaskTimeoutError, VrmApiError, VrmAuthError, VrmBodyTooLargeError, VrmConnectionError,
                     VrmError, VrmNotFoundError, VrmProtocolError, VrmServerError, VrmTimeoutError,
                     VrmVersionError, api_error)
from .models import (CBT_BITMAP_ORDERS, BackupResource, CbtBitmap, CbtBitmapError, Cluster, Datastore, Host,
                     LoginInfo, OsCatalogue, PortGroup, Site, SnapshotDetail, SnapshotTree, Task, TaskRef, VersionInfo, Vm,
                     Volume, as_int)
from .requester import check_ip, local_address_towards
from .transport import BlockTransport, HttpResourceTransport, make_verify
from .urn import urn_to_uri

log = logging.getLogger("fctui.vrm.client")

try:  # optional: 3-5x faster decoding of big VM pages; the standard library is the fallback.
    # (Integers beyond 64 bits become floats with orjson; no VRM field is that large.)
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None


def _loads(body: bytes) -> Any:
    with gc_paused(len(body) >= _BIG_BODY):
        if _orjson is not None:
            try:
                return _orjson.loads(body)
            except ValueError:
                pass  # orjson is stricter (NaN, Infinity): let the standard parser decide
        return json.loads(body)


_BIG_BODY = 32 * 1024


@dataclass(slots=True)
class Answer:
    """A VRM answer as read: status, headers, the whole body."""
    status_code: int
    headers: httpx.Headers
    content: bytes


_gc_lock = threading.Lock()
_gc_pauses = 0            # nesting depth of gc_paused() sections, over every task and thread
_gc_resume = False        # whether the collector was on when the outermost section began


@contextmanager
def gc_paused(pause: bool = True) -> Iterator[None]:
    """Hold the cyclic garbage collector off while a bulk listing allocates (decoding pages, building
    models). Listing 10,000 VMs allocates ~300,000 containers; the collections the allocations trigger
    rescan the growing heap of earlier pages and cost as much CPU as the decoding itself. Sections nest
    and may span awaits (a depth count, not a flag): the collector resumes when the last one ends, and
    collects whatever is garbage then. Never used around code that waits on someone else indefinitely."""
    global _gc_pauses, _gc_resume
    if not pause:
        yield
        return
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_resume:
                gc.enable()

T = TypeVar("T")

PAGE_LIMIT = 100  # the documented maximum; every known client uses it (vrm-api.md §5)
# The largest answer read into memory. The biggest real one is a page of 100 VMs with detail=2 (disks,
# NICs, config of each): 390,508 bytes at most over the simulator's 10,000-VM inventory (measured); a
# real VRM's are of that order. 64 MiB leaves >150x headroom and keeps a broken or hostile peer from
# taking the process's memory (a 400 MB answer once took it to 964 MB).
MAX_BODY = 64 << 20
LOGOUT_TIMEOUT_S = 2.0  # within the 3 s the console gives its refresh process to stop
INSECURE_WARNING = ("TLS certificate verification is OFF (--insecure): the VRM's identity is not checked "
                    "and the password hash could be intercepted. Prefer --ca-file with the VRM's CA.")
_insecure_warned = False

_RETRY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)

# X-Auth-UserType values real clients send, and the one the account must have (vrm-api.md §2.1, §16):
# 0 (Commvault helper, SITEAPP, CMP, FCC) or 2 (NOVA, CINDER, the Go SDKs).
USER_TYPES = ("0", "2")
DEFAULT_USER_TYPE = "2"
# When the VRM cannot say which API versions it offers: first no version in Accept (accepted by real
# VRMs: the Commvault helper sends none, vrm-api.md §1), then, should even that be refused with
# 10000022, the versions seen in clients of real VRMs, newest first (§1).
FALLBACK_API_VERSIONS = ("", "8.1", "8.0", "6.5", "6.3", "6.0")


def _warn_insecure_once() -> None:
    global _insecure_warned
    if not _insecure_warned:
        _insecure_warned = True
        log.warning(INSECURE_WARNING)


def user_type_header(value: object) -> str:
    """The ``X-Auth-UserType`` to send for a setting given as an int or a string: "0" or "2"."""
    text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if text not in USER_TYPES:
        raise VrmError(f"user type must be 0 or 2 (X-Auth-UserType: 0 for a local account, 2 for an "
                       f"interface account), got {value!r}")
    return text


def _password_key(password: str, plaintext: bool) -> str:
    return password if plaintext else hashlib.sha256(password.encode("utf-8")).hexdigest()


def _param(v: Any) -> Any:
    """Query values as the VRM spells them: lower-case booleans, lists as repeated keys."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return [_param(x) for x in v]
    return v


def _total(data: dict) -> int | None:
    """A listing's ``total``, when it is a number (also sent as a string)."""
    return as_int(data.get("total"))


def _clean_params(params: dict[str, Any] | None) -> dict[str, Any]:
    return {k: _param(v) for k, v in (params or {}).items() if v is not None}


def _tls_failure(e: BaseException | None) -> ssl.SSLError | None:
    """The ssl error under a transport error (httpx raises its own, chained to it), if any."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, ssl.SSLError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


_SSL_NOISE = re.compile(r"^\[SSL(?:: \w+)?\]\s*|\s*\(_ssl\.c:\d+\)\s*$|^certificate verify failed:\s*")


def _tls_words(text: str) -> str:
    """OpenSSL's text without its codes: "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"
    says "wrong version number"."""
    for _ in range(3):
        text = _SSL_NOISE.sub("", text.strip())
    return text or "TLS error"


class VrmClient:
    """A logged-in conversation with one VRM. Use as ``async with VrmClient(...) as vrm:``."""

    def __init__(self, base_url: str, user: str, password: str | Callable[[], str], *,
                 api_version: str | None = None, user_type: int | str = DEFAULT_USER_TYPE,
                 plaintext_key: bool = False,
                 verify: bool | str = True, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 page_concurrency: int = 8, retries_5xx: int = 2, max_body: int | None = None,
                 proxy_ip: str | None = None, cbt_bitmap: str = "nibble") -> None:
        try:
            parts = urlsplit(base_url)
            parts.port  # noqa: B018 -- raises on a port outside 0-65535
        except ValueError as e:  # "[::1" without its bracket, port 99999: one clear line, not a traceback
            raise VrmError(f"VRM address {base_url!r} is not a valid URL: {e}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise VrmError(f"VRM address must look like https://host:7443, got {base_url!r}")
        if page_concurrency < 1:
            raise VrmError("page_concurrency must be at least 1")
        install_log_redaction()
        self.base_url = base_url.rstrip("/")
        self.user = user
        self._password = password  # kept only in memory, never logged
        self._configured_version = api_version.lstrip("vV") if api_version else None
        self.api_version: str = self._configured_version or ""
        self._negotiated = self._configured_version is not None
        self.user_type = user_type_header(user_type)
        self.plaintext_key = plaintext_key
        self.verify = verify
        self.timeout = timeout
        self.page_concurrency = page_concurrency
        self.retries_5xx = max(0, retries_5xx)
        self.max_body = MAX_BODY if max_body is None else max_body
        if self.max_body < 1:
            raise VrmError("max_body must be at least 1 byte")
        self._transport = transport
        # Backup data path settings of this VRM (profile: proxy_ip, cbt_bitmap; vrm-api.md §16)
        self.proxy_ip = check_ip(proxy_ip) if proxy_ip else None
        if cbt_bitmap not in CBT_BITMAP_ORDERS:
            raise VrmError(f"cbt_bitmap must be one of {', '.join(CBT_BITMAP_ORDERS)}, got {cbt_bitmap!r}")
        self.cbt_bitmap = cbt_bitmap
        self._local_ip: str | None = None
        if verify is False and parts.scheme == "https":
            _warn_insecure_once()
        self._http = httpx.AsyncClient(
            base_url=self.base_url, verify=make_verify(verify), timeout=httpx.Timeout(timeout),
            transport=transport, follow_redirects=False,
            # Room for the pages in flight plus a few side calls, no more: httpcore scans its whole
            # pool (quadratically in idle connections) on every request, which cost more CPU than
            # decoding volume pages did with 32 connections.
            limits=httpx.Limits(max_connections=page_concurrency + 4,
                                max_keepalive_connections=page_concurrency + 4),
        )
        self._token: str | None = None
        self._token_gen = 0
        self._login_lock = asyncio.Lock()
        self.login_info: LoginInfo | None = None
        self.request_count = 0  # requests sent, for benchmarks and diagnostics

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> "VrmClient":
        try:
            await self.login()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """End the session (logout) and the connections. Every VRM session we open ends here: a real
        VRM caps live sessions per user, and one left behind counts until it idles out. Never raises
        a VrmError; the logout is bounded by LOGOUT_TIMEOUT_S so a lost VRM does not hold the caller."""
        try:
            if self._token is not None:
                try:
                    async with asyncio.timeout(min(self.timeout, LOGOUT_TIMEOUT_S)):
                        await self.logout()
                except (VrmError, TimeoutError) as e:  # it expires on its own; do not mask the real error
                    log.info("logout failed: %s", str(e) or "timed out")  # a TimeoutError says nothing
                    self._token = None
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the connections only (the session stays open on the VRM): use :meth:`close`."""
        await self._http.aclose()

    @property
    def logged_in(self) -> bool:
        return self._token is not None

    def clone_args(self) -> dict[str, Any] | None:
        """Keyword arguments that open an equivalent client in another process of ours (a helper
        that reads a side listing in parallel), or None when that is not possible: an in-process
        transport, a password that is asked for on demand, or a CA context that cannot cross. The
        dict holds the password: hand it to our own child only, through a pipe, never argv/env/disk."""
        if self._transport is not None or not isinstance(self._password, str):
            return None
        if not isinstance(self.verify, (bool, str)):
            return None
        return dict(base_url=self.base_url, user=self.user, password=self._password,
                    api_version=self.api_version or None, user_type=self.user_type,
                    plaintext_key=self.plaintext_key, verify=self.verify, timeout=self.timeout,
                    page_concurrency=self.page_concurrency, retries_5xx=self.retries_5xx,
                    max_body=self.max_body)

    def _accept(self, with_version: bool = True) -> str:
        if with_version and self.api_version:
            return f"application/json;version={self.api_version};charset=UTF-8"
        return "application/json;charset=UTF-8"

    def _base_headers(self, with_version: bool = True) -> dict[str, str]:
        return {"Accept": self._accept(with_version), "Accept-Language": "en_US",
                "Content-Type": "application/json;charset=UTF-8"}

    # --- session --------------------------------------------------------------------------------

    async def versions(self) -> list[VersionInfo]:
        """``GET /service/versions``, oldest first. Sent without a token before login and with the
        session's once logged in: a VRM may want one (the eSDK sends its cached token, the Commvault
        helper asks only after login; vrm-api.md §1, §16)."""
        data = await self._call("GET", "/service/versions", with_version=False, auth=self.logged_in,
                                relogin=False)
        items = self._list_field(data, "versions", "GET", "/service/versions")
        return [VersionInfo.from_dict(x) for x in items]

    async def _discover_versions(self) -> tuple[list[str], bool]:
        """Versions the VRM offers, newest first ([] when it cannot say), and whether it refused for
        want of a session (then asking again after login may tell). Never raises: discovery must not
        block login -- a VRM or a proxy may refuse the call (401, 403), fail (5xx), answer something
        else, or drop the connection; the login that follows reports a real problem with the VRM."""
        try:
            vs = [v.version.lstrip("vV") for v in await self.versions() if v.version]
        except VrmError as e:
            log.info("version discovery failed (%s); falling back", e)
            return [], isinstance(e, VrmAuthError) and e.status == 401 and not self.logged_in
        return list(reversed(vs)), False

    @classmethod
    async def open_session(cls, url: str, user: str, password: str | Callable[[], str], **options: Any) -> "VrmClient":
        """A client whose session is open; closed again when the login fails (no connection left behind).
        Whoever gets one logs out and closes it."""
        client = cls(url, user, password, **options)
        try:
            await client.login()
        except BaseException:
            await client.aclose()
            raise
        return client

    async def login(self) -> LoginInfo:
        """Negotiate the API version if needed and open a session.

        A configured version is used as is. Otherwise the newest of ``/service/versions`` is tried
        first and, should the VRM refuse it as unsupported (10000022, whatever the HTTP status), the
        next older one. When the VRM cannot say, FALLBACK_API_VERSIONS are tried in turn; when it
        wants a session for ``/service/versions``, it is asked again once logged in and the session
        is reopened with the newest version it offers and accepts.
        """
        if self._token is not None:  # a second login would leave the first session open on the VRM
            with contextlib.suppress(VrmError):
                await self.logout()
        if self._negotiated:
            return await self._login()
        offered, ask_after_login = await self._discover_versions()
        if offered:
            return await self._login_trying(offered)
        info = await self._login_trying(list(FALLBACK_API_VERSIONS))
        if not ask_after_login:
            return info
        offered, _ = await self._discover_versions()
        working = self.api_version
        if not offered or offered[0] == working:
            return info
        with contextlib.suppress(VrmError):
            await self.logout()
        try:
            return await self._login_trying(offered)
        except VrmVersionError:  # it offers versions it refuses: keep the one that worked
            log.info("VRM refused every API version it offers; keeping %s", working or "none")
            return await self._login_trying([working])

    async def _login_trying(self, candidates: list[str]) -> LoginInfo:
        """Log in with the first of ``candidates`` the VRM accepts (10000022 moves to the next)."""
        for i, version in enumerate(candidates):
            self.api_version = version
            try:
                info = await self._login()
            except VrmVersionError:
                if i == len(candidates) - 1:
                    raise
                log.info("VRM refused API version %s; trying %s", version or "none",
                         candidates[i + 1] or "none")
                continue
            self._negotiated = True
            return info
        raise AssertionError("unreachable")

    async def _login(self) -> LoginInfo:
        pw = self._password() if callable(self._password) else self._password
        headers = self._base_headers()
        headers["X-Auth-User"] = self.user
        headers["X-Auth-Key"] = _password_key(pw, self.plaintext_key)
        headers["X-Auth-UserType"] = self.user_type
        if self.plaintext_key:
            headers["X-ENCRIPT-ALGORITHM"] = "1"  # Huawei's spelling
        resp = await self._send("POST", "/service/session", headers=headers, content=b"{}")
        if resp.status_code in (401, 403):
            code, des = self._error_fields(resp)
            if code == VERSION_ERROR_CODE:
                raise api_error(resp.status_code, code, des, "POST", "/service/session")
            # A VRM answers a user type other than the account's as it answers a wrong password
            # (vrm-api.md §2.1: the type has to match the account): name both suspects.
            hint = ("" if resp.status_code != 401 or code == LICENCE_ERROR_CODE else
                    f"; check the password, and that the account is of user type {self.user_type} "
                    f"(X-Auth-UserType; the other type is {'2' if self.user_type == '0' else '0'})")
            raise VrmAuthError(
                f"VRM login refused for user {self.user!r}: {des or 'bad user name or password'}"
                + (f" [{code}]" if code and code not in des else "") + hint,
                status=resp.status_code, error_code=code, error_des=des, method="POST",
                path="/service/session")
        data = self._decode(resp, "POST", "/service/session")
        token = resp.headers.get("X-Auth-Token")
        if not token:
            raise VrmProtocolError("VRM login answered without an X-Auth-Token header",
                                   method="POST", path="/service/session", status=resp.status_code)
        self._token = token
        self._token_gen += 1
        self.login_info = LoginInfo.from_dict(data)
        log.info("logged in to %s as %s (API version %s)", self.base_url, self.user, self.api_version or "-")
        return self.login_info

    async def logout(self) -> None:
        """``DELETE /service/session``; the token is forgotten even if the VRM refuses."""
        if self._token is None:
            return
        try:
            await self._call("DELETE", "/service/session", relogin=False, expect_json=False)
        except (VrmAuthError, VrmNotFoundError):
            pass  # already expired: the goal is reached
        finally:
            self._token = None

    # --- low level ------------------------------------------------------------------------------

    @staticmethod
    def _path(path_or_uri: str) -> str:
        if path_or_uri.startswith("urn:"):
            try:
                return urn_to_uri(path_or_uri)
            except ValueError as e:
                raise VrmError(str(e)) from None
        if path_or_uri.startswith(("http://", "https://")):
            p = urlsplit(path_or_uri)
            return p.path + (f"?{p.query}" if p.query else "")
        if not path_or_uri.startswith("/"):
            raise VrmError(f"not a VRM URI or URN: {path_or_uri!r}")
        return path_or_uri

    async def _send(self, method: str, path: str, *, headers: dict[str, str],
                    params: dict[str, Any] | None = None, json_body: Any = None,
                    content: bytes | None = None) -> "Answer":
        """One HTTP exchange; transport failures become typed errors. The body is read from the
        stream into an :class:`Answer`, not kept by the httpx response: that response and its stream
        refer to each other, so only the cyclic collector frees it -- with the body in it, a refresh
        run with the collector paused held every page it had read (35-55 MB for 10,000 VMs)."""
        self.request_count += 1
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
        try:
            # httpx's timeout bounds each network step; this bounds the whole exchange, also a slowly
            # dripping answer, and applies to every transport (in-process ASGI included).
            async with asyncio.timeout(self.timeout):
                request = self._http.build_request(method, path, params=params, headers=headers, content=content)
                resp = await self._http.send(request, stream=True)
                try:
                    body = await self._read_body(resp, method, path)
                finally:
                    await resp.aclose()
                return Answer(resp.status_code, resp.headers, body)
        except (httpx.TimeoutException, TimeoutError):
            raise VrmTimeoutError(f"VRM did not answer {method} {path} within {self.timeout:g} s") from None
        except httpx.TransportError as e:
            raise VrmConnectionError(self._transport_message(e, method, path)) from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as e:  # e.g. a bad URI
            raise VrmError(f"cannot send {method} {path}: {e}") from None
        except OSError as e:  # a socket error that reached us unwrapped
            raise VrmConnectionError(self._transport_message(e, method, path)) from None

    async def _read_body(self, resp: httpx.Response, method: str, path: str) -> bytes:
        """The whole body, refused as soon as it passes ``max_body`` (announced or streamed): the
        bytes beyond the cap are never read."""
        cap = self.max_body
        announced = resp.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > cap:
            raise self._too_large(method, path, f"announced {int(announced)} bytes")
        parts: list[bytes] = []
        n = 0
        async for part in resp.aiter_bytes():  # decoded: a compressed answer is capped as it unpacks
            n += len(part)
            if n > cap:
                raise self._too_large(method, path, f"more than {cap} bytes sent")
            parts.append(part)
        return b"".join(parts)

    def _too_large(self, method: str, path: str, what: str) -> VrmBodyTooLargeError:
        cap = self.max_body
        shown = f"{cap >> 20} MiB" if cap % (1 << 20) == 0 else f"{cap} bytes"
        return VrmBodyTooLargeError(
            f"VRM answer to {method} {path} exceeds the {shown} answer size cap ({what}); "
            "the rest was not read", method=method, path=path, cap=cap)

    def _transport_message(self, e: Exception, method: str, path: str) -> str:
        text = str(e) or type(e).__name__
        tls = _tls_failure(e)
        if isinstance(tls, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text \
                or "certificate verify failed" in text:
            why = getattr(tls, "verify_message", None) or _tls_words(text)
            return (f"TLS certificate of {self.base_url} is not trusted: {why.rstrip('.')}; "
                    "use --ca-file with the VRM's CA certificate, or --insecure to skip the check")
        if tls is not None or text.startswith("[SSL"):
            return (f"TLS handshake with {self.base_url} failed: {_tls_words(str(tls or text))} "
                    "(is it the VRM's https address?)")
        return f"cannot reach VRM {self.base_url} ({method} {path}): {type(e).__name__}: {text}"

    @staticmethod
    def _error_fields(resp: "Answer") -> tuple[str, str]:
        body = resp.content
        if not body:
            return "", ""
        try:
            data = json.loads(body)
        except ValueError:
            return "", body[:200].decode("utf-8", "replace").strip()
        if isinstance(data, dict):
            # VRM's {errorCode, errorDes} (vrm-api.md §4.1); also the {"error":{"code","message"}} of
            # CNREF, a flat {code, message} and {"error": "text"}, as a proxy or another release may send
            code = data.get("errorCode", data.get("code"))
            des = data.get("errorDes", data.get("message"))
            inner = data.get("error")
            if isinstance(inner, dict):
                code = code or inner.get("errorCode", inner.get("code"))
                des = des or inner.get("errorDes", inner.get("message"))
            elif isinstance(inner, str):
                des = des or inner
            return ("" if code is None else str(code)), ("" if des is None else str(des))
        return "", ""

    def _decode(self, resp: "Answer", method: str, path: str) -> Any:
        """The JSON body of a successful answer, or raise the typed error of a failed one."""
        status = resp.status_code
        if status >= 400 or status < 200:
            code, des = self._error_fields(resp)
            raise api_error(status, code, des, method, path)
        body = resp.content
        if not body.strip():
            return {}  # synchronous operations may answer 200/204 with nothing
        # The body decides, not the label: JSON may come as text/plain or with no content type
        # (issue #14); the label only names what a non-JSON answer was.
        try:
            return _loads(body)
        except ValueError as e:
            ctype = resp.headers.get("content-type", "")
            if "json" in ctype.lower():
                raise VrmProtocolError(f"VRM answered {method} {path} with malformed JSON: {e}",
                                       method=method, path=path, status=status) from None
            raise VrmProtocolError(
                f"VRM answered {method} {path} with {ctype or 'no content type'} instead of JSON",
                method=method, path=path, status=status) from None

    async def _call(self, method: str, path_or_uri: str, *, params: dict[str, Any] | None = None,
                    json_body: Any = None, expect_json: bool = True, with_version: bool = True,
                    auth: bool = True, relogin: bool = True) -> Any:
        path = self._path(path_or_uri)
        params = _clean_params(params)
        relogged = False
        attempt_5xx = 0
        while True:
            headers = self._base_headers(with_version)
            gen = self._token_gen
            if auth:
                if self._token is None:
                    if not relogin:
                        raise VrmAuthError("not logged in to the VRM", status=401, method=method, path=path)
                    await self._relogin(gen)
                    gen = self._token_gen
                if self._token is not None:
                    headers["X-Auth-Token"] = self._token
            resp = await self._send(method, path, headers=headers, params=params or None, json_body=json_body)
            status = resp.status_code
            if status == 401 and auth and relogin and not relogged:
                # Token expired or revoked: log in again once and repeat this request (never loop).
                relogged = True
                log.info("VRM answered 401 to %s %s; logging in again", method, path)
                await self._relogin(gen)
                continue
            if status >= 500 and method == "GET" and attempt_5xx < self.retries_5xx:
                delay = _RETRY_BACKOFF_S[min(attempt_5xx, len(_RETRY_BACKOFF_S) - 1)]
                attempt_5xx += 1
                log.info("VRM answered %d to GET %s; retry %d in %.1f s", status, path, attempt_5xx, delay)
                await asyncio.sleep(delay)
                continue
            if not expect_json:
                if status >= 400:
                    code, des = self._error_fields(resp)
                    raise api_error(status, code, des, method, path)
                return resp.content
            return self._decode(resp, method, path)

    async def _relogin(self, seen_gen: int) -> None:
        """Log in again unless another request already did since ``seen_gen`` (concurrent pages)."""
        async with self._login_lock:
            if self._token_gen != seen_gen and self._token is not None:
                return
            self._token = None
            await self.login()

    async def request(self, method: str, path_or_uri: str, *, params: dict[str, Any] | None = None,
                      json: Any = None, expect_json: bool = True) -> Any:
        """Any VRM call: URI (``/service/...``) or URN; JSON in, JSON (or raw bytes) out."""
        return await self._call(method.upper(), path_or_uri, params=params, json_body=json,
                                expect_json=expect_json)

    # --- shape helpers --------------------------------------------------------------------------

    @staticmethod
    def _obj(data: Any, method: str, path: str) -> dict:
        if not isinstance(data, dict):
            raise VrmProtocolError(
                f"VRM answered {method} {path} with a JSON {type(data).__name__}, expected an object",
                method=method, path=path)
        return data

    def _list_field(self, data: Any, key: str, method: str, path: str) -> list:
        d = self._obj(data, method, path)
        items = d.get(key)
        if items is None:
            if d.get("total") in (0, "0"):
                return []
            raise VrmProtocolError(f"VRM answer to {method} {path} lacks the {key!r} list",
                                   method=method, path=path)
        if not isinstance(items, list):
            raise VrmProtocolError(f"VRM answer to {method} {path}: {key!r} is not a list",
                                   method=method, path=path)
        return items

    async def _get_obj(self, uri: str, params: dict[str, Any] | None = None) -> dict:
        path = self._path(uri)
        return self._obj(await self._call("GET", path, params=params), "GET", path)

    async def _task_call(self, method: str, uri: str, body: Any = None,
                         params: dict[str, Any] | None = None) -> TaskRef:
        path = self._path(uri)
        data = self._obj(await self._call(method, path, json_body=body, params=params), method, path)
        ref = TaskRef.from_dict(data)
        if not (ref.task_uri or ref.task_urn):
            raise VrmProtocolError(f"VRM answer to {method} {path} carries no taskUri", method=method, path=path)
        return ref

    # --- paging ---------------------------------------------------------------------------------

    async def _page(self, path: str, key: str, params: dict[str, Any], offset: int) -> tuple[list, int | None]:
        p = dict(params, limit=PAGE_LIMIT, offset=offset)
        data = await self._call("GET", path, params=p)
        return self._list_field(data, key, "GET", path), _total(data)

    async def iter_pages(self, path_or_uri: str, key: str, params: dict[str, Any] | None = None, *,
                         concurrency: int | None = None) -> AsyncIterator[list]:
        """Raw pages of a ``{total, <key>: [...]}`` listing, in order.

        Stops on ``offset >= total``, a short page or an empty page (whichever comes first). With
        ``concurrency`` > 1 the pages after the first are fetched that many at a time once ``total`` is
        known, and still yielded in order.
        """
        path = self._path(path_or_uri)
        params = _clean_params(params)
        conc = self.page_concurrency if concurrency is None else max(1, concurrency)
        items, total = await self._page(path, key, params, 0)
        if items:
            yield items
        if not items or len(items) < PAGE_LIMIT or (total is not None and PAGE_LIMIT >= total):
            return
        if conc > 1 and total is not None:
            async for page in self._concurrent_pages(path, key, params, total, conc):
                yield page
            return
        offset = PAGE_LIMIT
        while True:
            items, total = await self._page(path, key, params, offset)
            if items:
                yield items
            offset += PAGE_LIMIT
            if not items or len(items) < PAGE_LIMIT or (total is not None and offset >= total):
                return

    async def _concurrent_pages(self, path: str, key: str, params: dict[str, Any], total: int,
                                conc: int) -> AsyncIterator[list]:
        sem = asyncio.Semaphore(conc)

        async def one(offset: int) -> tuple[list, int | None]:
            async with sem:
                return await self._page(path, key, params, offset)

        offsets = list(range(PAGE_LIMIT, total, PAGE_LIMIT))
        tasks: list[asyncio.Future | None] = [asyncio.ensure_future(one(o)) for o in offsets]
        try:
            latest_total: int | None = total
            for i, t in enumerate(tasks):
                assert t is not None
                items, page_total = await t
                # A finished task keeps its result: let the page's JSON go as soon as the caller is
                # done with it, not when the last page arrives (100 MB for 10,000 VMs).
                tasks[i] = t = None
                if page_total is not None:
                    latest_total = page_total
                if items:
                    yield items
                if len(items) < PAGE_LIMIT:
                    return  # the list shrank while we read it: later pages are empty or stale
            # The list may have grown since page 1 gave total: continue sequentially while the
            # newest total says there is more.
            offset = offsets[-1] + PAGE_LIMIT if offsets else PAGE_LIMIT
            while latest_total is None or offset < latest_total:
                items, latest_total = await self._page(path, key, params, offset)
                if items:
                    yield items
                if len(items) < PAGE_LIMIT:
                    return
                offset += PAGE_LIMIT
        finally:
            left = [t for t in tasks if t is not None]
            for t in left:
                if not t.done():
                    t.cancel()
            # Collect outcomes so no "exception was never retrieved" warnings leak.
            await asyncio.gather(*left, return_exceptions=True)

    async def _all(self, path: str, key: str, params: dict[str, Any] | None, model: Callable[[Any], T],
                   concurrency: int | None = None) -> list[T]:
        out: list[T] = []
        with gc_paused():
            async for page in self.iter_pages(path, key, params, concurrency=concurrency):
                out.extend(model(x) for x in page)
        return out

    # --- inventory ------------------------------------------------------------------------------

    async def sites(self) -> list[Site]:
        data = await self._call("GET", "/service/sites")
        return [Site.from_dict(x) for x in self._list_field(data, "sites", "GET", "/service/sites")]

    async def site(self, uri: str) -> Site:
        return Site.from_dict(await self._get_obj(uri))

    async def clusters(self, site_uri: str) -> list[Cluster]:
        path = self._path(site_uri) + "/clusters"
        data = await self._call("GET", path)
        return [Cluster.from_dict(x) for x in self._list_field(data, "clusters", "GET", path)]

    async def _whole(self, path: str, key: str, params: dict[str, Any] | None, model: Callable[[Any], T]) -> list[T]:
        """A listing the VRM answers whole when asked without ``limit`` and ``offset`` (hosts,
        datastores; vrm-api §3): one request instead of a first page and then the others. Should
        the answer still be a page (``total`` says there is more), the rest is read page by page."""
        path = self._path(path)
        params = _clean_params(params)
        with gc_paused():
            data = await self._call("GET", path, params=params or None)
            items = self._list_field(data, key, "GET", path)
            out = [model(x) for x in items]
            total = _total(data)
            offset = len(items)
            while items and total is not None and offset < total:
                items, latest = await self._page(path, key, params, offset)
                out.extend(model(x) for x in items)
                offset += len(items)
                total = latest if latest is not None else total
        return out

    async def hosts(self, site_uri: str, scope: str | None = None) -> list[Host]:
        return await self._whole(self._path(site_uri) + "/hosts", "hosts", {"scope": scope}, Host.from_dict)

    async def host(self, uri: str) -> Host:
        return Host.from_dict(await self._get_obj(uri))

    async def datastores(self, site_uri: str, scope: str | None = None) -> list[Datastore]:
        return await self._whole(self._path(site_uri) + "/datastores", "datastores", {"scope": scope},
                                 Datastore.from_dict)

    async def port_groups(self, site_uri: str) -> list[PortGroup]:
        """Every port group of every distributed switch of the site (restore networking: a NIC of a
        restored VM is plugged into one of these, or left out)."""
        path = self._path(site_uri) + "/dvswitchs"
        data = await self._call("GET", path)
        out: list[PortGroup] = []
        for dvs in self._list_field(data, "dvSwitchs", "GET", path):
            dvs_urn = str(dvs.get("urn") or "") if isinstance(dvs, dict) else ""
            dvs_uri = str(dvs.get("uri") or "") if isinstance(dvs, dict) else ""
            if not dvs_uri:
                continue
            out.extend(await self._whole(dvs_uri + "/portgroups", "portGroups", None,
                                         lambda x, u=dvs_urn: PortGroup.from_dict(x, u)))
        return out

    async def datastore(self, uri: str) -> Datastore:
        return Datastore.from_dict(await self._get_obj(uri))

    def iter_vm_pages(self, site_uri: str, *, detail: int = 2, templates: bool | None = False,
                      scope: str | None = None, concurrency: int | None = None,
                      **filters: Any) -> AsyncIterator[list[Vm]]:
        """VM pages in order as they arrive (so a UI can show the first rows early)."""
        return self._vm_pages(site_uri, detail=detail, templates=templates, scope=scope,
                              concurrency=concurrency, filters=filters)

    async def _vm_pages(self, site_uri: str, *, detail: int, templates: bool | None, scope: str | None,
                        concurrency: int | None, filters: dict[str, Any]) -> AsyncIterator[list[Vm]]:
        path = self._path(site_uri) + "/vms"
        kinds: list[bool] = [False, True] if templates is None else [bool(templates)]
        for is_template in kinds:
            params = dict(filters, detail=detail, isTemplate=is_template, scope=scope)
            async for page in self.iter_pages(path, "vms", params, concurrency=concurrency):
                with gc_paused():
                    vms = [Vm.from_dict(x) for x in page]
                yield vms

    async def vms(self, site_uri: str, *, detail: int = 2, templates: bool | None = False,
                  scope: str | None = None, concurrency: int | None = None, **filters: Any) -> list[Vm]:
        """Every VM (``templates=False``), every template (``True``) or both (``None``)."""
        out: list[Vm] = []
        with gc_paused():
            async for page in self.iter_vm_pages(site_uri, detail=detail, templates=templates, scope=scope,
                                                 concurrency=concurrency, **filters):
                out.extend(page)
        return out

    async def vm(self, uri_or_urn: str) -> Vm:
        return Vm.from_dict(await self._get_obj(uri_or_urn))

    async def os_catalogue(self, site_uri: str) -> OsCatalogue:
        return OsCatalogue.from_dict(await self._get_obj(self._path(site_uri) + "/vms/osversions"))

    async def volumes(self, site_uri: str, **filters: Any) -> list[Volume]:
        return await self._all(self._path(site_uri) + "/volumes", "volumes", filters, Volume.from_dict)

    async def volume(self, uri_or_urn: str) -> Volume:
        return Volume.from_dict(await self._get_obj(uri_or_urn))

    # --- snapshots ------------------------------------------------------------------------------

    async def snapshot_tree(self, vm_uri: str) -> SnapshotTree:
        return SnapshotTree.from_dict(await self._get_obj(self._path(vm_uri) + "/snapshots"))

    async def snapshot(self, uri: str) -> SnapshotDetail:
        return SnapshotDetail.from_dict(await self._get_obj(uri))

    async def create_snapshot(self, vm_uri: str, name: str, *, type: str = "CBTbackup", description: str = "",
                              need_memory_shot: bool = False, is_consistent: bool = False) -> TaskRef:
        if not 1 <= len(name) <= 256:
            raise VrmError("snapshot name must be 1 to 256 characters")
        body = {"name": name, "description": description, "type": type,
                "needMemoryShot": need_memory_shot, "isConsistent": is_consistent}
        return await self._task_call("POST", self._path(vm_uri) + "/snapshots", body)

    async def delete_snapshot(self, uri: str) -> TaskRef:
        return await self._task_call("DELETE", uri)

    async def revert_snapshot(self, uri: str) -> TaskRef:
        return await self._task_call("POST", self._path(uri) + "/action/resumevm")

    # --- tasks ----------------------------------------------------------------------------------

    async def tasks(self, site_uri: str, **filters: Any) -> list[Task]:
        return await self._all(self._path(site_uri) + "/tasks", "tasks", filters, Task.from_dict)

    async def task(self, uri: str) -> Task:
        return Task.from_dict(await self._get_obj(uri))

    async def cancel_task(self, uri: str) -> None:
        await self._call("POST", self._path(uri) + "/cancel", expect_json=False)

    async def wait_task(self, ref: TaskRef | str, *, timeout: float = 600, interval: float = 1.0,
                        max_interval: float = 5.0, on_progress: Callable[[Task], None] | None = None) -> Task:
        """Poll a task until ``success`` (returned) or ``failed`` (:class:`TaskFailedError`).

        The interval grows from ``interval`` to ``max_interval``. A few transient read failures are
        tolerated (as NOVA does). Cancelling the awaiting coroutine stops polling; it does not cancel
        the VRM task (use :meth:`cancel_task` for that).
        """
        uri = ref if isinstance(ref, str) else (ref.task_uri or ref.task_urn)
        if not uri:
            raise VrmError("no task to wait for")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = max(0.0, interval)
        last: Task | None = None
        transient = 0
        while True:
            try:
                last = await self.task(uri)
                transient = 0
            except (VrmServerError, VrmConnectionError, VrmTimeoutError):
                transient += 1
                if transient > 3:
                    raise
            else:
                if on_progress is not None:
                    on_progress(last)
                if last.status == "success":
                    return last
                if last.status == "failed":
                    raise TaskFailedError(last)
            remaining = deadline - loop.time()
            if remaining <= 0:
                shown = f"{last.status} {last.progress}%" if last else "never read"
                raise TaskTimeoutError(f"VRM task {uri.rsplit('/', 1)[-1]} did not finish within "
                                       f"{timeout:g} s (last seen: {shown})", last)
            await asyncio.sleep(min(delay, remaining))
            delay = min(max_interval, max(delay * 1.5, 0.05))

    # --- CBT ------------------------------------------------------------------------------------

    async def get_cbt(self, volume_uri: str, *, snap_uuid: str, vol_cbt_create_time: str, chg_id: str | int,
                      start_block: int = 0, block_num: int | None = None,
                      type: str = "DiffBitmapAndBit1Num") -> CbtBitmap:
        """``POST <volUri>/getcbt``: blocks changed since CBT version ``chg_id`` ("0"/"" = all written).
        The bitmap is read by this client's ``cbt_bitmap`` order and checked here: an unreadable one,
        or one whose set bits disagree with ``bit1Num``, is a VrmProtocolError."""
        if block_num is not None and (start_block % 8 or block_num % 8 or block_num < 0 or start_block < 0):
            raise VrmError("startBlock and blockNum must be non-negative multiples of 8")
        # Zero-valued fields are sent, not omitted: a VRM answered 400 to bodies without them (§9.2).
        body: dict[str, Any] = {"type": type, "snapUuid": snap_uuid, "volCBTCreateTime": vol_cbt_create_time,
                                "chgID": str(chg_id)}
        if block_num is not None:
            body["startBlock"] = start_block
            body["blockNum"] = block_num
        path = self._path(volume_uri) + "/getcbt"
        data = self._obj(await self._call("POST", path, json_body=body), "POST", path)
        for k in ("sectorOfBlock", "bitNum"):
            if k not in data:
                raise VrmProtocolError(f"VRM answer to POST {path} lacks {k!r}", method="POST", path=path)
        bm = CbtBitmap.from_dict(data, start_block, self.cbt_bitmap)
        if type == "DiffBitmapAndBit1Num":
            try:
                blocks = bm.blocks()
            except CbtBitmapError as e:
                raise VrmProtocolError(f"VRM answer to POST {path} (startBlock {start_block}): {e}",
                                       method="POST", path=path) from None
            # bit1Num counts the changed blocks of the answer (§9.2): a bitmap that marks another number
            # would lose or invent blocks; with the wrong cbt_bitmap order this shows at a disk's end.
            if data.get("bit1Num") not in (None, "") and len(blocks) != bm.bit1_num:
                raise VrmProtocolError(
                    f"VRM answer to POST {path} (startBlock {start_block}): the bitmap marks {len(blocks)} "
                    f"of {bm.bit_num} blocks but bit1Num says {bm.bit1_num} (is cbt_bitmap = "
                    f"{self.cbt_bitmap!r} right for this VRM?)", method="POST", path=path)
        return bm

    async def changed_blocks(self, volume_uri: str, *, snap_uuid: str, vol_cbt_create_time: str,
                             chg_id: str | int, window: int = 1024, volume_size: int | None = None,
                             concurrency: int = 4) -> tuple[int, int, list[int]]:
        """(block size in bytes, total blocks, changed block numbers ascending), queried ``window`` blocks
        at a time (multiple of 8; 1024 is what a commercial client uses).

        The end of the disk is a window shorter than asked (§9.2) or its block count, from ``volume_size``
        (bytes, e.g. from the disk's ``quantityGB``) or else, once the first window is full, from the
        volume's own ``quantityGB``: no query starts at or past it (vrm-api.md §16: nothing documents
        such a query; a VRM may answer 400). A disk found larger than that (a full window reaching past
        it) is read on until a short window. The windows after the first are fetched ``concurrency`` at
        a time.
        """
        if window <= 0 or window % 8:
            raise VrmError("CBT window must be a positive multiple of 8")

        async def one(start: int) -> CbtBitmap:
            return await self.get_cbt(volume_uri, snap_uuid=snap_uuid, vol_cbt_create_time=vol_cbt_create_time,
                                      chg_id=chg_id, start_block=start, block_num=window)

        first = await one(0)
        block_size = first.block_size
        changed = list(first.blocks())
        if first.bit_num < window:  # fewer blocks than asked: the end of the disk
            return block_size, first.bit_num, changed

        def count(size: int | None) -> int | None:
            return -(-size // block_size) if size and block_size > 0 else None

        known, asked_volume = count(volume_size), False

        async def last_block(end: int) -> int | None:
            """The disk's block count if it is known and not contradicted by ``end`` blocks read."""
            nonlocal known, asked_volume
            if known is not None and end <= known:
                return known
            if not asked_volume:   # no size given, or the given one was too low: the volume's own
                asked_volume = True
                known = count(await self._volume_size(volume_uri))
                if known is not None and end <= known:
                    return known
            known = None
            return None

        end = window   # blocks covered so far
        stop = await last_block(end)
        if stop is not None and concurrency > 1:
            starts = list(range(window, stop, window))
            for bm in await gather_limited([one(s) for s in starts], concurrency):
                changed.extend(bm.blocks())
                if bm.bit_num < window:
                    return block_size, bm.start_block + bm.bit_num, changed
            end = starts[-1] + window if starts else window
        while True:
            stop = await last_block(end)
            if stop is not None and end >= stop:
                return block_size, end, changed   # full windows up to the end: nothing asked past it
            bm = await one(end)
            changed.extend(bm.blocks())
            if bm.bit_num < window:
                return block_size, end + bm.bit_num, changed
            end += window

    async def _volume_size(self, volume_uri: str) -> int | None:
        """The volume's size in bytes (``quantityGB``, binary GB as the CBT block counts show, §9.1),
        or None when the VRM does not tell (the windows then go on until a short one)."""
        try:
            gb = (await self.volume(volume_uri)).quantity_gb
        except VrmApiError as e:
            log.info("size of %s unknown (%s): CBT windows until a short one", volume_uri, e)
            return None
        return gb * (1 << 30) if gb and gb > 0 else None

    # --- backup resources -----------------------------------------------------------------------

    async def requester_ip(self) -> str:
        """The ``ip`` a backup-resource prepare carries: ``proxy_ip`` if set, else the local address that
        routes to the VRM (found once per client, off the event loop)."""
        if self.proxy_ip:
            return self.proxy_ip
        if self._local_ip is None:
            parts = urlsplit(self.base_url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            self._local_ip = await asyncio.to_thread(local_address_towards, parts.hostname or "", port)
        return self._local_ip

    async def prepare_backup_resource(self, volume_uri: str, task_type: str, *, snap_urn1: str | None = None,
                                      snap_urn2: str | None = None, ip: str | None = None, delay: int = 7200,
                                      trans_mode: str = "lan") -> TaskRef:
        """``POST <volUri>/backupresources``. ``ip`` (mandatory for the VRM, vrm-api.md §16) defaults to
        :meth:`requester_ip`."""
        if not 60 <= delay <= 7200:
            raise VrmError("backup resource delay must be 60 to 7200 seconds")
        ip = check_ip(ip, "ip") if ip else await self.requester_ip()
        body: dict[str, Any] = {"taskType": task_type, "ip": ip, "delay": delay, "transMode": trans_mode}
        if snap_urn1:
            body["snapUrn1"] = snap_urn1
        if snap_urn2:
            body["snapUrn2"] = snap_urn2
        return await self._task_call("POST", self._path(volume_uri) + "/backupresources", body)

    async def backup_resource(self, volume_uri: str, task_id: str) -> BackupResource:
        return BackupResource.from_dict(await self._get_obj(f"{self._path(volume_uri)}/backupresources/{task_id}"))

    async def wait_backup_resource(self, volume_uri: str, task_id: str, *, timeout: float = 300,
                                   interval: float = 0.2, max_interval: float = 2.0) -> BackupResource:
        """Poll until the resource is ``success`` (ready to move data); ``failed`` raises."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = interval
        misses = 0
        res: BackupResource | None = None
        while True:
            try:
                res = await self.backup_resource(volume_uri, task_id)
            except VrmNotFoundError:
                # Either not visible yet, or gone because its prepare task failed: the task tells.
                task = await self._resource_task(volume_uri, task_id)
                if task is not None and task.status == "failed":
                    detail = task.reason_des or task.reason or "no reason given"
                    raise BackupResourceError(f"preparing backup resource {task_id} failed: {detail}",
                                              task=task) from None
                misses += 1
                if misses > 3:
                    raise
            else:
                if res.status == "success":
                    return res
                if res.status == "failed":
                    detail = res.reason_des or res.reason or "no reason given"
                    raise BackupResourceError(f"backup resource {task_id} failed: {detail}", resource=res)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TaskTimeoutError(f"backup resource {task_id} not ready within {timeout:g} s "
                                       f"(last status: {res.status if res else 'not visible'})")
            await asyncio.sleep(min(delay, remaining))
            delay = min(max_interval, delay * 1.5)

    async def _resource_task(self, volume_uri: str, task_id: str) -> Task | None:
        path = self._path(volume_uri)
        parts = path.split("/")
        if len(parts) < 4 or parts[2] != "sites":
            return None
        try:
            return await self.task(f"/service/sites/{parts[3]}/tasks/{task_id}")
        except VrmNotFoundError:
            return None

    async def extend_backup_resource(self, volume_uri: str, task_id: str, delay: int) -> None:
        if not 60 <= delay <= 7200:
            raise VrmError("backup resource delay must be 60 to 7200 seconds")
        await self._call("PUT", f"{self._path(volume_uri)}/backupresources/{task_id}", json_body={"delay": delay},
                         expect_json=False)

    async def release_backup_resource(self, volume_uri: str, task_id: str) -> None:
        await self._call("DELETE", f"{self._path(volume_uri)}/backupresources/{task_id}", expect_json=False)

    def data_transport(self, resource: BackupResource, *, size: int | None = None) -> BlockTransport:
        """The byte channel of a ready backup resource (HTTP stand-in for the CNA socket)."""
        if not resource.resource_url:
            raise VrmProtocolError("backup resource has no resourceUrl", path=resource.uri)
        url = resource.resource_url
        if url.startswith("/"):  # a relative path: on the VRM itself
            url = self.base_url + url
        return HttpResourceTransport(url, resource.token, size=size, verify=self.verify, ca_cert=resource.ca_cert,
                                     timeout=max(self.timeout, 60.0), transport=self._transport)

    # --- VM and volume operations ---------------------------------------------------------------

    async def start_vm(self, vm_uri: str) -> TaskRef:
        return await self._task_call("POST", self._path(vm_uri) + "/action/start")

    async def stop_vm(self, vm_uri: str, mode: str = "safe") -> TaskRef:
        if mode not in ("safe", "force"):
            raise VrmError("stop mode must be 'safe' or 'force'")
        return await self._task_call("POST", self._path(vm_uri) + "/action/stop", {"mode": mode})

    async def hibernate_vm(self, vm_uri: str) -> TaskRef:
        return await self._task_call("POST", self._path(vm_uri) + "/action/hibernate")

    async def create_volume(self, site_uri: str, *, name: str, quantity_gb: int, datastore_urn: str,
                            is_thin: bool = True, type: str = "normal", indep_disk: bool = False,
                            persistent_disk: bool = True) -> TaskRef:
        body = {"name": name, "quantityGB": quantity_gb, "datastoreUrn": datastore_urn, "isThin": is_thin,
                "type": type, "indepDisk": indep_disk, "persistentDisk": persistent_disk}
        return await self._task_call("POST", self._path(site_uri) + "/volumes", body)

    async def delete_volume(self, uri: str) -> TaskRef:
        return await self._task_call("DELETE", uri)

    async def expand_volume(self, uri: str, size_mb: int) -> TaskRef:
        return await self._task_call("POST", self._path(uri) + "/action/expandVol", {"size": size_mb})

    async def attach_volume(self, vm_uri: str, volume_urn: str, *, pci_type: str | None = None,
                            sequence_num: int | None = None) -> TaskRef:
        body: dict[str, Any] = {"volUrn": volume_urn}
        if pci_type is not None:
            body["pciType"] = pci_type
        if sequence_num is not None:
            body["sequenceNum"] = sequence_num
        return await self._task_call("POST", self._path(vm_uri) + "/action/attachvol", body)

    async def detach_volume(self, vm_uri: str, volume_urn: str) -> TaskRef:
        return await self._task_call("POST", self._path(vm_uri) + "/action/detachvol", {"volUrn": volume_urn})

    async def create_vm(self, site_uri: str, body: dict) -> TaskRef:
        return await self._task_call("POST", self._path(site_uri) + "/vms", body)

    async def delete_vm(self, vm_uri: str, *, reserve_disks: bool) -> TaskRef:
        return await self._task_call("DELETE", vm_uri, params={"isReserveDisks": 1 if reserve_disks else 0})


async def gather_limited(aws: list[Awaitable[T]], limit: int) -> list[T]:
    """Await ``aws`` at most ``limit`` at a time, results in input order (small helper for callers)."""
    sem = asyncio.Semaphore(max(1, limit))

    async def one(a: Awaitable[T]) -> T:
        async with sem:
            return await a

    return list(await asyncio.gather(*(one(a) for a in aws)))


__all__ = ["VrmClient", "INSECURE_WARNING", "MAX_BODY", "PAGE_LIMIT", "gather_limited", "gc_paused"]
