"""LPIPS-alex v0.1: the published check values, metric properties, and clear errors."""

from __future__ import annotations

import pytest
import torch

from flowkit.models.llflow.data import read_image
from flowkit.models.llflow.lpips import LPIPS, WEIGHTS
from flowkit.models.llflow.metrics import lpips


@pytest.fixture(scope="module")
def metric() -> LPIPS:
    return LPIPS.pretrained()


def test_published_distances_between_the_example_images(shared_dir, metric):
    # The LPIPS README's values for v0.1 alex: d(ref, p0) = 0.722, d(ref, p1) = 0.138.
    folder = shared_dir / "lpips"
    ref, p0, p1 = (read_image(folder / f"{name}.png")[None] for name in ("ex_ref", "ex_p0", "ex_p1"))
    assert metric(ref, p0).item() == pytest.approx(0.7219, abs=5e-5)
    assert metric(ref, p1).item() == pytest.approx(0.1376, abs=5e-5)
    # The [-1, 1] convention of the LPIPS package gives the same numbers.
    assert metric(2 * ref - 1, 2 * p1 - 1, normalize=False).item() == pytest.approx(0.1376, abs=5e-5)


def test_shipped_weights_equal_the_shared_tensor_dict(shared_dir):
    published = torch.load(shared_dir / "lpips" / "alexnet_lpips_v0.1.pt", weights_only=True)
    model = LPIPS.pretrained()
    assert torch.equal(model.convs[2].weight, published["features.6.weight"])
    assert torch.equal(model.heads[4].weight, published["lin4.weight"])


def test_distance_is_zero_on_identical_images_symmetric_and_grows_with_distortion(metric):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 80, generator=g)
    noise = torch.randn(2, 3, 64, 80, generator=g)
    assert metric(x, x).abs().max().item() == 0.0
    y = (x + 0.05 * noise).clamp(0, 1)
    assert torch.allclose(metric(x, y), metric(y, x), atol=1e-6)
    stronger = (x + 0.3 * noise).clamp(0, 1)
    assert (metric(x, stronger) > metric(x, y)).all()


def test_batch_items_are_independent(metric):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 3, 48, 48, generator=g), torch.rand(3, 3, 48, 48, generator=g)
    together = metric(x, y)
    alone = torch.stack([metric(x[i : i + 1], y[i : i + 1])[0] for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-6)


def test_distance_is_differentiable_in_the_inputs():
    metric = LPIPS.pretrained()
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(2), requires_grad=True)
    metric(x, torch.full_like(x, 0.5)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in metric.parameters())


def test_functional_form_handles_leading_dimensions_and_uint8():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 2, 3, 32, 32, generator=g)
    y = torch.rand(2, 2, 3, 32, 32, generator=g)
    d = lpips(x, y)
    assert d.shape == (2, 2) and d.dtype == torch.float64
    as_u8 = lambda t: (t * 255).round().to(torch.uint8)  # noqa: E731
    assert torch.allclose(lpips(as_u8(x), as_u8(y)), lpips(as_u8(x).float() / 255, as_u8(y).float() / 255))


def test_bad_inputs_are_named():
    metric = LPIPS()
    with pytest.raises(ValueError, match="same shape"):
        metric(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 40))
    with pytest.raises(ValueError, match=r"RGB batch \(B, 3, H, W\)"):
        metric(torch.rand(3, 32, 32), torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="at least 32x32"):
        metric(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="at least 32x32"):
        lpips(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="missing"):
        metric.load_published({"lin0.weight": torch.zeros(1, 64, 1, 1)})


def test_the_weight_file_ships_with_its_licence_notices():
    folder = WEIGHTS.parent
    assert "Soumith Chintala" in (folder / "LICENSE-torchvision-alexnet.txt").read_text()
    assert "Richard Zhang" in (folder / "LICENSE-lpips.txt").read_text()
