"""Repository.prune_retention: removes exactly the points the retention does not keep, with prune's
guarantees (a base still read by a running backup keeps its manifest until gc), and a later gc keeps every
chunk a kept point needs: each kept point's disk still restores to the bytes that were backed up."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from fctui.repo import Repository
from fctui.repo.retention import Retention

UTC = timezone.utc
BS = 4096
BLOCKS = 8
VOL = "urn:vol:1"


def ts(day: int, hh: int) -> float:
    return datetime(2026, 1, day, hh, tzinfo=UTC).timestamp()


def content(tag: str) -> bytes:
    """One block of bytes unique to ``tag`` (so its chunk belongs to one point only)."""
    return (hashlib.sha256(tag.encode()).digest() * (BS // 32))[:BS]


def write(repo: Repository, vm: str, created: float, blocks: dict[int, bytes], base: str | None = None) -> str:
    with repo.new_point(vm_urn=vm, vm_name=vm.rsplit(":", 1)[-1], job_id="j", kind="cbt", vm_config={},
                        snapshot_urn="urn:snap", created=created) as pw:
        dw = pw.add_disk(volume_urn=VOL, disk_name="1", sequence_num=None, pci_type="IDE", size_bytes=BLOCKS * BS,
                         block_size=BS, storage_type="LUNPOME", datastore_urn="ds", cbt=None, base_point_id=base)
        for i, b in blocks.items():
            dw.put_block(i, b)
        return pw.commit().id


def image_sha256(blocks: dict[int, bytes]) -> str:
    return hashlib.sha256(b"".join(blocks.get(i, bytes(BS)) for i in range(BLOCKS))).hexdigest()


def restored_sha256(repo: Repository, point_id: str) -> str:
    """Read the disk back block by block, as a restore does (not the cached sha256 of the catalog)."""
    reader = repo.open_disk(point_id, VOL)
    return hashlib.sha256(b"".join(data if data is not None else bytes(BS)
                                   for _, data in reader.iter_blocks())).hexdigest()


def test_prune_retention_removes_the_planned_points_and_gc_keeps_what_kept_points_need(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    # VM a: an incremental chain, two points a day on the 1st..3rd. Each point rewrites block 0 (a chunk of
    # its own) and adds block k; later points inherit the earlier blocks.
    times = [ts(1, 10), ts(1, 20), ts(2, 10), ts(2, 20), ts(3, 10), ts(3, 20)]
    ids: list[str] = []
    images: list[dict[int, bytes]] = []
    image: dict[int, bytes] = {}
    for k, t in enumerate(times):
        new = {0: content(f"a0-{k}"), k + 1: content(f"a{k + 1}")}
        ids.append(write(repo, "urn:vm:a", t, new, base=ids[-1] if ids else None))
        image = {**image, **new}
        images.append(image)
    # VM b: two points on one day; pruning VM a only must not touch them
    b_ids = [write(repo, "urn:vm:b", ts(3, 9), {0: content("b0")}), write(repo, "urn:vm:b", ts(3, 11),
                                                                          {0: content("b1")})]
    # written an hour ago: gc spares chunks as new as its start, and a coarse file clock could make these so
    old = time.time() - 3600
    for chunk in repo.chunks_dir.glob("*/*"):
        os.utime(chunk, (old, old))

    # keep-last 1 keeps 3rd 20:00; keep-daily 2: the 3rd is held by it, so 2nd 20:00 and 1st 20:00 (the newest
    # of their days). Removed: the 10:00 point of each day.
    retention = Retention(keep_last=1, keep_daily=2)
    kept, removed = [ids[1], ids[3], ids[5]], [ids[0], ids[2], ids[4]]

    # keep all removes nothing
    assert repo.prune_retention(Retention(), vm_urn="urn:vm:a", tz=UTC).removed == []
    assert len(repo.points()) == 8

    dry = repo.prune_retention(retention, vm_urn="urn:vm:a", tz=UTC, dry_run=True)
    assert sorted(dry.removed) == sorted(removed) and len(repo.points()) == 8   # a dry run removes nothing

    # A backup in progress builds on the 2nd 10:00 point (to be removed): its manifest must outlive prune.
    with repo.new_point(vm_urn="urn:vm:a", vm_name="a", job_id="j2", kind="cbt", vm_config={},
                        snapshot_urn="urn:snap", created=ts(4, 10)) as running:
        dw = running.add_disk(volume_urn=VOL, disk_name="1", sequence_num=None, pci_type="IDE",
                              size_bytes=BLOCKS * BS, block_size=BS, storage_type="LUNPOME", datastore_urn="ds",
                              cbt=None, base_point_id=ids[2])
        report = repo.prune_retention(retention, vm_urn="urn:vm:a", tz=UTC)
        assert sorted(report.removed) == sorted(removed)
        assert sorted(report.kept) == sorted(kept)
        assert report.why == {ids[5]: "last", ids[3]: "daily 2026-01-02", ids[1]: "daily 2026-01-01"}
        assert sorted(p.id for p in repo.points()) == sorted(kept + b_ids)
        assert not (repo.points_dir / f"{ids[0]}.json").exists()
        assert (repo.points_dir / f"{ids[2]}.json").exists()   # leased base: gc drops it later
        gc = repo.gc()
        assert gc.manifests_removed == 0
        dw.put_block(7, content("running"))
        finished = running.commit()
    # the running backup inherited blocks 0..3 of the removed base
    assert restored_sha256(repo, finished.id) == image_sha256({**images[2], 7: content("running")})

    gc = repo.gc()
    assert gc.manifests_removed == 1 and not (repo.points_dir / f"{ids[2]}.json").exists()
    # block 0 of each removed point was its own chunk: gone; every kept point still restores exactly
    for k in (0, 4):
        assert not repo.chunk_path(hashlib.sha256(content(f"a0-{k}")).hexdigest()).exists()
    assert repo.chunk_path(hashlib.sha256(content("a0-2")).hexdigest()).exists()   # the new point uses it
    for k in (1, 3, 5):
        assert restored_sha256(repo, ids[k]) == image_sha256(images[k])
    assert repo.verify().ok


def test_prune_keep_last_is_the_same_path(tmp_path: Path) -> None:
    # prune(keep_last) keeps its meaning: the newest N per VM, and 0 for one VM removes all of its points.
    repo = Repository.open(tmp_path / "repo")
    a = [write(repo, "urn:vm:a", ts(d, 12), {0: content(f"a{d}")}) for d in (1, 2, 3)]
    b = [write(repo, "urn:vm:b", ts(d, 13), {0: content(f"b{d}")}) for d in (1, 2)]
    report = repo.prune(2)
    assert report.removed == [a[0]] and report.kept == [a[1], a[2], b[0], b[1]]
    assert repo.prune(0, "urn:vm:b").removed == b
    assert [p.id for p in repo.points()] == a[1:]
