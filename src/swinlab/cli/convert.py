"""``swinlab convert SOURCE_FILE OUTPUT --source timm|torchvision|official``: a peer checkpoint to swinlab."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..weights import load, save
from ._common import build_model, img_size, millions, positive_int

HELP = "convert a timm / torchvision / official checkpoint to swinlab"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``swinlab convert``."""
    p.add_argument("source_file", help="a peer checkpoint (.pth, .pt, .bin, .ckpt or .safetensors)")
    p.add_argument("output", help="the swinlab checkpoint to write (.safetensors, config inside)")
    p.add_argument("--source", required=True, choices=["timm", "torchvision", "official", "hf"],
                   help="the layout of the peer checkpoint")
    p.add_argument("--model", help="the registered model it is for (default: inferred from its shapes)")
    p.add_argument("--img-size", type=positive_int, nargs="+", metavar="H [W]",
                   help="the image size the model is for (default: the preset's, or 224 / 384 for M=12)")


def run(args: argparse.Namespace) -> int:
    """Load the peer checkpoint into a swinlab model and save it with its config."""
    size = img_size(args.img_size)
    overrides = {"img_size": size} if size else {}
    if not args.output.endswith(".safetensors"):
        raise ConfigError(f"output {args.output!r} must end in .safetensors")
    model = build_model(args.model, device="cpu", **overrides) if args.model else None
    model = load(args.source_file, model, source=args.source, **({} if model else overrides))
    path = save(model, args.output, metadata={"converted_from": f"{args.source}:{args.source_file}"})
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {path}: {type(model).__name__} {millions(params)} params, config {model.config}")
    return 0
