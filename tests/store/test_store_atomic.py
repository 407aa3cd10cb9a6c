"""AtomicJSONStorage / open_db: atomic replacement, typed errors, survival of kill -9 mid-write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fctui.store import AtomicJSONStorage, CorruptDatabaseError, StoreError, atomic_write_bytes, open_db


def test_roundtrip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "jobs.json"
    db = open_db(path)
    db.table("jobs").insert({"id": "j1", "state": "running"})
    db.table("jobs").update({"state": "succeeded"})
    db.close()
    again = open_db(path)
    assert again.table("jobs").all() == [{"id": "j1", "state": "succeeded"}]
    assert json.loads(path.read_text())["jobs"]["1"]["state"] == "succeeded"
    assert (path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["jobs.json"]  # no temp file left behind


def test_corrupt_file_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    path.write_text('{"_default": {"1": {')
    with pytest.raises(CorruptDatabaseError, match="not valid JSON"):
        open_db(path).all()
    path.write_text("[1, 2]")
    with pytest.raises(CorruptDatabaseError):
        open_db(path).all()


def test_empty_file_reads_as_empty_db(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    path.write_bytes(b"")
    assert open_db(path).all() == []


def test_write_into_missing_dir_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        atomic_write_bytes(tmp_path / "nope" / "x.json", b"{}")
    with pytest.raises(StoreError):
        AtomicJSONStorage(tmp_path / "nope" / "x.json", create_dirs=False)


def test_stale_temp_of_dead_writer_removed_live_one_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".db.json.{dead_pid}.0123abcd.tmp"
    live = tmp_path / f".db.json.{os.getpid()}.0123abcd.tmp"
    stale.write_text("half")
    live.write_text("in progress")
    open_db(tmp_path / "db.json")
    assert not stale.exists()
    assert live.exists()


WRITER = r"""
import sys
from fctui.store import open_db
db = open_db(sys.argv[1])
table = db.table("t")
payload = "x" * 4096
v = 0
while True:
    v += 1
    # Every write replaces all 400 docs with version v: a torn file would mix versions or cut JSON.
    db.storage.write({"t": {str(i): {"v": v, "i": i, "p": payload} for i in range(400)}})
    print(v, flush=True)  # version v is completely on disk
"""


def test_kill_during_write_leaves_old_or_new_never_half(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    seen_versions = []
    for round_ in range(6):
        path.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        # Wait on the writer's word, not a clock: version 2 written means a complete file exists and the
        # kill races a replacement of it (pytest's timeout bounds this if the writer hangs).
        done: list[tuple[int, float]] = []
        while not done or done[-1][0] < 2:
            line = proc.stdout.readline()
            assert line, f"the writer died: exit {proc.wait()}"
            done.append((int(line), time.monotonic()))
        # Land at different moments of a write cycle. Under load the moment shifts, which is fine:
        # whatever it is, the file must hold the last version reported or the one being written.
        cycle = done[-1][1] - done[-2][1]
        time.sleep(cycle * round_ / 6)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        last = int(([str(done[-1][0])] + proc.stdout.read().split())[-1])
        proc.stdout.close()
        data = json.loads(path.read_text())  # must parse: never a half-written file
        docs = data["t"]
        assert len(docs) == 400
        versions = {d["v"] for d in docs.values()}
        assert len(versions) == 1, f"mixed versions {versions}"
        version = versions.pop()
        assert version in (last, last + 1), f"version {version} on disk, {last} the last one reported"
        seen_versions.append(version)
        # The next opener clears the dead writer's temp file.
        open_db(path).table("t").all()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert all(v >= 2 for v in seen_versions)
