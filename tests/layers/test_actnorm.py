from __future__ import annotations

import pytest
import torch
from flow_strategies import DTYPES, image_shapes, perturbed, randn
from hypothesis import given
from hypothesis import strategies as st

from flowkit.layers import ActNorm
from flowkit.testing import check_flow


@given(shape=image_shapes(), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_perturbed_actnorm_is_a_flow(shape, dtype, seed):
    layer = perturbed(ActNorm(shape[1]), seed, scale=0.5, dtype=dtype)
    check_flow(layer, randn(shape, seed, dtype))


@given(batch=st.integers(1, 4), channels=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_actnorm_on_vectors(batch, channels, seed):
    layer = perturbed(ActNorm(channels), seed, scale=0.5, dtype=torch.float64)
    check_flow(layer, randn((batch, channels), seed, torch.float64))


def test_logdet_is_positions_times_sum_of_logs():
    layer = perturbed(ActNorm(3), seed=1)
    x = torch.randn(2, 3, 5, 7)
    _, logdet = layer(x)
    expected = 5 * 7 * layer.logs.detach().sum()
    torch.testing.assert_close(logdet, expected.expand(2))


def test_first_training_batch_initialises_to_zero_mean_unit_variance():
    layer = ActNorm(4)
    x = torch.randn(16, 4, 6, 6) * torch.tensor([0.5, 2.0, 3.0, 10.0]).view(1, 4, 1, 1) + 7.0
    y, _ = layer(x)
    assert bool(layer.initialized)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(4), atol=1e-4, rtol=0)


def test_initialisation_happens_once():
    layer = ActNorm(2)
    layer(torch.randn(8, 2, 4, 4))
    bias, logs = layer.bias.detach().clone(), layer.logs.detach().clone()
    layer(torch.randn(8, 2, 4, 4) * 100)
    assert torch.equal(layer.bias, bias) and torch.equal(layer.logs, logs)


def test_eval_mode_does_not_initialise():
    layer = ActNorm(2).eval()
    x = torch.randn(3, 2, 4, 4) * 5
    y, logdet = layer(x)
    assert not bool(layer.initialized)
    torch.testing.assert_close(y, x)
    assert torch.equal(logdet, torch.zeros(3))


def test_loading_a_checkpoint_never_reinitialises():
    trained = ActNorm(3)
    trained(torch.randn(4, 3, 4, 4) * 3 + 1)
    state = trained.state_dict()
    assert "initialized" in state

    fresh = ActNorm(3)
    fresh.load_state_dict(state)
    fresh(torch.randn(4, 3, 4, 4) * 50 - 20)  # a training-mode forward on very different data
    torch.testing.assert_close(fresh.bias, trained.bias)
    torch.testing.assert_close(fresh.logs, trained.logs)


def test_batch_of_one_with_a_single_position_stays_finite():
    layer = ActNorm(3)
    y, logdet = layer(torch.randn(1, 3, 1, 1))
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()


def test_non_finite_initialisation_batch_is_rejected():
    x = torch.randn(2, 3, 4, 4)
    x[0, 1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        ActNorm(3)(x)


def test_wrong_channel_count_names_both_counts():
    with pytest.raises(ValueError, match="expects 3 channels.*got 4"):
        ActNorm(3)(torch.randn(2, 4, 4, 4))


def test_an_empty_first_batch_leaves_initialisation_to_the_next_batch():
    layer = ActNorm(3).train()
    y, logdet = layer(torch.randn(0, 3, 4, 4))
    assert y.shape == (0, 3, 4, 4) and logdet.shape == (0,)
    assert not bool(layer.initialized)
    x = torch.randn(5, 3, 4, 4) * 3 + 1
    y, _ = layer(x)
    assert bool(layer.initialized)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"at least one value per channel, got a batch of shape \(0, 3, 4, 4\)"):
        ActNorm(3).initialize_from(torch.randn(0, 3, 4, 4))
