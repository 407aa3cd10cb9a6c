"""The repo/points CLI pieces: exit codes, JSON shapes, clean errors."""

from __future__ import annotations

import argparse
import io
import json
import random
import time
from pathlib import Path

import pytest

from fctui.repo import Repository
from fctui.cli import build_parser
from tests.repo.gcclock import age_chunks

BS = 4096


def parser() -> argparse.ArgumentParser:
    return build_parser()


def run(*argv: str) -> tuple[int, str, str]:
    args = parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    code = args.func(args, out, err)
    return code, out.getvalue(), err.getvalue()


def fill(path: Path) -> tuple[Repository, list[str]]:
    repo = Repository.open(path)
    rng = random.Random(5)
    ids = []
    for vm, name in (("urn:vm:1", "web01"), ("urn:vm:2", "db01"), ("urn:vm:1", "web01")):
        with repo.new_point(vm_urn=vm, vm_name=name, job_id="j", kind="cbt", vm_config={"cpu": 1},
                            snapshot_urn="s", created=time.time()) as pw:
            dw = pw.add_disk(volume_urn=f"{vm}:vol", disk_name="sda", sequence_num=1, pci_type="VIRTIO",
                             size_bytes=8 * BS, block_size=BS, storage_type="LOCAL", datastore_urn="ds",
                             cbt=None, base_point_id=None)
            for i in range(0, 8, 2):
                dw.put_block(i, rng.randbytes(BS))
            ids.append(pw.commit().id)
    return repo, ids


def test_points_list_filter_and_json(tmp_path: Path) -> None:
    repo, ids = fill(tmp_path / "r")
    code, out, _ = run("points", "--repo", str(tmp_path / "r"), "--json")
    assert code == 0 and [p["id"] for p in json.loads(out)] == ids
    code, out, _ = run("points", "web01", "--repo", str(tmp_path / "r"), "--json")
    assert [p["id"] for p in json.loads(out)] == [ids[0], ids[2]]
    code, out, _ = run("points", "urn:vm:2", "--repo", str(tmp_path / "r"))
    assert code == 0 and ids[1] in out and "db01" in out and ids[0] not in out
    code, _, err = run("points", "nosuchvm", "--repo", str(tmp_path / "r"))
    assert code == 2 and "no restore points for VM 'nosuchvm'" in err


def test_points_verify(tmp_path: Path) -> None:
    repo, ids = fill(tmp_path / "r")
    code, out, _ = run("points", "verify", ids[1], "--repo", str(tmp_path / "r"), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["chunks_checked"] == 4
    assert doc["disks"][0]["sha256"] == repo.open_disk(ids[1], "urn:vm:2:vol").sha256()
    digest = repo.open_disk(ids[1], "urn:vm:2:vol").block_digests()[2]
    chunk = repo.chunk_path(digest)
    raw = bytearray(chunk.read_bytes())
    raw[-3] ^= 1
    chunk.write_bytes(bytes(raw))
    code, out, _ = run("points", "verify", ids[1], "--repo", str(tmp_path / "r"))
    assert code == 1 and "DAMAGED" in out and "1 damaged block" in out
    code, out, _ = run("points", "verify", "nope", "--repo", str(tmp_path / "r"), "--json")
    assert code == 2 and "no restore point 'nope'" in json.loads(out)["error"]


def test_repo_verify_prune_gc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    repo, ids = fill(tmp_path / "data" / "repo")  # the default location, no --repo needed
    code, out, _ = run("repo", "verify", "--json")
    assert code == 0 and json.loads(out)["chunks_checked"] == 12
    code, out, _ = run("repo", "verify", "--sample", "50%")
    assert code == 0 and "checked 6 of 12 chunks" in out
    digest = repo.open_disk(ids[0], "urn:vm:1:vol").block_digests()[0]
    raw = bytearray(repo.chunk_path(digest).read_bytes())
    raw[-1] ^= 0xFF
    repo.chunk_path(digest).write_bytes(bytes(raw))
    code, out, _ = run("repo", "verify")
    assert code == 1 and f"DAMAGED {ids[0]}" in out and "sda block 0: corrupt" in out
    age_chunks(repo.chunks_dir)  # written long ago: older than the start of the gc the CLI runs
    code, out, _ = run("repo", "prune", "--keep-last", "1", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["prune"]["removed"] == [ids[0]]
    assert doc["gc"]["chunks_removed"] == 3  # the 4th was quarantined by verify and gc drops the .bad
    code, out, _ = run("repo", "gc")
    assert code == 0 and "0 chunk(s) deleted" in out
    code, out, _ = run("repo", "verify")
    assert code == 0 and "no damage found" in out


def test_errors_are_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run("repo", "gc", "--repo", str(tmp_path / "none"))
    assert code == 2 and err.startswith("fctui: error: no repository at")
    code, out, _ = run("points", "--repo", str(tmp_path / "none"), "--json")
    assert code == 2 and "no repository" in json.loads(out)["error"]
    code, _, err = run("points", "verify", "--repo", str(tmp_path / "none"))
    assert code == 2 and "usage" in err
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["repo", "verify", "--sample", "0"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        parser().parse_args(["repo", "prune", "--keep-last", "-2"])
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "fresh"))
    code, out, _ = run("points", "--json")  # nothing backed up yet: empty, not an error
    assert code == 0 and json.loads(out) == []
    Repository.open(tmp_path / "empty")
    code, out, _ = run("points", "--repo", str(tmp_path / "empty"))
    assert code == 0 and "no restore points" in out
