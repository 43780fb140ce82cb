"""VoxelMorph, the "VxmDense_2" flavour used as the 0.30M baseline of Liu, Ruan & Sheng (MIDL 2025).

Balakrishnan et al., "VoxelMorph: a learning framework for deformable medical image registration",
IEEE TMI 38(8), 2019; layout as in the LUMIR_L2R / TransMorph baseline ``VxmDense_2`` (the paper's
VoxelMorph, ``spec/methods-baselines.md`` §2), re-implemented here:

- input ``concat(moving, fixed)`` (2 channels, full resolution);
- encoder: one 3³ conv with stride 2 per level (2 → ``enc[0]`` → … ), each followed by LeakyReLU(0.2);
  level ``k`` lives at ``1 / 2^(k+1)``; no normalisation anywhere;
- decoder: for each of the ``len(enc)`` levels, coarse → fine: 3³ conv → LeakyReLU → nearest ×2
  upsampling → concat of the encoder output one level finer (finally the raw 2-channel input);
- full-resolution "extra" convs ``dec[len(enc):]``; flow head 3³ conv → 3 with weights ~ N(0, 1e-5) and
  zero bias;
- no integration: the head output *is* the voxel displacement (project convention, see
  ``ARCHITECTURE.md``; upstream warps with ``grid_sample(align_corners=True)`` after normalising by
  ``size - 1``, which is exactly :func:`methods.spatial.warp`).

Registered names (Table 1 and the Fig. B2 scaling study; counts are trainable parameters):

================  ===================  ==================================  ===========
name              encoder              decoder                             parameters
================  ===================  ==================================  ===========
``voxelmorph``    16, 32, 32, 32       32, 32, 32, 32, 32, 16, 16              301,411
``voxelmorph-s``  16, 32, 64, 96       128, 128, 96, 64, 32, 32, 32          1,955,091
``voxelmorph-m``  16, 32, 64, 128      256, 256, 128, 64, 32, 32, 32         4,747,859
``voxelmorph-l``  32, 64, 128, 256     320, 320, 256, 128, 64, 64, 64       11,347,747
================  ===================  ==================================  ===========

"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import ModelConfig, check_pair
from methods.blocks import cpu_channels_last, flow_head
from methods.registry import DEFAULT_IMG_SIZE, RegistrationOutput, register

__all__ = ["VARIANTS", "VoxelMorph", "VoxelMorphConfig"]


@dataclasses.dataclass(frozen=True)
class VoxelMorphConfig(ModelConfig):
    """VoxelMorph (VxmDense_2) configuration.

    Attributes:
        img_size: ``(X, Y, Z)`` input size; every side divisible by ``2 ** len(enc_features)``.
        enc_features: channels of the stride-2 encoder convs, fine → coarse.
        dec_features: ``len(enc_features)`` decoder convs (coarse → fine), then the full-resolution extras.
    """

    img_size: tuple[int, int, int] = DEFAULT_IMG_SIZE
    enc_features: tuple[int, ...] = (16, 32, 32, 32)
    dec_features: tuple[int, ...] = (32, 32, 32, 32, 32, 16, 16)

    def __post_init__(self) -> None:
        super().__post_init__()
        levels = len(self.enc_features)
        if len(self.img_size) != 3:
            raise ValueError(f"img_size must have 3 sides, got {self.img_size}")
        if levels == 0 or len(self.dec_features) <= levels:
            raise ValueError(
                f"need at least one encoder level and more decoder than encoder features, got "
                f"enc {self.enc_features}, dec {self.dec_features}"
            )
        if any(s % 2**levels for s in self.img_size):
            raise ValueError(
                f"VoxelMorph with {levels} levels needs sides divisible by {2**levels}, got img_size {self.img_size}"
            )


def _conv(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1)


class VoxelMorph(nn.Module):
    """VxmDense_2: ``forward(moving, fixed)`` → :class:`RegistrationOutput` with a voxel displacement.

    Inputs ``[B, 1, X, Y, Z]`` each (normally ``cfg.img_size``; any sides divisible by ``2^len(enc)``);
    output ``disp`` ``[B, 3, X, Y, Z]``, voxel units on the fixed grid, ``warped(x) = moving(x + disp(x))``.
    """

    def __init__(self, cfg: VoxelMorphConfig) -> None:
        super().__init__()
        self.cfg = cfg
        enc, dec = cfg.enc_features, cfg.dec_features
        levels = len(enc)
        self.encoder = nn.ModuleList(
            _conv(c_in, c_out, stride=2) for c_in, c_out in zip((2, *enc[:-1]), enc, strict=True)
        )
        # Decoder conv k sees the previous output plus, for k > 0, the encoder skip concatenated after upsampling.
        prev, skips = (enc[-1], *dec[: levels - 1]), (0, *reversed(enc[:-1]))
        self.decoder = nn.ModuleList(_conv(p + s, c) for p, s, c in zip(prev, skips, dec[:levels], strict=True))
        extras_in = (dec[levels - 1] + 2, *dec[levels:-1])
        self.extras = nn.ModuleList(_conv(c_in, c_out) for c_in, c_out in zip(extras_in, dec[levels:], strict=True))
        self.flow = flow_head(dec[-1])

    @property
    def config(self) -> dict[str, Any]:
        """Constructor keywords (JSON / YAML types): ``methods.build(name, **model.config)`` rebuilds it."""
        return self.cfg.to_dict()

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationOutput:
        """``moving``, ``fixed``: ``[B, 1, X, Y, Z]`` → ``disp`` ``[B, 3, X, Y, Z]`` (voxels)."""
        check_pair(moving, fixed, 2 ** len(self.cfg.enc_features))
        # CPU: channels-last throughout (oneDNN's fast conv layout); the LeakyReLUs act in place on the conv
        # outputs (a conv's backward needs its input, not its output), so each layer keeps one activation alive
        x = cpu_channels_last(torch.cat([moving, fixed], dim=1))
        history = [x]
        for conv in self.encoder:
            history.append(F.leaky_relu_(conv(history[-1]), 0.2))
        x = history.pop()
        for conv in self.decoder:
            x = F.interpolate(F.leaky_relu_(conv(x), 0.2), scale_factor=2, mode="nearest")
            x = torch.cat([x, cpu_channels_last(history.pop())], dim=1)
        for conv in self.extras:
            x = F.leaky_relu_(conv(x), 0.2)
        return RegistrationOutput(disp=self.flow(x).contiguous())


#: name → (encoder features, decoder features) of the registered variants.
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "voxelmorph": ((16, 32, 32, 32), (32, 32, 32, 32, 32, 16, 16)),
    "voxelmorph-s": ((16, 32, 64, 96), (128, 128, 96, 64, 32, 32, 32)),
    "voxelmorph-m": ((16, 32, 64, 128), (256, 256, 128, 64, 32, 32, 32)),
    "voxelmorph-l": ((32, 64, 128, 256), (320, 320, 256, 128, 64, 64, 64)),
}


def _register_variant(name: str, enc: tuple[int, ...], dec: tuple[int, ...]) -> None:
    @register(name)
    def build(**overrides: Any) -> VoxelMorph:
        return VoxelMorph(VoxelMorphConfig(**{"enc_features": enc, "dec_features": dec, **overrides}))

    build.__doc__ = f"Build ``{name}`` (enc {enc}, dec {dec}); overrides: :class:`VoxelMorphConfig` fields."


for _name, (_enc, _dec) in VARIANTS.items():
    _register_variant(_name, _enc, _dec)
