"""A virtual list of one-line rows under a header line, drawn by its owner: a directory of 10,000 entries
costs what the visible lines cost.

Why not DataTable: it measures every cell of every row it is given and redraws them on each change (a
10,000-entry directory took 2.4 s to open and 2.9 s per mark). The owner keeps the rows; the list asks
``draw(index)`` for the lines on screen only and keeps them until :meth:`redraw` says one changed.
"""

from __future__ import annotations

from typing import Callable, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip


class LineList(ScrollView, can_focus=True):
    """Rows ``0..count-1`` drawn by ``draw(index)``, a header drawn by ``header()``, one cursor row."""

    # the cursor moves (ScrollView's own up/down/home/end would scroll the view away from it)
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "step(-1)", "Up", show=False, id="list.up"),
        Binding("down,j", "step(1)", "Down", show=False, id="list.down"),
        Binding("pageup,ctrl+b", "page(-1)", "Page up", show=False, id="list.page_up"),
        Binding("pagedown,ctrl+f", "page(1)", "Page down", show=False, id="list.page_down"),
        Binding("home,g", "first", "First", show=False, id="list.first"),
        Binding("end,G", "last", "Last", show=False, id="list.last"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"linelist--header", "linelist--cursor", "linelist--dim"}
    DEFAULT_CSS = """
    LineList {
        overflow-x: hidden;
        overflow-y: auto;
        background: $surface;
        color: $foreground;
        scrollbar-gutter: stable;
    }
    LineList > .linelist--header { background: $panel; color: $foreground; text-style: bold; }
    /* not focused: a dimmer cursor, underlined so it stays visible where the theme has no colours (ansi) */
    LineList > .linelist--cursor {
        background: $block-cursor-blurred-background; color: $foreground; text-style: underline;
    }
    LineList:focus > .linelist--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground; text-style: bold;
    }
    LineList > .linelist--dim { color: $text-muted; }
    """

    def __init__(self, draw: Callable[[int], Text], header: Callable[[], Text], *, empty: str = "",
                 name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._draw = draw
        self._header = header
        self.empty_text = empty
        self.count = 0
        self.cursor = 0
        self._lines: dict[int, Text] = {}

    # --- the owner's calls ----------------------------------------------------------------------

    def set_count(self, count: int, cursor: int = 0) -> None:
        """New rows (a directory opened): everything drawn before is dropped."""
        self.count = count
        self._lines.clear()
        self.virtual_size = Size(self.size.width, count + 1)
        self.cursor = max(0, min(cursor, count - 1))
        self.scroll_to(y=max(0, self.cursor - max(1, self.size.height - 1) // 2), animate=False, immediate=True)
        self.refresh()

    def redraw(self, index: int | None = None) -> None:
        """Row ``index`` changed (None: every row, and the header)."""
        if index is None:
            self._lines.clear()
            self.refresh()
            return
        self._lines.pop(index, None)
        y = index - int(self.scroll_y) + 1
        if 1 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def move(self, index: int) -> None:
        if not self.count:
            return
        old, self.cursor = self.cursor, max(0, min(index, self.count - 1))
        body = max(1, self.size.height - 1)
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
            self.refresh()
        elif self.cursor >= top + body:
            self.scroll_to(y=self.cursor - body + 1, animate=False, immediate=True)
            self.refresh()
        else:
            for i in (old, self.cursor):
                self.redraw_line(i)

    def redraw_line(self, index: int) -> None:
        y = index - int(self.scroll_y) + 1
        if 1 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    # --- keys and mouse ---------------------------------------------------------------------------

    def action_step(self, step: int) -> None:
        self.move(self.cursor + step)

    def action_first(self) -> None:
        self.move(0)

    def action_last(self) -> None:
        self.move(self.count - 1)

    def action_page(self, direction: int) -> None:
        self.move(self.cursor + direction * max(1, self.size.height - 2))

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            self.move(int(self.scroll_y) + event.y - 1)

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(self.size.width, self.count + 1)
        self._lines.clear()

    def notify_style_update(self) -> None:
        self._lines.clear()
        super().notify_style_update()

    # --- rendering --------------------------------------------------------------------------------

    def _strip(self, text: Text, width: int, style: Style) -> Strip:
        line = text.copy()
        line.no_wrap, line.end = True, ""
        line.truncate(width, overflow="ellipsis", pad=True)
        return Strip(Segment.apply_style(line.render(self.app.console), style=style), width)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width or self.size.width
        if y == 0:
            return self._strip(self._header(), width, self.get_component_rich_style("linelist--header"))
        index = int(self.scroll_y) + y - 1
        if index >= self.count:
            if index == 0 and self.empty_text:
                return self._strip(Text("  " + self.empty_text), width, self.get_component_rich_style("linelist--dim"))
            return Strip.blank(width, self.rich_style)
        text = self._lines.get(index)
        if text is None:
            text = self._lines[index] = self._draw(index)
        if index == self.cursor:
            return self._strip(text, width, self.get_component_rich_style("linelist--cursor"))
        return self._strip(text, width, self.rich_style)
