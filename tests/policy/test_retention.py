"""PBS-style retention: which restore points keep-last/-hourly/-daily/-weekly/-monthly/-yearly keep.

The acceptance table of issue #16 for retention. Every expected keep list below is worked out by hand from
the point times, following Proxmox Backup Server's prune (docs: "Maintenance Tasks / Pruning" and the prune
simulator's documentation; the rules are processed in the order last, hourly, daily, weekly, monthly, yearly,
each only considering points earlier rules left, newest first; periods in local time; weeks are ISO weeks).
The reasoning for each case is written next to it.

Calendar facts used (checked by hand): 2026-01-05 is a Monday (2026-W02); 2026-01-01 is a Thursday, so
2026 has 53 ISO weeks and 2026-W01 is 2025-12-29..2026-01-04; 2026-12-28 is a Monday and 2026-12-28..
2027-01-03 is 2026-W53; 2027-W01 is 2027-01-04..2027-01-10; 2025-12-27 (Saturday) is in 2025-W52;
2026-06-29 is a Monday and 2026-06-29..2026-07-05 is 2026-W27; 2026-03-30 is a Monday (2026-W14).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

import pytest

from fctui.repo.retention import Retention, select

UTC = timezone.utc
UTC_PLUS_8 = timezone(timedelta(hours=8), "UTC+8")   # no DST: China Standard Time


@dataclass(frozen=True)
class Pt:
    id: str
    created: float


def pts(tz: tzinfo, *local_times: str) -> list[Pt]:
    """Points named by their local wall time ("2026-01-05 10:00") in ``tz``, handed over shuffled (select
    must not rely on the order it gets)."""
    out = [Pt(t, datetime.strptime(t, "%Y-%m-%d %H:%M").replace(tzinfo=tz).timestamp()) for t in local_times]
    random.Random(len(out)).shuffle(out)
    return out


# (case, tz, retention, point local times, expected {kept point: rule}) -- every point not named is removed.
CASES = [
    pytest.param(
        UTC, Retention(keep_last=3),
        ["2026-01-01 10:00", "2026-01-02 10:00", "2026-01-03 10:00", "2026-01-04 10:00", "2026-01-05 10:00"],
        # the three newest
        {"2026-01-05 10:00": "last", "2026-01-04 10:00": "last", "2026-01-03 10:00": "last"},
        id="keep-last-only"),
    pytest.param(
        UTC, Retention(keep_last=9),
        ["2026-01-01 10:00", "2026-01-02 10:00"],
        # fewer points than N: all kept
        {"2026-01-01 10:00": "last", "2026-01-02 10:00": "last"},
        id="keep-last-more-than-there-are"),
    pytest.param(
        UTC, Retention(keep_daily=2),
        ["2026-01-05 08:00", "2026-01-05 14:00", "2026-01-05 20:00", "2026-01-04 09:00", "2026-01-04 21:00",
         "2026-01-03 12:00"],
        # newest first: 05 20:00 opens day 05 (kept), 05 14:00 and 05 08:00 are later points of day 05
        # (removed); 04 21:00 opens day 04 (kept, 2 days now), 04 09:00 removed; 03 12:00 would be a third
        # day: the rule stops, nothing keeps it
        {"2026-01-05 20:00": "daily 2026-01-05", "2026-01-04 21:00": "daily 2026-01-04"},
        id="daily-several-per-day"),
    pytest.param(
        UTC, Retention(keep_hourly=2),
        ["2026-01-05 10:05", "2026-01-05 10:40", "2026-01-05 11:10", "2026-01-05 11:50", "2026-01-05 12:30"],
        # 12:30 opens hour 12, 11:50 opens hour 11 (2 hours); 11:10 is in hour 11 (removed); 10:40 would
        # be a third hour: stop
        {"2026-01-05 12:30": "hourly 2026-01-05 12:00", "2026-01-05 11:50": "hourly 2026-01-05 11:00"},
        id="hourly"),
    pytest.param(
        UTC, Retention(keep_weekly=3),
        ["2026-12-21 12:00", "2026-12-27 12:00", "2026-12-29 12:00", "2026-12-31 12:00", "2027-01-01 12:00",
         "2027-01-03 12:00", "2027-01-04 12:00", "2027-01-07 12:00", "2027-01-10 12:00"],
        # ISO weeks: 01-10, 01-07, 01-04 are 2027-W01; 01-03, 01-01 (a Friday of calendar year 2027),
        # 12-31, 12-29 are 2026-W53; 12-27 (Sunday) and 12-21 (Monday) are 2026-W52.
        # newest first: 01-10 opens W01; 01-07, 01-04 removed; 01-03 opens 2026-W53; 01-01, 12-31, 12-29
        # removed; 12-27 opens 2026-W52 (3 weeks); 12-21 is a later point of W52: removed
        {"2027-01-10 12:00": "weekly 2027-W01", "2027-01-03 12:00": "weekly 2026-W53",
         "2026-12-27 12:00": "weekly 2026-W52"},
        id="weekly-across-iso-year-boundary"),
    pytest.param(
        UTC, Retention(keep_monthly=2, keep_yearly=2),
        ["2024-06-15 12:00", "2024-11-20 12:00", "2025-03-10 12:00", "2025-12-05 12:00", "2025-12-20 12:00",
         "2026-01-10 12:00", "2026-02-01 12:00", "2026-02-14 12:00"],
        # monthly: 02-14 opens 2026-02, 02-01 removed, 01-10 opens 2026-01 (2 months), 2025-12-20 would be a
        # third: stop. yearly: 2026 already holds kept points (skipped, not counted); 2025-12-20 opens 2025,
        # 2025-12-05 and 2025-03-10 removed, 2024-11-20 opens 2024 (2 years), 2024-06-15 removed
        {"2026-02-14 12:00": "monthly 2026-02", "2026-01-10 12:00": "monthly 2026-01",
         "2025-12-20 12:00": "yearly 2025", "2024-11-20 12:00": "yearly 2024"},
        id="monthly-and-yearly"),
    pytest.param(
        UTC, Retention(keep_last=2, keep_daily=3, keep_weekly=2),
        ["2026-01-14 18:00", "2026-01-14 09:00", "2026-01-13 20:00", "2026-01-13 08:00", "2026-01-12 10:00",
         "2026-01-10 10:00", "2026-01-08 10:00", "2026-01-03 10:00", "2026-01-02 10:00", "2025-12-27 10:00"],
        # last: the two of the 14th. daily: day 14 is held by them (not counted); 13 20:00 opens the 13th,
        # 13 08:00 removed, 12 10:00 opens the 12th, 10 10:00 opens the 10th (3 days), 08 would be a 4th: stop.
        # weekly: weeks held by kept points are 2026-W03 (12th-14th) and 2026-W02 (10th); 08 is in W02: passed
        # over; 03 opens 2026-W01, 02 removed, 2025-12-27 opens 2025-W52 (2 weeks). 08 is left: removed
        {"2026-01-14 18:00": "last", "2026-01-14 09:00": "last", "2026-01-13 20:00": "daily 2026-01-13",
         "2026-01-12 10:00": "daily 2026-01-12", "2026-01-10 10:00": "daily 2026-01-10",
         "2026-01-03 10:00": "weekly 2026-W01", "2025-12-27 10:00": "weekly 2025-W52"},
        id="last2-daily3-weekly2-interact"),
    pytest.param(
        UTC, Retention(keep_weekly=1, keep_monthly=3),
        ["2026-05-15 12:00", "2026-06-30 12:00", "2026-07-02 12:00"],
        # weekly: 07-02 (Thu) opens 2026-W27; 06-30 (Tue, June) is in W27 too: removed BY the weekly rule,
        # so monthly may not take it for June; 05-15 would be a second week: stop.
        # monthly: July held; 06-30 already marked; 05-15 opens 2026-05
        {"2026-07-02 12:00": "weekly 2026-W27", "2026-05-15 12:00": "monthly 2026-05"},
        id="removed-by-a-rule-stays-removed"),
    pytest.param(
        UTC, Retention(keep_last=1, keep_weekly=1, keep_monthly=2),
        ["2026-06-30 12:00", "2026-07-02 12:00"],
        # last: 07-02. weekly: 06-30's week W27 is held by 07-02: passed over but NOT marked. monthly: July
        # held; 06-30 opens June
        {"2026-07-02 12:00": "last", "2026-06-30 12:00": "monthly 2026-06"},
        id="passed-over-is-left-for-later-rules"),
    pytest.param(
        UTC_PLUS_8, Retention(keep_daily=2),
        ["2026-03-08 12:00", "2026-03-09 12:00", "2026-03-09 23:59", "2026-03-10 00:00"],
        # local days: 03-10 00:00 opens the 10th, 09 23:59 opens the 9th, 09 12:00 removed, 08 would be a
        # third day. (In UTC 03-10 00:00 is 03-09 16:00, the same day as the other two of the 9th.)
        {"2026-03-10 00:00": "daily 2026-03-10", "2026-03-09 23:59": "daily 2026-03-09"},
        id="midnight-in-utc+8"),
    pytest.param(
        UTC, Retention(),
        ["2026-01-01 10:00", "2026-01-01 10:30", "2020-01-01 10:00"],
        {"2026-01-01 10:00": "keep all", "2026-01-01 10:30": "keep all", "2020-01-01 10:00": "keep all"},
        id="keep-all"),
]


@pytest.mark.parametrize("tz, retention, times, expected", CASES)
def test_select_keeps_what_pbs_keeps(tz: tzinfo, retention: Retention, times: list[str],
                                     expected: dict[str, str]) -> None:
    plan = select(pts(tz, *times), retention, tz)
    newest_first = sorted(times, reverse=True)   # the names sort as the times do
    assert plan.keep == [t for t in newest_first if t in expected]
    assert plan.remove == [t for t in newest_first if t not in expected]
    assert plan.why == expected


def test_midnight_monday_across_dst_in_berlin() -> None:
    try:
        from zoneinfo import ZoneInfo
        berlin = ZoneInfo("Europe/Berlin")
    except Exception:   # no time zone database on this machine
        pytest.skip("no tz database for Europe/Berlin")
    # 2026-03-29 is a Sunday, the day Berlin moves from UTC+1 to UTC+2. Monday 03-30 00:00 local opens
    # 2026-W14; 03-29 23:30 opens W13 (2 weeks), 03-29 08:00 is a later point of W13, 03-21 would be a
    # third week. (In UTC 03-30 00:00 is Sunday 22:00, in W13 with the other two.)
    times = ["2026-03-21 12:00", "2026-03-29 08:00", "2026-03-29 23:30", "2026-03-30 00:00"]
    plan = select(pts(berlin, *times), Retention(keep_weekly=2), berlin)
    assert plan.why == {"2026-03-30 00:00": "weekly 2026-W14", "2026-03-29 23:30": "weekly 2026-W13"}
    assert plan.remove == ["2026-03-29 08:00", "2026-03-21 12:00"]


def test_nothing_to_select() -> None:
    plan = select([], Retention(keep_last=1, keep_daily=3), UTC)
    assert (plan.keep, plan.remove, plan.why) == ([], [], {})


def test_the_newest_point_always_stays() -> None:
    # Any retention that keeps something keeps the newest point (the first rule in use takes it): a policy's
    # prune can never leave a VM without a restore point.
    times = ["2026-01-01 10:00", "2026-02-01 10:00", "2026-03-01 10:00"]
    for key in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"):
        plan = select(pts(UTC, *times), Retention(**{key: 1}), UTC)
        assert plan.keep[:1] == ["2026-03-01 10:00"], key
