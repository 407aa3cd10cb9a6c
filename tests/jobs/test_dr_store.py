"""DrStore: plans and runs survive a reopen, runs are kept per plan, a damaged file is an error, never
overwritten."""

from __future__ import annotations

import pytest

from fctui.jobs.dr import (RUNS_KEPT, BootGroup, DrError, DrStore, RecoveryPlan, RecoveryRun,
                           VmRecovery)


def test_plans_and_runs_round_trip_and_prune(tmp_path):
    store = DrStore(tmp_path / "dr")
    assert store.plans() == [] and store.runs() == [] and store.last_run("p") is None
    plan = RecoveryPlan(name="erp", target="b", vms=["urn:sites:1:vms:i-1"], vm_names={"urn:sites:1:vms:i-1": "db1"},
                        groups=[BootGroup("db", ["db*"])], rehearsal_network="urn:pg", tools_timeout_s=60)
    store.save_plan(plan)
    created = store.plan("erp").created
    plan.tools_timeout_s = 90
    store.save_plan(plan)
    again = DrStore(tmp_path / "dr").plan("erp")
    assert again.tools_timeout_s == 90 and again.created == created and again.groups[0].match == ["db*"]
    with pytest.raises(DrError, match="erp"):
        store.plan("nope")
    with pytest.raises(DrError, match="bad plan name"):
        store.save_plan(RecoveryPlan(name="a b", target="b"))

    for i in range(RUNS_KEPT + 3):
        run = RecoveryRun(id=f"r{i:03d}", plan="erp", kind="rehearsal", target="b", started=1000.0 + i,
                          vms=[VmRecovery("urn:sites:1:vms:i-1", "db1", "db", state="running", rto_s=3.0)])
        store.save_run(run)
        run.state = "succeeded"
        store.save_run(run)
    store.save_run(RecoveryRun(id="f1", plan="erp", kind="failover", target="b", started=500.0, state="failed"))
    runs = store.runs("erp", limit=0)
    assert len(runs) == RUNS_KEPT and runs[0].id == f"r{RUNS_KEPT + 2:03d}"
    assert store.last_run("erp").id == runs[0].id and store.last_run("erp", "failover") is None  # pruned: oldest
    assert store.run(runs[0].id).vms[0].rto_s == 3.0
    store.remove_plan("erp")
    assert store.plans() == [] and store.runs("erp")


def test_damaged_files_are_errors_and_kept(tmp_path):
    store = DrStore(tmp_path / "dr")
    store.save_plan(RecoveryPlan(name="erp", target="b"))
    store.plans_path.write_text("{not json")
    with pytest.raises(DrError, match="damaged"):
        store.plans()
    with pytest.raises(DrError, match="damaged"):
        store.save_plan(RecoveryPlan(name="other", target="b"))
    assert store.plans_path.read_text() == "{not json"

    store.runs_dir.mkdir(parents=True, exist_ok=True)
    (store.runs_dir / "r1.json").write_text("[1, 2")
    with pytest.raises(DrError, match="damaged"):
        store.save_run(RecoveryRun(id="r1", plan="erp", kind="rehearsal", target="b"))
    assert (store.runs_dir / "r1.json").read_text() == "[1, 2"
    with pytest.raises(DrError, match="damaged"):
        store.runs()
