"""``check_flow``: public conformance checks that any flow layer, flowkit's or a user's, can run."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
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
    """What :func:`check_flow` measured; errors are absolute maxima over the checked samples."""

    roundtrip_error: float
    """``max |inverse(forward(x)) - x|``."""
    reverse_roundtrip_error: float
    """``max |forward(inverse(z)) - z|`` for ``z`` = ``forward(x)`` plus seeded noise of std 0.01."""
    logdet_error: float
    """``max |logdet - log|det J||`` against the float64 Jacobian (0.0 when none was checked)."""
    inverse_logdet_error: float
    """``max |logdet_inverse + logdet_forward|``."""
    parameters_checked: int
    """How many parameters were checked to receive a finite gradient (0 without the check)."""


def _fail(check: str, detail: str) -> None:
    raise FlowCheckError(f"check_flow [{check}] failed: {detail}")


Cond = Tensor | Sequence[Tensor] | None  # one tensor, or one per level (see flowkit.Pick)


def _map_cond(value: Cond, fn: Callable[[Tensor], Tensor]) -> Cond:
    """``fn`` applied to the conditioning tensor, or to each of a list of them."""
    if value is None or isinstance(value, Tensor):
        return None if value is None else fn(value)
    return [fn(item) for item in value]


def check_flow(
    flow: Flow,
    x: Tensor,
    cond: Cond = None,
    *,
    jacobian_samples: int = 2,
    check_gradients: bool = True,
) -> FlowCheckReport:
    """Check that ``flow`` honours the :class:`flowkit.Flow` contract at ``x`` (and ``cond``).

    Checks, on a deep copy (``flow`` itself only runs one forward, for data-dependent init):

    1. **invertibility** both ways, within a tolerance that depends on ``x.dtype``;
    2. **log-determinant** against the float64 brute-force Jacobian of the first
       ``jacobian_samples`` samples;
    3. **inverse log-determinant**: the negative of the forward one, shape ``(B,)``;
    4. **finiteness and gradients**: every parameter that requires grad gets a finite gradient.

    Raises :class:`FlowCheckError` naming the failed check.

    Args:
        flow: the :class:`flowkit.Flow` to check.
        x: a float64, float32, bfloat16 or float16 batch; ``x[0]`` at most 4096 elements while
            ``jacobian_samples > 0``.
        cond: the conditioning tensor, a list of them (for :class:`flowkit.Pick`), or ``None``.
        jacobian_samples: how many samples get the Jacobian check (0 skips it).
        check_gradients: run check 4's gradient part.

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
    x64, cond64 = x.to(torch.float64), _map_cond(cond, lambda t: t.to(torch.float64))
    worst = 0.0
    for b in range(min(samples, x.shape[0])):
        xb = x64[b : b + 1]
        cb = _map_cond(cond64, lambda t, b=b: t[b : b + 1])

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

    Use it before a property test: a wrong log-determinant or inverse can hide at the identity
    most layers start from. ``*initialized`` buffers are set, so ActNorm keeps the noise.

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
