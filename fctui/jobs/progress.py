"""Live job figures for the console: rates, an honest ETA, a throughput history and the bottleneck.

Pure and headless: it folds the agent's event stream (``job`` / ``progress`` / ``log`` / ``end``, see
:mod:`fctui.agent`) into :class:`~fctui.jobs.model.JobRecord` objects kept in a :class:`JobsBoard`,
with an injected clock so the figures are reproducible in tests and snapshots.

ETA rules (backup-anchors.md §1.3): nothing below 5 % progress, and rounded so it never pretends to a
precision it has ("a minute or less", "about 4 min", "about 25 min", "about 1 h 20 min").

Bottleneck: the backup runner puts, in each progress event under ``"busy"``, the seconds each stage
(VRM read, hash+compress, repository write) has been busy since the job started; the busiest stage is
named, Veeam-style. Without those figures (a restore, an older agent) the only honest verdicts are the
scheduler (every VM waiting for a socket) or "not reported". :class:`StageClock` keeps such figures for
code that measures stages itself.
"""

from __future__ import annotations

import math
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..units import human_bytes  # the one size formatter (the console imports it from here)
from .model import DiskProgress, JobRecord, VmProgress

ETA_MIN_FRACTION = 0.05
RATE_WINDOW_S = 10.0          # rates are averaged over this much recent history
HISTORY_POINTS = 60           # sparkline length kept per job
HISTORY_STEP_S = 1.0          # one sparkline point per second at most
SPARK_CHARS = "▁▂▃▄▅▆▇█"

STAGES = ("read", "hash", "write")
STAGE_LABELS = {"read": "VRM read", "hash": "hashing/compression", "write": "repository write"}
SCHEDULER_REASONS = ("host-sockets-busy", "target-volumes-busy")


# --- formatting ------------------------------------------------------------------------------------

def human_rate(bps: float | None) -> str:
    if bps is None or bps <= 0 or not math.isfinite(bps):
        return "-"
    return human_bytes(bps) + "/s"


def honest_eta(seconds: float | None) -> str:
    """Round an ETA to what it is worth; '' when there is none to give."""
    if seconds is None or seconds < 0 or not math.isfinite(seconds):
        return ""
    if seconds <= 60:
        return "a minute or less"
    minutes = seconds / 60.0
    if minutes < 10:
        return f"about {math.ceil(minutes)} min"
    if minutes < 60:
        return f"about {int(5 * round(minutes / 5))} min"
    total = int(10 * round(minutes / 10))
    h, m = divmod(total, 60)
    return f"about {h} h" + (f" {m} min" if m else "")


def sparkline(values: list[float], width: int) -> str:
    """The last ``width`` values as block characters scaled to their maximum."""
    vals = values[-width:] if width > 0 else []
    if not vals:
        return ""
    top = max(vals)
    if top <= 0:
        return SPARK_CHARS[0] * len(vals)
    last = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[min(last, int(round(v / top * last)))] for v in vals)


def bar(fraction: float | None, width: int) -> str:
    """A text progress bar ('━' done, '─' to do); all '─' when the fraction is unknown."""
    if width <= 0:
        return ""
    if fraction is None:
        return "─" * width
    done = max(0, min(width, int(round(fraction * width))))
    return "━" * done + "─" * (width - done)


# --- stage timing (what the runner should emit) ----------------------------------------------------

