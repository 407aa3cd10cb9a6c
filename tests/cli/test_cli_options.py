"""Global options parse the same wherever they stand on the line, and every command that talks to a VRM reads
profiles like the console does (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fctui.cli import build_parser, main
from fctui.cli.common import connection_from

CONN = ["--vrm", "https://vrm.example:7443", "--user", "ops"]

# command -> (its own arguments, takes --json)
COMMANDS: dict[str, tuple[list[str], bool]] = {
    "check": (["check"], True),
    "backup": (["backup", "web01"], True),
    "restore": (["restore", "20260101-000000-abc", "--to", "new"], True),
    "jobs cleanup": (["jobs", "cleanup"], True),
    "console": ([], False),
}


@pytest.fixture(autouse=True)
def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(cfg))
    monkeypatch.delenv("FCTUI_PASSWORD", raising=False)
    return cfg


def write_profile(cfg: Path, url: str, user: str = "admin", *, default: bool = False, **extra: Any) -> None:
    lines = [f'default_profile = "p"' if default else "", "[profiles.p]", f'vrm = "{url}"', f'user = "{user}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    (cfg / "config.toml").write_text("\n".join(lines) + "\n")


def parsed(argv: list[str]) -> dict[str, Any]:
    ns = build_parser().parse_args(argv)
    conn = connection_from(ns)
    return {"command": ns.func.__name__, "json": bool(getattr(ns, "json", False)),
            "connection": None if conn is None else (conn.url, conn.user, conn.verify, conn.site, conn.label)}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_connection_options_before_and_after_the_command(name: str, tmp_path: Path) -> None:
    own, takes_json = COMMANDS[name]
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    opts = [*CONN, "--ca-file", str(ca)] + (["--json"] if takes_json else [])
    before, after = parsed([*opts, *own]), parsed([*own, *opts])
    assert before == after
    assert before["connection"] == ("https://vrm.example:7443", "ops", str(ca), None, "")
    assert before["json"] is takes_json
    # split: some before, some after
    assert parsed([*CONN[:2], *own, *CONN[2:], *opts[4:]]) == before


@pytest.mark.parametrize("name", list(COMMANDS))
def test_profile_before_after_or_by_default(name: str, _config: Path) -> None:
    own, _ = COMMANDS[name]
    write_profile(_config, "https://prod:7443", "backup-op", site="urn:sites:1", insecure=True)
    want = ("https://prod:7443", "backup-op", False, "urn:sites:1", "p")
    assert parsed(["--profile", "p", *own])["connection"] == want
    assert parsed([*own, "--profile", "p"])["connection"] == want
    assert parsed(own)["connection"] == want   # the only profile is the default, as in the console
    # the command line wins over the profile
    assert parsed([*own, *CONN])["connection"][:2] == ("https://vrm.example:7443", "ops")


def test_an_unknown_profile_is_a_usage_error(capsys: pytest.CaptureFixture[str], _config: Path) -> None:
    write_profile(_config, "https://prod:7443")
    assert main(["--profile", "nope", "check", "--json"]) == 2
    assert "no profile 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, why", [
    (["--vrm", "https://v", "--user", "u", "sim"], "does not connect to a VRM"),
    (["--vrm", "https://v", "--user", "u", "repo", "verify"], "does not connect to a VRM"),
    (["--profile", "p", "points"], "does not connect to a VRM"),
    (["--user", "u", "demo"], "does not connect to a VRM"),
    (["--json"], "has no --json output"),
    (["--json", "sim"], "has no --json output"),
])
def test_global_options_a_command_has_no_use_for_are_refused(argv: list[str], why: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and why in capsys.readouterr().err


def test_json_before_a_command_that_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    assert main(["--json", "points"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["--json", "repo", "gc"]) == 2          # no repository yet: the error as JSON
    assert "error" in json.loads(capsys.readouterr().out)


def _report(out: str) -> dict[str, Any]:
    """What identifies a check of one VRM site (verdicts can change between runs: the simulated VRM's
    tasks go on in real time)."""
    doc = json.loads(out)
    return {"vrm": doc["vrm"]["url"], "site": doc["site"], "filters": doc["filters"], "total_vms": doc["total_vms"],
            "vms": sorted(v["urn"] for v in doc["vms"])}


def test_check_the_same_three_ways(es: Any, _config: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's example: options before the command, after it, or from a profile: the same report."""
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    user = es.sim.config.user
    write_profile(_config, es.url, user)
    reports = []
    for argv in (["--vrm", es.url, "--user", user, "check", "--json"],
                 ["check", "--vrm", es.url, "--user", user, "--json"],
                 ["--profile", "p", "check", "--json"],
                 ["--json", "check"]):       # the only profile, as the console would pick it
        assert main(argv) == 0, argv
        reports.append(_report(capsys.readouterr().out))
    assert reports[0]["total_vms"] > 0 and reports[0]["vrm"] == es.url
    assert all(r == reports[0] for r in reports[1:])


