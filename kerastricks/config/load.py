"""YAML loading, `--set key.path=value` overrides and schema validation.

Unknown keys are rejected with the closest valid key, wrong types with the key, the value
and the expected type, out-of-range values and unknown names by `kerastricks.config.validate`;
unsafe YAML tags, duplicate keys and empty files are refused: all before any heavy work
starts, and without importing TensorFlow for a local file.

`--set` indexes lists by position: `train.stages.0.lr=1e-3` changes the first stage, an index
equal to the number of stages appends a stage (defaults plus the key), and an index past that
is an error naming the key and the number of stages. A config without `train.stages` has one
(default) stage.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union

import yaml

from kerastricks.config.schema import Config
from kerastricks.config.validate import ConfigError, validate

__all__ = ["ConfigError", "from_dict", "load_config", "save_config", "to_dict"]


def load_config(path: str | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Loads a YAML config, applies `key.path=value` overrides and validates it.

    Args:
        path: a YAML file (local, or any `tf.io.gfile` scheme such as `gs://`); None starts
            from the defaults.
        overrides: `key.path=value` strings, values parsed as YAML.

    Raises:
        ConfigError: naming the file, the key, the value and what is expected.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(path)
    for item in overrides:
        _apply_override(raw, item)
    return from_dict(raw, source=path or "<overrides>")


def from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Builds a validated `Config` from a plain dict (YAML-shaped).

    Raises:
        ConfigError: a wrong key, type, range or name, prefixed with `source`.
    """
    try:
        config = _build(Config, raw, "")
        validate(config)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain YAML-ready Python data (defaults filled in)."""
    return dataclasses.asdict(config)


def save_config(config: Config, path: str) -> None:
    """Writes the resolved config as YAML (temporary name, then rename)."""
    from kerastricks._fs import write_text_atomic

    text = yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None)
    write_text_atomic(path, text)


class _DuplicateKeyError(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the
    last silently, so a second `batch_size:` would override the first unseen)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            # `<<: *anchor` merges are allowed to be overridden by the explicit keys.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first_lines:
                raise _DuplicateKeyError(
                    f"duplicate key {key!r} at line {line} (first at line {first_lines[key]}): "
                    "a YAML mapping takes each key once; keep one of them"
                )
            first_lines[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_text(path: str) -> str:
    # A local file is read without TensorFlow, so that a config error shows in a second;
    # other schemes (gs://, ram://) go through tf.io.gfile.
    if "://" in path:
        from kerastricks._fs import read_text

        return read_text(path)
    with open(path, encoding="utf-8") as f:
        return f.read()


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        text = _read_text(path)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; give the config's YAML file") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKeyError as error:
        raise ConfigError(f"{path}: {error}") from None
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
        raise ConfigError(
            f"{path}: the file is empty (no keys). Write the keys you change, e.g. "
            "`name: my_run`, or `{}` to run with every default."
        )
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
    for i in range(len(parts) - 1):
        node = _override_step(node, parts[: i + 1], parts[i + 1], item)
    if isinstance(node, list):
        node[_list_index(node, parts, item)] = value
    else:
        node[parts[-1]] = value


def _override_step(node: Any, parts: list[str], next_part: str, item: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, parts, item)]
    part = parts[-1]
    if not isinstance(node.get(part), (dict, list)):
        # An absent `stages` holds its default: one stage, which `stages.0.*` changes.
        node[part] = [{}] if part == "stages" and next_part.isdigit() else {}
    return node[part]


def _list_index(node: list, parts: list[str], item: str) -> int:
    """The position `parts[-1]` names in the list at `parts[:-1]`; one past the end appends."""
    part = parts[-1]
    if not part.isdigit():
        raise ConfigError(f"--set {item}: {part!r} indexes a list; use a number")
    index = int(part)
    if index > len(node):
        where = ".".join(parts[:-1])
        noun = "stage" if where.endswith("stages") else "item"
        count = f"{len(node)} {noun}{'' if len(node) == 1 else 's'}"
        change = f"change one with {where}.0 to {where}.{len(node) - 1}, or " if node else ""
        raise ConfigError(
            f"--set {item}: {where}.{index} is past the end: {where} has {count}; "
            f"{change}append one with {where}.{len(node)}."
        )
    if index == len(node):
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
    if origin is Literal:
        # Only the type here: `validate` checks the name against the choices.
        return _check_scalar(type(typing.get_args(hint)[0]), value, path)
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
