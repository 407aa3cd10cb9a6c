"""Regenerate screenshots/*.svg: the console against the seeded simulator, headless, deterministic.

    .venv/bin/python screenshots/make_screenshots.py      (or: make screenshots)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Awaitable, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["FCTUI_CONFIG_DIR"] = tempfile.mkdtemp(prefix="fctui-shots-")   # never the user's config
# nor the user's policies and repository (the Protected column and the detail read them)
os.environ["FCTUI_DATA_DIR"] = tempfile.mkdtemp(prefix="fctui-shots-data-")
os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from fctui.config import Config  # noqa: E402
from fctui.tui.app import FctuiApp  # noqa: E402
from fctui.tui.testing import FixedClock, make_app, wait_loaded, wait_until  # noqa: E402

OUT = Path(__file__).resolve().parent


async def settle(pilot, app: FctuiApp) -> None:
    await wait_loaded(pilot, app)
    app.clear_notifications()
    key = app._table_cursor()
    if key:
        app.show_detail(key, now=True)
        if app.size.width >= 120:
            await wait_until(pilot, lambda: key in app.snapshots or key in app.snapshot_errors)
    await pilot.pause(0.2)


async def shot(name: str, size: tuple[int, int], drive: Callable[[object, FctuiApp], Awaitable[None]],
               *, theme: str | None = None, first_run: bool = False) -> None:
    if first_run:
        app = FctuiApp(spec=None, config=Config(), clock=FixedClock(), watch_tty=False)
    else:
        app = make_app(vms=200, seed=7, theme=theme)
    app.animation_level = "none"
    async with app.run_test(size=size) as pilot:
        await drive(pilot, app)
        path = OUT / f"{name}.svg"
        app.save_screenshot(filename=path.name, path=str(OUT))
        print(f"wrote {path.relative_to(ROOT)}")


async def main_screen(pilot, app) -> None:
    await settle(pilot, app)


async def blocked_sorted(pilot, app) -> None:
    await wait_loaded(pilot, app)
    app.set_sort("verdict", False)
    await wait_until(pilot, lambda: not app._view_running)
    await pilot.press("down", "down")
    await settle(pilot, app)


async def filtered(pilot, app) -> None:
    await wait_loaded(pilot, app)
    await pilot.press("slash", *"rule:disk-", "enter")
    await wait_until(pilot, lambda: not app._view_running)
    await settle(pilot, app)


async def detail_screen(pilot, app) -> None:
    await wait_loaded(pilot, app)
    app.set_filter("name:edge-combo-indep")
    await wait_until(pilot, lambda: not app._view_running)
    await pilot.press("enter")
    key = app._table_cursor()
    await wait_until(pilot, lambda: key in app.snapshots or key in app.snapshot_errors)
    await pilot.pause(0.2)


async def datastores(pilot, app) -> None:
    await settle(pilot, app)
    await pilot.press("D")
    await pilot.pause(0.2)


async def help_screen(pilot, app) -> None:
    await settle(pilot, app)
    await pilot.press("question_mark")
    await pilot.pause(0.2)


async def first_run(pilot, app) -> None:
    await pilot.pause(0.2)


async def main() -> None:
    await shot("main-160x48", (160, 48), blocked_sorted)
    await shot("main-80x24", (80, 24), main_screen)
    await shot("filter-rule-80x24", (80, 24), filtered)
    await shot("detail-80x24", (80, 24), detail_screen)
    await shot("datastores-120x32", (120, 32), datastores)
    await shot("help-100x40", (100, 40), help_screen)
    await shot("main-light-160x48", (160, 48), blocked_sorted, theme="textual-light")
    await shot("main-ansi-dark-100x30", (100, 30), main_screen, theme="ansi-dark")
    await shot("first-run-80x24", (80, 24), first_run, first_run=True)
    copy_golden_images()


# The job and restore screens are drawn from recorded job records with an injected clock by their
# snapshot tests; their golden SVGs (refreshed by `pytest --snapshot-update`) are the pictures.
GOLDEN = {
    "backup-review-80x24.svg": "test_tui_jobs_screens/test_review_screen_snapshot[80x24].svg",
    "jobs-mid-run.svg": "test_tui_jobs_screens/test_jobs_screen_mid_run_snapshot[80x24].svg",
    "jobs-failed.svg": "test_tui_jobs_screens/test_failed_job_snapshot[80x24].svg",
    "restore-1-point-80x24.svg": "test_tui_restore_wizard/test_wizard_step_snapshot[point-80x24].svg",
    "restore-2-target-80x24.svg": "test_tui_restore_wizard/test_wizard_step_snapshot[target-80x24].svg",
    "restore-3-datastores-80x24.svg": "test_tui_restore_wizard/test_wizard_step_snapshot[map-80x24].svg",
    "restore-4-checks-80x24.svg": "test_tui_restore_wizard/test_wizard_step_snapshot[checks_original-80x24].svg",
    "restore-5-review-80x24.svg": "test_tui_restore_wizard/test_wizard_step_snapshot[review-80x24].svg",
    "restore-6-confirm-80x24.svg": "test_tui_restore_wizard/test_wizard_step_snapshot[confirm-80x24].svg",
    "restore-3-datastores-160x48.svg": "test_tui_restore_wizard/test_wizard_step_snapshot[map-160x48].svg",
    "jobs-stop-dialog-80x24.svg": "test_tui_keys_dialogs/test_stop_job_dialog_snapshot[80x24].svg",
    "restore-7-result-80x24.svg": "test_tui_restore_wizard/test_wizard_progress_and_result_snapshot[succeeded-80x24].svg",
    "protection-160x48.svg": "test_tui_protection/test_main_screen_with_protection_snapshot[160x48].svg",
    "protection-80x24.svg": "test_tui_protection/test_main_screen_with_protection_snapshot[80x24].svg",
    "policies-160x48.svg": "test_tui_policies/test_policies_screen_snapshot[160x48].svg",
    "policies-80x24.svg": "test_tui_policies/test_policies_screen_snapshot[80x24].svg",
    "policy-form-80x24.svg": "test_tui_policies/test_policy_form_snapshot[80x24].svg",
    "files-browser-80x24.svg": "test_files_screen/test_files_browser_snapshot[80x24].svg",
    "files-browser-160x48.svg": "test_files_screen/test_files_browser_snapshot[160x48].svg",
    "files-extract-80x24.svg": "test_files_screen/test_files_extract_result_snapshot.svg",
    "sites-160x48.svg": "test_tui_sites_snapshots/test_sites_table[160x48].svg",
    "sites-tree-80x24.svg": "test_tui_sites_snapshots/test_sites_tree[80x24].svg",
    "sites-stale-80x24.svg": "test_tui_sites_snapshots/test_sites_one_stale.svg",
    "restore-mapping-80x24.svg": "test_tui_restore_mapping/test_mapping_step_snapshot[disks-80x24].svg",
    "restore-mapping-nics-80x24.svg": "test_tui_restore_mapping/test_mapping_step_snapshot[nics-80x24].svg",
    "dr-rehearsal-160x48.svg": "test_tui_dr_screen/test_dr_rehearsal_snapshot[live-160x48].svg",
    "dr-rehearsal-80x24.svg": "test_tui_dr_screen/test_dr_rehearsal_snapshot[finished-80x24].svg",
}


def copy_golden_images() -> None:
    snaps = ROOT / "tests" / "tui" / "__snapshots__"
    for name, rel in GOLDEN.items():
        (OUT / name).write_bytes((snaps / rel).read_bytes())
        print(f"wrote screenshots/{name} (from tests/tui/__snapshots__/{rel})")


if __name__ == "__main__":
    asyncio.run(main())
