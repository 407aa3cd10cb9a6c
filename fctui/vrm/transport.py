"""How volume bytes move between fctui and a prepared backup resource.

The real CNA data socket protocol is not public (vrm-api.md §9.4). Our documented stand-in is HTTP at the
resource's ``resourceUrl``: ``GET`` with ``Range`` reads point-in-time snapshot bytes (206), ``PUT`` with
``Content-Range`` writes restore bytes (204), authenticated by ``X-Resource-Token``. Everything that knows
this lives here behind :class:`BlockTransport`, so a socket implementation can replace it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
from typing import Any, AsyncIterator, Iterator, Protocol, Sequence, runtime_checkable

import httpx

from .errors import (VrmBodyTooLargeError, VrmConnectionError, VrmError, VrmProtocolError, VrmTimeoutError,
                     api_error)

log = logging.getLogger("fctui.vrm.transport")

ERROR_BODY_MAX = 64 << 10  # of an error answer only its errorCode/errorDes matter

# What a write takes: the bytes, or consecutive parts of them (e.g. the blocks of one coalesced range).
WriteData = bytes | Sequence[bytes]


@runtime_checkable
class BlockTransport(Protocol):
    """Random access to one volume's bytes through a prepared backup resource."""

    async def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer only at the end of the volume)."""
        ...

    def aiter_read(self, offset: int, length: int, chunk_size: int = 4 << 20) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes from ``offset`` in chunks of ``chunk_size`` (last may be shorter)."""
        ...

    async def write(self, offset: int, data: WriteData) -> None:
        """Write ``data`` (bytes, or a sequence of parts written back to back) at ``offset`` (restore
        resources only)."""
        ...

    def read_blocking(self, offset: int, length: int) -> bytes:
        """:meth:`read` for a caller on a worker thread."""
        ...

    def write_blocking(self, offset: int, data: WriteData) -> None:
        """:meth:`write` for a caller on a worker thread."""
        ...

    async def aclose(self) -> None:
        ...

    async def __aenter__(self) -> "BlockTransport":
        ...

    async def __aexit__(self, *exc: object) -> None:
        ...


