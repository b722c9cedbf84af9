"""Throughput of a classifier: seconds per step, images per second, peak memory.

A *step* is one inference forward pass (under :func:`torch.inference_mode`) or one training step
(forward, cross-entropy against random labels, backward, AdamW update), on a batch of random images,
in one :mod:`swinlab.precision`: ``32-true``; ``bf16-mixed`` / ``16-mixed`` under
:func:`torch.autocast` with the weights kept in float32, as training does (``16-mixed`` training on
CUDA scales the loss with a ``GradScaler``); ``bf16-true`` with the weights themselves in bfloat16;
``auto`` resolved for the device and the mode. Compile modes are :func:`torch.compile`'s, plus
``"freeze"`` (inference only): the default mode with inductor's ``freezing``, which treats the weights as
constants (folded, and prepacked for oneDNN on the CPU): the fastest compiled CPU inference torch
offers, so a peer's best configuration includes it.

Timing follows the usual rules (timm's ``benchmark.py``): warm-up steps first (they also compile,
with ``compile=True``, and fill the backends' caches), the device is synchronized before and after
every timed step, and the median with the 10th / 90th percentiles is reported. Several models are
timed *interleaved* (:func:`run`: step 1 of every model, then step 2 of every model, ...) so that
noise from other work on a shared machine hits them all alike; compare ratios from one run, not
numbers from different runs.

Peak memory is read on CUDA only (``torch.cuda.max_memory_allocated`` during a step, minus what was
allocated before it, plus the model's own parameters, buffers and optimizer state); on CPU it is
``None`` (the process's resident set cannot be attributed to one of several interleaved models).

:func:`environment` describes the machine and the versions for the JSON a benchmark writes, and
:func:`scaling` times models over several resolutions: the cost per pixel is flat where the work is
linear in the tokens (Swin's window attention) and grows with the resolution where it is quadratic
(ViT's global attention).

The drivers, ``swinlab bench`` and ``benchmarks/bench.py``, both describe what to time as a list of
:class:`Candidate` (:func:`candidates` expands registered names over attention and linear backends)
and time them with :func:`compare` or :func:`scaling`; :func:`format_results` and
:func:`format_scaling` print the tables. One model alone: :func:`time_model`.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from .. import precision as precisions
from ..errors import ConfigError
from ..functional.pair import to_pair
from ..kernels import allocator
from ..kernels import linear as linear_kernels
from ..models.registry import create_model, get_config

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES = ("infer", "train")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "freeze")
TORCHVISION_PREFIX = "torchvision:"  # build("torchvision:swin_t"): torchvision's model of that name


@dataclass
class Step:
    """One prepared benchmark step of a model; calling it runs (and synchronizes) one step.

    Made by :func:`prepare`; :func:`run` times several of them interleaved.
    """

    name: str
    fn: Callable[[], None]
    batch_size: int
    img_size: tuple[int, int]
    dtype: str  # the dtype the maths runs in: float32, bfloat16, float16
    mode: str
    device: torch.device
    compile: bool | str
    state_bytes: int  # parameters + buffers (+ optimizer state, once it exists) of the model
    state_fn: Callable[[], int] = field(repr=False, default=lambda: 0)
    times: list[float] = field(default_factory=list, repr=False)
    first_s: float | None = None  # the first call (compilation included with compile=True)
    peak_bytes: int | None = None
    precision: str = "32-true"  # the resolved swinlab.precision

    def __call__(self) -> float:
        """Run one step; returns its wall-clock seconds (device synchronized on both sides)."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        self.fn()
        if cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        if cuda:
            peak = torch.cuda.max_memory_allocated(self.device) - before + self.state_fn()
            self.peak_bytes = max(self.peak_bytes or 0, peak)
        return seconds

    def result(self) -> dict:
        """Statistics of the timed calls so far (see :func:`time_model` for the keys)."""
        t = sorted(self.times)
        if not t:
            raise RuntimeError(f"{self.name}: no timed steps yet")
        if len(t) > 1:
            cuts = statistics.quantiles(t, n=10, method="inclusive")
            p10, p90 = cuts[0], cuts[-1]
        else:
            p10 = p90 = t[0]
        median = statistics.median(t)
        return {
            "name": self.name,
            "mode": self.mode,
            "dtype": self.dtype,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "img_size": list(self.img_size),
            "device": str(self.device),
            "compile": self.compile,
            "repeats": len(t),
            "median_s": median,
            "p10_s": p10,
            "p90_s": p90,
            "images_per_s": self.batch_size / median,
            "first_step_s": self.first_s,
            "peak_memory_bytes": self.peak_bytes,
            "peak_memory_source": "cuda.max_memory_allocated" if self.device.type == "cuda" else None,
            "times_s": list(self.times),
        }



