"""Training configs from recipes, YAML files, --set and flags: precedence, types, errors, YAML round trip,
--print-config, config.yaml in the run directory and the resume check."""

import dataclasses
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from swinlab.cli import build_parser, main
from swinlab.errors import ConfigError
from swinlab.train import RECIPES, TrainConfig, fit, get_recipe
from swinlab.train.settings import (
    FIELDS,
    coerce,
    config_to_yaml,
    dump_train_config,
    load_train_config,
    resolve_train_config,
    train_config_from_args,
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- precedence ------------------------------------------------------------------------------------


def test_precedence_recipe_file_set_flag(tmp_path):
    demo = get_recipe("demo")
    run = _write(tmp_path / "run.yaml", "base_lr: 0.01\nepochs: 5\nbatch_size: 7\n")
    config = resolve_train_config("demo", config_file=run, sets=["base_lr=0.02", "epochs=6"], epochs=7)
    assert config.batch_size == 7  # file > recipe
    assert config.base_lr == 0.02  # --set > file
    assert config.epochs == 7  # flag > --set
    assert config.weight_decay == demo.weight_decay and config.name == "demo"  # the rest: the recipe's
    assert resolve_train_config("demo", sets=["epochs=2", "epochs=3"]).epochs == 3  # --set in order


def test_precedence_through_the_command_line(tmp_path):
    run = _write(tmp_path / "run.yaml", "recipe: synthetic\nbase_lr: 0.01\nbatch_size: 7\nseed: 3\n")
    args = build_parser().parse_args(["train", "--config", str(run), "--set", "base_lr=0.02", "--set",
                                      "batch_size=9", "--batch-size", "11", "--base-lr", "0.03"])
    config = train_config_from_args(args)
    assert (config.name, config.seed, config.batch_size, config.base_lr) == ("synthetic", 3, 11, 0.03)
    args = build_parser().parse_args(["train", "--config", str(run), "--set", "base_lr=0.02", "--strict"])
    config = train_config_from_args(args)
    assert (config.base_lr, config.strict, config.epochs) == (0.02, True, get_recipe("synthetic").epochs)


def test_the_file_names_its_recipe(tmp_path):
    run = _write(tmp_path / "run.yaml", "recipe: ablations\nepochs: 2\n")
    config = resolve_train_config(config_file=run)
    assert config == get_recipe("ablations", epochs=2)
    assert resolve_train_config(config_file=run, smoke=True) == get_recipe("ablations", smoke=True, epochs=2)
    with pytest.raises(ConfigError, match="based on recipe 'ablations' but --recipe demo"):
        resolve_train_config("demo", config_file=run)
    assert resolve_train_config() == get_recipe("fashion-mnist")  # the default recipe
    with pytest.raises(ConfigError, match="unknown recipe 'dmeo' \\(did you mean demo\\?\\)"):
        resolve_train_config("dmeo")


# --- types -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, field, expected", [
    ("epochs=3", "epochs", 3),
    ("epochs=1e2", "epochs", 100),
    ("base_lr=1e-3", "base_lr", 1e-3),
    ("base_lr=2", "base_lr", 2.0),
    ("randaugment=yes", "randaugment", True),
    ("randaugment=On", "randaugment", True),
    ("randaugment=1", "randaugment", True),
    ("hflip=false", "hflip", False),
    ("hflip=no", "hflip", False),
    ("hflip=0", "hflip", False),
    ("precision=bf16-mixed", "precision", "bf16-mixed"),
    ("data=folder:/data/a=b", "data", "folder:/data/a=b"),
    ("data_dir=null", "data_dir", None),
    ("data_dir=/x", "data_dir", "/x"),
    ("ema_decay=none", "ema_decay", None),
    ("ema_decay=0.999", "ema_decay", 0.999),
    ("crop_padding=4", "crop_padding", 4),
    ("crop_padding=None", "crop_padding", None),
    ("val_size=5000", "val_size", 5000),
    ("val_size=0.2", "val_size", 0.2),
    ("model_overrides={drop_path_rate: 0.3, img_size: [32, 32]}", "model_overrides",
     {"drop_path_rate": 0.3, "img_size": (32, 32)}),
    ("model_overrides.img_size=[32, 32]", "model_overrides", {"drop_path_rate": 0.0, "img_size": (32, 32)}),
])
def test_set_coerces_to_the_field_type(text, field, expected):
    value = getattr(resolve_train_config("demo", sets=[text]), field)
    assert value == expected and type(value) is type(expected)


