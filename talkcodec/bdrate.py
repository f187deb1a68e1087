"""Bjøntegaard delta rate, and reading the rate a codec needs for a quality off its curve.

G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves", VCEG-M33 (2001):
fit log(rate) as a cubic polynomial of quality for each codec, integrate both fits over the
quality range the two curves share, and turn the mean log-rate difference into a percentage.
Negative: the test codec needs fewer bits than the anchor for the same quality.

The default interpolation is the piecewise cubic (PCHIP) one that JVET's common test conditions
adopted in place of the single polynomial: on curves that bend sharply (AKD, or MS-SSIM near
saturation) a single cubic overshoots between points and can give absurd figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

_MAX_DEGREE = 3


def _curve(rates: Sequence[float], qualities: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(log rates, qualities) as float arrays, checked; rates must be positive and finite."""
    log_rates = np.log(np.asarray(rates, dtype=np.float64))
    quality = np.asarray(qualities, dtype=np.float64)
    if log_rates.shape != quality.shape or log_rates.ndim != 1:
        raise ValueError(f"rates and qualities differ in shape: {log_rates.shape}, {quality.shape}")
    if not (np.all(np.isfinite(log_rates)) and np.all(np.isfinite(quality))):
        raise ValueError("rates must be positive and finite, qualities finite")
    return log_rates, quality


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_quality: Sequence[float],
    test_rates: Sequence[float],
    test_quality: Sequence[float],
    interpolation: Literal["pchip", "cubic"] = "pchip",
) -> float | None:
    """Average rate difference of `test` against `anchor` in percent at equal quality.

    Quality must grow with rate (negate a lower-is-better metric first); "pchip" needs it to
    rise strictly (take `pareto_front` first), "cubic" fits a polynomial of degree
    min(3, points - 1). At least two points per curve. None when the two curves share no
    quality range.
    """
    anchor_log, anchor_q = _curve(anchor_rates, anchor_quality)
    test_log, test_q = _curve(test_rates, test_quality)
    if min(len(anchor_q), len(test_q)) < 2:
        raise ValueError("bd_rate needs at least two points per curve")
    low = max(anchor_q.min(), test_q.min())
    high = min(anchor_q.max(), test_q.max())
    if not high > low:
        return None
    mean_log_rate = []
    for log_rates, quality in ((anchor_log, anchor_q), (test_log, test_q)):
        area = _integral(quality, log_rates, low, high, interpolation)
        mean_log_rate.append(area / (high - low))
    return float((np.exp(mean_log_rate[1] - mean_log_rate[0]) - 1) * 100)


def _integral(
    quality: np.ndarray, log_rates: np.ndarray, low: float, high: float, interpolation: str
) -> float:
    """Integral of log-rate over quality from low to high, on the interpolated curve."""
    if interpolation == "cubic":
        degree = min(_MAX_DEGREE, len(quality) - 1)
        integral = np.polyint(np.polyfit(quality, log_rates, degree))
        return float(np.polyval(integral, high) - np.polyval(integral, low))
    if interpolation != "pchip":
        raise ValueError(f"interpolation must be 'pchip' or 'cubic', got {interpolation!r}")
    from scipy.interpolate import PchipInterpolator

    order = np.argsort(quality)
    if np.any(np.diff(quality[order]) <= 0) or np.any(np.diff(log_rates[order]) <= 0):
        raise ValueError(
            "pchip needs quality to rise strictly with rate; take pareto_front() first"
        )
    return float(PchipInterpolator(quality[order], log_rates[order]).integrate(low, high))


def rate_for_quality(
    rates: Sequence[float], qualities: Sequence[float], target: float
) -> float | None:
    """The lowest rate at which the curve reaches `target`, interpolated linearly in log-rate.

    Points are taken in order of rate; the first segment that crosses `target` gives the
    answer. None when the curve never reaches `target` or starts above it (no extrapolation).
    """
    log_rates, quality = _curve(rates, qualities)
    order = np.argsort(log_rates)
    log_rates, quality = log_rates[order], quality[order]
    if quality[0] > target:
        return None
    for index in range(len(quality)):
        if quality[index] == target:
            return float(np.exp(log_rates[index]))
        if index > 0 and quality[index - 1] < target < quality[index]:
            share = (target - quality[index - 1]) / (quality[index] - quality[index - 1])
            log_rate = log_rates[index - 1] + share * (log_rates[index] - log_rates[index - 1])
            return float(np.exp(log_rate))
    return None


def pareto_front(rates: Sequence[float], qualities: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (lower-or-equal rate and higher quality),
    in order of rate: the curve a codec with several knobs offers at its best settings."""
    log_rates, quality = _curve(rates, qualities)
    front, best = [], -np.inf
    for index in np.lexsort((-quality, log_rates)):
        if quality[index] > best:
            front.append(int(index))
            best = quality[index]
    return front
