"""Issue 14: the connection settings user_type, proxy_ip and cbt_bitmap, from the profile (or a flag)
into every VRM client: the CLI's own, the console's (and its refresh process), and the job agent's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fctui.agent.protocol import AgentError
from fctui.agent.server import client_access
from fctui.cli import build_parser, main
from fctui.cli.common import connection_from
from fctui.cli.console import spec_from_args
from fctui.config import ConfigError, Profile, load_config, parse_config, save_profile
from fctui.tui.source import ConnectSpec, InventoryFeed


def profile(**extra: Any) -> dict[str, Any]:
    return {"profiles": {"p": {"vrm": "https://vrm:7443", "user": "ops", **extra}}}


def test_profile_settings_defaults_parse_and_round_trip(tmp_path: Path) -> None:
    p = parse_config(profile()).profiles["p"]
    assert (p.user_type, p.proxy_ip, p.cbt_bitmap) == (2, None, "nibble")
    p = parse_config(profile(user_type=0, proxy_ip=" 10.0.0.7", cbt_bitmap="byte")).profiles["p"]
    assert (p.user_type, p.proxy_ip, p.cbt_bitmap) == (0, "10.0.0.7", "byte")
    path = tmp_path / "config.toml"
    save_profile(Profile("a", "https://a:7443", "u", user_type=0, proxy_ip="fe80::1", cbt_bitmap="byte"), path=path)
    save_profile(Profile("b", "https://b:7443", "u"), path=path)
    text = path.read_text()
    assert 'user_type = 0\nproxy_ip = "fe80::1"\ncbt_bitmap = "byte"' in text
    assert text.count("user_type") == 1   # defaults are not written
    cfg = load_config(path)
    assert (cfg.profiles["a"].user_type, cfg.profiles["a"].proxy_ip, cfg.profiles["a"].cbt_bitmap) == (0, "fe80::1", "byte")
    assert cfg.profiles["b"] == Profile("b", "https://b:7443", "u")


@pytest.mark.parametrize("extra, why", [
    ({"user_type": 1}, "user_type must be 0 or 2"),
    ({"user_type": "2"}, "user_type must be int"),
    ({"user_type": True}, "user_type must be 0 or 2"),
    ({"proxy_ip": "10.0.0"}, "proxy_ip must be an IP address"),
    ({"proxy_ip": 10}, "proxy_ip must be str"),
    ({"cbt_bitmap": "bit"}, 'cbt_bitmap must be "nibble" or "byte"'),
])
def test_bad_profile_settings_are_config_errors(extra: dict[str, Any], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_config(profile(**extra))


def test_the_console_and_its_refresh_process_use_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", "secret")
    cfg = parse_config(profile(user_type=0, cbt_bitmap="byte"))
    spec = spec_from_args(build_parser().parse_args(["--proxy-ip", "10.3.3.3"]), cfg)
    assert spec is not None
    assert spec.client_options() == {"user_type": 0, "proxy_ip": "10.3.3.3", "cbt_bitmap": "byte"}
    client = InventoryFeed(spec)._make_client()
    assert (client.user_type, client.proxy_ip, client.cbt_bitmap) == ("0", "10.3.3.3", "byte")
    # the refresh process rebuilds the spec from plain arguments: the settings go with them
    from fctui.tui.feedproc import RefreshProcess
    proc = RefreshProcess(spec, lambda m: None, interval=60, keep_refreshing=False)
    try:
        assert ConnectSpec(**proc._args).client_options() == spec.client_options()
    finally:
        proc._conn.close()
        proc._theirs.close()


def test_agent_requests_carry_them_and_the_agent_checks_them() -> None:
    ns = build_parser().parse_args(["--vrm", "https://vrm:7443", "--user", "u", "--user-type", "0",
                                    "--proxy-ip", "10.4.4.4", "backup", "web01"])
    conn = connection_from(ns)
    assert conn is not None
    req = {"vrm": conn.url, "user": conn.user, "password": "x", "verify": conn.verify, **conn.client_options()}
    assert client_access(req) == {"verify": True, "user_type": 0, "proxy_ip": "10.4.4.4", "cbt_bitmap": "nibble"}
    assert client_access({"verify": False}) == {"verify": False}   # an older client: the defaults
    for bad, why in ((dict(user_type=1), "user_type must be 0 or 2"), (dict(user_type=True), "user_type"),
                     (dict(proxy_ip="x"), "proxy_ip must be an IP address"), (dict(cbt_bitmap="bit"), "cbt_bitmap")):
        with pytest.raises(AgentError, match=why):
            client_access(bad)


def test_backup_submits_them_to_the_agent(es: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`fctui backup` logs in with the user type and hands all three settings to the agent."""
    sent: list[tuple[str, dict[str, Any]]] = []

    class Agent:
        async def request(self, op: str, **fields: Any) -> dict[str, Any]:
            sent.append((op, fields))
            return {"ok": True, "job": "j1"}

        async def close(self) -> None:
            pass

    async def job_agent(cluster: str | None = None, **kw: Any) -> Agent:
        assert cluster is None   # no cluster named: the local agent
        return Agent()

    monkeypatch.setattr("fctui.agent.job_agent", job_agent)
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(cfg))
    (cfg / "config.toml").write_text(f'[profiles.p]\nvrm = "{es.url}"\nuser = "{es.sim.config.user}"\n'
                                     'cbt_bitmap = "byte"\nproxy_ip = "10.5.5.5"\n')
    assert main(["backup", "web01", "--user-type", "2"]) == 0, capsys.readouterr().err
    op, fields = sent[0]
    assert op == "submit" and fields["targets"] == ["web01"]
    assert {k: fields[k] for k in ("user_type", "proxy_ip", "cbt_bitmap")} == \
        {"user_type": 2, "proxy_ip": "10.5.5.5", "cbt_bitmap": "byte"}
    assert client_access(fields)["cbt_bitmap"] == "byte"


def test_check_logs_in_with_the_profiles_user_type(es: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The simulator's "operator" account is of type 0: it logs in only when the profile (or the flag)
    says so."""
    op = next(u for u in es.sim.config.users if u.user_type == 0)
    monkeypatch.setenv("FCTUI_PASSWORD", op.password)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(cfg))
    (cfg / "config.toml").write_text(f'[profiles.p]\nvrm = "{es.url}"\nuser = "{op.name}"\nuser_type = 0\n')
    assert main(["check", "--json"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["check", "--json", "--user-type", "2"]) == 3
    assert "user type" in capsys.readouterr().err
