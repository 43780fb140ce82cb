"""Building blocks of the dual-stream pyramid (DP) networks (Liu, Ruan & Sheng, MIDL 2025, App. A).

- :class:`ResidualBlock`: 3³ conv → InstanceNorm(affine) → LeakyReLU(0.2) → 3³ conv → InstanceNorm, plus an
  always-present 1³ conv + InstanceNorm skip; sum, then LeakyReLU(0.2). Used by the encoder (with stride 2
  to downsample) and by the (a)/(b) deformation decoders (stride 1).
- :class:`DPEncoder`: the shared ("Siamese") residual U-Net encoder, 5 levels of ``[16, 32, 32, 64, 64]``
  channels, level 0 at full resolution, each further level ×½ (507,504 parameters).
- :func:`flow_head`: 3³ conv to 3 channels, weights ~ N(0, std 1e-5), bias 0 (the code uses std where the
  paper says variance).

On CPU the blocks run in oneDNN's channels-last layout (:func:`cpu_channels_last`; about twice as fast as the
contiguous layout for these thin 3-D convolutions, forward and backward) with the instance norms and
activations of :func:`methods.instance_norm.instance_norm_act`, which keep that layout; the function computed is
unchanged (``tests/test_blocks.py`` checks it against a literal contiguous formulation).
"""

from __future__ import annotations

import torch
from torch import nn

from methods.instance_norm import instance_norm_act

__all__ = ["ENCODER_CHANNELS", "DPEncoder", "ResidualBlock", "cpu_channels_last", "flow_head", "norm_act"]

#: Encoder channels at levels 0 (full resolution) … 4 (1/16).
ENCODER_CHANNELS: tuple[int, ...] = (16, 32, 32, 64, 64)


_SLOPE = 0.2


def cpu_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in ``channels_last_3d`` layout if it is a 5-D CPU tensor (oneDNN's fast conv layout), else unchanged.

    Layout only: the values, shape and autograd meaning are those of ``x``.
    """
    if x.device.type == "cpu" and x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def norm_act(norm: nn.InstanceNorm3d, x: torch.Tensor, slope: float | None = None) -> torch.Tensor:
    """``norm(x)`` followed by ``LeakyReLU(slope)`` (none if ``slope`` is ``None``), layout-preserving on CPU."""
    return instance_norm_act(x, norm.weight, norm.bias, norm.eps, slope)


class ResidualBlock(nn.Module):
    """Residual conv block ``[B, C_in, X, Y, Z]`` → ``[B, C_out, X/s, Y/s, Z/s]`` (``s`` = stride).

    ``LReLU(IN2(conv2(LReLU(IN1(conv1(x))))) + IN_s(skip(x)))`` with LeakyReLU slope 0.2. On CPU it runs
    channels-last and returns a channels-last tensor.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1)
        self.norm1 = nn.InstanceNorm3d(out_ch, affine=True)
        self.conv2 = nn.Conv3d(out_ch, out_ch, 3, padding=1)
        self.norm2 = nn.InstanceNorm3d(out_ch, affine=True)
        self.skip = nn.Conv3d(in_ch, out_ch, 1, stride=stride)
        self.skip_norm = nn.InstanceNorm3d(out_ch, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = cpu_channels_last(x)
        main = norm_act(self.norm2, self.conv2(norm_act(self.norm1, self.conv1(x), _SLOPE)))
        # in place: no extra full-size activation kept for backward
        return torch.nn.functional.leaky_relu_(main.add_(norm_act(self.skip_norm, self.skip(x))), _SLOPE)


class DPEncoder(nn.Module):
    """Residual U-Net encoder shared by both images (DP backbone).

    Input ``[B, 1, X, Y, Z]`` (sides divisible by 16); output a list of 5 feature maps, fine → coarse:
    ``[B, C_k, X / 2^k, Y / 2^k, Z / 2^k]`` with ``C_k = channels[k]``. Every conv is initialised with
    ``kaiming_normal_(a=0.2)`` and zero bias, as in the paper's code.
    """

    def __init__(self, channels: tuple[int, ...] = ENCODER_CHANNELS) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.stem = nn.Conv3d(1, channels[0], 1)
        blocks = [ResidualBlock(channels[0], channels[0], stride=1)]
        blocks += [ResidualBlock(channels[k - 1], channels[k], stride=2) for k in range(1, len(channels))]
        self.blocks = nn.ModuleList(blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, a=0.2)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        x = cpu_channels_last(self.stem(cpu_channels_last(x)))
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


def flow_head(in_ch: int) -> nn.Conv3d:
    """3³ conv ``in_ch → 3`` with weights ~ N(0, 1e-5) (std) and zero bias, so the initial flow is ≈ 0."""
    head = nn.Conv3d(in_ch, 3, 3, padding=1)
    nn.init.normal_(head.weight, mean=0.0, std=1e-5)
    nn.init.zeros_(head.bias)
    return head