@pytest.mark.parametrize("own", [["backup", "web01"], ["restore", "no-such-point", "--to", "new"]])
def test_backup_and_restore_log_in_to_the_profiles_vrm(own: list[str], es: Any, _config: Path, repo: Any,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong password shows which VRM the command went to: the profile's, before or after the command
    (no agent is started: the login is refused first)."""
    monkeypatch.setenv("FCTUI_PASSWORD", "wrong-password")
    write_profile(_config, es.url, es.sim.config.user)
    extra = ["--repo", str(repo.path)] if own[0] == "restore" else []
    for argv in (["--profile", "p", *own, *extra], [*own, *extra, "--profile", "p"]):
        assert main(argv) == 3, argv
        err = capsys.readouterr().err
        assert f"cannot use VRM {es.url}" in err and "Traceback" not in err


def test_no_vrm_and_no_profile_says_what_to_give(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["backup", "web01"], ["restore", "x", "--to", "new"], ["jobs", "cleanup"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--vrm URL and --user USER, or a profile" in err, argv


def test_check_offers_the_catalogs_verdicts() -> None:
    """`--only` lists the verdicts without importing the rules (cheap --help); they must stay the catalog's."""
    from fctui.cli.check import VERDICTS
    from fctui.rules import catalog
    assert set(VERDICTS) == set(catalog.VERDICTS)


def client_options(argv: list[str]) -> dict[str, Any] | None:
    conn = connection_from(build_parser().parse_args(argv))
    return None if conn is None else conn.client_options()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_user_type_and_proxy_ip_before_after_or_from_the_profile(name: str, _config: Path) -> None:
    """Issue 14: the connection settings reach the VRM client like the other connection options."""
    own, _ = COMMANDS[name]
    write_profile(_config, "https://prod:7443", "op", user_type=0, proxy_ip="10.1.1.1", cbt_bitmap="byte")
    assert client_options(own) == {"user_type": 0, "proxy_ip": "10.1.1.1", "cbt_bitmap": "byte"}
    flags = ["--user-type", "2", "--proxy-ip", "10.2.2.2"]
    want = {"user_type": 2, "proxy_ip": "10.2.2.2", "cbt_bitmap": "byte"}   # the line wins over the profile
    assert client_options([*flags, *own]) == client_options([*own, *flags]) == want
    assert client_options([*flags[:2], *own, *flags[2:]]) == want
    # --vrm/--user name a VRM without the profile: defaults, and what the line says
    assert client_options([*CONN, *own]) == {"user_type": 2, "proxy_ip": None, "cbt_bitmap": "nibble"}
    assert client_options([*own, *CONN, "--user-type", "0"])["user_type"] == 0


@pytest.mark.parametrize("argv, why", [
    (["--proxy-ip", "10.0.0", *CONN, "check"], "--proxy-ip: proxy_ip must be an IP address"),
    (["backup", "web01", *CONN, "--proxy-ip", "vrm.example"], "--proxy-ip: proxy_ip must be an IP address"),
])
def test_a_bad_proxy_ip_is_a_usage_error(argv: list[str], why: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert why in capsys.readouterr().err


@pytest.mark.parametrize("argv, why", [
    (["--user-type", "1", *CONN, "check"], "invalid choice: '1'"),
    (["--user-type", "0", "sim"], "does not connect to a VRM; drop --user-type"),
    (["--proxy-ip", "10.0.0.1", "points"], "does not connect to a VRM; drop --proxy-ip"),
])
def test_user_type_choices_and_commands_without_a_vrm(argv: list[str], why: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and why in capsys.readouterr().err
