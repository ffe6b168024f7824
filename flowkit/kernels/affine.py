"""``fused_affine``: the sigmoid-scaled affine map of the coupling layers as one fused op.

The public function validates its arguments, picks a backend (see :mod:`flowkit.kernels.backend`)
and then runs the PyTorch reference, which autograd differentiates and ``torch.compile`` sees
through, or the Triton kernels: in eager mode through a small ``autograd.Function`` (the cheapest
route on the host), under ``torch.compile`` through the opaque custom op
``torch.ops.flowkit.fused_affine``, whose forward and fused backward
(``torch.ops.flowkit.fused_affine_backward``) are the kernels. Under ``torch.compile`` the
``"auto"`` backend picks the reference, so that Inductor fuses the affine map with its neighbours
(the concatenation of the coupling's halves, the sub-network's last convolution's bias) instead of
stopping at an opaque node.

The custom op has a fake implementation (for ``torch.compile`` and meta tensors) and an autograd
formula, so ``torch.compile(fullgraph=True)`` keeps it as one node in the forward and one in the
backward graph. Its ``backend`` argument is ``"triton"`` or ``"torch"``; the ``"torch"``
implementation computes the same op and the same fused backward formula in PyTorch, for any device
and float64 (that is what ``gradcheck`` checks the formula with). Double backward through the op is
not supported; the reference path supports it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowkit.kernels.backend import resolve_backend
from flowkit.kernels.reference import affine_backward_formula, affine_reference, compute_dtype

__all__ = ["fused_affine", "fused_affine_coupling"]

_LAYOUTS = ("cross", "half")


def _check_args(x: Tensor, h: Tensor, layout: str) -> None:
    # Runs on every call of every coupling layer, between large tensor ops that leave the CPU caches
    # cold: a few cheap comparisons, and the detailed messages only once something is wrong.
    xs, hs = x.shape, h.shape
    if (
        layout not in _LAYOUTS or len(xs) < 2 or len(hs) != len(xs) or hs[1] != 2 * xs[1]
        or hs[0] != xs[0] or hs[2:] != xs[2:] or not (x.is_floating_point() and h.is_floating_point())
    ):
        _raise_for_args(x, h, layout)


def _raise_for_args(x: Tensor, h: Tensor, layout: str) -> None:
    if layout not in _LAYOUTS:
        raise ValueError(f"fused_affine: layout must be 'cross' or 'half', got {layout!r}")
    if x.dim() < 2:
        raise ValueError(f"fused_affine expects x of shape (B, C, ...), got shape {tuple(x.shape)}")
    expected = (x.shape[0], 2 * x.shape[1], *x.shape[2:])
    if tuple(h.shape) != expected:
        raise ValueError(
            f"fused_affine expects h of shape {expected} (shift and raw scale for each of x's "
            f"{x.shape[1]} channels) for x of shape {tuple(x.shape)}, got {tuple(h.shape)}"
        )
    for what, t in (("x", x), ("h", h)):
        if not t.is_floating_point():
            raise TypeError(f"fused_affine expects floating-point tensors, {what} is {t.dtype}")


def fused_affine(
    x: Tensor,
    h: Tensor,
    *,
    eps: float = 1e-4,
    layout: str = "cross",
    inverse: bool = False,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    r"""Apply the affine map encoded in ``h`` to ``x``; return ``(y, logdet)``.

    With ``shift`` and ``raw`` the two halves of ``h`` (``layout="cross"``: shift at even channels,
    raw scale at odd ones, as SRFlow/LLFlow lay them out; ``"half"``: shifts, then raw scales) and
    :math:`s = \sigma(\text{raw} + 2) + \epsilon`:

    * forward: ``y = (x + shift) * s`` and ``logdet = sum(log s)`` per sample,
    * ``inverse=True``: ``y = x / s - shift`` and ``logdet = -sum(log s)``.

    :func:`flowkit.kernels.reference.affine_reference` is the specification. Computed in float32
    (float64 for float64 ``x``); ``y`` has ``x``'s dtype, ``logdet`` is float32 (float64) of shape
    ``(B,)``. ``h`` is read through strides (no copies of its halves); ``x`` may be any view, e.g.
    the channel slice ``x[:, split:]`` of a coupling layer.

    Backends (see :mod:`flowkit.kernels.backend`): ``"auto"`` uses the process-wide default, which
    by default picks the Triton kernels for CUDA tensors in eager mode and the PyTorch reference
    elsewhere (on CPU this *is* eager PyTorch; under ``torch.compile`` Inductor generates its own
    fused kernel from it); ``"triton"`` and ``"torch"`` force one.

    Args:
        x: ``(B, C, ...)`` input (images ``(B, C, H, W)`` or vectors ``(B, C)``).
        h: ``(B, 2C, ...)`` shift and raw scale, same batch and spatial sizes as ``x``.
        eps: lower bound added to the sigmoid scale.
        layout: ``"cross"`` or ``"half"``.
        inverse: apply the inverse map.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        ``(y, logdet)``.

    Example:
        >>> import torch
        >>> from flowkit.kernels import fused_affine
        >>> x, h = torch.randn(2, 3, 4, 4), torch.zeros(2, 6, 4, 4)
        >>> y, logdet = fused_affine(x, h)
        >>> y.shape, logdet.shape
        (torch.Size([2, 3, 4, 4]), torch.Size([2]))
        >>> x_back, inverse_logdet = fused_affine(y, h, inverse=True)
        >>> torch.allclose(x_back, x, atol=1e-5), torch.allclose(inverse_logdet, -logdet)
        (True, True)
    """
    _check_args(x, h, layout)
    compiling = torch.compiler.is_compiling()
    if resolve_backend(backend, x, h, compiling=compiling) == "torch":
        return affine_reference(x, h, eps=eps, layout=layout, inverse=inverse)
    if compiling:
        # Dynamo cannot trace into the kernels; the custom op is one opaque node with a fake
        # implementation and a registered backward.
        return torch.ops.flowkit.fused_affine(x, h, eps, layout, inverse, "triton")
    # Eager: an autograd.Function calls the kernels directly. The custom op's dispatcher round trip
    # (schema parsing, fake-tensor and autograd registrations) costs more host time than the whole
    # reference op chain at LLFlow's training shapes.
    return _TritonAffine.apply(x, h, eps, layout, inverse)


def _triton_affine():
    # Imported on first use: the module imports triton (an optional dependency), and importing it
    # fixes for the process whether Triton's interpreter runs the kernels.
    from flowkit.kernels import triton_affine

    return triton_affine


class _TritonAffine(torch.autograd.Function):
    """The Triton kernels in eager mode: forward and one fused backward, no dispatcher in between."""

    @staticmethod
    def forward(ctx, x: Tensor, h: Tensor, eps: float, layout: str, inverse: bool) -> tuple[Tensor, Tensor]:
        triton_affine = _triton_affine()
        # Only the inputs are saved: the backward recomputes the scale from h, cheaper than storing it.
        ctx.save_for_backward(x, h)
        ctx.options = (eps, layout, inverse)
        return triton_affine.affine_forward(x, h, eps=eps, layout=layout, inverse=inverse)

    @staticmethod
    def backward(ctx, grad_out: Tensor | None, grad_logdet: Tensor | None):
        triton_affine = _triton_affine()
        x, h = ctx.saved_tensors
        eps, layout, inverse = ctx.options
        if grad_out is None:
            grad_out = torch.zeros_like(x)
        if grad_logdet is None:
            grad_logdet = x.new_zeros(x.shape[0], dtype=compute_dtype(x))
        # Only the gradients autograd asks for: the first coupling of a flow gets data that needs
        # none, and a frozen sub-network's output needs none either.
        dx, dh = triton_affine.affine_backward(
            x, h, grad_out, grad_logdet, eps=eps, layout=layout, inverse=inverse, needs=ctx.needs_input_grad[:2]
        )
        return dx, dh, None, None, None


def fused_affine_coupling(
    x1: Tensor, x2: Tensor, h: Tensor, *, eps: float = 1e-4, layout: str = "cross", inverse: bool = False,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    r"""One affine coupling step: ``(cat([x1, y2], dim=1), logdet)`` with ``(y2, logdet) = fused_affine(x2, h)``.

    The same result as :func:`fused_affine` followed by :func:`torch.cat`, and on the ``"torch"``
    backend exactly that. The Triton path in eager mode allocates the concatenated output once,
    copies ``x1`` into its first channels and lets the kernel write ``y2`` straight into the rest,
    which saves the concatenation's read and write of ``y2``. Its backward hands ``x1`` the first
    channels of the output gradient as they are (a view, no copy) and runs the fused backward kernel
    on the rest, skipping the gradients autograd does not need. Under ``torch.compile`` the
    ``"auto"`` backend leaves the whole step to Inductor, which fuses the concatenation itself.

    Args:
        x1: ``(B, C1, ...)`` passed-through channels (the conditioning half of a coupling).
        x2: ``(B, C2, ...)`` channels to transform, same batch, spatial size, dtype and device.
        h: ``(B, 2 C2, ...)`` shift and raw scale for ``x2`` (see :func:`fused_affine`).
        eps: lower bound added to the sigmoid scale.
        layout: ``"cross"`` or ``"half"``.
        inverse: apply the inverse map to ``x2``.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        ``(y, logdet)``: ``y`` of shape ``(B, C1 + C2, ...)`` (channels-last when ``x2`` is) and the
        log-det of the map of ``x2``.

    Example:
        >>> import torch
        >>> from flowkit.kernels import fused_affine, fused_affine_coupling
        >>> x, h = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
        >>> x1, x2 = x.split([2, 2], dim=1)
        >>> y, logdet = fused_affine_coupling(x1, x2, h)
        >>> y2, expected_logdet = fused_affine(x2, h)
        >>> torch.equal(y, torch.cat([x1, y2], dim=1)), torch.equal(logdet, expected_logdet)
        (True, True)
    """
    _check_args(x2, h, layout)
    _check_passive(x1, x2)
    compiling = torch.compiler.is_compiling()
    if resolve_backend(backend, x2, h, compiling=compiling) == "torch":
        y2, logdet = affine_reference(x2, h, eps=eps, layout=layout, inverse=inverse)
    elif compiling:
        # The custom op cannot write into a slice of another tensor; Inductor handles the cat.
        y2, logdet = torch.ops.flowkit.fused_affine(x2, h, eps, layout, inverse, "triton")
    else:
        return _TritonAffineCoupling.apply(x1, x2, h, eps, layout, inverse)
    return torch.cat([x1, y2], dim=1), logdet


def _check_passive(x1: Tensor, x2: Tensor) -> None:
    if x1.dim() != x2.dim() or x1.shape[0] != x2.shape[0] or x1.shape[2:] != x2.shape[2:]:
        raise ValueError(
            f"fused_affine_coupling expects x1 of shape (B, C1, ...) with x2's batch and spatial sizes "
            f"{(x2.shape[0], '*', *x2.shape[2:])}, got x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)}"
        )
    if x1.dtype != x2.dtype or x1.device != x2.device:
        raise ValueError(
            f"fused_affine_coupling expects x1 and x2 of one dtype on one device, got x1 {x1.dtype} on "
            f"{x1.device} and x2 {x2.dtype} on {x2.device}"
        )


def _concatenated_like(x1: Tensor, x2: Tensor) -> Tensor:
    # Channels-last when x2 is (channel stride 1, as in a slice of a channels-last tensor), as
    # torch.cat of such halves would be, so that the next layer sees the layout it was given.
    shape = (x1.shape[0], x1.shape[1] + x2.shape[1], *x1.shape[2:])
    channels_last = x2.dim() == 4 and x2.stride(1) == 1 and x2.shape[1] > 1 and x2.stride(3) > 1
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=x2.dtype, device=x2.device, memory_format=fmt)


class _TritonAffineCoupling(torch.autograd.Function):
    """The kernels writing into the concatenated output; the backward splits its gradient by views."""

    @staticmethod
    def forward(ctx, x1: Tensor, x2: Tensor, h: Tensor, eps: float, layout: str, inverse: bool):
        triton_affine = _triton_affine()
        out = _concatenated_like(x1, x2)
        passive, active = out.split([x1.shape[1], x2.shape[1]], dim=1)
        passive.copy_(x1)
        _, logdet = triton_affine.affine_forward(x2, h, eps=eps, layout=layout, inverse=inverse, out=active)
        ctx.save_for_backward(x2, h)
        ctx.options = (eps, layout, inverse, x1.shape[1])
        return out, logdet

    @staticmethod
    def backward(ctx, grad_out: Tensor | None, grad_logdet: Tensor | None):
        triton_affine = _triton_affine()
        x2, h = ctx.saved_tensors
        eps, layout, inverse, c1 = ctx.options
        need_x1, need_x2, need_h = ctx.needs_input_grad[:3]
        if grad_out is None:
            grad_out = x2.new_zeros(x2.shape[0], c1 + x2.shape[1], *x2.shape[2:])
        if grad_logdet is None:
            grad_logdet = x2.new_zeros(x2.shape[0], dtype=compute_dtype(x2))
        g1, g2 = grad_out.split([c1, x2.shape[1]], dim=1)
        dx2 = dh = None
        if need_x2 or need_h:
            dx2, dh = triton_affine.affine_backward(
                x2, h, g2, grad_logdet, eps=eps, layout=layout, inverse=inverse, needs=(need_x2, need_h)
            )
        return g1 if need_x1 else None, dx2, dh, None, None, None


# The custom ops. Their outputs are always contiguous, so the fake implementations can say so.


@torch.library.custom_op("flowkit::fused_affine", mutates_args=())
def _fused_affine_op(
    x: Tensor, h: Tensor, eps: float, layout: str, inverse: bool, backend: str
) -> tuple[Tensor, Tensor]:
    if backend == "triton":
        triton_affine = _triton_affine()
        return triton_affine.affine_forward(x, h, eps=eps, layout=layout, inverse=inverse)
    if backend != "torch":
        raise ValueError(f"flowkit::fused_affine: backend must be 'triton' or 'torch', got {backend!r}")
    y, logdet = affine_reference(x, h, eps=eps, layout=layout, inverse=inverse)
    return y.contiguous(), logdet


@_fused_affine_op.register_fake
def _fused_affine_fake(
    x: Tensor, h: Tensor, eps: float, layout: str, inverse: bool, backend: str
) -> tuple[Tensor, Tensor]:
    return x.new_empty(x.shape), x.new_empty(x.shape[0], dtype=compute_dtype(x))


@torch.library.custom_op("flowkit::fused_affine_backward", mutates_args=())
def _fused_affine_backward_op(
    x: Tensor, h: Tensor, grad_out: Tensor, grad_logdet: Tensor, eps: float, layout: str,
    inverse: bool, backend: str,
) -> tuple[Tensor, Tensor]:
    if backend == "triton":
        triton_affine = _triton_affine()
        return triton_affine.affine_backward(
            x, h, grad_out, grad_logdet, eps=eps, layout=layout, inverse=inverse
        )
    if backend != "torch":
        raise ValueError(
            f"flowkit::fused_affine_backward: backend must be 'triton' or 'torch', got {backend!r}"
        )
    return affine_backward_formula(x, h, grad_out, grad_logdet, eps=eps, layout=layout, inverse=inverse)


@_fused_affine_backward_op.register_fake
def _fused_affine_backward_fake(
    x: Tensor, h: Tensor, grad_out: Tensor, grad_logdet: Tensor, eps: float, layout: str,
    inverse: bool, backend: str,
) -> tuple[Tensor, Tensor]:
    return x.new_empty(x.shape), h.new_empty(h.shape)


def _setup_context(ctx, inputs, output) -> None:
    x, h, eps, layout, inverse, backend = inputs
    # The inputs are all the backward needs: the scale is recomputed from h, which is cheaper than
    # storing it.
    ctx.save_for_backward(x, h)
    ctx.options = (eps, layout, inverse, backend)


def _backward(ctx, grad_out: Tensor | None, grad_logdet: Tensor | None):
    x, h = ctx.saved_tensors
    eps, layout, inverse, backend = ctx.options
    if grad_out is None:
        grad_out = torch.zeros_like(x)
    if grad_logdet is None:
        grad_logdet = x.new_zeros(x.shape[0], dtype=compute_dtype(x))
    dx, dh = torch.ops.flowkit.fused_affine_backward(
        x, h, grad_out, grad_logdet, eps, layout, inverse, backend
    )
    return dx, dh, None, None, None, None


_fused_affine_op.register_autograd(_backward, setup_context=_setup_context)
