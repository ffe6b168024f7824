"""The reference is the specification: check it against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from flowkit.kernels.reference import affine_reference, split_shift_scale


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


@pytest.mark.parametrize("layout", ["cross", "half"])
def test_layouts_pick_shift_and_scale_channels(layout):
    # One sample, C = 2, one position: h lists four distinct numbers so any mix-up shows.
    h = torch.tensor([[0.5, -1.0, 2.0, 0.25]], dtype=torch.float64)
    x = torch.tensor([[1.5, -3.0]], dtype=torch.float64)
    if layout == "cross":
        shifts, raws = [0.5, 2.0], [-1.0, 0.25]
    else:
        shifts, raws = [0.5, -1.0], [2.0, 0.25]
    scales = [sigmoid(r + 2) + 1e-4 for r in raws]
    y, logdet = affine_reference(x, h, eps=1e-4, layout=layout)
    expected = [(xi + t) * s for xi, t, s in zip([1.5, -3.0], shifts, scales)]
    torch.testing.assert_close(y, torch.tensor([expected], dtype=torch.float64))
    torch.testing.assert_close(logdet, torch.tensor([sum(map(math.log, scales))], dtype=torch.float64))
    x_back, inverse_logdet = affine_reference(y, h, eps=1e-4, layout=layout, inverse=True)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(inverse_logdet, -logdet)


def test_halves_are_views():
    h = torch.randn(2, 6, 3, 3)
    for layout in ("cross", "half"):
        for part in split_shift_scale(h, layout):
            assert part.data_ptr() >= h.data_ptr() and part._base is h


@pytest.mark.parametrize(
    "dtype, logdet_dtype",
    [(torch.float16, torch.float32), (torch.bfloat16, torch.float32), (torch.float32, torch.float32),
     (torch.float64, torch.float64)],
)
def test_output_dtypes(dtype, logdet_dtype):
    y, logdet = affine_reference(torch.randn(2, 3, 4).to(dtype), torch.randn(2, 6, 4).to(dtype))
    assert y.dtype == dtype and logdet.dtype == logdet_dtype and logdet.shape == (2,)


def test_scale_is_bounded_below_by_eps():
    # A hugely negative raw scale still gives a finite log-det: scale -> eps.
    y, logdet = affine_reference(torch.ones(1, 1), torch.tensor([[0.0, -1e4]]), eps=1e-3)
    torch.testing.assert_close(y, torch.tensor([[1e-3]]))
    torch.testing.assert_close(logdet, torch.tensor([math.log(1e-3)]))
