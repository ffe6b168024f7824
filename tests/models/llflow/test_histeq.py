"""Histogram equalization: OpenCV's equalizeHist, bit for bit (the oracle check is in test_oracle.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit.models.llflow.histeq import equalize_hist, histeq_image


def opencv_equalize_hist(plane: np.ndarray) -> np.ndarray:
    """A plain loop over OpenCV's documented steps (imgproc/src/histogram.cpp), in numpy float32."""
    hist = np.bincount(plane.ravel(), minlength=256)
    total = plane.size
    i = int(np.flatnonzero(hist)[0])
    if hist[i] == total:
        return np.full_like(plane, i)
    lut = np.zeros(256, dtype=np.uint8)
    scale = np.float32(255.0) / np.float32(total - hist[i])
    running = 0
    for j in range(i + 1, 256):
        running += int(hist[j])
        value = np.float32(running) * scale  # float32 product, as the C++ `sum * scale`
        lut[j] = np.uint8(min(255, max(0, int(np.rint(value)))))  # cvRound: half to even
    return lut[plane]


def test_hand_computed_examples():
    # first bin 3, 6 other pixels: scale 42.5, so one pixel maps to round(42.5) = 42 (half to even)
    image = torch.tensor([[3, 10, 20, 20, 20, 20, 20]], dtype=torch.uint8)
    assert equalize_hist(image).tolist() == [[0, 42, 255, 255, 255, 255, 255]]
    # scale 127.5: round(127.5) = 128 (half to even)
    assert equalize_hist(torch.tensor([[0, 0, 1, 2]], dtype=torch.uint8)).tolist() == [[0, 0, 128, 255]]


@pytest.mark.parametrize("value", [0, 7, 255])
def test_constant_image_is_unchanged(value):
    image = torch.full((3, 5), value, dtype=torch.uint8)
    assert torch.equal(equalize_hist(image), image)


def _edge_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(1234)
    cases = [
        np.array([[0, 255]], dtype=np.uint8),
        np.array([[255, 254, 254]], dtype=np.uint8),
        np.array([[5]], dtype=np.uint8),
        rng.integers(0, 256, size=(37, 53), dtype=np.uint8),           # dense histogram
        rng.integers(100, 104, size=(9, 11), dtype=np.uint8),          # few bins, first bin > 0
        (rng.random((40, 60)) ** 4 * 60).astype(np.uint8),             # dark, low-light like
        np.repeat(np.arange(256, dtype=np.uint8)[None], 3, axis=0),    # one pixel per bin x 3
        rng.choice(np.array([0, 1, 2, 128, 255], dtype=np.uint8), size=(64, 48)),
    ]
    for total in (6, 10, 34, 170, 510):  # totals that make (count * 255 / total) hit .5 often
        cases.append(rng.integers(0, 4, size=(1, total + 1), dtype=np.uint8))
    return cases


@pytest.mark.parametrize("plane", _edge_cases(), ids=lambda p: f"{p.shape[0]}x{p.shape[1]}")
def test_matches_a_direct_port_of_opencv(plane):
    expected = opencv_equalize_hist(plane)
    assert equalize_hist(torch.from_numpy(plane)).numpy().tolist() == expected.tolist()


@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    low=st.integers(0, 255),
    span=st.integers(0, 255),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_the_port_on_drawn_images(height, width, low, span, seed):
    high = min(255, low + span)
    plane = np.random.default_rng(seed).integers(low, high + 1, size=(height, width), dtype=np.uint8)
    assert equalize_hist(torch.from_numpy(plane)).numpy().tolist() == opencv_equalize_hist(plane).tolist()


def test_planes_are_independent_and_batched():
    rng = np.random.default_rng(7)
    batch = rng.integers(0, 90, size=(2, 3, 8, 12), dtype=np.uint8)
    result = equalize_hist(torch.from_numpy(batch)).numpy()
    for b in range(2):
        for c in range(3):
            assert result[b, c].tolist() == opencv_equalize_hist(batch[b, c]).tolist()


def test_histeq_image_quantizes_then_scales():
    low = torch.tensor([[[[0.0, 0.2], [0.2, 0.4]]]], dtype=torch.float64)  # uint8 values 0, 51, 51, 102
    # first bin 0 (1 pixel), scale 255 / 3 = 85: lut[51] = 2 * 85 = 170, lut[102] = 255
    assert histeq_image(low).tolist() == [[[[0.0, 170 / 255], [170 / 255, 1.0]]]]


def test_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        equalize_hist(torch.zeros(4, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        equalize_hist(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="H, W"):
        equalize_hist(torch.zeros(4, dtype=torch.uint8))
