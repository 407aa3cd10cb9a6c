"""The file browser of one restore point: its disks' volumes and directories, marks, and copying files out.

Nothing here writes to a VM or to the VRM: files are read from the repository's chunks (fctui.files) and
copied into a directory of this machine. One directory at a time, as ncdu and ranger show it: Enter or
right opens, left or backspace goes up, space marks. A directory is listed when it is opened (lazily) and
kept, so going back up is instant and puts the cursor where it was.

Threads: every repository read and every parse of a guest filesystem runs in a thread worker that posts
a message; only the message handlers change the screen's state. A :class:`PointFiles` is for one thread
at a time, so the listing, the totals of marked directories and an extraction each have their own (and a
lock): counting a big directory never holds up moving around.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Callable, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from ..files.browse import PointFiles
from ..files.errors import FilesError
from ..files.extract import ExtractProgress, ExtractReport, extract_to_dir, plan
from ..files.model import FsEntry, Volume
from ..units import human_bytes
from .widgets.linelist import LineList

NOTHING_TO_VM = "Nothing is written to any VM: files are copied to this machine only."
DEST_ROOT = "~/fctui-restore"
WIDE = 120          # from this width the table also shows mode and owner
NAME_MAX = 72       # the name column's width at most, on a wide screen
PROGRESS_EVERY = 0.1   # seconds between progress messages of an extraction (a file per call is too many)
RESULT_LINES = 200  # skipped/error lines listed in the result; the rest are counted


# --- text helpers ------------------------------------------------------------------------------------------

def shown_name(name: str) -> str:
    """A guest's file name as it can be shown on a terminal: control characters (an escape sequence in
    a name would drive the terminal) become \\xNN escapes; an empty name shows as ''."""
    out = []
    for ch in name:
        if ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out) or "''"


def when(ts_ns: int, tz: tzinfo | None) -> str:
    """A guest's timestamp in local time; "?" for one outside what a calendar can show (untrusted)."""
    try:
        return datetime.fromtimestamp(ts_ns / 1e9, tz).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return "?"


KIND_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


def mode_text(entry: FsEntry) -> str:
    return stat.filemode(KIND_BITS.get(entry.kind, 0) | (entry.mode & 0o7777))


def default_destination(point: Any, tz: tzinfo | None, root: str = DEST_ROOT) -> str:
    """``<root>/<vm name>-<point date>``: one directory per point, so two extractions of different
    points never meet (the engine refuses to overwrite anyway). The VM's name is made a safe path part."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", getattr(point, "vm_name", "") or "vm").strip("._") or "vm"
    stamp = datetime.fromtimestamp(point.created, tz).strftime("%Y%m%d-%H%M")
    return f"{root.rstrip('/')}/{name}-{stamp}"


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else many or word + 's'}"


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def child_of(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}"


def under(path: str, ancestor: str) -> bool:
    return ancestor == "/" or path.startswith(ancestor.rstrip("/") + "/")


def disk_label(point: Any, disk: int) -> str:
    d = point.disks[disk]
    # numbered from 0, as `fctui files --disk N` and the error messages number them
    many = f" ({len(point.disks)} disks)" if len(point.disks) > 1 else ""
    return f"disk {disk}{many}: {d.disk_name or d.volume_urn} · {human_bytes(d.size_bytes)}"


@dataclass(frozen=True)
class Mark:
    """A marked file, directory or volume: what the totals and the extraction need of it."""

    path: str
    is_dir: bool
    size: int   # of a file; a directory's total is counted in a worker


@dataclass(frozen=True)
class Row:
    """One line of the table: an entry of the directory, or at the top a volume of the disk."""

    path: str
    entry: FsEntry | None = None
    volume: Volume | None = None
    readable: bool = True   # a volume without a filesystem fctui reads (swap, an LVM physical volume)

    @property
    def is_dir(self) -> bool:
        return self.volume is not None or (self.entry is not None and self.entry.is_dir)

    @property
    def markable(self) -> bool:
        return self.readable and (self.volume is not None or self.entry is not None)

    @property
    def size(self) -> int:
        return self.entry.size if self.entry is not None and self.entry.kind == "file" else 0


# --- messages from the workers ---------------------------------------------------------------------------

class Listed(Message):
    """A directory's entries (or, at ``/``, also the disk's volumes), or why they could not be read."""

    def __init__(self, disk: int, path: str, entries: list[FsEntry] | None, volumes: list[Volume] | None,
                 error: str = "") -> None:
        super().__init__()
        self.disk, self.path, self.entries, self.volumes, self.error = disk, path, entries, volumes, error


class Counted(Message):
    """A marked directory's files and bytes (everything below it), or why it could not be counted."""

    def __init__(self, disk: int, path: str, files: int, size: int, error: str = "") -> None:
        super().__init__()
        self.disk, self.path, self.files, self.size, self.error = disk, path, files, size, error


