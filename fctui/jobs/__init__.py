"""Backup jobs: planner, scheduler, runner, journal, the job agent and its CLI.

Headless (no textual). The TUI (issue 6) uses :func:`build_plan` / :class:`Plan` for its review screen,
:class:`AgentClient` to submit, list, watch and cancel, and the JSON records of :mod:`.model`.
"""

from .agent import AgentClient, AgentError, ensure_agent, socket_path
from .model import DiskProgress, JobError, JobRecord, VmProgress
from .planner import DiskPlan, FindingNote, Plan, VmPlan, add_launch_findings, build_plan, confirm_disk, plan_vm
from .runner import BackupRunner, Reporter, RunnerSettings
from .scheduler import HOST_SOCKETS_BUSY, TARGET_VOLUMES_BUSY, Scheduler, SlotPool

__all__ = [
    "AgentClient", "AgentError", "ensure_agent", "socket_path",
    "DiskProgress", "JobError", "JobRecord", "VmProgress",
    "DiskPlan", "FindingNote", "Plan", "VmPlan", "add_launch_findings", "build_plan", "confirm_disk", "plan_vm",
    "BackupRunner", "Reporter", "RunnerSettings",
    "HOST_SOCKETS_BUSY", "TARGET_VOLUMES_BUSY", "Scheduler", "SlotPool",
]
