"""VFA: vector field attention registration network (baseline).

Liu, Chen, Zuo, Carass & Prince, "Vector field attention for deformable image registration",
J. Med. Imaging 11:064001 (2024). Written from the description in ``spec/methods-baselines.md`` §4 (the
upstream code is GPL-3.0 and was not consulted); default configuration (start 8, matching 8, max 64
channels, 4 downsamplings, no integration): 2,014,827 trainable parameters, Table 1 of Liu, Ruan &
Sheng (MIDL 2025).

- Feature U-Net :class:`VFAEncoder`, shared by both images: InstanceNorm(affine) on the input, 3³ conv
  1→8 + LeakyReLU(0.01); double convs ``[3³ conv → IN(affine) → LeakyReLU(0.01)] × 2`` with 2³ average
  pooling on the way down; on the way up trilinear ×2 (align_corners=True) → 3³ conv → IN → LeakyReLU,
  concatenation with the skip, double conv. Pyramid ``F_0 … F_4``: 16, 32, 64, 64, 64 channels at 1 …
  1/16 resolution.
- Decoder, coarse to fine: per level a 3³ projection shared by both streams (16→8, 32→16, 64→32,
  64→64, 64→64) and vector field attention over the 27 neighbours (temperature ``sqrt(matching
  channels)``, values = the offsets), :class:`methods.vfa_attention.ProjectedAttention`. The attended
  offset ``d`` is scaled by one learnable scalar β (init 0.1) shared by all levels, so a level moves
  at most ``|β|`` voxels per axis.
- Composition through sampling grids in absolute voxel coordinates: at the coarsest level
  ``G = id + β d``; at each finer level the previous grid is upsampled ×2 (trilinear,
  align_corners=True, coordinates rescaled by ``(n_out − 1) / (n_in − 1)`` per axis), the moving
  features are sampled through it, and the new grid is the upsampled one sampled at ``id + β d``
  (bilinear, border padding, align_corners=True). No scaling-and-squaring (int_steps 0).

Output: ``disp = G − id``, ``[B, 3, X, Y, Z]`` voxels on the fixed grid, ``warped(x) = moving(x + u(x))``.

Implementation choices that do not change the function: the encoder runs once on the pair stacked along
the batch (InstanceNorm is per sample); the LeakyReLUs act in place (InstanceNorm's backward needs its
input, not its output; about 15 % less training memory); on CPU the encoder runs in oneDNN's channels-last
layout with :func:`methods.instance_norm.instance_norm_act` (conv → IN → LeakyReLU, :class:`_ConvNormActStack`),
about twice as fast as the contiguous layout for these thin 3-D convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import check_img_size, check_pair
from methods.blocks import cpu_channels_last
from methods.dp import LevelOutput, at_least_float32
from methods.instance_norm import instance_norm_act
from methods.registry import DEFAULT_IMG_SIZE, RegistrationOutput, register
from methods.spatial import identity_grid, warp
from methods.vfa_attention import ProjectedAttention

__all__ = ["VFA", "VFAEncoder", "upsample_grid"]

_SLOPE = 0.01


class _ConvNormActStack(nn.Sequential):
    """``[conv, InstanceNorm, LeakyReLU] × n`` as an ``nn.Sequential`` (same parameters and state-dict keys), run
    channels-last on CPU with the norm and activation fused (:func:`methods.instance_norm.instance_norm_act`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        for conv, norm, act in zip(layers[0::3], layers[1::3], layers[2::3], strict=True):
            x = instance_norm_act(conv(cpu_channels_last(x)), norm.weight, norm.bias, norm.eps, act.negative_slope)
        return x


def _conv_norm_act(in_ch: int, out_ch: int) -> list[nn.Module]:
    conv = nn.Conv3d(in_ch, out_ch, 3, padding=1)
    return [conv, nn.InstanceNorm3d(out_ch, affine=True), nn.LeakyReLU(_SLOPE, inplace=True)]


def _double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return _ConvNormActStack(*_conv_norm_act(in_ch, out_ch), *_conv_norm_act(out_ch, out_ch))


class VFAEncoder(nn.Module):
    """VFA's single-image feature U-Net.

    Input ``[B, 1, X, Y, Z]`` (sides divisible by ``2**downsamples``); output a list of
    ``downsamples + 1`` maps, fine → coarse, ``[B, c_k, X / 2^k, Y / 2^k, Z / 2^k]`` with
    ``c_k = min(start_channels · 2^(k+1), max_channels)``. PyTorch default init.
    """

    def __init__(self, start_channels: int = 8, max_channels: int = 64, downsamples: int = 4) -> None:
        super().__init__()
        chans = [min(start_channels * 2 ** (k + 1), max_channels) for k in range(downsamples + 1)]
        self.channels = tuple(chans)
        self.stem = nn.Sequential(
            nn.InstanceNorm3d(1, affine=True),
            nn.Conv3d(1, start_channels, 3, padding=1),
            nn.LeakyReLU(_SLOPE, inplace=True),
        )
        ins = [start_channels, *chans[:-1]]
        self.down = nn.ModuleList(_double_conv(c_in, c) for c_in, c in zip(ins, chans, strict=True))
        # up[k] / merge[k] produce level k from level k + 1 (k = 0 … downsamples − 1).
        ups = [_conv_norm_act(chans[k + 1], chans[k]) for k in range(downsamples)]
        self.up = nn.ModuleList(_ConvNormActStack(*u) for u in ups)
        self.merge = nn.ModuleList(_double_conv(2 * chans[k], chans[k]) for k in range(downsamples))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        x = cpu_channels_last(self.stem(x))
        for k, block in enumerate(self.down):
            x = block(F.avg_pool3d(x, 2) if k else x)
            skips.append(x)
        feats = [x]
        for k in range(len(self.up) - 1, -1, -1):
            x = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True)
            x = self.merge[k](torch.cat([self.up[k](x), skips[k]], dim=1))
            feats.append(x)
        return feats[::-1]


