"""Builds the committed guest disk images from :mod:`fctui.sim.guestfs.spec`, then checks them against it.

    sudo .venv/bin/python -m fctui.sim.guestfs.build_images [--out DIR] [ext4|xfs|ntfs ...]
    sudo .venv/bin/python -m fctui.sim.guestfs.build_images --check     # re-check the committed images

Needs root and, on the machine that runs it: loop devices, FUSE, sgdisk, sfdisk, mkfs.vfat (dosfstools),
mke2fs (e2fsprogs), mkfs.xfs (xfsprogs), lvm2, mkntfs + ntfs-3g + ntfslabel (ntfs-3g) and the kernel's
vfat, ext2/ext4 and xfs drivers. Tests never run it (a fresh CI machine has none of this): they use the
images it wrote, ``images/<guest>-v<N>.img.zst`` (zstd), which are committed. Rebuilding gives the same
files, modes, owners and times, but not byte-identical images (filesystems record when they were made and
mounted, and LVM its own identifiers).

How each image is made: a sparse raw file of the spec's size gets its partition table (fixed disk and
partition identifiers), then each filesystem is made (fixed UUIDs/serials) on a loop device limited to its
partition (for the LVM logical volume: to the extents LVM gave it -- LVM runs with activation off, as the
device-mapper is not needed to lay out a volume), mounted, and the spec's entries written: content, owner,
mode, then times (files and links first, then directories deepest first, so creating a child never moves a
parent's time afterwards). Version 2 is a COPY of version 1 with only the spec's changes applied (the changed
file rewritten in place, the new file added, the old one removed, the touched directories' times set), so
every block that holds nothing that changed stays byte-identical and a CBT incremental is small. Each image
is then mounted read-only and every entry compared with the spec (kind, mode, owner, mtime, content, link
text, the NTFS/FAT read-only attribute) before it is compressed.

This module imports only the standard library, zstandard and the spec (the simulator's room).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import zstandard

from fctui.sim.guestfs.spec import GUESTS, MiB, GuestSpec, SpecEntry, SpecVolume, guest

IMAGES = Path(__file__).resolve().parent / "images"
SECTOR = 512

# fixed identifiers (so a rebuild names things the same)
GPT_DISK_GUID = "8d2c4f1e-5b7a-4c39-9e21-0f6a3b5c7d11"
GPT_PART_GUIDS = {1: "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", 2: "0fc63daf-8483-4772-8e79-3d69d8477de4"}
FAT_SERIAL = "5EED0E51"
EXT_UUIDS = {("ext4", "p2"): "6f1c3a52-9e47-4d2b-8a11-3c5e7d9f0b24",
             ("xfs", "p1"): "3a8e5c01-7d2b-4f6a-9c14-e25b0d7f8a33"}
XFS_UUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
PV_UUID = "EulrOS-PV01-0001-0002-0003-0004-000005"
MBR_IDS = {"xfs": "0x5eed0e01", "ntfs": "0x5eed0d01"}
NTFS_SERIAL = "5EED0D0100F5A1E5"
VG, LV, EXTENT = "euleros", "root", 4 * MiB

FAT_RO = 0x01  # FAT/NTFS read-only attribute bit
NTFS_ATTRIB = "system.ntfs_attrib_be"


def run(*cmd: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    full = dict(os.environ, **(env or {}))
    res = subprocess.run(cmd, capture_output=True, text=True, env=full)
    if check and res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


@contextlib.contextmanager
def loop(image: Path, offset: int, size: int) -> Iterator[str]:
    dev = run("losetup", "-f", "--show", "-o", str(offset), "--sizelimit", str(size), str(image)).strip()
    try:
        yield dev
    finally:
        run("losetup", "-d", dev, check=False)


@contextlib.contextmanager
def mounted(dev: str, fs_type: str, where: Path, readonly: bool) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    ro = "ro" if readonly else "rw"
    if fs_type == "ntfs":
        # files 0o644, directories 0o755, as fctui.files shows NTFS (the read-only bit is an attribute)
        run("ntfs-3g", "-o", f"{ro},fmask=0133,dmask=0022,uid=0,gid=0", dev, str(where))
    else:
        opts = f"{ro},noatime" + (",noinit_itable" if fs_type == "ext4" else "")
        if fs_type == "xfs" and readonly:
            opts += ",norecovery"
        run("mount", "-t", fs_type, "-o", opts, dev, str(where))
    try:
        yield where
    finally:
        run("sync")
        run("umount", str(where))


# --- layout --------------------------------------------------------------------------------------------

def partition(spec: GuestSpec, image: Path) -> None:
    parts = [v for v in spec.volumes if v.name.startswith("p")]
    if spec.table == "gpt":
        cmd = ["sgdisk", "-o", "-U", GPT_DISK_GUID]
        for v in parts:
            n = int(v.name[1:])
            first, last = v.offset // SECTOR, (v.offset + v.size) // SECTOR - 1
            code, name = ("EF00", "EFI System Partition") if v.fs_type == "fat" else ("8300", "Linux filesystem")
            cmd += ["-n", f"{n}:{first}:{last}", "-t", f"{n}:{code}", "-c", f"{n}:{name}",
                    "-u", f"{n}:{GPT_PART_GUIDS[n]}"]
        run(*cmd, str(image))
    else:
        lines = ["label: dos", f"label-id: {MBR_IDS[spec.guest]}", "unit: sectors", ""]
        for i, v in enumerate(parts):
            kind = {"ntfs": "7", "": "8e"}.get(v.fs_type, "83")
            boot = ", bootable" if i == 0 else ""
            lines.append(f"start={v.offset // SECTOR}, size={v.size // SECTOR}, type={kind}{boot}")
        subprocess.run(["sfdisk", "-q", str(image)], input="\n".join(lines) + "\n", text=True, check=True,
                       capture_output=True)


LVM_CONF = ("devices {{ filter=[\"a|^{dev}$|\",\"r|.*|\"] obtain_device_list_from_udev=0 use_devicesfile=0 }} "
            "activation {{ udev_sync=0 udev_rules=0 }} global {{ activation=0 }} backup {{ backup=0 archive=0 }}")


def make_lvm(pv_dev: str, pv: SpecVolume, lv: SpecVolume) -> None:
    """A physical volume, volume group euleros and logical volume root laid out with activation off."""
    conf = LVM_CONF.format(dev=pv_dev)
    env = {"LVM_SUPPRESS_FD_WARNINGS": "1"}
    extents = lv.size // EXTENT
    run("pvcreate", "--config", conf, "-ff", "-y", "-u", PV_UUID, "--norestorefile", "--dataalignment", "1m",
        pv_dev, env=env)
    run("vgcreate", "--config", conf, "-s", f"{EXTENT // MiB}m", VG, pv_dev, env=env)
    run("lvcreate", "--config", conf, "-an", "-Zn", "-l", str(extents), "-n", LV, VG, env=env)
    pe_start = int(run("pvs", "--config", conf, "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start",
                       pv_dev, env=env).strip())
    ranges = run("lvs", "--config", conf, "--noheadings", "-o", "seg_pe_ranges", f"{VG}/{LV}", env=env).strip()
    want = f"{pv_dev}:0-{extents - 1}"
    if pv.offset + pe_start != lv.offset or ranges != want:
        raise RuntimeError(f"LVM laid {VG}/{LV} out at pe_start={pe_start} {ranges}, the spec says "
                           f"{lv.offset - pv.offset} {want}")


def make_fs(spec: GuestSpec, vol: SpecVolume, dev: str) -> None:
    if vol.fs_type == "fat":
        run("mkfs.vfat", "-F", "16", "-i", FAT_SERIAL, "-n", vol.label, "-h", str(vol.offset // SECTOR), dev)
    elif vol.fs_type in ("ext2", "ext4"):
        uuid = EXT_UUIDS[(spec.guest, vol.name)]
        size_opts = ["-b", "4096", "-I", "256"] if vol.fs_type == "ext4" else ["-b", "1024", "-I", "128"]
        run("mke2fs", "-q", "-F", "-t", vol.fs_type, *size_opts, "-U", uuid, "-L", vol.label,
            "-E", f"hash_seed={uuid},lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0,nodiscard", dev,
            env={"E2FSPROGS_FAKE_TIME": "1741593600"})  # 2025-03-10 08:00 UTC
    elif vol.fs_type == "xfs":
        # below 300 MB mkfs.xfs wants to know it is a test filesystem
        run("mkfs.xfs", "-q", "-f", "-m", f"uuid={XFS_UUID}", "-L", vol.label, dev,
            env={"TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"})
    elif vol.fs_type == "ntfs":
        run("mkntfs", "-q", "-Q", "-F", "-L", vol.label, "-c", "4096", "-s", "512", "-p",
            str(vol.offset // SECTOR), "-H", "255", "-S", "63", dev)
        run("ntfslabel", f"--new-serial={NTFS_SERIAL}", dev, vol.label)
    else:
        raise ValueError(f"cannot make {vol.fs_type!r}")


# --- writing and checking entries ------------------------------------------------------------------------

def host_path(root: Path, e: SpecEntry) -> Path:
    return root / e.inner.lstrip("/") if e.inner != "/" else root


def depth(e: SpecEntry) -> int:
    return e.path.count("/")


def set_readonly(p: Path, fs_type: str) -> None:
    if fs_type == "ntfs":
        attrs = struct.unpack(">I", os.getxattr(p, NTFS_ATTRIB))[0]
        os.setxattr(p, NTFS_ATTRIB, struct.pack(">I", attrs | FAT_RO))
    # FAT: write_fat sets the attribute with mattrib


def is_readonly(p: Path, fs_type: str) -> bool:
    return bool(struct.unpack(">I", os.getxattr(p, NTFS_ATTRIB))[0] & FAT_RO)


# FAT through mtools (this kernel has no vfat driver): times are kept as the local time of TZ, so UTC
MTOOLS_ENV = {"TZ": "UTC", "MTOOLS_SKIP_CHECK": "1"}


def write_fat(image: Path, vol: SpecVolume, entries: list[SpecEntry], work: Path) -> None:
    """Stage the entries (content and times) in a directory, copy them in keeping times (mcopy -m keeps a
    file's and a directory's mtime, to FAT's 2 seconds), then set the read-only attributes."""
    stage = work / "fat-stage"
    stage.mkdir()
    write_entries(stage, "fat", entries)
    drive = f"{image}@@{vol.offset}"
    tops = sorted({e.inner.split("/")[1] for e in entries})
    run("mcopy", "-i", drive, "-s", "-m", "-Q", *(str(stage / t) for t in tops), "::/", env=MTOOLS_ENV)
    for e in entries:
        if e.kind == "file" and e.mode == 0o444:
            run("mattrib", "-i", drive, "+r", "::" + e.inner, env=MTOOLS_ENV)
    shutil.rmtree(stage)


def read_fat(image: Path, vol: SpecVolume, work: Path) -> tuple[Path, set[str]]:
    """Copy a FAT volume out with mtools (times kept) and list its read-only files: what check_volume reads."""
    out = work / "fat-out"
    out.mkdir()
    drive = f"{image}@@{vol.offset}"
    tops = [t.rstrip("/") for t in run("mdir", "-i", drive, "-b", "::/", env=MTOOLS_ENV).split()]
    if tops:
        run("mcopy", "-i", drive, "-s", "-m", "-n", "-Q", *tops, str(out), env=MTOOLS_ENV)
    readonly = set()
    # mattrib lists the tree but answers 1 for the root it cannot show itself
    for line in run("mattrib", "-i", drive, "-/", "::/", env=MTOOLS_ENV, check=False).splitlines():
        flags, _, name = line.partition("::")
        if "R" in flags:
            readonly.add(name)
    return out, readonly


def posix(fs_type: str) -> bool:
    return fs_type in ("ext2", "ext4", "xfs")


def write_entries(root: Path, fs_type: str, entries: list[SpecEntry]) -> None:
    """Content, owner, mode; then times: files and links, then directories deepest first."""
    for e in sorted(entries, key=depth):
        p = host_path(root, e)
        if e.kind == "dir":
            p.mkdir(exist_ok=True)
        elif e.kind == "symlink":
            os.symlink(e.target or "", p)
        else:
            with open(p, "r+b" if p.exists() else "wb") as f:  # in place: the blocks a rewrite needs, no more
                f.truncate(0)
                f.write(e.data)
        if posix(fs_type):
            os.lchown(p, e.uid, e.gid)
            if e.kind != "symlink":
                os.chmod(p, e.mode)  # after chown, which clears set-id bits
    for e in sorted(entries, key=lambda e: (e.kind == "dir", -depth(e))):
        os.utime(host_path(root, e), ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
    for e in entries:
        if not posix(fs_type) and e.kind == "file" and e.mode == 0o444:
            set_readonly(host_path(root, e), fs_type)


def check_volume(root: Path, fs_type: str, expected: list[SpecEntry], vol: str,
                 readonly: set[str] | None = None) -> list[str]:
    """Differences between a mounted volume (or a FAT copied out) and the spec (empty when they agree).
    ``readonly``: the inner paths with the read-only attribute, when the copy cannot say."""
    problems: list[str] = []
    want = {e.inner: e for e in expected}
    seen: dict[str, os.stat_result] = {}
    if fs_type != "fat":
        seen["/"] = os.lstat(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            full = Path(dirpath) / n
            seen["/" + str(full.relative_to(root))] = os.lstat(full)
    for inner in sorted(set(seen) - set(want)):
        problems.append(f"/{vol}{inner}: on the disk, not in the spec")
    for inner in sorted(set(want) - set(seen)):
        problems.append(f"/{vol}{inner}: in the spec, not on the disk")
    for inner in sorted(set(want) & set(seen)):
        e, st = want[inner], seen[inner]
        p = host_path(root, e)
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else "file"
        got: dict[str, object] = {"kind": kind, "mtime": st.st_mtime_ns}
        exp: dict[str, object] = {"kind": e.kind, "mtime": e.mtime_ns}
        if posix(fs_type):
            got.update(uid=st.st_uid, gid=st.st_gid)
            exp.update(uid=e.uid, gid=e.gid)
            if kind != "symlink":
                got["mode"], exp["mode"] = stat.S_IMODE(st.st_mode), e.mode
        else:
            ro = kind == "file" and (inner in readonly if readonly is not None else is_readonly(p, fs_type))
            got["mode"] = 0o755 if kind == "dir" else 0o444 if ro else 0o644
            exp["mode"] = e.mode
        if kind == "file" and e.kind == "file":
            data = p.read_bytes()
            got["data"], exp["data"] = data == e.data, True
        if kind == "symlink":
            got["target"], exp["target"] = os.readlink(p), e.target
        for k in exp:
            if got.get(k) != exp[k]:
                problems.append(f"{e.path}: {k} is {got.get(k)!r}, the spec says {exp[k]!r}")
    return problems


# --- one guest ---------------------------------------------------------------------------------------------

def fs_volumes(spec: GuestSpec) -> list[SpecVolume]:
    return [v for v in spec.volumes if v.fs_type]


def build_v1(spec: GuestSpec, image: Path, work: Path) -> None:
    with open(image, "wb") as f:
        f.truncate(spec.disk_size)
    partition(spec, image)
    pv = next((v for v in spec.volumes if v.name.startswith("p") and not v.fs_type), None)
    if pv is not None:
        lv = next(v for v in spec.volumes if not v.name.startswith("p"))
        with loop(image, pv.offset, pv.size) as dev:
            make_lvm(dev, pv, lv)
    for vol in fs_volumes(spec):
        with loop(image, vol.offset, vol.size) as dev:
            make_fs(spec, vol, dev)
            if vol.fs_type != "fat":
                with mounted(dev, vol.fs_type, work / "mnt", readonly=False) as root:
                    write_entries(root, vol.fs_type, spec.under(vol.name))
        if vol.fs_type == "fat":
            write_fat(image, vol, spec.under(vol.name), work)


def build_v2(v1: GuestSpec, v2: GuestSpec, image: Path, work: Path) -> None:
    """Apply to the copy of version 1 exactly what differs in version 2."""
    for vol in fs_volumes(v2):
        old = {e.path: e for e in v1.under(vol.name)}
        new = {e.path: e for e in v2.under(vol.name)}
        gone = [old[p] for p in old if p not in new]
        touched = [e for p, e in new.items() if old.get(p) != e]
        if not gone and not touched:
            continue
        with loop(image, vol.offset, vol.size) as dev, \
                mounted(dev, vol.fs_type, work / "mnt", readonly=False) as root:
            for e in gone:
                p = host_path(root, e)
                p.rmdir() if e.kind == "dir" else p.unlink()
            files = [e for e in touched if e.kind != "dir" or e.path not in old]
            write_entries(root, vol.fs_type, files)
            for e in sorted((e for e in touched if e.kind == "dir" and e.path in old), key=lambda e: -depth(e)):
                os.utime(host_path(root, e), ns=(e.mtime_ns, e.mtime_ns))


def check_image(spec: GuestSpec, image: Path, work: Path) -> list[str]:
    problems: list[str] = []
    if image.stat().st_size != spec.disk_size:
        problems.append(f"{image.name}: {image.stat().st_size} bytes, the spec says {spec.disk_size}")
    for vol in fs_volumes(spec):
        if vol.fs_type == "fat":
            root, readonly = read_fat(image, vol, work)
            problems += check_volume(root, vol.fs_type, spec.under(vol.name), vol.name, readonly)
            shutil.rmtree(root)
            continue
        with loop(image, vol.offset, vol.size) as dev, \
                mounted(dev, vol.fs_type, work / "mnt", readonly=True) as root:
            problems += check_volume(root, vol.fs_type, spec.under(vol.name), vol.name)
    return problems


def compress(image: Path, out: Path) -> None:
    cctx = zstandard.ZstdCompressor(level=19, write_content_size=True)
    out.write_bytes(cctx.compress(image.read_bytes()))


def build_guest(name: str, out: Path) -> None:
    v1, v2 = guest(name, 1), guest(name, 2)
    with tempfile.TemporaryDirectory(prefix=f"guestfs-{name}-") as tmp:
        work = Path(tmp)
        img1, img2 = work / f"{name}-v1.img", work / f"{name}-v2.img"
        build_v1(v1, img1, work)
        shutil.copyfile(img1, img2)
        build_v2(v1, v2, img2, work)
        for spec, img in ((v1, img1), (v2, img2)):
            problems = check_image(spec, img, work)
            if problems:
                raise SystemExit(f"{img.name} does not match the spec:\n  " + "\n  ".join(problems))
            compress(img, out / f"{img.name}.zst")
            print(f"{img.name}: matches the spec ({len(spec.entries)} entries); "
                  f"{(out / f'{img.name}.zst').stat().st_size} bytes compressed")


def check_committed(name: str, out: Path) -> None:
    """Re-check committed images against the spec (decompress, mount read-only, compare)."""
    with tempfile.TemporaryDirectory(prefix=f"guestfs-{name}-") as tmp:
        work = Path(tmp)
        for version in (1, 2):
            img = work / f"{name}-v{version}.img"
            img.write_bytes(zstandard.ZstdDecompressor().decompress((out / f"{img.name}.zst").read_bytes()))
            problems = check_image(guest(name, version), img, work)
            print(f"{img.name}: " + ("matches the spec" if not problems else "\n  ".join(["DIFFERS"] + problems)))
            if problems:
                raise SystemExit(1)


USAGE = "usage: python -m fctui.sim.guestfs.build_images [--check] [--out DIR] [ext4|xfs|ntfs ...]"


def main(argv: list[str] | None = None) -> None:
    # a few words of arguments, read by hand: only fctui/cli parses command lines with argparse
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    out = IMAGES
    if "--out" in args:
        i = args.index("--out")
        if i + 1 >= len(args):
            raise SystemExit(USAGE)
        out = Path(args[i + 1])
        del args[i:i + 2]
    if any(a not in GUESTS for a in args):
        raise SystemExit(USAGE)
    if os.geteuid() != 0:
        raise SystemExit("needs root (loop devices, mount)")
    out.mkdir(parents=True, exist_ok=True)
    for name in args or GUESTS:
        (check_committed if check else build_guest)(name, out)


if __name__ == "__main__":
    sys.exit(main())
