"""Inverse-consistent dual-stream pyramid (b) DP-ConvIC and the symmetric pyramid it shares with SITReg.

Liu, Ruan & Sheng, "Unsupervised Deformable Image Registration Revisited" (MIDL 2025), App. A: the DP
backbone (:class:`methods.blocks.DPEncoder`, run once on the 2-image batch) with SITReg's anti-symmetric,
exactly inverse-consistent coarse-to-fine update (Honkamaa & Marttinen, SITReg, MELBA 2024). Facts:
``spec/methods-dp.md`` §2(b); our displacement convention: ``ARCHITECTURE.md``.

Symmetric pyramid (:class:`SymmetricPyramid`). Maps are coordinate maps ``φ(x) = x + u(x)``; a map *stored on
the grid* holds ``u`` at the full-resolution voxels and is read elsewhere by linear interpolation (border);
``A∘B`` evaluated at the grid points is ``methods.spatial.compose(u_A, u_B)`` (``= u_B + warp(u_A, u_B)``).
Start: ``L = R = id``. At each level ``k`` (coarse → fine, upsampling factor ``s = 2^k`` to full resolution):

1. ``a = f1∘L`` and ``b = f2∘R``: the level-``k`` features of image 1 and image 2 sampled (linear, border)
   through the current half-way maps at the level grid's voxel centres (see "grids" below).
2. One net ``N_k`` runs on both orders: ``o_f = N_k(in_f(a, b))``, ``o_r = N_k(in_r(a, b))`` with
   ``in_r(a, b) = in_f(b, a)`` (one batched call).
3. Bounded control points ``c = 0.99 · B_s · tanh(o)`` (level voxels; :data:`BSPLINE_BOUNDS`), upsampled by
   the cubic B-spline (:func:`methods.bspline.bspline_upsample`, ×``s`` to full-resolution voxels):
   ``φ_f``, ``φ_r``. The bound makes both invertible; their inverses come from the fixed-point inversion
   layer (:func:`methods.inversion.invert_displacement`, Anderson, implicit gradient), one solve for the
   ``B`` forward atoms and one for the ``B`` reverse ones, each with its own stop rule (as upstream).
4. ``U = φ_f∘φ_r⁻¹``, ``U⁻¹ = φ_r∘φ_f⁻¹`` (swapping the images swaps them). They are never stored on the grid.
5. ``L ← L∘U``, ``R ← R∘U⁻¹``, ``L⁻¹ ← U⁻¹∘L⁻¹``, ``R⁻¹ ← U∘R⁻¹`` (:func:`accumulate`), each chain evaluated
   point by point through the grid-stored atoms and then stored on the grid: ``L⁻¹(x) ← φ_r(φ_f⁻¹(L⁻¹(x)))``
   interpolates ``φ_f⁻¹`` at the off-grid points ``L⁻¹(x)`` and then ``φ_r`` at the result, and likewise
   ``R⁻¹(x) ← φ_f(φ_r⁻¹(R⁻¹(x)))``, ``L(x) ← L(φ_f(φ_r⁻¹(x)))``, ``R(x) ← R(φ_r(φ_f⁻¹(x)))``. This is the
   authors' order (SITReg's ``_MappingBuilder`` with ``resample_when_composing``, composable-mapping's lazy
   compositions; ``spec/methods-dp.md`` "Accumulation"). Interpolating a grid-stored ``U⁻¹`` at ``L⁻¹(x)``
   instead changes the output by ~0.1 voxel on moderate fields.

Outputs ``Φ12 = L∘R⁻¹`` and ``Φ21 = R∘L⁻¹`` (composed at the grid points). ``image_1∘Φ12 = f1∘L∘R⁻¹`` lives on
image 2's grid, so with ``(image_1, image_2) = (moving, fixed)`` ``disp = Φ12 − id`` is our moving → fixed pull-back
(``warp(moving, disp)`` ≈ fixed) and ``inverse = Φ21 − id`` the fixed → moving one; they are inverses of each
other up to the solver tolerance and interpolation. Internally ``[L; R]`` and ``[L⁻¹; R⁻¹]`` are stacked on
the batch axis, so every step above is one batched op. The maps, B-splines and inversions run in the model's
dtype, at least float32 (autocast is disabled for them).

Grids ("full-voxel", composable-mapping ``reference=Start()``): level voxel ``i`` is centred at full-
resolution coordinate ``(i + 0.5)·s − 0.5``; level sizes are ``ceil(N / s)``. The full-resolution maps are
sampled there (linear, border) and divided by ``s`` to move level features (:func:`to_level`), and the
control points use the same alignment. The non-IC DP variants use ``align_corners=True`` resizing instead.

DP-ConvIC decoder inputs (``a``, ``b`` as above; ``c_ab = corr(a, b)`` with ``a`` fixed and ``b`` shifted, the
27-channel radius-1 cost volume of :func:`methods.correlation.correlation`):

- ``mf``: ``in_f = cat[a, b]`` (2C channels).
- ``c``: ``in_f = cat[c_ab, c_ba]`` (54 channels).
- ``mfc`` (**our addition**; the paper could not run it for memory): ``in_f = cat[a, c_ab, c_ba, b]``
  (2C + 54 channels, the cost volumes in the middle as in DP-Conv-MFC). ``in_r`` is the same list with
  ``a ↔ b`` swapped, i.e. ``cat[b, c_ba, c_ab, a]``.

``c_ba`` is never computed: ``c_ba(p, o) = c_ab(p + o, −o)`` (zero where ``p + o`` is outside the volume,
matching the zero padding), :func:`reverse_correlation`, so each level computes one cost volume.

Decoder nets: the DP-Conv level (:class:`methods.dp.ConvDecoderLevel`: residual block to widths 32, 64, 64,
128, 128, 3³ flow head with N(0, std 1e-5) weights). Registered names and parameter counts: ``dp-convic-mf``
2,854,079, ``dp-convic-c`` 2,307,519, ``dp-convic-mfc`` 3,483,071 (ours).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from methods.base import check_img_size
from methods.blocks import ENCODER_CHANNELS, DPEncoder
from methods.bspline import bspline_upsample
from methods.correlation import OFFSETS, correlation
from methods.dp import DECODER_WIDTHS, ConvDecoderLevel, at_least_float32
from methods.inversion import BACKWARD_SOLVER, FORWARD_SOLVER, SolverSettings, invert_displacement
from methods.registry import DEFAULT_IMG_SIZE, RegistrationOutput, register
from methods.spatial import compose, identity_grid, warp

__all__ = [
    "BSPLINE_BOUNDS",
    "IC_INPUTS",
    "MAX_CONTROL_POINT_MULTIPLIER",
    "DPConvIC",
    "SymmetricPyramid",
    "accumulate",
    "ic_decoder_inputs",
    "ic_input_channels",
    "reverse_correlation",
    "to_level",
]

#: Largest cubic B-spline control-point displacement (level voxels) that keeps the upsampled 3-D field
#: invertible, by upsampling factor (SITReg's precomputed table, Honkamaa & Marttinen 2024).
BSPLINE_BOUNDS: dict[int, float] = {
    1: 0.36,
    2: 0.3854469526363808,
    4: 0.39803114051999844,
    8: 0.4007250760586097,
    16: 0.40175329749498856,
    32: 0.40253633025170044,
}
#: Safety factor on the bounds (SITReg's ``max_control_point_multiplier``).
MAX_CONTROL_POINT_MULTIPLIER = 0.99

#: DP-ConvIC decoder inputs.
IC_INPUTS: tuple[str, ...] = ("mf", "c", "mfc")
_CORR = len(OFFSETS)
_REVERSED_OFFSET = [OFFSETS.index(tuple(-o for o in off)) for off in OFFSETS]


def reverse_correlation(corr_ab: torch.Tensor) -> torch.Tensor:
    """Cost volume ``corr(b, a)`` derived from ``corr(a, b)`` without touching the features.

    ``corr_ba[k](p) = C^-½ Σ_c b_c(p) a_c(p + o_k) = corr_ab[k'](p + o_k)`` with ``o_k' = −o_k``, and 0 where
    ``p + o_k`` is outside the volume (``a`` is zero-padded). ``[B, 27, X, Y, Z]`` → ``[B, 27, X, Y, Z]``;
    the same products as :func:`methods.correlation.correlation` ``(b, a)`` (equal up to the float summation
    order over channels).
    """
    size = corr_ab.shape[2:]
    padded = nn.functional.pad(corr_ab, (1, 1, 1, 1, 1, 1))
    out = [
        padded[
            :, kr, 1 + o[0] : 1 + o[0] + size[0], 1 + o[1] : 1 + o[1] + size[1], 1 + o[2] : 1 + o[2] + size[2]
        ]
        for o, kr in zip(OFFSETS, _REVERSED_OFFSET, strict=True)
    ]
    return torch.stack(out, dim=1)


def ic_input_channels(inputs: str, channels: int) -> int:
    """Decoder input channels of DP-ConvIC for ``inputs`` in :data:`IC_INPUTS` and ``C = channels``."""
    if inputs not in IC_INPUTS:
        raise ValueError(f"unknown decoder input {inputs!r}; expected one of {IC_INPUTS}")
    return {"mf": 2 * channels, "c": 2 * _CORR, "mfc": 2 * channels + 2 * _CORR}[inputs]


def ic_decoder_inputs(inputs: str, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and reverse DP-ConvIC decoder inputs from ``a = f1∘L``, ``b = f2∘R`` (``[B, C, X, Y, Z]``).

    The reverse input is the forward one with ``a ↔ b``; the cost volume is computed once (see module doc).
    """
    if inputs == "mf":
        return torch.cat([a, b], dim=1), torch.cat([b, a], dim=1)
    if inputs not in IC_INPUTS:
        raise ValueError(f"unknown decoder input {inputs!r}; expected one of {IC_INPUTS}")
    c_ab = correlation(a, b)
    c_ba = reverse_correlation(c_ab)
    if inputs == "c":
        return torch.cat([c_ab, c_ba], dim=1), torch.cat([c_ba, c_ab], dim=1)
    return torch.cat([a, c_ab, c_ba, b], dim=1), torch.cat([b, c_ba, c_ab, a], dim=1)


def to_level(disp: torch.Tensor, factor: int, size: Sequence[int]) -> torch.Tensor:
    """Full-resolution displacement → displacement in level voxels at the level grid's voxel centres.

    Samples ``disp`` (``[B, 3, X, Y, Z]``, full-resolution voxels) linearly (border) at the full-resolution
    coordinates ``(i + 0.5)·s − 0.5`` of the level voxels ``i`` (``size``, ``ceil(N / s)``) and divides by
    ``s``; so ``warp(level_features, to_level(u, s, size))`` samples the features through ``id + u``.
    """
    if factor == 1:
        return disp
    offset = (factor - 1) * (identity_grid(tuple(size), disp.device, disp.dtype) + 0.5)
    return warp(disp, offset.expand(disp.shape[0], -1, *size)) / factor


def _swap(x: torch.Tensor) -> torch.Tensor:
    """Swap the two halves of a batch stacked as ``[image 1; image 2]``."""
    first, second = x.chunk(2)
    return torch.cat([second, first])


def accumulate(
    maps: torch.Tensor | None,
    inverse_maps: torch.Tensor | None,
    atoms: torch.Tensor,
    inverse_atoms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One level's symmetric update of the running maps, in the authors' composition order (module doc, 5.).

    Args:
        maps: ``[L; R] − id``, ``[2B, 3, X, Y, Z]`` full-resolution voxels, or ``None`` (identity, first level).
        inverse_maps: ``[L⁻¹; R⁻¹] − id``, same shape, or ``None``.
        atoms: ``[φ_f; φ_r] − id`` of this level (the upsampled B-splines), same shape.
        inverse_atoms: ``[φ_f⁻¹; φ_r⁻¹] − id`` (the fixed-point inverses), same shape.

    Returns:
        ``([L∘U; R∘U⁻¹] − id, [U⁻¹∘L⁻¹; U∘R⁻¹] − id)``, with ``U = φ_f∘φ_r⁻¹``, each stored on the grid. ``U`` and
        ``U⁻¹`` are only ever evaluated at grid points or through the atoms: ``L⁻¹`` becomes
        ``φ_r(φ_f⁻¹(L⁻¹(x)))``, never a grid-stored ``U⁻¹`` interpolated at ``L⁻¹(x)``.
    """
    update = compose(atoms, _swap(inverse_atoms))  # [U; U⁻¹] at the grid points
    if maps is None or inverse_maps is None:
        return update, _swap(update)
    inverse_chain = compose(_swap(atoms), compose(inverse_atoms, inverse_maps))  # [φ_r∘φ_f⁻¹∘L⁻¹; φ_f∘φ_r⁻¹∘R⁻¹]
    return compose(maps, update), inverse_chain


class SymmetricPyramid(nn.Module, ABC):
    """Shared SITReg-style symmetric, inverse-consistent coarse-to-fine registration (see module docstring).

    Subclasses set ``self.update_nets`` (one net per level, full resolution first; each maps the stacked
    ``[2B, C_in, *level]`` inputs to ``[2B, 3, *level]``) and ``self.factors`` (upsampling factor per level),
    and implement :meth:`features` and :meth:`update_inputs`.

    Args:
        forward_solver, backward_solver: keyword overrides of the inversion layer's
            :class:`methods.inversion.SolverSettings` (defaults :data:`~methods.inversion.FORWARD_SOLVER`,
            :data:`~methods.inversion.BACKWARD_SOLVER`).
        checkpoint_levels: activation checkpointing (same result, less memory, more time): the feature
            extractor and each level's update net (with its inputs, one direction at a time) are recomputed
            in the backward pass instead of storing their activations.
    """

    update_nets: nn.ModuleList
    factors: tuple[int, ...]

    def __init__(
        self,
        forward_solver: dict[str, Any] | None = None,
        backward_solver: dict[str, Any] | None = None,
        checkpoint_levels: bool = False,
    ) -> None:
        super().__init__()
        self.forward_solver = SolverSettings(**{**FORWARD_SOLVER.to_dict(), **(forward_solver or {})})
        self.backward_solver = SolverSettings(**{**BACKWARD_SOLVER.to_dict(), **(backward_solver or {})})
        self.checkpoint_levels = bool(checkpoint_levels)

    def solver_config(self) -> dict[str, Any]:
        """The shared constructor arguments, for ``model.config``."""
        return {
            "forward_solver": self.forward_solver.to_dict(),
            "backward_solver": self.backward_solver.to_dict(),
            "checkpoint_levels": self.checkpoint_levels,
        }

    @abstractmethod
    def features(self, image_1: torch.Tensor, image_2: torch.Tensor) -> list[torch.Tensor]:
        """Per-level features, full resolution first, each ``[2B, C_k, *level_k]`` (image 1 first)."""

    @abstractmethod
    def update_inputs(
        self, level: int, a: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and reverse net inputs of ``level`` from ``a = f1∘L`` and ``b = f2∘R``; swapping ``a, b``
        must swap the two."""

    def _raw_update(self, level: int, feats: torch.Tensor, direction: int | None = None) -> torch.Tensor:
        """Raw net output for the stacked sampled features ``feats = [a; b]``: both directions
        (``[2B, 3, …]``, one batched call) or only ``direction`` 0 (forward) / 1 (reverse) (``[B, 3, …]``)."""
        a, b = feats.chunk(2)
        inputs = self.update_inputs(level, a, b)
        net_input = torch.cat(inputs) if direction is None else inputs[direction]
        return self.update_nets[level](net_input)

    def _checkpointing(self) -> bool:
        return self.checkpoint_levels and torch.is_grad_enabled()

    def bound(self, level: int) -> float:
        """``0.99 · B_s``: the largest control-point value of ``level`` (level voxels)."""
        factor = self.factors[level]
        if factor not in BSPLINE_BOUNDS:
            raise ValueError(f"no B-spline invertibility bound tabulated for factor {factor}")
        return MAX_CONTROL_POINT_MULTIPLIER * BSPLINE_BOUNDS[factor]

    def forward_with_controls(
        self, image_1: torch.Tensor, image_2: torch.Tensor
    ) -> tuple[RegistrationOutput, list[torch.Tensor]]:
        """Register ``image_1`` (moving) to ``image_2`` (fixed), ``[B, 1, X, Y, Z]`` each.

        Returns the :class:`RegistrationOutput` (``disp`` = Φ12 − id on image 2's grid, ``inverse`` =
        Φ21 − id; ``[B, 3, X, Y, Z]`` voxels, in the model's dtype or float32 under autocast) and the bounded
        control points of every level, coarse → fine, ``[2B, 3, *level_k]`` (forward update first, then the
        reverse one).
        """
        if image_1.shape != image_2.shape or image_1.dim() != 5:
            raise ValueError(
                f"need two [B, C, X, Y, Z] images of one shape; got {tuple(image_1.shape)}, "
                f"{tuple(image_2.shape)}"
            )
        size = tuple(image_1.shape[2:])
        if self._checkpointing():
            feats = checkpoint(self.features, image_1, image_2, use_reentrant=False)
        else:
            feats = self.features(image_1, image_2)
        maps: torch.Tensor | None = None  # [L; R]
        inverse_maps: torch.Tensor | None = None  # [L⁻¹; R⁻¹]
        controls = []
        for level in reversed(range(len(self.update_nets))):
            factor = self.factors[level]
            level_feats = feats[level]
            if maps is not None:  # sampled in float32 (warp casts the features), returned in their dtype
                with torch.autocast(level_feats.device.type, enabled=False):
                    level_feats = warp(level_feats, to_level(maps, factor, level_feats.shape[2:]))
            if self._checkpointing():  # one direction at a time: half the activations to recompute at once
                raw = torch.cat(
                    [checkpoint(self._raw_update, level, level_feats, d, use_reentrant=False) for d in (0, 1)]
                )
            else:
                raw = self._raw_update(level, level_feats)
            with torch.autocast(raw.device.type, enabled=False):
                control = self.bound(level) * torch.tanh(at_least_float32(raw))
                controls.append(control)
                atoms = factor * bspline_upsample(control, factor, size)  # [φ_f; φ_r] − id
                # [φ_f⁻¹; φ_r⁻¹] − id: one solve per direction, as the authors' code inverts each atom on its own
                # (the stop rule is a max over the solved batch; a joint solve would stop both at the slower one)
                inverse_atoms = torch.cat(
                    [invert_displacement(a, self.forward_solver, self.backward_solver) for a in atoms.chunk(2)]
                )
                maps, inverse_maps = accumulate(maps, inverse_maps, atoms, inverse_atoms)
        if maps is None or inverse_maps is None:
            raise RuntimeError("the pyramid has no levels")
        with torch.autocast(maps.device.type, enabled=False):
            disp, inverse = compose(maps, _swap(inverse_maps)).chunk(2)  # [L∘R⁻¹; R∘L⁻¹]
        return RegistrationOutput(disp=disp, inverse=inverse), controls

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationOutput:
        return self.forward_with_controls(moving, fixed)[0]


class DPConvIC(SymmetricPyramid):
    """(b) DP-ConvIC: the DP encoder and DP-Conv decoder levels in the symmetric pyramid.

    Args:
        img_size: ``(X, Y, Z)``, sides divisible by 16 (5 levels); validated and recorded.
        inputs: decoder input, one of :data:`IC_INPUTS` (``"mf"``, ``"c"``, ``"mfc"``).
        widths: decoder widths, full resolution first (default :data:`methods.dp.DECODER_WIDTHS`).
        forward_solver, backward_solver, checkpoint_levels: see :class:`SymmetricPyramid`.

    ``forward(moving, fixed)`` with ``[B, 1, X, Y, Z]`` inputs (sides divisible by 16) returns
    ``RegistrationOutput(disp, inverse)``; ``model.config`` holds the constructor arguments.
    """

    def __init__(
        self,
        img_size: Sequence[int] = DEFAULT_IMG_SIZE,
        inputs: str = "mf",
        widths: Sequence[int] = DECODER_WIDTHS,
        forward_solver: dict[str, Any] | None = None,
        backward_solver: dict[str, Any] | None = None,
        checkpoint_levels: bool = False,
    ) -> None:
        super().__init__(forward_solver, backward_solver, checkpoint_levels)
        self.img_size = check_img_size(img_size)
        widths = tuple(int(w) for w in widths)
        if len(widths) != len(ENCODER_CHANNELS) or min(widths) < 1:
            raise ValueError(
                f"widths needs {len(ENCODER_CHANNELS)} positive entries (levels 0..4), got {widths}"
            )
        self.inputs = inputs
        self.encoder = DPEncoder(ENCODER_CHANNELS)
        self.update_nets = nn.ModuleList(
            ConvDecoderLevel(ic_input_channels(inputs, c), w)
            for c, w in zip(ENCODER_CHANNELS, widths, strict=True)
        )
        self.factors = tuple(2**k for k in range(len(ENCODER_CHANNELS)))
        self.config: dict[str, Any] = {
            "img_size": list(self.img_size),
            "inputs": inputs,
            "widths": list(widths),
            **self.solver_config(),
        }

    def features(self, image_1: torch.Tensor, image_2: torch.Tensor) -> list[torch.Tensor]:
        if image_1.shape[1] != 1 or any(n % 16 for n in image_1.shape[2:]):
            raise ValueError(
                f"need [B, 1, X, Y, Z] images with sides divisible by 16; got {tuple(image_1.shape)}"
            )
        return self.encoder(torch.cat([image_1, image_2]))

    def update_inputs(
        self, level: int, a: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return ic_decoder_inputs(self.inputs, a, b)


@register("dp-convic-mf")
def build_dp_convic_mf(**overrides: Any) -> DPConvIC:
    """(b) DP-ConvIC-MF: decoder input ``cat[a, b]``; 2,854,079 parameters."""
    return DPConvIC(**{"inputs": "mf", **overrides})


@register("dp-convic-c")
def build_dp_convic_c(**overrides: Any) -> DPConvIC:
    """(b) DP-ConvIC-C: decoder input ``cat[c_ab, c_ba]``; 2,307,519 parameters."""
    return DPConvIC(**{"inputs": "c", **overrides})


@register("dp-convic-mfc")
def build_dp_convic_mfc(**overrides: Any) -> DPConvIC:
    """(b) DP-ConvIC-MFC (our addition): decoder input ``cat[a, c_ab, c_ba, b]``; 3,483,071 parameters."""
    return DPConvIC(**{"inputs": "mfc", **overrides})
