"""The Policies screen: every protection policy (coverage, schedule, next run, last result), the selected
one in detail (its selector, the VMs it protects and how well, the failures of its last run with each
VM's reason), the timeline of the next 24 h of runs per host, and editing (add, edit, remove, run now).

Data: :func:`~fctui.tui.policies_model.build_policies_view` over what the console holds (rows, jobs, its
protection map when it has one) and what is read in a worker (policies, the policies' runs, the
repository's points). The screen reads everything again when the console's rows or jobs change, after its
own edits, and once a minute (the "in 3 h" texts and the timeline move with the clock; a policy changed
by the CLI shows then).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import tzinfo
from typing import Any, Callable, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Input, Label, Static

from ..jobs.policy import Policy, PolicyError, format_duration
from ..jobs.policystore import PolicyRun, PolicyStore
from .dialogs import ConfirmScreen
from .policies_model import (LastRun, PoliciesView, PolicyLine, build_policies_view, local_time, policy_form_values,
                             policy_from_form, protection_for, relative_time)
from .widgets.line import TextLine
from .widgets.timeline import Timeline

log = logging.getLogger(__name__)

RELOAD_EVERY_S = 60.0        # the clock moves the next runs and the timeline
TICK_S = 1.0                 # how often the screen looks whether the console's data changed
MAX_LISTED = 200             # VMs listed in the detail (the rest counted)

RUN_STYLE = {"ok": "green", "partial": "bold yellow", "failed": "bold red", "skipped": "dim", "running": "bold cyan"}
PROTECTION_STYLE = {"ok": "green", "at-risk": "yellow", "breached": "bold red", "not-covered": "bold red"}


def local_tz(app: Any) -> tzinfo:
    """The console's time zone (the app's ``tz`` when it has one: tests fix it), else this machine's."""
    tz = getattr(app, "tz", None)
    if isinstance(tz, tzinfo):
        return tz
    from ..jobs.policy import local_tz as machine_tz
    return machine_tz()


