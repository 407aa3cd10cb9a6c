"""The 24-hour timeline of policy runs per host, laid out as cells: pure (no textual), so it is tested
as text. The widget (``widgets/timeline.py``) only paints what :func:`layout_timeline` returns.

One line per host; time runs left to right from the current hour. A cell covers ``minutes`` minutes
(10 at 160 columns, 30 at 80): shaded where a window of one of the host's policies is open, and where
runs start it shows how many of that host's VMs start then (all policies together), coloured by that
load against the 8-backups-per-host limit, so a crowded window stands out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Sequence

from ..jobs.scheduler import MAX_PER_HOST
from .policies_model import HostRuns

__all__ = ["Cell", "TimelineLayout", "layout_timeline", "cell_minutes", "load_style", "load_glyph",
           "WINDOW", "EMPTY", "TICK", "CELL_MINUTES"]

CELL_MINUTES = (10, 12, 15, 20, 30, 60, 120, 180, 360)
WINDOW = "░"        # a window is open, nothing starts
EMPTY = " "
TICK = "·"          # a tick's cell outside every window: the hours stay readable across the line
STYLE_WINDOW = "dim"
STYLE_TICK = "dim"


@dataclass(frozen=True)
class Cell:
    glyph: str
    style: str = ""


@dataclass(frozen=True)
class TimelineLayout:
    minutes: int                          # minutes per cell
    label_width: int                      # host name column (then one space)
    axis: str                             # hour labels over the cells (label column included)
    rows: tuple[tuple[str, tuple[Cell, ...]], ...]   # (host label, cells)
    legend: tuple[tuple[str, str], ...]   # (text, style) pieces of the legend line
    tick_hours: int


def cell_minutes(cells_available: int, hours: int = 24) -> int:
    """The finest cell (from :data:`CELL_MINUTES`) whose cells for ``hours`` fit."""
    for m in CELL_MINUTES:
        if hours * 60 // m <= cells_available:
            return m
    return CELL_MINUTES[-1]


def load_glyph(vms: int) -> str:
    return str(vms) if vms < 10 else "+"


def load_style(vms: int, limit: int = MAX_PER_HOST) -> str:
    """Green up to half the per-host limit, yellow up to it, red beyond (the rest queue)."""
    if vms > limit:
        return "bold white on red"
    if vms > limit // 2:
        return "bold black on yellow"
    return "bold green"


def layout_timeline(hosts: Sequence[HostRuns], *, start: float, width: int, tz: tzinfo, hours: int = 24,
                    limit: int = MAX_PER_HOST) -> TimelineLayout:
    """Cells for ``width`` columns (host names included) from ``start`` (an hour's start) for ``hours``."""
    longest = max((len(h.host) for h in hosts), default=4)
    label_width = max(4, min(longest, 16 if width >= 120 else 10))
    avail = max(1, width - label_width - 1)
    minutes = cell_minutes(avail, hours)
    n = hours * 60 // minutes
    step = minutes * 60
    tick_hours = 3 if 180 // minutes >= 6 else 6
    if tick_hours * 60 < minutes:
        tick_hours = minutes // 60
    first_hour = datetime.fromtimestamp(start, tz).hour
    ticks: dict[int, int] = {}     # cell -> hour of day
    for i in range(n):
        mins = i * minutes
        if mins % 60 == 0 and (first_hour + mins // 60) % tick_hours == 0:
            ticks[i] = (first_hour + mins // 60) % 24
    # the axis: each tick's hour over its cell ("21:00" where there is room, else "21")
    span = tick_hours * 60 // minutes
    axis = [" "] * (label_width + 1 + n)
    for i, hour in ticks.items():
        text = f"{hour:02d}:00" if span >= 8 else f"{hour:02d}"
        pos = label_width + 1 + i
        if pos + len(text) <= len(axis):
            axis[pos:pos + len(text)] = list(text)
    rows = []
    for h in hosts:
        cells: list[Cell] = []
        load = [0] * n
        for run in h.runs:
            i = int((run.when - start) // step)
            if 0 <= i < n:
                load[i] += run.vms
        for i in range(n):
            c0, c1 = start + i * step, start + (i + 1) * step
            if load[i]:
                cells.append(Cell(load_glyph(load[i]), load_style(load[i], limit)))
            elif any(s < c1 and e > c0 for s, e in h.windows):
                cells.append(Cell(WINDOW, STYLE_WINDOW))
            elif i in ticks:
                cells.append(Cell(TICK, STYLE_TICK))
            else:
                cells.append(Cell(EMPTY))
        label = h.host if len(h.host) <= label_width else h.host[:label_width - 1] + "…"
        rows.append((label, tuple(cells)))
    return TimelineLayout(minutes, label_width, "".join(axis).rstrip(), tuple(rows),
                          legend(width, minutes, limit), tick_hours)


def legend(width: int, minutes: int, limit: int = MAX_PER_HOST) -> tuple[tuple[str, str], ...]:
    cell = f"{minutes} min" if minutes < 60 else f"{minutes // 60} h"
    half = limit // 2
    if width >= 120:
        return ((WINDOW, STYLE_WINDOW), (" window open   ", ""), ("n", "bold"),
                (" = VMs of the host starting in the cell: ", ""), (str(half), load_style(half, limit)),
                (f" up to {half}  ", ""), (str(limit), load_style(limit, limit)), (f" up to {limit}  ", ""),
                (load_glyph(limit + 1), load_style(limit + 1, limit)),
                (f" over {limit} per host: the rest wait   ", ""), (f"one cell = {cell}", "dim"))
    return ((WINDOW, STYLE_WINDOW), (" window  ", ""), ("n", "bold"), (" VMs starting: ", ""),
            (str(half), load_style(half, limit)), (" ", ""), (str(limit), load_style(limit, limit)), (" ", ""),
            (load_glyph(limit + 1), load_style(limit + 1, limit)), (f" over {limit}/host  ", ""),
            (f"cell {cell}", "dim"))


def plain(layout: TimelineLayout) -> list[str]:
    """The layout as text lines (axis, one per host): what a person reads, for tests and logs."""
    out = [layout.axis]
    for label, cells in layout.rows:
        out.append(f"{label:<{layout.label_width}} " + "".join(c.glyph for c in cells))
    return out
