"""Job events refresh the snapshot trees of the VMs they touch (issue 15, bug 4): a backup deletes its
snapshot before it ends, so once the agent reports the end the VM's detail no longer lists that snapshot
and its row does not call it a leftover, without waiting for the next refresh."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import small_disks
from tests.jobs.test_jobs_runner import backup

from fctui.agent import AgentClient
from fctui.repo import Repository
from fctui.tui.jobs_screen import jobs_service
from fctui.tui.screens import DetailScreen
from fctui.tui.testing import make_app, screen_text, wait_loaded, wait_until

LEFTOVER = "leftover-backup-snapshot"


@pytest.fixture
def sim_config() -> Any:
    return small_disks(0.005)



async def test_detail_drops_the_snapshot_a_finished_backup_deleted(sim: Any, client: Any, edges: dict,
                                                                    dirs: dict, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    urn = edges["ready"][0]
    # The backup stops right after its snapshot exists (before it reads the snapshot's detail) until
    # the test lets it go on: a refresh of the console sees the snapshot meanwhile.
    taken, go_on = asyncio.Event(), asyncio.Event()
    read_detail = client.snapshot

    async def held(uri: str) -> Any:
        if not go_on.is_set():
            taken.set()
            await go_on.wait()
        return await read_detail(uri)
    monkeypatch.setattr(client, "snapshot", held)

    app = make_app(sim)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_loaded(pilot, app)
        svc = jobs_service(app, agent=AgentClient(tmp_path / "no-agent.sock"), start_agent=False)
        repo = Repository.open()
        try:
            run = asyncio.create_task(backup(client, repo, [urn], sink=svc.apply_event))  # as the agent streams
            await asyncio.wait_for(taken.wait(), 10)
            app.refresh_now()                       # a refresh while the job runs sees its snapshot
            await wait_loaded(pilot, app, refreshes=2)
            name = next(n.name for n in app.snapshots[urn].walk() if n.name.startswith("fctui-"))
            app.push_screen(DetailScreen(urn))
            await wait_until(pilot, lambda: name in screen_text(app))
            go_on.set()
            job, _ = await asyncio.wait_for(run, 20)
        finally:
            repo.close()
        assert job.state == "succeeded", job
        assert not any(n.name == name for n in (await client.snapshot_tree(app.vms[urn].uri)).walk())
        with contextlib.suppress(TimeoutError):   # on failure, the assertions below say what it showed
            await wait_until(pilot, lambda: name not in screen_text(app) and "Snapshots" in screen_text(app), 5)
        text = screen_text(app)
        assert "Snapshots" in text
        assert name not in text
        assert LEFTOVER not in app.store.rows[urn].rules
        assert LEFTOVER not in [f.rule for f in app.assessment(urn).findings]
