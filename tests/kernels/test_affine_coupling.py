"""``fused_affine_coupling``: the affine map written straight into a coupling's concatenated output."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import KERNEL_DEVICE, assert_close

from flowkit.kernels import fused_affine_coupling, use_backend
from flowkit.kernels.reference import affine_reference
from flowkit.layers import AffineCoupling
from flowkit.nn import conv_subnet
from flowkit.testing import perturb_parameters


def randn(*shape, seed=0, device=KERNEL_DEVICE):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=device, dtype=torch.float32)


def unfused(x1, x2, h, **options):
    """The specification: the reference map of x2, then torch.cat."""
    y2, logdet = affine_reference(x2, h, **options)
    return torch.cat([x1, y2], dim=1), logdet


def run_with_grads(fn, x, h, c1, gy, gl):
    xr, hr = x.detach().clone().requires_grad_(), h.detach().clone().requires_grad_()
    x1, x2 = xr.split([c1, x.shape[1] - c1], dim=1)
    # x1 also feeds something else, as it feeds a coupling's sub-network: its gradients must add up.
    y, logdet = fn(x1, x2, hr)
    ((y * gy).sum() + (logdet * gl).sum() + x1.square().sum()).backward()
    return y, logdet, xr.grad, hr.grad


@pytest.mark.parametrize("layout", ["cross", "half"])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_matches_map_then_cat_with_gradients(kernels, layout, inverse, channels_last):
    c1, c2 = 3, 2
    x = randn(2, c1 + c2, 5, 4, seed=1)
    h = 2 * randn(2, 2 * c2, 5, 4, seed=2)
    if channels_last:
        x, h = x.to(memory_format=torch.channels_last), h.to(memory_format=torch.channels_last)
    gy, gl = randn(2, c1 + c2, 5, 4, seed=3), randn(2, seed=4)
    options = dict(layout=layout, inverse=inverse)
    expected = run_with_grads(lambda a, b, hh: unfused(a, b, hh, **options), x, h, c1, gy, gl)
    got = run_with_grads(
        lambda a, b, hh: fused_affine_coupling(a, b, hh, backend="triton", **options), x, h, c1, gy, gl
    )
    assert type(got[0].grad_fn).__name__ == "_TritonAffineCouplingBackward"
    for g, e, what in zip(got, expected, ["y", "logdet", "dx", "dh"]):
        assert_close(g, e, what=what)
    # The output keeps the layout torch.cat gives the same halves.
    fmt = torch.channels_last
    assert got[0].is_contiguous(memory_format=fmt) == expected[0].is_contiguous(memory_format=fmt)
    assert got[0].is_contiguous(memory_format=fmt) == channels_last


def test_passed_through_channels_are_copied_exactly(kernels):
    x1, x2, h = randn(2, 3, 4, 4, seed=5), randn(2, 2, 4, 4, seed=6), randn(2, 4, 4, 4, seed=7)
    y, _ = fused_affine_coupling(x1, x2, h, backend="triton")
    assert torch.equal(y[:, :3], x1)
    assert y[:, 3:].data_ptr() != x2.data_ptr()


@pytest.mark.parametrize("wanted", ["x1", "x2", "h"])
def test_computes_only_the_gradients_autograd_needs(kernels, wanted):
    inputs = {"x1": randn(2, 2, 3, 3, seed=8), "x2": randn(2, 3, 3, 3, seed=9), "h": randn(2, 6, 3, 3, seed=10)}
    expected_inputs = {k: v.clone() for k, v in inputs.items()}
    inputs[wanted].requires_grad_()
    expected_inputs[wanted].requires_grad_()
    gy, gl = randn(2, 5, 3, 3, seed=11), randn(2, seed=12)
    y, logdet = fused_affine_coupling(inputs["x1"], inputs["x2"], inputs["h"], backend="triton")
    ((y * gy).sum() + (logdet * gl).sum()).backward()
    ye, logdete = unfused(expected_inputs["x1"], expected_inputs["x2"], expected_inputs["h"], layout="cross")
    ((ye * gy).sum() + (logdete * gl).sum()).backward()
    assert_close(inputs[wanted].grad, expected_inputs[wanted].grad, what=f"d{wanted}")
    for name, tensor in inputs.items():
        if name != wanted:
            assert tensor.grad is None


@pytest.mark.parametrize("shape", [(0, 5, 3, 3), (2, 5, 0, 3), (0, 5)], ids=str)
def test_empty_inputs(kernels, shape):
    x = randn(*shape, seed=13).requires_grad_()
    h = randn(shape[0], 4, *shape[2:], seed=14).requires_grad_()
    x1, x2 = x.split([3, 2], dim=1)
    y, logdet = fused_affine_coupling(x1, x2, h, backend="triton")
    assert y.shape == x.shape and logdet.shape == (shape[0],)
    assert torch.equal(logdet, torch.zeros_like(logdet))
    (y.sum() + logdet.sum()).backward()
    assert x.grad.shape == x.shape and h.grad.shape == h.shape


def test_layer_uses_it_and_matches_the_torch_backend(kernels):
    # AffineCoupling with the default split and the sigmoid scale takes the fused coupling path.
    layer = AffineCoupling(6, subnet=lambda i, o: conv_subnet(i, o, hidden_channels=(8, 8))).to(KERNEL_DEVICE)
    perturb_parameters(layer, 0.3, torch.Generator().manual_seed(15))
    x = randn(2, 6, 5, 5, seed=16)
    results = {}
    for backend in ("triton", "torch"):
        layer.zero_grad()
        xr = x.clone().requires_grad_()
        with use_backend(backend):
            y, logdet = layer(xr)
            if backend == "triton":
                assert type(y.grad_fn).__name__ == "_TritonAffineCouplingBackward"
            (y.square().sum() - logdet.sum()).backward()
            x_back, inverse_logdet = layer.inverse(y.detach())
        results[backend] = (y, logdet, xr.grad, x_back, inverse_logdet, *(p.grad for p in layer.parameters()))
    for index, (got, expected) in enumerate(zip(results["triton"], results["torch"])):
        # Gradients sum float32 terms that cancel (the sub-network's path into x1): compare each
        # result with its own magnitude.
        error = (got - expected).norm() / expected.norm().clamp_min(1e-12)
        assert error < 1e-6, f"result {index}: relative error {error.item():.2e}"
    torch.testing.assert_close(results["triton"][3], x, rtol=1e-4, atol=1e-4)


def test_rejects_mismatched_halves():
    x2, h = torch.randn(2, 2, 4, 4), torch.randn(2, 4, 4, 4)
    with pytest.raises(ValueError, match=r"x1 of shape \(B, C1, \.\.\.\) with x2's batch and spatial sizes"):
        fused_affine_coupling(torch.randn(2, 3, 4, 5), x2, h)
    with pytest.raises(ValueError, match="x1 of shape"):
        fused_affine_coupling(torch.randn(3, 3, 4, 4), x2, h)
    with pytest.raises(ValueError, match="one dtype on one device, got x1 torch.float64"):
        fused_affine_coupling(torch.randn(2, 3, 4, 4, dtype=torch.float64), x2, h)
    with pytest.raises(ValueError, match="expects h of shape"):
        fused_affine_coupling(torch.randn(2, 3, 4, 4), x2, torch.randn(2, 3, 4, 4))


def test_kernel_writes_into_a_given_output(kernels):
    x, h = randn(2, 3, 4, 4, seed=17), randn(2, 6, 4, 4, seed=18)
    buffer = torch.full((2, 5, 4, 4), 7.0, device=KERNEL_DEVICE)
    out, logdet = kernels.affine_forward(x, h, eps=1e-4, layout="cross", inverse=False, out=buffer[:, 2:])
    expected, expected_logdet = affine_reference(x, h)
    assert out.data_ptr() == buffer[:, 2:].data_ptr()
    assert_close(buffer[:, 2:], expected, what="written slice")
    assert_close(logdet, expected_logdet, what="logdet")
    assert torch.equal(buffer[:, :2], torch.full_like(buffer[:, :2], 7.0)), "wrote outside its slice"
    with pytest.raises(ValueError, match=r"out must have x's shape \(2, 3, 4, 4\).*got \(2, 2, 4, 4\)"):
        kernels.affine_forward(x, h, eps=1e-4, layout="cross", inverse=False, out=buffer[:, 3:])
    strided = torch.empty(2, 3, 8, 4, device=KERNEL_DEVICE)[:, :, ::2]
    with pytest.raises(ValueError, match="must collapse into one stride"):
        kernels.affine_forward(x, h, eps=1e-4, layout="cross", inverse=False, out=strided)
