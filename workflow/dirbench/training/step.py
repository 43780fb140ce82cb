"""One optimisation step of the paper's protocol, as a pure function of the model, the optimiser and a pair.

Liu, Ruan & Sheng (MIDL 2025), App. A and ``spec/methods-dp.md`` §4: loss ``1 − NCC²`` (9³ box window,
VFA-style) ``+ λ · diffusion`` (λ = 1) on the final full-resolution displacement only. Inverse-consistent
models (whose output carries ``inverse``) are trained on the symmetric loss
``0.5 [NCC(f, m∘Φ12) + NCC(m, f∘Φ21)] + λ · 0.5 [Grad(Φ12) + Grad(Φ21)]`` (:func:`methods.losses.registration_loss`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dirbench.errors import UserError
from dirbench.runtime import autocast
from methods import RegistrationOutput
from methods.losses import registration_loss

__all__ = ["StepResult", "TrainingError", "compute_loss", "optimisation_step"]

Forward = Callable[[torch.Tensor, torch.Tensor], RegistrationOutput]


class TrainingError(UserError):
    """Training cannot go on (non-finite loss or gradient, or a bad set-up); names where it happened."""


@dataclass(frozen=True)
class StepResult:
    """Losses of one step (Python floats) and whether the model is inverse-consistent."""

    loss: float
    sim: float
    reg: float
    inverse_consistent: bool


def compute_loss(
    forward: Forward, moving: torch.Tensor, fixed: torch.Tensor, *, reg_weight: float, ncc_window: int,
    device: torch.device, amp: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:  # fmt: skip
    """Forward pass and loss of one pair ``[1, 1, X, Y, Z]`` ×2: (loss, sim, reg, inverse_consistent)."""
    with autocast(device, amp):
        out = forward(moving, fixed)
    loss, sim, reg = registration_loss(moving, fixed, out, reg_weight, ncc_window)
    return loss, sim, reg, out.inverse is not None


def optimisation_step(
    model: torch.nn.Module, forward: Forward, optimizer: torch.optim.Optimizer, moving: torch.Tensor,
    fixed: torch.Tensor, *, reg_weight: float, ncc_window: int, device: torch.device, amp: str, where: str,
) -> StepResult:  # fmt: skip
    """Zero the gradients, forward, loss, backward, and step ``optimizer`` once.

    Raises :class:`TrainingError` naming ``where`` (e.g. ``epoch 3, step 7, pair (moving 0004, fixed 0002)``)
    on a non-finite loss or gradient, before the optimiser touches the weights.
    """
    optimizer.zero_grad(set_to_none=True)
    loss, sim, reg, ic = compute_loss(
        forward, moving, fixed, reg_weight=reg_weight, ncc_window=ncc_window, device=device, amp=amp
    )
    if not torch.isfinite(loss):
        raise TrainingError(f"non-finite loss ({loss.item()}) at {where}")
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if grads and not torch.isfinite(torch.stack([g.detach().abs().max() for g in grads]).max()):
        raise TrainingError(f"non-finite gradient at {where}")
    optimizer.step()
    return StepResult(loss.item(), sim.item(), reg.item(), ic)
