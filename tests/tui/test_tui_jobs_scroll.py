"""Issue 15 bug 6: the jobs detail scrolls from the keyboard at 80x24 while the job list keeps the focus
(PgDn, End, Home, PgUp; Down/Up past the list's ends), and up/down still move between jobs."""

from __future__ import annotations

from fctui.jobs.model import VmProgress
from fctui.tui.jobs_screen import JobList, JobsScreen

from .test_tui_jobs_screens import MIB, disk, failed_job, jobs_app, running_job


def long_job():
    """A running job with more VMs and disks than 80x24 shows."""
    job = running_job()
    for n in range(6):
        vm = VmProgress(urn=f"urn:sites:1:vms:i-x{n}", name=f"extra-{n:02d}", host="cna-03", kind="cbt",
                        state="queued")
        vm.disks = [disk(f"urn:vx{n}-{i}", f"disk{i}", "full", "waiting", 64 * MIB) for i in range(3)]
        job.vms.append(vm)
    return job


async def test_detail_scrolls_by_keys_at_80x24_with_the_list_focused():
    app = jobs_app([long_job()])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, JobsScreen)
        assert isinstance(app.focused, JobList)
        view = screen.query_one("#job-detail-scroll")
        assert view.max_scroll_y > 0 and view.scroll_y == 0
        await pilot.press("pagedown")
        await pilot.pause()
        assert view.scroll_y > 0
        await pilot.press("end")
        await pilot.pause()
        assert view.scroll_y == view.max_scroll_y
        await pilot.press("home")
        await pilot.pause()
        assert view.scroll_y == 0
        await pilot.press("down")      # the only job: Down moves the detail
        await pilot.pause()
        assert view.scroll_y == 1
        await pilot.press("up")
        await pilot.pause()
        assert view.scroll_y == 0
        assert isinstance(app.focused, JobList)


async def test_down_still_moves_between_jobs():
    app = jobs_app([long_job(), failed_job()])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        jl = app.screen.query_one(JobList)
        first = jl.cursor_id
        await pilot.press("down")
        await pilot.pause()
        assert jl.cursor_id != first and jl.cursor_id == jl.order[-1]
        await pilot.press("up")
        await pilot.pause()
        assert jl.cursor_id == first
