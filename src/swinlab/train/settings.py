"""A :class:`TrainConfig` from a recipe, a YAML file and ``KEY=VALUE`` overrides; and back to YAML.

    swinlab train --recipe demo --set base_lr=2e-3 --set model_overrides.drop_path_rate=0.1
    swinlab train --recipe demo --set base_lr=2e-3 --print-config > run.yaml
    swinlab train --config run.yaml --epochs 3 --out runs/a

Precedence, lowest first: the recipe (``recipe: NAME`` in the file, else ``--recipe``, else
``fashion-mnist``; ``--smoke`` shrinks it), the YAML file, each ``--set`` in order, then the
dedicated flags (``--epochs``, ``--batch-size`` ...). Every key must be a field of
:class:`TrainConfig` (a :class:`ConfigError` suggests the closest); every value is converted to its
field's annotated type, so ``--set base_lr=abc`` fails naming the field, and the ranges that
``TrainConfig`` checks apply to the result. A dict field takes ``--set FIELD.KEY=VALUE`` for one entry.

``fit`` saves the resolved config as ``OUT/config.yaml`` (:func:`dump_train_config`);
:func:`load_train_config` reads it back equal, and :func:`check_resume_config` refuses to resume a
run with a config that changes what it learns.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import logging
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .. import precision as precisions
from ..errors import ConfigError
from ..files import atomic_open
from ..models.registry import config_classes, get_config
from .recipes import TrainConfig, get_recipe

log = logging.getLogger(__name__)

DEFAULT_RECIPE = "fashion-mnist"

# what a resumed run may change: how long it trains and how it reads and reports, not what it learns
RESUMABLE_FIELDS = frozenset({"epochs", "num_workers", "data_dir", "progress_bar", "log_every_n_steps"})

# the command-line flags that set a field directly (the highest precedence), by field name
FLAG_FIELDS = ("model", "data", "data_dir", "epochs", "batch_size", "base_lr", "precision", "compile",
               "num_workers", "seed", "init", "layer_decay", "train_fraction", "labels_per_class", "method",
               "mask_ratio", "mask_patch_size")

FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))
_TYPES: dict[str, Any] = typing.get_type_hints(TrainConfig)
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_NULL = {"null", "none", "~", ""}
_WHAT = {bool: "a boolean (true/false, yes/no, on/off, 1/0)", int: "an integer", float: "a float",
         str: "a string"}


# --- values --------------------------------------------------------------------------------------


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """``value`` (from YAML, or the text of ``--set``) as an ``annotation``, else a :class:`ConfigError`.

    Handles ``int``, ``float``, ``bool`` (``true/false/yes/no/on/off/1/0``), ``str``, unions with
    ``None`` (``null``/``none``), ``int | float`` (an integer stays one), ``tuple[T, ...]``,
    ``tuple[T, T]`` (a single value is repeated: ``28`` → ``(28, 28)``), ``list[T]`` and dicts
    (YAML text; lists inside become tuples, as frozen configs hold them).
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and _is_null(value):
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return coerce(name, value, option)
            except ConfigError as e:
                error = e
        if len(options) > 1 or type(None) in args:
            kinds = [_WHAT.get(a, _type_name(a)) for a in options] + (["null"] if type(None) in args else [])
            raise ConfigError(f"{name}: expected {' or '.join(kinds)}, got {value!r}") from None
        raise error
    if annotation is bool:
        return _to_bool(name, value)
    if annotation is int:
        return _to_int(name, value)
    if annotation is float:
        return _to_float(name, value)
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # YAML's `precision: 16`
        raise ConfigError(f"{name}: expected a string, got {value!r} (quote it in YAML)")
    if origin in (tuple, list) or annotation in (tuple, list):
        return _to_sequence(name, value, origin or annotation, args)
    if origin is dict or annotation is dict:
        value = _parse_text(name, value)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping such as {{key: value}}, got {value!r}")
        value_type = args[1] if len(args) == 2 else None
        return {str(k): coerce(f"{name}.{k}", v, value_type) if value_type else _freeze(v)
                for k, v in value.items()}
    return value


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NULL)


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigError(f"{name}: expected {_WHAT[bool]}, got {value!r}")


