"""A repository on S3 from the command line: ``--repo s3://bucket/prefix``, ``$FCTUI_REPO`` and the
config's ``repo`` name it (in that order); what is wrong on the way (a bad URL, no credentials, an
unreachable endpoint, a missing bucket) is one line and exit 2, as the other repository errors; the
commands work on it as on a directory, and never print a secret. The real CLI in a subprocess against a
real SeaweedFS (fixture ``s3_repo_url``)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.repo.test_s3_gc import newest_chunk, wait_store_clock_past
from tests.servers import sim_control

from fctui.repo import Repository
from fctui.repo.s3 import CLOCK_SLACK_S

BS = 4096


def run(*args: str, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``fctui ARGS`` with this process's environment (the fixtures' AWS_* and FCTUI_* dirs) plus ``env``,
    minus the ``drop`` variables."""
    base = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run([sys.executable, "-m", "fctui.cli", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60, env={**base, "TERM": "dumb", **(env or {})})


def one_error(r: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (no traceback, nothing else), without the prefix."""
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, out
    assert r.returncode == 2, out
    return lines[0].removeprefix("fctui: error: ").removeprefix("fctui: ")


def fill(spec: str, vms: tuple[tuple[str, str], ...] = (("urn:vm:1", "web01"), ("urn:vm:2", "db01"),
                                                        ("urn:vm:1", "web01"))) -> list[str]:
    """Restore points in the repository ``spec`` (a directory or an s3:// URL), written through the API."""
    repo = Repository.open(spec)
    rng = random.Random(spec)
    ids = []
    try:
        for vm, name in vms:
            with repo.new_point(vm_urn=vm, vm_name=name, job_id="j", kind="cbt", vm_config={"cpu": 1},
                                snapshot_urn="s", created=time.time()) as pw:
                dw = pw.add_disk(volume_urn=f"{vm}:vol", disk_name="sda", sequence_num=1, pci_type="VIRTIO",
                                 size_bytes=8 * BS, block_size=BS, storage_type="LOCAL", datastore_urn="ds",
                                 cbt=None, base_point_id=None)
                for i in range(0, 8, 2):
                    dw.put_block(i, rng.randbytes(BS))
                ids.append(pw.commit().id)
    finally:
        repo.close()
    return ids


def keys_under(url: str) -> set[str]:
    """The object keys below the repository URL's prefix, read from the store (the environment's AWS_*)."""
    import obstore
    from obstore.store import S3Store

    from fctui.repo.s3config import parse_s3_url, s3_settings
    loc = parse_s3_url(url)
    store = S3Store(loc.bucket, **s3_settings().store_config())
    return {m["path"].removeprefix(loc.prefix + "/") for batch in obstore.list(store, prefix=loc.prefix)
            for m in batch}


def point_ids(r: subprocess.CompletedProcess[str]) -> list[str]:
    assert r.returncode == 0, r.stdout + r.stderr
    return [p["id"] for p in json.loads(r.stdout)]


def write_config(dirs: dict[str, str], text: str) -> None:
    cfg = Path(dirs["FCTUI_CONFIG_DIR"])
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text(text)


# --- which repository (directories: no S3 needed) ---------------------------------------------------

def test_repo_option_then_environment_then_config(dirs: dict[str, str], tmp_path: Path) -> None:
    a, b, c = (str(tmp_path / n) for n in ("a", "b", "c"))
    in_a, in_b, in_c = fill(a, (("urn:vm:1", "web01"),)), fill(b, (("urn:vm:2", "db01"),)), fill(c, (("urn:vm:3", "x"),))
    write_config(dirs, f'repo = "{a}"\n')
    assert point_ids(run("points", "--json")) == in_a
    assert point_ids(run("points", "--json", env={"FCTUI_REPO": b})) == in_b
    assert point_ids(run("points", "--json", "--repo", c, env={"FCTUI_REPO": b})) == in_c
    r = run("repo", "verify", env={"FCTUI_REPO": b})
    assert r.returncode == 0 and "checked 4 of 4 chunks" in r.stdout and "1 restore points" in r.stdout


def test_a_named_repository_that_is_not_there_is_an_error(dirs: dict[str, str], tmp_path: Path) -> None:
    # Without any setting, `fctui points` on a fresh machine lists nothing; a named repository must exist
    r = run("points", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    assert one_error(run("points", env={"FCTUI_REPO": str(tmp_path / "none")})).startswith(
        f"no repository at {tmp_path / 'none'}")


@pytest.mark.parametrize("value, says", [
    ('"backups"', "repo must be an absolute directory or s3://BUCKET/PREFIX, got 'backups'"),
    ('"https://s3.example/backups"', "repo must be an absolute directory or s3://BUCKET/PREFIX"),
    ('"s3://AKIAEXAMPLE:topsecret@backups/x"', "repo must not hold credentials"),
    ("42", "repo must be str"),
])
def test_a_bad_config_repo_is_one_line(dirs: dict[str, str], value: str, says: str) -> None:
    write_config(dirs, f"repo = {value}\n")
    for args in (("points",), ("repo", "gc"), ("agent", "--foreground")):
        line = one_error(run(*args))
        assert says in line and "config.toml" in line and "topsecret" not in line, (args, line)


# --- S3: what can go wrong -----------------------------------------------------------------------------

def test_bad_url(s3_repo_url: str) -> None:
    for args in (("points",), ("repo", "verify"), ("repo", "gc"), ("repo", "forget", "x"), ("files", "list", "P"),
                 ("agent", "--foreground")):
        line = one_error(run(*args, "--repo", "s3://Not_A_Bucket/x"))
        assert line.startswith("bad repository URL 's3://Not_A_Bucket/x': 'Not_A_Bucket' is not a bucket name"), (args, line)


def test_missing_credentials(s3_repo_url: str, tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    drop = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE")
    for args in (("points", "--repo", s3_repo_url), ("repo", "gc", "--repo", s3_repo_url),
                 ("agent", "--foreground", "--repo", s3_repo_url)):
        line = one_error(run(*args, env={"HOME": str(tmp_path / "home")}, drop=drop))
        assert line == "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE", args
    r = run("repo", "verify", "--repo", s3_repo_url, "--json", env={"HOME": str(tmp_path / "home")}, drop=drop)
    assert r.returncode == 2 and json.loads(r.stdout) == {
        "error": "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"}


def test_unreachable_endpoint(s3_repo_url: str) -> None:
    from tests.servers import free_port
    endpoint = f"http://127.0.0.1:{free_port()}"
    line = one_error(run("repo", "verify", "--repo", s3_repo_url, env={"AWS_ENDPOINT_URL": endpoint}))
    assert line == f"cannot reach the S3 endpoint {endpoint}"


def test_missing_bucket(s3_repo_url: str, s3_server: Any) -> None:
    for args in (("points",), ("repo", "verify")):
        line = one_error(run(*args, "--repo", "s3://no-such-bucket/site-a"))
        assert line == f"no bucket 'no-such-bucket' at {s3_server.endpoint} (create it first)", args


def test_wrong_secret_is_not_printed(s3_repo_url: str, s3_server: Any) -> None:
    line = one_error(run("points", "--repo", s3_repo_url, env={"AWS_SECRET_ACCESS_KEY": "not-the-secret-42"}))
    assert line.startswith(f"{s3_server.endpoint} refused access to bucket 'fctui'")
    assert "not-the-secret-42" not in line


def test_no_repository_under_the_prefix_yet(s3_repo_url: str) -> None:
    assert one_error(run("repo", "verify", "--repo", s3_repo_url)).startswith(f"no repository at {s3_repo_url}")


# --- S3: the commands ------------------------------------------------------------------------------------

def test_the_repo_commands_on_s3(s3_repo_url: str, s3_server: Any, dirs: dict[str, str]) -> None:
    ids = fill(s3_repo_url)
    # on the store, not in a directory named "s3:"
    assert not Path("s3:").exists()
    assert {"repo.json", "catalog.json", *(f"points/{i}.json" for i in ids)} <= keys_under(s3_repo_url)
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    outputs = []

    def ok(*args: str, env: dict[str, str] | None = None) -> str:
        r = run(*args, env=env)
        outputs.append(r.stdout + r.stderr)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    assert [p["id"] for p in json.loads(ok("points", "--json", "--repo", s3_repo_url))] == ids
    # the same repository named by the environment, then by the config
    assert [p["id"] for p in json.loads(ok("points", "web01", "--json", env={"FCTUI_REPO": s3_repo_url}))] == [ids[0], ids[2]]
    write_config(dirs, f'repo = "{s3_repo_url}"\n')
    out = ok("repo", "verify")
    assert "checked 12 of 12 chunks" in out and "no damage found" in out
    # gc keeps chunks younger than CLOCK_SLACK_S on the store's clock (a running backup may be reusing
    # them), and these commands can all run within that: wait until the store says fill's chunks are old.
    store = Repository.open(s3_repo_url)
    try:
        wait_store_clock_past(store, newest_chunk(store) + CLOCK_SLACK_S)
    finally:
        store.close()
    out = ok("repo", "prune", "--keep-last", "1", "--vm", "web01")
    assert f"removed {ids[0]}" in out and "removed 1 restore point(s)" in out
    assert "gc: 4 chunk(s) deleted" in out, out
    assert json.loads(ok("repo", "gc", "--json"))["chunks_removed"] == 0   # prune collected them already
    ok("repo", "forget", ids[1])
    assert [p["id"] for p in json.loads(ok("points", "--json"))] == [ids[2]]
    assert f"points/{ids[0]}.json" not in keys_under(s3_repo_url)
    assert all(secret not in o for o in outputs)


def test_keys_from_an_aws_profile(s3_repo_url: str, s3_server: Any, tmp_path: Path) -> None:
    """No AWS_* keys in the environment: AWS_PROFILE names a section of ~/.aws/credentials (with the
    endpoint and region, which fctui also reads there) and every request of the command uses it."""
    ids = fill(s3_repo_url, (("urn:vm:1", "web01"),))
    assert "repo.json" in keys_under(s3_repo_url)
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\nendpoint_url = {s3_server.endpoint}\n\n"
        f"[backup]\naws_access_key_id = {s3_server.env['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {s3_server.env['AWS_SECRET_ACCESS_KEY']}\n"
        f"endpoint_url = {s3_server.endpoint}\nregion = us-east-1\n")
    drop = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ALLOW_HTTP")
    env = {"HOME": str(home), "AWS_PROFILE": "backup"}
    assert point_ids(run("points", "--json", "--repo", s3_repo_url, env=env, drop=drop)) == ids
    r = run("repo", "verify", "--repo", s3_repo_url, env=env, drop=drop)
    assert r.returncode == 0 and "no damage found" in r.stdout, r.stdout + r.stderr
    # the default profile's keys are wrong: without AWS_PROFILE they are used, and refused
    line = one_error(run("points", "--repo", s3_repo_url, env={"HOME": str(home)}, drop=drop))
    assert line.startswith(f"{s3_server.endpoint} refused access to bucket 'fctui' with the credentials from "
                           f"profile 'default' ({home / '.aws' / 'credentials'})")


# --- the agent writes to S3 ----------------------------------------------------------------------------

async def test_backup_through_the_agent_lands_on_s3(es: Any, s3_repo_url: str, dirs: dict[str, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """$FCTUI_REPO names the S3 repository; the on-demand agent started with it backs a VM up there, and the
    CLI reads the point back from the store (listed, verified)."""
    import asyncio

    import httpx

    from fctui.cli import main
    from tests.cli.test_job_results import one_disk_vm
    from tests.conftest import AgentProc
    monkeypatch.setenv("FCTUI_REPO", s3_repo_url)
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    agent = AgentProc(dirs)   # its environment now holds FCTUI_REPO and the store's AWS_*
    try:
        async with sim_control(es.url) as control:
            urn = await one_disk_vm(control, es)
            await agent.start()
            rc = await asyncio.to_thread(main, ["backup", urn, "--vrm", es.url, "--user", es.sim.config.user,
                                                "--wait"])
        assert rc == 0
    finally:
        agent.stop()
    points = json.loads(run("points", "--json").stdout)
    assert [p["vm_urn"] for p in points] == [urn]
    keys = keys_under(s3_repo_url)
    assert f"points/{points[0]['id']}.json" in keys and any(k.startswith("chunks/") for k in keys)
    assert not Path(dirs["FCTUI_DATA_DIR"], "repo").exists()   # nothing in the local default place
    r = run("points", "verify", points[0]["id"])
    assert r.returncode == 0, r.stdout + r.stderr


# --- file-level restore from S3 ---------------------------------------------------------------------------

def test_files_list_and_get_from_a_point_on_s3(s3_repo_url: str, tmp_path: Path) -> None:
    """``fctui files`` reads a point's guest filesystem in place from the store (an ext4 behind an MBR)."""
    from tests.files.ext4_points import make_ext4, mbr_disk, store_point
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hosts").write_bytes(b"127.0.0.1 localhost\n")
    image = tmp_path / "fs.img"
    make_ext4(src, image)
    repo = Repository.open(s3_repo_url)
    try:
        point = store_point(repo, mbr_disk(image))
    finally:
        repo.close()
    r = run("files", point, "/p1/etc", "--repo", s3_repo_url)
    assert r.returncode == 0 and "hosts" in r.stdout, r.stdout + r.stderr
    r = run("files", "get", point, "/p1/etc/hosts", "--to", str(tmp_path / "out"), "--repo", s3_repo_url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "out" / "hosts").read_bytes() == b"127.0.0.1 localhost\n"


def test_a_relative_directory_is_made_absolute(dirs: dict[str, str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The on-demand agent inherits $FCTUI_REPO and is started in /: a relative directory must not move."""
    from fctui.config import repository_spec
    (tmp_path / "work").mkdir()
    ids = fill(str(tmp_path / "work" / "backups"), (("urn:vm:1", "web01"),))
    monkeypatch.chdir(tmp_path / "work")
    assert repository_spec("backups") == str(tmp_path / "work" / "backups")
    monkeypatch.setenv("FCTUI_REPO", "backups")
    assert repository_spec(None) == str(tmp_path / "work" / "backups")
    assert point_ids(run("points", "--json")) == ids
