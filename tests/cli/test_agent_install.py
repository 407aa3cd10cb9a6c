"""``fctui agent install --print``: the systemd unit that runs ``fctui agent --service``, on stdout only.

systemd-analyze is not on every machine that runs the tests, so the unit's key lines are checked one by
one against what a hand-written unit for these directories would say.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from fctui.agent.unit import UnitError, unit_word
from fctui.cli import main

SECRET = "Unit-Secret-9x"


def settings(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every setting line, in order (Environment= repeats, so not a dict)."""
    out, section = [], ""
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key, value))
    return out


def one(text: str, section: str, key: str) -> str:
    found = [v for s, k, v in settings(text) if (s, k) == (section, key)]
    assert len(found) == 1, (key, found)
    return found[0]


def print_unit(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    rc = main(["agent", "install", "--print", *args])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


@pytest.fixture
def svc_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    d = {"FCTUI_CONFIG_DIR": str(tmp_path / "cfg"), "FCTUI_DATA_DIR": str(tmp_path / "data"),
         "FCTUI_STATE_DIR": str(tmp_path / "state")}
    for k, v in d.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("FCTUI_PASSWORD", SECRET)
    return d


def test_unit_for_a_profile(capsys: pytest.CaptureFixture[str], svc_dirs: dict[str, str], tmp_path: Path) -> None:
    unit = print_unit(capsys, "--profile", "prod")
    me = getpass.getuser()
    assert [s for s, _, _ in settings(unit)][0] == "Unit"
    assert {s for s, _, _ in settings(unit)} == {"Unit", "Service", "Install"}
    assert one(unit, "Service", "Type") == "simple"
    assert one(unit, "Service", "User") == me
    exec_start = one(unit, "Service", "ExecStart").split(" ")
    assert Path(exec_start[0]).is_absolute() and os.access(exec_start[0], os.X_OK)
    assert exec_start[0] == str(Path(os.path.abspath(sys.executable)).parent / "fctui")   # this venv's
    assert exec_start[1:] == ["agent", "--service", "--profile", "prod"]
    assert one(unit, "Service", "LoadCredential") == "fctui-password:/etc/fctui/vrm-password"
    env = [v for s, k, v in settings(unit) if k == "Environment"]
    assert env == [f"FCTUI_CONFIG_DIR={tmp_path}/cfg", f"FCTUI_DATA_DIR={tmp_path}/data",
                   f"FCTUI_STATE_DIR={tmp_path}/state", "FCTUI_RUNTIME_DIR=/run/fctui"]
    assert one(unit, "Service", "RuntimeDirectory") == "fctui"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "RestartSec") == "30s"
    assert one(unit, "Service", "RestartPreventExitStatus") == "2"   # a wrong password is not retried
    assert one(unit, "Service", "NoNewPrivileges") == "yes"
    assert one(unit, "Service", "PrivateTmp") == "yes"
    assert one(unit, "Service", "ProtectSystem") == "strict"
    assert one(unit, "Service", "ReadWritePaths") == f"{tmp_path}/data {tmp_path}/state"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    # the header says how to install it
    head = "\n".join(line for line in unit.splitlines() if line.startswith("#"))
    for step in ("install -m 600 -o root -g root /dev/null /etc/fctui/vrm-password", "systemctl daemon-reload",
                 "systemctl enable --now fctui-agent.service",
                 f"fctui agent install --print --user {me} --profile prod > /etc/systemd/system/fctui-agent.service",
                 "export FCTUI_RUNTIME_DIR=/run/fctui"):
        assert step in head, step
    assert SECRET not in unit