def _to_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        number = float(value.strip().replace("_", "")) if isinstance(value, str) else value
        if isinstance(number, float) and number.is_integer():
            return int(number)
    except ValueError:
        pass
    raise ConfigError(f"{name}: expected an integer, got {value!r}")


def _to_float(name: str, value: Any) -> float:
    if not isinstance(value, bool) and isinstance(value, int | float | str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    raise ConfigError(f"{name}: expected a float, got {value!r}")


def _to_sequence(name: str, value: Any, kind: type, args: tuple) -> tuple | list:
    value = _parse_text(name, value)
    if not isinstance(value, list | tuple):
        value = [value]
    if kind is tuple and args and args[-1] is not Ellipsis:  # fixed length: tuple[int, int]
        if len(value) == 1 and len(set(args)) == 1:
            value = list(value) * len(args)
        if len(value) != len(args):
            raise ConfigError(f"{name}: expected {len(args)} values, got {len(value)}: {list(value)}")
        items = [coerce(f"{name}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, args, strict=True))]
    else:
        item = args[0] if args else None
        items = [coerce(f"{name}[{i}]", v, item) if item else _freeze(v) for i, v in enumerate(value)]
    return tuple(items) if kind is tuple else items


def _parse_text(name: str, value: Any) -> Any:
    """The YAML value written in ``value`` when it is text (``[28, 28]``, ``{a: 1}``), else ``value``."""
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ConfigError(f"{name}: not a YAML value: {value!r} ({e.problem})") from None


def _freeze(value: Any) -> Any:
    """Lists to tuples, recursively: values of an untyped dict (model overrides) end up hashable."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _freeze(v) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively: what ``yaml.safe_dump`` writes as a plain sequence."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --- resolving -------------------------------------------------------------------------------------


def _unknown(key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, FIELDS, n=3, cutoff=0.7)
    close += [f for f in FIELDS if key and key in f and f not in close]
    hint = f"; did you mean {' or '.join(close[:3])}?" if close else ""
    if key in _model_fields():
        hint = f"; {key} is a model config field: set it as model_overrides.{key}"
    return ConfigError(f"{key}: not a training config field (in {source}){hint} "
                       f"Fields are: {', '.join(FIELDS)}")


def _model_fields() -> set[str]:
    """Field names of every registered model family's config (SwinConfig, ViTConfig, ...)."""
    return {f.name for cls in config_classes().values() for f in dataclasses.fields(cls)}


def _apply(values: dict, key: str, value: Any, source: str) -> None:
    """Set ``values[key]`` (``field`` or ``field.key.key`` inside a dict field) to ``value`` coerced."""
    key = key.strip()
    field, _, rest = key.partition(".")
    if field not in _TYPES:
        raise _unknown(key, source)
    annotation = _TYPES[field]
    try:
        if not rest:
            values[field] = coerce(field, value, annotation)
            return
        if not (annotation is dict or typing.get_origin(annotation) is dict):
            raise ConfigError(f"{key}: {field} is a {_type_name(annotation)}, not a mapping; "
                              f"set it as {field}=VALUE")
        target = values[field] = dict(values[field] or {})
        *parents, last = rest.split(".")
        for part in parents:
            target[part] = dict(target.get(part) or {})
            target = target[part]
        target[last] = _freeze(_parse_text(key, value))
    except ConfigError as e:
        raise ConfigError(f"{e} (in {source})") from None


def split_assignment(text: str) -> tuple[str, str]:
    """``"KEY=VALUE"`` → ``("KEY", "VALUE")`` (the value may contain ``=``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set base_lr=1e-3")
    return key.strip(), value


def read_config_file(path: str | os.PathLike) -> dict:
    """The mapping in the YAML file ``path`` (keys: ``recipe`` and :class:`TrainConfig` fields)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"--config {path}: expected a mapping of field: value, got a {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def resolve_train_config(recipe: str | None = None, *, smoke: bool = False,
                         config_file: str | os.PathLike | None = None, sets: Iterable[str] = (),
                         **explicit: Any) -> TrainConfig:
    """The config of a training run: recipe < ``config_file`` < ``sets`` < ``explicit``.

    Args:
        recipe: a name in :data:`~swinlab.train.recipes.RECIPES`. ``None``: the file's ``recipe:`` key, else
            :data:`DEFAULT_RECIPE`. Naming a different recipe than the file does is an error.
        smoke: the recipe's seconds-long version (the file and overrides still apply on top).
        config_file: a YAML mapping of ``recipe`` and :class:`TrainConfig` fields (any subset).
        sets: ``"KEY=VALUE"`` strings, applied in order (``KEY`` may be ``FIELD.KEY`` for a dict field).
        explicit: field values from dedicated flags (``epochs=3``), coerced like the others.

    Raises:
        ConfigError: an unknown recipe or field (with the closest names), a value of the wrong type
            or out of range, or a model / model override that the model registry refuses.
    """
    file_values = read_config_file(config_file) if config_file is not None else {}
    file_recipe = file_values.pop("recipe", None)
    if file_recipe is not None and recipe is not None and str(file_recipe) != recipe:
        raise ConfigError(f"--config {config_file} is based on recipe {file_recipe!r} but --recipe "
                          f"{recipe} was given; drop one of the two")
    name = recipe or (str(file_recipe) if file_recipe is not None else DEFAULT_RECIPE)
    values = get_recipe(name, smoke=smoke).to_dict()
    for key, value in file_values.items():
        _apply(values, key, value, f"--config {config_file}")
    for text in sets:
        key, value = split_assignment(text)
        _apply(values, key, value, f"--set {text}")
    for key, value in explicit.items():
        _apply(values, key, value, f"--{key.replace('_', '-')}")
    config = TrainConfig(**values)  # its __post_init__ checks the ranges (ConfigError naming the field)
    _check_model(config)
    return config


def _check_model(config: TrainConfig) -> None:
    for field, overrides in (("model", {}), ("model_overrides", config.model_overrides)):
        try:
            get_config(config.model, **overrides)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{field}: {e}") from None


# --- YAML in and out -------------------------------------------------------------------------------


def config_to_yaml(config: TrainConfig) -> str:
    """Every field of ``config`` as YAML, in field order; :func:`load_train_config` reads it back equal."""
    header = "# swinlab TrainConfig: swinlab train --config THIS_FILE (fields: swinlab train --help)\n"
    return header + yaml.safe_dump(_plain(config.to_dict()), sort_keys=False, allow_unicode=True)


def dump_train_config(config: TrainConfig, path: str | os.PathLike) -> Path:
    """Write :func:`config_to_yaml` to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(config_to_yaml(config))
    return Path(path)


def load_train_config(path: str | os.PathLike) -> TrainConfig:
    """The config in the YAML file ``path`` (fields it omits come from its ``recipe:`` or the default)."""
    return resolve_train_config(config_file=path)


def check_resume_config(config: TrainConfig, path: str | os.PathLike,
                        allowed: Iterable[str] = RESUMABLE_FIELDS) -> None:
    """Raise :class:`ConfigError` if ``config`` differs from the run's saved ``path`` outside ``allowed``.

    A run saved before configs were written (no ``path``) is resumed with a warning.
    """
    path = Path(path)
    if not path.is_file():
        log.warning("%s does not exist (a run from before configs were saved): resuming unchecked", path)
        return
    saved = load_train_config(path)
    allowed, before, now = set(allowed), _plain(saved.to_dict()), _plain(config.to_dict())  # [28] == (28,)
    changed = [f"{f}: {before[f]!r} → {now[f]!r}" for f in FIELDS if f not in allowed and before[f] != now[f]]
    if changed:
        raise ConfigError(f"--resume: the run in {path.parent} was trained with another config "
                          f"({'; '.join(changed)}). Resume it with its own config (swinlab train --config "
                          f"{path} --out {path.parent} --resume; {', '.join(sorted(allowed))} may change), "
                          "or start a fresh run in another --out")


# --- the command line ----------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _field_comments() -> dict[str, str]:
    """The inline ``# comment`` of each field in TrainConfig's source (empty if the source is absent)."""
    try:
        source = inspect.getsource(TrainConfig)
    except (OSError, TypeError):
        return {}
    return {m[1]: m[2].strip() for m in re.finditer(r"^\s{4}(\w+):[^#\n]*#(.*)$", source, re.M)}


def fields_help() -> str:
    """The fields with their types, TrainConfig defaults and comments (the ``swinlab train`` epilog)."""
    comments, defaults = _field_comments(), TrainConfig().to_dict()
    rows = [(f, f"{_type_name(_TYPES[f])} = {yaml.safe_dump(_plain(defaults[f]), default_flow_style=True)}"
             .replace("\n...\n", "").strip(), comments.get(f, "")) for f in FIELDS]
    width = max(len(f) for f, _, _ in rows) + 2
    kind = max(len(t) for _, t, _ in rows) + 2
    lines = [f"  {f:<{width}}{t:<{kind}}{c}".rstrip() for f, t, c in rows]
    return ("training config fields (--set FIELD=VALUE, FIELD: VALUE in a --config file; the defaults "
            "below are TrainConfig's,\neach recipe sets its own: see --print-config):\n" + "\n".join(lines))


def add_train_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``--set``, ``--print-config`` and ``--base-lr/--precision/--num-workers/--seed``.

    Also lists every field in the parser's epilog. The parser must already take ``--recipe``,
    ``--smoke`` and the other :data:`FLAG_FIELDS` it offers (read by :func:`train_config_from_args`).
    """
    g = parser.add_argument_group("configuration (recipe < --config < --set < the flags above)")
    g.add_argument("--config", metavar="FILE",
                   help="a YAML file of fields (and `recipe: NAME`), e.g. from --print-config")
    g.add_argument("--set", metavar="FIELD=VALUE", action="append", default=[],
                   help="set any field (repeatable): base_lr=1e-3, model_overrides.drop_path_rate=0.2")
    g.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML and exit without training")
    g.add_argument("--base-lr", metavar="LR", help="lr for a total batch of 512 (scaled linearly)")
    g.add_argument("--precision", choices=precisions.PRECISIONS,
                   help="32-true, bf16-mixed (autocast), bf16-true (bf16 weights), 16-mixed (CUDA), or "
                        "auto (the recipes' default: bf16-mixed where the GPU or CPU has native bf16, "
                        "else 32-true)")
    g.add_argument("--compile", nargs="?", const="true", metavar="MODE",
                   help="torch.compile the model for training (optionally a torch.compile mode); off by "
                        "default (measured: ×1.02-1.08 on a 2-core CPU after about a minute of compiling)")
    g.add_argument("--num-workers", metavar="N", help="data loader worker processes")
    g.add_argument("--seed", metavar="N")
    parser.epilog = fields_help()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config the parsed ``swinlab train`` arguments describe (see :func:`resolve_train_config`)."""
    explicit = {f: getattr(args, f) for f in FLAG_FIELDS if getattr(args, f, None) is not None}
    if getattr(args, "strict", False):
        explicit["strict"] = True
    return resolve_train_config(getattr(args, "recipe", None), smoke=getattr(args, "smoke", False),
                                config_file=args.config, sets=args.set, **explicit)


__all__ = ["DEFAULT_RECIPE", "FIELDS", "FLAG_FIELDS", "RESUMABLE_FIELDS", "add_train_config_arguments",
           "check_resume_config", "coerce", "config_to_yaml", "dump_train_config", "fields_help",
           "load_train_config", "read_config_file", "resolve_train_config", "split_assignment",
           "train_config_from_args"]
