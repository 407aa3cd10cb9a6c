"""Protection status per VM, from rows, policies, points and attempts at an injected ``now``.
Each expectation is worked out by hand from the state definitions in the module's documentation."""

from __future__ import annotations

from datetime import timezone

import pytest

from fctui.inventory.query import VmRow
from fctui.jobs.model import JobRecord, VmProgress
from fctui.jobs.policy import Policy, policy_from_mapping
from fctui.jobs.protection import LastAttempt, assess_protection, exit_code, last_attempts

UTC = timezone.utc
H = 3600.0
NOW = 1_767_571_200.0 + 12 * H   # Monday 2026-01-05 12:00 UTC
CREATED = NOW - 10 * 86400


def row(name: str, verdict: str = "ready", reason: str = "", host: str = "cna-01") -> VmRow:
    return VmRow(f"urn:sites:1:vms:{name}", name, "running", host, "c1", 1, 10, "running", verdict, reason)


def pol(**kw: object) -> Policy:
    base: dict[str, object] = {"name": "db", "vms": "re:^db-", "schedule": "daily 01:00", "rpo": "24h",
                               "created": CREATED}
    base.update(kw)
    return policy_from_mapping(base)


def states(rows: list[VmRow], policies: list[Policy], good: dict[str, float],
           attempts: dict[str, LastAttempt] | None = None) -> dict[str, tuple[str, str, str]]:
    got = assess_protection(rows, policies, last_good={f"urn:sites:1:vms:{k}": v for k, v in good.items()},
                            last_attempt={f"urn:sites:1:vms:{k}": v for k, v in (attempts or {}).items()},
                            now=NOW, tz=UTC)
    return {p.name: (p.state, p.policy, p.reason) for p in got.values()}


def test_states_by_hand() -> None:
    rows = [row("db-ok"), row("db-old"), row("db-failed"), row("db-blocked", "blocked", "IDE disk"),
            row("db-new"), row("web-01")]
    good = {"db-ok": NOW - 11 * H, "db-old": NOW - 25 * H, "db-failed": NOW - 11 * H, "db-blocked": NOW - 11 * H}
    attempts = {"db-failed": LastAttempt(NOW - 10 * H, False, "snapshot refused"),
                "db-ok": LastAttempt(NOW - 30 * H, False, "an older failure, before the good point")}
    got = states(rows, [pol()], good, attempts)
    # next run is 01:00 tomorrow = NOW + 13 h; a point 11 h old keeps the 24 h RPO until NOW + 13 h: on time
    assert got["db-ok"] == ("ok", "db", "newest point 11 h old")
    assert got["db-old"] == ("breached", "db", "newest point 25 h old, RPO 24 h")
    assert got["db-failed"] == ("at-risk", "db", "last backup failed: snapshot refused")
    assert got["db-blocked"] == ("at-risk", "db", "cannot be backed up: IDE disk")
    assert got["db-new"] == ("breached", "db", "no restore point yet; RPO 24 h")   # policy is 10 days old
    assert got["web-01"] == ("not-covered", "", "no policy selects it")


def test_next_run_after_the_rpo_runs_out_is_at_risk() -> None:
    # a point 12 h old and a 20 h RPO: it runs out at NOW + 8 h, the next run is at NOW + 13 h
    got = states([row("db-01")], [pol(rpo="20h")], {"db-01": NOW - 12 * H})
    assert got["db-01"] == ("at-risk", "db", "RPO runs out in 8 h, before the next run")


def test_new_policy_gets_its_rpo_before_breach() -> None:
    got = states([row("db-01")], [pol(created=NOW - 2 * H)], {})
    assert got["db-01"] == ("at-risk", "db", "no restore point yet")


def test_winner_and_disabled_policies() -> None:
    rows = [row("db-01"), row("db-02")]
    strict = pol(name="hourly", vms="db-01", rpo="2h", schedule="cron 0 * * * *")
    off = pol(name="off", vms="db-02", enabled=False)
    got = assess_protection(rows, [pol(vms="re:^db-01"), strict, off], last_good={}, now=NOW, tz=UTC)
    p1 = got["urn:sites:1:vms:db-01"]
    assert (p1.policy, p1.also) == ("hourly", ("db",))
    assert got["urn:sites:1:vms:db-02"].state == "not-covered"
    assert got["urn:sites:1:vms:db-02"].reason == "only a disabled policy selects it"


@pytest.mark.parametrize("given, code", [([], 0), (["ok", "ok"], 0), (["ok", "at-risk"], 1),
                                         (["at-risk", "breached"], 2), (["ok", "not-covered"], 2)])
def test_nagios_exit_codes(given: list[str], code: int) -> None:
    assert exit_code(given) == code


def test_last_attempts_from_job_records() -> None:
    def job(jid: str, finished: float, vms: list[VmProgress]) -> JobRecord:
        return JobRecord(id=jid, state="succeeded", finished=finished, vms=vms)
    a, b, c = "urn:a", "urn:b", "urn:c"
    jobs = [job("j1", 100.0, [VmProgress(a, state="done", point_id="p1"), VmProgress(b, state="failed", reason="x")]),
            job("j2", 200.0, [VmProgress(a, state="failed", reason="timeout"), VmProgress(b, state="done", point_id="p2"),
                              VmProgress(c, state="refused", reason="already being backed up by job j3")])]
    got = last_attempts(jobs)
    assert got == {a: LastAttempt(200.0, False, "timeout"), b: LastAttempt(200.0, True)}
