"""Dual-stream pyramid (DP) networks, variants (a) DP-Conv and (c) DP-VFA.

Liu, Ruan & Sheng, "Unsupervised Deformable Image Registration Revisited" (MIDL 2025), App. A, Fig. A1.

Backbone: one residual encoder (:class:`methods.blocks.DPEncoder`, 507,504 parameters) runs on the moving
and on the fixed image with shared weights (one pass on the pair stacked along the batch; InstanceNorm is
per sample, so this equals two separate passes), giving 5 feature levels (level 0 full resolution, level k at
1/2^k, channels 16, 32, 32, 64, 64). A coarse-to-fine decoder with its own weights per level then builds
the displacement (``spec/methods-dp.md`` §1):

- level 4 (coarsest): ``u_4 = D_4(m_4, f_4)`` on the unwarped features;
- level k = 3 … 0: ``u_up = resize_flow(u_{k+1}, 2)`` (values ×2, then trilinear, align_corners=True);
  ``m̃ = warp(m_k, u_up)`` (bilinear, border); ``u_res = D_k(m̃, f_k)``;
  ``u_k = compose(u_up, u_res) = u_res + warp(u_up, u_res)`` — a composition, not a sum.

The output is ``u_0``, a ``[B, 3, X, Y, Z]`` voxel displacement on the fixed grid (``warped(x) =
moving(x + u(x))``). No per-level loss is used in training.

Decoders ``D_k``:

- (a) DP-Conv, :class:`ConvDecoderLevel`: residual block (``methods.blocks.ResidualBlock``, stride 1) to
  width ``w_k`` (:data:`DECODER_WIDTHS`), then a 3³ flow head (weights N(0, std 1e-5), bias 0). Its
  input is ``cat[m̃, f]`` (MF), ``cat[m̃, corr(f, m̃), f]`` (MFC) or ``corr(f, m̃)`` (C), with the
  radius-1, 27-channel cost volume of :func:`methods.correlation.correlation`. The hidden convs keep
  PyTorch's default init: the paper's code never applies its decoder init (a config-key bug), so this
  reproduces what was trained.
- (c) DP-VFA, :class:`methods.vfa_attention.ProjectedAttention`: a 3³ projection C→C shared by both
  streams, then vector field attention over the 27 neighbours with τ = sqrt(C); no learnt head, each
  level moves at most 1 voxel (of that level) per axis.

Registered names and trainable parameter counts (Table 1): ``dp-conv-mf`` 2,854,079, ``dp-conv-mfc``
3,168,575, ``dp-conv-c`` 1,993,023, ``dp-vfa`` 791,104. The scaling family of Fig. B2 is not defined in
the paper's code; **our choice** is to multiply the decoder widths by 0.5 / 1 / 2 and keep the encoder:
``dp-conv-mf-small`` (widths 16, 32, 32, 64, 64), ``dp-conv-mf-medium`` (= ``dp-conv-mf``),
``dp-conv-mf-large`` (64, 128, 128, 256, 256).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from methods.base import check_img_size, check_pair
from methods.blocks import ENCODER_CHANNELS, DPEncoder, ResidualBlock, cpu_channels_last, flow_head
from methods.correlation import correlation
from methods.registry import DEFAULT_IMG_SIZE, RegistrationOutput, register
from methods.spatial import compose, resize_flow, warp
from methods.vfa_attention import ProjectedAttention

__all__ = [
    "CONV_INPUTS",
    "DECODER_WIDTHS",
    "SCALING_MULTIPLIERS",
    "ConvDecoderLevel",
    "DPNet",
    "LevelOutput",
    "at_least_float32",
    "conv_decoder_input",
    "conv_input_channels",
]

#: DP-Conv decoder widths at levels 0 (full resolution) … 4 (1/16).
DECODER_WIDTHS: tuple[int, ...] = (32, 64, 64, 128, 128)

#: Decoder inputs of variant (a): moving+fixed, moving+correlation+fixed, correlation only.
CONV_INPUTS: tuple[str, ...] = ("mf", "mfc", "c")

#: Our decoder-width multipliers for the DP-Conv-MF scaling family (not defined by the paper's code).
SCALING_MULTIPLIERS: dict[str, float] = {"small": 0.5, "medium": 1.0, "large": 2.0}

_CORR_CHANNELS = 27


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is in a narrower float type (autocast output), else unchanged.

    Displacement fields are kept in float32 or wider: ``warp`` adds them to absolute voxel coordinates,
    which bf16 cannot resolve to better than a voxel at 160 … 224 voxels.
    """
    return t.to(torch.promote_types(t.dtype, torch.float32))


