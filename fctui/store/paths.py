"""Where fctui keeps things (XDG base directories), each overridable for tests and operators.

* data dir: ``$FCTUI_DATA_DIR`` or ``$XDG_DATA_HOME/fctui`` or ``~/.local/share/fctui`` (repository)
* state dir: ``$FCTUI_STATE_DIR``, else ``$FCTUI_DATA_DIR/state`` when only the data dir is
  overridden (so one variable isolates a test), else ``$XDG_STATE_HOME/fctui`` or
  ``~/.local/state/fctui`` (job database, logs)
* runtime dir: ``$FCTUI_RUNTIME_DIR`` or ``$XDG_RUNTIME_DIR/fctui`` or ``/tmp/fctui-<uid>``
  (agent socket); always 0700 and owned by us, since the socket there accepts job commands.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import StoreError


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def _xdg(name: str, fallback: str) -> Path:
    value = _env_path(name)
    # The XDG spec says relative values are invalid and must be ignored.
    if value is not None and value.is_absolute():
        return value
    return Path.home() / fallback


def _ensure(path: Path, create: bool) -> Path:
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"cannot create directory {path}: {exc.strerror}") from exc
        if not path.is_dir():
            raise StoreError(f"{path} is not a directory")
    return path


def data_dir(*, create: bool = True) -> Path:
    """Persistent data (the backup repository by default)."""
    path = _env_path("FCTUI_DATA_DIR") or _xdg("XDG_DATA_HOME", ".local/share") / "fctui"
    return _ensure(path, create)


def state_dir(*, create: bool = True) -> Path:
    """Persistent state that is not user data: the job database."""
    path = _env_path("FCTUI_STATE_DIR")
    if path is None:
        data = _env_path("FCTUI_DATA_DIR")
        path = data / "state" if data else _xdg("XDG_STATE_HOME", ".local/state") / "fctui"
    return _ensure(path, create)


def repo_dir(*, create: bool = False) -> Path:
    """Default backup repository location (inside the data dir)."""
    return _ensure(data_dir(create=create) / "repo", create)


_RUNTIME_HINT = "; set FCTUI_RUNTIME_DIR to a directory of yours"


def runtime_dir(*, create: bool = True) -> Path:
    """Private per-user directory for the agent socket (mode 0700, owned by this user)."""
    path = _env_path("FCTUI_RUNTIME_DIR")
    if path is None:
        xdg = _env_path("XDG_RUNTIME_DIR")
        if xdg is not None and xdg.is_absolute() and xdg.is_dir():
            path = xdg / "fctui"
        else:
            path = Path(tempfile.gettempdir()) / f"fctui-{os.getuid()}"
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = path.lstat()
    except FileExistsError:   # mkdir(exist_ok) says so when a file, not a directory, is there
        raise StoreError(f"runtime directory {path} is not a directory{_RUNTIME_HINT}") from None
    except OSError as exc:
        raise StoreError(f"cannot create runtime directory {path}: {exc.strerror}{_RUNTIME_HINT}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"runtime directory {path} is not a directory{_RUNTIME_HINT}")
    if st.st_uid != os.getuid():
        # Another user pre-created it (shared /tmp): trusting it would expose our socket.
        raise StoreError(f"runtime directory {path} belongs to uid {st.st_uid}, not to us{_RUNTIME_HINT}")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path
