"""The agent's persisted job store: job records, write-ahead intents, CBT chain marks."""

from __future__ import annotations

import json
from pathlib import Path

from fctui.jobs.journal import JobStore
from fctui.jobs.model import DiskProgress, JobRecord, VmProgress


def test_jobs_intents_and_marks_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    store = JobStore(path)
    job = JobRecord(id="j1", vrm="https://vrm:7443", user="bk", targets=["db-01"], state="running")
    job.vms = [VmProgress(urn="urn:sites:S:vms:i-1", name="db-01", kind="cbt", state="reading",
                          snapshot_urn="urn:sites:S:vms:i-1:snapshots:9",
                          disks=[DiskProgress(volume="urn:sites:S:volumes:1", state="reading", bytes_read=5)])]
    store.save_job(job)
    snap = store.intend(job_id="j1", vrm=job.vrm, user="bk", what="snapshot", vm_urn=job.vms[0].urn, name="fctui-j1-i-1")
    store.update(snap, snapshot_urn="urn:sites:S:vms:i-1:snapshots:9")
    res = store.intend(job_id="j1", vrm=job.vrm, user="bk", what="resource", vm_urn=job.vms[0].urn,
                       volume_uri="/service/sites/S/volumes/1")
    store.done(res)
    store.mark_chain("urn:sites:S:volumes:1", "job j0 was cancelled")
    store.close()

    again = JobStore(path)  # a new agent after a crash
    interrupted = again.mark_interrupted()
    assert [j.id for j in interrupted] == ["j1"]
    j = again.job("j1")
    assert j is not None and j.state == "interrupted" and j.vms[0].state == "failed"
    assert j.vms[0].disks[0].state == "failed" and j.vms[0].disks[0].bytes_read == 5
    pending = again.pending("https://vrm:7443")
    assert [(p["what"], p["snapshot_urn"]) for p in pending] == [("snapshot", "urn:sites:S:vms:i-1:snapshots:9")]
    assert again.pending("https://other:7443") == []
    assert again.chain_marks() == {"urn:sites:S:volumes:1": "job j0 was cancelled"}
    again.clear_chain(["urn:sites:S:volumes:1"])
    assert again.chain_marks() == {}
    assert again.mark_interrupted() == []  # idempotent
    raw = json.loads(path.read_text())  # plain JSON on disk, written atomically by fctui.store
    assert "jobs" in raw and "intents" in raw
    again.close()


def test_history_is_pruned(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.json")
    for i in range(12):
        store.save_job(JobRecord(id=f"j{i:02d}", state="succeeded", created=float(i)))
    store.save_job(JobRecord(id="live", state="running", created=100.0))
    assert store.prune_history(keep=5) == 7
    ids = [j.id for j in store.all_jobs()]
    assert ids == ["j07", "j08", "j09", "j10", "j11", "live"]
    store.close()
