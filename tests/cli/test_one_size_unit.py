"""Issue 15 (friction): sizes use one unit system everywhere -- binary units as humanize writes them --
in every printer of the command line and in the console (one formatter, fctui.units)."""

from __future__ import annotations

import re
from typing import Any

import humanize
import pytest

from fctui.repo import Repository
from tests.cli.test_restore_cli import cli, served  # noqa: F401 -- the module's fixture: a point on a loopback VRM

SAMPLES = (0, 1, 1023, 1024, 1536, 10 ** 6, 1 << 30, 3 * (1 << 30) + 12345, 1 << 40)
SIZE = re.compile(r"\b\d+(?:\.\d+)? (?:Bytes?|[KMGTP]i?B|B)\b")


def binary(n: int) -> str:
    """humanize's binary units, with "B" for whole bytes (humanize spells out "Bytes")."""
    text = humanize.naturalsize(n, binary=True)
    return re.sub(r" Bytes?$", " B", text)


def test_the_command_line_and_the_console_format_sizes_alike() -> None:
    from fctui.cli.common import size
    from fctui.jobs.progress import human_bytes   # what the console's screens call
    for n in SAMPLES:
        want = binary(n)
        assert size(n) == want and human_bytes(n) == want, n
    assert size(None) == human_bytes(None) == "?"


def test_points_and_the_restore_plan_print_a_disk_size_the_same_way(
        served: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    es, repo_dir, point_id = served
    monkeypatch.setenv("FCTUI_PASSWORD", "Admin@123")
    point = Repository.open(repo_dir).point(point_id)
    want = binary(point.size_bytes)

    ns = cli(["points", "--repo", repo_dir])
    assert ns.func(ns) == 0
    listing = capsys.readouterr().out
    ns = cli(["restore", point_id, "--to", "new", "--name", "units-new", "--vrm", es.url, "--user", "admin",
              "--repo", repo_dir])
    ns.func(ns)
    plan = capsys.readouterr().out
    assert want in listing and want in plan, (want, listing, plan)
    for d in point.disks:
        assert f"{d.disk_name}: {binary(d.size_bytes)} ->" in plan, plan
    printed = SIZE.findall(listing + plan)
    assert printed and [s for s in printed if s != binary(_bytes(s))] == [], plan


def _bytes(text: str) -> float:
    """The byte count a printed size stands for (binary units), to format it again."""
    num, unit = text.split()
    scale = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "PiB": 1 << 50}
    return float(num) * scale.get(unit, 0)
