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
from dataclasses import dataclass, field
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
    "site": "Enter picks the site the new VM goes to · Esc back · nothing is changed until you confirm",
    "map-disks": "Enter picks the datastore for this disk · Esc back · nothing changed yet",
    "map-nics": "Enter picks the port group (or none) · Esc back · nothing changed yet",
    "map-location": "Enter picks where the new VM goes · Esc back · nothing changed yet",
    "checks": "Enter: review · Esc back · nothing has been changed yet",
    "review": "Enter: confirm · Esc back · nothing has been changed yet",
    "confirm": "Esc back · nothing has been changed yet",
    "progress": "c stops the restore (asks first) · Esc leaves it running in the job agent (J shows it)",
    "result": "Enter or Esc closes",
}


@dataclass
class RestoreSite:
    """One VRM a new VM can be restored into (the console's sites). ``run`` carries a coroutine to the
    loop of ``client`` (the site's feed thread in the console); ``site_uri`` is asked for when empty."""
    label: str
    client: Any
    run: Callable[[Awaitable[Any]], Awaitable[Any]] | None = None
    spec: Any = None
    site_uri: str = ""

    async def call(self, coro: Awaitable[Any]) -> Any:
        return await (self.run(coro) if self.run is not None else coro)


@dataclass
class TargetSite:
    """What the mapping step offers on another site, read once when the site is picked."""
    uri: str
    id: str
    datastores: list[Any] = field(default_factory=list)
    port_groups: list[Any] = field(default_factory=list)
    clusters: list[Any] = field(default_factory=list)
    hosts: list[Any] = field(default_factory=list)
    remembered: Any = None       # the site pair's SiteMapping, None: never restored between them
    suggested: Any = None        # remembered completed with suggestions (sitemap.suggest_mapping)


class RestoreContext:
    """The VRM client and repository the wizard uses; ``run`` carries a coroutine to the client's loop.
    ``sites``: the console's VRMs when it has several (a new VM may go to another site); the first one whose
    site is the restore point's is ``client``'s."""

    def __init__(self, client: Any, repo: Any, *, run: Callable[[Awaitable[Any]], Awaitable[Any]] | None = None,
                 settings: Any = None, journal: Any = None, service: Any = None, spec: Any = None,
                 owns_repo: bool = False, sites: list[RestoreSite] | None = None,
                 mappings: Any = None) -> None:
        self.sites = list(sites or [])
        self.mappings = mappings  # a SiteMappingStore (None: the data dir's)
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


def context_for_app(app: Any, vm_urn: str | None = None) -> RestoreContext:
    """The console's connection to the VRM of ``vm_urn`` (several VRMs: the VM's own; else the only
    one): calls run on that feed thread's loop; the repository is the user's."""
    from functools import partial

    from ..jobs.model import JobError
    from .repository import open_repository
    feed_of = getattr(app, "feed_of", None)
    feed = feed_of(vm_urn) if feed_of is not None else getattr(app, "feed", None)
    if feed is None or getattr(feed, "client", None) is None:
        raise JobError("not connected to a VRM yet")
    from .jobs_screen import jobs_service, spec_for
    run = partial(app.feed_call, urn=vm_urn) if feed_of is not None else app.feed_call
    return RestoreContext(feed.client, open_repository(create=True), run=run, service=jobs_service(app),
                          spec=spec_for(app, vm_urn), owns_repo=True, sites=sites_of_app(app))


