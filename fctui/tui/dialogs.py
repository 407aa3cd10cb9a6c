"""Dialogs several screens open (the inventory, the jobs screen, the restore wizard). They import no screen."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Static

MIN_WIDTH = 44      # columns of the dialog, border and padding included
MAX_WIDTH = 90
FRAME = 8           # thick border (2) + padding 1 2 (4) + a column of slack either side (2)
MAX_LABEL = 32      # a button names its action ("Power on <vm>"); a long VM name is cut so both fit at 80


def button_label(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…"


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question whose two buttons say what each one does ("Stop the backup" / "Keep it running"):
    "Cancel" alone is ambiguous when the question is itself about cancelling. The dialog is as wide as its
    text (up to the screen) and wraps the rest; its footer shows its own keys, not those of the screen below."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen #confirm-dialog {
        width: 60; max-width: 100%; height: auto; max-height: 100%;
        background: $surface; border: thick $warning; padding: 1 2;
    }
    ConfirmScreen #confirm-title { text-style: bold; margin-bottom: 1; }
    ConfirmScreen #confirm-title, ConfirmScreen #confirm-body { width: 100%; height: auto; }
    ConfirmScreen #confirm-buttons { height: auto; margin-top: 1; }
    ConfirmScreen #confirm-buttons Button { margin-right: 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,n", "cancel", "No", id="confirm.cancel"),
        Binding("tab,left,right", "app.focus_next", "Other button", id="confirm.other"),
    ]

    def __init__(self, title: str, body: str, *, yes: str, no: str) -> None:
        super().__init__()
        self.title_text, self.body, self.yes, self.no = title, body, yes, no
        # the footer names the safe answer by what it does, like its button
        for key, bindings in self._bindings.key_to_bindings.items():
            self._bindings.key_to_bindings[key] = [
                replace(b, description=no) if b.id == "confirm.cancel" else b for b in bindings]

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Static(Text(self.title_text), id="confirm-title")
            yield Static(Text(self.body), id="confirm-body")
            with Horizontal(id="confirm-buttons"):
                yield Button(button_label(self.yes), variant="warning", id="yes")
                yield Button(button_label(self.no), id="no")
        yield Footer()

    def wanted_width(self) -> int:
        """Wide enough for the title, the longest paragraph and both buttons; the screen caps it."""
        longest = max([len(self.title_text), *(len(line) for line in self.body.splitlines())] or [0])
        buttons = sum(max(16, len(button_label(b)) + 4) for b in (self.yes, self.no)) + 2  # min-width, gap
        return max(MIN_WIDTH, min(MAX_WIDTH, longest + FRAME, self.app.size.width - 2), buttons + FRAME)

    def on_mount(self) -> None:
        self._fit()
        self.query_one("#no", Button).focus()   # the safe choice has the focus

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        self.query_one("#confirm-dialog").styles.width = min(self.wanted_width(), self.app.size.width)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_cancel(self) -> None:
        self.dismiss(False)
