"""The ablation study on real data (``swinlab study ablations``): every switch of the Swin paper's
Table 4 (Liu et al., ICCV 2021) on the small Swin, the global-context extension's fusions and
samplers, and same-budget ViT and MLP-Mixer baselines, all trained with one schedule and one set
of seeds through :func:`~swinlab.train.fit` / :func:`~swinlab.train.evaluate`.

Layout of ``out``::

    runs/<variant>/seed<k>/result.json   one finished run (written atomically when it ends)
    results.json                         every run, the per-variant summary, settings and machine
    report.md, speed_accuracy.png, attention_maps.png

Training writes its checkpoints and logs under ``work`` (default ``runs/ablations-work``, ignored by
git); the checkpoints of a finished run are deleted, its ``model.safetensors`` is kept.

Resumable: a run with a ``result.json`` is skipped; a run killed in training continues from its last
epoch checkpoint (when its schedule is unchanged), so an interrupted study is completed by running
the same command again. Seeds are the outer loop: an interrupted study has every variant at the
first seeds rather than some variants at every seed.

Comparisons follow one rule: a difference in mean top-1 no larger than the combined seed spread
``√(s_a² + s_b²)`` (sample standard deviations over seeds) is a tie, not a win (:func:`compare`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..analysis.profile import profile
from ..errors import ConfigError
from ..files import write_json
from ..models.registry import create_model, get_config
from .recipes import TrainConfig, get_recipe
from .run import evaluate, fit, load_checkpoint

DEFAULT = "default"  # the reference run: shifted windows with relative position bias


@dataclass(frozen=True)
class Variant:
    name: str  # run directory and --only name
    model: str  # registered model
    overrides: dict = field(default_factory=dict)  # on top of the schedule's model_overrides
    label: str = ""  # how the report names it
    group: str = ""  # legend group of the speed-accuracy plot


def _gc(fusion: str, sampler: str) -> Variant:
    tokens = get_config("swin_micro_28_gc").global_context.tokens  # K after stage 1 (49 at 28²)
    return Variant(f"gc_{fusion}_{sampler}", "swin_micro_28_gc",
                   {"global_context": f"{fusion}:{sampler}:{tokens}"},
                   f"+ global context ({fusion}, {sampler})", "Swin + global context")


VARIANTS: tuple[Variant, ...] = (
    Variant(DEFAULT, "swin_micro_28", {}, "Swin (shifted windows, rel. pos.)", "Swin ablations"),
    Variant("no_shift", "swin_micro_28", {"shift": False}, "w/o shifting", "Swin ablations"),
    Variant("no_mask", "swin_micro_28", {"mask_shifted": False}, "shifted, no mask", "Swin ablations"),
    Variant("pos_none", "swin_micro_28", {"position": "none"}, "no pos.", "Swin ablations"),
    Variant("pos_abs", "swin_micro_28", {"position": "abs"}, "abs. pos.", "Swin ablations"),
    Variant("pos_abs_rel", "swin_micro_28", {"position": "abs+rel"}, "abs.+rel. pos.", "Swin ablations"),
    Variant("pos_rel_only", "swin_micro_28", {"position": "rel-only"}, "rel. pos. w/o app.",
            "Swin ablations"),
    _gc("add", "random"),
    _gc("max", "random"),
    _gc("concat", "random"),
    _gc("add", "grid"),
    _gc("add", "pool"),
    Variant("vit_micro_28", "vit_micro_28", {}, "ViT (vit_micro_28)", "baselines"),
    Variant("mixer_micro_28", "mixer_micro_28", {}, "MLP-Mixer (mixer_micro_28)", "baselines"),
)
VARIANT_NAMES = tuple(v.name for v in VARIANTS)

# The report's tables: (section, ((row label, variant name), ...)). One run may fill several rows.
TABLE4 = (
    ("shifted windows", (("w/o shifting", "no_shift"), ("shifted windows", DEFAULT),
                         ("shifted windows w/o masking", "no_mask"))),
    ("position embedding", (("no pos.", "pos_none"), ("abs. pos.", "pos_abs"),
                            ("abs.+rel. pos.", "pos_abs_rel"), ("rel. pos. w/o app.", "pos_rel_only"),
                            ("rel. pos.", DEFAULT))),
)
EXTENSION = (
    ("global context: fusion (sampler random)", (("Swin (no global context)", DEFAULT),
                                                 ("add", "gc_add_random"), ("max", "gc_max_random"),
                                                 ("concat", "gc_concat_random"))),
    ("global context: sampler (fusion add)", (("random", "gc_add_random"), ("grid", "gc_add_grid"),
                                              ("pool", "gc_add_pool"))),
    ("baselines (same schedule)", (("Swin (swin_micro_28)", DEFAULT), ("ViT (vit_micro_28)", "vit_micro_28"),
                                   ("MLP-Mixer (mixer_micro_28)", "mixer_micro_28"))),
)


@dataclass(frozen=True)
class Throughput:
    batch_size: int = 64  # images per inference step
    warmup: int = 2
    repeats: int = 5


def select(only: Iterable[str] | None) -> list[Variant]:
    """The variants named in ``only`` (names may be comma-separated), in study order; all if ``None``."""
    if not only:
        return list(VARIANTS)
    names = {n.strip() for item in only for n in item.split(",") if n.strip()}
    unknown = sorted(names - set(VARIANT_NAMES))
    if unknown:
        raise ConfigError(f"unknown variant(s) {unknown}; variants are {list(VARIANT_NAMES)}")
    return [v for v in VARIANTS if v.name in names]


def run_config(schedule: TrainConfig, variant: Variant, seed: int) -> TrainConfig:
    """The schedule applied to ``variant`` at ``seed`` (which fixes init, split, order and subset)."""
    return schedule.replace(model=variant.model, seed=seed,
                            model_overrides={**schedule.model_overrides, **variant.overrides})


def run_ablations(out: str | os.PathLike, *, schedule: TrainConfig | None = None, seeds: int = 3,
                  only: Iterable[str] | None = None, work: str | os.PathLike = "runs/ablations-work",
                  throughput: Throughput = Throughput(), report_only: bool = False, log=print) -> dict:
    """Train and test every selected variant at seeds ``0 … seeds-1`` (skipping finished runs),
    then write ``results.json`` and ``report.md`` from every result under ``out``.

    Args:
        schedule: the shared training config (default: the ``ablations`` recipe).
        only: variant names to run (default: all of :data:`VARIANTS`).
        work: where ``fit`` writes checkpoints and logs.
        throughput: how inference throughput is measured.
        report_only: train nothing; report what has finished.

    Returns:
        The summary written to ``results.json``.
    """
    schedule = schedule or get_recipe("ablations")
    out, work = Path(out), Path(work)
    variants = select(only)
    if not report_only:
        todo = [(v, s) for s in range(seeds) for v in variants]
        for i, (variant, seed) in enumerate(todo, 1):
            path = out / "runs" / variant.name / f"seed{seed}" / "result.json"
            config = run_config(schedule, variant, seed)
            if path.is_file():
                _check_same_schedule(path, config)
                log(f"[{i}/{len(todo)}] {variant.name} seed {seed}: done before, skipped")
                continue
            log(f"[{i}/{len(todo)}] {variant.name} seed {seed}: training")
            result = run_one(variant, config, work / variant.name / f"seed{seed}", throughput)
            write_json(path, result)
            log(f"[{i}/{len(todo)}] {variant.name} seed {seed}: top-1 {result['test']['acc1']:.2%}, "
                f"{result['throughput']['images_per_s']:.0f} img/s, {result['wall_s']:.0f} s")
    return write_report(out, schedule=schedule, seeds=seeds, only=only, work=work, throughput=throughput)


def run_one(variant: Variant, config: TrainConfig, work_dir: Path, throughput: Throughput) -> dict:
    """Fit, test, profile and time one run; returns what ``result.json`` holds."""
    stamp = work_dir / "config.json"
    wanted = _plain(config.to_dict())
    resume = (work_dir / "checkpoints" / "last.ckpt").is_file() and stamp.is_file() and \
        json.loads(stamp.read_text()) == wanted
    if not resume and work_dir.exists():
        shutil.rmtree(work_dir)  # a run killed before its first checkpoint, or another schedule's
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(wanted, indent=2) + "\n")
    t0 = time.perf_counter()
    fitted = fit(config, work_dir, resume=resume)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    test = evaluate(fitted["model"], config.data, config.data_dir, test_limit=config.test_limit)
    eval_s = time.perf_counter() - t1
    net, _ = load_checkpoint(fitted["model"])
    prof = profile(net, memory=False)
    speed = measure_throughput(net, throughput)
    shutil.rmtree(work_dir / "checkpoints", ignore_errors=True)  # resuming needs them no more
    return {
        "variant": variant.name, "model": variant.model, "overrides": variant.overrides, "seed": config.seed,
        "test": {k: test[k] for k in ("acc1", "acc5", "loss", "images")},
        "val": fitted["val"], "steps": fitted["global_step"],
        "params": prof["params"], "macs": prof["macs"], "throughput": speed,
        "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "resumed": resume, "threads": torch.get_num_threads(), "model_file": fitted["model"],
        "config": wanted,
    }


def measure_throughput(net: torch.nn.Module, settings: Throughput) -> dict:
    """Inference images/s on the CPU (median step of :func:`swinlab.analysis.benchmark.time_model`)."""
    from ..analysis.benchmark import time_model

    r = time_model(net, batch_size=settings.batch_size, img_size=net.config.img_size, mode="infer",
                  warmup=settings.warmup, repeats=settings.repeats, device="cpu")
    return {"images_per_s": r["images_per_s"], "median_s": r["median_s"], "p10_s": r["p10_s"],
            "p90_s": r["p90_s"], "batch_size": settings.batch_size}


# --- the tie rule ---------------------------------------------------------------------------------


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


# --- results and report ---------------------------------------------------------------------------


def collect(out: Path) -> dict[str, list[dict]]:
    """Every finished ``result.json`` under ``out/runs``, per variant, sorted by seed."""
    runs: dict[str, list[dict]] = {}
    for path in sorted((out / "runs").glob("*/seed*/result.json")):
        r = json.loads(path.read_text())
        runs.setdefault(r["variant"], []).append(r)
    for rs in runs.values():
        rs.sort(key=lambda r: r["seed"])
    return runs


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per variant: top-1 per seed, mean and std, params, MACs, median throughput, mean wall time,
    and the comparison with the default run."""
    summary = {}
    ref = [r["test"]["acc1"] for r in runs.get(DEFAULT, [])]
    for name in [n for n in VARIANT_NAMES if n in runs]:
        rs = runs[name]
        acc = [r["test"]["acc1"] for r in rs]
        summary[name] = {
            "seeds": [r["seed"] for r in rs], "acc1": acc, "acc1_mean": statistics.fmean(acc),
            "acc1_std": statistics.stdev(acc) if len(acc) > 1 else None,
            "params": rs[0]["params"], "macs": rs[0]["macs"],
            "throughput": statistics.median(r["throughput"]["images_per_s"] for r in rs),
            "wall_s": statistics.fmean(r["wall_s"] for r in rs),
            "vs_default": compare(acc, ref) if ref and name != DEFAULT else None,
        }
    return summary


