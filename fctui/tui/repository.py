"""The repository the console reads: the one the CLI's commands would use (fctui.config.repository_spec:
$FCTUI_REPO, else the config's ``repo``, else the data dir's), a directory or s3://bucket/prefix."""

from __future__ import annotations

from ..config import ConfigError, repository_spec
from ..repo import RepoError, Repository


def open_repository(*, create: bool = False) -> Repository:
    try:
        spec = repository_spec(None)
    except ConfigError as e:   # the config file was broken after the console started
        raise RepoError(str(e)) from None
    return Repository.open(spec, create=create)
