"""One conformance table over every public flow: each row runs the same checks.

A new layer, composite or recipe joins the table, or :func:`test_the_table_covers_every_public_flow`
fails. Each family's own properties (masks, Hypothesis-drawn shapes, reference values) stay in its
own test file; this table makes sure none skips the contract's checks.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

import flowkit
from flowkit import layers, memory, recipes
from flowkit.models.llflow import flow as llflow_flow
from flowkit.nn import MLP
from flowkit.testing import check_flow, perturb_parameters
from flowkit.transforms import AdditiveTransform, AffineTransform, RationalQuadraticSpline

Cond = tuple[int, ...] | list[tuple[int, ...]] | None


@dataclass(frozen=True)
class Row:
    """How to build one flow, and the shapes of one sample of its input and conditioning."""

    build: Callable[[], flowkit.Flow]
    x: tuple[int, ...]
    cond: Cond = None
    low: float | None = None  # inputs drawn from U(low, 1 - low) instead of N(0, 1)
    compiles: bool = True
    covers: tuple[str, ...] = field(default=())  # public names this row stands for besides its own


def _image_level() -> flowkit.Flow:
    coarse = flowkit.Sequential(layers.Squeeze(), layers.ActNorm(8), flowkit.Inverse(layers.Squeeze()))
    return flowkit.Sequential(
        layers.Squeeze(), layers.ActNorm(4), layers.Split(4), layers.FactorOut(coarse, keep=2),
        flowkit.Inverse(layers.Squeeze()),
    )


ROWS: dict[str, Row] = {
    # Layers, without and with a condition where they take one.
    "ActNorm": Row(lambda: layers.ActNorm(4), (4, 3, 3)),
    "InvConv1x1": Row(lambda: layers.InvConv1x1(4), (4, 3, 3)),
    "InvConv1x1[lu]": Row(lambda: layers.InvConv1x1(4, lu=True), (4, 3, 3)),
    "Permute": Row(lambda: layers.Permute(4, mode="shuffle", generator=torch.Generator().manual_seed(0)), (4, 3, 3)),
    "Squeeze": Row(lambda: layers.Squeeze(2), (2, 4, 4)),
    "HaarDownsample": Row(lambda: layers.HaarDownsample(), (2, 4, 4)),
    "Logit": Row(lambda: layers.Logit(alpha=0.05), (3, 2, 2), low=0.05),
    "Coupling": Row(lambda: layers.Coupling(4, transform=AffineTransform()), (4, 3, 3)),
    "Coupling[spline, vector, cond]": Row(
        lambda: layers.Coupling(4, 2, transform=RationalQuadraticSpline(bins=4), subnet=MLP), (4,), (2,)
    ),
    "AffineCoupling": Row(lambda: layers.AffineCoupling(4), (4, 3, 3)),
    "AffineCoupling[cond]": Row(lambda: layers.AffineCoupling(4, 2), (4, 3, 3), (2, 3, 3)),
    "AffineCoupling[exp, mask]": Row(
        lambda: layers.AffineCoupling(4, scale="exp", mask=layers.alternating_mask(4)), (4, 3, 3)
    ),
    "AdditiveCoupling": Row(lambda: layers.AdditiveCoupling(4), (4, 3, 3)),
    "AdditiveCoupling[vector, cond]": Row(
        lambda: layers.AdditiveCoupling(4, 3, subnet=MLP), (4,), (3,)
    ),
    "CheckerboardCoupling": Row(lambda: layers.CheckerboardCoupling(2), (2, 4, 4)),
    "CheckerboardCoupling[cond]": Row(
        lambda: layers.CheckerboardCoupling(2, 1, transform=AdditiveTransform()), (2, 4, 4), (1, 4, 4)
    ),
    "AffineInjector[cond]": Row(lambda: layers.AffineInjector(4, 2), (4, 3, 3), (2, 3, 3)),
    "MaskedAutoregressive": Row(lambda: layers.MaskedAutoregressive(3, hidden_features=(8,)), (3,)),
    "MaskedAutoregressive[cond]": Row(
        lambda: layers.MaskedAutoregressive(3, 2, hidden_features=(8,)), (3,), (2,)
    ),
    "InverseAutoregressive": Row(lambda: layers.InverseAutoregressive(3, hidden_features=(8,)), (3,)),
    "InverseAutoregressive[cond]": Row(
        lambda: layers.InverseAutoregressive(3, 1, hidden_features=(8,)), (3,), (1,)
    ),
    "Split": Row(lambda: layers.Split(4), (4, 3, 3)),
    "Split[cond]": Row(lambda: layers.Split(4, 2), (4, 3, 3), (2, 3, 3)),
    "FactorOut": Row(_image_level, (1, 4, 4)),
    # Composites.
    "Sequential": Row(lambda: flowkit.Sequential(layers.ActNorm(4), layers.AffineCoupling(4)), (4, 3, 3)),
    "Inverse": Row(lambda: flowkit.Inverse(layers.AffineCoupling(4)), (4, 3, 3)),
    "WithCond[Pick]": Row(
        lambda: flowkit.WithCond(layers.AffineInjector(4, 2), flowkit.Pick(1)),
        (4, 3, 3), [(1, 3, 3), (2, 3, 3)], covers=("Pick",),
    ),
    "WithCond[pool]": Row(
        lambda: flowkit.WithCond(layers.AffineInjector(4, 2), nn.AvgPool2d(2)), (4, 3, 3), (2, 6, 6)
    ),
    "InvertibleSequential": Row(
        lambda: memory.invertible(flowkit.Sequential(layers.InvConv1x1(4), layers.AffineCoupling(4))), (4, 3, 3)
    ),
    # Recipes (their flows; FlowModel's scoring has its own tests).
    "RealNVP": Row(lambda: recipes.RealNVP(3, transforms=2, hidden_features=(8,)).flow, (3,)),
    "MAF[cond]": Row(lambda: recipes.MAF(3, 2, transforms=2, hidden_features=(8,)).flow, (3,), (2,)),
    "NSF": Row(lambda: recipes.NSF(2, transforms=2, hidden_features=(8,), bins=4).flow, (2,)),
    "Glow[cond]": Row(
        lambda: recipes.Glow((2, 4, 4), 1, levels=2, steps=1, hidden_channels=(4, 4)).flow,
        (2, 4, 4), (1, 4, 4),
    ),
    # LLFlow's flow, as its model runs it: a step per level, conditioned on one feature map per level.
    "FlowStep[cond]": Row(
        lambda: llflow_flow.FlowStep(6, cond_channels=2, hidden_channels=4), (6, 3, 3), (2, 3, 3)
    ),
    "ConditionalFlow[cond]": Row(
        lambda: llflow_flow.ConditionalFlow(2, steps_per_level=1, transition_steps=1, hidden_channels=4, levels=2),
        (3, 4, 4), [(2, 2, 2), (2, 1, 1)],
    ),
}


def _public_flows() -> set[str]:
    """Every class in a public ``__all__`` that is a flow (or a recipe, whose ``.flow`` is one)."""
    modules = [flowkit, layers, recipes, memory, llflow_flow]
    names = set()
    for module in modules:
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, (flowkit.Flow, flowkit.FlowModel)):
                names.add(name)
    return names - {"Flow", "FlowModel"}


def test_the_table_covers_every_public_flow():
    covered = {key.split("[")[0] for key in ROWS} | {name for row in ROWS.values() for name in row.covers}
    missing = sorted(_public_flows() - covered)
    assert not missing, f"add a row for {missing} to tests/test_conformance.py"


def _sample(row: Row, batch: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, object]:
    generator = torch.Generator().manual_seed(seed)
    if row.low is None:
        x = torch.randn((batch, *row.x), generator=generator, dtype=torch.float64)
    else:
        x = row.low + (1 - 2 * row.low) * torch.rand((batch, *row.x), generator=generator, dtype=torch.float64)
    if row.cond is None:
        cond = None
    elif isinstance(row.cond, list):
        cond = [torch.randn((batch, *shape), generator=generator, dtype=torch.float64).to(dtype) for shape in row.cond]
    else:
        cond = torch.randn((batch, *row.cond), generator=generator, dtype=torch.float64).to(dtype)
    return x.to(dtype), cond


def _flow(row: Row, dtype: torch.dtype = torch.float32, seed: int = 1) -> flowkit.Flow:
    """The row's flow, moved off its identity initialisation and initialised on data."""
    torch.manual_seed(seed)
    flow = row.build().to(dtype)
    perturb_parameters(flow, 0.2, torch.Generator().manual_seed(seed))
    return flow


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(ROWS))
def test_check_flow(name, dtype):
    row = ROWS[name]
    x, cond = _sample(row, 3, dtype)
    report = check_flow(_flow(row, dtype), x, cond, jacobian_samples=2 if dtype == torch.float64 else 0)
    assert report.parameters_checked == sum(p.requires_grad for p in row.build().parameters())