def write_report(out: str | os.PathLike, *, schedule: TrainConfig, seeds: int,
                 only: Iterable[str] | None = None, work: str | os.PathLike = "runs/ablations-work",
                 throughput: Throughput = Throughput()) -> dict:
    """``results.json``, ``report.md``, ``speed_accuracy.png`` and ``attention_maps.png`` from every
    finished run under ``out`` (``missing`` lists the runs of the ``only`` variants not yet there);
    returns the summary."""
    from ..analysis.benchmark import environment
    from ..analysis.plots import plot_speed_accuracy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = collect(out)
    summary = summarize(runs)
    env = environment("cpu")
    env["torch_threads"] = torch.get_num_threads()
    labels = {v.name: v for v in VARIANTS}
    figures = {}
    if summary:
        points = [{"label": labels[n].label if n != DEFAULT else "Swin (default)", "group": labels[n].group,
                   "throughput": s["throughput"], "acc1": 100 * s["acc1_mean"],
                   "acc1_std": 100 * s["acc1_std"] if s["acc1_std"] is not None else None}
                  for n, s in summary.items()]
        figures["speed"] = plot_speed_accuracy(points, out / "speed_accuracy.png",
                                               title=f"{schedule.data}: top-1 vs. CPU inference throughput")
    default_runs = runs.get(DEFAULT, [])
    if default_runs and Path(default_runs[0]["model_file"]).is_file():
        from .demo import _attention_figure

        figures["attention"] = _attention_figure(default_runs[0]["model_file"], schedule,
                                                 out / "attention_maps.png")
    missing = [f"{v.name} seed {s}" for s in range(seeds) for v in select(only)
               if not any(r["seed"] == s for r in runs.get(v.name, []))]
    results = {"settings": {"schedule": _plain(schedule.to_dict()), "seeds": seeds,
                            "throughput": _plain(throughput.__dict__), "work": str(work)},
               "environment": env, "summary": summary, "missing": missing,
               "runs": {n: rs for n, rs in runs.items()}}
    write_json(out / "results.json", results)
    (out / "report.md").write_text(_report(schedule, seeds, summary, runs, env, throughput, figures, missing))
    return results


