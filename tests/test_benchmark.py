"""The benchmark harness (swinlab.analysis.benchmark) and `swinlab bench`: what is timed, what the JSON
holds, interleaving, the linear-backend switch per step. No test asserts a wall-clock time."""

from __future__ import annotations

import json

import pytest
import torch

import swinlab
import swinlab.errors
from swinlab.analysis import benchmark as bm
from swinlab.cli import main
from swinlab.kernels import allocator
from swinlab.kernels import linear as lin
from swinlab.layers import Linear


def test_prepare_and_run_time_interleaved_steps():
    calls = []
    model = swinlab.create_model("swin_pico")
    steps = {}
    for name, backend in (("a", "torch"), ("b", None)):
        step = bm.prepare(model, batch_size=2, img_size=32, name=name, device="cpu", linear_backend=backend)
        plain = step.fn

        def fn(plain=plain, name=name):
            plain()
            calls.append((name, model.config.linear_backend))

        step.fn = fn
        steps[name] = step
    results = bm.run(steps, warmup=2, repeats=3)
    # first call of each, one more warm-up round, then three timed rounds, one step of each in turn
    assert [c[0] for c in calls] == ["a", "b"] * 5
    assert calls[0] == ("a", "auto")  # the backend is set inside the step, around the model's call only
    assert {m.backend for m in model.modules() if isinstance(m, Linear)} == {"auto"}
    r = results["a"]
    assert r["repeats"] == 3 and len(r["times_s"]) == 3 and r["p10_s"] <= r["median_s"] <= r["p90_s"]
    assert r["images_per_s"] == pytest.approx(2 / r["median_s"])
    assert r["peak_memory_bytes"] is None and r["device"] == "cpu" and r["img_size"] == [32, 32]
    assert model.config.linear_backend == "auto"


def test_linear_backend_is_used_during_the_step(monkeypatch):
    seen = []
    real = lin.select_backend
    monkeypatch.setattr(lin, "select_backend",
                        lambda backend, x, grad=False: seen.append(real(backend, x, grad)) or seen[-1])
    step = bm.prepare(swinlab.create_model("swin_pico"), batch_size=1, img_size=32, device="cpu",
                      linear_backend="torch")
    step()
    assert seen and set(seen) == {"torch"}


def test_train_step_updates_the_weights():
    model = swinlab.create_model("swin_pico")
    before = model.head.weight.detach().clone()
    step = bm.prepare(model, batch_size=2, img_size=32, mode="train", device="cpu", lr=1e-2)
    step()
    assert not torch.equal(model.head.weight, before)
    assert all(p.grad is None for p in model.parameters())  # zeroed (set to None) after each step


@pytest.mark.parametrize(("kwargs", "says"), [
    (dict(dtype="float8"), "dtype must be one of"),
    (dict(mode="serve"), "mode must be one of"),
    (dict(batch_size=0), "batch_size must be positive"),
    (dict(linear_backend="mkl"), "unknown linear backend 'mkl'"),
])
def test_prepare_rejects_bad_settings(kwargs, says):
    args = dict(batch_size=1, img_size=32, device="cpu") | kwargs
    with pytest.raises(ValueError, match=says):
        bm.prepare(swinlab.create_model("swin_pico"), **args)


def test_scaling_reports_cost_per_pixel():
    pico = bm.Candidate("pico", lambda s: swinlab.create_model("swin_pico", img_size=s))
    rows = bm.scaling([pico], [32, 64], batch_size=1, warmup=1, repeats=2, device="cpu")
    assert [r["pixels"] for r in rows] == [32 * 32, 64 * 64]
    assert rows[0]["relative_cost_per_pixel"] == 1.0
    for r in rows:
        assert r["ns_per_pixel"] == pytest.approx(r["median_s"] / r["pixels"] * 1e9)


def test_environment_names_machine_versions_and_date(monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)
    assert bm.environment("cpu")["machine"]["malloc"] == "default: not tuned"
    bm.prepare(swinlab.create_model("swin_pico"), batch_size=1, img_size=32, device="cpu")  # tunes for all
    env = bm.environment("cpu")
    assert env["machine"]["malloc"] == allocator.state() != "default: not tuned"
    assert env["machine"]["cpu"] and env["machine"]["torch_threads"] >= 1
    assert env["versions"]["torch"] == torch.__version__ and env["versions"]["swinlab"] == swinlab.__version__
    assert env["date_utc"][:2] == "20"