class Progressed(Message):
    def __init__(self, progress: ExtractProgress) -> None:
        super().__init__()
        self.progress = progress


class Extracted(Message):
    def __init__(self, report: ExtractReport | None, error: str = "", stopped: bool = False) -> None:
        super().__init__()
        self.report, self.error, self.stopped = report, error, stopped


def problem(e: BaseException, what: str) -> str:
    """One line for a user: fctui's typed errors say it themselves; anything a parser raised on a
    damaged or unusual filesystem is named, never a traceback."""
    if isinstance(e, FilesError):
        return str(e)
    from ..repo import RepoError
    if isinstance(e, (RepoError, OSError)):
        return f"{what}: {e}"
    return f"{what}: {type(e).__name__}: {e}" if str(e) else f"{what}: {type(e).__name__}"


class Guarded:
    """A PointFiles opened on first use, used under a lock (one thread at a time), closed once."""

    def __init__(self, repo: Any, point: Any) -> None:
        self.repo, self.point = repo, point
        self.lock = threading.Lock()
        self._files: PointFiles | None = None
        self.closed = False

    def files(self) -> PointFiles:
        """Call with :attr:`lock` held."""
        if self.closed:
            raise FilesError("the file browser was closed")
        if self._files is None:
            self._files = PointFiles(self.repo, self.point)
        return self._files

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self._files is not None:
                try:
                    self._files.close()
                except Exception:  # closing must not raise while the screen goes away
                    pass
                self._files = None


# --- the browser ----------------------------------------------------------------------------------------

