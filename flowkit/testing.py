"""``check_flow``: public conformance checks that any flow layer, flowkit's or a user's, can run."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from flowkit.core import Flow

__all__ = ["FlowCheckError", "FlowCheckReport", "check_flow", "perturb_parameters"]

# Round-trip tolerance relative to the data's scale, per dtype: a few hundred ulps of depth.
_ROUNDTRIP_RTOL = {
    torch.float64: 1e-9,
    torch.float32: 2e-4,
    torch.bfloat16: 1e-1,
    torch.float16: 2e-2,
}
_MAX_JACOBIAN_SIZE = 4096


class FlowCheckError(AssertionError):
    """A conformance check failed; the message names the check and the numbers."""


@dataclass(frozen=True)
class FlowCheckReport:
    """What :func:`check_flow` measured (all errors are maxima over the checked samples).

    Args:
        roundtrip_error: ``max |inverse(forward(x)) - x|``, an absolute error in ``x``'s units.
        reverse_roundtrip_error: ``max |forward(inverse(z)) - z|`` for a latent ``z`` near
            ``forward(x)`` (``forward(x)`` plus normal noise of standard deviation 0.01, drawn
            with a fixed seed).
        logdet_error: ``max |logdet - log|det J||`` against the brute-force float64 Jacobian,
            over the first ``jacobian_samples`` samples; 0.0 when none were checked.
        inverse_logdet_error: ``max |logdet_inverse + logdet_forward|``.
        parameters_checked: how many parameter tensors that require grad were checked to
            receive a finite gradient; 0 with ``check_gradients=False``.
    """

    roundtrip_error: float
    """``max |inverse(forward(x)) - x|``."""
    reverse_roundtrip_error: float
    """``max |forward(inverse(z)) - z|`` for a latent ``z`` near ``forward(x)``."""
    logdet_error: float
    """``max |logdet - log|det J||`` against the brute-force float64 Jacobian."""
    inverse_logdet_error: float
    """``max |logdet_inverse + logdet_forward|``."""
    parameters_checked: int
    """How many parameters were checked to receive a finite gradient."""


def _fail(check: str, detail: str) -> None:
    raise FlowCheckError(f"check_flow [{check}] failed: {detail}")


Cond = Tensor | Sequence[Tensor] | None  # one tensor, or one per level (see flowkit.Pick)


def _as(value: Cond, dtype: torch.dtype) -> Cond:
    if value is None or isinstance(value, Tensor):
        return None if value is None else value.to(dtype)
    return [item.to(dtype) for item in value]


def _sample_of(value: Cond, b: int) -> Cond:
    if value is None or isinstance(value, Tensor):
        return None if value is None else value[b : b + 1]
    return [item[b : b + 1] for item in value]


def check_flow(
    flow: Flow,
    x: Tensor,
    cond: Cond = None,
    *,
    jacobian_samples: int = 2,
    check_gradients: bool = True,
) -> FlowCheckReport:
    """Check that ``flow`` honours the :class:`flowkit.Flow` contract at ``x`` (and ``cond``).

    The checks, each on a deep copy (``flow`` itself is left untouched, except that a first
    forward pass runs data-dependent initialisation, as training would):

    1. **invertibility**, both directions: ``inverse(forward(x)) == x`` and
       ``forward(inverse(z)) == z``, within a tolerance that depends on ``x.dtype``;
    2. **log-determinant**: ``logdet`` equals ``log|det J|`` of the brute-force Jacobian
       (``torch.autograd.functional.jacobian`` in float64) for the first ``jacobian_samples``
       samples; keep ``x[0].numel()`` small (at most 4096), or pass ``jacobian_samples=0``;
    3. **inverse log-determinant**: the inverse returns the negative forward logdet, with shape ``(B,)``;
    4. **finiteness and gradients**: outputs are finite, and every parameter that requires grad
       receives a finite gradient from a loss on both outputs.

    Returns a :class:`FlowCheckReport`; raises :class:`FlowCheckError` naming the failed check.

    Args:
        flow: the :class:`flowkit.Flow` to check (anything else raises a :class:`TypeError`).
        x: a batch of inputs, float64, float32, bfloat16 or float16 (other dtypes raise a
            :class:`TypeError`); the round-trip tolerance is looser for the narrower dtypes.
            With ``jacobian_samples > 0``, ``x[0]`` may hold at most 4096 elements, else a
            :class:`ValueError`.
        cond: the conditioning tensor, or a list of them (one per level, for
            :class:`flowkit.Pick`), with ``x``'s batch size, passed to every call (the Jacobian
            check takes one sample at a time); ``None`` (default) for a flow without conditioning.
        jacobian_samples: how many samples, from the first, get the brute-force Jacobian check
            (default 2; 0 skips it).
        check_gradients: run check 4's gradient part, on a copy of ``flow`` in its current
            mode (default ``True``).

    Example:
        >>> import torch
        >>> from flowkit.layers import AffineCoupling
        >>> from flowkit.testing import check_flow
        >>> report = check_flow(AffineCoupling(4), torch.randn(2, 4, 3, 3))
        >>> report.logdet_error < 1e-8
        True
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"check_flow expects a flowkit.Flow, got {type(flow).__name__}")
    dtype = x.dtype
    if dtype not in _ROUNDTRIP_RTOL:
        raise TypeError(f"check_flow expects a floating-point x, got {dtype}")

    flow(x, cond)  # run data-dependent initialisation once, as the first training step would
    model = copy.deepcopy(flow).eval()

    with torch.no_grad():
        y, logdet = model(x, cond)
        if y.numel() != x.numel():
            _fail(
                "shape",
                f"forward maps {tuple(x.shape)} to {tuple(y.shape)}: a dimension-changing layer is "
                "not a bijection",
            )
        if logdet.shape != (x.shape[0],):
            _fail("logdet shape", f"expected ({x.shape[0]},), got {tuple(logdet.shape)}")
        if not (torch.isfinite(y).all() and torch.isfinite(logdet).all()):
            _fail("finite", "forward produced NaN or inf")
        x_back, inv_logdet = model.inverse(y, cond)
        # A latent near forward(x) but not on it, drawn reproducibly, for the reverse round trip.
        noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        z = y + 0.01 * noise.to(y.device, y.dtype)
        x_probe, _ = model.inverse(z, cond)
        z_back, _ = model(x_probe, cond)

    scale_x = max(1.0, float(x.abs().max()))
    scale_z = max(1.0, float(z.abs().max()))
    rtol = _ROUNDTRIP_RTOL[dtype]
    roundtrip = float((x_back.to(torch.float64) - x.to(torch.float64)).abs().max())
    if not roundtrip <= rtol * scale_x:
        _fail("invertibility", f"max |inverse(forward(x)) - x| = {roundtrip:.3g} > {rtol * scale_x:.3g}")
    reverse = float((z_back.to(torch.float64) - z.to(torch.float64)).abs().max())
    if not reverse <= rtol * scale_z:
        _fail("invertibility", f"max |forward(inverse(z)) - z| = {reverse:.3g} > {rtol * scale_z:.3g}")

    inverse_error = float((inv_logdet.to(torch.float64) + logdet.to(torch.float64)).abs().max())
    ld_scale = max(1.0, float(logdet.abs().max()))
    if not inverse_error <= rtol * 10 * ld_scale:
        _fail(
            "inverse logdet",
            f"max |logdet_inverse + logdet_forward| = {inverse_error:.3g} "
            f"(forward {logdet.tolist()}, inverse {inv_logdet.tolist()})",
        )

    logdet_error = _check_jacobian(model, x, cond, jacobian_samples)
    parameters = _check_gradients(flow, x, cond) if check_gradients else 0
    return FlowCheckReport(roundtrip, reverse, logdet_error, inverse_error, parameters)


