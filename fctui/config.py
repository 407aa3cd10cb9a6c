"""User configuration: connection profiles (never passwords), the repository, keymap, theme, refresh,
business hours, cluster.

File: ``$FCTUI_CONFIG_DIR/config.toml``, else ``$XDG_CONFIG_HOME/fctui/config.toml``, else
``~/.config/fctui/config.toml``. ``FCTUI_CONFIG_DIR`` exists so tests and snapshot runs never read
the user's real settings. Example::

    default_profile = "prod"
    theme = "textual-light"
    refresh_interval = 15          # seconds between inventory refreshes
    read_only = false
    repo = "s3://backups/fctui"    # the repository: a directory or s3://BUCKET/PREFIX (default: the data
                                   # dir's repo). S3 credentials come from AWS_* or ~/.aws, never from here.
    cluster = "nats://nats.example:4222"   # jobs run by the cluster's proxies (fctui.cluster); else the local agent

    [profiles.prod]
    vrm = "https://vrm.example:7443"
    user = "backup-operator"
    ca_file = "/etc/ssl/vrm-ca.pem"   # or: insecure = true
    site = "urn:sites:4D9D0815"       # optional
    user_type = 2                     # X-Auth-UserType of the account: 2 (default) or 0
    proxy_ip = "10.0.0.5"             # our address for backup resources (default: the route to the VRM)
    cbt_bitmap = "nibble"             # getcbt bitmap hex layout: "nibble" (default) or "byte"

    [keymap]                          # binding id = key(s), comma separated
    "vm.filter" = "f"
    "vm.mark" = "space,x"

    [business_hours]
    days = ["mon", "tue", "wed", "thu", "fri"]
    start = "08:00"
    end = "18:00"
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_ENV = "FCTUI_CONFIG_DIR"
CLUSTER_ENV = "FCTUI_CLUSTER"
CLUSTER_SCHEMES = ("nats://", "tls://")
CONFIG_FILE = "config.toml"
REPO_ENV = "FCTUI_REPO"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WORKDAYS = ("mon", "tue", "wed", "thu", "fri")
_SECRET_KEYS = {"password", "pass", "passwd", "secret", "token", "key"}
# Connection settings of a profile (vrm-api.md §16): the X-Auth-UserType values clients of real VRMs
# send, and the two readings of a getcbt bitmap (fctui.vrm.models.CBT_BITMAP_ORDERS).
USER_TYPES = (0, 2)
CBT_BITMAPS = ("nibble", "byte")


class ConfigError(ValueError):
    """The config file is unreadable or wrong; ``str()`` names the file and the problem."""


@dataclass(slots=True)
class Profile:
    name: str
    vrm: str
    user: str
    insecure: bool = False
    ca_file: str | None = None
    site: str | None = None
    api_version: str | None = None
    user_type: int = 2                # X-Auth-UserType: 2 (OpenStack drivers, Go SDKs) or 0 (Commvault, FCC)
    proxy_ip: str | None = None       # the requester's ip of backup resources; None: the route to the VRM
    cbt_bitmap: str = "nibble"        # how getcbt's bitMap hex maps to blocks: "nibble" or "byte"
    host_snapshot_gate: bool = False  # no CBT snapshot on a host while one of our resources is prepared there


@dataclass(slots=True)
class BusinessHours:
    days: tuple[str, ...] = WORKDAYS
    start: str = "08:00"
    end: str = "18:00"


@dataclass(slots=True)
class Config:
    profiles: dict[str, Profile] = field(default_factory=dict)
    default_profile: str | None = None
    theme: str | None = None
    refresh_interval: float = 15.0
    read_only: bool = False
    keymap: dict[str, str] = field(default_factory=dict)
    business_hours: BusinessHours | None = None
    repo: str | None = None           # a directory or s3://bucket/prefix; None: the data dir's repo
    cluster: str | None = None        # NATS URL of the cluster whose proxies run the jobs (None: the local agent)
    path: Path | None = None

    def profile(self, name: str | None = None) -> Profile | None:
        """The named profile, else the default one, else the only one; None when there is none."""
        if name:
            try:
                return self.profiles[name]
            except KeyError:
                known = ", ".join(sorted(self.profiles)) or "none"
                raise ConfigError(f"no profile {name!r} in {self.path} (profiles: {known})") from None
        if self.default_profile and self.default_profile in self.profiles:
            return self.profiles[self.default_profile]
        if len(self.profiles) == 1:
            return next(iter(self.profiles.values()))
        return None

    @property
    def is_empty(self) -> bool:
        return not self.profiles


def config_dir() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "fctui"


def config_path() -> Path:
    return config_dir() / CONFIG_FILE


def _want(table: dict, key: str, typ: type | tuple[type, ...], where: str) -> Any:
    v = table.get(key)
    if v is not None and not isinstance(v, typ):
        names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise ConfigError(f"{where}: {key} must be {names}, got {type(v).__name__}")
    return v


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def parse_config(data: dict[str, Any], path: Path | None = None) -> Config:
    where = str(path) if path else "config"
    cfg = Config(path=path)
    profiles = _want(data, "profiles", dict, where) or {}
    for name, p in profiles.items():
        pw = f"{where} [profiles.{name}]"
        if not isinstance(p, dict):
            raise ConfigError(f"{pw}: must be a table")
        secrets = _SECRET_KEYS & {k.lower() for k in p}
        if secrets:
            raise ConfigError(f"{pw}: {', '.join(sorted(secrets))} is not allowed in the config; "
                              "passwords are asked at start or read from FCTUI_PASSWORD")
        vrm = _want(p, "vrm", str, pw)
        user = _want(p, "user", str, pw)
        if not vrm or not user:
            raise ConfigError(f"{pw}: needs vrm = \"https://…\" and user = \"…\"")
        if not vrm.startswith(("http://", "https://")):
            raise ConfigError(f"{pw}: vrm must start with http:// or https:// (got {vrm!r})")
        cfg.profiles[name] = Profile(
            name=name, vrm=vrm, user=user, insecure=bool(_want(p, "insecure", bool, pw) or False),
            ca_file=_want(p, "ca_file", str, pw), site=_want(p, "site", str, pw),
            api_version=_want(p, "api_version", str, pw), **connection_settings(p, pw),
        )
    cfg.default_profile = _want(data, "default_profile", str, where)
    cfg.theme = _want(data, "theme", str, where)
    ri = _want(data, "refresh_interval", (int, float), where)
    if ri is not None:
        if isinstance(ri, bool) or ri < 1:
            raise ConfigError(f"{where}: refresh_interval must be a number of seconds >= 1")
        cfg.refresh_interval = float(ri)
    cfg.read_only = bool(_want(data, "read_only", bool, where) or False)
    repo = _want(data, "repo", str, where)
    if repo is not None:
        cfg.repo = check_repo(repo, where)
    cluster = _want(data, "cluster", str, where)
    if cluster:
        cfg.cluster = check_cluster_url(cluster, f"{where}: cluster")
    keymap = _want(data, "keymap", dict, where) or {}
    for bid, keys in keymap.items():
        if not isinstance(keys, str) or not keys.strip():
            raise ConfigError(f"{where} [keymap]: {bid} must be a string of keys such as \"f\" or \"ctrl+f,f3\"")
        cfg.keymap[str(bid)] = keys.replace(" ", "")
    bh = _want(data, "business_hours", dict, where)
    if bh is not None:
        days = bh.get("days", list(WORKDAYS))
        if not isinstance(days, list) or any(str(d).lower()[:3] not in DAYS for d in days):
            raise ConfigError(f"{where} [business_hours]: days must be a list of {', '.join(DAYS)}")
        start, end = str(bh.get("start", "08:00")), str(bh.get("end", "18:00"))
        for v in (start, end):
            if not _HHMM.match(v):
                raise ConfigError(f"{where} [business_hours]: times are HH:MM (got {v!r})")
        cfg.business_hours = BusinessHours(tuple(str(d).lower()[:3] for d in days), start, end)
    return cfg


def check_repo(v: str, where: str) -> str:
    """A repository setting: an absolute (or ~) directory, or an s3:// URL without credentials in it."""
    v = v.strip()
    if v.startswith("s3://"):
        if "@" in v.split("/")[2]:
            raise ConfigError(f"{where}: repo must not hold credentials; S3 keys come from AWS_ACCESS_KEY_ID "
                              "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
        return v
    if "://" in v or not (v.startswith("/") or v.startswith("~")):
        raise ConfigError(f"{where}: repo must be an absolute directory or s3://BUCKET/PREFIX, got {v!r}")
    return v


def repository_spec(given: str | None, cfg: Config | None = None) -> str | None:
    """Which repository a command uses: ``given`` (its --repo), else $FCTUI_REPO, else the config's
    ``repo`` (``cfg``, else the config file), else None (the data dir's repository). A directory comes
    back absolute: the agent that receives it works in /."""
    spec = given or os.environ.get(REPO_ENV, "").strip() or (cfg if cfg is not None else load_config()).repo
    if not spec or spec.startswith("s3://"):
        return spec
    return os.path.abspath(os.path.expanduser(spec))


def check_cluster_url(url: str, where: str) -> str:
    """A cluster address nats-py can dial: ``nats://host:4222`` or ``tls://host:4222`` (ConfigError if not).
    Credentials in it are refused: a URL is printed and stored, a secret must not be."""
    from urllib.parse import urlsplit
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a port outside 0-65535
    except ValueError as e:
        raise ConfigError(f"{where}: {url!r} is not a valid URL: {e}") from None
    if not url.startswith(CLUSTER_SCHEMES) or not parts.hostname:
        raise ConfigError(f"{where}: a cluster address looks like nats://host:4222, got {url!r}")
    if parts.password:
        raise ConfigError(f"{where}: no password in the cluster address (it is printed and stored)")
    return url


def cluster_url(given: str | None = None, config: Config | None = None) -> str | None:
    """The cluster the CLI and the console talk to: ``given`` (``--cluster URL``), else ``$FCTUI_CLUSTER``,
    else the config's ``cluster``; None: the local job agent, as without a cluster."""
    if given:
        return check_cluster_url(given, "--cluster")
    env = os.environ.get(CLUSTER_ENV, "").strip()
    if env:
        return check_cluster_url(env, CLUSTER_ENV)
    if config is None:
        config = load_config()
    return config.cluster


def check_user_type(v: Any, where: str) -> int:
    if isinstance(v, bool) or str(v).strip() not in {str(t) for t in USER_TYPES}:
        raise ConfigError(f"{where}: user_type must be 0 or 2 (the VRM account's type), got {v!r}")
    return int(v)


def check_proxy_ip(v: Any, where: str) -> str:
    try:
        return str(ipaddress.ip_address(str(v).strip()))
    except ValueError:
        raise ConfigError(f"{where}: proxy_ip must be an IP address such as 10.0.0.5, got {v!r}") from None


def check_cbt_bitmap(v: Any, where: str) -> str:
    if v not in CBT_BITMAPS:
        raise ConfigError(f"{where}: cbt_bitmap must be \"nibble\" or \"byte\", got {v!r}")
    return str(v)


def connection_settings(p: dict[str, Any], where: str) -> dict[str, Any]:
    """``user_type``, ``proxy_ip``, ``cbt_bitmap`` and ``host_snapshot_gate`` of a profile table, checked (defaults when absent)."""
    out: dict[str, Any] = {}
    if p.get("user_type") is not None:
        out["user_type"] = check_user_type(_want(p, "user_type", int, where), where)
    if p.get("proxy_ip") is not None:
        out["proxy_ip"] = check_proxy_ip(_want(p, "proxy_ip", str, where), where)
    if p.get("cbt_bitmap") is not None:
        out["cbt_bitmap"] = check_cbt_bitmap(_want(p, "cbt_bitmap", str, where), where)
    if p.get("host_snapshot_gate") is not None:
        out["host_snapshot_gate"] = bool(_want(p, "host_snapshot_gate", bool, where))
    return out


def load_config(path: Path | None = None) -> Config:
    """Read the config; a missing file is an empty config (first run), a broken one a ConfigError."""
    path = path or config_path()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return Config(path=path)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    return parse_config(data, path)


def _toml_str(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(s: str) -> str:
    return s if re.fullmatch(r"[A-Za-z0-9_-]+", s) else _toml_str(s)


def save_profile(profile: Profile, *, make_default: bool = True, path: Path | None = None) -> Path:
    """Add or replace one profile in the config file (never a password), keeping the other settings.

    The file is rewritten from the parsed settings; comments are not preserved.
    """
    path = path or config_path()
    cfg = load_config(path)
    cfg.profiles[profile.name] = profile
    if make_default or not cfg.default_profile:
        cfg.default_profile = profile.name
    lines: list[str] = []
    if cfg.default_profile:
        lines.append(f"default_profile = {_toml_str(cfg.default_profile)}")
    if cfg.theme:
        lines.append(f"theme = {_toml_str(cfg.theme)}")
    lines.append(f"refresh_interval = {cfg.refresh_interval:g}")
    if cfg.read_only:
        lines.append("read_only = true")
    if cfg.repo:
        lines.append(f"repo = {_toml_str(cfg.repo)}")
    if cfg.cluster:
        lines.append(f"cluster = {_toml_str(cfg.cluster)}")
    for p in cfg.profiles.values():
        lines += ["", f"[profiles.{_toml_key(p.name)}]", f"vrm = {_toml_str(p.vrm)}", f"user = {_toml_str(p.user)}"]
        if p.insecure:
            lines.append("insecure = true")
        for k in ("ca_file", "site", "api_version"):
            v = getattr(p, k)
            if v:
                lines.append(f"{k} = {_toml_str(v)}")
        if p.user_type != 2:
            lines.append(f"user_type = {int(p.user_type)}")
        if p.proxy_ip:
            lines.append(f"proxy_ip = {_toml_str(p.proxy_ip)}")
        if p.cbt_bitmap != "nibble":
            lines.append(f"cbt_bitmap = {_toml_str(p.cbt_bitmap)}")
        if p.host_snapshot_gate:
            lines.append("host_snapshot_gate = true")
    if cfg.keymap:
        lines += ["", "[keymap]"] + [f"{_toml_key(k)} = {_toml_str(v)}" for k, v in cfg.keymap.items()]
    if cfg.business_hours:
        bh = cfg.business_hours
        lines += ["", "[business_hours]", "days = [" + ", ".join(_toml_str(d) for d in bh.days) + "]",
                  f"start = {_toml_str(bh.start)}", f"end = {_toml_str(bh.end)}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
