"""A one-time check of the Triton kernels against the PyTorch reference, for the ``"auto"`` backend.

A kernel that compiles can still fail on a GPU it was never run on: a Triton or driver version that
rejects it, a miscompilation, an out-of-resources launch. So before the ``"auto"`` backend first
hands a (device, dtype) to the kernels it runs them once on a small input, forward, inverse and
the backward of both, and compares them with :mod:`flowkit.kernels.reference`; on an exception or a
mismatch it warns once and uses the reference for that device and dtype from then on (see
:func:`flowkit.kernels.backend.resolve_backend`). A forced ``backend="triton"`` skips the check and
fails loudly instead.
"""

from __future__ import annotations

import torch

from flowkit.kernels.reference import affine_backward_formula, affine_reference

__all__ = ["check_triton_kernels"]


def _mismatch(got: torch.Tensor, expected: torch.Tensor, tolerance: float) -> str | None:
    got, expected = got.detach().float().cpu(), expected.detach().float().cpu()
    if got.shape != expected.shape:
        return f"shape {tuple(got.shape)} instead of {tuple(expected.shape)}"
    if torch.allclose(got, expected, rtol=tolerance, atol=tolerance):
        return None
    return f"off by up to {(got - expected).abs().nan_to_num(float('inf')).max().item():.3g} (tolerance {tolerance:.1g})"


def check_triton_kernels(device: torch.device | str, dtype: torch.dtype, h_dtype: torch.dtype | None = None) -> str | None:
    """Run the Triton kernels once on a small input against the reference; what failed, or ``None``.

    Forward and inverse, each with its fused backward (gradients of the output and of the log-det
    for ``x`` and ``h``), on a ``(2, 3, 5, 7)`` input whose odd plane leaves partial, masked tiles.
    The kernels compute in float32 and round once, as the reference does: results must agree to
    two units in the last place of a 16-bit dtype, to 1e-5 in float32.

    Args:
        device: where to run (a CUDA device; the CPU only under Triton's interpreter).
        dtype: the dtype of ``x``.
        h_dtype: the dtype of ``h`` (default ``dtype``).

    Returns:
        ``None`` when everything matched; otherwise one line naming the failing step and why (the
        exception, or the largest difference).

    Example:
        >>> import torch
        >>> from flowkit.kernels.self_check import check_triton_kernels
        >>> if torch.cuda.is_available():   # on a CPU the kernels run only under the interpreter
        ...     print(check_triton_kernels("cuda", torch.bfloat16))
        ... else:
        ...     print(None)
        None
    """
    # Whatever the caller's context (autograd, autocast), the check compares plain float results.
    with torch.no_grad(), torch.autocast(torch.device(device).type, enabled=False):
        return _check(device, dtype, h_dtype or dtype)


def _check(device: torch.device | str, dtype: torch.dtype, h_dtype: torch.dtype) -> str | None:
    # Imported here (it imports triton, which only a check on a GPU route needs), and like every
    # other step below, a failure is reported: a broken Triton install is a reason to fall back too.
    try:
        from flowkit.kernels import triton_affine
    except Exception as error:
        return f"importing flowkit.kernels.triton_affine raised {type(error).__name__}: {error}"

    # Its own generator: the check leaves the global random state as it was.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, generator=gen).to(device, dtype)
    h = (2.0 * torch.randn(2, 6, 5, 7, generator=gen)).to(device, h_dtype)
    grad_out = torch.randn(2, 3, 5, 7, generator=gen).to(device, dtype)
    grad_logdet = torch.randn(2, generator=gen).to(device)
    # Two units in the last place of a float16/bfloat16 result (both sides round a float32 value
    # once); for float32 results, room for another summation order of the log-det.
    x_tolerance, h_tolerance = (max(2 * torch.finfo(t).eps, 1e-5) for t in (dtype, h_dtype))
    for inverse in (False, True):
        direction = "inverse" if inverse else "forward"
        options = dict(eps=1e-4, layout="cross", inverse=inverse)
        step = f"the {direction} kernel"
        # Any exception, whatever raises it (Triton's compiler, the driver, a launch), means the
        # kernels cannot be trusted on this device: it is reported, not propagated.
        try:
            got = triton_affine.affine_forward(x, h, **options)
            step = f"the {direction} map's backward kernel"
            got_grads = triton_affine.affine_backward(x, h, grad_out, grad_logdet, **options)
        except Exception as error:
            return f"{step} raised {type(error).__name__}: {error}"
        expected = affine_reference(x, h, **options)
        expected_grads = affine_backward_formula(x, h, grad_out, grad_logdet, **options)
        checks = (("output", f"the {direction} kernel", got[0], expected[0], x_tolerance),
                  ("log-det", f"the {direction} kernel", got[1], expected[1], 1e-5),
                  ("dx", f"the {direction} map's backward kernel", got_grads[0], expected_grads[0], x_tolerance),
                  ("dh", f"the {direction} map's backward kernel", got_grads[1], expected_grads[1], h_tolerance))
        for what, kernel, value, reference, tolerance in checks:
            problem = _mismatch(value, reference, tolerance)
            if problem is not None:
                return f"{kernel}'s {what} is {problem}"
    return None
