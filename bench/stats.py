"""Small statistics: percentiles of samples, medians of repeated runs, ratios that stay readable."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(samples: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (like numpy's default); 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(samples: Sequence[float]) -> dict[str, float]:
    return {f"p{p}": round(percentile(samples, p), 3) for p in (50, 95, 99)} | {
        "max": round(max(samples, default=0), 3)
    }


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 2) if denominator else float("inf")


def spread(values: Sequence[float]) -> dict[str, float]:
    """min, median and max of one figure over the rounds."""
    return {"min": round(min(values), 3), "median": median(values), "max": round(max(values), 3)} if values else {}


def shown(figure: dict[str, float], digits: int = 2) -> str:
    """`0.42 (0.40-0.45)`: the median, and the range over the rounds."""
    return f"{figure['median']:.{digits}f} ({figure['min']:.{digits}f}-{figure['max']:.{digits}f})"
