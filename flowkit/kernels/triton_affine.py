"""Triton kernels of the fused affine op: forward, inverse, and one fused backward for both.

Each kernel makes one pass over the tensors: it reads ``x`` and the shift and raw-scale halves of
``h`` through their strides (so a channel slice ``x[:, split:]`` or the interleaved ``"cross"``
layout costs no copy), writes the output, and leaves one partial log-det sum per (sample, tile); a
tiny ``sum`` over those partials gives the per-sample log-det deterministically (no atomics).

The tensors are viewed as ``(B, C, N)`` with ``N`` the product of the spatial sizes (``N = 1`` for
``(B, C)`` vectors) and cut into ``[BLOCK_B, BLOCK_C, BLOCK_N]`` tiles, so no per-element integer
division is needed and images and vectors both fill a tile. Everything is computed in float32 with
``tl.sigmoid``/``tl.log``, which Triton's interpreter also runs (libdevice functions do not). The
plane size and the batch and channel strides are passed in units of their alignment (``ROW_ALIGN``,
up to 8 elements), so that the compiler can prove a row's accesses aligned and issue 128-bit loads
and stores even where the JIT's own divisible-by-16 mark does not apply (a 100x150 plane).

This module imports ``triton`` and decorates the kernels when it is imported, which is when Triton
reads ``TRITON_INTERPRET``: with ``TRITON_INTERPRET=1`` set beforehand the kernels are executed by
Triton's CPU interpreter and accept CPU tensors (slowly: a few milliseconds per tile); otherwise they
need CUDA tensors. :mod:`flowkit.kernels.affine` imports it only when a Triton kernel is about to
run, so ``import flowkit`` works without Triton or a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from flowkit.kernels.reference import TRITON_DTYPES, split_shift_scale

__all__ = [
    "DEFAULT_BLOCK",
    "affine_backward",
    "affine_forward",
    "is_interpreted",
    "unsupported_reason",
]

DEFAULT_BLOCK = 2048
"""Elements per tile: 8 per thread with 8 warps, enough loads in flight to stream at full bandwidth."""


@triton.jit
def _tile(pid, n_cb, n_nb, B, C, N, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    # The program id enumerates tiles with the spatial block fastest, so neighbouring programs
    # stream neighbouring memory. The tile's corner is int64: a plane of 2**31 elements or more
    # puts it past int32 (nb * BLOCK_N would wrap and leave the last tile unmasked). What remains
    # of each dimension from the corner is clamped to the tile and narrowed back to int32, so the
    # per-element offsets and mask comparisons stay cheap int32 arithmetic.
    nb = pid % n_nb
    cb = (pid // n_nb) % n_cb
    bb = pid // (n_nb * n_cb)
    b0, c0, n0 = bb.to(tl.int64) * BLOCK_B, cb.to(tl.int64) * BLOCK_C, nb.to(tl.int64) * BLOCK_N
    rest_b = tl.minimum(B - b0, BLOCK_B).to(tl.int32)
    rest_c = tl.minimum(C - c0, BLOCK_C).to(tl.int32)
    rest_n = tl.minimum(N - n0, BLOCK_N).to(tl.int32)
    bl = tl.arange(0, BLOCK_B)[:, None, None]
    cl = tl.arange(0, BLOCK_C)[None, :, None]
    nl = tl.arange(0, BLOCK_N)[None, None, :]
    mask = (bl < rest_b) & (cl < rest_c) & (nl < rest_n)
    return b0, c0, n0, bl, cl, nl, mask


@triton.jit
def _ptrs(ptr, b0, c0, n0, bl, cl, nl, sb, sc, sn, ROW_ALIGN: tl.constexpr):
    # sb and sc come in units of ROW_ALIGN elements (see _row_units): multiplied back by the
    # constant, they tell the compiler that every row of the tile starts ROW_ALIGN-aligned.
    sb, sc = sb * ROW_ALIGN, sc * ROW_ALIGN
    return ptr + (b0 * sb + c0 * sc + n0 * sn) + (bl * sb + cl * sc + nl * sn)


@triton.jit
def _load(ptr, b0, c0, n0, bl, cl, nl, sb, sc, sn, mask, ROW_ALIGN: tl.constexpr):
    return tl.load(_ptrs(ptr, b0, c0, n0, bl, cl, nl, sb, sc, sn, ROW_ALIGN), mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store(ptr, value, b0, c0, n0, bl, cl, nl, sb, sc, sn, mask, ROW_ALIGN: tl.constexpr):
    tl.store(_ptrs(ptr, b0, c0, n0, bl, cl, nl, sb, sc, sn, ROW_ALIGN), value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _affine_forward_kernel(
    x_ptr, shift_ptr, raw_ptr, y_ptr, partial_ptr,
    B, C, n_units, n_cb, n_nb,
    sxb, sxc, sxn, stb, stc, stn, srb, src, srn, syb, syc, syn,
    eps,
    INVERSE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
    ROW_ALIGN: tl.constexpr,
):
    pid = tl.program_id(0)
    b0, c0, n0, bl, cl, nl, mask = _tile(pid, n_cb, n_nb, B, C, n_units * ROW_ALIGN, BLOCK_B, BLOCK_C, BLOCK_N)
    x = _load(x_ptr, b0, c0, n0, bl, cl, nl, sxb, sxc, sxn, mask, ROW_ALIGN)
    shift = _load(shift_ptr, b0, c0, n0, bl, cl, nl, stb, stc, stn, mask, ROW_ALIGN)
    raw = _load(raw_ptr, b0, c0, n0, bl, cl, nl, srb, src, srn, mask, ROW_ALIGN)
    scale = tl.sigmoid(raw + 2.0) + eps
    if INVERSE:
        y = x / scale - shift
    else:
        y = (x + shift) * scale
    _store(y_ptr, y, b0, c0, n0, bl, cl, nl, syb, syc, syn, mask, ROW_ALIGN)
    log_scale = tl.where(mask, tl.log(scale), 0.0)
    partial = tl.sum(tl.sum(log_scale, axis=2), axis=1)
    if INVERSE:
        partial = -partial
    # One column per (channel block, spatial block) tile; the tile's BLOCK_B samples are rows.
    n_tiles = n_cb * n_nb
    rows = tl.arange(0, BLOCK_B)
    tl.store(partial_ptr + (b0 + rows) * n_tiles + pid % n_tiles, partial, mask=rows < B - b0)


@triton.jit
def _affine_backward_kernel(
    x_ptr, shift_ptr, raw_ptr, gy_ptr, gl_ptr, dx_ptr, dshift_ptr, draw_ptr,
    B, C, n_units, n_cb, n_nb,
    sxb, sxc, sxn, stb, stc, stn, srb, src, srn, sgb, sgc, sgn,
    sdb, sdc, sdn, dtb, dtc, dtn, drb, drc, drn,
    eps,
    INVERSE: tl.constexpr, NEED_DX: tl.constexpr, NEED_DH: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, ROW_ALIGN: tl.constexpr,
):
    pid = tl.program_id(0)
    b0, c0, n0, bl, cl, nl, mask = _tile(pid, n_cb, n_nb, B, C, n_units * ROW_ALIGN, BLOCK_B, BLOCK_C, BLOCK_N)
    x = _load(x_ptr, b0, c0, n0, bl, cl, nl, sxb, sxc, sxn, mask, ROW_ALIGN)
    shift = _load(shift_ptr, b0, c0, n0, bl, cl, nl, stb, stc, stn, mask, ROW_ALIGN)
    raw = _load(raw_ptr, b0, c0, n0, bl, cl, nl, srb, src, srn, mask, ROW_ALIGN)
    gy = _load(gy_ptr, b0, c0, n0, bl, cl, nl, sgb, sgc, sgn, mask, ROW_ALIGN)
    gl = tl.load(gl_ptr + b0 + bl, mask=bl < B - b0, other=0.0).to(tl.float32)
    sig = tl.sigmoid(raw + 2.0)
    # sigmoid' = sig * (1 - sig), with 1 - sig taken as sigmoid(-z): for a large raw scale sig
    # rounds to 1 and the subtraction would cancel to 0 (float32 loses it from z of about 17 on).
    dsig = sig * tl.sigmoid(-(raw + 2.0))
    scale = sig + eps
    if INVERSE:
        # out = x / s - t, logdet = -sum(log s)
        dx = gy / scale
        dshift = -gy
        dscale = -(dx * x + gl) / scale
    else:
        # out = (x + t) * s, logdet = sum(log s)
        dx = gy * scale
        dshift = dx
        dscale = gy * (x + shift) + gl / scale
    draw = dscale * dsig
    # A gradient nobody asked for is not written: its traffic is a third to a half of the kernel's.
    if NEED_DX:
        _store(dx_ptr, dx, b0, c0, n0, bl, cl, nl, sdb, sdc, sdn, mask, ROW_ALIGN)
    if NEED_DH:
        _store(dshift_ptr, dshift, b0, c0, n0, bl, cl, nl, dtb, dtc, dtn, mask, ROW_ALIGN)
        _store(draw_ptr, draw, b0, c0, n0, bl, cl, nl, drb, drc, drn, mask, ROW_ALIGN)


def is_interpreted() -> bool:
    """Whether the kernels were decorated under ``TRITON_INTERPRET=1`` and so run on the CPU.

    Example:
        >>> from flowkit.kernels import triton_affine
        >>> isinstance(triton_affine.is_interpreted(), bool)
        True
    """
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_affine_forward_kernel, InterpretedFunction)


def unsupported_reason(*tensors: Tensor) -> str | None:
    """Why the kernels cannot run on these tensors, or ``None`` when they can.

    They need CUDA tensors (or CPU tensors under the interpreter) of a dtype in
    :data:`flowkit.kernels.reference.TRITON_DTYPES`, all on one device.

    Example:
        >>> import torch
        >>> from flowkit.kernels import triton_affine
        >>> reason = triton_affine.unsupported_reason(torch.zeros(2, 3, dtype=torch.float64))
        >>> print(reason)  # doctest: +ELLIPSIS
        the Triton kernels support float32, float16 and bfloat16 tensors, got torch.float64 (use ...)
    """
    for t in tensors:
        if t.dtype not in TRITON_DTYPES:
            return (
                f"the Triton kernels support float32, float16 and bfloat16 tensors, got {t.dtype} "
                "(use backend='torch')"
            )
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        return f"the Triton kernels need all tensors on one device, got {sorted(map(str, devices))}"
    device = devices.pop()
    if device.type == "cuda" or (device.type == "cpu" and is_interpreted()):
        return None
    return (
        f"the Triton kernels run on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 was set "
        f"before flowkit.kernels.triton_affine was imported; got {device.type} tensors "
        "(use backend='torch' there)"
    )


_INT32_MAX = 2**31 - 1


def _bcn(t: Tensor, b: int, c: int, n: int, blocks: tuple[int, int, int]) -> Tensor:
    # A view whenever the spatial dimensions collapse into one stride (contiguous or channels-last
    # layouts, channel slices); a copy only for exotic strides, or for strides so large that an
    # offset inside one tile would overflow the kernels' int32 tile arithmetic.
    view = t.reshape(b, c, n)
    if sum((blk - 1) * abs(stride) for blk, stride in zip(blocks, view.stride())) > _INT32_MAX:
        view = view.contiguous()
    return view


@functools.lru_cache(maxsize=4096)
def _row_units(n: int, strides: tuple[int, ...]) -> tuple[int, int, tuple[int, ...]]:
    """``(align, n // align, strides)`` with the row strides divided by ``align``.

    ``strides`` are those of the ``(B, C, N)`` views, as ``(sb, sc, sn)`` triples; ``align`` is the
    largest power of two up to 8 that divides ``n`` and every ``sb`` and ``sc``. The JIT marks an
    integer argument only when it is divisible by 16: with a plane of 100x150 = 15000 elements
    (divisible by 8, not 16) the compiler could prove neither that a row of the tile starts on a
    16-byte boundary nor that the mask of the last tile is constant over 4 elements, and every
    access would be scalar. Passed in units of ``align`` and multiplied back by the constant, the
    sizes carry their alignment into the kernel: 128-bit accesses for float32 and for the 16-bit
    dtypes (8 elements of 2 bytes) alike. Sizes past int32 keep ``align = 1``: the kernel multiplies
    back in int32, and the JIT passes such sizes as int64 with their own divisibility anyway.
    """
    rows = strides[0::3] + strides[1::3]
    align = 8 if n <= _INT32_MAX and all(abs(s) <= _INT32_MAX for s in rows) else 1
    while align > 1 and (n % align or any(s % align for s in rows)):
        align //= 2
    return align, n // align, tuple(s if i % 3 == 2 else s // align for i, s in enumerate(strides))


def _next_power_of_2(v: int) -> int:
    return 1 << (v - 1).bit_length() if v > 1 else 1


def _blocks(b: int, c: int, n: int, block: int) -> tuple[int, int, int]:
    if block < 1 or block & (block - 1):
        raise ValueError(f"block must be a positive power of two, got {block}")
    # max(1, .): empty dimensions still need a valid (unused) tile shape.
    block_n = min(_next_power_of_2(max(1, n)), block)
    block_c = min(_next_power_of_2(max(1, c)), block // block_n)
    block_b = min(_next_power_of_2(max(1, b)), block // (block_n * block_c))
    return block_b, block_c, block_n


def _grid_size(b: int, c: int, n: int, blocks: tuple[int, int, int]) -> tuple[int, int, int]:
    return -(-b // blocks[0]), -(-c // blocks[1]), -(-n // blocks[2])


@functools.cache
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


class _Geometry(NamedTuple):
    """How one call is launched: the tile shape, the tile counts per dimension, warps per program."""

    blocks: tuple[int, int, int]
    grid_size: tuple[int, int, int]
    num_warps: int


# Plain integer math, cached per shape: a training loop or a tiled enhancement calls the kernels
# with the same few shapes thousands of times, and Triton's own cdiv/next_power_of_2 are
# constexpr-aware wrappers that cost microseconds each on the host.
@functools.lru_cache(maxsize=4096)
def _geometry(b: int, c: int, n: int, block: int | None, multiprocessors: int) -> _Geometry:
    if block is None:
        # DEFAULT_BLOCK, halved (down to 256) while a GPU would get fewer than 4 tiles per SM; on
        # the interpreter (multiprocessors = 0) every tile costs milliseconds, so the fewer the better.
        block = DEFAULT_BLOCK
        while block > 256 and math.prod(_grid_size(b, c, n, _blocks(b, c, n, block))) < 4 * multiprocessors:
            block //= 2
    blocks = _blocks(b, c, n, block)
    num_warps = max(1, min(8, blocks[0] * blocks[1] * blocks[2] // 256))
    return _Geometry(blocks, _grid_size(b, c, n, blocks), num_warps)


def _launch_geometry(x: Tensor, block: int | None) -> tuple[int, int, int, _Geometry]:
    # math.prod, not x[0, 0].numel(): an empty batch or channel dimension has no x[0, 0].
    b, c, n = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    return b, c, n, _geometry(b, c, n, block, _multiprocessors_of(x) if block is None else 0)


def _multiprocessors_of(x: Tensor) -> int:
    # The SM count the default tile size adapts to; 0 (nothing to fill) on the interpreter. Apart so
    # that benchmarks/kernel_report.py can choose the geometry a given GPU would get without one.
    if x.device.type != "cuda":
        return 0
    return _multiprocessors(x.device.index if x.device.index is not None else torch.cuda.current_device())


def _on_device(x: Tensor) -> contextlib.AbstractContextManager:
    """Make ``x``'s GPU the current one for the launch: Triton launches on the current device."""
    if x.device.type != "cuda" or x.device.index is None or x.device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(x.device)


def _check(x: Tensor, h: Tensor, *more: Tensor) -> None:
    reason = unsupported_reason(x, h, *more)
    if reason is not None:
        raise RuntimeError(reason)


def _out_view(out: Tensor, x: Tensor, b: int, c: int, n: int) -> Tensor:
    """A given ``out`` as the kernel's ``(B, C, N)`` view, checked against ``x``."""
    if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(
            f"affine_forward: out must have x's shape {tuple(x.shape)}, dtype {x.dtype} and device "
            f"{x.device}, got {tuple(out.shape)}, {out.dtype} on {out.device}"
        )
    try:
        return out.view(b, c, n)
    except RuntimeError:
        raise ValueError(
            f"affine_forward: out's spatial dimensions must collapse into one stride (a contiguous or "
            f"channels-last tensor, or a channel slice of one), got strides {out.stride()}"
        ) from None


def affine_forward(
    x: Tensor, h: Tensor, *, eps: float, layout: str, inverse: bool, block: int | None = None,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the forward (or, with ``inverse=True``, the inverse) kernel; return ``(out, logdet)``.

    Same math and conventions as :func:`flowkit.kernels.reference.affine_reference`: ``out`` has
    ``x``'s dtype and shape (contiguous unless given), ``logdet`` is float32 of shape ``(B,)``.

    Args:
        x: ``(B, C, ...)`` tensor, any strides.
        h: ``(B, 2C, ...)`` tensor holding shift and raw scale as ``layout`` says, any strides.
        eps: added to the sigmoid scale.
        layout: ``"cross"`` or ``"half"``.
        inverse: compute ``x / scale - shift`` and ``-sum(log scale)`` instead.
        block: elements per tile (a power of two); smaller tiles make more programs. ``None``:
            :data:`DEFAULT_BLOCK`, halved on a GPU while the grid would not fill it.
        out: where to write the result instead of a new tensor: ``x``'s shape and dtype, on its
            device, with strides that view as ``(B, C, N)`` (e.g. the channel slice of a
            concatenated output, which is how :func:`flowkit.kernels.fused_affine_coupling` saves
            the concatenation).

    Example:
        >>> import torch
        >>> from flowkit.kernels import triton_affine
        >>> from flowkit.kernels.reference import affine_reference
        >>> x, h = torch.randn(2, 3, 5, 5), torch.randn(2, 6, 5, 5)
        >>> if triton_affine.unsupported_reason(x, h) is None:  # CUDA, or CPU under the interpreter
        ...     y, logdet = triton_affine.affine_forward(x, h, eps=1e-4, layout="cross", inverse=False)
        ... else:
        ...     y, logdet = affine_reference(x, h)
        >>> torch.allclose(y, affine_reference(x, h)[0], atol=1e-6)
        True
    """
    _check(x, h)
    b, c, n, geometry = _launch_geometry(x, block)
    blocks, grid_size = geometry.blocks, geometry.grid_size
    n_tiles = grid_size[1] * grid_size[2]
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    # .view, not reshape: the kernel must write into y itself.
    yv = y.view(b, c, n) if out is None else _out_view(out, x, b, c, n)
    partials = torch.empty(b, n_tiles, dtype=torch.float32, device=x.device)
    if y.numel() == 0:
        return y, partials.new_zeros(b)
    shift, raw = (_bcn(t, b, c, n, blocks) for t in split_shift_scale(h, layout))
    xv = _bcn(x, b, c, n, blocks)
    row_align, n_units, strides = _row_units(n, (*xv.stride(), *shift.stride(), *raw.stride(), *yv.stride()))
    with _on_device(x):
        _affine_forward_kernel[(math.prod(grid_size),)](
            xv, shift, raw, yv, partials,
            b, c, n_units, grid_size[1], grid_size[2],
            *strides,
            eps,
            INVERSE=inverse, BLOCK_B=blocks[0], BLOCK_C=blocks[1], BLOCK_N=blocks[2], ROW_ALIGN=row_align,
            num_warps=geometry.num_warps,
        )
    return y, partials.sum(1)


def affine_backward(
    x: Tensor, h: Tensor, grad_out: Tensor, grad_logdet: Tensor, *, eps: float, layout: str,
    inverse: bool, block: int | None = None, needs: tuple[bool, bool] = (True, True),
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of the forward (or inverse) map for ``x`` and ``h`` in one pass: ``(dx, dh)``.

    ``x`` and ``h`` are the inputs of the differentiated call, ``grad_out`` the gradient of its
    output (``x``'s shape) and ``grad_logdet`` that of its log-det (``(B,)``). The log-det term
    enters through the raw scale: ``d/draw sum(log s) = sigmoid'(raw + 2) / s``. ``dx`` has ``x``'s
    dtype, ``dh`` ``h``'s; both are contiguous. ``needs`` says which of ``(dx, dh)`` to compute
    (autograd's ``needs_input_grad``); one that is not needed is neither allocated nor written, and
    comes back as ``None``.

    Example:
        >>> import torch
        >>> from flowkit.kernels import triton_affine
        >>> from flowkit.kernels.reference import affine_reference
        >>> x, h = torch.randn(2, 3, 4), torch.randn(2, 6, 4)
        >>> gy, gl = torch.randn(2, 3, 4), torch.randn(2)
        >>> xr, hr = x.clone().requires_grad_(), h.clone().requires_grad_()
        >>> y, logdet = affine_reference(xr, hr, layout="half")
        >>> expected = torch.autograd.grad((y, logdet), (xr, hr), (gy, gl))
        >>> if triton_affine.unsupported_reason(x, h) is None:  # CUDA, or CPU under the interpreter
        ...     dx, dh = triton_affine.affine_backward(x, h, gy, gl, eps=1e-4, layout="half", inverse=False)
        ... else:
        ...     dx, dh = expected
        >>> torch.allclose(dx, expected[0], atol=1e-6), torch.allclose(dh, expected[1], atol=1e-6)
        (True, True)
    """
    _check(x, h, grad_out)
    need_dx, need_dh = (bool(v) for v in needs)
    b, c, n, geometry = _launch_geometry(x, block)
    blocks, grid_size = geometry.blocks, geometry.grid_size
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_dx else None
    dh = torch.empty(h.shape, dtype=h.dtype, device=h.device) if need_dh else None
    if x.numel() == 0 or not (need_dx or need_dh):
        # No element of x: the raw scales have no log-det term either, so every gradient is 0.
        return dx, None if dh is None else dh.zero_()
    shift, raw = (_bcn(t, b, c, n, blocks) for t in split_shift_scale(h, layout))
    # .view, not reshape: the kernel must write into dx and dh themselves, never into copies. A
    # gradient that is not needed hands the kernel a stand-in pointer it never writes through.
    dxv = dx.view(b, c, n) if need_dx else raw
    dshift, draw = (t.view(b, c, n) for t in split_shift_scale(dh, layout)) if need_dh else (raw, raw)
    xv, gy = _bcn(x, b, c, n, blocks), _bcn(grad_out, b, c, n, blocks)
    row_align, n_units, strides = _row_units(n, (
        *xv.stride(), *shift.stride(), *raw.stride(), *gy.stride(), *dxv.stride(), *dshift.stride(), *draw.stride(),
    ))
    with _on_device(x):
        _affine_backward_kernel[(math.prod(grid_size),)](
            xv, shift, raw, gy, grad_logdet.to(torch.float32).contiguous(), dxv, dshift, draw,
            b, c, n_units, grid_size[1], grid_size[2],
            *strides,
            eps,
            INVERSE=inverse, NEED_DX=need_dx, NEED_DH=need_dh,
            BLOCK_B=blocks[0], BLOCK_C=blocks[1], BLOCK_N=blocks[2], ROW_ALIGN=row_align,
            num_warps=geometry.num_warps,
        )
    return dx, dh