def _took(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


# --- rendering (rich only) ------------------------------------------------------------------------------

def next_text(line: PolicyLine, now: float, tz: tzinfo) -> Text:
    if not line.policy.enabled:
        return Text("disabled", style="dim")
    if line.next_run is None:
        return Text("—", style="dim")
    return Text(f"{local_time(line.next_run, now, tz)} {relative_time(line.next_run - now)}")


def run_text(run: LastRun | None, now: float, tz: tzinfo, *, short: bool = True) -> Text:
    if run is None:
        return Text("never ran", style="dim")
    t = Text()
    t.append(run.state, style=RUN_STYLE.get(run.state, ""))
    when = run.when
    if short:
        t.append(f" {local_time(when, now, tz)}")
    elif run.started is None and run.state != "running":
        t.append(f" · due {local_time(when, now, tz)} ({relative_time(when - now)}) · did not start")
    else:
        t.append(f" · started {local_time(when, now, tz)} ({relative_time(when - now)})")
    if run.state == "running":
        t.append(f" · {_took(now - when)} so far" if not short else "")
    elif run.duration is not None:
        # the table's cell is narrow: the policy language's own duration form (3h5m)
        t.append(f" · {format_duration(max(60, round(run.duration / 60) * 60))}" if short
                 else f" · took {_took(run.duration)}")
    if run.overran:
        t.append(" · overran" if short else " · overran its window", style="bold yellow")
    if run.catch_up and not short:
        t.append(" · a catch-up of a missed time", style="dim")
    if short and run.failures:
        t.append(f" · {len(run.failures)} failed", style="red")
    return t


def policy_row(line: PolicyLine, now: float, tz: tzinfo) -> list[Any]:
    p = line.policy
    vms = Text(str(line.wins), style="bold" if line.wins else "dim")
    if line.others:
        vms.append(f" (+{line.others})", style="dim")
    last = run_text(line.running or line.last, now, tz)
    return [Text(p.name, style="" if p.enabled else "dim"), Text("yes" if p.enabled else "off",
                                                                  style="" if p.enabled else "yellow"),
            vms, next_text(line, now, tz), last, p.schedule.text, p.describe_window(), format_duration(p.rpo_s),
            p.retention.describe()]


COLUMNS = ("Policy", "On", "VMs", "Next run", "Last run", "Schedule", "Window", "RPO", "Retention")


def render_policy_detail(line: PolicyLine | None, now: float, tz: tzinfo) -> Text:
    if line is None:
        return Text("No policy yet: press a to add one (which VMs, when, how long points are kept).", style="dim")
    p = line.policy
    t = Text()
    t.append(p.name, style="bold")
    t.append(" · enabled" if p.enabled else " · disabled", style="" if p.enabled else "yellow")
    t.append(f" · RPO {format_duration(p.rpo_s)} · {p.retention.describe()}")
    if p.full_every:
        t.append(f" · a full every {p.full_every} backups")
    t.append("\n")
    t.append("VMs   ", style="bold")
    t.append(p.vms)
    t.append(f"  → protects {line.wins}")
    if line.states:
        from ..jobs.protection import PROTECTION_STATES
        parts = [(s, line.states[s]) for s in reversed(PROTECTION_STATES) if line.states.get(s)]
        t.append(" (")
        for i, (s, n) in enumerate(parts):
            if i:
                t.append(" · ")
            t.append(f"{s.replace('-', ' ')} {n}", style=PROTECTION_STYLE.get(s, ""))
        t.append(")")
    if line.others:
        t.append(f"; {line.others} more selected, another policy protects them", style="dim")
    t.append("\n")
    t.append("When  ", style="bold")
    t.append(f"{p.schedule.text} · window {p.describe_window()} · next ")
    t.append_text(next_text(line, now, tz))
    t.append("\n")
    if line.running is not None:
        t.append("Now   ", style="bold")
        t.append_text(run_text(line.running, now, tz, short=False))
        t.append("\n")
    t.append("Last  ", style="bold")
    t.append_text(run_text(line.last, now, tz, short=False))
    if line.last is not None and line.last.job_id:
        t.append(f" · job {line.last.job_id}", style="dim")
    t.append("\n")
    if line.last is not None and line.last.note:
        t.append(f"      {line.last.note}\n", style="dim")
    if line.last is not None and line.last.failures:
        t.append(f"\nFailures of the last run ({len(line.last.failures)})\n", style="bold red")
        width = min(24, max(len(f.name) for f in line.last.failures))
        for f in line.last.failures[:MAX_LISTED]:
            t.append(f"  {f.name:<{width}} ")
            t.append(f"{f.result:<12} ", style="red")
            t.append(f"{f.reason or '(no reason given)'}\n")
    if line.protected:
        t.append(f"\nProtected VMs ({line.wins})\n", style="bold")
        width = min(24, max(len(v.name) for v in line.protected))
        hw = min(12, max(len(v.host) for v in line.protected))
        for v in line.protected[:MAX_LISTED]:
            t.append(f"  {v.state.replace('-', ' '):<11} ", style=PROTECTION_STYLE.get(v.state, ""))
            t.append(f"{v.name:<{width}} {v.host:<{hw}} ")
            t.append(f"{v.reason}\n", style="dim")
        if line.wins > MAX_LISTED:
            t.append(f"  … and {line.wins - MAX_LISTED} more\n", style="dim")
    elif p.enabled:
        t.append("\nIt protects no VM now: its selector matches none, or another policy wins them.\n",
                 style="yellow")
    if line.elsewhere:
        t.append(f"\nAlso selected, protected by another policy ({line.others})\n", style="bold")
        for name, winner in line.elsewhere[:MAX_LISTED]:
            t.append(f"  {name} → {winner}\n", style="dim")
    return t


# --- reading what the screen shows (in a worker) ----------------------------------------------------------

def _read_agent_store(read: Any) -> list[Any]:
    """``read(JobStore)`` on the agent's database, when the agent cannot be asked; [] before it has one."""
    from ..jobs.journal import JobStore
    from ..store import state_dir
    path = state_dir(create=False) / "jobs.json"
    if not path.exists():
        return []
    store = JobStore(path)
    try:
        return list(read(store))
    finally:
        store.close()


def read_local_runs() -> list[PolicyRun]:
    """The policies' runs from the agent's database (when the agent cannot be asked)."""
    return _read_agent_store(lambda store: store.policy_runs_of())


def read_local_jobs() -> list[Any]:
    return _read_agent_store(lambda store: store.all_jobs())


def read_points() -> list[Any]:
    from ..repo import NoRepositoryError
    from .repository import open_repository
    try:
        repo = open_repository()
    except NoRepositoryError:
        return []
    try:
        return repo.points()
    finally:
        repo.close()


# --- the screen -------------------------------------------------------------------------------------------

class PoliciesScreen(Screen[None]):
    DEFAULT_CSS = """
    PoliciesScreen #policies-status { height: 1; background: $primary-background; }
    PoliciesScreen #policy-table { height: auto; max-height: 40%; }
    PoliciesScreen #policy-detail-scroll { height: 1fr; padding: 0 1; border-top: solid $primary; }
    PoliciesScreen #timeline { padding: 0; border-top: solid $primary; border-title-align: left; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "back", "Back", id="policies.back"),
        Binding("a", "add", "Add", id="policies.add"),
        Binding("e", "edit", "Edit", id="policies.edit"),
        Binding("d", "remove", "Remove", id="policies.remove"),
        Binding("x", "run_now", "Run now", id="policies.run"),
        # tab moves between the table, the detail (arrows scroll it) and back
        Binding("tab", "app.focus_next", "Next pane", show=False, id="policies.focus_next"),
        Binding("shift+tab", "app.focus_previous", "Previous pane", show=False, id="policies.focus_previous"),
    ]
    # Editing changes what runs unattended: hidden in read-only mode, like the VRM-changing actions.
    MUTATING: ClassVar[frozenset[str]] = frozenset({"add", "edit", "remove", "run_now"})

    def __init__(self, *, store: PolicyStore | None = None, tz: tzinfo | None = None) -> None:
        super().__init__()
        self.policy_store = store or PolicyStore()
        self._tz = tz
        self.view: PoliciesView | None = None
        self.error = ""
        self.runs_from = ""        # "agent" / "file" / "": where the runs were read
        self.service: Any = None   # the policy service's status as the agent gave it (None: none runs)
        self.loads = 0             # finished reloads (tests wait on it)
        self._seen: tuple[Any, ...] | None = None
        self._last_load = 0.0
        self._loading = False
        self._again = False
        self._columns: list[Any] = []
        self._want_selected: str | None = None    # a policy just saved: the cursor goes to it once shown
        self._shown_rows: dict[str, list[Any]] = {}

    @property
    def tz(self) -> tzinfo:
        return self._tz or local_tz(self.app)

    def compose(self) -> ComposeResult:
        yield TextLine(id="policies-status")
        yield DataTable(id="policy-table", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="policy-detail-scroll"):
            yield Static("", id="policy-detail")
        yield Timeline(id="timeline")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self.query_one(Timeline).border_title = "Next 24 h of runs per host"
        table.focus()
        self.reload()
        self.set_interval(TICK_S, self._tick)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.MUTATING and getattr(self.app, "read_only", False):
            return False
        return True

    # --- data ------------------------------------------------------------------------------------

    def _signature(self) -> tuple[Any, ...]:
        app: Any = self.app
        store = getattr(app, "store", None)
        board = getattr(getattr(app, "jobs", None), "board", None)
        jobs = board.jobs.values() if board is not None else ()
        # no file is looked at here (the event loop never waits on a disk): a policy changed elsewhere
        # (the CLI) shows at the next reload, within RELOAD_EVERY_S
        return (getattr(store, "generation", 0), getattr(app, "refresh_count", 0),
                sum(1 for j in jobs if j.is_final), len(board.jobs) if board is not None else 0,
                id(getattr(app, "protection", None)))

    def _tick(self) -> None:
        clock = getattr(self.app, "clock", None)
        now = clock() if callable(clock) else 0.0
        if self._signature() != self._seen or now - self._last_load >= RELOAD_EVERY_S:
            self.reload()

    def reload(self) -> None:
        if self._loading:
            self._again = True
            return
        self._loading = True
        self._seen = self._signature()
        self._load()

    async def _runs(self) -> list[PolicyRun]:
        """From the agent (op ``policy_runs``, which also says whether a policy service runs) when it
        answers, else from its database file (read-only)."""
        from ..agent import AgentError
        svc = getattr(self.app, "jobs", None)
        if svc is not None and getattr(svc, "connected", False):
            try:
                resp = await svc.agent.request("policy_runs")
                self.runs_from = "agent"
                self.service = resp.get("service")
                return [PolicyRun.from_dict(r) for r in resp.get("runs") or [] if isinstance(r, dict)]
            except AgentError:
                pass   # an agent without the op: its file has them
        self.runs_from, self.service = "file", None
        return await asyncio.to_thread(read_local_runs)

    @work(group="policies-load", exit_on_error=False, description="read the policies")
    async def _load(self) -> None:
        app: Any = self.app
        try:
            clock = getattr(app, "clock", None)
            now = clock() if callable(clock) else 0.0
            tz = self.tz
            store = getattr(app, "store", None)
            rows = list(store.rows.values()) if store is not None else []
            board = getattr(getattr(app, "jobs", None), "board", None)
            jobs = list(board.jobs.values()) if board is not None and board.jobs else None
            given = getattr(app, "protection", None)
            runs = await self._runs()
            policy_store = self.policy_store

            given_with = tuple(getattr(app, "protection_policies", ()) or ())
            stale = False

            def build() -> PoliciesView:
                nonlocal stale
                policies = policy_store.all()
                if isinstance(given, dict) and all(r.key in given for r in rows) and given_with == tuple(policies):
                    protection = given       # the console's own map (same rows, same policies)
                else:
                    # a policy changed since the console assessed (edited here or by the CLI): assess here,
                    # and have the console's table follow
                    stale = isinstance(given, dict) and bool(given)
                    protection = protection_for(rows, policies, points=read_points(),
                                                jobs=jobs if jobs is not None else read_local_jobs(), now=now, tz=tz)
                return build_policies_view(policies, rows, protection, runs, now=now, tz=tz)

            try:
                view = await asyncio.to_thread(build)
                self.error = ""
            except Exception as e:  # a bad policy file, an unreadable repository: one line, keep the last data
                log.warning("policies screen: %s", e, exc_info=True)
                self.error = f"{e}" if isinstance(e, PolicyError) else f"{type(e).__name__}: {e}"
                self._show_status()
                return
            self._last_load = now
            self.show(view)
            if stale and hasattr(app, "schedule_protection"):
                app.schedule_protection()
        finally:
            self._loading = False
            self.loads += 1
            if self._again:
                self._again = False
                self.reload()

    # --- drawing ---------------------------------------------------------------------------------

    def show(self, view: PoliciesView) -> None:
        self.view = view
        table = self.query_one(DataTable)
        keep = self.selected_name()
        if self._want_selected is not None and view.line(self._want_selected) is not None:
            keep, self._want_selected = self._want_selected, None
        tz = self.tz
        rows = {line.name: policy_row(line, view.now, tz) for line in view.lines}
        names = list(rows)
        with self.app.batch_update():
            if not self._columns:
                # with the first rows, not before: a header drawn before any row kept the labels' widths
                self._columns = table.add_columns(*COLUMNS)
            if names == list(self._shown_rows):
                # the same policies: only the cells that changed (cursor and scroll stay, no flicker)
                for name, cells in rows.items():
                    for col, new, old in zip(self._columns, cells, self._shown_rows[name]):
                        if str(new) != str(old) or getattr(new, "spans", None) != getattr(old, "spans", None):
                            table.update_cell(name, col, new, update_width=True)
            else:
                table.clear()
                for name, cells in rows.items():
                    table.add_row(*cells, key=name)
            if keep in names and self.selected_name() != keep:
                table.move_cursor(row=names.index(keep), animate=False)
            self._shown_rows = rows
            self.query_one(Timeline).show(view.hosts, view.start, tz)
            self.show_selected()
            self._show_status()

    def _show_status(self) -> None:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" Policies ", style="bold reverse")
        if getattr(self.app, "read_only", False):
            t.append(" READ-ONLY", style="bold")
        v = self.view
        if v is not None:
            covered = sum(ln.wins for ln in v.lines)
            t.append(f" {len(v.lines)} · {covered} VMs protected")
            if v.not_covered:
                t.append(f" · {v.not_covered} not covered", style="bold red")
        # whether anything runs unattended: the first question after "what is not protected"
        if self.service is not None:
            t.append(" · policy service running", style="green")
        elif self.runs_from == "agent":
            t.append(" · no policy service", style="yellow")
        elif self.runs_from == "file":
            t.append(" · job agent not running", style="yellow")
        if self.error:
            t.append(f" · {self.error}", style="bold red")
        self.query_one("#policies-status", TextLine).update(t)

    def selected_name(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return str(key.value) if key.value is not None else None

    def selected_line(self) -> PolicyLine | None:
        name = self.selected_name()
        return self.view.line(name) if self.view is not None and name else None

    def show_selected(self) -> None:
        if self.view is None:
            return
        self.query_one("#policy-detail", Static).update(
            render_policy_detail(self.selected_line(), self.view.now, self.tz))

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.show_selected()

    # --- actions ---------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_add(self) -> None:
        self.app.push_screen(PolicyForm(None, save=self._saver(new=True)), self._saved)

    def action_edit(self) -> None:
        line = self.selected_line()
        if line is None:
            self.app.notify("No policy selected", severity="warning")
            return
        self.app.push_screen(PolicyForm(line.policy, save=self._saver(new=False)), self._saved)

    def _saver(self, *, new: bool) -> Callable[[Policy], Policy]:
        store = self.policy_store
        clock = getattr(self.app, "clock", None)
        now = clock() if callable(clock) else None
        if new:
            return lambda p: store.add(p, now=now)
        return store.replace

    def _saved(self, policy: Policy | None) -> None:
        if policy is None:
            return
        self.app.notify(f"Policy {policy.name} saved")
        self._want_selected = policy.name
        self.reload()

    def action_remove(self) -> None:
        line = self.selected_line()
        if line is None:
            return
        name = line.name

        def confirmed(ok: bool | None) -> None:
            if ok:
                self._remove(name)

        self.app.push_screen(ConfirmScreen(
            f"Remove policy {name}?",
            f"Its {line.wins} VM(s) are no longer backed up by it (another policy that selects them takes "
            "over; the others become not covered). Their restore points stay in the repository.",
            yes=f"Remove {name}", no="Keep it"), confirmed)

    @work(group="policies-write", exit_on_error=False)
    async def _remove(self, name: str) -> None:
        try:
            await asyncio.to_thread(self.policy_store.remove, name)
        except (PolicyError, OSError, Exception) as e:  # store errors are one line, never a traceback
            self.app.notify(f"Could not remove policy {name}: {e}", severity="error", timeout=10)
            return
        self.app.notify(f"Policy {name} removed")
        self.reload()

    def action_run_now(self) -> None:
        line = self.selected_line()
        if line is None:
            return
        if not line.targets:
            self.app.notify(f"Policy {line.name} protects no VM now: nothing to run", severity="warning")
            return
        self._run_now(line.name, line.targets)

    @work(group="policies-run", exclusive=True, exit_on_error=False)
    async def _run_now(self, name: str, targets: list[str]) -> None:
        """Through the policy service (agent op ``run_policy``) when one runs, so the run is recorded as
        the policy's; otherwise the console's own backup path (plan, review, submit) with the job marked
        as the policy's."""
        from ..agent import AgentError
        from .jobs_screen import jobs_service, start_backup_flow
        svc = jobs_service(self.app)
        try:
            # any agent answers policy_runs; its "service" is the policy service's status, None when none runs
            service = (await svc.agent.request("policy_runs", limit=1)).get("service") is not None
        except AgentError:
            service = False
        if not service:
            self.app.notify(f"No policy service runs: backing up policy {name}'s {len(targets)} VM(s) as a "
                            "job of the console (plan, review, submit)", title="Run now", timeout=8)
            start_backup_flow(self.app, targets, policy=name)
            return

        async def send() -> None:
            try:
                resp = await svc.agent.request("run_policy", name=name)
            except AgentError as e:
                if "unknown op" in str(e):   # an older agent: the console's own path still works
                    self.app.notify(f"The agent cannot run policies: backing up policy {name}'s {len(targets)} "
                                    "VM(s) as a job of the console (plan, review, submit)", title="Run now", timeout=8)
                    start_backup_flow(self.app, targets, policy=name)
                    return
                self.app.notify(f"The policy service did not start {name}: {e}", severity="error", timeout=10)
                return
            run = resp.get("run") if isinstance(resp.get("run"), dict) else {}
            job, state = run.get("job_id"), run.get("state")
            # the service may answer when the run has started or when it has ended: say which
            said = f"ended {state}" if state and state != "running" else "started"
            self.app.notify(f"Run of policy {name} {said} by the policy service" + (f" (job {job})" if job else ""),
                            title="Run now")
            self.reload()

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.app.run_worker(send(), group="policies-run-send", exit_on_error=False)

        self.app.push_screen(ConfirmScreen(
            f"Run policy {name} now?",
            f"The policy service backs up its {len(targets)} VM(s) now, inside the per-host and per-datastore "
            "limits, and records the run as the policy's.",
            yes=f"Run {name} now", no="Leave it"), confirmed)


# --- the add/edit form -----------------------------------------------------------------------------------

FIELDS: tuple[tuple[str, str, str], ...] = (
    # key, label, placeholder (an example)
    ("name", "Name", "db-nightly"),
    ("vms", "VMs", "re:^db- host:cna-0[1-4] !rule:template"),
    ("schedule", "Schedule", "daily 23:00,03:00 · mon-fri 01:00 · cron 30 2 * * 1-5"),
    ("window", "Window", "daily 22:00-06:00 (empty: any time)"),
    ("rpo", "RPO", "24h"),
)
KEEP_ROWS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("keep-last", "last"), ("keep-hourly", "hourly"), ("keep-daily", "daily")),
    (("keep-weekly", "weekly"), ("keep-monthly", "monthly"), ("keep-yearly", "yearly")),
)


