"""LUMIR-2024 validation submissions: packaging, a validator, the zero submission, local evaluation.

The LUMIR brain-MRI task of Learn2Reg 2024 (Chen et al., https://github.com/JHU-MedImage-Reg/LUMIR_L2R)
scores a zip of 38 displacement fields on grand-challenge. Facts used here (spec §5, §6, §8):

- one file per validation pair of ``LUMIR_dataset.json``, named ``disp_{fixed}_{moving}.nii.gz`` (fixed id
  first, e.g. ``disp_3455_3454.nii.gz``); the long form ``disp_3455_0000_3454_0000.nii.gz`` is accepted by
  the organisers (LUMIR_L2R issue #2), although the evaluator's file check as published (evaluation.py
  @ b4c8c49) only looks for the short name when both modalities are ``0000``: the validator accepts the
  long form with a warning and the packager always writes the short one; only ``.nii.gz`` is read (issue
  #2); one missing file aborts the evaluation;
- each field ``[160, 224, 192, 3]`` (or ``[3, 160, 224, 192]``, which the evaluator transposes), voxel
  units on the fixed grid, pull-back ``warped(x) = moving(x + u(x))``, float32; the header is ignored;
- the README layout is ``folder.zip -> folder/disp_*.nii.gz`` (one top folder);
- the evaluator runs two configs: segmentation (29 pairs: NDV, DSC, HD95 over 133 labels incl. 0) and
  landmarks (9 pairs: NDV, TRE); per metric it reports ``mean``, ``std`` (ddof 0) and the 0.3 quantile
  ("30") of the case values over the cases that have that metric.

Modules: :mod:`~dirbench.lumir.pairs` (the bundled official files and the validation pairs),
:mod:`~dirbench.lumir.package` (:func:`package_submission`), :mod:`~dirbench.lumir.validate`
(:func:`validate_submission`; zip members are streamed one at a time, gzip decompressed in chunks, so
validating a 3 GB submission never holds a whole field — the module docstring says why this needs its own
member reader), :mod:`~dirbench.lumir.zero` (:func:`zero_submission`) and :mod:`~dirbench.lumir.evaluate`
(:func:`evaluate_submission`: these metrics computed locally through :mod:`dirbench.metrics` on whatever
annotations the user has, one field at a time; :data:`LEADERBOARD_METRICS` maps the leaderboard's metric
names to ours).
"""
from dirbench.lumir.evaluate import DSC, HD95, LEADERBOARD_METRICS, NDV, TRE, aggregate, evaluate_submission
from dirbench.lumir.package import package_submission
from dirbench.lumir.pairs import LUMIR_SHAPE, LumirPair, config_pairs, resource_path, validation_pairs
from dirbench.lumir.validate import (
    MemberData,
    MemberError,
    Problem,
    ValidationReport,
    iter_fields,
    read_member,
    report_lines,
    validate_submission,
)
from dirbench.lumir.zero import zero_submission

__all__ = [
    "DSC",
    "HD95",
    "LEADERBOARD_METRICS",
    "LUMIR_SHAPE",
    "NDV",
    "TRE",
    "LumirPair",
    "MemberData",
    "MemberError",
    "Problem",
    "ValidationReport",
    "aggregate",
    "config_pairs",
    "evaluate_submission",
    "iter_fields",
    "package_submission",
    "read_member",
    "report_lines",
    "resource_path",
    "validate_submission",
    "validation_pairs",
    "zero_submission",
]
