"""KvJournal and VmRecordWriter against a real NATS: intents reach the VM record before flush returns,
and a proxy that lost its VM to another cannot overwrite the new one's record."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fctui.cluster.connect import ClusterError
from fctui.cluster.jobs import ClusterJobs, VmRecordWriter, record_of
from fctui.cluster.journal import KvJournal
from fctui.jobs.journal import JournalLike
from fctui.jobs.model import JobRecord, VmProgress

VM = "urn:sites:1:vms:web-01"


async def a_job_with_a_vm(jobs: ClusterJobs) -> VmProgress:
    await jobs.create_job(JobRecord(id="J1", targets=["web-01"]))
    vm = VmProgress(urn=VM, name="web-01", host="urn:sites:1:hosts:1")
    await jobs.add_vms("J1", [vm])
    return vm


def intend_snapshot(journal: JournalLike) -> int:
    return journal.intend(job_id="J1", vrm="https://vrm:7443", user="backup", what="snapshot", vm_urn=VM,
                          snapshot_name="fctui-J1-web-01")


async def test_an_intent_is_in_the_record_when_flush_returns(connect: Any) -> None:
    jobs, reader = ClusterJobs(await connect()), ClusterJobs(await connect())
    vm = await a_job_with_a_vm(jobs)
    writer = await VmRecordWriter.open(jobs, "J1", VM, agent="agent-a", attempt=1)
    journal = KvJournal(jobs, "J1", VM, writer=writer)
    key = intend_snapshot(journal)
    await journal.flush()
    stored = await reader.vm_record("J1", VM)
    assert stored is not None and stored["agent"] == "agent-a" and stored["attempt"] == 1
    assert stored["intents"] == {str(key): {**journal.intents[str(key)]}}
    assert stored["intents"][str(key)]["what"] == "snapshot" and stored["name"] == "web-01"
    journal.update(key, snapshot_urn="urn:sites:1:vms:web-01:snapshots:5")
    vm.state = "snapshot"
    writer.set_progress(vm)        # the runner's progress and the journal share the record
    writer.log("web-01: snapshot taken")
    await journal.flush()
    stored = await reader.vm_record("J1", VM)
    assert stored["state"] == "snapshot" and stored["log"][-1]["message"] == "web-01: snapshot taken"  # type: ignore[index]
    assert stored["intents"][str(key)]["snapshot_urn"].endswith(":snapshots:5")  # type: ignore[index]
    assert [i["key"] for i in journal.pending()] == [key]
    journal.done(key)
    await journal.flush()
    assert (await reader.vm_record("J1", VM))["intents"] == {}  # type: ignore[index]
    assert journal.pending() == []
    job = await reader.job("J1")
    assert job is not None and job.vms[0].state == "snapshot"
    assert [e["message"] for e in job.log] == ["web-01: snapshot taken"]


async def test_a_proxy_that_lost_its_vm_cannot_overwrite_the_new_ones_record(connect: Any) -> None:
    jobs_a, jobs_b = ClusterJobs(await connect()), ClusterJobs(await connect())
    await a_job_with_a_vm(jobs_a)
    old = await VmRecordWriter.open(jobs_a, "J1", VM, agent="agent-a", attempt=1)
    old_journal = KvJournal(jobs_a, "J1", VM, writer=old)
    left = intend_snapshot(old_journal)
    await old_journal.flush()
    # agent-a stalls; its VM item goes to agent-b, which takes the record over
    new = await VmRecordWriter.open(jobs_b, "J1", VM, agent="agent-b", attempt=2)
    await new.flush()
    new_journal = KvJournal(jobs_b, "J1", VM, writer=new)
    assert [i["key"] for i in new_journal.pending()] == [left]   # the leftover to clean up
    later = intend_snapshot(new_journal)
    assert later != left
    await new_journal.flush()
    old_journal.done(left)   # agent-a wakes up
    with pytest.raises(ClusterError, match="taken over by another proxy"):
        await old_journal.flush()
    stored = await jobs_b.vm_record("J1", VM)
    assert stored["agent"] == "agent-b" and set(stored["intents"]) == {str(left), str(later)}  # type: ignore[index]


async def test_without_a_writer_the_intents_merge_into_the_stored_record(connect: Any) -> None:
    jobs = ClusterJobs(await connect())
    vm = await a_job_with_a_vm(jobs)
    vm.state = "reading"
    await jobs.put_vm("J1", record_of(vm, agent="agent-a", intents={"7": {"what": "resource", "vm": VM}}))
    journal = KvJournal(jobs, "J1", VM)
    key = intend_snapshot(journal)
    journal.done(7)   # the stored leftover, cleaned up
    await journal.flush()
    stored = await jobs.vm_record("J1", VM)
    assert stored["state"] == "reading" and stored["agent"] == "agent-a"  # type: ignore[index]
    assert list(stored["intents"]) == [str(key)]  # type: ignore[index]
    # someone else writes the record meanwhile (the proxy's progress writer): both changes stay
    other = ClusterJobs(await connect())
    stored["state"] = "cleanup"  # type: ignore[index]
    await other.put_vm("J1", stored)  # type: ignore[arg-type]
    journal.done(key)
    later = intend_snapshot(journal)
    await journal.flush()
    stored = await other.vm_record("J1", VM)
    assert stored["state"] == "cleanup" and list(stored["intents"]) == [str(later)]  # type: ignore[index]


async def test_chain_marks_through_the_journal(connect: Any) -> None:
    jobs, reader = ClusterJobs(await connect()), ClusterJobs(await connect())
    await a_job_with_a_vm(jobs)
    journal = KvJournal(jobs, "J1", VM, writer=await VmRecordWriter.open(jobs, "J1", VM))
    journal.mark_chain("urn:sites:1:volumes:1", "the proxy died with a CBT snapshot")
    journal.mark_chain("urn:sites:1:volumes:2", "the proxy died with a CBT snapshot")
    await journal.flush()
    assert set(await reader.chain_marks()) == {"urn:sites:1:volumes:1", "urn:sites:1:volumes:2"}
    journal.clear_chain(["urn:sites:1:volumes:1"])
    await journal.flush()
    assert set(await reader.chain_marks()) == {"urn:sites:1:volumes:2"}


async def test_many_changes_are_coalesced_and_none_is_lost(connect: Any) -> None:
    jobs = ClusterJobs(await connect())
    await a_job_with_a_vm(jobs)
    writer = await VmRecordWriter.open(jobs, "J1", VM)
    journal = KvJournal(jobs, "J1", VM, writer=writer)
    first_revision = writer.revision
    keys = [intend_snapshot(journal) for _ in range(200)]
    for k in keys[::2]:
        journal.done(k)
    await asyncio.gather(journal.flush(), journal.flush())
    stored = await jobs.vm_record("J1", VM)
    assert sorted(int(k) for k in stored["intents"]) == keys[1::2]  # type: ignore[index]
    assert writer.revision is not None and first_revision is not None
    assert writer.revision - first_revision < 20   # coalesced: not one write per change


async def test_leftovers_are_the_intents_of_final_vms(connect: Any) -> None:
    jobs = ClusterJobs(await connect())
    vm = await a_job_with_a_vm(jobs)
    journal = KvJournal(jobs, "J1", VM, writer=await VmRecordWriter.open(jobs, "J1", VM))
    key = intend_snapshot(journal)
    await journal.flush()
    assert await jobs.leftovers() == []            # a running VM's intents are its own business
    vm.state, vm.reason = "failed", "the VRM went away"
    journal.writer.set_progress(vm)
    await journal.flush()
    [left] = await jobs.leftovers()
    assert left["key"] == key and left["job"] == "J1" and left["vm"] == VM and left["what"] == "snapshot"
