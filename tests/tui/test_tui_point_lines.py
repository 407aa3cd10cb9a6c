"""One restore point is one line at 80x24 (issue 15, bug 9): a verified point's line ("verified <time>")
did not fit the restore walkthrough's point list and wrapped onto a second line. Narrow lists show less
(the verification's time, then the snapshot kind, then the disk count) and every point stays one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import OptionList

from fctui.repo import Repository

from .test_tui_restore_wizard import World, settle, text, wiz, wizard_app


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        w = World(tmp_path_factory.mktemp("points"), mp)
    repo = Repository.open(w.repo_path)
    try:
        report = repo.verify(point_ids=[w.points[-1].id])   # the newest point: "verified <time>"
        assert not report.damaged
        assert repo.points(w.vm_urn)[-1].verified_at or any(p.verified_at for p in repo.points(w.vm_urn))
    finally:
        repo.close()
    yield w


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))


def list_lines(screen_text: str) -> list[str]:
    """The lines inside the option list's frame (between its top and bottom borders)."""
    lines = screen_text.splitlines()
    top = next(i for i, s in enumerate(lines) if "▔▔▔" in s)
    bottom = next(i for i, s in enumerate(lines) if "▁▁▁" in s and i > top)
    return lines[top + 1:bottom]


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (160, 48)])
async def test_every_point_is_one_line(world: World, size: tuple[int, int]) -> None:
    app = wizard_app(world)
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        w = wiz(app)
        assert w.step == "point" and len(w.points) == 2 and w.points[0].verified_at
        lines = list_lines(text(app))
        assert len(lines) == 2, "\n".join(lines)
        assert "verified" in lines[0] and "not verified" in lines[1]

        w.points = w.points[:1]          # a one-point list: one line
        w.show()
        await pilot.pause()
        lines = list_lines(text(app))
        assert len(lines) == 1, "\n".join(lines)
        assert isinstance(app.focused, OptionList) and app.focused.option_count == 1
        if size[0] >= 160:               # room for every column
            assert "verified 20" in lines[0] and "disk(s)" in lines[0]


def test_narrow_lists_leave_out_the_less_important_columns(world: World) -> None:
    from fctui.tui.restore_wizard import point_columns, point_label
    repo = Repository.open(world.repo_path)
    try:
        points = sorted(repo.points(world.vm_urn), key=lambda p: -p.created)
    finally:
        repo.close()
    assert point_columns(points, 200) == (["time", "kind", "mode", "size", "disks", "verification"], True)
    assert point_columns(points, 74) == (["time", "kind", "mode", "size", "disks", "verification"], False)
    assert point_columns(points, 63)[0] == ["time", "mode", "size", "disks", "verification"]
    assert point_columns(points, 52)[0] == ["time", "mode", "size", "verification"]
    for width in (30, 52, 63, 74, 200):
        cols = point_columns(points, width)
        for p in points:
            line = point_label(p, cols, width)
            assert line.cell_len <= width and "\n" not in line.plain
