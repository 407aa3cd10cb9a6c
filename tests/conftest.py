"""Shared fixtures: a simulated VRM and a logged-in client talking to it over in-process HTTP.
(fctui.sim is imported inside the fixtures so tests that do not use them never depend on it.)

Fixtures (all function-scoped, so each test gets a fresh, deterministic VRM):

* ``sim_config`` -- the :class:`SimConfig` used by ``sim``: a small seeded inventory (every rule edge case
  is always present), 64 KiB CBT blocks (``sector_of_block=128``) so data tests move little, and
  ``time_scale=100`` so a 2 s power task takes 20 ms of wall time. Override it in a test module with
  your own ``sim_config`` fixture to change any of that.
* ``sim`` -- a :class:`Simulator` built from ``sim_config`` on the real clock (tasks progress by themselves).
* ``manual_clock`` / ``manual_sim`` -- the same inventory on a :class:`ManualClock`: nothing happens
  until the test calls ``manual_clock.advance(seconds)`` (deterministic time-based tests).
* ``client`` -- a logged-in :class:`VrmClient` over ``httpx.ASGITransport(create_app(sim))`` with base URL
  ``http://vrm.sim`` (API version discovered from ``/service/versions``); logged out and closed after the test.
* ``manual_client`` -- the same against ``manual_sim``.
* ``control`` -- a raw ``httpx.AsyncClient`` on the same app for the simulator's ``/sim/...`` control API
  (guest writes, faults, token expiry, digests ...). ``manual_control`` likewise for ``manual_sim``.
* ``site_uri`` -- URI of the simulated site (``/service/sites/<id>``).
* ``repo`` -- an empty backup repository in the test's temp dir; ``edges`` -- the simulator's edge-case
  VMs by rule (``/sim/edge-cases``).
* ``es`` -- the ``small_disks()`` simulator served on loopback (:class:`EmbeddedSimulator`), for tests that
  run real processes (the agent, the CLI) against it.
* ``dirs`` -- the test's own data, runtime and config dirs (``FCTUI_DATA_DIR``, ``FCTUI_RUNTIME_DIR``,
  ``FCTUI_CONFIG_DIR`` set in the environment; short, as Unix socket paths are limited to ~107 bytes).
* ``agent`` -- an :class:`AgentProc`: a real job agent process on ``dirs``, started by ``await agent.start()``
  (returns its :class:`AgentClient`), stopped after the test.
* ``small_disks(fill)`` -- a ``SimConfig`` whose edge-case VMs have 1 GB disks with ``fill`` of them
  written (2 %: about 20 MB per disk), so full backups and restores in tests stay quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator

import httpx
import pytest

from fctui.repo import Repository
from fctui.vrm import VrmClient

if TYPE_CHECKING:
    from fctui.sim import ManualClock, SimConfig, Simulator

SIM_BASE_URL = "http://vrm.sim"


def pytest_configure(config: pytest.Config) -> None:
    # Commands read profiles from the config file, and the console reads the repository, as on a user's
    # machine: never the user's real config, repository or job agent in tests (tests that need their own
    # set FCTUI_*_DIR themselves, e.g. the ``dirs`` fixture). Subprocesses inherit these.
    import os
    import tempfile
    base = tempfile.mkdtemp(prefix="fctui-test-")   # short: Unix socket paths are limited to ~107 bytes
    os.environ["FCTUI_TEST_HOME"] = base
    for var, sub in (("FCTUI_CONFIG_DIR", "cfg"), ("FCTUI_DATA_DIR", "data"), ("FCTUI_RUNTIME_DIR", "run")):
        os.environ[var] = os.path.join(base, sub)
    os.environ.pop("FCTUI_CLUSTER", None)   # nor the user's cluster (tests that use one name it)


def pytest_unconfigure(config: pytest.Config) -> None:
    import os
    import shutil
    shutil.rmtree(os.environ.pop("FCTUI_TEST_HOME", ""), ignore_errors=True)


@pytest.fixture
def sim_config() -> "SimConfig":
    from fctui.sim import SimConfig

    return SimConfig(vms=30, seed=1, sector_of_block=128, time_scale=100.0)


@pytest.fixture
def sim(sim_config: "SimConfig") -> "Simulator":
    from fctui.sim import Simulator

    return Simulator(sim_config)


@pytest.fixture
def manual_clock() -> "ManualClock":
    from fctui.sim import ManualClock

    return ManualClock()


@pytest.fixture
def manual_sim(sim_config: "SimConfig", manual_clock: "ManualClock") -> "Simulator":
    from fctui.sim import Simulator

    return Simulator(sim_config, clock=manual_clock)


def sim_client(sim: "Simulator", **kw: object) -> VrmClient:
    """A (not yet logged-in) client for ``sim`` over ASGI; keyword arguments go to :class:`VrmClient`."""
    from fctui.sim import create_app

    return VrmClient(SIM_BASE_URL, sim.config.user, sim.config.password,
                     transport=httpx.ASGITransport(app=create_app(sim)), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def client(sim: "Simulator") -> AsyncIterator[VrmClient]:
    async with sim_client(sim) as c:
        yield c


@pytest.fixture
async def manual_client(manual_sim: "Simulator") -> AsyncIterator[VrmClient]:
    async with sim_client(manual_sim) as c:
        yield c


def _control(sim: "Simulator") -> httpx.AsyncClient:
    from fctui.sim import create_app

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sim)), base_url=SIM_BASE_URL)


@pytest.fixture
async def control(sim: "Simulator") -> AsyncIterator[httpx.AsyncClient]:
    async with _control(sim) as c:
        yield c


@pytest.fixture
async def manual_control(manual_sim: "Simulator") -> AsyncIterator[httpx.AsyncClient]:
    async with _control(manual_sim) as c:
        yield c


@pytest.fixture
def site_uri(sim: "Simulator") -> str:
    return f"/service/sites/{sim.site.id}"


def small_disks(fill: float = 0.02) -> "SimConfig":
    from fctui.sim import SimConfig
    return SimConfig(vms=30, seed=1, sector_of_block=128, time_scale=100.0, edge_disk_gb=1, edge_fill=fill)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.open(tmp_path / "repo")


@pytest.fixture
async def edges(control: httpx.AsyncClient) -> dict[str, list[str]]:
    return (await control.get("/sim/edge-cases")).json()


@pytest.fixture
def es() -> Iterator[Any]:
    from fctui.sim import EmbeddedSimulator
    with EmbeddedSimulator(small_disks()) as server:
        yield server


# --- the job agent as a real process ------------------------------------------------------------------

@pytest.fixture
def dirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    import shutil
    import tempfile
    base = tempfile.mkdtemp(prefix="fa")  # short: Unix socket paths are limited to ~107 bytes
    d = {"FCTUI_DATA_DIR": f"{base}/data", "FCTUI_RUNTIME_DIR": f"{base}/run", "FCTUI_CONFIG_DIR": f"{base}/cfg"}
    for k, v in d.items():
        monkeypatch.setenv(k, v)
    yield d
    shutil.rmtree(base, ignore_errors=True)


class AgentProc:
    """``fctui agent --foreground`` in a subprocess with the test's dirs (and a quick watch interval)."""

    def __init__(self, env: dict[str, str]) -> None:
        import os
        self.env = {**os.environ, **env}
        self.proc: Any = None

    async def start(self, *extra: str) -> Any:
        import asyncio
        import subprocess

        from fctui.agent import AgentClient, AgentError, agent_command
        self.proc = subprocess.Popen(agent_command(extra=["--watch-interval", "0.2", *extra]), env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = AgentClient(Path(self.env["FCTUI_RUNTIME_DIR"]) / "agent.sock")
        for _ in range(300):
            try:
                await client.request("hello")
                return client
            except AgentError:
                if self.proc.poll() is not None:
                    raise AssertionError(self.proc.stderr.read().decode() if self.proc.stderr else "agent died")
                await asyncio.sleep(0.05)
        raise AssertionError("agent did not start")

    def kill9(self) -> None:
        import os
        import signal
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, sig: int | None = None) -> None:
        import os
        import signal
        import subprocess
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig or signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
async def agent(dirs: dict[str, str]) -> AsyncIterator[AgentProc]:
    a = AgentProc(dirs)
    yield a
    a.stop()


