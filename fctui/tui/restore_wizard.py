"""The guided restore: point -> target -> datastores -> pre-checks -> review -> confirm -> progress -> result.

Every step before the confirmation only reads (the engine's :func:`plan_restore` and
:func:`datastore_choices` are read-only), so leaving the wizard anywhere before it changes nothing on the
VRM. Esc goes back one step. An overwrite of the original VM needs its name typed.

VRM and repository calls go through a :class:`RestoreContext` so the same screen runs inside the console
(the calls hop to the feed thread's event loop, where its HTTP client lives) and inside a test app
(direct calls on the test's loop).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from ..jobs.model import JobRecord
from ..jobs.progress import JobsBoard, human_bytes
from .dialogs import ConfirmScreen
from .jobs_screen import render_job_detail

STEPS = ("point", "target", "map", "checks", "review", "confirm", "progress", "result")
STEP_TITLES = {"point": "Restore point", "target": "Target", "map": "Datastores", "checks": "Pre-checks",
               "review": "Review", "confirm": "Confirm", "progress": "Restoring", "result": "Result"}
GIB = 1 << 30
SEV = {"blocker": ("✗", "bold red"), "warning": ("⚠", "yellow"), "info": ("ℹ", "cyan")}


HINTS = {
    "point": "Enter picks · Esc closes · nothing is changed until you confirm",
    "target": "Enter picks · Esc back · nothing is changed until you confirm",
    "name": "Enter: this name · Esc back · nothing is changed until you confirm",
    "map": "Enter picks the datastore for this disk · Esc back · nothing changed yet",
    "checks": "Enter: review · Esc back · nothing has been changed yet",
    "review": "Enter: confirm · Esc back · nothing has been changed yet",
    "confirm": "Esc back · nothing has been changed yet",
    "progress": "c stops the restore (asks first) · Esc leaves it running in the job agent (J shows it)",
    "result": "Enter or Esc closes",
}


class RestoreContext:
    """The VRM client and repository the wizard uses; ``run`` carries a coroutine to the client's loop."""

    def __init__(self, client: Any, repo: Any, *, run: Callable[[Awaitable[Any]], Awaitable[Any]] | None = None,
                 settings: Any = None, journal: Any = None, service: Any = None, spec: Any = None,
                 owns_repo: bool = False) -> None:
        self.client = client
        self.owns_repo = owns_repo  # close the repository when the wizard closes
        self.repo = repo
        self._run = run
        self.settings = settings
        self.journal = journal
        self.service = service    # a JobsService: the job agent runs the restore (it outlives the console)
        self.spec = spec          # the VRM connection the agent is given

    async def call(self, coro: Awaitable[Any]) -> Any:
        return await (self._run(coro) if self._run is not None else coro)


def context_for_app(app: Any) -> RestoreContext:
    """The console's connection: calls run on the feed thread's loop; the repository is the user's."""
    from ..jobs.model import JobError
    from .repository import open_repository
    feed = getattr(app, "feed", None)
    if feed is None or getattr(feed, "client", None) is None:
        raise JobError("not connected to a VRM yet")
    from .jobs_screen import jobs_service
    return RestoreContext(feed.client, open_repository(create=True), run=app.feed_call, service=jobs_service(app),
                          spec=getattr(app, "spec", None), owns_repo=True)


