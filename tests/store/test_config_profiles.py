"""Config: XDG location, profiles without passwords, keymap, refresh, business hours."""

from __future__ import annotations

from pathlib import Path

import pytest

from fctui.config import (ConfigError, Profile, config_dir, config_path, load_config, parse_config,
                          save_profile)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_location_env_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path / "a"))
    assert config_dir() == tmp_path / "a"
    monkeypatch.delenv("FCTUI_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "x"))
    assert config_path() == tmp_path / "x" / "fctui" / "config.toml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert config_dir() == tmp_path / "h" / ".config" / "fctui"


def test_missing_file_is_an_empty_first_run_config(tmp_path):
    cfg = load_config(tmp_path / "none.toml")
    assert cfg.is_empty and cfg.profile() is None


def test_full_config(tmp_path):
    cfg = load_config(write(tmp_path, '''
default_profile = "prod"
theme = "textual-light"
refresh_interval = 30
read_only = true
[profiles.prod]
vrm = "https://vrm.example:7443"
user = "ops"
ca_file = "/etc/ca.pem"
[profiles.lab]
vrm = "https://lab:7443"
user = "admin"
insecure = true
[keymap]
"vm.filter" = "f"
"vm.mark" = "space, x"
[business_hours]
days = ["mon", "Tuesday"]
start = "07:30"
end = "19:00"
'''))
    assert cfg.profile().name == "prod" and cfg.profile().ca_file == "/etc/ca.pem"
    assert cfg.profile("lab").insecure
    assert cfg.theme == "textual-light" and cfg.refresh_interval == 30.0 and cfg.read_only
    assert cfg.keymap == {"vm.filter": "f", "vm.mark": "space,x"}
    assert cfg.business_hours.days == ("mon", "tue") and cfg.business_hours.start == "07:30"
    with pytest.raises(ConfigError, match="no profile 'nope'"):
        cfg.profile("nope")


@pytest.mark.parametrize("text,why", [
    ('[profiles.p]\nvrm = "https://v"\nuser = "u"\npassword = "x"\n', "not allowed"),
    ('[profiles.p]\nvrm = "v"\nuser = "u"\n', "https://"),
    ('[profiles.p]\nuser = "u"\n', "needs vrm"),
    ('refresh_interval = 0\n', "refresh_interval"),
    ('refresh_interval = "fast"\n', "refresh_interval must be"),
    ('[keymap]\n"vm.filter" = 3\n', "keymap"),
    ('[business_hours]\nstart = "25:00"\n', "HH:MM"),
    ('[business_hours]\ndays = ["someday"]\n', "days"),
    ('this is = = not toml', "not valid TOML"),
])
def test_bad_config_gives_a_clear_error(tmp_path, text, why):
    with pytest.raises(ConfigError, match=why):
        load_config(write(tmp_path, text))


def test_save_profile_round_trip_and_never_a_password(tmp_path):
    path = tmp_path / "cfg" / "config.toml"
    save_profile(Profile(name="vrm-a", vrm="https://a:7443", user='we"ird\\user'), path=path)
    save_profile(Profile(name="vrm b", vrm="https://b:7443", user="ops", insecure=True, site="urn:sites:1"),
                 path=path, make_default=False)
    cfg = load_config(path)
    assert set(cfg.profiles) == {"vrm-a", "vrm b"}
    assert cfg.default_profile == "vrm-a"
    assert cfg.profiles["vrm-a"].user == 'we"ird\\user'
    assert cfg.profiles["vrm b"].insecure and cfg.profiles["vrm b"].site == "urn:sites:1"
    assert "password" not in path.read_text()


def test_parse_config_rejects_wrong_types():
    with pytest.raises(ConfigError, match="theme must be str"):
        parse_config({"theme": 3})
