"""Time for a local repository's gc without sleeping until a (possibly coarse) file clock ticks.

gc spares every unreferenced chunk as new as its start (a writer may be reusing it), comparing chunk
mtimes with its own "now". A test either advances gc's injected clock (:class:`GcClock`, passed as
``Repository.open(..., clock=)``) or, where the comparison is with a lease's start (also a file mtime)
or gc runs in another process (the CLI), writes the chunks' mtimes in the past (:func:`age_chunks`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

GRACE_S = 3600.0  # far beyond any filesystem's timestamp resolution and any test's run time


class GcClock:
    """gc's now: the filesystem's clock (the mtime of a probe file, as gc reads it by default) plus
    however far the test advanced it."""

    def __init__(self, probe: Path) -> None:
        self.probe = probe
        self.offset_s = 0.0

    def __call__(self) -> float:
        self.probe.touch()
        return self.probe.stat().st_mtime_ns / 1e9 + self.offset_s

    def advance(self, seconds: float = GRACE_S) -> None:
        """Everything written so far becomes older than gc's now."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self.offset_s += seconds


def age_chunks(chunks_dir: Path, seconds: float = GRACE_S) -> None:
    """Every chunk under ``chunks_dir`` written ``seconds`` ago (a backup of long ago)."""
    old = time.time() - seconds
    for chunk in chunks_dir.glob("*/*"):
        os.utime(chunk, (old, old))
