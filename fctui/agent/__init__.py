"""The job agent: a long-lived local process that runs backup and restore jobs (server.py), its socket
protocol (protocol.py) and its client (client.py); the same requests answered from a cluster
(cluster_client.py, chosen by client.job_agent). Builds on fctui.jobs; fctui.jobs never imports it."""

from .client import AgentClient, JobAgent, agent_command, ensure_agent, job_agent, job_client, running_agent
from .protocol import AgentError, socket_path

__all__ = ["AgentClient", "AgentError", "JobAgent", "agent_command", "ensure_agent", "job_agent", "job_client",
           "running_agent", "socket_path"]
