"""The model contract (``methods.base``): every registered network satisfies it; the shared input checks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import methods
from methods.base import ModelConfig, RegistrationModel, check_img_size, check_pair


@pytest.mark.parametrize("name", methods.available())
def test_every_registered_network_satisfies_the_protocol(name: str) -> None:
    model = methods.build(name)
    assert isinstance(model, RegistrationModel) and isinstance(model, torch.nn.Module)
    config = json.loads(json.dumps(model.config))  # plain JSON types, as a checkpoint stores them
    assert methods.build(name, **config).config == model.config


def test_a_module_without_config_is_not_a_registration_model() -> None:
    assert not isinstance(torch.nn.Conv3d(1, 1, 3), RegistrationModel)


def test_model_config_turns_lists_into_tuples_and_back() -> None:
    @dataclasses.dataclass(frozen=True)
    class Config(ModelConfig):
        sizes: tuple[int, ...] = (1, 2)
        name: str = "x"

    cfg = Config(sizes=[3, 4])  # type: ignore[arg-type]  # YAML gives lists
    assert cfg.sizes == (3, 4) and hash(cfg) == hash(Config(sizes=(3, 4)))
    assert cfg.to_dict() == {"sizes": [3, 4], "name": "x"} and Config(**cfg.to_dict()) == cfg
    assert Config.from_dict({"sizes": [5]}) == Config(sizes=(5,))  # the config base's typed reader
    with pytest.raises(ValueError, match="sizess: unknown key; did you mean 'sizes'"):
        Config.from_dict({"sizess": [5]})


def test_check_img_size() -> None:
    assert check_img_size([32, 48, 16]) == (32, 48, 16)
    with pytest.raises(ValueError, match=r"img_size must have 3 sides divisible by 16, got \(30, 48, 16\)"):
        check_img_size((30, 48, 16))
    with pytest.raises(ValueError, match="divisible by 16 and at least 32"):
        check_img_size((16, 32, 32), 16, 32)
    with pytest.raises(ValueError, match="3 sides"):
        check_img_size((32, 32))


def test_check_pair_names_the_image_and_the_rule() -> None:
    ok = torch.zeros(1, 1, 32, 32, 16)
    check_pair(ok, ok, 16)
    check_pair(torch.zeros(2, 1, 5, 7, 3), torch.zeros(2, 1, 5, 7, 3))  # any size by default
    with pytest.raises(ValueError, match=r"moving image has shape \(1, 1, 24, 32, 16\); expected .*divisible by 16"):
        check_pair(torch.zeros(1, 1, 24, 32, 16), ok, 16)
    with pytest.raises(ValueError, match=r"fixed image has shape \(1, 2, 32, 32, 16\); expected .*one channel"):
        check_pair(ok, torch.zeros(1, 2, 32, 32, 16))
    with pytest.raises(ValueError, match="divisible by 16 and at least 32"):
        check_pair(ok, ok, 16, 32)
    with pytest.raises(ValueError, match="shapes differ"):
        check_pair(ok, torch.zeros(2, 1, 32, 32, 16))
