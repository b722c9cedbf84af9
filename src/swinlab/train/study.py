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

Comparisons are paired by seed (:func:`swinlab.analysis.stats.paired`): the per-seed differences from the
default, their mean and standard deviation, and a verdict only where the mean lies beyond its 95% interval
(a difference inside it is a tie). This module holds the variants, the tables and the runs;
the statistics are :mod:`swinlab.analysis.stats`, the report :mod:`swinlab.analysis.study_report`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..analysis import study_report
from ..analysis.benchmark import time_model
from ..analysis.profiler import profile
from ..errors import ConfigError
from ..files import write_json
from ..layers.global_context import FUSIONS, SAMPLERS
from ..models.registry import get_config
from . import history
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


# The Swin whose switches the study flips. swin_study_28 (window 4) attends over several windows in 6 of its 8
# blocks; swin_micro_28 (window 7), the first study's model, in 2 (its later stages are one window each).
SWINS = ("swin_study_28", "swin_micro_28")
SWIN = SWINS[0]


def _gc(swin: str, fusion: str, sampler: str) -> Variant:
    tokens = get_config(f"{swin}_gc").global_context.tokens  # K after stage 1 (49 at 28²)
    return Variant(f"gc_{fusion}_{sampler}", f"{swin}_gc",
                   {"global_context": f"{fusion}:{sampler}:{tokens}"},
                   f"+ global context ({fusion}, {sampler})", "Swin + global context")


def variants(swin: str = SWIN) -> tuple[Variant, ...]:
    """Every variant of the study, its Swin ones built on ``swin`` (one of :data:`SWINS`)."""
    if swin not in SWINS:
        raise ConfigError(f"the study's Swin must be one of {list(SWINS)}, got {swin!r}")
    return (
        Variant(DEFAULT, swin, {}, "Swin (shifted windows, rel. pos.)", "Swin ablations"),
        Variant("no_shift", swin, {"shift": False}, "w/o shifting", "Swin ablations"),
        Variant("no_mask", swin, {"mask_shifted": False}, "shifted, no mask", "Swin ablations"),
        Variant("pos_none", swin, {"position": "none"}, "no pos.", "Swin ablations"),
        Variant("pos_abs", swin, {"position": "abs"}, "abs. pos.", "Swin ablations"),
        Variant("pos_abs_rel", swin, {"position": "abs+rel"}, "abs.+rel. pos.", "Swin ablations"),
        Variant("pos_rel_only", swin, {"position": "rel-only"}, "rel. pos. w/o app.", "Swin ablations"),
        *(_gc(swin, fusion, sampler) for fusion in FUSIONS for sampler in SAMPLERS),
        Variant("vit_micro_28", "vit_micro_28", {}, "ViT, params matched (vit_micro_28)", "baselines"),
        Variant("vit_study_28", "vit_study_28", {}, "ViT, MACs matched (vit_study_28)", "baselines"),
        Variant("mixer_micro_28", "mixer_micro_28", {}, "MLP-Mixer, params matched (mixer_micro_28)",
                "baselines"),
        Variant("mixer_study_28", "mixer_study_28", {}, "MLP-Mixer, MACs matched (mixer_study_28)",
                "baselines"),
    )


VARIANTS = variants()
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
    ("global context: fusion × sampler", (("Swin (no global context)", DEFAULT),
                                          *((f"{fusion}, {sampler}", f"gc_{fusion}_{sampler}")
                                            for fusion in FUSIONS for sampler in SAMPLERS))),
    ("baselines (same schedule)", (("Swin (the study's)", DEFAULT),
                                   ("ViT, params matched (vit_micro_28)", "vit_micro_28"),
                                   ("ViT, MACs matched (vit_study_28)", "vit_study_28"),
                                   ("MLP-Mixer, params matched (mixer_micro_28)", "mixer_micro_28"),
                                   ("MLP-Mixer, MACs matched (mixer_study_28)", "mixer_study_28"))),
)
TABLES = (("Table 4 layout: shifted windows and position embedding", TABLE4),
          ("Global-context extension and same-schedule baselines", EXTENSION))  # (heading, sections)


@dataclass(frozen=True)
class Throughput:
    batch_size: int = 64  # images per inference step
    warmup: int = 2
    repeats: int = 5


def select(only: Iterable[str] | None, swin: str = SWIN) -> list[Variant]:
    """The variants named in ``only`` (names may be comma-separated), in study order; all if ``None``."""
    every = variants(swin)
    if not only:
        return list(every)
    names = {n.strip() for item in only for n in item.split(",") if n.strip()}
    unknown = sorted(names - set(VARIANT_NAMES))
    if unknown:
        raise ConfigError(f"unknown variant(s) {unknown}; variants are {list(VARIANT_NAMES)}")
    return [v for v in every if v.name in names]


