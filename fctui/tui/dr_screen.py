"""The disaster recovery screen: the recovery plans (target site, VMs, boot groups, the last rehearsal's
result and RTO), the selected plan in detail, and its newest run live (per VM: boot group, state, restore,
boot and recovery times, error; the plan's RTO; the clean-up).

Data: :class:`~fctui.jobs.dr.DrStore`, read in a worker thread. The agent rewrites a run's file as it
changes, so the screen reads the store again every second while a run of the shown plan is running (and
every few seconds otherwise: a plan added by ``fctui dr plan add`` shows then), and at once when the job
agent reports an event of the run's job. ``r`` starts a rehearsal: the job agent runs it (it outlives the
console), like a backup started from the inventory. Failover is the CLI's (``fctui dr failover``, typed
confirmation): the console only rehearses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone, tzinfo
from typing import Any, Callable, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from ..jobs.dr import OTHERS_GROUP, DrError, DrStore, RecoveryPlan, RecoveryRun, VmRecovery
from ..jobs.drrun import assign_groups
from ..jobs.progress import duration_text
from .dialogs import ConfirmScreen

log = logging.getLogger(__name__)

LIVE_POLL_S = 1.0      # a run of the shown plan is running: its file is read this often
IDLE_POLL_S = 5.0      # nothing running: plans and results changed by the CLI show within this

RUN_STYLE = {"running": "bold cyan", "succeeded": "green", "failed": "bold red", "cancelled": "yellow"}
VM_STYLE = {"waiting": "dim", "restoring": "cyan", "restored": "cyan", "booting": "bold cyan",
            "running": "green", "failed": "bold red", "no-point": "bold red"}
CLEANUP_STYLE = {"pending": "cyan", "done": "green", "kept": "yellow", "failed": "bold red", "none": "dim"}


# --- rendering (rich only, pure) ----------------------------------------------------------------------



def when_text(ts: float | None, now: float, tz: tzinfo) -> str:
    """``14:05`` today (within 24 h), ``Tue 14:05`` within a week, else ``2026-11-02``."""
    if not ts:
        return "—"
    at = datetime.fromtimestamp(ts, tz)
    age = abs(now - ts)
    if age < 86400:
        return at.strftime("%H:%M")
    if age < 7 * 86400:
        return at.strftime("%a %H:%M")
    return at.strftime("%Y-%m-%d")


def group_names(plan: RecoveryPlan | None, run: RecoveryRun | None = None) -> list[str]:
    """The boot order: the plan's groups, then the run's other groups, ``others`` last."""
    names = [g.name for g in plan.groups] if plan is not None else []
    for v in run.vms if run is not None else []:
        if v.group not in names and v.group != OTHERS_GROUP:
            names.append(v.group)
    return names + [OTHERS_GROUP]


def run_result(run: RecoveryRun | None, now: float, tz: tzinfo) -> Text:
    """The plans list's "last rehearsal" cell: state, RTO, when."""
    if run is None:
        return Text("never rehearsed", style="dim")
    t = Text()
    if run.state == "running":
        done = sum(1 for v in run.vms if v.state == "running")
        t.append("running", style=RUN_STYLE["running"])
        t.append(f" {done}/{len(run.vms)} up · {duration_text(max(0.0, now - run.started))}")
        return t
    failed = len(run.failed_vms)
    t.append(run.state, style=RUN_STYLE.get(run.state, ""))
    if failed:
        t.append(f" ({failed} VM{'s' if failed != 1 else ''} down)", style="red")
    t.append(f" · RTO {duration_text(run.rto_s)}" if run.rto_s is not None else " · RTO —")
    t.append(f" · {when_text(run.finished or run.started, now, tz)}", style="dim")
    return t


def _name_widths(width: int) -> tuple[int, int]:
    """(plan, target) column widths: narrower lists keep the last rehearsal's result whole."""
    return (18, 12) if width >= 100 else (12, 10)


def plan_line(plan: RecoveryPlan, last: RecoveryRun | None, now: float, tz: tzinfo, width: int) -> Text:
    """One plan in the list: name, target site, VMs, groups, last rehearsal."""
    nw, tw = _name_widths(width)
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{plan.name[:nw]:<{nw}} ", style="bold")
    t.append(f"{plan.target[:tw]:<{tw}} ")
    t.append(f"{len(plan.vms):>3} VMs ")
    t.append(f"{len(assign_groups(plan)):>2} grp  ")     # boot groups with VMs, "others" included
    t.append_text(run_result(last, now, tz))
    if width > 10:
        t.truncate(width, overflow="ellipsis")
    return t


