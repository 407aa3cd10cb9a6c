"""Pause-time estimator: calibrated on the product document's point, learns per host."""

import random
import statistics

from fctui.jobs.pause import PAUSE_WARN_S, PauseEstimator, PauseObservation, observed_pause_s


def test_prior_puts_ten_200gb_disks_inside_one_to_three_seconds():
    est = PauseEstimator().estimate("urn:sites:A:hosts:1", disks=10, size_gb=2000)
    assert 1.0 <= est.seconds <= 3.0
    assert est.low >= 0.9 and est.high <= 3.1
    assert est.observations == 0


def test_estimate_grows_with_disks_and_size():
    e = PauseEstimator()
    small = e.estimate("h", 1, 40).seconds
    assert small < e.estimate("h", 4, 40).seconds < e.estimate("h", 4, 800).seconds


def _learn(truth, shapes, n=5, seed=0):
    rng = random.Random(seed)
    e = PauseEstimator()
    for _ in range(n):
        d, g = rng.choice(shapes)
        e.observe(PauseObservation("h", d, g, truth(d, g) * rng.lognormvariate(0, 0.08)))
    return e


def test_learns_a_slow_host_and_flags_it():
    def slow(d, g):
        return 1.2 + 0.3 * d + 0.0015 * g
    shapes = [(1, 40), (2, 200), (4, 400), (8, 1600), (10, 2000)]
    errors = []
    for seed in range(30):
        e = _learn(slow, shapes, seed=seed)
        est = e.estimate("h", 10, 2000)
        errors.append(abs(est.seconds - slow(10, 2000)) / slow(10, 2000))
    assert statistics.median(errors) < 0.25
    assert _learn(slow, shapes).estimate("h", 10, 2000).over_threshold
    assert slow(10, 2000) > PAUSE_WARN_S


def test_hosts_are_learnt_separately_and_outliers_do_not_dominate():
    e = PauseEstimator()
    for i in range(5):
        e.observe(PauseObservation("fast", 2, 100, 0.3))
    e.observe(PauseObservation("fast", 2, 100, 30.0))  # one pathological snapshot
    assert e.estimate("fast", 2, 100).seconds < 2.0
    assert e.estimate("other", 2, 100).observations == 0


def test_observed_pause_from_task_times():
    assert observed_pause_s(1_000, 3_500) == 2.5
    assert observed_pause_s(None, 3_500) is None
    assert observed_pause_s(5_000, 1_000) is None
