"""Issue 15 bug 8 on recorded job records: a finished overwrite restore (recorded before restores planned
their read-back: bytes_planned None, 1 GiB read) never shows "planning", "planned ?" or "of 0 B"; a job that
ended before any plan says so instead of "planning"."""

from __future__ import annotations

from fctui.jobs.model import DiskProgress, JobRecord, VmProgress
from fctui.jobs.progress import JobsBoard
from fctui.tui.jobs_screen import render_job_detail, render_job_row

GIB = 1 << 30
NOW = 1_780_000_000.0


def recorded_overwrite() -> JobRecord:
    job = JobRecord(id="20260528-1300-rr01", type="restore", state="succeeded", created=NOW - 120,
                    started=NOW - 110, finished=NOW - 20, targets=["20260528T1200Z-01"],
                    restore_points=["20260528T1200Z-01"])
    vm = VmProgress(urn="urn:sites:1:vms:i-9", name="edge-ready-euleros-02", kind="cbt", state="done",
                    point_id="20260528T1200Z-01")
    vm.disks = [DiskProgress(volume="urn:v9", name="disk0", mode="differing", state="done", bytes_planned=None,
                             bytes_read=GIB, bytes_written=8 << 20)]
    job.vms = [vm]
    return job


def figures(job: JobRecord):
    board = JobsBoard(lambda: 0.0)
    board.apply({"event": "job", "job": job.to_dict()})
    fig = board.figures(job.id)
    assert fig is not None
    return fig


def test_finished_overwrite_restore_shows_its_bytes_not_planning():
    job = recorded_overwrite()
    assert job.totals()["bytes_planned"] == GIB      # `fctui jobs`: "read 1.0 GiB of 1.0 GiB"
    fig = figures(job)
    assert fig.planned == GIB and fig.fraction == 1.0
    text = render_job_detail(job, fig, now=NOW).plain
    assert "planning" not in text and "planned ?" not in text
    assert "100 %" in text and "planned 1.0 GiB" in text
    assert "1.0GiB/1.0GiB" in text
    row = render_job_row(job, fig, 120, False).plain
    assert "restore" in row


def test_job_that_ended_before_any_plan_does_not_say_planning():
    job = JobRecord(id="20260528-1310-bb09", state="failed", created=NOW - 60, started=NOW - 55, finished=NOW - 50,
                    targets=["app-03"], error="app-03: the VRM refused the snapshot")
    vm = VmProgress(urn="urn:sites:1:vms:i-3", name="app-03", kind="cbt", state="failed")
    vm.disks = [DiskProgress(volume="urn:v5", name="disk1", mode="full", state="waiting", bytes_planned=None)]
    job.vms = [vm]
    text = render_job_detail(job, figures(job), now=NOW).plain
    assert "planning" not in text and "planned ?" not in text


def test_byte_figures_fit_80_columns_without_splitting_a_figure():
    """At 80x24 the one figures line wrapped inside a figure ("zero 0" / "B"): each line of figures fits
    the detail's width (78 cells inside its padding) even with the widest sizes."""
    job = recorded_overwrite()
    big = 1023 * (1 << 40) + 1     # "1023.0 TiB": the widest a binary size prints
    job.vms[0].disks[0] = DiskProgress(volume="urn:v9", name="disk0", mode="full", state="done", bytes_planned=big,
                                       bytes_read=big, bytes_written=big, bytes_reused=big, bytes_zero=big,
                                       bytes_stored=big)
    text = render_job_detail(job, figures(job), now=NOW).plain
    lines = [ln for ln in text.splitlines() if ln.startswith(("planned ", "reused "))]
    assert len(lines) == 2 and all(len(ln) <= 78 for ln in lines), lines
    assert "stored 1023.0 TiB" in lines[1]


def recorded_rehearsal() -> JobRecord:
    """A rehearsal as the agent records it: one VM up with its times, one that did not boot."""
    from fctui.jobs.dr import VmRecovery
    from fctui.jobs.drrun import vm_recovery_text
    job = JobRecord(id="20260528-1400-dr01", type="rehearsal", state="failed", created=NOW - 300,
                    started=NOW - 290, finished=NOW - 200, targets=["erp"], error="1 of 2 VM(s) not recovered")
    up = VmRecovery("urn:sites:1:vms:i-1", "erp-db", "db", state="running", restore_s=7.0, boot_s=22.0, rto_s=29.0)
    down = VmRecovery("urn:sites:1:vms:i-2", "erp-app", "others", state="failed",
                      error="did not boot: VM Tools not running 2 min 00 s after power-on")
    job.vms = [VmProgress(urn=up.vm_urn, name=up.vm_name, state="done", reason=vm_recovery_text(up)),
               VmProgress(urn=down.vm_urn, name=down.vm_name, state="failed", reason=vm_recovery_text(down))]
    return job


def test_a_rehearsal_shows_its_vms_and_times_not_bytes():
    """A rehearsal's bytes are not totalled (its restores report to the run): no "read 0 B", no bottleneck,
    no "ended before any bytes were planned", but each VM's state and measured times, in the screen and in
    `fctui jobs`."""
    from fctui.cli.jobs import _job_line, format_job
    from fctui.jobs.progress import job_summary
    job = recorded_rehearsal()
    text = render_job_detail(job, figures(job), now=NOW).plain
    assert "erp-db  running · restore 7 s · boot 22 s · RTO 29 s" in text
    assert "erp-app  failed: did not boot: VM Tools not running 2 min 00 s after power-on" in text
    assert "recovery plan erp" in text
    for noise in ("0 B", "bottleneck", "planned", "ended before any bytes"):
        assert noise not in text
    row = render_job_row(job, figures(job), 120, False).plain
    assert "rehearsal" in row and "1/2 VM(s) up" in row and "0 B" not in row
    assert job_summary(job).startswith("rehearsal failed · 1/2 VM(s) up · in 1 min 30 s")
    job.state, job.finished = "running", None
    row = render_job_row(job, figures(job), 120, False).plain
    assert "1/2 VM(s) up" in row and "%" not in row
    assert "plan erp: 1 up" in _job_line(job) and "read" not in _job_line(job)
    assert "  erp-db: running · restore 7 s · boot 22 s · RTO 29 s" in format_job(job)