def plan_header(width: int) -> Text:
    nw, tw = _name_widths(width)
    t = Text(f"{'plan':<{nw}} {'target':<{tw}} {'VMs':>7} {'groups':>6}  last rehearsal", style="dim",
             no_wrap=True, overflow="ellipsis")
    if width > 10:
        t.truncate(width, overflow="ellipsis")
    return t


def render_plan(plan: RecoveryPlan, tz: tzinfo, now: float) -> Text:
    """A plan's definition: target, network, timeout, selection, boot groups with their VMs."""
    t = Text()
    t.append(f"Plan {plan.name}", style="bold")
    t.append(f" → site {plan.target}")
    if plan.selection:
        t.append(f" · {plan.selection}", style="dim")
    t.append("\n")
    net = plan.name_of(plan.rehearsal_network) if plan.rehearsal_network else "no NIC (VMs restored without network)"
    t.append(f"Rehearsal network: {net} · Tools timeout {duration_text(plan.tools_timeout_s)}\n", style="dim")
    if plan.location:
        t.append(f"Location: {plan.name_of(plan.location)}\n", style="dim")
    for src, dst in plan.datastores.items():
        t.append(f"Datastore: {plan.name_of(src)} → {plan.name_of(dst)}\n", style="dim")
    for src, dst in plan.port_groups.items():
        t.append(f"Failover network: {plan.name_of(src)} → {plan.name_of(dst) if dst else 'none'}\n", style="dim")
    by_group = dict(assign_groups(plan))
    order = [g.name for g in plan.groups] + [OTHERS_GROUP]
    for i, g in enumerate(order):
        names = sorted(plan.vm_names.get(u) or u for u in by_group.get(g, []))
        if g == OTHERS_GROUP and not names:
            continue
        t.append(f"  {i + 1}. {g}", style="bold")
        t.append(f" ({len(names)}): ", style="dim")
        t.append(", ".join(names) or "no VM", style="" if names else "dim")   # a glob that matches nothing
        t.append("\n")
    return t


VM_COLUMNS = (("group", 10), ("VM", 16), ("state", 9), ("restore", 10), ("boot", 10), ("RTO", 12))
WIDE_ERRORS = 100    # narrower: a VM's error goes on a line of its own under it
ERROR_ROOM = 40      # what a wide table keeps for the error column when it widens the VM names


def vm_name_width(run: RecoveryRun, width: int) -> int:
    """The VM column: 16, or wider when the names are longer and the screen has the room."""
    others = sum(w + 1 for name, w in VM_COLUMNS if name != "VM") + (ERROR_ROOM if width >= WIDE_ERRORS else 0)
    longest = max((len(v.vm_name) for v in run.vms), default=0)
    return max(16, min(longest, width - others - 1))


def _vm_row(v: VmRecovery, now: float, started: float, live: bool, width: int, name_w: int = 16) -> list[Text]:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{v.group[:10]:<10} ", style="dim")
    t.append(f"{v.vm_name[:name_w]:<{name_w}} ", style="bold")
    t.append(f"{v.state:<9} ", style=VM_STYLE.get(v.state, ""))
    t.append(f"{duration_text(v.restore_s):>10} ")
    t.append(f"{duration_text(v.boot_s):>10} ")
    if v.rto_s is not None:
        t.append(f"{duration_text(v.rto_s):>12}", style="green")
    elif live and v.state not in ("failed", "no-point") and started:
        t.append(f"{'(' + duration_text(max(0.0, now - started)) + ')':>12}", style="dim")   # still counting
    else:
        t.append(f"{'—':>12}")
    if not v.error:
        return [t]
    if width >= WIDE_ERRORS:
        t.append(f"  {v.error}", style="red")
        return [t]
    return [t, Text(f"{'':<11}↳ {v.error}", style="red", no_wrap=True, overflow="ellipsis")]


