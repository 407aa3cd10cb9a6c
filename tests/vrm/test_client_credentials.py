"""Password sources and log redaction."""

from __future__ import annotations

import io
import logging

import pytest

from fctui.vrm import CredentialsError, SecretRedactingFilter, redact, resolve_password


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_env_var_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", "from-env")
    assert resolve_password("admin", stdin=FakeTty(), getpass_fn=lambda p: "typed") == "from-env"


def test_prompt_on_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FCTUI_PASSWORD", raising=False)
    prompts: list[str] = []

    def fake_getpass(prompt: str) -> str:
        prompts.append(prompt)
        return "typed"

    assert resolve_password("admin", stdin=FakeTty(), getpass_fn=fake_getpass) == "typed"
    assert prompts == ["VRM password for admin: "]


def test_no_tty_no_env_is_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FCTUI_PASSWORD", raising=False)
    with pytest.raises(CredentialsError) as ei:
        resolve_password("admin", stdin=io.StringIO())
    assert "FCTUI_PASSWORD" in str(ei.value)
    with pytest.raises(CredentialsError):
        resolve_password("admin", stdin=FakeTty(), prompt=False)


def test_empty_or_aborted_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FCTUI_PASSWORD", raising=False)
    with pytest.raises(CredentialsError):
        resolve_password("admin", stdin=FakeTty(), getpass_fn=lambda p: "")

    def abort(p: str) -> str:
        raise KeyboardInterrupt

    with pytest.raises(CredentialsError):
        resolve_password("admin", stdin=FakeTty(), getpass_fn=abort)


@pytest.mark.parametrize("text, secret", [
    ("headers={'X-Auth-Key': 'abc123def'}", "abc123def"),
    ("X-Auth-Token: tok-42 sent", "tok-42"),
    ("(b'x-auth-token', b'tok-77')", "tok-77"),
    ("password=hunter2", "hunter2"),
    ('{"X-Resource-Token": "rt-9"}', "rt-9"),
])
def test_redact(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "***" in out


def test_filter_scrubs_records(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("fctui.test.redaction")
    logger.addFilter(SecretRedactingFilter())
    with caplog.at_level(logging.DEBUG, logger="fctui.test.redaction"):
        logger.debug("sending %s", {"X-Auth-Key": "deadbeef"})
    assert "deadbeef" not in caplog.text and "***" in caplog.text