def sites_of_app(app: Any) -> list[RestoreSite]:
    """The console's VRMs as restore targets (several only in a multi-site console: ``app.sites``, each
    with its feed, and its connection); calls go to the site's feed loop (``app.feed_call(site=i)``)."""
    from functools import partial
    out: list[RestoreSite] = []
    for i, st in enumerate(getattr(app, "sites", None) or []):
        feed = getattr(st, "feed", None)
        if feed is None or getattr(feed, "client", None) is None:
            continue
        site = getattr(st, "site", None)
        out.append(RestoreSite(label=str(getattr(st, "label", "") or getattr(site, "name", "") or "site"),
                               client=feed.client, run=partial(app.feed_call, site=getattr(st, "index", i)),
                               spec=getattr(st, "spec", None), site_uri=str(getattr(site, "uri", "") or "")))
    return out if len(out) > 1 else []


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
        # another site (issue 19): the site picked, what it offers, and the NICs' and location's mapping
        self.picking_site = False          # step 2, after the name: the site the new VM goes to
        self.site: RestoreSite | None = None   # None: the point's own site (ctx.client), as with one VRM
        self.tsite: TargetSite | None = None   # set when the site picked is not the point's
        self.map_phase = "disks"           # "disks" | "nics" | "location" (the last two: another site only)
        self.port_groups: dict[str, str] = {}
        self.location = ""
        self.map_nics: list[tuple[str, str]] = []   # (source port group URN, "NIC names · port group name")
        self.nic_index = 0
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
                title = "Mapping" if s == "map" and self.tsite is not None else STEP_TITLES[s]
                t.append(f" {i + 1} {title} ", style="bold reverse")
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
        sub = "site" if self.step == "target" and self.picking_site else self.step
        body.update(getattr(self, f"_body_{sub}")())
        if opts.display:
            opts.clear_options()
            options = getattr(self, f"_options_{sub}")()
            opts.add_options(options)
            if opts.option_count:
                default = self._default_option()
                ids = [o.id for o in options]
                opts.highlighted = ids.index(default) if default in ids else 0
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
        if self.naming:
            return HINTS["name"]
        if self.step == "target" and self.picking_site:
            return HINTS["site"]
        if self.step == "map" and self.tsite is not None:
            return HINTS[f"map-{self.map_phase}"]
        return HINTS.get(self.step, "")

    def go(self, step: str) -> None:
        self.step = step
        self.naming = False
        self.picking_site = False
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
        if self.ctx.sites:   # several VRMs: which one the new VM goes to
            self.picking_site = True
            self.run_worker(self._load_sites(), group="restore-wizard", exclusive=True, exit_on_error=False)
            return
        self._map_disks()

    def _map_disks(self) -> None:
        self.map_disks = [d for d in self.point.disks if self.target == "new" or d.volume_urn == self.disk_volume]
        self.map_index = 0
        self.map_phase = "disks"
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

    # --- step 2b: the site a new VM goes to (several VRMs) ------------------------------------------

    def _own_uri(self) -> str:
        from ..vrm.urn import site_uri
        return site_uri(self.point.vm_urn if self.point is not None else self.vm_urn)

    @property
    def other_site(self) -> str:
        """The label of the site restored into when it is not the point's own ("" when it is)."""
        return self.site.label if self.tsite is not None and self.site is not None else ""

    def _target(self) -> RestoreSite | None:
        """The site restored into: the one picked, else the point's own among the console's sites."""
        if self.site is not None:
            return self.site
        own = self._own_uri()
        return next((s for s in self.ctx.sites if s.site_uri == own), None)

    def _client(self) -> Any:
        t = self._target()
        return t.client if t is not None else self.ctx.client

    def _spec(self) -> Any:
        t = self._target()
        return t.spec if t is not None and t.spec is not None else self.ctx.spec

    async def _call(self, coro: Awaitable[Any]) -> Any:
        t = self._target()
        return await (t.call(coro) if t is not None else self.ctx.call(coro))

    async def _load_sites(self) -> None:
        """Each site's URI (asked of its VRM when the console did not know it yet)."""
        self.busy = True
        try:
            for st in self.ctx.sites:
                if not st.site_uri:
                    sites = await st.call(st.client.sites())
                    st.site_uri = sites[0].uri if sites else ""
            self.error = ""
        except Exception as e:  # one VRM unreachable: the others can still be picked
            self.error = f"could not ask every VRM for its site: {e}"
        finally:
            self.busy = False
        self.show()

    def _body_site(self) -> Text:
        p = self.point
        t = Text()
        t.append(f"Point {p.id}", style="bold")
        t.append(f" · new VM {self.new_name or self._default_name()}\n")
        t.append("Which VRM does the new VM go to? ", style="bold")
        t.append("On another site, its datastores, networks and place are mapped next.", style="dim")
        return t

    def _options_site(self) -> list[Option]:
        own = self._own_uri()
        out = []
        for i, st in enumerate(self.ctx.sites):
            label = Text.assemble((st.label, "bold"))
            if st.site_uri == own:
                label.append(" — this VM's site (as with one VRM)", style="dim")
            elif st.site_uri:
                label.append(" — another site: map datastores, port groups and location", style="dim")
            else:
                label.append(" — not reachable now", style="red")
            out.append(Option(label, id=f"site:{i}", disabled=not st.site_uri))
        return out

    def _site_picked(self, index: int) -> None:
        self.site = self.ctx.sites[index]
        self.picking_site = False
        self.tsite = None
        self.port_groups, self.location = {}, ""
        if self.site.site_uri == self._own_uri():
            self._map_disks()
            return
        self.run_worker(self._load_target(), group="restore-wizard", exclusive=True, exit_on_error=False)

    async def _load_target(self) -> None:
        """What the other site offers, the site pair's remembered mapping and the suggestions."""
        from ..jobs.sitemap import SiteMappingStore, point_port_groups, suggest_mapping
        from ..vrm.urn import last_segment, site_id
        st = self.site
        assert st is not None
        self.busy = True
        try:
            uri = st.site_uri
            client = st.client
            stores = await st.call(client.datastores(uri))
            groups = await st.call(client.port_groups(uri))
            clusters = await st.call(client.clusters(uri))
            hosts = await st.call(client.hosts(uri))
            tid = last_segment(uri)   # /service/sites/<id>
            store = self.ctx.mappings or SiteMappingStore()
            remembered = await asyncio.to_thread(store.get, site_id(self.point.vm_urn), tid)
            suggested = suggest_mapping(self.point, tid, stores, groups, remembered,
                                        arch=str(self.point.vm_config.get("arch") or ""),
                                        host_arch={h.urn: h.arch for h in hosts})
            self.tsite = TargetSite(uri, tid, stores, groups, clusters, hosts, remembered, suggested)
            names = {}
            for n in self.point.vm_config.get("nics") or []:
                if isinstance(n, dict) and n.get("portGroupUrn"):
                    names.setdefault(str(n["portGroupUrn"]), []).append(str(n.get("name") or "NIC"))
            self.map_nics = [(urn, f"{', '.join(names.get(urn, []))} · {pg_name or urn}")
                             for urn, pg_name in point_port_groups(self.point).items()]
            self.port_groups = {}
            self.location = suggested.location if suggested.location in self._locations() else ""
            self.error = ""
        except Exception as e:  # VRM or mapping store trouble: stay on the site list, say why
            self.busy = False
            self.site, self.tsite = None, None
            self.error = f"could not read site {st.label}: {e}"
            self.picking_site = True
            self.show()
            return
        self.busy = False
        self.map_disks = list(self.point.disks)
        self.map_index = 0
        self.map_phase = "disks"
        self.nic_index = 0
        await self._load_choices()

    def _locations(self) -> set[str]:
        ts = self.tsite
        return set() if ts is None else {c.urn for c in ts.clusters} | {h.urn for h in ts.hosts}

    def _default_option(self) -> str | None:
        """The option highlighted first: the disk's, NIC's or location's choice so far, else the site
        pair's remembered one, else the suggestion."""
        if self.step != "map":
            return None
        if self.tsite is None:
            return None
        ts = self.tsite
        if self.map_phase == "disks":
            d = self.map_disks[self.map_index]
            if d.volume_urn in self.datastores:
                return self.datastores[d.volume_urn]
            want = ts.suggested.datastores.get(d.datastore_urn) if ts.suggested else None
            return self._reachable_default(want)
        if self.map_phase == "nics":
            src = self.map_nics[self.nic_index][0]
            if src in self.port_groups:
                return f"pg:{self.port_groups[src]}"
            dst = ts.suggested.port_groups.get(src) if ts.suggested else None
            return None if dst is None else f"pg:{dst}"
        return f"loc:{self.location}"

    def _reachable_default(self, want: str | None) -> str | None:
        """``want`` when one host reaches it and the datastores picked for the earlier disks (the new VM
        runs on one host), else the first compatible one that such a host reaches."""
        chosen = [self.datastores[d.volume_urn] for d in self.map_disks[:self.map_index]
                  if d.volume_urn in self.datastores]
        if not chosen:
            return want
        stores = {ds.urn: ds for ds in self.tsite.datastores} if self.tsite is not None else {}
        hosts: set[str] | None = None
        for urn in chosen:
            reach = set(stores[urn].hosts) if urn in stores else set()
            hosts = reach if hosts is None else hosts & reach
        ok = [c.datastore.urn for c in self.choices if c.compatible and hosts & set(c.datastore.hosts)]
        if want in ok or not ok:
            return want
        return ok[0]

    def _origin(self, kind: str, key: str, value: str) -> str:
        """' (remembered)' / ' (suggested)' for the default shown beside an option."""
        ts = self.tsite
        if ts is None or ts.suggested is None:
            return ""
        rem = getattr(ts.remembered, kind, {}) if ts.remembered is not None else {}
        if kind == "location":
            if ts.remembered is not None and value and ts.remembered.location == value:
                return " (remembered)"
            return ""
        if key in rem and rem[key] == value:
            return " (remembered)"
        if getattr(ts.suggested, kind, {}).get(key) == value:
            return " (suggested)"
        return ""

    def _body_map_nics(self) -> Text:
        t = Text()
        src, what = self.map_nics[self.nic_index]
        t.append(f"Network {self.nic_index + 1} of {len(self.map_nics)}: ", style="bold")
        t.append(f"{what}\n")
        t.append(f"Port group on {self.site.label if self.site else 'the site'} for these NICs, "
                 "or none (the NIC is left out):", style="dim")
        return t

    def _options_map_nics(self) -> list[Option]:
        ts = self.tsite
        assert ts is not None
        src = self.map_nics[self.nic_index][0]
        out = []
        for pg in ts.port_groups:
            label = Text(no_wrap=True, overflow="ellipsis")
            label.append(f"{pg.name:<22}", style="bold")
            label.append(f" VLAN {pg.vlan_id}" if pg.vlan_id is not None else " no VLAN", style="dim")
            label.append(self._origin("port_groups", src, pg.urn), style="green")
            out.append(Option(label, id=f"pg:{pg.urn}"))
        none = Text.assemble(("none", "bold"), " — leave these NICs out", (self._origin("port_groups", src, ""),
                                                                               "green"))
        out.append(Option(none, id="pg:"))
        return out

    def _body_map_location(self) -> Text:
        t = Text()
        t.append(f"Where does the new VM go on {self.site.label if self.site else 'the site'}?\n", style="bold")
        t.append("A cluster or a host; the datastores picked must be reached from there.", style="dim")
        return t

    def _options_map_location(self) -> list[Option]:
        ts = self.tsite
        assert ts is not None
        out = [Option(Text.assemble(("Any host", "bold"), " — a host that reaches every datastore"),
                      id="loc:")]
        hosts = self._fitting_hosts()
        for c in ts.clusters:
            if not any(h.cluster_urn == c.urn for h in hosts):
                continue
            out.append(Option(Text.assemble(("cluster ", "dim"), (c.name, "bold"),
                                            (self._origin("location", "", c.urn), "green")), id=f"loc:{c.urn}"))
        for h in hosts:
            out.append(Option(Text.assemble(("host ", "dim"), (h.name, "bold"), f" ({h.cluster_name}, {h.arch})",
                                            (self._origin("location", "", h.urn), "green")), id=f"loc:{h.urn}"))
        return out

    def _fitting_hosts(self) -> list[Any]:
        """The other site's hosts the new VM can run on: the VM's CPU architecture (when the point says
        it), reaching every datastore picked for its disks."""
        from ..rules import catalog as C
        ts = self.tsite
        assert ts is not None
        arch = C.arch_family(str(self.point.vm_config.get("arch") or ""))
        stores = {ds.urn: ds for ds in ts.datastores}
        picked = [stores[u] for u in self.datastores.values() if u in stores]
        return [h for h in ts.hosts
                if (not arch or not C.arch_family(h.arch) or C.arch_family(h.arch) == arch)
                and all(h.urn in ds.hosts for ds in picked)]

    def _map_next(self) -> None:
        """After a disk, NIC or location of another site: the next one, else the pre-checks."""
        if self.map_phase == "disks" and self.map_index + 1 < len(self.map_disks):
            self.map_index += 1
            self.run_worker(self._load_choices(), group="restore-wizard", exclusive=True, exit_on_error=False)
            return
        if self.tsite is None or self.map_phase == "location":
            self.run_worker(self._plan(), group="restore-wizard", exclusive=True, exit_on_error=False)
            return
        if self.map_phase == "disks" and self.map_nics:
            self.map_phase, self.nic_index = "nics", 0
        elif self.map_phase == "nics" and self.nic_index + 1 < len(self.map_nics):
            self.nic_index += 1
        else:
            self.map_phase = "location"
        self.show()

    def _map_back(self) -> None:
        if self.map_phase == "location":
            if self.map_nics:
                self.map_phase, self.nic_index = "nics", len(self.map_nics) - 1
                self.show()
                return
            self.map_phase, self.map_index = "disks", len(self.map_disks) - 1
        elif self.map_phase == "nics":
            if self.nic_index > 0:
                self.nic_index -= 1
                self.show()
                return
            self.map_phase, self.map_index = "disks", len(self.map_disks) - 1
        elif self.map_index > 0:
            self.map_index -= 1
        else:
            self.go("target")
            if self.ctx.sites and self.target == "new":
                self.picking_site = True
                self.show()
            return
        self.run_worker(self._load_choices(), group="restore-wizard", exclusive=True, exit_on_error=False)

    def _remember(self) -> None:
        """The mapping of a restore into another site, for the next one between the same two sites."""
        if self.tsite is None:
            return
        from ..jobs.sitemap import SiteMappingStore, remember
        remember(self.point, self.request(), self.tsite.id, self.ctx.mappings or SiteMappingStore())

    # --- step 3: datastores per disk ----------------------------------------------------------------

    def _body_map(self) -> Text:
        if self.tsite is not None and self.map_phase != "disks":
            return getattr(self, f"_body_map_{self.map_phase}")()
        t = Text()
        if self.other_site:
            t.append("Into another site: ", style="bold yellow")
            t.append(self.other_site, style="bold")
            t.append(" (this mapping is remembered for the next time)\n", style="dim")
        d = self.map_disks[self.map_index]
        t.append(f"Disk {self.map_index + 1} of {len(self.map_disks)}: ", style="bold")
        t.append(f"{d.disk_name} · {human_bytes(d.size_bytes)} · backed up from {d.storage_type} storage\n")
        ok = [c for c in self.choices if c.compatible]
        bad = [c for c in self.choices if not c.compatible]
        if not ok:
            t.append("No compatible datastore: the restore cannot place this disk.\n", style="bold red")
        elif self.tsite is not None:
            t.append("Compatible (storage class, architecture, space), the default highlighted:\n",
                     style="dim")
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
        if self.tsite is not None and self.map_phase != "disks":
            return getattr(self, f"_options_map_{self.map_phase}")()
        width = self.query_one("#wiz-options", OptionList).scrollable_content_region.width - 2
        out = []
        src = self.map_disks[self.map_index].datastore_urn if self.map_disks else ""
        for c in self.choices:
            if not c.compatible:
                continue
            ds = c.datastore
            label = Text(no_wrap=True, overflow="ellipsis")
            label.append(f"{ds.name:<22}", style="bold")
            free = human_bytes(None if c.free_gb is None else c.free_gb * (1 << 30))
            label.append(f" {ds.storage_type:<10} {free:>9} free")
            if self.tsite is not None:
                label.append(self._origin("datastores", src, ds.urn), style="green")
            label.append(f" · {c.where}", style="dim")
            if width > 40:
                label.truncate(width, overflow="ellipsis")
            out.append(Option(label, id=ds.urn))
        if self.tsite is not None and not out:
            # nothing fits on the other site: go on unmapped, the pre-checks name it with every other one
            out.append(Option(Text.assemble(("leave unmapped", "bold red"), " — the pre-checks name it"),
                              id="unmapped"))
        return out

    async def _load_choices(self) -> None:
        from ..jobs.restore import datastore_choices
        d = self.map_disks[self.map_index]
        self.busy = True
        try:
            kw = {"site": self.tsite.uri} if self.tsite is not None else {}
            self.choices = await self._call(datastore_choices(self._client(), self.ctx.repo, self.point.id,
                                                              d.volume_urn, **kw))
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
        kw: dict[str, Any] = {}
        if self.tsite is not None:   # another site: where the VM goes and its NICs' port groups
            kw = {"location": self.location, "port_groups": dict(self.port_groups)}
        return RestoreRequest(point_id=self.point.id, target=self.target, name=self.new_name,
                              datastores=dict(self.datastores), power_on=self.power_on, stop_vm=self.stop_vm,
                              disk_volume=self.disk_volume, **kw)

    async def _plan(self) -> None:
        from ..jobs.restore import plan_restore
        self.busy = True
        try:
            self.plan = await self._call(plan_restore(self._client(), self.ctx.repo, self.request()))
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
            head, _, items = f.message.partition(": ")
            if f.rule == "restore-unmapped" and "; " in items:   # another site: one line per unmapped item
                t.append(f": {head}:\n")
                for item in items.split("; "):
                    t.append(f"    · {item}\n")
            else:
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
        if self.other_site:   # what is created below is on that VRM
            t.append("Into another site: ", style="bold yellow")
            t.append(f"{self.site.label}\n", style="bold")
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
            where = f" on site {self.other_site}" if self.other_site else ""
            t.append(f"{len(p.creates)} item(s) will be created{where}; nothing existing is changed.\n")
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
            t.append("VM: ")
            name = next((v.name for v in job.vms if v.urn == res["vm"] and v.name), "") or \
                (self.new_name if self.target == "new" else "")
            if name:                                          # as people will look for it, then its URN
                t.append(f"{name} ", style="bold")
            if self.other_site:
                t.append(f"on site {self.other_site} ", style="bold")
            t.append(f"{res['vm']}\n", style="dim")
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
            job_id = await svc.submit_restore(self.request().to_json(), spec=self._spec())
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
        if self.tsite is not None:
            try:   # planned without blockers and started: next time between these sites, the defaults
                await asyncio.to_thread(self._remember)
            except Exception as e:
                self.app.notify(f"The site mapping was not remembered: {e}", severity="warning")
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
            return await run_restore(self._client(), self.ctx.repo, self.plan, **kw)

        self.go("progress")
        try:
            job = await self._call(go())
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
        elif self.step == "target" and self.picking_site:
            if oid.startswith("site:"):
                self._site_picked(int(oid[5:]))
        elif self.step == "target":
            self.plan = None
            self.datastores = {}
            self.site, self.tsite = None, None
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
        elif self.step == "map" and self.tsite is not None and self.map_phase == "nics":
            self.port_groups[self.map_nics[self.nic_index][0]] = oid[3:]
            self._map_next()
        elif self.step == "map" and self.tsite is not None and self.map_phase == "location":
            self.location = oid[4:]
            self._map_next()
        elif self.step == "map":
            vol = self.map_disks[self.map_index].volume_urn
            if oid == "unmapped":
                self.datastores.pop(vol, None)
            else:
                self.datastores[vol] = oid
            self._map_next()

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
        elif self.step == "target" and self.picking_site:
            self.picking_site, self.naming = False, True
            self.error = ""
            self.show()
        elif self.step == "target":
            self.go("point")
        elif self.step == "map":
            self._map_back()
        elif self.step == "checks":
            if self.tsite is not None:
                self.map_phase = "location"
                self.go("map")
            elif self.target == "original" or not self.map_disks:
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
        ctx = context_for_app(app, vm_urn)
    except Exception as e:
        app.notify(f"Restore unavailable: {e}", severity="error")
        return
    app.push_screen(RestoreWizard(ctx, vm_urn, vm_name=vm_name))
