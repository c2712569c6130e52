"""Configs as files and text: strict JSON load and save, and dotted command-line overrides.

Loading is strict: an unknown key or a value of the wrong type fails with a message
naming the dotted field.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

from txl.config import model as model_module
from txl.config.domains import ConfigError
from txl.config.model import OMIT_AT_DEFAULT, VARIANT_SETTINGS, ModelConfig
from txl.config.sections import RunConfig
from txl.core.io import atomic_write_json


def to_dict(cfg: Any) -> dict:
    """A plain, JSON-ready dict of a config dataclass (fields marked omit_default left out at their default;
    a section dict marked flatten written as keys of its owner, as a variant's settings are: model.las)."""
    out = dataclasses.asdict(cfg)
    _shape(cfg, out)
    return out


def _shape(obj: Any, data: dict) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("flatten"):
            for name, plain in data.pop(f.name).items():
                section = value[name]
                if dataclasses.is_dataclass(section):
                    if name in OMIT_AT_DEFAULT and section == type(section)():
                        continue
                    _shape(section, plain)
                data[name] = plain
        elif f.metadata.get("omit_default") and value == _default(f):
            del data[f.name]
        elif dataclasses.is_dataclass(value):
            _shape(value, data[f.name])
        elif isinstance(value, list):
            for item, plain in zip(value, data[f.name]):
                if dataclasses.is_dataclass(item):
                    _shape(item, plain)


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _sections(cls: type) -> tuple[str | None, dict[str, type]]:
    """The field of `cls` that holds named sections (flatten), and the section classes it may hold."""
    for f in dataclasses.fields(cls):
        if f.metadata.get("flatten"):
            return f.name, (VARIANT_SETTINGS if cls is ModelConfig else {})
    return None, {}


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from plain data; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__}: expected an object of {cls.__name__} fields, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    holder, sections = _sections(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init and f.name != holder]
    kwargs: dict[str, Any] = {holder: {}} if holder else {}
    for key, value in data.items():
        if key in names:
            kwargs[key] = _check(value, hints[key], _join(path, key))
        elif key in sections:
            kwargs[holder][key] = _check(value, sections[key], _join(path, key))
        elif holder and not sections and isinstance(value, dict):
            kwargs[holder][key] = value  # no variant registered yet (txl.attention not imported): built later
        else:
            raise _unknown_key(_join(path, key), cls, names + list(sections))
    return cls(**kwargs)


def complete_sections(model: ModelConfig) -> ModelConfig:
    """Build the variant settings sections read before any variant had registered them (kept as plain data by
    from_dict); a name no variant registers is an unknown key."""
    for name in model.complete().settings:
        if name not in VARIANT_SETTINGS:
            raise _unknown_key(f"model.{name}", ModelConfig, list(VARIANT_SETTINGS))
    return model


model_module.read_section = lambda cls, data, path: from_dict(cls, data, path)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config as JSON, atomically."""
    atomic_write_json(path, to_dict(cfg))


MAX_CONFIG_BYTES = 16 * 2**20


def load_config(path: str | Path, cls: type = RunConfig) -> Any:
    """Read a JSON config file into `cls`, strictly."""
    path = Path(path)
    try:
        if not path.is_file():  # a folder, a FIFO or a device is never read (a FIFO would wait, /dev/zero never end)
            raise ConfigError(f"config file {path} " + ("is not a regular file" if path.exists() else "does not exist"))
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is {path.stat().st_size:,} bytes; a config is at most 16 MiB")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:  # a symlink loop, no permission
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    if cls is RunConfig and isinstance(data, dict) and "model" not in data and "n_layer" in data:
        data = {"model": data}  # a bare model config is accepted where a run config is expected
    return from_dict(cls, data)


def apply_overrides(cfg: Any, assignments: list[str]) -> Any:
    """Apply `a.b.c=value` assignments in place, each checked against the field's type."""
    for text in assignments:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {text!r} must look like section.field=value, e.g. model.layers.3.mem_len=512")
        set_path(cfg, key.strip(), raw.strip())
    return cfg