def _tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def prepare(model: nn.Module, *, batch_size: int, img_size: int | tuple[int, int], precision: str = "32-true",
            mode: str = "infer", compile: bool | str = False, device: str | torch.device | None = None,
            in_chans: int | None = None, name: str | None = None, seed: int = 0,
            lr: float = 1e-4, linear_backend: str | None = None, dtype: str | None = None) -> Step:
    """Move ``model`` to ``device`` (and to ``precision``'s weight dtype) and build its benchmark step
    (nothing is run yet).

    Args:
        model: a classifier taking ``(B, C_in, H, W)`` images and returning ``(B, classes)`` logits.
        batch_size: images per step.
        img_size: ``H`` or ``(H, W)``.
        precision: a :mod:`swinlab.precision` name; ``bf16-true`` casts ``model`` to bfloat16 in place,
            the mixed ones run under autocast, ``auto`` is resolved for the device and ``mode``.
        mode: ``"infer"`` (eval mode, ``inference_mode``) or ``"train"`` (train mode: forward,
            cross-entropy, backward, ``AdamW`` step; gradients set to ``None`` after each step).
        compile: wrap the model in :func:`torch.compile` (the first warm-up step compiles); a string
            is its ``mode``: ``"reduce-overhead"`` (CUDA graphs), ``"max-autotune"``, ..., or
            ``"freeze"`` (inference: inductor's weight freezing).
        device: default: CUDA if available, else CPU.
        in_chans: image channels (default ``model.config.in_chans``, else 3).
        name: the label of the result (default: the class name).
        seed: seed of the random images and labels.
        lr: AdamW's learning rate (small: the weights barely move over a benchmark).
        linear_backend: run the step's linear layers on this :mod:`swinlab.kernels.linear` backend
            (``None``: the model's own ``config.linear_backend``); set on the model (with
            ``set_linear_backend``) around each step and restored after, so steps timed interleaved
            can share one model with different backends.
        dtype: the older name of ``precision``: ``float32`` (32-true), ``bfloat16`` (bf16-mixed),
            ``float16`` (16-mixed).
    """
    if dtype is not None:
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        precision = precisions.DTYPE_ALIASES[dtype]
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    dev = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda: CUDA is not available here; use device='cpu'")
    prec = precisions.resolve(precision, dev, training=mode == "train")
    if dev.type == "cpu":  # the process-wide malloc settings training runs under, for every model alike
        allocator.tune()
    size = to_pair(img_size)
    config = getattr(model, "config", None)
    chans = in_chans or getattr(config, "in_chans", 3)
    model = precisions.cast_model(model.to(dev), prec)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = precisions.cast_input(torch.randn(batch_size, chans, *size, generator=gen), prec).to(dev)

    if isinstance(compile, str) and compile not in COMPILE_MODES:
        raise ConfigError(f"compile mode must be one of {list(COMPILE_MODES)}, got {compile!r}")
    if compile == "freeze" and mode == "train":
        raise ConfigError("compile mode 'freeze' folds the weights into constants: inference only")
    net = model
    if compile:
        _allow_recompiles()
        net = torch.compile(model, mode=None if compile in (True, "default", "freeze") else compile)
    freeze = compile == "freeze"
    state = [_tensor_bytes(model.parameters()) + _tensor_bytes(model.buffers())]

    def amp():
        return precisions.autocast(prec, dev)

    if mode == "infer":
        model.eval()

        def fn() -> None:
            if freeze:  # inductor freezes under no_grad (not inference_mode), reading the flag as it compiles
                with torch.no_grad(), amp(), torch._inductor.config.patch(freezing=True):
                    net(x)
                return
            with torch.inference_mode(), amp():
                net(x)

        def state_fn() -> int:
            return state[0]
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, **_fused_adamw(dev, model))
        scaler = torch.amp.GradScaler(dev.type) if prec == "16-mixed" else None
        labels: list[torch.Tensor] = []

        def fn() -> None:
            with amp():
                logits = net(x)  # (B, classes)
                if not labels:
                    labels.append(torch.randint(logits.shape[-1], (batch_size,), generator=gen).to(dev))
                loss = F.cross_entropy(logits.float(), labels[0])
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            opt.zero_grad(set_to_none=True)

        def state_fn() -> int:
            opt_state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
            return state[0] + _tensor_bytes(opt_state)

    if linear_backend is not None:
        linear_kernels.check_backend(linear_backend)  # fail now on a name that cannot run here
        if not hasattr(model, "set_linear_backend"):
            raise ConfigError(f"linear_backend={linear_backend!r}: {type(model).__name__} is not a swinlab "
                              f"model (it has no set_linear_backend)")
        plain = fn

        def fn() -> None:
            previous = model.config.linear_backend
            if previous == linear_backend:  # switching walks every module (~0.6 ms for Swin-T): not timed
                return plain()
            model.set_linear_backend(linear_backend)
            try:
                plain()
            finally:
                model.set_linear_backend(previous)

    compute = precisions.autocast_dtype(prec) or precisions.weight_dtype(prec)
    return Step(name=name or type(model).__name__, fn=fn, batch_size=batch_size, img_size=size,
                dtype=str(compute).removeprefix("torch."), mode=mode, device=dev, compile=compile,
                state_bytes=state[0], state_fn=state_fn, precision=prec)