def render_run(run: RecoveryRun, plan: RecoveryPlan | None, now: float, tz: tzinfo, width: int) -> Text:
    """A run, live or finished: its state and plan RTO, one line per VM in boot order, the clean-up."""
    live = run.state == "running"
    t = Text()
    t.append(f"{run.kind.capitalize()} {run.id}", style="bold")
    t.append(f" · {when_text(run.started, now, tz)} · ")
    t.append(run.state, style=RUN_STYLE.get(run.state, ""))
    if live:
        t.append(f" · {duration_text(max(0.0, now - run.started))} so far")
    t.append("\n")
    up = sum(1 for v in run.vms if v.state == "running")
    failed = len(run.failed_vms)
    t.append(f"Total RTO {duration_text(run.rto_s)}", style="bold green" if run.rto_s is not None else "bold")
    t.append(f" · {up}/{len(run.vms)} VMs running")
    if failed:
        t.append(f" · {failed} failed", style="bold red")
    t.append("\n")
    if run.error:
        t.append(f"{run.error}\n", style="red")
    name_w = vm_name_width(run, width)
    header = Text(no_wrap=True, overflow="ellipsis", style="dim")
    for name, w in VM_COLUMNS:
        w = name_w if name == "VM" else w
        header.append(f"{name:>{w}} " if name in ("restore", "boot", "RTO") else f"{name:<{w}} ")
    if width >= WIDE_ERRORS:
        header.append(" error")
    header.rstrip()
    rows = [header]
    order = group_names(plan, run)
    rank = {g: i for i, g in enumerate(order)}
    for v in sorted(run.vms, key=lambda v: (rank.get(v.group, len(order)), v.vm_name)):
        rows.extend(_vm_row(v, now, run.started, live, width, name_w))
    for row in rows:
        if width > 10:
            row.truncate(width, overflow="ellipsis")
        t.append_text(row)
        t.append("\n")
    t.append("Clean-up: ")
    t.append(run.cleanup, style=CLEANUP_STYLE.get(run.cleanup, ""))
    if run.cleanup == "pending" and live:
        t.append(" (what the rehearsal created is removed when it ends)", style="dim")
    elif run.cleanup == "kept":
        t.append(" (the restored VMs were kept: --keep)", style="dim")
    if run.cleanup_error:
        t.append(f" · {run.cleanup_error}", style="red")
    return t


# --- the agent ------------------------------------------------------------------------------------------

async def submit_dr_job(service: Any, plan: RecoveryPlan, spec: Any, *, kind: str = "rehearsal",
                        keep: bool = False) -> str:
    """A rehearsal (or failover) job of ``plan`` for the job agent; ``spec``: the target site's VRM
    connection (its password goes with the request, never to disk). Returns the job id."""
    if spec is None:
        raise DrError(f"not connected to the VRM of site {plan.target}")
    return await service.submit_job(spec, {"type": kind, "targets": [plan.name],
                                           "dr": {"plan": plan.name, "kind": kind, "keep": keep}})


def target_spec(app: Any, profile: str) -> Any:
    """The console's connection to the VRM of profile ``profile``: one of the app's sites (several:
    ``app.specs``), else the one connection when it is that profile (or the only one)."""
    specs = list(getattr(app, "specs", None) or [])
    one = getattr(app, "spec", None)
    if one is not None and one not in specs:
        specs.append(one)
    for s in specs:
        if profile and profile in (getattr(s, "profile", None), getattr(s, "label", None),
                                   getattr(s, "site_label", None)):
            return s
    return specs[0] if len(specs) == 1 else None


# --- the screen -----------------------------------------------------------------------------------------

