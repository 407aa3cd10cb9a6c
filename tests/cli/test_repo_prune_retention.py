"""`fctui repo prune --keep-daily ... [--dry-run]`: PBS-style retention from the command line, periods in the
system's local zone (TZ set here to UTC+8, where a point at local midnight belongs to the new day)."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fctui.cli import build_parser
from fctui.repo import Repository

BS = 4096
PLUS_8 = timezone(timedelta(hours=8))


def run(*argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    code = args.func(args, out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def local_utc_plus_8(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "CST-8")   # POSIX: 8 hours east of UTC, no DST (needs no tz database)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def fill(path: Path) -> dict[str, str]:
    """Points named by their local (UTC+8) time; web01 has four, db01 one."""
    repo = Repository.open(path)
    ids = {}
    for vm, name, when in (("urn:vm:1", "web01", "2026-03-08 12:00"), ("urn:vm:1", "web01", "2026-03-09 12:00"),
                           ("urn:vm:1", "web01", "2026-03-09 23:59"), ("urn:vm:1", "web01", "2026-03-10 00:00"),
                           ("urn:vm:2", "db01", "2026-03-01 08:00")):
        created = datetime.strptime(when, "%Y-%m-%d %H:%M").replace(tzinfo=PLUS_8).timestamp()
        with repo.new_point(vm_urn=vm, vm_name=name, job_id="j", kind="cbt", vm_config={}, snapshot_urn="s",
                            created=created) as pw:
            dw = pw.add_disk(volume_urn=f"{vm}:vol", disk_name="sda", sequence_num=1, pci_type="VIRTIO",
                             size_bytes=4 * BS, block_size=BS, storage_type="LOCAL", datastore_urn="ds",
                             cbt=None, base_point_id=None)
            dw.put_block(0, when.encode().ljust(BS, b"x"))
            ids[f"{name} {when}"] = pw.commit().id
    age_chunks(repo)
    return ids


def age_chunks(repo: Repository) -> None:
    """Chunks written an hour ago: gc spares chunks as new as its start (a writer may be reusing them), and
    a coarse file clock could make these look that new."""
    old = time.time() - 3600
    for chunk in repo.chunks_dir.glob("*/*"):
        os.utime(chunk, (old, old))


def test_dry_run_shows_kept_with_rule_and_removes_nothing(tmp_path: Path, local_utc_plus_8: None) -> None:
    ids = fill(tmp_path / "r")
    code, out, _ = run("repo", "prune", "--keep-daily", "2", "--dry-run", "--repo", str(tmp_path / "r"))
    assert code == 0
    lines = out.splitlines()
    # web01: local midnight of the 10th opens the 10th, 23:59 opens the 9th; the 9th's noon point is a later
    # point of a kept day, the 8th would be a third day. db01's only point is its newest day.
    assert lines[0] == "dry run: would remove 2 restore point(s), keep 3"
    expected = [("keep", "db01 2026-03-01 08:00", "daily 2026-03-01"),
                ("keep", "web01 2026-03-10 00:00", "daily 2026-03-10"),
                ("keep", "web01 2026-03-09 23:59", "daily 2026-03-09"),
                ("remove", "web01 2026-03-09 12:00", ""),
                ("remove", "web01 2026-03-08 12:00", "")]
    assert len(lines) == 1 + len(expected)
    for line, (what, point, rule) in zip(lines[1:], expected):
        name, when = point.split(" ", 1)
        assert line.split()[:3] == [what, ids[point], name], line
        assert f"{when}:00 CST" in line and line.endswith(rule), line
    assert len(Repository.open(tmp_path / "r").points()) == 5

    code, out, _ = run("repo", "prune", "--keep-daily", "2", "--dry-run", "--json", "--repo", str(tmp_path / "r"))
    doc = json.loads(out)
    assert doc["dry_run"] is True and sorted(doc["prune"]["removed"]) == sorted(
        [ids["web01 2026-03-09 12:00"], ids["web01 2026-03-08 12:00"]])
    assert len(Repository.open(tmp_path / "r").points()) == 5


def test_keep_daily_removes_and_collects(tmp_path: Path, local_utc_plus_8: None) -> None:
    ids = fill(tmp_path / "r")
    code, out, _ = run("repo", "prune", "--keep-daily", "2", "--vm", "web01", "--json", "--repo", str(tmp_path / "r"))
    doc = json.loads(out)
    assert code == 0
    assert sorted(doc["prune"]["removed"]) == sorted([ids["web01 2026-03-09 12:00"], ids["web01 2026-03-08 12:00"]])
    assert doc["prune"]["why"] == {ids["web01 2026-03-10 00:00"]: "daily 2026-03-10",
                                   ids["web01 2026-03-09 23:59"]: "daily 2026-03-09"}
    assert doc["gc"]["chunks_removed"] == 2   # each removed point had a chunk of its own
    left = {p.id for p in Repository.open(tmp_path / "r").points()}
    assert left == {ids["web01 2026-03-10 00:00"], ids["web01 2026-03-09 23:59"], ids["db01 2026-03-01 08:00"]}
    code, out, _ = run("repo", "verify", "--repo", str(tmp_path / "r"))
    assert code == 0 and "no damage found" in out


def test_keep_last_with_a_period_rule(tmp_path: Path, local_utc_plus_8: None) -> None:
    ids = fill(tmp_path / "r")
    # last 1 keeps the 10th's midnight point; weekly 1: its week (2026-W11, from Monday the 9th) is held, so
    # the 9th's points are passed over; the 8th (Sunday) opens 2026-W10
    code, out, _ = run("repo", "prune", "--keep-last", "1", "--keep-weekly", "1", "--vm", "urn:vm:1", "--json",
                       "--repo", str(tmp_path / "r"))
    doc = json.loads(out)
    assert code == 0 and doc["prune"]["why"] == {ids["web01 2026-03-10 00:00"]: "last",
                                                 ids["web01 2026-03-08 12:00"]: "weekly 2026-W10"}


def test_prune_needs_a_rule(tmp_path: Path) -> None:
    fill(tmp_path / "r")
    code, _, err = run("repo", "prune", "--repo", str(tmp_path / "r"))
    assert code == 2 and err.startswith("fctui: error: repo prune needs at least one of --keep-last")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["repo", "prune", "--keep-daily", "-1"])