# --- real servers (tests/servers.py) ------------------------------------------------------------------

@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """One SeaweedFS S3 store per test process (xdist worker), or the one at ``FCTUI_TEST_S3_ENDPOINT``
    (``make mutate``); tests keep apart by prefix (``s3_repo_url``)."""
    import os
    from tests.servers import S3Server, ServerUnavailable
    if endpoint := os.environ.get("FCTUI_TEST_S3_ENDPOINT"):
        yield S3Server.running_at(endpoint)
        return
    try:
        server = S3Server().start()
    except ServerUnavailable as e:
        pytest.skip(f"no S3 store: {e}")
    yield server
    server.stop()


@pytest.fixture
def s3_repo_url(s3_server: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """``s3://fctui/<unique prefix>`` for this test, with the store's ``AWS_*`` variables set in the
    environment (as an operator would; subprocesses inherit them)."""
    import secrets
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return s3_server.url(f"t-{secrets.token_hex(4)}")


@pytest.fixture
def nats_server() -> Iterator[Any]:
    """A NATS server with JetStream for this test alone (starts in ~0.1 s); ``.url`` is nats://127.0.0.1:PORT."""
    from tests.servers import NatsServer, ServerUnavailable
    try:
        server = NatsServer().start()
    except ServerUnavailable as e:
        pytest.skip(f"no NATS server: {e}")
    yield server
    server.stop()
