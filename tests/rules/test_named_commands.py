"""Every ``fctui ...`` command a user is told to run exists (issue 15 bug 7: a remediation said
``fctui clean-up``, which is no command).

The commands come from the rule catalog's remediations and titles and from the hint strings in the
sources people read (rules, jobs, inventory, console, CLI messages): anything written as `fctui ...`
(backticks), "(fctui ...)" or bare "fctui WORD" where WORD is not prose about fctui ("fctui asks").
Each is run through the real parser with --help; its --options must appear in that help.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from fctui.cli import build_parser
from fctui.rules.catalog import RULES

ROOT = Path(__file__).resolve().parents[2] / "fctui"
HINT_ROOMS = ("rules", "jobs", "inventory", "tui", "cli", "agent")
# "fctui asks before it stops it": sentences about the program, not commands
PROSE_VERBS = {"asks", "restores", "backs", "keeps", "reads", "writes", "runs", "uses", "never", "is", "does",
               "logs", "import", "from", "and", "or", "as", "in", "to", "only", "itself"}

_QUOTED = re.compile(r"`+fctui ([^`]+)`+|\(fctui ([^)]+)\)")
_BARE = re.compile(r"(?<![\w./`(-])fctui ([a-z][\w-]*)")


def commands_in(text: str) -> list[str]:
    found = [m.group(1) or m.group(2) for m in _QUOTED.finditer(text)]
    found += [m.group(1) for m in _BARE.finditer(_QUOTED.sub("", text))]
    return [c for c in found if c.split()[0] not in PROSE_VERBS]


def named_commands() -> set[str]:
    texts = [r.remediation for r in RULES.values()] + [r.title for r in RULES.values()]
    for room in HINT_ROOMS:
        texts += [p.read_text() for p in sorted((ROOT / room).rglob("*.py"))]
    return {c.strip() for t in texts for c in commands_in(t)}


def help_of(words: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([*words, "--help"])
    assert e.value.code == 0, f"`fctui {' '.join(words)}` is not a command"
    return out.getvalue()


def test_catalog_remediations_name_commands():
    """The two snapshot remediations point at the command that deletes leftovers."""
    assert "fctui jobs cleanup" in RULES["leftover-backup-snapshot"].remediation
    assert "clean-up" not in RULES["leftover-backup-snapshot"].remediation


@pytest.mark.parametrize("command", sorted(named_commands()))
def test_named_command_exists(command: str):
    tokens = command.split()
    words = []
    for t in tokens:  # the subcommand path: lower-case words up to the first option or placeholder
        if t.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", t):
            break
        words.append(t)
    text = help_of(words)
    for opt in (t.split("=")[0] for t in tokens if t.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), f"`fctui {command}`: no {opt}"