def test_yaml_file_values_are_coerced(tmp_path):
    # YAML 1.1 reads 1e-3 as a string and `16` as an int: both end up as the field's type
    run = _write(tmp_path / "run.yaml", "base_lr: 1e-3\nprecision: 32\nrandaugment: yes\nema_decay: ~\n"
                                        "model_overrides:\n  drop_path_rate: 0.2\n  img_size: [32, 32]\n")
    config = resolve_train_config("demo", config_file=run)
    assert (config.base_lr, config.precision, config.randaugment) == (1e-3, "32-true", True)  # Lightning's 32
    assert config.ema_decay is None
    assert config.model_overrides == {"drop_path_rate": 0.2, "img_size": (32, 32)}


@pytest.mark.parametrize("value, annotation, expected", [
    ("28", tuple[int, int], (28, 28)),
    (28, tuple[int, int], (28, 28)),
    ("[28, 32]", tuple[int, int], (28, 32)),
    ([1, "2"], tuple[int, ...], (1, 2)),
    ("[0.5, 1]", list[float], [0.5, 1.0]),
    ("{a: 1}", dict[str, float], {"a": 1.0}),
    ("null", tuple[int, int] | None, None),
])
def test_coerce_sequences_and_mappings(value, annotation, expected):
    result = coerce("x", value, annotation)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("value, annotation, message", [
    ("[1, 2, 3]", tuple[int, int], r"x: expected 2 values, got 3"),
    ("[1, a]", tuple[int, ...], r"x\[1\]: expected an integer, got 'a'"),
    ("[1", tuple[int, ...], r"x: not a YAML value"),
])
def test_coerce_sequence_errors(value, annotation, message):
    with pytest.raises(ConfigError, match=message):
        coerce("x", value, annotation)


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("base_lr=abc", r"^base_lr: expected a float, got 'abc' \(in --set base_lr=abc\)$"),
    ("base_lr=inf", r"base_lr: expected a float, got 'inf'"),
    ("epochs=2.5", r"epochs: expected an integer, got '2.5'"),
    ("randaugment=maybe", r"randaugment: expected a boolean \(true/false, yes/no, on/off, 1/0\), got 'maybe"),
    ("ema_decay=fast", r"ema_decay: expected a float or null, got 'fast'"),
    ("val_size=some", r"val_size: expected an integer or a float, got 'some'"),
    ("model_overrides=[1, 2]", r"model_overrides: expected a mapping"),
    ("epochs.x=1", r"epochs\.x: epochs is a int, not a mapping"),
    ("epochs", r"expected KEY=VALUE"),
    ("epochs=0", r"epochs: must be ≥ 1, got 0"),  # TrainConfig's own range checks
    ("ema_decay=1.5", r"ema_decay: must be in \(0, 1\) or null \(off\), got 1.5"),
    ("val_size=10.5", r"val_size: a count \(≥ 1\) must be whole"),
    ("model=swin_nope", r"model: unknown model 'swin_nope'"),
    ("model_overrides.nope=1", r"model_overrides: .*no field.*nope"),
])
def test_bad_values_name_the_field(text, message):
    with pytest.raises(ConfigError, match=message):
        resolve_train_config("demo", sets=[text])


def test_unknown_keys_suggest_the_closest_field(tmp_path):
    with pytest.raises(ConfigError, match=r"wieght_decay: not a training config field \(in --set "
                                          r"wieght_decay=0\.1\); did you mean weight_decay\b") as e:
        resolve_train_config("demo", sets=["wieght_decay=0.1"])
    assert all(f in str(e.value) for f in FIELDS)  # and lists them all
    with pytest.raises(ConfigError, match=r"lr: .*did you mean base_lr"):
        resolve_train_config("demo", sets=["lr=1e-3"])
    with pytest.raises(ConfigError, match=r"img_size is a model config field: set it as model_overrides\."):
        resolve_train_config("demo", sets=["img_size=32"])
    run = _write(tmp_path / "run.yaml", "batch_szie: 8\n")
    with pytest.raises(ConfigError, match=r"batch_szie: not a training config field "
                                          r"\(in --config .*run\.yaml\); did you mean batch_size\?"):
        resolve_train_config("demo", config_file=run)
    with pytest.raises(ConfigError, match="did you mean batch_size"):
        resolve_train_config("demo", batch_szie=8)


