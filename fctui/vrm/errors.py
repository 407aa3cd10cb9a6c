"""Typed errors of the VRM client.

Every failure that leaves :mod:`fctui.vrm` is one of these: callers (CLI, TUI, jobs) catch
:class:`VrmError` and show ``str(err)``, a one-line human message. httpx and json exceptions never
escape the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .models import BackupResource, Task

# errorCodes that mean "the object is not there" whatever HTTP status carries them (vrm-api.md §4.3).
NOT_FOUND_CODES = frozenset({"10300109", "10420004", "10430051"})
VERSION_ERROR_CODE = "10000022"
LICENCE_ERROR_CODE = "10000040"


class VrmError(Exception):
    """Base of every client error. ``message`` is one human-readable line; ``str(err) == message``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class VrmApiError(VrmError):
    """The VRM answered with an error status (and usually ``{errorCode, errorDes}``)."""

    def __init__(self, message: str, *, status: int, error_code: str = "", error_des: str = "",
                 method: str = "", path: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.error_des = error_des
        self.method = method
        self.path = path


class VrmAuthError(VrmApiError):
    """Login refused, token rejected twice in a row, licence problem (10000040) or forbidden."""


class VrmNotFoundError(VrmApiError):
    """HTTP 404, or an errorCode that means the object does not exist (e.g. 10300109)."""


class VrmConflictError(VrmApiError):
    """HTTP 400/409 business conflict: wrong VM state, limit reached, busy (errorCode says which)."""


class VrmServerError(VrmApiError):
    """HTTP 5xx after the client's retries for idempotent reads were used up."""


class VrmVersionError(VrmApiError):
    """The VRM does not support the API version in the Accept header (errorCode 10000022)."""


class VrmConnectionError(VrmError):
    """No answer: connection refused or dropped, TLS handshake or certificate failure, DNS."""


class VrmTimeoutError(VrmError):
    """The VRM did not answer within the client's timeout."""


class VrmProtocolError(VrmError):
    """The answer was not what the API promises: non-JSON body, wrong content type, wrong shape."""

    def __init__(self, message: str, *, method: str = "", path: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.status = status


class VrmBodyTooLargeError(VrmProtocolError):
    """An answer (or a data range) longer than the client accepts; reading stopped at ``cap`` bytes."""

    def __init__(self, message: str, *, method: str = "", path: str = "", cap: int = 0) -> None:
        super().__init__(message, method=method, path=path)
        self.cap = cap


class TaskFailedError(VrmError):
    """A VRM task ended ``failed`` (also when it was cancelled: ``task.cancelled``)."""

    def __init__(self, task: "Task") -> None:
        what = task.type or "task"
        if task.cancelled:
            msg = f"VRM task {task.id} ({what}) was cancelled"
        else:
            detail = task.reason_des or "no reason given"
            code = f" [{task.reason}]" if task.reason and task.reason not in detail else ""
            msg = f"VRM task {task.id} ({what}) failed: {detail}{code}"
        super().__init__(msg)
        self.task = task

    @property
    def reason(self) -> str:
        return self.task.reason

    @property
    def reason_des(self) -> str:
        return self.task.reason_des

    @property
    def cancelled(self) -> bool:
        return self.task.cancelled


class TaskTimeoutError(VrmError):
    """Waiting for a task (or a backup resource) took longer than allowed. ``task`` is the last seen."""

    def __init__(self, message: str, task: "Task | None" = None) -> None:
        super().__init__(message)
        self.task = task


class BackupResourceError(VrmError):
    """Preparing a backup resource failed: the resource says ``failed``, or it vanished and its prepare
    task failed. ``reason`` is the VRM errorCode when known."""

    def __init__(self, message: str, *, resource: "BackupResource | None" = None,
                 task: "Task | None" = None) -> None:
        super().__init__(message)
        self.resource = resource
        self.task = task

    @property
    def reason(self) -> str:
        if self.resource is not None and self.resource.reason:
            return self.resource.reason
        return self.task.reason if self.task is not None else ""


def api_error(status: int, error_code: str, error_des: str, method: str, path: str) -> VrmApiError:
    """Build the right :class:`VrmApiError` subclass for an error answer."""
    detail = error_des.strip() or (f"HTTP {status}")
    code = f" [{error_code}]" if error_code and error_code not in detail else ""
    msg = f"VRM refused {method} {path}: {detail}{code} (HTTP {status})"
    kw: dict[str, Any] = dict(status=status, error_code=error_code, error_des=error_des, method=method, path=path)
    if error_code == VERSION_ERROR_CODE:
        return VrmVersionError(f"VRM does not support this API version: {detail}{code}", **kw)
    if status in (401, 403) or error_code == LICENCE_ERROR_CODE:
        return VrmAuthError(msg, **kw)
    if status == 404 or error_code in NOT_FOUND_CODES:
        return VrmNotFoundError(msg, **kw)
    if status >= 500:
        return VrmServerError(msg, **kw)
    if status in (400, 409, 413):
        return VrmConflictError(msg, **kw)
    return VrmApiError(msg, **kw)
