"""The conditional flow: contract checks (invertibility, exact log-determinants, gradients)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor

from flowkit.core import Flow, Sequential, WithCond
from flowkit.layers import ActNorm, AffineCoupling, AffineInjector, InvConv1x1, Squeeze
from flowkit.models import LLFlow
from flowkit.models.llflow.flow import ConditionalFlow, FlowStep
from flowkit.testing import check_flow

from .conftest import perturbed, toy_config


class PackedConditioning(Flow):
    """A ConditionalFlow as a plain flowkit Flow whose ``cond`` packs the per-level features.

    ``cond`` is ``(B, N)``, the flattened level features side by side, so that check_flow can
    slice it per sample like any conditioning tensor.
    """

    def __init__(self, flow: ConditionalFlow, shapes: list[tuple[int, ...]]) -> None:
        super().__init__()
        self.flow = flow
        self.shapes = shapes

    @staticmethod
    def pack(conditions: tuple[Tensor, ...]) -> Tensor:
        return torch.cat([c.flatten(1) for c in conditions], dim=1)

    def _unpack(self, cond: Tensor) -> list[Tensor]:
        sizes = [int(torch.tensor(shape).prod()) for shape in self.shapes]
        parts = torch.split(cond, sizes, dim=1)
        return [part.reshape(cond.shape[0], *shape) for part, shape in zip(parts, self.shapes)]

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.flow(x, self._unpack(cond))

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.flow.inverse(y, self._unpack(cond))


def test_whole_toy_llflow_flow_passes_check_flow():
    torch.manual_seed(0)
    model = perturbed(LLFlow(toy_config())).to(torch.float64)
    low = torch.rand(2, 3, 8, 16, dtype=torch.float64) * 0.3
    high = torch.rand(2, 3, 8, 16, dtype=torch.float64)  # 384 elements per sample for the Jacobian
    with torch.no_grad():
        conditions = model.condition(low).conditions
    adapter = PackedConditioning(model.flow, [tuple(c.shape[1:]) for c in conditions])
    report = check_flow(adapter, high, PackedConditioning.pack(conditions))
    assert report.logdet_error < 1e-8
    assert report.roundtrip_error < 1e-10
    assert report.parameters_checked == len(list(model.flow.parameters()))


def test_whole_toy_llflow_flow_round_trips_in_float32():
    torch.manual_seed(1)
    model = perturbed(LLFlow(toy_config())).eval()
    low, high = torch.rand(2, 3, 16, 24) * 0.3, torch.rand(2, 3, 16, 24)
    z, logdet = model.encode(high, low)
    x, inverse_logdet = model.decode(z, low)
    assert (x - high).abs().max() < 1e-4
    assert (logdet + inverse_logdet).abs().max() < 1e-3


@pytest.mark.parametrize("cond_channels", [0, 5])
def test_flow_step_passes_check_flow(cond_channels):
    torch.manual_seed(2)
    step = perturbed(FlowStep(6, cond_channels=cond_channels, hidden_channels=8), scale=0.1)
    x = torch.randn(2, 6, 4, 4)
    cond = torch.randn(2, cond_channels, 4, 4) if cond_channels else None
    check_flow(step, x, cond)
    assert step.conditional == bool(cond_channels)


def test_level_structure_follows_the_reference():
    flow = ConditionalFlow(cond_channels=7, steps_per_level=3, transition_steps=2, hidden_channels=8)
    assert isinstance(flow, Sequential) and len(flow.levels) == 3
    assert [(type(m), m.cond_net.index) for m in flow] == [(WithCond, 0), (WithCond, 1), (WithCond, 2)]
    for level, channels in zip(flow.levels, (12, 48, 192)):
        members = list(level)
        assert isinstance(members[0], Squeeze) and members[0].factor == 2
        assert len(members) == 1 + 2 + 3
        for step in members[1:]:
            assert isinstance(step, Sequential) and len(step) == (2 if step in members[1:3] else 4)
            assert isinstance(step[0], ActNorm) and step[0].channels == channels
            assert isinstance(step[1], InvConv1x1) and not step[1].lu
        for step in members[3:]:
            injector, coupling = step[2], step[3]
            assert isinstance(injector, AffineInjector) and repr(injector.transform) == "AffineTransform(scale='sigmoid', eps=0.0001)"
            assert isinstance(coupling, AffineCoupling) and repr(coupling.transform) == repr(injector.transform)
            assert coupling.split == channels // 2 and coupling.cond_channels == 7
            # SPEC: fFeatures = F(cond, 2C), fAffine = F(C//2 + cond, 2(C - C//2)), hidden 64 -> 8 here
            assert injector.subnet[0].weight.shape == (8, 7, 3, 3)
            assert injector.subnet[4].weight.shape == (2 * channels, 8, 3, 3)
            assert coupling.subnet[0].weight.shape == (8, channels // 2 + 7, 3, 3)
            assert coupling.subnet[2].weight.shape == (8, 8, 1, 1)
            assert coupling.subnet[4].weight.shape == (2 * (channels - channels // 2), 8, 3, 3)


def test_conditioning_must_be_one_tensor_per_level():
    flow = ConditionalFlow(cond_channels=2, steps_per_level=1, hidden_channels=4)
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"Pick\(0\) expects a list or tuple .* got a tensor of shape \(1, 2, 4, 4\)"):
        flow(x, torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"Pick\(2\) expects .* at least 3 conditioning tensors .* got 2 items"):
        flow(x, [torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2)])
    with pytest.raises(ValueError, match="FlowStep has no conditional member"):
        FlowStep(4)(torch.zeros(1, 4, 2, 2), torch.zeros(1, 1, 2, 2))


def test_state_dicts_of_the_legacy_layout_load_into_the_same_tensors():
    """Keys as flowkit wrote them before FlowStep and ConditionalFlow were Sequentials (the shipped weights)."""
    model = perturbed(LLFlow(toy_config()))
    legacy = {}
    for key, value in model.state_dict().items():
        match = re.fullmatch(r"flow\.flows\.(\d+)\.flow\.flows\.(\d+)\.flows\.(\d)\.(.+)", key)
        if match:
            name = ("actnorm", "invconv", "injector", "coupling")[int(match[3])]
            key = f"flow.levels.{match[1]}.flows.{match[2]}.{name}.{match[4]}"
        legacy[key] = value.clone()
    assert any(key.startswith("flow.levels.2.flows.") for key in legacy)
    fresh = LLFlow(toy_config())
    fresh.load_state_dict(legacy)  # strict: every key lands somewhere, none is left over
    for (key, expected), actual in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(actual, expected), key
