"""A backup the console submits for a policy (``x`` on the Policies screen without a policy service) is
recorded by the real agent as that policy's job; a manual one as nobody's."""

from __future__ import annotations

from fctui.tui.jobs_screen import JobsService
from fctui.tui.source import ConnectSpec
from tests.conftest import AgentProc


async def test_the_agent_records_the_policy_of_a_submitted_job(agent: AgentProc) -> None:
    client = await agent.start()
    svc = JobsService(None, agent=client, start_agent=False)   # type: ignore[arg-type]
    # nothing answers there: the job fails at its login, after the agent has recorded it
    spec = ConnectSpec(url="http://127.0.0.1:9", user="u", password="p")
    for_policy = await svc.submit(["vm-a"], spec=spec, policy="db-nightly")
    by_hand = await svc.submit(["vm-b"], spec=spec)
    assert (await client.request("get", job=for_policy))["job"]["policy"] == "db-nightly"
    assert (await client.request("get", job=by_hand))["job"]["policy"] == ""
