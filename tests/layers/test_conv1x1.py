from __future__ import annotations

import numpy as np
import pytest
import torch
from flow_strategies import DTYPES, image_shapes, perturbed, randn
from hypothesis import given
from hypothesis import strategies as st

from flowkit.layers import InvConv1x1
from flowkit.testing import check_flow


@given(shape=image_shapes(), dtype=DTYPES, lu=st.booleans(), seed=st.integers(0, 2**16))
def test_perturbed_invconv_is_a_flow(shape, dtype, lu, seed):
    torch.manual_seed(seed)
    layer = perturbed(InvConv1x1(shape[1], lu=lu), seed, scale=0.3, dtype=dtype)
    check_flow(layer, randn(shape, seed, dtype))


def test_init_is_orthogonal_and_follows_torch_rng():
    torch.manual_seed(0)
    a = InvConv1x1(5)
    torch.manual_seed(0)
    b = InvConv1x1(5)
    assert torch.equal(a.weight, b.weight)
    torch.testing.assert_close(a.weight @ a.weight.T, torch.eye(5), atol=1e-6, rtol=0)


def test_logdet_matches_numpy_slogdet():
    layer = perturbed(InvConv1x1(4), seed=3, scale=0.5)
    _, logdet = layer(torch.randn(2, 4, 3, 5))
    expected = 15 * np.linalg.slogdet(layer.weight.detach().double().numpy())[1]
    np.testing.assert_allclose(logdet.detach().numpy(), [expected] * 2, rtol=1e-6)


def test_lu_and_plain_agree_for_the_same_matrix():
    matrix = torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    plain, lu = InvConv1x1(6).double(), InvConv1x1(6, lu=True).double()
    plain.set_matrix(matrix)
    lu.set_matrix(matrix)
    torch.testing.assert_close(lu.matrix(), plain.matrix())
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    (y_plain, ld_plain), (y_lu, ld_lu) = plain(x), lu(x)
    torch.testing.assert_close(y_lu, y_plain)
    torch.testing.assert_close(ld_lu, ld_plain)


def test_eval_mode_caches_the_inverse_until_a_parameter_changes():
    layer = InvConv1x1(4).eval()
    with torch.no_grad():
        first = layer.inverse_matrix()
        assert layer.inverse_matrix() is first
        layer.weight.mul_(2.0)
        second = layer.inverse_matrix()
    assert second is not first
    torch.testing.assert_close(second, torch.linalg.inv(layer.weight.double()))


@pytest.mark.parametrize("lu", [False, True])
def test_cached_inverse_log_det_follows_a_parameter_change(lu):
    # The inverse's log-det is cached with W^{-1}; a changed weight must change both.
    layer = InvConv1x1(4, lu=lu).eval()
    y = torch.randn(2, 4, 3, 5)
    with torch.no_grad():
        _, before = layer.inverse(y)
        (layer.log_s if lu else layer.weight).mul_(1.5)
        x, after = layer.inverse(y)
        expected = -15 * layer.log_abs_det().float()
        torch.testing.assert_close(after, expected.expand(2))
        torch.testing.assert_close(layer(x)[0], y, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(before, after)


def test_train_mode_drops_the_cache():
    layer = InvConv1x1(3).eval()
    with torch.no_grad():
        layer.inverse_matrix()
    assert layer._inverse_cache is not None
    layer.train()
    assert layer._inverse_cache is None


def test_inverse_keeps_gradients_when_autograd_is_on():
    layer = InvConv1x1(3).eval()
    x, _ = layer.inverse(torch.randn(1, 3, 2, 2))
    x.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_singular_weight_is_an_error_on_inverse():
    layer = InvConv1x1(3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="singular"):
        layer.inverse(torch.randn(1, 3, 2, 2))


def test_set_matrix_rejects_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(3, 3\) matrix, got \(4, 4\)"):
        InvConv1x1(3, lu=True).set_matrix(torch.eye(4))


def test_inverse_compiles_without_graph_breaks():
    layer = InvConv1x1(4).eval()
    inverse = torch.compile(lambda y: layer.inverse(y)[0], fullgraph=True)
    y = torch.randn(1, 4, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(inverse(y), layer.inverse(y)[0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("lu", [False, True])
def test_set_matrix_rejects_a_singular_matrix(lu):
    layer = InvConv1x1(3, lu=lu)
    singular = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="singular"):
        layer.set_matrix(singular)
