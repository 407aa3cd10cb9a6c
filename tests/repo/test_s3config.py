"""fctui.repo.s3config: repository URLs, S3 credentials from the environment or an AWS profile, and the
one-line errors met on the way to a real store (SeaweedFS, fixture ``s3_server``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fctui.repo import RepoError
from fctui.repo.s3config import (
    NO_CREDENTIALS, S3ConfigError, S3Location, check_bucket, is_s3_url, parse_s3_url, s3_settings,
)

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


# --- URLs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, bucket, prefix", [
    ("s3://backups", "backups", ""),
    ("s3://backups/", "backups", ""),
    ("s3://backups/site-a", "backups", "site-a"),
    ("s3://backups/site-a/fctui/", "backups", "site-a/fctui"),
    ("s3://my.bucket-1/x", "my.bucket-1", "x"),
])
def test_url_parts(url: str, bucket: str, prefix: str) -> None:
    assert is_s3_url(url)
    assert parse_s3_url(url) == S3Location(bucket, prefix)


@pytest.mark.parametrize("url, says", [
    ("s3://", "no bucket"),
    ("s3:///prefix", "no bucket"),
    ("s3://Backups/x", "is not a bucket name"),
    ("s3://ab/x", "is not a bucket name"),
    ("s3://bad_bucket/x", "is not a bucket name"),
    ("s3://backups/a//b", "empty, '.' or '..' part"),
    ("s3://backups/a/../b", "empty, '.' or '..' part"),
    ("s3://backups/x?versionId=1", "without ? or #"),
])
def test_bad_urls_say_why(url: str, says: str) -> None:
    with pytest.raises(S3ConfigError, match="bad repository URL") as e:
        parse_s3_url(url)
    assert says in str(e.value)
    assert "\n" not in str(e.value)


def test_credentials_in_the_url_are_refused_without_repeating_them() -> None:
    with pytest.raises(S3ConfigError) as e:
        parse_s3_url(f"s3://AKIAEXAMPLE:{SECRET}@backups/x")
    assert SECRET not in str(e.value) and "AKIAEXAMPLE" not in str(e.value)
    assert "AWS_ACCESS_KEY_ID" in str(e.value)


def test_directories_are_not_s3_urls() -> None:
    assert not is_s3_url("/srv/backups")
    assert not is_s3_url("s3-archive/x")   # a relative directory whose name starts with s3
    assert not is_s3_url("S3://backups")   # as Repository.open reads it: a directory named "S3:"
    assert not is_s3_url(None)


# --- credentials -----------------------------------------------------------------------------------

def env_with(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with an empty home (no ~/.aws) plus ``extra``."""
    (tmp_path / "home").mkdir(exist_ok=True)
    return {"HOME": str(tmp_path / "home"), **extra}


