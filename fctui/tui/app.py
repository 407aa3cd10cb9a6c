"""The live inventory console (Textual app).

Threading rule: I/O runs in async workers that post messages, filter/sort runs in a thread worker that
posts the resulting :class:`View` (a filter keystroke over already-sorted rows whose terms the view
cache answers without a per-row call, a few ms, runs inline instead); message handlers on the app
own every piece of state. Nothing the VRM does (refusing, timing out, answering nonsense) ends the
app: it shows a banner and keeps the last data, retrying with back-off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from datetime import tzinfo
from functools import partial
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

from rich.text import Text
from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Static

from ..config import Config, Profile, save_profile
from ..inventory.query import COLUMN_IDS, Filter, FilterError, RowStore, Summary, View, ViewCache, parse_filter
from ..rules.engine import confirmed, with_owned_snapshots, with_snapshot_tree
from ..vrm.errors import VrmAuthError, VrmError, VrmVersionError
from ..vrm.models import Cluster, Datastore, Host, Site, Vm
from ..vrm.urn import site_id
from .detail import render_detail
from .feedproc import FactsLite, RefreshProcess, run_refresh_loop, settle_heap
from .messages import (FeedConnected, FeedLost, FeedUpdate, RefreshStarted, SnapshotsLoaded, ViewFailed,
                       ViewReady)
from .protection import ProtectionAssessed, ProtectionResult
from .screens import (DatastoresScreen, DetailScreen, FirstRunScreen, HelpScreen, MainScreen, TreeScreen)
from .source import Complete, ConnectSpec, InventoryFeed, StaticInfo, VmPage
from .widgets.line import Panel, TextLine
from .widgets.summary import SummaryBar
from .widgets.vmtable import VmTable

log = logging.getLogger(__name__)

DETAIL_MIN_WIDTH = 120   # below this the side pane hides; enter opens the detail screen instead
MAX_BACKOFF = 60.0


def format_age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def quit_note(running: int, cluster: str | None = None) -> str:
    """The line printed when the console closes while jobs run (in the local agent, or a cluster's proxies)."""
    jobs = "1 job is" if running == 1 else f"{running} jobs are"
    where = f"in the cluster at {cluster}" if cluster else "in the job agent"
    return (f"fctui: {jobs} still running {where} and will go on; "
            "`fctui jobs` or the console (J) shows them.")


class ActionsProvider(Provider):
    """Command palette entries: every action bound on the current screen, plus sort and view commands."""

    def _commands(self) -> list[tuple[str, Callable[[], Any], str]]:
        app: Any = self.app
        screen = self.screen
        out: list[tuple[str, Callable[[], Any], str]] = []
        seen: set[tuple[int, str, str | None]] = set()
        keys_by: dict[tuple[int, str, str | None], list[str]] = {}
        active = screen.active_bindings
        for key, ab in active.items():
            keys_by.setdefault((id(ab.node), ab.binding.action, ab.binding.id), []).append(key)
        for key, ab in active.items():
            b = ab.binding
            ident = (id(ab.node), b.action, b.id)
            if ident in seen or b.action in ("command_palette",) or not b.description:
                continue
            seen.add(ident)
            keys = ", ".join(keys_by[ident])
            out.append((b.description, partial(app.run_action, b.action, ab.node), f"key {keys} · id {b.id or '-'}"))
        if isinstance(screen, MainScreen):
            for col in COLUMN_IDS:
                out.append((f"Sort by {col}", partial(app.set_sort, col, False), "sort the VM table"))
            out.append(("Show marked VMs only", partial(app.set_filter, "marked:yes", update_input=True),
                        "filter marked:yes"))
        return out

    async def discover(self) -> Hits:
        for title, cb, help_text in self._commands():
            yield DiscoveryHit(title, cb, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, cb, help_text in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), cb, help=help_text)


class SiteState:
    """One VRM of the console: its connection, refresh and what it last said. The rows of every VRM
    share one store, keyed by VM URN (unique across sites); ``keys`` says which are this VRM's, so a
    refresh of one VRM drops only its own vanished VMs and a lost VRM marks only its own rows stale."""

    def __init__(self, index: int, spec: ConnectSpec) -> None:
        self.index = index
        self.spec = spec
        self.label = spec.site_label
        self.feed: InventoryFeed | None = None
        self.runner: FeedRunner | None = None
        self.refresher: RefreshProcess | None = None
        self.site: Site | None = None
        self.clusters: list[Cluster] = []
        self.hosts: list[Host] = []
        self.datastores: dict[str, Datastore] = {}
        self.api_version = ""
        self.version_warning = ""
        self.updated_at: float | None = None
        self.stale_reason = ""
        self.fatal = False
        self.retry_at: float | None = None
        self.refreshing = False
        self.loaded_once = False
        self.last_refresh_seconds: float | None = None
        self.refresh_count = 0
        self.keys: set[str] = set()      # URNs of this VRM's VMs (rows, models, facts)

    @property
    def state(self) -> str:
        """One word for the tree and the status line."""
        if self.stale_reason:
            return "login refused" if self.fatal else "stale"
        if not self.loaded_once:
            return "connecting"
        return "live"

    def owns(self, urn: str) -> bool:
        if urn in self.keys:
            return True
        if self.site is None or not self.site.id:
            return False
        try:
            return site_id(urn) == self.site.id
        except ValueError:
            return False


class FeedRunner:
    """A thread with its own asyncio loop that owns the UI process's VRM client: it runs the refresh
    loop itself (in-process transports, i.e. tests) or only serves interactive calls (tree, snapshot
    trees, power on, jobs) while a :class:`RefreshProcess` refreshes. It talks to the UI only through
    thread-safe ``post_message``; :meth:`FctuiApp.feed_call` runs coroutines on its loop."""

    def __init__(self, app: "FctuiApp", feed: InventoryFeed, site: SiteState | None = None) -> None:
        self.app = app
        self.feed = feed
        self.site = site or SiteState(0, feed.spec)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"fctui-feed-{self.site.index}", daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        self._wake = asyncio.Event()
        self._task = loop.create_task(self.app.refresh_loop(self))
        self._ready.set()
        try:
            loop.run_until_complete(self._task)
        except (asyncio.CancelledError, Exception):
            pass
        finally:
            try:
                loop.run_until_complete(self.feed.aclose())
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:
                pass
            loop.close()

    async def sleep(self, seconds: float) -> None:
        assert self._wake is not None
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    def wake(self) -> None:
        if self.loop is not None and self._wake is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        if self.loop is not None and self._task is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self._task.cancel)
            except RuntimeError:
                pass
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)


