"""Invertible backpropagation (flowkit.memory): the same results and gradients, without stored activations."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from flow_strategies import perturbed, randn
from torch import nn

import flowkit
from flowkit.layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    AffineInjector,
    CheckerboardCoupling,
    Coupling,
    FactorOut,
    InvConv1x1,
    InverseAutoregressive,
    MaskedAutoregressive,
    Permute,
    Split,
    Squeeze,
)
from flowkit.memory import InvertibleSequential, invertible, invertible_forward, reconstruction_errors
from flowkit.nn import MLP, conv_subnet

COND = 2
# Gradient agreement with standard backpropagation, max-norm relative error per gradient tensor.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}


def _conv(cin: int, cout: int) -> nn.Module:
    return conv_subnet(cin, cout, hidden_channels=(8, 8))


def _mlp(cin: int, cout: int) -> nn.Module:
    return MLP(cin, cout, (8, 8))


# One builder per layer type, (channels) -> Flow, for (B, 4, 4, 4) images with a (B, 2, 4, 4) cond.
IMAGE_LAYERS = {
    "actnorm": lambda c: ActNorm(c),
    "conv1x1": lambda c: InvConv1x1(c),
    "conv1x1_lu": lambda c: InvConv1x1(c, lu=True),
    "affine_sigmoid": lambda c: AffineCoupling(c, COND, subnet=_conv),
    "affine_exp": lambda c: AffineCoupling(c, COND, subnet=_conv, scale="exp"),
    "additive": lambda c: AdditiveCoupling(c, COND, subnet=_conv),
    "coupling": lambda c: Coupling(c, COND, subnet=_conv),
    "checkerboard": lambda c: CheckerboardCoupling(c, COND, subnet=_conv),
    "injector": lambda c: AffineInjector(c, COND, subnet=_conv),
    "permute": lambda c: Permute(c, mode="shuffle"),
    # A squeezed sub-chain at its own resolution, then back: Squeeze, WithCond and Inverse.
    "squeeze_withcond": lambda c: flowkit.Sequential(
        flowkit.WithCond(flowkit.Sequential(Squeeze(), AffineCoupling(4 * c, COND, subnet=_conv)),
                         nn.AvgPool2d(2)),
        flowkit.Inverse(Squeeze()),
    ),
}
VECTOR_LAYERS = {
    "maf": lambda d: MaskedAutoregressive(d, COND, hidden_features=(8,)),
    "iaf": lambda d: InverseAutoregressive(d, COND, hidden_features=(8,), order="reverse"),
    "vector_affine": lambda d: AffineCoupling(d, COND, subnet=_mlp, scale="exp"),
}


def _gradients(flow: flowkit.Flow, x: torch.Tensor, cond: torch.Tensor | None, run) -> tuple:
    """Output, log-det and the gradients of a negative log-likelihood w.r.t. x, cond and parameters."""
    flow.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    cond = None if cond is None else cond.detach().clone().requires_grad_(True)
    y, logdet = run(flow, x, cond)
    loss = 0.5 * y.square().flatten(1).sum(1).mean() - logdet.mean()
    loss.backward()
    grads = {"x": x.grad, **({} if cond is None else {"cond": cond.grad})}
    grads.update({name: p.grad for name, p in flow.named_parameters() if p.grad is not None})
    return y.detach(), logdet.detach(), grads


def _standard(flow, x, cond):
    return flow(x, cond)


def assert_same_results_and_close_gradients(flow, x, cond, dtype) -> float:
    """The invertible path's outputs equal the standard path's bit for bit; its gradients agree."""
    y, logdet, expected = _gradients(flow, x, cond, _standard)
    y_inv, logdet_inv, actual = _gradients(flow, x, cond, invertible_forward)
    assert torch.equal(y, y_inv) and torch.equal(logdet, logdet_inv)
    assert set(actual) == set(expected)
    worst = 0.0
    for name, grad in expected.items():
        scale = float(grad.abs().max()) or 1.0
        error = float((actual[name] - grad).abs().max()) / scale
        assert error <= TOLERANCE[dtype], f"gradient of {name}: relative error {error:.3g}"
        worst = max(worst, error)
    return worst


def _chain(layers: dict, names: list[str], channels: int, repeats: int, dtype, seed: int) -> flowkit.Sequential:
    torch.manual_seed(seed)
    members = []
    for _ in range(repeats):
        for name in names:
            members += [layers[name](channels), InvConv1x1(channels)]  # mixing between repeats
    return perturbed(flowkit.Sequential(*members), seed, scale=0.1, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kind", sorted(IMAGE_LAYERS))
def test_each_image_layer_type_gets_standard_gradients(kind, dtype):
    flow = _chain(IMAGE_LAYERS, [kind], 4, 3, dtype, seed=1)
    x, cond = randn((2, 4, 4, 4), 2, dtype), randn((2, COND, 4, 4), 3, dtype)
    assert_same_results_and_close_gradients(flow, x, cond if flow.conditional else None, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kind", sorted(VECTOR_LAYERS))
def test_each_vector_layer_type_gets_standard_gradients(kind, dtype):
    flow = _chain(VECTOR_LAYERS, [kind, "vector_affine"], 4, 2, dtype, seed=4)
    x, cond = randn((3, 4), 5, dtype), randn((3, COND), 6, dtype)
    assert_same_results_and_close_gradients(flow, x, cond, dtype)


def _multiscale(dtype, seed: int = 7) -> flowkit.Sequential:
    """Every image layer type twice at 4x4, then a squeeze to 2x2, a conditional Split and steps on the kept half."""
    torch.manual_seed(seed)
    pool = nn.AvgPool2d(2)
    members = []
    for _ in range(2):
        for name in sorted(IMAGE_LAYERS):
            members += [IMAGE_LAYERS[name](4), InvConv1x1(4, lu=True)]
    members += [
        Squeeze(),
        flowkit.WithCond(AffineCoupling(16, COND, subnet=_conv), pool),
        flowkit.WithCond(Split(16, COND, keep=8, prior_net=_conv), pool),
        flowkit.WithCond(FactorOut(flowkit.Sequential(ActNorm(8), InvConv1x1(8), AffineInjector(8, COND, subnet=_conv)), 8), pool),
    ]
    return perturbed(flowkit.Sequential(*members), seed, scale=0.1, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_deep_multiscale_conditional_flow_gets_standard_gradients(dtype):
    flow = _multiscale(dtype)
    assert len(flow) > 40
    x, cond = randn((2, 4, 4, 4), 8, dtype), randn((2, COND, 4, 4), 9, dtype)
    worst = assert_same_results_and_close_gradients(flow, x, cond, dtype)
    # The documented accuracy of the rebuilt inputs, relative to their scale.
    errors = reconstruction_errors(flow, x, cond)
    assert len(errors) == len(flow) and max(errors) <= {torch.float64: 1e-12, torch.float32: 1e-5}[dtype]
    print(f"{dtype}: {len(flow)} members, worst relative gradient error {worst:.2e}, "
          f"worst rebuilt input error {max(errors):.2e}")


def test_nested_invertible_chains_for_a_multiscale_flow():
    """A level at half resolution as its own invertible chain inside an invertible chain."""
    dtype = torch.float64
    torch.manual_seed(11)
    level = InvertibleSequential(*[m for _ in range(3) for m in (ActNorm(8), InvConv1x1(8),
                                                                 AffineCoupling(8, COND, subnet=_conv))])
    outer = flowkit.Sequential(
        AffineCoupling(4, COND, subnet=_conv), Squeeze(),
        flowkit.WithCond(Split(16, COND), nn.AvgPool2d(2)),
        flowkit.WithCond(FactorOut(level, keep=8), nn.AvgPool2d(2)),
    )
    outer = perturbed(outer, 12, scale=0.1, dtype=dtype)
    x, cond = randn((2, 4, 4, 4), 13, dtype), randn((2, COND, 4, 4), 14, dtype)
    y, _ = invertible_forward(outer, x, cond)
    assert y.shape == (2, 16, 2, 2)
    assert_same_results_and_close_gradients(outer, x, cond, dtype)


def _saved_activation_bytes(flow: flowkit.Flow, x: torch.Tensor, cond: torch.Tensor, run) -> int:
    """Bytes of distinct tensors autograd keeps for backward, parameters and inputs excluded."""
    known = {p.data_ptr() for p in flow.parameters()} | {x.data_ptr(), cond.data_ptr()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in known:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        outputs = run(flow, x, cond)  # held, so that no saved storage is freed and reused meanwhile
    del outputs
    return sum(storages.values())


def test_saved_activations_do_not_grow_with_depth():
    x, cond = randn((2, 4, 8, 8), 15), randn((2, COND, 8, 8), 16)
    saved = {}
    for depth in (2, 8):
        flow = _chain(IMAGE_LAYERS, ["actnorm", "affine_sigmoid", "injector"], 4, depth, torch.float32, seed=17)
        saved[depth] = {run.__name__: _saved_activation_bytes(flow, x, cond, run)
                        for run in (_standard, invertible_forward)}
    assert saved[8]["invertible_forward"] == saved[2]["invertible_forward"] == x.numel() * 4  # the output only
    assert saved[8]["_standard"] > 3 * saved[2]["_standard"]


def test_actnorm_initialises_on_the_standard_path_then_the_chain_saves_memory():
    torch.manual_seed(18)
    members = [ActNorm(4), AffineCoupling(4, subnet=_conv), ActNorm(4), InvConv1x1(4)]
    plain = flowkit.Sequential(*copy.deepcopy(members))
    chain = invertible(flowkit.Sequential(*members))
    x = randn((8, 4, 3, 3), 19) * 3 + 1
    y_plain, _ = plain(x.requires_grad_(True))
    y, _ = chain(x)  # the first training call initialises both ActNorms from x, as plain does
    assert torch.equal(y, y_plain)
    assert "InvertibleStep" not in type(y.grad_fn).__name__
    assert all(bool(m.initialized) for m in chain if isinstance(m, ActNorm))
    torch.testing.assert_close(chain[0].logs, plain[0].logs, rtol=0, atol=0)
    y, _ = chain(x)
    assert "InvertibleStep" in type(y.grad_fn).__name__
    with torch.no_grad():  # no autograd: nothing to save, the plain forward runs
        assert torch.equal(chain(x)[0], plain(x)[0])


def test_autocast_gradients_are_about_as_accurate_as_standard_autocast():
    """Under bfloat16 autocast the rebuilt inputs carry bfloat16 rounding (see flowkit.memory)."""
    flow = _chain(IMAGE_LAYERS, ["actnorm", "affine_sigmoid", "injector"], 4, 4, torch.float32, seed=20)
    x, cond = randn((2, 4, 4, 4), 21), randn((2, COND, 4, 4), 22)
    exact = torch.cat([g.flatten() for g in _gradients(flow, x, cond, _standard)[2].values()])

    def under_autocast(run):
        def autocast_run(flow, x, cond):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return run(flow, x, cond)
        y, logdet, grads = _gradients(flow, x, cond, autocast_run)
        error = float((torch.cat([g.flatten() for g in grads.values()]) - exact).norm() / exact.norm())
        return y, logdet, error

    y_std, logdet_std, error_std = under_autocast(_standard)
    y_inv, logdet_inv, error_inv = under_autocast(invertible_forward)
    assert torch.equal(y_std, y_inv) and torch.equal(logdet_std, logdet_inv)
    assert 0 < error_std < 0.02 and error_inv <= 2 * error_std, (error_inv, error_std)


@pytest.fixture
def single_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_ddp_and_gradient_clipping_see_the_same_gradients(single_process_group):
    """DDP's reducer sees the parameters used by the chain's node and receives each gradient once.

    With ``find_unused_parameters=True`` (as the trainer runs it), DDP walks the autograd graph from
    the outputs: parameters hidden from it would be reported unused and then become ready twice.
    """
    flow = _chain(IMAGE_LAYERS, ["affine_sigmoid", "injector"], 4, 2, torch.float32, seed=23)
    x, cond = randn((2, 4, 4, 4), 24), randn((2, COND, 4, 4), 25)
    norms, grads = {}, {}
    for name, run in (("standard", _standard), ("invertible", invertible_forward)):
        model = nn.parallel.DistributedDataParallel(_Runner(copy.deepcopy(flow), run),
                                                    find_unused_parameters=True)
        for _ in range(2):  # a second step: the reducer was reset and fires again
            model.zero_grad(set_to_none=True)
            y, logdet = model(x, cond)
            (0.5 * y.square().flatten(1).sum(1).mean() - logdet.mean()).backward()
        norms[name] = float(nn.utils.clip_grad_norm_(model.parameters(), 1e-3))
        grads[name] = [p.grad for p in model.parameters()]
    assert norms["invertible"] == pytest.approx(norms["standard"], rel=1e-4)
    for a, b in zip(grads["invertible"], grads["standard"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


class _Runner(nn.Module):
    def __init__(self, flow: flowkit.Flow, run) -> None:
        super().__init__()
        self.flow, self.run = flow, run

    def forward(self, x, cond):
        return self.run(self.flow, x, cond)


def test_a_chain_ending_in_split_and_slices_of_an_invertible_chain():
    dtype = torch.float64
    torch.manual_seed(26)
    chain = perturbed(flowkit.Sequential(AffineCoupling(4, subnet=_conv), Split(4, prior_net=_conv)), 26, dtype=dtype)
    assert_same_results_and_close_gradients(chain, randn((2, 4, 3, 3), 27, dtype), None, dtype)
    fast = invertible(chain)
    assert isinstance(fast[:1], InvertibleSequential) and fast[1] is chain[1]
    assert isinstance(fast[::-1], InvertibleSequential)
    assert invertible(fast) is fast
    single = invertible(chain[0])
    assert len(single) == 1 and next(iter(single.state_dict())).startswith("flows.0.")


class _Halve(flowkit.Flow):
    """Not a bijection: drops half of the channels."""

    conditional = False

    def forward(self, x, cond=None):
        return x[:, : x.shape[1] // 2] * 1.0, torch.zeros(x.shape[0], dtype=x.dtype)


def test_what_the_mode_cannot_do_is_an_error():
    x = randn((2, 4, 3, 3), 28).requires_grad_(True)
    dropout = flowkit.Sequential(AffineCoupling(4, subnet=lambda i, o: nn.Sequential(nn.Dropout(0.1), _conv(i, o))))
    with pytest.raises(ValueError, match="deterministic members.*Dropout"):
        invertible_forward(dropout, x)
    with pytest.raises(ValueError, match=r"bijective members; member 0 \(_Halve\) maps \(2, 4, 3, 3\) to \(2, 2, 3, 3\)"):
        invertible_forward(flowkit.Sequential(_Halve(), InvConv1x1(2)), randn((2, 4, 3, 3), 29).requires_grad_())
    with pytest.raises(TypeError, match="cond to be a tensor"):
        invertible_forward(flowkit.Sequential(AffineInjector(4, 2)), x, [randn((2, 2, 3, 3), 30)])
    chain = flowkit.Sequential(AffineCoupling(4, subnet=_conv), InvConv1x1(4))
    with torch.no_grad():
        chain(x)  # the sub-network's ActNorms initialise (on the standard path)
    y, _ = invertible_forward(chain, x)
    with pytest.raises(RuntimeError, match="higher-order"):
        torch.autograd.grad(y.square().sum(), x, create_graph=True)
