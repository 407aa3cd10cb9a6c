"""Policies as values: parsing, validation with a clear message, TOML round trip, due times, windows,
which policy wins. Expectations are worked out by hand from the documented meaning."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fctui.jobs.policy import (Policy, PolicyError, Retention, Schedule, due_time, format_duration, parse_duration,
                               policies_from_toml, policies_to_toml, policy_from_mapping, window_bounds,
                               winning_policy)
from fctui.jobs.policystore import PolicyStore

UTC = timezone.utc


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 1, day, hh, mm, tzinfo=UTC)   # 2026-01-05 is a Monday


def pol(**kw: object) -> Policy:
    base: dict[str, object] = {"name": "db", "vms": "re:^db-", "schedule": "daily 01:00", "rpo": "24h"}
    base.update(kw)
    return policy_from_mapping(base)


@pytest.mark.parametrize("text, seconds", [("24h", 86400), ("1d12h", 129600), ("90m", 5400), ("2w", 1209600),
                                           ("3600", 3600), (7200, 7200)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds  # type: ignore[arg-type]
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("bad", ["", "0h", "24 hours", "h", "-1h", "1x"])
def test_bad_duration_says_the_form(bad: str) -> None:
    with pytest.raises(PolicyError, match="24h|more than zero"):
        parse_duration(bad)


def test_schedule_times_and_days() -> None:
    s = Schedule.parse("mon-fri 13:00,01:30")
    # from Friday 12:00: Friday 13:00, then Monday 01:30 and 13:00 (Saturday and Sunday are skipped)
    assert s.between(at(9, 12), at(12, 23)) == [at(9, 13), at(12, 1, 30), at(12, 13)]
    assert s.next_after(at(9, 13)) == at(12, 1, 30)   # strictly after


def test_cron_schedule() -> None:
    s = Schedule.parse("cron 30 2 * * 6,0")   # 02:30 on Saturday and Sunday
    assert s.between(at(5, 0), at(12, 0)) == [at(10, 2, 30), at(11, 2, 30)]


@pytest.mark.parametrize("text, words", [("", "empty"), ("daily 25:00", "bad time"), ("funday 01:00", "unknown days"),
                                         ("cron 0 2 * *", "five fields"), ("cron 61 2 * * *", "schedule"),
                                         ("daily 01:00 extra", "expected")])
def test_bad_schedule(text: str, words: str) -> None:
    with pytest.raises(PolicyError, match=words):
        Schedule.parse(text)


def test_window_across_midnight() -> None:
    p = pol(window="daily 22:00-06:00")
    assert window_bounds(p.window, at(10, 2)) == (at(9, 22), at(10, 6))
    assert window_bounds(p.window, at(10, 23)) == (at(10, 22), at(11, 6))
    assert window_bounds(p.window, at(10, 12)) is None


def test_schedule_outside_window_is_refused_when_written() -> None:
    with pytest.raises(PolicyError, match="13:00 is outside its window daily 22:00-06:00"):
        pol(schedule="daily 01:00,13:00", window="daily 22:00-06:00")


def test_missed_runs_collapse_into_one() -> None:
    p = pol(schedule="daily 01:00,03:00")
    # the agent last ran the 01:00 run of the 5th and was down until the 8th at 02:00: one run is due,
    # for the latest missed time (the 8th 01:00), not the five missed ones
    assert due_time(p, at(5, 1), at(8, 2)) == at(8, 1)
    # after that run nothing is due until 03:00
    assert due_time(p, at(8, 1), at(8, 2, 59)) is None
    assert due_time(p, at(8, 1), at(8, 3)) == at(8, 3)
    # never run before: the latest time within the catch-up horizon
    assert due_time(p, None, at(8, 2)) == at(8, 1)
    assert due_time(pol(enabled=False), None, at(8, 2)) is None


def test_the_strictest_policy_wins() -> None:
    daily, hourly, also_hourly = pol(name="daily"), pol(name="zz-hourly", rpo="1h"), pol(name="aa-hourly", rpo="1h")
    assert winning_policy([daily, hourly]) is hourly
    assert winning_policy([daily, hourly, also_hourly]) is also_hourly   # same RPO: name order
    assert winning_policy([daily, pol(name="off", rpo="1h", enabled=False)]) is daily
    assert winning_policy([]) is None


def test_toml_round_trip_and_errors() -> None:
    ps = [pol(window="daily 22:00-06:00", **{"keep-last": 3, "keep-daily": 7, "full-every": 7}),
          pol(name="web", vms="host:cna-0[1-4] !rule:template", schedule="cron 0 3 * * 1-5", rpo="2d")]
    text = policies_to_toml(ps)
    assert policies_from_toml(text) == ps
    assert ps[0].retention == Retention(keep_last=3, keep_daily=7)
    with pytest.raises(PolicyError, match="given twice: db"):
        policies_from_toml(text + '\n[[policy]]\nname = "db"\nvms = "x"\nschedule = "daily 01:00"\nrpo = "1d"\n')
    with pytest.raises(PolicyError, match="unknown setting.*keep-dialy"):
        policies_from_toml('[[policy]]\nname="a"\nvms="x"\nschedule="daily 01:00"\nrpo="1d"\nkeep-dialy=3\n')
    with pytest.raises(PolicyError, match="'rpo' is required"):
        policies_from_toml('[[policy]]\nname="a"\nvms="x"\nschedule="daily 01:00"\n')
    with pytest.raises(PolicyError, match="not valid TOML"):
        policies_from_toml("[[policy]\n")
    with pytest.raises(PolicyError, match="vms 're:\\[': "):
        pol(vms="re:[")
    with pytest.raises(PolicyError, match="keep-daily must be a whole number"):
        pol(**{"keep-daily": -1})


def test_store_add_edit_remove(tmp_path: object) -> None:
    store = PolicyStore(tmp_path / "policies.json")  # type: ignore[operator]
    assert store.all() == []
    p = store.add(pol(), now=100.0)
    assert p.created == 100.0
    with pytest.raises(PolicyError, match="exists already"):
        store.add(pol())
    store.replace(pol(rpo="12h", **{"keep-last": 2}))
    got = store.get("db")
    assert (got.rpo_s, got.retention.keep_last, got.created) == (43200, 2, 100.0)
    store.replace(pol(rpo="12h"))   # a removed setting is gone, not kept from before
    assert store.get("db").retention.keeps_all
    assert store.import_policies([pol(), pol(name="web")]) == (1, 1)
    store.remove("db")
    assert [p.name for p in store.all()] == ["web"]
    with pytest.raises(PolicyError, match="no policy named 'db'"):
        store.get("db")
