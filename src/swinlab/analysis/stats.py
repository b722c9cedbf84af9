"""Statistics of repeated runs: per-variant summaries over seeds and the rules that call a difference.

The study compares each variant with the default **paired by seed** (:func:`paired`): seed k gives both
runs the same initialization, split and data order, so the per-seed differences ``d_k`` cancel what the
seed does to both. A verdict is given only where the mean difference lies beyond its 95% interval
``t(0.975, n-1) · s_d / √n`` (``s_d``: the sample standard deviation of the ``d_k``); that half-width is
also the smallest difference the study could have called. :func:`compare` is the first study's unpaired
rule (a difference within the combined seed spread ``√(s_a² + s_b²)`` is a tie), which its committed report
used; the report no longer does.
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


# Student's t, two-sided 95% (the 0.975 quantile) for 1 … 30 degrees of freedom; the normal 1.96 beyond.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (two-sided 95%)."""
    if df < 1:
        raise ValueError(f"t975 needs at least one degree of freedom, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def paired(values: dict[int, float], reference: dict[int, float]) -> dict:
    """Per-seed differences of ``values`` against ``reference`` (both ``{seed: accuracy}``; only seeds in
    both are paired) and whether their mean is beyond its 95% interval.

    Returns:
        ``{"seeds", "deltas", "delta" (mean), "std" (sample std of the deltas; None under two pairs),
        "halfwidth" (t · std / √n: the smallest mean difference a verdict needs; None under two pairs),
        "verdict"}``: ``"better"`` / ``"worse"`` where ``|delta| > halfwidth``, else ``"tie"``; under two
        pairs ``"1 seed"`` (never a win).
    """
    seeds = sorted(set(values) & set(reference))
    if not seeds:
        raise ValueError(f"paired needs a seed both sides ran; got {sorted(values)} and {sorted(reference)}")
    deltas = [values[k] - reference[k] for k in seeds]
    delta = statistics.fmean(deltas)
    if len(deltas) < 2:
        return {"seeds": seeds, "deltas": deltas, "delta": delta, "std": None, "halfwidth": None,
                "verdict": "1 seed"}
    std = statistics.stdev(deltas)
    halfwidth = t975(len(deltas) - 1) * std / math.sqrt(len(deltas))
    verdict = "tie" if abs(delta) <= halfwidth else ("better" if delta > 0 else "worse")
    return {"seeds": seeds, "deltas": deltas, "delta": delta, "std": std, "halfwidth": halfwidth,
            "verdict": verdict}


def format_paired(c: dict | None) -> str:
    """``"+0.80 ± 0.30 (±0.75, tie)"``: mean paired difference ± its std (95% half-width, verdict), in
    accuracy points; ``"—"`` for the reference itself."""
    if c is None:
        return "—"
    if c["std"] is None:
        return f"{100 * c['delta']:+.2f} (1 seed)"
    return f"{100 * c['delta']:+.2f} ± {100 * c['std']:.2f} (±{100 * c['halfwidth']:.2f}, {c['verdict']})"


def resolution(summary: dict[str, dict]) -> float | None:
    """The median 95% half-width of the paired comparisons in ``summary`` (see :func:`summarize`): about the
    smallest difference from the default this study could call; ``None`` before any has two pairs."""
    widths = [s["paired"]["halfwidth"] for s in summary.values()
              if s.get("paired") and s["paired"]["halfwidth"] is not None]
    return statistics.median(widths) if widths else None


def format_comparison(c: dict | None) -> str:
    """``"+0.80 (tie)"`` in accuracy points; ``"—"`` for the reference itself."""
    if c is None:
        return "—"
    return f"{100 * c['delta']:+.2f} ({c['verdict']})"


def summarize(runs: dict[str, list[dict]], *, reference: str, order: Sequence[str]) -> dict[str, dict]:
    """Per variant: top-1 per seed, mean and std, params, MACs, median throughput, mean wall time,
    and the comparison with the ``reference`` variant, paired by seed (``paired``: :func:`paired`).

    Args:
        runs: finished results per variant (each a ``result.json`` of the study), sorted by seed.
        reference: the variant every other one is compared with (its own comparison is ``None``).
        order: the variants' order in the summary; variants without runs are left out.
    """
    summary = {}
    ref_by_seed = {r["seed"]: r["test"]["acc1"] for r in runs.get(reference, [])}
    for name in [n for n in order if n in runs]:
        rs = runs[name]
        acc = [r["test"]["acc1"] for r in rs]
        summary[name] = {
            "seeds": [r["seed"] for r in rs], "acc1": acc, "acc1_mean": statistics.fmean(acc),
            "acc1_std": statistics.stdev(acc) if len(acc) > 1 else None,
            "params": rs[0]["params"], "macs": rs[0]["macs"],
            "throughput": statistics.median(r["throughput"]["images_per_s"] for r in rs),
            "wall_s": statistics.fmean(r["wall_s"] for r in rs),
            "paired": (paired({r["seed"]: r["test"]["acc1"] for r in rs}, ref_by_seed)
                       if name != reference and set(ref_by_seed) & {r["seed"] for r in rs} else None),
        }
    return summary
