"""A running or queued job's own snapshot is not a leftover (issue 15): the console counts the
snapshots the agent's jobs report (``vm.snapshot_urn``) as owned, in the row and in the detail, and a
snapshot left behind once the job ended is a leftover again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fctui.agent import AgentClient
from fctui.tui.jobs_screen import jobs_service
from fctui.tui.screens import DetailScreen
from fctui.tui.testing import make_app, screen_text, wait_loaded, wait_until

RULE = "leftover-backup-snapshot"



def job_event(state: str, vm_urn: str, snapshot_urn: str) -> dict[str, Any]:
    return {"event": "job", "job": {"id": "j1", "kind": "backup", "state": state, "targets": [vm_urn],
                                    "vms": [{"urn": vm_urn, "name": "vm", "state": "reading" if state == "running"
                                             else state, "snapshot_urn": snapshot_urn}]}}


async def test_running_jobs_snapshot_is_not_a_leftover(dirs: dict) -> None:
    app = make_app(vms=30)
    urn = app.sim.edge_cases[RULE][0]  # type: ignore[attr-defined]
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_loaded(pilot, app)
        assert RULE in app.store.rows[urn].rules       # as our snapshot with no job: a leftover
        tree = app.snapshots[urn]
        snap = next(n.urn for n in tree.walk() if n.name.startswith("fctui-"))
        svc = jobs_service(app, agent=AgentClient(Path(dirs["FCTUI_DATA_DIR"]).parent / "no-agent.sock"), start_agent=False)

        svc.apply_event(job_event("running", urn, snap))
        await pilot.pause()
        assert RULE not in app.store.rows[urn].rules
        assert RULE not in [f.rule for f in app.assessment(urn).findings]
        app.push_screen(DetailScreen(urn))
        await wait_until(pilot, lambda: "Findings" in screen_text(app))
        assert "owned by no restore point or running job" not in screen_text(app)
        app.pop_screen()

        # a refresh while the job runs runs the rules without the jobs: still not a leftover
        app.refresh_now()
        await wait_loaded(pilot, app, refreshes=2)
        assert RULE not in app.store.rows[urn].rules

        # the job ended and its snapshot is still there: a leftover again
        svc.apply_event(job_event("failed", urn, snap))
        await pilot.pause()
        assert RULE in app.store.rows[urn].rules
