"""Every SVG snapshot of the console is taken with steady text cursors.

A focused input's cursor blinks (textual toggles it every 0.5 s from the moment the input gets the
focus), so a shot shows it or not depending on how long the steps before the shot took: on a loaded
machine test_wizard_new_vm_name_snapshot[160x48] came out without its cursor. ``snap_compare`` here is
the plugin's, with the blinking of every input of the screen stack stopped (cursor shown) just before
the shot, whatever the test's own ``run_before`` did.
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, Iterable

import pytest
from textual.widgets import Input


def steady_cursors(app: Any) -> None:
    for screen in app.screen_stack:
        for inp in screen.query(Input):
            inp.cursor_blink = False      # the blink stops with the cursor shown


@pytest.fixture
def snap_compare(snap_compare: Callable[..., bool]) -> Callable[..., bool]:
    def compare(app: Any, press: Iterable[str] = (), terminal_size: tuple[int, int] = (80, 24),
                run_before: Callable[[Any], Awaitable[None] | None] | None = None) -> bool:
        async def before(pilot: Any) -> None:
            if run_before is not None:
                result = run_before(pilot)
                if inspect.isawaitable(result):
                    await result
            steady_cursors(pilot.app)
            await pilot.pause()

        return snap_compare(app, press=press, terminal_size=terminal_size, run_before=before)
    return compare
