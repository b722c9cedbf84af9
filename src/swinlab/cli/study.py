"""``swinlab study ablations``: train and report the ablation study (Table 4, extension, baselines)."""

from __future__ import annotations

import argparse

import torch

from ..precision import PRECISIONS
from ._common import positive_int, shard

SWINS = ("swin_study_28", "swin_micro_28")  # as swinlab.train.study.SWINS (not imported: Lightning is slow)

HELP = "train and report the ablation study (Table 4, extension, baselines)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``swinlab study``."""
    p.add_argument("study", choices=["ablations"],
                   help="ablations: Table 4 switches, global context, ViT/Mixer baselines")
    p.add_argument("--recipe", choices=["study", "ablations"], default="study",
                   help="study (default): the full schedule, 59,000 images × 30 epochs, a GPU's job; "
                        "ablations: the first study's reduced CPU schedule (1 epoch, 4,000 images)")
    p.add_argument("--swin", choices=list(SWINS), default=SWINS[0],
                   help="the Swin whose switches are flipped: swin_study_28 (default; window 4, windows in "
                        "6 of 8 blocks) or swin_micro_28 (window 7, the first study's)")
    p.add_argument("--data", default="fashion-mnist",
                   help="fashion-mnist (default) | synthetic | folder:PATH")
    p.add_argument("--data-dir", help="the Fashion-MNIST idx directory (default: Debian's)")
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds 0..N-1 per variant (default 3)")
    p.add_argument("--epochs", type=positive_int, help="default: the recipe's")
    p.add_argument("--train-limit", type=positive_int,
                   help="first N training images (default: the recipe's)")
    p.add_argument("--test-limit", type=positive_int, help="first N test images (default: all)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="training precision of every run (default: the recipe's, auto: bf16-mixed where "
                        "the hardware has native bf16)")
    p.add_argument("--out", default="runs/ablations", help="results and report (default runs/ablations)")
    p.add_argument("--work", default="runs/ablations-work",
                   help="checkpoints and logs of the runs (default runs/ablations-work)")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="run these variants only (space or comma separated)")
    p.add_argument("--shard", type=shard, default=(0, 1), metavar="I/N",
                   help="take every N-th run of the study from the I-th (0-based): N processes given "
                        "0/N … N-1/N split it without overlap (a GPU's or a many-core CPU's parallel runs; "
                        "the same --out and --work); --report-only at the end reports every run")
    p.add_argument("--report-only", action="store_true", help="train nothing; report the finished runs")
    p.add_argument("--smoke", action="store_true", help="the recipe's seconds-long smoke version")
    p.add_argument("--threads", type=positive_int,
                   help="torch threads (default: torch's); 1 on a CPU shared with other jobs")


def run(args: argparse.Namespace) -> int:
    """Run (or resume, or only report) the study and print where the report is."""
    # Imported here for start-up time only: Lightning takes seconds to import, `swinlab --help` none.
    from ..train.recipes import get_recipe
    from ..train.study import Throughput, run_ablations

    changes = {k: v for k, v in (("data", args.data), ("data_dir", args.data_dir), ("epochs", args.epochs),
                                 ("train_limit", args.train_limit), ("test_limit", args.test_limit),
                                 ("precision", args.precision))
               if v is not None}
    if args.smoke and args.data == "fashion-mnist":
        changes.pop("data")  # the smoke recipe's synthetic data unless asked otherwise
    speed = Throughput(batch_size=8, warmup=1, repeats=2) if args.smoke else Throughput()
    if args.threads:
        torch.set_num_threads(args.threads)
    schedule = get_recipe(args.recipe, smoke=args.smoke, **changes)
    results = run_ablations(args.out, schedule=schedule, seeds=args.seeds, only=args.only, work=args.work,
                            throughput=speed, report_only=args.report_only, swin=args.swin,
                            shard=args.shard)
    done = sum(len(r) for r in results["runs"].values())
    print(f"{done} run(s) finished, {len(results['missing'])} missing; report: {args.out}/report.md")
    return 0
