"""Where a repository on S3 is and how to reach it: ``s3://bucket/prefix`` URLs, the credentials as the AWS
ecosystem gives them, and obstore's errors as one line each.

Credentials, in the AWS CLI's order: ``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY`` (+
``AWS_SESSION_TOKEN``) in the environment; else the profile ``AWS_PROFILE`` names (else ``default``) in the
shared credentials file (``AWS_SHARED_CREDENTIALS_FILE``, ``~/.aws/credentials``) or the config file
(``AWS_CONFIG_FILE``, ``~/.aws/config``), read with configparser; else the container and web-identity
variables, which obstore follows itself. Never fctui's config.toml. The endpoint: ``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL``, else the profile's ``endpoint_url`` (none: AWS itself); the region likewise from
``AWS_REGION``/``AWS_DEFAULT_REGION`` or the profile. An ``http://`` endpoint is allowed as given.

Without credentials fctui stops before any request: obstore would otherwise ask the EC2 instance metadata
service, which on a proxy outside AWS means a slow, puzzling failure.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from .errors import RepoError

S3_SCHEME = "s3://"
NO_CREDENTIALS = "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
# Bucket names as AWS, MinIO and Ceph accept them (SeaweedFS accepts these too)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# obstore follows these itself (ECS/EKS task roles, web identity)
_DELEGATED = ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
              "AWS_WEB_IDENTITY_TOKEN_FILE")


class S3ConfigError(RepoError):
    """The repository URL or the S3 credentials are wrong; ``str()`` is one line and holds no secret."""


@dataclass(frozen=True, slots=True)
class S3Location:
    """``s3://bucket/prefix``: the repository's objects are ``prefix/<name>`` in ``bucket``."""
    bucket: str
    prefix: str = ""          # without leading or trailing slash; "" is the bucket's root

    @property
    def url(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{S3_SCHEME}{self.bucket}"


@dataclass(slots=True)
class S3Settings:
    """What opening the store needs, resolved from the environment and the AWS files. ``repr`` hides secrets."""
    endpoint: str | None = None          # None: AWS
    region: str | None = None
    access_key_id: str | None = None     # None: obstore finds them (container/web-identity credentials)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = ""                     # where the credentials came from, for messages: "AWS_ACCESS_KEY_ID", "profile 'x' (path)"

    def store_config(self) -> dict[str, Any]:
        """Keyword arguments of ``obstore.store.S3Store`` (beside bucket, prefix, retry and client options)."""
        out: dict[str, Any] = {}
        if self.endpoint:
            out["endpoint"] = self.endpoint
            if self.endpoint.startswith("http://"):
                out["allow_http"] = True
        if self.region:
            out["region"] = self.region
        if self.access_key_id:
            out["access_key_id"] = self.access_key_id
            out["secret_access_key"] = self.secret_access_key
        if self.session_token:
            out["token"] = self.session_token
        return out

    @property
    def where(self) -> str:
        """The store, for messages: its endpoint, or AWS and its region."""
        return self.endpoint or f"AWS S3{f' ({self.region})' if self.region else ''}"


def is_s3_url(spec: object) -> bool:
    # Lowercase only, as the AWS CLI and Repository.open read it ("S3://x" would be a directory there)
    return isinstance(spec, str) and spec.startswith(S3_SCHEME)


def parse_s3_url(spec: str) -> S3Location:
    """``s3://bucket[/prefix]`` -> S3Location; S3ConfigError says what is wrong (never echoing credentials)."""
    rest = spec[len(S3_SCHEME):]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket:
        # s3://KEY:SECRET@bucket: do not repeat it, it may hold the secret
        raise S3ConfigError("bad repository URL: credentials do not belong in it; set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
    if "?" in rest or "#" in rest:
        raise S3ConfigError(f"bad repository URL {spec!r}: it is s3://BUCKET/PREFIX, without ? or #")
    if not bucket:
        raise S3ConfigError(f"bad repository URL {spec!r}: no bucket (s3://BUCKET/PREFIX)")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise S3ConfigError(f"bad repository URL {spec!r}: {bucket!r} is not a bucket name "
                            "(3-63 lowercase letters, digits, dots and hyphens)")
    parts = prefix.strip("/").split("/") if prefix.strip("/") else []
    if any(p in ("", ".", "..") for p in parts):
        raise S3ConfigError(f"bad repository URL {spec!r}: the prefix has an empty, '.' or '..' part")
    return S3Location(bucket, "/".join(parts))


def _env(env: Mapping[str, str], *names: str) -> str | None:
    for n in names:
        v = env.get(n, "").strip()
        if v:
            return v
    return None


def _read_ini(path: Path) -> configparser.ConfigParser | None:
    """An AWS credentials or config file, None when there is none; S3ConfigError when it cannot be parsed."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        # configparser's message may quote a line of the file: a secret. Say where, not what.
        line = getattr(e, "lineno", None)
        raise S3ConfigError(f"cannot read {path}{f' (line {line})' if line else ''}: "
                            f"{type(e).__name__ if not isinstance(e, OSError) else e.strerror}") from None
    return parser


def s3_settings(env: Mapping[str, str] | None = None) -> S3Settings:
    """The endpoint, region and credentials to use, from ``env`` (default: os.environ) and the AWS files."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    endpoint = _env(env, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    region = _env(env, "AWS_REGION", "AWS_DEFAULT_REGION")
    key_id, secret = _env(env, "AWS_ACCESS_KEY_ID"), _env(env, "AWS_SECRET_ACCESS_KEY")
    if key_id or secret:
        if not (key_id and secret):
            missing = "AWS_SECRET_ACCESS_KEY" if key_id else "AWS_ACCESS_KEY_ID"
            raise S3ConfigError(f"incomplete S3 credentials: {missing} is not set")
        return S3Settings(endpoint, region, key_id, secret, _env(env, "AWS_SESSION_TOKEN"),
                          "AWS_ACCESS_KEY_ID")

    profile = _env(env, "AWS_PROFILE") or "default"
    cred_path = Path(_env(env, "AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials").expanduser()
    conf_path = Path(_env(env, "AWS_CONFIG_FILE") or home / ".aws" / "config").expanduser()
    creds, conf = _read_ini(cred_path), _read_ini(conf_path)
    # The credentials file names sections by profile; the config file "profile NAME" (and "default")
    sections: list[tuple[Path, Mapping[str, str]]] = []
    if creds is not None and creds.has_section(profile):
        sections.append((cred_path, creds[profile]))
    conf_section = profile if profile == "default" else f"profile {profile}"
    if conf is not None and conf.has_section(conf_section):
        sections.append((conf_path, conf[conf_section]))

    def pick(key: str) -> tuple[str | None, Path | None]:
        for path, sec in sections:
            v = sec.get(key, "").strip()
            if v:
                return v, path
        return None, None

    if _env(env, "AWS_PROFILE") and not sections:
        known = sorted({*(creds.sections() if creds else ()),
                        *(s.removeprefix("profile ") for s in (conf.sections() if conf else ()))})
        raise S3ConfigError(f"no AWS profile {profile!r} in {cred_path} or {conf_path} "
                            f"(profiles: {', '.join(known) or 'none'})")
    key_id, key_path = pick("aws_access_key_id")
    secret, secret_path = pick("aws_secret_access_key")
    if sections and (key_id or secret):
        if not (key_id and secret):
            raise S3ConfigError(f"AWS profile {profile!r} ({key_path or secret_path}) needs both "
                                "aws_access_key_id and aws_secret_access_key")
        return S3Settings(endpoint or pick("endpoint_url")[0], region or pick("region")[0], key_id, secret,
                          pick("aws_session_token")[0], f"profile {profile!r} ({key_path})")
    if _env(env, *_DELEGATED):
        return S3Settings(endpoint or pick("endpoint_url")[0], region or pick("region")[0],
                          source="container or web-identity credentials")
    if _env(env, "AWS_PROFILE"):
        raise S3ConfigError(f"AWS profile {profile!r} has no aws_access_key_id and aws_secret_access_key "
                            f"in {cred_path} or {conf_path}")
    raise S3ConfigError(NO_CREDENTIALS)


def open_store(location: S3Location, settings: S3Settings | None = None, **options: Any) -> Any:
    """An ``obstore.store.S3Store`` for the location (objects relative to its prefix); ``options`` are
    S3Store's own (retry_config, client_options). No request is made yet."""
    from obstore.store import S3Store
    settings = settings or s3_settings()
    try:
        return S3Store(location.bucket, prefix=location.prefix or None, **settings.store_config(), **options)
    except Exception as e:  # obstore refuses bad client or retry options here (a bad endpoint only at the first request)
        raise S3ConfigError(f"cannot use the S3 store {settings.where}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def describe_error(e: BaseException, location: S3Location, settings: S3Settings) -> RepoError:
    """One line for an obstore error met on the way to ``location``: unreachable, refused, no bucket, ..."""
    from obstore import exceptions as ox
    text = str(e)
    if "NoSuchBucket" in text:
        return S3ConfigError(f"no bucket {location.bucket!r} at {settings.where} (create it first)")
    if isinstance(e, (ox.PermissionDeniedError, ox.UnauthenticatedError)) or any(
            code in text for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                                      "403 Forbidden")):
        return S3ConfigError(f"{settings.where} refused access to bucket {location.bucket!r} with the "
                             f"credentials from {settings.source or 'the environment'} (wrong key or secret, "
                             "or no permission)")
    if "error sending request" in text or "Connect" in text or "dns error" in text:
        return RepoError(f"cannot reach the S3 endpoint {settings.where}")
    return RepoError(f"S3 error at {location.url}: {_first_line(e)}")


def check_bucket(location: S3Location, settings: S3Settings | None = None) -> None:
    """One LIST request, retried briefly: the endpoint answers, the credentials are accepted and the bucket
    exists; else the S3ConfigError/RepoError saying which.

    Run it before creating a repository (SeaweedFS creates a missing bucket on the first PUT, and a
    mistyped bucket should be an error, not a new bucket) and when repo.json is missing (to say why)."""
    import obstore
    settings = settings or s3_settings()
    # A few seconds, not obstore's default three minutes of retries: this answers a person at a prompt
    store = open_store(location, settings, client_options={"connect_timeout": timedelta(seconds=5)},
                       retry_config={"max_retries": 2, "retry_timeout": timedelta(seconds=10),
                                     "backoff": {"init_backoff": timedelta(milliseconds=100),
                                                 "max_backoff": timedelta(seconds=1), "base": 2}})
    try:
        next(iter(obstore.list(store, chunk_size=1)), None)
    except Exception as e:
        raise describe_error(e, location, settings) from None


def preflight(spec: str) -> S3Location:
    """Before a command opens the repository at ``spec`` (an s3:// URL): the URL, the credentials, and
    one short LIST (endpoint, keys, bucket), so that each of those problems is its own clear line within
    seconds rather than an S3 error after the store's retries."""
    location = parse_s3_url(spec)
    check_bucket(location, s3_settings())
    return location