class FilesScreen(Screen[None]):
    """Browse one restore point's files, mark some, copy them to a directory of this machine."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # priority: the list's sideways scrolling would otherwise take left and right
        Binding("enter,right,l", "open", "Open", priority=True, id="files.open"),
        Binding("left,backspace,h", "up", "Up", priority=True, id="files.up"),
        Binding("space", "mark", "Mark", priority=True, id="files.mark"),
        Binding("a", "mark_all", "Mark all here", show=False, id="files.mark_all"),
        Binding("u", "clear_marks", "Clear marks", show=False, id="files.clear_marks"),   # the status line says u
        Binding("e", "extract", "Extract", id="files.extract"),
        Binding("d", "choose_disk", "Disk", id="files.disk"),
        Binding("escape,q", "close", "Back", id="files.back"),
    ]

    def __init__(self, repo: Any, point: Any, *, disk: int = 0, owns_repo: bool = False,
                 tz: tzinfo | None = None, dest_root: str = DEST_ROOT) -> None:
        super().__init__()
        self.repo = repo
        self.point = point
        self.disk = disk if 0 <= disk < len(point.disks) else 0
        self.owns_repo = owns_repo     # close the repository when the browser closes
        self._tz = tz
        self.dest_root = dest_root
        self.path = "/"                # the directory shown
        self.rows: list[Row] = []
        self.listings: dict[tuple[int, str], list[Row]] = {}
        self.cursor_at: dict[tuple[int, str], str] = {}   # the row last highlighted in each directory
        self.wanted: tuple[int, str, str | None] | None = None   # (disk, path, row to highlight) being read
        self.marks: dict[str, Mark] = {}
        self.totals: dict[str, tuple[int, int] | str] = {}   # marked directory -> (files, bytes) or error
        self.error = ""
        self.note = ""
        self._browse = Guarded(repo, point)
        self._counting = Guarded(repo, point)
        self._width = 0
        self._root_columns = True
        self._cols: list[tuple[str, str, int, bool]] = []   # (id, header, width, right-aligned)

    @property
    def tz(self) -> tzinfo | None:
        return self._tz if self._tz is not None else getattr(self.app, "tz", None)

    # --- layout -----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="files-title")
        yield Static("", id="files-path")
        yield LineList(self._line, self._header_line, empty="(empty)", id="files-table")
        yield Static("", id="files-status")
        yield Static(Text(NOTHING_TO_VM, style="dim", no_wrap=True, overflow="ellipsis"), id="files-note")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#files-title", Static).update(self._title())
        self._columns()
        self.query_one(LineList).focus()
        self.go(self.disk, "/")

    def on_resize(self) -> None:
        if self.app.size.width != self._width:
            self._columns()

    def on_unmount(self) -> None:
        # a worker may still hold a PointFiles (a big directory being counted): close them when it lets go
        guards, repo = (self._browse, self._counting), (self.repo if self.owns_repo else None)

        def close() -> None:
            for g in guards:
                g.close()
            if repo is not None:
                try:
                    repo.close()
                except Exception:  # closing must not raise
                    pass
        threading.Thread(target=close, name="fctui-files-close", daemon=True).start()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "choose_disk":
            return len(self.point.disks) > 1
        return True

    def _title(self) -> Text:
        p = self.point
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" Files ", style="bold reverse")
        t.append(f" {p.vm_name or p.vm_urn}", style="bold")
        created = datetime.fromtimestamp(p.created, self.tz).strftime("%Y-%m-%d %H:%M")
        t.append(f" · restore point {created}")
        t.append(f" · {p.id}", style="dim")
        return t

    def _columns(self) -> None:
        """The columns for the screen's width: the name takes what the others leave (on a wide screen up
        to NAME_MAX, so size and date stay near the name they belong to)."""
        self._width = width = self.app.size.width
        self._root_columns = self.path == "/"
        # volumes have no date: there the column says what each one is, which takes more room
        fixed = [("mark", "", 1, False), ("size", "Size", 9, True),
                 ("mtime", "What", 26, False) if self._root_columns else ("mtime", "Modified", 16, False)]
        if width >= WIDE:
            fixed += [("mode", "Mode", 10, False), ("owner", "Owner", 11, False)]
        # a space between columns, one before the first; 2 cells for the vertical scrollbar
        name_w = max(12, width - 1 - sum(w + 1 for _, _, w, _ in fixed) - 1 - 2)
        if width >= WIDE:
            name_w = min(name_w, NAME_MAX)
        self._cols = [fixed[0], ("name", "Name", name_w, False), *fixed[1:]]
        self.query_one(LineList).redraw()

    def _join(self, cells: list[Text]) -> Text:
        line = Text(" ", no_wrap=True, end="")
        for cell, (_, _, w, right) in zip(cells, self._cols):
            cell.truncate(w, overflow="ellipsis")
            cell.align("right" if right else "left", w)
            line.append_text(cell)
            line.append(" ")
        return line

    def _header_line(self) -> Text:
        return self._join([Text(label) for _, label, _, _ in self._cols])

    def _line(self, index: int) -> Text:
        return self._join(self._cells(self.rows[index], self._width >= WIDE))

    # --- listing ----------------------------------------------------------------------------------

    def go(self, disk: int, path: str, select: str | None = None) -> None:
        """Show ``path`` of ``disk``: at once when it was listed before, else after a worker read it."""
        rows = self.listings.get((disk, path))
        if rows is not None:
            self._show(disk, path, rows, select)
            return
        self.wanted = (disk, path, select)
        self.error = ""
        self._path_bar(loading=path)
        self.run_worker(lambda: self._list(disk, path), thread=True, group="files-list",
                        exit_on_error=False, description=f"list {path}")

    def _list(self, disk: int, path: str) -> None:
        """Thread: read one directory (at ``/``, the volumes too)."""
        g = self._browse
        with g.lock:
            try:
                files = g.files()
                volumes = files.volumes(disk) if path == "/" else None
                entries = files.listdir(path, disk=disk)
            except Exception as e:  # a damaged or unusual guest filesystem: say which, never a traceback
                self.post_message(Listed(disk, path, None, None, problem(e, f"could not read {path}")))
                return
        self.post_message(Listed(disk, path, entries, volumes))

    @on(Listed)
    def _listed(self, msg: Listed) -> None:
        if self.wanted is None or self.wanted[:2] != (msg.disk, msg.path):
            return   # the user went elsewhere meanwhile
        select = self.wanted[2]
        self.wanted = None
        if msg.entries is None:
            self.error = msg.error
            self._path_bar()
            if not self.rows and msg.path == "/":
                self.query_one(LineList).empty_text = "(nothing readable)"
                self._fill()
            self._status()
            return
        if msg.volumes is not None:
            readable = {e.name for e in msg.entries}
            rows = [Row(path=f"/{v.name}", volume=v, readable=v.name in readable) for v in msg.volumes]
            known = {v.name for v in msg.volumes}
            # a readable volume volumes() did not list (should not happen): still reachable
            rows += [Row(path=e.path, entry=e) for e in msg.entries if e.name not in known]
        else:
            rows = [Row(path=e.path or child_of(msg.path, e.name), entry=e) for e in msg.entries]
            rows.sort(key=lambda r: (not r.is_dir, r.entry.name if r.entry else ""))   # directories first
        self.listings[(msg.disk, msg.path)] = rows
        self._show(msg.disk, msg.path, rows, select)

    def _show(self, disk: int, path: str, rows: list[Row], select: str | None) -> None:
        here = self._cursor_row()
        if here is not None:
            self.cursor_at[(self.disk, self.path)] = here.path
        self.disk, self.path, self.rows = disk, path, rows
        self.error = ""
        self._fill(select or self.cursor_at.get((disk, path)))
        self._path_bar()
        self._status()

    def _fill(self, select: str | None = None) -> None:
        """The list shows ``self.rows``, the cursor on ``select`` (a path; None: the first row)."""
        if self._root_columns != (self.path == "/"):
            self._columns()
        at = next((i for i, r in enumerate(self.rows) if r.path == select), 0) if select else 0
        self.query_one(LineList).set_count(len(self.rows), at)

    def _cells(self, row: Row, wide: bool) -> list[Text]:
        marked = row.path in self.marks
        mark = Text("●", style="bold green") if marked else Text("")
        name = Text(no_wrap=True, overflow="ellipsis")
        size = Text("", justify="right")
        mtime = Text("")
        mode = Text("")
        owner = Text("")
        if row.volume is not None:
            v = row.volume
            name.append(shown_name(v.name) + ("/" if row.readable else ""), style="bold" if row.readable else "dim")
            name.append(f"  {v.fs_type or 'no filesystem'}", style="cyan" if row.readable else "dim")
            if v.label:
                name.append(f"  {shown_name(v.label)}")
            size = Text(human_bytes(v.size), justify="right")
            mtime = Text(shown_name(v.what), style="dim", no_wrap=True, overflow="ellipsis")
        elif row.entry is not None:
            e = row.entry
            if e.is_dir:
                name.append(shown_name(e.name) + "/", style="bold")
            else:
                name.append(shown_name(e.name), style="" if e.kind == "file" else "magenta")
            if e.kind == "symlink":
                name.append(f" → {shown_name(e.target or '')}", style="dim")
            if e.kind == "file":
                size = Text(human_bytes(e.size), justify="right")
            elif e.is_dir and marked:
                total = self.totals.get(row.path)
                size = Text(human_bytes(total[1]) if isinstance(total, tuple) else "…" if total is None else "?",
                            justify="right", style="dim")
            mtime = Text(when(e.mtime_ns, self.tz))
            mode = Text(mode_text(e), style="dim")
            owner = Text(f"{e.uid}:{e.gid}", style="dim")
        if marked:
            name.stylize("green")
        cells = [mark, name, size, mtime]
        if wide:
            cells += [mode, owner]
        return cells

    def _path_bar(self, loading: str | None = None) -> None:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f" {disk_label(self.point, self.disk)} ", style="reverse")
        t.append(" ")
        t.append(shown_name(loading if loading is not None else self.path), style="bold")
        if loading is not None:
            t.append("  reading…", style="dim")
        self.query_one("#files-path", Static).update(t)

    def _status(self) -> None:
        t = Text(no_wrap=True, overflow="ellipsis")
        if self.error:
            t.append("✗ ", style="bold red")
            t.append(self.error, style="red")
            self.query_one("#files-status", Static).update(t)
            return
        paths = self.extract_paths()
        if not paths:
            t.append(self.note or f"{len(self.rows)} entries · space marks, e copies the marked ones to this machine",
                     style="dim")
            self.query_one("#files-status", Static).update(t)
            return
        files, size, counting, failed = self.marked_totals()
        dirs = sum(1 for p in paths if self.marks[p].is_dir)
        t.append(f"{len(paths)} marked", style="bold green")
        if dirs:
            t.append(f" ({dirs} dir{'s' if dirs != 1 else ''})")
        t.append(f": {files} file{'s' if files != 1 else ''} · {human_bytes(size)}", style="bold")
        if counting:
            t.append(f" · counting {counting} dir{'s' if counting != 1 else ''}…", style="dim")
        if failed:
            t.append(f" · {failed} could not be counted", style="yellow")
        t.append("  e extracts · u clears", style="dim")
        self.query_one("#files-status", Static).update(t)

    # --- marks and totals -------------------------------------------------------------------------

    def extract_paths(self) -> list[str]:
        """The marked paths, leaving out those inside a marked directory (copied with it)."""
        dirs = [p for p, m in self.marks.items() if m.is_dir]
        return sorted(p for p in self.marks if not any(d != p and under(p, d) for d in dirs))

    def marked_totals(self) -> tuple[int, int, int, int]:
        """(files, bytes, directories still being counted, directories that could not be counted)."""
        files = size = counting = failed = 0
        for p in self.extract_paths():
            m = self.marks[p]
            if not m.is_dir:
                files += 1
                size += m.size
                continue
            total = self.totals.get(p)
            if total is None:
                counting += 1
            elif isinstance(total, str):
                failed += 1
            else:
                files += total[0]
                size += total[1]
        return files, size, counting, failed

    def _cursor_row(self) -> Row | None:
        table = self.query_one(LineList)
        if not self.rows or table.count != len(self.rows):
            return None
        return self.rows[table.cursor]

    def _redraw(self, path: str | None = None) -> None:
        """The row of ``path`` changed (None: all of them)."""
        table = self.query_one(LineList)
        if path is None:
            table.redraw()
            return
        for i, r in enumerate(self.rows):
            if r.path == path:
                table.redraw(i)

    def _toggle(self, row: Row, on: bool | None = None) -> None:
        if not row.markable:
            return
        now = row.path not in self.marks if on is None else on
        if not now:
            self.marks.pop(row.path, None)
            return
        self.marks[row.path] = Mark(row.path, row.is_dir, row.size)
        if row.is_dir and row.path not in self.totals:
            disk = self.disk
            self.run_worker(lambda: self._count(disk, row.path), thread=True, group="files-count",
                            exit_on_error=False, description=f"count {row.path}")

    def _count(self, disk: int, path: str) -> None:
        """Thread: everything below a marked directory, for the totals."""
        g = self._counting
        with g.lock:
            try:
                entries = plan(g.files(), [path], disk=disk)
            except Exception as e:
                self.post_message(Counted(disk, path, 0, 0, problem(e, f"could not count {path}")))
                return
        files = [e for e in entries if e.kind == "file"]
        self.post_message(Counted(disk, path, len(files), sum(e.size for e in files)))

    @on(Counted)
    def _counted(self, msg: Counted) -> None:
        if msg.disk != self.disk:
            return
        self.totals[msg.path] = msg.error or (msg.files, msg.size)
        if msg.error and msg.path in self.marks:
            self.app.notify(msg.error, severity="warning", timeout=8)
        if msg.path in self.marks:
            self._redraw(msg.path)
        self._status()

    def action_mark(self) -> None:
        row = self._cursor_row()
        if row is None:
            return
        if not row.markable:
            self.note = f"{row.path} holds no filesystem fctui reads: nothing to mark"
            self._status()
            self.note = ""
            return
        self._toggle(row)
        table = self.query_one(LineList)
        table.redraw(table.cursor)
        table.move(table.cursor + 1)
        self._status()

    def action_mark_all(self) -> None:
        rows = [r for r in self.rows if r.markable]
        on = not all(r.path in self.marks for r in rows)
        for r in rows:
            self._toggle(r, on)
        self._redraw()
        self._status()

    def action_clear_marks(self) -> None:
        self.marks.clear()
        self._redraw()
        self._status()

    # --- moving around ----------------------------------------------------------------------------

    def action_open(self) -> None:
        row = self._cursor_row()
        if row is None:
            return
        if not row.readable:
            self.note = f"{row.path} holds no filesystem fctui reads ({row.volume.what if row.volume else ''})"
        elif row.is_dir:
            self.go(self.disk, row.path)
            return
        else:
            self.note = f"{shown_name(row.path)} is a file: space marks it, e copies the marked ones"
        self._status()
        self.note = ""

    def action_up(self) -> None:
        if self.wanted is not None:
            # a directory still being read (a slow or huge one): stay where the list is; its answer is dropped
            self.wanted = None
            self._path_bar()
            return
        if self.path != "/":
            self.go(self.disk, parent_of(self.path), select=self.path)

    def action_choose_disk(self) -> None:
        def chosen(disk: int | None) -> None:
            if disk is None or disk == self.disk:
                return
            if self.marks:
                self.app.notify(f"{len(self.marks)} mark(s) of disk {self.disk} cleared: "
                                "one extraction reads one disk", timeout=6)
            self.marks.clear()
            self.go(disk, "/")
        self.app.push_screen(DiskChooser(self.point, self.disk), chosen)

    def action_close(self) -> None:
        self.dismiss(None)

    # --- extraction -------------------------------------------------------------------------------

    def action_extract(self) -> None:
        paths = self.extract_paths()
        if not paths:
            self.app.notify("Nothing marked: space marks files and directories", severity="warning")
            return
        files, size, counting, failed = self.marked_totals()
        what = f"{plural(len(paths), 'marked item')}: {plural(files, 'file')}, {human_bytes(size)}"
        if counting or failed:
            what += " so far" if counting else " (some not counted)"
        disk = self.disk

        def chosen(dest: str | None) -> None:
            if dest:
                self.app.push_screen(ExtractScreen(self.repo, self.point, paths, dest, disk=disk,
                                                   files_total=files, bytes_total=size))
        self.app.push_screen(DestinationDialog(default_destination(self.point, self.tz, self.dest_root), what),
                             chosen)


class DiskChooser(ModalScreen["int | None"]):
    """Which disk of the point to browse: name and size of each."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_none", "Close", id="filesdisk.close"),
    ]

    def __init__(self, point: Any, current: int) -> None:
        super().__init__()
        self.point, self.current = point, current

    def compose(self) -> ComposeResult:
        with Vertical(id="filesdisk-dialog"):
            yield Static(Text("Browse which disk?", style="bold"))
            yield OptionList(*[Option(self._label(i), id=str(i)) for i in range(len(self.point.disks))],
                             id="filesdisk-options")
        yield Footer()

    def _label(self, i: int) -> Text:
        d = self.point.disks[i]
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"{i}  {d.disk_name or d.volume_urn}", style="bold" if i == self.current else "")
        t.append(f"  {human_bytes(d.size_bytes)}")
        t.append(f"  {d.pci_type}", style="dim")
        return t

    def on_mount(self) -> None:
        opts = self.query_one(OptionList)
        opts.highlighted = self.current
        opts.focus()

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(int(event.option.id or 0))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class DestinationDialog(ModalScreen["str | None"]):
    """Where on this machine the marked files go."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="filesdest.cancel"),
    ]

    def __init__(self, default: str, what: str) -> None:
        super().__init__()
        self.default, self.what = default, what

    def compose(self) -> ComposeResult:
        with Vertical(id="filesdest-dialog"):
            yield Static(Text(f"Copy {self.what}", style="bold"), id="filesdest-what")
            yield Static(Text("into this directory of this machine (created if missing; nothing in it is "
                              "overwritten). " + NOTHING_TO_VM), id="filesdest-body")
            yield Input(value=self.default, id="filesdest-input")
            yield Static(Text("Enter copies · Esc cancels", style="dim"), id="filesdest-error")
        yield Footer()

    def on_mount(self) -> None:
        inp = self.query_one(Input)
        inp.cursor_position = len(inp.value)
        inp.focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        dest = event.value.strip()
        if not dest:
            self.query_one("#filesdest-error", Static).update(Text("Type a directory.", style="red"))
            return
        self.dismiss(dest)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ExtractScreen(Screen[None]):
    """Copy the marked paths into a directory of this machine, with progress, a stop key and a summary."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "stop", "Stop", id="extract.stop"),
        Binding("escape,enter,q", "close", "Close", id="extract.close"),
    ]

    def __init__(self, repo: Any, point: Any, paths: list[str], dest: str, *, disk: int = 0,
                 files_total: int = 0, bytes_total: int = 0) -> None:
        super().__init__()
        self.repo, self.point, self.paths, self.disk = repo, point, list(paths), disk
        # a relative directory is shown where it lands (the console's working directory)
        self.dest = dest if dest.startswith(("/", "~")) else os.path.abspath(dest)
        self.progress = ExtractProgress(0, files_total, 0, bytes_total, "")
        self.report: ExtractReport | None = None
        self.error = ""
        self.running = True
        self.stopped = False
        self._cancel = threading.Event()

    def compose(self) -> ComposeResult:
        yield Static("", id="extract-title")
        with Horizontal(classes="extract-row"):
            yield Static("Files", classes="extract-label")
            yield ProgressBar(total=None, show_eta=False, id="extract-files")
            yield Static("", id="extract-files-text", classes="extract-figures")
        with Horizontal(classes="extract-row"):
            yield Static("Bytes", classes="extract-label")
            yield ProgressBar(total=None, show_eta=False, id="extract-bytes")
            yield Static("", id="extract-bytes-text", classes="extract-figures")
        yield Static("", id="extract-current")
        with VerticalScroll(id="extract-scroll"):
            yield Static("", id="extract-result")
        yield Static(Text(NOTHING_TO_VM, style="dim", no_wrap=True, overflow="ellipsis"), id="extract-note")
        yield Footer()

    def on_mount(self) -> None:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" Extract ", style="bold reverse")
        t.append(f" {plural(len(self.paths), 'item')} of {self.point.vm_name or self.point.vm_urn}", style="bold")
        t.append(f" → {self.dest}")
        self.query_one("#extract-title", Static).update(t)
        self._draw()
        paths, dest, disk = self.paths, self.dest, self.disk
        self.run_worker(lambda: self._extract(paths, dest, disk), thread=True, group="files-extract",
                        exit_on_error=False, description="extract files")

    def on_unmount(self) -> None:
        self._cancel.set()   # the console closing: the copy stops at its next read, leaving no partial file

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.running
        if action == "close":
            return not self.running   # stop first: the copy runs in this window
        return True

    def _extract(self, paths: list[str], dest_text: str, disk: int) -> None:
        """Thread: its own PointFiles, the destination made, the engine's extract_to_dir."""
        from pathlib import Path
        last = [0.0]

        def progress(p: ExtractProgress) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY or p.files_done == p.files_total:
                last[0] = now
                self.post_message(Progressed(p))
        try:
            dest = Path(dest_text).expanduser()
            dest.mkdir(parents=True, exist_ok=True)
            with PointFiles(self.repo, self.point) as files:
                report = extract_to_dir(files, paths, dest, disk=disk, progress=progress, cancel=self._cancel)
        except Exception as e:
            self.post_message(Extracted(None, problem(e, "the extraction failed"), self._cancel.is_set()))
            return
        # the engine says whether the stop cut it short (a stop after the last file changed nothing)
        self.post_message(Extracted(report, stopped=bool(getattr(report, "cancelled", self._cancel.is_set()))))

    @on(Progressed)
    def _progressed(self, msg: Progressed) -> None:
        if self.running:
            self.progress = msg.progress
            self._draw()

    @on(Extracted)
    def _extracted(self, msg: Extracted) -> None:
        self.running = False
        self.report, self.error, self.stopped = msg.report, msg.error, msg.stopped
        r = msg.report
        if r is not None and not msg.stopped:
            # the figures end where the copy did (a file that failed never reached its bytes)
            self.progress = ExtractProgress(r.files, max(self.progress.files_total, r.files),
                                            r.bytes, max(self.progress.bytes_total, r.bytes), "")
        self._draw()
        self.query_one("#extract-result", Static).update(self.result_text())
        self.refresh_bindings()

    def _draw(self) -> None:
        p = self.progress
        for key, done, total, text in (
                ("files", p.files_done, p.files_total, f"{p.files_done}/{p.files_total}"),
                ("bytes", p.bytes_done, p.bytes_total,
                 f"{human_bytes(p.bytes_done)} / {human_bytes(p.bytes_total)}")):
            bar = self.query_one(f"#extract-{key}", ProgressBar)
            # nothing to copy (empty directories) is a full bar once done, not an empty one
            bar.update(total=max(total, 1), progress=min(done, total) if total else int(not self.running))
            self.query_one(f"#extract-{key}-text", Static).update(text)
        cur = Text(no_wrap=True, overflow="ellipsis", style="dim")
        if self.running:
            cur.append("stopping…" if self._cancel.is_set() else f"copying {shown_name(p.current)}")
        self.query_one("#extract-current", Static).update(cur)

    def result_text(self) -> Text:
        t = Text()
        r = self.report
        if r is None:
            t.append("✗ Nothing extracted: ", style="bold red")
            t.append(self.error or "the extraction did not run")
            return t
        head = (f"{plural(r.files, 'file')}, {plural(r.dirs, 'directory', 'directories')}, "
                f"{plural(r.symlinks, 'link')}, {human_bytes(r.bytes)}")
        if self.stopped:
            t.append("Stopped: ", style="bold yellow")
            t.append(f"{head} copied before the stop")
        elif r.errors:
            t.append(f"✗ {plural(len(r.errors), 'error')}: ", style="bold red")
            t.append(f"{head} copied")
        else:
            t.append("✓ Copied ", style="bold green")
            t.append(head)
        t.append(f" to {self.dest}\n")
        for title, items, style in (("Errors: not written", r.errors, "red"),
                                    ("Skipped", r.skipped, "yellow")):
            if not items:
                continue
            t.append(f"\n{title} ({len(items)}):\n", style=f"bold {style}")
            for path, why in items[:RESULT_LINES]:
                if path in why:   # the engine's message names the file already
                    t.append(f"  {shown_name(why)}\n", style=style)
                    continue
                t.append(f"  {shown_name(path)}", style=style)
                t.append(f": {shown_name(why)}\n")
            if len(items) > RESULT_LINES:
                t.append(f"  … {len(items) - RESULT_LINES} more\n", style="dim")
        t.rstrip()
        return t

    def action_stop(self) -> None:
        if self.running:
            self._cancel.set()
            if self.is_mounted:
                self._draw()

    def action_close(self) -> None:
        if not self.running:
            self.dismiss(None)


