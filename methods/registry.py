"""Name → builder registry for every registration method.

Each method module registers a builder with :func:`register`; ``methods.build(name, **overrides)``
returns a ready ``torch.nn.Module`` whose ``forward(moving, fixed)`` returns a :class:`RegistrationOutput`.
The image size is a constructor argument everywhere (``img_size``, default 160×224×192).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from methods.config import check_known_keys

__all__ = ["DEFAULT_IMG_SIZE", "RegistrationOutput", "available", "build", "register"]

#: The LUMIR / reoriented OASIS grid (RAS, 1 mm).
DEFAULT_IMG_SIZE: tuple[int, int, int] = (160, 224, 192)

_BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {}


@dataclass
class RegistrationOutput:
    """What every model returns.

    Attributes:
        disp: ``[B, 3, X, Y, Z]`` voxel displacement on the fixed grid (moving → fixed pull-back).
        inverse: the fixed → moving displacement on the moving grid, for inverse-consistent models only.
    """

    disp: torch.Tensor
    inverse: torch.Tensor | None = None


def register(name: str) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    """Decorator: register ``builder(**overrides) -> nn.Module`` under ``name``."""

    def deco(builder: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"method {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return deco


def _import_families() -> None:
    """Import every module of the ``methods`` package once, so that their ``@register`` calls run."""
    import methods

    for info in pkgutil.iter_modules(methods.__path__):
        importlib.import_module(f"methods.{info.name}")


def available() -> list[str]:
    """Sorted names of every registered method."""
    _import_families()
    return sorted(_BUILDERS)


def build(name: str, **overrides: Any) -> torch.nn.Module:
    """Build method ``name`` with its default configuration, updated by ``overrides``."""
    _import_families()
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(available())}") from None
    try:
        model = builder(**overrides)
    except TypeError:  # an unknown keyword: name it against the default model's constructor arguments
        check_known_keys(overrides, list(builder().config))
        raise
    model.method_name = name  # type: ignore[assignment]
    return model
