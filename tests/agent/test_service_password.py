"""The unattended service's password: a file only its user can read (FCTUI_PASSWORD_FILE, or systemd's
$CREDENTIALS_DIRECTORY/fctui-password), never FCTUI_PASSWORD or the config file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fctui.vrm.credentials import CredentialsError, read_password_file, service_password

SECRET = "S3rvice-Pw!x"


def write(path: Path, data: bytes, mode: int) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("data,expected", [
    (b"S3rvice-Pw!x", SECRET),
    (b"S3rvice-Pw!x\n", SECRET),          # echo's newline
    (b"S3rvice-Pw!x\r\n", SECRET),        # written on Windows
    (b"S3rvice-Pw!x\n\n", SECRET + "\n"),  # only one newline is the file's; the rest is the password's
    (b" pw with spaces ", " pw with spaces "),
    ("pässwörd\n".encode(), "pässwörd"),
])
def test_0600_file_is_read_less_one_trailing_newline(tmp_path: Path, data: bytes, expected: str) -> None:
    assert read_password_file(write(tmp_path / "pw", data, 0o600)) == expected


def test_0400_is_fine_too(tmp_path: Path) -> None:
    assert read_password_file(write(tmp_path / "pw", b"S3rvice-Pw!x\n", 0o400)) == SECRET


@pytest.mark.parametrize("mode,who", [(0o640, "its group"), (0o620, "its group"), (0o644, "others"),
                                      (0o604, "others"), (0o660, "its group")])
def test_group_or_others_may_read_it_refused_with_the_chmod_to_run(tmp_path: Path, mode: int, who: str) -> None:
    p = write(tmp_path / "pw", SECRET.encode(), mode)
    with pytest.raises(CredentialsError) as e:
        read_password_file(p)
    msg = str(e.value)
    assert f"`chmod 600 {p}`" in msg and who in msg and f"{mode:04o}" in msg
    assert "\n" not in msg and SECRET not in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"password file .*/nope does not exist"):
        read_password_file(tmp_path / "nope")


@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n"])
def test_empty_file_is_an_error(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(CredentialsError, match="is empty"):
        read_password_file(write(tmp_path / "pw", data, 0o600))


def test_a_directory_or_a_huge_file_is_not_a_password(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(CredentialsError, match="not a regular file"):
        read_password_file(d)
    with pytest.raises(CredentialsError, match="longer than 4096 bytes"):
        read_password_file(write(tmp_path / "big", b"x" * 5000, 0o600))
    with pytest.raises(CredentialsError, match="not UTF-8"):
        read_password_file(write(tmp_path / "bin", b"\xff\xfe\x00", 0o600))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_file_another_user_owns_is_refused_with_the_chown_to_run(tmp_path: Path) -> None:
    import pwd
    p = write(tmp_path / "pw", SECRET.encode(), 0o600)
    os.chown(p, 65534, 65534)   # nobody
    other = pwd.getpwuid(65534).pw_name
    # we are root here: the file is readable, its owner is the point
    with pytest.raises(CredentialsError) as e:
        read_password_file(p)
    assert f"belongs to {other}, not to root" in str(e.value) and f"`chown root {p}`" in str(e.value)


# --- which file ------------------------------------------------------------------------------------

def test_credentials_directory_of_systemd(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    write(creds / "fctui-password", b"S3rvice-Pw!x\n", 0o400)   # as systemd writes it without ACLs
    assert service_password({"CREDENTIALS_DIRECTORY": str(creds)}) == SECRET


def test_credentials_directory_still_refuses_what_others_or_a_group_without_acl_can_read(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    p = write(creds / "fctui-password", SECRET.encode(), 0o444)
    with pytest.raises(CredentialsError, match="can be read by others"):
        service_password({"CREDENTIALS_DIRECTORY": str(creds)})
    os.chmod(p, 0o440)   # no POSIX ACL on it: the group bits are a real group's
    with pytest.raises(CredentialsError, match="can be read by its group"):
        service_password({"CREDENTIALS_DIRECTORY": str(creds)})


def test_credentials_directory_without_our_credential_names_the_unit_line(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError) as e:
        service_password({"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert "LoadCredential=fctui-password:/etc/fctui/vrm-password" in str(e.value)


def test_password_file_env_wins_over_credentials_directory(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    write(creds / "fctui-password", b"from-systemd\n", 0o600)
    named = write(tmp_path / "named", b"from-the-env-file\n", 0o600)
    env = {"CREDENTIALS_DIRECTORY": str(creds), "FCTUI_PASSWORD_FILE": str(named)}
    assert service_password(env) == "from-the-env-file"
    # the named file is refused: no falling back to the other one
    os.chmod(named, 0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        service_password(env)


def test_fctui_password_is_not_for_the_service() -> None:
    with pytest.raises(CredentialsError) as e:
        service_password({"FCTUI_PASSWORD": SECRET})
    msg = str(e.value)
    assert "FCTUI_PASSWORD_FILE" in msg and "LoadCredential=" in msg and SECRET not in msg


def give_read_acl(path: Path, uid: int) -> None:
    """What systemd does to a credential file: owner r, an ACL entry giving ``uid`` r, mask r (so the
    mode's group bits read r--), group and others nothing. Written as the kernel's xattr, no setfacl."""
    import struct

    def entry(tag: int, perm: int, ident: int = 0xFFFFFFFF) -> bytes:
        return struct.pack("<HHI", tag, perm, ident)
    acl = (struct.pack("<I", 2) + entry(0x01, 4) + entry(0x02, 4, uid) + entry(0x04, 0) + entry(0x10, 4)
           + entry(0x20, 0))
    try:
        os.setxattr(path, "system.posix_acl_access", acl)
    except OSError as e:
        pytest.skip(f"no POSIX ACLs here: {e}")


def test_systemd_acl_credential_is_accepted_there_only(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    p = write(creds / "fctui-password", b"S3rvice-Pw!x\n", 0o400)
    give_read_acl(p, 65534)
    assert oct(p.stat().st_mode & 0o777) == "0o440"   # the ACL mask shows as the group bits
    assert service_password({"CREDENTIALS_DIRECTORY": str(creds)}) == SECRET
    # an operator's own file with an ACL to someone else is one more reader: refused
    with pytest.raises(CredentialsError, match="chmod 600"):
        service_password({"FCTUI_PASSWORD_FILE": str(p)})