def upsample_grid(grid: torch.Tensor) -> torch.Tensor:
    """Upsample an absolute voxel-coordinate grid ×2: ``[B, 3, X, Y, Z]`` → ``[B, 3, 2X, 2Y, 2Z]``.

    Trilinear with align_corners=True, then coordinate ``c`` is rescaled by ``(2 n_c − 1) / (n_c − 1)`` so
    that the identity maps to the identity of the finer grid.
    """
    size = grid.shape[2:]
    scale = torch.tensor([(2 * n - 1) / max(n - 1, 1) for n in size], dtype=grid.dtype, device=grid.device)
    up = F.interpolate(grid, scale_factor=2, mode="trilinear", align_corners=True)
    return up * scale.view(1, -1, 1, 1, 1)


class VFA(nn.Module):
    """Vector field attention network (Liu et al., J. Med. Imaging 2024).

    Args:
        img_size: ``(X, Y, Z)``; every side divisible by ``2**downsamples`` and at least twice that (the
            grid upsampling rescales coordinates by ``(2n − 1) / (n − 1)``, undefined for a 1-voxel
            side), else ``ValueError``. The network is fully convolutional: any input with such sides is
            accepted.
        start_channels, matching_channels, max_channels, downsamples: VFA's width / depth settings
            (defaults = the paper's ``vfa_ncc.json``); matching channels at level k are
            ``min(matching_channels · 2^k, max_channels)``.

    ``forward(moving, fixed)``: ``[B, 1, X, Y, Z]`` ×2 → :class:`RegistrationOutput` with ``disp``
    ``[B, 3, X, Y, Z]`` in voxels. ``model.config`` holds the constructor arguments.
    """

    def __init__(
        self,
        img_size: Sequence[int] = DEFAULT_IMG_SIZE,
        start_channels: int = 8,
        matching_channels: int = 8,
        max_channels: int = 64,
        downsamples: int = 4,
    ) -> None:
        super().__init__()
        self.img_size = check_img_size(img_size, 2**downsamples, 2 ** (downsamples + 1))
        self.encoder = VFAEncoder(start_channels, max_channels, downsamples)
        match = [min(matching_channels * 2**k, max_channels) for k in range(downsamples + 1)]
        pairs = zip(self.encoder.channels, match, strict=True)
        self.levels = nn.ModuleList(ProjectedAttention(c, m) for c, m in pairs)
        self.beta = nn.Parameter(torch.tensor(0.1))
        self.config: dict[str, Any] = {
            "img_size": list(self.img_size),
            "start_channels": start_channels,
            "matching_channels": matching_channels,
            "max_channels": max_channels,
            "downsamples": downsamples,
        }

    def forward_levels(self, moving: torch.Tensor, fixed: torch.Tensor) -> list[LevelOutput]:
        """Every level, coarse (k = downsamples) to fine (k = 0).

        Inputs ``[B, 1, X, Y, Z]``. Each :class:`methods.dp.LevelOutput` holds its level ``k``, the update
        ``β d`` and the accumulated displacement ``G − id``, both ``[B, 3, X/2^k, Y/2^k, Z/2^k]`` in voxels
        of level ``k``; the last entry's ``total`` is the model's output.
        """
        divisor = 2 ** (len(self.levels) - 1)
        check_pair(moving, fixed, divisor, 2 * divisor)
        # one encoder pass on the pair stacked along the batch (InstanceNorm is per sample: same result)
        feats_m, feats_f = zip(*(f.chunk(2) for f in self.encoder(torch.cat([moving, fixed]))), strict=True)
        out: list[LevelOutput] = []
        grid: torch.Tensor | None = None
        for k in range(len(self.levels) - 1, -1, -1):
            ident = identity_grid(feats_f[k].shape[2:], fixed.device, self.beta.dtype)
            if grid is None:
                step = self.beta * at_least_float32(self.levels[k](feats_m[k], feats_f[k]))
                grid = ident + step
            else:
                grid = upsample_grid(grid)
                d = self.levels[k](warp(feats_m[k], grid - ident), feats_f[k])
                step = self.beta * at_least_float32(d)
                grid = warp(grid, step)
            out.append(LevelOutput(k, step, grid - ident))
        return out

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationOutput:
        return RegistrationOutput(disp=self.forward_levels(moving, fixed)[-1].total.contiguous())


@register("vfa")
def build_vfa(**overrides: Any) -> VFA:
    """VFA with the paper's default configuration (2,014,827 parameters)."""
    return VFA(**overrides)
