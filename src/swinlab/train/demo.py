"""``swinlab demo``: train the demo recipe on Fashion-MNIST, test on the 10k test images, and write
``report.md`` with the accuracy, training curves, confusion matrix and attention maps."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from ..analysis.attention_maps import attention_figure
from ..analysis.plots import plot_confusion, plot_training_curves
from .recipes import get_recipe
from .run import evaluate, fit, load_checkpoint


def run_demo(out_dir: str = "runs/demo", quick: bool = False, data_dir: str | None = None) -> dict:
    """Train, evaluate and report; returns the metrics written to ``metrics.json``.

    Args:
        quick: the smoke-sized recipe (a few hundred images; seconds), for checking the pipeline.
    """
    out = Path(out_dir)
    config = get_recipe("demo", smoke=quick, data_dir=data_dir)
    t0 = time.perf_counter()
    result = fit(config, out)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    test = evaluate(result["model"], config.data, config.data_dir, test_limit=config.test_limit,
                    confusion=True)
    eval_s = time.perf_counter() - t1

    plot_training_curves(out / "metrics.csv", out / "training_curves.png")
    plot_confusion(test["confusion"], test["classes"], out / "confusion_matrix.png",
                   title=f"test confusion matrix: {test['acc1']:.2%} top-1 on {test['images']} images")
    net, _ = load_checkpoint(result["model"])
    attention_png = attention_figure(net, config.data, config.data_dir, out / "attention_maps.png")

    metrics = {
        "recipe": config.name, "model": config.model, "quick": quick,
        "train_images": result["train_images"], "epochs": config.epochs, "steps": result["global_step"],
        "precision": result["precision"],
        "test_images": test["images"], "test_acc1": test["acc1"], "test_acc5": test["acc5"],
        "test_loss": test["loss"], "val": result["val"], "train_seconds": round(train_s, 1),
        "eval_seconds": round(eval_s, 1), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.platform(), "processor": platform.processor() or platform.machine(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "report.md").write_text(_report(metrics, test, attention_png))
    return metrics


def _report(m: dict, test: dict, attention_png: Path) -> str:
    per_class = [(name, row[i] / max(sum(row), 1)) for i, (name, row) in
                 enumerate(zip(test["classes"], test["confusion"], strict=True))]
    rows = "\n".join(f"| {name} | {acc:.1%} |" for name, acc in per_class)
    return f"""# swinlab demo: {m['model']} on Fashion-MNIST

Recipe `{m['recipe']}`{' (quick)' if m['quick'] else ''}: {m['epochs']} epoch(s) on {m['train_images']:,}
training images, {m['steps']} optimizer steps in {m['precision']}, in {m['train_seconds']:.0f} s on
{m['threads']} CPU thread(s) (torch {m['torch']}).

**Test accuracy: {m['test_acc1']:.2%} top-1, {m['test_acc5']:.2%} top-5** on {m['test_images']} test images
(loss {m['test_loss']:.3f}; evaluation took {m['eval_seconds']:.0f} s).

## Training curves

![training curves](training_curves.png)

## Confusion matrix

![confusion matrix](confusion_matrix.png)

| class | recall |
|---|---|
{rows}

## Attention maps

Head-averaged attention of the centre token (green ×) in the first two blocks of stage 1: a regular
window (W-MSA) and a shifted window (SW-MSA; cyan lines are the window borders, zero attention
inside a window marks the tokens the shifted-window mask hides because they wrapped around).

![attention maps]({attention_png.name})
"""
