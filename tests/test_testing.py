"""check_flow must catch broken layers, not only pass correct ones."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import flowkit
from flowkit.layers import ActNorm
from flowkit.testing import FlowCheckError, check_flow


class _Scale(flowkit.Flow):
    def __init__(self, logdet_factor: float = 1.0, inverse_factor: float = 2.0, inverse_sign: float = -1.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(0.3))
        self.logdet_factor, self.inverse_factor, self.inverse_sign = logdet_factor, inverse_factor, inverse_sign

    def _logdet(self, x: Tensor) -> Tensor:
        return self.log_scale * x[0].numel() * self.logdet_factor * torch.ones(x.shape[0])

    def forward(self, x, cond=None):
        return x * self.log_scale.exp(), self._logdet(x)

    def inverse(self, y, cond=None):
        return y * torch.exp(-self.log_scale) * (self.inverse_factor / 2.0), self.inverse_sign * self._logdet(y)


def test_a_correct_layer_passes_with_small_errors():
    report = check_flow(_Scale(), torch.randn(2, 3))
    assert report.logdet_error < 1e-10 and report.roundtrip_error < 1e-6 and report.parameters_checked == 1


def test_wrong_logdet_is_caught():
    with pytest.raises(FlowCheckError, match=r"\[logdet\].*brute-force"):
        check_flow(_Scale(logdet_factor=0.5, inverse_sign=-1.0), torch.randn(2, 3), jacobian_samples=1)


def test_wrong_inverse_is_caught():
    with pytest.raises(FlowCheckError, match="invertibility"):
        check_flow(_Scale(inverse_factor=2.2), torch.randn(2, 3))


def test_wrong_inverse_logdet_sign_is_caught():
    with pytest.raises(FlowCheckError, match="inverse logdet"):
        check_flow(_Scale(inverse_sign=1.0), torch.randn(2, 3))


def test_parameter_without_gradient_is_caught():
    layer = ActNorm(2)
    layer.unused = nn.Parameter(torch.zeros(1))
    with pytest.raises(FlowCheckError, match="'unused' received no gradient"):
        check_flow(layer, torch.randn(2, 2, 2, 2))


def test_large_inputs_are_refused_for_the_jacobian():
    with pytest.raises(ValueError, match="at most 4096"):
        check_flow(ActNorm(1), torch.randn(1, 1, 80, 80))


def test_large_inputs_are_checked_without_the_jacobian_when_it_is_skipped():
    report = check_flow(ActNorm(1), torch.randn(2, 1, 80, 80), jacobian_samples=0)
    assert report.logdet_error == 0.0 and report.roundtrip_error < 1e-5
