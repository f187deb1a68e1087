"""talkcodec.bdrate on synthetic rate-quality curves with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from talkcodec.bdrate import bd_rate, pareto_front, rate_for_quality

RATES = np.array([5.0, 10.0, 20.0, 40.0, 80.0, 160.0])


def quality_of(rates: np.ndarray) -> np.ndarray:
    """A concave curve like PSNR against rate."""
    return 20 + 6 * np.log2(rates) - 0.2 * np.log2(rates) ** 2


@pytest.mark.parametrize("interpolation", ["pchip", "cubic"])
@pytest.mark.parametrize(("factor", "expected"), [(0.5, -50.0), (2.0, 100.0), (1.0, 0.0)])
def test_a_curve_at_a_multiple_of_the_rate_gives_that_multiple(
    factor: float, expected: float, interpolation: str
) -> None:
    result = bd_rate(
        RATES, quality_of(RATES), RATES * factor, quality_of(RATES), interpolation=interpolation
    )
    assert result == pytest.approx(expected, abs=1e-6)


def test_pchip_stays_sane_on_a_sharply_bending_curve() -> None:
    # Quality saturates: a single cubic through these points overshoots, PCHIP does not.
    rates = np.array([5.0, 10.0, 20.0, 40.0, 80.0, 160.0])
    quality = np.array([0.10, 0.80, 0.95, 0.98, 0.99, 0.995])
    assert bd_rate(rates, quality, rates * 0.8, quality) == pytest.approx(-20.0, abs=1e-6)


def test_pchip_rejects_a_curve_that_does_not_rise() -> None:
    with pytest.raises(ValueError, match="pchip needs quality to rise strictly with rate"):
        bd_rate([10, 20, 40], [30, 29, 33], [10, 20], [30, 32])


def test_only_the_shared_quality_range_counts() -> None:
    # The test codec only covers the low half, where it is 4x cheaper.
    # (PCHIP's slopes at the end of the shorter curve differ a little from the anchor's.)
    test_rates = RATES[:3] / 4
    assert bd_rate(RATES, quality_of(RATES), test_rates, quality_of(RATES[:3])) == pytest.approx(
        -75.0, abs=0.5
    )


def test_two_points_fit_a_line_and_disjoint_curves_give_none() -> None:
    assert bd_rate([10, 20], [30, 32], [5, 10], [30, 32]) == pytest.approx(-50.0)
    assert bd_rate([10, 20], [30, 32], [10, 20], [40, 42]) is None
    with pytest.raises(ValueError, match="at least two points"):
        bd_rate([10], [30], [5, 10], [30, 32])


def test_rate_for_quality_interpolates_in_log_rate() -> None:
    rates, quality = [10.0, 40.0], [30.0, 34.0]
    assert rate_for_quality(rates, quality, 32.0) == pytest.approx(20.0)
    assert rate_for_quality(rates, quality, 30.0) == pytest.approx(10.0)
    assert rate_for_quality(rates, quality, 29.0) is None
    assert rate_for_quality(rates, quality, 35.0) is None


def test_rate_for_quality_takes_the_first_crossing_in_rate_order() -> None:
    # Unsorted input, and a dip: quality 33 is first reached between 10 and 20.
    rates, quality = [40.0, 10.0, 20.0, 80.0], [32.5, 30.0, 34.0, 36.0]
    assert rate_for_quality(rates, quality, 33.0) == pytest.approx(10 * 2**0.75)


def test_pareto_front_keeps_only_undominated_points() -> None:
    rates, quality = [1, 2, 3, 4, 4], [5, 4, 6, 6, 7]
    assert pareto_front(rates, quality) == [0, 2, 4]
