"""A Line-API table for 10,000+ VMs.

Why not the built-in DataTable: it measures every cell of every added row and drops its render caches
on each mutation, so 10,000 rows take seconds to first paint (issue 4 measured ~2.5 s). Here the model
lives outside the widget (:class:`fctui.inventory.query.RowStore` + a :class:`View` of ordered keys);
the widget only knows the keys, and each frame renders the visible lines only, so cost is O(visible
rows) whatever the inventory size. Rows are addressed by key (VM URN): replacing the view keeps the
cursor on the same VM and the scroll position where it was.

Column widths follow the terminal (:func:`layout_columns`): the name grows to the longest name, the
main reason keeps a readable width and the optional columns show by priority while they fit. The
mark gutter and the name stay put while the columns after them scroll sideways (→/←), so the rest of a
long main reason can be read at 80 columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import ClassVar, Iterable, Mapping, Sequence

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer

from ...inventory.query import COLUMNS, SITE_COLUMN, Column, VmRow
from ..names import fit_name

VERDICT_MARK = {"blocked": "✖ blocked", "degraded": "▲ degraded", "ready": "✔ ready", "": "… "}
# protection in short words (9 cells); "?" is not assessed yet, or unknown (policies unreadable)
PROTECTION_WORD = {"ok": "ok", "at-risk": "at risk", "breached": "BREACHED", "not-covered": "none", "": "?"}
PROTECTION_CLASS = {"ok": "vmtable--rpo-ok", "at-risk": "vmtable--rpo-at-risk", "breached": "vmtable--rpo-breached",
                    "not-covered": "vmtable--rpo-none", "": "vmtable--rpo-unknown"}

GUTTER = 2            # cells before the name: the mark ("● ")
NAME_MAX = 40         # cells: a longer name is cut in its middle even on a wide screen
REASON_MAX = 240      # cells: sideways scrolling reaches this far into a main reason


@dataclass(frozen=True, slots=True)
class TableLayout:
    """Where the columns sit for one viewport width. ``columns`` are those after the name, which scroll
    sideways; the reason's width there is all of the longest reason (up to REASON_MAX), of which
    ``reason_shown`` cells are on screen when the table is not scrolled."""
    width: int
    name: int
    columns: tuple[tuple[Column, int], ...]
    reason_shown: int

    @property
    def frozen(self) -> int:
        """Cells that never scroll: the mark gutter, the name and its separator."""
        return GUTTER + self.name + 1

    @property
    def virtual_width(self) -> int:
        return self.frozen + sum(w + 1 for _, w in self.columns)

    @property
    def max_scroll(self) -> int:
        return max(0, self.virtual_width - self.width)


def layout_columns(width: int, name_need: int = 0, reason_need: int = 0, site: bool = False) -> TableLayout:
    """Column widths for a viewport ``width`` cells wide. ``name_need``/``reason_need``: the longest
    name and main reason in the inventory (cells).

    The name starts at a quarter of the width (at least its column minimum, at most what the longest
    name needs); the optional columns join in priority order while the main reason keeps its readable
    minimum; what is left grows the name up to its need, then the reason. When the always-shown columns
    leave the reason short of its minimum (80 columns), the name shrinks to its own minimum first.
    ``site``: several VRMs in the console; the site column follows the name, always shown."""
    columns = (COLUMNS[0], SITE_COLUMN, *COLUMNS[1:]) if site else COLUMNS
    name_col = columns[0]                               # frozen: the first column
    reason_col = next(c for c in columns if c.flex)     # takes what is left
    avail = max(0, width - GUTTER)
    name_want = max(name_col.width, min(name_need, NAME_MAX))
    name = min(name_want, max(name_col.width, avail // 4))
    shown = [c for c in columns if c.priority == 0 and c is not name_col and c is not reason_col]

    def room(cols: Iterable[Column], name_w: int) -> int:   # the reason's cells, separators paid
        return avail - (name_w + 1) - sum(c.width + 1 for c in cols) - 1

    for c in sorted((c for c in columns if c.priority), key=lambda c: c.priority):
        if room([*shown, c], name) < reason_col.width:
            break
        shown.append(c)
    spare = room(shown, name) - reason_col.width
    if spare > 0:
        name += min(spare, name_want - name)
    elif spare < 0:
        # the always-shown columns leave the reason short: the name gives back what it took beyond its least
        name = max(name_col.width, name + spare)
    reason_shown = max(1, room(shown, name))
    reason_w = max(reason_shown, min(reason_need, REASON_MAX))
    cols = tuple((c, reason_w if c is reason_col else c.width) for c in columns
                 if c is reason_col or c in shown)
    return TableLayout(width, name, cols, reason_shown)


def _longest(texts: Iterable[str]) -> int:
    """Cells of the longest text; len() when all are ASCII (cell_len costs ~1 µs a call)."""
    texts = list(texts)
    if all(map(str.isascii, texts)):
        return max(map(len, texts), default=0)
    return max(map(cell_len, texts), default=0)


def cell_text(row: VmRow, column_id: str) -> str:
    if column_id == "name":
        return row.name
    if column_id == "state":
        return row.state
    if column_id == "host":
        return row.host
    if column_id == "disks":
        return str(row.disks)
    if column_id == "size":
        return f"{row.size_gb}G" if row.size_gb < 10000 else f"{row.size_gb / 1024:.0f}T"
    if column_id == "tools":
        return row.tools
    if column_id == "verdict":
        v = VERDICT_MARK.get(row.verdict, row.verdict)
        return v + ("?" if row.provisional and row.verdict else "")
    if column_id == "reason":
        return row.reason
    if column_id == "protection":
        return PROTECTION_WORD.get(row.protection, row.protection)
    if column_id == "site":
        return row.site
    return ""


class VmTable(ScrollView, can_focus=True):
    """Keyed, virtual VM table. Feed it with :meth:`set_view`; it renders only what is visible."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False, id="table.up"),
        Binding("down,j", "cursor_down", "Down", show=False, id="table.down"),
        Binding("pageup,ctrl+b", "page_up", "Page up", show=False, id="table.page_up"),
        Binding("pagedown,ctrl+f", "page_down", "Page down", show=False, id="table.page_down"),
        Binding("home,g", "first", "First row", show=False, id="table.first"),
        Binding("end,G", "last", "Last row", show=False, id="table.last"),
        # sideways: the columns after the name (the rest of a long main reason); the name stays put
        Binding("right,l", "scroll_columns(1)", "Scroll right", show=False, id="table.scroll_right"),
        Binding("left,h", "scroll_columns(-1)", "Scroll left", show=False, id="table.scroll_left"),
        Binding("ctrl+pagedown", "page_columns(1)", "Page right", show=False, id="table.page_right"),
        Binding("ctrl+pageup", "page_columns(-1)", "Page left", show=False, id="table.page_left"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "vmtable--header", "vmtable--header-sorted", "vmtable--cursor", "vmtable--mark",
        "vmtable--blocked", "vmtable--degraded", "vmtable--ready", "vmtable--pending", "vmtable--dim",
        "vmtable--rpo-ok", "vmtable--rpo-at-risk", "vmtable--rpo-breached", "vmtable--rpo-none",
        "vmtable--rpo-unknown", "vmtable--stale",
    }

    DEFAULT_CSS = """
    VmTable {
        overflow-x: hidden;
        overflow-y: auto;
        background: $surface;
        color: $foreground;
        scrollbar-gutter: stable;
    }
    VmTable > .vmtable--header { background: $panel; color: $foreground; text-style: bold; }
    VmTable > .vmtable--header-sorted { background: $panel; color: $accent; text-style: bold underline; }
    /* not focused: a dimmer cursor, underlined so it stays visible where the theme has no colours (ansi) */
    VmTable > .vmtable--cursor { background: $block-cursor-blurred-background; color: $foreground; text-style: underline; }
    VmTable:focus > .vmtable--cursor { background: $block-cursor-background; color: $block-cursor-foreground; text-style: bold; }
    VmTable > .vmtable--mark { color: $warning; text-style: bold; }
    VmTable > .vmtable--blocked { color: $error; text-style: bold; }
    VmTable > .vmtable--degraded { color: $warning; }
    VmTable > .vmtable--ready { color: $success; }
    VmTable > .vmtable--pending { color: $text-muted; }
    VmTable > .vmtable--dim { color: $text-muted; }
    /* protection, by severity: not covered and breached are both failures of a backup policy */
    VmTable > .vmtable--rpo-ok { color: $success; }
    VmTable > .vmtable--rpo-at-risk { color: $warning; }
    VmTable > .vmtable--rpo-breached { color: $error; text-style: bold; }
    VmTable > .vmtable--rpo-none { color: $error; }
    VmTable > .vmtable--rpo-unknown { color: $text-muted; }
    /* the site cell of a VRM that stopped answering (its rows are last known data) */
    VmTable > .vmtable--stale { color: $warning; text-style: bold; }
    """

    class CursorMoved(Message):
        """The highlighted VM changed (key is None when the view is empty)."""

        def __init__(self, table: "VmTable", key: str | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> "VmTable":
            return self.table

    class HeaderClicked(Message):
        def __init__(self, table: "VmTable", column_id: str) -> None:
            super().__init__()
            self.table = table
            self.column_id = column_id

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._keys: Sequence[str] = ()
        self._index: dict[str, int] = {}
        self._index_built = True
        self._rows: Mapping[str, VmRow] = {}
        self._marks: set[str] | frozenset[str] = frozenset()
        self.cursor = 0
        self._cursor_key: str | None = None
        self.sort_column = "name"
        self.sort_reverse = False
        self.empty_text = "No VMs yet"
        self._styles: dict[str, Style] = {}
        # (key, cursor, marked) -> (row, the whole virtual-width line, where its reason text ends)
        self._line_cache: dict[tuple[str, bool, bool], tuple[VmRow, Strip, int]] = {}
        self._needs: tuple[int, int] | None = None    # longest name, longest reason (None: measure again)
        self._measured: tuple[int, int] = (0, -1)      # id and length of the rows last measured
        self._remeasure_timer: Timer | None = None
        self._layout_for: tuple[int, tuple[int, int], bool] | None = None
        self._layout_cached = layout_columns(0)
        # several VRMs: the site column, and the sites whose rows are last known data (dimmed)
        self.show_site = False
        self.stale_sites: frozenset[str] = frozenset()

    def _style(self, name: str) -> Style:
        """Component styles, looked up once per theme/focus change rather than once per cell."""
        st = self._styles.get(name)
        if st is None:
            st = self._styles[name] = self.get_component_rich_style(name)
        return st

    def notify_style_update(self) -> None:
        self._styles.clear()
        self._line_cache.clear()
        super().notify_style_update()

    def redraw_rows(self) -> None:
        """Rows changed in place (see RowStore.confirm): drop what was drawn of them."""
        self._line_cache.clear()
        self._needs = None
        self._sync_virtual_width()
        self.refresh()

    def on_focus(self) -> None:
        self._styles.clear()
        self._line_cache.clear()
        self.refresh()

    def on_blur(self) -> None:
        self._styles.clear()
        self._line_cache.clear()
        self.refresh()

    @property
    def viewport_width(self) -> int:
        """Cells a line shows (the vertical scrollbar's gutter excluded)."""
        return self.scrollable_content_region.width

    def column_layout(self) -> TableLayout:
        """The column layout for the current width and inventory (recomputed when either changes)."""
        if self._needs is None:
            self._needs = self._measure()
        ident = (self.viewport_width, self._needs, self.show_site)
        if self._layout_for != ident:
            self._line_cache.clear()
            self._layout_for = ident
            self._layout_cached = layout_columns(ident[0], *ident[1], site=self.show_site)
        return self._layout_cached

    def set_sites(self, show: bool, stale: Iterable[str] = ()) -> None:
        """Several VRMs or one (the site column), and which of them are stale (their rows dimmed)."""
        stale = frozenset(stale)
        if (show, stale) == (self.show_site, self.stale_sites):
            return
        self.show_site, self.stale_sites = show, stale
        self._line_cache.clear()
        self._sync_virtual_width()
        self.refresh()

    def _measure(self) -> tuple[int, int]:
        rows = self._rows
        self._measured = (id(rows), len(rows))
        return _longest(map(attrgetter("name"), rows.values())), _longest(map(attrgetter("reason"), rows.values()))

    def _remeasure_soon(self) -> None:
        """Rows may have changed in place (a refresh): measure them again shortly, off the path of
        each filter keystroke (~3 ms at 10,000 rows), and lay out again if a width changed."""
        if self._remeasure_timer is None and self.is_mounted:
            self._remeasure_timer = self.set_timer(0.5, self._remeasure)

    def _remeasure(self) -> None:
        self._remeasure_timer = None
        needs = self._measure()
        if needs != self._needs:
            self._needs = needs
            self._sync_virtual_width()
            self.refresh()

    def _sync_virtual_width(self) -> None:
        """The virtual width follows the layout (it sets how far →/← can scroll)."""
        if self.is_mounted and self.virtual_size.width != self.column_layout().virtual_width:
            self.virtual_size = Size(self.column_layout().virtual_width, len(self._keys) + 1)

    # --- data --------------------------------------------------------------------------------

    @property
    def keys(self) -> Sequence[str]:
        return self._keys

    @property
    def cursor_key(self) -> str | None:
        return self._cursor_key

    @property
    def row_count(self) -> int:
        return len(self._keys)

    def set_view(self, keys: Sequence[str], rows: Mapping[str, VmRow], marks: set[str] | frozenset[str],
                 *, sort_column: str | None = None, sort_reverse: bool | None = None,
                 filter_text: str = "") -> None:
        """Show ``keys`` (already filtered and sorted). The cursor stays on the same VM when it is
        still visible; otherwise it keeps its row number. The scroll offset is not touched unless
        the cursor would leave the screen. ``filter_text``: the filter that chose ``keys`` (an empty
        view then says that nothing matches it, not that there are no VMs)."""
        old_key = self._cursor_key
        self.empty_text = f"No VM matches {filter_text}" if filter_text.strip() and rows else "No VMs yet"
        if (id(rows), len(rows)) != self._measured:
            self._needs = None          # other or more rows: measure them before drawing
        else:
            self._remeasure_soon()
        self._keys = keys
        self._rows = rows
        self._marks = marks
        self._index_built = False       # built on demand (move_to_key): a filter keystroke needs none
        if sort_column is not None:
            self.sort_column = sort_column
        if sort_reverse is not None:
            self.sort_reverse = sort_reverse
        at = self._find(old_key, keys)
        if at is not None:
            self.cursor = at
        else:
            self.cursor = min(self.cursor, max(0, len(keys) - 1))
        self._cursor_key = keys[self.cursor] if keys else None
        self._set_virtual_height(len(keys) + 1)
        self._ensure_cursor_visible()
        self.refresh()
        if self._cursor_key != old_key:
            self.post_message(self.CursorMoved(self, self._cursor_key))

    def _find(self, key: str | None, keys: Sequence[str]) -> int | None:
        if key is None or not keys:
            return None
        # most views keep the cursor's VM where it was: check there before searching
        if self.cursor < len(keys) and keys[self.cursor] == key:
            return self.cursor
        try:
            return keys.index(key)      # C speed; no dict of 10,000 keys per view
        except ValueError:
            return None

    def _set_virtual_height(self, height: int) -> None:
        """A new row count. Setting ``virtual_size`` asks for a layout pass of the whole screen (tens of
        ms per filter keystroke); when the scrollbar stays as it is, only the scrollbar and the table
        need repainting, so skip the layout."""
        new = Size(self.column_layout().virtual_width, height)
        old = self.virtual_size
        if new == old:
            return
        visible = max(1, self.container_size.height)
        if self.is_mounted and self.container_size and (old.height > visible) == (height > visible) \
                and old.width == new.width:
            self.set_reactive(VmTable.virtual_size, new)
            self._scroll_update(new)
        else:
            self.virtual_size = new

    def _index_of(self, key: str) -> int | None:
        if not self._index_built:
            self._index = {k: i for i, k in enumerate(self._keys)}
            self._index_built = True
        return self._index.get(key)

    def set_rows(self, rows: Mapping[str, VmRow]) -> None:
        """Rows changed in place (same keys, same order): repaint only."""
        self._rows = rows
        self._needs = None
        self._sync_virtual_width()
        self.refresh()

    def refresh_marks(self, marks: set[str] | frozenset[str]) -> None:
        self._marks = marks
        self.refresh()

    def move_to_key(self, key: str) -> bool:
        i = self._index_of(key)
        if i is None:
            return False
        self._move(i)
        return True

    # --- cursor --------------------------------------------------------------------------------

    def _move(self, index: int) -> None:
        if not self._keys:
            return
        index = max(0, min(index, len(self._keys) - 1))
        old_index, old_key = self.cursor, self._cursor_key
        self.cursor = index
        self._cursor_key = self._keys[index]
        self._ensure_cursor_visible()
        # Repaint just the two affected lines, not the whole table.
        top = int(self.scroll_y)
        for i in (old_index, index):
            y = i - top + 1
            if 1 <= y < self.size.height:
                self.refresh(Region(0, y, self.size.width, 1))
        if old_key != self._cursor_key:
            self.post_message(self.CursorMoved(self, self._cursor_key))

    def _ensure_cursor_visible(self) -> None:
        body = max(1, self.size.height - 1)
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
            self.refresh()
        elif self.cursor >= top + body:
            self.scroll_to(y=self.cursor - body + 1, animate=False, immediate=True)
            self.refresh()

    def action_cursor_up(self) -> None:
        self._move(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self._move(self.cursor + 1)

    def action_page_up(self) -> None:
        self._move(self.cursor - max(1, self.size.height - 2))

    def action_page_down(self) -> None:
        self._move(self.cursor + max(1, self.size.height - 2))

    def action_first(self) -> None:
        self._move(0)

    def action_last(self) -> None:
        self._move(len(self._keys) - 1)

    def _scroll_columns_by(self, cells: int) -> None:
        # force: overflow-x is hidden (no scrollbar row at 80x24), which would refuse the scroll
        self.scroll_to(x=max(0, min(self.column_layout().max_scroll, int(self.scroll_x) + cells)),
                       animate=False, immediate=True, force=True)
        self.refresh()

    def action_scroll_columns(self, direction: int) -> None:
        """Half the scrolling part of the screen sideways: a long reason reads in a few presses."""
        lay = self.column_layout()
        self._scroll_columns_by(direction * max(4, (lay.width - lay.frozen) // 2))

    def action_page_columns(self, direction: int) -> None:
        lay = self.column_layout()
        self._scroll_columns_by(direction * max(4, lay.width - lay.frozen))

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(self.column_layout().virtual_width, len(self._keys) + 1)
        self._ensure_cursor_visible()

    def on_click(self, event: events.Click) -> None:
        y = event.y
        if y == 0:
            lay = self.column_layout()
            if GUTTER <= event.x < lay.frozen:
                self.post_message(self.HeaderClicked(self, "name"))
                return
            x = lay.frozen - int(self.scroll_x)
            for col, w in lay.columns:
                if max(x, lay.frozen) <= event.x < x + w + 1:
                    self.post_message(self.HeaderClicked(self, col.id))
                    return
                x += w + 1
            return
        self._move(int(self.scroll_y) + y - 1)

    # --- rendering -----------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.viewport_width
        if y == 0:
            return self._render_header(width)
        index = int(self.scroll_y) + y - 1
        if index >= len(self._keys):
            if index == 0 and not self._keys:
                return Strip([Segment(set_cell_size("  " + self.empty_text, width),
                                      self._style("vmtable--dim"))])
            return Strip.blank(width, self.rich_style)
        key = self._keys[index]
        row = self._rows.get(key)
        if row is None:
            return Strip.blank(width, self.rich_style)
        return self._render_row(row, width, index == self.cursor, key in self._marks)

    def _window(self, line: Strip, width: int) -> Strip:
        """What the viewport shows of a virtual-width line: the frozen part, then the scrolled part."""
        lay = self.column_layout()
        x = int(self.scroll_x)
        if x <= 0:
            return line.crop(0, width)
        return Strip.join([line.crop(0, lay.frozen), line.crop(lay.frozen + x, x + width)])

    def _render_header(self, width: int) -> Strip:
        header = self._style("vmtable--header")
        sorted_style = self._style("vmtable--header-sorted")
        lay = self.column_layout()
        segs = [Segment(" " * GUTTER, header)]
        for col, w in ((COLUMNS[0], lay.name), *lay.columns):
            title = col.title
            style = header
            if col.id == self.sort_column:
                arrow = " ▼" if self.sort_reverse else " ▲"
                # a narrow column keeps its arrow: the title gives way
                title = (title if cell_len(title) + 2 <= w else set_cell_size(title, max(0, w - 2))) + arrow
                style = sorted_style
            text = set_cell_size(title, w) if col.align == "left" else title.rjust(w)[-w:]
            segs.append(Segment(text, style))
            segs.append(Segment(" ", header))
        line = self._window(Strip(segs).adjust_cell_length(lay.virtual_width, header), width)
        # arrows say that →/← have more to show
        x = int(self.scroll_x)
        if x > 0 and width > lay.frozen:
            line = Strip.join([line.crop(0, lay.frozen), Strip([Segment("←", header)]), line.crop(lay.frozen + 1, width)])
        if x < lay.max_scroll and width > lay.frozen + 1:
            line = Strip.join([line.crop(0, width - 1), Strip([Segment("→", header)])])
        return line

    def _render_row(self, row: VmRow, width: int, is_cursor: bool, marked: bool) -> Strip:
        lay = self.column_layout()
        cache_key = (row.key, is_cursor, marked)
        hit = self._line_cache.get(cache_key)
        if hit is not None and hit[0] is row:
            line, reason_end = hit[1], hit[2]
        else:
            line, reason_end = self._draw_row(row, lay, is_cursor, marked)
            if len(self._line_cache) > 4096:
                self._line_cache.clear()
            self._line_cache[cache_key] = (row, line, reason_end)
        shown = self._window(line, width)
        if reason_end > int(self.scroll_x) + width and width > lay.frozen:
            # the reason goes on past the right edge: say so (→ shows the rest)
            last = list(shown.crop(width - 1, width))
            style = last[-1].style if last else None
            shown = Strip.join([shown.crop(0, width - 1), Strip([Segment("…", style)])])
        return shown

    def _draw_row(self, row: VmRow, lay: TableLayout, is_cursor: bool, marked: bool) -> tuple[Strip, int]:
        """The whole virtual-width line of a row, and the cell where its reason text ends."""
        base = self._styles.get("_base")
        if base is None:
            base = self._styles["_base"] = self.rich_style
        if is_cursor:
            base = base + self._style("vmtable--cursor")
        stale = bool(self.stale_sites) and row.site in self.stale_sites
        if stale and not is_cursor:
            base = base + self._style("vmtable--dim")
        # Adjacent cells with the same style share one segment: fewer segments, cheaper frames.
        segs: list[Segment] = []
        run: list[str] = [set_cell_size(fit_name(row.name, lay.name), lay.name), " "]
        run_style = base
        if marked:
            segs.append(Segment("● ", base + self._style("vmtable--mark")))
        else:
            run.insert(0, " " * GUTTER)
        x = lay.frozen
        reason_end = 0
        for col, w in lay.columns:
            text = cell_text(row, col.id)
            if col.id == "reason":
                reason_end = x + min(cell_len(text), w)
            if col.align == "right":
                text = text.rjust(w) if cell_len(text) <= w else set_cell_size(text, w)
            else:
                text = set_cell_size(text, w)
            x += w + 1
            style = base
            if not is_cursor:
                if col.id == "verdict":
                    style = base + self._style(f"vmtable--{row.verdict}" if row.verdict else "vmtable--pending")
                elif col.id == "protection":
                    style = base + self._style(PROTECTION_CLASS.get(row.protection, "vmtable--rpo-unknown"))
                elif col.id == "reason" and not row.verdict:
                    style = base + self._style("vmtable--dim")
            if col.id == "site" and stale:
                style = base + self._style("vmtable--stale")
            if style is not run_style and style != run_style:
                if run:
                    segs.append(Segment("".join(run), run_style))
                run = []
                run_style = style
            run.append(text)
            if style is base or style == base:
                run.append(" ")
            else:
                segs.append(Segment("".join(run), run_style))
                run = [" "]
                run_style = base
        if run:
            segs.append(Segment("".join(run), run_style))
        return Strip(segs).adjust_cell_length(lay.virtual_width, base), reason_end
