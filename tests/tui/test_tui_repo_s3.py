"""The console reads the repository the CLI would: $FCTUI_REPO or the config's ``repo``, on S3 too
(a real SeaweedFS, fixture ``s3_repo_url``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fctui.repo import RepoError
from fctui.tui.policies_screen import read_points
from fctui.tui.repository import open_repository
from tests.cli.test_repo_s3_cli import fill


def test_the_console_reads_points_from_s3(s3_repo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = fill(s3_repo_url, (("urn:vm:1", "web01"), ("urn:vm:2", "db01")))
    monkeypatch.setenv("FCTUI_REPO", s3_repo_url)
    assert [p.id for p in read_points()] == ids
    repo = open_repository()
    try:
        assert type(repo).__name__ == "S3Repository" and repo.latest_point("urn:vm:2").id == ids[1]
    finally:
        repo.close()


def test_the_config_names_it_and_a_missing_bucket_is_one_line(s3_server: Any, s3_repo_url: str,
                                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FCTUI_REPO", raising=False)
    monkeypatch.setenv("FCTUI_CONFIG_DIR", str(tmp_path))
    (tmp_path / "config.toml").write_text('repo = "s3://no-such-bucket/x"\n')
    with pytest.raises(RepoError) as e:
        read_points()
    assert str(e.value) == f"no bucket 'no-such-bucket' at {s3_server.endpoint} (create it first)"
