"""The ablation study's outputs (``swinlab study ablations``): ``results.json``, ``report.md``, the
speed-accuracy plot and the attention figure, written from finished runs.

The study itself (its variants, tables and runs) lives in :mod:`swinlab.train.study`, which hands
them in; nothing here trains or reads run directories.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import write_json
from ..models.registry import create_model
from .attention_maps import attention_figure
from .benchmark import environment
from .plots import plot_epoch_curves, plot_speed_accuracy
from .profiler import profile
from .stats import format_paired, resolution, summarize, t975

# A report table: (section title, ((row label, variant name), ...)); one variant may fill several rows.
Sections = Sequence[tuple[str, Sequence[tuple[str, str]]]]


def write_report(out: str | os.PathLike, runs: dict[str, list[dict]], *, variants: Sequence[Any],
                 reference: str, tables: Sequence[tuple[str, Sections]], schedule: Any, seeds: int,
                 missing: list[str], settings: dict, throughput: Any,
                 attention_model: nn.Module | None = None) -> dict:
    """``results.json``, ``report.md``, ``speed_accuracy.png`` and (given ``attention_model``)
    ``attention_maps.png`` in ``out``; returns what ``results.json`` holds.

    Args:
        runs: finished results (``result.json`` of each run) per variant, sorted by seed.
        variants: the study's variants, in report order (``name``, ``model``, ``overrides``, ``label``,
            ``group`` each).
        reference: the variant every other one is compared with, paired by seed
            (:func:`swinlab.analysis.stats.paired`); its validation curves show whether the schedule
            flattened.
        tables: ``(heading, sections)`` per report table.
        schedule: the shared training config, described in the report.
        seeds: seeds per variant the study asks for.
        missing: ``"<variant> seed <k>"`` of the runs not finished yet.
        settings: the study's settings as plain JSON, stored in ``results.json``.
        throughput: how throughput was measured (``batch_size``, ``warmup``, ``repeats``).
        attention_model: the model whose attention maps the report shows (the reference's seed 0).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_name = {v.name: v for v in variants}
    summary = summarize(runs, reference=reference, order=list(by_name))
    env = environment("cpu")
    env["torch_threads"] = torch.get_num_threads()
    figures = {}
    if summary:
        points = [{"label": by_name[n].label if n != reference else "Swin (default)",
                   "group": by_name[n].group, "throughput": s["throughput"], "acc1": 100 * s["acc1_mean"],
                   "acc1_std": 100 * s["acc1_std"] if s["acc1_std"] is not None else None}
                  for n, s in summary.items()]
        figures["speed"] = plot_speed_accuracy(points, out / "speed_accuracy.png",
                                               title=f"{schedule.data}: top-1 vs. CPU inference throughput")
    curves = {f"seed {r['seed']}": [(e, 100 * v) for e, v in r.get("val_acc1_per_epoch", [])]
              for r in runs.get(reference, [])}
    if any(curves.values()):
        figures["curve"] = plot_epoch_curves(curves, out / "convergence.png",
                                             title=f"{by_name[reference].label}: validation top-1 by epoch")
    if attention_model is not None:
        figures["attention"] = attention_figure(attention_model, schedule.data, schedule.data_dir,
                                                out / "attention_maps.png")
    results = {"settings": settings, "environment": env, "summary": summary,
               "resolution": resolution(summary), "convergence": convergence(runs.get(reference, [])),
               "missing": missing, "runs": dict(runs)}
    write_json(out / "results.json", results)
    text = _report(schedule, seeds, summary, runs, env, throughput, figures, missing, tables=tables,
                   order=list(by_name), reference=by_name[reference], results=results)
    (out / "report.md").write_text(text)
    return results


def convergence(runs: Sequence[dict], tail: float = 0.25) -> dict | None:
    """How much the reference's validation top-1 still rose in the last ``tail`` of its epochs: per seed
    and the mean, in accuracy fractions (``None`` without curves). A schedule has flattened when that rise
    is small against the differences the study is after."""
    rises = {}
    for r in runs:
        curve = r.get("val_acc1_per_epoch") or []
        if len(curve) >= 2:
            start = curve[max(0, len(curve) - 1 - math.ceil(len(curve) * tail))]  # 8 epochs: 6 → 8
            rises[r["seed"]] = {"from_epoch": start[0] + 1, "to_epoch": curve[-1][0] + 1,
                                "rise": curve[-1][1] - start[1], "last": curve[-1][1]}
    if not rises:
        return None
    return {"tail": tail, "per_seed": rises, "mean_rise": sum(v["rise"] for v in rises.values()) / len(rises)}


def _report(schedule: Any, seeds: int, summary: dict, runs: dict, env: dict, throughput: Any,
            figures: dict, missing: list[str], *, tables: Sequence[tuple[str, Sections]], order: list[str],
            reference: Any, results: dict) -> str:
    c = schedule
    n_train = c.train_limit if c.train_limit else "all"
    machine = env["machine"]
    lines = [
        f"# Ablation study on {c.data}: Swin's Table 4, global context, baselines", "",
        f"Reproduce: `swinlab study ablations --recipe {c.name} --swin {reference.model} --data {c.data} "
        f"--seeds {seeds} --epochs {c.epochs}"
        + (f" --train-limit {c.train_limit}" if c.train_limit else "")
        + (f" --test-limit {c.test_limit}" if c.test_limit else "")
        + f" --threads {env['torch_threads']} --out DIR` (resumable: the same command again finishes what "
        "is missing; `--report-only` rewrites this report from the finished runs).", "",
        "## Settings", "",
        f"**{'Reduced CPU schedule' if c.name == 'ablations' else 'Schedule'}** (recipe `{c.name}`): "
        f"{c.epochs} epoch(s) on {n_train} training images "
        f"(val {c.val_size} held out of the training split; test: "
        f"{'the full test set' if not c.test_limit else f'first {c.test_limit} test images'}), "
        f"batch {c.batch_size}, AdamW peak lr {c.base_lr * c.batch_size / 512:g} (base {c.base_lr:g} × "
        f"batch/512), {c.warmup_epochs:g} warmup epoch(s), cosine to {c.min_lr_ratio:g}×, "
        f"weight decay {c.weight_decay:g}, "
        f"label smoothing {c.label_smoothing:g}, gradient clip {c.clip_grad}, "
        f"{'no augmentation' if not c.augment else 'augmentation ' + json.dumps(c.augment_kwargs())}, "
        f"model overrides {json.dumps(c.model_overrides)}, precision {c.precision}. "
        + ("These models are far from converged; the numbers rank the switches under this budget only and "
           "are not the paper's ImageNet numbers." if c.name == "ablations" else
           "The numbers rank the switches on this data and model; they are not the paper's ImageNet numbers "
           "(the convergence note below says whether the schedule flattened)."), "",
        f"Seeds 0…{seeds - 1}. Seed k fixes the initialization, the train/val split (and so which "
        "training images are used) and the batch order; every variant sees exactly the same data at "
        "seed k, and every run uses the same schedule. The test images are the same for every run.", "",
        f"Params and MACs: `swinlab.analysis.profile` (MACs per 28×28 image; the paper's \"FLOPs\"). "
        f"Throughput: inference images/s on this CPU, batch {throughput.batch_size}, float32, median of "
        f"{throughput.repeats} steps after {throughput.warmup} warm-up steps, {env['torch_threads']} torch "
        "thread(s), measured right after each run and the median taken over seeds. The machine is shared "
        "with other jobs, so throughput is noisy (± ~10-20%); compare large ratios only.", "",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores ({machine['cpus_usable']} usable), "
        f"torch {env['versions']['torch']}, Python {env['versions']['python']}, {machine['platform']}; "
        f"report written {env['date_utc']}.", "",
        _verdict_rule(results["resolution"], seeds), "",
        *_convergence_note(results["convergence"], figures), "",
        _shift_note(schedule, reference), "",
    ]
    if missing:
        lines += [f"**Incomplete:** {len(missing)} run(s) have not finished: {', '.join(missing)}. "
                  "Run the same command again to complete them.", ""]
    for k, (heading, sections) in enumerate(tables):
        lines += [*([""] if k else []), f"## {heading}", ""]
        lines += _table(sections, summary, reference.name)
    if "speed" in figures:
        lines += ["", "## Speed vs. accuracy", "",
                  "Mean top-1 over seeds (error bars: ± one standard deviation) against CPU inference "
                  "throughput.",
                  "", f"![speed vs accuracy]({figures['speed'].name})"]
    if "attention" in figures:
        lines += ["", "## Attention maps: regular and shifted windows", "",
                  "The default Swin (seed 0): head-averaged attention of the centre token (green ×) in "
                  "block 1 (W-MSA, regular windows) and block 2 (SW-MSA, windows shifted by ⌊M/2⌋) of "
                  "stage 1; cyan lines are window borders. In the shifted block, zero attention inside the "
                  "window marks tokens the region mask hides because they wrapped around.", "",
                  f"![attention maps]({figures['attention'].name})"]
    lines += ["", "## Runs", "",
              "| variant | seed | top-1 | top-5 | steps | train s | test s | wall s | img/s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name in [n for n in order if n in runs]:
        for r in runs[name]:
            lines.append(f"| {name} | {r['seed']} | {r['test']['acc1']:.2%} | {r['test']['acc5']:.2%} | "
                         f"{r['steps']} | {r['train_s']:.0f} | {r['eval_s']:.0f} | {r['wall_s']:.0f} | "
                         f"{r['throughput']['images_per_s']:.0f} |")
    total = sum(r["wall_s"] for rs in runs.values() for r in rs)
    lines += ["", f"Total wall time of the runs: {total / 60:.1f} min.", ""]
    return "\n".join(lines)


def _verdict_rule(width: float | None, seeds: int) -> str:
    t = f"{t975(seeds - 1):.2f}" if seeds >= 2 else "n/a"
    found = (f" The median 95% half-width over the variants, **{100 * width:.2f} points**, is about the "
             "smallest difference from the default this study could call: a smaller true difference shows as "
             "a tie." if width is not None else "")
    return ("**Verdict rule (paired by seed).** Seed k gives the default and each variant the same "
            "initialization, split and data order, so the study compares them seed by seed: Δ_k = top-1 of "
            "the variant − top-1 of the default at seed k, in accuracy points. The table gives the mean of "
            "the Δ_k ± their standard deviation, the half-width of the mean's 95% interval "
            "(t(0.975, n−1) · s / √n) and the verdict: **better** or **worse** only where |mean Δ| exceeds "
            f"that half-width, else **tie**; with one seed there is no spread and no verdict (\"1 seed\"). "
            f"With {seeds} seed(s) the interval is wide (t = {t}): the rule calls few differences, "
            "and those it calls are unlikely to be seed noise." + found)


def _convergence_note(conv: dict | None, figures: dict) -> list[str]:
    if conv is None:
        return ["**Convergence.** No validation curve was recorded for the default's runs."]
    per = ", ".join(f"seed {k}: {100 * v['rise']:+.2f} (epoch {v['from_epoch']} → {v['to_epoch']}, last "
                    f"{100 * v['last']:.2f}%)" for k, v in sorted(conv["per_seed"].items()))
    lines = [f"**Convergence.** Over the last {conv['tail']:.0%} of the schedule the default's validation "
             f"top-1 rose by {100 * conv['mean_rise']:+.2f} points on average ({per}): compare it with the "
             "differences in the tables to judge whether more epochs would change them."]
    if "curve" in figures:
        lines += ["", f"![validation top-1 by epoch]({figures['curve'].name})"]
    return lines


def _shift_note(schedule: Any, variant: Any) -> str:
    """Which blocks of the study's Swin attend over shifted windows at its image size."""
    with torch.device("meta"):
        model = create_model(variant.model, **{**schedule.model_overrides, **variant.overrides})
    stages = profile(model, memory=False)["stages"]
    shifted = sum(any(b["shift"]) for s in stages for b in s["windows"])
    maps = ", ".join(f"{'×'.join(map(str, s['map_size']))} ({s['num_windows']} window(s) of "
                     f"{'×'.join(map(str, s['windows'][0]['window']))})" for s in stages)
    blocks = sum(s["blocks"] for s in stages)
    return (f"**What the switches can change here.** In `{variant.model}` the stages attend over maps of "
            f"{maps}; only {shifted} of {blocks} blocks attend over shifted windows. Where a map is no "
            "larger than the window, the window is the whole map and the shift is dropped (as in the "
            f"paper's code), so shifting and the region mask act on those {shifted} block(s) only: much less "
            "than in Swin-T at 224² (56×56 tokens in 64 windows in stage 1).")


def _table(sections: Sections, summary: dict, reference: str) -> list[str]:
    lines = ["| | top-1 (%) mean ± std | Δ vs. default, paired: mean ± std (95% ±, verdict) | params | MACs "
             "| throughput (img/s) |",
             "|---|---|---|---|---|---|"]
    for title, rows in sections:
        lines.append(f"| ***{title}*** | | | | | |")
        for label, name in rows:
            s = summary.get(name)
            if s is None:
                lines.append(f"| {label} | not run | | | | |")
                continue
            std = f" ± {100 * s['acc1_std']:.2f}" if s["acc1_std"] is not None else ""
            n = len(s["acc1"])
            bold = "**" if name == reference else ""
            lines.append(f"| {bold}{label}{bold} | {100 * s['acc1_mean']:.2f}{std} (n={n}) | "
                         f"{format_paired(s['paired'])} | {s['params'] / 1e6:.2f}M | "
                         f"{s['macs'] / 1e6:.1f}M | {s['throughput']:.0f} |")
    return lines
