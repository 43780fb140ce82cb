"""TransMorph, OASIS variant (46.56M), the Swin-Transformer baseline of Liu, Ruan & Sheng (MIDL 2025).

Chen et al., "TransMorph: Transformer for unsupervised medical image registration", Medical Image
Analysis 82, 2022, in the layout of the TransMorph repository's ``OASIS/TransMorph`` model (flow predicted
at half resolution), which the paper's OASIS configuration points to (``spec/methods-baselines.md`` §3).
The Swin encoder follows Liu et al., "Swin Transformer: hierarchical vision transformer using shifted
windows", ICCV 2021, in 3D. Re-implemented here (no ``timm``): drop path and truncated-normal init are
local / ``torch.nn.init``.

Architecture (defaults; ``E = embed_dim = 96``):

- input ``concat(moving, fixed)``, 2 channels, sides divisible by 32;
- conv skip: AvgPool3d(3, stride 2, pad 1) → [3³ conv (no bias) → InstanceNorm (non-affine) →
  LeakyReLU(0.01)] 2 → E/2 = ``f4`` at 1/2. A second such block 2 → 16 (upstream ``c2``) is built but
  never used in ``forward``; it is kept so that the parameter count matches (864 parameters, never
  trained: its gradients stay ``None``);
- Swin encoder: patch embedding (4³ conv stride 4, 2 → E, LayerNorm) and 4 stages of dims E·2^i at
  1/4 … 1/32, depths (2, 2, 4, 2), heads (4, 4, 8, 8), window (5, 6, 7); odd blocks use shifted windows
  (shift = window // 2) with the Swin attention mask; learned relative-position bias; qkv without bias;
  MLP ratio 4 with GELU; drop path linearly 0 → 0.3 over the 10 blocks; patch merging after stages 0-2
  (2×2×2 neighbours → LayerNorm(8C) → Linear 8C → 2C, no bias); one output LayerNorm per stage.
  Feature maps whose size is not a multiple of the window are zero-padded after the first LayerNorm of a
  block and cropped back (so 160×224×192, whose token grid 40×56×48 does not tile with (5, 6, 7), works
  exactly as upstream does);
- decoder ``up0 … up3``: trilinear ×2 (align_corners False) → concat skip → 2 × [conv → IN → LeakyReLU]:
  8E(+4E) → 4E, 4E(+2E) → 2E, 2E(+E) → E, E(+E/2 conv skip) → 16, ending at 1/2 resolution;
- head 3³ conv 16 → 3 with weights ~ N(0, 1e-5) and zero bias at 1/2 resolution, then trilinear ×2
  (align_corners False) to full resolution, **not** multiplied by 2: the network learns full-resolution
  voxel units directly. No integration.

Displacement convention. The output is used as is as the project's displacement (voxel units on the fixed
grid, ``warped(x) = moving(x + disp(x))``, :func:`methods.spatial.warp` with ``align_corners=True``): since
the harness trains every model with that warp, the network simply learns displacements in that
convention; no conversion is applied. (Upstream OASIS TransMorph normalises ``x + u`` by ``size - 1`` but
samples with ``align_corners=False``, i.e. it reads the moving image at ``(x + u) · S / (S - 1) - 0.5`` per
axis of size ``S``; weights trained that way would need ``u' = (x + u) · S / (S - 1) - 0.5 - x``.)

Parameter count 46,556,979 (independent of ``img_size``; the relative-position tables depend on the window
only): patch embedding 12,576; stages 382,584 / 1,492,152 / 9,500,640 / 14,193,264; decoder 15,925,248 /
3,981,312 / 995,328 / 69,120; conv skips 2,592 + 864; head 1,299.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from methods.base import ModelConfig, check_pair
from methods.blocks import cpu_channels_last, flow_head
from methods.instance_norm import instance_norm_act
from methods.registry import DEFAULT_IMG_SIZE, RegistrationOutput, register

__all__ = [
    "DropPath",
    "PatchMerging",
    "SwinBlock",
    "TransMorph",
    "TransMorphConfig",
    "WindowAttention",
    "relative_position_index",
    "shifted_window_mask",
    "window_merge",
    "window_partition",
]

Triple = tuple[int, int, int]

#: Order of the 2×2×2 neighbours concatenated by patch merging (upstream order, so the 8C layout matches).
MERGE_OFFSETS: tuple[Triple, ...] = (
    (0, 0, 0),
    (1, 0, 0),
    (0, 1, 0),
    (0, 0, 1),
    (1, 1, 0),
    (0, 1, 1),
    (1, 0, 1),
    (1, 1, 1),
)

#: Attention logit added between tokens of different regions of a shifted window (upstream value).
MASK_VALUE = -100.0


@dataclasses.dataclass(frozen=True)
class TransMorphConfig(ModelConfig):
    """TransMorph (OASIS variant) configuration; the defaults give the 46,556,979-parameter model.

    Attributes:
        img_size: ``(X, Y, Z)`` input size. The network needs sides divisible by 32 (patch 4 × three merges):
            other sizes are zero-padded on the high side up to the next multiple of 32 and the field is
            cropped back, so e.g. the 48×64×48 demo grid works.
        window_size: Swin attention window in tokens (small windows such as (2, 2, 2) suit small tests).
        embed_dim: patch-embedding dimension ``E``; stage ``i`` has ``E · 2^i`` channels.
        depths: Swin blocks per stage (4 stages).
        num_heads: attention heads per stage.
        mlp_ratio: MLP hidden width / dimension.
        drop_path_rate: stochastic-depth rate of the last block (linear from 0 over all blocks).
        reg_head_chan: channels entering the flow head.
        use_checkpoint: activation checkpointing of the Swin blocks (saves GPU memory, costs a recompute).
    """

    img_size: Triple = DEFAULT_IMG_SIZE
    window_size: Triple = (5, 6, 7)
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 4, 2)
    num_heads: tuple[int, ...] = (4, 4, 8, 8)
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.3
    reg_head_chan: int = 16
    use_checkpoint: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.img_size) != 3 or min(self.img_size) < 1:
            raise ValueError(f"TransMorph needs 3 positive sides, got img_size {self.img_size}")
        if len(self.window_size) != 3 or min(self.window_size) < 1:
            raise ValueError(f"window_size must be 3 positive ints, got {self.window_size}")
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError(f"TransMorph has 4 stages: got depths {self.depths}, heads {self.num_heads}")
        if self.embed_dim % 2 or any(self.embed_dim * 2**i % h for i, h in enumerate(self.num_heads)):
            raise ValueError(
                f"embed_dim {self.embed_dim} must be even and each stage dim divisible by its heads {self.num_heads}"
            )


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al., ECCV 2016): zero whole samples of a residual branch with prob. ``p``.

    Survivors are scaled by ``1 / (1 - p)`` so the expectation is unchanged; identity when not training
    or ``p == 0``. ``x``: ``[B, ...]``.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (active in training mode only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


def window_partition(x: torch.Tensor, window: Triple) -> torch.Tensor:
    """``[B, X, Y, Z, C]`` (sides multiples of ``window``) → ``[B · nW, N, C]``, ``N = prod(window)``.

    Windows are ordered sample-major, then C order over the window grid; tokens in C order in a window.
    """
    B, X, Y, Z, C = x.shape
    a, b, c = window
    x = x.view(B, X // a, a, Y // b, b, Z // c, c, C).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(-1, a * b * c, C)


def window_merge(windows: torch.Tensor, window: Triple, grid: Triple) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B · nW, N, C]`` → ``[B, X, Y, Z, C]`` with ``grid = (X, Y, Z)``."""
    a, b, c = window
    X, Y, Z = grid
    x = windows.view(-1, X // a, Y // b, Z // c, a, b, c, windows.shape[-1]).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(-1, X, Y, Z, windows.shape[-1])


def relative_position_index(window: Triple) -> torch.Tensor:
    """``[N, N]`` row of the bias table for each (query, key) token pair of a window (C-order tokens).

    The table has ``(2a-1)(2b-1)(2c-1)`` rows, indexed by the C-order ravel of ``q - k + window - 1``.
    """
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + torch.tensor(window).view(3, 1, 1) - 1
    return (rel[0] * (2 * window[1] - 1) + rel[1]) * (2 * window[2] - 1) + rel[2]


def shifted_window_mask(
    padded: Triple, window: Triple, shift: Triple, device: torch.device | str | None = None
) -> torch.Tensor:
    """Swin attention mask ``[nW, N, N]`` (0 or :data:`MASK_VALUE`) for a grid cyclically shifted by ``-shift``.

    After the roll, the last window along an axis of (padded) size ``P`` holds tokens that were not
    neighbours before it; per axis, regions ``[0, P-w)``, ``[P-w, P-s)`` and ``[P-s, P)`` are labelled
    0 / 1 / 2 and tokens of a window may only attend to tokens with the same 3D label. In unshifted
    coordinates the effective windows are cut at ``s, s + w, s + 2w, …``.
    """
    labels = [
        (torch.arange(p, device=device) >= p - w).long() + (torch.arange(p, device=device) >= p - s).long()
        for p, w, s in zip(padded, window, shift, strict=True)
    ]
    region = (labels[0].view(-1, 1, 1) * 9 + labels[1].view(1, -1, 1) * 3 + labels[2].view(1, 1, -1)).float()
    tokens = window_partition(region[None, ..., None], window).squeeze(-1)  # [nW, N]
    return (tokens[:, :, None] != tokens[:, None, :]).float() * MASK_VALUE


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative-position bias (Swin, §3.2).

    ``qkv`` without bias (TransMorph config), output projection with bias, scale ``head_dim^-1/2``; the
    bias table ``[(2a-1)(2b-1)(2c-1), heads]`` is initialised truncated-normal, std 0.02.
    """

    def __init__(self, dim: int, num_heads: int, window: Triple) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        rows = math.prod(2 * w - 1 for w in window)
        self.rel_bias = nn.Parameter(torch.empty(rows, num_heads))
        nn.init.trunc_normal_(self.rel_bias, std=0.02)
        self.register_buffer("rel_index", relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``[B · nW, N, C]`` windows (sample-major); ``mask``: ``[nW, N, N]`` or ``None``."""
        BW, N, C = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(BW, N, 3, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.rel_bias[self.rel_index].permute(2, 0, 1)  # [h, N, N]
        if mask is None:
            attn_mask = bias.unsqueeze(0)
        else:
            nW = mask.shape[0]
            attn_mask = (bias.unsqueeze(0) + mask.unsqueeze(1)).expand(BW // nW, -1, -1, -1, -1)
            attn_mask = attn_mask.reshape(BW, h, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(BW, N, C))


class SwinBlock(nn.Module):
    """(Shifted-)window Swin block on channel-last maps ``[B, X, Y, Z, C]`` → same shape.

    ``x + DropPath(W-MSA(LN(x)))`` then ``x + DropPath(MLP(LN(x)))``; the normalised map is zero-padded
    to multiples of the window, cyclically shifted by ``-shift`` when ``shift`` is non-zero, attended
    window by window and cropped back.
    """

    def __init__(
        self, dim: int, num_heads: int, window: Triple, shift: Triple, mlp_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    @property
    def shifted(self) -> bool:
        return any(self.shift)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x``: ``[B, X, Y, Z, C]``; ``mask``: :func:`shifted_window_mask` of the padded grid (used if shifted)."""
        size = x.shape[1:4]
        pad = [(-n) % w for n, w in zip(size, self.window, strict=True)]
        h = F.pad(self.norm1(x), (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
        padded = h.shape[1:4]
        if self.shifted:
            h = torch.roll(h, shifts=tuple(-s for s in self.shift), dims=(1, 2, 3))
        h = self.attn(window_partition(h, self.window), mask if self.shifted else None)
        h = window_merge(h, self.window, padded)
        if self.shifted:
            h = torch.roll(h, shifts=self.shift, dims=(1, 2, 3))
        x = x + self.drop_path(h[:, : size[0], : size[1], : size[2]])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """``[B, X, Y, Z, C]`` (even sides) → ``[B, X/2, Y/2, Z/2, 2C]``: concat 2×2×2 → LayerNorm(8C) → Linear, no bias."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8 * dim)
        self.reduction = nn.Linear(8 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, i::2, j::2, k::2] for i, j, k in MERGE_OFFSETS], dim=-1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """One encoder stage: ``depth`` blocks alternating plain / shifted windows, output LayerNorm, merging.

    ``forward``: ``[B, X, Y, Z, C]`` → (normalised stage output ``[B, C, X, Y, Z]``, input of the next stage
    ``[B, X/2, Y/2, Z/2, 2C]`` or ``None`` for the last stage).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Triple,
        mlp_ratio: float,
        drop_paths: list[float],
        merge: bool,
        use_checkpoint: bool,
    ) -> None:
        super().__init__()
        self.window = window
        self.shift: Triple = (window[0] // 2, window[1] // 2, window[2] // 2)
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, self.shift if i % 2 else (0, 0, 0), mlp_ratio, p)
            for i, p in enumerate(drop_paths)
        )
        self.norm = nn.LayerNorm(dim)
        self.merge = PatchMerging(dim) if merge else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        padded = tuple(n + (-n) % w for n, w in zip(x.shape[1:4], self.window, strict=True))
        mask = shifted_window_mask(padded, self.window, self.shift, x.device) if any(self.shift) else None
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        out = self.norm(x).permute(0, 4, 1, 2, 3)  # [B, C, X, Y, Z] laid out channels-last, as the decoder convs run
        return out, (self.merge(x) if self.merge is not None else None)


class SwinEncoder(nn.Module):
    """Patch embedding (4³, stride 4, + LayerNorm) and 4 Swin stages.

    ``[B, 2, X, Y, Z]`` → 4 maps ``[B, E·2^i, X / 2^(i+2), Y / 2^(i+2), Z / 2^(i+2)]``, fine → coarse.
    """

    def __init__(self, cfg: TransMorphConfig) -> None:
        super().__init__()
        E = cfg.embed_dim
        self.patch_embed = nn.Conv3d(2, E, kernel_size=4, stride=4)
        self.patch_norm = nn.LayerNorm(E)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.stages = nn.ModuleList(
            SwinStage(
                E * 2**i,
                heads,
                cfg.window_size,
                cfg.mlp_ratio,
                rates[start : start + depth],
                merge=i < len(cfg.depths) - 1,
                use_checkpoint=cfg.use_checkpoint,
            )
            for i, (depth, heads, start) in enumerate(zip(cfg.depths, cfg.num_heads, starts, strict=True))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 4, 1))
        outs = []
        for stage in self.stages:
            out, x = stage(x)
            outs.append(out)
        return outs


class ConvNormAct(nn.Sequential):
    """3³ conv (no bias) → InstanceNorm3d (non-affine) → LeakyReLU(0.01): upstream ``Conv3dReLU``.

    On CPU it runs channels-last with the norm and activation fused (:func:`methods.instance_norm.instance_norm_act`).
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv3d(in_ch, out_ch, 3, padding=1, bias=False), nn.InstanceNorm3d(out_ch), nn.LeakyReLU(0.01)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, act = self
        return instance_norm_act(conv(cpu_channels_last(x)), None, None, norm.eps, act.negative_slope)


class DecoderBlock(nn.Module):
    """Trilinear ×2 (align_corners False) → concat skip → 2 × :class:`ConvNormAct`.

    ``x`` ``[B, in_ch, s]`` and ``skip`` ``[B, skip_ch, 2s]`` → ``[B, out_ch, 2s]``.
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_ch + skip_ch, out_ch)
        self.conv2 = ConvNormAct(out_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)
        return self.conv2(self.conv1(torch.cat([cpu_channels_last(x), cpu_channels_last(skip)], dim=1)))


class TransMorph(nn.Module):
    """TransMorph (OASIS variant): ``forward(moving, fixed)`` → :class:`RegistrationOutput`.

    Inputs ``[B, 1, X, Y, Z]`` each (normally ``cfg.img_size``), concatenated as (moving, fixed) and zero-padded
    on the high side to multiples of 32; output ``disp`` ``[B, 3, X, Y, Z]`` in voxels on the fixed grid
    (module docstring: convention).
    """

    def __init__(self, cfg: TransMorphConfig) -> None:
        super().__init__()
        self.cfg = cfg
        E, head = cfg.embed_dim, cfg.reg_head_chan
        self.encoder = SwinEncoder(cfg)
        self.conv_skip = ConvNormAct(2, E // 2)
        # Upstream ``c2``: built, never called; kept only for the parameter count (module docstring).
        self.unused_conv_skip = ConvNormAct(2, head)
        self.up0 = DecoderBlock(8 * E, 4 * E, 4 * E)
        self.up1 = DecoderBlock(4 * E, 2 * E, 2 * E)
        self.up2 = DecoderBlock(2 * E, E, E)
        self.up3 = DecoderBlock(E, E // 2, head)
        self.flow = flow_head(head)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor keywords (JSON / YAML types): ``methods.build("transmorph", **model.config)``."""
        return self.cfg.to_dict()

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationOutput:
        """``moving``, ``fixed``: ``[B, 1, X, Y, Z]`` → ``disp`` ``[B, 3, X, Y, Z]`` (voxels)."""
        check_pair(moving, fixed, 1)
        size = moving.shape[2:]
        pad = [(-n) % 32 for n in size]
        x = F.pad(torch.cat([moving, fixed], dim=1), (0, pad[2], 0, pad[1], 0, pad[0]))
        half = self.conv_skip(F.avg_pool3d(x, 3, stride=2, padding=1))
        f0, f1, f2, f3 = self.encoder(x)
        y = self.up3(self.up2(self.up1(self.up0(f3, f2), f1), f0), half)
        flow = F.interpolate(self.flow(y), scale_factor=2, mode="trilinear", align_corners=False)
        return RegistrationOutput(disp=flow[:, :, : size[0], : size[1], : size[2]].contiguous())


@register("transmorph")
def build_transmorph(**overrides: Any) -> TransMorph:
    """Build TransMorph (OASIS variant, 46,556,979 parameters); overrides: :class:`TransMorphConfig` fields."""
    return TransMorph(TransMorphConfig(**overrides))