@pytest.mark.parametrize("text, message", [
    ("- 1\n- 2\n", r"expected a mapping of field: value, got a list"),
    ("epochs: [1\n", r"not valid YAML"),
])
def test_bad_config_files(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        resolve_train_config("demo", config_file=_write(tmp_path / "run.yaml", text))
    with pytest.raises(ConfigError, match="no such file"):
        resolve_train_config("demo", config_file=tmp_path / "missing.yaml")


def test_cli_reports_config_errors_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--recipe", "demo", "--set", "base_lr=abc"])
    assert e.value.code == 2
    assert "error: base_lr: expected a float, got 'abc'" in capsys.readouterr().err


# --- YAML ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("smoke", [False, True])
def test_yaml_round_trip(tmp_path, recipe, smoke):
    config = resolve_train_config(recipe, smoke=smoke)
    assert load_train_config(dump_train_config(config, tmp_path / "config.yaml")) == config


def test_yaml_round_trip_of_every_kind_of_value(tmp_path):
    config = resolve_train_config("demo", sets=[
        "model_overrides={drop_path_rate: 0.25, img_size: [32, 32], window_size: 4}", "val_size=5000",
        "ema_decay=0.999", "crop_padding=null", "data_dir=/tmp/yes", "name=1e-3", "precision=16-mixed",
        "base_lr=1.5e-10", "randaugment=true", "train_limit=null"])
    text = config_to_yaml(config)
    loaded = load_train_config(_write(tmp_path / "config.yaml", text))
    assert loaded == config and loaded.name == "1e-3" and type(loaded.val_size) is int
    assert config_to_yaml(loaded) == text


# --- the command line ------------------------------------------------------------------------------


def test_print_config_reloads_to_the_same_config(tmp_path, capsys):
    assert main(["train", "--recipe", "demo", "--set", "base_lr=0.002", "--epochs", "4", "--print-config",
                 "--out", str(tmp_path / "never")]) == 0
    text = capsys.readouterr().out
    expected = resolve_train_config("demo", sets=["base_lr=0.002"], epochs=4)
    assert load_train_config(_write(tmp_path / "run.yaml", text)) == expected
    assert not (tmp_path / "never").exists()  # nothing trained
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--print-config"]) == 0
    assert capsys.readouterr().out == text  # the file reproduces itself


def test_train_help_lists_every_field_with_its_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    fields = out.split("training config fields", 1)[1].splitlines()[2:]
    assert [line.split()[0] for line in fields] == list(FIELDS)
    assert any(line.split()[1:4] == ["float", "=", "0.0005"] and "linear scaling" in line for line in fields)
    for flag in ("--config", "--set", "--print-config", "--base-lr", "--precision", "--num-workers"):
        assert flag in out


def test_cli_import_leaves_lightning_unloaded():
    code = "import sys, swinlab.cli; swinlab.cli.build_parser(); print('lightning' in sys.modules)"
    src = str(Path(__file__).parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "False"


# --- config.yaml in the run directory -------------------------------------------------------------


def test_fit_saves_the_config_and_resume_checks_it(tmp_path):
    config = get_recipe("synthetic", epochs=1, synthetic_size=32, val_size=16, batch_size=16)
    out = tmp_path / "run"
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = fit(config, out, accelerator="cpu")["global_step"]
        assert load_train_config(out / "config.yaml") == config
        with pytest.raises(ConfigError, match=r"base_lr: 0\.064 → 0\.1.*--config .*config\.yaml.*--resume"):
            fit(config.replace(base_lr=0.1), out, resume=True, accelerator="cpu")
        with pytest.raises(ConfigError, match=r"model_overrides: \{\} → \{'drop_path_rate': 0\.1\}"):
            fit(config.replace(model_overrides={"drop_path_rate": 0.1}), out, resume=True, accelerator="cpu")
        assert load_train_config(out / "config.yaml") == config  # a refused resume leaves it alone
        longer = dataclasses.replace(config, epochs=2, num_workers=0, progress_bar=False)
        result = fit(longer, out, resume=True, accelerator="cpu")  # epochs may change on resume
    assert first > 0 and result["global_step"] == 2 * first  # it continued for the second epoch
    assert load_train_config(out / "config.yaml") == longer


def test_train_config_checks_its_ranges():
    with pytest.raises(ConfigError, match=r"batch_size: must be ≥ 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"label_smoothing"):  # a ConfigError is a ValueError
        get_recipe("demo", label_smoothing=1.0)
