"""PBS-style retention of restore points: which points of a VM ``keep-last``/``-hourly``/``-daily``/
``-weekly``/``-monthly``/``-yearly`` keep (the selection itself: :func:`select`, with the repository's
``prune`` applying it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Retention", "RetentionError", "RETENTION_KEYS"]

RETENTION_KEYS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


class RetentionError(ValueError):
    """Retention settings that cannot be used (says which and why)."""


@dataclass(frozen=True)
class Retention:
    """PBS prune options: how many restore points each rule keeps per VM. All zero: keep everything."""
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def __post_init__(self) -> None:
        for k in RETENTION_KEYS:
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise RetentionError(f"{k.replace('_', '-')} must be a whole number of 0 or more, not {v!r}")

    @property
    def keeps_all(self) -> bool:
        return not any(getattr(self, k) for k in RETENTION_KEYS)

    def describe(self) -> str:
        if self.keeps_all:
            return "keep all"
        return " ".join(f"{k[5:]}={getattr(self, k)}" for k in RETENTION_KEYS if getattr(self, k))

    def to_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in RETENTION_KEYS if getattr(self, k)}
