"""A run's logged metrics across resumed pieces.

Lightning's CSV logger deletes ``metrics.csv`` when it starts in a folder that has one, so a resumed
run would lose the rows of its earlier pieces. :func:`fit <swinlab.train.run.fit>` moves the file aside
first (:func:`keep_earlier_piece`: ``metrics.part1.csv``, ``metrics.part2.csv``, …) and
:func:`read_metrics` joins the pieces back into one history.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

METRICS = "metrics.csv"
_PIECE = re.compile(r"metrics\.part(\d+)\.csv")


def _moved_aside(run: Path) -> list[tuple[int, Path]]:
    """``(N, metrics.partN.csv)`` of the run's earlier pieces, by N."""
    return sorted((int(m.group(1)), p) for p in run.glob("metrics.part*.csv")
                  if (m := _PIECE.fullmatch(p.name)))


def pieces(run_dir: str | os.PathLike) -> list[Path]:
    """The run's metrics files, oldest first: the moved-aside pieces, then ``metrics.csv``."""
    run = Path(run_dir)
    current = run / METRICS
    return [p for _, p in _moved_aside(run)] + ([current] if current.is_file() else [])


def keep_earlier_piece(run_dir: str | os.PathLike) -> Path | None:
    """Move ``metrics.csv`` to the next free ``metrics.partN.csv`` (before a resumed piece starts its own);
    returns the new path, or ``None`` when there was none."""
    run = Path(run_dir)
    current = run / METRICS
    if not current.is_file():
        return None
    earlier = _moved_aside(run)
    target = run / f"metrics.part{earlier[-1][0] + 1 if earlier else 1}.csv"
    os.replace(current, target)
    return target


def merge(paths: list[str | os.PathLike]) -> tuple[list[dict], list[str]]:
    """The rows of metrics files of one run's pieces, in order, and every column seen: each piece replaces
    the earlier rows from its first step on (a resumed piece repeats the steps after its checkpoint)."""
    rows: list[dict] = []
    fields: list[str] = []
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fields += [k for k in reader.fieldnames or [] if k not in fields]
            piece = list(reader)
        if piece:
            start = min(int(r["step"]) for r in piece)
            rows = [r for r in rows if int(r["step"]) < start] + piece
    return rows, fields


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """Every logged row of the run in ``run_dir``, its resumed pieces joined (:func:`merge`)."""
    return merge(pieces(run_dir))[0]


def write_metrics(rows: list[dict], fields: list[str], out: str | os.PathLike) -> Path:
    """``rows`` as one CSV (the merged ``metrics.csv`` of a report)."""
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return Path(out)


def epoch_curve(rows: list[dict], metric: str = "val/acc1") -> list[tuple[int, float]]:
    """``(epoch, value)`` of ``metric`` at each epoch's last logged value (a run validating several times
    per epoch keeps the epoch's final one), in epoch order."""
    last: dict[int, float] = {}
    for r in rows:
        if r.get(metric) not in (None, "") and r.get("epoch") not in (None, ""):
            last[int(float(r["epoch"]))] = float(r[metric])
    return sorted(last.items())
