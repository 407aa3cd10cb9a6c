"""Where the VRM password comes from, and keeping it out of logs.

Passwords never come from the command line (visible in ``ps`` and shell history): the environment
variable ``FCTUI_PASSWORD_<SITE>`` (one site's, :func:`site_password_env`) or ``FCTUI_PASSWORD``, or an
interactive prompt naming the VRM. The unattended service (``fctui agent --service``)
reads a file only its user can read instead (:func:`service_password`): ``$FCTUI_PASSWORD_FILE``, else
systemd's ``$CREDENTIALS_DIRECTORY/fctui-password`` (``LoadCredential=``); never the config file.
Nothing here logs or stores them.
"""

from __future__ import annotations

import getpass
import logging
import os
import pwd
import re
import stat
import sys
from pathlib import Path
from typing import Callable, Mapping, TextIO

from .errors import VrmError

# Headers that carry a secret; their values are never logged.
SECRET_HEADERS = ("x-auth-key", "x-auth-token", "x-resource-token", "authorization", "password")


class CredentialsError(VrmError):
    """No password could be obtained (no env var and no terminal to prompt on)."""


def site_password_env(label: str, env: str = "FCTUI_PASSWORD") -> str:
    """The variable that holds one site's password: ``FCTUI_PASSWORD_<LABEL>``, the label upper-cased and
    every character that is not an ASCII letter or digit written ``_`` (``dr-site`` -> ``FCTUI_PASSWORD_DR_SITE``)."""
    return f"{env}_" + re.sub(r"[^A-Z0-9]", "_", label.upper())


def resolve_password(user: str, *, label: str = "", env: str = "FCTUI_PASSWORD", prompt: bool = True,
                     stdin: TextIO | None = None,
                     getpass_fn: Callable[[str], str] = getpass.getpass) -> str:
    """The password for ``user`` on the VRM ``label`` (a profile name or host; "" when unnamed):
    ``$FCTUI_PASSWORD_<LABEL>`` if set (:func:`site_password_env`: several sites, several passwords),
    else ``$FCTUI_PASSWORD``, else a prompt on a TTY naming the VRM, else an error.

    ``stdin``/``getpass_fn`` exist so tests can drive it without a terminal.
    """
    per_site = site_password_env(label, env) if label else None
    value = os.environ.get(per_site) if per_site else None
    if value:
        return value
    value = os.environ.get(env)
    if value:
        return value
    who = f"{user}@{label}" if label else user
    stream = stdin if stdin is not None else sys.stdin
    is_tty = bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
    if prompt and is_tty:
        try:
            value = getpass_fn(f"VRM password for {who}: ")
        except (EOFError, KeyboardInterrupt):
            raise CredentialsError("no password entered") from None
        if not value:
            raise CredentialsError("empty password")
        return value
    names = f"{per_site} or {env}" if per_site else env
    raise CredentialsError(
        f"no VRM password for {who}: set {names} in the environment or run on a terminal to be prompted "
        "(passwords are never taken as command-line arguments)")


# --- the unattended service's password file ----------------------------------------------------------

PASSWORD_FILE_ENV = "FCTUI_PASSWORD_FILE"
CREDENTIAL_NAME = "fctui-password"            # LoadCredential=fctui-password:/etc/fctui/vrm-password
MAX_PASSWORD_FILE = 4096                      # a password, not a document: anything longer is the wrong file


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def read_password_file(path: str | os.PathLike[str], *, systemd: bool = False) -> str:
    """The password in ``path``: its content less one trailing newline.

    Refused (CredentialsError, one line saying the fix) when the file is missing, empty, not valid
    UTF-8, owned by another user, or readable by group or others (``mode & 0o077``). ``systemd``: the
    file is systemd's copy in ``$CREDENTIALS_DIRECTORY``; systemd writes it owned by root, mode 0400, and
    grants the service user read access with a POSIX ACL, whose mask shows in the group bits. There root
    may own it and group bits are accepted when that ACL is present; others may still read nothing.
    """
    where = Path(path)
    try:
        # open, then check what was opened: no window to swap the file between the check and the read
        fd = os.open(where, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise CredentialsError(f"password file {where} does not exist") from None
    except PermissionError:
        raise CredentialsError(f"password file {where} cannot be read by {_user_name(os.geteuid())}: "
                               f"`chown {_user_name(os.geteuid())} {where}` and `chmod 600 {where}`") from None
    except OSError as e:
        raise CredentialsError(f"password file {where}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialsError(f"password file {where} is not a regular file")
        me = os.geteuid()
        mode = stat.S_IMODE(st.st_mode)
        owners = (me, 0) if systemd else (me,)
        if st.st_uid not in owners:
            raise CredentialsError(
                f"password file {where} belongs to {_user_name(st.st_uid)}, not to {_user_name(me)} who runs "
                f"the service: `chown {_user_name(me)} {where}` (and `chmod 600 {where}`)")
        loose = mode & 0o077
        if systemd and not mode & 0o007 and _has_acl(fd):
            loose = 0      # the group bits are the ACL's mask (see above), not a group's access
        if loose:
            raise CredentialsError(
                f"password file {where} can be read by {'others' if mode & 0o007 else 'its group'} "
                f"(mode {mode:04o}): `chmod 600 {where}`")
        data = os.read(fd, MAX_PASSWORD_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_PASSWORD_FILE:
        raise CredentialsError(f"password file {where} is longer than {MAX_PASSWORD_FILE} bytes: "
                               "it should hold the password alone")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise CredentialsError(f"password file {where} is empty: write the VRM password into it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError(f"password file {where} is not UTF-8 text") from None


def _has_acl(fd: int) -> bool:
    try:
        return "system.posix_acl_access" in os.listxattr(fd)
    except (OSError, AttributeError):
        return False


def service_password(env: Mapping[str, str] = os.environ) -> str:
    """The VRM password of the unattended service: ``$FCTUI_PASSWORD_FILE`` if set, else systemd's
    ``$CREDENTIALS_DIRECTORY/fctui-password``; never ``FCTUI_PASSWORD`` (an environment is inherited by
    every child and shows in a unit file), never the config file. CredentialsError when neither gives one.
    """
    named = env.get(PASSWORD_FILE_ENV, "").strip()
    if named:
        return read_password_file(named)
    creds = env.get("CREDENTIALS_DIRECTORY", "").strip()
    if creds:
        path = Path(creds) / CREDENTIAL_NAME
        if not path.exists():
            raise CredentialsError(
                f"systemd passed no credential {CREDENTIAL_NAME} ({path} does not exist): add "
                f"LoadCredential={CREDENTIAL_NAME}:/etc/fctui/vrm-password to the unit")
        return read_password_file(path, systemd=True)
    raise CredentialsError(
        f"no password for the service: set {PASSWORD_FILE_ENV} to a file only this user can read "
        f"(chmod 600), or run it from systemd with LoadCredential={CREDENTIAL_NAME}:/etc/fctui/vrm-password "
        "(`fctui agent install --print` writes such a unit)")


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