def _allow_recompiles(limit: int = 64) -> None:
    """Let dynamo compile the same ``forward`` for many models: it guards on each instance, and past its
    default limit of 8 compiled variants of one code object it silently runs the rest eagerly, which
    would time an eager model under a compiled label in a run of many configurations."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(config, name) and getattr(config, name) < limit * (8 if "accumulated" in name else 1):
            setattr(config, name, limit * (8 if "accumulated" in name else 1))


def _fused_adamw(device: torch.device, model: nn.Module) -> dict:
    """``fused=True`` where torch has a fused AdamW for the device and the weights' dtype (CPU and CUDA,
    float32 and bfloat16): one kernel per step instead of one per parameter and operation, the fastest
    AdamW torch ships, for every peer alike."""
    dtypes = {p.dtype for p in model.parameters()}
    if device.type in ("cpu", "cuda") and dtypes <= {torch.float32, torch.bfloat16, torch.float16}:
        return {"fused": True}
    return {}


def run(steps: dict[str, Step] | list[Step], *, warmup: int = 3, repeats: int = 10,
        callback: Callable[[str, int, float], None] | None = None) -> dict[str, dict]:
    """Time prepared steps interleaved: ``warmup`` untimed rounds, then ``repeats`` timed rounds, each
    round one step of every model in turn. Returns ``{name: result}`` (see :func:`time_model`).

    ``callback(name, repeat, seconds)`` is called after every timed step (progress output).
    """
    if isinstance(steps, list):
        steps = {s.name: s for s in steps}
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be ≥ 1 and warmup ≥ 0, got {repeats} and {warmup}")
    for step in steps.values():  # the first call separately: with compile=True it is the compile time
        step.first_s = step()
    for _ in range(max(warmup - 1, 0)):
        for step in steps.values():
            step()
    for r in range(repeats):
        for name, step in steps.items():
            seconds = step()
            step.times.append(seconds)
            if callback is not None:
                callback(name, r, seconds)
    return {name: step.result() for name, step in steps.items()}


def time_model(model: nn.Module, *, batch_size: int = 8, img_size: int | tuple[int, int] = 224,
              precision: str = "32-true", mode: str = "infer", compile: bool | str = False, warmup: int = 3,
              repeats: int = 10, device: str | torch.device | None = None, **kwargs) -> dict:
    """Time ``model`` alone (see :func:`prepare` for the arguments; ``kwargs`` go there too).

    Returns:
        A JSON-serializable dict: ``name``, ``mode``, ``dtype`` (of the maths), ``precision`` (resolved),
        ``batch_size``, ``img_size``,
        ``device``, ``compile``, ``repeats``; ``median_s`` / ``p10_s`` / ``p90_s`` seconds per step;
        ``images_per_s`` (batch / median); ``first_step_s`` (the first warm-up step: compilation
        with ``compile=True``); ``peak_memory_bytes`` (CUDA: allocator peak of a step, the model's
        weights and optimizer state included; CPU: ``None``) with ``peak_memory_source``;
        ``times_s`` (every timed step).
    """
    step = prepare(model, batch_size=batch_size, img_size=img_size, precision=precision, mode=mode,
                   compile=compile, device=device, **kwargs)
    return run({step.name: step}, warmup=warmup, repeats=repeats)[step.name]


@dataclass(frozen=True)
class Candidate:
    """One model to time: its label in the results and how to build it for an image size."""

    label: str
    build: Callable[[tuple[int, int]], nn.Module]  # (H, W) -> a fresh model built for that size
    compile: bool | str = False  # torch.compile it (a string: the compile mode)
    linear_backend: str | None = None  # run its linear layers on this swinlab.kernels.linear backend
    precision: str | None = None  # its swinlab.precision (None: the one the run is given)
    peer: str | None = None  # whose implementation it is, for "each peer's fastest" (None: the label)


def configurations(models: Iterable[Candidate], *, precisions: Iterable[str] = ("32-true",),
                   compile_modes: Iterable[bool | str] = (False,)) -> list[Candidate]:
    """Every candidate once per precision and compile mode: ``timm@bf16-true+freeze`` (:func:`compare`
    leaves ``"freeze"`` out of training). ``peer`` defaults to the original label, so :func:`fastest`
    can name each implementation's best configuration."""
    out = []
    for m in models:
        for prec in precisions:
            precisions_check(prec)
            for comp in compile_modes:
                tag = "" if not comp else "+compile" if comp in (True, "default") else f"+{comp}"
                out.append(Candidate(label=f"{m.label}@{prec}{tag}", build=m.build, compile=comp,
                                     linear_backend=m.linear_backend, precision=prec, peer=m.peer or m.label))
    return out


