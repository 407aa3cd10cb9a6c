"""The job agent's socket protocol: the local process that runs backup jobs so they outlive the TUI and the SSH session.
(A cluster's proxies answer the same requests and events through fctui.agent.cluster_client.ClusterClient.)

It serves a Unix socket in the user's runtime dir (mode 0600, dir 0700) speaking JSON lines. Requests
(one JSON object per line, field ``op``):

* ``hello`` -> pid, socket, demo simulator (url, user, password) when hosted
* ``demo`` -> start the embedded simulator if needed and return its url and demo credentials
* ``submit`` {vrm, user, password, targets, full, demo, verify, user_type?, proxy_ip?, cbt_bitmap?, host_snapshot_gate?} -> {job}
  (the last three: the profile's connection settings; absent: the client's defaults)
* ``list`` -> {jobs}; ``get`` {job} -> {job}
* ``watch`` {job?} -> a stream: the job(s) in full, then events (``job``, ``progress``, ``log``), and
  ``{"event": "end"}`` when the watched job is final; watching all jobs also gets ``{"event": "cleanup",
  "pending": [...]}`` (the ``cleanup-status`` leftovers) at the start and whenever they change
* ``cancel`` {job}; ``cleanup-status``; ``credentials`` {vrm, user, password, verify, user_type?, ...} (runs pending cleanup);
  ``shutdown``
* ``policy_runs`` {policy?, limit?} -> {runs: [PolicyRun dicts, oldest first], service: the policy service's
  status, or null when this agent runs none (the runs come from the job store either way)}
* ``run_policy`` {name} -> {run: PolicyRun dict}; refused when no policy service runs (``fctui agent --service``)

Job state is persisted in tinydb through fctui.store (atomic writes, one writer: the agent holds a
WriterLock). Passwords live only in memory: for as long as a job of that VRM runs, and after it as long
as the journal holds leftovers (snapshots, backup resources) on that VRM. Those the snapshot hunter
removes in the background, retrying with back-off until the VRM accepts; then it forgets the password.
On start, jobs found running are marked ``interrupted`` and their leftovers wait as "cleanup pending"
until a client supplies credentials for their VRM (a job's submission or ``credentials``); in demo mode
they vanish with the previous agent's simulator.
"""

from __future__ import annotations

from pathlib import Path

from ..jobs.model import JobError
from ..store import runtime_dir

SOCKET_NAME = "agent.sock"
MAX_LINE = 1 << 20  # longest request or event line, bytes
DEMO_USER = "admin"
DEMO_PASSWORD = "Admin@123"


def socket_path() -> Path:
    return runtime_dir() / SOCKET_NAME


class AgentError(JobError):
    """The agent cannot be reached or refused a request."""
