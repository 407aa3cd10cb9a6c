"""Several sites on the command line (issue 19): ``--profile a,b``, ``--all-sites``, several ``--vrm``; one
password per VRM (``FCTUI_PASSWORD_<LABEL>`` over ``FCTUI_PASSWORD``); a one-VRM command refuses several."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fctui.cli import build_parser, main
from fctui.cli.common import UsageError, connection_from, connections_from, password_for
from fctui.config import parse_config
from fctui.vrm.credentials import resolve_password, site_password_env

CFG = parse_config({"default_profile": "a", "profiles": {
    "a": {"vrm": "https://vrm-a:7443", "user": "ops"},
    "b": {"vrm": "https://vrm-b:7443", "user": "ops", "insecure": True},
    "dr-site": {"vrm": "https://vrm-c:7443", "user": "dr"}}}, Path("/cfg/config.toml"))


def conns(argv: list[str]) -> list[tuple[str, str, str]]:
    return [(c.label, c.url, c.user) for c in connections_from(build_parser().parse_args(argv), CFG)]


def test_several_sites_are_named_three_ways() -> None:
    assert conns(["check", "--profile", "a,b"]) == [("a", "https://vrm-a:7443", "ops"), ("b", "https://vrm-b:7443", "ops")]
    assert [c[0] for c in conns(["status", "--all-sites"])] == ["a", "b", "dr-site"]
    assert conns(["--vrm", "https://x:7443", "check", "--vrm", "https://Y:8443", "--user", "u"]) == \
        [("", "https://Y:8443", "u")]          # after the command wins, as every global option
    assert conns(["status", "--vrm", "https://x:7443", "--vrm", "https://y:8443", "--user", "u"]) == \
        [("x:7443", "https://x:7443", "u"), ("y:8443", "https://y:8443", "u")]
    # one named site: exactly as before (the default profile; a lone --vrm keeps an empty label)
    assert conns(["check"]) == [("a", "https://vrm-a:7443", "ops")]
    assert conns(["check", "--vrm", "https://x:7443", "--user", "u"]) == [("", "https://x:7443", "u")]
    # the line's TLS options apply to each site
    ns = build_parser().parse_args(["check", "--profile", "a,b", "--insecure"])
    assert [c.verify for c in connections_from(ns, CFG)] == [False, False]


@pytest.mark.parametrize("argv, words", [
    (["check", "--all-sites", "--profile", "a"], "exclude each other"),
    (["check", "--profile", "a,a"], "named twice"),
    (["check", "--vrm", "https://x", "--vrm", "https://x", "--user", "u"], "named twice"),
    (["check", "--profile", "a,nope"], "no profile 'nope'"),
])
def test_contradictions_are_one_line(argv: list[str], words: str) -> None:
    with pytest.raises(Exception, match=words):
        connections_from(build_parser().parse_args(argv), CFG)


def test_a_one_vrm_command_refuses_several(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError, match="backup takes one VRM, not 2 \\(a, b\\)"):
        connection_from(build_parser().parse_args(["backup", "web", "--profile", "a,b"]), CFG, command="backup")
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path))
    (tmp_path / "config.toml").write_text('[profiles.a]\nvrm = "https://a"\nuser = "u"\n'
                                          '[profiles.b]\nvrm = "https://b"\nuser = "u"\n')
    assert main(["backup", "web", "--all-sites"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "takes one VRM, not 2" in err[0]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_password_per_site(monkeypatch: pytest.MonkeyPatch) -> None:
    assert site_password_env("dr-site") == "FCTUI_PASSWORD_DR_SITE"
    assert site_password_env("10.0.0.5:7443") == "FCTUI_PASSWORD_10_0_0_5_7443"
    monkeypatch.setenv("FCTUI_PASSWORD", "shared")
    monkeypatch.setenv("FCTUI_PASSWORD_DR_SITE", "own")
    a, b, dr = connections_from(build_parser().parse_args(["check", "--all-sites"]), CFG)
    assert (password_for(a), password_for(dr)) == ("shared", "own")
    monkeypatch.delenv("FCTUI_PASSWORD")
    with pytest.raises(UsageError, match="no VRM password for ops@a: set FCTUI_PASSWORD_A or FCTUI_PASSWORD"):
        password_for(a)
    prompts: list[str] = []
    assert resolve_password("ops", label="b", stdin=Tty(), getpass_fn=lambda p: prompts.append(p) or "typed") == "typed"
    assert prompts == ["VRM password for ops@b: "]


def test_jobs_are_listed_under_their_site() -> None:
    from fctui.cli.jobs import jobs_by_site
    from fctui.jobs.model import JobRecord
    jobs = [JobRecord.from_dict({"id": "j1", "vrm": "https://VRM-A:7443/"}), JobRecord.from_dict({"id": "j2", "vrm": "https://vrm-c:7443"}),
            JobRecord.from_dict({"id": "j3", "vrm": "https://vrm-a:7443"}), JobRecord.from_dict({"id": "j4", "vrm": "https://other:7443"})]
    sites = connections_from(build_parser().parse_args(["jobs", "--profile", "a,b"]), CFG)
    assert [(c.label, [j.id for j in mine]) for c, mine in jobs_by_site(jobs, sites)] == [("a", ["j1", "j3"]), ("b", [])]
    ns = build_parser().parse_args(["jobs", "--all-sites"])
    assert ns.func.__name__ == "run_jobs" and ns.all_sites
    with pytest.raises(SystemExit):   # cancel names a job, not sites
        build_parser().parse_args(["jobs", "cancel", "J", "--all-sites"])


def test_two_sites_of_one_vrm_ask_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two profiles of one VRM and user (two of its sites): one password, unless each has its own variable."""
    from fctui.cli.sites import passwords
    cfg = parse_config({"profiles": {"x1": {"vrm": "https://vrm-x:7443", "user": "ops", "site": "urn:sites:1"},
                                     "x2": {"vrm": "https://VRM-X:7443/", "user": "ops", "site": "urn:sites:2"},
                                     "y": {"vrm": "https://vrm-y:7443", "user": "ops"}}})
    sites = connections_from(build_parser().parse_args(["status", "--all-sites"]), cfg)
    monkeypatch.delenv("FCTUI_PASSWORD", raising=False)
    monkeypatch.setenv("FCTUI_PASSWORD_X1", "x")
    monkeypatch.setenv("FCTUI_PASSWORD_Y", "y")
    assert passwords(sites) == ["x", "x", "y"]
    monkeypatch.setenv("FCTUI_PASSWORD_X2", "x2")
    assert passwords(sites) == ["x", "x2", "y"]
    monkeypatch.delenv("FCTUI_PASSWORD_Y")
    with pytest.raises(UsageError, match="ops@y"):
        passwords(sites)


def test_the_worst_site_decides_the_exit_code() -> None:
    """status: CRITICAL 2 > UNKNOWN 3 > WARNING 1 > OK 0; check: the highest (3 VRM > 2 settings > 0)."""
    from fctui.cli.sites import worst_check, worst_status
    assert [worst_status(c) for c in ([0, 3], [1, 3], [2, 3], [1, 0], [0, 0], [])] == [3, 3, 2, 1, 0, 0]
    assert [worst_check(c) for c in ([0, 3], [2, 0], [2, 3], [0, 0])] == [3, 2, 3, 0]