@pytest.mark.parametrize("name", sorted(ROWS))
def test_an_empty_batch_round_trips_with_an_empty_logdet(name):
    row = ROWS[name]
    flow = _flow(row)
    flow(*_sample(row, 2, torch.float32))  # data-dependent initialisation needs data
    x, cond = _sample(row, 0, torch.float32)
    y, logdet = flow(x, cond)
    assert y.shape[0] == 0 and math.prod(y.shape[1:]) == math.prod(x.shape[1:])  # a bijection keeps the size
    assert logdet.shape == (0,)
    x_back, inverse_logdet = flow.inverse(y, cond)
    assert x_back.shape == x.shape and inverse_logdet.shape == (0,)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_a_saved_state_dict_restores_the_same_map(name):
    row = ROWS[name]
    trained = _flow(row, seed=1)
    x, cond = _sample(row, 2, torch.float32)
    trained(x, cond)
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    restored = _flow(row, seed=2)  # different weights, until the state dict replaces them
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    trained.eval(), restored.eval()
    with torch.no_grad():
        y, logdet = trained(x, cond)
        y2, logdet2 = restored(x, cond)
        x_back, x_back2 = trained.inverse(y, cond)[0], restored.inverse(y, cond)[0]
    # Both directions, bit for bit (check_flow covers how close the inverse comes back to x).
    assert torch.equal(y, y2) and torch.equal(logdet, logdet2) and torch.equal(x_back, x_back2)
    assert repr(restored) == repr(trained)


@pytest.mark.parametrize("name", sorted(name for name, row in ROWS.items() if row.compiles))
def test_compiles_without_graph_breaks(name):
    # fullgraph=True fails on any graph break; the "eager" backend checks exactly that (Dynamo's
    # tracing) without paying for code generation.
    row = ROWS[name]
    flow = _flow(row)
    x, cond = _sample(row, 2, torch.float32)
    flow(x, cond)
    flow.eval()
    torch._dynamo.reset()
    with torch.no_grad():
        y, logdet = torch.compile(flow, fullgraph=True, backend="eager")(x, cond)
        x_back, inverse_logdet = torch.compile(flow.inverse, fullgraph=True, backend="eager")(y, cond)
        y_eager, logdet_eager = flow(x, cond)
        x_eager, inverse_logdet_eager = flow.inverse(y, cond)
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(logdet, logdet_eager)
    torch.testing.assert_close(x_back, x_eager)
    torch.testing.assert_close(inverse_logdet, inverse_logdet_eager)
