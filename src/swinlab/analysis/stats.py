"""Statistics of repeated runs: per-variant summaries over seeds and the tie rule.

Comparisons follow one rule: a difference in mean top-1 no larger than the combined seed spread
``√(s_a² + s_b²)`` (sample standard deviations over seeds) is a tie, not a win (:func:`compare`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def compare(values: Sequence[float], reference: Sequence[float]) -> dict:
    """Mean difference of ``values`` against ``reference`` and whether it is a tie.

    A difference ``|Δ| ≤ √(s_v² + s_r²)`` (sample standard deviations over seeds) is a ``"tie"``;
    beyond it ``"better"`` or ``"worse"``. With fewer than two values on either side there is no
    spread to judge by: the verdict is ``"1 seed"`` (never a win).

    Returns:
        ``{"delta", "spread" (None with one seed), "verdict"}``.
    """
    if not values or not reference:
        raise ValueError("compare needs at least one value on each side")
    delta = statistics.fmean(values) - statistics.fmean(reference)
    if len(values) < 2 or len(reference) < 2:
        return {"delta": delta, "spread": None, "verdict": "1 seed"}
    spread = math.hypot(statistics.stdev(values), statistics.stdev(reference))
    verdict = "tie" if abs(delta) <= spread else ("better" if delta > 0 else "worse")
    return {"delta": delta, "spread": spread, "verdict": verdict}


def format_comparison(c: dict | None) -> str:
    """``"+0.80 (tie)"`` in accuracy points; ``"—"`` for the reference itself."""
    if c is None:
        return "—"
    return f"{100 * c['delta']:+.2f} ({c['verdict']})"


def summarize(runs: dict[str, list[dict]], *, reference: str, order: Sequence[str]) -> dict[str, dict]:
    """Per variant: top-1 per seed, mean and std, params, MACs, median throughput, mean wall time,
    and the comparison with the ``reference`` variant.

    Args:
        runs: finished results per variant (each a ``result.json`` of the study), sorted by seed.
        reference: the variant every other one is compared with (its own comparison is ``None``).
        order: the variants' order in the summary; variants without runs are left out.
    """
    summary = {}
    ref = [r["test"]["acc1"] for r in runs.get(reference, [])]
    for name in [n for n in order if n in runs]:
        rs = runs[name]
        acc = [r["test"]["acc1"] for r in rs]
        summary[name] = {
            "seeds": [r["seed"] for r in rs], "acc1": acc, "acc1_mean": statistics.fmean(acc),
            "acc1_std": statistics.stdev(acc) if len(acc) > 1 else None,
            "params": rs[0]["params"], "macs": rs[0]["macs"],
            "throughput": statistics.median(r["throughput"]["images_per_s"] for r in rs),
            "wall_s": statistics.fmean(r["wall_s"] for r in rs),
            "vs_default": compare(acc, ref) if ref and name != reference else None,
        }
    return summary
