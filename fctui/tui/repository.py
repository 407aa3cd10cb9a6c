"""The repository the console reads: the one the CLI's commands would use (fctui.config.repository_spec:
$FCTUI_REPO, else the config's ``repo``, else the data dir's), a directory or s3://bucket/prefix."""

from __future__ import annotations

from ..config import ConfigError, repository_spec
from ..repo import RepoError, Repository
from ..repo.s3config import is_s3_url, preflight


def open_repository(*, create: bool = False) -> Repository:
    try:
        spec = repository_spec(None)
    except ConfigError as e:   # the config file was broken after the console started
        raise RepoError(str(e)) from None
    if is_s3_url(spec):
        preflight(spec)   # a missing bucket or refused keys named as such, in seconds
    return Repository.open(spec, create=create)
