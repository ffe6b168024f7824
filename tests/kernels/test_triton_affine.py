"""The Triton kernels against the PyTorch reference, executed by Triton's interpreter on a CPU-only run."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernel_checks import KERNEL_DEVICE, assert_close

from flowkit.kernels.reference import affine_reference

LAYOUTS = ["cross", "half"]
LOW_PRECISION = [torch.float16, torch.bfloat16]


def make_inputs(shape, dtype, device, seed, *, h_dtype=None, noncontiguous=False):
    """x of ``shape`` and h of 2C channels; perturbed enough that scales span (eps, 1)."""
    gen = torch.Generator().manual_seed(seed)
    b, c, *spatial = shape
    if noncontiguous:
        # The coupling layers hand over x[:, split:], a channel slice of a larger tensor.
        x = torch.randn(b, c + 3, *spatial, generator=gen)[:, 3:]
    else:
        x = torch.randn(*shape, generator=gen)
    h = 2.0 * torch.randn(b, 2 * c, *spatial, generator=gen)
    x = x.to(device=device, dtype=dtype)
    h = h.to(device=device, dtype=h_dtype or dtype)
    return x, h


def reference_with_grads(x, h, grad_out, grad_logdet, **options):
    xr, hr = x.detach().clone().requires_grad_(), h.detach().clone().requires_grad_()
    out, logdet = affine_reference(xr, hr, **options)
    dx, dh = torch.autograd.grad((out, logdet), (xr, hr), (grad_out, grad_logdet))
    return out.detach(), logdet.detach(), dx, dh


def check_against_reference(kernels, x, h, *, layout, inverse, block=None, seed=0):
    options = dict(eps=1e-4, layout=layout, inverse=inverse)
    extra = {} if block is None else {"block": block}
    out, logdet = kernels.affine_forward(x, h, **options, **extra)
    gen = torch.Generator().manual_seed(seed + 1)
    grad_out = torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
    grad_logdet = torch.randn(x.shape[0], generator=gen).to(x.device)
    dx, dh = kernels.affine_backward(x, h, grad_out, grad_logdet, **options, **extra)
    ref_out, ref_logdet, ref_dx, ref_dh = reference_with_grads(x, h, grad_out, grad_logdet, **options)
    assert out.is_contiguous() and dx.is_contiguous() and dh.is_contiguous()
    assert_close(out, ref_out, what="output")
    # The log-det sums C*N logs in another order: its float32 error grows with the count.
    count = math.prod(x.shape[1:])
    torch.testing.assert_close(logdet, ref_logdet, rtol=1e-5, atol=1e-6 * count + 1e-6)
    assert_close(dx, ref_dx, what="dx")
    assert_close(dh, ref_dh, what="dh")
    return out, logdet


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION], ids=str)
def test_matches_reference_on_odd_images(kernels, device, layout, inverse, dtype):
    x, h = make_inputs((2, 3, 5, 7), dtype, device, seed=1)
    check_against_reference(kernels, x, h, layout=layout, inverse=inverse)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("noncontiguous", [False, True], ids=["contiguous", "channel_slice"])
def test_flat_tiles_across_planes_that_are_not_16_byte_multiples(kernels, device, monkeypatch, layout, inverse,
                                                                  dtype, noncontiguous):
    # A 5x7 plane (35 elements, like LOL's 50x75 = 3750 not a multiple of 8) with 16-element tiles:
    # the launcher tiles each sample's 3 planes as one row, so tiles start mid-plane and cross into
    # the next one, where h's pointers jump (by a plane in the cross layout, not at all in "half").
    plans = []
    plan = kernels._plan
    monkeypatch.setattr(kernels, "_plan", lambda *args: plans.append(plan(*args)) or plans[-1])
    x, h = make_inputs((2, 3, 5, 7), dtype, device, seed=13, noncontiguous=noncontiguous)
    check_against_reference(kernels, x, h, layout=layout, inverse=inverse, block=16)
    assert plans and all(p.flat for p in plans)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_many_tiles_per_sample_and_channel_slices(kernels, device, layout, inverse):
    # 16-element tiles split every sample into many partial log-det sums; x is a non-contiguous slice.
    x, h = make_inputs((3, 5, 3, 11), torch.float32, device, seed=2, noncontiguous=True)
    assert not x.is_contiguous()
    check_against_reference(kernels, x, h, layout=layout, inverse=inverse, block=16)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_vectors_share_tiles_across_samples(kernels, device, layout, dtype):
    # (B, C) inputs: N = 1, so a tile holds several samples and reduces one partial sum per row.
    x, h = make_inputs((7, 5), dtype, device, seed=3)
    check_against_reference(kernels, x, h, layout=layout, inverse=False, block=16)
    check_against_reference(kernels, x, h, layout=layout, inverse=True)


def test_channels_last_and_permuted_h(kernels, device):
    x, h = make_inputs((2, 4, 3, 5), torch.float32, device, seed=4)
    x = x.to(memory_format=torch.channels_last)
    h = h.transpose(2, 3).contiguous().transpose(2, 3)  # same values, W-major strides
    assert not h.is_contiguous()
    check_against_reference(kernels, x, h, layout="cross", inverse=False)


def test_mixed_precision_h(kernels, device):
    # Under bf16 autocast the sub-network hands a bf16 h to a float32 x.
    x, h = make_inputs((2, 3, 4, 4), torch.float32, device, seed=5, h_dtype=torch.bfloat16)
    check_against_reference(kernels, x, h, layout="half", inverse=False)


def test_expanded_output_gradient(kernels, device):
    # out.sum().backward() hands the backward an expanded (stride 0) gradient.
    x, h = make_inputs((2, 3, 4, 4), torch.float32, device, seed=6)
    grad_out = torch.ones((), device=device).expand(x.shape)
    dx, dh = kernels.affine_backward(
        x, h, grad_out, torch.zeros(2, device=device), eps=1e-4, layout="cross", inverse=False
    )
    _, _, ref_dx, ref_dh = reference_with_grads(x, h, grad_out, torch.zeros(2, device=device))
    assert_close(dx, ref_dx)
    assert_close(dh, ref_dh)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip_and_opposite_logdets(kernels, device, layout):
    x, h = make_inputs((2, 3, 5, 6), torch.float32, device, seed=7)
    y, logdet = kernels.affine_forward(x, h, eps=1e-4, layout=layout, inverse=False)
    x_back, inverse_logdet = kernels.affine_forward(y, h, eps=1e-4, layout=layout, inverse=True)
    torch.testing.assert_close(x_back, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inverse_logdet, -logdet)


def test_logdet_of_zero_h_is_closed_form(kernels, device):
    # h = 0: every scale is sigmoid(2) + eps, so logdet = C * H * W * log(sigmoid(2) + eps).
    x = torch.randn(2, 3, 4, 5, device=device)
    y, logdet = kernels.affine_forward(x, torch.zeros(2, 6, 4, 5, device=device), eps=1e-4,
                                       layout="cross", inverse=False, block=8)
    scale = 1 / (1 + math.exp(-2)) + 1e-4
    torch.testing.assert_close(logdet, torch.full((2,), 60 * math.log(scale), device=device))
    torch.testing.assert_close(y, x * scale)


def test_empty_spatial_size(kernels, device):
    x, h = torch.empty(2, 3, 0, 4, device=device), torch.empty(2, 6, 0, 4, device=device)
    y, logdet = kernels.affine_forward(x, h, eps=1e-4, layout="cross", inverse=False)
    assert y.shape == x.shape and torch.equal(logdet, torch.zeros(2, device=device))


@given(
    batch=st.integers(1, 3), channels=st.integers(1, 6), height=st.integers(1, 5), width=st.integers(1, 5),
    layout=st.sampled_from(LAYOUTS), inverse=st.booleans(), block=st.sampled_from([1, 4, 32, 2048]),
    noncontiguous=st.booleans(), seed=st.integers(0, 2**16),
)
def test_property_matches_reference(kernels, batch, channels, height, width, layout, inverse, block,
                                    noncontiguous, seed):
    x, h = make_inputs((batch, channels, height, width), torch.float32, KERNEL_DEVICE, seed,
                       noncontiguous=noncontiguous)
    check_against_reference(kernels, x, h, layout=layout, inverse=inverse, block=block, seed=seed)


def test_rejects_what_it_cannot_run(kernels, device):
    x = torch.randn(2, 3, device=device, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="float32, float16 and bfloat16.*float64"):
        kernels.affine_forward(x, torch.randn(2, 6, device=device), eps=1e-4, layout="cross", inverse=False)
    with pytest.raises(ValueError, match="power of two, got 24"):
        kernels.affine_forward(x.float(), torch.randn(2, 6, device=device), eps=1e-4, layout="cross",
                               inverse=False, block=24)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION], ids=str)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_training_shape_on_gpu(kernels, dtype, inverse):
    # LLFlow's first level at batch 16: the coupling half of a (16, 12, 80, 80) tensor.
    x, h = make_inputs((16, 6, 80, 80), dtype, "cuda", seed=8, noncontiguous=True)
    check_against_reference(kernels, x, h, layout="cross", inverse=inverse)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 0, 4, 4), (0, 3), (2, 0)], ids=str)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_empty_batch_or_channels(kernels, device, shape, inverse):
    # An empty batch (the tail of a DataLoader split) or no channels (a coupling with nothing on one
    # side) has no x[0, 0]: the launcher must not index it, and returns the reference's zeros.
    x, h = make_inputs(shape, torch.float32, device, seed=9)
    check_against_reference(kernels, x, h, layout="half", inverse=inverse)


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_scale_gradient_keeps_its_precision_for_large_raw_scales(kernels, device, inverse):
    # sigmoid'(z) = sigmoid(z) sigmoid(-z) ~ exp(-z): computed as sig * (1 - sig) it cancels to 0 in
    # float32 once sig rounds to 1 (z > ~17). The exact value comes from float64 autograd, which
    # is itself accurate to 3e-6 up to z = 24 (where float64 starts to cancel).
    raw = torch.linspace(10.0, 22.0, 26).view(1, 1, 26)
    x = torch.linspace(-2.0, 2.0, 26).view(1, 1, 26)
    h = torch.cat([torch.full_like(raw, 0.3), raw], 1)   # "half": shift, then raw scale
    grad_out, grad_logdet = torch.ones_like(x), torch.ones(1)
    _, dh = kernels.affine_backward(x.to(device), h.to(device), grad_out.to(device), grad_logdet.to(device),
                                     eps=1e-4, layout="half", inverse=inverse)
    *_, exact = reference_with_grads(x.double(), h.double(), grad_out.double(), grad_logdet.double(),
                                     eps=1e-4, layout="half", inverse=inverse)
    draw, exact_draw = dh[:, 1:].cpu().double(), exact[:, 1:]
    assert (exact_draw.abs() > 0).all()
    torch.testing.assert_close(draw, exact_draw, rtol=1e-5, atol=0)


@given(b=st.integers(0, 70), c=st.integers(0, 70), n=st.integers(0, 100_000),
       block=st.sampled_from([None, 1, 16, 256, 2048]), sms=st.sampled_from([0, 8, 132]))
def test_cached_geometry_matches_tritons_helpers(kernels, b, c, n, block, sms):
    # The launcher's plain-integer geometry against the same rules written with Triton's helpers.
    import triton

    def tiling(tile):
        block_n = min(triton.next_power_of_2(max(1, n)), tile)
        block_c = min(triton.next_power_of_2(max(1, c)), tile // block_n)
        block_b = min(triton.next_power_of_2(max(1, b)), tile // (block_n * block_c))
        blocks = (block_b, block_c, block_n)
        return blocks, tuple(triton.cdiv(d, k) for d, k in zip((b, c, n), blocks))

    tile = block
    if block is None:  # the largest tile from 2048 down to 256 that gives 4 tiles per multiprocessor
        tile = 2048
        while tile > 256 and math.prod(tiling(tile)[1]) < 4 * sms:
            tile //= 2
    geometry = kernels._geometry(b, c, n, block, sms)
    assert (geometry.blocks, geometry.grid_size) == tiling(tile)
    assert geometry.num_warps == max(1, min(8, math.prod(geometry.blocks) // 256))


@pytest.mark.parametrize(("values", "expected"), [
    # A LOL level of 100x150: N = 15000 is divisible by 8, not by 16 (the JIT's only mark).
    ((15000, 48 * 15000, 15000), (8, (1875, 48 * 1875, 1875))),
    # 50x75 = 3750: 2 is all (per plane); a sample's 96 planes together are a multiple of 8.
    ((3750, 3750, 2 * 3750), (2, (1875, 1875, 3750))),
    ((96 * 3750, 96 * 3750), (8, (45000, 45000))),
    ((7, 21), (1, (7, 21))),
    # Past int32 the kernel could not multiply back: left alone.
    ((2**31 + 8, 8), (1, (2**31 + 8, 8))),
])
def test_sizes_and_strides_are_passed_in_units_of_their_alignment(kernels, values, expected):
    assert kernels._in_units(values) == expected


N_50x75 = 50 * 75


@pytest.mark.parametrize(("n", "rows", "halves", "expected"), [
    # LOL's /8 level, contiguous, cross layout: one row of 96 planes per sample, aligned to 8
    # elements; h's halves are addressed per plane, 2-element aligned, planes 2N apart.
    (N_50x75, [(96 * N_50x75, N_50x75, 1)] * 2, [(192 * N_50x75, 2 * N_50x75, 1, N_50x75)],
     (True, 8, 2, (1, 96 * N_50x75 // 8, N_50x75 // 2), (192 * N_50x75 // 2, N_50x75, 1, N_50x75 // 2))),
    # The "half" layout: h's halves hold a sample's planes contiguously too, so they are one plane.
    (N_50x75, [(96 * N_50x75, N_50x75, 1)] * 2, [(192 * N_50x75, N_50x75, 1, 96 * N_50x75)],
     (True, 8, 8, (1, 96 * N_50x75 // 8, 96 * N_50x75 // 8),
      (192 * N_50x75 // 8, 96 * N_50x75 // 8, 1, 96 * N_50x75 // 8))),
    # A coupling's channel slice (sample stride 2CN) is as flat; channels-last is not.
    (N_50x75, [(192 * N_50x75, N_50x75, 1)] * 2, [(192 * N_50x75, 2 * N_50x75, 1, N_50x75)], (True, 8, 2, None, None)),
    (N_50x75, [(96 * N_50x75, 1, 96)] * 2, [(192 * N_50x75, 2, 192, 1)], (False, 1, 1, None, None)),
    # A plane of 100x150 = 15000 elements is a multiple of 16 bytes: planes are tiled as before.
    (15000, [(96 * 15000, 15000, 1)] * 2, [(192 * 15000, 2 * 15000, 1, 15000)], (False, 8, 8, (96, 1875, 1875), None)),
])
def test_plan_tiles_flat_where_planes_are_not_16_byte_multiples(kernels, n, rows, halves, expected):
    plan = kernels._plan(1, 96, n, None, 132, 8, tuple(rows), tuple(halves))   # bfloat16 on an H100
    flat, row_align, h_align, sizes, h_strides = expected
    assert (plan.flat, plan.row_align, plan.h_align) == (flat, row_align, h_align)
    if sizes is not None:
        assert plan.sizes == sizes
    if h_strides is not None:
        assert plan.halves == h_strides
    if flat:   # a sample's row in tiles no longer than a plane, so each crosses one boundary at most
        assert plan.geometry.blocks[:2] == (1, 1) and plan.geometry.blocks[2] <= n


def test_launches_on_the_tensors_device(kernels, device):
    # Triton launches on the current CUDA device: a tensor on another GPU needs a device guard.
    x = torch.zeros(2, 3, device=device)
    guard = kernels._on_device(x)
    if device == "cpu":
        assert isinstance(guard, contextlib.nullcontext)
    else:
        assert isinstance(guard, contextlib.nullcontext) == (x.device.index == torch.cuda.current_device())


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_tensor_on_a_second_gpu(kernels):
    x, h = make_inputs((2, 3, 17, 9), torch.float32, "cuda:1", seed=10)
    with torch.cuda.device(0):
        check_against_reference(kernels, x, h, layout="cross", inverse=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("size", [(1080, 1920), (2160, 3840)], ids=["1080p", "4k"])
def test_high_resolution_tile_counts_on_gpu(kernels, size):
    # LLFlow's first level at 1080p/4K: a (1, 6, H/2, W/2) channel slice, millions of elements per
    # plane and thousands of tiles per sample.
    height, width = size[0] // 2, size[1] // 2
    x, h = make_inputs((1, 6, height, width), torch.float32, "cuda", seed=11, noncontiguous=True)
    check_against_reference(kernels, x, h, layout="cross", inverse=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_channels_last_and_determinism_on_gpu(kernels):
    x, h = make_inputs((4, 6, 96, 80), torch.bfloat16, "cuda", seed=12)
    x, h = x.to(memory_format=torch.channels_last), h.to(memory_format=torch.channels_last)
    first = check_against_reference(kernels, x, h, layout="cross", inverse=False)
    again = kernels.affine_forward(x, h, eps=1e-4, layout="cross", inverse=False)
    # No atomics: the same inputs give bit-identical outputs and log-dets.
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    gy, gl = torch.randn_like(x), torch.randn(4, device="cuda")
    grads = [kernels.affine_backward(x, h, gy, gl, eps=1e-4, layout="cross", inverse=False) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*grads))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.get_device_properties(0).total_memory < 40 * 2**30,
                    reason="needs 40 GiB of GPU memory")
def test_plane_of_more_than_two_to_the_31_elements(kernels):
    # N = 2**31 + 37 elements in one plane: the tile corner nb * BLOCK_N passes int32, and the last,
    # partial tile must still be masked (unmasked, it reads past the end of h into the log-det).
    n = 2**31 + 37
    x = torch.ones(1, 1, n, dtype=torch.bfloat16, device="cuda")
    h = torch.zeros(1, 2, n, dtype=torch.bfloat16, device="cuda")
    h[:, 1, -5:] = 4.0                                   # different scales in the last partial tile
    out, logdet = kernels.affine_forward(x, h, eps=1e-4, layout="half", inverse=False)
    s0, s4 = torch.sigmoid(torch.tensor(2.0)) + 1e-4, torch.sigmoid(torch.tensor(6.0)) + 1e-4
    expected = (n - 5) * math.log(s0) + 5 * math.log(s4)
    assert math.isclose(logdet.item(), expected, rel_tol=1e-4)
    assert out[0, 0, -1].item() == pytest.approx(s4.item(), rel=1e-2)
    assert out[0, 0, 0].item() == pytest.approx(s0.item(), rel=1e-2)