class DrScreen(Screen[None]):
    """Recovery plans and rehearsals."""

    DEFAULT_CSS = """
    DrScreen #dr-title { height: 1; background: $primary-background; }
    DrScreen #dr-header { height: 1; padding: 0 3; }
    DrScreen #dr-plans { height: auto; max-height: 8; margin: 0 1; }
    DrScreen #dr-scroll { height: 1fr; padding: 0 1; scrollbar-gutter: stable; }
    DrScreen #dr-hint { height: 1; padding: 0 1; background: $boost; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "back", "Back", id="dr.back"),
        Binding("r", "rehearse", "Rehearse", id="dr.rehearse"),
        Binding("R", "reload", "Refresh", show=False, id="dr.refresh"),
        Binding("pagedown", "detail('page_down')", "Detail page down", show=False, id="dr.detail_page_down"),
        Binding("pageup", "detail('page_up')", "Detail page up", show=False, id="dr.detail_page_up"),
    ]

    def __init__(self, store: DrStore | None = None, *, service: Any = None,
                 clock: Callable[[], float] = time.time, tz: tzinfo | None = None,
                 poll: bool = True) -> None:
        super().__init__()
        self.store = store
        self.service = service        # a JobsService (the console's): rehearsals are submitted to it
        self.clock = clock
        self.tz = tz
        self.poll = poll              # tests read the store explicitly (reload) instead of on a timer
        self.plans: list[RecoveryPlan] = []
        self.runs: dict[str, list[RecoveryRun]] = {}   # plan -> runs, newest first
        self.selected = ""
        self.error = ""
        self.loaded = False
        self._next_read = 0.0
        self._listener: Callable[[str | None], None] | None = None

    # --- layout -----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="dr-title")
        yield Static("", id="dr-header")
        yield OptionList(id="dr-plans")
        with VerticalScroll(id="dr-scroll"):
            yield Static("", id="dr-body")
        yield Static("", id="dr-hint")
        yield Footer()

    def on_mount(self) -> None:
        if self.tz is None:
            from .policies_screen import local_tz
            self.tz = local_tz(self.app)
        if self.store is None:
            self.store = DrStore()
        if self.service is not None:
            self._listener = self._job_event
            self.service.listeners.append(self._listener)
        if self.poll:
            self.set_interval(0.5, self._tick)
        self.show()
        self.run_worker(self.reload(), group="dr-read", exclusive=True, exit_on_error=False)

    def on_unmount(self) -> None:
        if self.service is not None and self._listener in self.service.listeners:
            self.service.listeners.remove(self._listener)

    def on_resize(self) -> None:
        self.show()

    # --- data -------------------------------------------------------------------------------------

    def _read(self) -> tuple[list[RecoveryPlan], dict[str, list[RecoveryRun]]]:
        assert self.store is not None
        plans = self.store.plans()
        runs: dict[str, list[RecoveryRun]] = {}
        for r in self.store.runs(None, limit=0):
            runs.setdefault(r.plan, []).append(r)
        return plans, runs

    async def reload(self) -> None:
        """Read the plans and runs again (in a thread: file I/O) and show them."""
        try:
            plans, runs = await asyncio.to_thread(self._read)
            self.error = ""
        except DrError as e:
            self.error = str(e)
        else:
            self.plans, self.runs = plans, runs
        self.loaded = True
        live = any(r.state == "running" for rs in self.runs.values() for r in rs[:1])
        self._next_read = time.monotonic() + (LIVE_POLL_S if live else IDLE_POLL_S)
        self.show()

    def _tick(self) -> None:
        if time.monotonic() >= self._next_read:
            self._next_read = time.monotonic() + IDLE_POLL_S   # the read sets the real next time
            self.run_worker(self.reload(), group="dr-read", exclusive=True, exit_on_error=False)
        elif self.current_run() is not None and self.current_run().state == "running":  # type: ignore[union-attr]
            self.show_detail()   # the running times move with the clock

    def _job_event(self, job_id: str | None) -> None:
        """An event of the job agent: a run's job changed, its file changed with it."""
        if job_id and any(r.job_id == job_id for rs in self.runs.values() for r in rs):
            self._next_read = 0.0

    def plan(self) -> RecoveryPlan | None:
        return next((p for p in self.plans if p.name == self.selected), None)

    def last_rehearsal(self, name: str) -> RecoveryRun | None:
        return next((r for r in self.runs.get(name, []) if r.kind == "rehearsal"), None)

    def current_run(self) -> RecoveryRun | None:
        """The shown plan's newest run (rehearsal or failover)."""
        runs = self.runs.get(self.selected) or []
        return runs[0] if runs else None

    # --- rendering --------------------------------------------------------------------------------

    # Before the first layout the regions are empty: the same widths from the terminal's, so a read that
    # lands before or after the layout draws the same lines.
    def _width(self) -> int:
        w = self.query_one("#dr-plans", OptionList).scrollable_content_region.width - 2   # an option's padding
        return w if w > 20 else max(20, self.app.size.width - 8)

    def _detail_width(self) -> int:
        """The detail's cells; its scrollbar gutter is kept (CSS), so a long detail does not rewrap it."""
        w = self.query_one("#dr-scroll", VerticalScroll).scrollable_content_region.width
        return w if w > 20 else max(40, self.app.size.width - 6)

    def show(self) -> None:
        now = self.clock()
        tz = self.tz or timezone.utc
        title = Text(no_wrap=True, overflow="ellipsis")
        title.append(" Disaster recovery ", style="bold reverse")
        running = sum(1 for rs in self.runs.values() for r in rs[:1] if r.state == "running")
        title.append(f" {len(self.plans)} recovery plan(s)")
        if running:
            title.append(f" · {running} running", style="bold cyan")
        self.query_one("#dr-title", Static).update(title)
        width = self._width()
        self.query_one("#dr-header", Static).update(plan_header(width))
        opts = self.query_one("#dr-plans", OptionList)
        keep = self.selected
        opts.clear_options()
        opts.add_options([Option(plan_line(p, self.last_rehearsal(p.name), now, tz, width), id=p.name)
                          for p in self.plans])
        names = [p.name for p in self.plans]
        if names:
            if keep not in names:
                keep = names[0]
            self.selected = keep
            opts.highlighted = names.index(keep)
        else:
            self.selected = ""
        self.show_detail()
        hint = ("r rehearses the highlighted plan (asks first; the job agent runs it) · Esc back"
                if self.plans else "Esc back")
        self.query_one("#dr-hint", Static).update(Text(hint, style="dim", no_wrap=True, overflow="ellipsis"))
        self.refresh_bindings()

    def show_detail(self) -> None:
        now = self.clock()
        tz = self.tz or timezone.utc
        t = Text()
        if self.error:
            t.append(f"{self.error}\n", style="bold red")
        plan = self.plan()
        if plan is None:
            if not self.loaded:
                t.append("Reading the recovery plans…", style="dim")
            elif not self.plans:
                t.append("No recovery plan yet.\n", style="bold")
                t.append("Make one with: fctui dr plan add NAME --target PROFILE --vms FILTER --group "
                         "NAME=GLOB …", style="dim")
        else:
            t.append_text(render_plan(plan, tz, now))
            run = self.current_run()
            t.append("\n")
            if run is None:
                t.append("Never rehearsed: r starts a rehearsal.", style="dim")
            else:
                t.append_text(render_run(run, plan, now, tz, self._detail_width()))
                older = (self.runs.get(plan.name) or [])[1:6]
                if older:
                    t.append("\n\nEarlier runs:\n", style="bold")
                    for r in older:
                        t.append(f"  {r.kind:<9} {when_text(r.started, now, tz):<10} ")
                        t.append_text(run_result(r, now, tz))
                        t.append("\n")
        self.query_one("#dr-body", Static).update(t)

    # --- events and actions -----------------------------------------------------------------------

    @on(OptionList.OptionHighlighted, "#dr-plans")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        name = event.option.id or ""
        if name and name != self.selected:
            self.selected = name
            self.show_detail()
            self.refresh_bindings()   # r is dimmed while the newly shown plan runs
            self.query_one("#dr-scroll", VerticalScroll).scroll_home(animate=False)

    @on(OptionList.OptionSelected, "#dr-plans")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()   # Enter on a plan: its detail is already below

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "rehearse":
            run = self.current_run()
            if getattr(self.app, "read_only", False) or self.plan() is None:
                return False
            return None if run is not None and run.state == "running" else True   # shown dimmed while one runs
        return True

    def action_back(self) -> None:
        self.dismiss(None)

    def action_reload(self) -> None:
        self.run_worker(self.reload(), group="dr-read", exclusive=True, exit_on_error=False)

    def action_detail(self, how: str) -> None:
        getattr(self.query_one("#dr-scroll", VerticalScroll), f"scroll_{how}")(animate=False)

    def action_rehearse(self) -> None:
        plan = self.plan()
        if plan is None:
            return
        run = self.current_run()
        if run is not None and run.state == "running":
            self.app.notify(f"A {run.kind} of {plan.name} is running", severity="warning")
            return

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.run_worker(self._submit(plan), group="dr-submit", exit_on_error=False)

        network = f"on {plan.name_of(plan.rehearsal_network)}" if plan.rehearsal_network else "without network"
        self.app.push_screen(ConfirmScreen(
            f"Rehearse {plan.name}?",
            f"Restores the latest good point of {len(plan.vms)} VM(s) into site {plan.target} "
            f"({network}), boots them "
            "group by group, measures the RTO, then removes everything it created. Production is not touched.",
            yes="Start the rehearsal", no="Not now"), confirmed)

    async def _submit(self, plan: RecoveryPlan) -> None:
        spec = target_spec(self.app, plan.target)
        if spec is None:   # the password goes with the request: only a site this console is connected to
            self.app.notify(f"Rehearsal not started: this console is not connected to site {plan.target} "
                            f"(open it with that profile too, or run fctui dr rehearse {plan.name})",
                            severity="error")
            return
        service = self.service
        if service is None:
            from .jobs_screen import jobs_service
            service = self.service = jobs_service(self.app)
            self._listener = self._job_event
            service.listeners.append(self._listener)
        try:
            job_id = await submit_dr_job(service, plan, spec)
        except Exception as e:
            self.app.notify(f"Rehearsal not started: {e}", severity="error")
            return
        self.app.notify(f"Rehearsal of {plan.name} started (job {job_id})", timeout=4)
        self._next_read = 0.0

    def shows_job(self, job_id: str) -> bool:
        """The shown run's outcome is on this screen: no toast over it when its job ends."""
        run = self.current_run()
        return run is not None and run.job_id == job_id


def show_dr(app: Any) -> None:
    """The main screen's key: the DR screen over the console (its job agent link when it has one)."""
    svc = getattr(app, "jobs", None)
    app.push_screen(DrScreen(service=svc))
