"""``fctui policy list|show|add|edit|remove|export|import``: every subcommand, bad input refused with one
line and exit 2 with nothing stored, the TOML round trip, an edit that keeps what it was not given.
(``policy run`` against the simulator: test_policy_run_cli.py.)"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fctui.cli import build_parser, main
from fctui.cli.policy import run_policy_list, run_policy_show

UTC = timezone.utc


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLUMNS", "160")   # the table fits the terminal: give every test the same one
    monkeypatch.setenv("FCTUI_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def fctui(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    got = capsys.readouterr()
    return rc, got.out, got.err


def stored(data_dir: Path) -> str:
    """The store's file as bytes on disk: unchanged means nothing was stored."""
    path = data_dir / "policies.json"
    return path.read_text() if path.exists() else ""


def shown(capsys: pytest.CaptureFixture[str], name: str) -> dict[str, object]:
    rc, out, _ = fctui(capsys, "policy", "show", name, "--json")
    assert rc == 0
    return json.loads(out)


DB = ["policy", "add", "db", "--vms", "re:^db-", "--schedule", "mon-fri 01:00,03:00", "--rpo", "1d",
      "--window", "daily 22:00-06:00", "--keep-daily", "7", "--keep-weekly", "4", "--full-every", "10"]


def test_add_list_show(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = fctui(capsys, "policy", "list")
    assert rc == 0 and out.startswith("no policies")
    assert fctui(capsys, *DB)[0] == 0
    rc, out, err = fctui(capsys, "policy", "add", "web", "--vms", "host:cna-01", "--schedule", "daily 12:00",
                         "--rpo", "12h", "--disable")
    assert (rc, out.strip(), err) == (0, "added policy web", "")

    rc, out, _ = fctui(capsys, "policy", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "VMS", "SCHEDULE", "WINDOW", "RPO", "RETENTION", "ENABLED"]
    assert lines[1].split() == ["db", "re:^db-", "mon-fri", "01:00,03:00", "daily", "22:00-06:00", "1d",
                                "daily=7", "weekly=4", "yes"]
    assert lines[2].split() == ["web", "host:cna-01", "daily", "12:00", "any", "time", "12h", "keep", "all", "no"]

    rc, out, _ = fctui(capsys, "policy", "list", "--json")
    docs = {p["name"]: p for p in json.loads(out)["policies"]}
    assert docs["db"]["rpo_s"] == 86400 and docs["db"]["keep-daily"] == 7 and docs["db"]["full_every"] == 10
    assert docs["web"]["enabled"] is False and docs["web"]["window"] is None

    d = shown(capsys, "db")
    assert (d["vms"], d["schedule"], d["window"], d["rpo"], d["enabled"]) == \
        ("re:^db-", "mon-fri 01:00,03:00", "daily 22:00-06:00", "1d", True)
    assert shown(capsys, "web")["next_runs"] == []   # disabled: the schedule does not run it


def test_list_fits_the_terminal_width(capsys: pytest.CaptureFixture[str]) -> None:
    long = "re:^(" + "|".join(f"db-{i:02d}" for i in range(30)) + ")$"
    assert fctui(capsys, "policy", "add", "many", "--vms", long, "--schedule", "daily 01:00", "--rpo", "1d")[0] == 0
    out = io.StringIO()
    assert run_policy_list(build_parser().parse_args(["policy", "list"]), out=out, width=72) == 0
    lines = out.getvalue().splitlines()
    assert all(len(ln) <= 72 for ln in lines), lines
    assert "re:^(db-00|" in lines[1] and "…" in lines[1] and lines[1].rstrip().endswith("yes")


def test_show_prints_the_next_three_runs_in_local_time(capsys: pytest.CaptureFixture[str]) -> None:
    # a cron time outside the window moves to the window's opening: noon -> 22:00 the same day
    assert fctui(capsys, "policy", "add", "night", "--vms", "re:.", "--schedule", "cron 0 12 * * *",
                 "--window", "daily 22:00-06:00", "--rpo", "2d", "--keep-last", "3")[0] == 0
    ns = build_parser().parse_args(["policy", "show", "night"])
    out = io.StringIO()
    now = datetime(2026, 1, 5, 12, 30, tzinfo=UTC).timestamp()   # Monday 12:30 UTC
    assert run_policy_show(ns, out=out, now=now, tz=UTC) == 0
    text = out.getvalue()
    assert "next runs   2026-01-05 22:00 +0000\n            2026-01-06 22:00 +0000\n" \
           "            2026-01-07 22:00 +0000\n" in text, text
    for line in ("name        night", "vms         re:.", "schedule    cron 0 12 * * *",
                 "window      daily 22:00-06:00", "rpo         2d", "retention   last=3", "enabled     yes"):
        assert line in text, text
    # in another zone the same schedule is the same wall-clock times
    tz = timezone(timedelta(hours=1))
    out = io.StringIO()
    assert run_policy_show(ns, out=out, now=now, tz=tz) == 0
    assert "next runs   2026-01-05 22:00 +0100\n" in out.getvalue()


@pytest.mark.parametrize("argv, words", [
    (["policy", "add", "x", "--vms", "re:.", "--schedule", "daily 25:00", "--rpo", "1d"], "bad time '25:00'"),
    (["policy", "add", "x", "--vms", "re:.", "--schedule", "someday 01:00", "--rpo", "1d"], "unknown days"),
    (["policy", "add", "x", "--vms", "re:.", "--schedule", "cron 0 2 * *", "--rpo", "1d"], "five fields"),
    (["policy", "add", "x", "--vms", "re:.", "--schedule", "daily 01:00"], "'rpo' is required"),
    (["policy", "add", "x", "--vms", "re:.", "--schedule", "daily 01:00", "--rpo", "soon"], "rpo 'soon'"),
    (["policy", "add", "x", "--vms", "re:(", "--schedule", "daily 01:00", "--rpo", "1d"], "vms 're:('"),
    (["policy", "add", "x y", "--vms", "re:.", "--schedule", "daily 01:00", "--rpo", "1d"], "policy name"),
    (["policy", "add", "x", "--vms", "re:.", "--schedule", "daily 13:00", "--rpo", "1d",
      "--window", "daily 22:00-06:00"], "outside its window"),
    (["policy", "add", "db", "--vms", "re:.", "--schedule", "daily 01:00", "--rpo", "1d"], "exists already"),
    (["policy", "show", "nope"], "no policy named 'nope' (policies: db)"),
    (["policy", "edit", "nope", "--rpo", "1h"], "no policy named 'nope'"),
    (["policy", "edit", "db", "--schedule", "daily 12:00"], "outside its window"),
    (["policy", "edit", "db"], "give at least one setting"),
    (["policy", "remove", "nope"], "no policy named 'nope'"),
])
def test_bad_input_is_one_line_exit_2_and_stores_nothing(capsys: pytest.CaptureFixture[str], data_dir: Path,
                                                         argv: list[str], words: str) -> None:
    assert fctui(capsys, *DB)[0] == 0
    before = stored(data_dir)
    rc, out, err = fctui(capsys, *argv)
    assert rc == 2, (out, err)
    assert words in err and err.count("\n") == 1 and err.startswith("fctui: "), err
    assert "Traceback" not in err and out == ""
    assert stored(data_dir) == before


def test_bad_option_values_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["policy", "add", "x", "--vms", "re:.", "--schedule", "daily 01:00", "--rpo", "1d", "--keep-last", "-1"])
    assert e.value.code == 2 and "must be 0 or more" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["policy", "add", "x", "--enable", "--disable"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_edit_changes_only_what_is_given(capsys: pytest.CaptureFixture[str]) -> None:
    assert fctui(capsys, *DB, "--disable")[0] == 0
    before = shown(capsys, "db")
    rc, out, _ = fctui(capsys, "policy", "edit", "db", "--rpo", "12h", "--keep-weekly", "0")
    assert rc == 0 and out.strip() == "changed policy db: keep-weekly, rpo"
    after = shown(capsys, "db")
    assert after["rpo"] == "12h" and after["rpo_s"] == 43200 and "keep-weekly" not in after
    expect = dict(before, rpo="12h", rpo_s=43200.0, retention="daily=7")
    expect.pop("keep-weekly")
    assert after == expect   # window, schedule, vms, keep-daily, full-every, disabled, created: as they were
    assert fctui(capsys, "policy", "edit", "db", "--enable", "--window", "any", "--schedule", "daily 12:00")[0] == 0
    again = shown(capsys, "db")
    assert (again["enabled"], again["window"], again["schedule"], again["keep-daily"]) == (True, None, "daily 12:00", 7)


def test_remove(capsys: pytest.CaptureFixture[str]) -> None:
    assert fctui(capsys, *DB)[0] == 0
    rc, out, _ = fctui(capsys, "policy", "remove", "db")
    assert rc == 0 and out.startswith("removed policy db")
    assert fctui(capsys, "policy", "list")[1].startswith("no policies")


def test_export_import_round_trip(capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path) -> None:
    assert fctui(capsys, *DB)[0] == 0
    assert fctui(capsys, "policy", "add", "web", "--vms", "host:cna-01 !rule:template", "--schedule",
                 "cron 30 2 * * 6,0", "--rpo", "1w", "--keep-last", "2", "--disable")[0] == 0
    originals = {n: shown(capsys, n) for n in ("db", "web")}
    rc, toml_text, _ = fctui(capsys, "policy", "export")
    assert rc == 0 and toml_text.count("[[policy]]") == 2 and 'name = "db"' in toml_text
    path = tmp_path / "p.toml"
    rc, out, err = fctui(capsys, "policy", "export", str(path))
    assert rc == 0 and out == "" and path.read_text() == toml_text

    for n in ("db", "web"):
        assert fctui(capsys, "policy", "remove", n)[0] == 0
    rc, out, _ = fctui(capsys, "policy", "import", str(path))
    assert (rc, out.strip()) == (0, "added 2, replaced 0")
    for n, d in originals.items():
        back = shown(capsys, n)
        assert {k: v for k, v in back.items() if k != "created"} == {k: v for k, v in d.items() if k != "created"}
    # importing again replaces by name
    rc, out, _ = fctui(capsys, "policy", "import", str(path))
    assert (rc, out.strip()) == (0, "added 0, replaced 2")


@pytest.mark.parametrize("text, words", [
    ("[[policy]\nname = 'x'", "not valid TOML"),
    ("[[policy]]\nname = 'new'\nvms = 're:.'\nschedule = 'daily 01:00'\nrpo = '1d'\n"
     "[[policy]]\nname = 'bad'\nvms = 're:.'\nschedule = 'daily 25:00'\nrpo = '1d'\n", "bad time"),
    ("[[policy]]\nname = 'new'\nvms = 're:.'\nschedule = 'daily 01:00'\nrpo = '1d'\nkeep-dialy = 3\n",
     "unknown setting(s) keep-dialy"),
    ("[[policy]]\nname = 'db'\nvms = 're:.'\nschedule = 'daily 01:00'\nrpo = '1d'\n"
     "[[policy]]\nname = 'db'\nvms = 're:x'\nschedule = 'daily 01:00'\nrpo = '1d'\n", "given twice: db"),
    ("title = 'x'\n", "expected only [[policy]] tables"),
])
def test_import_of_bad_toml_stores_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path,
                                           text: str, words: str) -> None:
    assert fctui(capsys, *DB)[0] == 0
    before = stored(data_dir)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    rc, out, err = fctui(capsys, "policy", "import", str(path))
    assert rc == 2 and words in err and out == "", err
    assert stored(data_dir) == before   # the valid 'new' of the second case was not added either


def test_import_of_a_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = fctui(capsys, "policy", "import", str(tmp_path / "none.toml"))
    assert rc == 2 and "cannot read" in err and "No such file" in err


def test_policy_commands_refuse_connection_options_and_json_where_meaningless(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--vrm", "https://vrm:7443", "--user", "u", "policy", "list"])
    assert e.value.code == 2 and "does not connect to a VRM" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--json", "policy", "remove", "x"])
    assert e.value.code == 2 and "has no --json output" in capsys.readouterr().err
