"""Byte sizes as people read them: one unit system everywhere (binary: KiB, MiB, GiB, TiB, via humanize).

Here, at the bottom of the house, so the command line, the console and the engine's messages all say
"1.5 GiB" the same way (README "How it is built": every room above may import fctui.store).
"""

from __future__ import annotations

import math


def human_bytes(n: int | float | None) -> str:
    """``n`` bytes in binary units ("0 B", "1.5 KiB", "3.0 GiB"); "?" when not known."""
    if n is None or (isinstance(n, float) and not math.isfinite(n)):
        return "?"
    import humanize
    text = humanize.naturalsize(n, binary=True)
    # humanize spells out "0 Bytes"/"1 Byte"; "B" keeps job lines as short as the other units
    number, _, unit = text.partition(" ")
    return f"{number} B" if unit in ("Byte", "Bytes") else text