def _tail(name: str, width: int) -> str:
    """Keep the distinctive end of long names ('<vm>-disk2')."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def point_mode(point: Any) -> str:
    modes = {d.mode for d in point.disks}
    return "full" if modes <= {"full"} else "incremental"


# The point list's columns: (id, header, width, right-aligned, gap after). At 80x24 a verified point's
# line did not fit and the option list wrapped it onto two lines: narrow lists show the verification
# without its time, then leave out the snapshot kind, then the disk count (one point = one line).
POINT_COLUMNS = (("time", "time", 16, False, 2), ("kind", "kind", 8, False, 1), ("mode", "mode", 11, False, 1),
                 ("size", "size", 9, True, 1), ("disks", "disks", 9, False, 2),
                 ("verification", "verification", 0, False, 0))
POINT_DROPS = ("kind", "disks")


def _point_cells(point: Any, verified_time: bool) -> dict[str, tuple[str, str]]:
    """(text, style) of each column of ``point``."""
    if point.verified_at:
        verification = (f"verified {_when(point.verified_at)}" if verified_time else "verified", "green")
    else:
        verification = ("not verified", "yellow")
    return {"time": (_when(point.created), ""), "kind": (point.kind, "cyan"), "mode": (point_mode(point), "cyan"),
            "size": (human_bytes(point.size_bytes), ""), "disks": (f"{len(point.disks)} disk(s)", ""),
            "verification": verification}


def point_columns(points: list[Any], width: int | None) -> tuple[list[str], bool]:
    """The columns the point list shows in ``width`` cells (None: all), and whether the verification
    shows its time; the same for every point, so the columns line up under the header."""
    ids = [c[0] for c in POINT_COLUMNS]
    if width is None:
        return ids, True
    widths = {c[0]: c[2] + c[4] for c in POINT_COLUMNS}

    def need(cols: list[str], verified_time: bool) -> int:
        last = max((len(_point_cells(p, verified_time)["verification"][0]) for p in points), default=0)
        return sum(widths[c] for c in cols if c != "verification") + (last if "verification" in cols else 0)
    for verified_time in (True, False):
        if need(ids, verified_time) <= width:
            return ids, verified_time
    for drop in POINT_DROPS:
        ids = [c for c in ids if c != drop]
        if need(ids, False) <= width:
            break
    return ids, False


def _point_line(cells: dict[str, tuple[str, str]], columns: list[str], width: int | None) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    for cid, _, w, right, gap in POINT_COLUMNS:
        if cid not in columns:
            continue
        text, style = cells[cid]
        t.append(text.rjust(w) if right else text.ljust(w), style=style)
        t.append(" " * gap)
    t.rstrip()
    if width is not None and width > 0:
        t.truncate(width, overflow="ellipsis")
    return t


def point_label(point: Any, columns: tuple[list[str], bool] | None = None, width: int | None = None) -> Text:
    cols, verified_time = columns or point_columns([point], width)
    return _point_line(_point_cells(point, verified_time), cols, width)


def point_header(columns: tuple[list[str], bool], width: int | None = None) -> Text:
    cells = {c[0]: (c[1], "") for c in POINT_COLUMNS}
    return _point_line(cells, columns[0], width)


class RestoreWizard(Screen[None]):
    """One screen, one step at a time; ``step`` names the current one."""

    DEFAULT_CSS = """
    RestoreWizard #wiz-title { height: 1; background: $primary-background; }
    RestoreWizard #wiz-scroll { height: 1fr; padding: 0 1; }
    RestoreWizard #wiz-scroll.-short { height: auto; }
    RestoreWizard #wiz-options { height: auto; max-height: 12; margin: 0 1; }
    RestoreWizard #wiz-input { margin: 0 1; }
    RestoreWizard #wiz-error { height: auto; color: $error; padding: 0 1; }
    RestoreWizard #wiz-hint { height: 1; padding: 0 1; background: $boost; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="restore.back"),
        Binding("enter", "next", "Next", id="restore.next"),
        Binding("s", "toggle_stop", "Stop VM first", id="restore.stop_vm"),
        Binding("o", "toggle_power_on", "Power on after", id="restore.power_on"),
        Binding("q", "close", "Close", show=False, id="restore.close"),
        # stopping a running restore has its own key and a confirmation; Esc only ever goes back or closes
        Binding("c", "cancel_restore", "Stop the restore", id="restore.cancel"),
    ]

    def __init__(self, ctx: RestoreContext, vm_urn: str, *, vm_name: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.ctx = ctx
        self.vm_urn = vm_urn
        self.vm_name = vm_name
        self.clock = clock
        self.step = "point"
        self.points: list[Any] = []
        self.point: Any = None
        self.target = ""
        self.disk_volume: str | None = None
        self.new_name: str | None = None   # None: the CLI's default (jobs.restore.default_vm_name)
        self.naming = False                # step 2, "New VM" picked: its name is asked for
        self.power_on = False
        self.stop_vm = False
        self.datastores: dict[str, str] = {}
        self.map_disks: list[Any] = []
        self.map_index = 0
        self.choices: list[Any] = []
        self.plan: Any = None
        self.job: JobRecord | None = None
        self.result: dict[str, Any] | None = None
        self.error = ""
        self.busy = False
        self.started = False            # the restore was submitted (after this, nothing is undone by Esc)
        self._cancel: Any = None
        self._run_loop: asyncio.AbstractEventLoop | None = None
        self._board = JobsBoard(clock=time.monotonic)
        self._dirty = False
        self._agent_job = ""

    # --- layout -----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="wiz-title")
        with VerticalScroll(id="wiz-scroll"):
            yield Static("", id="wiz-body")
        yield OptionList(id="wiz-options")
        yield Input(id="wiz-input")
        yield Static("", id="wiz-error")
        yield Static("", id="wiz-hint")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(0.25, self._tick)
        self.points = sorted(self.ctx.repo.points(self.vm_urn), key=lambda p: -p.created)
        if not self.vm_name and self.points:
            self.vm_name = self.points[0].vm_name
        self.show()

    def on_unmount(self) -> None:
        if self.ctx.owns_repo:
            try:
                self.ctx.repo.close()
            except Exception:  # closing must not raise while the screen goes away
                pass

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "toggle_stop":
            return self.step == "checks" and self.target == "original"
        if action == "toggle_power_on":
            return self.step in ("checks", "review") and self.target in ("new", "original")
        if action == "next":
            return self.step in ("checks", "review", "confirm", "result")
        if action == "cancel_restore":
            return self.step == "progress"
        if action == "back" and self.step == "progress":
            # leaving is safe only when the job agent runs the restore (it outlives this screen)
            return self.ctx.service is not None
        return True

    def _title(self) -> Text:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" Restore ", style="bold reverse")
        idx = STEPS.index(self.step)
        for i, s in enumerate(STEPS[:6]):
            if s == self.step:
                t.append(f" {i + 1} {STEP_TITLES[s]} ", style="bold reverse")
            else:
                t.append(f" {i + 1} ", style="" if i < idx else "dim")
        if idx >= 6:
            t.append(f" {STEP_TITLES[self.step]} ", style="bold reverse")
        t.append(f" {self.vm_name or self.vm_urn}", style="bold")
        return t

    def show(self) -> None:
        """Render the current step from the wizard's state."""
        self.query_one("#wiz-title", Static).update(self._title())
        body = self.query_one("#wiz-body", Static)
        opts = self.query_one("#wiz-options", OptionList)
        inp = self.query_one("#wiz-input", Input)
        err = self.query_one("#wiz-error", Static)
        err.update(self.error)
        self.query_one("#wiz-hint", Static).update(Text(self._hint(), style="dim", no_wrap=True,
                                                        overflow="ellipsis"))
        opts.display = self.step in ("point", "target", "map") and not self.naming
        # with a list to pick from the text above it is short; otherwise the text takes the screen
        self.query_one("#wiz-scroll").set_class(opts.display, "-short")
        inp.display = self.step == "confirm" and self.target == "original" or self.naming
        # Only the widget that takes this step's Enter is focusable: Tab must not park the focus on the
        # text above a list or an input, where Enter and Down do nothing.
        self.query_one("#wiz-scroll").can_focus = not (opts.display or inp.display)
        body.update(getattr(self, f"_body_{self.step}")())
        if opts.display:
            opts.clear_options()
            opts.add_options(getattr(self, f"_options_{self.step}")())
            if opts.option_count:
                opts.highlighted = 0
            opts.focus()
        elif inp.display and self.naming:
            inp.value = self.new_name or self._default_name()
            inp.placeholder = "name of the new VM"
            inp.cursor_position = len(inp.value)
            inp.focus()
        elif inp.display:
            inp.value = ""
            inp.placeholder = f"type {self.plan.vm_name if self.plan else ''} to confirm"
            inp.focus()
        else:
            self.query_one("#wiz-scroll").focus()
        self.query_one("#wiz-scroll", VerticalScroll).scroll_home(animate=False)
        self.refresh_bindings()

    def _hint(self) -> str:
        if self.step == "progress" and self.ctx.service is None:
            return "c stops the restore (asks first) · it runs in this window until it ends"
        return HINTS.get("name" if self.naming else self.step, "")

    def go(self, step: str) -> None:
        self.step = step
        self.naming = False
        self.error = ""
        self.show()

    # --- step 1: the restore point ---------------------------------------------------------------

    def _body_point(self) -> Text:
        t = Text()
        if not self.points:
            t.append(f"No restore point of {self.vm_name or self.vm_urn} in the repository.\n", style="bold")
            t.append("Back up the VM first (b in the inventory). Esc closes.", style="dim")
            return t
        t.append("Pick the restore point to restore", style="bold")
        t.append(f"  ({len(self.points)} point(s), newest first)\n", style="dim")
        width = self._point_width()
        header = point_header(point_columns(self.points, width), width)
        header.stylize("dim")
        t.append("  ")   # indented as the list's text is (its margin, border and padding)
        t.append_text(header)
        return t

    def _point_width(self) -> int:
        """The cells a point line has in the option list; before the first layout, from the screen."""
        width = self.query_one("#wiz-options", OptionList).scrollable_content_region.width - 2
        return width if width > 20 else max(20, self.app.size.width - 8)

    def _options_point(self) -> list[Option]:
        width = self._point_width()
        columns = point_columns(self.points, width)
        return [Option(point_label(p, columns, width), id=p.id) for p in self.points]

    # --- step 2: the target ------------------------------------------------------------------------

    def _body_target(self) -> Text:
        p = self.point
        t = Text()
        t.append(f"Point {p.id}", style="bold")
        t.append(f" · {p.kind} · {point_mode(p)} · {human_bytes(p.size_bytes)}\n")
        if self.naming:
            t.append("Name of the new VM ", style="bold")
            t.append(f"(1 to 256 characters; {p.vm_name} is left untouched)", style="dim")
            return t
        t.append("Where should it go? Only the original VM option overwrites anything.", style="dim")
        return t

    def _default_name(self) -> str:
        from ..jobs.restore import default_vm_name
        return default_vm_name(self.point)

    def _name_typed(self, value: str) -> None:
        """The name field of a new VM: checked as the CLI's --name is, then on to the datastores."""
        from ..jobs.restore import RestoreError, check_vm_name
        name = value.strip()
        try:
            check_vm_name(name)
        except RestoreError as e:
            self.error = f"{e}."
            self.query_one("#wiz-error", Static).update(self.error)
            return
        self.new_name = None if name == self._default_name() else name
        self.naming = False
        self._map_disks()

    def _map_disks(self) -> None:
        self.map_disks = [d for d in self.point.disks if self.target == "new" or d.volume_urn == self.disk_volume]
        self.map_index = 0
        self.run_worker(self._load_choices(), group="restore-wizard", exclusive=True, exit_on_error=False)

    def _options_target(self) -> list[Option]:
        p = self.point
        out = [Option(Text.assemble(("New VM", "bold"), f" — a new VM from the {len(p.disks)} disk(s); "
                                    f"{p.vm_name} is left untouched"), id="new"),
               Option(Text.assemble(("Original VM", "bold red"), f" — overwrite the disks of {p.vm_name} "
                                    "(it must be stopped)"), id="original"),
               # third, above the per-disk options: with many disks it stays in view at 80x24
               Option(Text.assemble(("Files", "bold"), " — browse this point and copy files to this machine"),
                      id="files")]
        for d in p.disks:
            out.append(Option(Text.assemble(("Single disk", "bold"),
                                            f" {d.disk_name} ({human_bytes(d.size_bytes)}) — to a new volume, "
                                            "left detached"), id=f"disk:{d.volume_urn}"))
        return out

    # --- step 3: datastores per disk ----------------------------------------------------------------

    def _body_map(self) -> Text:
        t = Text()
        d = self.map_disks[self.map_index]
        t.append(f"Disk {self.map_index + 1} of {len(self.map_disks)}: ", style="bold")
        t.append(f"{d.disk_name} · {human_bytes(d.size_bytes)} · backed up from {d.storage_type} storage\n")
        ok = [c for c in self.choices if c.compatible]
        bad = [c for c in self.choices if not c.compatible]
        if not ok:
            t.append("No compatible datastore: the restore cannot place this disk.\n", style="bold red")
        else:
            t.append("Compatible (storage class, CPU architecture, space), the VM's cluster first:\n", style="dim")
        if bad:
            t.append(f"{len(bad)} not offered, e.g.\n", style="dim")
            for c in bad[:2]:
                line = Text(f"  {c.datastore.name}: {c.reason}", style="dim", no_wrap=True, overflow="ellipsis")
                line.truncate(max(76, self.app.size.width - 4), overflow="ellipsis")
                t.append_text(line)
                t.append("\n")
        t.rstrip()
        return t

    def _options_map(self) -> list[Option]:
        # One line per datastore: the option list would wrap a long prompt, so it is cut to the list's width
        # (less a scrollbar); before the first layout the width is not known yet.
        width = self.query_one("#wiz-options", OptionList).scrollable_content_region.width - 2
        out = []
        for c in self.choices:
            if not c.compatible:
                continue
            ds = c.datastore
            label = Text(no_wrap=True, overflow="ellipsis")
            label.append(f"{ds.name:<22}", style="bold")
            free = human_bytes(None if c.free_gb is None else c.free_gb * (1 << 30))
            label.append(f" {ds.storage_type:<10} {free:>9} free")
            label.append(f" · {c.where}", style="dim")
            if width > 40:
                label.truncate(width, overflow="ellipsis")
            out.append(Option(label, id=ds.urn))
        return out

    async def _load_choices(self) -> None:
        from ..jobs.restore import datastore_choices
        d = self.map_disks[self.map_index]
        self.busy = True
        try:
            self.choices = await self.ctx.call(datastore_choices(self.ctx.client, self.ctx.repo, self.point.id,
                                                                 d.volume_urn))
        except Exception as e:  # VRM or repository trouble: stay on the step, say why
            self.error = f"could not list datastores: {e}"
            self.choices = []
        finally:
            self.busy = False
        self.step = "map"
        self.show()

    # --- step 4: pre-checks --------------------------------------------------------------------------

    def request(self) -> Any:
        from ..jobs.restore import RestoreRequest
        return RestoreRequest(point_id=self.point.id, target=self.target, name=self.new_name,
                              datastores=dict(self.datastores), power_on=self.power_on, stop_vm=self.stop_vm,
                              disk_volume=self.disk_volume)

    async def _plan(self) -> None:
        from ..jobs.restore import plan_restore
        self.busy = True
        try:
            self.plan = await self.ctx.call(plan_restore(self.ctx.client, self.ctx.repo, self.request()))
            self.error = ""
        except Exception as e:
            self.plan = None
            self.error = f"could not plan the restore: {e}"
        finally:
            self.busy = False
        self.step = "checks"
        self.show()

    def _body_checks(self) -> Text:
        t = Text()
        if self.plan is None:
            t.append("Planning…" if self.busy else "No plan (see the error below). Esc goes back.", style="dim")
            return t
        fs = self.plan.findings
        checks = list(self.plan.checks)
        blockers = sum(1 for f in fs if f.severity == "blocker")
        warnings = sum(1 for f in fs if f.severity == "warning")
        if not fs:
            t.append(f"✓ Every pre-check passed ({len(checks)} ran):\n", style="bold green")
        else:
            t.append(f"{len(checks)} pre-check(s) ran: {blockers} blocker(s), {warnings} warning(s)\n",
                     style="bold red" if blockers else "bold yellow")

        def finding(f: Any) -> None:
            mark, style = SEV.get(f.severity, ("·", ""))
            t.append(f"{mark} {f.rule}", style=style)
            t.append(f": {f.message}\n")
            if f.remediation:
                t.append(f"    → {f.remediation}\n", style="dim")
        # each check that ran, with its result: what it found, or that it passed
        for rule, what in checks:
            found = [f for f in fs if f.rule == rule]
            if not found:
                t.append(f"✓ {rule}", style="green")
                t.append(f": {what}\n")
            for f in found:
                finding(f)
        for f in fs:
            if all(f.rule != rule for rule, _ in checks):
                finding(f)
        t.append("\n")
        if self.target == "original":
            t.append(f"Stop the VM before overwriting: {'yes' if self.stop_vm else 'no'} (s toggles)\n")
        if self.plan.blocked:
            t.append("Blocked: fix the findings above (or go back with Esc and choose differently).",
                     style="bold red")
        else:
            t.append("Enter: review what will be done.", style="bold")
        return t

    # --- step 5: review -------------------------------------------------------------------------------

    def _body_review(self) -> Text:
        p = self.plan
        t = Text()
        t.append(f"Restore point {p.point.id} ({p.point.vm_name}, {_when(p.point.created)})\n", style="bold")
        t.append("Will be created:\n", style="bold green")
        for c in p.creates or ["nothing"]:
            t.append(f"  + {c}\n")
        t.append("Will be overwritten:\n", style="bold red" if p.overwrites else "bold")
        for o in p.overwrites or ["nothing"]:
            t.append(f"  ! {o}\n", style="red" if p.overwrites else "")
        t.append("Will be powered off:\n", style="bold yellow" if p.powers_off else "bold")
        for o in p.powers_off or ["nothing"]:
            t.append(f"  ⏻ {o}\n", style="yellow" if p.powers_off else "")
        t.append("Disks:\n", style="bold")
        for d in p.disks:
            to = d.target_datastore_name or d.target_datastore_urn
            size = human_bytes(d.bytes_to_write) if d.bytes_to_write is not None else "differing blocks"
            t.append(f"  {_tail(d.disk_name, 14):<14} → {_tail(to, 20):<20} {d.mode:<9} {size}\n")
        for f in p.findings:
            if f.severity != "blocker":
                mark, style = SEV.get(f.severity, ("·", ""))
                t.append(f"{mark} {f.message}\n", style=style)
        return t

    # --- step 6: confirm -------------------------------------------------------------------------------

    def _body_confirm(self) -> Text:
        p = self.plan
        t = Text()
        if self.target == "original":
            t.append("This overwrites the disks of ", style="bold red")
            t.append(p.vm_name, style="bold reverse")
            t.append(".\n", style="bold red")
            if p.powers_off:
                t.append("The VM is powered off first.\n", style="yellow")
            t.append("Type the VM's name and press Enter to start. Esc goes back.", style="bold")
        else:
            t.append("Ready to start.\n", style="bold")
            t.append(f"{len(p.creates)} item(s) will be created; nothing existing is changed.\n")
            t.append("Enter starts the restore. Esc goes back.", style="bold")
        return t

    # --- step 7/8: progress and result ----------------------------------------------------------------

    def _body_progress(self) -> Text:
        if self.job is None:
            return Text("Starting…", style="dim")
        fig = self._board.figures(self.job.id)
        if fig is None:
            self._board.apply({"event": "job", "job": self.job.to_dict()})
            fig = self._board.figures(self.job.id)
        assert fig is not None
        return render_job_detail(self.job, fig, now=self.clock(), log_lines=6)

    def _body_result(self) -> Text:
        t = Text()
        job = self.job
        res = self.result or {}
        if job is None:
            return t
        ok = job.state == "succeeded"
        t.append(f"Restore {job.state}", style="bold green" if ok else "bold red")
        t.append(f" · job {job.id}\n")
        if job.error:
            t.append(f"{job.error}\n", style="red")
        if res.get("vm"):
            t.append(f"VM: {res['vm']}\n")
        t.append("Verification per disk (target read back and compared with the restore point):\n", style="bold")
        names = {d.volume: d.name for v in job.vms for d in v.disks}
        for v in res.get("volumes") or []:
            mark = ("✓ identical", "green") if v.get("verified") else ("✗ not verified", "bold red")
            t.append(f"  {_tail(names.get(v.get('source'), ''), 14):<14} ")
            t.append(f"{mark[0]:<15}", style=mark[1])
            t.append(f" {v.get('target') or '-'}\n", style="dim")
        return t

    def show_job(self, job: JobRecord, *, final: bool = False) -> None:
        """Show a job record (the live one, or a recorded one in tests) on the progress/result step."""
        from ..jobs.restore import restore_result
        self.job = job
        self._board.apply({"event": "job", "job": job.to_dict()})
        if final or job.is_final:
            self.result = restore_result(job)
            self.go("result")
        else:
            self.go("progress")

    def shows_job(self, job_id: str) -> bool:
        """The progress and result steps show this restore's outcome and error in place."""
        return self.job is not None and self.job.id == job_id or self._agent_job == job_id

    def _tick(self) -> None:
        if self.step == "progress" and self.ctx.service is not None and self.job is not None:
            live = self.ctx.service.board.get(self.job.id)
            if live is not None:
                self.job = live
                self._board = self.ctx.service.board
                self.query_one("#wiz-body", Static).update(self._body_progress())
            return
        if self.step == "progress" and self._dirty and self.job is not None:
            self._dirty = False
            d = self.job.to_dict()
            d.pop("log", None)
            self._board.apply({"event": "job", "job": d})
            self._board.jobs[self.job.id].log = list(self.job.log)
            self.query_one("#wiz-body", Static).update(self._body_progress())

    async def _run_by_agent(self) -> None:
        from ..jobs.restore import restore_result
        svc = self.ctx.service
        self.job = JobRecord(id="(submitting)", type="restore", state="queued")
        self.go("progress")
        try:
            job_id = await svc.submit_restore(self.request().to_json(), spec=self.ctx.spec)
        except Exception as e:
            self.job.state, self.job.error = "failed", f"could not submit the restore: {e}"
            self.result = restore_result(self.job)
            self.go("result")
            return
        self.job = JobRecord(id=job_id, type="restore", state="queued")
        self._agent_job = job_id
        while True:
            live = svc.board.get(job_id)
            if live is not None and live.is_final:
                break
            await asyncio.sleep(0.2)
        try:
            job = await svc.job_record(job_id)
        except Exception:
            job = svc.board.get(job_id)
        self.job = job
        self.result = restore_result(job)
        self.go("result")   # the result step says how it ended, with the error: no toast over it

    async def _run(self) -> None:
        if self.ctx.service is not None:
            await self._run_by_agent()
            return
        from ..jobs.restore import new_restore_id, restore_result, run_restore
        from ..jobs.runner import Reporter
        job = JobRecord(id=new_restore_id(), type="restore", targets=[self.point.id])
        self.job = job

        def sink(ev: dict[str, Any]) -> None:   # runs on the client's loop: only flag, the UI reads later
            self._dirty = True

        async def go() -> JobRecord:
            self._cancel = asyncio.Event()
            self._run_loop = asyncio.get_running_loop()
            reporter = Reporter(job, sink, interval=0.2)
            kw: dict[str, Any] = {"reporter": reporter, "cancel": self._cancel, "job": job}
            if self.ctx.settings is not None:
                kw["settings"] = self.ctx.settings
            if self.ctx.journal is not None:
                kw["journal"] = self.ctx.journal
            return await run_restore(self.ctx.client, self.ctx.repo, self.plan, **kw)

        self.go("progress")
        try:
            job = await self.ctx.call(go())
        except Exception as e:   # the engine reports failures in the record; this is the unexpected rest
            job.state, job.error = "failed", str(e) or type(e).__name__
        self.job = job
        self.result = restore_result(job)
        self.go("result")   # the result step says how it ended, with the error: no toast over it

    # --- navigation ----------------------------------------------------------------------------------

    @on(OptionList.OptionSelected, "#wiz-options")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if self.busy:
            return
        oid = event.option.id or ""
        if self.step == "point":
            self.point = next(p for p in self.points if p.id == oid)
            self.datastores, self.plan = {}, None
            self.go("target")
        elif self.step == "target":
            self.plan = None
            self.datastores = {}
            if oid == "files":
                # nothing is restored: the browser opens over this step, Esc there comes back here
                from .files_screen import FilesScreen
                self.app.push_screen(FilesScreen(self.ctx.repo, self.point))
                return
            if oid.startswith("disk:"):
                self.target, self.disk_volume = "disk", oid[5:]
            else:
                self.target, self.disk_volume = oid, None
            self.stop_vm = False
            if self.target == "original":
                self.run_worker(self._plan(), group="restore-wizard", exclusive=True, exit_on_error=False)
            elif self.target == "new":
                self.naming = True
                self.error = ""
                self.show()
            else:
                self._map_disks()
        elif self.step == "map":
            self.datastores[self.map_disks[self.map_index].volume_urn] = oid
            if self.map_index + 1 < len(self.map_disks):
                self.map_index += 1
                self.run_worker(self._load_choices(), group="restore-wizard", exclusive=True, exit_on_error=False)
            else:
                self.run_worker(self._plan(), group="restore-wizard", exclusive=True, exit_on_error=False)

    def action_next(self) -> None:
        if self.busy:
            return
        if self.step == "checks":
            if self.plan is not None and not self.plan.blocked:
                self.go("review")
        elif self.step == "review":
            self.go("confirm")
        elif self.step == "confirm":
            if self.target == "original":
                return  # the typed name is submitted through the input
            self._start()
        elif self.step == "result":
            self.dismiss(None)

    @on(Input.Submitted, "#wiz-input")
    def _typed(self, event: Input.Submitted) -> None:
        event.stop()
        if self.naming:
            self._name_typed(event.value)
            return
        if self.step != "confirm" or self.plan is None:
            return
        if event.value.strip() != self.plan.vm_name:
            self.error = f"The name does not match: type {self.plan.vm_name} exactly to overwrite it."
            self.query_one("#wiz-error", Static).update(self.error)
            return
        self._start()

    def _start(self) -> None:
        if self.started or self.plan is None or self.plan.blocked:
            return
        if getattr(self.app, "read_only", False):
            self.error = "Read-only mode: restores cannot be started."
            self.show()
            return
        self.started = True
        self.run_worker(self._run(), group="restore-run", exit_on_error=False)

    def action_toggle_stop(self) -> None:
        self.stop_vm = not self.stop_vm
        self.run_worker(self._plan(), group="restore-wizard", exclusive=True, exit_on_error=False)

    def action_toggle_power_on(self) -> None:
        self.power_on = not self.power_on
        back = self.step
        async def replan() -> None:
            await self._plan()
            if back == "review" and self.plan is not None and not self.plan.blocked:
                self.go("review")
        self.run_worker(replan(), group="restore-wizard", exclusive=True, exit_on_error=False)

    def action_back(self) -> None:
        if self.busy:
            return
        if self.step == "point":
            self.dismiss(None)
        elif self.step == "target" and self.naming:
            self.go("target")
        elif self.step == "target":
            self.go("point")
        elif self.step == "map":
            if self.map_index > 0:
                self.map_index -= 1
                self.run_worker(self._load_choices(), group="restore-wizard", exclusive=True, exit_on_error=False)
            else:
                self.go("target")
        elif self.step == "checks":
            if self.target == "original" or not self.map_disks:
                self.go("target")
            else:
                self.map_index = len(self.map_disks) - 1
                self.run_worker(self._load_choices(), group="restore-wizard", exclusive=True, exit_on_error=False)
        elif self.step == "review":
            self.go("checks")
        elif self.step == "confirm":
            self.go("review")
        elif self.step == "progress":
            if self.ctx.service is not None:
                self.app.notify("The restore goes on in the job agent: J shows it", timeout=4)
                self.dismiss(None)
        elif self.step == "result":
            self.dismiss(None)

    def action_close(self) -> None:
        if self.step in ("progress",):
            return
        self.dismiss(None)

    def action_cancel_restore(self) -> None:
        if self.step == "progress":
            self._request_cancel()

    def _request_cancel(self) -> None:
        def confirmed(ok: bool | None) -> None:
            if not ok:
                return
            if self.ctx.service is not None and self._agent_job:
                job_id = self._agent_job

                async def cancel() -> None:
                    try:
                        await self.ctx.service.cancel(job_id)
                    except Exception as e:
                        self.app.notify(f"Cancel failed: {e}", severity="error")
                self.run_worker(cancel(), group="restore-cancel", exit_on_error=False)
            elif self._cancel is not None and self._run_loop is not None:
                self._run_loop.call_soon_threadsafe(self._cancel.set)

        self.app.push_screen(ConfirmScreen("Stop the restore?",
                                           "The transfer stops and what the restore created is removed "
                                           "(an overwrite leaves a journal record to retry).",
                                           yes="Stop the restore", no="Keep it running"),
                             confirmed)


def start_restore_wizard(app: Any, vm_urn: str, vm_name: str = "") -> None:
    """``r`` on a VM in the inventory."""
    if getattr(app, "read_only", False):
        app.notify("Read-only mode: restores cannot be started", severity="warning")
        return
    try:
        ctx = context_for_app(app)
    except Exception as e:
        app.notify(f"Restore unavailable: {e}", severity="error")
        return
    app.push_screen(RestoreWizard(ctx, vm_urn, vm_name=vm_name))