class _SharedTransport(httpx.AsyncBaseTransport):
    """Lends the caller's transport to a second client without letting that client close it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:  # the owner closes it
        return None


class _RangeBody:
    """Collects the part ``[skip, skip + keep)`` of an answer body as it streams."""

    __slots__ = ("skip", "keep", "strict", "url", "parts", "seen")

    def __init__(self, skip: int, keep: int, *, strict: bool, url: str) -> None:
        self.skip, self.keep, self.strict, self.url = skip, keep, strict, url
        self.parts: list[bytes] = []
        self.seen = 0

    def add(self, part: bytes) -> bool:
        """Take ``part``; True once everything wanted is in (stop reading). Raises when a strict body
        runs past ``keep``."""
        pos = self.seen
        self.seen += len(part)
        if self.strict and self.seen > self.keep:
            raise VrmBodyTooLargeError(f"backup resource answered a {self.keep}-byte range read with more "
                                       f"bytes; refused: GET {self.url}", method="GET",
                                       path=httpx.URL(self.url).path, cap=self.keep)
        lo, hi = max(self.skip - pos, 0), min(self.skip + self.keep - pos, len(part))
        if lo < hi:
            self.parts.append(part if (lo, hi) == (0, len(part)) else part[lo:hi])
        return not self.strict and self.seen >= self.skip + self.keep

    def content(self) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


def make_verify(verify: bool | str) -> bool | ssl.SSLContext:
    """httpx ``verify`` from our setting: True/False, or a CA bundle path (``--ca-file``)."""
    if isinstance(verify, str):
        try:
            return ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as e:
            raise VrmConnectionError(f"cannot load CA file {verify!r}: {e}") from None
    return bool(verify)


class HttpResourceTransport:
    """:class:`BlockTransport` over HTTP range requests to ``resourceUrl``.

    Two ways in, one wire protocol: the async ``read``/``write`` run on the event loop (httpx's async
    client), and ``read_blocking``/``write_blocking`` are for callers on a worker thread (httpx's sync
    client, one per thread). The backup pipeline reads, hashes and stores on worker threads: measured
    here, the sync client on two threads reads a resource 1.5-2x faster than the async client on the
    event loop, whose per-64-KiB bookkeeping holds the interpreter lock. An injected in-process
    transport (tests) is async only: then the blocking calls run on the owning event loop.
    """

    def __init__(self, resource_url: str, token: str, *, size: int | None = None,
                 verify: bool | str | ssl.SSLContext = True, ca_cert: str = "", timeout: float = 60.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not resource_url.startswith(("http://", "https://")):
            raise VrmProtocolError(f"backup resource URL is not http(s): {resource_url!r}")
        self.url = resource_url
        self.size = size
        v: bool | ssl.SSLContext = verify if isinstance(verify, ssl.SSLContext) else make_verify(verify)
        if ca_cert and v is not False and resource_url.startswith("https://"):
            # The resource names the CA of its data endpoint (caCert): trust it in addition.
            ctx = v if isinstance(v, ssl.SSLContext) else ssl.create_default_context()
            try:
                ctx.load_verify_locations(cadata=ca_cert)
            except (ssl.SSLError, ValueError) as e:
                raise VrmProtocolError(f"backup resource caCert is not a PEM certificate: {e}") from None
            v = ctx
        if v is True:
            # httpx would build (and load the CA bundle for) a context per client, i.e. per thread.
            v = httpx.create_ssl_context(verify=True)
        self._verify = v
        self._timeout = httpx.Timeout(timeout)
        self._headers = {"X-Resource-Token": token}
        self._injected = transport is not None
        self._async = httpx.AsyncClient(
            verify=v, timeout=self._timeout, headers=self._headers,
            transport=_SharedTransport(transport) if transport is not None else None)
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._tls = threading.local()
        self._clients: list[httpx.Client] = []
        self._mu = threading.Lock()
        self._closed = False

    async def __aenter__(self) -> "HttpResourceTransport":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Callers wait for their own blocking calls first (the pipelines do)."""
        with self._mu:
            self._closed = True
            clients, self._clients = self._clients, []
        for c in clients:
            c.close()
        await self._async.aclose()

    def _client(self) -> httpx.Client:
        c = getattr(self._tls, "client", None)
        if c is None:
            c = httpx.Client(verify=self._verify, timeout=self._timeout, headers=self._headers)
            with self._mu:
                if self._closed:
                    c.close()
                    raise VrmConnectionError(f"backup resource transport is closed: {self.url}")
                self._clients.append(c)
            self._tls.client = c
        return c

    def _on_owner_loop(self, coro: Any) -> Any:
        """Run an exchange of the async (injected) client from a worker thread."""
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if self._loop is None or on_loop:  # on the loop's own thread this would wait for itself
            coro.close()
            raise VrmError("blocking transfer must run on a worker thread of the transport's event loop")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # --- errors ---------------------------------------------------------------------------------

    def _raise_for(self, resp: httpx.Response, body: bytes, method: str) -> None:
        code, des = "", ""
        try:
            data = json.loads(body) if body else None
            if isinstance(data, dict):
                code, des = str(data.get("errorCode") or ""), str(data.get("errorDes") or "")
        except ValueError:
            des = body[:200].decode("utf-8", "replace")
        raise api_error(resp.status_code, code, des, method, httpx.URL(self.url).path)

    def _wrap(self, e: Exception, method: str) -> VrmError:
        where = f"{method} {self.url}"
        if isinstance(e, httpx.TimeoutException):
            return VrmTimeoutError(f"backup resource timed out: {where}")
        return VrmConnectionError(f"backup resource connection failed: {where}: {type(e).__name__}")

    # --- reads ----------------------------------------------------------------------------------

    @staticmethod
    def _check_range(offset: int, length: int) -> None:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")

    def _range_body(self, status: int, offset: int, length: int) -> "_RangeBody":
        """How much of a read's answer to keep: memory stays bounded by the range asked for, whatever
        the peer sends (a 206 longer than the range is refused; a 200 that ignored Range is cut)."""
        if status == 206:
            return _RangeBody(0, length, strict=True, url=self.url)
        if status == 200:  # the server ignored Range and sends the whole volume: take our part, stop
            return _RangeBody(offset, length, strict=False, url=self.url)
        return _RangeBody(0, ERROR_BODY_MAX, strict=False, url=self.url)

    def _read_answer(self, resp: httpx.Response, body: bytes, offset: int, length: int) -> bytes:
        if resp.status_code in (200, 206):  # the body is already cut to the range (_keep)
            return body
        if resp.status_code == 416:  # past the end
            return b""
        self._raise_for(resp, body, "GET")
        raise AssertionError("unreachable")

    def _read_failed(self, e: Exception, attempt: int, offset: int) -> None:
        """One retry: a dropped connection on an idempotent read is cheap to redo; a second drop or a
        timeout raises the typed error."""
        if attempt == 0 and not isinstance(e, httpx.TimeoutException):
            log.info("backup resource read dropped at offset %d; retrying once", offset)
            return
        raise self._wrap(e, "GET") from None

    async def _read_async(self, offset: int, length: int) -> bytes:
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        for attempt in (0, 1):
            try:
                async with self._async.stream("GET", self.url, headers=headers) as resp:
                    body = self._range_body(resp.status_code, offset, length)
                    async for part in resp.aiter_bytes():
                        if body.add(part):
                            break
            except (httpx.TransportError, OSError) as e:
                self._read_failed(e, attempt, offset)
                continue
            break
        return self._read_answer(resp, body.content(), offset, length)

    def read_blocking(self, offset: int, length: int) -> bytes:
        """:meth:`read` for a caller on a worker thread (never on the event loop's thread)."""
        self._check_range(offset, length)
        if length == 0:
            return b""
        if self._injected:
            return self._on_owner_loop(self._read_async(offset, length))
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        for attempt in (0, 1):
            try:
                with self._client().stream("GET", self.url, headers=headers) as resp:
                    body = self._range_body(resp.status_code, offset, length)
                    for part in resp.iter_bytes():
                        if body.add(part):
                            break
            except (httpx.TransportError, OSError) as e:
                self._read_failed(e, attempt, offset)
                continue
            break
        return self._read_answer(resp, body.content(), offset, length)

    async def read(self, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        if length == 0:
            return b""
        return await self._read_async(offset, length)

    async def aiter_read(self, offset: int, length: int, chunk_size: int = 4 << 20) -> AsyncIterator[bytes]:
        # One range request per chunk: memory stays bounded by chunk_size, a dropped connection costs
        # one chunk (read() retries it once), and keep-alive makes the extra requests cheap.
        if offset < 0 or length < 0 or chunk_size <= 0:
            raise ValueError("offset/length must not be negative and chunk_size must be positive")
        pos, end = offset, offset + length
        while pos < end:
            n = min(chunk_size, end - pos)
            data = await self.read(pos, n)
            if data:
                yield data
            if len(data) < n:  # the volume ended before the requested range did
                return
            pos += n

    # --- writes ---------------------------------------------------------------------------------

    @staticmethod
    def _parts(data: WriteData) -> tuple[list[bytes], int]:
        if isinstance(data, (bytes, bytearray, memoryview)):
            parts = [bytes(data) if not isinstance(data, bytes) else data]
        else:
            parts = [p if isinstance(p, bytes) else bytes(p) for p in data if len(p)]
        return parts, sum(len(p) for p in parts)

    def _write_request(self, offset: int, length: int) -> dict[str, str]:
        total = str(self.size) if self.size is not None else "*"
        # Content-Length given: httpx then sends the parts as one plain body (no chunked encoding).
        return {"Content-Range": f"bytes {offset}-{offset + length - 1}/{total}",
                "Content-Type": "application/octet-stream", "Content-Length": str(length)}

    @staticmethod
    def _content(parts: list[bytes]) -> bytes | Iterator[bytes]:
        # One part: the bytes as they are. Several: handed to the socket one after the other, never
        # joined: a coalesced range would otherwise cost one more copy (and a fresh multi-MB buffer,
        # i.e. page faults) per PUT. h11 passes an exact ``bytes`` part through without copying.
        return parts[0] if len(parts) == 1 else iter(parts)

    def _write_answer(self, resp: httpx.Response, body: bytes) -> None:
        if resp.status_code not in (200, 201, 204):
            self._raise_for(resp, body, "PUT")

    async def _write_async(self, parts: list[bytes], offset: int, length: int) -> None:
        async def stream() -> AsyncIterator[bytes]:
            for p in parts:
                yield p
        content: Any = parts[0] if len(parts) == 1 else stream()
        try:
            resp = await self._async.put(self.url, content=content, headers=self._write_request(offset, length))
            body = resp.content
        except (httpx.TransportError, OSError) as e:
            # Not retried: the caller knows whether rewriting this range is safe (it is, for restores,
            # but the job layer decides and reports it).
            raise self._wrap(e, "PUT") from None
        self._write_answer(resp, body)

    def write_blocking(self, offset: int, data: WriteData) -> None:
        """:meth:`write` for a caller on a worker thread."""
        if offset < 0:
            raise ValueError("offset must not be negative")
        parts, length = self._parts(data)
        if not length:
            return
        if self._injected:
            return self._on_owner_loop(self._write_async(parts, offset, length))
        try:
            resp = self._client().put(self.url, content=self._content(parts),
                                      headers=self._write_request(offset, length))
            body = resp.content
        except (httpx.TransportError, OSError) as e:
            raise self._wrap(e, "PUT") from None  # not retried: see _write_async
        self._write_answer(resp, body)

    async def write(self, offset: int, data: WriteData) -> None:
        if offset < 0:
            raise ValueError("offset must not be negative")
        parts, length = self._parts(data)
        if not length:
            return
        await self._write_async(parts, offset, length)
