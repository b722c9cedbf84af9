"""The ablation study (`swinlab study ablations`): a smoke study writes the results and the report,
an interrupted study resumes with the runs that have no result, and the tie rule."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

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
    c = study.compare([0.80, 0.82], [0.79, 0.81])  # Δ = 0.01; s = 0.01414 each → spread 0.02
    assert c["delta"] == pytest.approx(0.01)
    assert c["spread"] == pytest.approx(math.hypot(0.02 / 2 ** 0.5, 0.02 / 2 ** 0.5)) == pytest.approx(0.02)
    assert c["verdict"] == "tie"
    assert study.format_comparison(c) == "+1.00 (tie)"


def test_a_difference_beyond_the_spread_is_better_or_worse():
    assert study.compare([0.90, 0.91], [0.80, 0.81])["verdict"] == "better"
    c = study.compare([0.70, 0.71], [0.80, 0.81])
    assert c["verdict"] == "worse"
    assert study.format_comparison(c) == "-10.00 (worse)"
    # just inside and just outside the spread (0.02 here)
    assert study.compare([0.8195, 0.8395], [0.80, 0.82])["verdict"] == "tie"  # Δ 0.0195
    assert study.compare([0.8205, 0.8405], [0.80, 0.82])["verdict"] == "better"  # Δ 0.0205


def test_one_seed_is_never_a_win():
    c = study.compare([0.95], [0.80, 0.81])
    assert c["verdict"] == "1 seed" and c["spread"] is None
    assert study.compare([0.95, 0.96], [0.80])["verdict"] == "1 seed"
    assert study.format_comparison(None) == "—"
    with pytest.raises(ValueError):
        study.compare([], [0.8])


def test_only_names_variants_and_rejects_unknown_ones():
    assert [v.name for v in study.select(["no_shift,default"])] == ["default", "no_shift"]
    assert len(study.select(None)) == len(study.VARIANTS) == 14
    with pytest.raises(ValueError, match="no_such"):
        study.select(["no_such"])
    # every row of both tables names a variant of the study
    names = {name for _, rows in (*study.TABLE4, *study.EXTENSION) for _, name in rows}
    assert names == set(study.VARIANT_NAMES)


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
    assert results["summary"]["no_shift"]["vs_default"]["verdict"] == "1 seed"
    assert results["environment"]["machine"]["cpu"]
    report = (out / "report.md").read_text()
    for text in ("Reduced CPU schedule", "Tie rule", "shifted windows", "w/o shifting", "rel. pos.",
                 "abs.+rel. pos.", "global context", "ViT", "(1 seed)", "not run", "speed_accuracy.png",
                 "attention_maps.png", "torch "):
        assert text in report, text
    assert (out / "speed_accuracy.png").stat().st_size > 0 and (out / "attention_maps.png").stat().st_size > 0
    assert "2 run(s) finished, 0 missing" in capsys.readouterr().out

    # the same out with another schedule would mix two studies: refused before training anything
    with pytest.raises(SystemExit) as e:
        _study(out, work, "default", extra=("--epochs", "2"))
    assert e.value.code == 2
    assert "another schedule" in capsys.readouterr().err
    assert calls == [False, False]


def test_unknown_variant_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _study(tmp_path / "out", tmp_path / "work", "swin_huge")
    assert e.value.code == 2
    assert "unknown variant" in capsys.readouterr().err


def test_attention_maps_of_the_report_match_the_map_layout_recomputation():
    # the report's attention figure hooks the qkv projection, which a backend may run on the shifted
    # windows (B*nW, N, 3C) rather than on the map (B, Hp, Wp, 3C); both must give the same map
    from swinlab import create_model
    from swinlab.analysis.attention_maps import query_attention_maps, window_attention_weights
    from swinlab.functional.windows import pad_to_windows

    model = create_model("swin_micro_28").eval()
    x = torch.randn(2, 1, 28, 28)
    query = (7, 9)
    maps = query_attention_maps(model, x, query)  # (2, 2, 14, 14)
    inputs = {}
    hooks = [model.stages[0].blocks[i].attn.register_forward_pre_hook(
        lambda m, a, i=i: inputs.__setitem__(i, a[0])) for i in (0, 1)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for i in (0, 1):
        layer = model.stages[0].blocks[i].attn
        h, w = inputs[i].shape[1:3]
        window, shift = layer.windows_for((h, w))
        assert shift == ((0, 0) if i == 0 else (3, 3))
        with torch.no_grad():
            qkv = layer.qkv(pad_to_windows(inputs[i], window))  # (B, Hp, Wp, 3C)
        probs, origin = window_attention_weights(layer, qkv, (h, w))
        win, slot = (origin == query[0] * qkv.shape[2] + query[1]).nonzero()[0].tolist()
        expected = torch.zeros(2, qkv.shape[1] * qkv.shape[2])
        expected[:, origin[win]] = probs[:, win, :, slot, :].mean(1)
        expected = expected.view(2, qkv.shape[1], qkv.shape[2])[:, :h, :w]
        torch.testing.assert_close(maps[:, i], expected)
        torch.testing.assert_close(maps[:, i].sum((-2, -1)), torch.ones(2))
