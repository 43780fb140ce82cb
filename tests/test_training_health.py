"""Convergence and collapse rules (dirbench.training.health) on analytic cases."""

from __future__ import annotations

import pytest
import torch
from dirbench.training import health


def test_convergence_needs_four_validations_and_a_plateau_in_the_last_quarter() -> None:
    assert health.converged([0.5, 0.6, 0.7], True, 0.005) is None
    assert health.converged([0.5, 0.6, 0.7, 0.702], True, 0.005) is True  # last quarter gained 0.002
    assert health.converged([0.5, 0.6, 0.7, 0.72], True, 0.005) is False
    assert health.converged([0.5, 0.6, 0.61, 0.62, 0.7, 0.7, 0.7, 0.7], True, 0.005) is True
    assert health.converged([0.5, 0.6, 0.61, 0.62, 0.63, 0.64, 0.65, 0.70], True, 0.005) is False
    assert health.converged([0.9, 0.8, 0.7, 0.69], False, 0.005) is False  # lower is better: still falling
    assert health.converged([0.9, 0.8, 0.7, 0.71], False, 0.005) is True
    assert health.converged([0.7, 0.6, 0.5, 0.4], True, 0.005) is True  # getting worse is no improvement


def test_a_flat_curve_at_initial_did_not_train() -> None:
    flat = [0.6175, 0.6175, 0.6175, 0.6176]  # issue 12: VoxelMorph's flow head never moved
    assert health.converged(flat, True, 0.005) is True
    assert health.converged(flat, True, 0.005, initial=0.6175) is False
    assert health.converged([0.65, 0.70, 0.71, 0.711], True, 0.005, initial=0.6175) is True
    assert health.converged([0.69, 0.69, 0.69, 0.69], False, 0.005, initial=0.69) is False  # 1 − NCC²: lower


def test_outside_fraction_of_analytic_fields() -> None:
    disp = torch.zeros(1, 3, 8, 10, 12)
    assert health.outside_fraction(disp) == 0.0
    disp[:, 0] = 2.0  # x + 2 > 7 for x = 6, 7: 2 of 8 planes outside
    assert health.outside_fraction(disp) == pytest.approx(2 / 8)
    disp[:, 0] = 100.0
    assert health.outside_fraction(disp) == 1.0
    disp = torch.zeros(1, 3, 8, 10, 12)
    disp[:, 2] = -0.5  # z - 0.5 < 0 only at z = 0
    assert health.outside_fraction(disp) == pytest.approx(1 / 12)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"sim": 0.995}, "NCC² fell to 0.0050"),
        ({"value": 0.0}, "Dice 0.0000 is below Initial's 0.6200 by more than 0.15 (at 2 validations in a row)"),
        ({"val_metric": "ncc", "value": 0.999, "initial_value": 0.7}, "validation NCC² fell to 0.0010"),
        ({"outside": 0.8}, "80% of the fixed grid is sampled outside the moving image"),
    ],
)
def test_each_collapse_symptom_is_named(kwargs: dict, fragment: str) -> None:
    args = {"sim": 0.6, "val_metric": "dice", "value": 0.7, "initial_value": 0.62, "outside": 0.05} | kwargs
    value, outside = args.pop("value"), args.pop("outside")
    reason = health.collapse_reason(**args, validations=[(value, outside)] * health.CONFIRMATIONS)
    assert reason is not None and fragment in reason


def test_a_healthy_or_early_model_is_not_flagged() -> None:
    # Slightly below Initial early in training is not a collapse (margin 0.15 Dice).
    assert health.collapse_reason(sim=0.6, val_metric="dice", validations=[(0.55, 0.1)] * 2, initial_value=0.62) is None
    assert health.collapse_reason(sim=0.97, val_metric="dice", validations=[], initial_value=None) is None


def test_one_bad_validation_is_a_transient_not_a_collapse() -> None:
    # Measured on the demo data (DP-Conv-MF on 5 images, lr 3e-4): Dice 0.47 at 32 updates (Initial 0.65), 0.64 at 128.
    dip, good = (0.47, 0.05), (0.68, 0.04)
    for validations in ([dip], [dip, good], [good, dip]):
        assert health.collapse_reason(sim=0.75, val_metric="dice", validations=validations, initial_value=0.65) is None
    reason = health.collapse_reason(sim=0.9, val_metric="dice", validations=[dip, (0.40, 0.6)], initial_value=0.65)
    assert reason is not None and reason.startswith("validation Dice 0.4000")