def _check_jacobian(model: Flow, x: Tensor, cond: Cond, samples: int) -> float:
    size = math.prod(x.shape[1:])
    if samples > 0 and size > _MAX_JACOBIAN_SIZE:  # jacobian_samples=0 skips the check: any size
        raise ValueError(
            f"check_flow computes a dense Jacobian per sample; x[0] has {size} elements, "
            f"use an input with at most {_MAX_JACOBIAN_SIZE}"
        )
    model64 = copy.deepcopy(model).to(torch.float64)
    x64, cond64 = x.to(torch.float64), _as(cond, torch.float64)
    worst = 0.0
    for b in range(min(samples, x.shape[0])):
        xb = x64[b : b + 1]
        cb = _sample_of(cond64, b)

        def single(inp: Tensor, xb: Tensor = xb, cb: Cond = cb) -> Tensor:
            return model64(inp.view_as(xb), cb)[0].flatten()

        with torch.no_grad():
            logdet = float(model64(xb, cb)[1][0])
        jac = torch.autograd.functional.jacobian(single, xb.flatten())
        sign, logabsdet = torch.linalg.slogdet(jac)
        if float(sign) == 0.0:
            _fail("logdet", f"the Jacobian of sample {b} is singular")
        error = abs(logdet - float(logabsdet))
        if not error <= 1e-6 * max(1.0, abs(float(logabsdet))):
            _fail(
                "logdet",
                f"sample {b}: the layer reports logdet {logdet:.10g}, the brute-force float64 "
                f"Jacobian gives {float(logabsdet):.10g} (error {error:.3g})",
            )
        worst = max(worst, error)
    return worst


