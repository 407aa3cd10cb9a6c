"""Failure drills for the demo: inject the product document's failure cases into a running job's VM.

Through the simulator's control API (never against a real VRM: only offered when the console is
connected to a simulator, i.e. the demo). Each drill is what an on-call engineer would see in the field:

* power-off         someone powers the VM off (a real VM task by another user; CBT is re-initialised)
* ha-restart        the host fails: the VM goes down, HA restarts it on another host (CBT lost)
* volume-expansion  someone expands a disk (a real task; the disk's CBT chain ends)
* storage-migration someone migrates its storage (a real task; stopped again once the job has failed)

The job's watchdog fails the VM cleanly (snapshot deleted, resource released) and the chain is recorded
as broken, so the next plan shows the disks as full with the reason.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, ClassVar

import httpx
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, OptionList
from textual.widgets.option_list import Option

from ..jobs.model import FINAL_VM_STATES, JobRecord

DRILLS: dict[str, str] = {
    "power-off": "Power-off by someone else",
    "ha-restart": "HA restart (host failure, VM restarted elsewhere)",
    "volume-expansion": "Volume expansion by someone else",
    "storage-migration": "Storage migration by someone else",
}


class DrillError(Exception):
    """The simulator refused a drill (says why)."""


def drills_available(app: Any) -> bool:
    spec = getattr(app, "spec", None)
    return spec is not None and (getattr(spec, "label", "") == "demo" or bool(getattr(app, "drills_enabled", False)))


def control_client(app: Any) -> httpx.AsyncClient:
    spec = app.spec
    return httpx.AsyncClient(base_url=spec.url, transport=spec.transport, timeout=15.0,
                             verify=spec.verify if isinstance(spec.verify, (bool, str)) else True)


async def _post(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await http.post(path, json=body)
    if r.status_code >= 300:
        try:
            msg = r.json().get("errorDes") or r.text
        except ValueError:
            msg = r.text
        raise DrillError(f"{path}: HTTP {r.status_code}: {msg}")
    return r.json() if r.content else {}


async def run_drill(http: httpx.AsyncClient, vm_urn: str, drill: str,
                    vm_failed: Callable[[], Awaitable[None]] | None = None) -> str:
    """Inject ``drill`` into ``vm_urn``. ``vm_failed`` waits until the job has given up on the VM (the
    second half of HA restart and storage migration runs after it). Returns what was done."""
    base = f"/sim/vms/{vm_urn}"
    if drill == "power-off":
        await _post(http, f"{base}/operations", {"op": "power-off"})
        return "the VM is being powered off by another user"
    if drill == "volume-expansion":
        try:
            await _post(http, f"{base}/operations", {"op": "expand"})
            return "a disk of the VM is being expanded by another user"
        except DrillError as e:
            if "10300062" not in str(e):
                raise
        # The VRM refuses to expand a volume while our backup resource is open on it; the drill then
        # grows the disk out of band (storage-side), which re-initialises its CBT like an expansion.
        await _post(http, f"{base}/events", {"event": "volume-expansion"})
        return ("the VRM refused the expansion while the disk is being read; the disk was grown out of band "
                "instead (its CBT chain ends: the next backup of it is full)")
    if drill == "ha-restart":
        await _post(http, f"{base}/events", {"event": "power-off"})
        if vm_failed is not None:
            await vm_failed()
        await _post(http, f"{base}/events", {"event": "ha-restart"})
        return "the VM went down with its host and was restarted by HA on another host"
    if drill == "storage-migration":
        await _post(http, f"{base}/storage-migration", {"action": "start"})
        if vm_failed is not None:
            await vm_failed()
            await _post(http, f"{base}/storage-migration", {"action": "stop"})
            return "a storage migration ran on the VM (stopped again after the job failed)"
        return "a storage migration is running on the VM"
    raise DrillError(f"unknown drill {drill!r}; drills are {', '.join(DRILLS)}")


def wait_vm_final(app: Any, job_id: str, vm_urn: str, timeout: float = 60.0) -> Callable[[], Awaitable[None]]:
    """Wait (from the jobs board) until the VM of the job has reached a final state."""
    async def wait() -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            svc = getattr(app, "jobs", None)
            job = svc.board.get(job_id) if svc is not None else None
            vm = job.vm(vm_urn) if job is not None else None
            if vm is None or vm.state in FINAL_VM_STATES or (job is not None and job.is_final):
                return
            await asyncio.sleep(0.1)
    return wait


class DrillScreen(ModalScreen[None]):
    """Pick a VM of the running job and a failure to inject."""

    DEFAULT_CSS = """
    DrillScreen { align: center middle; }
    DrillScreen #drill-dialog { width: 76; height: auto; max-height: 20; border: round $warning;
                                background: $surface; padding: 0 1; }
    DrillScreen OptionList { height: auto; max-height: 14; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close", id="drill.close"),
    ]

    def __init__(self, job: JobRecord) -> None:
        super().__init__()
        self.job = job
        self.tasks: list[asyncio.Task[Any]] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="drill-dialog"):
            yield Label(Text(f"Drill on job {self.job.id} (simulated VRM only)", style="bold"))
            opts = []
            for vm in self.job.vms:
                if vm.state in FINAL_VM_STATES:
                    continue
                for key, label in DRILLS.items():
                    opts.append(Option(f"{vm.name or vm.urn}: {label}", id=f"{key}|{vm.urn}"))
            yield OptionList(*opts, id="drill-options")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected, "#drill-options")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        drill, vm_urn = (event.option.id or "|").split("|", 1)
        app: Any = self.app
        job_id = self.job.id

        async def go() -> None:
            try:
                async with control_client(app) as http:
                    what = await run_drill(http, vm_urn, drill, wait_vm_final(app, job_id, vm_urn))
            except (DrillError, httpx.HTTPError) as e:
                app.notify(f"Drill failed: {e}", severity="error")
                return
            app.notify(what, title=f"Drill: {drill}")

        app.run_worker(go(), group="drills", exit_on_error=False)
        self.dismiss(None)