# --- ways in ---------------------------------------------------------------------------------------------

def browse_latest_point(app: Any, vm_urn: str, vm_name: str = "",
                        opener: Callable[[], Any] | None = None) -> None:
    """The VM detail's "browse files of the last backup": the VM's newest restore point, found in a
    thread (the repository is read), then the browser. ``opener``: the repository (tests)."""

    def find() -> None:
        from ..repo import NoRepositoryError, RepoError
        from .repository import open_repository
        name = vm_name or vm_urn
        try:
            repo = opener() if opener is not None else open_repository()
        except NoRepositoryError:
            app.call_from_thread(app.notify, f"No repository yet: back up {name} first (b)", severity="warning")
            return
        except (RepoError, OSError) as e:
            app.call_from_thread(app.notify, f"Cannot read the repository: {e}", severity="error")
            return
        try:
            point = repo.latest_point(vm_urn)
        except Exception as e:   # a damaged catalog: say so, and let go of the repository
            repo.close()
            app.call_from_thread(app.notify, problem(e, "cannot read the repository"), severity="error")
            return
        if point is None:
            repo.close()
            app.call_from_thread(app.notify, f"No backup of {name} in the repository: nothing to browse yet "
                                             "(b backs it up)", severity="warning")
            return
        app.call_from_thread(lambda: app.push_screen(FilesScreen(repo, point, owns_repo=True)))

    app.run_worker(find, thread=True, group="files-open", exit_on_error=False, description="latest point")
