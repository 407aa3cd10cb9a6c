"""How volume bytes move between fctui and a prepared backup resource.

The real CNA data socket protocol is not public (vrm-api.md §9.4). Our documented stand-in is HTTP at the
resource's ``resourceUrl``: ``GET`` with ``Range`` reads point-in-time snapshot bytes (206), ``PUT`` with
``Content-Range`` writes restore bytes (204), authenticated by ``X-Resource-Token``. Everything that knows
this lives here behind :class:`BlockTransport`, so a socket implementation can replace it.
"""

from __future__ import annotations

import json
import logging
import ssl
from typing import AsyncIterator, Protocol, runtime_checkable

import httpx

from .errors import (VrmConnectionError, VrmError, VrmProtocolError, VrmTimeoutError, api_error)

log = logging.getLogger("fctui.vrm.transport")


@runtime_checkable
class BlockTransport(Protocol):
    """Random access to one volume's bytes through a prepared backup resource."""

    async def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer only at the end of the volume)."""
        ...

    def aiter_read(self, offset: int, length: int, chunk_size: int = 4 << 20) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes from ``offset`` in chunks of ``chunk_size`` (last may be shorter)."""
        ...

    async def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (restore resources only)."""
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


def make_verify(verify: bool | str) -> bool | ssl.SSLContext:
    """httpx ``verify`` from our setting: True/False, or a CA bundle path (``--ca-file``)."""
    if isinstance(verify, str):
        try:
            return ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as e:
            raise VrmConnectionError(f"cannot load CA file {verify!r}: {e}") from None
    return bool(verify)


class HttpResourceTransport:
    """:class:`BlockTransport` over HTTP range requests to ``resourceUrl``."""

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
        self._client = httpx.AsyncClient(
            verify=v, timeout=httpx.Timeout(timeout),
            transport=_SharedTransport(transport) if transport is not None else None,
            headers={"X-Resource-Token": token},
        )

    async def __aenter__(self) -> "HttpResourceTransport":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

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

    async def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        if length == 0:
            return b""
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        for attempt in (0, 1):  # one retry: a dropped connection on an idempotent read is cheap to redo
            try:
                resp = await self._client.get(self.url, headers=headers)
                body = resp.content
            except (httpx.TransportError, OSError) as e:
                if attempt == 0 and not isinstance(e, httpx.TimeoutException):
                    log.info("backup resource read dropped at offset %d; retrying once", offset)
                    continue
                raise self._wrap(e, "GET") from None
            break
        if resp.status_code == 206:
            return body
        if resp.status_code == 200:  # server ignored Range: it sent the whole thing
            return body[offset:offset + length]
        if resp.status_code == 416:  # past the end
            return b""
        self._raise_for(resp, body, "GET")
        raise AssertionError("unreachable")

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

    async def write(self, offset: int, data: bytes) -> None:
        if offset < 0:
            raise ValueError("offset must not be negative")
        if not data:
            return
        total = str(self.size) if self.size is not None else "*"
        headers = {"Content-Range": f"bytes {offset}-{offset + len(data) - 1}/{total}",
                   "Content-Type": "application/octet-stream"}
        try:
            resp = await self._client.put(self.url, content=data, headers=headers)
            body = resp.content
        except (httpx.TransportError, OSError) as e:
            # Not retried: the caller knows whether rewriting this range is safe (it is, for restores,
            # but the job layer decides and reports it).
            raise self._wrap(e, "PUT") from None
        if resp.status_code not in (200, 201, 204):
            self._raise_for(resp, body, "PUT")