def precisions_check(name: str) -> str:
    """A precision name for a benchmark (see :mod:`swinlab.precision`), or a ConfigError."""
    return precisions.check(name)


def fastest(results: dict[str, dict], peers: dict[str, str] | None = None) -> dict[str, dict]:
    """Each peer's fastest configuration among one mode's :func:`compare` results.

    Args:
        results: ``{label: result}`` of one mode.
        peers: label → peer (default: each result's ``peer``, else its label).

    Returns:
        ``{peer: {"label", "median_s", "images_per_s", "precision", "compile"}}``, in first-seen order.
    """
    best: dict[str, dict] = {}
    for label, r in results.items():
        peer = (peers or {}).get(label) or r.get("peer") or label
        if peer not in best or r["median_s"] < best[peer]["median_s"]:
            best[peer] = {"label": label, "median_s": r["median_s"], "images_per_s": r["images_per_s"],
                          "precision": r["precision"], "compile": r["compile"]}
    return best


def format_fastest(mode: str, best: dict[str, dict], ours: str = "swinlab") -> str:
    """:func:`fastest` as a table: each peer's best configuration and ``ours``'s speed-up over it."""
    lines = [f"{mode}: each implementation's fastest configuration"]
    mine = best.get(ours)
    for peer, b in best.items():
        ratio = f"  {ours} ×{b['median_s'] / mine['median_s']:.2f}" if mine and peer != ours else ""
        lines.append(f"  {peer:<14} {b['label']:<44} {b['median_s'] * 1e3:9.1f} ms {b['images_per_s']:9.1f} "
                     f"img/s{ratio}")
    return "\n".join(lines)


