"""The authors' networks next to ours, with the same (randomised) weights: for parity checks and timings.

:func:`build_pair` builds the official network of a registered method from its authors' code (imported at run
time from a local checkout), randomises its weights (every parameter, including the flow heads that are
zero- or N(0, 1e-5)-initialised upstream), transplants them one-to-one into our network and returns both, each
with a runner in our convention (``(moving, fixed)`` ``[B, 1, X, Y, Z]`` → voxel displacement ``[B, 3, X, Y, Z]``
on the fixed grid, plus the inverse for the inverse-consistent models). ``benchmarks/upstream_parity.py``
compares their displacements and gradients; ``benchmarks/train_step.py --side-by-side`` times both.

Nothing here is imported by ``methods``, ``dirbench`` or the tests, and no upstream code is copied: the
checkouts are found through environment variables and imported as they are.

============================  =====================================================================
environment variable          checkout (what it provides)
============================  =====================================================================
``DIRBENCH_UPSTREAM_DP``      HengjieLiu/Unsupervised-DL-DIR-Revisited: the paper's DP variants
``DIRBENCH_UPSTREAM_SITREG``  honkamj/SITReg: SITReg, and ``shape_logic`` that the DP encoder imports
``DIRBENCH_UPSTREAM_LUMIR``   JHU-MedImage-Reg/LUMIR_L2R: ``VoxelMorph/models.py`` (VxmDense_2)
``DIRBENCH_UPSTREAM_VFA``     yihao6/vfa (GPL-3.0: run, never copied)
``DIRBENCH_UPSTREAM_TRANSMORPH`` junyuchen245/TransMorph_Transformer_for_Medical_Image_Registration:
                              ``OASIS/TransMorph/models`` (the OASIS variant, config ``TransMorph``)
============================  =====================================================================

The inverse-consistent models also need the PyPI packages ``composable-mapping==0.1.2`` and
``deformation-inversion-layer`` (SITReg's pins; ``pip install -e .[upstream]``). TransMorph's code imports
``timm.models.layers`` (``DropPath``, ``trunc_normal_``, ``to_3tuple``) and ``ml_collections.ConfigDict``; timm
pulls in torchvision, a compiled package tied to the torch build, so it is not in the ``upstream`` extra: put
timm and ml_collections (or a local stand-in providing those four names) on ``PYTHONPATH`` yourself.
:data:`NOT_BUILT` lists what has no builder and why.

Run in float64, the official models need two adjustments that change no arithmetic: they are built and run
with float64 as torch's default dtype (composable-mapping keeps its grids' affine matrices in the default dtype;
in float32 they round the sampling coordinates by ~1e-6 voxel), and VFA's attention offsets ``decoder.R`` (a
plain attribute that ``.to()`` does not reach) are cast to the input's dtype.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import io
import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

import methods

__all__ = [
    "ENV_VARS",
    "IC_METHODS",
    "METHODS",
    "NOT_BUILT",
    "Heads",
    "Pair",
    "UpstreamUnavailable",
    "build_pair",
    "default_shape",
    "gradient_gap",
    "randomise_",
    "transplant",
]

#: Environment variable → the checkout it names.
ENV_VARS: dict[str, str] = {
    "DIRBENCH_UPSTREAM_DP": "HengjieLiu/Unsupervised-DL-DIR-Revisited",
    "DIRBENCH_UPSTREAM_SITREG": "honkamj/SITReg",
    "DIRBENCH_UPSTREAM_LUMIR": "JHU-MedImage-Reg/LUMIR_L2R",
    "DIRBENCH_UPSTREAM_VFA": "yihao6/vfa",
    "DIRBENCH_UPSTREAM_TRANSMORPH": "junyuchen245/TransMorph_Transformer_for_Medical_Image_Registration",
}

Runner = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


class UpstreamUnavailable(RuntimeError):
    """The authors' code for a method cannot be built here (checkout or dependency missing)."""


@dataclass
class Pair:
    """The official network and ours with the same weights.

    ``run_official`` / ``run_ours`` take ``(moving, fixed)`` ``[B, 1, X, Y, Z]`` and return ``(disp, inverse)``:
    voxel displacements ``[B, 3, X, Y, Z]`` in our convention (``warped(x) = moving(x + disp(x))``);
    ``inverse`` is ``None`` for the one-directional models. ``rename`` maps an official parameter name to ours
    (the transplant's mapping, e.g. to compare gradients parameter by parameter).
    """

    method: str
    shape: tuple[int, int, int]
    official: nn.Module
    ours: nn.Module
    run_official: Runner
    run_ours: Runner
    rename: Callable[[str], str | None]


