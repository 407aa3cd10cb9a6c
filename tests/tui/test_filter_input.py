"""The filter line at 80×24 (issue 15 bug 9): a filter that matches nothing says so (not "No VMs
yet"), and ctrl+u then typing in the same terminal write keeps every character."""

from __future__ import annotations

import pytest

from fctui.sim import SimConfig, Simulator
from fctui.tui.testing import make_app, screen_text, wait_loaded


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimConfig(vms=30, seed=1))


def write(app, text: str) -> None:
    """``text`` as one write to the terminal (a paste, tmux send-keys, a fast typist over ssh): every
    key the terminal parser finds is queued at once, as the driver does, not one key per event-loop
    turn as Pilot.press does."""
    from textual._xterm_parser import XTermParser
    for event in XTermParser().feed(text):
        event.set_sender(app)
        app._driver.send_message(event)


async def test_ctrl_u_then_typing_in_one_write_keeps_every_character(sim):
    app = make_app(sim)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        await pilot.press("slash", *"blocked")
        await wait_loaded(pilot, app)
        write(app, "\x15verdict:ready")          # ctrl+u, then the new filter
        await wait_loaded(pilot, app)
        assert app.screen.query_one("#filter").value == "verdict:ready"
        assert app.filter.source == "verdict:ready"
        write(app, "x\x7fy\x1b[Dz")               # x, backspace, y, left, z: in that order
        await wait_loaded(pilot, app)
        assert app.screen.query_one("#filter").value == "verdict:readyzy"


async def test_a_filter_matching_nothing_says_so(sim):
    app = make_app(sim)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        assert "No VM" not in screen_text(app)
        await pilot.press("slash", *"name:no-such-vm", "enter")
        await wait_loaded(pilot, app)
        text = screen_text(app)
        assert "No VM matches name:no-such-vm" in text and "No VMs yet" not in text
        await pilot.press("slash", "escape")   # esc in the filter line: the filter is gone, the VMs are back
        await wait_loaded(pilot, app)
        assert "No VM" not in screen_text(app)
