"""Training losses of Liu, Ruan & Sheng (MIDL 2025): ``L = (1 − LNCC²) + λ · diffusion`` with λ = 1.

- :func:`ncc_vfa`: VFA-style local normalised cross-correlation (Liu et al., J. Med. Imaging 2024), as the
  paper's ``NCC_vfa``: a cubic box window (9³), zero padding, local means over the full window volume,
  ``cc = cov² / clamp(var_f · var_m, eps)`` (the *squared* correlation coefficient), loss ``1 − mean(cc)``.
  The box means are computed with three separable 1-D average pools, equal to the paper's 3-D
  convolution with ``ones / 729`` to float rounding and much cheaper.
- :func:`diffusion`: TransMorph's ``Grad3d('l2')``: mean squared forward differences of the displacement
  along each axis, summed over the three axes and divided by 3 (voxel units).

- :func:`registration_loss`: the training objective on a model's output, applied to the final
  full-resolution field only; for inverse-consistent models (``out.inverse`` set) the symmetric form
  ``0.5 [NCC(f, m∘Φ12) + NCC(m, f∘Φ21)] + λ · 0.5 [Grad(Φ12) + Grad(Φ21)]``.

All are computed in float32 (also under autocast: the variance ``E[x²] − E[x]²`` is lost in bf16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.registry import RegistrationOutput
from methods.spatial import warp

__all__ = ["box_mean", "diffusion", "local_cc2", "ncc_vfa", "registration_loss"]


def box_mean(x: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Mean over a ``window³`` box around every voxel, zero-padded; ``[B, C, X, Y, Z]`` → same shape.

    The sum is always divided by ``window³`` (padding voxels count as zeros), like a 3-D convolution with
    ``ones / window³`` and padding ``window // 2``. ``window`` must be odd.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window}")
    r = window // 2
    for axis in range(3):
        kernel = [1, 1, 1]
        kernel[axis] = window
        pad = [0] * 6
        pad[4 - 2 * axis : 6 - 2 * axis] = [r, r]  # F.pad lists the last axis first
        x = F.avg_pool3d(F.pad(x, pad), tuple(kernel), stride=1)
    return x


def local_cc2(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Squared local correlation coefficient map ``[B, 1, X, Y, Z]`` of two ``[B, 1, X, Y, Z]`` images.

    ``cc = (E[fm] − E[f]E[m])² / clamp((E[f²] − E[f]²)(E[m²] − E[m]²), float32 eps)`` with the box means of
    :func:`box_mean`. Values lie in ``[0, 1]`` up to rounding.
    """
    if fixed.shape != warped.shape or fixed.dim() != 5 or fixed.shape[1] != 1:
        shapes = f"{tuple(fixed.shape)} and {tuple(warped.shape)}"
        raise ValueError(f"expected two [B, 1, X, Y, Z] images of one shape, got {shapes}")
    with torch.autocast(fixed.device.type, enabled=False):
        f, m = fixed.float(), warped.float()
        stats = box_mean(torch.cat([f, m, f * f, m * m, f * m], dim=1), window)
        mu_f, mu_m, ff, mm, fm = stats.unbind(1)
        cov = fm - mu_f * mu_m
        var = (ff - mu_f * mu_f) * (mm - mu_m * mu_m)
        return (cov * cov / var.clamp_min(torch.finfo(torch.float32).eps)).unsqueeze(1)


def ncc_vfa(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Similarity loss ``1 − mean(local_cc2(fixed, warped, window))``, a scalar in ``[0, 1]``.

    Args:
        fixed: ``[B, 1, X, Y, Z]`` fixed image.
        warped: ``[B, 1, X, Y, Z]`` moving image warped onto the fixed grid.
        window: side of the cubic window (odd; the paper uses 9).
    """
    return 1.0 - local_cc2(fixed, warped, window).mean()


def diffusion(disp: torch.Tensor) -> torch.Tensor:
    """Diffusion regulariser of a ``[B, 3, X, Y, Z]`` voxel displacement, a scalar.

    ``(mean((∂_x u)²) + mean((∂_y u)²) + mean((∂_z u)²)) / 3`` with forward differences, each mean over
    batch, components and the voxels where the difference is defined.
    """
    if disp.dim() != 5:
        raise ValueError(f"expected a [B, 3, X, Y, Z] displacement, got {tuple(disp.shape)}")
    d = disp.float()
    total = sum((torch.diff(d, dim=axis) ** 2).mean() for axis in (2, 3, 4))
    return total / 3.0


def registration_loss(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    out: RegistrationOutput,
    reg_weight: float = 1.0,
    window: int = 9,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, similarity, regularisation)`` of one pair, scalars; ``loss = sim + reg_weight · reg``.

    Args:
        moving, fixed: ``[B, 1, X, Y, Z]`` images.
        out: the model's output; ``out.disp`` ``[B, 3, X, Y, Z]`` warps ``moving`` onto ``fixed``
            (bilinear, border), and ``out.inverse``, when present, warps ``fixed`` onto ``moving``.
        reg_weight: λ (1 in the paper).
        window: NCC window side.
    """
    disp = out.disp.float()
    sim = ncc_vfa(fixed, warp(moving.float(), disp), window)
    reg = diffusion(disp)
    if out.inverse is not None:
        inverse = out.inverse.float()
        sim = 0.5 * (sim + ncc_vfa(moving, warp(fixed.float(), inverse), window))
        reg = 0.5 * (reg + diffusion(inverse))
    return sim + reg_weight * reg, sim, reg
