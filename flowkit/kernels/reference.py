"""The PyTorch reference of the fused affine op: the specification the kernels are tested against."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["TRITON_DTYPES", "affine_backward_formula", "affine_reference", "compute_dtype", "split_shift_scale"]

TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""Tensor dtypes the Triton kernels accept (they compute in float32, as this reference does)."""


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the op computes in for input ``x``: float64 for float64, float32 otherwise.

    Args:
        x: the op's input; only its dtype is read (float16 and bfloat16 inputs are computed in
            float32).

    Returns:
        ``torch.float64`` or ``torch.float32``.

    Example:
        >>> import torch
        >>> from flowkit.kernels.reference import compute_dtype
        >>> compute_dtype(torch.zeros(1, dtype=torch.bfloat16))
        torch.float32
        >>> compute_dtype(torch.zeros(1, dtype=torch.float64))
        torch.float64
    """
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def split_shift_scale(h: Tensor, layout: str) -> tuple[Tensor, Tensor]:
    """Views of the shift and the raw scale inside ``h`` (2C channels in dimension 1), no copies.

    ``"cross"``: shift at even channels, raw scale at odd ones (SRFlow/LLFlow's ``split_feature``);
    ``"half"``: the first C channels are the shift, the last C the raw scale.

    Args:
        h: ``(B, 2C, ...)`` shift and raw scale; an odd channel count raises a
            :class:`ValueError`.
        layout: ``"cross"`` or ``"half"``; anything else raises a :class:`ValueError`.

    Returns:
        ``(shift, raw)``, each ``(B, C, ...)`` and a view of ``h``.

    Example:
        >>> import torch
        >>> from flowkit.kernels.reference import split_shift_scale
        >>> h = torch.arange(4.0).view(1, 4)
        >>> split_shift_scale(h, "cross"), split_shift_scale(h, "half")
        ((tensor([[0., 2.]]), tensor([[1., 3.]])), (tensor([[0., 1.]]), tensor([[2., 3.]])))
    """
    if h.shape[1] % 2:
        raise ValueError(f"split_shift_scale expects an even number of channels (shift, scale), got {h.shape[1]}")
    # unbind and split give the same views as strided slices, but their backward builds the
    # gradient of h as one tensor; two slices would each zero-fill an h-sized tensor and add them.
    if layout == "cross":
        shift, raw = h.unflatten(1, (h.shape[1] // 2, 2)).unbind(2)
        return shift, raw
    if layout == "half":
        shift, raw = h.chunk(2, dim=1)
        return shift, raw
    raise ValueError(f"layout must be 'cross' or 'half', got {layout!r}")


def affine_reference(
    x: Tensor, h: Tensor, eps: float = 1e-4, layout: str = "cross", inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """``scale = sigmoid(raw + 2) + eps``; forward ``y = (x + shift) * scale``, inverse ``y / scale - shift``.

    Computed in float32 (float64 for float64 inputs); ``y`` has ``x``'s dtype, and ``logdet``
    (``+sum(log scale)`` forward, ``-sum`` inverse, per sample) is float32 or float64. ``shift`` and
    ``raw`` are the halves of ``h`` given by :func:`split_shift_scale`. Plain PyTorch ops, so
    autograd (to any order) and ``torch.compile`` see through it.

    Args:
        x: ``(B, C, ...)`` input (images ``(B, C, H, W)`` or vectors ``(B, C)``).
        h: ``(B, 2C, ...)`` shift and raw scale, the same batch and spatial sizes as ``x``.
        eps: lower bound added to the sigmoid scale (default ``1e-4``), so the scale lies in
            ``(eps, 1 + eps)``.
        layout: how ``h`` holds the two halves, ``"cross"`` (default) or ``"half"`` (see
            :func:`split_shift_scale`).
        inverse: apply the inverse map (default ``False``).

    Returns:
        ``(y, logdet)``: ``y`` of ``x``'s shape and dtype, and ``logdet`` of shape ``(B,)``.

    Example:
        >>> import math, torch
        >>> from flowkit.kernels.reference import affine_reference
        >>> x, h = torch.ones(1, 1, 2, 2), torch.zeros(1, 2, 2, 2)      # shift 0, raw scale 0
        >>> y, logdet = affine_reference(x, h, eps=0.0)
        >>> s = 1 / (1 + math.exp(-2))                                    # sigmoid(0 + 2)
        >>> torch.allclose(y, torch.full_like(x, s))
        True
        >>> math.isclose(logdet.item(), 4 * math.log(s), rel_tol=1e-6)
        True
    """
    compute = compute_dtype(x)
    shift, raw = split_shift_scale(h, layout)
    shift = shift.to(compute)
    scale = torch.sigmoid(raw.to(compute) + 2.0) + eps
    xc = x.to(compute)
    if inverse:
        y = xc / scale - shift
    else:
        y = (xc + shift) * scale
    logdet = torch.log(scale).flatten(1).sum(1)
    return y.to(x.dtype), (-logdet if inverse else logdet)


def affine_backward_formula(
    x: Tensor, h: Tensor, grad_out: Tensor, grad_logdet: Tensor, *, eps: float, layout: str,
    inverse: bool,
) -> tuple[Tensor, Tensor]:
    r"""The fused backward of :func:`fused_affine` in PyTorch: gradients ``(dx, dh)``.

    ``x`` and ``h`` are the inputs of the differentiated call, ``grad_out`` and ``grad_logdet`` the
    gradients of its two outputs. With :math:`\sigma = \sigma(\text{raw} + 2)`, :math:`s = \sigma
    + \epsilon` and :math:`g_y, g_l` the output gradients:

    * forward: ``dx = dshift = g_y s`` and ``ds = g_y (x + shift) + g_l / s``,
    * inverse: ``dx = g_y / s``, ``dshift = -g_y`` and ``ds = -(g_y x / s + g_l) / s``,

    and ``draw = ds * sigma * sigmoid(-raw - 2)``, which is :math:`\sigma (1 - \sigma)` without the
    cancellation of ``1 - sigma`` once a large raw scale rounds ``sigma`` to 1. This is the formula
    the Triton backward kernel implements; it is also the custom op's backward on the ``"torch"``
    backend.

    Args:
        x: the ``(B, C, ...)`` input of the differentiated call.
        h: its ``(B, 2C, ...)`` shift and raw scale.
        grad_out: gradient of the call's output, ``x``'s shape.
        grad_logdet: gradient of the call's log-det, ``(B,)``.
        eps: the call's ``eps``.
        layout: the call's ``layout``.
        inverse: whether the call was the inverse map.

    Returns:
        ``(dx, dh)`` in the dtypes and shapes of ``x`` and ``h`` (both contiguous).

    Example:
        >>> import torch
        >>> from flowkit.kernels import affine_backward_formula
        >>> from flowkit.kernels.reference import affine_reference
        >>> x, h = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 6, 4, dtype=torch.float64)
        >>> gy, gl = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
        >>> dx, dh = affine_backward_formula(x, h, gy, gl, eps=1e-4, layout="cross", inverse=True)
        >>> xr, hr = x.clone().requires_grad_(), h.clone().requires_grad_()
        >>> out, logdet = affine_reference(xr, hr, inverse=True)
        >>> ex, eh = torch.autograd.grad((out, logdet), (xr, hr), (gy, gl))
        >>> torch.allclose(dx, ex), torch.allclose(dh, eh)
        (True, True)
    """
    compute = compute_dtype(x)
    shift, raw = split_shift_scale(h, layout)
    z = raw.to(compute) + 2.0
    sig = torch.sigmoid(z)
    scale = sig + eps
    gy = grad_out.to(compute)
    gl = grad_logdet.to(compute).view(-1, *([1] * (x.dim() - 1)))
    xc = x.to(compute)
    if inverse:
        dx = gy / scale
        dshift = -gy
        dscale = -(dx * xc + gl) / scale
    else:
        dx = gy * scale
        dshift = dx
        dscale = gy * (xc + shift.to(compute)) + gl / scale
    # 1 - sig as sigmoid(-z): the subtraction cancels to 0 once sig rounds to 1 (z > ~17 in float32).
    draw = dscale * sig * torch.sigmoid(-z)
    dh = torch.empty(h.shape, dtype=h.dtype, device=h.device)
    dh_shift, dh_raw = split_shift_scale(dh, layout)
    dh_shift.copy_(dshift)
    dh_raw.copy_(draw)
    return dx.to(x.dtype).contiguous(), dh