# ---------------------------------------------------------------------------------------------- helpers


def _checkout(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        raise UpstreamUnavailable(f"{var} is not set (a checkout of {ENV_VARS[var]})")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UpstreamUnavailable(f"{var}={value} is not a directory")
    return path


@contextlib.contextmanager
def _on_path(*paths: Path) -> Iterator[None]:
    """Prepend ``paths`` to ``sys.path`` for the duration (upstream modules stay imported afterwards)."""
    added = [str(p) for p in paths]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            sys.path.remove(p)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow the upstream constructors' prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _import(name: str, hint: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # a missing third-party dependency of the upstream code
        raise UpstreamUnavailable(f"cannot import {name} ({hint}): {exc}") from exc


def _load_file(name: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise UpstreamUnavailable(f"{path} not found")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UpstreamUnavailable(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise UpstreamUnavailable(f"{path}: {exc}") from exc
    return module


def randomise_(model: nn.Module, seed: int, head: str | None = None, head_gain: float = 1.0) -> None:
    """Overwrite every parameter of ``model`` with non-trivial random values (in place, deterministic).

    Weights with ≥ 2 dims ~ N(0, 1 / fan_in) (unit-variance outputs for unit-variance inputs); 1-D ``weight``
    (norm scales) ~ 1 + 0.2 N(0, 1); other 1-D parameters (biases, norm shifts) ~ 0.1 N(0, 1). Parameters
    whose name matches the regex ``head`` (the flow heads) are multiplied by ``head_gain``, to set the size
    of the displacements. The values are drawn in float64 in ``named_parameters`` order.
    """
    gen = torch.Generator().manual_seed(seed)
    head_re = re.compile(head) if head else None
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if p.dim() >= 2:
                value = noise / max(p[0].numel(), 1) ** 0.5
            elif name.endswith("weight"):
                value = 1.0 + 0.2 * noise
            else:
                value = 0.1 * noise
            if head_re is not None and head_re.search(name):
                value = value * head_gain
            p.copy_(value.to(p.dtype))


def transplant(official: nn.Module, ours: nn.Module, rename: Callable[[str], str | None]) -> int:
    """Copy ``official``'s parameters into ``ours`` one-to-one; returns how many tensors were copied.

    ``rename`` maps an official parameter name to ours (``None``: no counterpart, an error). Every parameter on
    both sides must be matched exactly once, with the same shape up to singleton dims: anything else raises
    ``RuntimeError`` naming the keys.
    """
    targets = dict(ours.named_parameters())
    written: set[str] = set()
    unmatched = []
    with torch.no_grad():
        for name, p in official.named_parameters():
            key = rename(name)
            if key is None or key not in targets or key in written:
                unmatched.append(f"{name} -> {key}")
                continue
            if targets[key].squeeze().shape != p.squeeze().shape:  # singleton dims may differ ([1] vs scalar)
                raise RuntimeError(f"shape mismatch {name} {tuple(p.shape)} -> {key} {tuple(targets[key].shape)}")
            targets[key].copy_(p.reshape(targets[key].shape))
            written.add(key)
    missing = sorted(set(targets) - written)
    if unmatched or missing:
        raise RuntimeError(f"weight mapping is not one-to-one: unmatched {unmatched[:8]}, missing {missing[:8]}")
    return len(written)


def _subs(rules: Sequence[tuple[str, str | Callable[[re.Match[str]], str]]]) -> Callable[[str], str | None]:
    """A renamer applying ``re.sub`` rules in order; keys that no rule matched map to ``None``."""

    def rename(name: str) -> str | None:
        out, matched = name, 0
        for pattern, repl in rules:
            out, n = re.subn(pattern, repl, out)
            matched += n
        return out if matched else None

    return rename


#: The paper's residual block (``main_branch`` = 2 × [conv, norm], ``skip_conv``, ``skip_norm``) → ours.
_RESIDUAL_RULES: list[tuple[str, str]] = [
    (r"main_branch\.0\.0\.", "conv1."),
    (r"main_branch\.0\.1\.", "norm1."),
    (r"main_branch\.1\.0\.", "conv2."),
    (r"main_branch\.1\.1\.", "norm2."),
    (r"skip_conv\.", "skip."),
    (r"skip_norm\.", "skip_norm."),
]
#: The paper's encoder (``projection``, ``block0``, ``blocks.k``) → :class:`methods.blocks.DPEncoder`.
_DP_ENCODER_RULES: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
    (r"^feature_encoder\.encoder\.projection\.", "encoder.stem."),
    (r"^feature_encoder\.encoder\.block0\.", "encoder.blocks.0."),
    (r"^feature_encoder\.encoder\.blocks\.(\d+)\.", lambda m: f"encoder.blocks.{int(m[1]) + 1}."),
]
_N_DP_LEVELS = 5


# ------------------------------------------------------------------------------------------ DP variants

#: Our DP method → (the paper's model-config folder, bidirectional).
_DP_CONFIGS: dict[str, tuple[str, bool]] = {
    "dp-conv-mf": ("fedda_1mf", False),
    "dp-conv-mfc": ("fedda_2mfcorr", False),
    "dp-conv-c": ("fedda_3corr", False),
    "dp-vfa": ("feddc_vfa", False),
    "dp-convic-mf": ("feddb_mysitreg", True),
    "dp-convic-c": ("feddb_mysitregcorr", True),
}


def _dp_modules() -> tuple[Path, ModuleType]:
    """The paper's code on ``sys.path`` (its ``code/``, ``code/networks_v2`` and SITReg's ``algorithm/``), to stay:
    its modules import one another lazily, by those top-level names."""
    root = _checkout("DIRBENCH_UPSTREAM_DP")
    sitreg = _checkout("DIRBENCH_UPSTREAM_SITREG")
    for path in (sitreg / "src" / "algorithm", root / "code" / "networks_v2", root / "code"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    with _quiet():
        fedd = _import("utils_models_v2v2_fedd", "the paper's DP factory")
    return root, fedd


def _solvers(tol: float, max_iter: int) -> tuple[Any, Any]:
    """``deformation_inversion_layer`` Anderson solvers as the paper / SITReg configure them, with ``tol``."""
    fpi = _import("deformation_inversion_layer.fixed_point_iteration", "pip install deformation-inversion-layer")
    forward = fpi.AndersonSolver(
        stop_criterion=fpi.MaxElementWiseAbsStopCriterion(min_iterations=2, max_iterations=max_iter, threshold=tol),
        arguments=fpi.AndersonSolverArguments(memory_length=4),
    )
    backward = fpi.AndersonSolver(
        stop_criterion=fpi.RelativeL2ErrorStopCriterion(min_iterations=2, max_iterations=max_iter, threshold=1e-2),
        arguments=fpi.AndersonSolverArguments(memory_length=4),
    )
    return forward, backward


def _build_dp(method: str, shape: tuple[int, int, int], tol: float, max_iter: int) -> tuple[nn.Module, Runner]:
    root, fedd = _dp_modules()
    folder, bidir = _DP_CONFIGS[method]
    config_dir = root / "configs" / "model_configs" / folder
    with _quiet():
        if not bidir:
            model = fedd.get_models_v2(list(shape), str(config_dir), bidir=False, INFO=False)
        else:  # get_models_v2's bidirectional branch, with the solvers' tolerance as an argument
            yaml = _import("yaml", "pip install pyyaml")
            feature_encoder = _import("feature_encoder", "the paper's encoder")
            mysitreg = _import("deformation_decoder.decoders.deformation_decoder_mysitreg", "the paper's IC decoder")
            flow = _import("networks_v2.flow_estimator", "the paper's DIRNet")
            enc_params = yaml.safe_load(next(config_dir.glob("*encoder_config.yaml")).read_text())
            dec_params = yaml.safe_load(next(config_dir.glob("*decoder_config.yaml")).read_text())
            enc_params["img_size"] = dec_params["img_size"] = list(shape)
            forward, backward = _solvers(tol, max_iter)
            model = flow.DIRNet(
                list(shape),
                feature_encoder=feature_encoder.FeatureEncoder(enc_params["encoder_type"], enc_params),
                deformation_decoder=mysitreg.DeformationDecoderMySITReg(
                    decoder_params=dec_params,
                    forward_fixed_point_solver=forward,
                    backward_fixed_point_solver=backward,
                    max_control_point_multiplier=0.99,
                ),
                bidir=True,
                use_batch_parallel=True,
                INFO=False,
            )

    def run(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = model(moving, fixed)
        return (out[1], out[3]) if bidir else (out[1], None)

    return model, run


def _dp_rename(method: str) -> Callable[[str], str | None]:
    if method.startswith("dp-convic"):  # decoder nets are indexed fine → coarse, as ours
        net = r"^deformation_decoder\._not_none_dense_extration_networks\.(\d+)\."
        decoder: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
            (net + r"res_block\.", r"update_nets.\1.block."),
            (net + r"out_block\.0\.", r"update_nets.\1.head."),
        ]
    else:  # dp_blocks are indexed coarse → fine
        def level(m: re.Match[str]) -> str:
            return f"levels.{_N_DP_LEVELS - 1 - int(m[1])}."

        decoder = [
            (r"^deformation_decoder\.decoder\.dp_blocks\.(\d+)\.res_block\.", lambda m: level(m) + "block."),
            (r"^deformation_decoder\.decoder\.dp_blocks\.(\d+)\.out_block\.0\.", lambda m: level(m) + "head."),
            (r"^deformation_decoder\.decoder\.dp_blocks\.(\d+)\.proj\.", lambda m: level(m) + "proj."),
        ]
    return _subs([*_DP_ENCODER_RULES, *decoder, *_RESIDUAL_RULES])


# ----------------------------------------------------------------------------------------------- SITReg


def _build_sitreg(shape: tuple[int, int, int], tol: float, max_iter: int) -> tuple[nn.Module, Runner]:
    root = _checkout("DIRBENCH_UPSTREAM_SITREG")
    with _on_path(root / "src"):
        sitreg = _import("model.sitreg", "SITReg's model")
        extractor = _import("model.sitreg.feature_extractor", "SITReg's feature extractor")
        activation = _import("model.activation", "SITReg's activations")
        normalizer = _import("model.normalizer", "SITReg's normalisers")
    config_path = root / "src" / "scripts" / "configs" / "sitreg" / "lumir" / "cc_grad_1.0_very_deep_heavy.json"
    cfg = json.loads(config_path.read_text())["application"]["config"]["model"]
    act = getattr(activation, cfg["activation"]["type"])(**cfg["activation"].get("args", {}))
    norm = getattr(normalizer, cfg["normalizer"]["type"])(**cfg["normalizer"].get("args", {}))
    forward, backward = _solvers(tol, max_iter)
    features = extractor.EncoderFeatureExtractor(
        n_input_channels=cfg["n_input_channels"],
        activation_factory=act,
        n_features_per_resolution=cfg["n_features_per_resolution"],
        n_convolutions_per_resolution=cfg["n_feature_convolutions_per_resolution"],
        input_shape=list(shape),
        normalizer_factory=norm,
    )
    model = sitreg.SITReg(
        feature_extractor=features,
        n_transformation_features_per_resolution=cfg["n_transformation_features_per_resolution"],
        n_transformation_convolutions_per_resolution=cfg["n_transformation_convolutions_per_resolution"],
        affine_transformation_type=None,
        input_voxel_size=cfg["voxel_size"],
        input_shape=list(shape),
        transformation_downsampling_factor=cfg["transformation_downsampling_factor"],
        forward_fixed_point_solver=forward,
        backward_fixed_point_solver=backward,
        max_control_point_multiplier=cfg["max_control_point_multiplier"],
        activation_factory=act,
        normalizer_factory=norm,
    )

    def run(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        # as the paper's SITReg wrapper reads them: voxel displacements on the full-resolution grid
        ((forward_mapping, inverse_mapping),) = model(moving, fixed, mappings_for_levels=((0, False),))
        return forward_mapping._data.displacements, inverse_mapping._data.displacements

    return model, run


_SITREG_RENAME = _subs(
    [
        (r"^_feature_extractor\.initial_projection\.", "encoder.stem."),
        (r"^_feature_extractor\.initial_convs\.", "encoder.stem_convs."),
        (r"^_feature_extractor\.downsampling_blocks\.(\d+)\.downsampling\.conv\.", r"encoder.blocks.\1.down."),
        (r"^_feature_extractor\.downsampling_blocks\.(\d+)\.projection\.conv\.", r"encoder.blocks.\1.project."),
        (r"^_feature_extractor\.downsampling_blocks\.(\d+)\.conv\.", r"encoder.blocks.\1.convs."),
        (r"^_not_none_dense_extration_networks\.(\d+)\.convolutions\.", r"update_nets.\1.convs."),
        (r"^_not_none_dense_extration_networks\.(\d+)\.final_convolution\.conv\.", r"update_nets.\1.head."),
        (r"convolutions\.(\d+)\.conv\.", r"\1.0."),
        (r"normalizers\.(\d+)\.", r"\1.1."),
    ]
)


# ------------------------------------------------------------------------------------ VoxelMorph, VFA


def _build_voxelmorph(shape: tuple[int, int, int]) -> tuple[nn.Module, Runner]:
    """VxmDense_2 of LUMIR_L2R ``VoxelMorph/models.py`` (the paper's ``voxelmorph_models_path``), defaults."""
    models = _load_file("lumir_voxelmorph_models", _checkout("DIRBENCH_UPSTREAM_LUMIR") / "VoxelMorph" / "models.py")
    model = models.VxmDense_2(list(shape))

    def run(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return model(torch.cat([moving, fixed], dim=1))[1], None

    return model, run


_VOXELMORPH_RENAME = _subs(
    [
        (r"^unet_model\.downarm\.(\d+)\.main\.", r"encoder.\1."),
        (r"^unet_model\.uparm\.(\d+)\.main\.", r"decoder.\1."),
        (r"^unet_model\.extras\.(\d+)\.main\.", r"extras.\1."),
        (r"^flow\.", "flow."),
    ]
)


def _build_vfa(shape: tuple[int, int, int]) -> tuple[nn.Module, Runner]:
    """yihao6/vfa ``VFA`` with ``params/vfa/vfa_ncc.json`` (the defaults: 2,014,827 parameters)."""
    root = _checkout("DIRBENCH_UPSTREAM_VFA")
    with _on_path(root):
        vfa = _import("vfa.models.vfa", "yihao6/vfa")
    params = json.loads((root / "vfa" / "params" / "vfa" / "vfa_ncc.json").read_text())
    params["model"].update(in_channels=1, in_shape=list(shape))
    with _quiet():
        model = vfa.VFA(params, "cpu")

    def run(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        model.decoder.R = model.decoder.R.to(moving.dtype)  # a plain attribute: .to(dtype) does not reach it
        grid = model({"f_img": fixed, "m_img": moving})["composed_grids"][-1]  # absolute voxel coordinates
        return grid - _grid(moving), None

    return model, run


def _grid(image: torch.Tensor) -> torch.Tensor:
    axes = [torch.arange(n, dtype=image.dtype) for n in image.shape[2:]]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def _vfa_double_conv(prefix: str, ours: str) -> list[tuple[str, str]]:
    """VFA's ``DoubleConv3d`` (conv1, norm1, conv2, norm2) → our ``Sequential`` (0, 1, 3, 4; 2, 5 = activations)."""
    layers = (("conv1", 0), ("norm1", 1), ("conv2", 3), ("norm2", 4))
    return [(prefix + name + r"\.", f"{ours}{index}.") for name, index in layers]


_VFA_RENAME = _subs(
    [
        (r"^encoder\.in_norm\.", "encoder.stem.0."),
        (r"^encoder\.in_conv\.", "encoder.stem.1."),
        *_vfa_double_conv(r"^encoder\.encoder_conv\.(\d+)\.", r"encoder.down.\1."),
        *_vfa_double_conv(r"^encoder\.bottleneck_conv\.", "encoder.down.4."),
        *_vfa_double_conv(r"^encoder\.decoder_conv\.(\d+)\.", r"encoder.merge.\1."),
        (r"^encoder\.upsampling\.(\d+)\.conv\.", r"encoder.up.\1.0."),
        (r"^encoder\.upsampling\.(\d+)\.norm\.", r"encoder.up.\1.1."),
        (r"^decoder\.project\.(\d+)\.", r"levels.\1.proj."),
        (r"^decoder\.beta$", "beta"),
    ]
)


# ------------------------------------------------------------------------------------------------ TransMorph


def _build_transmorph(shape: tuple[int, int, int]) -> tuple[nn.Module, Runner]:
    """``OASIS/TransMorph/models/TransMorph.py`` with ``CONFIGS['TransMorph']`` (46,556,979 parameters), its
    spatial transformer sized ``shape``; the runner returns the raw flow head output, which ours reproduces."""
    folder = _checkout("DIRBENCH_UPSTREAM_TRANSMORPH") / "OASIS" / "TransMorph"
    with _on_path(folder):  # its modules import one another as ``models.*``
        tm = _import("models.TransMorph", "TransMorph's OASIS model; needs timm and ml_collections importable")
    config = copy.deepcopy(tm.CONFIGS["TransMorph"])
    config.img_size = tuple(shape)
    with _quiet(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.meshgrid")
        model = tm.TransMorph(config)

    def run(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return model(torch.cat([moving, fixed], dim=1))[1], None

    return model, run


_TRANSMORPH_RENAME = _subs(
    [
        (r"^transformer\.patch_embed\.proj\.", "encoder.patch_embed."),
        (r"^transformer\.patch_embed\.norm\.", "encoder.patch_norm."),
        (r"^transformer\.layers\.(\d+)\.downsample\.", r"encoder.stages.\1.merge."),
        (r"^transformer\.layers\.(\d+)\.", r"encoder.stages.\1."),
        (r"^transformer\.norm(\d+)\.", r"encoder.stages.\1.norm."),
        (r"attn\.relative_position_bias_table$", "attn.rel_bias"),
        (r"\.mlp\.fc1\.", ".mlp.0."),
        (r"\.mlp\.fc2\.", ".mlp.2."),
        (r"^c1\.", "conv_skip."),
        (r"^c2\.", "unused_conv_skip."),
        (r"^reg_head\.0\.", "flow."),
        (r"^(up\d\.conv\d\.0\.weight)$", r"\1"),
    ]
)


# ------------------------------------------------------------------------------------------------- API

@dataclass(frozen=True)
class Heads:
    """The flow-head parameters of an official network (regex on its names) and the default gain on their random
    weights, chosen so that the default shape's displacement reaches a few voxels (2 … 10)."""

    pattern: str
    gain: float


#: Every method this module can build (our registry names).
METHODS: dict[str, Heads] = {
    "dp-conv-mf": Heads(r"out_block", 0.2),
    "dp-conv-mfc": Heads(r"out_block", 0.2),
    "dp-conv-c": Heads(r"out_block", 0.2),
    "dp-vfa": Heads(r"$^", 1.0),  # no learnt head: each level moves ≤ 1 voxel of its own
    "dp-convic-mf": Heads(r"out_block", 0.5),
    "dp-convic-c": Heads(r"out_block", 0.5),
    "sitreg": Heads(r"final_convolution", 1.0),
    "voxelmorph": Heads(r"^flow\.", 10.0),
    "vfa": Heads(r"^decoder\.beta$", 10.0),  # β (init 0.1) scales every level's attended offset
    "transmorph": Heads(r"^reg_head\.", 3.0),
}
#: Inverse-consistent methods (they also return the inverse; their parity is limited by the solver tolerance).
IC_METHODS = ("dp-convic-mf", "dp-convic-c", "sitreg")
#: Methods with no builder here, and why.
NOT_BUILT: dict[str, str] = {
    "dp-convic-mfc": "our addition: the paper's code has no DP-ConvIC-MFC",
}


def default_shape(method: str) -> tuple[int, int, int]:
    """A small, non-cubic test volume every builder accepts for ``method``."""
    if method == "sitreg":
        return (24, 32, 20)
    if method == "transmorph":
        return (64, 96, 64)  # sides divisible by 32; the 16×24×16 token grid is padded to the (5, 6, 7) windows
    return (32, 48, 32)  # DP and VFA need sides divisible by 16, VoxelMorph by 16 as well


def build_pair(
    method: str,
    shape: Sequence[int] | None = None,
    *,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    gain_scale: float = 1.0,
    solver_tol: float = 1e-6,
    max_iter: int = 500,
) -> Pair:
    """Build ``method``'s official network and ours, with the same randomised weights, in ``dtype``, eval mode.

    Args:
        method: a key of :data:`METHODS` (our registry name).
        shape: input size ``(X, Y, Z)`` (default :func:`default_shape`).
        seed: seed of :func:`randomise_`.
        gain_scale: factor on the method's default flow-head gain (:data:`METHODS`; sets the displacement size).
        solver_tol, max_iter: forward fixed-point inversion stop rule (max-abs change, voxels) of both
            implementations, for the inverse-consistent models.

    Raises:
        UpstreamUnavailable: the checkout or one of its dependencies is missing.
    """
    if method not in METHODS:
        raise KeyError(f"no upstream builder for {method!r}; known: {sorted(METHODS)}")
    size = tuple(int(n) for n in (shape or default_shape(method)))
    solver = {"tol": solver_tol, "max_iter": max_iter}
    with _default_dtype(dtype):  # composable-mapping keeps its grids' affine matrices in the default dtype
        if method == "sitreg":
            official, run_official = _build_sitreg(size, solver_tol, max_iter)
        elif method == "voxelmorph":
            official, run_official = _build_voxelmorph(size)
        elif method == "vfa":
            official, run_official = _build_vfa(size)
        elif method == "transmorph":
            official, run_official = _build_transmorph(size)
        else:
            official, run_official = _build_dp(method, size, solver_tol, max_iter)
    if method == "sitreg":
        ours: nn.Module = methods.build("sitreg", img_size=size, forward_solver=solver)
        rename = _SITREG_RENAME
    elif method == "voxelmorph":
        ours = methods.build("voxelmorph", img_size=size)
        rename = _VOXELMORPH_RENAME
    elif method == "vfa":
        ours = methods.build("vfa", img_size=size)
        rename = _VFA_RENAME
    elif method == "transmorph":
        ours = methods.build("transmorph", img_size=size)
        rename = _TRANSMORPH_RENAME
    else:
        extra = {"forward_solver": solver} if method.startswith("dp-convic") else {}
        ours = methods.build(method, img_size=size, **extra)
        rename = _dp_rename(method)
    official = official.to(dtype).eval()
    ours = ours.to(dtype).eval()
    heads = METHODS[method]
    randomise_(official, seed, head=heads.pattern, head_gain=heads.gain * gain_scale)
    transplant(official, ours, rename)

    def run_official_in_dtype(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with _default_dtype(dtype):
            return run_official(moving, fixed)

    def run_ours(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = ours(moving, fixed)
        return out.disp, out.inverse

    return Pair(method, size, official, ours, run_official_in_dtype, run_ours, rename)  # type: ignore[arg-type]


def gradient_gap(pair: Pair, moving: torch.Tensor, fixed: torch.Tensor, floor: float = 1e-4) -> tuple[float, str]:
    """Largest relative gradient difference of the two networks after one backward pass of our training loss.

    Both networks run in eval mode (TransMorph's stochastic depth off) on ``(moving, fixed)``; the loss is
    :func:`methods.losses.registration_loss` on each side's output. For each official parameter ``p`` and its
    counterpart: ``max|g_official − g_ours| / max(max|g_official|, floor · G)`` with ``G`` the largest gradient
    entry of the whole network (the floor keeps parameters whose gradient is zero in exact arithmetic, such as
    conv biases before an InstanceNorm, from dividing round-off by round-off). Returns ``(gap, official name)``.
    """
    from methods.losses import registration_loss
    from methods.registry import RegistrationOutput

    grads = []
    for model, run in ((pair.official, pair.run_official), (pair.ours, pair.run_ours)):
        model.eval()
        model.zero_grad(set_to_none=True)
        disp, inverse = run(moving, fixed)
        registration_loss(moving, fixed, RegistrationOutput(disp, inverse))[0].backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    official, ours = grads
    if len(ours) != len(official):
        raise RuntimeError(f"{len(ours)} parameters have gradients on our side, {len(official)} on the official one")
    scale = max(float(g.abs().max()) for g in official.values()) * floor
    worst, where = 0.0, ""
    for name, g in official.items():
        mine = ours.get(pair.rename(name) or "")
        if mine is None:
            raise RuntimeError(f"{name} has a gradient on the official side only")
        gap = float((g.reshape(mine.shape) - mine).abs().max()) / max(float(g.abs().max()), scale)
        if gap >= worst:
            worst, where = gap, name
    return worst, where