class StageClock:
    """Busy seconds per stage (``read``, ``hash``, ``write``), summed over concurrent workers.

    Overlapping work in one stage counts once per worker, so a stage with six reads in flight for one
    second reports six busy seconds: the share then says where the workers spend their time."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.busy: dict[str, float] = {s: 0.0 for s in STAGES}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = self.clock()
        try:
            yield
        finally:
            self.add(name, self.clock() - t0)

    def add(self, name: str, seconds: float) -> None:
        if name not in self.busy:
            raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
        self.busy[name] += max(0.0, seconds)

    def as_event(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.busy.items()}


@dataclass(frozen=True)
class Bottleneck:
    stage: str | None        # read | hash | write | scheduler | None (not known)
    label: str
    shares: dict[str, float] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        return self.stage is not None


def find_bottleneck(job: JobRecord, busy: dict[str, float] | None = None) -> Bottleneck:
    """Name what limits the job from what the runner reported."""
    if busy:
        vals = {k: float(busy.get(k) or 0.0) for k in STAGES}
        total = sum(vals.values())
        if total > 0:
            shares = {k: v / total for k, v in vals.items()}
            top = max(STAGES, key=lambda k: shares[k])
            return Bottleneck(top, f"{STAGE_LABELS[top]} ({shares[top] * 100:.0f} % of busy time)", shares)
    if not job.is_final:
        active = [v for v in job.vms if v.state not in ("done", "failed", "cancelled", "refused")]
        moving = [v for v in active if v.state in ("snapshot", "reading", "cleanup")]
        waiting = [v for v in active if v.state == "waiting" and any(r in v.reason for r in SCHEDULER_REASONS)]
        if waiting and not moving:
            return Bottleneck("scheduler", f"scheduler: {len(waiting)} VM(s) wait for a backup socket "
                                           f"({waiting[0].reason})")
    return Bottleneck(None, "not reported by the runner (no stage timings)")


# --- per-job figures --------------------------------------------------------------------------------

@dataclass
class JobFigures:
    planned: int | None      # bytes planned so far (None before the first snapshot)
    unplanned: int           # disks whose bytes are not known yet (their VM's snapshot is still to come)
    read: int
    written: int
    reused: int
    zero: int
    stored: int
    fraction: float | None
    read_rate: float
    write_rate: float
    eta_s: float | None
    eta_text: str            # '' when hidden (below 5 %, no rate, unknown plan, finished)
    bottleneck: Bottleneck
    history: list[float]     # read rate samples, oldest first


class RateTracker:
    """Read/write byte counters sampled on the injected clock; rates over the last RATE_WINDOW_S."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int, int]] = deque()
        self.history: deque[float] = deque(maxlen=HISTORY_POINTS)
        self._last_hist: float | None = None

    def observe(self, now: float, read: int, written: int) -> None:
        if self.samples and now <= self.samples[-1][0]:
            self.samples[-1] = (self.samples[-1][0], read, written)
        else:
            self.samples.append((now, read, written))
        while len(self.samples) > 2 and now - self.samples[0][0] > RATE_WINDOW_S:
            self.samples.popleft()
        if self._last_hist is None or now - self._last_hist >= HISTORY_STEP_S:
            self._last_hist = now
            self.history.append(self.rates()[0])

    def rates(self) -> tuple[float, float]:
        if len(self.samples) < 2:
            return 0.0, 0.0
        t0, r0, w0 = self.samples[0]
        t1, r1, w1 = self.samples[-1]
        dt = t1 - t0
        if dt <= 0:
            return 0.0, 0.0
        return max(0.0, (r1 - r0) / dt), max(0.0, (w1 - w0) / dt)


def _planned(job: JobRecord) -> tuple[int | None, int, int]:
    """(planned bytes of the disks whose plan is known or None, their bytes read, disks not planned yet)."""
    # a VM that ended before its snapshot will never know its bytes: it does not hold the ETA back
    disks = [d for v in job.vms if v.state != "refused" for d in v.disks
             if d.mode != "excluded" and not (d.planned is None and v.state in ("failed", "cancelled"))]
    known = [d for d in disks if d.planned is not None]
    if not known:
        return None, 0, len(disks)
    return (sum(d.planned or 0 for d in known), sum(min(d.bytes_read, d.planned or 0) for d in known),
            len(disks) - len(known))


@dataclass
class EndNotice:
    job_id: str
    state: str
    summary: str


def job_summary(job: JobRecord) -> str:
    """One line for history and the end-of-job notification."""
    t = job.totals()
    done = sum(1 for v in job.vms if v.state == "done")
    runnable = sum(1 for v in job.vms if v.state != "refused")
    refused = len(job.vms) - runnable
    parts = [f"{job.type} {job.outcome}"]
    if job.is_recovery:   # VMs up, not bytes
        parts.append(f"{done}/{len(job.vms)} VM(s) up")
    else:
        parts.append(f"{done}/{runnable} VM(s)")
        if refused:
            parts.append(f"{refused} refused")
        parts.append(f"read {human_bytes(t['bytes_read'])}, written {human_bytes(t['bytes_written'])}")
    if job.started and job.finished and job.finished >= job.started:
        parts.append(f"in {duration_text(job.finished - job.started)}")
    if job.error and job.state != "succeeded":
        parts.append(job.error[:120])
    return " · ".join(parts)


def duration_text(s: float | None) -> str:
    """A measured duration as every screen and command shows it (a job's run time, a restore, a boot, an
    RTO): ``42 s``, ``3 min 05 s``, ``1 h 02 min``; unknown: ``—``."""
    if s is None:
        return "—"
    n = int(round(s))
    if n < 60:
        return f"{n} s"
    if n < 3600:
        return f"{n // 60} min {n % 60:02d} s"
    return f"{n // 3600} h {n % 3600 // 60:02d} min"


