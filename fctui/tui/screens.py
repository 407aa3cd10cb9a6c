"""Screens: first run, connection form, main inventory, detail, datastores, tree, help.

They reach the console through :func:`~fctui.tui.services.console_of`, never by importing app.py."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Input, Label, OptionList, Static, Tree
from textual.widgets.option_list import Option
from textual.widgets.tree import TreeNode

from ..inventory.query import COLUMN_IDS
from ..units import human_bytes
from .detail import storage_info
from .dialogs import ConfirmScreen
from .services import Console, console_of
from .widgets.line import Panel, TextLine
from .widgets.lineinput import LineInput
from .widgets.summary import SummaryBar
from .widgets.vmtable import VmTable

FILTER_HINT = "text  re:regex  !inverse  verdict:blocked  rule:disk-ide  host:cna-03  state:stopped"


class MainScreen(Screen[None]):
    """The inventory: status line, stale banner, summary bar, filter, VM table, detail pane."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", id="vm.filter"),
        Binding("escape", "clear_filter", "Clear filter", id="vm.clear_filter"),
        Binding("enter", "detail", "Detail", id="vm.detail"),
        Binding("s", "sort_next", "Sort", id="vm.sort"),
        Binding("S", "sort_reverse", "Reverse sort", show=False, id="vm.sort_reverse"),
        Binding("space", "mark", "Mark", id="vm.mark"),
        Binding("a", "mark_all", "Mark all shown", show=False, id="vm.mark_all"),
        Binding("u", "clear_marks", "Clear marks", show=False, id="vm.clear_marks"),
        Binding("y", "copy_urn", "Copy URN", show=False, id="vm.copy_urn"),
        Binding("P", "start_vm", "Power on", show=False, id="vm.start"),
        Binding("b", "backup", "Backup", show=False, id="vm.backup"),
        Binding("r", "restore", "Restore", show=False, id="vm.restore"),
        Binding("f", "browse_files", "Files of last backup", show=False, id="vm.files"),
        Binding("J", "jobs", "Jobs", show=False, id="view.jobs"),
        Binding("O", "policies", "Policies", show=False, id="view.policies"),
        Binding("X", "dr", "Disaster recovery", show=False, id="dr.show"),
        Binding("D", "datastores", "Datastores", id="view.datastores"),
        Binding("t", "tree", "Tree", id="view.tree"),
        Binding("R", "refresh_now", "Refresh", show=False, id="app.refresh"),
        Binding("p", "toggle_pause", "Pause refresh", show=False, id="app.pause"),
        # Tab order: summary bar (its counts filter), the filter line while shown, the VM table. The
        # side detail is a preview of the highlighted VM, not a place to go: enter opens it in full.
        Binding("tab", "app.focus_next", "Next pane", show=False, id="app.focus_next"),
        Binding("shift+tab", "app.focus_previous", "Previous pane", show=False, id="app.focus_previous"),
    ]
    # Actions that change something on the VRM: hidden in read-only mode (backup `b` and restore `r`
    # of later issues join this set).
    MUTATING: ClassVar[frozenset[str]] = frozenset({"start_vm", "backup", "restore"})

    @property
    def console(self) -> Console:
        return console_of(self)

    def compose(self) -> ComposeResult:
        yield TextLine(id="status")
        yield TextLine(id="banner")
        yield SummaryBar(id="summary")
        yield LineInput(placeholder=FILTER_HINT, id="filter")
        with Horizontal(id="body"):
            yield VmTable(id="vms")
            with Vertical(id="detail-pane"):
                yield Panel(id="detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one("#banner", TextLine).display = False
        self.query_one(VmTable).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.MUTATING and self.console.read_only:
            return False
        if action == "clear_filter":
            # Esc means back/close everywhere; here it clears the filter only while the filter line has the
            # focus (and the footer says so then): on the table it is not a second, hidden meaning.
            return self.focused is self.query_one("#filter", Input)
        return True

    # --- actions -----------------------------------------------------------------------------

    def action_filter(self) -> None:
        inp = self.query_one("#filter", Input)
        inp.display = True
        inp.focus()

    def action_clear_filter(self) -> None:
        inp = self.query_one("#filter", Input)
        if inp.value:
            inp.value = ""
        inp.display = False
        self.query_one(VmTable).focus()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        inp = self.query_one("#filter", Input)
        inp.display = bool(inp.value)
        self.query_one(VmTable).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.console.set_filter(event.value, from_input=True)

    def on_key(self, event: Any) -> None:
        # Escape inside the filter input clears it and returns to the table.
        if event.key == "escape" and self.focused is self.query_one("#filter", Input):
            event.stop()
            self.action_clear_filter()

    def action_detail(self) -> None:
        key = self.query_one(VmTable).cursor_key
        if key:
            self.app.push_screen(DetailScreen(key))

    def action_sort_next(self) -> None:
        i = COLUMN_IDS.index(self.console.sort_column) if self.console.sort_column in COLUMN_IDS else -1
        self.console.set_sort(COLUMN_IDS[(i + 1) % len(COLUMN_IDS)], False)

    def action_sort_reverse(self) -> None:
        self.console.set_sort(self.console.sort_column, not self.console.sort_reverse)

    def action_mark(self) -> None:
        table = self.query_one(VmTable)
        if table.cursor_key:
            self.console.store.toggle_mark(table.cursor_key)
            table.refresh_marks(self.console.store.marks)
            table.action_cursor_down()
            self.console.update_status()

    def action_mark_all(self) -> None:
        table = self.query_one(VmTable)
        self.console.store.marks.update(table.keys)
        table.refresh_marks(self.console.store.marks)
        self.console.update_status()

    def action_clear_marks(self) -> None:
        self.console.store.marks.clear()
        self.query_one(VmTable).refresh_marks(self.console.store.marks)
        self.console.update_status()

    def action_copy_urn(self) -> None:
        key = self.query_one(VmTable).cursor_key
        if key:
            self.app.copy_to_clipboard(key)
            self.app.notify(f"Copied {key}", title="URN copied (OSC 52)")

    def action_datastores(self) -> None:
        self.app.push_screen(DatastoresScreen())

    def action_tree(self) -> None:
        self.app.push_screen(TreeScreen())

    def action_refresh_now(self) -> None:
        self.console.refresh_now()

    def action_toggle_pause(self) -> None:
        self.console.paused = not self.console.paused
        self.console.update_status()
        if not self.console.paused:
            self.console.refresh_now()

    def action_start_vm(self) -> None:
        key = self.query_one(VmTable).cursor_key
        vm = self.console.vms.get(key) if key else None
        if vm is None:
            return

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.console.start_vm(vm)

        self.app.push_screen(ConfirmScreen(f"Power on {vm.name}?",
                                           f"This starts VM {vm.name} ({vm.urn}) on the VRM.",
                                           yes=f"Power on {vm.name}", no="Leave it off"),
                             confirmed)

    def action_backup(self) -> None:
        """The marked VMs (in table order), else the highlighted one: plan, review, submit."""
        from .jobs_screen import start_backup_flow
        table = self.query_one(VmTable)
        marks = self.console.store.marks
        targets = [k for k in table.keys if k in marks] or sorted(marks)
        if not targets and table.cursor_key:
            targets = [table.cursor_key]
        start_backup_flow(self.app, targets)

    def action_restore(self) -> None:
        from .restore_wizard import start_restore_wizard
        key = self.query_one(VmTable).cursor_key
        vm = self.console.vms.get(key) if key else None
        if key:
            start_restore_wizard(self.app, key, vm.name if vm is not None else "")

    def action_browse_files(self) -> None:
        from .files_screen import browse_latest_point
        key = self.query_one(VmTable).cursor_key
        vm = self.console.vms.get(key) if key else None
        if key:
            browse_latest_point(self.app, key, vm.name if vm is not None else "")

    def action_jobs(self) -> None:
        from .jobs_screen import JobsScreen, jobs_service
        self.app.push_screen(JobsScreen(jobs_service(self.app)))

    def action_dr(self) -> None:
        from .dr_screen import show_dr
        show_dr(self.app)

    def action_policies(self) -> None:
        from .policies_screen import PoliciesScreen
        self.app.push_screen(PoliciesScreen())

    # --- events ------------------------------------------------------------------------------

    @on(VmTable.CursorMoved)
    def _cursor_moved(self, event: VmTable.CursorMoved) -> None:
        self.console.show_detail(event.key)

    @on(VmTable.HeaderClicked)
    def _header_clicked(self, event: VmTable.HeaderClicked) -> None:
        if event.column_id == self.console.sort_column:
            self.console.set_sort(event.column_id, not self.console.sort_reverse)
        else:
            self.console.set_sort(event.column_id, False)

    @on(SummaryBar.Chosen)
    def _summary_chosen(self, event: SummaryBar.Chosen) -> None:
        inp = self.query_one("#filter", Input)
        new = "" if inp.value.strip() == event.expression else event.expression
        inp.value = new   # fires Input.Changed, which applies the filter
        inp.display = bool(new)
        self.console.set_filter(new)

    def on_resize(self) -> None:
        self.console.layout_detail()


class DetailScreen(ModalScreen[None]):
    """Full-size detail of one VM (also the way to see it at 80x24 where the side pane is hidden)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,enter", "dismiss", "Close", id="detail.close"),
        Binding("y", "copy_urn", "Copy URN", id="detail.copy_urn"),
        Binding("f", "browse_files", "Files of last backup", id="detail.files"),
    ]

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail-dialog"):
            yield Static("", id="detail-full")
        yield Footer()

    def on_mount(self) -> None:
        self.update()
        console_of(self).load_snapshots(self.key)

    def update(self) -> None:
        self.query_one("#detail-full", Static).update(console_of(self).detail_renderable(self.key))

    def action_copy_urn(self) -> None:
        self.app.copy_to_clipboard(self.key)
        self.app.notify(f"Copied {self.key}", title="URN copied (OSC 52)")

    def action_browse_files(self) -> None:
        from .files_screen import browse_latest_point
        vm = console_of(self).vms.get(self.key)
        browse_latest_point(self.app, self.key, vm.name if vm is not None else "")


class DatastoresScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back", id="datastores.back"),
    ]

    def compose(self) -> ComposeResult:
        yield Static("Datastores", id="ds-title")
        yield DataTable(id="ds-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        # what decides a backup or a restore target first (support, free space): whole at 80 columns
        t.add_columns("Name", "Backup", "Free", "Type", "Class", "Capacity", "Status")
        if console_of(self).multi_site:
            t.add_column("Site")   # two VRMs may name their datastores alike
        self.populate()
        t.focus()

    def populate(self) -> None:
        t = self.query_one(DataTable)
        t.clear()
        console = console_of(self)
        multi = console.multi_site
        labels = {d.urn: getattr(console.site_of(d.urn), "label", "?") for d in console.datastores.values()} if multi else {}
        stores = sorted(console.datastores.values(), key=lambda d: (d.name, labels.get(d.urn, "")))
        for d in stores:
            cls, supported = storage_info(d.storage_type)
            free = d.usable_free_gb
            cap = d.actual_capacity_gb if d.actual_capacity_gb is not None else d.capacity_gb
            pct = f" ({free * 100 // cap}%)" if free is not None and cap else ""
            sup = Text("supported", style="green") if supported else (
                Text("unsupported", style="bold red") if supported is False else Text("unknown", style="yellow"))
            cells = [d.name, sup, human_bytes(None if free is None else free << 30) + pct, d.storage_type, cls,
                     human_bytes(None if cap is None else cap << 30), d.status]
            if multi:
                cells.append(labels.get(d.urn, "?"))
            t.add_row(*cells, key=d.urn)
        self.query_one("#ds-title", Static).update(
            f"Datastores: {len(stores)}  ·  raw LOCAL, LUN and san storage cannot be backed up")


class TreeScreen(Screen[None]):
    """Sites → clusters → hosts; with several VRMs, VRMs (label, state) → clusters → hosts. Hosts load
    when a cluster is expanded (from that cluster's VRM); selecting a host filters on it, a VRM on its
    ``site:``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back", id="tree.back"),
    ]

    def compose(self) -> ComposeResult:
        yield Static("Inventory tree: enter on a host shows its VMs", id="tree-title")
        yield Tree("site", id="tree")
        yield Footer()

    def on_mount(self) -> None:
        console = console_of(self)
        tree = self.query_one(Tree)
        if console.multi_site:
            tree.root.set_label(Text(f"VRMs ({len(console.sites)})", style="bold"))
            tree.root.data = {"kind": "vrms"}
            for st in console.sites:
                node = tree.root.add(self._vrm_label(st), data={"kind": "vrm", "site": st.index}, allow_expand=True)
                self._add_clusters(node, st.clusters, st.index)
                node.expand()
        else:
            site = console.site
            tree.root.set_label(Text(f"site {site.name if site else '?'}", style="bold"))
            tree.root.data = {"kind": "site"}
            self._add_clusters(tree.root, console.clusters, 0)
        tree.root.expand()
        tree.focus()

    @staticmethod
    def _add_clusters(node: TreeNode, clusters: list[Any], site: int) -> None:
        for c in sorted(clusters, key=lambda c: c.name):
            node.add(f"cluster {c.name}", data={"kind": "cluster", "urn": c.urn, "loaded": False, "site": site},
                     allow_expand=True)

    @staticmethod
    def _vrm_label(st: Any) -> Text:
        t = Text()
        t.append(f"VRM {st.label}", style="bold")
        if st.site is not None:
            t.append(f"  {st.site.name}")
        state = st.state
        t.append(f"  {state}", style={"live": "green", "connecting": "dim"}.get(state, "bold yellow"))
        if st.stale_reason:
            t.append(f": {st.stale_reason}", style="yellow")
        return t

    def sites_changed(self) -> None:
        """A VRM went stale, came back or listed its clusters: relabel (and fill) its node."""
        console = console_of(self)
        if not console.multi_site:
            return
        for node in self.query_one(Tree).root.children:
            data = node.data or {}
            if data.get("kind") != "vrm" or data["site"] >= len(console.sites):
                continue
            st = console.sites[data["site"]]
            node.set_label(self._vrm_label(st))
            if not node.children and st.clusters:
                self._add_clusters(node, st.clusters, st.index)
                node.expand()

    @on(Tree.NodeExpanded)
    def _expanded(self, event: Tree.NodeExpanded) -> None:
        data = event.node.data or {}
        if data.get("kind") == "cluster" and not data.get("loaded"):
            data["loaded"] = True
            event.node.add_leaf(Text("loading…", style="dim"), data={"kind": "placeholder"})
            self._load_hosts(event.node, data["urn"], data.get("site", 0))

    @work(group="tree", exit_on_error=False)
    async def _load_hosts(self, node: TreeNode, cluster_urn: str, site: int = 0) -> None:
        console = console_of(self)
        st = console.sites[site] if console.multi_site else None
        feed = st.feed if st is not None else console.feed
        try:
            hosts = await console.feed_call(feed.hosts_of(cluster_urn), site=site)  # type: ignore[union-attr]
        except Exception as e:  # VRM errors show in the tree, never crash the app
            node.remove_children()
            node.add_leaf(Text(f"could not load hosts: {e}", style="yellow"), data={"kind": "error"})
            node.data["loaded"] = False
            return
        node.remove_children()
        label = st.label if st is not None else None
        counts = console.vm_count_by_host(label)
        for h in sorted(hosts, key=lambda h: h.name):
            n = counts.get(h.name, 0)
            node.add_leaf(f"host {h.name}  {h.status}  {n} VMs", data={"kind": "host", "name": h.name, "site": label})

    @on(Tree.NodeSelected)
    def _selected(self, event: Tree.NodeSelected) -> None:
        data = event.node.data or {}
        console = console_of(self)
        if data.get("kind") == "host":
            self.app.pop_screen()
            where = f"site:{_quoted(data['site'])} " if data.get("site") else ""
            console.set_filter(f"{where}host:{_quoted(data['name'])}", update_input=True)
        elif data.get("kind") == "vrm":
            self.app.pop_screen()
            console.set_filter(f"site:{_quoted(console.sites[data['site']].label)}", update_input=True)


def _quoted(value: str) -> str:
    """A filter term's value, quoted when it has spaces or quotes (the filter splits on spaces)."""
    if value and not any(c in value for c in " \t\"'"):
        return value
    return '"' + value.replace('"', "") + '"'


class HelpScreen(ModalScreen[None]):
    """Generated from the active bindings of the screen underneath (so remapped keys show as remapped)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close", id="help.close"),
    ]

    def __init__(self, rows: list[tuple[str, str, str]], notes: list[str] | None = None) -> None:
        super().__init__()
        self.rows = rows
        self.notes = notes or []   # standing facts of the session (an untested VRM version), in full

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog"):
            yield Static(self._help_text(), id="help-body")
        yield Footer()

    def _help_text(self) -> Text:
        t = Text()
        t.append("Keys", style="bold underline")
        t.append("   (remap any id in the [keymap] table of config.toml)\n\n", style="dim")
        for keys, desc, bid in self.rows:
            t.append(f"{keys:<16}", style="bold")
            t.append(f"{desc:<22}")
            t.append(f"{bid}\n", style="dim")
        t.append("\nFilter: ", style="bold")
        t.append(FILTER_HINT + "  disks:>4  size:>=500  rpo:breached  policy:none  marked:yes  \"quoted words\"\n")
        t.append("        esc in the filter line clears it; on the table esc does nothing\n", style="dim")
        t.append("Summary bar: ", style="bold")
        t.append("tab to it, ←/→ to pick a count, enter to filter on it\n")
        for note in self.notes:
            t.append(f"\n{note}\n", style="yellow")
        return t


class FirstRunScreen(Screen[None]):
    """Nothing configured: offer the demo or a connection form."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "app.quit", "Quit", id="firstrun.quit"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="firstrun-dialog"):
            yield Static(Text.assemble(("fctui", "bold"), " — agentless backup console for FusionCompute\n\n",
                                       "No VRM is configured yet. Try the demo (a simulated VRM on this machine) "
                                       "or connect to your VRM. Passwords are never stored."), id="firstrun-text")
            yield OptionList(
                Option("Start the demo (simulated VRM)", id="demo"),
                Option("Connect to a VRM…", id="connect"),
                Option("Quit", id="quit"),
                id="firstrun-options",
            )
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        if event.option.id == "demo":
            console_of(self).start_demo()
        elif event.option.id == "connect":
            self.app.push_screen(ConnectScreen())
        else:
            self.app.exit(0)


class ConnectScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="connect.back"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="connect-dialog"):
            yield Label("VRM address")
            yield Input(placeholder="https://vrm.example:7443", id="url")
            yield Label("User")
            yield Input(placeholder="admin", id="user")
            yield Label("Password (used for this session only, never stored)")
            yield Input(password=True, id="password")
            yield Checkbox("Skip TLS verification (--insecure)", id="insecure")
            yield Checkbox("Save as profile (without the password)", value=True, id="save")
            yield Label("", id="connect-error")
            yield Button("Connect", variant="primary", id="connect")
        yield Footer()

    @on(Input.Submitted)
    @on(Button.Pressed, "#connect")
    def _connect(self) -> None:
        url = self.query_one("#url", Input).value.strip()
        user = self.query_one("#user", Input).value.strip()
        password = self.query_one("#password", Input).value
        err = self.query_one("#connect-error", Label)
        if not url.startswith(("http://", "https://")):
            err.update("The address must start with https:// (or http://)")
            return
        if not user or not password:
            err.update("User and password are required")
            return
        console_of(self).connect_from_form(url, user, password,
                                           insecure=self.query_one("#insecure", Checkbox).value,
                                           save=self.query_one("#save", Checkbox).value)
