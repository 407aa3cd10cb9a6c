"""The 24-hour timeline widget: paints :func:`fctui.tui.timeline.layout_timeline` at its own width.

The hour axis and the legend stay in place; the host lines between them scroll when there are more
hosts than rows (at 80x24 the legend would otherwise be the first thing cut off).
"""

from __future__ import annotations

from datetime import timezone, tzinfo
from typing import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from ..policies_model import HostRuns
from ..timeline import TimelineLayout, layout_timeline
from .line import TextLine


class Timeline(Vertical):
    """Axis, one line per host, legend."""

    DEFAULT_CSS = """
    Timeline { height: auto; }
    Timeline > #timeline-rows-scroll { height: auto; scrollbar-size-vertical: 1; }
    Timeline #timeline-rows { height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.hosts: Sequence[HostRuns] = ()
        self.start = 0.0
        self.tz: tzinfo = timezone.utc
        self.layout_shown: TimelineLayout | None = None

    def compose(self) -> ComposeResult:
        yield TextLine(id="timeline-axis")
        with VerticalScroll(id="timeline-rows-scroll"):
            yield Static("", id="timeline-rows")
        yield TextLine(id="timeline-legend")

    def show(self, hosts: Sequence[HostRuns], start: float, tz: tzinfo) -> None:
        self.hosts, self.start, self.tz = tuple(hosts), start, tz
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        width = self.content_size.width or self.size.width
        if not width:
            return
        axis = self.query_one("#timeline-axis", TextLine)
        rows = self.query_one("#timeline-rows", Static)
        legend = self.query_one("#timeline-legend", TextLine)
        if not self.hosts:
            self.layout_shown = None
            axis.update("")
            self.query_one("#timeline-rows-scroll", VerticalScroll).styles.height = 1
            rows.update(Text("No runs in the next 24 h: no enabled policy protects a VM.", style="dim"))
            legend.update("")
            return
        # a quarter of the screen for the host lines; more hosts scroll (the scrollbar takes a column)
        cap = max(2, self.app.size.height // 4)
        scroll = self.query_one("#timeline-rows-scroll", VerticalScroll)
        scroll.styles.height = min(len(self.hosts), cap)
        if len(self.hosts) > cap:
            width -= 1
        lay = layout_timeline(self.hosts, start=self.start, width=width, tz=self.tz)
        self.layout_shown = lay
        axis.update(Text(lay.axis, style="bold", no_wrap=True, overflow="crop"))
        out = Text(no_wrap=True, overflow="crop")
        for n, (label, cells) in enumerate(lay.rows):
            if n:
                out.append("\n")
            out.append(f"{label:<{lay.label_width}} ")
            for c in cells:
                out.append(c.glyph, style=c.style)
        rows.update(out)
        t = Text(no_wrap=True, overflow="ellipsis")
        for text, style in lay.legend:
            t.append(text, style=style)
        legend.update(t)
