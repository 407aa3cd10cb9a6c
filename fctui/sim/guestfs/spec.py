"""What the simulator's guest disks hold: every file of every volume, written down independently of any parser.

Three guests, each in two versions; ``build_images.py`` made ``images/<guest>-v<N>.img.zst`` from this
module (and checked them against it), and file-level restore is tested against it:

* ``ext4``: an Ubuntu web server. GPT disk of 64 MiB: ``p1`` an EFI system partition (FAT16, label
  ``EFI``), ``p2`` the root filesystem (ext4, label ``cloudimg-rootfs``).
* ``xfs``: an EulerOS database server (PostgreSQL). MBR disk of 128 MiB: ``p1`` ``/boot`` (ext2, label
  ``boot``), ``p2`` an LVM physical volume (type 8e) of volume group ``euleros`` whose logical volume
  ``root`` holds XFS (label ``root``); its files are under ``/euleros-root``.
* ``ntfs``: a Windows file server. MBR disk of 64 MiB: ``p1`` NTFS (type 07, label ``Data``).

Paths are absolute in the disk's tree as :mod:`fctui.files` presents it, volume first
(``/p2/etc/nginx/nginx.conf``). The entry whose path is a volume's top directory (``/p2``) describes that
filesystem's root directory; a FAT root directory has no times or attributes, so the EFI partition has no
such entry. Besides what is listed, a volume holds only its filesystem's own metadata (NTFS ``$MFT``,
``$Bitmap``, ...): ext2/ext4 ``lost+found`` IS listed (the guest sees it).

Times are whole seconds since the epoch (UTC), distinct per entry within a guest version; those on FAT are
even (FAT keeps 2-second times, in local time: the images were written with the FAT mounted ``tz=UTC``, so
read them as UTC). Ownership (``uid``/``gid``) is meaningful on ext2/ext4/XFS only; it is 0 elsewhere.

NTFS and FAT have no POSIX modes; following :class:`fctui.files.model.FsEntry`, their directories are
0o755, files 0o644 and files with the read-only attribute 0o444 (one read-only file on the NTFS,
``/p1/Windows/System32/drivers/etc/services`` of ``ntfs``, and one on the FAT, ``/p1/EFI/ubuntu/BOOTX64.CSV``
of ``ext4``). The FAT's label is ``EFI``, the name of its one top directory too: its root directory holds
a volume-label entry named ``EFI`` besides the directory ``EFI`` (a reader must not take the one for the
other).

Version 2 is version 1 with one configuration file rewritten (new content and mtime), one file added and
one file removed (and the mtimes of the directories that changed). The images of version 2 were made by
applying those changes to a copy of version 1, so the blocks that hold nothing that changed are
byte-identical.

Content is deterministic: hand-written text, plus binary from :func:`random.Random` with fixed seeds
(``randbytes`` is stable across Python versions since 3.9).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache

GUESTS = ("ext4", "xfs", "ntfs")
VERSIONS = (1, 2)
MiB = 1024 * 1024

KINDS = ("file", "dir", "symlink")


@dataclass(frozen=True)
class SpecEntry:
    """One file, directory or symbolic link of a guest version."""

    path: str  # absolute, volume first: /p2/etc/nginx/nginx.conf; /p2 is the root directory of p2
    kind: str  # file | dir | symlink
    mode: int  # permission bits (& 0o7777)
    mtime: int  # seconds since the epoch, UTC
    data: bytes = b""  # a file's content
    target: str | None = None  # a symlink's text
    uid: int = 0
    gid: int = 0

    @property
    def volume(self) -> str:
        return self.path.split("/")[1]

    @property
    def inner(self) -> str:
        """The path inside its volume ("/" for the volume's root directory)."""
        rest = self.path.split("/", 2)
        return "/" + rest[2] if len(rest) > 2 else "/"

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    @property
    def size(self) -> int:
        """Bytes of content (files), of the link text (symlinks), 0 for directories (as FsEntry.size)."""
        if self.kind == "file":
            return len(self.data)
        if self.kind == "symlink":
            return len((self.target or "").encode())
        return 0

    @property
    def mtime_ns(self) -> int:
        return self.mtime * 1_000_000_000


@dataclass(frozen=True)
class SpecVolume:
    """A partition or logical volume of a guest disk and the filesystem on it ('' when it holds none)."""

    name: str  # p1, p2, euleros-root (as fctui.files names volumes)
    fs_type: str  # fat | ext2 | ext4 | xfs | ntfs | "" (an LVM physical volume)
    offset: int  # bytes from the start of the disk
    size: int  # bytes
    label: str = ""  # the filesystem's label


@dataclass(frozen=True)
class GuestSpec:
    """One version of one guest's system disk."""

    guest: str  # ext4 | xfs | ntfs
    version: int  # 1 | 2
    description: str
    disk_size: int  # bytes; the image's size
    table: str  # gpt | mbr
    volumes: tuple[SpecVolume, ...]
    entries: tuple[SpecEntry, ...]
    by_path: dict[str, SpecEntry] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_path.update((e.path, e) for e in self.entries)

    def entry(self, path: str) -> SpecEntry:
        return self.by_path[path]

    def volume(self, name: str) -> SpecVolume:
        return next(v for v in self.volumes if v.name == name)

    def files(self) -> list[SpecEntry]:
        return [e for e in self.entries if e.kind == "file"]

    def under(self, volume: str) -> list[SpecEntry]:
        return [e for e in self.entries if e.volume == volume]


@dataclass(frozen=True)
class Change:
    """What version 2 does to version 1 of a guest."""

    changed: str  # path of the rewritten file
    added: str  # path of the new file
    removed: str  # path of the file that is gone


# --- helpers ------------------------------------------------------------------------------------------

def _t(when: str) -> int:
    """'2025-04-02 10:15:34' (UTC) -> seconds since the epoch."""
    return int(datetime.fromisoformat(when).replace(tzinfo=timezone.utc).timestamp())


def _f(path: str, when: str, data: bytes | str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> SpecEntry:
    raw = data.encode() if isinstance(data, str) else data
    return SpecEntry(path, "file", mode, _t(when), raw, None, uid, gid)


def _d(path: str, when: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> SpecEntry:
    return SpecEntry(path, "dir", mode, _t(when), b"", None, uid, gid)


def _l(path: str, when: str, target: str, uid: int = 0, gid: int = 0) -> SpecEntry:
    return SpecEntry(path, "symlink", 0o777, _t(when), b"", target, uid, gid)


def _random(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _executable(seed: int, size: int) -> bytes:
    """A PE-looking binary: 'MZ' header then seeded noise."""
    head = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
    return head + _random(seed, size - len(head))


def _paged(seed: int, size: int, page: int, magic: bytes) -> bytes:
    """A database-like file of ``page``-byte pages: each starts with a header naming its page number and a
    little seeded noise, the rest zeros. Every page differs (no two 2 MiB blocks alike) yet the file
    compresses to almost nothing, so a several-MiB file keeps the committed image small."""
    rnd = random.Random(seed)
    out = bytearray()
    n = 0
    while len(out) < size:
        head = magic + n.to_bytes(8, "big") + rnd.randbytes(48)
        out += head + bytes(page - len(head))
        n += 1
    return bytes(out[:size])


def _access_log(seed: int, lines: int, start: str) -> str:
    rnd = random.Random(seed)
    t = _t(start)
    paths = ["/", "/index.html", "/assets/css/site.css", "/assets/js/app.js", "/assets/img/icons/logo.svg",
             "/api/v1/status", "/downloads/catalogue-2025.bin", "/favicon.ico", "/robots.txt"]
    agents = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", "curl/8.5.0",
              "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0", "Prometheus/2.53.0"]
    out = []
    for _ in range(lines):
        t += rnd.randint(1, 40)
        ip = f"10.{rnd.randint(0, 20)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
        when = datetime.fromtimestamp(t, timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
        status = rnd.choice([200, 200, 200, 200, 304, 404, 301])
        out.append(f'{ip} - - [{when}] "GET {rnd.choice(paths)} HTTP/1.1" {status} {rnd.randint(0, 90000)} '
                   f'"-" "{rnd.choice(agents)}"\n')
    return "".join(out)


# --- ext4: an Ubuntu web server -------------------------------------------------------------------------

NGINX_CONF_V1 = """\
user www-data;
worker_processes auto;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;
include /etc/nginx/modules-enabled/*.conf;

events {
\tworker_connections 768;
}

http {
\tsendfile on;
\ttcp_nopush on;
\ttypes_hash_max_size 2048;
\tserver_tokens off;

\tinclude /etc/nginx/mime.types;
\tdefault_type application/octet-stream;

\tssl_protocols TLSv1.2 TLSv1.3;
\tssl_prefer_server_ciphers on;

\taccess_log /var/log/nginx/access.log;
\tgzip on;

\tinclude /etc/nginx/conf.d/*.conf;
\tinclude /etc/nginx/sites-enabled/*;
}
"""

NGINX_CONF_V2 = """\
user www-data;
worker_processes 4;
worker_rlimit_nofile 8192;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log warn;
include /etc/nginx/modules-enabled/*.conf;

events {
\tworker_connections 2048;
\tmulti_accept on;
}

http {
\tsendfile on;
\ttcp_nopush on;
\ttypes_hash_max_size 2048;
\tserver_tokens off;
\tclient_max_body_size 64m;

\tinclude /etc/nginx/mime.types;
\tdefault_type application/octet-stream;

\tssl_protocols TLSv1.3;
\tssl_prefer_server_ciphers on;

\tlog_format timed '$remote_addr [$time_local] "$request" $status $body_bytes_sent $request_time';
\taccess_log /var/log/nginx/access.log timed;
\tgzip on;
\tgzip_types text/css application/javascript application/json;

\tinclude /etc/nginx/conf.d/*.conf;
\tinclude /etc/nginx/sites-enabled/*;
}
"""

SITE_DEFAULT = """\
server {
\tlisten 80 default_server;
\tlisten [::]:80 default_server;
\tlisten 443 ssl default_server;
\tssl_certificate /etc/ssl/certs/site.pem;
\tssl_certificate_key /etc/ssl/private/site.key;

\troot /var/www/html;
\tindex index.html;
\tserver_name www.example.internal;

\tlocation / {
\t\ttry_files $uri $uri/ =404;
\t}
\tlocation /api/ {
\t\tproxy_pass http://127.0.0.1:8080;
\t}
}
"""

GRUB_CFG = """\
search.fs_uuid 6f1c3a52-9e47-4d2b-8a11-3c5e7d9f0b24 root
set prefix=($root)'/boot/grub'
configfile $prefix/grub.cfg
"""

INDEX_HTML = """\
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Example Internal</title>
<link rel="stylesheet" href="/assets/css/site.css"></head>
<body><h1>It works.</h1><p>Served by web-ubuntu-ext4.</p>
<script src="/assets/js/app.js"></script></body>
</html>
"""

OLD_INDEX_HTML = "<html><body><h1>Old home page (2024)</h1></body></html>\n"
MAINTENANCE_HTML = ("<!doctype html>\n<html><body><h1>Down for maintenance</h1>"
                    "<p>Back at 06:00 UTC on 2026-02-14.</p></body></html>\n")

SITE_CSS = "body { font-family: sans-serif; margin: 2em; }\nh1 { color: #1a5fb4; }\n"
APP_JS = "fetch('/api/v1/status').then(r => r.json()).then(s => console.log('status', s));\n"
LOGO_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32">'
            '<circle cx="16" cy="16" r="14" fill="#1a5fb4"/></svg>\n')

FSTAB_EXT4 = """\
LABEL=cloudimg-rootfs\t/\text4\tdiscard,errors=remount-ro\t0 1
LABEL=EFI\t/boot/efi\tvfat\tumask=0077\t0 1
"""

HOSTS_LINUX = """\
127.0.0.1 localhost
127.0.1.1 {host}
10.20.0.15 db01.example.internal db01

# The following lines are desirable for IPv6 capable hosts
::1     ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
"""

NOTES_UMLAUT = ("Überblick Q3 2025\n=================\n\n- Zertifikat erneuert (läuft bis 2026-09-30)\n"
                "- Zugriffszahlen: +12 % gegenüber Q2\n- Nächste Wartung: Februar 2026\n")

DEPLOY_SH = """\
#!/bin/sh
# Deploys the site from the build server.
set -eu
rsync -a --delete build01:/srv/site/ /var/www/html/
nginx -t && systemctl reload nginx
"""


def _ext4(version: int) -> GuestSpec:
    www = 33  # www-data
    ubuntu = 1000
    e = [
        # p1: the EFI system partition (FAT: even seconds, 0o755 dirs, 0o644 files, 0o444 read-only)
        _d("/p1/EFI", "2025-03-10 08:00:00"),
        _d("/p1/EFI/BOOT", "2025-03-10 08:00:02"),
        _f("/p1/EFI/BOOT/BOOTX64.EFI", "2025-03-10 08:00:04", _executable(101, 96 * 1024)),
        _f("/p1/EFI/BOOT/fbx64.efi", "2025-03-10 08:00:06", _executable(102, 40 * 1024)),
        _d("/p1/EFI/ubuntu", "2025-03-10 08:00:08"),
        _f("/p1/EFI/ubuntu/shimx64.efi", "2025-03-10 08:00:10", _executable(103, 64 * 1024)),
        _f("/p1/EFI/ubuntu/grubx64.efi", "2025-03-10 08:00:12", _executable(104, 80 * 1024)),
        _f("/p1/EFI/ubuntu/grub.cfg", "2025-03-10 08:00:14", GRUB_CFG),
        _f("/p1/EFI/ubuntu/BOOTX64.CSV", "2025-03-10 08:00:16",
           "shimx64.efi,ubuntu,,This is the boot entry for ubuntu\n".encode("utf-16-le"), mode=0o444),
        # p2: the root filesystem
        _d("/p2", "2025-03-10 08:05:00"),
        _d("/p2/lost+found", "2025-03-10 08:05:01", mode=0o700),
        _d("/p2/etc", "2025-11-20 14:02:11"),
        _f("/p2/etc/hostname", "2025-03-10 08:06:13", "web-ubuntu-ext4\n"),
        _f("/p2/etc/hosts", "2025-03-10 08:06:17", HOSTS_LINUX.format(host="web-ubuntu-ext4")),
        _f("/p2/etc/fstab", "2025-03-10 08:06:19", FSTAB_EXT4),
        _d("/p2/etc/nginx", "2025-09-02 11:30:05"),
        _f("/p2/etc/nginx/mime.types", "2025-03-12 16:41:22",
           "types {\n    text/html html htm;\n    text/css css;\n    application/javascript js;\n"
           "    image/svg+xml svg;\n    application/octet-stream bin;\n}\n"),
        _d("/p2/etc/nginx/conf.d", "2025-03-12 16:41:30"),
        _f("/p2/etc/nginx/conf.d/.keep", "2025-03-12 16:41:31", b""),
        _d("/p2/etc/nginx/sites-available", "2025-03-12 16:42:07"),
        _f("/p2/etc/nginx/sites-available/default", "2025-09-02 11:29:48", SITE_DEFAULT),
        _d("/p2/etc/nginx/sites-enabled", "2025-03-12 16:42:15"),
        _l("/p2/etc/nginx/sites-enabled/default", "2025-03-12 16:42:14", "/etc/nginx/sites-available/default"),
        _d("/p2/etc/ssl", "2025-03-10 08:07:00"),
        _d("/p2/etc/ssl/private", "2025-09-30 09:12:40", mode=0o710, gid=110),
        _f("/p2/etc/ssl/private/site.key", "2025-09-30 09:12:39", _random(105, 1704), mode=0o640, gid=110),
        _d("/p2/etc/ssl/certs", "2025-09-30 09:12:45"),
        _f("/p2/etc/ssl/certs/site.pem", "2025-09-30 09:12:43", _random(106, 2210)),
        _d("/p2/home", "2025-03-10 08:09:00"),
        _d("/p2/home/ubuntu", "2025-10-06 17:20:31", mode=0o750, uid=ubuntu, gid=ubuntu),
        _f("/p2/home/ubuntu/.bashrc", "2025-03-10 08:09:04", "# ~/.bashrc\nexport EDITOR=vim\nalias ll='ls -alF'\n",
           uid=ubuntu, gid=ubuntu),
        _d("/p2/home/ubuntu/Documents", "2025-10-06 17:21:09", uid=ubuntu, gid=ubuntu),
        _f("/p2/home/ubuntu/Documents/Überblick Q3 2025.txt", "2025-10-06 17:21:08", NOTES_UMLAUT,
           mode=0o600, uid=ubuntu, gid=ubuntu),
        _f("/p2/home/ubuntu/deploy.sh", "2025-06-18 13:44:52", DEPLOY_SH, mode=0o755, uid=ubuntu, gid=ubuntu),
        # a symlink too long to live in the inode (ext4 "slow" symlink, > 60 bytes)
        _l("/p2/home/ubuntu/latest-catalogue", "2025-10-06 17:20:30",
           "/var/www/html/downloads/catalogue-2025.bin.d/../catalogue-2025.bin-with-a-long-link-name",
           uid=ubuntu, gid=ubuntu),
        _d("/p2/tmp", "2025-12-01 03:00:07", mode=0o1777),
        _d("/p2/var", "2025-03-10 08:10:00"),
        _d("/p2/var/log", "2025-03-10 08:10:04", mode=0o775, gid=4),
        _d("/p2/var/log/nginx", "2025-12-01 00:00:09", mode=0o755, uid=www, gid=4),
        _f("/p2/var/log/nginx/access.log", "2025-12-01 06:25:17",
           _access_log(107, 2500, "2025-11-30 00:00:00"), mode=0o640, uid=www, gid=4),
        _f("/p2/var/log/nginx/error.log", "2025-12-01 00:00:08", b"", mode=0o640, uid=www, gid=4),
        _d("/p2/var/www", "2025-03-12 16:50:00"),
        _l("/p2/var/www/current", "2025-03-12 16:50:01", "html"),
        _d("/p2/var/www/html", "2025-11-20 14:03:30", uid=www, gid=www),
        _f("/p2/var/www/html/index.html", "2025-11-20 14:03:29", INDEX_HTML, uid=www, gid=www),
        _f("/p2/var/www/html/old-index.html", "2025-02-03 10:00:44", OLD_INDEX_HTML, uid=www, gid=www),
        _d("/p2/var/www/html/assets", "2025-11-20 14:03:10", uid=www, gid=www),
        _d("/p2/var/www/html/assets/css", "2025-11-20 14:03:12", uid=www, gid=www),
        _f("/p2/var/www/html/assets/css/site.css", "2025-11-20 14:03:11", SITE_CSS, uid=www, gid=www),
        _d("/p2/var/www/html/assets/js", "2025-11-20 14:03:14", uid=www, gid=www),
        _f("/p2/var/www/html/assets/js/app.js", "2025-11-20 14:03:13", APP_JS, uid=www, gid=www),
        _d("/p2/var/www/html/assets/img", "2025-11-20 14:03:18", uid=www, gid=www),
        _d("/p2/var/www/html/assets/img/icons", "2025-11-20 14:03:17", uid=www, gid=www),
        _f("/p2/var/www/html/assets/img/icons/logo.svg", "2025-11-20 14:03:15", LOGO_SVG, uid=www, gid=www),
        _f("/p2/var/www/html/assets/img/hero.jpg", "2025-11-20 14:03:16",
           b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + _random(108, 150_000), uid=www, gid=www),
        _d("/p2/var/www/html/downloads", "2025-11-20 14:03:25", uid=www, gid=www),
        # several MiB: spans four 2 MiB blocks, not a whole number of them
        _f("/p2/var/www/html/downloads/catalogue-2025.bin", "2025-11-20 14:03:24",
           _paged(109, 7 * MiB + 12345, 4096, b"CATALOG1"), uid=www, gid=www),
        _f("/p2/etc/nginx/nginx.conf", "2025-09-02 11:30:04", NGINX_CONF_V1),
    ]
    if version == 2:
        e = _apply(e, changed=_f("/p2/etc/nginx/nginx.conf", "2026-02-13 22:41:06", NGINX_CONF_V2),
                   added=_f("/p2/var/www/html/maintenance.html", "2026-02-13 22:43:52", MAINTENANCE_HTML,
                            uid=www, gid=www),
                   removed="/p2/var/www/html/old-index.html",
                   dirs={"/p2/var/www/html": "2026-02-13 22:43:53"})
    return GuestSpec("ext4", version, "Ubuntu 20.04 web server (nginx)", 64 * MiB, "gpt",
                     (SpecVolume("p1", "fat", 1 * MiB, 16 * MiB, "EFI"),
                      SpecVolume("p2", "ext4", 17 * MiB, 46 * MiB, "cloudimg-rootfs")),
                     tuple(e))


# --- xfs: an EulerOS database server ------------------------------------------------------------------------

POSTGRESQL_CONF_V1 = """\
# PostgreSQL configuration (EulerOS db01)
listen_addresses = '*'
port = 5432
max_connections = 200
shared_buffers = 2GB
effective_cache_size = 6GB
work_mem = 16MB
maintenance_work_mem = 512MB
wal_level = replica
max_wal_size = 4GB
checkpoint_timeout = 15min
log_destination = 'stderr'
logging_collector = on
log_directory = 'log'
log_filename = 'postgresql-%a.log'
timezone = 'Asia/Shanghai'
"""

POSTGRESQL_CONF_V2 = """\
# PostgreSQL configuration (EulerOS db01)
# 2026-02-13: more connections for the new reporting service (CHG-20260213-07)
listen_addresses = '*'
port = 5432
max_connections = 400
shared_buffers = 3GB
effective_cache_size = 8GB
work_mem = 24MB
maintenance_work_mem = 512MB
wal_level = replica
max_wal_size = 8GB
checkpoint_timeout = 15min
log_destination = 'stderr'
logging_collector = on
log_directory = 'log'
log_filename = 'postgresql-%a.log'
log_min_duration_statement = 500
timezone = 'Asia/Shanghai'
"""

PG_HBA = """\
# TYPE  DATABASE  USER      ADDRESS         METHOD
local   all       postgres                  peer
host    all       all       10.20.0.0/16    scram-sha-256
host    replication replica 10.20.0.16/32   scram-sha-256
"""

FSTAB_EULER = """\
/dev/mapper/euleros-root  /      xfs   defaults  0 0
LABEL=boot                /boot  ext2  defaults  1 2
"""

GRUB2_CFG = """\
set default=0
set timeout=5
menuentry 'EulerOS (4.19.90-vhulk2211.3.0.h1543.eulerosv2r10.x86_64)' {
\tlinux /vmlinuz-4.19.90-vhulk2211.3.0.h1543.eulerosv2r10.x86_64 root=/dev/mapper/euleros-root ro rd.lvm.lv=euleros/root
\tinitrd /initramfs-4.19.90-vhulk2211.3.0.h1543.eulerosv2r10.x86_64.img
}
"""

RESUME_NOTES = ("Résumé du schéma — base « ventes »\n\n"
                "Tables: clients (1,2 M lignes), commandes (8,4 M), lignes_commande (31 M)\n"
                "Index à revoir: commandes(date_création), clients(e-mail)\n")

TODO_NOTES = "- vacuum full on lignes_commande (weekend)\n- rotate replica password\n"
MIGRATION_NOTES = ("Migration plan 2026\n-------------------\n1. pg 16 on db02 (test)\n"
                   "2. logical replication db01 -> db02\n3. switch over window: 2026-03-07 01:00-03:00\n")


def _xfs(version: int) -> GuestSpec:
    pg = 26  # postgres
    dba = 1001
    r = "/euleros-root"
    e = [
        # p1: /boot (ext2)
        _d("/p1", "2025-04-01 02:10:00", mode=0o555),
        _d("/p1/lost+found", "2025-04-01 02:10:01", mode=0o700),
        _f("/p1/vmlinuz-4.19.90-vhulk2211.3.0.h1543.eulerosv2r10.x86_64", "2025-03-28 19:22:41",
           _random(201, 120_000), mode=0o755),
        _f("/p1/initramfs-4.19.90-vhulk2211.3.0.h1543.eulerosv2r10.x86_64.img", "2025-04-01 02:14:37",
           _paged(202, 1 * MiB + 777, 2048, b"INITRAMF"), mode=0o600),
        _f("/p1/config-4.19.90-vhulk2211.3.0.h1543.eulerosv2r10.x86_64", "2025-03-28 19:22:43",
           "CONFIG_64BIT=y\nCONFIG_X86_64=y\nCONFIG_XFS_FS=m\nCONFIG_EXT4_FS=m\nCONFIG_BLK_DEV_DM=m\n"),
        _d("/p1/grub2", "2025-04-01 02:15:10", mode=0o700),
        _f("/p1/grub2/grub.cfg", "2025-04-01 02:15:09", GRUB2_CFG, mode=0o600),
        _f("/p1/grub2/grubenv", "2025-04-01 02:15:08", "# GRUB Environment Block\nsaved_entry=0\n" + "#" * 979 + "\n",
           mode=0o600),
        # the LVM logical volume euleros/root (XFS)
        _d(r, "2025-04-01 02:20:00", mode=0o555),
        _d(f"{r}/etc", "2025-12-02 09:14:51"),
        _f(f"{r}/etc/hostname", "2025-04-01 02:21:05", "db-euleros-xfs\n"),
        _f(f"{r}/etc/hosts", "2025-04-01 02:21:09", HOSTS_LINUX.format(host="db-euleros-xfs")),
        _f(f"{r}/etc/fstab", "2025-04-01 02:21:13", FSTAB_EULER),
        _f(f"{r}/etc/euleros-release", "2025-04-01 02:21:15", "EulerOS release 2.0 (SP10)\n"),
        _l(f"{r}/etc/localtime", "2025-04-01 02:21:17", "../usr/share/zoneinfo/Asia/Shanghai"),
        _d(f"{r}/etc/sysconfig", "2025-04-01 02:21:30"),
        _f(f"{r}/etc/sysconfig/network", "2025-04-01 02:21:29", "NETWORKING=yes\nHOSTNAME=db-euleros-xfs\n"),
        _d(f"{r}/home", "2025-04-01 02:22:00"),
        _d(f"{r}/home/dba", "2025-08-19 15:02:33", mode=0o700, uid=dba, gid=dba),
        _f(f"{r}/home/dba/.bash_profile", "2025-04-01 02:22:04", "export PGDATA=/var/lib/pgsql/data\n",
           uid=dba, gid=dba),
        _d(f"{r}/home/dba/notes", "2025-11-04 10:30:10", uid=dba, gid=dba),
        _f(f"{r}/home/dba/notes/résumé du schéma.txt", "2025-11-04 10:30:09", RESUME_NOTES,
           mode=0o640, uid=dba, gid=dba),
        _f(f"{r}/home/dba/notes/todo.txt", "2025-11-04 10:28:55", TODO_NOTES, uid=dba, gid=dba),
        _f(f"{r}/home/dba/backup-check.sh", "2025-08-19 15:02:32",
           "#!/bin/bash\npg_verifybackup /backup/latest || echo 'backup check failed' >&2\n",
           mode=0o750, uid=dba, gid=dba),
        _d(f"{r}/var", "2025-04-01 02:23:00"),
        _d(f"{r}/var/lib", "2025-04-01 02:23:04"),
        _d(f"{r}/var/lib/pgsql", "2025-04-01 02:23:08", mode=0o700, uid=pg, gid=pg),
        _d(f"{r}/var/lib/pgsql/data", "2026-01-10 03:00:12", mode=0o700, uid=pg, gid=pg),
        _f(f"{r}/var/lib/pgsql/data/PG_VERSION", "2025-04-01 02:23:10", "16\n", mode=0o600, uid=pg, gid=pg),
        _f(f"{r}/var/lib/pgsql/data/pg_hba.conf", "2025-04-01 02:23:14", PG_HBA, mode=0o600, uid=pg, gid=pg),
        _f(f"{r}/var/lib/pgsql/data/postmaster.opts", "2026-01-10 03:00:11", b"", mode=0o600, uid=pg, gid=pg),
        _d(f"{r}/var/lib/pgsql/data/base", "2025-04-01 02:23:20", mode=0o700, uid=pg, gid=pg),
        _d(f"{r}/var/lib/pgsql/data/base/16384", "2025-12-28 23:59:40", mode=0o700, uid=pg, gid=pg),
        # several MiB: a table of 8 KiB pages, spanning four 2 MiB blocks
        _f(f"{r}/var/lib/pgsql/data/base/16384/16385", "2025-12-28 23:59:39",
           _paged(203, 6 * MiB + 8192 * 3, 8192, b"PGPAGE16"), mode=0o600, uid=pg, gid=pg),
        _f(f"{r}/var/lib/pgsql/data/base/16384/16385_fsm", "2025-12-28 23:59:38", _random(204, 24576),
           mode=0o600, uid=pg, gid=pg),
        _l(f"{r}/var/lib/pgsql/data/pg_wal", "2025-04-01 02:23:30", "/var/lib/pgsql/wal", uid=pg, gid=pg),
        _f(f"{r}/var/lib/pgsql/data/postgresql.conf", "2025-06-09 08:45:27", POSTGRESQL_CONF_V1,
           mode=0o600, uid=pg, gid=pg),
    ]
    if version == 2:
        e = _apply(e, changed=_f(f"{r}/var/lib/pgsql/data/postgresql.conf", "2026-02-13 21:05:44",
                                 POSTGRESQL_CONF_V2, mode=0o600, uid=pg, gid=pg),
                   added=_f(f"{r}/home/dba/notes/migration-2026.txt", "2026-02-13 21:09:18", MIGRATION_NOTES,
                            uid=dba, gid=dba),
                   removed=f"{r}/home/dba/notes/todo.txt",
                   dirs={f"{r}/home/dba/notes": "2026-02-13 21:09:19"})
    # p2 (the physical volume) starts at 33 MiB; its first extent at 1 MiB into it; 23 extents of 4 MiB
    return GuestSpec("xfs", version, "EulerOS 2.0 SP10 database server (PostgreSQL 16)", 128 * MiB, "mbr",
                     (SpecVolume("p1", "ext2", 1 * MiB, 32 * MiB, "boot"),
                      SpecVolume("p2", "", 33 * MiB, 95 * MiB, ""),
                      SpecVolume("euleros-root", "xfs", 34 * MiB, 92 * MiB, "root")),
                     tuple(e))


# --- ntfs: a Windows file server --------------------------------------------------------------------------

HOSTS_WINDOWS_V1 = """\
# Copyright (c) 1993-2009 Microsoft Corp.
#
# This is a sample HOSTS file used by Microsoft TCP/IP for Windows.
#
# localhost name resolution is handled within DNS itself.
#\t127.0.0.1       localhost
#\t::1             localhost
10.20.0.15\tdb01.example.internal
""".replace("\n", "\r\n")

HOSTS_WINDOWS_V2 = """\
# Copyright (c) 1993-2009 Microsoft Corp.
#
# This is a sample HOSTS file used by Microsoft TCP/IP for Windows.
#
# localhost name resolution is handled within DNS itself.
#\t127.0.0.1       localhost
#\t::1             localhost
10.20.0.15\tdb01.example.internal
10.20.0.16\tdb02.example.internal
10.20.0.30\tbackup01.example.internal
""".replace("\n", "\r\n")

SERVICES_WINDOWS = """\
# Copyright (c) 1993-2004 Microsoft Corp.
echo                7/tcp
ftp                21/tcp
ssh                22/tcp
smtp               25/tcp    mail
http               80/tcp    www www-http
microsoft-ds      445/tcp
""".replace("\n", "\r\n")

SHARES_XML = """\
<?xml version="1.0" encoding="utf-8"?>
<Shares>
  <Share Name="Finance" Path="D:\\Shares\\Finance" Access="FIN-RW" />
  <Share Name="Engineering" Path="D:\\Shares\\Engineering" Access="ENG-RW" />
  <Share Name="Public" Path="D:\\Shares\\Public" Access="Everyone-R" />
</Shares>
""".replace("\n", "\r\n")


def _ntfs(version: int) -> GuestSpec:
    e = [
        _d("/p1", "2025-05-05 07:00:00"),
        _d("/p1/Windows", "2025-05-05 07:01:00"),
        _d("/p1/Windows/System32", "2025-05-05 07:01:10"),
        _d("/p1/Windows/System32/drivers", "2025-05-05 07:01:20"),
        _d("/p1/Windows/System32/drivers/etc", "2025-05-05 07:01:31"),
        _f("/p1/Windows/System32/drivers/etc/services", "2025-05-05 07:01:29", SERVICES_WINDOWS, mode=0o444),
        _f("/p1/Windows/System32/drivers/etc/lmhosts.sam", "2025-05-05 07:01:30",
           "# LMHOSTS sample\r\n102.54.94.97 rhino #PRE #DOM:networking\r\n"),
        _d("/p1/Windows/System32/config", "2025-05-05 07:02:00"),
        _f("/p1/Windows/System32/config/SOFTWARE", "2025-12-30 18:44:02",
           _paged(301, 3 * MiB + 512, 4096, b"regfhbin")),
        _d("/p1/ProgramData", "2025-05-05 07:03:00"),
        _d("/p1/ProgramData/FileServer", "2025-07-21 12:00:41"),
        _f("/p1/ProgramData/FileServer/shares.xml", "2025-07-21 12:00:40", SHARES_XML),
        _d("/p1/Shares", "2025-05-05 07:04:00"),
        _d("/p1/Shares/Finance", "2025-12-19 16:55:03"),
        _f("/p1/Shares/Finance/Année fiscale 2025.xlsx", "2025-12-19 16:55:02",
           b"PK\x03\x04" + _random(302, 48_000)),
        _f("/p1/Shares/Finance/ledger-2025.mdb", "2025-12-19 16:54:10",
           _paged(303, 5 * MiB + 4321, 4096, b"\x00\x01\x00\x00Standard Jet DB")),
        _f("/p1/Shares/Finance/draft.tmp", "2025-12-19 16:40:33", _random(304, 3000)),
        _d("/p1/Shares/Engineering", "2025-10-14 09:33:20"),
        _d("/p1/Shares/Engineering/Projects", "2025-10-14 09:33:19"),
        _d("/p1/Shares/Engineering/Projects/Turbine", "2025-10-14 09:33:18"),
        _d("/p1/Shares/Engineering/Projects/Turbine/Rev C", "2025-10-14 09:33:17"),
        _f("/p1/Shares/Engineering/Projects/Turbine/Rev C/housing.step", "2025-10-14 09:33:16",
           "ISO-10303-21;\r\nHEADER;\r\nFILE_NAME('housing.step','2025-10-14',('eng'),(''),'','','');\r\n"
           "ENDSEC;\r\nDATA;\r\n#1=CARTESIAN_POINT('',(0.,0.,0.));\r\nENDSEC;\r\nEND-ISO-10303-21;\r\n"),
        _d("/p1/Shares/Public", "2025-06-30 11:11:13"),
        _f("/p1/Shares/Public/New Text Document.txt", "2025-06-30 11:11:12", b""),
        _f("/p1/Shares/Public/Read me – Öffnungszeiten.txt", "2025-06-30 11:10:58",
           "Öffnungszeiten des Helpdesks: Mo–Fr 08:00–17:00\r\n".encode("utf-8-sig")),
        _f("/p1/Windows/System32/drivers/etc/hosts", "2025-05-05 07:01:27", HOSTS_WINDOWS_V1),
    ]
    if version == 2:
        e = _apply(e, changed=_f("/p1/Windows/System32/drivers/etc/hosts", "2026-02-13 20:17:35", HOSTS_WINDOWS_V2),
                   added=_f("/p1/Shares/Finance/Q1-2026 report.docx", "2026-02-13 20:25:06",
                            b"PK\x03\x04" + _random(305, 21_000)),
                   removed="/p1/Shares/Finance/draft.tmp",
                   dirs={"/p1/Shares/Finance": "2026-02-13 20:25:07"})
    return GuestSpec("ntfs", version, "Windows Server 2019 file server", 64 * MiB, "mbr",
                     (SpecVolume("p1", "ntfs", 1 * MiB, 63 * MiB, "Data"),),
                     tuple(e))


def _apply(entries: list[SpecEntry], changed: SpecEntry, added: SpecEntry, removed: str,
           dirs: dict[str, str]) -> list[SpecEntry]:
    out = []
    for e in entries:
        if e.path == removed:
            continue
        if e.path == changed.path:
            e = changed
        elif e.path in dirs:
            e = SpecEntry(e.path, e.kind, e.mode, _t(dirs[e.path]), e.data, e.target, e.uid, e.gid)
        out.append(e)
    out.append(added)
    return out


CHANGES = {
    "ext4": Change("/p2/etc/nginx/nginx.conf", "/p2/var/www/html/maintenance.html", "/p2/var/www/html/old-index.html"),
    "xfs": Change("/euleros-root/var/lib/pgsql/data/postgresql.conf", "/euleros-root/home/dba/notes/migration-2026.txt",
                  "/euleros-root/home/dba/notes/todo.txt"),
    "ntfs": Change("/p1/Windows/System32/drivers/etc/hosts", "/p1/Shares/Finance/Q1-2026 report.docx",
                   "/p1/Shares/Finance/draft.tmp"),
}

_BUILDERS = {"ext4": _ext4, "xfs": _xfs, "ntfs": _ntfs}


@lru_cache(maxsize=None)
def guest(name: str, version: int) -> GuestSpec:
    """The known content of one guest version (``name`` in :data:`GUESTS`, ``version`` in :data:`VERSIONS`)."""
    if name not in _BUILDERS or version not in VERSIONS:
        raise KeyError(f"no guest {name!r} version {version!r}")
    return _BUILDERS[name](version)
