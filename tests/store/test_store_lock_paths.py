"""WriterLock (one writer per database/repository) and the XDG paths helper."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fctui.store import LockedError, StoreError, WriterLock, data_dir, repo_dir, runtime_dir, state_dir


def test_second_writer_in_same_process_gets_clear_error(tmp_path: Path) -> None:
    first = WriterLock(tmp_path / "db.lock").acquire()
    with pytest.raises(LockedError) as info:
        WriterLock(tmp_path / "db.lock").acquire()
    assert info.value.holder_pid == os.getpid()
    assert f"pid {os.getpid()}" in str(info.value)
    first.release()
    with WriterLock(tmp_path / "db.lock") as again:
        assert again.held
    assert not again.held


HOLDER = r"""
import sys, time
from fctui.store import WriterLock
lock = WriterLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_lock_held_by_other_process_then_freed_by_its_death(tmp_path: Path) -> None:
    path = tmp_path / "repo.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as info:
            WriterLock(path, purpose="agent").acquire()
        assert info.value.holder_pid == proc.pid
        assert "another agent" in str(info.value)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with WriterLock(path) as lock:  # the kernel released the dead holder's lock
        assert lock.held


def test_timeout_waits_for_release(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder = WriterLock(path).acquire()
    released = threading.Event()

    def release_soon() -> None:
        holder.release()
        released.set()

    timer = threading.Timer(0.1, release_soon)
    timer.start()
    with WriterLock(path, timeout=30) as waiter:
        assert released.is_set() and waiter.held
    timer.join()


def test_double_acquire_same_object_is_an_error(tmp_path: Path) -> None:
    lock = WriterLock(tmp_path / "l").acquire()
    with pytest.raises(StoreError):
        lock.acquire()
    lock.release()


def test_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("FCTUI_STATE_DIR", raising=False)
    monkeypatch.setenv("FCTUI_RUNTIME_DIR", str(tmp_path / "run"))
    assert data_dir() == tmp_path / "data" and (tmp_path / "data").is_dir()
    assert state_dir() == tmp_path / "data" / "state"
    assert repo_dir(create=False) == tmp_path / "data" / "repo"
    run = runtime_dir()
    assert run == tmp_path / "run"
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    monkeypatch.setenv("FCTUI_STATE_DIR", str(tmp_path / "st"))
    assert state_dir(create=False) == tmp_path / "st"


def test_xdg_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FCTUI_DATA_DIR", "FCTUI_STATE_DIR", "FCTUI_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xd"))
    monkeypatch.setenv("XDG_STATE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert data_dir(create=False) == tmp_path / "xd" / "fctui"
    assert state_dir(create=False) == tmp_path / "home" / ".local" / "state" / "fctui"
    assert runtime_dir() == tmp_path / "fctui"


def test_runtime_dir_permissions_tightened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loose = tmp_path / "run"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    monkeypatch.setenv("FCTUI_RUNTIME_DIR", str(loose))
    runtime_dir()
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


def test_runtime_dir_that_is_a_file_is_a_typed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "run"
    f.write_text("")
    monkeypatch.setenv("FCTUI_RUNTIME_DIR", str(f))
    with pytest.raises(StoreError):
        runtime_dir()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to create a directory owned by someone else")
def test_runtime_dir_owned_by_other_user_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "run"
    other.mkdir(mode=0o700)
    os.chown(other, 12345, 12345)
    monkeypatch.setenv("FCTUI_RUNTIME_DIR", str(other))
    with pytest.raises(StoreError, match="belongs to uid 12345"):
        runtime_dir()
