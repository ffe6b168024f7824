"""The Triton kernels against the PyTorch reference, executed by Triton's interpreter on a CPU-only run."""

from __future__ import annotations

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
    count = x[0].numel()
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
