"""A one-line text widget that repaints without a layout pass.

``Static.update`` asks for a layout refresh (its content may change size), which re-renders the
whole screen; the status line changes every second, so it must only repaint itself.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widget import Widget


class TextLine(Widget):
    DEFAULT_CSS = "TextLine { height: 1; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._text = Text()

    @property
    def text(self) -> Text:
        return self._text

    def update(self, text: Text | str) -> None:
        t = text if isinstance(text, Text) else Text(text)
        if t.plain == self._text.plain and t.spans == self._text.spans:
            return
        self._text = t
        self.refresh()

    def render(self) -> Text:
        return self._text


class Panel(Widget):
    """A fixed-size area showing one renderable; updating it repaints only itself (no layout pass).
    Content taller than the panel is clipped (the full detail screen scrolls)."""

    DEFAULT_CSS = "Panel { height: 1fr; overflow: hidden; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._renderable: Any = ""

    def update(self, renderable: Any) -> None:
        self._renderable = renderable
        self.refresh()

    def render(self) -> Any:
        return self._renderable
