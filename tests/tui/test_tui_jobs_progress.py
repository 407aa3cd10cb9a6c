"""The headless job figures behind the jobs screen: rates on an injected clock, the honest ETA, the
sparkline, the bottleneck verdict and how agent events fold into job records."""

from __future__ import annotations

import pytest

from fctui.jobs.model import DiskProgress, JobRecord, VmProgress
from fctui.jobs.progress import (ETA_MIN_FRACTION, JobsBoard, StageClock, bar, disk_line_state, find_bottleneck,
                                 honest_eta, human_bytes, sparkline)

MIB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def job_dict(job_id: str = "j1", planned: int | None = 1000 * MIB, state: str = "running") -> dict:
    job = JobRecord(id=job_id, state=state, created=1.0, started=2.0, targets=["web-01"])
    vm = VmProgress(urn="urn:sites:1:vms:i-1", name="web-01", host="cna-01", kind="cbt", state="reading")
    vm.disks = [DiskProgress(volume="urn:v1", name="disk1", mode="incremental", state="reading",
                             bytes_planned=planned),
                DiskProgress(volume="urn:v2", name="disk2", mode="full", state="waiting", bytes_planned=0),
                DiskProgress(volume="urn:v3", name="disk3", mode="excluded", state="excluded",
                             reason="independent disk")]
    job.vms = [vm]
    return job.to_dict()