def conv_input_channels(inputs: str, channels: int) -> int:
    """Input channels of a variant-(a) decoder level: ``inputs`` in :data:`CONV_INPUTS`, ``channels`` = C."""
    if inputs not in CONV_INPUTS:
        raise ValueError(f"unknown decoder input {inputs!r}; expected one of {CONV_INPUTS}")
    return {"mf": 2 * channels, "mfc": 2 * channels + _CORR_CHANNELS, "c": _CORR_CHANNELS}[inputs]


def conv_decoder_input(inputs: str, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """Decoder input of variant (a) from warped moving and fixed features ``[B, C, X, Y, Z]``.

    MF → ``cat[m̃, f]`` (2C channels); MFC → ``cat[m̃, corr(f, m̃), f]`` (2C + 27; the cost volume sits in
    the middle, as in the paper's code); C → ``corr(f, m̃)`` (27). The fixed features stay put and the
    moving ones are shifted in the cost volume.
    """
    moving = cpu_channels_last(moving)  # the sampled features come back contiguous; the convs run channels-last
    if inputs == "mf":
        return torch.cat([moving, fixed], dim=1)
    corr = correlation(fixed, moving)
    if inputs == "mfc":
        return torch.cat([moving, corr, fixed], dim=1)
    if inputs == "c":
        return corr
    raise ValueError(f"unknown decoder input {inputs!r}; expected one of {CONV_INPUTS}")


class ConvDecoderLevel(nn.Module):
    """One DP-Conv decoder level: residual block ``in_ch → width`` and a flow head ``width → 3``.

    ``[B, in_ch, X, Y, Z]`` → ``[B, 3, X, Y, Z]`` (voxels of that level). The block's convs keep PyTorch's
    default init (the paper's decoder-init quirk, ``spec/methods-dp.md`` §2a); the head is N(0, std 1e-5)
    with zero bias, so the initial output is ≈ 0.
    """

    def __init__(self, in_ch: int, width: int) -> None:
        super().__init__()
        self.block = ResidualBlock(in_ch, width)
        self.head = flow_head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


class LevelOutput(NamedTuple):
    """Per-level decoder result (voxels of that level, ``[B, 3, X/2^k, Y/2^k, Z/2^k]``)."""

    level: int
    residual: torch.Tensor
    total: torch.Tensor


class DPNet(nn.Module):
    """Dual-stream pyramid registration network with decoder (a) DP-Conv or (c) DP-VFA.

    Args:
        img_size: ``(X, Y, Z)``; every side divisible by 16 (5 levels), else ``ValueError``.
        decoder: ``"conv"`` (a) or ``"vfa"`` (c).
        inputs: for ``"conv"``, one of :data:`CONV_INPUTS` (default ``"mf"``); must be ``None`` for ``"vfa"``.
        widths: DP-Conv decoder widths at levels 0 … 4, full resolution first (default
            :data:`DECODER_WIDTHS`); must be ``None`` for ``"vfa"``.
        checkpoint_levels: recompute each decoder level in the backward pass instead of storing its
            activations (activation checkpointing; same result, less GPU memory, more time).

    ``forward(moving, fixed)``: ``[B, 1, X, Y, Z]`` ×2 → :class:`RegistrationOutput` with ``disp``
    ``[B, 3, X, Y, Z]`` in voxels. The network is fully convolutional: ``img_size`` is validated and
    recorded, and any input whose sides are divisible by 16 is accepted. ``model.config`` holds the
    constructor arguments (``methods.build(name, **model.config)`` rebuilds the model).
    """

    def __init__(
        self,
        img_size: Sequence[int] = DEFAULT_IMG_SIZE,
        decoder: str = "conv",
        inputs: str | None = None,
        widths: Sequence[int] | None = None,
        checkpoint_levels: bool = False,
    ) -> None:
        super().__init__()
        self.img_size = check_img_size(img_size)
        self.encoder = DPEncoder(ENCODER_CHANNELS)
        self.decoder = decoder
        self.inputs = inputs
        self.checkpoint_levels = bool(checkpoint_levels)
        self.config: dict[str, Any] = {"img_size": list(self.img_size), "decoder": decoder}
        if decoder == "conv":
            inputs = self.inputs = "mf" if inputs is None else inputs
            widths = tuple(int(w) for w in (DECODER_WIDTHS if widths is None else widths))
            if len(widths) != len(ENCODER_CHANNELS) or min(widths) < 1:
                raise ValueError(f"widths needs 5 positive entries (levels 0..4), got {widths}")
            in_chs = [conv_input_channels(inputs, c) for c in ENCODER_CHANNELS]
            self.levels = nn.ModuleList(ConvDecoderLevel(i, w) for i, w in zip(in_chs, widths, strict=True))
            self.config.update(inputs=inputs, widths=list(widths))
        elif decoder == "vfa":
            if inputs is not None or widths is not None:
                raise ValueError("decoder='vfa' takes no 'inputs' or 'widths' (its width is the encoder's)")
            self.levels = nn.ModuleList(ProjectedAttention(c, c) for c in ENCODER_CHANNELS)
        else:
            raise ValueError(f"unknown decoder {decoder!r}; expected 'conv' or 'vfa'")
        self.config["checkpoint_levels"] = self.checkpoint_levels

    def _residual(self, k: int, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """Residual field of level ``k`` from (warped) moving and fixed features; float32 under autocast."""
        if self.decoder == "vfa":
            return at_least_float32(self.levels[k](moving, fixed))
        return at_least_float32(self.levels[k](conv_decoder_input(self.inputs, moving, fixed)))

    def _refine(
        self, k: int, u_prev: torch.Tensor, moving: torch.Tensor, fixed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One finer level: upsample, warp the moving features, residual, compose → (residual, total)."""
        u_up = resize_flow(u_prev, 2.0)
        u_res = self._residual(k, warp(moving, u_up), fixed)
        return u_res, compose(u_up, u_res)

    def forward_levels(self, moving: torch.Tensor, fixed: torch.Tensor) -> list[LevelOutput]:
        """Run the network and return every level, coarse (k = 4) to fine (k = 0).

        Inputs ``[B, 1, X, Y, Z]``. Each :class:`LevelOutput` holds its level ``k``, the residual field
        ``D_k(…)`` and the accumulated field ``u_k``, both ``[B, 3, X/2^k, Y/2^k, Z/2^k]`` in voxels of
        level ``k``; the last entry's ``total`` is the model's output.
        """
        check_pair(moving, fixed, 16, 16)
        # one encoder pass on the pair stacked along the batch (InstanceNorm is per sample: same result)
        feats_m, feats_f = zip(*(f.chunk(2) for f in self.encoder(torch.cat([moving, fixed]))), strict=True)
        top = len(self.levels) - 1
        u_res = self._residual(top, feats_m[top], feats_f[top])
        out = [LevelOutput(top, u_res, u_res)]
        for k in range(top - 1, -1, -1):
            args = (k, out[-1].total, feats_m[k], feats_f[k])
            if self.checkpoint_levels and torch.is_grad_enabled():
                u_res, u_tot = checkpoint(self._refine, *args, use_reentrant=False)
            else:
                u_res, u_tot = self._refine(*args)
            out.append(LevelOutput(k, u_res, u_tot))
        return out

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationOutput:
        return RegistrationOutput(disp=self.forward_levels(moving, fixed)[-1].total.contiguous())


@register("dp-conv-mf")
def build_dp_conv_mf(**overrides: Any) -> DPNet:
    """(a) DP-Conv-MF: decoder input ``cat[m̃, f]``; 2,854,079 parameters."""
    return DPNet(**{"decoder": "conv", "inputs": "mf", **overrides})


@register("dp-conv-mfc")
def build_dp_conv_mfc(**overrides: Any) -> DPNet:
    """(a) DP-Conv-MFC: decoder input ``cat[m̃, corr, f]``; 3,168,575 parameters."""
    return DPNet(**{"decoder": "conv", "inputs": "mfc", **overrides})


@register("dp-conv-c")
def build_dp_conv_c(**overrides: Any) -> DPNet:
    """(a) DP-Conv-C: decoder input ``corr(f, m̃)`` only; 1,993,023 parameters."""
    return DPNet(**{"decoder": "conv", "inputs": "c", **overrides})


@register("dp-vfa")
def build_dp_vfa(**overrides: Any) -> DPNet:
    """(c) DP-VFA: shared projection + vector field attention per level; 791,104 parameters."""
    return DPNet(**{"decoder": "vfa", **overrides})


def _scaled_widths(multiplier: float) -> list[int]:
    return [round(w * multiplier) for w in DECODER_WIDTHS]


@register("dp-conv-mf-small")
def build_dp_conv_mf_small(**overrides: Any) -> DPNet:
    """DP-Conv-MF with decoder widths ×0.5 (our choice for Fig. B2 'small'): 16, 32, 32, 64, 64."""
    return build_dp_conv_mf(**{"widths": _scaled_widths(SCALING_MULTIPLIERS["small"]), **overrides})


@register("dp-conv-mf-medium")
def build_dp_conv_mf_medium(**overrides: Any) -> DPNet:
    """DP-Conv-MF with decoder widths ×1 (Fig. B2 'medium'): identical to ``dp-conv-mf``."""
    return build_dp_conv_mf(**{"widths": _scaled_widths(SCALING_MULTIPLIERS["medium"]), **overrides})


@register("dp-conv-mf-large")
def build_dp_conv_mf_large(**overrides: Any) -> DPNet:
    """DP-Conv-MF with decoder widths ×2 (our choice for Fig. B2 'large'): 64, 128, 128, 256, 256."""
    return build_dp_conv_mf(**{"widths": _scaled_widths(SCALING_MULTIPLIERS["large"]), **overrides})
