"""SITReg: symmetric, inverse-consistent, topology-preserving multi-resolution registration.

Honkamaa & Marttinen, "SITReg: Multi-resolution architecture for symmetric, inverse consistent, and topology
preserving image registration" (MELBA 2024), in the LUMIR ``cc_grad_1.0_very_deep_heavy`` configuration that
Liu, Ruan & Sheng (MIDL 2025) used as a Table-1 baseline: 6 levels, no affine stage, ReLU, GroupNorm(4 groups,
affine), control-point multiplier 0.99, Anderson inversion solvers; **15,076,110 parameters**. Facts:
``spec/methods-baselines.md`` §5.

Feature extractor (:class:`SITRegEncoder`, shared by both images, run once on the 2-image batch; 3,332,928
parameters): ``skip = conv1³(1 → 12)``; level 0 = 2 × [conv3³ → GN → ReLU] (12 → 12). Then 5 downsampling
blocks with channels 12 → 32 → 64 → 128 → 128 → 128: ``main = conv2³ stride 2(out) + conv1³(avgpool2(skip))``,
``skip ← main``, ``out = 2 × [conv3³ → GN → ReLU](main)``. Odd sizes are zero-padded at the end before each
downsampling, so level ``k`` has ``ceil(N / 2^k)`` voxels and any input size works.

Update networks (:class:`SITRegUpdate`, one per level, 11,743,182 parameters in all): anti-symmetric inputs
``cat[a − b, a + b]`` (forward) and ``cat[b − a, a + b]`` (reverse), 2 × [conv3³ → GN → ReLU] to ``T`` =
12, 64, 128, 256, 256, 256 features (full resolution first), then conv1³ ``T → 3`` (PyTorch default init).
The output, ``0.99 · B_s · tanh(·)``, is read as cubic B-spline control points; the symmetric accumulation,
B-spline upsampling and fixed-point inversion are :class:`methods.dp_ic.SymmetricPyramid`'s (shared with
DP-ConvIC).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.dp_ic import SymmetricPyramid
from methods.registry import DEFAULT_IMG_SIZE, register

__all__ = ["SITREG_CHANNELS", "SITREG_UPDATE_FEATURES", "SITReg", "SITRegEncoder", "SITRegUpdate"]

#: Feature-extractor channels per level, full resolution first.
SITREG_CHANNELS: tuple[int, ...] = (12, 32, 64, 128, 128, 128)
#: Update-network features per level, full resolution first.
SITREG_UPDATE_FEATURES: tuple[int, ...] = (12, 64, 128, 256, 256, 256)
_GROUPS = 4


def _conv_norm_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    """conv3³ (bias) → GroupNorm(4, affine) → ReLU."""
    return nn.Sequential(nn.Conv3d(in_ch, out_ch, 3, padding=1), nn.GroupNorm(_GROUPS, out_ch), nn.ReLU())


def _double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(_conv_norm_relu(in_ch, out_ch), _conv_norm_relu(out_ch, out_ch))


def _pad_even(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad every odd spatial side by one voxel at its end (SITReg's "ceil" shape logic)."""
    pads: list[int] = []
    for n in reversed(x.shape[2:]):
        pads += [0, n % 2]
    return F.pad(x, pads) if any(pads) else x


class _DownBlock(nn.Module):
    """``main = conv2³/2(x) + conv1³(avgpool2(skip))``; returns ``(double_conv(main), main)``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.down = nn.Conv3d(in_ch, out_ch, 2, stride=2)
        self.project = nn.Conv3d(in_ch, out_ch, 1)
        self.convs = _double_conv(out_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main = self.down(x) + self.project(F.avg_pool3d(skip, 2))
        return self.convs(main), main


class SITRegEncoder(nn.Module):
    """SITReg feature extractor ``[B, 1, X, Y, Z]`` → ``[B, C_k, ceil(X/2^k), …]`` per level, fine first."""

    def __init__(self, channels: Sequence[int] = SITREG_CHANNELS) -> None:
        super().__init__()
        self.stem = nn.Conv3d(1, channels[0], 1)
        self.stem_convs = _double_conv(channels[0], channels[0])
        self.blocks = nn.ModuleList(_DownBlock(channels[k - 1], channels[k]) for k in range(1, len(channels)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skip = self.stem(x)
        out = self.stem_convs(skip)
        feats = [out]
        for block in self.blocks:
            out, skip = block(_pad_even(out), _pad_even(skip))
            feats.append(out)
        return feats


class SITRegUpdate(nn.Module):
    """Update net of one level: ``[B, 2C, …]`` → 2 × [conv3³ → GN → ReLU] (``T``) → conv1³ → ``[B, 3, …]``."""

    def __init__(self, in_ch: int, features: int) -> None:
        super().__init__()
        self.convs = _double_conv(in_ch, features)
        self.head = nn.Conv3d(features, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x))


class SITReg(SymmetricPyramid):
    """SITReg (LUMIR "very deep heavy"; see the module docstring).

    Args:
        img_size: ``(X, Y, Z)``, recorded (any size is accepted; odd sides are padded inside the encoder).
        channels: feature-extractor channels per level, full resolution first.
        update_features: update-network features per level, full resolution first.
        forward_solver, backward_solver, checkpoint_levels: see :class:`methods.dp_ic.SymmetricPyramid`.

    ``forward(moving, fixed)`` (``[B, 1, X, Y, Z]``) → ``RegistrationOutput(disp, inverse)``.
    """

    def __init__(
        self,
        img_size: Sequence[int] = DEFAULT_IMG_SIZE,
        channels: Sequence[int] = SITREG_CHANNELS,
        update_features: Sequence[int] = SITREG_UPDATE_FEATURES,
        forward_solver: dict[str, Any] | None = None,
        backward_solver: dict[str, Any] | None = None,
        checkpoint_levels: bool = False,
    ) -> None:
        super().__init__(forward_solver, backward_solver, checkpoint_levels)
        size = tuple(int(n) for n in img_size)
        channels = tuple(int(c) for c in channels)
        update_features = tuple(int(t) for t in update_features)
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"img_size must be 3 positive sides, got {tuple(img_size)}")
        if len(channels) != len(update_features):
            raise ValueError(f"channels {channels} and update_features {update_features} differ in length")
        self.img_size = size
        self.encoder = SITRegEncoder(channels)
        self.update_nets = nn.ModuleList(
            SITRegUpdate(2 * c, t) for c, t in zip(channels, update_features, strict=True)
        )
        self.factors = tuple(2**k for k in range(len(channels)))
        self.config: dict[str, Any] = {
            "img_size": list(size),
            "channels": list(channels),
            "update_features": list(update_features),
            **self.solver_config(),
        }

    def features(self, image_1: torch.Tensor, image_2: torch.Tensor) -> list[torch.Tensor]:
        if image_1.shape[1] != 1:
            raise ValueError(f"need [B, 1, X, Y, Z] images; got {tuple(image_1.shape)}")
        return self.encoder(torch.cat([image_1, image_2]))

    def update_inputs(
        self, level: int, a: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SITReg's anti-symmetric input: ``cat[a − b, a + b]`` and ``cat[b − a, a + b]``."""
        total = a + b
        return torch.cat([a - b, total], dim=1), torch.cat([b - a, total], dim=1)


@register("sitreg")
def build_sitreg(**overrides: Any) -> SITReg:
    """SITReg, LUMIR very-deep-heavy configuration: 15,076,110 parameters."""
    return SITReg(**overrides)
