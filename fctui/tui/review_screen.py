"""The backup review: what a launch will do, per VM and per disk, before anything is submitted.

Built from a :class:`~fctui.jobs.planner.Plan` (pure data); the screen only renders it. Enter/y submits
(the caller does the submitting: the screen dismisses with True), Esc/n cancels with False.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..jobs.pause import PAUSE_WARN_S, PauseEstimate
from ..jobs.planner import GIB, Plan, VmPlan
from ..jobs.progress import human_bytes
from .names import disk_label, fit_name

# (host name or urn, disks, size GB) -> estimate, or None when no estimator is available
PauseLookup = Callable[[VmPlan], PauseEstimate | None]

SEVERITY_MARK = {"blocker": ("✗", "bold red"), "warning": ("⚠", "yellow"), "info": ("ℹ", "cyan")}


def _gb(n: int) -> str:
    return human_bytes(n)


def _short(name: str, width: int = 16) -> str:
    """A disk name in the review's 16-cell column, cut in its middle (see fctui.tui.names)."""
    return fit_name(name, width)


def plan_pause(vp: VmPlan, estimator: Any) -> PauseEstimate | None:
    """The pause estimate of one VM's snapshot from a :class:`PauseEstimator` keyed by host name."""
    if estimator is None:
        return None
    disks = len(vp.disks)
    gb = sum(d.size_bytes for d in vp.disks) / GIB
    return estimator.estimate(vp.host_name or vp.host_urn, disks, gb)


def render_review(plan: Plan, pause_of: PauseLookup | None = None) -> Text:
    t = Text()
    run, refused = plan.runnable, plan.refused
    t.append("Backup review", style="bold underline")
    t.append(f"  {len(run)} VM(s) to back up")
    if refused or plan.unresolved:
        t.append(f", {len(refused) + len(plan.unresolved)} skipped", style="bold red")
    if plan.full:
        t.append("  (--full: every disk is read in full)", style="yellow")
    t.append("\n")
    t.append("Nothing is created until you confirm. Pauses above "
             f"{PAUSE_WARN_S:g} s are flagged.\n", style="dim")
    for vp in run:
        t.append("\n")
        t.append(f"▸ {vp.vm_name}", style="bold")
        t.append(f"  host {vp.host_name or vp.host_urn or '?'} · {vp.status} · ")
        t.append("CBT snapshot" if vp.kind == "cbt" else "standard snapshot (no CBT)",
                 style="green" if vp.kind == "cbt" else "yellow")
        t.append("\n")
        if vp.kind != "cbt" and vp.reason:
            t.append(f"  why standard: {vp.reason}\n", style="yellow")
        est = pause_of(vp) if pause_of is not None else None
        if est is not None:
            style = "bold red" if est.over_threshold else ""
            t.append("  pause ", style="dim")
            t.append(f"{est.low:.1f}–{est.high:.1f} s", style=style)
            basis = f"{est.observations} snapshot(s) of this host seen" if est.observations else "no history yet"
            t.append(f" (≈{est.seconds:.1f} s, {basis})", style="dim")
            if est.over_threshold:
                t.append(f"  ⚠ may exceed {PAUSE_WARN_S:g} s", style="bold red")
            t.append("\n")
        full_bytes = 0
        inc_known = 0
        inc_unknown = 0
        for d in vp.disks:
            mode_style = "green" if d.mode == "incremental" else "yellow"
            t.append(f"  {_short(disk_label(d.disk_name, vp.vm_name)):<16} {_gb(d.size_bytes):>7} ")
            t.append(f"{d.mode:<11}", style=mode_style)
            t.append(f" {d.reason}\n", style="dim")
            if d.mode == "full":
                full_bytes += d.size_bytes
            elif d.bytes_estimate is not None:
                inc_known += d.bytes_estimate
            else:
                inc_unknown += 1
        for d in vp.excluded:
            t.append(f"  {_short(disk_label(d.disk_name, vp.vm_name)):<16} {_gb(d.size_bytes):>7} ")
            t.append("excluded   ", style="bold magenta")
            t.append(f" {d.reason}\n", style="dim")
        t.append("  to read: ", style="dim")
        parts = []
        if full_bytes:
            parts.append(f"full disks up to {_gb(full_bytes)} (only written blocks are read)")
        if inc_known:
            parts.append(f"incremental about {human_bytes(inc_known)} (last run's change)")
        if inc_unknown:
            parts.append(f"{inc_unknown} incremental disk(s): known from the CBT bitmap after the snapshot")
        t.append("; ".join(parts) or "nothing", style="")
        t.append("\n")
        for f in list(vp.launch) + [f for f in vp.findings if f.severity == "warning"]:
            mark, style = SEVERITY_MARK.get(f.severity, ("·", ""))
            t.append(f"  {mark} {f.rule}: ", style=style)
            t.append(f"{f.message}\n")
    if refused or plan.unresolved:
        t.append("\n")
        t.append("Skipped (not backed up)\n", style="bold red")
        for vp in refused:
            t.append(f"  ✗ {vp.vm_name}", style="bold")
            t.append(f": {vp.reason}\n")
            for f in vp.findings:
                if f.severity == "blocker" and f.message not in vp.reason:   # the reason already says it
                    t.append(f"      {f.rule}: {f.message}\n", style="dim")
        for target, why in plan.unresolved:
            t.append(f"  ✗ {target}", style="bold")
            t.append(f": {why}\n")
    if not run:
        t.append("\nNothing can be backed up: press Esc to go back.\n", style="bold")
    return t


class ReviewScreen(Screen[bool]):
    """Full-screen review of a backup plan; dismisses True to submit, False to cancel."""

    DEFAULT_CSS = """
    ReviewScreen #review-scroll { height: 1fr; padding: 0 1; }
    ReviewScreen #review-title { height: 1; background: $primary-background; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter,y", "confirm", "Start backup", id="review.confirm"),
        Binding("escape,n", "cancel", "Cancel", id="review.cancel"),
    ]

    def __init__(self, plan: Plan, pause_of: PauseLookup | None = None) -> None:
        super().__init__()
        self.plan = plan
        self.pause_of = pause_of

    def compose(self) -> ComposeResult:
        title = Text(" Review backup ", style="bold reverse")
        title.append(f" {len(self.plan.runnable)} to back up · {len(self.plan.refused)} blocked · "
                     f"Enter starts, Esc cancels")
        yield Static(title, id="review-title")
        with VerticalScroll(id="review-scroll"):
            yield Static(render_review(self.plan, self.pause_of), id="review-body")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#review-scroll").focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "confirm":
            if not self.plan.runnable or getattr(self.app, "read_only", False):
                return False
        return True

    def action_confirm(self) -> None:
        if self.plan.runnable:
            self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
