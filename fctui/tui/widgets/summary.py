"""Summary bar: VM counts per verdict, protection problems and per rule; each entry is a filter (enter or
click applies it)."""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget

from ...inventory.query import Summary

VERDICT_STYLE = {"verdict:blocked": "bold red", "verdict:degraded": "yellow", "verdict:ready": "green"}
# protection counts in the words ("unprotected 12 · RPO breached 3 · at risk 2")
PROTECTION_LABEL = {"rpo:none": "unprotected", "rpo:breached": "RPO breached", "rpo:at-risk": "at risk"}


class SummaryBar(Widget, can_focus=True):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left,h", "prev", "Previous count", show=False, id="summary.prev"),
        Binding("right,l", "next", "Next count", show=False, id="summary.next"),
        Binding("enter", "choose", "Filter on it", id="summary.choose"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"summary--rpo-none", "summary--rpo-breached", "summary--rpo-at-risk"}
    DEFAULT_CSS = """
    SummaryBar { height: 1; background: $panel; color: $foreground; }
    SummaryBar:focus { background: $panel-lighten-1; }
    SummaryBar > .summary--rpo-none { color: $error; }
    SummaryBar > .summary--rpo-breached { color: $error; text-style: bold; }
    SummaryBar > .summary--rpo-at-risk { color: $warning; }
    """

    class Chosen(Message):
        def __init__(self, expression: str) -> None:
            super().__init__()
            self.expression = expression

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.items: list[tuple[str, int]] = []
        self.cursor = 0
        self.active = ""          # the filter currently applied, shown inverted
        self.stale_sites: frozenset[str] = frozenset()   # site:… counts of VRMs that stopped answering
        self._spans: list[tuple[int, int, int]] = []   # (x0, x1, item index) of the last render

    def set_summary(self, summary: Summary, active_filter: str = "") -> None:
        self.items = summary.items()
        self.active = active_filter.strip()
        self.cursor = min(self.cursor, max(0, len(self.items) - 1))
        self.refresh()

    def set_stale_sites(self, labels: list[str]) -> None:
        stale = frozenset(labels)
        if stale != self.stale_sites:
            self.stale_sites = stale
            self.refresh()

    def _label(self, expr: str, n: int) -> str:
        if expr.startswith("site:"):
            label = expr[5:]
            return f"{label} {n}" + (" stale" if label in self.stale_sites else "")
        return f"{PROTECTION_LABEL.get(expr) or expr.split(':', 1)[1]} {n}"

    def _style(self, expr: str) -> Style:
        if expr.startswith("site:"):
            return Style.parse("bold yellow" if expr[5:] in self.stale_sites else "bold")
        if expr in PROTECTION_LABEL:
            return self.get_component_rich_style(f"summary--{expr.replace(':', '-')}", partial=True)
        return Style.parse(VERDICT_STYLE.get(expr, "") or "none")

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        self._spans = []
        width = self.size.width or 80
        # keep the cursor item on screen: start from an item such that it fits
        start = 0
        if self.has_focus and self.items:
            total = 0
            for i in range(self.cursor, -1, -1):
                total += len(self._label(*self.items[i])) + 3
                if total > width - 2:
                    start = i + 1
                    break
        if start:
            text.append("‹ ", style="dim")
        group = lambda i: self.items[i][0].split(":", 1)[0]   # noqa: E731 - verdict, rpo or rule
        for i in range(start, len(self.items)):
            expr, n = self.items[i]
            if i > start and group(i) != group(i - 1):
                text.append("│ ", style="dim")
            style = self._style(expr)
            if expr == self.active:
                style += Style(reverse=True)
            if self.has_focus and i == self.cursor:
                style += Style(underline=True, bold=True)
            x0 = text.cell_len
            text.append(self._label(expr, n), style=style)
            self._spans.append((x0, text.cell_len, i))
            same = i + 1 < len(self.items) and group(i + 1) == group(i) and group(i) in ("rpo", "site")
            text.append(" · " if same else "  ", style="dim")
        if not self.items:
            text.append("no VMs yet", style="dim")
        return text

    def action_prev(self) -> None:
        if self.items:
            self.cursor = (self.cursor - 1) % len(self.items)
            self.refresh()

    def action_next(self) -> None:
        if self.items:
            self.cursor = (self.cursor + 1) % len(self.items)
            self.refresh()

    def action_choose(self) -> None:
        if self.items:
            self.post_message(self.Chosen(self.items[self.cursor][0]))

    def on_click(self, event: events.Click) -> None:
        for x0, x1, i in self._spans:
            if x0 <= event.x < x1:
                self.cursor = i
                self.post_message(self.Chosen(self.items[i][0]))
                return

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
