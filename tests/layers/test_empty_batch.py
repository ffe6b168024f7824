"""An empty batch (the tail of a split data set, a filtered batch) flows through every image layer.

The log-determinant of a layer whose Jacobian does not depend on the data is a per-sample constant
times the number of positions; computing that count from ``x[0]`` raised IndexError on B = 0.
"""

from __future__ import annotations

import pytest
import torch

from flowkit.layers import ActNorm, AffineCoupling, AffineInjector, HaarDownsample, InvConv1x1, Squeeze
from flowkit.testing import perturb_parameters

LAYERS = {
    "ActNorm": lambda: ActNorm(4),
    "InvConv1x1": lambda: InvConv1x1(4),
    "InvConv1x1(lu)": lambda: InvConv1x1(4, lu=True),
    "HaarDownsample": lambda: HaarDownsample(),
    "Squeeze": lambda: Squeeze(2),
    "AffineCoupling": lambda: AffineCoupling(4),
    "AffineInjector": lambda: AffineInjector(4, cond_channels=2),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_empty_batch_round_trips_with_an_empty_logdet(name):
    layer = LAYERS[name]()
    perturb_parameters(layer, 0.2, torch.Generator().manual_seed(0))
    if isinstance(layer, ActNorm):
        layer(torch.randn(3, 4, 6, 6))  # data-dependent initialisation needs data
    cond = torch.randn(0, 2, 6, 6) if layer.conditional else None
    x = torch.randn(0, 4, 6, 6)
    y, logdet = layer(x, cond)
    assert logdet.shape == (0,)
    x_back, inverse_logdet = layer.inverse(y, cond)
    assert x_back.shape == x.shape and inverse_logdet.shape == (0,)


def test_flow_model_scores_an_empty_batch():
    import flowkit
    from flowkit.distributions import StandardNormal

    model = flowkit.FlowModel(flowkit.Sequential(InvConv1x1(4), AffineCoupling(4)), StandardNormal((4, 6, 6)),
                              dequantize=256)
    empty = torch.rand(0, 4, 6, 6)
    for unit in ("bits/dim", "nats"):
        assert model.nll(empty, unit=unit).shape == (0,)
    # The same per-sample values whether or not other samples share the batch.
    model.eval()
    x = torch.rand(2, 4, 6, 6)
    assert torch.equal(model.nll(torch.cat([x, empty])), model.nll(x))
