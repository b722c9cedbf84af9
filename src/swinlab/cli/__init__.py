"""The ``swinlab`` command line.

    swinlab [--debug] [-v | -q] COMMAND ...
    swinlab list [PATTERN]
    swinlab profile MODEL [--img-size H [W]] [--batch-size N] [--device D] [--json PATH]
                          [--scaling S [S ...]]
    swinlab train [--recipe NAME] [--model M] [--data fashion-mnist|synthetic|folder:PATH] [--data-dir D]
                  [--epochs N] [--batch-size B] [--out DIR] [--resume] [--devices N] [--num-nodes M]
                  [--strategy S] [--accelerator A] [--smoke] [--strict]
                  [--config FILE] [--set FIELD=VALUE ...] [--print-config] [--base-lr LR] ...
                  [--init CHECKPOINT] [--layer-decay D] [--train-fraction F | --labels-per-class N]
    swinlab pretrain [--method simmim] [--recipe NAME] [--mask-ratio R] [--mask-patch-size PX] ...
                     (the options of train)
    swinlab eval CHECKPOINT [--data ...] [--data-dir D] [--model M] [--limit N] [--json]
    swinlab predict CHECKPOINT|MODEL.onnx|MODEL.pt2 IMAGE [IMAGE ...] [--topk K] [--json]
    swinlab demo [--out runs/demo] [--quick] [--data-dir D]
    swinlab convert SOURCE_FILE OUTPUT --source timm|torchvision|official [--model M] [--img-size H [W]]
    swinlab export CHECKPOINT OUT [--format onnx|exported-program] [--dynamic] [--img-size H [W]]
                   [--precision 32-true|bf16-true]
    swinlab study ablations [--data D] [--seeds N] [--epochs N] [--train-limit N] [--out DIR]
                            [--only NAME ...] [--work DIR] [--report-only] [--smoke] [--threads N]
    swinlab bench MODEL [MODEL ...] [--batch-size N] [--img-size H [W]] [--mode infer train] ...

Each command is a module of this package with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; :data:`COMMANDS` lists them.

Exit status: 0 on success; 1 when a command ran but did not fully succeed (``predict`` with an
unreadable image, ``list`` matching nothing); 2 for bad input, either an argparse usage error or a
:class:`~swinlab.errors.SwinlabError` (an unknown model, a missing or mismatched checkpoint, data that
is missing or unreadable), which is printed as one line ``swinlab COMMAND: error: MESSAGE``
(``--debug``: with its traceback). Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType

from ..errors import SwinlabError
from . import bench, convert, demo, export, predict, pretrain, profile, study, train
from . import eval as eval_command
from . import list as list_command

COMMANDS: dict[str, ModuleType] = {
    "list": list_command,
    "profile": profile,
    "train": train,
    "pretrain": pretrain,
    "eval": eval_command,
    "predict": predict,
    "demo": demo,
    "convert": convert,
    "export": export,
    "study": study,
    "bench": bench,
}

USAGE_ERROR = 2  # argparse's status for bad usage; a SwinlabError is bad input too


def _add_global_flags(p: argparse.ArgumentParser, *, default) -> None:
    # declared on the main parser and again on every command (default SUPPRESS there, so a flag
    # given before the command is not reset by the command's parser): `swinlab -v eval ...` and
    # `swinlab eval -v ...` both work
    p.add_argument("--debug", action="store_true", default=default,
                   help="show the traceback of every error, not only of bugs")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="count", default=default,
                      help="log more: -v info, -vv debug (default: warnings only)")
    loud.add_argument("-q", "--quiet", action="store_true", default=default, help="log errors only")


def build_parser() -> argparse.ArgumentParser:
    """The ``swinlab`` parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="swinlab", description=__doc__.splitlines()[0])
    _add_global_flags(parser, default=None)
    parser.set_defaults(debug=False, verbose=0, quiet=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        _add_global_flags(p, default=argparse.SUPPRESS)
        p.set_defaults(run=module.run, prog=p.prog)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (tests and tools swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Send the ``swinlab`` loggers to stderr: warnings by default, ``-v`` info, ``-vv`` debug,
    ``-q`` errors only. Called once per :func:`main`; the handler is installed once per process."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose or 0, logging.DEBUG)
    logger = logging.getLogger("swinlab")
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
        logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """Run ``swinlab`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Raises:
        SystemExit: status 2 on bad input (argparse's usage errors and every SwinlabError).
    """
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        return args.run(args)
    except SwinlabError as e:
        if args.debug:
            raise
        print(f"{args.prog}: error: {e}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None
