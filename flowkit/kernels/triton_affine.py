"""Triton kernels of the fused affine op: forward, inverse, and one fused backward for both.

Each kernel makes one pass over the tensors: it reads ``x`` and the shift and raw-scale halves of
``h`` through their strides (so a channel slice ``x[:, split:]`` or the interleaved ``"cross"``
layout costs no copy), writes the output, and leaves one partial log-det sum per (sample, tile); a
tiny ``sum`` over those partials gives the per-sample log-det deterministically (no atomics).

The tensors are viewed as ``(B, C, N)`` with ``N`` the product of the spatial sizes (``N = 1`` for
``(B, C)`` vectors) and cut into ``[BLOCK_B, BLOCK_C, BLOCK_N]`` tiles, so no per-element integer
division is needed and images and vectors both fill a tile. Everything is computed in float32 with
``tl.sigmoid``/``tl.log``, which Triton's interpreter also runs (libdevice functions do not). The
plane size and the batch and channel strides are passed in units of their alignment (``ROW_ALIGN``
for x and the output, ``H_ALIGN`` for h; up to 8 elements), so that the compiler can prove a row's
accesses aligned and issue 128-bit loads and stores even where the JIT's own divisible-by-16 mark
does not apply (a 100x150 plane). Where the plane is no multiple of 16 bytes (50x75) and x holds
each sample's channels contiguously, a sample's ``C * N`` elements are tiled as one row instead
(``FLAT``), so that tiles need not start at plane starts; see ``_plan``.

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
def _ptrs(ptr, b0, c0, n0, bl, cl, nl, sb, sc, sn, ALIGN: tl.constexpr):
    # sb and sc come in units of ALIGN elements (see _in_units): multiplied back by the constant,
    # they tell the compiler that every row of the tile starts ALIGN-aligned.
    sb, sc = sb * ALIGN, sc * ALIGN
    return ptr + (b0 * sb + c0 * sc + n0 * sn) + (bl * sb + cl * sc + nl * sn)


@triton.jit
def _h_ptrs(ptr, b0, c0, n0, bl, cl, nl, sb, sc, sn, n_plane, H_ALIGN: tl.constexpr, FLAT: tl.constexpr):
    # One half of h (ptr: h's, or h's plus the raw half's offset). With FLAT the tile runs
    # along each sample's channels and planes as one row (x's memory order: C = 1, spatial stride 1),
    # so it may start mid-plane and, being at most a plane long, run into the next plane: there h's
    # pointers jump by its plane gap sc - n_plane (n_plane in the cross layout, 0 in "half").
    if FLAT:
        sb, sc, n_plane = sb * H_ALIGN, sc * H_ALIGN, n_plane * H_ALIGN
        c = n0 // n_plane
        n = (n0 - c * n_plane).to(tl.int32) + nl
        # A product, not tl.where: through it the compiler still sees the jump constant over
        # aligned runs of H_ALIGN elements and keeps the accesses that wide (tl.where: scalar).
        jump = (n >= n_plane).to(tl.int32) * (sc - n_plane)
        return ptr + (b0 * sb + c * sc) + (bl * sb + n + jump)
    return _ptrs(ptr, b0, c0, n0, bl, cl, nl, sb, sc, sn, H_ALIGN)


@triton.jit
def _load(ptrs, mask):
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store(ptrs, value, mask):
    tl.store(ptrs, value.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _affine_forward_kernel(
    x_ptr, h_ptr, y_ptr, partial_ptr,
    B, C, n_units, n_plane, n_cb, n_nb,
    sxb, sxc, sxn, syb, syc, syn, shb, shc, shn, h_raw,
    eps,
    INVERSE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
    ROW_ALIGN: tl.constexpr, H_ALIGN: tl.constexpr, FLAT: tl.constexpr,
):
    pid = tl.program_id(0)
    b0, c0, n0, bl, cl, nl, mask = _tile(pid, n_cb, n_nb, B, C, n_units * ROW_ALIGN, BLOCK_B, BLOCK_C, BLOCK_N)
    x = _load(_ptrs(x_ptr, b0, c0, n0, bl, cl, nl, sxb, sxc, sxn, ROW_ALIGN), mask)
    shift = _load(_h_ptrs(h_ptr, b0, c0, n0, bl, cl, nl, shb, shc, shn, n_plane, H_ALIGN, FLAT), mask)
    # The raw half's own pointers, not the shift's plus h_raw * H_ALIGN: the same PTX but for that
    # add, yet ptxas gives the latter 56 registers instead of 34 (float32 inverse, 100x150 plane).
    raw = _load(_h_ptrs(h_ptr + h_raw * H_ALIGN, b0, c0, n0, bl, cl, nl, shb, shc, shn, n_plane, H_ALIGN, FLAT), mask)
    scale = tl.sigmoid(raw + 2.0) + eps
    if INVERSE:
        y = x / scale - shift
    else:
        y = (x + shift) * scale
    _store(_ptrs(y_ptr, b0, c0, n0, bl, cl, nl, syb, syc, syn, ROW_ALIGN), y, mask)
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
    x_ptr, h_ptr, gy_ptr, gl_ptr, dx_ptr, dh_ptr,
    B, C, n_units, n_plane, n_cb, n_nb,
    sxb, sxc, sxn, sgb, sgc, sgn, sdb, sdc, sdn,
    shb, shc, shn, h_raw, seb, sec, sen, dh_raw,
    eps,
    INVERSE: tl.constexpr, NEED_DX: tl.constexpr, NEED_DH: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
    ROW_ALIGN: tl.constexpr, H_ALIGN: tl.constexpr, FLAT: tl.constexpr,
):
    pid = tl.program_id(0)
    b0, c0, n0, bl, cl, nl, mask = _tile(pid, n_cb, n_nb, B, C, n_units * ROW_ALIGN, BLOCK_B, BLOCK_C, BLOCK_N)
    x = _load(_ptrs(x_ptr, b0, c0, n0, bl, cl, nl, sxb, sxc, sxn, ROW_ALIGN), mask)
    shift = _load(_h_ptrs(h_ptr, b0, c0, n0, bl, cl, nl, shb, shc, shn, n_plane, H_ALIGN, FLAT), mask)
    raw = _load(_h_ptrs(h_ptr + h_raw * H_ALIGN, b0, c0, n0, bl, cl, nl, shb, shc, shn, n_plane, H_ALIGN, FLAT), mask)
    gy = _load(_ptrs(gy_ptr, b0, c0, n0, bl, cl, nl, sgb, sgc, sgn, ROW_ALIGN), mask)
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
        _store(_ptrs(dx_ptr, b0, c0, n0, bl, cl, nl, sdb, sdc, sdn, ROW_ALIGN), dx, mask)
    if NEED_DH:
        _store(_h_ptrs(dh_ptr, b0, c0, n0, bl, cl, nl, seb, sec, sen, n_plane, H_ALIGN, FLAT), dshift, mask)
        _store(_h_ptrs(dh_ptr + dh_raw * H_ALIGN, b0, c0, n0, bl, cl, nl, seb, sec, sen, n_plane, H_ALIGN, FLAT),
               draw, mask)


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
def _in_units(values: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """``(align, values // align)``: ``align`` is the largest power of two up to 8 dividing them all.

    The values are a row length and the strides (or offsets) that place rows: the JIT marks an
    integer argument only when it is divisible by 16, so with a plane of 100x150 = 15000 elements
    (divisible by 8, not 16) the compiler could prove neither that a row of the tile starts on a
    16-byte boundary nor that the mask of the last tile is constant over 4 elements, and every
    access would be scalar. Passed in units of ``align`` and multiplied back by the constant, the
    sizes carry their alignment into the kernel: 128-bit accesses for float32 and for the 16-bit
    dtypes (8 elements of 2 bytes) alike. Values past int32 keep ``align = 1``: the kernel multiplies
    back in int32, and the JIT passes such values as int64 with their own divisibility anyway.
    """
    align = 8 if all(abs(v) <= _INT32_MAX for v in values) else 1
    while align > 1 and any(v % align for v in values):
        align //= 2
    return align, tuple(v // align for v in values)


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


class _Plan(NamedTuple):
    """Everything a launch passes besides tensors and flags: the tiling, the sizes and strides."""

    geometry: _Geometry
    flat: bool
    row_align: int      # ROW_ALIGN: the unit of n_units and of the x-shaped tensors' row strides
    h_align: int        # H_ALIGN: the unit of n_plane and of h's (and dh's) strides and raw offsets
    sizes: tuple[int, int, int]                     # the kernel's C, n_units, n_plane
    rows: tuple[int, ...]                           # (sb, sc, sn) of x, out, grad_out, dx
    halves: tuple[int, ...]                         # (sb, sc, sn, raw offset) of h, dh


Rows = tuple[tuple[int, int, int], ...]
Halves = tuple[tuple[int, int, int, int], ...]


@functools.lru_cache(maxsize=4096)
def _plan(b: int, c: int, n: int, block: int | None, multiprocessors: int, vector: int, rows: Rows,
          halves: Halves) -> _Plan:
    """How to launch on ``(B, C, N)`` views: ``rows`` holds the ``(sb, sc, sn)`` of each x-shaped
    tensor (x, the output, their gradients), ``halves`` the ``(sb, sc, sn, raw offset)`` of h (and
    dh), and ``vector`` elements of x make 16 bytes.

    A tile normally lies in channel planes (``[BLOCK_B, BLOCK_C, BLOCK_N]``), so its rows start at
    plane starts: with a plane that is not a multiple of 16 bytes (LOL's /8 level, 50x75 = 3750
    elements) most planes start off a 16-byte boundary and no access can be 128-bit. When every
    x-shaped tensor holds each sample's channels contiguously, the tiles run instead along a
    sample's ``C * N`` elements as one row (``FLAT``): its length and the sample strides are then
    what must be aligned (``96 * 3750`` is a multiple of 8), and x, the output and their gradients
    get 128-bit accesses. h's halves get them too where they are as contiguous (the ``"half"``
    layout: a sample's whole row is then their plane). In the cross layout they are addressed per
    plane (their planes are ``2N`` apart), with tiles no longer than a plane, and their accesses
    cannot be wider than ``gcd(N, 8)`` elements in any tiling: x's element ``(c, n)`` lies at
    ``cN + n``, its shift at ``2cN + n`` and its raw scale ``N`` further, so a vector aligned in all
    three needs ``cN`` and ``N`` to be multiples of its length.
    """
    # h's "plane": where its addresses jump (to the next channel in the cross layout); none within
    # a sample when its halves hold the sample's channels contiguously, as x does.
    plane = c * n if all(sc == n for _, sc, _, _ in halves) else n
    flat_geometry = _geometry(b, 1, c * n, block, multiprocessors)
    flat = (
        n % vector != 0
        and flat_geometry.blocks[0] == 1 and flat_geometry.blocks[2] <= plane
        and all(sc == n and sn == 1 for _, sc, sn in rows)
        # The per-element jump to h's next plane stays in int32.
        and all(sn == 1 and abs(sc) + plane <= _INT32_MAX for _, sc, sn, _ in halves)
    )
    if flat:
        geometry, kernel_c = flat_geometry, 1
        # One row of C * N elements per sample: only the sample strides place it.
        row_align, (n_units, *units) = _in_units((c * n, *(sb for sb, _, _ in rows)))
        row_strides = [(sb, 0, 1) for sb in units]
        if plane != n:
            halves = tuple((sb, plane, sn, raw) for sb, _, sn, raw in halves)
    else:
        geometry, kernel_c, plane = _geometry(b, c, n, block, multiprocessors), c, n
        row_align, (n_units, *units) = _in_units((n, *(s for sb, sc, _ in rows for s in (sb, sc))))
        row_strides = [(units[2 * i], units[2 * i + 1], sn) for i, (_, _, sn) in enumerate(rows)]
    h_align, (n_plane, *units) = _in_units((plane, *(s for sb, sc, _, raw in halves for s in (sb, sc, raw))))
    half_strides = [(units[3 * i], units[3 * i + 1], sn, units[3 * i + 2]) for i, (_, _, sn, _) in enumerate(halves)]
    return _Plan(geometry, flat, row_align, h_align, (kernel_c, n_units, n_plane),
                 tuple(v for t in row_strides for v in t), tuple(v for t in half_strides for v in t))


def _shape(x: Tensor, block: int | None) -> tuple[int, int, int, int, _Geometry]:
    # math.prod, not x[0, 0].numel(): an empty batch or channel dimension has no x[0, 0].
    b, c, n = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    multiprocessors = _multiprocessors_of(x) if block is None else 0
    return b, c, n, multiprocessors, _geometry(b, c, n, block, multiprocessors)


def _halves(view: Tensor, layout: str) -> tuple[int, int, int, int]:
    """The ``(sb, sc, sn)`` of the halves of a ``(B, 2C, N)`` view of ``h``, and the raw half's offset.

    The kernels get one pointer for both halves: the raw scale's is the shift's plus that offset,
    whose alignment the launch passes on (the raw half's own pointer, ``N`` elements into ``h`` in
    the cross layout, is not marked 16-byte aligned unless ``N`` elements make a multiple of 16
    bytes, and its accesses would be scalar).
    """
    shift, raw = split_shift_scale(view, layout)
    return (*shift.stride(), raw.storage_offset() - shift.storage_offset())


def _h_blocks(blocks: tuple[int, int, int]) -> tuple[int, int, int]:
    # The channels of h that one tile's channels span, in either layout (for _bcn's int32 bound).
    return blocks[0], 2 * blocks[1], blocks[2]


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


def _options(plan: _Plan) -> dict[str, object]:
    blocks = plan.geometry.blocks
    return dict(BLOCK_B=blocks[0], BLOCK_C=blocks[1], BLOCK_N=blocks[2], ROW_ALIGN=plan.row_align,
                H_ALIGN=plan.h_align, FLAT=plan.flat, num_warps=plan.geometry.num_warps)


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
    b, c, n, multiprocessors, geometry = _shape(x, block)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    # .view, not reshape: the kernel must write into y itself.
    yv = y.view(b, c, n) if out is None else _out_view(out, x, b, c, n)
    if y.numel() == 0:
        return y, torch.zeros(b, dtype=torch.float32, device=x.device)
    xv = _bcn(x, b, c, n, geometry.blocks)
    hv = _bcn(h, b, 2 * c, n, _h_blocks(geometry.blocks))
    plan = _plan(b, c, n, block, multiprocessors, 16 // x.element_size(),
                 (xv.stride(), yv.stride()), (_halves(hv, layout),))
    grid_size = plan.geometry.grid_size
    partials = torch.empty(b, grid_size[1] * grid_size[2], dtype=torch.float32, device=x.device)
    with _on_device(x):
        _affine_forward_kernel[(math.prod(grid_size),)](
            xv, hv, yv, partials,
            b, *plan.sizes, grid_size[1], grid_size[2],
            *plan.rows, *plan.halves,
            eps,
            INVERSE=inverse, **_options(plan),
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
    b, c, n, multiprocessors, geometry = _shape(x, block)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_dx else None
    dh = torch.empty(h.shape, dtype=h.dtype, device=h.device) if need_dh else None
    if x.numel() == 0 or not (need_dx or need_dh):
        # No element of x: the raw scales have no log-det term either, so every gradient is 0.
        return dx, None if dh is None else dh.zero_()
    xv, gy = _bcn(x, b, c, n, geometry.blocks), _bcn(grad_out, b, c, n, geometry.blocks)
    hv = _bcn(h, b, 2 * c, n, _h_blocks(geometry.blocks))
    # .view, not reshape: the kernel must write into dx and dh themselves, never into copies. A
    # gradient that is not needed hands the kernel a stand-in (x, h) that it never writes through.
    dxv = dx.view(b, c, n) if need_dx else xv
    dhv = dh.view(b, 2 * c, n) if need_dh else hv
    plan = _plan(b, c, n, block, multiprocessors, 16 // x.element_size(),
                 (xv.stride(), gy.stride(), dxv.stride()), (_halves(hv, layout), _halves(dhv, layout)))
    with _on_device(x):
        _affine_backward_kernel[(math.prod(plan.geometry.grid_size),)](
            xv, hv, gy, grad_logdet.to(torch.float32).contiguous(), dxv, dhv,
            b, *plan.sizes, *plan.geometry.grid_size[1:],
            *plan.rows, *plan.halves,
            eps,
            INVERSE=inverse, NEED_DX=need_dx, NEED_DH=need_dh, **_options(plan),
        )
    return dx, dh
