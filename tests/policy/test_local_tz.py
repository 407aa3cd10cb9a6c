"""The machine's time zone for schedules (jobs.protection.local_tz): daylight saving included, so a run at
"daily 01:00" stays at 01:00 on both sides of a change (a fixed offset of today would move it by an hour)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from fctui.jobs.policy import policy_from_mapping
from fctui.jobs.protection import local_tz, next_run


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# 2026-03-29 01:00 UTC is 02:00 CET -> 03:00 CEST in Berlin
CHANGE = 1774746000.0


@pytest.mark.parametrize("ts, wall, offset_h", [
    (CHANGE - 3600, "2026-03-29 01:00", 1),     # 00:00 UTC, CET
    (CHANGE + 3600, "2026-03-29 04:00", 2),     # 02:00 UTC, CEST
    (1750000000.0, "2025-06-15 17:06", 2),      # summer
    (1767225600.0, "2026-01-01 01:00", 1),      # winter
])
def test_local_times_and_offsets(berlin, ts: float, wall: str, offset_h: int) -> None:
    at = datetime.fromtimestamp(ts, local_tz())
    assert at.strftime("%Y-%m-%d %H:%M") == wall
    assert at.utcoffset() == timedelta(hours=offset_h)
    assert at.timestamp() == ts


def test_a_daily_run_stays_at_its_local_time_across_the_change(berlin) -> None:
    p = policy_from_mapping({"name": "n", "vms": "re:.", "schedule": "daily 01:00", "rpo": "24h"})
    # Saturday 2026-03-28 12:00 CET (11:00 UTC): next run Sunday 01:00 CET = 00:00 UTC
    assert next_run(p, 1774695600.0, local_tz()) == 1774742400.0
    # Sunday 12:00 CEST (10:00 UTC): next run Monday 01:00 CEST = Sunday 23:00 UTC
    assert next_run(p, 1774778400.0, local_tz()) == 1774825200.0
