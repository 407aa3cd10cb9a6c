"""The simulator's VMs whose disks hold real partition tables and filesystems (issue 17 item 4): the
committed images, a full backup read of each guest disk over the data endpoint, and the control call that
moves a guest to its second version (only the differing blocks, seen by CBT)."""

from __future__ import annotations

from typing import Any

import pytest

from fctui.sim import SimConfig, demo_config
from fctui.sim.guestfs import GUESTS, image, spec
from fctui.sim.ops import decode_bitmap
from fctui.sim.testing import SimHarness, sim_harness

IP = "10.0.0.5"
BS = 128 * 512  # the tests' CBT block (sector_of_block=128)
MiB = 1 << 20
GIB = 1 << 30

# written down here, not read from the spec: the disks as the issue and the build script describe them
SIZES = {"ext4": 64 * MiB, "xfs": 128 * MiB, "ntfs": 64 * MiB}
VMS = {"web-ubuntu-ext4": "ext4", "db-euleros-xfs": "xfs", "win-fileserver-ntfs": "ntfs"}
CHANGED_FILE = {"ext4": "/p2/etc/nginx/nginx.conf",
                "xfs": "/euleros-root/var/lib/pgsql/data/postgresql.conf",
                "ntfs": "/p1/Windows/System32/drivers/etc/hosts"}

NEW_LINE = {"ext4": (b"worker_connections 768;", b"multi_accept on;"),
            "xfs": (b"max_connections = 200", b"log_min_duration_statement = 500"),
            "ntfs": (b"db01.example.internal", b"backup01.example.internal")}


def guest_config(**kw: Any) -> SimConfig:
    return SimConfig(vms=0, seed=1, sector_of_block=128, time_scale=100.0, guest_filesystems=True, **kw)


@pytest.fixture
def sim_config() -> SimConfig:  # for the `client` fixture (readiness through the real inventory)
    return guest_config()