def test_cli_bench_writes_json_with_every_combination(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)  # as in a fresh process: the run tunes malloc
    path = tmp_path / "bench.json"
    assert main(["bench", "swin_pico", "--batch-size", "2", "--img-size", "32", "--warmup", "1",
                 "--repeats", "2", "--backend", "reference", "sdpa", "--linear-backend", "auto", "torch",
                 "--device", "cpu", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "swin_pico[reference, linear=torch]" in out and "img/s" in out
    report = json.loads(path.read_text())
    names = list(report["results"]["infer"])
    assert names == ["swin_pico[reference, linear=auto]", "swin_pico[reference, linear=torch]",
                     "swin_pico[sdpa, linear=auto]", "swin_pico[sdpa, linear=torch]"]
    assert report["environment"]["versions"]["torch"] == torch.__version__
    assert report["environment"]["machine"]["malloc"] == allocator.state() != "default: not tuned"  # as run


def test_cli_bench_rejects_bad_input(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "swin_pico", "--linear-backend", "blas"])
    assert e.value.code == 2 and "invalid choice: 'blas'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["bench", "no_model"])
    assert e.value.code == 2 and "swinlab list" in capsys.readouterr().err


def test_compile_mode_is_checked_and_recorded():
    with pytest.raises(ValueError, match="compile mode must be one of"):
        bm.prepare(swinlab.create_model("swin_pico"), batch_size=1, img_size=32, device="cpu",
                   compile="fastest")
    step = bm.prepare(swinlab.create_model("swin_pico"), batch_size=1, img_size=32, device="cpu",
                      compile="default")
    assert step.compile == "default"


def test_candidates_expand_backends_for_swin_only_and_reject_unknown_names():
    labels = [c.label for c in bm.candidates(["swin_pico", "vit_pico", "torchvision:swin_t"],
                                             backends=["reference", "sdpa"], linear_backends=["torch"])]
    assert labels == ["swin_pico[reference, linear=torch]", "swin_pico[sdpa, linear=torch]",
                      "vit_pico[linear=torch]", "torchvision:swin_t"]
    with pytest.raises(swinlab.errors.ConfigError, match="unknown model 'nope'"):
        bm.candidates(["nope"])


def test_compare_times_every_mode_and_adds_speedups_against_the_baselines():
    models = [bm.Candidate(n, lambda s: swinlab.create_model("swin_pico", img_size=s)) for n in ("a", "b")]
    out = bm.compare(models, img_size=32, modes=["infer", "train"], warmup=1, repeats=2, baselines=["b"],
                     batch_size=1, device="cpu")
    assert list(out) == ["infer", "train"] and all(list(r) == ["a", "b"] for r in out.values())
    for results in out.values():
        assert results["b"]["speedup_vs_b"] == 1.0
        a, b = results["a"], results["b"]
        assert a["speedup_vs_b"] == pytest.approx(b["median_s"] / a["median_s"])
        assert "speedup_vs_a" not in results["a"]
    assert out["train"]["a"]["mode"] == "train"
    with pytest.raises(swinlab.errors.ConfigError, match="baselines"):
        bm.compare(models, img_size=32, baselines=["timm"], device="cpu")


def test_scaling_interleaves_candidates_each_against_its_own_first_size(monkeypatch):
    runs = []
    real = bm.run

    def spy(steps, **kw):
        runs.append(list(steps))
        return real(steps, **kw)

    monkeypatch.setattr(bm, "run", spy)
    models = [bm.Candidate(n, lambda s: swinlab.create_model("swin_pico", img_size=s)) for n in ("p", "q")]
    rows = bm.scaling(models, [32, 64], warmup=1, repeats=1, device="cpu")
    assert runs == [["p@32x32", "p@64x64", "q@32x32", "q@64x64"]]  # one run: all four interleaved
    assert [r["model"] for r in rows] == ["p", "p", "q", "q"]
    assert [r["relative_cost_per_pixel"] for r in rows][::2] == [1.0, 1.0]
    q32, q64 = rows[2:]
    assert q64["relative_cost_per_pixel"] == pytest.approx(q64["ns_per_pixel"] / q32["ns_per_pixel"])


def test_cli_bench_scaling_writes_rows_per_model_and_size(tmp_path, capsys):
    path = tmp_path / "scaling.json"
    assert main(["bench", "swin_pico", "--scaling", "32", "64", "--batch-size", "1", "--warmup", "1",
                 "--repeats", "1", "--device", "cpu", "--json", str(path)]) == 0
    assert "ns/pixel" in capsys.readouterr().out
    rows = json.loads(path.read_text())["scaling"]
    assert [(r["model"], r["img_size"]) for r in rows] == [("swin_pico", [32, 32]), ("swin_pico", [64, 64])]


def test_timed_steps_of_candidates_never_switch_the_linear_backend(monkeypatch):
    """A candidate's model is built on its linear backend: switching walks every module, and would be
    timed on every step."""
    from swinlab.models.base import Classifier

    switches = []
    real = Classifier.set_linear_backend
    monkeypatch.setattr(Classifier, "set_linear_backend", lambda self, b: switches.append(b) or real(self, b))
    pico = bm.Candidate("pico", lambda s: swinlab.create_model("swin_pico", img_size=s),
                        linear_backend="torch")
    bm.compare([pico], img_size=32, warmup=1, repeats=2, batch_size=1, device="cpu")
    assert switches == ["auto", "torch"]  # the model's own init, then once when built; none in the steps


def test_precisions_cast_the_weights_or_autocast_and_are_recorded():
    seen = {}
    for prec in ("32-true", "bf16-true", "bf16-mixed"):
        model = swinlab.create_model("swin_pico")
        model.register_forward_hook(lambda m, args, out, prec=prec: seen.__setitem__(
            prec, (args[0].dtype, out.dtype, torch.is_autocast_enabled("cpu"))))
        step = bm.prepare(model, batch_size=1, img_size=32, device="cpu", precision=prec)
        step()
        assert step.precision == prec
        weights = torch.bfloat16 if prec == "bf16-true" else torch.float32
        assert {p.dtype for p in model.parameters()} == {weights}
    assert seen["32-true"] == (torch.float32, torch.float32, False)
    assert seen["bf16-true"] == (torch.bfloat16, torch.bfloat16, False)
    assert seen["bf16-mixed"] == (torch.float32, torch.bfloat16, True)
    r = bm.time_model(swinlab.create_model("swin_pico"), batch_size=1, img_size=32, precision="bf16-true",
                      warmup=0, repeats=1, device="cpu")
    assert (r["precision"], r["dtype"]) == ("bf16-true", "bfloat16")
    assert bm.prepare(swinlab.create_model("swin_pico"), batch_size=1, img_size=32, device="cpu",
                      dtype="bfloat16").precision == "bf16-mixed"  # the older dtype name
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        bm.prepare(swinlab.create_model("swin_pico"), batch_size=1, img_size=32, device="cpu",
                   precision="fp8")
    with pytest.raises(ValueError, match="'freeze' folds the weights into constants: inference only"):
        bm.prepare(swinlab.create_model("swin_pico"), batch_size=1, img_size=32, device="cpu", mode="train",
                   compile="freeze")


def test_configurations_and_each_peers_fastest():
    pico = bm.Candidate("pico", lambda s: swinlab.create_model("swin_pico", img_size=s), peer="swinlab")
    peer = bm.Candidate("other", lambda s: swinlab.create_model("vit_pico", img_size=s))
    configs = bm.configurations([pico, peer], precisions=["32-true", "bf16-true"],
                                compile_modes=[False, "freeze"])
    assert [c.label for c in configs] == ["pico@32-true", "pico@32-true+freeze", "pico@bf16-true",
                                          "pico@bf16-true+freeze", "other@32-true", "other@32-true+freeze",
                                          "other@bf16-true", "other@bf16-true+freeze"]
    assert {c.peer for c in configs} == {"swinlab", "other"}
    eager = [c for c in configs if not c.compile]
    out = bm.compare(eager, img_size=32, modes=["infer", "train"], warmup=1, repeats=2, batch_size=2,
                     device="cpu", baselines=["other@32-true"])
    for mode, results in out.items():
        assert [r["precision"] for r in results.values()] == ["32-true", "bf16-true"] * 2
        best = bm.fastest(results)
        assert list(best) == ["swinlab", "other"]
        for p, b in best.items():
            mine = [r for r in results.values() if r["peer"] == p]
            assert b["median_s"] == min(r["median_s"] for r in mine)
            assert b["label"] in results and results[b["label"]]["peer"] == p
        text = bm.format_fastest(mode, best)
        assert best["other"]["label"] in text and "swinlab ×" in text
    frozen = [c for c in configs if c.compile == "freeze"][:1]
    assert list(bm.compare(frozen, img_size=32, modes=["train"], warmup=0, repeats=1, batch_size=1,
                           device="cpu")["train"]) == []  # freezing is inference only: left out of training


def test_cli_times_every_precision_and_names_the_fastest(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "swin_pico", "vit_pico", "--img-size", "32", "--batch-size", "1", "--precision",
                 "32-true", "bf16-true", "--warmup", "1", "--repeats", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "swin_pico@bf16-true" in text and "each implementation's fastest configuration" in text
    report = json.loads(out.read_text())
    assert set(report["results"]["infer"]) == {"swin_pico@32-true", "swin_pico@bf16-true",
                                               "vit_pico@32-true", "vit_pico@bf16-true"}
    assert set(report["fastest"]["infer"]) == {"swin_pico", "vit_pico"}


def test_compiled_steps_raise_dynamo_recompile_limit():
    """Dynamo guards on each model instance and past 8 compiled variants of one forward silently runs
    eager: a run of many compiled configurations must lift the limit before compiling."""
    config = torch._dynamo.config
    with config.patch(recompile_limit=8):  # restored on exit (a monkeypatch of this module deletes it)
        bm.prepare(swinlab.create_model("swin_pico"), batch_size=1, img_size=32, device="cpu", compile=True)
        assert config.recompile_limit >= 64
