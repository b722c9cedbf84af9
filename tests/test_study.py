"""The ablation study (`swinlab study ablations`): a smoke study writes the results and the report,
an interrupted study resumes with the runs that have no result, and the tie rule."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from swinlab.analysis import stats
from swinlab.cli import main
from swinlab.train import study


@pytest.fixture(autouse=True)
def _quiet_single_thread():
    # one thread: the tests stay fast on a shared, busy CPU
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch.set_num_threads(threads)


# --- the tie rule ---------------------------------------------------------------------------------


def test_a_difference_within_the_combined_spread_is_a_tie():
    c = stats.compare([0.80, 0.82], [0.79, 0.81])  # Δ = 0.01; s = 0.01414 each → spread 0.02
    assert c["delta"] == pytest.approx(0.01)
    assert c["spread"] == pytest.approx(math.hypot(0.02 / 2 ** 0.5, 0.02 / 2 ** 0.5)) == pytest.approx(0.02)
    assert c["verdict"] == "tie"
    assert stats.format_comparison(c) == "+1.00 (tie)"


def test_a_difference_beyond_the_spread_is_better_or_worse():
    assert stats.compare([0.90, 0.91], [0.80, 0.81])["verdict"] == "better"
    c = stats.compare([0.70, 0.71], [0.80, 0.81])
    assert c["verdict"] == "worse"
    assert stats.format_comparison(c) == "-10.00 (worse)"
    # just inside and just outside the spread (0.02 here)
    assert stats.compare([0.8195, 0.8395], [0.80, 0.82])["verdict"] == "tie"  # Δ 0.0195
    assert stats.compare([0.8205, 0.8405], [0.80, 0.82])["verdict"] == "better"  # Δ 0.0205


def test_one_seed_is_never_a_win():
    c = stats.compare([0.95], [0.80, 0.81])
    assert c["verdict"] == "1 seed" and c["spread"] is None
    assert stats.compare([0.95, 0.96], [0.80])["verdict"] == "1 seed"
    assert stats.format_comparison(None) == "—"
    with pytest.raises(ValueError):
        stats.compare([], [0.8])


def test_paired_differences_are_judged_against_their_own_interval():
    # per-seed Δ = 1, 2, 1 points: mean 1.33, std 0.577, 95% half-width 4.303 · 0.577 / √3 = 1.43 → a tie,
    # though the unpaired rule would see Δ 1.33 against a spread of √(1² + 0.58²) = 1.15 and call it better
    ref = {0: 0.79, 1: 0.80, 2: 0.80}
    variant = {0: 0.80, 1: 0.82, 2: 0.81}
    c = stats.paired(variant, ref)
    assert c["seeds"] == [0, 1, 2] and c["deltas"] == pytest.approx([0.01, 0.02, 0.01])
    assert c["delta"] == pytest.approx(0.04 / 3) and c["std"] == pytest.approx(0.01 / 3 ** 0.5)
    assert c["halfwidth"] == pytest.approx(4.303 * c["std"] / 3 ** 0.5) and c["verdict"] == "tie"
    assert stats.compare(list(variant.values()), list(ref.values()))["verdict"] == "better"
    assert stats.format_paired(c) == "+1.33 ± 0.58 (±1.43, tie)"
    # the same seed moves both: a constant 1-point gain over seeds whose spread is 5 points is a verdict
    moved = stats.paired({0: 0.71, 1: 0.81, 2: 0.76}, {0: 0.70, 1: 0.80, 2: 0.75})
    assert moved["verdict"] == "better" and moved["halfwidth"] == pytest.approx(0, abs=1e-9)
    assert stats.paired({0: 0.70, 1: 0.70, 2: 0.71}, {0: 0.74, 1: 0.73, 2: 0.74})["verdict"] == "worse"
    # only seeds both sides ran are paired; one pair is never a win
    one = stats.paired({0: 0.9, 5: 0.1}, {0: 0.8, 1: 0.8})
    assert one["seeds"] == [0] and one["verdict"] == "1 seed"
    assert stats.format_paired(one) == "+10.00 (1 seed)"
    with pytest.raises(ValueError, match="seed both sides"):
        stats.paired({1: 0.9}, {0: 0.8})
    assert stats.t975(1) == 12.706 and stats.t975(2) == 4.303 and stats.t975(100) == 1.96
    # the study's resolution: the median half-width over the variants with two pairs or more
    summary = {"a": {"paired": {"halfwidth": 0.01}}, "b": {"paired": {"halfwidth": 0.03}},
               "c": {"paired": {"halfwidth": 0.02}}, "d": {"paired": None}, "e": {"paired": one}}
    assert stats.resolution(summary) == pytest.approx(0.02) and stats.resolution({}) is None


def test_the_convergence_note_reads_the_rise_over_the_last_quarter():
    from swinlab.analysis.study_report import convergence

    curve = [(e, 0.5 + 0.1 * min(e, 5)) for e in range(8)]  # flat from epoch 5 on (index): 0.5 … 1.0
    conv = convergence([{"seed": 0, "val_acc1_per_epoch": curve},
                        {"seed": 1, "val_acc1_per_epoch": [(e, 0.5 + 0.01 * e) for e in range(8)]}])
    assert conv["per_seed"][0] == {"from_epoch": 6, "to_epoch": 8, "rise": pytest.approx(0.0), "last": 1.0}
    assert conv["per_seed"][1]["rise"] == pytest.approx(0.02) and conv["mean_rise"] == pytest.approx(0.01)
    assert convergence([{"seed": 2, "val_acc1_per_epoch": [(0, 0.5), (1, 0.7)]}])["per_seed"][2] == {
        "from_epoch": 1, "to_epoch": 2, "rise": pytest.approx(0.2), "last": 0.7}  # two epochs: the last one
    assert convergence([{"seed": 0}]) is None


def test_only_names_variants_and_rejects_unknown_ones():
    assert [v.name for v in study.select(["no_shift,default"])] == ["default", "no_shift"]
    # Table 4's 7 settings, the extension's 3 fusions × 3 samplers, ViT and Mixer matched in params or MACs
    assert len(study.select(None)) == len(study.VARIANTS) == 7 + 9 + 4
    assert {v.name for v in study.VARIANTS if v.name.startswith("gc_")} == {
        f"gc_{f}_{s}" for f in ("add", "max", "concat") for s in ("random", "grid", "pool")}
    with pytest.raises(ValueError, match="no_such"):
        study.select(["no_such"])
    # every row of both tables names a variant of the study
    names = {name for _, rows in (*study.TABLE4, *study.EXTENSION) for _, name in rows}
    assert names == set(study.VARIANT_NAMES)


def _window_blocks(name: str) -> tuple[int, int, int, list[int]]:
    """(blocks, blocks over more than one window, shifting blocks, windows per stage) at the built size."""
    from swinlab import create_model
    from swinlab.analysis.profiler import profile

    with torch.device("meta"):
        stages = profile(create_model(name), memory=False)["stages"]
    blocks = sum(s["blocks"] for s in stages)
    multi = sum(s["blocks"] for s in stages if s["num_windows"] > 1)
    shifting = sum(any(b["shift"]) for s in stages if s["num_windows"] > 1 for b in s["windows"])
    return blocks, multi, shifting, [s["num_windows"] for s in stages]


def test_the_study_swin_attends_over_several_windows_in_two_thirds_of_its_blocks():
    """Issue 11: at least 2/3 of the blocks see more than one window, and every odd block of those stages
    shifts; the global context samples from a stage of many windows."""
    blocks, multi, shifting, windows = _window_blocks("swin_study_28")
    assert (blocks, multi, shifting, windows) == (8, 6, 3, [16, 4, 1])
    assert 3 * multi >= 2 * blocks and shifting == multi // 2
    assert _window_blocks("swin_micro_28")[1:] == (2, 1, [4, 1, 1])  # the first study's model: why it tied
    assert study.VARIANTS[0].model == "swin_study_28" and study.select(["gc_add_random"])[0].model == \
        "swin_study_28_gc"


def test_the_baselines_match_the_study_swin_in_params_or_in_macs():
    from swinlab import create_model
    from swinlab.analysis.profiler import profile

    def counts(name):
        with torch.device("meta"):
            p = profile(create_model(name), memory=False)
        return p["params"], p["macs"]

    params, macs = counts("swin_study_28")
    for name in ("vit_micro_28", "mixer_micro_28"):
        assert counts(name)[0] == pytest.approx(params, rel=0.08), name
    for name in ("vit_study_28", "mixer_study_28"):
        assert counts(name)[1] == pytest.approx(macs, rel=0.03), name


def test_the_study_runs_on_either_swin_and_the_cli_offers_the_same():
    from swinlab.cli import study as cli_study

    assert cli_study.SWINS == study.SWINS
    old = study.variants("swin_micro_28")
    assert [v.name for v in old] == list(study.VARIANT_NAMES)
    assert {v.model for v in old} == {"swin_micro_28", "swin_micro_28_gc", "vit_micro_28", "mixer_micro_28",
                                      "vit_study_28", "mixer_study_28"}
    with pytest.raises(ValueError, match="swin_t"):
        study.variants("swin_t")


# --- a smoke study, interrupted and resumed -------------------------------------------------------


def _study(out, work, *only, extra=()):
    return main(["study", "ablations", "--smoke", "--seeds", "1", "--threads", "1", "--out", str(out),
                 "--work", str(work), "--only", *only, *extra])


def test_smoke_study_writes_results_and_report_and_resumes(tmp_path, monkeypatch, capsys):
    out, work = tmp_path / "out", tmp_path / "work"
    assert _study(out, work, "default") == 0
    first = json.loads((out / "runs/default/seed0/result.json").read_text())
    assert 0.0 <= first["test"]["acc1"] <= 1.0 and first["test"]["images"] > 0
    assert first["params"] > 0 and first["macs"] > 0 and first["throughput"]["images_per_s"] > 0
    assert first["wall_s"] > 0 and first["config"]["seed"] == 0
    assert not (work / "default/seed0/checkpoints").exists()  # deleted; the weights are kept
    assert (work / "default/seed0/model.safetensors").is_file()

    # the next study trains only what has no result.json; it is killed in its first new run
    calls = []
    real_fit = study.fit

    def counting_fit(config, out_dir, **kwargs):
        calls.append(config.model_overrides.get("shift", True))
        if len(calls) == 1:
            raise RuntimeError("killed")
        return real_fit(config, out_dir, **kwargs)

    monkeypatch.setattr(study, "fit", counting_fit)
    with pytest.raises(RuntimeError, match="killed"):
        _study(out, work, "default", "no_shift")
    assert calls == [False]  # default was skipped, no_shift started
    assert not (out / "runs/no_shift/seed0/result.json").exists()
    assert _study(out, work, "default", "no_shift") == 0
    assert calls == [False, False]  # only the unfinished run, again
    assert json.loads((out / "runs/default/seed0/result.json").read_text()) == first  # untouched

    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]) == {"default", "no_shift"} and results["missing"] == []
    assert results["summary"]["no_shift"]["paired"]["verdict"] == "1 seed"
    assert results["resolution"] is None  # one seed: no interval yet
    assert [e for e, _ in first["val_acc1_per_epoch"]] == [0]  # the smoke schedule's one epoch
    assert results["convergence"] is None  # one epoch is no curve
    assert results["environment"]["machine"]["cpu"]
    report = (out / "report.md").read_text()
    for text in ("--recipe study --swin swin_study_28", "**Schedule** (recipe `study`)", "paired by seed",
                 "Convergence", "paired: mean ± std", "shifted windows", "w/o shifting", "rel. pos.",
                 "abs.+rel. pos.", "global context", "ViT, MACs matched", "(1 seed)", "not run",
                 "speed_accuracy.png", "attention_maps.png", "torch "):
        assert text in report, text
    assert (out / "speed_accuracy.png").stat().st_size > 0 and (out / "attention_maps.png").stat().st_size > 0
    assert "2 run(s) finished, 0 missing" in capsys.readouterr().out

    # the same out with another schedule would mix two studies: refused before training anything
    with pytest.raises(SystemExit) as e:
        _study(out, work, "default", extra=("--epochs", "2"))
    assert e.value.code == 2
    assert "another schedule" in capsys.readouterr().err
    assert calls == [False, False]


def test_shards_split_the_study_without_overlap_whenever_each_starts(tmp_path, monkeypatch, capsys):
    trained = []

    def fake_run(variant, config, work_dir, throughput):  # a run's result without the training
        trained.append((variant.name, config.seed))
        return {"variant": variant.name, "model": variant.model, "overrides": variant.overrides,
                "seed": config.seed, "test": {"acc1": 0.5, "acc5": 0.9, "loss": 1.0, "images": 8},
                "val": {}, "val_acc1_per_epoch": [], "steps": 1, "precision": "32-true", "params": 1,
                "macs": 1, "throughput": {"images_per_s": 1.0}, "train_s": 1, "eval_s": 1, "wall_s": 1,
                "config": study._plain(config.to_dict()), "model_file": str(work_dir / "none")}

    monkeypatch.setattr(study, "run_one", fake_run)
    out, work = tmp_path / "out", tmp_path / "work"
    names = ("default", "no_shift", "pos_abs")
    args = ["study", "ablations", "--smoke", "--seeds", "2", "--out", str(out), "--work", str(work), "--only",
            *names]
    assert main([*args, "--shard", "1/2"]) == 0  # the 2nd, 4th, 6th of (seed 0: 3 variants, seed 1: 3)
    assert trained == [("no_shift", 0), ("default", 1), ("pos_abs", 1)]
    assert main([*args, "--shard", "0/2"]) == 0  # started later, after shard 1 finished: the other half
    assert trained[3:] == [("default", 0), ("pos_abs", 0), ("no_shift", 1)]
    assert main([*args, "--shard", "0/1"]) == 0 and len(trained) == 6  # nothing left
    assert "6 run(s) finished, 0 missing" in capsys.readouterr().out
    for bad in ("2/2", "1", "a/b", "0/0"):
        with pytest.raises(SystemExit) as e:
            main([*args, "--shard", bad])
        assert e.value.code == 2
    assert "I/N" in capsys.readouterr().err


def test_unknown_variant_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _study(tmp_path / "out", tmp_path / "work", "swin_huge")
    assert e.value.code == 2
    assert "unknown variant" in capsys.readouterr().err


def _attention_by_hand(layer, x, query, window, shift):
    """The head-averaged attention row of ``query`` in one block, token pair by token pair from the
    paper's definitions: the map rolled up-left by ``shift``, the rolled window holding the query,
    logit ``q·k/√d + B[Δ]`` with ``Δ`` the (rolled) query-minus-key offset, and a key hidden when
    the roll wrapped it away from the query (its offset on the map is not its offset in the window).
    ``x`` is the block's ``(B, H, W, C)`` attention input with ``H, W`` multiples of ``window``."""
    b, h, w, c = x.shape
    heads, m = layer.num_heads, window
    qkv = layer.qkv(x).view(b, h, w, 3, heads, c // heads)
    rq, cq = (query[0] - shift) % h, (query[1] - shift) % w  # the query after the roll
    top, left = rq // m * m, cq // m * m  # its window, in rolled coordinates
    keys, logits = [], []
    for rk in range(top, top + m):
        for ck in range(left, left + m):
            hk, wk = (rk + shift) % h, (ck + shift) % w  # where the key sits on the map
            dh, dw = rq - rk, cq - ck
            bias = layer.rel_pos.table[(dh + m - 1) * (2 * m - 1) + dw + m - 1]  # (heads,)
            logit = (qkv[:, query[0], query[1], 0] * qkv[:, hk, wk, 1]).sum(-1) * layer.scale + bias
            if (query[0] - hk, query[1] - wk) != (dh, dw):  # wrapped apart by the roll: masked
                logit = torch.full_like(logit, -math.inf)
            keys.append((hk, wk))
            logits.append(logit)  # (B, heads)
    probs = torch.stack(logits, -1).softmax(-1).mean(1)  # (B, M*M): averaged over heads
    expected = torch.zeros(b, h, w)
    for (hk, wk), p in zip(keys, probs.unbind(-1), strict=True):
        expected[:, hk, wk] = p
    return expected


@pytest.mark.parametrize("layout", ["windows", "map"])
@pytest.mark.parametrize("query", [(7, 9), (5, 1), (1, 5), (1, 12), (13, 0)])
def test_attention_maps_match_a_computation_by_hand(query, layout):
    # swin_micro_28: stage 1 is a 14×14 map in 2×2 windows of 7×7; block 2 rolls the map by 3. The
    # queries' shifted windows: one that wraps nothing (7, 9); wrapped on the columns (5, 1) or the
    # rows (1, 5), 2 regions each; wrapped on both, 4 regions, seen from two of them (1, 12), (13, 0).
    from conftest import randomize_
    from swinlab import create_model
    from swinlab.analysis.attention_maps import query_attention_maps

    model = randomize_(create_model("swin_micro_28"))  # peaked attention: a wrong bias or mask shows
    if layout == "map":  # a backend without a windowed form: the hooked qkv is (B, Hp, Wp, 3C), not windows
        for block in model.stages[0].blocks:
            block.attn._attend_windows = None
    x = torch.randn(2, 1, 28, 28)
    maps = query_attention_maps(model, x, query)  # (2, 2, 14, 14)
    assert maps.shape == (2, 2, 14, 14)
    inputs = {}
    hooks = [model.stages[0].blocks[i].attn.register_forward_pre_hook(
        lambda m, a, i=i: inputs.__setitem__(i, a[0])) for i in (0, 1)]
    with torch.no_grad():
        model(x)
        for hook in hooks:
            hook.remove()
        for i, shift in ((0, 0), (1, 3)):
            layer = model.stages[0].blocks[i].attn
            assert layer.windows_for((14, 14)) == ((7, 7), (shift, shift))
            expected = _attention_by_hand(layer, inputs[i], query, 7, shift)
            torch.testing.assert_close(maps[:, i], expected, rtol=1e-5, atol=1e-6)
    # the structure, independently of any computation: the regular window is the 7×7 block holding
    # the query; each row is a distribution over its window
    outside = torch.ones(14, 14, dtype=torch.bool)
    outside[query[0] // 7 * 7:][:7, query[1] // 7 * 7:][:, :7] = False
    assert torch.all(maps[:, 0, outside] == 0)
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(2, 2))


def test_attention_maps_run_in_eval_mode_and_hand_the_model_back_as_it_was():
    from swinlab import create_model
    from swinlab.analysis.attention_maps import query_attention_maps

    model = create_model("swin_micro_28", drop_path_rate=0.5)
    model.stages[1].eval()  # a mixed mode of the caller's, kept as it was
    before = {name: m.training for name, m in model.named_modules()}
    seen = []
    hook = model.stages[0].blocks[1].register_forward_pre_hook(lambda m, a: seen.append(m.training))
    x = torch.randn(2, 1, 28, 28)
    maps = query_attention_maps(model, x, (7, 9))
    hook.remove()
    assert seen == [False]  # no drop path while the maps are taken
    assert {name: m.training for name, m in model.named_modules()} == before
    model.eval()
    torch.testing.assert_close(query_attention_maps(model, x, (7, 9)), maps)


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))])
def test_attention_maps_are_built_on_the_models_device(device):
    from swinlab import create_model
    from swinlab.analysis.attention_maps import query_attention_maps

    model = create_model("swin_micro_28").to(device)
    x = torch.randn(2, 1, 28, 28, device=device)
    maps = query_attention_maps(model, x, (7, 9))
    assert maps.device == x.device
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(2, 2, device=device))


def test_attention_figure_draws_a_model_it_is_given(tmp_path):
    # demo and study share it: a model (not a checkpoint path), the data it was trained on
    from swinlab import create_model
    from swinlab.analysis.attention_maps import attention_figure

    model = create_model("swin_micro_28")
    png = attention_figure(model, "synthetic", None, tmp_path / "attention.png", n=2)
    assert png == tmp_path / "attention.png" and png.read_bytes()[:4] == b"\x89PNG"
    assert model.training  # handed back as it came