class PolicyForm(ModalScreen["Policy | None"]):
    """One input per field; Save checks the whole policy (``policy_from_mapping``): an error shows as one
    line under the form and nothing is stored; a good policy is written by ``save`` in a worker."""

    DEFAULT_CSS = """
    PolicyForm { align: center middle; }
    PolicyForm #policy-form { width: 90; max-width: 100%; height: auto; max-height: 100%;
                              background: $surface; border: thick $primary; padding: 0 1; }
    PolicyForm #form-title { text-style: bold; height: 1; margin-bottom: 1; }
    PolicyForm .form-row { height: 1; }
    PolicyForm .form-label { width: 10; height: 1; }
    PolicyForm .keep-label { width: 8; height: 1; padding-left: 1; }
    PolicyForm Input, PolicyForm Input:focus { border: none; height: 1; padding: 0 1; width: 1fr; }
    PolicyForm Input { background: $boost; }
    PolicyForm Input:focus { background: $primary 30%; }
    PolicyForm Input:disabled { background: $surface; }
    PolicyForm .keep-input { width: 1fr; }
    PolicyForm Checkbox { border: none; height: 1; padding: 0; background: $surface; }
    PolicyForm #form-error { color: $error; height: auto; width: 100%; margin-top: 1; }
    PolicyForm #form-buttons { height: auto; margin-top: 1; }
    PolicyForm #form-buttons Button { margin-right: 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="policyform.cancel"),
        Binding("ctrl+s", "save", "Save", id="policyform.save"),
        Binding("tab", "app.focus_next", "Next field", show=False, id="policyform.next"),
        Binding("shift+tab", "app.focus_previous", "Previous field", show=False, id="policyform.previous"),
    ]

    def __init__(self, policy: Policy | None, *, save: Callable[[Policy], Policy]) -> None:
        super().__init__()
        self.policy = policy
        self.save = save
        self.values = policy_form_values(policy)
        self.error = ""
        self.saving = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="policy-form"):
            yield Static(f"Edit policy {self.policy.name}" if self.policy else "Add a policy", id="form-title")
            for key, label, hint in FIELDS:
                with Horizontal(classes="form-row"):
                    yield Label(label, classes="form-label")
                    yield Input(self.values[key], placeholder=hint, id=f"f-{key}",
                                disabled=key == "name" and self.policy is not None)
            for i, row in enumerate(KEEP_ROWS):
                with Horizontal(classes="form-row"):
                    yield Label("Keep" if i == 0 else "", classes="form-label")
                    for key, label in row:
                        yield Label(label, classes="keep-label")
                        yield Input(self.values[key], placeholder="0", id=f"f-{key}", classes="keep-input")
            with Horizontal(classes="form-row"):
                yield Label("Full every", classes="form-label")
                yield Input(self.values["full-every"], placeholder="0 (never): every Nth backup reads every block",
                            id="f-full-every")
            with Horizontal(classes="form-row"):
                yield Label("", classes="form-label")
                yield Checkbox("Enabled", self.values["enabled"] == "yes", id="f-enabled")
            yield Label("", id="form-error")
            with Horizontal(id="form-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")
        yield Footer()

    def on_mount(self) -> None:
        first = "#f-vms" if self.policy is not None else "#f-name"
        self.query_one(first, Input).focus()

    def form_values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self.values:
            if key == "enabled":
                out[key] = self.query_one("#f-enabled", Checkbox).value
            else:
                out[key] = self.query_one(f"#f-{key}", Input).value
        return out

    def show_error(self, text: str) -> None:
        self.error = text
        self.query_one("#form-error", Label).update(text)

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        if self.saving:
            return
        try:
            policy = policy_from_form(self.form_values(),
                                      created=self.policy.created if self.policy is not None else 0.0)
        except PolicyError as e:
            self.show_error(str(e))
            return
        self.show_error("")
        self.saving = True
        self._store(policy)

    @work(group="policy-form-save", exit_on_error=False)
    async def _store(self, policy: Policy) -> None:
        try:
            stored = await asyncio.to_thread(self.save, policy)
        except Exception as e:  # PolicyError (exists already), a locked or unwritable store: one line
            self.saving = False
            self.show_error(str(e) if isinstance(e, PolicyError) else f"could not save: {e}")
            return
        self.saving = False
        self.dismiss(stored)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