class FctuiApp(App[int]):
    """The console. Screens see it as a :class:`~fctui.tui.services.Console` (they do not import this module)."""

    CSS_PATH = str(Path(__file__).with_name("fctui.tcss"))  # absolute: subclasses live elsewhere
    TITLE = "fctui"
    COMMANDS = App.COMMANDS | {ActionsProvider}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("question_mark,f1", "help", "Help", id="app.help"),
        # `:` as in k9s and vim: the command palette (every action of the screen, sort and view commands)
        Binding("ctrl+p,colon", "command_palette", "Commands", show=False, id="app.command_palette"),
    ]
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, *, spec: ConnectSpec | None = None, specs: Iterable[ConnectSpec] | None = None,
                 config: Config | None = None,
                 clock: Callable[[], float] = time.time, read_only: bool | None = None,
                 theme: str | None = None, refresh_interval: float | None = None,
                 demo_starter: Callable[[], tuple[ConnectSpec, Callable[[], None]]] | None = None,
                 auto_refresh: bool = True, watch_tty: bool = True,
                 refresh_process: bool | None = None, tz: tzinfo | None = None) -> None:
        super().__init__()
        self.config = config or Config()
        # the VRMs of this console: one (``spec``) or several (``specs``, each a site with its own feed)
        self.specs: list[ConnectSpec] = list(specs) if specs is not None else ([spec] if spec is not None else [])
        self.sites: list[SiteState] = []
        self.clock = clock
        from ..jobs.policy import local_tz
        self.tz = tz or local_tz()     # schedules and windows are in local time
        self.read_only = bool(self.config.read_only if read_only is None else read_only)
        self.refresh_interval = float(refresh_interval or self.config.refresh_interval)
        self.demo_starter = demo_starter
        self.keep_refreshing = auto_refresh
        self.watch_tty = watch_tty
        self._wanted_theme = theme or self.config.theme
        self._cleanups: list[Callable[[], None]] = []
        # state owned by the UI thread
        self.store = RowStore()
        self.vms: dict[str, Vm] = {}
        self.assessments: dict[str, Any] = {}   # by VM URN; read them through assessment()
        self._to_confirm: set[str] = set()       # VMs whose stored provisional verdict a refresh confirmed
        self.facts: dict[str, Any] = {}
        self.snapshots: dict[str, Any] = {}
        self.snapshot_errors: dict[str, str] = {}
        # VM URN -> its latest restore point in the repository (None: no backup of it): the detail's
        # "next backup" is planned from it as ``b`` plans (fctui.jobs.planner.plan_vm)
        self.backup_points: dict[str, Any] = {}
        self._point_asks: dict[str, int] = {}     # per VM: asks for its latest point (see _fetch_backup_point)
        self._point_reading: set[str] = set()
        # snapshot URN -> VM URN, of the jobs running or queued in the agent: their own snapshots,
        # never leftovers (a refresh that sees one mid-job runs the rules without knowing so)
        self.owned_snapshots: dict[str, str] = {}
        # job id -> (ended, its VMs' (VM URN, snapshot URN)) as last seen: a job that ends or takes a
        # snapshot while watched changed its VMs' snapshot trees, which are read again
        self._job_snapshot_steps: dict[str, tuple[bool, frozenset[tuple[str, str]]]] = {}
        self.filter: Filter = parse_filter("")
        self.sort_column = "name"
        self.sort_reverse = False
        self.paused = False
        self.refresh_process = refresh_process
        self._blocked_timer: Any = None
        self._view_running = False
        self._view_dirty = False
        self._view_cache = ViewCache()
        self._snap_timer: Any = None
        self._detail_timer: Any = None
        # protection (issue 16): VM URN -> jobs.protection.VmProtection, from the last assessment; with
        # protection_error set the status is unknown (policies or repository unreadable)
        self.protection: dict[str, Any] = {}
        self.protection_policies: tuple[Any, ...] = ()   # what ``protection`` was assessed with
        self.protection_error = ""
        self._protection_running = False
        self._protection_dirty = False
        self.protection_pending = False           # an assessment asked for has not reached the rows yet
        self.first_rows_at: float | None = None   # perf_counter when the first rows reached the table
        self.complete_at: float | None = None
        self.shown_filter = ""                     # the filter of the view on screen

    # --- the VRMs (sites) ---------------------------------------------------------------------------
    # One site: these read as the single connection always did. Several: the first site's connection
    # (spec, feed, runner) and the whole console's state (counts, stale when any site is).

    @property
    def multi_site(self) -> bool:
        return len(self.sites) > 1

    def _first(self) -> SiteState | None:
        return self.sites[0] if self.sites else None

    @property
    def spec(self) -> ConnectSpec | None:
        st = self._first()
        return st.spec if st is not None else (self.specs[0] if self.specs else None)

    @property
    def feed(self) -> InventoryFeed | None:
        st = self._first()
        return st.feed if st is not None else None

    @property
    def runner(self) -> FeedRunner | None:
        st = self._first()
        return st.runner if st is not None else None

    @property
    def refresher(self) -> RefreshProcess | None:
        st = self._first()
        return st.refresher if st is not None else None

    @property
    def site(self) -> Site | None:
        st = self._first()
        return st.site if st is not None else None

    @property
    def api_version(self) -> str:
        st = self._first()
        return st.api_version if st is not None else ""

    @property
    def version_warning(self) -> str:
        return "; ".join(f"{s.label}: {s.version_warning}" if self.multi_site else s.version_warning
                         for s in self.sites if s.version_warning)

    @property
    def clusters(self) -> list[Cluster]:
        if len(self.sites) == 1:
            return self.sites[0].clusters
        return [c for s in self.sites for c in s.clusters]

    @property
    def hosts(self) -> list[Host]:
        if len(self.sites) == 1:
            return self.sites[0].hosts
        return [h for s in self.sites for h in s.hosts]

    @property
    def datastores(self) -> dict[str, Datastore]:
        if len(self.sites) == 1:
            return self.sites[0].datastores
        return {k: d for s in self.sites for k, d in s.datastores.items()}

    @property
    def stale_reason(self) -> str:
        return "; ".join(f"{s.label}: {s.stale_reason}" if self.multi_site else s.stale_reason
                         for s in self.sites if s.stale_reason)

    @property
    def retry_at(self) -> float | None:
        times = [s.retry_at for s in self.sites if s.retry_at is not None]
        return min(times) if times else None

    @property
    def updated_at(self) -> float | None:
        """When the oldest data on screen was read (None until a site has been read)."""
        times = [s.updated_at for s in self.sites if s.updated_at is not None]
        return min(times) if times else None

    @property
    def refreshing(self) -> bool:
        return any(s.refreshing for s in self.sites)

    @property
    def loaded_once(self) -> bool:
        return any(s.loaded_once for s in self.sites)

    @property
    def refresh_count(self) -> int:
        """Full refreshes of the site refreshed least (every site has had at least this many)."""
        return min((s.refresh_count for s in self.sites), default=0)

    @property
    def last_refresh_seconds(self) -> float | None:
        times = [s.last_refresh_seconds for s in self.sites if s.last_refresh_seconds is not None]
        return max(times) if times else None

    def site_of(self, urn: str | None) -> SiteState | None:
        """The VRM a VM (or any site-scoped URN) lives on: the one whose rows hold it, else by the site
        id in the URN; with one VRM, that one."""
        if len(self.sites) == 1 or not urn:
            return self._first()
        for s in self.sites:
            if urn in s.keys:
                return s
        for s in self.sites:
            if s.owns(urn):
                return s
        return None

    def site_by_label(self, label: str) -> SiteState | None:
        return next((s for s in self.sites if s.label == label), None)

    def feed_of(self, urn: str | None) -> InventoryFeed | None:
        """The feed (logged-in client) of the VRM ``urn`` lives on: actions on a VM use its own VRM."""
        st = self.site_of(urn)
        return st.feed if st is not None else None

    def spec_of(self, urn: str | None) -> ConnectSpec | None:
        """The connection of the VRM ``urn`` lives on (what a job submitted for it is given)."""
        st = self.site_of(urn)
        return st.spec if st is not None else None

    # --- start and stop ----------------------------------------------------------------------------

    def on_mount(self) -> None:
        if self._wanted_theme:
            if self._wanted_theme in self.available_themes:
                self.theme = self._wanted_theme
            else:
                self.notify(f"Unknown theme {self._wanted_theme!r}; themes: {', '.join(sorted(self.available_themes))}",
                            severity="warning")
        self._apply_keymap()
        if not self.is_headless:
            try:
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hang_up)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
            if self.watch_tty:
                self.set_interval(2.0, self._check_tty)
        self.set_interval(1.0, self.update_status)
        if self.specs:
            self._start(self.specs)
        else:
            self.push_screen(FirstRunScreen())

    def _apply_keymap(self) -> None:
        if not self.config.keymap:
            return
        from .drills import DrillScreen
        from .jobs_screen import JobList, JobsScreen
        from .restore_wizard import RestoreWizard
        from .review_screen import ReviewScreen
        from .dialogs import ConfirmScreen
        from .policies_screen import PoliciesScreen, PolicyForm
        from .files_screen import DestinationDialog, DiskChooser, ExtractScreen, FilesScreen
        from .widgets.linelist import LineList
        known = {b.id for cls in (FctuiApp, MainScreen, VmTable, SummaryBar, DetailScreen, DatastoresScreen,
                                   TreeScreen, HelpScreen, JobsScreen, JobList, ReviewScreen, RestoreWizard,
                                   DrillScreen, ConfirmScreen, PoliciesScreen, PolicyForm, FilesScreen,
                                   DiskChooser, DestinationDialog, ExtractScreen, LineList)
                 for b in cls.BINDINGS if isinstance(b, Binding) and b.id}
        unknown = sorted(set(self.config.keymap) - known)
        if unknown:
            self.notify(f"Unknown binding ids in [keymap]: {', '.join(unknown)}", severity="warning")
        self.set_keymap({k: v for k, v in self.config.keymap.items() if k in known})

    def _hang_up(self) -> None:
        self.exit(0)

    def _check_tty(self) -> None:
        # Over SSH a dropped session leaves the process without a terminal; leave instead of spinning.
        try:
            fd = sys.__stdout__.fileno() if sys.__stdout__ else -1
            lost = fd < 0 or not os.isatty(fd) or os.getppid() == 1
        except (OSError, ValueError):
            lost = True
        if lost:
            self.exit(0)

    def add_cleanup(self, fn: Callable[[], None]) -> None:
        self._cleanups.append(fn)

    async def on_unmount(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._stop_feeds)
        for fn in self._cleanups:
            try:
                fn()
            except Exception:  # cleaning up must not raise at exit
                log.debug("cleanup failed", exc_info=True)

    def _start(self, specs: list[ConnectSpec]) -> None:
        self.push_screen(MainScreen())
        self.call_after_refresh(self.update_status)
        self._start_feeds(specs)
        self._start_jobs()

    def _start_jobs(self) -> None:
        """Follow the job agent from the start: running jobs reattach, endings are announced."""
        from .jobs_screen import jobs_service
        jobs_service(self)

    def start_demo(self) -> None:
        if self.demo_starter is None:
            self.notify("The demo is not available in this build", severity="error")
            return
        self.notify("Starting the simulated VRM…")
        self._start_demo_worker()

    @work(thread=True, group="demo", exit_on_error=False)
    def _start_demo_worker(self) -> None:
        assert self.demo_starter is not None
        try:
            spec, stop = self.demo_starter()
        except Exception as e:
            self.call_from_thread(self.notify, f"Demo failed to start: {e}", severity="error")
            return
        self.call_from_thread(self._demo_ready, spec, stop)

    def _demo_ready(self, spec: ConnectSpec, stop: Callable[[], None]) -> None:
        self.add_cleanup(stop)
        self._reset_to_main(spec)

    def _reset_to_main(self, spec: ConnectSpec) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.switch_screen(MainScreen())
        self._start_feeds([spec])
        self._start_jobs()

    def connect_from_form(self, url: str, user: str, password: str, *, insecure: bool, save: bool) -> None:
        spec = ConnectSpec(url=url, user=user, password=password, verify=not insecure)
        if save:
            try:
                host = url.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0] or "vrm"
                path = save_profile(Profile(name=host, vrm=url, user=user, insecure=insecure))
                self.notify(f"Saved profile {host!r} in {path} (without the password)")
            except (OSError, ValueError) as e:
                self.notify(f"Could not save the profile: {e}", severity="warning")
        self._reset_to_main(spec)

    # --- refresh loop --------------------------------------------------------------------------------

    def _stop_feeds(self) -> None:
        for st in self.sites:
            if st.refresher is not None:
                st.refresher.stop()
                st.refresher = None
            if st.runner is not None:
                st.runner.stop()

    def _start_feeds(self, specs: list[ConnectSpec]) -> None:
        """One feed (and refresh process) per VRM; each refreshes, fails and retries on its own."""
        self._stop_feeds()
        self.specs = list(specs)
        self.sites = [SiteState(i, spec) for i, spec in enumerate(specs)]
        for st in self.sites:
            spec = st.spec
            use_process = self.refresh_process
            if use_process is None:
                # in-process transports (tests) cannot cross a process boundary
                use_process = spec.transport is None and os.environ.get("FCTUI_REFRESH_PROCESS", "1") != "0"
            if use_process:
                st.refresher = RefreshProcess(spec, partial(self._post_tuple, site=st.index),
                                              interval=self.refresh_interval, keep_refreshing=self.keep_refreshing)
                st.refresher.start()
                if self._blocked_timer is None:
                    self._blocked_timer = self.set_interval(0.25, self._sync_blocked)
            st.feed = InventoryFeed(spec, clock=self.clock)
            st.runner = FeedRunner(self, st.feed, st)
            st.runner.start()

    def _sync_blocked(self) -> None:
        blocked = self._refresh_blocked()
        for st in self.sites:
            if st.refresher is not None:
                st.refresher.set_blocked(blocked)

    def _refresh_blocked(self) -> bool:
        # read from the feed thread: a plain attribute read, no widget is touched
        return self.paused or isinstance(self._top_screen(), ModalScreen)

    def _top_screen(self) -> Any:
        """The screen on top, or None while the app is closing: updates from workers may still
        arrive then, and ``self.screen`` raises with an empty stack."""
        return self.screen_stack[-1] if self.screen_stack else None

    def refresh_now(self) -> None:
        for st in self.sites:
            st.retry_at = None
            if st.refresher is not None:
                st.refresher.set_blocked(self._refresh_blocked())
                st.refresher.wake()
            elif st.runner is not None:
                st.runner.wake()

    async def feed_call(self, coro: Any, *, urn: str | None = None, site: int | None = None) -> Any:
        """Run a coroutine on a feed's event loop (where its HTTP client lives) and await it here: the
        feed of the VRM ``urn`` lives on, or of site number ``site``; else the first VRM's."""
        st = self.sites[site] if site is not None and 0 <= site < len(self.sites) else self.site_of(urn)
        runner = st.runner if st is not None else None
        if runner is None or runner.loop is None:
            coro.close()
            raise VrmError("not connected")
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, runner.loop)
        except RuntimeError:          # the feed's loop closed (shutting down)
            coro.close()
            raise VrmError("not connected") from None
        return await asyncio.wrap_future(fut)

    def _post_tuple(self, msg: tuple, site: int = 0) -> None:
        """Feed → app: turn the refresh loop's (or the refresh process's) tuples into messages, each
        saying which VRM (``site``) it is from. Thread-safe: post_message may be called from any thread."""
        kind = msg[0]
        if kind == "event":
            self.post_message(FeedUpdate(msg[1], site))
        elif kind == "started":
            self.post_message(RefreshStarted(site))
        elif kind == "connected":
            self.post_message(FeedConnected(msg[1], site))
        elif kind == "lost":
            self.post_message(FeedLost(msg[1], msg[2], fatal=bool(msg[3]), site=site))

    async def refresh_loop(self, runner: "FeedRunner") -> None:
        """Runs on the feed thread's own event loop. With a refresh process the thread only keeps a
        logged-in client for interactive calls; otherwise it runs the refresh loop itself."""
        feed, st = runner.feed, runner.site
        post = partial(self._post_tuple, site=st.index)
        if st.refresher is not None:
            failures = 0
            while feed.site is None:
                try:
                    await feed.connect()
                except (VrmAuthError, VrmVersionError):
                    return       # the refresh process shows the refusal; do not hammer the login
                except VrmError:
                    failures += 1
                    await runner.sleep(min(MAX_BACKOFF, 2.0 * 2 ** (failures - 1)))
            if not st.loaded_once:
                # First rows on screen while the refresh process starts up and gathers.
                try:
                    post(("event", await feed.first_page()))
                except VrmError:
                    pass
            await runner.sleep(3600 * 24 * 365)
            return
        await run_refresh_loop(feed, post=post, sleep=runner.sleep, blocked=self._refresh_blocked,
                               interval=lambda: self.refresh_interval, keep_refreshing=self.keep_refreshing,
                               loaded=lambda: st.loaded_once)

    def _site_state(self, index: int) -> SiteState | None:
        """The site a feed message is from (None: a message of feeds stopped since)."""
        return self.sites[index] if 0 <= index < len(self.sites) else None

    @on(FeedConnected)
    def _connected(self, msg: FeedConnected) -> None:
        st = self._site_state(msg.site)
        if st is None:
            return
        st.api_version = msg.info.api_version
        st.site = msg.info.site
        # A standing fact, not an event: the status line says "untested" for the whole session (a toast
        # at every start covered rows at 80x24); the help screen gives the whole sentence.
        st.version_warning = msg.info.warning
        self.update_status()
        self._sites_changed()

    @on(RefreshStarted)
    def _refresh_started(self, msg: RefreshStarted) -> None:
        st = self._site_state(msg.site)
        if st is None:
            return
        st.refreshing = True
        self.update_status()

    @on(FeedUpdate)
    def _feed_update(self, msg: FeedUpdate) -> None:
        ev = msg.event
        st = self._site_state(msg.site)
        if st is None:
            return
        if isinstance(ev, StaticInfo):
            st.site = ev.site
            st.clusters, st.hosts = ev.clusters, ev.hosts
            st.datastores = {d.urn: d for d in ev.datastores}
            top = self._top_screen()
            if isinstance(top, DatastoresScreen):
                top.populate()
            self._sites_changed()
        elif isinstance(ev, VmPage):
            if ev.early:
                known = self.store.rows
                ev.vms = [vm for vm in ev.vms if vm.urn not in known]
                ev.rows = [r for r in ev.rows if r.key not in known]
            for vm in ev.vms:
                self.vms[vm.urn] = vm
            st.keys.update(vm.urn for vm in ev.vms)
            st.keys.update(r.key for r in ev.rows)
            get = ev.assessments.get
            for vm in ev.vms:
                a = get(vm.urn)
                if a is not None:
                    self.assessments[vm.urn] = a
                    self._to_confirm.discard(vm.urn)
            rows = ev.rows
            if self.multi_site:
                # each row says its VRM (site column, site: filter); copies, as the feed keeps what it sent
                rows = [r if r.site == st.label else replace(r, site=st.label) for r in rows]
            added, changed = self.store.upsert(self._keep_protection(rows))
            if added or changed:
                self.schedule_view()
            if self.owned_snapshots:
                self._rows_again(set(self.owned_snapshots.values()))
        elif isinstance(ev, Complete):
            if ev.confirmed:
                self._confirm(ev.confirmed)
            if ev.assessments:
                self.assessments.update(ev.assessments)
                self._to_confirm.difference_update(ev.assessments)
            # Facts arrive as changes (the refresh process sends only what differs; an empty
            # FactsLite clears a VM's): merge them, do not replace the whole map.
            for urn, f in ev.facts.items():
                if isinstance(f, FactsLite) and f.snapshot_tree is None and f.knowledge is None:
                    self.facts.pop(urn, None)
                    continue
                self.facts[urn] = f
                tree = getattr(f, "snapshot_tree", None)
                if tree is not None:
                    self.snapshots[urn] = tree
            if ev.keys:
                # this VRM's VMs that are gone; the other VRMs' rows stay whatever this one says
                keep = set(ev.keys)
                for other in self.sites:
                    if other is not st:
                        keep |= other.keys
                st.keys = set(ev.keys)
                gone = self.store.retain(keep if len(self.sites) > 1 else ev.keys)
                for urn in [u for u in self.vms if u not in keep]:
                    self.vms.pop(urn, None)
                    self.assessments.pop(urn, None)
                    self._to_confirm.discard(urn)
                for urn in [u for u in self.facts if u not in keep]:
                    del self.facts[urn]
                if gone:
                    self.schedule_view()
            st.updated_at = self.clock()
            self.complete_at = time.perf_counter()
            st.last_refresh_seconds = ev.seconds
            st.refresh_count += 1
            if st.refresher is not None:
                settle_heap(st.refresh_count)
            was_stale = bool(st.stale_reason)
            st.loaded_once = True
            st.refreshing = False
            st.stale_reason = ""
            st.fatal = False
            st.retry_at = None
            self._show_banner()
            self.update_status()
            if was_stale or st.refresh_count == 1:
                self._sites_changed()
            if self.owned_snapshots:
                self._rows_again(set(self.owned_snapshots.values()))
            self.show_detail(self._table_cursor())
            self.schedule_protection()

    def _confirm(self, urns: set[str]) -> None:
        """The refresh confirmed these VMs' provisional verdicts: they become final here, as the
        refresh derived them (nothing of them was sent again). The rows at once; the verdicts when
        read (:meth:`assessment`): only the detail pane reads them, one VM at a time."""
        self._to_confirm |= urns
        if self.store.confirm(urns):
            table = self._main_widget(VmTable)
            if table is not None:
                table.redraw_rows()   # the rows lose their "?"; order and filter are unchanged

    def assessment(self, urn: str) -> Any:
        """The VM's verdict as the console knows it."""
        a = self.assessments.get(urn)
        if a is not None and urn in self._to_confirm:
            self._to_confirm.discard(urn)
            if a.provisional:
                a = self.assessments[urn] = confirmed(a)
        if a is None:
            return a
        f = self.facts.get(urn)
        seen, tree = getattr(f, "snapshot_tree", None), self.snapshots.get(urn)
        if tree is not None and tree is not seen:
            # a tree read after the refresh that assessed the VM (a job took or deleted a snapshot
            # since): its snapshot findings follow that tree, not the refresh's
            a = with_snapshot_tree(a, tree, getattr(f, "knowledge", None), self.owned_snapshots)
        elif self.owned_snapshots:
            a = with_owned_snapshots(a, tree or seen, getattr(f, "knowledge", None), self.owned_snapshots)
        return a

    def jobs_changed(self, job_id: str | None = None) -> None:
        """The agent's jobs changed (a listener of the jobs service): when the snapshots the running
        and queued jobs own changed, their VMs' verdicts and rows are derived again."""
        from ..jobs.model import FINAL_JOB_STATES
        board = getattr(getattr(self, "jobs", None), "board", None)
        ended = board.jobs.get(job_id) if board is not None and job_id else None
        if ended is not None and ended.state in FINAL_JOB_STATES:
            # a backup may have added a restore point: the detail's "next backup" reads it again
            for v in ended.vms:
                if self.backup_points.pop(v.urn, False) is not False and self._shows_detail_of(v.urn):
                    self._fetch_backup_point(v.urn)
            if ended.type == "backup" and self.loaded_once:
                self.schedule_protection()     # a new point, or a failed attempt
        if board is not None and job_id:
            self._job_snapshot_step(board.jobs.get(job_id), job_id)
        owned: dict[str, str] = {}
        for j in board.jobs.values() if board is not None else ():
            owned |= j.owned_snapshots()
        if owned == self.owned_snapshots:
            return
        affected = {owned.get(s) or self.owned_snapshots.get(s) for s in set(owned) ^ set(self.owned_snapshots)}
        self.owned_snapshots = owned
        self._rows_again({u for u in affected if u})

    def _job_snapshot_step(self, job: Any, job_id: str) -> None:
        """A job that ended or whose VMs' snapshots changed since last seen changed their snapshot
        trees (a backup deletes its snapshot before it ends; a restore or drill cleans up its own):
        the cached trees go and are read again, so neither the detail nor the rows' snapshot
        findings keep a snapshot that is gone. A job first seen already ended (the agent's list when
        the console attaches) is read again only for the VM whose detail is shown."""
        from ..jobs.model import FINAL_JOB_STATES
        if job is None:
            self._job_snapshot_steps.pop(job_id, None)
            return
        step = (job.state in FINAL_JOB_STATES, frozenset((v.urn, v.snapshot_urn) for v in job.vms))
        before = self._job_snapshot_steps.get(job_id)
        if before == step:
            return
        self._job_snapshot_steps[job_id] = step
        urns = [v.urn for v in job.vms if v.urn in self.vms]
        if before is None and step[0]:
            urns = [u for u in urns if self._shows_detail_of(u)]
        elif before is None and not any(s for _, s in step[1]):
            return      # queued or just started: no snapshot taken yet
        if urns:
            self.read_snapshot_trees_again(urns)

    def read_snapshot_trees_again(self, urns: Iterable[str]) -> None:
        """Forget the cached snapshot trees of ``urns`` and read them again from the VRM."""
        urns = [u for u in dict.fromkeys(urns) if u in self.vms]
        for urn in urns:
            self.snapshots.pop(urn, None)
            self.snapshot_errors.pop(urn, None)
            if self._shows_detail_of(urn):
                self.show_detail(urn, now=True)      # "loading…", not the tree that is gone
                top = self._top_screen()
                if isinstance(top, DetailScreen) and top.key == urn:
                    top.update()
        if urns and self.feed is not None:
            self._read_snapshot_trees(urns)

    @work(group="snapshots-again", exit_on_error=False)
    async def _read_snapshot_trees(self, urns: list[str]) -> None:
        gate = asyncio.Semaphore(4)   # a job of many VMs: a few requests at a time

        async def one(urn: str) -> None:
            vm = self.vms.get(urn)
            if vm is None:
                return
            async with gate:
                await self._read_snapshot_tree(urn, vm.uri)
        await asyncio.gather(*(one(u) for u in urns))

    def _shows_detail_of(self, urn: str) -> bool:
        top = self._top_screen()
        return self._table_cursor() == urn or (isinstance(top, DetailScreen) and top.key == urn)

    def _rows_again(self, urns: Iterable[str]) -> None:
        """The table rows of ``urns`` from their verdicts as :meth:`assessment` gives them."""
        from dataclasses import replace
        from ..inventory.query import row_from_vm
        rows = []
        for urn in urns:
            vm, old = self.vms.get(urn), self.store.rows.get(urn)
            a = self.assessment(urn) if vm is not None and old is not None else None
            if a is None:
                continue
            new = row_from_vm(vm, a, provisional=old.provisional)
            rows.append(replace(old, verdict=new.verdict, reason=new.reason, rules=new.rules))
        if rows and any(self.store.upsert(rows)):
            self.schedule_view()
        cursor = self._table_cursor()
        if cursor in urns:
            self.show_detail(cursor, now=True)
        top = self._top_screen()
        if isinstance(top, DetailScreen) and top.key in urns:
            top.update()

    # --- protection (policies, RPO) ---------------------------------------------------------------------

    def _keep_protection(self, rows: list[Any]) -> list[Any]:
        """A refresh's rows carry no protection (the feed knows no policies): each keeps its VM's until
        the next assessment, so the column does not blink to "?" at every refresh. Copies: the feed
        still holds the rows it sent (it fingerprints them)."""
        known = self.store.rows
        out = []
        for r in rows:
            old = known.get(r.key)
            if old is not None and (old.protection or old.policy) and not (r.protection or r.policy):
                r = replace(r, protection=old.protection, policy=old.policy)
            out.append(r)
        return out

    def schedule_protection(self) -> None:
        """Assess every VM's protection again, off the event loop (after a refresh and after a backup job
        ends). One assessment at a time; asks made meanwhile become one more."""
        self.protection_pending = True
        if self._protection_running:
            self._protection_dirty = True
            return
        self._protection_dirty = False
        self._protection_running = True
        board = getattr(getattr(self, "jobs", None), "board", None)
        # finished backups only: their records no longer change while the worker reads them
        jobs = [j for j in board.jobs.values() if j.type == "backup" and j.is_final] if board is not None else []
        self._assess_protection(list(self.store.rows.values()), jobs, self.clock(), self.tz)

    @work(thread=True, group="protection", exit_on_error=False, description="assess protection")
    def _assess_protection(self, rows: list[Any], jobs: list[Any], now: float, tz: tzinfo) -> None:
        from .protection import assess, row_changes
        result = assess(rows, jobs, now=now, tz=tz)
        self.post_message(ProtectionAssessed(result, row_changes(rows, result)))

    @on(ProtectionAssessed)
    def _protection_assessed(self, msg: ProtectionAssessed) -> None:
        self._protection_running = False
        self.apply_protection(msg.result, msg.changes)
        if self._protection_dirty:
            self.schedule_protection()
        else:
            self.protection_pending = False

    def apply_protection(self, result: ProtectionResult,
                         changes: dict[str, tuple[Any, Any]] | None = None) -> None:
        """The rows (through the store: cursor and marks stay) and the detail follow an assessment.
        ``changes``: rows made in the worker (see ``protection.row_changes``); a row a refresh replaced
        since is copied here instead."""
        if result.error:
            if result.error != self.protection_error:
                self.notify(f"Protection unknown: {result.error}", severity="warning", timeout=10)
            self.protection_error = result.error
            self.protection = {}
        else:
            self.protection_error = ""
            self.protection = result.by_vm
        self.protection_policies = result.assessed_with
        if changes is None:
            from .protection import row_changes
            changes = row_changes(self.store.rows.values(), result)
        changed = []
        rows = self.store.rows
        for key, (assessed, new) in changes.items():
            row = rows.get(key)
            if row is assessed:
                changed.append(new)
            elif row is not None and (row.protection, row.policy) != (new.protection, new.policy):
                changed.append(replace(row, protection=new.protection, policy=new.policy))
        if changed and any(self.store.upsert(changed)):
            self.schedule_view()
        cursor = self._table_cursor()
        if cursor is not None:
            self.show_detail(cursor, now=True)
        top = self._top_screen()
        if isinstance(top, DetailScreen):
            top.update()

    @on(FeedLost)
    def _lost(self, msg: FeedLost) -> None:
        st = self._site_state(msg.site)
        if st is None:
            return
        st.refreshing = False
        st.stale_reason = msg.reason
        st.fatal = msg.fatal
        st.retry_at = None if msg.retry_in is None else self.clock() + msg.retry_in
        self._show_banner()
        self.update_status()
        self._sites_changed()

    def _stale_labels(self) -> list[str]:
        """The VRMs whose rows are last known data (with one VRM the banner alone says so, as it did)."""
        return [s.label for s in self.sites if s.stale_reason] if self.multi_site else []

    def _sites_changed(self) -> None:
        """A VRM connected, went stale or came back: the table's site column and dimmed rows, the
        summary's site counts and an open tree follow."""
        table = self._main_widget(VmTable)
        if table is not None:
            table.set_sites(self.multi_site, self._stale_labels())
        bar = self._main_widget(SummaryBar)
        if bar is not None:
            bar.set_stale_sites(self._stale_labels())
        top = self._top_screen()
        if isinstance(top, TreeScreen):
            top.sites_changed()

    def _show_banner(self, fatal: bool = False) -> None:
        """One line for every VRM that is stale or refused the login (the others stay live)."""
        banner = self._main_widget("#banner", TextLine)
        if banner is None:
            return
        stale = [s for s in self.sites if s.stale_reason]
        if not stale:
            if banner.display:
                banner.display = False
            return
        t = Text(no_wrap=True, overflow="ellipsis")
        for i, st in enumerate(stale):
            if i:
                t.append("  ")
            named = f" VRM {st.label}" if self.multi_site else " VRM"
            if st.fatal:
                t.append(" LOGIN REFUSED ", style="bold reverse")
                t.append(f"{named}: {st.stale_reason} — press R to try again" if self.multi_site
                         else f" {st.stale_reason} — press R to try again")
                continue
            t.append(" STALE ", style="bold reverse")
            if self.multi_site:
                # which VRM first: at 80 columns the rest of the line may be cut
                t.append(f"{named} unreachable", style="bold")
                if st.updated_at is not None:
                    t.append(f" · its data from {format_age(self.clock() - st.updated_at)} ago")
                if st.retry_at is not None:
                    t.append(f" · retry in {format_age(st.retry_at - self.clock())} (R: now)")
                t.append(f" · {st.stale_reason}")
                continue
            if st.updated_at is not None:
                t.append(f" showing data from {format_age(self.clock() - st.updated_at)} ago ·")
            if st.retry_at is not None:
                t.append(f" retry in {format_age(st.retry_at - self.clock())} (R: now) ·")
            t.append(f"{named} unreachable: {st.stale_reason}")
        banner.update(t)
        if not banner.display:
            banner.display = True

    # --- view (filter + sort, off the UI thread) -------------------------------------------------------

    def schedule_view(self) -> None:
        if self._view_running:
            self._view_dirty = True
            return
        self._view_dirty = False
        rows, marks, gen = self.store.snapshot()
        if self._view_cache.is_cheap(self.filter, self.sort_column, self.sort_reverse, gen):
            # A filter keystroke over rows already sorted: a few ms here, and the table changes in
            # the same frame as the filter line (a thread round trip costs a frame or two more).
            try:
                view, summary = self._view_cache.compute(rows, marks, self.filter, self.sort_column,
                                                         self.sort_reverse, gen)
            except Exception as e:  # never let a filter bug kill the app
                self.notify(f"Could not filter: {type(e).__name__}: {e}", severity="error")
                return
            self._apply_view(view, summary)
            return
        self._view_running = True
        self._compute_view(rows, marks, self.filter, self.sort_column, self.sort_reverse, gen)

    @work(thread=True, group="view", exit_on_error=False, description="filter and sort")
    def _compute_view(self, rows: list, marks: frozenset[str], flt: Filter, sort: str, reverse: bool,
                      gen: int) -> None:
        try:
            view, summary = self._view_cache.compute(rows, marks, flt, sort, reverse, gen)
        except Exception as e:  # never let a filter bug kill the app
            self.post_message(ViewFailed(f"{type(e).__name__}: {e}"))
            return
        self.post_message(ViewReady(view, summary))

    @on(ViewReady)
    def _view_ready(self, msg: ViewReady) -> None:
        self._view_running = False
        self._apply_view(msg.view, msg.summary)
        if self._view_dirty:
            self.schedule_view()

    def _apply_view(self, view: View, summary: Summary) -> None:
        self.shown_filter = view.filter.source
        table = self._main_widget(VmTable)
        if table is not None:
            table.set_sites(self.multi_site, self._stale_labels())
            first = table.row_count == 0 and view.keys
            table.set_view(view.keys, self.store.rows, self.store.marks,
                           sort_column=view.sort, sort_reverse=view.reverse, filter_text=view.filter.source)
            if first and self.first_rows_at is None:
                self.first_rows_at = time.perf_counter()
            bar = self._main_widget(SummaryBar)
            if bar is not None:
                if self.multi_site:
                    # every VRM's count, in the console's order: one not read yet (or down) says 0
                    summary = replace(summary, by_site={s.label: summary.by_site.get(s.label, 0) for s in self.sites})
                bar.set_summary(summary, self.filter.source)
        self.update_status()

    @on(ViewFailed)
    def _view_failed(self, msg: ViewFailed) -> None:
        self._view_running = False
        self.notify(f"Could not filter: {msg.reason}", severity="error")

    def set_filter(self, text: str, *, from_input: bool = False, update_input: bool = False) -> None:
        inp = self._main_widget("#filter", Input)
        try:
            flt = parse_filter(text)
        except FilterError as e:
            if inp is not None:
                inp.border_subtitle = str(e)
                inp.add_class("-invalid")
            return
        if inp is not None:
            inp.border_subtitle = ""
            inp.remove_class("-invalid")
            if update_input and inp.value != text:
                inp.value = text
                inp.display = bool(text)
        self.filter = flt
        self.schedule_view()

    def set_sort(self, column: str, reverse: bool) -> None:
        self.sort_column, self.sort_reverse = column, reverse
        self.schedule_view()

    # --- detail ------------------------------------------------------------------------------------------

    def _main_screen(self) -> MainScreen | None:
        for s in self.screen_stack:
            if isinstance(s, MainScreen):
                return s
        return None

    def _main_widget(self, selector: Any, expect: Any = None) -> Any:
        main = self._main_screen()
        if main is None:
            return None
        try:
            return main.query_one(selector, expect) if expect else main.query_one(selector)
        except Exception:
            return None

    def _table_cursor(self) -> str | None:
        t = self._main_widget(VmTable)
        return t.cursor_key if t is not None else None

    def layout_detail(self) -> None:
        pane = self._main_widget("#detail-pane")
        if pane is not None:
            pane.display = self.size.width >= DETAIL_MIN_WIDTH

    def detail_renderable(self, key: str | None) -> Any:
        if not key or key not in self.vms:
            return Text("No VM selected", style="dim")
        plan = None
        if key in self.backup_points:
            from ..jobs.planner import plan_vm
            plan = plan_vm(self.vms[key], assessment=self.assessment(key), previous=self.backup_points[key])
        detail = render_detail(self.vms[key], self.assessment(key), self.facts.get(key),
                               self.snapshots.get(key), self.datastores,
                               snapshots_error=self.snapshot_errors.get(key, ""), plan=plan,
                               protection=self.protection.get(key), protection_error=self.protection_error,
                               now=self.clock(), tz=self.tz)
        st = self.site_of(key) if self.multi_site else None
        if st is None:
            return detail
        from rich.console import Group
        where = Text(f"VRM {st.label}", style="bold")
        if st.site is not None:
            where.append(f" · {st.site.name}", style="")
        if st.stale_reason:
            where.append(f" · stale: {st.stale_reason}", style="yellow")
        return Group(where, detail)

    def show_detail(self, key: str | None, *, now: bool = False) -> None:
        """Render the detail pane for ``key`` shortly after the cursor settles: holding an arrow key
        must move the cursor at full speed, not wait for each VM's detail."""
        self.layout_detail()
        pane = self._main_widget("#detail-pane")
        if pane is None or not pane.display:
            return
        if self._detail_timer is not None:
            self._detail_timer.stop()
        if now:
            self._render_detail(key)
        else:
            self._detail_timer = self.set_timer(0.08, partial(self._render_detail, key))

    def _render_detail(self, key: str | None) -> None:
        self._detail_timer = None
        detail = self._main_widget("#detail", Panel)
        if detail is None:
            return
        detail.update(self.detail_renderable(key))
        if key and key in self.vms and key not in self.backup_points:
            self._fetch_backup_point(key)
        if key and key not in self.snapshots:
            # debounce: holding the arrow key must not fire one request per row
            if self._snap_timer is not None:
                self._snap_timer.stop()
            self._snap_timer = self.set_timer(0.3, partial(self.load_snapshots, key))

    def load_snapshots(self, key: str) -> None:
        if key in self.vms:
            self._fetch_backup_point(key)
        vm = self.vms.get(key)
        if vm is None or key in self.snapshots or self.feed is None:
            return
        self._fetch_snapshots(key, vm.uri)

    @work(group="snapshots", exclusive=True, exit_on_error=False)
    async def _fetch_snapshots(self, key: str, uri: str) -> None:
        await self._read_snapshot_tree(key, uri)

    async def _read_snapshot_tree(self, key: str, uri: str) -> None:
        """Read one VM's snapshot tree (on its own VRM) and post it (or the error) as SnapshotsLoaded."""
        feed = self.feed_of(key)
        if feed is None:
            self.post_message(SnapshotsLoaded(key, None, "its VRM is not connected"))
            return
        try:
            tree = await self.feed_call(feed.snapshot_tree(uri), urn=key)
        except VrmError as e:
            self.post_message(SnapshotsLoaded(key, None, str(e)))
            return
        self.post_message(SnapshotsLoaded(key, tree))

    def _fetch_backup_point(self, key: str) -> None:
        """The VM's latest restore point, read again each time its detail is shown (a backup may
        have finished since); the detail is drawn again only when it changed. An ask while a read of
        the same VM runs makes that read go once more when it ends, never cancels it: re-renders
        (protection, refreshes) coming faster than a loaded machine reads the repository starved the
        exclusive worker this used to be, and the detail said "no chain yet" for good."""
        self._point_asks[key] = self._point_asks.get(key, 0) + 1
        if key in self._point_reading:
            return
        self._point_reading.add(key)
        self._read_backup_point(key)

    @work(group="backup-point", exit_on_error=False)
    async def _read_backup_point(self, key: str) -> None:
        from ..repo import NoRepositoryError, RepoError
        from .repository import open_repository

        def latest() -> Any:
            try:
                repo = open_repository()
            except NoRepositoryError:
                return None
            try:
                return repo.latest_point(key)
            finally:
                repo.close()
        try:
            while True:
                asked = self._point_asks.get(key, 0)
                try:
                    point = await asyncio.to_thread(latest)
                except (RepoError, OSError) as e:
                    log.warning("reading the repository for %s: %s", key, e)
                    return
                if self._point_asks.get(key, 0) == asked:
                    break
        finally:
            self._point_reading.discard(key)
        old = self.backup_points.get(key, False)
        if old is not False and getattr(old, "id", None) == getattr(point, "id", None):
            return
        self.backup_points[key] = point
        if self._table_cursor() == key:
            self.show_detail(key, now=True)
        top = self._top_screen()
        if isinstance(top, DetailScreen) and top.key == key:
            top.update()

    @on(SnapshotsLoaded)
    def _snapshots_loaded(self, msg: SnapshotsLoaded) -> None:
        if msg.error:
            self.snapshot_errors[msg.vm_urn] = msg.error
        else:
            self.snapshots[msg.vm_urn] = msg.tree
            self.snapshot_errors.pop(msg.vm_urn, None)
            if msg.vm_urn in self.store.rows:
                self._rows_again((msg.vm_urn,))   # its snapshot findings follow the tree; draws the detail
                return
        if self._table_cursor() == msg.vm_urn:
            self.show_detail(msg.vm_urn, now=True)
        top = self._top_screen()
        if isinstance(top, DetailScreen) and top.key == msg.vm_urn:
            top.update()

    def vm_count_by_host(self, site: str | None = None) -> dict[str, int]:
        """VMs per host name (of the VRM labelled ``site`` only, when given: hosts of two VRMs may
        share a name)."""
        out: dict[str, int] = {}
        for r in self.store.rows.values():
            if site is None or r.site == site:
                out[r.host] = out.get(r.host, 0) + 1
        return out

    # --- mutating actions --------------------------------------------------------------------------------

    def start_vm(self, vm: Vm) -> None:
        if self.read_only:
            self.notify("Read-only mode: nothing is changed on the VRM", severity="warning")
            return
        self._start_vm(vm)

    @work(group="actions", exit_on_error=False)
    async def _start_vm(self, vm: Vm) -> None:
        feed = self.feed_of(vm.urn)    # the VM's own VRM
        if feed is None or feed.client is None:
            self.notify(f"Power on {vm.name} failed: its VRM is not connected", severity="error", timeout=10)
            return
        try:
            client = feed.client
            ref = await self.feed_call(client.start_vm(vm.uri), urn=vm.urn)
            self.notify(f"Powering on {vm.name}…")
            await self.feed_call(client.wait_task(ref, timeout=300, interval=0.5), urn=vm.urn)
        except VrmError as e:
            self.notify(f"Power on {vm.name} failed: {e}", severity="error", timeout=10)
            return
        self.notify(f"{vm.name} is powered on")
        self.refresh_now()

    # --- status line, help --------------------------------------------------------------------------------

    def update_status(self) -> None:
        status = self._main_widget("#status", TextLine)
        if status is None:
            return
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" fctui ", style="bold reverse")
        if self.read_only:
            t.append(" READ-ONLY ", style="bold")
        if self.multi_site:
            # every VRM by its label, with a word when it is not live
            for i, st in enumerate(self.sites):
                t.append(" ·" if i else "")
                t.append(f" {st.label}", style="bold")
                if st.state != "live":
                    t.append(f" {st.state}", style="yellow" if st.stale_reason else "dim")
        elif self.site is not None:
            t.append(f" {self.site.name}")
        if self.api_version and not self.multi_site:
            t.append(f" · API {self.api_version}")
            if self.version_warning:
                t.append(" (untested)", style="yellow")
        shown = self._main_widget(VmTable)
        n_shown = shown.row_count if shown is not None else 0
        total = len(self.store)
        t.append(f" · {n_shown}/{total} VMs" if self.filter else f" · {total} VMs")
        if self.multi_site:
            t.append(f" on {len(self.sites)} VRMs")
        if self.store.marks:
            t.append(f" · {len(self.store.marks)} marked", style="bold")
        if self.paused:
            t.append(" · refresh paused", style="yellow")
        elif self.refreshing:
            t.append(" · refreshing…", style="dim")
        if self.updated_at is not None:
            t.append(f" · updated {format_age(self.clock() - self.updated_at)} ago",
                     style="yellow" if self.stale_reason else "")
        elif not self.stale_reason:
            t.append(" · connecting…", style="dim")
        status.update(t)
        if self.stale_reason:
            self._show_banner()

    def help_rows(self, screen: Screen) -> list[tuple[str, str, str]]:
        grouped: dict[tuple[int, str, str | None], tuple[list[str], Binding]] = {}
        nodes: dict[tuple[int, str, str | None], Any] = {}
        for key, ab in screen.active_bindings.items():
            ident = (id(ab.node), ab.binding.action, ab.binding.id)
            grouped.setdefault(ident, ([], ab.binding))[0].append(key)
            nodes[ident] = ab.node
        rows = []
        # the screen's own actions first, then the app's, then moving around the focused widget
        order = {ident: (0 if isinstance(node, Screen) else 1 if isinstance(node, App) else 2)
                 for ident, node in nodes.items()}
        for ident, (keys, b) in sorted(grouped.items(), key=lambda kv: order[kv[0]]):
            if not b.description:
                continue
            shown = [self.get_key_display(Binding(k, "")) for k in dict.fromkeys(keys)]
            rows.append((" ".join(shown), b.description, b.id or ""))
        return rows

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        notes = [f"vrm-version-untested: {self.version_warning}"] if self.version_warning else []
        if self.multi_site:
            notes.append(f"VRMs: {', '.join(s.label for s in self.sites)} — site:LABEL shows one of them; "
                         "each refreshes and goes stale on its own")
        self.push_screen(HelpScreen(self.help_rows(self.screen), notes=notes))

    def running_jobs(self) -> int:
        """Jobs of the agent not finished yet, as this console last heard (0 before it has heard)."""
        board = getattr(getattr(self, "jobs", None), "board", None)
        return sum(1 for j in board.jobs.values() if not j.is_final) if board is not None else 0

    async def action_quit(self) -> None:
        # Jobs run in the agent, not here: say so on the way out, so nobody waits for them or kills them.
        running = self.running_jobs()
        if running:
            self.exit(0, message=quit_note(running, self.config.cluster))
        else:
            self.exit(0)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Refresh now", "Fetch the inventory again", self.refresh_now)
