"""The ``swinlab`` command line: every command, one-line errors (exit status 2) for bad input,
tracebacks for bugs, ``--debug`` and the logging flags, ``predict`` over many files, class names."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import swinlab
import swinlab.cli
from conftest import assert_close_rel
from swinlab.cli import main
from swinlab.errors import CheckpointNotFoundError, ConfigError


def test_list_shows_every_model_with_params(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("swin_t "))
    assert "28.29M" in line and "Swin-T" in line


def test_list_filters_by_substring_or_pattern(capsys):
    main(["list", "swin_pi"])
    assert capsys.readouterr().out.split()[0] == "swin_pico"
    main(["list", "swin_?_384"])
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["swin_b_384", "swin_l_384"]
    assert main(["list", "no_such_thing"]) == 1


def test_profile_prints_a_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "pico.json"
    assert main(["profile", "swin_pico", "--json", str(path), "--scaling", "32", "64"]) == 0
    out = capsys.readouterr().out
    assert "MACs" in out and "16×16" in out and "activations" in out
    r = json.loads(path.read_text())
    assert r["name"] == "swin_pico" and r["img_size"] == [32, 32]
    assert r["params"] > 0 and r["macs"] > 0 and r["activation_bytes"] > 0
    assert r["stages"][0]["map_size"] == [16, 16]
    small, large = r["scaling"]
    assert large["attention_entries_per_pixel"] == small["attention_entries_per_pixel"]
    assert large["global_attention_entries_per_pixel"] == 4 * small["global_attention_entries_per_pixel"]


def test_profile_img_size_builds_for_that_size(tmp_path):
    path = tmp_path / "t.json"
    main(["profile", "swin_pico", "--img-size", "48", "64", "--json", str(path)])
    r = json.loads(path.read_text())
    assert r["img_size"] == [48, 64] and r["stages"][0]["map_size"] == [24, 32]


@pytest.mark.parametrize(("argv", "says"), [
    (["profile", "swin_nope"], "swin_nope"),
    (["profile", "swin_pico", "--img-size", "0"], "positive"),
    (["profile", "swin_pico", "--img-size", "1", "2", "3"], "H or H W"),
    (["profile", "swin_pico", "--batch-size", "x"], "positive integer"),
    (["profile", "swin_pico", "--device", "nowhere"], "nowhere"),
])
def test_bad_input_exits_2_with_a_message(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert says in capsys.readouterr().err


def test_convert_a_peer_checkpoint(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    from swinlab.weights import load

    peer = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    src = tmp_path / "timm.pth"
    torch.save(peer.state_dict(), src)
    out = tmp_path / "swin_t.safetensors"
    assert main(["convert", str(src), str(out), "--source", "timm"]) == 0
    ours = load(out).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert_close_rel(ours(x), peer(x), what="logits")
    with pytest.raises(SystemExit) as e:  # the wrong variant: every mismatching key is named
        main(["convert", str(src), str(tmp_path / "s.safetensors"), "--source", "timm", "--model", "swin_s"])
    assert e.value.code == 2
    assert "missing from the checkpoint" in capsys.readouterr().err


# --- the command modules -------------------------------------------------------------------------

COMMAND_NAMES = ["list", "profile", "train", "eval", "predict", "demo", "convert", "study", "bench"]


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_every_command_has_its_module_and_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: swinlab {name}") and swinlab.cli.COMMANDS[name].HELP in out


def test_demo_without_its_data_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--quick", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "demo")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("swinlab demo: error: Fashion-MNIST directory") and err.count("\n") == 1


# --- errors: one line for bad input, a traceback for a bug ---------------------------------------


def test_missing_checkpoint_is_one_line_on_stderr_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.safetensors"
    for argv in (["eval", str(missing)], ["predict", str(missing), "a.png"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        out, err = capsys.readouterr()
        assert out == ""
        says = f"checkpoint {str(missing)!r} does not exist or is not a file"
        assert err == f"swinlab {argv[0]}: error: {says}\n"


def test_unknown_model_is_a_config_error_line(tmp_path, capsys):
    ckpt = _export_pico(tmp_path, ["cat", "dog"])
    with pytest.raises(SystemExit) as e:
        main(["eval", str(ckpt), "--model", "swin_nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("swinlab eval: error: unknown model 'swin_nope'") and err.count("\n") == 1


@pytest.mark.parametrize("exc", [RuntimeError, ValueError, TypeError])
def test_an_exception_that_is_not_a_swinlab_error_keeps_its_traceback(exc, monkeypatch, capsys):
    def broken(args):
        raise exc("a bug")

    monkeypatch.setattr(swinlab.cli.COMMANDS["list"], "run", broken)
    with pytest.raises(exc, match="a bug"):
        main(["list"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_of_a_swinlab_error(where, tmp_path):
    missing = str(tmp_path / "missing.safetensors")
    argv = ["--debug", "eval", missing] if where == "before" else ["eval", missing, "--debug"]
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        main(argv)


def test_a_swinlab_error_in_any_command_is_caught(monkeypatch, capsys):
    def bad_input(args):
        raise ConfigError("no such thing; try another")

    monkeypatch.setattr(swinlab.cli.COMMANDS["bench"], "run", bad_input)
    with pytest.raises(SystemExit) as e:
        main(["bench", "swin_pico"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "swinlab bench: error: no such thing; try another\n"


@pytest.fixture
def swinlab_logger():
    logger = logging.getLogger("swinlab")
    level, handlers = logger.level, list(logger.handlers)
    yield logger
    logger.setLevel(level)
    logger.handlers[:] = handlers


@pytest.mark.parametrize(("flags", "level"), [([], logging.WARNING), (["-v"], logging.INFO),
                                              (["-vv"], logging.DEBUG), (["-q"], logging.ERROR),
                                              (["list", "-v"], logging.INFO)])
def test_verbosity_flags_set_the_swinlab_log_level(flags, level, swinlab_logger, capsys):
    argv = flags if flags[:1] == ["list"] else [*flags, "list"]
    assert main([*argv, "swin_pico"]) == 0
    assert swinlab_logger.level == level
    capsys.readouterr()
    logging.getLogger("swinlab.data").info("an info line")
    logging.getLogger("swinlab.data").error("an error line")
    err = capsys.readouterr().err
    assert ("an info line" in err) == (level <= logging.INFO)
    assert "swinlab.data: ERROR: an error line" in err


# --- predict over many files; class names from the checkpoint -------------------------------------


def _export_pico(tmp_path, names):
    """swin_pico with ``len(names)`` classes exported as train's model.safetensors (untrained)."""
    from swinlab.train import export, get_recipe

    model = swinlab.create_model("swin_pico", num_classes=len(names))
    return export(model, tmp_path / "model.safetensors", names, get_recipe("synthetic", smoke=True))


