"""One dataclass-config base for every configuration in DIRBench (after deepali's ``core/config.py``).

A config is a ``@dataclass`` subclass of :class:`Config` whose fields carry their type, default and help
text (``x: int = setting(3, "help text")``, or ``field(..., metadata={"help": ..., "choices": ...})``).
From that single source:

- :meth:`Config.from_dict` checks keys and types and converts YAML/JSON values (lists → tuples), raising
  :class:`ConfigError` with the key's place in the config, what was expected and, for a typo, the closest
  known key (``train.defaults.epoch: unknown key; did you mean 'epochs'?``);
- :meth:`Config.to_dict` / :meth:`Config.write` / :meth:`Config.from_path` serialise to plain YAML;
- :meth:`Config.json_schema` gives the JSON schema of the fields (used by the workflow's config schema);
- :meth:`Config.add_arguments` / :meth:`Config.from_arguments` give one command-line flag per field.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``X | None``, ``tuple[X, ...]``,
``tuple[X, Y]``, ``list[X]`` and ``dict[str, Any]``. A float field also takes a numeric string such as
``"1e-4"`` (PyYAML reads ``1e-4`` without a dot as a string).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import tempfile
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["Config", "ConfigError", "check_known_keys", "setting"]

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A config value or key is wrong; the message names its place (``where.key``) and what was expected."""


def setting(default: Any = dataclasses.MISSING, help: str = "", choices: tuple | None = None) -> Any:
    """A config field with its help text (and allowed values); mutable defaults are copied per instance."""
    metadata = {"help": help} if choices is None else {"help": help, "choices": choices}
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_known_keys(data: Iterable[Any], known: Sequence[str], where: str = "") -> None:
    """Raise :class:`ConfigError` for the first key of ``data`` not in ``known``, suggesting the closest one."""
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            raise ConfigError(f"{_join(where, str(key))}: unknown key; {hint}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _describe(tp: Any) -> str:
    """A readable name of a field type (``int``, ``float or null``, ``list of int``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin in (tuple, list):
        if (len(args) == 2 and args[1] is Ellipsis) or origin is list:
            return f"a list of {_describe(args[0])}" if args else "a list"
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if origin is dict:
        return "a mapping"
    if tp is Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` as type ``tp``, or :class:`ConfigError` naming ``where``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {_describe(tp)}, got {len(value)} item(s): {value!r}")
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a config declared a type this module does not know
        raise TypeError(f"{where}: unsupported config field type {tp!r}")
    raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")


def _plain(value: Any) -> Any:
    """Tuples → lists, recursively: plain YAML / JSON types."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _schema(tp: Any) -> dict[str, Any]:
    """The JSON schema of one field type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema(a) for a in args]}
    if origin in (tuple, list):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return {"type": "array", "prefixItems": [_schema(a) for a in args], "minItems": len(args),
                    "maxItems": len(args)}  # fmt: skip
        return {"type": "array", "items": _schema(args[0]) if args else {}}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    if tp in simple:
        return {"type": simple[tp]}
    if origin is dict or tp is dict:
        return {"type": "object"}
    return {}


class Config:
    """Base class of the dataclass configs (see the module docstring). Subclasses are ``@dataclass``\\ es."""

    @classmethod
    def _fields(cls) -> dict[str, tuple[dataclasses.Field, Any]]:
        hints = typing.get_type_hints(cls)
        return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]

    @classmethod
    def check_keys(cls, data: dict[str, Any], where: str = "") -> None:
        """Raise :class:`ConfigError` for a key that is not a field, suggesting the closest field."""
        check_known_keys(data, list(cls._fields()), where)

    @classmethod
    def check_partial(cls, data: dict[str, Any], where: str = "") -> None:
        """Check the keys and value types of a partial mapping of fields (one layer of merged settings)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
        cls.check_keys(data, where)
        fields = cls._fields()
        for key, value in data.items():
            cls._field_value(fields[key], value, _join(where, key))

    @staticmethod
    def _field_value(spec: tuple[dataclasses.Field, Any], value: Any, where: str) -> Any:
        field, tp = spec
        converted = _convert(tp, value, where)
        choices = field.metadata.get("choices")
        if choices is not None and converted not in choices:
            raise ConfigError(f"{where}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return converted

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
        """Build from plain data: unknown keys and wrong types are :class:`ConfigError`\\ s naming ``where.key``.

        Missing keys take their defaults; values are converted to the field types (lists → tuples).
        Constructor checks (``__post_init__``) that raise ``ValueError`` are re-raised with ``where``.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
        cls.check_keys(data, where)
        fields = cls._fields()
        values = {}
        for key, value in data.items():
            values[key] = cls._field_value(fields[key], value, _join(where, key))
        missing = [k for k, (f, _) in fields.items() if k not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]  # fmt: skip
        if missing:
            raise ConfigError(f"{where or cls.__name__}: missing required key(s) {', '.join(missing)}")
        try:
            return cls(**values)
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"{where}: {err}" if where else str(err)) from None

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain YAML / JSON data (tuples as lists)."""
        return {name: _plain(getattr(self, name)) for name in self._fields()}

    @classmethod
    def from_path(cls: type[C], path: str | Path) -> C:
        """Read a YAML (or JSON) file written by :meth:`write`."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read {cls.__name__}: {err}") from None
        return cls.from_dict(data, where=str(path))

    def write(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as YAML, atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                yaml.safe_dump(self.to_dict(), fh, sort_keys=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def json_schema(cls, exclude: typing.Iterable[str] = ()) -> dict[str, Any]:
        """A JSON schema (draft 2020-12) of the fields, without defaults (a partial mapping is valid)."""
        props = {}
        for name, (field, tp) in cls._fields().items():
            if name in exclude:
                continue
            prop = _schema(tp)
            if "choices" in field.metadata:
                prop = {"enum": list(field.metadata["choices"])}
            if "help" in field.metadata:
                prop["description"] = field.metadata["help"]
            props[name] = prop
        return {"type": "object", "additionalProperties": False, "properties": props}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, exclude: typing.Iterable[str] = ()) -> None:
        """One ``--flag`` per field (``reg_weight`` → ``--reg-weight``), default None (= not given).

        Booleans become ``--flag`` / ``--no-flag``; lists take several values; mappings take JSON.
        """
        for name, (field, tp) in cls._fields().items():
            if name in exclude:
                continue
            flag = "--" + name.replace("_", "-")
            help_text = field.metadata.get("help", "")
            default = field.default if field.default is not dataclasses.MISSING else None
            if default is not None and not isinstance(default, dict | list | tuple):
                help_text += f" (default: {default})"
            kind = tp
            if typing.get_origin(tp) in (typing.Union, types.UnionType):  # X | None: the flag takes an X
                kind = next(a for a in typing.get_args(tp) if a is not type(None))
            origin = typing.get_origin(kind)
            if kind is bool:
                parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                    help=help_text)  # fmt: skip
            elif origin in (tuple, list):
                item = typing.get_args(kind)[0]
                parser.add_argument(flag, dest=name, nargs="+", type=item, default=None, help=help_text)
            elif origin is dict or kind is dict:
                parser.add_argument(flag, dest=name, type=_json_mapping, default=None, metavar="JSON",
                                    help=help_text)  # fmt: skip
            else:
                parser.add_argument(flag, dest=name, type=kind, default=None,
                                    choices=field.metadata.get("choices"), help=help_text)  # fmt: skip

    @classmethod
    def arguments_given(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The fields given on the command line (flags added by :meth:`add_arguments`)."""
        return {name: getattr(args, name) for name in cls._fields() if getattr(args, name, None) is not None}


def _json_mapping(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value
