"""The model contract shared by every registration network: the config base class, the input check, a Protocol.

Every network ``methods.build(name, **overrides)`` returns satisfies :class:`RegistrationModel`: calling it as
``model(moving, fixed)`` on two ``[B, 1, X, Y, Z]`` images returns a :class:`~methods.registry.RegistrationOutput`
(``disp`` ``[B, 3, X, Y, Z]`` voxels on the fixed grid, moving → fixed pull-back; ``inverse`` for the
inverse-consistent models), and ``model.config`` holds its constructor arguments as plain JSON / YAML types,
so that ``methods.build(name, **model.config)`` rebuilds the same architecture from a checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from methods.config import Config
from methods.registry import RegistrationOutput

__all__ = ["ModelConfig", "RegistrationModel", "check_img_size", "check_pair"]


@runtime_checkable
class RegistrationModel(Protocol):
    """What every registered network is (an ``nn.Module`` with these members)."""

    config: dict[str, Any]
    """Constructor keyword arguments (JSON / YAML types): ``methods.build(name, **model.config)`` rebuilds it."""

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationOutput:
        """``moving``, ``fixed``: ``[B, 1, X, Y, Z]`` → ``RegistrationOutput(disp [B, 3, X, Y, Z], inverse)``."""
        ...

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationOutput: ...


@dataclasses.dataclass(frozen=True)
class ModelConfig(Config):
    """Base of the dataclass model configs, on the project's config base (:class:`methods.config.Config`: typed
    :meth:`~methods.config.Config.from_dict`, :meth:`~methods.config.Config.to_dict`). Builders construct it
    from keyword overrides directly, so list values become tuples here as well.

    ``model.config`` is ``model.cfg.to_dict()``: plain JSON / YAML types, so that
    ``methods.build(name, **model.config)`` rebuilds the same architecture from a checkpoint.
    """

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))


def _size_problem(size: Sequence[int], divisor: int, min_side: int) -> str | None:
    """What is wrong with a spatial size (None if nothing): 3 sides, each divisible by ``divisor``, ≥ ``min_side``."""
    if len(size) != 3 or any(n < max(min_side, 1) or n % divisor for n in size):
        return f"3 sides divisible by {divisor}" + (f" and at least {min_side}" if min_side > divisor else "")
    return None


def check_img_size(img_size: Sequence[int], divisor: int = 16, min_side: int = 16) -> tuple[int, int, int]:
    """Validate a 3-D image size (sides divisible by ``divisor``, at least ``min_side``); return it as a tuple.

    Raises ``ValueError`` naming the rule.
    """
    size = tuple(int(n) for n in img_size)
    problem = _size_problem(size, divisor, min_side)
    if problem:
        raise ValueError(f"img_size must have {problem}, got {tuple(img_size)}")
    return size  # type: ignore[return-value]


def check_pair(moving: torch.Tensor, fixed: torch.Tensor, divisor: int = 1, min_side: int = 1) -> None:
    """Raise ``ValueError`` unless ``moving`` and ``fixed`` are equal-shaped ``[B, 1, X, Y, Z]`` images whose sides
    are divisible by ``divisor`` and at least ``min_side`` (the networks are fully convolutional: ``img_size`` is
    validated and recorded at construction, and any input of an admissible size is accepted)."""
    for name, t in (("moving", moving), ("fixed", fixed)):
        problem = None if t.dim() == 5 and t.shape[1] == 1 else "one channel"
        problem = problem or _size_problem(t.shape[2:], divisor, min_side)
        if problem:
            raise ValueError(f"{name} image has shape {tuple(t.shape)}; expected [B, 1, X, Y, Z] with {problem}")
    if moving.shape != fixed.shape:
        raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} shapes differ")