def blocks_of(raw: bytes) -> dict[int, bytes]:
    return {i // BS: raw[i:i + BS] for i in range(0, len(raw), BS)}


def nonzero_blocks(raw: bytes) -> list[int]:
    return [b for b, data in blocks_of(raw).items() if data.count(0) != len(data)]


def differing_blocks(a: bytes, b: bytes) -> list[int]:
    ba, bb = blocks_of(a), blocks_of(b)
    return [n for n in ba if ba[n] != bb[n]]


# --- the committed images ---------------------------------------------------------------------------------

@pytest.mark.parametrize("guest", GUESTS)
def test_images_decompress_to_the_documented_sizes_and_tables(guest: str) -> None:
    v1, v2 = image(guest, 1), image(guest, 2)
    assert len(v1) == len(v2) == SIZES[guest] == spec(guest, 1).disk_size
    for raw in (v1, v2):
        assert raw[510:512] == b"\x55\xaa"                       # an MBR (protective, for GPT)
        types = [raw[0x1BE + 16 * i + 4] for i in range(4)]
        if guest == "ext4":
            assert raw[512:520] == b"EFI PART" and types == [0xEE, 0, 0, 0]
        else:
            assert types == ([0x83, 0x8E, 0, 0] if guest == "xfs" else [0x07, 0, 0, 0])
    # the changed file's two versions are where they belong, found without any parser (a line: an NTFS
    # file this small lives in its MFT record, whose sectors end in fix-up bytes)
    old_line, new_line = NEW_LINE[guest]
    assert old_line in spec(guest, 1).entry(CHANGED_FILE[guest]).data
    assert new_line in spec(guest, 2).entry(CHANGED_FILE[guest]).data
    assert old_line in v1 and new_line in v2 and new_line not in v1
    # version 2 was made from a copy of version 1: few blocks differ, so an incremental is small
    diff = differing_blocks(v1, v2)
    assert 0 < len(diff) <= 48 and len(diff) < len(nonzero_blocks(v1)) // 3


def test_the_spec_holds_what_the_issue_asks_for() -> None:
    for guest in GUESTS:
        one, two = spec(guest, 1), spec(guest, 2)
        big = [e for e in one.files() if e.size > 4 * MiB]
        assert big and all(e.size % (2 * MiB) for e in big)     # spans several 2 MiB blocks, not whole ones
        assert any(e.kind == "file" and e.size == 0 for e in one.entries)
        assert any(e.path.count("/") >= 5 and e.kind == "dir" for e in one.entries)
        assert any(" " in e.name and not e.name.isascii() for e in one.entries)
        if guest != "ntfs":
            assert any(e.kind == "symlink" for e in one.entries)
        mtimes = [e.mtime for e in one.entries]
        assert len(set(mtimes)) == len(mtimes)
        assert all(1735689600 <= t < 1798761600 for t in mtimes)  # 2025-2026
        p1, p2 = set(one.by_path), set(two.by_path)
        assert len(p2 - p1) == 1 and len(p1 - p2) == 1           # one added, one removed
        changed = [p for p in p1 & p2 if one.entry(p) != two.entry(p) and one.entry(p).kind == "file"]
        assert changed == [CHANGED_FILE[guest]]
    for e in [*spec("ntfs", 1).entries, *spec("ext4", 1).under("p1")]:  # no POSIX modes: the FsEntry rule
        assert e.mode == 0o755 if e.kind == "dir" else e.mode in (0o644, 0o444)
    assert spec("ntfs", 1).entry("/p1/Windows/System32/drivers/etc/services").mode == 0o444
    assert all(e.mtime % 2 == 0 for e in spec("ext4", 1).under("p1"))  # FAT keeps 2-second times


# --- the VMs ----------------------------------------------------------------------------------------------

async def guest_vms(h: SimHarness) -> dict[str, dict[str, Any]]:
    listed = (await h.client.get("/sim/guestfs")).json()["vms"]
    return {v["name"]: v for v in listed}


async def cbt_snapshot(h: SimHarness, vm_uri: str, name: str) -> dict[str, Any]:
    ref = (await h.post(vm_uri + "/snapshots", {"name": name, "type": "CBTbackup"})).json()
    assert (await h.wait_task(ref["taskUri"]))["status"] == "success"
    return (await h.get(ref["uri"])).json()  # type: ignore[no-any-return]


async def changed(h: SimHarness, vs: dict[str, Any], chg: str) -> list[int]:
    r = await h.post(vs["volumeUri"] + "/getcbt", {"type": "DiffBitmapAndBit1Num", "snapUuid": vs["snapUuid"],
                                                   "volCBTCreateTime": vs["volCBTCreateTime"], "chgID": chg})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["bitNum"] == GIB // BS
    return decode_bitmap(res["bitMap"], 0, res["bitNum"])


async def read_disk(h: SimHarness, snap: dict[str, Any], length: int) -> bytes:
    """The first ``length`` bytes of the snapshot's disk, read through a backup resource's data endpoint."""
    vs = snap["volsnapshots"][0]
    r = await h.post(vs["volumeUri"] + "/backupresources", {"ip": IP, "taskType": "CBTBackup", "snapUrn2": snap["urn"]})
    assert r.status_code == 200, r.text
    uri = f"{vs['volumeUri']}/backupresources/{r.json()['taskUri'].rsplit('/', 1)[1]}"
    h.advance(2)
    res = (await h.get(uri)).json()
    got = await h.client.get(res["resourceUrl"], headers={"X-Resource-Token": res["token"],
                                                          "Range": f"bytes=0-{length - 1}"})
    assert got.status_code == 206 and len(got.content) == length
    await h.delete(uri)
    h.advance(2)
    return got.content


async def test_guest_vms_are_running_with_tools_on_one_virtio_disk_of_1_gb() -> None:
    async with sim_harness(guest_config()) as h:
        listed = await guest_vms(h)
        assert {n: v["guest"] for n, v in listed.items()} == VMS
        for name, v in listed.items():
            assert v["version"] == 1 and v["imageBytes"] == SIZES[VMS[name]]
            vm = (await h.get(h.uri(v["vm"]))).json()
            assert vm["status"] == "running" and vm["pvDriverStatus"] == "running" and vm["toolsVersion"]
            assert vm["vmConfig"]["properties"]["bootFirmware"] == ("UEFI" if name == "web-ubuntu-ext4" else "BIOS")
            disks = vm["vmConfig"]["disks"]
            assert len(disks) == 1 and disks[0]["pciType"] == "VIRTIO" and disks[0]["quantityGB"] == 1
            assert disks[0]["volumeUrn"] == v["volume"]


async def test_a_full_backup_read_of_each_guest_disk_is_its_image() -> None:
    async with sim_harness(guest_config()) as h:
        for name, v in (await guest_vms(h)).items():
            raw = image(VMS[name], 1)
            vm_uri = h.uri(v["vm"])
            snap = await cbt_snapshot(h, vm_uri, "full")
            vs = snap["volsnapshots"][0]
            # every written block is the image's: nothing past it, nothing generated on top
            assert await changed(h, vs, "0") == nonzero_blocks(raw)
            assert await read_disk(h, snap, len(raw)) == raw


async def test_moving_a_guest_to_version_2_writes_exactly_the_differing_blocks() -> None:
    async with sim_harness(guest_config()) as h:
        for name, v in (await guest_vms(h)).items():
            guest = VMS[name]
            v1, v2 = image(guest, 1), image(guest, 2)
            diff = differing_blocks(v1, v2)
            vm_uri, vm_id = h.uri(v["vm"]), v["vm"].rsplit(":", 1)[1]
            s1 = await cbt_snapshot(h, vm_uri, "before")
            # before CBT's first snapshot the image was there already: an incremental does not carry it
            assert await changed(h, s1["volsnapshots"][0], s1["volsnapshots"][0]["chgID"]) == []

            r = await h.client.post(f"/sim/vms/{vm_id}/guestfs", json={"version": 2})
            assert r.status_code == 200, r.text
            assert r.json()["written"] == len(diff) and r.json()["writtenBlocks"] == diff
            assert r.json()["version"] == 2
            s2 = await cbt_snapshot(h, vm_uri, "after")
            assert await changed(h, s2["volsnapshots"][0], s1["volsnapshots"][0]["chgID"]) == diff
            assert await read_disk(h, s2, len(v2)) == v2
            assert await read_disk(h, s1, len(v1)) == v1          # the "before" snapshot still serves v1

            # the same version again writes nothing; version 1 moves back
            assert (await h.client.post(f"/sim/vms/{v['vm']}/guestfs", json={"version": 2})).json()["written"] == 0
            assert (await h.client.post(f"/sim/vms/{vm_id}/guestfs", json={"version": 1})).json()["written"] == len(diff)
            s3 = await cbt_snapshot(h, vm_uri, "back")
            assert await changed(h, s3["volsnapshots"][0], s2["volsnapshots"][0]["chgID"]) == diff
            assert await read_disk(h, s3, len(v1)) == v1


async def test_guestfs_control_call_refuses_what_it_cannot_do() -> None:
    async with sim_harness(guest_config()) as h:
        web = (await guest_vms(h))["web-ubuntu-ext4"]["vm"]
        other = (await h.client.get("/sim/edge-cases")).json()["ready"][0]
        for vm, body in ((web, {"version": 3}), (web, {"version": "2"}), (web, {}), (other, {"version": 2})):
            r = await h.client.post(f"/sim/vms/{vm}/guestfs", json=body)
            assert r.status_code == 400 and r.json()["errorCode"] == "10000003", (vm, body, r.text)
        assert (await h.client.post("/sim/vms/urn:nothing/guestfs", json={"version": 2})).status_code == 404


async def test_background_guest_writes_never_touch_guest_filesystems() -> None:
    async with sim_harness(guest_config(guest_write_rate=5.0)) as h:
        vms = await guest_vms(h)
        ready = h.uri((await h.client.get("/sim/edge-cases")).json()["ready"][0])
        firsts = {n: await cbt_snapshot(h, h.uri(v["vm"]), "a") for n, v in vms.items()}
        plain = await cbt_snapshot(h, ready, "a")
        h.advance(20)
        for n, v in vms.items():
            s = await cbt_snapshot(h, h.uri(v["vm"]), "b")
            assert await changed(h, s["volsnapshots"][0], firsts[n]["volsnapshots"][0]["chgID"]) == []
        s = await cbt_snapshot(h, ready, "b")
        assert await changed(h, s["volsnapshots"][0], plain["volsnapshots"][0]["chgID"])  # the others do change


async def test_guest_vms_are_ready_for_backup(client: Any) -> None:
    from fctui.inventory.gather import gather
    inv = await gather(client, helper=False)
    verdicts = {f.vm.name: a.verdict for f, a in zip(inv.facts, inv.assessments)}
    assert {n: verdicts.get(n) for n in VMS} == {n: "ready" for n in VMS}


def test_only_the_demo_has_guest_filesystems_by_default() -> None:
    from fctui.sim import Simulator
    assert SimConfig().guest_filesystems is False and demo_config().guest_filesystems is True
    names = {vm.name for vm in Simulator(SimConfig(vms=0)).vms.values()}
    assert not names & set(VMS)


async def test_guestfs_listing_is_empty_without_guest_filesystems() -> None:
    async with sim_harness(SimConfig(vms=0, sector_of_block=128)) as h:
        assert (await h.client.get("/sim/guestfs")).json() == {"vms": []}


def test_fctui_sim_has_a_switch_for_them() -> None:
    from fctui.cli import build_parser
    from fctui.cli.sim import config_from_args
    p = build_parser()
    assert config_from_args(p.parse_args(["sim", "--guest-filesystems"])).guest_filesystems is True
    assert config_from_args(p.parse_args(["sim"])).guest_filesystems is False
