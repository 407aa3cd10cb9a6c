"""The inventory refresh in a child process.

Why: a 10,000-VM refresh decodes tens of MB of JSON, builds the models and runs the rules. In a thread
of the UI process that work holds the GIL, and every key press waits behind it (hundreds of ms). In a
child process it runs in parallel; the UI process only receives finished table rows, the parsed VMs
(without their raw JSON) and the verdicts, and applies them. The child speaks to the UI through a pipe
in tuples; the password crosses the pipe to our own child only, never a file.

The UI process keeps its own logged-in client (the feed thread) for interactive calls: tree, snapshot
trees, power on, jobs.
"""

from __future__ import annotations

import asyncio
import copyreg
import dataclasses
import gc
import io
import logging
import operator
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable

from ..vrm.client import gc_paused
from ..vrm.errors import VrmAuthError, VrmError, VrmVersionError
from ..inventory.query import VmRow
from ..rules.engine import Assessment, Finding
from ..vrm.models import Disk, Nic, OsOptions, Vm
from .source import Complete, ConnectSpec, InventoryFeed, VmPage

log = logging.getLogger(__name__)
MAX_BACKOFF = 60.0


@dataclasses.dataclass(slots=True)
class FactsLite:
    """What the UI shows from a VM's facts: its snapshot tree and what is known of earlier backups."""
    snapshot_tree: Any = None
    knowledge: Any = None


def _fast_reducer(cls: type) -> Callable[[Any], tuple]:
    """Pickle a slots dataclass as ``cls(*field values)``: the values are read by one C-level getter.
    (The default route calls the dataclass's Python ``__getstate__``/``__setstate__``, which made
    pickling 10,000 VMs cost over a second of the refresh process's time.)"""
    names = tuple(f.name for f in dataclasses.fields(cls))
    get = operator.attrgetter(*names)
    return lambda obj: (cls, get(obj))


def _assessment_reducer(a: Assessment) -> tuple:
    return Assessment, (a.urn, a.name, a.verdict, a.kinds_mask, a.findings, a.provisional)


def _finding_reducer(f: Finding) -> tuple:
    return Finding, (f.rule, f.severity, f.message, f.remediation, f.disks)


class _FeedPickler(pickle.Pickler):
    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table.update({c: _fast_reducer(c) for c in (Vm, Disk, Nic, OsOptions, VmRow)})
    # Verdicts as constructor calls too: the default route for these __slots__ classes sends a dict
    # of slot values per object, and unpickling 10,000 of them took the console ~0.2 s (6x longer).
    dispatch_table.update({Assessment: _assessment_reducer, Finding: _finding_reducer})


def dumps(obj: Any) -> bytes:
    """What the refresh process sends: a pickle the console reads with plain ``pickle.loads``."""
    buf = io.BytesIO()
    _FeedPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def slim_vm(vm: Any) -> Any:
    return dataclasses.replace(vm, raw={}, disks=[dataclasses.replace(d, raw={}) for d in vm.disks])


def _fingerprint(tree: Any, knowledge: Any) -> int | None:
    """A VM's facts as one int: what was sent is remembered without keeping 10,000 snapshot trees
    alive in this process between refreshes. None when they cannot be pickled (then always sent)."""
    try:
        return hash(dumps((tree, knowledge)))
    except Exception:
        return None


def slim_event(ev: Any, sent_facts: dict[str, int] | None = None) -> Any:
    """What crosses the pipe. With ``sent_facts`` (fingerprints of what the console already has, per
    VM URN) a :class:`Complete` carries only the facts that changed (an empty :class:`FactsLite`
    clears a VM's): unpickling all 10,000 snapshot trees every refresh held the console's GIL ~100 ms."""
    if isinstance(ev, VmPage):
        return VmPage([slim_vm(v) if v.raw else v for v in ev.vms], dict(ev.assessments), ev.provisional, ev.rows)
    if isinstance(ev, Complete):
        facts: dict[str, FactsLite] = {}
        for urn, f in ev.facts.items():
            tree, knowledge = getattr(f, "snapshot_tree", None), getattr(f, "knowledge", None)
            if tree is None and knowledge is None:
                continue
            if sent_facts is not None:
                fp = _fingerprint(tree, knowledge)
                if fp is not None and sent_facts.get(urn) == fp:
                    continue
                sent_facts[urn] = fp if fp is not None else -1
            facts[urn] = FactsLite(tree, knowledge)
        if sent_facts is not None:
            for urn in [u for u in sent_facts if u not in facts and u in ev.keys and _no_facts(ev.facts.get(u))]:
                del sent_facts[urn]
                facts[urn] = FactsLite()
            for urn in [u for u in sent_facts if u not in ev.keys]:
                del sent_facts[urn]
        return Complete(ev.keys, ev.assessments, facts, ev.seconds, ev.confirmed)   # only the changed verdicts
    return ev


