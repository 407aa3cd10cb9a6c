"""The job agent: a long-lived local process that runs backup and restore jobs (server.py), its socket
protocol (protocol.py) and its client (client.py). Builds on fctui.jobs; fctui.jobs never imports it."""

from .client import AgentClient, agent_command, ensure_agent, running_agent
from .protocol import AgentError, socket_path

__all__ = ["AgentClient", "AgentError", "agent_command", "ensure_agent", "running_agent", "socket_path"]
