"""When a policy's next runs start (fctui.jobs.protection.run_starts / next_run): a scheduled time whose
window is closed waits for the opening -- also one already past when the window has not opened yet."""

from __future__ import annotations

from datetime import datetime, timezone

from fctui.jobs.policy import policy_from_mapping
from fctui.jobs.protection import next_run, run_starts

UTC = timezone.utc


def ts(day: int, hh: int, mm: int = 0) -> float:
    return datetime(2026, 1, day, hh, mm, tzinfo=UTC).timestamp()   # 2026-01-05 is a Monday


def pol(**kw: object):
    base: dict[str, object] = {"name": "p", "vms": "re:.", "rpo": "1d"}
    base.update(kw)
    return policy_from_mapping(base)


def test_a_past_time_waiting_for_its_window_is_the_next_run() -> None:
    p = pol(schedule="cron 0 12 * * *", window="daily 22:00-06:00")
    # Monday 12:30: the noon run is due and waits for 22:00 the same day
    assert run_starts(p, ts(5, 12, 30), UTC, 3) == [ts(5, 22), ts(6, 22), ts(7, 22)]
    assert next_run(p, ts(5, 12, 30), UTC) == ts(5, 22)
    # Monday 23:00: that run started at 22:00; the next is Tuesday's
    assert next_run(p, ts(5, 23), UTC) == ts(6, 22)


def test_times_waiting_for_one_opening_are_one_run() -> None:
    p = pol(schedule="cron 0 * * * *", window="daily 22:00-06:00")   # hourly
    # Monday 10:10: 10:00 .. 21:00 all wait for 22:00; then 23:00, 00:00 start at their time
    assert run_starts(p, ts(5, 10, 10), UTC, 3) == [ts(5, 22), ts(5, 23), ts(6, 0)]


def test_inside_the_window_or_without_one_a_run_starts_at_its_time() -> None:
    p = pol(schedule="mon-fri 01:00,03:00", window="daily 22:00-06:00")
    assert run_starts(p, ts(9, 2), UTC, 3) == [ts(9, 3), ts(12, 1), ts(12, 3)]   # Friday 02:00 -> Monday
    assert run_starts(pol(schedule="daily 01:00"), ts(5, 1), UTC, 2) == [ts(6, 1), ts(7, 1)]   # strictly after
    assert next_run(pol(schedule="daily 01:00", enabled=False), ts(5, 0), UTC) is None
