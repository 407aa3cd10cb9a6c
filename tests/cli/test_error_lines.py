"""Issue 15 (friction): a relative --ca-file works (the job agent runs in /); a bad --vrm address, a
runtime dir that is not ours or not usable, a TLS failure: one clear line each, the exit code of
fctui/cli/common.py's conventions, never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from fctui.cli import main
from tests.conftest import AgentProc, small_disks


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fctui.cli", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60,
                          env={**os.environ, "FCTUI_PASSWORD": "x", "TERM": "dumb", **(env or {})})


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, out
    return lines[0]


@pytest.fixture(scope="module")
def tls_sim() -> Iterator[Any]:
    from fctui.sim import EmbeddedSimulator
    with EmbeddedSimulator(small_disks(), tls=True) as es:
        yield es


@pytest.mark.parametrize("args", [
    ["backup", "vm", "--vrm", "http://[::1", "--user", "u"],
    ["backup", "vm", "--vrm", "https://127.0.0.1:99999", "--user", "u"],
    ["restore", "P", "--to", "new", "--vrm", "http://[::1", "--user", "u"],
    ["jobs", "cleanup", "--vrm", "https://127.0.0.1:99999", "--user", "u"],
])
def test_a_bad_vrm_address_is_a_usage_error_of_every_command(args: list[str]) -> None:
    r = run(args)
    assert "not a valid URL" in one_line(r) and r.returncode == 2


def _not_ours(tmp: Path) -> str:
    """A directory owned by another user (as root: handed to nobody; else: / is root's)."""
    if os.getuid() != 0:
        return "/"
    d = tmp / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    return str(d)


@pytest.mark.parametrize("command", [["jobs"], ["jobs", "--json"], ["jobs", "cancel", "J"], ["backup", "vm", "--demo"],
                                     ["restore", "P", "--to", "new", "--demo"], ["agent"]])
@pytest.mark.parametrize("kind", ["not-ours", "under-a-file", "a-file"])
def test_an_unusable_runtime_dir_is_one_line(tmp_path: Path, command: list[str], kind: str) -> None:
    (tmp_path / "file").write_text("")
    where = {"not-ours": _not_ours(tmp_path), "under-a-file": str(tmp_path / "file" / "run"),
             "a-file": str(tmp_path / "file")}[kind]
    r = run(command, {"FCTUI_RUNTIME_DIR": where, "FCTUI_DATA_DIR": str(tmp_path / "data")})
    line = one_line(r)
    assert r.returncode == 1 and "runtime directory" in line and where in line, line


def test_an_untrusted_certificate_is_one_readable_line(tls_sim: Any) -> None:
    r = run(["check", "--vrm", tls_sim.url, "--user", "admin"])
    line = one_line(r)
    assert r.returncode == 3, line
    assert "not trusted: unable to get local issuer certificate; use --ca-file" in line, line
    assert "_ssl.c" not in line and "))" not in line and "[SSL" not in line, line


def test_a_plain_http_port_spoken_to_in_tls_says_so(es: Any) -> None:
    r = run(["check", "--vrm", es.url.replace("http://", "https://"), "--user", "admin"])
    line = one_line(r)
    assert r.returncode == 3 and "TLS handshake" in line and "wrong version number" in line, line
    assert "_ssl.c" not in line and "[SSL" not in line, line


async def test_a_relative_ca_file_reaches_the_agent(tls_sim: Any, agent: AgentProc, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    await agent.start()   # in the test's directory: the CA file is not there
    shutil.copy(tls_sim.ca_file, tmp_path / "vrm-ca.pem")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FCTUI_PASSWORD", tls_sim.sim.config.password)
    async with httpx.AsyncClient(base_url=tls_sim.url, verify=ssl.create_default_context(cafile=tls_sim.ca_file)) as control:
        urn = (await control.get("/sim/edge-cases")).json()["ready"][0]
    rc = await asyncio.to_thread(main, ["backup", urn, "--vrm", tls_sim.url, "--user", tls_sim.sim.config.user,
                                        "--ca-file", "vrm-ca.pem", "--wait", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["state"] == "succeeded", out
