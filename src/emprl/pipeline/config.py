"""Recipes: YAML files (plus command-line overrides) parsed into typed dataclasses.

Config flows one way: ``recipes/<experiment>/<stage>.yaml`` + ``--key value`` overrides -> the
dataclasses a stage declares (its own, or TRL/transformers ones such as ``PPOConfig`` and
``Seq2SeqTrainingArguments``) -> the stage's ``main()``.  Every user mistake becomes a one-line
:class:`~emprl.common.errors.UserError` that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import hashlib
import json
import os
import sys
import types
import typing
from typing import Any

import yaml

from emprl.common.errors import UserError

COMMAND_LINE = "command line"
BASE_KEY = "base"
# Keys whose value changes from run to run without changing the experiment.
_VOLATILE_KEYS = {"logging_dir", "overwrite_output_dir", "resume", "resume_from_checkpoint"}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_recipe(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple:
    """Parse ``argv = [recipe.yaml, --key value, ...]`` into one instance per dataclass type."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(format_help(dataclass_types))
        sys.exit(0)
    if not argv or argv[0].startswith("-"):
        raise UserError("expected a recipe YAML file as the first argument (e.g. recipes/demo/sft.yaml)")
    recipe_path, overrides = argv[0], _parse_overrides(argv[1:], dataclass_types)
    values = {k: (v, recipe_path) for k, v in load_recipe_values(recipe_path).items()}
    values.update({k: (v, COMMAND_LINE) for k, v in overrides.items()})

    owners = _field_owners(dataclass_types)
    for key, (_, source) in values.items():
        if key not in owners:
            raise UserError(f"{source}: unknown key '{key}'{_suggest(key, owners)}")

    configs = []
    for cls in dataclass_types:
        hints = _type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.name in values and owners[f.name] is cls:
                raw, source = values[f.name]
                kwargs[f.name] = coerce(raw, hints.get(f.name, Any), f"{source}: key '{f.name}'")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"{recipe_path}: missing required key '{f.name}'")
        _check_values(cls, kwargs, values)
        try:
            config = cls(**kwargs)
        except (ValueError, TypeError) as err:  # raised by __post_init__ checks of TRL/transformers
            raise UserError(f"{recipe_path}: {err}") from None
        _check_paths(config, recipe_path, values)
        object.__setattr__(config, "_emprl_recipe", {"path": recipe_path, "values": {
            k: v for k, (v, _) in values.items() if owners[k] is cls}})
        configs.append(config)
    return tuple(configs)


