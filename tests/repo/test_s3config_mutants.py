"""fctui.repo.s3config where mutation testing found it unguarded (README, Mutation testing): the exact
one-line errors a person reads for a bad URL, half a key pair, a profile without both keys, an unknown
profile or an unreadable AWS file; the less common sources of settings (AWS_ENDPOINT_URL_S3,
AWS_DEFAULT_REGION, session tokens, AWS_CONFIG_FILE, the ``[default]`` section of the config file,
container/web-identity credentials); the classification of obstore's errors; and the short retry budget
``check_bucket`` gives its one LIST (a few seconds at a prompt, not obstore's three minutes)."""

from __future__ import annotations

import builtins
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from obstore import exceptions as ox

from fctui.repo import RepoError
from fctui.repo import s3config
from fctui.repo.s3config import (
    S3ConfigError, S3Location, S3Settings, check_bucket, describe_error, open_store, parse_s3_url, preflight,
    s3_settings,
)

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
BOTH = "needs both aws_access_key_id and aws_secret_access_key"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def home_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with an empty home (no ~/.aws yet) plus ``extra``."""
    (tmp_path / "home").mkdir(exist_ok=True)
    return {"HOME": str(tmp_path / "home"), **extra}


def aws_dir(env: dict[str, str]) -> Path:
    return Path(env["HOME"]) / ".aws"


@pytest.fixture
def bare_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """os.environ without any AWS_* variable and with an empty home: no credentials anywhere."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    (tmp_path / "home").mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# --- URLs ------------------------------------------------------------------------------------------

def test_credentials_in_the_url_get_the_whole_advice() -> None:
    with pytest.raises(S3ConfigError) as e:
        parse_s3_url(f"s3://AKIAEXAMPLE:{SECRET}@backups/x")
    assert str(e.value) == ("bad repository URL: credentials do not belong in it; set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")


@pytest.mark.parametrize("url, message", [
    ("s3://backups/x#part", "bad repository URL 's3://backups/x#part': it is s3://BUCKET/PREFIX, without ? or #"),
    ("s3://my..bucket/x", "bad repository URL 's3://my..bucket/x': 'my..bucket' is not a bucket name "
                          "(3-63 lowercase letters, digits, dots and hyphens)"),
    ("s3://backups/a/./b", "bad repository URL 's3://backups/a/./b': the prefix has an empty, '.' or '..' part"),
])
def test_bad_url_messages(url: str, message: str) -> None:
    with pytest.raises(S3ConfigError) as e:
        parse_s3_url(url)
    assert str(e.value) == message


@pytest.mark.parametrize("url, prefix", [
    ("s3://backups//", ""),                  # only slashes: the bucket's root
    ("s3://backups///site-a//", "site-a"),   # slashes around the prefix are dropped
    ("s3://backups/X", "X"),                 # a one-letter prefix is kept as written
    ("s3://backups/Xy/z/", "Xy/z"),
])
def test_prefix_edges(url: str, prefix: str) -> None:
    assert parse_s3_url(url) == S3Location("backups", prefix)


# --- credentials from the environment --------------------------------------------------------------

