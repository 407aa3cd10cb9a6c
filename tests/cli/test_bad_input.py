"""Bad input from a user or a config file: one clear line, a non-zero exit, never a traceback.

The table is what the README's reliability section counts ("bad inputs tried / clean errors"); bad
answers from a VRM are covered where the client reads them (test_client_protocol, test_client_limits).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG_NOT_TOML = "this is = not [toml\n"
CONFIG_WRONG_TYPE = '[profiles.a]\nvrm = 5\nuser = "u"\n'
CONFIG_PASSWORD = '[profiles.a]\nvrm = "https://vrm:7443"\nuser = "u"\npassword = "secret"\n'

# (id, arguments, config.toml text or None, expected exit code, words the one-line error must contain)
CASES = [
    ("vrm-ipv6-unclosed", ["check", "--vrm", "http://[::1", "--user", "u"], None, 2, "not a valid URL"),
    ("vrm-port-out-of-range", ["check", "--vrm", "http://127.0.0.1:99999", "--user", "u"], None, 2,
     "not a valid URL"),
    ("vrm-scheme", ["check", "--vrm", "ftp://vrm", "--user", "u"], None, 2, "http"),
    ("vrm-no-host", ["check", "--vrm", "https://", "--user", "u"], None, 2, "https://"),
    ("ca-file-missing", ["check", "--vrm", "https://127.0.0.1:9", "--user", "u", "--ca-file", "/nonexistent"],
     None, 2, "/nonexistent"),
    ("backup-vrm-ipv6-unclosed", ["backup", "--vrm", "http://[::1", "--user", "u", "vm"], None, 2,
     "not a valid URL"),
    ("backup-vrm-port", ["backup", "--vrm", "http://127.0.0.1:99999", "--user", "u", "vm"], None, 2,
     "not a valid URL"),
    ("restore-target-unknown", ["restore", "P", "--to", "bogus"], None, 2, "--to"),
    ("verify-sample-over-100", ["repo", "verify", "--sample", "200"], None, 2, "--sample"),
    ("prune-negative", ["repo", "prune", "--keep-last", "-1"], None, 2, "--keep-last"),
    ("points-verify-no-repo", ["points", "verify", "../../etc"], None, 2, "no repository"),
    ("forget-no-repo", ["repo", "forget", "nothere"], None, 2, "no repository"),
    ("config-not-toml", ["--vrm", "https://vrm:7443", "--user", "u", "--read-only"], CONFIG_NOT_TOML, 2,
     "config"),
    ("config-wrong-type", ["--read-only"], CONFIG_WRONG_TYPE, 2, "vrm"),
    ("config-holds-password", ["--read-only"], CONFIG_PASSWORD, 2, "password"),
    ("unknown-command", ["frobnicate"], None, 2, "frobnicate"),
]


def run(args: list[str], tmp: Path, config: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FCTUI_DATA_DIR": str(tmp / "data"), "XDG_CONFIG_HOME": str(tmp / "cfg"),
           "XDG_RUNTIME_DIR": str(tmp / "run"), "FCTUI_PASSWORD": "x", "TERM": "dumb"}
    env.pop("FCTUI_CONFIG_DIR", None)  # the config is found through XDG_CONFIG_HOME, as on a user's machine
    (tmp / "run").mkdir(mode=0o700, exist_ok=True)
    if config is not None:
        (tmp / "cfg" / "fctui").mkdir(parents=True, exist_ok=True)
        (tmp / "cfg" / "fctui" / "config.toml").write_text(config)
    return subprocess.run([sys.executable, "-m", "fctui.cli", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60, env=env)


@pytest.mark.parametrize(("args", "config", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], config: str | None, code: int,
                                     words: str) -> None:
    r = run(args, tmp_path, config)
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "Error:" not in out.replace("error:", ""), out
    assert r.returncode == code, out
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    assert words.lower() in last.lower(), out
    assert "\x1b[" not in r.stdout  # the console did not start
