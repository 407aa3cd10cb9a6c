"""The repository's reports and errors as a person or a script reads them (``--json``), where mutation
testing found them unguarded (README, Mutation testing); and retention's own description of itself."""

from __future__ import annotations

import copy
import pickle

import pytest

from fctui.repo.errors import NoRepositoryError, RepoBusyError, RepoError, RepoFullError
from fctui.repo.model import BlockDamage, DamagedEntry, PruneReport, VerifyReport
from fctui.repo.retention import Retention, RetentionError


def test_verify_report_json_names_every_field() -> None:
    d1 = BlockDamage("p2", "urn:v:1", "sys", 7, "ab" * 32, "corrupt")
    d2 = BlockDamage("p1", "urn:v:2", "data", None, None, "manifest-missing")
    d3 = BlockDamage("p2", "urn:v:1", "sys", 9, "cd" * 32, "missing")
    r = VerifyReport(points_checked=["p1", "p2"], chunks_total=10, chunks_checked=4, bytes_checked=4096,
                     sample_pct=40.0, bad_chunks={"ab" * 32: "corrupt"}, damaged=[d1, d2, d3],
                     bad_entries=[DamagedEntry("#3", "not-a-point", "entry 3 has no id")], seconds=1.23456)
    assert not r.ok and r.damaged_points == ["p1", "p2"]
    assert r.to_json() == {
        "ok": False, "points_checked": ["p1", "p2"], "sample_pct": 40.0, "chunks_total": 10, "chunks_checked": 4,
        "bytes_checked": 4096, "bad_chunks": {"ab" * 32: "corrupt"}, "damaged_points": ["p1", "p2"],
        "damaged": [{"point_id": "p2", "volume_urn": "urn:v:1", "disk_name": "sys", "block": 7, "digest": "ab" * 32,
                     "problem": "corrupt"},
                    {"point_id": "p1", "volume_urn": "urn:v:2", "disk_name": "data", "block": None, "digest": None,
                     "problem": "manifest-missing"},
                    {"point_id": "p2", "volume_urn": "urn:v:1", "disk_name": "sys", "block": 9, "digest": "cd" * 32,
                     "problem": "missing"}],
        "damaged_entries": [{"ref": "#3", "problem": "not-a-point", "detail": "entry 3 has no id"}],
        "seconds": 1.235,
    }
    assert str(r.bad_entries[0]) == "#3 (entry 3 has no id)"


def test_a_report_is_ok_only_without_damage_and_bad_entries() -> None:
    assert VerifyReport().ok and VerifyReport().to_json()["ok"] is True
    assert not VerifyReport(bad_entries=[DamagedEntry("#1", "not-a-point", "x")]).ok
    assert not VerifyReport(damaged=[BlockDamage("p", "v", "d", 1, None, "missing")]).ok


def test_prune_report_json() -> None:
    r = PruneReport(removed=["a"], kept=["b", "c"], why={"b": "last", "c": "daily 2026-01-01"})
    assert r.to_json() == {"removed": ["a"], "kept": ["b", "c"], "why": {"b": "last", "c": "daily 2026-01-01"}}


def test_point_not_found_names_the_point() -> None:
    from fctui.repo.errors import PointNotFoundError
    e = PointNotFoundError("p-42")
    assert e.point_id == "p-42" and str(e) == "no restore point 'p-42' in the repository"


def test_repo_full_error_keeps_the_path_and_says_one_line() -> None:
    e = RepoFullError("repository full: no space left on device", path="/r/chunks/ab/cd")
    assert str(e) == e.message == "repository full: no space left on device" and e.path == "/r/chunks/ab/cd"
    assert RepoFullError("x").path == ""


@pytest.mark.parametrize("cls", [RepoError, RepoBusyError, NoRepositoryError])
def test_a_repository_error_keeps_its_message_through_pickle_and_copy(cls: type[RepoError]) -> None:
    # the console's refresh process sends what it reads by pickle, which rebuilds an error from its args
    e = cls("repository at /r is locked by pid 7")
    assert e.args == ("repository at /r is locked by pid 7",)
    for again in (pickle.loads(pickle.dumps(e)), copy.copy(e)):
        assert type(again) is cls and str(again) == again.message == "repository at /r is locked by pid 7"


def test_retention_describes_itself_in_the_cli_words() -> None:
    assert Retention().describe() == "keep all" and Retention().keeps_all
    r = Retention(keep_last=3, keep_daily=7, keep_yearly=1)
    assert not r.keeps_all
    assert r.describe() == "last=3 daily=7 yearly=1"
    assert r.to_dict() == {"keep_last": 3, "keep_daily": 7, "keep_yearly": 1}
    every = Retention(1, 2, 3, 4, 5, 6)
    assert every.describe() == "last=1 hourly=2 daily=3 weekly=4 monthly=5 yearly=6"
    assert every.to_dict() == {"keep_last": 1, "keep_hourly": 2, "keep_daily": 3, "keep_weekly": 4,
                               "keep_monthly": 5, "keep_yearly": 6}
    assert Retention().to_dict() == {}
    assert not Retention(keep_monthly=1).keeps_all


@pytest.mark.parametrize("kw,msg", [
    ({"keep_last": -1}, "keep-last must be a whole number of 0 or more, not -1"),
    ({"keep_weekly": True}, "keep-weekly must be a whole number of 0 or more, not True"),
    ({"keep_yearly": 1.5}, "keep-yearly must be a whole number of 0 or more, not 1.5"),
])
def test_retention_refuses_what_is_not_a_count(kw: dict, msg: str) -> None:
    with pytest.raises(RetentionError) as e:
        Retention(**kw)
    assert str(e.value) == msg
