"""Names from a guest filesystem are untrusted data: which ones may become a local file, and how to show them.

A guest's directory entry may hold ``/``, NUL, ``.``/``..`` (a damaged or hostile filesystem) and any control
character (an escape sequence that rewrites the operator's terminal). Names that are not UTF-8 reach us as
``str`` with lone surrogates (``surrogateescape``), which a UTF-8 terminal cannot even encode.
"""

from __future__ import annotations

import os
import unicodedata


def unsafe_name(name: str) -> str | None:
    """Why ``name`` cannot be one local path component (``None`` when it can)."""
    if name == "":
        return "empty name"
    if name in (".", ".."):
        return f"name is {name!r}"
    if "/" in name:
        return "name holds '/'"
    if "\0" in name:
        return "name holds NUL"
    if not encodable(name):
        return "name holds characters this system cannot write (an unpaired UTF-16 surrogate)"
    return None


def encodable(text: str) -> bool:
    """Whether ``text`` can be a local name or link text: a guest's bytes that were not UTF-8 come back
    exactly (surrogateescape), but an NTFS name may hold an unpaired UTF-16 surrogate, which has none."""
    try:
        os.fsencode(text)
    except UnicodeError:
        return False
    return True


def printable(text: str) -> str:
    """``text`` safe to print to a terminal: control and format characters, lone surrogates (bytes that
    were not UTF-8) and the backslash itself as escapes (``\\x1b``, ``\\n``, ``\\u202e``, ``\\\\``), so two
    different names never print alike and nothing in a name reaches the terminal as a command."""
    if text.isprintable() and "\\" not in text:
        return text   # the common case, fast
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif 0xDC80 <= code <= 0xDCFF:   # surrogateescape: one byte of a name that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F or (0x80 <= code < 0xA0):
            out.append(f"\\x{code:02x}")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)
