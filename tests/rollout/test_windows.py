from __future__ import annotations

import pytest

from rollout.windows import Histogram, VariantWindow

BOUNDS = (1.0, 2.0, 4.0)


def test_counts_fall_in_upper_inclusive_buckets() -> None:
    assert Histogram.of(BOUNDS, [0.5, 1.0, 1.5, 4.0, 9.0]).counts == (2, 1, 1, 1)


def test_quantile_interpolates_like_promql() -> None:
    h = Histogram(BOUNDS, (0.0, 10.0, 0.0, 0.0))
    assert h.quantile(0.5) == pytest.approx(1.5)
    assert h.quantile(0.95) == pytest.approx(1.95)
    assert Histogram(BOUNDS, (0.0, 0.0, 0.0, 5.0)).quantile(0.5) == 4.0  # the open top bucket
    assert Histogram(BOUNDS, (0.0,) * 4).quantile(0.5) is None


def test_count_above_interpolates_and_counts_the_open_bucket() -> None:
    h = Histogram(BOUNDS, (4.0, 10.0, 2.0, 1.0))
    assert h.count_above(1.5) == pytest.approx(5 + 2 + 1)
    assert h.count_above(5.0) == 1.0
    assert h.count_above(0.0) == h.total


def test_from_cumulative_prometheus_buckets() -> None:
    inf = float("inf")
    h = Histogram.from_cumulative([(2.0, 5.0), (1.0, 3.0), (inf, 6.0), (4.0, 4.9)])
    # Extrapolated increases may dip; counts never go negative.
    assert h.bounds == BOUNDS
    assert h.counts == pytest.approx((3.0, 2.0, 0.0, 1.0))


def test_histograms_add_only_with_the_same_buckets() -> None:
    a = Histogram.of(BOUNDS, [0.5])
    assert (a + Histogram()).counts == a.counts
    assert (Histogram() + a).counts == a.counts
    assert (a + a).total == 2
    with pytest.raises(ValueError, match="different buckets"):
        a + Histogram.of((1.0,), [0.5])


def test_variant_windows_add_up() -> None:
    w = VariantWindow(requests=3, errors=1, latency=Histogram.of(BOUNDS, [1.5]), incidents=1)
    total = w + w
    assert (total.requests, total.errors, total.latency.total, total.incidents) == (6, 2, 2, 2)
