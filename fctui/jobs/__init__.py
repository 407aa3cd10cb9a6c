"""The backup and restore engine: planner, scheduler, runner, restore, journal, cleanup, pause, progress.

Headless (no textual), and it never imports the job agent (fctui.agent) or the command line (fctui.cli),
which build on it. The console uses :func:`build_plan` / :class:`Plan` for its review screen and the
JSON records of :mod:`.model`.
"""

from .model import DiskProgress, JobError, JobRecord, VmProgress
from .planner import DiskPlan, FindingNote, Plan, VmPlan, add_launch_findings, build_plan, confirm_disk, plan_vm
from .runner import BackupRunner, Reporter, RunnerSettings
from .scheduler import HOST_SOCKETS_BUSY, TARGET_VOLUMES_BUSY, Scheduler, SlotPool

__all__ = [
    "DiskProgress", "JobError", "JobRecord", "VmProgress",
    "DiskPlan", "FindingNote", "Plan", "VmPlan", "add_launch_findings", "build_plan", "confirm_disk", "plan_vm",
    "BackupRunner", "Reporter", "RunnerSettings",
    "HOST_SOCKETS_BUSY", "TARGET_VOLUMES_BUSY", "Scheduler", "SlotPool",
]
