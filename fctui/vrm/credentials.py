"""Where the VRM password comes from, and keeping it out of logs.

Passwords never come from the command line (visible in ``ps`` and shell history): the environment
variable ``FCTUI_PASSWORD`` or an interactive prompt. Nothing here logs or stores them.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import sys
from typing import Callable, TextIO

from .errors import VrmError

# Headers that carry a secret; their values are never logged.
SECRET_HEADERS = ("x-auth-key", "x-auth-token", "x-resource-token", "authorization", "password")


class CredentialsError(VrmError):
    """No password could be obtained (no env var and no terminal to prompt on)."""


def resolve_password(user: str, *, env: str = "FCTUI_PASSWORD", prompt: bool = True,
                     stdin: TextIO | None = None,
                     getpass_fn: Callable[[str], str] = getpass.getpass) -> str:
    """The password for ``user``: ``$FCTUI_PASSWORD`` if set, else a prompt on a TTY, else an error.

    ``stdin``/``getpass_fn`` exist so tests can drive it without a terminal.
    """
    value = os.environ.get(env)
    if value:
        return value
    stream = stdin if stdin is not None else sys.stdin
    is_tty = bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
    if prompt and is_tty:
        try:
            value = getpass_fn(f"VRM password for {user}: ")
        except (EOFError, KeyboardInterrupt):
            raise CredentialsError("no password entered") from None
        if not value:
            raise CredentialsError("empty password")
        return value
    raise CredentialsError(
        f"no VRM password for {user}: set {env} in the environment or run on a terminal to be prompted "
        "(passwords are never taken as command-line arguments)")


_SECRET_RE = re.compile(
    r"(?i)(x-auth-key|x-auth-token|x-resource-token|authorization|password)"
    r"(['\"]?\s*[:=,]\s*\(?['\"]?b?['\"]?)([^'\"\s,)}\]]+)")


def redact(text: str) -> str:
    """Replace the value after any secret-bearing header/field name with ``***``."""
    return _SECRET_RE.sub(lambda m: m.group(1) + m.group(2) + "***", text)


class SecretRedactingFilter(logging.Filter):
    """Logging filter that scrubs secret header values from every record it sees.

    The client itself never logs headers; this guards against debug logging of httpx/httpcore.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken record is not ours to fix; let logging report it
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg = clean
            record.args = None
        return True


_installed = False


def install_log_redaction() -> None:
    """Attach :class:`SecretRedactingFilter` to our and httpx's loggers (idempotent)."""
    global _installed
    if _installed:
        return
    f = SecretRedactingFilter()
    # Logger filters do not apply to child loggers, so name the ones that exist.
    for name in ("fctui", "fctui.vrm", "fctui.vrm.client", "fctui.vrm.transport", "httpx", "httpcore",
                 "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy"):
        logging.getLogger(name).addFilter(f)
    _installed = True
