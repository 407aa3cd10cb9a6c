"""The console against a real loopback simulator that is killed and restarted (issue 4 acceptance)."""

from __future__ import annotations

import pytest

from fctui.config import Config
from fctui.sim import EmbeddedSimulator, SimConfig
from fctui.tui.app import FctuiApp
from fctui.tui.source import ConnectSpec
from fctui.tui.testing import FixedClock, screen_text, wait_loaded, wait_until
from fctui.tui.widgets.vmtable import VmTable


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))


async def test_killing_the_vrm_shows_stale_banner_and_restart_recovers():
    es = EmbeddedSimulator(SimConfig(vms=30, seed=3)).start()
    try:
        spec = ConnectSpec(url=es.url, user=es.sim.config.user, password=es.sim.config.password, timeout=5)
        clock = FixedClock()
        app = FctuiApp(spec=spec, config=Config(), clock=clock, refresh_interval=0.5, watch_tty=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            rows = app.screen.query_one(VmTable).row_count
            assert rows > 0
            es.stop()                                   # the VRM goes away
            await wait_until(pilot, lambda: bool(app.stale_reason), timeout=10)
            clock.advance(7)
            app.update_status()
            await wait_until(pilot, lambda: "showing data from 7 s ago" in screen_text(app))
            text = screen_text(app)
            assert "STALE" in text and "VRM unreachable" in text
            assert "showing data from 7 s ago" in text
            assert app.screen.query_one(VmTable).row_count == rows      # last data kept
            assert app.is_running
            count = app.refresh_count
            es.start()                                  # same port, same inventory: recovers on its own
            await wait_until(pilot, lambda: app.refresh_count > count and not app.stale_reason, timeout=20)
            await pilot.pause()
            assert "STALE" not in screen_text(app)
            assert app.screen.query_one(VmTable).row_count == rows
    finally:
        es.stop()
