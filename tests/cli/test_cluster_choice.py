"""Which jobs' agent a command talks to: ``--cluster URL``, else ``$FCTUI_CLUSTER``, else ``cluster`` in
config.toml, else the local agent -- and what a cluster refuses with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from fctui.agent import AgentClient, job_client
from fctui.agent.cluster_client import ClusterClient
from fctui.cli import build_parser, main
from fctui.cli.common import chosen_cluster
from fctui.config import Config, ConfigError, Profile, cluster_url, load_config, save_profile


@pytest.fixture(autouse=True)
def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(cfg))
    monkeypatch.delenv("FCTUI_CLUSTER", raising=False)
    monkeypatch.delenv("FCTUI_PASSWORD", raising=False)
    return cfg


def chosen(argv: list[str]) -> str | None:
    return chosen_cluster(build_parser().parse_args(argv))


def test_the_flag_wins_over_the_environment_which_wins_over_the_config(_config: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert chosen(["jobs"]) is None and chosen([]) is None          # nothing named: the local agent
    (_config / "config.toml").write_text('cluster = "nats://from-config:4222"\n')
    assert chosen(["jobs"]) == "nats://from-config:4222"
    monkeypatch.setenv("FCTUI_CLUSTER", "nats://from-env:4222")
    assert chosen(["jobs"]) == "nats://from-env:4222"
    for argv in (["jobs", "--cluster", "nats://flag:1"], ["--cluster", "nats://flag:1", "jobs"],
                 ["jobs", "cancel", "J", "--cluster", "nats://flag:1"], ["backup", "web01", "--cluster", "nats://flag:1"],
                 ["--cluster", "nats://flag:1"]):
        assert chosen(argv) == "nats://flag:1", argv


def test_a_cluster_address_is_checked_and_kept_by_save_profile(_config: Path) -> None:
    for bad, why in (("http://nats:4222", "looks like nats://host:4222"), ("nats://", "looks like"),
                     ("nats://u:secret@nats:4222", "no password"), ("nats://h:99999", "not a valid URL")):
        with pytest.raises(ConfigError, match=why):
            cluster_url(bad)
    (_config / "config.toml").write_text("cluster = 4222\n")
    with pytest.raises(ConfigError, match="cluster must be str"):
        load_config()
    (_config / "config.toml").write_text('cluster = "tls://nats.example:4222"\n')
    save_profile(Profile(name="p", vrm="https://vrm:7443", user="ops"))   # rewrites the file
    assert load_config().cluster == "tls://nats.example:4222"
    assert cluster_url(None, Config()) is None


def test_job_client_is_the_cluster_only_when_one_is_named() -> None:
    assert isinstance(job_client(None), AgentClient)
    client = job_client("nats://127.0.0.1:1")
    assert isinstance(client, ClusterClient) and client.url == "nats://127.0.0.1:1"


def test_bad_cluster_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jobs", "--cluster", "http://nats:4222"]) == 2
    assert capsys.readouterr().err.strip() == ("fctui: --cluster: a cluster address looks like nats://host:4222, "
                                               "got 'http://nats:4222'")


def test_an_unreachable_cluster_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["jobs", "--cluster", f"nats://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fctui: cannot reach the cluster at nats://127.0.0.1:{port}") and err.count("\n") == 1


def test_what_a_cluster_does_not_do_is_refused_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backup", "web01", "--demo", "--cluster", "nats://127.0.0.1:1"]) == 2
    assert "the demo simulator lives in the local agent" in capsys.readouterr().err
    assert main(["jobs", "cleanup", "--cluster", "nats://127.0.0.1:1"]) == 2
    assert "the proxies clean up leftovers themselves" in capsys.readouterr().err