def load_recipe_values(path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A recipe's values. ``base: other.yaml`` (relative to the recipe's folder) starts from another
    recipe's values, so an ablation states only what it changes."""
    values = load_yaml_mapping(path)
    base = values.pop(BASE_KEY, None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise UserError(f"{path}: key '{BASE_KEY}': expected the file name of another recipe")
    base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
    if base_path in _seen + (os.path.normpath(path),):
        raise UserError(f"{path}: key '{BASE_KEY}': recipes include each other in a cycle")
    if not os.path.isfile(base_path):
        raise UserError(f"{path}: key '{BASE_KEY}': recipe '{base_path}' does not exist")
    return {**load_recipe_values(base_path, _seen + (os.path.normpath(path),)), **values}


def load_yaml_mapping(path: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file and line."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: recipe file does not exist")
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {column}); "
                        "save the recipe as UTF-8") from None
    try:
        loader = UniqueKeyLoader(text)
        loader.name = path  # error marks name the file
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise UserError(f"{where}: invalid YAML ({getattr(err, 'problem', None) or err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys to values at the top level")
    return data


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and key in seen:
                raise UserError(f"{key_node.start_mark.name}:{line}: key '{key}' is given twice (lines {seen[key]} "
                                f"and {line}); keep one")
            if isinstance(key, str):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert what YAML leaves as text (``1e-4``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):  # transformers' Union[SomeEnum, str]: only enum values are valid
            return coerce(value, enums[0], where)
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where)
            except UserError as err:
                errors.append(str(err))
        raise UserError(errors[0] if len(errors) == 1 else f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise UserError(f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}")
    if value is None:
        raise UserError(f"{where}: expected {_type_name(tp)}, got null")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise UserError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise UserError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [m.value for m in tp]
        if isinstance(value, tp) or value in allowed:
            return value
        raise UserError(f"{where}: expected one of {', '.join(map(str, allowed))}, got {value!r}")
    if tp in (list, tuple) or origin in (list, tuple, typing.Sequence):
        items = value if isinstance(value, (list, tuple)) else [value]
        inner = args[0] if args else Any
        return [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(items)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        inner = args[1] if len(args) == 2 else Any
        return {k: coerce(v, inner, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return tp(**{k: coerce(v, _type_hints(tp).get(k, Any), f"{where}.{k}") for k, v in value.items()})
    return value


def config_to_dict(*configs: Any) -> dict[str, Any]:
    """All fields of the given configs as one JSON-safe dict (for model cards and results)."""
    out: dict[str, Any] = {}
    for config in configs:
        for f in dataclasses.fields(config):
            out[f.name] = _jsonable(getattr(config, f.name))
    return out


def recipe_hash(*configs: Any) -> str:
    """A stable hash of what the user asked for (recipe values + overrides), to skip finished stages."""
    chosen = {}
    for config in configs:
        recipe = getattr(config, "_emprl_recipe", None)
        chosen.update(recipe["values"] if recipe else config_to_dict(config))
    return _hash_values(chosen)


def recipe_file_hash(path: str) -> str:
    """The hash a stage records when it runs ``path`` with no overrides (see :func:`recipe_hash`)."""
    return _hash_values(load_recipe_values(path))


def _hash_values(values: dict[str, Any]) -> str:
    chosen = {k: _jsonable(v) for k, v in values.items() if k not in _VOLATILE_KEYS}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


def format_help(dataclass_types: tuple[type, ...]) -> str:
    lines = ["usage: <stage> RECIPE.yaml [--key value ...]", "", "keys:"]
    for cls in dataclass_types:
        hints = _type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init or f.name.startswith("_"):
                continue
            default = "required" if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING \
                else f"default {f.default!r}" if f.default is not dataclasses.MISSING else "default: computed"
            help_text = f.metadata.get("help", "")
            lines.append(f"  --{f.name} ({_type_name(hints.get(f.name, Any))}, {default}) {help_text}".rstrip())
    return "\n".join(lines)


def strip_format(path: str) -> str:
    """The path part of a data spec written ``format:path`` (a plain path is returned as it is)."""
    head, sep, tail = path.partition(":")
    return tail if sep and head.isidentifier() and len(head) > 1 else path



# --------------------------------------------------------------------------------------------------


def _parse_overrides(args: list[str], dataclass_types: tuple[type, ...]) -> dict[str, Any]:
    """``--key value``, ``--key=value`` and a bare ``--flag`` (true). Values are read as YAML,
    except for string fields, which keep the text exactly as typed."""
    hints: dict[str, Any] = {}
    for cls in dataclass_types:
        hints.update(_type_hints(cls))
    out: dict[str, Any] = {}
    given: dict[str, str] = {}  # key -> the option as typed, for a key given twice
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise UserError(f"command line: expected --key value, got {arg!r}")
        key, eq, text = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                text, i = args[i + 1], i + 1
            else:
                text = "true"
        i += 1
        if key in given:
            raise UserError(f"command line: key '{key}' is given twice ({given[key]} and {arg}); keep one")
        given[key] = arg
        tp = hints.get(key)
        if _is_str_type(tp):
            # Strings stay as typed ("yes" is not True), but an optional one can still be unset.
            optional = type(None) in typing.get_args(tp)
            out[key] = None if optional and text in ("null", "None", "~") else text
        else:
            out[key] = _yaml_scalar(text)
    return out


def _yaml_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _is_str_type(tp: Any) -> bool:
    if tp is str:
        return True
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):  # list[str] is not a string
        return False
    args = typing.get_args(tp)
    return str in args and all(a in (str, type(None)) for a in args)


def _field_owners(dataclass_types: tuple[type, ...]) -> dict[str, type]:
    owners: dict[str, type] = {}
    for cls in dataclass_types:
        for f in dataclasses.fields(cls):
            if f.init and f.name not in owners:  # the first dataclass that declares a key owns it
                owners[f.name] = cls
    return owners


def _suggest(key: str, owners: dict[str, type]) -> str:
    close = difflib.get_close_matches(key, list(owners), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_values(cls: type, kwargs: dict[str, Any], values: dict[str, tuple[Any, str]]) -> None:
    """Ranges and choices of the values the user set, before the config (or any model) is built."""
    from emprl.pipeline.config_limits import field_problem

    for f in dataclasses.fields(cls):
        if f.name in kwargs:
            expected = field_problem(f, kwargs[f.name])
            if expected:
                raise UserError(f"{values[f.name][1]}: key '{f.name}': expected {expected}, got {kwargs[f.name]!r}")


def _check_paths(config: Any, recipe_path: str, values: dict[str, tuple[Any, str]]) -> None:
    for f in dataclasses.fields(config):
        if not f.metadata.get("existing_path"):
            continue
        value = getattr(config, f.name)
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if path and isinstance(path, str) and not os.path.exists(strip_format(path)):
                source = values.get(f.name, (None, recipe_path))[1]
                raise UserError(f"{source}: key '{f.name}': path '{path}' does not exist")


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # forward references that cannot be resolved: fall back to raw annotations
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value):
        return config_to_dict(value)
    return str(value)
