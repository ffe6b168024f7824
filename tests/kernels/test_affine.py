"""``fused_affine`` and its custom op: validation, dispatch, opcheck, gradcheck, layers, torch.compile."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import KERNEL_DEVICE, assert_close

import flowkit
from flowkit.kernels import affine_backward_formula, fused_affine, use_backend
from flowkit.kernels.reference import affine_reference
from flowkit.layers import ActNorm, AffineCoupling, AffineInjector, InvConv1x1
from flowkit.nn import conv_subnet
from flowkit.testing import perturb_parameters

OP = torch.ops.flowkit.fused_affine


def randn(*shape, seed=0, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def test_validates_shapes_layout_and_backend():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"h of shape \(2, 6, 4, 4\).*got \(2, 3, 4, 4\)"):
        fused_affine(x, torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"h of shape \(2, 6, 4, 4\).*got \(2, 6, 1, 1\)"):
        fused_affine(x, torch.randn(2, 6, 1, 1))  # would broadcast, and give a wrong log-det
    with pytest.raises(ValueError, match="layout must be 'cross' or 'half', got 'interleaved'"):
        fused_affine(x, torch.randn(2, 6, 4, 4), layout="interleaved")
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'triton', 'torch'; got 'cuda'"):
        fused_affine(x, torch.randn(2, 6, 4, 4), backend="cuda")
    with pytest.raises(ValueError, match=r"shape \(B, C, ...\), got shape \(5,\)"):
        fused_affine(torch.randn(5), torch.randn(10))
    with pytest.raises(TypeError, match="'triton' backend supports float32, float16 and bfloat16.*float64"):
        fused_affine(x.double(), torch.randn(2, 6, 4, 4).double(), backend="triton")


@pytest.mark.parametrize("layout", ["cross", "half"])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_triton_backend_through_autograd_matches_reference(kernels, layout, inverse):
    # The whole public path: dispatch, custom op, registered autograd, fused backward kernel.
    x = randn(3, 7, 4, 5, seed=1, device=KERNEL_DEVICE)[:, 2:]   # non-contiguous, like a coupling
    h = 2 * randn(3, 10, 4, 5, seed=2, device=KERNEL_DEVICE)
    results = {}
    for backend in ("triton", "torch"):
        xr, hr = x.clone().requires_grad_(), h.clone().requires_grad_()
        y, logdet = fused_affine(xr, hr, layout=layout, inverse=inverse, backend=backend)
        (y.square().sum() + logdet.sum()).backward()
        results[backend] = (y, logdet, xr.grad, hr.grad)
    for got, expected, what in zip(results["triton"], results["torch"], ["y", "logdet", "dx", "dh"]):
        assert_close(got, expected, what=what)


def test_eager_kernels_skip_the_custom_op(kernels):
    # Eager calls reach the kernels through a plain autograd.Function (cheaper on the host than the
    # custom op's dispatcher round trip); torch.compile gets the custom op (tested below).
    x = randn(2, 3, 4, 4, seed=19, device=KERNEL_DEVICE).requires_grad_()
    h = randn(2, 6, 4, 4, seed=20, device=KERNEL_DEVICE).requires_grad_()
    y, logdet = fused_affine(x, h, backend="triton")
    assert type(y.grad_fn).__name__ == "_TritonAffineBackward"
    (y.sum() + logdet.sum()).backward()
    xr, hr = x.detach().clone().requires_grad_(), h.detach().clone().requires_grad_()
    yr, logdetr = affine_reference(xr, hr)
    (yr.sum() + logdetr.sum()).backward()
    assert_close(y, yr, what="y")
    assert_close(x.grad, xr.grad, what="dx")
    assert_close(h.grad, hr.grad, what="dh")


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("wanted", ["x", "h"])
def test_eager_kernels_compute_only_the_gradients_autograd_needs(kernels, wanted, inverse):
    x = randn(2, 3, 4, 4, seed=21, device=KERNEL_DEVICE)
    h = 2 * randn(2, 6, 4, 4, seed=22, device=KERNEL_DEVICE)
    inputs = {"x": x.clone(), "h": h.clone()}
    inputs[wanted].requires_grad_()
    y, logdet = fused_affine(inputs["x"], inputs["h"], inverse=inverse, backend="triton")
    (y.square().sum() + logdet.sum()).backward()
    expected = {"x": x.clone().requires_grad_(), "h": h.clone().requires_grad_()}
    yr, logdetr = affine_reference(expected["x"], expected["h"], inverse=inverse)
    (yr.square().sum() + logdetr.sum()).backward()
    assert_close(inputs[wanted].grad, expected[wanted].grad, what=f"d{wanted}")
    # The kernel module's own call: what is not needed is None, and no input is written through.
    gy, gl = randn(2, 3, 4, 4, seed=23, device=KERNEL_DEVICE), randn(2, seed=24, device=KERNEL_DEVICE)
    needs = (wanted == "x", wanted == "h")
    got = kernels.affine_backward(x, h, gy, gl, eps=1e-4, layout="cross", inverse=inverse, needs=needs)
    full = kernels.affine_backward(x, h, gy, gl, eps=1e-4, layout="cross", inverse=inverse)
    assert [g is None for g in got] == [not n for n in needs]
    assert_close(got[needs.index(True)], full[needs.index(True)], what="the needed gradient")
    assert torch.equal(h, 2 * randn(2, 6, 4, 4, seed=22, device=KERNEL_DEVICE))


@pytest.mark.parametrize("layout", ["cross", "half"])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_gradcheck_of_the_op_in_float64(layout, inverse):
    # The custom op with its hand-written backward formula (torch backend), against finite differences.
    x = randn(2, 3, 2, 3, seed=3, dtype=torch.float64).requires_grad_()
    h = randn(2, 6, 2, 3, seed=4, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, h: OP(x, h, 1e-4, layout, inverse, "torch"), (x, h))


def test_backward_formula_matches_autograd_of_the_reference():
    x, h = randn(3, 4, 5, seed=5, dtype=torch.float64), randn(3, 8, 5, seed=6, dtype=torch.float64)
    gy, gl = randn(3, 4, 5, seed=7, dtype=torch.float64), randn(3, seed=8, dtype=torch.float64)
    for inverse in (False, True):
        xr, hr = x.clone().requires_grad_(), h.clone().requires_grad_()
        outputs = affine_reference(xr, hr, layout="half", inverse=inverse)
        expected = torch.autograd.grad(outputs, (xr, hr), (gy, gl))
        got = affine_backward_formula(x, h, gy, gl, eps=1e-4, layout="half", inverse=inverse)
        torch.testing.assert_close(got, expected)


def test_backward_formula_keeps_the_scale_gradient_for_large_raw_scales():
    # In float32 sigma * (1 - sigma) cancels to 0 once sigma rounds to 1 (raw + 2 > ~17); the
    # formula must keep sigmoid's derivative, exp(-z) to leading order, to float32 precision.
    raw = torch.linspace(10.0, 22.0, 26).view(1, 1, 26)
    x = torch.linspace(-2.0, 2.0, 26).view(1, 1, 26)
    h = torch.cat([torch.full_like(raw, 0.3), raw], 1)
    gy, gl = torch.ones_like(x), torch.ones(1)
    for inverse in (False, True):
        _, dh = affine_backward_formula(x, h, gy, gl, eps=1e-4, layout="half", inverse=inverse)
        hr = h.double().requires_grad_()
        outputs = affine_reference(x.double(), hr, layout="half", inverse=inverse)
        (exact,) = torch.autograd.grad(outputs, hr, (gy.double(), gl.double()))
        torch.testing.assert_close(dh[:, 1:].double(), exact[:, 1:], rtol=1e-5, atol=0)


def opcheck_cases(device):
    x = randn(2, 5, 3, 3, seed=9, device=device)
    h = randn(2, 6, 3, 3, seed=10, device=device)
    return [
        (x[:, 2:], h, 1e-4, "cross", False),                       # non-contiguous slice
        (x[:, :3].contiguous(), h, 1e-3, "half", True),
        (x[:, :3].to(torch.bfloat16), h.to(torch.bfloat16), 1e-4, "cross", False),
        (randn(4, 3, seed=11, device=device), randn(4, 6, seed=12, device=device), 1e-4, "half", False),
    ]


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_opcheck(kernels, backend):
    device = KERNEL_DEVICE if backend == "triton" else "cpu"
    for args in opcheck_cases(device):
        args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(OP, (*args, backend))


def small_flow(channels=4):
    # Perturbed away from the identity initialisation, so that every term of the gradient matters.
    flow = flowkit.Sequential(
        ActNorm(channels),
        InvConv1x1(channels),
        AffineCoupling(channels, subnet=lambda i, o: conv_subnet(i, o, hidden_channels=(8, 8))),
        AffineInjector(channels, channels),
    )
    perturb_parameters(flow, 0.3, torch.Generator().manual_seed(13))
    return flow


class Conditioned(torch.nn.Module):
    """The flow with its input as conditioning, so the injector has a cond to work with."""

    def __init__(self, flow):
        super().__init__()
        self.flow = flow

    def forward(self, x):
        return self.flow(x, x.detach())


def assert_grads_close(got, expected, tolerance=1e-5):
    # Parameter gradients sum many float32 terms that cancel; compare each with its own magnitude.
    for index, (g, e) in enumerate(zip(got, expected)):
        error = (g - e).norm() / e.norm().clamp_min(1e-12)
        assert error < tolerance, f"gradient of parameter {index}: relative error {error.item():.2e}"


def test_layers_give_the_same_results_on_both_backends(kernels):
    model = Conditioned(small_flow()).to(KERNEL_DEVICE)
    x = randn(2, 4, 6, 6, seed=14, device=KERNEL_DEVICE)
    model(x)  # ActNorm reads its initialised flag once
    results = {}
    for backend in ("triton", "torch"):
        model.zero_grad()
        with use_backend(backend):
            y, logdet = model(x)
            (y.square().sum() - logdet.sum()).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results[backend] = (y.detach(), logdet.detach(), grads)
    torch.testing.assert_close(results["triton"][:2], results["torch"][:2], rtol=1e-5, atol=1e-5)
    assert_grads_close(results["triton"][2], results["torch"][2])


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_compile_fullgraph_of_a_small_flow(kernels, backend, monkeypatch):
    # "triton": the custom op must stay one opaque node, forward and backward, with no graph break;
    # "torch": the reference is traced and fused by Inductor. Both must reproduce eager results.
    torch._dynamo.reset()
    model = Conditioned(small_flow()).to(KERNEL_DEVICE)
    x = randn(2, 4, 4, 4, seed=15, device=KERNEL_DEVICE)
    model(x)  # ActNorm checks its initialised flag once, eagerly: a data-dependent branch
    compiled = torch.compile(model, fullgraph=True)
    calls = []
    for name in ("affine_forward", "affine_backward"):
        original = getattr(kernels, name)
        counted = lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k)  # noqa: E731
        monkeypatch.setattr(kernels, name, counted)
    with use_backend(backend):
        outputs = {}
        for name, fn in (("eager", model), ("compiled", compiled)):
            model.zero_grad()
            y, logdet = fn(x)
            (y.square().sum() - logdet.sum()).backward()
            outputs[name] = (y.detach(), logdet.detach(), [p.grad.clone() for p in model.parameters()])
            # Coupling and injector each run one kernel forward and one backward, or none on "torch".
            expected = ["affine_forward"] * 2 + ["affine_backward"] * 2 if backend == "triton" else []
            assert sorted(calls) == sorted(expected), f"{name}: kernel calls {calls}"
            calls.clear()
    # Inductor reorders float32 arithmetic (and a cold compile may pick other conv/matmul kernels
    # than a cached one: up to ~1e-4 relative observed), so they agree closely, not bit for bit.
    torch.testing.assert_close(outputs["compiled"][:2], outputs["eager"][:2], rtol=1e-4, atol=1e-4)
    assert_grads_close(outputs["compiled"][2], outputs["eager"][2], tolerance=1e-4)


# The interpreter's numpy sigmoid overflows exp(-x) for very negative raw scales on the way to the
# right answer (sigmoid -> 0, scale -> eps); the comparison below checks that answer.
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_llflow_runs_the_kernels_and_matches_the_reference(kernels, monkeypatch):
    # LLFlow's flow steps reach the kernels through the layers, with no change to the model.
    from flowkit.models import LLFlow, LLFlowConfig

    config = LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4, stack_blocks=(),
                          steps_per_level=1, transition_steps=1, hidden_channels=4)
    torch.manual_seed(16)
    model = LLFlow(config).to(KERNEL_DEVICE)
    low = (0.2 * torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(17))).to(KERNEL_DEVICE)
    high = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(18)).to(KERNEL_DEVICE)
    model.nll(low, high)  # initialises the ActNorms from data
    perturb_parameters(model.flow, 0.1, torch.Generator().manual_seed(19))
    calls = []
    original = kernels.affine_forward
    monkeypatch.setattr(kernels, "affine_forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    results = {}
    for backend in ("triton", "torch"):
        model.zero_grad()
        with use_backend(backend):
            nll = model.nll(low, high)
            nll.sum().backward()
            enhanced = model.eval().enhance(low)
            model.train()
        results[backend] = (nll.detach(), enhanced, [p.grad.clone() for p in model.flow.parameters()])
        # 3 levels, each with one injector and one coupling, in nll and again in enhance.
        assert len(calls) == (12 if backend == "triton" else 0), f"{backend}: {len(calls)} kernel calls"
        calls.clear()
    torch.testing.assert_close(results["triton"][:2], results["torch"][:2], rtol=1e-5, atol=1e-5)
    assert_grads_close(results["triton"][2], results["torch"][2])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_default_leaves_the_affine_map_to_inductor(kernels):
    # On CUDA eager "auto" runs the Triton kernels; under torch.compile it must trace the reference
    # instead, so that Inductor fuses the affine map with the concatenation and the sub-network's
    # bias: no flowkit custom op (an opaque node with copies around it) in the generated code.
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    model = Conditioned(small_flow()).cuda()
    x = randn(2, 4, 8, 8, seed=21, device="cuda")
    model(x)
    eager_y, eager_logdet = model(x)
    (y, logdet), codes = run_and_get_code(torch.compile(model, fullgraph=True), x)
    code = "\n".join(codes)
    assert "flowkit" not in code and "fused_affine" not in code
    torch.testing.assert_close((y, logdet), (eager_y, eager_logdet), rtol=1e-4, atol=1e-4)


def test_split_shift_scale_needs_an_even_channel_count():
    from flowkit.kernels.reference import split_shift_scale

    for layout in ("half", "cross"):
        with pytest.raises(ValueError, match="even number of channels .* got 5"):
            split_shift_scale(torch.randn(2, 5, 3, 3), layout)