def candidates(names: Iterable[str], *, backends: Iterable[str] | None = None,
               linear_backends: Iterable[str] | None = None, compile: bool | str = False) -> list[Candidate]:
    """Registered models (or ``torchvision:NAME``) expanded over attention and linear backends.

    Each Swin model is timed once per attention backend in ``backends`` and each swinlab model once
    per linear backend in ``linear_backends``; labels name what differs: ``swin_t[sdpa, linear=torch]``.

    Raises:
        ConfigError: for an unknown model name.
    """
    out = []
    for name in names:
        ours = not name.startswith(TORCHVISION_PREFIX)
        swin = ours and hasattr(get_config(name), "attention_backend")
        for backend in (list(backends or []) or [None]) if swin else [None]:
            for linear in (list(linear_backends or []) or [None]) if ours else [None]:
                tags = [t for t in (backend, f"linear={linear}" if linear else None) if t]
                out.append(Candidate(label=f"{name}[{', '.join(tags)}]" if tags else name,
                                     build=partial(_build_at, name, backend), compile=compile,
                                     linear_backend=linear))
    return out


def _build_candidate(candidate: Candidate, size: tuple[int, int]) -> nn.Module:
    """A fresh model of ``candidate`` for ``size``, already on its linear backend (so that the timed
    step never switches it)."""
    model = candidate.build(size)
    if candidate.linear_backend is not None and hasattr(model, "set_linear_backend"):
        model.set_linear_backend(candidate.linear_backend)
    return model


def _build_at(name: str, backend: str | None, size: tuple[int, int]) -> nn.Module:
    return build(name, img_size=size, backend=backend)


def compare(models: Sequence[Candidate], *, img_size: int | tuple[int, int] = 224,
            modes: Iterable[str] = ("infer",), warmup: int = 3, repeats: int = 10,
            baselines: Iterable[str] = (), callback: Callable[[str, int, float], None] | None = None,
            **kwargs) -> dict[str, dict[str, dict]]:
    """Time every candidate at one size, interleaved, once per mode (fresh models per mode).

    Args:
        models: what to time; labels must be unique.
        img_size: ``H`` or ``(H, W)``.
        modes: ``"infer"`` and/or ``"train"``.
        baselines: labels of candidates to compare against: each result gains
            ``speedup_vs_<label>`` (the baseline's median over this one's; > 1: faster).
        callback: as :func:`run`'s.
        kwargs: :func:`prepare`'s ``batch_size``, ``precision`` (for candidates without their own),
            ``device``, ``seed``, ...

    Returns:
        ``{mode: {label: result}}``, each result as :func:`time_model`'s.
    """
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"candidate labels must be unique, got {labels}")
    baselines = list(baselines)
    unknown = [b for b in baselines if b not in labels]
    if unknown:
        raise ConfigError(f"baselines {unknown} are not among the candidates {labels}")
    size = to_pair(img_size)
    out = {}
    for mode in modes:
        chosen = [m for m in models if not (m.compile == "freeze" and mode == "train")]  # inference only
        steps = {m.label: prepare(_build_candidate(m, size), img_size=size, mode=mode, compile=m.compile,
                                  name=m.label, linear_backend=m.linear_backend,
                                  **({**kwargs, "precision": m.precision} if m.precision else kwargs))
                 for m in chosen}
        results = run(steps, warmup=warmup, repeats=repeats, callback=callback)
        for m in chosen:
            results[m.label]["peer"] = m.peer or m.label
        for r in results.values():
            for b in baselines:
                if b in results:
                    r[f"speedup_vs_{b}"] = results[b]["median_s"] / r["median_s"]
        out[mode] = results
    return out


