"""Proxies of the cluster as real processes, for tests and benchmarks: ``fctui agent --cluster URL``.

Each :class:`Proxy` is one machine as an operator would set it up: its own config, data, state and
runtime dirs, a profile ``vrm`` naming the VRM and its user, and the VRM password in a file only it can
read (mode 0600, ``FCTUI_PASSWORD_FILE``) -- never in its environment or on its command line. It logs to
a file in its dir (read it with :meth:`Proxy.log` when something went wrong). The repository and the S3
credentials (``AWS_*``) are the ones of the environment it is started from, as on a shared deployment.

    with Proxies(3, nats.url, es.url, user, password, repo, args=["--ack-wait", "3"]) as proxies:
        await proxies.wait_up()           # every proxy's heartbeat is in the cluster
        proxies[1].kill9()                # a machine dies
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

if TYPE_CHECKING:
    from fctui.sim import SimConfig

# 30 backup-ready VMs on 5 hosts: 14 on cna-01, more than its 8 backup connections, so proxies that did not
# share the per-host limit would make the VRM refuse prepares (10300412); 4 on each of the others
SCALE_VMS_PER_HOST = (14, 4, 4, 4, 4)


def scale_inventory(fill: float = 0.004, **kw: Any) -> "SimConfig":
    """The simulator of the scale tests: SCALE_VMS_PER_HOST ready VMs (named ``ready-cna-NN-MM``) besides the
    edge cases, 1 GB disks with ``fill`` written (0.4 %: 4 MB each, 120 MB for the 30), 64 KiB CBT blocks,
    time 100 times faster (``kw`` as for SimConfig)."""
    from fctui.sim import SimConfig
    base: dict[str, Any] = dict(vms=0, seed=1, sector_of_block=128, time_scale=100.0, edge_disk_gb=1,
                                edge_fill=fill, ready_vms_per_host=SCALE_VMS_PER_HOST)
    return SimConfig(**{**base, **kw})


# a proxy must never find a password anywhere but in its file
_NOT_INHERITED = ("FCTUI_PASSWORD", "FCTUI_PASSWORD_FILE", "CREDENTIALS_DIRECTORY", "FCTUI_CLUSTER")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Proxy:
    """One ``fctui agent --cluster`` process (see the module's docstring)."""

    def __init__(self, base: Path, agent_id: str, cluster_url: str, vrm_url: str, user: str, password: str,
                 repo: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
        self.agent_id = agent_id
        self.dir = base / agent_id
        self.cluster_url = cluster_url
        self.repo = repo
        self.args = list(args)
        dirs = {"FCTUI_CONFIG_DIR": self.dir / "cfg", "FCTUI_DATA_DIR": self.dir / "data",
                "FCTUI_STATE_DIR": self.dir / "state", "FCTUI_RUNTIME_DIR": self.dir / "run"}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(dirs["FCTUI_RUNTIME_DIR"], 0o700)
        (dirs["FCTUI_CONFIG_DIR"] / "config.toml").write_text(
            f'[profiles.vrm]\nvrm = "{vrm_url}"\nuser = "{user}"\n')
        self.password_file = self.dir / "vrm-password"
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        base_env = {k: v for k, v in (env if env is not None else os.environ).items() if k not in _NOT_INHERITED}
        self.env = {**base_env, **{k: str(v) for k, v in dirs.items()},
                    "FCTUI_PASSWORD_FILE": str(self.password_file)}
        self.log_path = self.dir / "proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "fctui.cli", "agent", "--cluster", self.cluster_url, "--profile", "vrm",
                "--repo", self.repo, "--agent-id", self.agent_id, *self.args]

    def start(self) -> "Proxy":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def kill9(self) -> None:
        """The machine dies: no clean-up, no goodbye."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the proxy hands its VMs back), then SIGKILL after ``timeout``; its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


class Proxies:
    """``n`` proxies on one cluster and one repository; a context manager that stops them (and removes
    their dirs) on exit."""

    def __init__(self, n: int, cluster_url: str, vrm_url: str, user: str, password: str, repo: str, *,
                 args: Sequence[str] = (), env: Mapping[str, str] | None = None, prefix: str = "p") -> None:
        self.base = Path(tempfile.mkdtemp(prefix="fpx"))   # short: Unix socket paths are limited
        self.cluster_url = cluster_url
        self.proxies = [Proxy(self.base, f"{prefix}{i + 1}", cluster_url, vrm_url, user, password, repo, args, env)
                        for i in range(n)]

    def __getitem__(self, i: int) -> Proxy:
        return self.proxies[i]

    def __iter__(self) -> Iterator[Proxy]:
        return iter(self.proxies)

    def __len__(self) -> int:
        return len(self.proxies)

    def by_id(self, agent_id: str) -> Proxy:
        return next(p for p in self.proxies if p.agent_id == agent_id)

    def start(self) -> "Proxies":
        for p in self.proxies:
            p.start()
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to every proxy at once (each hands its VMs back), SIGKILL to those still running after
        ``timeout``; their dirs removed."""
        for p in self.proxies:
            if p.alive:
                assert p.proc is not None
                p.proc.terminate()
        deadline = time.monotonic() + timeout
        for p in self.proxies:
            p.stop(max(0.1, deadline - time.monotonic()))
        shutil.rmtree(self.base, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(f"--- {p.agent_id} (exit {p.proc.poll() if p.proc else None})\n{p.log()[-4000:]}"
                         for p in self.proxies)

    async def wait_up(self, timeout: float = 30.0) -> None:
        """Until every running proxy's heartbeat is in the cluster's AGENTS bucket (it has logged in to the
        VRM, opened the repository and joined the queue); fails at once when one exits."""
        import nats
        from nats.js.errors import BucketNotFoundError, KeyNotFoundError

        from fctui.cluster.layout import AGENTS_BUCKET, agent_key
        deadline = time.monotonic() + timeout
        nc = await nats.connect(self.cluster_url)
        try:
            js = nc.jetstream()
            waiting = {p.agent_id for p in self.proxies if p.alive}
            while waiting:
                for p in self.proxies:
                    if p.agent_id in waiting and not p.alive:
                        raise AssertionError(f"proxy {p.agent_id} exited at start:\n{p.log()[-4000:]}")
                try:
                    kv = await js.key_value(AGENTS_BUCKET)
                    for agent_id in list(waiting):
                        try:
                            await kv.get(agent_key(agent_id))
                            waiting.discard(agent_id)
                        except KeyNotFoundError:
                            pass
                except BucketNotFoundError:
                    pass
                if waiting and time.monotonic() > deadline:
                    raise AssertionError(f"proxies {sorted(waiting)} not up within {timeout:g} s:\n{self.logs()}")
                if waiting:
                    await asyncio.sleep(0.1)
        finally:
            await nc.close()

    def __enter__(self) -> "Proxies":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

