"""Figures for reports (matplotlib, Agg backend): training curves, confusion matrix, attention maps."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _save(fig, out: str | os.PathLike, dpi: int = 110) -> Path:
    """Lay ``fig`` out, write it to ``out`` and free it."""
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return Path(out)


def read_metrics_csv(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Lightning CSVLogger's ``metrics.csv`` as ``{metric: [(step, value), ...]}``."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(row.get("step") or 0)
            for k, v in row.items():
                if k not in ("step", "epoch") and v not in ("", None):
                    series.setdefault(k, []).append((step, float(v)))
    return series


def plot_training_curves(metrics_csv: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Loss and top-1 accuracy against the optimizer step (train per logged step, val points)."""
    s = read_metrics_csv(metrics_csv)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label, ax in (("train/loss_step", "train loss", ax1), ("val/loss", "val loss", ax1),
                           ("val/acc1", "val top-1", ax2), ("val/acc5", "val top-5", ax2)):
        if key in s:
            x, y = zip(*s[key], strict=True)
            ax.plot(x, y, "o-" if key.startswith("val") else "-", label=label, ms=4)
    ax1.set(xlabel="step", ylabel="cross-entropy", title="loss")
    ax2.set(xlabel="step", ylabel="accuracy", title="validation accuracy", ylim=(0, 1))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, out)


def plot_confusion(matrix, classes: list[str], out: str | os.PathLike, title: str = "") -> Path:
    """Row-normalized confusion matrix (rows: true class) with counts in the cells."""
    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8, 7))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix (test)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    return _save(fig, out)


def plot_attention(images, maps, query: tuple[int, int], patch: int, window: int, shift: int,
                   titles: list[str], out: str | os.PathLike) -> Path:
    """One row per image: the image with the query marked, W-MSA and SW-MSA attention overlays with
    the window borders (regular at multiples of M, shifted ones offset by M/2)."""
    images, maps = np.asarray(images), np.asarray(maps)
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    qy, qx = (query[0] + 0.5) * patch - 0.5, (query[1] + 0.5) * patch - 0.5
    for r in range(n):
        img = images[r]
        h, w = img.shape[:2]
        for c, (ax, label) in enumerate(zip(axes[r], ("input", "W-MSA (block 1)", "SW-MSA (block 2)"),
                                            strict=True)):
            ax.imshow(img, cmap="gray", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            if c:
                att = np.kron(maps[r, c - 1], np.ones((patch, patch)))[:h, :w]
                ax.imshow(att, cmap="inferno", alpha=0.65, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
                off = 0 if c == 1 else shift  # shifted window k covers tokens [s + kM, s + (k+1)M)
                for b in range(off, max(h, w) // patch + window, window):
                    if 0 < b * patch < max(h, w):
                        ax.axhline(b * patch - 0.5, color="cyan", lw=1)
                        ax.axvline(b * patch - 0.5, color="cyan", lw=1)
            ax.plot(qx, qy, "x", color="lime", ms=9, mew=2)
            ax.set_title(f"{titles[r]}" if c == 0 else label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, out)


def plot_speed_accuracy(points: list[dict], out: str | os.PathLike, title: str = "") -> Path:
    """Top-1 against inference throughput, one marker per model with its seed spread as error bars
    (the layout of the Swin paper's speed-accuracy comparison).

    Args:
        points: ``{"label", "group", "throughput", "acc1", "acc1_std"}`` each (accuracy in %,
            ``acc1_std`` may be ``None``); one colour and marker per ``group``, in order of appearance.
    """
    fig, ax = plt.subplots(figsize=(8, 5.5))
    styles = iter([("tab:blue", "o"), ("tab:orange", "s"), ("tab:green", "D"), ("tab:red", "^"),
                   ("tab:purple", "v"), ("tab:brown", "P")])
    group_style: dict[str, tuple[str, str]] = {}
    for p in points:
        first = p["group"] not in group_style
        if first:
            group_style[p["group"]] = next(styles)
        color, marker = group_style[p["group"]]
        ax.errorbar(p["throughput"], p["acc1"], yerr=p["acc1_std"] or 0, fmt=marker, color=color, ms=7,
                    capsize=3, label=p["group"] if first else None)
        ax.annotate(p["label"], (p["throughput"], p["acc1"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=7.5)
    ax.set(xlabel="inference throughput (images/s, this CPU)", ylabel="top-1 accuracy (%)",
           title=title or "speed vs. accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, out, dpi=120)


def plot_epoch_curves(curves: dict[str, list[tuple[int, float]]], out: str | os.PathLike, *, title: str = "",
                      ylabel: str = "validation top-1 (%)") -> Path:
    """One line per label of ``(epoch, value)`` points (values in percent): a run's convergence by seed."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, points in curves.items():
        if points:
            x, y = zip(*points, strict=True)
            ax.plot([e + 1 for e in x], y, "o-", ms=3, label=label)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out)