def scaling(models: Sequence[Candidate], sizes: Iterable[int | tuple[int, int]], *, batch_size: int = 1,
            warmup: int = 1, repeats: int = 3, callback: Callable[[str, int, float], None] | None = None,
            **kwargs) -> list[dict]:
    """Cost per pixel over resolutions: every candidate at every size, all timed interleaved.

    Returns one row per candidate and size (candidate-major): the :func:`time_model` result (named
    ``LABEL@HxW``) plus ``model`` (the label), ``pixels`` (``H·W``), ``seconds_per_image``,
    ``ns_per_pixel`` (seconds per image / pixels, in ns) and ``relative_cost_per_pixel`` (against the
    candidate's first size). Flat for linear-cost models (Swin), growing for global attention (ViT),
    whose attention work per pixel grows with the token count. ``kwargs`` go to :func:`prepare`.
    """
    sizes = [to_pair(s) for s in sizes]
    steps, owner = {}, {}
    for m in models:
        for h, w in sizes:
            key = f"{m.label}@{h}x{w}"
            steps[key] = prepare(_build_candidate(m, (h, w)), batch_size=batch_size, img_size=(h, w),
                                 name=key, compile=m.compile, linear_backend=m.linear_backend, **kwargs)
            owner[key] = m.label
    results = run(steps, warmup=warmup, repeats=repeats, callback=callback)
    rows, first = [], {}
    for key, r in results.items():
        pixels = r["img_size"][0] * r["img_size"][1]
        per_image = r["median_s"] / r["batch_size"]
        ns = per_image / pixels * 1e9
        first.setdefault(owner[key], ns)
        rows.append({**r, "model": owner[key], "pixels": pixels, "seconds_per_image": per_image,
                     "ns_per_pixel": ns, "relative_cost_per_pixel": ns / first[owner[key]]})
    return rows


def format_results(mode: str, results: dict[str, dict], env: dict) -> str:
    """A :func:`compare` mode's results as a table: ms per step (median, p10, p90), images/s, the
    ratio against the first model, each ``speedup_vs_*`` and the peak memory."""
    first = next(iter(results.values()))
    m = env["machine"]
    size = "×".join(map(str, first["img_size"]))
    against = [k for k in first if k.startswith("speedup_vs_")]
    precs = sorted({r["precision"] for r in results.values()})
    lines = [f"{mode}, {', '.join(precs)}, batch {first['batch_size']}, {size}, {first['device']}"
             f" ({m['gpu'] or m['cpu']}, {m['torch_threads']} threads); "
             f"median of {first['repeats']} interleaved steps",
             f"  {'model':<44} {'ms/step':>9} {'p10':>9} {'p90':>9} {'img/s':>8} {'vs first':>9} "
             + "".join(f"{'vs ' + k[len('speedup_vs_'):]:>15} " for k in against) + f"{'peak MiB':>9}"]
    for name, r in results.items():
        peak = f"{r['peak_memory_bytes'] / 2**20:9.0f}" if r["peak_memory_bytes"] is not None else "      n/a"
        lines.append(f"  {name:<44} {r['median_s'] * 1e3:>9.1f} {r['p10_s'] * 1e3:>9.1f} "
                     f"{r['p90_s'] * 1e3:>9.1f} {r['images_per_s']:>8.1f} "
                     f"{first['median_s'] / r['median_s']:>8.2f}× "
                     + "".join(f"{r[k]:>14.2f}× " for k in against) + peak)
    return "\n".join(lines)