def _no_facts(f: Any) -> bool:
    return f is None or (getattr(f, "snapshot_tree", None) is None and getattr(f, "knowledge", None) is None)


async def run_refresh_loop(feed: InventoryFeed, *, post: Callable[[tuple], None],
                           sleep: Callable[[float], Any], blocked: Callable[[], bool],
                           interval: Callable[[], float], keep_refreshing: bool,
                           loaded: Callable[[], bool]) -> None:
    """The self-rescheduling refresh: one loop, so fetches never overlap; paused while ``blocked()``;
    back-off on errors; a refused login is not retried on its own (it could lock the account)."""
    failures = 0
    while True:
        while blocked() and loaded():
            await sleep(0.5)
        delay = interval()
        try:
            if feed.site is None:
                post(("connected", await feed.connect()))
            post(("started",))
            async for event in feed.refresh():
                post(("event", event))
            failures = 0
        except (VrmAuthError, VrmVersionError) as e:
            post(("lost", str(e), None, True))
            feed.site = None
            await sleep(3600 * 24)
            continue
        except VrmError as e:
            failures += 1
            delay = min(MAX_BACKOFF, min(interval(), 2.0) * 2 ** (failures - 1))
            post(("lost", str(e), delay, False))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or an odd answer must not end anything: report, keep going
            log.exception("refresh failed")
            failures += 1
            delay = min(MAX_BACKOFF, 2.0 * 2 ** (failures - 1))
            post(("lost", f"unexpected error: {type(e).__name__}: {e}", delay, False))
        if not keep_refreshing and failures == 0:
            await sleep(3600 * 24 * 365)
            continue
        await sleep(delay)


# --- child side ---------------------------------------------------------------------------------

def child_main(fd: int) -> None:
    """Entry of ``python -c 'from fctui.tui.feedproc import child_main; child_main(FD)'``: the first
    message on the socket carries the connection (so the password is never in argv or the env)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C belongs to the UI; it stops us
    conn = Connection(fd)
    try:
        spec_args, interval, keep_refreshing = conn.recv()
        # The first refresh reads the volume listing in a helper process: forked now, while this
        # process is small and single-threaded, it costs no interpreter start-up later. Its listing
        # is done long before the VM pages are; niced, it yields the CPU to them on a busy machine.
        from ..inventory.gather import prefork_volume_helper
        prefork_volume_helper(close_fds=[fd], nice=HELPER_NICE)
        asyncio.run(_child_main(spec_args, conn, interval, keep_refreshing))
    except Exception:
        pass


def child_gc_start() -> None:
    """The refresh process's collector: off. A refresh allocates ~300,000 containers that live until
    the console has them; collections triggered by those allocations rescan them and cost ~0.2 s of a
    10,000-VM refresh. What a refresh leaves as cyclic garbage is small (httpx's response objects,
    ~45 per request; the client keeps their bodies out of those cycles, see ``VrmClient._send``) and is
    collected once the refresh is over (:func:`child_gc_settle`)."""
    gc.collect()
    gc.freeze()
    gc.disable()


def child_gc_settle() -> None:
    """After a refresh (the console has its data): collect everything once, then freeze the state
    kept for the next refresh (what the console has, the string pool) out of the collector's sight."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


BACKGROUND_NICE = 5
HELPER_NICE = 5     # the first refresh's volume-listing helper (A/B, 4 runs each: median 2.71 vs 2.90 s)


def background_priority() -> None:
    """Once the console has a full inventory, later refreshes are background work: on a busy machine
    the console's key presses come first (niceness +5, once; the first refresh, which the user
    waits for, runs at normal priority)."""
    try:
        os.nice(BACKGROUND_NICE)
    except (OSError, AttributeError):
        pass


