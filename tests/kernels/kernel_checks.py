"""Comparisons shared by the kernel tests."""

from __future__ import annotations

import torch
from torch import Tensor

KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
"""Where the kernel tests run the kernels: the GPU if there is one, else the CPU through the interpreter."""

MANTISSA_BITS = {torch.float16: 10, torch.bfloat16: 7}


def ulp(values: Tensor) -> Tensor:
    """The spacing of ``values``' dtype (float16/bfloat16) at each value, as float32."""
    bits = MANTISSA_BITS[values.dtype]
    v = values.float().abs()
    _, exponent = torch.frexp(v)                       # v = m * 2**exponent, 0.5 <= m < 1
    smallest = torch.finfo(values.dtype).tiny          # below it, the spacing stays that of `tiny`
    _, tiny_exponent = torch.frexp(torch.tensor(smallest))
    exponent = torch.where(v == 0, tiny_exponent, torch.maximum(exponent, tiny_exponent))
    return torch.ldexp(torch.ones_like(v), exponent - 1 - bits)


def assert_close(actual: Tensor, expected: Tensor, *, fp32_atol: float = 1e-5, what: str = "") -> None:
    """float32/64: allclose (rtol 1e-5); float16/bfloat16: within one ulp of the dtype.

    Low-precision outputs of the kernel and of the reference are both float32 results rounded once,
    so they may land one ulp apart; ``fp32_atol`` covers the float32 rounding when a result is the
    small difference of larger terms.
    """
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().cpu(), expected.detach().cpu()
    if e.dtype in MANTISSA_BITS:
        diff = (a.float() - e.float()).abs()
        allowed = ulp(e) + fp32_atol
        worst = (diff - allowed).max()
        assert worst <= 0, f"{what}: off by more than one ulp (worst excess {worst.item():.3g})"
    else:
        torch.testing.assert_close(a, e, rtol=1e-5, atol=fp32_atol, msg=lambda m: f"{what}: {m}")
