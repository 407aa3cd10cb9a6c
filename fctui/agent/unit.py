"""The systemd unit that runs the job agent as an unattended service (``fctui agent install --print``).

Only text: fctui/cli/agent.py works out the paths (the installed ``fctui``, the service user's
directories) and prints what :func:`service_unit` returns; nothing is written to disk. The password is
never in the unit: systemd reads ``/etc/fctui/vrm-password`` (root's, mode 0600) and hands the service
a private copy in ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``), which fctui.vrm.credentials reads.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

UNIT_NAME = "fctui-agent.service"
PASSWORD_PATH = "/etc/fctui/vrm-password"
# An S3 repository's keys: an AWS shared-credentials file, handed over as the password is
S3_CREDENTIALS_PATH = "/etc/fctui/aws-credentials"
S3_CREDENTIALS_NAME = "aws-credentials"
RUNTIME_NAME = "fctui"                  # RuntimeDirectory=: /run/fctui, owned by User=, removed at stop
RUNTIME_PATH = f"/run/{RUNTIME_NAME}"
RESTART_S = 30
STOP_S = 120                            # time to cancel running jobs and remove their snapshots


class UnitError(ValueError):
    """A value that cannot go into a unit file (a line break, a relative path)."""


@dataclass(slots=True)
class ServiceUnit:
    """What the unit says: who runs the agent, with which profile, where its files are."""

    fctui: list[str]                    # the command that is ``fctui`` (absolute)
    user: str                           # User=
    profile: str                        # --profile
    config_dir: str                     # FCTUI_CONFIG_DIR (read: the profile, the CA file)
    data_dir: str                       # FCTUI_DATA_DIR (the repository by default)
    state_dir: str                      # FCTUI_STATE_DIR (the job database)
    repo: str | None = None             # --repo, when not the data dir's: a directory or s3://bucket/prefix
    extra_args: list[str] = field(default_factory=list)

    @property
    def s3(self) -> bool:
        return bool(self.repo) and self.repo.startswith("s3://")   # type: ignore[union-attr]

    def writable(self) -> list[str]:
        """ReadWritePaths: the data, state and repository directories, none listed twice or inside another."""
        paths: list[str] = []
        for p in (self.data_dir, self.state_dir, None if self.s3 else self.repo):
            if p and p not in paths:
                paths.append(p)
        return [p for p in paths if not any(q != p and PurePosixPath(p).is_relative_to(q) for q in paths)]


_WORD_OK = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def unit_word(value: str) -> str:
    """``value`` as one word of a unit line: ``%`` doubled (systemd specifiers), quoted when it holds
    a space, a quote or a backslash. A line break would end the setting early and is refused."""
    if "\n" in value or "\r" in value:
        raise UnitError(f"{value!r} holds a line break: it cannot go into a unit file")
    value = value.replace("%", "%%")
    if value and _WORD_OK.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _absolute(what: str, path: str) -> str:
    if not PurePosixPath(path).is_absolute():
        raise UnitError(f"{what} {path!r} is not an absolute path: systemd needs one")
    return path


def service_unit(u: ServiceUnit) -> str:
    """The text of :data:`UNIT_NAME` for ``u``."""
    for what, p in (("fctui", u.fctui[0]), ("config dir", u.config_dir), ("data dir", u.data_dir),
                    ("state dir", u.state_dir)) + ((("repository", u.repo),) if u.repo and not u.s3 else ()):
        _absolute(what, p)
    args = [*u.fctui, "agent", "--service", "--profile", u.profile]
    if u.repo:
        args += ["--repo", u.repo]
    args += u.extra_args
    exec_start = " ".join(unit_word(a) for a in args)
    writable = u.writable()
    printed = shlex.join(["fctui", "agent", "install", "--print", "--user", u.user, "--profile", u.profile]
                         + (["--repo", u.repo] if u.repo else []))
    env = {"FCTUI_CONFIG_DIR": u.config_dir, "FCTUI_DATA_DIR": u.data_dir, "FCTUI_STATE_DIR": u.state_dir,
           "FCTUI_RUNTIME_DIR": RUNTIME_PATH}
    lines = [
        f"# {UNIT_NAME}: fctui's job agent as an unattended service. It runs the protection policies",
        f"# on their schedules with the VRM of profile {u.profile!r} and serves the console and CLI of {u.user}.",
        f"# Written by `{printed}`.",
        "#",
        "# To install it, as root:",
        "#  1. The VRM password, in a file only root can read. systemd gives the service a private copy",
        "#     (LoadCredential= below); it is never in this unit, the config file or a log:",
        "#       install -d -m 755 /etc/fctui",
        f"#       install -m 600 -o root -g root /dev/null {PASSWORD_PATH}",
        f"#       sh -c 'read -rs p && printf \"%s\\n\" \"$p\" > {PASSWORD_PATH}'   # type it; not echoed",
        "#  2. The directories the service writes (ProtectSystem=strict leaves only these writable):",
        f"#       runuser -u {shlex.quote(u.user)} -- mkdir -p -m 700 {shlex.join(writable)}",
        *(["#     The repository's S3 keys, as an AWS credentials file only root can read ([default] with",
           "#     aws_access_key_id and aws_secret_access_key; for a store other than AWS also endpoint_url",
           "#     and region). systemd hands the service a private copy, as the password:",
           f"#       install -m 600 -o root -g root /dev/null {S3_CREDENTIALS_PATH}   # then edit it"]
          if u.s3 else []),
        "#  3. This unit, then start it now and at every boot:",
        f"#       {printed} > /etc/systemd/system/{UNIT_NAME}",
        "#       systemctl daemon-reload",
        f"#       systemctl enable --now {UNIT_NAME}",
        f"#       journalctl -u {UNIT_NAME} -f        # its log",
        "#",
        f"# {u.user}'s console and CLI reach it with: export FCTUI_RUNTIME_DIR={RUNTIME_PATH}",
        "# A refused login or a bad password file stops it for good (exit 2, not restarted): fix it,",
        f"# then `systemctl restart {UNIT_NAME}`. An unreachable VRM is retried every {RESTART_S} s.",
        "",
        "[Unit]",
        f"Description=fctui's job agent: protection policies of profile {u.profile.replace('%', '%%')}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"User={unit_word(u.user)}",
        f"ExecStart={exec_start}",
        f"LoadCredential=fctui-password:{PASSWORD_PATH}",
        *([f"LoadCredential={S3_CREDENTIALS_NAME}:{S3_CREDENTIALS_PATH}",
           # %d: the service's credentials directory (systemd expands it; hence no unit_word here)
           f"Environment=AWS_SHARED_CREDENTIALS_FILE=%d/{S3_CREDENTIALS_NAME}"] if u.s3 else []),
        *(f"Environment={unit_word(k + '=' + v)}" for k, v in env.items()),
        f"RuntimeDirectory={RUNTIME_NAME}",
        "RuntimeDirectoryMode=0700",
        "UMask=0077",
        "Restart=on-failure",
        f"RestartSec={RESTART_S}s",
        "RestartPreventExitStatus=2",
        f"TimeoutStopSec={STOP_S}s",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={' '.join(unit_word(p) for p in writable)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)
