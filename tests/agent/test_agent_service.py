"""``fctui agent --service`` as a real process against the loopback simulator, and the agent's
``policy_runs`` / ``run_policy`` ops.

The policy service itself (fctui.agent.service, PolicyService) is another piece of work; where this
checkout has no such module, ``--service`` must say so and stop (exit 1) after its login check, and the
test asserts that path instead of the serving one.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AgentProc
from fctui.agent import AgentClient, AgentError, agent_command

HAS_SERVICE = importlib.util.find_spec("fctui.agent.service") is not None


def service_env(dirs: dict[str, str], es: Any, password: str, *, mode: int = 0o600,
                vrm: str | None = None) -> dict[str, str]:
    """The test's dirs, a profile ``sim`` for the simulator, and a password file with ``password``."""
    base = Path(dirs["FCTUI_DATA_DIR"]).parent
    cfg = Path(dirs["FCTUI_CONFIG_DIR"])
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text(f'[profiles.sim]\nvrm = "{vrm or es.url}"\nuser = "{es.sim.config.user}"\n')
    pw = base / "vrm-password"
    pw.write_text(password + "\n")
    os.chmod(pw, mode)
    return {**dirs, "FCTUI_PASSWORD_FILE": str(pw)}


def clean_environ(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FCTUI_PASSWORD", "CREDENTIALS_DIRECTORY")}
    return {**env, **extra}


def run_service(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``fctui agent --service`` that is expected to stop on its own (a refusal)."""
    return subprocess.run(agent_command(extra=["--service", "--profile", "sim", *args]), env=clean_environ(env),
                          capture_output=True, text=True, timeout=timeout)


async def test_service_starts_logs_in_and_answers_policy_runs(es: Any, dirs: dict[str, str]) -> None:
    password = es.sim.config.password
    env = service_env(dirs, es, password)
    if not HAS_SERVICE:
        r = run_service(env)
        assert r.returncode == 1, r.stderr
        assert f"logged in to {es.url} as {es.sim.config.user} (profile sim)" in r.stderr
        assert "this fctui has no policy service (fctui.agent.service)" in r.stderr
        assert password not in r.stderr + r.stdout
        assert not (Path(dirs["FCTUI_RUNTIME_DIR"]) / "agent.sock").exists()   # it did not serve half a service
        return
    proc = AgentProc(clean_environ(env))
    try:
        client = await proc.start("--service", "--profile", "sim", "--idle-exit", "1")
        reply = await client.policy_runs()
        assert reply["runs"] == [] and isinstance(reply["service"], dict)
        # --idle-exit does not apply to a service: still there. A negative check needs elapsed time (the
        # agent is another process, its idle check unseen): 1.5 s past the last request is past the
        # 1 s idle limit and its 0.25 s check. Under load a faulty agent might exit late (this would
        # then pass once), a correct one never exits: the check cannot go red by load.
        await asyncio.sleep(1.5)
        assert proc.proc.poll() is None
        await client.request("hello")
    finally:
        proc.stop()
    log = proc.proc.stderr.read().decode()
    assert f"logged in to {es.url}" in log and password not in log


async def test_wrong_password_file_exits_2_without_showing_it(es: Any, dirs: dict[str, str]) -> None:
    wrong = "Not-The-Pw-77"
    r = run_service(service_env(dirs, es, wrong))
    assert r.returncode == 2, r.stderr
    assert f"the VRM {es.url} refused {es.sim.config.user}" in r.stderr and "password file" in r.stderr
    assert wrong not in r.stderr + r.stdout and es.sim.config.password not in r.stderr
    assert not (Path(dirs["FCTUI_RUNTIME_DIR"]) / "agent.sock").exists()


async def test_password_file_others_can_read_exits_2_with_the_chmod(es: Any, dirs: dict[str, str]) -> None:
    env = service_env(dirs, es, es.sim.config.password, mode=0o644)
    r = run_service(env)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"fctui agent --service: password file {env['FCTUI_PASSWORD_FILE']} can be read by "
                                f"others (mode 0644): `chmod 600 {env['FCTUI_PASSWORD_FILE']}`")


async def test_no_password_file_at_all_exits_2(es: Any, dirs: dict[str, str]) -> None:
    env = service_env(dirs, es, es.sim.config.password)
    del env["FCTUI_PASSWORD_FILE"]
    r = subprocess.run(agent_command(extra=["--service", "--profile", "sim"]),
                       env={**clean_environ(env), "FCTUI_PASSWORD": es.sim.config.password},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "FCTUI_PASSWORD_FILE" in r.stderr   # FCTUI_PASSWORD is the console's, not its


async def test_unreachable_vrm_exits_3_so_systemd_retries(es: Any, dirs: dict[str, str]) -> None:
    r = run_service(service_env(dirs, es, es.sim.config.password, vrm="http://127.0.0.1:9"))
    assert r.returncode == 3, r.stderr
    assert "cannot use the VRM http://127.0.0.1:9" in r.stderr


async def test_refused_while_an_on_demand_agent_runs(es: Any, dirs: dict[str, str], agent: AgentProc) -> None:
    client = await agent.start()
    pid = (await client.request("hello"))["pid"]
    r = run_service(service_env(dirs, es, es.sim.config.password))
    assert r.returncode == 1
    assert f"an agent (pid {pid}) already runs for this user" in r.stderr and f"kill {pid}" in r.stderr
    await client.request("hello")   # the running one is untouched


def test_connection_options_need_service(dirs: dict[str, str]) -> None:
    from fctui.cli import main
    assert main(["agent", "--foreground", "--vrm", "https://v:7443", "--user", "u"]) == 2


# --- the ops, from any agent ---------------------------------------------------------------------------

def seed_runs(state: Path) -> None:
    from fctui.jobs.journal import JobStore
    from fctui.jobs.policystore import PolicyRun
    store = JobStore(state / "jobs.json")
    try:
        # recorded out of order on purpose: the agent answers oldest first
        store.record_run(PolicyRun(policy="nightly", scheduled=1_700_086_400, started=1_700_086_410,
                                   finished=1_700_087_000, state="succeeded", job_id="j2"))
        store.record_run(PolicyRun(policy="nightly", scheduled=1_700_000_000, started=1_700_000_005,
                                   finished=1_700_000_900, state="failed", job_id="j1", note="VRM down"))
        store.record_run(PolicyRun(policy="hourly", scheduled=1_700_003_600, state="skipped",
                                   note="outside its window"))
    finally:
        store.close()


async def test_policy_runs_from_an_on_demand_agent(dirs: dict[str, str], agent: AgentProc) -> None:
    seed_runs(Path(dirs["FCTUI_DATA_DIR"]) / "state")
    client = await agent.start()
    every = await client.policy_runs()
    assert every["service"] is None
    assert [(r["policy"], r["scheduled"], r["state"]) for r in every["runs"]] == [
        ("nightly", 1_700_000_000, "failed"), ("hourly", 1_700_003_600, "skipped"),
        ("nightly", 1_700_086_400, "succeeded")]
    assert every["runs"][0]["key"] == "nightly@1700000000" and every["runs"][0]["note"] == "VRM down"
    nightly = await client.policy_runs("nightly")
    assert [r["job_id"] for r in nightly["runs"]] == ["j1", "j2"]
    newest = await client.policy_runs("nightly", limit=1)
    assert [r["job_id"] for r in newest["runs"]] == ["j2"]
    assert (await client.policy_runs("weekly"))["runs"] == []
    with pytest.raises(AgentError, match="limit must be a whole number >= 1"):
        await client.policy_runs(limit=0)
    with pytest.raises(AgentError, match="policy must be a policy name"):
        await client.request("policy_runs", policy=7)
    with pytest.raises(AgentError, match=r"^no policy service is running: start `fctui agent --service`$"):
        await client.run_policy("nightly")


class StandIn:
    """The part of PolicyService the ops use, for a checkout without fctui.agent.service."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def status(self) -> dict[str, Any]:
        return {"running": True, "vrm": "https://v:7443", "next": []}

    async def run_now(self, name: str) -> Any:
        from fctui.jobs.policy import PolicyError
        from fctui.jobs.policystore import PolicyRun
        self.asked.append(name)
        if name != "nightly":
            raise PolicyError(f"no policy {name!r}")
        return PolicyRun(policy=name, scheduled=1_700_100_000, started=1_700_100_000, job_id="j9")


async def test_ops_with_a_service_set(dirs: dict[str, str]) -> None:
    from fctui.agent.server import Agent
    agent = Agent()
    try:
        agent.service = StandIn()
        got = await agent.dispatch("policy_runs", {"op": "policy_runs"})
        assert got == {"ok": True, "runs": [], "service": {"running": True, "vrm": "https://v:7443", "next": []}}
        got = await agent.dispatch("run_policy", {"op": "run_policy", "name": "nightly"})
        assert got["ok"] and got["run"]["key"] == "nightly@1700100000" and got["run"]["job_id"] == "j9"
        with pytest.raises(AgentError, match=r"^no policy 'weekly'$"):
            await agent.dispatch("run_policy", {"op": "run_policy", "name": "weekly"})
        with pytest.raises(AgentError, match="needs the name of a policy"):
            await agent.dispatch("run_policy", {"op": "run_policy"})
        assert agent.service.asked == ["nightly", "weekly"]
    finally:
        agent.store.close()
        agent.lock.release()


def test_an_on_demand_agent_next_to_a_service_it_cannot_see_says_where_to_look(dirs: dict[str, str]) -> None:
    """The service serves another runtime dir (/run/fctui) but holds this user's job database: an on-demand
    agent started by a console without FCTUI_RUNTIME_DIR stops with a hint."""
    from fctui.store import WriterLock, state_dir
    lock = WriterLock(state_dir() / "jobs.lock", purpose="job agent")
    lock.acquire()
    try:
        r = subprocess.run(agent_command(), env=clean_environ(dirs), capture_output=True, text=True, timeout=30)
    finally:
        lock.release()
    assert r.returncode == 1
    assert f"another agent (pid {os.getpid()}) already runs for this user" in r.stderr
    assert "FCTUI_RUNTIME_DIR" in r.stderr and "/run/fctui" in r.stderr
