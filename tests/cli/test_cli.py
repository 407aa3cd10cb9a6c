"""The command line dispatches to the right area and never opens the console by accident."""

import os
import subprocess
import sys

import pytest


def run(*args, env_extra=None, timeout=60):
    env = {**os.environ, **(env_extra or {})}
    env.pop("FCTUI_PASSWORD", None)
    return subprocess.run([sys.executable, "-m", "fctui.cli", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, env=env)


def test_version_and_help_exit_cleanly():
    v = run("--version")
    assert v.returncode == 0 and v.stdout.startswith("fctui ")
    h = run("--help")
    assert h.returncode == 0
    for cmd in ("demo", "sim", "check", "backup", "jobs", "points", "repo", "agent"):
        assert cmd in h.stdout
    assert "\x1b[" not in h.stdout  # no terminal control codes: the console did not start


@pytest.mark.parametrize("args, code, expect", [
    (("points", "--json"), 0, "[]"),
    (("repo", "verify"), 2, "no repository"),
])
def test_subcommands_run_their_own_area(tmp_path, args, code, expect):
    r = run(*args, env_extra={"FCTUI_DATA_DIR": str(tmp_path)})
    assert r.returncode == code, r.stderr
    assert expect in (r.stdout + r.stderr)
    assert "\x1b[" not in r.stdout


def test_check_without_password_is_a_usage_error_not_a_traceback():
    r = run("check", "--vrm", "http://127.0.0.1:9", "--user", "u")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip()


def test_unknown_subcommand_is_a_usage_error():
    r = run("frobnicate")
    assert r.returncode == 2 and "Traceback" not in r.stderr