def test_repo_elsewhere_and_state_inside_data(capsys: pytest.CaptureFixture[str], svc_dirs: dict[str, str],
                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FCTUI_STATE_DIR")   # then the state dir is FCTUI_DATA_DIR/state
    unit = print_unit(capsys, "--profile", "prod", "--repo", str(tmp_path / "backups"))
    assert one(unit, "Service", "ExecStart").endswith(f"agent --service --profile prod --repo {tmp_path}/backups")
    assert f"Environment=FCTUI_STATE_DIR={tmp_path}/data/state" in unit.splitlines()
    # the state dir is inside the data dir: listed once, as the data dir
    assert one(unit, "Service", "ReadWritePaths") == f"{tmp_path}/data {tmp_path}/backups"


def test_repo_on_s3_gets_its_keys_as_a_credential(capsys: pytest.CaptureFixture[str], svc_dirs: dict[str, str]) -> None:
    unit = print_unit(capsys, "--profile", "prod", "--repo", "s3://backups/site-a/")
    assert one(unit, "Service", "ExecStart").endswith("agent --service --profile prod --repo s3://backups/site-a")
    # the keys: a root-only AWS credentials file handed over by systemd, as the password is
    lines = unit.splitlines()
    assert "LoadCredential=aws-credentials:/etc/fctui/aws-credentials" in lines
    assert "Environment=AWS_SHARED_CREDENTIALS_FILE=%d/aws-credentials" in lines   # %d: not escaped
    assert "install -m 600 -o root -g root /dev/null /etc/fctui/aws-credentials" in unit
    # nothing to write locally for the repository
    assert one(unit, "Service", "ReadWritePaths") == f"{svc_dirs['FCTUI_DATA_DIR']} {svc_dirs['FCTUI_STATE_DIR']}"
    # the config's repo counts too (the service reads it): its unit needs the keys as well
    Path(svc_dirs["FCTUI_CONFIG_DIR"]).mkdir(parents=True)
    (Path(svc_dirs["FCTUI_CONFIG_DIR"]) / "config.toml").write_text('repo = "s3://backups/site-b"\n')
    unit = print_unit(capsys, "--profile", "prod")
    assert "LoadCredential=aws-credentials:/etc/fctui/aws-credentials" in unit.splitlines()
    assert main(["agent", "install", "--print", "--profile", "prod", "--repo", "s3://Bad_Bucket"]) == 2
    assert "is not a bucket name" in capsys.readouterr().err


def test_local_repo_has_no_s3_credential(capsys: pytest.CaptureFixture[str], svc_dirs: dict[str, str]) -> None:
    assert "aws" not in print_unit(capsys, "--profile", "prod").lower()


def test_odd_profile_name_and_percent_are_quoted(capsys: pytest.CaptureFixture[str], svc_dirs: dict[str, str]) -> None:
    unit = print_unit(capsys, "--profile", 'site A "50%"')
    assert one(unit, "Service", "ExecStart").endswith(' agent --service --profile "site A \\"50%%\\""')
    assert unit_word("a%b") == "a%%b" and unit_word("/plain/path") == "/plain/path"
    assert unit_word("a b") == '"a b"' and unit_word('back\\slash') == '"back\\\\slash"'
    with pytest.raises(UnitError, match="line break"):
        unit_word("prod\nExecStartPre=/bin/evil")


def test_default_profile_from_the_config(capsys: pytest.CaptureFixture[str], svc_dirs: dict[str, str]) -> None:
    cfg = Path(svc_dirs["FCTUI_CONFIG_DIR"])
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text('default_profile = "b"\n[profiles.a]\nvrm = "https://a:7443"\nuser = "u"\n'
                                     '[profiles.b]\nvrm = "https://b:7443"\nuser = "u"\n')
    unit = print_unit(capsys)
    assert one(unit, "Service", "ExecStart").endswith("agent --service --profile b")


@pytest.mark.parametrize("args,words", [
    ([], ["--print"]),                                            # install without --print
    (["--print"], ["--profile NAME"]),                            # no profile named, none in the config
    (["--print", "--profile", "p", "--user", "no-such-user-x1"], ["no user 'no-such-user-x1'"]),
    (["--print", "--profile", "p\nx"], ["line break"]),
])
def test_usage_errors(capsys: pytest.CaptureFixture[str], svc_dirs: dict[str, str], args: list[str],
                      words: list[str]) -> None:
    assert main(["agent", "install", *args]) == 2
    out = capsys.readouterr()
    assert out.out == ""   # nothing half-printed
    assert len(out.err.strip().splitlines()) == 1 and all(w in out.err for w in words), out.err


def test_vrm_options_belong_in_the_profile(capsys: pytest.CaptureFixture[str], svc_dirs: dict[str, str]) -> None:
    assert main(["--vrm", "https://v:7443", "agent", "install", "--print", "--profile", "p"]) == 2
    assert "drop --vrm" in capsys.readouterr().err


def test_another_service_user_gets_their_home_layout(capsys: pytest.CaptureFixture[str], svc_dirs: dict[str, str]) -> None:
    import pwd
    other = next((p for p in pwd.getpwall() if p.pw_name != getpass.getuser()), None)
    if other is None:
        pytest.skip("no other account on this machine")
    unit = print_unit(capsys, "--user", other.pw_name, "--profile", "prod")
    home = other.pw_dir
    assert one(unit, "Service", "User") == unit_word(other.pw_name)
    assert f"Environment=FCTUI_DATA_DIR={home}/.local/share/fctui" in unit.splitlines()
    assert f"Environment=FCTUI_CONFIG_DIR={home}/.config/fctui" in unit.splitlines()


def test_service_connection_checks_tls_unless_told(tmp_path: Path) -> None:
    """The service's VRM settings from a profile: verification on by default, the CA file, --insecure."""
    import argparse

    from fctui.cli.agent import service_access
    from fctui.cli.common import connection_from
    from fctui.config import parse_config
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = parse_config({"profiles": {
        "plain": {"vrm": "https://v:7443", "user": "u"},
        "ca": {"vrm": "https://v:7443", "user": "u", "ca_file": str(ca), "user_type": 0, "proxy_ip": "10.0.0.5"},
        "lax": {"vrm": "https://v:7443", "user": "u", "insecure": True}}})

    def access(profile: str, **given: Any) -> dict[str, Any]:
        conn = connection_from(argparse.Namespace(profile=profile, **given), cfg)
        assert conn is not None
        return service_access(conn)
    assert access("plain") == {"verify": True, "user_type": 2, "cbt_bitmap": "nibble"}
    assert access("ca") == {"verify": str(ca), "user_type": 0, "proxy_ip": "10.0.0.5", "cbt_bitmap": "nibble"}
    assert access("lax") == {"verify": False, "user_type": 2, "cbt_bitmap": "nibble"}
    assert access("lax", ca_file=str(ca))["verify"] == str(ca)   # a CA file on the line wins over insecure