def set_path(cfg: Any, dotted: str, raw: str) -> None:
    """Set the field named by a dotted path (list entries by index) from its text form."""
    parts = dotted.split(".")
    obj, tp, path = cfg, type(cfg), ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        here = _join(path, part)
        if dataclasses.is_dataclass(obj):
            holder, sections = _sections(type(obj))
            names = [f.name for f in dataclasses.fields(obj) if f.name != holder]
            if part in sections:
                if last:
                    getattr(obj, holder)[part] = _parse_text(raw, sections[part], here)
                    return
                obj, path = getattr(obj, part), here
                continue
            if part not in names:
                raise _unknown_key(here, type(obj), names + list(sections))
            tp = typing.get_type_hints(type(obj))[part]
            if last:
                setattr(obj, part, _parse_text(raw, tp, here))
                return
            obj = getattr(obj, part)
        elif isinstance(obj, list):
            if not part.isdigit() or int(part) >= len(obj):
                raise ConfigError(f"{here}: no such entry; {path} has {len(obj)} entries (0..{len(obj) - 1})")
            tp = _list_item_type(tp)
            if last:
                obj[int(part)] = _parse_text(raw, tp, here)
                return
            obj = obj[int(part)]
        else:
            raise ConfigError(f"{here}: {path} is a value, not a section")
        path = here


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown_key(path: str, cls: type, names: list[str]) -> ConfigError:
    parent, _, key = path.rpartition(".")
    where = parent or cls.__name__
    return ConfigError(f"unknown config key {path!r}: {where} has no field {key!r} (known: {', '.join(names)})")


def _show(value: Any) -> str:
    text = json.dumps(value) if not dataclasses.is_dataclass(value) else repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def _list_item_type(tp: Any) -> Any:
    for arg in _union_args(tp):
        if typing.get_origin(arg) is list:
            return typing.get_args(arg)[0]
    raise AssertionError(f"{tp} is not a list type")


def _union_args(tp: Any) -> tuple:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _type_name(tp: Any) -> str:
    args = _union_args(tp)
    if len(args) > 1:
        return " or ".join(_type_name(a) for a in args)
    if tp is type(None):
        return "none"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return f"an object of {tp.__name__} fields"
    return getattr(tp, "__name__", str(tp))


def _check(value: Any, tp: Any, path: str) -> Any:
    """Return `value` converted to `tp` (ints widen to floats), or raise ConfigError."""
    args = _union_args(tp)
    if len(args) > 1:
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, path)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_show(value)}")
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin is list:
        if isinstance(value, list):
            item = typing.get_args(tp)[0]
            return [_check(v, item, f"{path}.{i}") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            item = typing.get_args(tp)[1]
            return {k: _check(v, item, f"{path}.{k}") for k, v in value.items()}
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return from_dict(tp, value, path)
        if isinstance(value, tp):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_show(value)}")


def _parse_text(raw: str, tp: Any, path: str) -> Any:
    """Parse a command-line value: JSON where it parses (numbers, true, [1,2], {...}), else plain text."""
    candidates: list[Any] = []
    if raw.lower() in ("none", "null"):
        candidates.append(None)
    if raw.lower() in ("true", "false", "yes", "no", "on", "off"):
        candidates.append(raw.lower() in ("true", "yes", "on"))
    try:
        candidates.append(json.loads(raw))
    except json.JSONDecodeError:
        pass
    if "," in raw and not raw.startswith("["):
        try:
            candidates.append(json.loads(f"[{raw}]"))
        except json.JSONDecodeError:
            pass
    candidates.append(raw)
    for value in candidates:
        try:
            return _check(value, tp, path)
        except ConfigError:
            continue
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {raw!r}")


def differences(old: dict, new: dict, path: str = "") -> list[str]:
    """The dotted fields where two config dicts (to_dict's) differ, each as 'field: old -> new'; a field one of
    them lacks shows as 'unset' there. Lists of equal length are compared item by item (model.layers.3.mem_len)."""
    out = []
    for key in dict.fromkeys([*old, *new]):
        a, b, name = old.get(key, _UNSET), new.get(key, _UNSET), _join(path, str(key))
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, name)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and a != b:
            out += differences(dict(enumerate(a)), dict(enumerate(b)), name)
        elif a != b:
            out.append(f"{name}: {'unset' if a is _UNSET else _show(a)} -> {'unset' if b is _UNSET else _show(b)}")
    return out


_UNSET = object()