def _check_gradients(flow: Flow, x: Tensor, cond: Cond) -> int:
    model = copy.deepcopy(flow)
    x = x.detach().clone().requires_grad_(True)
    y, logdet = model(x, cond)
    x_back, inv_logdet = model.inverse(y.detach(), cond)
    loss = (y.float() ** 2).mean() - logdet.float().mean() + (x_back.float() ** 2).mean() + inv_logdet.float().mean()
    loss.backward()
    if x.grad is None or not torch.isfinite(x.grad).all():
        _fail("gradients", "the input's gradient is missing or not finite")
    checked = 0
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.grad is None:
            _fail("gradients", f"parameter {name!r} received no gradient")
        if not torch.isfinite(param.grad).all():
            _fail("gradients", f"parameter {name!r} has a non-finite gradient")
        checked += 1
    return checked


@torch.no_grad()
def perturb_parameters(module: torch.nn.Module, scale: float = 0.1, generator: torch.Generator | None = None) -> None:
    """Add ``scale * N(0, 1)`` noise to every floating-point parameter of ``module``, in place.

    Most layers start as (or close to) the identity, where a wrong log-determinant or inverse can
    hide; property tests perturb parameters away from that initialisation first. ActNorm layers
    are marked initialised, so the perturbation is not overwritten by data-dependent init.

    Args:
        module: the module to perturb, in place. Every boolean buffer whose name ends in
            ``initialized`` is set to ``True``.
        scale: the standard deviation of the added noise (default 0.1).
        generator: the CPU generator the noise is drawn from (the noise is then moved to each
            parameter's device); ``None`` (default) for torch's global generator.

    Example:
        >>> import torch
        >>> from flowkit.layers import AffineCoupling
        >>> from flowkit.testing import perturb_parameters
        >>> layer = AffineCoupling(4)
        >>> perturb_parameters(layer, 0.1, torch.Generator().manual_seed(0))
        >>> bool(layer.subnet[-1].weight.abs().sum() > 0)
        True
    """
    for param in module.parameters():
        if param.is_floating_point():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.add_(scale * noise.to(param.device))
    for buffer_name, buffer in module.named_buffers():
        if buffer_name.endswith("initialized") and buffer.dtype == torch.bool:
            buffer.fill_(True)