class JobsBoard:
    """Every job the agent knows, kept current from its event stream. Apply events from one thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.jobs: dict[str, JobRecord] = {}
        self.trackers: dict[str, RateTracker] = {}
        self.busy: dict[str, dict[str, float]] = {}
        self.version = 0               # bumped on every change (views re-render when it moves)
        self._figures: dict[str, tuple[int, JobFigures]] = {}

    # ordering: running/queued first (newest first), then history (newest first)
    def ordered(self) -> list[JobRecord]:
        live = sorted((j for j in self.jobs.values() if not j.is_final), key=lambda j: -j.created)
        done = sorted((j for j in self.jobs.values() if j.is_final), key=lambda j: -(j.finished or j.created))
        return live + done

    def get(self, job_id: str) -> JobRecord | None:
        return self.jobs.get(job_id)

    def _track(self, job: JobRecord) -> None:
        t = job.totals()
        self.trackers.setdefault(job.id, RateTracker()).observe(self.clock(), t["bytes_read"], t["bytes_written"])

    def apply(self, ev: dict[str, Any]) -> tuple[str | None, EndNotice | None]:
        """Fold one agent event in. Returns (changed job id, notice when a job just ended)."""
        kind = ev.get("event")
        if kind == "job" and isinstance(ev.get("job"), dict):
            new = JobRecord.from_dict(ev["job"])
            old = self.jobs.get(new.id)
            if old is not None and not ev["job"].get("log"):
                new.log = old.log          # job events carry no log: keep what the log events built
            self.jobs[new.id] = new
            self._track(new)
            self.version += 1
            notice = None
            if new.is_final and (old is None or not old.is_final) and old is not None:
                notice = EndNotice(new.id, new.state, job_summary(new))
            return new.id, notice
        job_id = ev.get("job") if isinstance(ev.get("job"), str) else None
        job = self.jobs.get(job_id) if job_id else None
        if job is None:
            return None, None
        if kind == "progress":
            vm = job.vm(str(ev.get("vm")))
            disk = next((d for d in vm.disks if d.volume == ev.get("volume")), None) if vm else None
            if disk is not None:
                for k in ("bytes_read", "bytes_written", "bytes_reused", "bytes_zero", "bytes_stored"):
                    if isinstance(ev.get(k), int):
                        setattr(disk, k, ev[k])
                if "bytes_planned" in ev:
                    disk.bytes_planned = ev["bytes_planned"]
                if isinstance(ev.get("state"), str):
                    disk.state = ev["state"]
            if isinstance(ev.get("busy"), dict):
                self.busy[job.id] = {k: float(v) for k, v in ev["busy"].items() if isinstance(v, (int, float))}
            self._track(job)
        elif kind == "log":
            entry = {k: v for k, v in ev.items() if k not in ("event", "job")}
            job.log.append(entry)
            if len(job.log) > JobRecord.LOG_LIMIT:
                del job.log[: len(job.log) - JobRecord.LOG_LIMIT]
        elif kind == "end":
            notice = None
            state = ev.get("state")
            if isinstance(state, str) and not job.is_final:
                job.state = state
                notice = EndNotice(job.id, state, job_summary(job))
            self.version += 1
            return job.id, notice
        else:
            return None, None
        self.version += 1
        return job.id, None

    def figures(self, job_id: str) -> JobFigures | None:
        """The job's figures; cached until the next event (a key press re-renders from the cache)."""
        cached = self._figures.get(job_id)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        fig = self._compute(job_id)
        if fig is not None:
            self._figures[job_id] = (self.version, fig)
        return fig

    def _compute(self, job_id: str) -> JobFigures | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        t = job.totals()
        planned, done, unplanned = _planned(job)
        tr = self.trackers.get(job_id)
        rr, rw = tr.rates() if tr is not None else (0.0, 0.0)
        if job.is_final:
            rr = rw = 0.0
        fraction = None
        if planned is not None:
            fraction = 1.0 if planned == 0 else min(1.0, done / planned)
        eta = None
        # An ETA only when every disk's size is known: a VM still waiting for its snapshot would make it lie.
        if (not job.is_final and fraction is not None and fraction >= ETA_MIN_FRACTION and rr > 0
                and planned is not None and not unplanned):
            eta = max(0.0, (planned - done) / rr)
        return JobFigures(planned=planned, unplanned=unplanned, read=t["bytes_read"], written=t["bytes_written"],
                          reused=t["bytes_reused"], zero=t["bytes_zero"], stored=t["bytes_stored"],
                          fraction=fraction, read_rate=rr, write_rate=rw, eta_s=eta, eta_text=honest_eta(eta),
                          bottleneck=find_bottleneck(job, self.busy.get(job_id)),
                          history=list(tr.history) if tr is not None else [])


def disk_line_state(vm: VmProgress, d: DiskProgress) -> str:
    """What a disk row says: its state, and why it waits."""
    if d.mode == "excluded":
        return "excluded"
    if d.state == "waiting":
        why = d.wait_reason or (vm.reason if vm.state == "waiting" else "")
        if not why and vm.state in ("queued", "snapshot"):
            why = "snapshot first" if vm.state == "snapshot" else "queued"
        if not why and any(x.state == "reading" for x in vm.disks):
            why = "previous disk of the VM"
        return f"waiting ({why})" if why else "waiting"
    return d.state
