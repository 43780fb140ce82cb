"""The dataclass-config base (methods.config): typed conversion, errors that name the key, flags, schema."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
from dirbench.train_config import TrainConfig

from methods.config import Config, ConfigError, setting


@dataclass(frozen=True)
class Example(Config):
    name: str = setting(help="a name")
    size: tuple[int, int, int] = setting((1, 2, 3), "a size")
    rate: float = setting(0.5, "a rate")
    mode: str = setting("a", "a mode", ("a", "b"))
    limit: int | None = setting(None, "a limit")
    flag: bool = setting(False, "a flag")
    extra: dict = setting({}, "anything")


def test_values_are_converted_to_the_field_types() -> None:
    ex = Example.from_dict({"name": "x", "size": [4, 5, 6], "rate": "1e-4", "limit": 3, "flag": True})
    assert ex == Example("x", (4, 5, 6), 1e-4, "a", 3, True, {})
    assert ex.to_dict() == {"name": "x", "size": [4, 5, 6], "rate": 1e-4, "mode": "a", "limit": 3, "flag": True,
                            "extra": {}}  # fmt: skip
    assert Example.from_dict(ex.to_dict()) == ex


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "sise": [1, 2, 3]}, "cfg.sise: unknown key; did you mean 'size'?"),
        ({"name": "x", "zzz": 1}, "cfg.zzz: unknown key; known keys: name, size, rate, mode, limit, flag, extra"),
        ({"name": "x", "rate": "fast"}, "cfg.rate: expected float, got 'fast'"),
        ({"name": "x", "size": [1, 2]}, "cfg.size: expected a list of 3 (int, int, int), got 2 item(s): [1, 2]"),
        ({"name": "x", "size": [1, 2, "3"]}, "cfg.size[2]: expected int, got '3'"),
        ({"name": "x", "mode": "c"}, "cfg.mode: expected one of 'a', 'b', got 'c'"),
        ({"name": "x", "limit": 1.5}, "cfg.limit: expected int or null, got 1.5"),
        ({"name": "x", "flag": "yes"}, "cfg.flag: expected bool, got 'yes'"),
        ({"name": 3}, "cfg.name: expected str, got 3"),
        ({}, "cfg: missing required key(s) name"),
    ],
)
def test_mistakes_name_the_key_and_what_was_expected(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Example.from_dict(data, where="cfg")
    assert str(err.value) == message


def test_constructor_checks_are_reported_with_their_place() -> None:
    with pytest.raises(ConfigError, match=r"^train\.defaults: epochs must be >= 1$"):
        TrainConfig.from_dict({"method": "vfa", "dataset": "d", "epochs": 0}, where="train.defaults")


def test_write_and_read_back(tmp_path: Path) -> None:
    ex = Example.from_dict({"name": "x", "extra": {"k": [1, 2]}})
    ex.write(tmp_path / "ex.yaml")
    assert Example.from_path(tmp_path / "ex.yaml") == ex
    assert [p.name for p in tmp_path.iterdir()] == ["ex.yaml"]  # no temporary file left


def test_flags_are_generated_with_help_and_parse_to_fields() -> None:
    parser = argparse.ArgumentParser()
    Example.add_arguments(parser)
    helps = {a.dest: a.help for a in parser._actions if a.dest != "help"}
    assert set(helps) == {"name", "size", "rate", "mode", "limit", "flag", "extra"} and all(helps.values())
    args = parser.parse_args(["--size", "7", "8", "9", "--rate", "2e-3", "--no-flag", "--extra", '{"a": 1}'])
    given = Example.arguments_given(args)
    assert given == {"size": [7, 8, 9], "rate": "2e-3", "flag": False, "extra": {"a": 1}}
    assert Example.from_dict({"name": "x", **given}).rate == 2e-3
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "z"])


def test_the_json_schema_accepts_valid_and_rejects_invalid_settings() -> None:
    schema = TrainConfig.json_schema(exclude=("method", "dataset"))
    jsonschema.validate({"epochs": 5, "lr": 1e-3, "model": {"window_size": [2, 2, 2]}}, schema)
    for bad in ({"epoch": 5}, {"lr": "fast"}, {"schedule": "linear"}, {"epochs": 1.5}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