async def _child_main(spec_args: dict, conn: Any, interval: float, keep_refreshing: bool) -> None:
    child_gc_start()
    feed = InventoryFeed(ConnectSpec(**spec_args))
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    state = {"blocked": False, "loaded": False, "stop": False}
    main = asyncio.current_task()
    sent_facts: dict[str, int] = {}   # what the console has (fingerprints): later refreshes send changes

    def readable() -> None:
        try:
            while conn.poll():
                msg = conn.recv()
                if msg[0] == "wake":
                    wake.set()
                elif msg[0] == "blocked":
                    state["blocked"] = bool(msg[1])
                    wake.set()
                elif msg[0] == "stop":
                    raise EOFError
        except (EOFError, OSError):
            state["stop"] = True
            loop.remove_reader(conn.fileno())
            if main is not None:
                main.cancel()

    loop.add_reader(conn.fileno(), readable)

    async def sleep(seconds: float) -> None:
        wake.clear()
        try:
            await asyncio.wait_for(wake.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    def post(msg: tuple) -> None:
        done = False
        if msg[0] == "event":
            ev = msg[1]
            if isinstance(ev, Complete):
                if not state["loaded"]:
                    background_priority()
                state["loaded"] = True
                done = True
            msg = ("event", slim_event(ev, sent_facts))
        try:
            conn.send_bytes(dumps(msg))
        except (OSError, ValueError, pickle.PicklingError):
            state["stop"] = True
        if done or msg[0] == "lost":
            child_gc_settle()

    try:
        await run_refresh_loop(feed, post=post, sleep=sleep, blocked=lambda: state["blocked"],
                               interval=lambda: interval, keep_refreshing=keep_refreshing,
                               loaded=lambda: state["loaded"])
    except asyncio.CancelledError:
        pass
    finally:
        await feed.aclose()


# --- UI side ------------------------------------------------------------------------------------

FREEZE_BYTES = 64 * 1024       # a message this big brings thousands of long-lived objects
FULL_COLLECT_EVERY = 40        # refreshes between full collections of the frozen heap


def settle_heap(refresh_count: int) -> None:
    """Freezing (see RefreshProcess._read) hides from the cyclic collector whatever is alive at that
    moment, cyclic garbage included; once every FULL_COLLECT_EVERY refreshes that garbage is collected
    (one pause of a few hundred ms every ~10 min at the default interval, instead of several per
    refresh) and the survivors are frozen again."""
    if refresh_count % FULL_COLLECT_EVERY == 0:
        gc.unfreeze()
        gc.collect()
        gc.freeze()

class RefreshProcess:
    """Starts the child and turns what it sends into app messages (on a reader thread)."""

    def __init__(self, spec: ConnectSpec, on_message: Callable[[tuple], None], *, interval: float,
                 keep_refreshing: bool) -> None:
        password = spec.password() if callable(spec.password) else spec.password
        self._args = dict(url=spec.url, user=spec.user, password=password, verify=spec.verify,
                          api_version=spec.api_version, site=spec.site, label=spec.label,
                          page_concurrency=spec.page_concurrency, timeout=spec.timeout, **spec.client_options())
        self._on_message = on_message
        self._interval = interval
        self._keep = keep_refreshing
        # A plain subprocess over a socket pair: multiprocessing's spawn needs the real stdio fds,
        # which the running TUI has taken over; and a fork of a threaded process is unsafe.
        ours, theirs = socket.socketpair()
        self._conn = Connection(os.dup(ours.fileno()))
        ours.close()
        self._theirs = theirs
        self._proc: subprocess.Popen | None = None
        self._reader = threading.Thread(target=self._read, name="fctui-refresh-reader", daemon=True)
        self._lock = threading.Lock()
        self._blocked = False

    def start(self) -> None:
        fd = self._theirs.fileno()
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = subprocess.Popen(
            # httpx's command-line tool (click, rich, pygments: ~5 MB) is never used in the child
            [sys.executable, "-c", "import sys; sys.modules['httpx._main'] = None\n"
             f"from fctui.tui.feedproc import child_main; child_main({fd})"],
            pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env, close_fds=True)
        self._theirs.close()
        self._send((self._args, self._interval, self._keep))
        self._args["password"] = ""       # the child has it; do not keep a second copy around
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                buf = self._conn.recv_bytes()
            except (EOFError, OSError):
                return
            try:
                # Unpickling a batch of VMs allocates thousands of objects: without the pause, the
                # collections they trigger rescan the console's whole heap while it holds the GIL.
                with gc_paused():
                    msg = pickle.loads(buf)
                    if len(buf) >= FREEZE_BYTES:
                        # The console keeps these models until the next refresh: out of the
                        # collector's sight they cost no collection pauses (a full one over 10,000
                        # VMs took 100-400 ms of the UI thread; see settle_heap for the rest).
                        gc.freeze()
                del buf
            except Exception:
                log.exception("unreadable message from the refresh process")
                continue
            try:
                self._on_message(msg)
            except Exception:
                log.exception("bad message from the refresh process")

    def _send(self, msg: tuple) -> None:
        with self._lock:
            try:
                self._conn.send(msg)
            except (OSError, ValueError, BrokenPipeError):
                pass

    def wake(self) -> None:
        self._send(("wake",))

    def set_blocked(self, blocked: bool) -> None:
        if blocked != self._blocked:
            self._blocked = blocked
            self._send(("blocked", blocked))

    def stop(self) -> None:
        self._send(("stop",))
        if self._proc is not None:
            try:
                self._proc.wait(3)
            except subprocess.TimeoutExpired:
                self._proc.terminate()
                try:
                    self._proc.wait(2)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
        try:
            self._conn.close()
        except OSError:
            pass