def test_no_credentials_anywhere(tmp_path: Path) -> None:
    with pytest.raises(S3ConfigError) as e:
        s3_settings(env_with(tmp_path))
    assert str(e.value) == NO_CREDENTIALS == ("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                                              "or AWS_PROFILE")


def test_keys_from_the_environment(tmp_path: Path) -> None:
    s = s3_settings(env_with(tmp_path, AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY=SECRET,
                             AWS_ENDPOINT_URL="http://127.0.0.1:8333", AWS_REGION="eu-west-1"))
    assert s.store_config() == {"endpoint": "http://127.0.0.1:8333", "allow_http": True, "region": "eu-west-1",
                                "access_key_id": "AKIAEXAMPLE", "secret_access_key": SECRET}
    assert SECRET not in repr(s)


def test_half_a_key_pair_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(S3ConfigError, match="AWS_SECRET_ACCESS_KEY is not set"):
        s3_settings(env_with(tmp_path, AWS_ACCESS_KEY_ID="AKIAEXAMPLE"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_profile_from_the_credentials_and_config_files(tmp_path: Path) -> None:
    env = env_with(tmp_path, AWS_PROFILE="site-a")
    aws = Path(env["HOME"]) / ".aws"
    write(aws / "credentials", f"[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = x\n\n"
                               f"[site-a]\naws_access_key_id = AKIASITEA\naws_secret_access_key = {SECRET}\n")
    write(aws / "config", "[profile site-a]\nregion = eu-central-1\nendpoint_url = https://s3.site-a.example\n")
    s = s3_settings(env)
    assert (s.access_key_id, s.secret_access_key) == ("AKIASITEA", SECRET)
    assert (s.endpoint, s.region) == ("https://s3.site-a.example", "eu-central-1")
    assert "allow_http" not in s.store_config()
    assert s.source == f"profile 'site-a' ({aws / 'credentials'})"


def test_default_profile_without_aws_profile_and_files_named_by_the_environment(tmp_path: Path) -> None:
    creds = write(tmp_path / "elsewhere" / "creds", f"[default]\naws_access_key_id = AKIADEF\n"
                                                    f"aws_secret_access_key = {SECRET}\nendpoint_url = http://minio:9000\n")
    s = s3_settings(env_with(tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(creds), AWS_CONFIG_FILE=str(tmp_path / "none")))
    assert (s.access_key_id, s.endpoint) == ("AKIADEF", "http://minio:9000")
    assert s.store_config()["allow_http"] is True


def test_the_environment_wins_over_a_profile(tmp_path: Path) -> None:
    env = env_with(tmp_path, AWS_PROFILE="site-a", AWS_ACCESS_KEY_ID="AKIAENV", AWS_SECRET_ACCESS_KEY=SECRET)
    write(Path(env["HOME"]) / ".aws" / "credentials", "[site-a]\naws_access_key_id = AKIAFILE\n"
                                                      "aws_secret_access_key = y\n")
    assert s3_settings(env).access_key_id == "AKIAENV"


def test_unknown_profile_lists_the_known_ones(tmp_path: Path) -> None:
    env = env_with(tmp_path, AWS_PROFILE="nope")
    write(Path(env["HOME"]) / ".aws" / "credentials", f"[default]\naws_access_key_id = A\naws_secret_access_key = {SECRET}\n")
    write(Path(env["HOME"]) / ".aws" / "config", "[profile site-b]\nregion = us-east-1\n")
    with pytest.raises(S3ConfigError, match=r"no AWS profile 'nope' in .*credentials or .*config \(profiles: default, site-b\)"):
        s3_settings(env)


def test_profile_without_keys(tmp_path: Path) -> None:
    env = env_with(tmp_path, AWS_PROFILE="site-b")
    write(Path(env["HOME"]) / ".aws" / "config", "[profile site-b]\nregion = us-east-1\n")
    with pytest.raises(S3ConfigError, match="AWS profile 'site-b' has no aws_access_key_id"):
        s3_settings(env)


def test_a_broken_credentials_file_is_named_but_not_quoted(tmp_path: Path) -> None:
    env = env_with(tmp_path, AWS_PROFILE="p")
    # a line outside any section: configparser's own message would quote it, secret and all
    path = write(Path(env["HOME"]) / ".aws" / "credentials", f"aws_secret_access_key = {SECRET}\n[p]\n")
    with pytest.raises(S3ConfigError) as e:
        s3_settings(env)
    assert str(path) in str(e.value) and SECRET not in str(e.value)


# --- a real store ----------------------------------------------------------------------------------

def settings_for(server: Any, **override: str) -> Any:
    env = {**server.env, "HOME": "/nonexistent", **override}
    return s3_settings(env)


def test_check_bucket_accepts_the_store(s3_server: Any) -> None:
    check_bucket(parse_s3_url(s3_server.url("some/prefix")), settings_for(s3_server))


def test_missing_bucket(s3_server: Any) -> None:
    with pytest.raises(S3ConfigError) as e:
        check_bucket(parse_s3_url("s3://no-such-bucket/x"), settings_for(s3_server))
    assert str(e.value) == f"no bucket 'no-such-bucket' at {s3_server.endpoint} (create it first)"


def test_wrong_secret(s3_server: Any) -> None:
    with pytest.raises(S3ConfigError) as e:
        check_bucket(parse_s3_url(s3_server.url("x")), settings_for(s3_server, AWS_SECRET_ACCESS_KEY=SECRET))
    assert str(e.value).startswith(f"{s3_server.endpoint} refused access to bucket 'fctui' with the credentials "
                                   "from AWS_ACCESS_KEY_ID")
    assert SECRET not in str(e.value)


def test_unreachable_endpoint(s3_server: Any) -> None:
    from tests.servers import free_port
    endpoint = f"http://127.0.0.1:{free_port()}"   # nothing listens there
    with pytest.raises(RepoError) as e:
        check_bucket(parse_s3_url(s3_server.url("x")), settings_for(s3_server, AWS_ENDPOINT_URL=endpoint))
    assert str(e.value) == f"cannot reach the S3 endpoint {endpoint}"
