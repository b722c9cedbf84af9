"""The label-efficiency experiment of SimMIM on Fashion-MNIST (docs/results/simmim/).

1. Pretrain the model with SimMIM on the training images, labels unused (recipe ``simmim-fashion-mnist``).
2. For each labelled share (1%, 10%: stratified, the same images for a seed whatever the init) and seed,
   fine-tune from the pretrained encoder and train the same model from scratch with the same budget
   (recipe ``simmim-fine-tune``), and test both on the 10,000 test images.
3. Write ``results.json`` (every run) and ``report.md`` (mean ± std, paired differences per seed) and
   ``reconstructions.png`` (masked inputs and their reconstructions).

Resumable: a finished run (its ``test.json``) is skipped, the pretraining resumes from its last
checkpoint. Run it with ``PYTHONPATH=src python benchmarks/simmim_experiment.py --work runs/simmim``;
``--report-only`` rewrites the report from the finished runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from swinlab.analysis.benchmark import environment
from swinlab.train import evaluate, fit, get_recipe

FRACTIONS = (0.01, 0.1)
OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "simmim"


def pretrain(work: Path, epochs: int) -> Path:
    run = work / "pretrain"
    model = run / "model.safetensors"
    if model.is_file():
        return model
    config = get_recipe("simmim-fashion-mnist").replace(epochs=epochs, progress_bar=False)
    resume = (run / "checkpoints" / "last.ckpt").is_file()
    t0 = time.perf_counter()
    fit(config, run, resume=resume, accelerator="cpu")
    (run / "wall.json").write_text(json.dumps({"seconds": time.perf_counter() - t0, "resumed": resume}))
    return model


def fine_tune(work: Path, init: Path | None, fraction: float, seed: int, epochs: int) -> dict:
    name = f"{'simmim' if init else 'scratch'}_f{fraction:g}_s{seed}"
    run = work / name
    done = run / "test.json"
    if done.is_file():
        return json.loads(done.read_text())
    config = get_recipe("simmim-fine-tune").replace(
        train_fraction=fraction, seed=seed, epochs=epochs, init=str(init) if init else None,
        layer_decay=0.85 if init else None)
    t0 = time.perf_counter()
    result = fit(config, run, resume=(run / "checkpoints" / "last.ckpt").is_file(), accelerator="cpu")
    seconds = time.perf_counter() - t0
    test = evaluate(result["model"])
    entry = {"run": name, "init": "simmim" if init else "scratch", "fraction": fraction, "seed": seed,
             "epochs": epochs, "train_images": result["train_images"], "test_acc1": test["acc1"],
             "test_images": test["images"], "train_seconds": round(seconds, 1)}
    done.write_text(json.dumps(entry, indent=2))
    return entry


def reconstructions(work: Path, out: Path, n: int = 8) -> Path:
    """Test images, the masked input the encoder saw, the reconstruction, and it pasted into the input."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from swinlab import create_model
    from swinlab.data import ImageDataModule
    from swinlab.train.simmim import SimMIM, random_masks

    config = get_recipe("simmim-fashion-mnist")
    state = torch.load(work / "pretrain" / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)["state_dict"]
    model = SimMIM(create_model(config.model, num_classes=0, **config.model_overrides),
                   mask_patch_size=config.mask_patch_size)
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    dm = ImageDataModule("fashion-mnist", img_size=(28, 28), channels=1, test_limit=n, val_size=1000)
    dm.setup()
    x = torch.stack([dm.test_set[i][0] for i in range(n)])  # normalized (B, 1, 28, 28)
    masks = random_masks(n, model.grid, config.mask_ratio, torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss, rec = model.eval()(x, masks)
    m = model.pixel_mask(masks).unsqueeze(1).float()
    rows = [("image", x), ("masked input", x * (1 - m)), ("reconstruction", rec),
            ("visible + reconstructed", x * (1 - m) + rec * m)]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.4 * n, 1.5 * len(rows)))
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c, 0].numpy(), cmap="gray", vmin=float(x.min()), vmax=float(x.max()))
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle("SimMIM on Fashion-MNIST test images: 60% of the 4×4 patches masked "
                 f"(L1 on them {loss:.3f})",
                 fontsize=9)
    fig.tight_layout()
    path = out / "reconstructions.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(entries: list[dict], pre: dict, out: Path, args) -> str:
    lines = ["# SimMIM pretraining and label-efficient fine-tuning on Fashion-MNIST", "",
             f"Machine: {environment('cpu')['machine']['cpu']}, {os.cpu_count()} cores, "
             f"{torch.get_num_threads()} torch threads, "
             f"torch {torch.__version__}; CPU only. Date: {time.strftime('%Y-%m-%d')}.", "",
             "Command: `PYTHONPATH=src python benchmarks/simmim_experiment.py --work runs/simmim "
             f"--pretrain-epochs {args.pretrain_epochs} --epochs-1pct {args.epochs_1pct} "
             f"--epochs-10pct {args.epochs_10pct} --seeds {args.seeds}`", "",
             f"Pretraining: `{pre['model']}`, SimMIM (60% of 4×4 mask patches, L1 on masked pixels), "
             f"{pre['epochs']} epochs over {pre['train_images']:,} training images (labels unused; 1,000 "
             f"held out for the validation loss), final val loss {pre['val_loss']:.4f}, "
             f"{pre['seconds'] / 60:.1f} min. Validation loss after each epoch: "
             + ", ".join(f"{v:.3f}" for v in pre["val_curve"]) + " (flat from epoch 5).", "",
             "Fine-tuning (`simmim-fine-tune`): the same model, a stratified labelled subset of the training "
             "split (the same images for a seed, pretrained or not), the same epochs and schedule; the "
             "pretrained runs start from the SimMIM encoder with layer-wise lr decay 0.85, the scratch runs "
             "from the default initialization. Test: the 10,000 Fashion-MNIST test images.", "",
             "| labels | init | test top-1 per seed | mean ± std |", "|---|---|---|---|"]
    summary = {}
    for fraction in FRACTIONS:
        for init in ("scratch", "simmim"):
            runs = sorted((e for e in entries if e["fraction"] == fraction and e["init"] == init),
                          key=lambda e: e["seed"])
            if not runs:
                continue
            accs = [e["test_acc1"] * 100 for e in runs]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            summary[(fraction, init)] = {e["seed"]: e["test_acc1"] * 100 for e in runs}
            lines.append(f"| {fraction:.0%} ({runs[0]['train_images']:,} images) | {init} | "
                         + ", ".join(f"{a:.2f}" for a in accs)
                         + f" | {statistics.mean(accs):.2f} ± {sd:.2f} |")
    lines += ["", "Paired differences (SimMIM − scratch, same seed, same labelled images):", "",
              "| labels | per seed | mean ± std | verdict |", "|---|---|---|---|"]
    for fraction in FRACTIONS:
        a, b = summary.get((fraction, "simmim"), {}), summary.get((fraction, "scratch"), {})
        seeds = sorted(set(a) & set(b))
        if not seeds:
            continue
        diffs = [a[s] - b[s] for s in seeds]
        mean = statistics.mean(diffs)
        sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
        verdict = ("pretraining helps" if mean > 2 * sd else "pretraining hurts" if mean < -2 * sd
                   else "no difference beyond the spread") if len(diffs) > 1 else "one seed: no verdict"
        lines.append(f"| {fraction:.0%} | " + ", ".join(f"{d:+.2f}" for d in diffs)
                     + f" | {mean:+.2f} ± {sd:.2f} | {verdict} |")
    secs = {f: statistics.mean(e["train_seconds"] for e in entries if e["fraction"] == f)
            for f in FRACTIONS if any(e["fraction"] == f for e in entries)}
    lines += ["", "A verdict needs the mean paired difference beyond twice its standard deviation over "
              "the seeds.", "",
              "Where it ran: everything on this CPU (no GPU was lent to the session), in bf16-mixed (the "
              "recipes' `auto`); wall time of a fine-tuning run (training only): "
              + ", ".join(f"{secs[f]:.0f} s at {f:.0%}" for f in secs) + ". Runs are seeded; the fine-tuning "
              "budgets (epochs, lr) were fixed before the runs and are the same for both inits, not tuned "
              "for either; the pretrained runs use layer-wise lr decay 0.85, part of the fine-tuning recipe "
              "of an initialized encoder (the scratch runs have no pretrained layers to protect).", "",
              "![masked inputs and reconstructions](reconstructions.png)", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="runs/simmim", help="run directories (resumable)")
    p.add_argument("--pretrain-epochs", type=int, default=6)
    p.add_argument("--epochs-1pct", type=int, default=40)
    p.add_argument("--epochs-10pct", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    encoder = None if args.report_only else pretrain(work, args.pretrain_epochs)
    entries = []
    for fraction in FRACTIONS:
        epochs = args.epochs_1pct if fraction == 0.01 else args.epochs_10pct
        for seed in range(args.seeds):
            for init in (None, encoder or work / "pretrain" / "model.safetensors"):
                name = f"{'simmim' if init else 'scratch'}_f{fraction:g}_s{seed}"
                if args.report_only:
                    f = work / name / "test.json"
                    if f.is_file():
                        entries.append(json.loads(f.read_text()))
                    continue
                entries.append(fine_tune(work, init, fraction, seed, epochs))
                print(json.dumps(entries[-1]), flush=True)
                write(work, entries, args)
    write(work, entries, args)


def write(work: Path, entries: list[dict], args) -> None:
    import csv

    with open(work / "pretrain" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    wall_file = work / "pretrain" / "wall.json"
    wall = json.loads(wall_file.read_text()) if wall_file.is_file() else {"seconds": float("nan")}
    config = get_recipe("simmim-fashion-mnist")
    pre = {"model": config.model, "epochs": args.pretrain_epochs, "train_images": 59_000,
           "val_loss": val[-1] if val else float("nan"), "val_curve": val, "seconds": wall["seconds"]}
    (OUT / "results.json").write_text(json.dumps({"pretrain": pre, "runs": entries}, indent=2) + "\n")
    if (work / "pretrain" / "checkpoints" / "last.ckpt").is_file():
        reconstructions(work, OUT)
    (OUT / "report.md").write_text(report(entries, pre, OUT, args))


if __name__ == "__main__":
    main()