def _png(path, value):
    Image.fromarray(np.full((32, 32, 3), value, dtype=np.uint8)).save(path)
    return path


def test_predict_reports_each_unreadable_file_and_predicts_the_rest(tmp_path, capsys):
    ckpt = _export_pico(tmp_path, ["cat", "dog"])
    a, c = _png(tmp_path / "a.png", 30), _png(tmp_path / "c.png", 220)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    missing = tmp_path / "missing.png"
    argv = ["predict", str(ckpt), str(a), str(broken), str(c), str(missing), "--topk", "2"]
    assert main([*argv, "--json"]) == 1
    out, err = capsys.readouterr()
    results = json.loads(out)
    assert [r["path"] for r in results] == [str(a), str(broken), str(c), str(missing)]
    assert [sorted(t["label"] for t in r["top"]) for r in (results[0], results[2])] == [["cat", "dog"]] * 2
    assert set(results[1]) == {"path", "error"} and "broken.png" in results[1]["error"]
    assert "cannot decode" in results[1]["error"] and "no such image file" in results[3]["error"]
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("swinlab predict: error: ") for line in lines)
    assert "broken.png" in lines[0] and "missing.png" in lines[1]
    assert main(argv) == 1  # the table: the readable files only
    out = capsys.readouterr().out
    assert str(a) in out and str(c) in out and "broken" not in out
    assert main(["predict", str(ckpt), str(a)]) == 0


def test_a_model_trained_on_a_folder_predicts_the_folder_names(tmp_path, capsys):
    from swinlab.train import evaluate, fit, get_recipe, predict

    root = tmp_path / "shapes"
    for k, name in enumerate(("circle", "square")):
        (root / name).mkdir(parents=True)
        for i in range(6):
            _png(root / name / f"{i}.png", 40 + 150 * k + i)
    config = get_recipe("synthetic", data=f"folder:{root}", epochs=1, batch_size=4, val_size=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fit(config, tmp_path / "run", accelerator="cpu")
            classes = evaluate(result["model"], accelerator="cpu")["classes"]
    finally:
        torch.set_num_threads(threads)
    assert classes == ["circle", "square"]
    (r,) = predict(result["model"], [root / "square" / "0.png"], topk=2)
    assert sorted(t["label"] for t in r["top"]) == ["circle", "square"]
    assert main(["predict", result["model"], str(root / "circle" / "0.png")]) == 0
    out = capsys.readouterr().out
    assert "circle" in out and "square" in out