def _report(schedule: TrainConfig, seeds: int, summary: dict, runs: dict, env: dict, throughput: Throughput,
            figures: dict, missing: list[str]) -> str:
    c = schedule
    n_train = c.train_limit if c.train_limit else "all"
    machine = env["machine"]
    lines = [
        f"# Ablation study on {c.data}: Swin's Table 4, global context, baselines", "",
        f"Reproduce: `swinlab study ablations --data {c.data} --seeds {seeds} --epochs {c.epochs}"
        + (f" --train-limit {c.train_limit}" if c.train_limit else "")
        + (f" --test-limit {c.test_limit}" if c.test_limit else "")
        + f" --threads {env['torch_threads']} --out DIR` (resumable: the same command again finishes what "
        "is missing; `--report-only` rewrites this report from the finished runs).", "",
        "## Settings", "",
        f"**Reduced CPU schedule** (recipe `{c.name}`): {c.epochs} epoch(s) on {n_train} training images "
        f"(val {c.val_size} held out of the training split; test: "
        f"{'the full test set' if not c.test_limit else f'first {c.test_limit} test images'}), "
        f"batch {c.batch_size}, AdamW peak lr {c.base_lr * c.batch_size / 512:g} (base {c.base_lr:g} × "
        f"batch/512), {c.warmup_epochs:g} warmup epoch(s), cosine to {c.min_lr_ratio:g}×, "
        f"weight decay {c.weight_decay:g}, "
        f"label smoothing {c.label_smoothing:g}, gradient clip {c.clip_grad}, "
        f"{'no augmentation' if not c.augment else 'augmentation ' + json.dumps(c.augment_kwargs())}, "
        f"model overrides {json.dumps(c.model_overrides)}, precision {c.precision}. "
        "These models are far from converged; the numbers rank the switches under this budget only and "
        "are not the paper's ImageNet numbers.", "",
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
        "**Tie rule.** Δ is the difference of mean top-1 against the default Swin (shifted windows, "
        "rel. pos.), in accuracy points. A difference with |Δ| ≤ √(s_variant² + s_default²), the combined "
        "sample standard deviation over seeds, is a **tie**; only a larger one is called better/worse. "
        "With one seed there is no spread and nothing is called a win (\"1 seed\"). With two seeds a "
        "standard deviation rests on one degree of freedom and can be small by chance: read a verdict as a "
        "lead for a longer run with more seeds, not as a result.", "",
        _shift_note(schedule), "",
    ]
    if missing:
        lines += [f"**Incomplete:** {len(missing)} run(s) have not finished: {', '.join(missing)}. "
                  "Run the same command again to complete them.", ""]
    lines += ["## Table 4 layout: shifted windows and position embedding (swin_micro_28)", ""]
    lines += _table(TABLE4, summary)
    lines += ["", "## Global-context extension and same-schedule baselines", ""]
    lines += _table(EXTENSION, summary)
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
    for name in [n for n in VARIANT_NAMES if n in runs]:
        for r in runs[name]:
            lines.append(f"| {name} | {r['seed']} | {r['test']['acc1']:.2%} | {r['test']['acc5']:.2%} | "
                         f"{r['steps']} | {r['train_s']:.0f} | {r['eval_s']:.0f} | {r['wall_s']:.0f} | "
                         f"{r['throughput']['images_per_s']:.0f} |")
    total = sum(r["wall_s"] for rs in runs.values() for r in rs)
    lines += ["", f"Total wall time of the runs: {total / 60:.1f} min.", ""]
    return "\n".join(lines)


