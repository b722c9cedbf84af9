"""``swinlab demo``: train the demo recipe on Fashion-MNIST, test on the 10k test images, and write
``report.md`` with the accuracy, training curves, confusion matrix and attention maps."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from ..analysis.attention_maps import query_attention_maps
from ..analysis.plots import plot_attention, plot_confusion, plot_training_curves
from ..data import ImageDataModule
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
    attention_png = _attention_figure(result["model"], config, out / "attention_maps.png")

    metrics = {
        "recipe": config.name, "model": config.model, "quick": quick,
        "train_images": config.train_limit, "epochs": config.epochs, "steps": result["global_step"],
        "test_images": test["images"], "test_acc1": test["acc1"], "test_acc5": test["acc5"],
        "test_loss": test["loss"], "val": result["val"], "train_seconds": round(train_s, 1),
        "eval_seconds": round(eval_s, 1), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.platform(), "processor": platform.processor() or platform.machine(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "report.md").write_text(_report(metrics, test, attention_png))
    return metrics


def _attention_figure(checkpoint, config, path: Path, n: int = 4) -> Path:
    net, _ = load_checkpoint(checkpoint)
    cfg = net.config
    dm = ImageDataModule(config.data, config.data_dir, img_size=cfg.img_size, channels=cfg.in_chans,
                         test_limit=64, augment=None)
    dm.setup("test")
    raw = [dm.test_set.dataset[dm.test_set.indices[i]][0] for i in range(n)]  # uint8 (C, H, W)
    x = torch.stack([dm.test_set[i][0] for i in range(n)])
    grid = (-(-cfg.img_size[0] // cfg.patch_size), -(-cfg.img_size[1] // cfg.patch_size))
    query = (grid[0] // 2, grid[1] // 2)  # the centre token: its shifted window straddles borders
    maps = query_attention_maps(net, x, query)  # (n, 2, h, w)
    with torch.no_grad():
        pred = net(x).argmax(-1).tolist()
    names = dm.classes
    titles = [f"true {names[dm.test_set[i][1]]} / pred {names[p]}" for i, p in enumerate(pred)]
    images = [r.permute(1, 2, 0).squeeze(-1).numpy() for r in raw]
    m = cfg.window_size[0]
    return plot_attention(images, maps.numpy(), query, cfg.patch_size, m, m // 2 if cfg.shift else 0, titles,
                          path)


def _report(m: dict, test: dict, attention_png: Path) -> str:
    per_class = [(name, row[i] / max(sum(row), 1)) for i, (name, row) in
                 enumerate(zip(test["classes"], test["confusion"], strict=True))]
    rows = "\n".join(f"| {name} | {acc:.1%} |" for name, acc in per_class)
    return f"""# swinlab demo: {m['model']} on Fashion-MNIST

Recipe `{m['recipe']}`{' (quick)' if m['quick'] else ''}: {m['epochs']} epoch(s) on {m['train_images']}
training images, {m['steps']} optimizer steps, in {m['train_seconds']:.0f} s on {m['threads']} CPU thread(s)
(torch {m['torch']}).

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
