"""Corruption of every repository file kind, through every command that reads it.

Kinds: chunk (flipped byte, truncated, missing, quarantined ``.bad``), manifest (missing, truncated,
not JSON, valid JSON of the wrong shape, a disk's map absent, a digest that is not a SHA-256),
catalog.json (not JSON, an entry that is not an object, entries that are not points), lease
(``pending/<id>.json`` garbage). Operations: ``repo verify``, ``repo gc``, ``repo prune``, ``points``
(the CLI functions, as a user runs them), an incremental backup on the damaged point and a restore read
(the repository API the runner and the restore engine use).

Every cell asserts: no exception escapes (so no traceback reaches a user), the exit code / typed error
expected, a message naming the damage, and that no chunk or manifest a listed point needs is deleted.
Each cell is recorded in TABLE; the module prints it at the end (``pytest -s`` or the terminal summary)
with the count of corruptions tried and detected.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from tests.cli.test_repo_cli import parser, run
from tests.repo.gcclock import age_chunks

from fctui.repo import ChunkError, ManifestError, RepoDamagedError, RepoError, Repository

BS = 4096
VOL = "urn:vol:1"

# (kind, corruption, operation, outcome) for every cell tried; outcome: 'detected' (the operation
# named the damage: non-zero exit or typed error), 'unaffected' (nothing there for it to see, and it
# kept everything), 'not detected' (it ran on over the damage without saying so).
TABLE: list[tuple[str, str, str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def print_table(request: pytest.FixtureRequest) -> Any:
    yield
    if not TABLE:
        return
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        _print_table()


def _print_table() -> None:
    write = print
    write("")
    write(f"{'KIND':<9} {'CORRUPTION':<26} {'OPERATION':<9} OUTCOME")
    for row in TABLE:
        write(f"{row[0]:<9} {row[1]:<26} {row[2]:<9} {row[3]}")
    tried = sorted({(k, c) for k, c, _, _ in TABLE})
    detected = sorted({(k, c) for k, c, _, o in TABLE if o == "detected"})
    write(f"corruptions tried: {len(tried)}, detected: {len(detected)}; "
          f"cells (corruption x operation): {len(TABLE)}, detected in {sum(o == 'detected' for *_, o in TABLE)}, "
          f"not detected in {sum(o == 'not detected' for *_, o in TABLE)}")


# --- the repository every cell starts from -------------------------------------------------------
def _write(repo: Repository, vm: str, blocks: dict[int, bytes], base: str | None = None) -> str:
    with repo.new_point(vm_urn=vm, vm_name=vm.rsplit(":", 1)[-1], job_id="j", kind="cbt", vm_config={},
                        snapshot_urn="s", created=time.time()) as pw:
        dw = pw.add_disk(volume_urn=VOL, disk_name="sda", sequence_num=1, pci_type="VIRTIO",
                         size_bytes=16 * BS, block_size=BS, storage_type="LOCAL", datastore_urn="ds",
                         cbt=None, base_point_id=base)
        for i, b in blocks.items():
            dw.put_block(i, b)
        return pw.commit().id


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """VM a: a full point p0 and an incremental p1 on it (p1 has chunks of its own); VM b: p2."""
    path = tmp_path_factory.mktemp("damage") / "repo"
    repo = Repository.open(path)
    rng = random.Random(12)
    shared = rng.randbytes(BS)
    p0 = _write(repo, "urn:vm:a", {0: shared, 1: rng.randbytes(BS), 2: rng.randbytes(BS)})
    p1 = _write(repo, "urn:vm:a", {2: rng.randbytes(BS), 5: rng.randbytes(BS), 6: rng.randbytes(BS)}, base=p0)
    p2 = _write(repo, "urn:vm:b", {0: shared, 3: rng.randbytes(BS)})
    maps = {p: repo.open_disk(p, VOL).block_digests() for p in (p0, p1, p2)}
    others = set(maps[p0].values()) | set(maps[p2].values())
    own = sorted(set(maps[p1].values()) - others)  # p1's alone: what a blind gc would delete
    assert len(own) == 3
    age_chunks(path / "chunks")  # every chunk older than the gc cutoff of any cell (copytree keeps mtimes)
    repo.close()
    return path, {"p0": p0, "p1": p1, "p2": p2, "maps": maps, "own": own}


# --- corruptions: each damages a copy of the template and says which point it hurts ----------------
def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _chunk(root: Path, digest: str) -> Path:
    return root / "chunks" / digest[:2] / digest


def _manifest(root: Path, pid: str) -> Path:
    return root / "points" / f"{pid}.json"


def _catalog_edit(root: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = root / "catalog.json"
    doc = json.loads(path.read_text())
    edit(doc["points"])
    path.write_text(json.dumps(doc))


def _entry_of(points: dict[str, Any], pid: str) -> dict[str, Any]:
    return next(v for v in points.values() if v["id"] == pid)


def _manifest_edit(root: Path, pid: str, edit: Callable[[dict[str, Any]], Any]) -> None:
    path = _manifest(root, pid)
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(edit(doc)))


def _set(d: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    d[key] = value
    return d


CORRUPTIONS: dict[tuple[str, str], Callable[[Path, dict[str, Any]], None]] = {
    ("chunk", "flipped byte"): lambda r, t: _flip(_chunk(r, t["own"][0])),
    ("chunk", "truncated"): lambda r, t: _truncate(_chunk(r, t["own"][0])),
    ("chunk", "missing"): lambda r, t: _chunk(r, t["own"][0]).unlink(),
    ("chunk", "quarantined .bad"): lambda r, t: _chunk(r, t["own"][0]).rename(
        _chunk(r, t["own"][0]).with_name(t["own"][0] + ".bad")),
    ("manifest", "missing"): lambda r, t: _manifest(r, t["p1"]).unlink(),
    ("manifest", "truncated"): lambda r, t: _truncate(_manifest(r, t["p1"])),
    ("manifest", "not JSON"): lambda r, t: _manifest(r, t["p1"]).write_text("not json at all\n"),
    ("manifest", "JSON, wrong shape"): lambda r, t: _manifest_edit(r, t["p1"], lambda d: _set(d, "disks", "x")),
    ("manifest", "JSON list, not object"): lambda r, t: _manifest(r, t["p1"]).write_text("[1, 2, 3]"),
    ("manifest", "disk map absent"): lambda r, t: _manifest_edit(r, t["p1"], lambda d: _set(d, "disks", [])),
    ("manifest", "digest not SHA-256"): lambda r, t: _manifest_edit(
        r, t["p1"], lambda d: (d["disks"][0]["blocks"][0].__setitem__(1, "../../catalog"), d)[1]),
    ("manifest", "digest with a line break"): lambda r, t: _manifest_edit(    # `$` would let it pass
        r, t["p1"], lambda d: (d["disks"][0]["blocks"][0].__setitem__(1, d["disks"][0]["blocks"][0][1] + "\n"), d)[1]),
    ("manifest", "block listed twice"): lambda r, t: _manifest_edit(
        r, t["p1"], lambda d: (d["disks"][0]["blocks"].append(d["disks"][0]["blocks"][0]), d)[1]),
    ("catalog", "not JSON"): lambda r, t: (r / "catalog.json").write_text('{"points": {"1": '),
    ("catalog", "entry not an object"): lambda r, t: _catalog_edit(r, lambda p: p.__setitem__("9", [1, 2])),
    ("catalog", "entry missing fields"): lambda r, t: _catalog_edit(
        r, lambda p: p.__setitem__("9", {"id": "junk1", "vm_urn": "urn:vm:a"})),
    ("catalog", "entry without id"): lambda r, t: _catalog_edit(
        r, lambda p: p.__setitem__("9", {"vm_urn": "urn:vm:a", "disks": []})),
    ("catalog", "id with a line break"): lambda r, t: _catalog_edit(       # `$` would let "…\n" pass
        r, lambda p: p.__setitem__("9", {**_entry_of(p, t["p1"]), "id": "junk2\n"})),
    ("catalog", "point, wrong types"): lambda r, t: _catalog_edit(
        r, lambda p: _set(_entry_of(p, t["p1"]), "disks", "sda")),
    ("catalog", "point, bad disk"): lambda r, t: _catalog_edit(
        r, lambda p: _entry_of(p, t["p1"])["disks"][0].__setitem__("block_size", "4k")),
    ("lease", "not JSON"): lambda r, t: (r / "pending" / "x1.json").write_text("\x00garbage"),
    ("lease", "JSON, wrong types"): lambda r, t: (r / "pending" / "x2.json").write_text(
        json.dumps({"pid": "me", "base_point_ids": "p0", "started_ns": []})),
}

# Which point a corruption hurts, and the words a detecting message must contain.
HURT = {"chunk": "p1", "manifest": "p1"}


def _victim(kind: str, name: str) -> str | None:
    if kind in HURT:
        return HURT[kind]
    if name in ("point, wrong types", "point, bad disk"):
        return "p1"
    if name == "entry missing fields":
        return "junk1"
    if name in ("entry without id", "id with a line break"):
        return "#9"
    return None


# --- what must survive every operation ------------------------------------------------------------
def _chunk_forms(root: Path, digest: str) -> bool:
    p = _chunk(root, digest)
    return p.exists() or p.with_name(digest + ".bad").exists()


def _assert_nothing_needed_deleted(root: Path, t: dict[str, Any], before: set[str]) -> None:
    """Every chunk of every point that existed (as itself or quarantined) still does; manifests too."""
    for pid in ("p0", "p1", "p2"):
        for digest in t["maps"][t[pid]].values():
            if digest in before:
                assert _chunk_forms(root, digest), f"chunk {digest[:12]} of {pid} was deleted"
    for pid in ("p0", "p2"):
        assert _manifest(root, t[pid]).exists()


def _present(root: Path, t: dict[str, Any]) -> set[str]:
    return {d for m in t["maps"].values() for d in m.values() if _chunk_forms(root, d)}


# --- operations ---------------------------------------------------------------------------------
OPS = ("verify", "gc", "prune", "points", "backup", "restore")


def _cli(op: str, root: Path) -> tuple[int, str]:
    argv = {"verify": ("repo", "verify"), "gc": ("repo", "gc"), "prune": ("repo", "prune", "--keep-last", "5"),
            "points": ("points",)}[op]
    code, out, err = run(*argv, "--repo", str(root))
    assert "Traceback" not in out + err
    return code, out + err


def _api(op: str, root: Path, t: dict[str, Any]) -> tuple[str, str]:
    """('ok' | error class name, message) of an incremental on p1 / a full read of p1."""
    try:
        repo = Repository.open(root, create=False)
        if op == "backup":
            with repo.new_point(vm_urn="urn:vm:a", vm_name="a", job_id="j2", kind="cbt", vm_config={},
                                snapshot_urn="s", created=time.time()) as pw:
                dw = pw.add_disk(volume_urn=VOL, disk_name="sda", sequence_num=1, pci_type="VIRTIO",
                                 size_bytes=16 * BS, block_size=BS, storage_type="LOCAL", datastore_urn="ds",
                                 cbt=None, base_point_id=t["p1"])
                if dw.heal_blocks:  # what the runner does: read those blocks again from the VM
                    original = Repository.open(t["template"], create=False)
                    reader = original.open_disk(t["p1"], VOL)
                    for i in dw.heal_blocks:
                        dw.put_block(i, reader.read_block(i))
                    original.close()
                new = pw.commit()
            damaged = not repo.verify(point_ids=[new.id], quarantine=False).ok
            return ("healed" if dw.heal_blocks else "inherited-damage" if damaged else "ok"), ""
        reader = repo.open_disk(t["p1"], VOL)
        for _ in reader.iter_blocks():
            pass
        return "ok", ""
    except RepoError as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("kind,name", list(CORRUPTIONS), ids=[f"{k}-{n}".replace(" ", "_") for k, n in CORRUPTIONS])
def test_corruption_through_every_operation(template: tuple[Path, dict[str, Any]], tmp_path: Path,
                                            kind: str, name: str) -> None:
    src, t = template
    t = {**t, "template": src}
    victim_key = _victim(kind, name)
    victim = t.get(victim_key, victim_key) if victim_key else None
    for op in OPS:
        root = tmp_path / op / "repo"
        shutil.copytree(src, root)
        CORRUPTIONS[(kind, name)](root, t)
        before = _present(root, t)
        if op in ("backup", "restore"):
            outcome, message = _api(op, root, t)
            detected = outcome not in ("ok", "inherited-damage")
            code = None
        else:
            code, message = _cli(op, root)
            detected = code != 0
            outcome = str(code)
        if detected and victim is not None and outcome not in ("healed", "ChunkError"):
            assert victim in message, (op, message)
        _assert_nothing_needed_deleted(root, t, before)
        # What each operation must do with each kind of damage:
        if name == "not JSON" and kind == "catalog" or name == "entry not an object":
            assert detected and "catalog unreadable" in message, (op, message)
            assert code in (None, 2)
        elif kind == "lease":
            assert not detected, (op, message)  # a foreign file in pending/ blocks nothing ...
            if op == "gc":
                assert "is not a lease" in message  # ... and gc names it
                detected = True
        elif kind == "catalog":  # entries that are not points
            if op in ("verify", "gc", "prune", "points"):
                assert code == 1 and "catalog entry" in message, (op, message)
                assert f"forget {victim}" in message or "forget POINT" in message, (op, message)
            elif op == "restore":
                assert (outcome == "RepoDamagedError") == (victim == t["p1"]), (op, outcome)
                detected = outcome != "ok"
        elif kind == "manifest":
            if op == "verify":
                assert code == 1 and f"DAMAGED {victim}" in message and "manifest" in message
            elif op in ("gc", "prune"):  # refuses: would delete p1's own chunks
                assert code == 1 and "fctui repo verify" in message and "fctui repo forget" in message, message
                assert all(_chunk_forms(root, d) for d in t["own"])
            elif op == "points":
                assert code == 0 and victim in message  # listed; its manifest is verify's business
            else:
                assert outcome == "ManifestError", (op, outcome, message)
        elif kind == "chunk":
            if op == "verify":
                assert code == 1 and f"DAMAGED {victim}" in message
            elif op in ("gc", "prune", "points"):
                assert code == 0, (op, message)
            elif op == "restore":
                assert outcome == "ChunkError", outcome
            elif op == "backup":  # a present chunk is trusted (verify's job to re-hash); a gone one healed
                gone = name in ("missing", "quarantined .bad")
                assert outcome == ("healed" if gone else "inherited-damage"), outcome
        TABLE.append((kind, name, op, "detected" if detected
                      else "not detected" if outcome == "inherited-damage" else "unaffected"))


# --- the data-loss path, as the issue reported it -------------------------------------------------
@pytest.mark.parametrize("how", ["truncate", "delete"])
@pytest.mark.parametrize("command", [("repo", "gc"), ("repo", "prune", "--keep-last", "5")])
def test_gc_and_prune_keep_the_chunks_of_a_point_whose_manifest_is_unreadable(
        template: tuple[Path, dict[str, Any]], tmp_path: Path, how: str, command: tuple[str, ...]) -> None:
    src, t = template
    root = tmp_path / "repo"
    shutil.copytree(src, root)
    manifest = _manifest(root, t["p1"])
    saved = manifest.read_bytes()
    _truncate(manifest) if how == "truncate" else manifest.unlink()
    code, out, err = run(*command, "--repo", str(root))
    assert code == 1, out + err
    assert t["p1"] in err and "fctui repo verify" in err and f"fctui repo forget POINT" in err
    assert all(_chunk(root, d).exists() for d in t["own"])  # not one chunk of the point deleted
    code, out, _ = run(*command, "--repo", str(root), "--json")
    doc = json.loads(out)
    assert code == 1 and [e["ref"] for e in doc["damaged_entries"]] == [t["p1"]]
    # the manifest comes back (from a backup copy, say): the point is whole again
    manifest.write_bytes(saved)
    assert run("repo", "verify", "--repo", str(root))[0] == 0


def test_forget_drops_a_damaged_entry_then_gc_runs(template: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    src, t = template
    root = tmp_path / "repo"
    shutil.copytree(src, root)
    _manifest(root, t["p1"]).unlink()
    with pytest.raises(SystemExit):  # the point id is required
        parser().parse_args(["repo", "forget"])
    code, _, err = run("repo", "forget", "nosuch", "--repo", str(root))
    assert code == 2 and "no restore point 'nosuch'" in err
    code, out, _ = run("repo", "forget", t["p1"], "--repo", str(root))
    assert code == 0 and f"forgot restore point {t['p1']}" in out and "catalog entry is removed" in out
    code, out, _ = run("points", "--repo", str(root), "--json")
    assert code == 0 and [p["id"] for p in json.loads(out)] == [t["p0"], t["p2"]]
    code, out, _ = run("repo", "gc", "--repo", str(root), "--json")
    assert code == 0 and json.loads(out)["chunks_removed"] == 3  # p1's own chunks, nothing else
    assert run("repo", "verify", "--repo", str(root))[0] == 0


def test_forget_an_entry_without_id_by_its_number(template: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    src, t = template
    root = tmp_path / "repo"
    shutil.copytree(src, root)
    CORRUPTIONS[("catalog", "entry without id")](root, t)
    code, out, _ = run("repo", "verify", "--repo", str(root))
    assert code == 1 and "DAMAGED catalog entry #9" in out and "fctui repo forget #9" in out
    code, out, _ = run("repo", "forget", "#9", "--repo", str(root), "--json")
    assert code == 0 and json.loads(out)["what"] == "catalog entry #9 of VM urn:vm:a"
    assert run("repo", "gc", "--repo", str(root))[0] == 0
    assert run("repo", "verify", "--repo", str(root))[0] == 0


def test_points_with_an_unreadable_catalog_says_so(template: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    src, _ = template
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    shutil.copytree(src, tmp_path / "data" / "repo")  # the default place: `fctui points` with no --repo
    (tmp_path / "data" / "repo" / "catalog.json").write_text("{not json")
    for argv in (("points",), ("points", "--json"), ("repo", "gc"), ("repo", "verify")):
        code, out, err = run(*argv)
        assert code == 2 and "catalog unreadable" in out + err, (argv, out, err)
        assert "no restore points" not in out


def test_api_errors_are_typed(template: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    src, t = template
    root = tmp_path / "repo"
    shutil.copytree(src, root)
    CORRUPTIONS[("catalog", "point, wrong types")](root, t)
    _manifest(root, t["p0"]).write_text("{}")
    repo = Repository.open(root, create=False)
    with pytest.raises(RepoDamagedError) as info:
        repo.gc()
    assert sorted(e.ref for e in info.value.entries) == sorted([t["p0"], t["p1"]])
    assert {e.problem for e in info.value.entries} == {"not-a-point", "manifest-corrupt"}
    with pytest.raises(RepoDamagedError):
        repo.prune(1)
    assert [p.id for p in repo.points()] == [t["p0"], t["p2"]]  # p0 kept by the refused prune
    with pytest.raises(RepoDamagedError, match="not a restore point"):
        repo.point(t["p1"])
    with pytest.raises(ManifestError) as minfo:
        repo.open_disk(t["p0"], VOL)
    assert minfo.value.problem == "manifest-corrupt" and minfo.value.point_id == t["p0"]
    with pytest.raises(ChunkError):
        repo.read_chunk("0" * 64)
