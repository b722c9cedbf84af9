"""Report of a finished ``swinlab train --recipe fashion-mnist`` run: test accuracy on the 10,000 test images,
training curves, confusion matrix, the command and the machine, into ``docs/results/fashion-mnist/``.

    PYTHONPATH=src python benchmarks/fashion_mnist_report.py --run runs/fashion-mnist \\
        [--metrics runs/fashion-mnist-part1-metrics.csv ...] --out docs/results/fashion-mnist

``--metrics``: the ``metrics.csv`` of earlier pieces of a resumed run that ``fit`` did not keep (runs before
``swinlab.train.history``: Lightning's CSV logger starts a new file on resume), oldest first; the run's own
pieces (``metrics.partN.csv``) are read after them; each later piece replaces the rows from its first step on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch

from swinlab.analysis.plots import plot_confusion, plot_training_curves
from swinlab.train import history
from swinlab.train.run import evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="the run directory (swinlab train --out)")
    p.add_argument("--metrics", type=Path, nargs="*", default=[], help="metrics.csv of earlier pieces")
    p.add_argument("--out", type=Path, default=Path("docs/results/fashion-mnist"))
    p.add_argument("--note", default="", help="a line on where and how the run ran")
    p.add_argument("--findings", type=Path, default=None, help="a markdown file: what the run shows")
    p.add_argument("--command", default="swinlab train --recipe fashion-mnist --out runs/fashion-mnist",
                   help="the command that trained the run (default: the recipe's)")
    p.add_argument("--title", default="The `fashion-mnist` recipe, run to the end",
                   help="the report's heading")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, fields = history.merge([*args.metrics, *history.pieces(args.run)])
    history.write_metrics(rows, fields, args.out / "metrics.csv")
    val = history.epoch_curve(rows)
    test = evaluate(args.run / "model.safetensors", confusion=True)
    plot_training_curves(args.out / "metrics.csv", args.out / "training_curves.png")
    plot_confusion(test["confusion"], test["classes"], args.out / "confusion_matrix.png",
                   title=f"test confusion matrix: {test['acc1']:.2%} top-1 on {test['images']} images")
    config = (args.run / "config.yaml").read_text()
    result = {
        "test_acc1": test["acc1"], "test_acc5": test["acc5"], "test_loss": test["loss"],
        "test_images": test["images"], "val_acc1_per_epoch": val,
        "command": f"{args.command} (--resume to continue)",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads()},
        "torch": torch.__version__, "note": args.note,
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "config.yaml").write_text(config)
    pairs = enumerate(zip(test["classes"], test["confusion"], strict=True))
    per_class = "\n".join(f"| {name} | {row[i] / max(sum(row), 1):.1%} |" for i, (name, row) in pairs)
    curve = "\n".join(f"| {e} | {a:.2%} |" for e, a in val)
    target = "met" if test["acc1"] >= 0.95 else "**not met**"
    findings = args.findings.read_text() if args.findings else ""
    (args.out / "report.md").write_text(f"""# {args.title}

**{test['acc1']:.2%} top-1** ({test['acc5']:.2%} top-5, loss {test['loss']:.3f}) on the {test['images']:,}
Fashion-MNIST test images, float32 evaluation. Target ≥ 95.0% (issue 11): {target}.

Command: `{result['command']}`, then
`PYTHONPATH=src python benchmarks/fashion_mnist_report.py --run {args.run} ...` for this report.
Machine: {result['machine']['processor']}, {result['machine']['platform']}, torch {result['torch']};
{args.note}

{findings}
![training curves](training_curves.png)

![confusion matrix](confusion_matrix.png)

## Validation top-1 per epoch (1,000 held-out training images)

| epoch | val top-1 |
|---|---|
{curve}

## Test top-1 per class

| class | top-1 |
|---|---|
{per_class}

## Config

```yaml
{config}```
""")
    print(json.dumps({k: result[k] for k in ("test_acc1", "test_acc5", "test_images")}))


if __name__ == "__main__":
    main()
