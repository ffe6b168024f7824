from __future__ import annotations

import colorsys

import pytest
import torch

from flowkit.models import LLFlow, LLFlowConfig
from flowkit.models.llflow.exposure import adjust_exposure


def _photo(seed: int = 0) -> torch.Tensor:
    # Colourful pixels at every brightness, including saturated and blown-out ones.
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64)
    image[:, :, 0, 0] = 1.0  # white
    image[:, :, 0, 1] = torch.tensor([1.0, 0.2, 0.0], dtype=torch.float64)  # saturated red at full value
    image[:, :, 0, 2] = 0.0  # black
    return image


def _hsv(image: torch.Tensor) -> list[tuple[float, float, float]]:
    return [colorsys.rgb_to_hsv(*pixel) for pixel in image.movedim(-3, -1).reshape(-1, 3).tolist()]


@pytest.mark.parametrize("stops", [-2.0, -0.5, 0.7, 1.0, 3.0])
def test_exposure_keeps_hue_and_saturation_and_never_clips(stops):
    image = _photo()
    out = adjust_exposure(image, stops)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert out.min() >= 0 and out.max() <= 1
    for (h0, s0, v0), (h1, s1, _) in zip(_hsv(image), _hsv(out)):
        if v0 > 1e-6 and s0 > 1e-6:
            # Hue is circular: compare on the circle.
            assert min(abs(h0 - h1), 1 - abs(h0 - h1)) < 1e-9
            assert s1 == pytest.approx(s0, abs=1e-9)
    # Highlights are compressed, not clipped: a full-value pixel keeps value 1 and its colour,
    # and two different bright values stay different.
    assert torch.allclose(out[:, :, 0, 0], torch.ones(2, 3, dtype=torch.float64))
    assert torch.allclose(out[0, :, 0, 1], torch.tensor([1.0, 0.2, 0.0], dtype=torch.float64))
    bright = torch.tensor([0.9, 0.95], dtype=torch.float64).view(1, 2, 1).expand(3, 2, 1)
    adjusted = adjust_exposure(bright, stops)
    assert adjusted[0, 0, 0] < adjusted[0, 1, 0] < 1.0
    assert torch.equal(out[:, :, 0, 2], image[:, :, 0, 2])  # black stays black


def test_exposure_is_monotone_in_stops_and_zero_is_the_identity():
    image = _photo(1)
    assert torch.equal(adjust_exposure(image, 0.0), image)
    previous = adjust_exposure(image, -3.0)
    for stops in (-1.5, -0.25, 0.0, 0.25, 1.0, 2.5):
        current = adjust_exposure(image, stops)
        assert (current >= previous - 1e-12).all()  # up to rounding where the factor is 1
        # Strictly brighter wherever the pixel is neither black nor at full value.
        value = image.amax(dim=-3)
        inside = (value > 0) & (value < 1)
        assert (current.amax(dim=-3)[inside] > previous.amax(dim=-3)[inside]).all()
        previous = current


def test_one_stop_doubles_the_darkest_tones():
    dark = torch.full((3, 4, 4), 0.001, dtype=torch.float64)
    assert adjust_exposure(dark, 1.0).mean().item() == pytest.approx(0.002, rel=2e-3)
    assert adjust_exposure(dark, -1.0).mean().item() == pytest.approx(0.0005, rel=2e-3)


@pytest.mark.parametrize(
    ("image", "stops", "message"),
    [
        (torch.rand(3, 4, 4), float("nan"), "stops must be a finite number"),
        (torch.rand(3, 4, 4), True, "stops must be a finite number"),
        (torch.rand(4, 4), 1.0, r"expected float RGB images \(\.\.\., 3, H, W\), got a torch.float32 tensor of shape \(4, 4\)"),
        (torch.rand(2, 4, 4), 1.0, "expected float RGB images"),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), 1.0, "torch.uint8"),
        (torch.full((3, 4, 4), 1.5), 1.0, r"expected values in \[0, 1\], got \[1.5, 1.5\]"),
    ],
)
def test_exposure_rejects_bad_input(image, stops, message):
    with pytest.raises(ValueError, match=message):
        adjust_exposure(image, stops)


def test_enhance_with_exposure_is_the_adjusted_default_output():
    torch.manual_seed(0)
    model = LLFlow(LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4, stack_blocks=(),
                                steps_per_level=1, hidden_channels=4)).eval()
    low = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(3)) * 0.2
    own = model.enhance(low)
    assert torch.equal(model.enhance(low, exposure=None), own)
    brighter, darker = model.enhance(low, exposure=1.0), model.enhance(low, exposure=-1.0)
    assert torch.equal(brighter, adjust_exposure(own, 1.0))
    assert (brighter >= own).all() and (darker <= own).all()
    with pytest.raises(ValueError, match="exposure needs clamp=True"):
        model.enhance(low, exposure=1.0, clamp=False)
    with pytest.raises(ValueError, match="exposure must be None or a finite number of stops, got 'bright'"):
        model.enhance(low, exposure="bright")
