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
    if v == 1:  # "ready" once a complete file exists: a kill can then only race later writes
        print("ready", flush=True)
"""


def test_kill_during_write_leaves_old_or_new_never_half(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    seen_versions = []
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.037 * round_)  # land at different moments of the write cycle
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        data = json.loads(path.read_text())  # must parse: never a half-written file
        docs = data["t"]
        assert len(docs) == 400
        versions = {d["v"] for d in docs.values()}
        assert len(versions) == 1, f"mixed versions {versions}"
        seen_versions.append(versions.pop())
        # The next opener clears the dead writer's temp file.
        open_db(path).table("t").all()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert all(v >= 1 for v in seen_versions)
