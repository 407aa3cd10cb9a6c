"""How long will the VM pause for its snapshot?

The product document gives one calibration point: 10 virtualized disks of 200 GB usually pause 1-3 s,
longer on weak hosts or storage. The pause grows with the number of disks, their size and the host, so
the model is linear in (1, disks, GB) with a per-host fit:

    pause = base + per_disk * disks + per_gb * GB

A host with no history uses the prior (calibrated on the 10 x 200 GB point at ~2 s). Each observed
snapshot (its task's start and finish) refines that host's coefficients by ridge regression pulled
toward the prior scaled by the host's typical ratio to it, so five observations are enough to learn a
slow host without over-fitting one odd VM. The range comes from how far observations strayed from the
fit, never narrower than the noise the document implies.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Prior coefficients: 0.4 + 10 * 0.08 + 2000 * 0.0004 = 2.0 s for the document's 10 x 200 GB example.
PRIOR_BASE_S = 0.4
PRIOR_PER_DISK_S = 0.08
PRIOR_PER_GB_S = 0.0004
PRIOR = (PRIOR_BASE_S, PRIOR_PER_DISK_S, PRIOR_PER_GB_S)
# Relative spread of the range with no history (the document's 1-3 s around 2 s).
PRIOR_SPREAD = 0.5
MIN_SPREAD = 0.15
# Pauses above this are flagged (the document: "may exceed 3 seconds" on weak hosts or storage).
PAUSE_WARN_S = 3.0
# How strongly the prior holds, in "observations' worth" per coefficient.
PRIOR_WEIGHT = 2.0
# Observations this many times off the host's median ratio are left out of the fit.
OUTLIER_FACTOR = 3.0
# Typical magnitude of each feature, so the ridge penalty treats the coefficients alike.
FEATURE_SCALE = (1.0, 4.0, 500.0)


@dataclass(frozen=True, slots=True)
class PauseObservation:
    host_urn: str
    disks: int
    size_gb: float
    seconds: float
    vm_urn: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class PauseEstimate:
    seconds: float
    low: float
    high: float
    observations: int  # how many snapshots of this host the estimate learnt from

    @property
    def over_threshold(self) -> bool:
        return self.high > PAUSE_WARN_S

    def describe(self) -> str:
        basis = f"{self.observations} observed" if self.observations else "no history"
        return f"{self.low:.1f}-{self.high:.1f} s (≈{self.seconds:.1f} s, {basis})"


def _features(disks: int, size_gb: float) -> tuple[float, float, float]:
    return (1.0, float(max(disks, 0)), float(max(size_gb, 0.0)))


def _dot(w: tuple[float, float, float], x: tuple[float, float, float]) -> float:
    return w[0] * x[0] + w[1] * x[1] + w[2] * x[2]


def _solve3(a: list[list[float]], b: list[float]) -> tuple[float, float, float] | None:
    """Gaussian elimination with partial pivoting for a 3x3 system (no numpy dependency)."""
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(3):
        piv = max(range(col, 3), key=lambda r: abs(m[r][col]))
        if abs(m[piv][col]) < 1e-12:
            return None
        m[col], m[piv] = m[piv], m[col]
        for r in range(3):
            if r != col:
                f = m[r][col] / m[col][col]
                for c in range(col, 4):
                    m[r][c] -= f * m[col][c]
    return (m[0][3] / m[0][0], m[1][3] / m[1][1], m[2][3] / m[2][2])


@dataclass(slots=True)
class HostPauseModel:
    coefficients: tuple[float, float, float]
    spread: float
    observations: int

    def estimate(self, disks: int, size_gb: float) -> PauseEstimate:
        s = max(_dot(self.coefficients, _features(disks, size_gb)), 0.05)
        return PauseEstimate(s, s * max(1.0 - self.spread, 0.1), s * (1.0 + self.spread), self.observations)


def fit_host(observations: list[PauseObservation]) -> HostPauseModel:
    """Fit one host's model from its observed pauses."""
    obs = [o for o in observations if o.seconds > 0 and math.isfinite(o.seconds)]
    if not obs:
        return HostPauseModel(PRIOR, PRIOR_SPREAD, 0)
    xs = [_features(o.disks, o.size_gb) for o in obs]
    ys = [o.seconds for o in obs]
    # The host's typical ratio to the prior (median: one odd snapshot does not move it much).
    ratios = [y / max(_dot(PRIOR, x), 1e-6) for x, y in zip(xs, ys)]
    ratio = statistics.median(ratios)
    # A snapshot that paused 3x longer (or shorter) than this host usually does is an outlier (a storage
    # hiccup, a clock jump): it must not drag the fit. It still widens the range below.
    kept = [(x, y) for x, y, r in zip(xs, ys, ratios) if ratio / OUTLIER_FACTOR <= r <= ratio * OUTLIER_FACTOR]
    xs, ys = [k[0] for k in kept], [k[1] for k in kept]
    mean = tuple(p * ratio for p in PRIOR)
    # Ridge: minimise sum (y - w.x)^2 + sum_k lam_k (w_k - mean_k)^2
    a = [[0.0] * 3 for _ in range(3)]
    b = [0.0] * 3
    for x, y in zip(xs, ys):
        for i in range(3):
            b[i] += x[i] * y
            for j in range(3):
                a[i][j] += x[i] * x[j]
    for k in range(3):
        lam = PRIOR_WEIGHT * FEATURE_SCALE[k] ** 2
        a[k][k] += lam
        b[k] += lam * mean[k]
    w = _solve3(a, b) or mean
    # Coefficients must stay physical (a pause never shrinks with more disks); fall back to the scaled prior.
    if min(w) < 0:
        w = mean
    residuals = sorted(abs(y - _dot(w, x)) / max(_dot(w, x), 1e-6) for x, y in zip(xs, ys))
    observed_spread = residuals[min(len(residuals) - 1, int(0.8 * len(residuals)))]
    # Few observations: blend toward the prior spread; many: trust what was seen.
    n = len(obs)
    if len(kept) < n:
        observed_spread = max(observed_spread, PRIOR_SPREAD)
    spread = max(MIN_SPREAD, (PRIOR_SPREAD * 2 + observed_spread * n) / (2 + n))
    return HostPauseModel(w, spread, n)


class PauseEstimator:
    """Per-host pause models, refitted as observations arrive. Persistence lives in the caller
    (the job agent stores observations in tinydb); this class is pure."""

    def __init__(self, observations: list[PauseObservation] | None = None) -> None:
        self._by_host: dict[str, list[PauseObservation]] = {}
        self._models: dict[str, HostPauseModel] = {}
        for o in observations or []:
            self._by_host.setdefault(o.host_urn, []).append(o)

    def observe(self, obs: PauseObservation) -> None:
        self._by_host.setdefault(obs.host_urn, []).append(obs)
        self._models.pop(obs.host_urn, None)

    def observations(self, host_urn: str) -> list[PauseObservation]:
        return list(self._by_host.get(host_urn, ()))

    def estimate(self, host_urn: str, disks: int, size_gb: float) -> PauseEstimate:
        model = self._models.get(host_urn)
        if model is None:
            model = self._models[host_urn] = fit_host(self._by_host.get(host_urn, []))
        return model.estimate(disks, size_gb)


def observed_pause_s(start_ms: float | None, finish_ms: float | None) -> float | None:
    """The pause a snapshot task took, from its epoch-millisecond start and finish."""
    if start_ms is None or finish_ms is None or finish_ms < start_ms:
        return None
    return (finish_ms - start_ms) / 1000.0
