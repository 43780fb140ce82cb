"""Is a run converged, or has its model collapsed? Pure rules on the validation history (README "Convergence").

**Converged** (stated in the README): with at least :data:`MIN_VALIDATIONS` validations, the best
validation value improved by less than ``tol`` over the last quarter of the validations, i.e.
``|best(all) − best(first 3/4)| < tol`` (Dice: higher is better; ``1 − NCC²``: lower is better). With fewer
validations convergence cannot be told (``None``). A curve that never beat the zero field's (Initial's)
value by ``tol`` is not converged either: the model did not train (VoxelMorph's flow head at a low lr).

**Collapsed**: the model has degenerated into a useless mapping. Either

- local NCC² of the warped training images near 0: the epoch's mean similarity loss ``1 − NCC²`` above
  :data:`NCC_SQ_FLOOR` away from 1 (the model maps onto background or noise), at any epoch; or
- at :data:`CONFIRMATIONS` validations in a row, one of: validation Dice below the dataset's Initial (zero
  field) Dice by more than :data:`DICE_MARGIN`; validation NCC² below :data:`NCC_SQ_FLOOR`; more than
  :data:`OUTSIDE_LIMIT` of the fixed grid sampled outside the moving image. One such validation is not enough:
  the DP models' first updates at lr 3e-4 on the demo data can dip far below Initial and recover (measured:
  DP-Conv-MF on 5 images, Dice 0.47 at 32 updates, 0.64 at 128, Initial 0.65); a collapsed model does not.

The trainer stops such a run at once and says so (Liu, Ruan & Sheng 2025 train DP-Conv-C at lr 1e-4; at
1e-3 it collapses on small data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["CONFIRMATIONS", "DICE_MARGIN", "MIN_VALIDATIONS", "NCC_SQ_FLOOR", "OUTSIDE_LIMIT", "collapse_reason",
           "converged", "outside_fraction"]  # fmt: skip

MIN_VALIDATIONS = 4
DICE_MARGIN = 0.15
NCC_SQ_FLOOR = 0.02
OUTSIDE_LIMIT = 0.5
CONFIRMATIONS = 2


def converged(
    values: Sequence[float], higher_is_better: bool, tol: float, initial: float | None = None
) -> bool | None:
    """Whether the validation curve ``values`` (in order) has plateaued; None with too few validations.

    A curve whose best value never beat ``initial`` (the zero field's) by ``tol`` is flat because the model
    did not train, not because it converged: False.
    """
    if len(values) < MIN_VALIDATIONS:
        return None
    pick = max if higher_is_better else min
    if initial is not None and not abs(pick([*values, initial]) - initial) >= tol:
        return False
    head = values[: math.ceil(len(values) * 3 / 4)]
    return abs(pick(values) - pick(head)) < tol


def outside_fraction(disp: torch.Tensor) -> float:
    """Fraction of the fixed grid whose sample point ``x + u(x)`` lies outside the moving volume.

    ``disp``: ``[B, 3, X, Y, Z]`` voxel displacement; the moving volume spans ``[0, n − 1]`` per axis.
    """
    shape = disp.shape[2:]
    outside = torch.zeros(disp.shape[:1] + shape, dtype=torch.bool, device=disp.device)
    for axis, n in enumerate(shape):
        coord = torch.arange(n, device=disp.device, dtype=disp.dtype).view([n if a == axis else 1 for a in range(3)])
        pos = coord + disp[:, axis]
        outside |= (pos < 0) | (pos > n - 1)
    return float(outside.float().mean())


def collapse_reason(
    *, sim: float, val_metric: str, validations: Sequence[tuple[float, float]], initial_value: float | None
) -> str | None:
    """Why the model has collapsed (one sentence with the figures), or None.

    Args:
        sim: the epoch's mean similarity loss ``1 − NCC²`` (in [0, 1]).
        val_metric: ``dice`` or ``ncc`` (a validation value is then ``1 − NCC²``).
        validations: the validations so far, oldest first, each (value, mean fraction of the fixed grid sampled
            outside the moving image); empty when the epoch was not validated (only ``sim`` is checked then).
        initial_value: the validation value of the zero field (None: not known).
    """
    if 1.0 - sim < NCC_SQ_FLOOR:
        return f"the training similarity NCC² fell to {1.0 - sim:.4f} (< {NCC_SQ_FLOOR}): the images no longer match"
    recent = [_symptom(value, outside, val_metric, initial_value) for value, outside in validations[-CONFIRMATIONS:]]
    if len(recent) < CONFIRMATIONS or not all(recent):
        return None
    return f"{recent[-1]} (at {CONFIRMATIONS} validations in a row)"


def _symptom(value: float, outside: float, val_metric: str, initial_value: float | None) -> str | None:
    """What is wrong with one validation, or None."""
    if val_metric == "dice" and initial_value is not None and value < initial_value - DICE_MARGIN:
        return f"validation Dice {value:.4f} is below Initial's {initial_value:.4f} by more than {DICE_MARGIN}"
    if val_metric == "ncc" and 1.0 - value < NCC_SQ_FLOOR:
        return f"validation NCC² fell to {1.0 - value:.4f} (< {NCC_SQ_FLOOR})"
    if outside > OUTSIDE_LIMIT:
        limit = f"{100 * OUTSIDE_LIMIT:.0f}%"
        return f"{100 * outside:.0f}% of the fixed grid is sampled outside the moving image (> {limit})"
    return None
