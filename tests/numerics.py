"""Shared float64 equivalence check: a module's output and every gradient against a literal reference."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def assert_same_function(
    out: torch.Tensor, ref: torch.Tensor, inputs: Sequence[torch.Tensor], ref_inputs: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
) -> None:
    """``out`` equals ``ref`` (rtol 1e-10) and so do the gradients of a random cotangent with respect to
    ``inputs`` / ``ref_inputs`` (the same tensors, cloned) and the shared ``params`` (rtol 1e-9)."""
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, [*inputs, *params], g, retain_graph=True)
    want = torch.autograd.grad(ref, [*ref_inputs, *params], g)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11)