def test_without_an_argument_the_process_environment_is_read(bare_environ: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPROC")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert s3_settings() == S3Settings(access_key_id="AKIAPROC", secret_access_key=SECRET, source="AWS_ACCESS_KEY_ID")


def test_s3_endpoint_default_region_and_session_token_from_the_environment(tmp_path: Path) -> None:
    s = s3_settings(home_env(tmp_path, AWS_ACCESS_KEY_ID="AKIAENV", AWS_SECRET_ACCESS_KEY=SECRET,
                             AWS_SESSION_TOKEN="TOKEN-1", AWS_ENDPOINT_URL_S3="https://s3.site.example",
                             AWS_ENDPOINT_URL="https://generic.site.example", AWS_DEFAULT_REGION="eu-north-1"))
    assert s == S3Settings("https://s3.site.example", "eu-north-1", "AKIAENV", SECRET, "TOKEN-1", "AWS_ACCESS_KEY_ID")
    assert s.store_config() == {"endpoint": "https://s3.site.example", "region": "eu-north-1",
                                "access_key_id": "AKIAENV", "secret_access_key": SECRET, "token": "TOKEN-1"}


def test_a_secret_without_a_key_id_names_the_key_id(tmp_path: Path) -> None:
    with pytest.raises(S3ConfigError) as e:
        s3_settings(home_env(tmp_path, AWS_SECRET_ACCESS_KEY=SECRET))
    assert str(e.value) == "incomplete S3 credentials: AWS_ACCESS_KEY_ID is not set"


# --- credentials from an AWS profile ---------------------------------------------------------------

def test_default_profile_from_the_config_file_named_by_aws_config_file(tmp_path: Path) -> None:
    # The config file names the default profile "[default]" (every other one "[profile NAME]")
    conf = write(tmp_path / "etc" / "aws-config",
                 f"[default]\naws_access_key_id = AKIACONF\naws_secret_access_key = {SECRET}\n"
                 "aws_session_token = TOKEN-2\nregion = ap-south-1\n\n"
                 "[profile other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = z\n")
    s = s3_settings(home_env(tmp_path, AWS_CONFIG_FILE=str(conf)))
    assert s == S3Settings(None, "ap-south-1", "AKIACONF", SECRET, "TOKEN-2", f"profile 'default' ({conf})")


def test_a_profile_with_only_the_key_id_names_the_file_holding_it(tmp_path: Path) -> None:
    env = home_env(tmp_path, AWS_PROFILE="site-a")
    conf = write(aws_dir(env) / "config", "[profile site-a]\naws_access_key_id = AKIASITEA\n")
    with pytest.raises(S3ConfigError) as e:
        s3_settings(env)
    assert str(e.value) == f"AWS profile 'site-a' ({conf}) {BOTH}"


def test_a_profile_with_only_the_secret_names_the_credentials_file(tmp_path: Path) -> None:
    env = home_env(tmp_path, AWS_PROFILE="site-a")
    creds = write(aws_dir(env) / "credentials", f"[site-a]\naws_secret_access_key = {SECRET}\n")
    with pytest.raises(S3ConfigError) as e:
        s3_settings(env)
    assert str(e.value) == f"AWS profile 'site-a' ({creds}) {BOTH}"
    assert SECRET not in str(e.value)


def test_a_profile_with_only_the_secret_in_the_config_file_names_that_file(tmp_path: Path) -> None:
    env = home_env(tmp_path, AWS_PROFILE="site-a")
    conf = write(aws_dir(env) / "config", f"[profile site-a]\naws_secret_access_key = {SECRET}\n")
    with pytest.raises(S3ConfigError) as e:
        s3_settings(env)
    assert str(e.value) == f"AWS profile 'site-a' ({conf}) {BOTH}"
    assert SECRET not in str(e.value)


def test_unknown_profile_without_any_aws_file(tmp_path: Path) -> None:
    env = home_env(tmp_path, AWS_PROFILE="site-x")
    with pytest.raises(S3ConfigError) as e:
        s3_settings(env)
    assert str(e.value) == (f"no AWS profile 'site-x' in {aws_dir(env) / 'credentials'} or "
                            f"{aws_dir(env) / 'config'} (profiles: none)")


# --- container and web-identity credentials (obstore fetches them itself) -------------------------

@pytest.mark.parametrize("variable", ["AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                                      "AWS_WEB_IDENTITY_TOKEN_FILE"])
def test_delegated_credentials_take_endpoint_and_region_from_the_profile(tmp_path: Path, variable: str) -> None:
    env = home_env(tmp_path, **{variable: "/var/run/aws/token"})
    write(aws_dir(env) / "config", "[default]\nregion = eu-south-2\nendpoint_url = https://s3.profile.example\n")
    assert s3_settings(env) == S3Settings("https://s3.profile.example", "eu-south-2",
                                          source="container or web-identity credentials")


def test_delegated_credentials_prefer_the_environment_endpoint_and_region(tmp_path: Path) -> None:
    env = home_env(tmp_path, AWS_WEB_IDENTITY_TOKEN_FILE="/var/run/aws/token",
                   AWS_ENDPOINT_URL="http://minio.env:9000", AWS_REGION="us-west-2")
    write(aws_dir(env) / "config", "[default]\nregion = eu-south-2\nendpoint_url = https://s3.profile.example\n")
    assert s3_settings(env) == S3Settings("http://minio.env:9000", "us-west-2",
                                          source="container or web-identity credentials")


# --- unreadable AWS files: where, never what ------------------------------------------------------

def test_a_line_outside_any_section_is_reported_with_its_line(tmp_path: Path) -> None:
    env = home_env(tmp_path, AWS_PROFILE="p")
    path = write(aws_dir(env) / "credentials", f"aws_secret_access_key = {SECRET}\n[p]\n")
    with pytest.raises(S3ConfigError) as e:
        s3_settings(env)
    assert str(e.value) == f"cannot read {path} (line 1): MissingSectionHeaderError"


def test_a_credentials_path_that_is_a_directory(tmp_path: Path) -> None:
    env = home_env(tmp_path)
    (aws_dir(env) / "credentials").mkdir(parents=True)
    with pytest.raises(S3ConfigError) as e:
        s3_settings(env)
    assert str(e.value) == f"cannot read {aws_dir(env) / 'credentials'}: Is a directory"


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    env = home_env(tmp_path)
    path = aws_dir(env) / "config"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"[default]\nregion = \xff\xfe\n")
    with pytest.raises(S3ConfigError) as e:
        s3_settings(env)
    assert str(e.value) == f"cannot read {path}: UnicodeDecodeError"


def test_the_files_are_read_as_utf8_whatever_the_locale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A machine in the C/POSIX locale without UTF-8 mode: open() without an encoding decodes ASCII only
    def c_locale_open(file: Any, mode: str = "r", *args: Any, encoding: str | None = None, **kw: Any) -> Any:
        return builtins.open(file, mode, *args, encoding=encoding or "ascii", **kw)
    monkeypatch.setattr(s3config, "open", c_locale_open, raising=False)
    env = home_env(tmp_path)
    creds = write(aws_dir(env) / "credentials", "# clé de l'équipe sauvegarde\n"
                                                f"[default]\naws_access_key_id = AKIAUTF\naws_secret_access_key = {SECRET}\n")
    assert s3_settings(env) == S3Settings(None, None, "AKIAUTF", SECRET, None, f"profile 'default' ({creds})")


# --- the store -------------------------------------------------------------------------------------

SITE = S3Settings("https://s3.site-a.example", "eu-west-1", "AKIAEXAMPLE", SECRET, source="AWS_ACCESS_KEY_ID")


def test_open_store_keeps_the_prefix_and_passes_the_options(bare_environ: Path) -> None:
    # bare_environ: the given settings are used as they are, os.environ (no credentials) is not consulted
    store = open_store(S3Location("backups", "site-a/fctui"), SITE, retry_config={"max_retries": 1})
    assert store.prefix == "site-a/fctui"
    assert store.retry_config["max_retries"] == 1


def test_open_store_refusing_an_option_says_which_store(bare_environ: Path) -> None:
    with pytest.raises(S3ConfigError) as e:
        open_store(S3Location("backups"), SITE, client_options={"timeout": "abc"})
    text = str(e.value)
    assert text.startswith("cannot use the S3 store https://s3.site-a.example: ")
    assert '"abc"' in text and "\n" not in text


@pytest.fixture
def listed_stores(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The stores check_bucket lists (the real obstore.list still runs)."""
    import obstore
    real_list = obstore.list
    stores: list[Any] = []

    def recording_list(store: Any, *args: Any, **kwargs: Any) -> Any:
        stores.append(store)
        return real_list(store, *args, **kwargs)
    monkeypatch.setattr(obstore, "list", recording_list)
    return stores


def test_check_bucket_retries_briefly(s3_server: Any, listed_stores: list[Any]) -> None:
    settings = s3_settings({**s3_server.env, "HOME": "/nonexistent"})
    check_bucket(parse_s3_url(s3_server.url("mut/prefix")), settings)
    [store] = listed_stores
    assert store.prefix == "mut/prefix"
    assert store.client_options == {"connect_timeout": "5s"}
    assert store.retry_config == {"max_retries": 2, "retry_timeout": timedelta(seconds=10),
                                  "backoff": {"init_backoff": timedelta(milliseconds=100),
                                              "max_backoff": timedelta(seconds=1), "base": 2.0}}


def test_preflight_returns_the_location(s3_server: Any, bare_environ: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    assert preflight(f"s3://{s3_server.bucket}/pre/flight/") == S3Location(s3_server.bucket, "pre/flight")


def test_preflight_checks_the_url_before_the_credentials(bare_environ: Path) -> None:
    with pytest.raises(S3ConfigError) as e:
        preflight("s3://Backups/x")
    assert "'Backups' is not a bucket name" in str(e.value)


# --- obstore's errors as one line ------------------------------------------------------------------

AT_ENDPOINT = S3Settings("http://127.0.0.1:8333", source="AWS_ACCESS_KEY_ID")
AT_AWS = S3Settings(region="eu-west-1")         # credentials from obstore itself: source ""
LOC = S3Location("backups", "site-a")
REFUSED = "refused access to bucket 'backups' with the credentials from"
WHY = "(wrong key or secret, or no permission)"


@pytest.mark.parametrize("error, settings, cls, message", [
    (ox.GenericError("S3 error: NoSuchBucket: the bucket does not exist"), AT_AWS, S3ConfigError,
     "no bucket 'backups' at AWS S3 (eu-west-1) (create it first)"),
    (ox.PermissionDeniedError("denied by bucket policy"), AT_ENDPOINT, S3ConfigError,
     f"http://127.0.0.1:8333 {REFUSED} AWS_ACCESS_KEY_ID {WHY}"),
    (ox.UnauthenticatedError("token expired"), AT_AWS, S3ConfigError,
     f"AWS S3 (eu-west-1) {REFUSED} the environment {WHY}"),
    (ox.GenericError("Client error: InvalidAccessKeyId"), AT_ENDPOINT, S3ConfigError,
     f"http://127.0.0.1:8333 {REFUSED} AWS_ACCESS_KEY_ID {WHY}"),
    (ox.GenericError("Client error: SignatureDoesNotMatch"), AT_ENDPOINT, S3ConfigError,
     f"http://127.0.0.1:8333 {REFUSED} AWS_ACCESS_KEY_ID {WHY}"),
    (ox.GenericError("Client error: AccessDenied"), AT_ENDPOINT, S3ConfigError,
     f"http://127.0.0.1:8333 {REFUSED} AWS_ACCESS_KEY_ID {WHY}"),
    (ox.GenericError("Client error with status 403 Forbidden: <html>"), AT_ENDPOINT, S3ConfigError,
     f"http://127.0.0.1:8333 {REFUSED} AWS_ACCESS_KEY_ID {WHY}"),
    (ox.GenericError("Generic S3 error: error sending request for url"), AT_ENDPOINT, RepoError,
     "cannot reach the S3 endpoint http://127.0.0.1:8333"),
    (ox.GenericError("Generic S3 error: Connect timed out"), AT_ENDPOINT, RepoError,
     "cannot reach the S3 endpoint http://127.0.0.1:8333"),
    (ox.GenericError("Generic S3 error: dns error: failed to lookup address"), AT_AWS, RepoError,
     "cannot reach the S3 endpoint AWS S3 (eu-west-1)"),
    (ox.GenericError("Generic S3 error: boom\n\nDebug source:\nGeneric { store: \"S3\" }"), AT_ENDPOINT, RepoError,
     "S3 error at s3://backups/site-a: Generic S3 error: boom"),
    (ox.GenericError("\n  first line\nsecond line"), AT_ENDPOINT, RepoError, "S3 error at s3://backups/site-a: first line"),
    (ox.GenericError(""), AT_ENDPOINT, RepoError, "S3 error at s3://backups/site-a: GenericError"),
    (ox.NotFoundError(" \n "), AT_ENDPOINT, RepoError, "S3 error at s3://backups/site-a: NotFoundError"),
])
def test_describe_error(error: BaseException, settings: S3Settings, cls: type, message: str) -> None:
    got = describe_error(error, LOC, settings)
    assert type(got) is cls
    assert str(got) == message
