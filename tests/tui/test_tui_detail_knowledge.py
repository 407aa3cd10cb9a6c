"""The VM detail answers from what the console knows of backups (issue 15): after backups of a VM its
"next backup" is the plan ``b`` makes from the repository (incremental), not "no chain yet"."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import small_disks
from tests.jobs.test_jobs_runner import backup

from fctui.repo import Repository
from fctui.tui.screens import DetailScreen
from fctui.tui.testing import make_app, screen_text, wait_loaded, wait_until


@pytest.fixture
def sim_config() -> Any:
    return small_disks(0.005)



async def test_detail_after_two_backups_says_incremental(sim: Any, client: Any, edges: dict, dirs: dict) -> None:
    urn = edges["ready"][0]
    repo = Repository.open()
    try:
        for n in (1, 2):
            job, _ = await backup(client, repo, [urn], job_id=f"j{n}")
            assert job.state == "succeeded", job
        assert repo.latest_point(urn) is not None
    finally:
        repo.close()
    app = make_app(sim)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_loaded(pilot, app)
        app.push_screen(DetailScreen(urn))
        with contextlib.suppress(TimeoutError):  # on failure, the assertions below say what it showed
            await wait_until(pilot, lambda: "Next backup can be incremental" in screen_text(app), 10)
        text = screen_text(app)
        assert "no chain yet" not in text
        assert "Next backup can be incremental" in text


async def test_detail_follows_a_backup_that_ends_while_it_is_open(sim: Any, client: Any, edges: dict,
                                                                   dirs: dict, tmp_path: Path) -> None:
    from fctui.agent import AgentClient
    from fctui.tui.jobs_screen import jobs_service
    urn = edges["ready"][0]
    app = make_app(sim)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_loaded(pilot, app)
        svc = jobs_service(app, agent=AgentClient(tmp_path / "no-agent.sock"), start_agent=False)
        app.push_screen(DetailScreen(urn))
        await wait_until(pilot, lambda: urn in app.backup_points)
        assert "no chain yet" in screen_text(app)
        repo = Repository.open()
        try:
            job, _ = await backup(client, repo, [urn])
        finally:
            repo.close()
        assert job.state == "succeeded", job
        svc.apply_event({"event": "job", "job": job.to_dict()})   # as the agent reports its end
        with contextlib.suppress(TimeoutError):
            await wait_until(pilot, lambda: "Next backup can be incremental" in screen_text(app), 10)
        assert "no chain yet" not in screen_text(app)