def format_scaling(rows: list[dict]) -> str:
    """:func:`scaling` rows as a table: ms per image, ns per pixel, cost per pixel against the first size."""
    lines = [f"{'model':<32} {'mode':<6} {'size':>9} {'ms/image':>10} {'ns/pixel':>9} {'relative':>9}"]
    for r in rows:
        h, w = r["img_size"]
        lines.append(f"{r['model']:<32} {r['mode']:<6} {f'{h}×{w}':>9} {r['seconds_per_image'] * 1e3:>10.1f} "
                     f"{r['ns_per_pixel']:>9.2f} {r['relative_cost_per_pixel']:>9.2f}")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: str | torch.device | None = None) -> dict:
    """The machine, the versions and the date, for the JSON of a benchmark.

    Returns:
        ``date_utc``, ``machine`` (``node``, ``platform``, ``cpu``: the model name of
        ``/proc/cpuinfo``, ``cpu_count``, ``cpus_usable`` (the affinity mask), ``torch_threads``,
        ``gpu``: the CUDA device name or ``None``, ``cuda``: the CUDA version torch was built with),
        and ``versions`` (python, torch, torchvision, triton, timm, swinlab; ``None`` when absent).
    """
    cuda = torch.cuda.is_available()
    dev = torch.device(device) if device is not None else torch.device("cuda" if cuda else "cpu")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    gpu = torch.cuda.get_device_name(dev if dev.type == "cuda" else 0) if cuda else None

    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "node": platform.node(),
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "cpus_usable": usable,
            "torch_threads": torch.get_num_threads(),
            "gpu": gpu,
            "cuda": torch.version.cuda,
            "malloc": allocator.state(),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": _version("torchvision"),
            "triton": _version("triton"),
            "timm": _version("timm"),
            "swinlab": __version__,
        },
    }



def build(name: str, *, img_size: int | tuple[int, int] | None = None,
          backend: str | None = None) -> nn.Module:
    """A model to benchmark: a registered swinlab name (``swin_t``), or ``torchvision:NAME`` for
    torchvision's model of that name (``torchvision:swin_t``, ``torchvision:vit_b_16``), untrained.

    Args:
        name: the model.
        img_size: the size to build for (swinlab: ``img_size``; torchvision ViT: ``image_size``,
            its position embedding is fixed to it; torchvision Swin takes any size as built).
        backend: swinlab Swin only: the ``attention_backend``.
    """
    if name.startswith(TORCHVISION_PREFIX):
        import torchvision  # only when asked for: a second of start-up otherwise, and optional

        tv_name = name[len(TORCHVISION_PREFIX):]
        if backend is not None:
            raise ConfigError(f"{name}: attention backends are swinlab's; torchvision's model has none")
        try:
            builder = torchvision.models.get_model_builder(tv_name)
        except ValueError:
            raise ConfigError(f"torchvision has no model {tv_name!r}; e.g. torchvision:swin_t, "
                             f"torchvision:vit_b_16") from None
        kwargs = {}
        if img_size is not None and tv_name.startswith("vit_"):
            size = to_pair(img_size)
            if size[0] != size[1]:
                raise ConfigError(f"torchvision's ViT takes square images only, got {size}")
            kwargs["image_size"] = size[0]
        return builder(**kwargs)
    overrides = {}
    if img_size is not None:
        overrides["img_size"] = to_pair(img_size)
    if backend is not None:
        if not hasattr(get_config(name), "attention_backend"):
            raise ConfigError(f"{name} has no window attention; --backend applies to Swin models only")
        overrides["attention_backend"] = backend
    return create_model(name, **overrides)
