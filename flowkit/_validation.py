"""Input checks shared by the layers: each names what was expected and what was given."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_channels(layer: str, x: Tensor, channels: int, *, what: str = "input") -> None:
    """Raise unless ``x`` is a batched tensor with ``channels`` channels in dimension 1."""
    if x.dim() < 2:
        raise ValueError(
            f"{layer} expects a batched {what} of shape (B, {channels}, ...), "
            f"got a tensor of shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"{layer} expects {channels} channels in its {what}, got {x.shape[1]} "
            f"(shape {tuple(x.shape)})"
        )


def check_cond(layer: str, cond: Tensor | None, channels: int, x: Tensor) -> Tensor:
    """Raise unless ``cond`` is a (B, channels, *spatial of x) tensor; return it."""
    expected = (x.shape[0], channels, *x.shape[2:])
    if cond is None:
        raise ValueError(f"{layer} expects a conditioning tensor of shape {expected}, got None")
    if tuple(cond.shape) != expected:
        raise ValueError(
            f"{layer} expects a conditioning tensor of shape {expected}, "
            f"got {tuple(cond.shape)}"
        )
    return cond


def check_no_cond(layer: str, cond: Tensor | None) -> None:
    """Raise if an unconditional layer is handed a conditioning tensor (a likely wiring bug)."""
    if cond is not None:
        raise ValueError(
            f"{layer} is unconditional but was given a "
            f"conditioning tensor of shape {tuple(cond.shape)}"
        )


def check_finite(layer: str, x: Tensor, *, what: str = "input") -> None:
    """Raise if ``x`` holds NaN or infinity. Costs a device sync: use off the hot path."""
    if torch.compiler.is_compiling():
        return
    # NaN and infinity propagate through a sum, so a finite sum proves a finite tensor in one
    # reduction; only a non-finite sum (a bad value, or finite values overflowing) needs the exact
    # element-wise test.
    if not math.isfinite(float(x.sum())) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{layer} got a non-finite {what}: {bad} NaN/inf values in {tuple(x.shape)}")