def run_config(schedule: TrainConfig, variant: Variant, seed: int) -> TrainConfig:
    """The schedule applied to ``variant`` at ``seed`` (which fixes init, split, order and subset)."""
    return schedule.replace(model=variant.model, seed=seed,
                            model_overrides={**schedule.model_overrides, **variant.overrides})


def run_ablations(out: str | os.PathLike, *, schedule: TrainConfig | None = None, seeds: int = 3,
                  only: Iterable[str] | None = None, work: str | os.PathLike = "runs/ablations-work",
                  throughput: Throughput = Throughput(), report_only: bool = False, swin: str = SWIN,
                  shard: tuple[int, int] = (0, 1), log=print) -> dict:
    """Train and test every selected variant at seeds ``0 … seeds-1`` (skipping finished runs),
    then write ``results.json`` and ``report.md`` from every result under ``out``.

    Args:
        schedule: the shared training config (default: the ``ablations`` recipe).
        only: variant names to run (default: all of :data:`VARIANTS`).
        work: where ``fit`` writes checkpoints and logs.
        throughput: how inference throughput is measured.
        report_only: train nothing; report what has finished.
        swin: the Swin the switches are flipped on (:data:`SWINS`).
        shard: ``(i, n)``: take only every ``n``-th run of the study's list (seeds outer, variants inner)
            from the ``i``-th, so ``n`` processes given ``0 … n-1`` share the study without overlap, whenever
            each starts; each reports what has finished so far (``report_only`` at the end reports all).

    Returns:
        The summary written to ``results.json``.
    """
    schedule = schedule or get_recipe("ablations")
    out, work = Path(out), Path(work)
    chosen = select(only, swin)
    if not report_only:
        index, count = shard  # a run's shard is its place in the whole list: the same whenever it starts
        todo = [(v, s) for s in range(seeds) for v in chosen][index::count]
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
    return write_report(out, schedule=schedule, seeds=seeds, only=only, work=work, throughput=throughput,
                        swin=swin)


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
    curve = history.epoch_curve(history.read_metrics(work_dir))  # every piece, resumed or not
    net, _ = load_checkpoint(fitted["model"])
    prof = profile(net, memory=False)
    speed = measure_throughput(net, throughput)
    shutil.rmtree(work_dir / "checkpoints", ignore_errors=True)  # resuming needs them no more
    return {
        "variant": variant.name, "model": variant.model, "overrides": variant.overrides, "seed": config.seed,
        "test": {k: test[k] for k in ("acc1", "acc5", "loss", "images")},
        "val": fitted["val"], "val_acc1_per_epoch": curve, "steps": fitted["global_step"],
        "precision": fitted["precision"],
        "params": prof["params"], "macs": prof["macs"], "throughput": speed,
        "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "resumed": resume, "threads": torch.get_num_threads(), "model_file": fitted["model"],
        "config": wanted,
    }


def measure_throughput(net: torch.nn.Module, settings: Throughput) -> dict:
    """Inference images/s on the CPU (median step of :func:`swinlab.analysis.benchmark.time_model`)."""
    r = time_model(net, batch_size=settings.batch_size, img_size=net.config.img_size, mode="infer",
                  warmup=settings.warmup, repeats=settings.repeats, device="cpu")
    return {"images_per_s": r["images_per_s"], "median_s": r["median_s"], "p10_s": r["p10_s"],
            "p90_s": r["p90_s"], "batch_size": settings.batch_size}


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


def write_report(out: str | os.PathLike, *, schedule: TrainConfig, seeds: int,
                 only: Iterable[str] | None = None, work: str | os.PathLike = "runs/ablations-work",
                 throughput: Throughput = Throughput(), swin: str = SWIN) -> dict:
    """``results.json``, ``report.md``, ``speed_accuracy.png`` and ``attention_maps.png`` from every
    finished run under ``out`` (``missing`` lists the runs of the ``only`` variants not yet there);
    returns the summary (:func:`swinlab.analysis.study_report.write_report`)."""
    out = Path(out)
    runs = collect(out)
    default_runs = runs.get(DEFAULT, [])
    model_file = Path(default_runs[0]["model_file"]) if default_runs else None
    attention_model = load_checkpoint(model_file)[0] if model_file and model_file.is_file() else None
    missing = [f"{v.name} seed {s}" for s in range(seeds) for v in select(only, swin)
               if not any(r["seed"] == s for r in runs.get(v.name, []))]
    settings = {"schedule": _plain(schedule.to_dict()), "seeds": seeds, "swin": swin,
                "throughput": _plain(throughput.__dict__), "work": str(work)}
    return study_report.write_report(out, runs, variants=variants(swin), reference=DEFAULT, tables=TABLES,
                                     schedule=schedule, seeds=seeds, missing=missing, settings=settings,
                                     throughput=throughput, attention_model=attention_model)


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


