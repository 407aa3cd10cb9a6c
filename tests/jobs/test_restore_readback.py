"""The restore's read-back comparison, on its own: the volume is changed on the VRM after the engine wrote
it and before it reads it back (the moment its log says "wrote ..."), and the restore must fail naming the
disk and the first differing block — whatever the damage and wherever it is.

Each case damages something else: a byte of a written block of the second disk (not the first one), the
last byte of the volume (a block the point holds as zeros, compared byte for byte), half a block lost (a
short write: the second half of a written block back to zeros). The expectations are computed here from
the restore point's own block map (the repository), not from the engine.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import httpx
import pytest
from tests.conftest import small_disks

from fctui.jobs.restore import RestoreRequest, plan_restore, run_restore
from fctui.jobs.runner import Reporter
from fctui.jobs.model import JobRecord
from fctui.repo import Repository
from fctui.sim import Simulator
from fctui.vrm import VrmClient
from fctui.vrm.urn import site_uri
from tests.jobs.test_restore_engine import backup, fast, multi_disk_vm, world


@pytest.fixture
def sim_config() -> Any:
    return small_disks(0.005)  # 1 GB disks, 0.5 % written: the read-back of a disk stays quick


def flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x40
    return bytes(out)


# name -> (which disk of the VM (index), where: "written" | "last", damage(block bytes, block size) -> bytes)
CASES: dict[str, tuple[int, str, Callable[[bytes, int], bytes]]] = {
    "byte-in-another-disk": (1, "written", lambda b, bs: flip(b, bs // 2 + 7)),
    "last-byte-of-the-volume": (0, "last", lambda b, bs: flip(b, len(b) - 1)),
    "short-write": (0, "written", lambda b, bs: b[: bs // 2] + bytes(len(b) - bs // 2)),
}


async def test_damage_after_the_write_fails_the_restore(sim: Simulator, client: VrmClient,
                                                        control: httpx.AsyncClient, repo: Repository) -> None:
    """One restore point, one failing restore per case (each case alone would fail if the comparison went)."""
    vm = await multi_disk_vm(client, control)
    point_id = await backup(client, repo, vm.name, "b1")
    site = site_uri(vm.urn)
    before = await world(client, site)
    for case, (disk_index, where, damage) in CASES.items():
        source = vm.disks[disk_index].volume_urn
        reader = repo.open_disk(point_id, source)
        bs = reader.block_size
        written = sorted(reader.block_digests())  # the point's non-zero blocks
        size = reader.disk.size_bytes
        if where == "written":
            block = written[len(written) // 2]
        else:
            block = (size - 1) // bs
            assert block not in written, case  # the end of a thin disk: zeros in the point
        start, end = block * bs, min(size, (block + 1) * bs)

        plan = await plan_restore(client, repo, RestoreRequest(point_id, "new", name=f"rb-{case}"))
        assert not plan.blocked, plan.findings
        target_disk = plan.disks[disk_index].disk_name
        damaged: list[str] = []

        def sink(ev: dict[str, Any], target_disk: str = target_disk, start: int = start, end: int = end,
                 damage: Callable[[bytes, int], bytes] = damage, bs: int = bs, damaged: list[str] = damaged) -> None:
            # Right after the engine wrote this disk (its resource still open for the read-back): damage
            # the bytes on the VRM side, as a bad write path or a storage fault would.
            if damaged or ev.get("event") != "log" or \
                    not str(ev.get("message", "")).startswith(f"{target_disk}: wrote "):
                return
            vols = [r.volume for r in sim.resources.values() if r.is_restore and r.live]
            assert len(vols) == 1, vols
            c = vols[0].content
            have = b"".join(c.read(c.live, start, end))
            assert len(have) == end - start
            c.write_bytes(start, damage(have, bs), vols[0].epoch())
            damaged.append(sim.urn("volumes", vols[0].id))

        job = JobRecord(id=f"r-{case}")
        job = await run_restore(client, repo, plan, settings=fast(), job=job, reporter=Reporter(job, sink))
        assert damaged, f"{case}: the disk was never written"
        assert job.state == "failed", case
        assert job.error.endswith(f"verification failed: {target_disk} on {damaged[0]} does not match the "
                                  "restore point after writing"), (case, job.error)
        logs = [e["message"] for e in job.log]
        assert f"{target_disk}: 1 block(s) differ from the restore point after writing (first: block {block})" \
            in logs, (case, logs)
        assert not any(re.match(rf"{re.escape(target_disk)}: read back and compared .*: equal$", m) for m in logs)
        assert await world(client, site) == before, case  # nothing of the failed restore is left