def _shift_note(schedule: TrainConfig) -> str:
    """Which blocks of the study's Swin attend over shifted windows at its image size."""
    default = VARIANTS[0]
    with torch.device("meta"):
        model = create_model(default.model, **{**schedule.model_overrides, **default.overrides})
    stages = profile(model, memory=False)["stages"]
    shifted = sum(any(b["shift"]) for s in stages for b in s["windows"])
    maps = ", ".join(f"{'×'.join(map(str, s['map_size']))} ({s['num_windows']} window(s) of "
                     f"{'×'.join(map(str, s['windows'][0]['window']))})" for s in stages)
    blocks = sum(s["blocks"] for s in stages)
    return (f"**What the switches can change here.** In `{default.model}` the stages attend over maps of "
            f"{maps}; only {shifted} of {blocks} blocks attend over shifted windows. Where a map is no "
            "larger than the window, the window is the whole map and the shift is dropped (as in the "
            f"paper's code), so shifting and the region mask act on those {shifted} block(s) only: much less "
            "than in Swin-T at 224² (56×56 tokens in 64 windows in stage 1).")


def _table(sections, summary: dict) -> list[str]:
    lines = ["| | top-1 (%) mean ± std | vs. default | params | MACs | throughput (img/s) |",
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
            bold = "**" if name == DEFAULT else ""
            lines.append(f"| {bold}{label}{bold} | {100 * s['acc1_mean']:.2f}{std} (n={n}) | "
                         f"{format_comparison(s['vs_default'])} | {s['params'] / 1e6:.2f}M | "
                         f"{s['macs'] / 1e6:.1f}M | {s['throughput']:.0f} |")
    return lines


# --- helpers --------------------------------------------------------------------------------------


def _plain(d) -> dict:
    """A JSON round trip (tuples become lists), so configs compare equal to what was written."""
    return json.loads(json.dumps(d, default=str))


def _check_same_schedule(path: Path, config: TrainConfig) -> None:
    """A finished run must come from this schedule, else the study would mix two."""
    saved = json.loads(path.read_text()).get("config", {})
    wanted = _plain(config.to_dict())
    diff = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
    if diff:
        changes = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"{path} was trained with another schedule ({changes}); use another --out, or the "
                         "same settings as before")


