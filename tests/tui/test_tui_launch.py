"""Entry points: argument handling, profiles, clear errors instead of tracebacks, clean exit."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from fctui.config import Config, ConfigError, Profile, save_profile
from fctui.cli import build_parser
from fctui.cli.common import UsageError
from fctui.cli.console import run_console, spec_from_args
from fctui.tui.testing import make_app, wait_loaded


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("FCTUI_PASSWORD", raising=False)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_arguments_and_password_from_env(monkeypatch):
    monkeypatch.setenv("FCTUI_PASSWORD", "s3cret")
    spec = spec_from_args(parse("--vrm", "https://vrm:7443", "--user", "ops", "--insecure"), Config())
    assert (spec.url, spec.user, spec.password, spec.verify) == ("https://vrm:7443", "ops", "s3cret", False)
    assert "s3cret" not in repr(spec)


def test_nothing_configured_means_first_run():
    assert spec_from_args(parse(), Config()) is None


def test_profile_is_used_and_flags_override(monkeypatch, tmp_path):
    monkeypatch.setenv("FCTUI_PASSWORD", "pw")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    save_profile(Profile(name="prod", vrm="https://prod:7443", user="ops", site="urn:sites:1"))
    from fctui.config import load_config
    spec = spec_from_args(parse("--ca-file", str(ca)), load_config())
    assert (spec.url, spec.user, spec.site, spec.verify, spec.label) == (
        "https://prod:7443", "ops", "urn:sites:1", str(ca), "prod")


@pytest.mark.parametrize("argv,why", [
    (("--vrm", "https://v:1"), "go together"),
    (("--vrm", "vrm.example", "--user", "u"), "https://"),
    (("--vrm", "https://v:1", "--user", "u", "--ca-file", "/nonexistent/ca.pem"), "does not exist"),
    (("--profile", "nope"), "no profile"),
])
def test_bad_arguments_are_clear_errors(argv, why, monkeypatch):
    monkeypatch.setenv("FCTUI_PASSWORD", "pw")
    with pytest.raises((ConfigError, UsageError), match=why):
        spec_from_args(parse(*argv), Config())


def test_run_tui_without_password_on_no_tty_exits_2(capsys):
    # pytest's stdin is not a terminal: no prompt possible, no FCTUI_PASSWORD -> a one-line error
    rc = run_console(parse("--vrm", "https://v:7443", "--user", "u"))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("fctui: ") and "Traceback" not in err


def test_broken_config_file_exits_2(tmp_path, capsys):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "config.toml").write_text("[profiles.x]\nvrm = 'https://x'\nuser = 'u'\npassword = 'no'\n")
    rc = run_console(parse())
    assert rc == 2 and "not allowed" in capsys.readouterr().err


async def test_hangup_exits_cleanly():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(pilot, app)
        app._hang_up()
        await pilot.pause()
    assert app.return_code == 0


def test_sighup_ends_the_demo_process_without_traceback(tmp_path):
    """A real terminal session (pty): SIGHUP, as when the SSH session drops, ends the app cleanly."""
    pytest.importorskip("pty")
    # The demo's simulator lives in the job agent: isolate its dirs (short: Unix socket paths are
    # limited to ~107 bytes) and shut it down afterwards so no process outlives the test.
    import shutil
    import tempfile
    short = tempfile.mkdtemp(prefix="fd")
    env = dict(os.environ, FCTUI_CONFIG_DIR=str(tmp_path / "c"), TERM="xterm-256color",
               FCTUI_DATA_DIR=f"{short}/data", FCTUI_RUNTIME_DIR=f"{short}/run")
    try:
        _sighup_demo(env)
    finally:
        from fctui.agent import AgentClient
        import asyncio
        try:
            asyncio.run(AgentClient(f"{short}/run/agent.sock").request("shutdown"))
        except Exception:
            pass
        shutil.rmtree(short, ignore_errors=True)


def _sighup_demo(env: dict) -> None:
    import pty
    import time
    code = textwrap.dedent("""
        import sys
        from fctui.tui.launch import run_demo
        sys.exit(run_demo(20))
    """)
    pid, fd = pty.fork()
    if pid == 0:  # child: becomes the app on the pty
        os.execvpe(sys.executable, [sys.executable, "-c", code], env)
    out = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and b"VMs" not in out:
        import select
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    assert b"VMs" in out, out[-2000:]
    os.kill(pid, signal.SIGHUP)
    end = time.monotonic() + 15
    status = None
    while time.monotonic() < end:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            break
        try:
            import select
            if select.select([fd], [], [], 0.2)[0]:
                out += os.read(fd, 65536)
        except OSError:
            time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the app did not exit after SIGHUP")
    os.close(fd)
    assert b"Traceback" not in out
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
