"""YAML loading, `--set key.path=value` overrides and schema validation.

Unknown keys are rejected with the closest valid key, wrong types with the key, the value
and the expected type, and unsafe YAML tags are refused: all before any heavy work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Union

import yaml

from kerastricks._fs import read_text, write_text_atomic
from kerastricks.config.schema import Config


class ConfigError(ValueError):
    """A configuration problem, with the key path, the value and what to do."""


def load_config(path: str | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Loads a YAML config, applies `key.path=value` overrides and validates it."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(path)
    for item in overrides:
        _apply_override(raw, item)
    config = from_dict(raw, source=path or "<overrides>")
    return config


def from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Builds a validated `Config` from a plain dict (YAML-shaped)."""
    try:
        return _build(Config, raw, "")
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain YAML-ready Python data (defaults filled in)."""
    return dataclasses.asdict(config)


def save_config(config: Config, path: str) -> None:
    """Writes the resolved config as YAML (temporary name, then rename)."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None)
    write_text_atomic(path, text)


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as error:
        mark = error.problem_mark
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(
            f"{path}{where}: unsafe or unknown YAML tag: {error.problem}. Configs are plain "
            "YAML: remove the tag (e.g. !!python/...) and write the value itself."
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data)}")
    return data


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. train.epochs=3")
    key, text = item.split("=", 1)
    value = yaml.safe_load(text) if text.strip() else None
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        node = _override_step(node, part, parts[i + 1], key)
    last = parts[-1]
    if isinstance(node, list):
        index = _list_index(node, last, key)
        node[index] = value
    else:
        node[last] = value


def _override_step(node: Any, part: str, next_part: str, key: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, key)]
    if not isinstance(node.get(part), (dict, list)):
        if part == "stages" and next_part.isdigit():
            node[part] = [{} for _ in range(int(next_part) + 1)]
        else:
            node[part] = {}
    return node[part]


def _list_index(node: list, part: str, key: str) -> int:
    if not part.isdigit():
        raise ConfigError(f"--set {key}: {part!r} indexes a list; use a number")
    index = int(part)
    while len(node) <= index:
        node.append({})
    return index


def _build(cls: type, raw: Any, path: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path or 'config'}: expected a mapping of keys, got {raw!r} ({_type_name(raw)})"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            full = f"{path}.{key}" if path else str(key)
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {(path + '.') if path else ''}{close[0]}?" if close else ""
            raise ConfigError(f"unknown key {full!r}{hint} Valid keys here: {', '.join(names)}")
    values = {}
    for name in names:
        if name in raw:
            full = f"{path}.{name}" if path else name
            values[name] = _check(hints[name], raw[name], full)
    return cls(**values)


def _check(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check(option, value, path)
            except ConfigError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        raise _type_error(path, value, " or ".join(_hint_name(o) for o in options))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(path, value, _hint_name(hint))
        (item,) = typing.get_args(hint) or (Any,)
        return [_check(item, v, f"{path}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(path, value, "a mapping")
        _, item = typing.get_args(hint) or (str, Any)
        return {k: _check(item, v, f"{path}.{k}") for k, v in value.items()}
    return _check_scalar(hint, value, path)


def _check_scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads `1e-3` (no dot) as a string; users mean the number.
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    raise _type_error(path, value, _hint_name(hint))


def _type_error(path: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{path}: expected {expected}, got {value!r} ({_type_name(value)})")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _hint_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    origin = typing.get_origin(hint)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))