def progress(read: int, written: int = 0) -> dict:
    return {"event": "progress", "job": "j1", "vm": "urn:sites:1:vms:i-1", "volume": "urn:v1", "state": "reading",
            "bytes_planned": 1000 * MIB, "bytes_read": read, "bytes_written": written, "bytes_reused": 0,
            "bytes_zero": 0, "bytes_stored": written // 2}


@pytest.mark.parametrize("seconds,text", [
    (None, ""), (-1, ""), (5, "a minute or less"), (60, "a minute or less"), (61, "about 2 min"),
    (239, "about 4 min"), (25 * 60 + 40, "about 25 min"), (12 * 60 + 10, "about 10 min"),
    (80 * 60, "about 1 h 20 min"), (120 * 60 + 100, "about 2 h"),
])
def test_honest_eta(seconds, text):
    assert honest_eta(seconds) == text


def test_formatting_helpers():
    assert human_bytes(0) == "0 B" and human_bytes(1) == "1 B" and human_bytes(1536) == "1.5 KiB" and human_bytes(None) == "?"
    assert bar(0.5, 10) == "━" * 5 + "─" * 5 and bar(None, 4) == "────"
    assert sparkline([0, 1, 2, 4], 4) == "▁▃▅█"
    assert sparkline([1, 2, 3], 2) == "▆█"          # only the newest values that fit
    assert sparkline([0, 0], 5) == "▁▁"


def test_rates_eta_hidden_below_five_percent_then_shown():
    clock = Clock()
    board = JobsBoard(clock)
    board.apply({"event": "job", "job": job_dict()})
    board.apply(progress(0))
    clock.t += 1
    board.apply(progress(int(0.04 * 1000 * MIB), 10 * MIB))
    fig = board.figures("j1")
    assert fig.fraction == pytest.approx(0.04)
    assert fig.read_rate == pytest.approx(40 * MIB)
    # written bytes (not stored ones) over the same second on the injected clock: exactly 10 MiB/s
    assert fig.write_rate == pytest.approx(10 * MIB)
    assert fig.eta_text == ""                        # below 5 %: no ETA at all
    for _ in range(5):
        clock.t += 1
        board.apply(progress(fig.read + 40 * MIB))
        fig = board.figures("j1")
    assert fig.fraction > ETA_MIN_FRACTION
    # 760 MiB left at 40 MiB/s = 19 s
    assert fig.eta_s == pytest.approx((1000 * MIB - fig.read) / fig.read_rate)
    assert fig.eta_text == "a minute or less"
    assert fig.planned == 1000 * MIB and len(fig.history) >= 5


def test_no_eta_until_every_disk_is_planned():
    clock = Clock()
    board = JobsBoard(clock)
    d = job_dict(planned=None)
    board.apply({"event": "job", "job": d})
    fig = board.figures("j1")
    assert fig.planned == 0 and fig.unplanned == 1 and fig.eta_text == ""
    d["vms"][0]["disks"][1]["bytes_planned"] = None
    board.apply({"event": "job", "job": d})
    fig = board.figures("j1")
    assert fig.planned is None and fig.fraction is None and fig.unplanned == 2
    # the first disk gets planned and read fast, the second is still unknown: progress yes, ETA no
    for i in range(1, 4):
        clock.t += 1
        board.apply(progress(i * 100 * MIB))
    fig = board.figures("j1")
    assert fig.fraction == pytest.approx(0.3) and fig.read_rate > 0 and fig.eta_text == ""


def test_job_events_keep_the_log_and_end_notifies_once():
    board = JobsBoard(Clock())
    board.apply({"event": "job", "job": job_dict()})
    board.apply({"event": "log", "job": "j1", "time": 3.0, "level": "info", "message": "snapshot ready"})
    board.apply({"event": "job", "job": job_dict()})            # job events carry no log
    assert [e["message"] for e in board.get("j1").log] == ["snapshot ready"]
    final = job_dict(state="failed")
    final["error"] = "web-01: the VM changed state"
    _, notice = board.apply({"event": "job", "job": final})
    assert notice is not None and notice.state == "failed" and "the VM changed state" in notice.summary
    _, again = board.apply({"event": "end", "job": "j1", "state": "failed"})
    assert again is None                                         # already final: no second notification
    assert board.figures("j1").eta_text == ""


def test_reattach_snapshot_of_a_finished_job_does_not_notify():
    board = JobsBoard(Clock())
    _, notice = board.apply({"event": "job", "job": job_dict(state="succeeded")})
    assert notice is None
    assert board.ordered()[0].id == "j1"


def test_unknown_events_and_jobs_are_ignored():
    board = JobsBoard(Clock())
    assert board.apply({"event": "progress", "job": "nope"}) == (None, None)
    assert board.apply({"event": "weird"}) == (None, None)
    assert board.figures("nope") is None


def test_bottleneck_from_stage_timings_scheduler_or_unknown():
    job = JobRecord.from_dict(job_dict())
    assert not find_bottleneck(job).known
    b = find_bottleneck(job, {"read": 1.0, "hash": 6.0, "write": 1.0})
    assert b.stage == "hash" and "hashing/compression" in b.label and "75 %" in b.label
    job.vms[0].state, job.vms[0].reason = "waiting", "host-sockets-busy: cna-01 has 8 backup resources"
    b = find_bottleneck(job)
    assert b.stage == "scheduler" and "host-sockets-busy" in b.label


def test_stage_clock_sums_busy_time_per_stage():
    t = [0.0]
    sc = StageClock(clock=lambda: t[0])
    with sc.stage("read"):
        t[0] += 2.0
    sc.add("write", 0.5)
    assert sc.as_event() == {"read": 2.0, "hash": 0.0, "write": 0.5}
    with pytest.raises(ValueError):
        sc.add("network", 1)


def test_busy_from_progress_events_names_the_bottleneck():
    board = JobsBoard(Clock())
    board.apply({"event": "job", "job": job_dict()})
    ev = progress(10 * MIB)
    ev["busy"] = {"read": 9.0, "hash": 2.0, "write": 1.0}
    board.apply(ev)
    assert board.figures("j1").bottleneck.stage == "read"


def test_disk_wait_reasons():
    job = JobRecord.from_dict(job_dict())
    vm = job.vms[0]
    assert disk_line_state(vm, vm.disks[1]) == "waiting (previous disk of the VM)"
    assert disk_line_state(vm, vm.disks[2]) == "excluded"
    vm.disks[1].wait_reason = "target-volumes-busy"
    assert disk_line_state(vm, vm.disks[1]) == "waiting (target-volumes-busy)"
