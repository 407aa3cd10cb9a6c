"""The console pointed at a cluster (config ``cluster``, as ``--cluster``/``$FCTUI_CLUSTER`` set it): its
jobs screen shows the jobs the cluster's proxies run -- their VMs, progress and log lines -- live, with
no job agent on this machine. A real NATS (fixture ``nats_server``); the proxy's side is played through
ClusterJobs on its own connection."""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from fctui.cluster.connect import Cluster
from fctui.cluster.jobs import ClusterJobs, record_of
from fctui.config import Config
from fctui.jobs.model import DiskProgress, JobRecord, VmProgress
from fctui.tui.jobs_screen import JobsScreen, jobs_service
from fctui.tui.testing import make_app, screen_text, wait_loaded, wait_until

MIB = 1 << 20
WEB = "urn:sites:1:vms:i-00000001"
DB = "urn:sites:1:vms:i-00000002"


@pytest.fixture
async def proxy(nats_server: Any) -> AsyncIterator[ClusterJobs]:
    cluster = await Cluster.connect(nats_server.url)
    yield ClusterJobs(cluster)
    await cluster.close()


def vm(urn: str, name: str, state: str, read: int = 0, **kw: Any) -> VmProgress:
    return VmProgress(urn=urn, name=name, host="cna-01", kind="cbt", state=state,
                      disks=[DiskProgress(volume=f"{urn}:vol", name=f"{name}-disk1", mode="full", state=state,
                                          bytes_planned=64 * MIB, bytes_read=read)], **kw)


async def test_the_jobs_screen_shows_a_cluster_jobs_vms_and_progress_live(nats_server: Any, proxy: ClusterJobs,
                                                                          dirs: dict[str, str]) -> None:
    job = JobRecord(id="20261203-120000-aa0001", targets=["web01", "db01"])
    job.add_log("backup submitted: web01, db01")
    await proxy.create_job(job)
    await proxy.add_vms(job.id, [vm(WEB, "web01", "reading", read=16 * MIB), vm(DB, "db01", "queued")],
                        agent="proxy-1")
    await proxy.update_header(job.id, lambda h: h.update(state="running", started=h["created"]))

    app = make_app(config=Config(cluster=nats_server.url))
    async with app.run_test(size=(120, 45)) as pilot:
        await wait_loaded(pilot, app)
        await pilot.press("J")
        await wait_until(pilot, lambda: isinstance(app.screen, JobsScreen))
        await wait_until(pilot, lambda: f"cluster {nats_server.url} connected" in screen_text(app)
                         and "16.0MiB/64.0MiB" in screen_text(app), timeout=15)
        text = screen_text(app)
        assert "web01" in text and "db01" in text and "running" in text

        # the proxy reads on: the screen follows, with the line it logged
        await proxy.put_vm(job.id, record_of(vm(WEB, "web01", "reading", read=48 * MIB), agent="proxy-1",
                                             log=[{"time": job.created + 1, "level": "info",
                                                   "message": "web01: snapshot taken in 1.2 s"}]))
        await wait_until(pilot, lambda: "48.0MiB/64.0MiB" in screen_text(app)
                         and "web01: snapshot taken in 1.2 s" in screen_text(app), timeout=15)

        await proxy.put_vm(job.id, record_of(vm(WEB, "web01", "done", read=64 * MIB, point_id="P1"), agent="proxy-1"))
        await proxy.put_vm(job.id, record_of(vm(DB, "db01", "done", point_id="P2"), agent="proxy-2"))
        await proxy.finish_if_done(job.id)
        await wait_until(pilot, lambda: (j := jobs_service(app).board.get(job.id)) is not None and j.is_final,
                         timeout=15)
        assert jobs_service(app).board.get(job.id).state == "succeeded"
        await wait_until(pilot, lambda: "succeeded" in screen_text(app), timeout=5)

        # closing the console while a proxy runs a job: it goes on in the cluster, and the line says so
        later = JobRecord(id="20261203-130000-bb0002", targets=["db01"])
        await proxy.create_job(later)
        await wait_until(pilot, lambda: app.running_jobs() == 1, timeout=15)
        said: list[Any] = []
        exit_ = app.exit
        app.exit = lambda *a, **kw: (said.append(kw.get("message")), exit_(*a, **kw))[1]  # type: ignore
        await pilot.press("escape", "q")
        await pilot.pause()
    assert said and f"1 job is still running in the cluster at {nats_server.url}" in str(said[0])


async def test_a_backup_launched_from_the_console_goes_to_the_cluster_without_the_password(
        nats_server: Any, proxy: ClusterJobs, dirs: dict[str, str]) -> None:
    from fctui.cluster.connect import entries
    from fctui.tui.review_screen import ReviewScreen
    app = make_app(config=Config(cluster=nats_server.url))
    async with app.run_test(size=(120, 45)) as pilot:
        await wait_loaded(pilot, app)
        vm_urn = next(iter(app.sim.edge_cases["ready"]))
        app.store.marks.clear()
        app.store.marks.add(vm_urn)
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, ReviewScreen), timeout=15)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, JobsScreen) and app.screen.selected() is not None,
                         timeout=15)
        job_id = app.screen.selected().id
        await wait_until(pilot, lambda: "queued" in screen_text(app), timeout=5)   # no proxy runs it here
    header, _ = await proxy.header(job_id)
    assert header["targets"] == [vm_urn] and header["vrm"] == app.spec.url and header["user"] == app.spec.user
    stored = [e.value for e in (await entries(proxy.cluster.jobs_kv)).values()]
    assert not any(app.spec.password.encode() in v for v in stored)
