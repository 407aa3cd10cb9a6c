"""verify finds damage down to the block; prune keeps the newest N per VM; gc keeps what is referenced."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from fctui.repo import ChunkError, RepoDamagedError, RepoError, Repository
from tests.repo.gcclock import GcClock

BS = 4096


def write_point(repo: Repository, vm: str, blocks: dict[int, bytes], *, size: int = 32 * BS,
                vols: tuple[str, ...] = ("urn:vol:1",), base: str | None = None):
    with repo.new_point(vm_urn=vm, vm_name=vm.rsplit(":", 1)[-1], job_id="j", kind="cbt", vm_config={},
                        snapshot_urn="urn:snap", created=time.time()) as pw:
        for vol in vols:
            dw = pw.add_disk(volume_urn=vol, disk_name=vol[-1], sequence_num=None, pci_type="IDE",
                             size_bytes=size, block_size=BS, storage_type="LUNPOME", datastore_urn="ds",
                             cbt=None, base_point_id=base)
            for i, b in blocks.items():
                dw.put_block(i, b)
        return pw.commit()


def flip_byte(path: Path, offset: int = -5) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))



def test_verify_finds_a_flipped_byte_and_names_point_disk_block(repo: Repository) -> None:
    rng = random.Random(1)
    shared = rng.randbytes(BS)
    p1 = write_point(repo, "urn:vm:a", {0: rng.randbytes(BS), 4: shared}, vols=("urn:vol:1", "urn:vol:2"))
    p2 = write_point(repo, "urn:vm:b", {9: shared, 1: rng.randbytes(BS)})
    clean = repo.verify()
    assert clean.ok and clean.chunks_checked == clean.chunks_total == 3  # both disks share content
    assert repo.point(p1.id).verified_at is not None

    flip_byte(repo.chunk_path(repo.open_disk(p1.id, "urn:vol:1").block_digests()[4]))
    report = repo.verify()
    assert not report.ok
    assert report.damaged_points == sorted([p1.id, p2.id])  # the chunk is shared by both points
    where = sorted((d.point_id, d.volume_urn, d.block) for d in report.damaged)
    assert where == sorted([(p1.id, "urn:vol:1", 4), (p1.id, "urn:vol:2", 4), (p2.id, "urn:vol:1", 9)])
    assert {d.problem for d in report.damaged} == {"corrupt"}
    with pytest.raises(ChunkError) as info:
        repo.open_disk(p2.id, "urn:vol:1").read_block(9)
    assert info.value.problem == "missing"  # quarantined as .bad so no new point reuses it

    # The next backup that sees this content stores it again, which heals the older points.
    p3 = write_point(repo, "urn:vm:b", {9: shared})
    assert repo.open_disk(p3.id, "urn:vol:1").read_block(9) == shared
    assert repo.verify().ok
    assert repo.open_disk(p1.id, "urn:vol:2").read_block(4) == shared


def test_flipped_byte_found_by_read_and_by_point_verify(repo: Repository) -> None:
    rng = random.Random(2)
    blocks = {i: rng.randbytes(BS) for i in range(8)}
    p = write_point(repo, "urn:vm:a", blocks)
    digest = repo.open_disk(p.id, "urn:vol:1").block_digests()[3]
    flip_byte(repo.chunk_path(digest), offset=len(repo.chunk_path(digest).read_bytes()) // 2)
    with pytest.raises(ChunkError) as info:
        repo.open_disk(p.id, "urn:vol:1").read_block(3)
    assert info.value.problem == "corrupt" and info.value.digest == digest
    report = repo.verify(point_ids=[p.id], quarantine=False)
    assert [(d.block, d.digest) for d in report.damaged] == [(3, digest)]
    assert repo.chunk_path(digest).exists()


def test_sampled_verify_checks_a_share_of_chunks(repo: Repository) -> None:
    rng = random.Random(3)
    write_point(repo, "urn:vm:a", {i: rng.randbytes(BS) for i in range(20)})
    report = repo.verify(sample_pct=25, seed=1)
    assert report.chunks_total == 20 and report.chunks_checked == 5 and report.ok
    assert repo.points()[0].verified_at is None  # a sample does not certify a point
    with pytest.raises(RepoError):
        repo.verify(sample_pct=0)
    with pytest.raises(RepoError):
        repo.verify(sample_pct=101)


def test_missing_manifest_is_reported(repo: Repository) -> None:
    p = write_point(repo, "urn:vm:a", {0: b"\1" * BS})
    repo._manifests.clear()
    (repo.points_dir / f"{p.id}.json").unlink()
    report = repo.verify()
    assert [d.problem for d in report.damaged] == ["manifest-missing"]
    with pytest.raises(RepoDamagedError, match=p.id):  # gc refuses rather than sweep its chunks
        repo.gc()


def test_prune_keep_last_per_vm_then_gc_keeps_referenced_chunks(tmp_path: Path) -> None:
    gc_clock = GcClock(tmp_path / "gc-clock.probe")
    repo = Repository.open(tmp_path / "repo", clock=gc_clock)
    rng = random.Random(4)
    shared = rng.randbytes(BS)
    a = [write_point(repo, "urn:vm:a", {0: shared, 1: rng.randbytes(BS)}) for _ in range(3)]
    b = [write_point(repo, "urn:vm:b", {0: rng.randbytes(BS)}) for _ in range(2)]
    expected = {p.id: repo.open_disk(p.id, "urn:vol:1").read_block(1) for p in a}
    report = repo.prune(1)
    assert sorted(report.removed) == sorted([a[0].id, a[1].id, b[0].id])
    assert sorted(report.kept) == sorted([a[2].id, b[1].id])
    assert [p.id for p in repo.points()] == [a[2].id, b[1].id]
    assert sorted(p.name for p in repo.points_dir.iterdir()) == sorted(f"{p.id}.json" for p in (a[2], b[1]))
    gc_clock.advance()  # the pruned points' chunks are older than gc's start
    gc = repo.gc()
    assert gc.chunks_removed == 3 and gc.chunks_referenced == 3  # shared + a[2]'s + b[1]'s
    assert repo.verify().ok
    assert repo.open_disk(a[2].id, "urn:vol:1").read_block(0) == shared
    assert repo.open_disk(a[2].id, "urn:vol:1").read_block(1) == expected[a[2].id]
    assert repo.gc().chunks_removed == 0


def test_prune_arguments(repo: Repository) -> None:
    with pytest.raises(RepoError):
        repo.prune(-1)
    with pytest.raises(RepoError, match="every restore point"):
        repo.prune(0)
    p = write_point(repo, "urn:vm:a", {0: b"\1" * BS})
    assert repo.prune(5).removed == [] and repo.points()[0].id == p.id
    assert repo.prune(0, "urn:vm:a").removed == [p.id]


def test_two_handles_see_each_others_changes(tmp_path: Path) -> None:
    # Two Repository objects on one directory behave like two processes (agent and CLI).
    agent = Repository.open(tmp_path / "repo")
    cli = Repository.open(tmp_path / "repo", create=False)
    p = write_point(agent, "urn:vm:a", {0: b"\1" * BS})
    q = write_point(agent, "urn:vm:a", {0: b"\2" * BS})
    assert agent.point(p.id).id == p.id  # a lookup the agent makes first ...
    assert cli.prune(1).removed == [p.id]
    with pytest.raises(RepoError):  # ... must not be answered from a stale cache afterwards
        agent.point(p.id)
    assert [x.id for x in agent.points()] == [q.id]
    assert cli.verify().ok and agent.point(q.id).verified_at is not None


def test_corrupt_catalog_is_a_typed_error(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    write_point(repo, "urn:vm:a", {0: b"\1" * BS})
    (tmp_path / "repo" / "catalog.json").write_text('{"points": {"1": ')
    with pytest.raises(RepoError, match="not valid JSON"):
        repo.points()
    with pytest.raises(RepoError, match="not valid JSON"):
        Repository.open(tmp_path / "repo")
