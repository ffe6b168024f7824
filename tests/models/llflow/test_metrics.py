"""flowkit.models.llflow.metrics against scikit-image (the reference implementation) and published numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from flowkit.models.llflow.data import read_image
from flowkit.models.llflow.metrics import (
    GRAY_WEIGHTS,
    gt_mean_align,
    psnr,
    reference_metrics,
    rgb_to_gray,
    rgb_to_gray_uint8,
    score_enhancement,
    ssim,
    ssim_columns,
)

TIGHT = 1e-10


def noisy_pair(seed: int, shape: tuple[int, ...], noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth-ish image and a noisy, slightly shifted copy, float64 in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(shape, generator=generator, dtype=torch.float64)
    base = torch.nn.functional.avg_pool2d(base.reshape(-1, 1, *shape[-2:]), 3, 1, 1).reshape(shape)
    other = base + noise * torch.randn(shape, generator=generator, dtype=torch.float64) + 0.03
    return base, other.clamp(0, 1)


def to_hwc_uint8(x: torch.Tensor) -> np.ndarray:
    return np.round(x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def opencv_rgb2gray(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's uint8 COLOR_RGB2GRAY: 15-bit fixed-point BT.601 with rounding (imgproc/color.hpp)."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((r * 9798 + g * 19235 + b * 3735 + (1 << 14)) >> 15).astype(np.uint8)


def reference_protocol_numpy(sr: torch.Tensor, hr: np.ndarray, gt_mean: bool, weights) -> dict[str, float]:
    """LLFlow's test.py + Measure.py written with numpy and scikit-image, as the reference does."""
    out = sr.numpy().astype(np.float32)
    if gt_mean:
        mean_gt = (hr.astype(np.float32) @ np.asarray(weights, dtype=np.float32)).mean() / 255
        out = out * (mean_gt / out.mean())
    sr_u8 = (np.clip(out.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    gray_sr, gray_hr = opencv_rgb2gray(sr_u8), opencv_rgb2gray(hr)
    return {
        "psnr": sk_psnr(sr_u8, hr),
        "ssim_gray": sk_ssim(gray_sr, gray_hr),
        # skimage 0.18's multichannel=True on a 2-D image: columns as channels, i.e. 1-D SSIMs
        "ssim_gray_columns": sk_ssim(gray_sr, gray_hr, channel_axis=-1),
        "ssim_rgb": sk_ssim(sr_u8, hr, channel_axis=-1),
    }


def test_psnr_matches_skimage_in_float_and_uint8():
    x, y = noisy_pair(0, (3, 3, 20, 27))
    ours = psnr(y, x)
    assert ours.shape == (3,) and ours.dtype == torch.float64
    for i in range(3):
        assert ours[i].item() == pytest.approx(sk_psnr(x[i].numpy(), y[i].numpy(), data_range=1), abs=TIGHT)
        xu, yu = to_hwc_uint8(x[i]), to_hwc_uint8(y[i])
        chw_x, chw_y = torch.from_numpy(xu).permute(2, 0, 1), torch.from_numpy(yu).permute(2, 0, 1)
        ours_u8 = psnr(chw_y, chw_x)  # uint8: data range 255, as scikit-image infers
        assert ours_u8.item() == pytest.approx(sk_psnr(xu, yu), abs=TIGHT)
        assert psnr(chw_y, chw_x, data_range=255).item() == ours_u8.item()
    assert torch.isinf(psnr(x, x)).all()
    assert psnr(x[0], y[0]).shape == ()  # unbatched


@pytest.mark.parametrize("shape", [(2, 3, 11, 11), (1, 3, 32, 45), (2, 2, 3, 24, 17)])
def test_standard_ssim_matches_skimage_gaussian(shape):
    x, y = noisy_pair(1, shape)
    ours = ssim(y, x)
    assert ours.shape == shape[:-3]
    flat_x, flat_y = x.reshape(-1, *shape[-3:]), y.reshape(-1, *shape[-3:])
    expected = [
        sk_ssim(a.numpy(), b.numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False, data_range=1)
        for a, b in zip(flat_y, flat_x)
    ]
    assert np.allclose(ours.reshape(-1).numpy(), expected, rtol=0, atol=TIGHT)


def test_float32_inputs_give_the_same_ssim_as_float64():
    x, y = noisy_pair(2, (1, 3, 30, 30))
    widened = ssim(x.float().double(), y.float().double())
    assert ssim(x.float(), y.float()).item() == pytest.approx(widened.item(), abs=1e-12)


def test_skimage_default_ssim_uniform7_sample_covariance_on_uint8():
    x, y = noisy_pair(3, (2, 3, 25, 31), noise=0.2)
    for i in range(2):
        xu, yu = to_hwc_uint8(x[i]), to_hwc_uint8(y[i])
        ours = ssim(
            torch.from_numpy(xu).permute(2, 0, 1), torch.from_numpy(yu).permute(2, 0, 1),
            window="uniform", win_size=7, sample_covariance=True,
        )
        assert ours.item() == pytest.approx(sk_ssim(xu, yu, channel_axis=-1), abs=TIGHT)


def test_column_ssim_matches_skimage_one_dimensional_ssims():
    x, y = noisy_pair(4, (2, 40, 33), noise=0.15)
    xu, yu = (np.round(v.numpy() * 255).astype(np.uint8) for v in (x, y))
    ours = ssim_columns(torch.from_numpy(xu), torch.from_numpy(yu))
    for i in range(2):
        columns = [sk_ssim(xu[i][:, j], yu[i][:, j], win_size=7, data_range=255) for j in range(33)]
        by_columns = np.mean(columns)
        assert ours[i].item() == pytest.approx(by_columns, abs=TIGHT)
        assert ours[i].item() == pytest.approx(sk_ssim(xu[i], yu[i], channel_axis=-1), abs=TIGHT)
    # It is a different number from the 2-D SSIM of the same images.
    assert abs(ours[0].item() - sk_ssim(xu[0], yu[0])) > 1e-3


def test_shape_and_argument_errors_say_what_was_expected():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, x[..., :7])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x, x)
    with pytest.raises(ValueError, match="odd"):
        ssim(x, x, win_size=4)
    with pytest.raises(ValueError, match="window"):
        ssim(x, x, window="box", win_size=3)
    with pytest.raises(ValueError, match="H >= 7"):
        ssim_columns(x[0, 0, :6], x[0, 0, :6])
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        rgb_to_gray(torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="gray weights"):
        gt_mean_align(x, x, weights="srgb")


def test_opencv_gray_conversion_worked_examples_and_closeness_to_bt601():
    examples = [[255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]
    examples = torch.tensor(examples, dtype=torch.uint8)
    gray = rgb_to_gray_uint8(examples.T.reshape(3, 1, 5))[0].tolist()
    # (9798*255 + 2**14) >> 15 = 76; (19235*255 + 2**14) >> 15 = 150; (3735*255 + 2**14) >> 15 = 29;
    # (9798*10 + 19235*20 + 3735*30 + 2**14) >> 15 = 18
    assert gray == [255, 76, 150, 29, 18]
    rgb = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    diff = rgb_to_gray_uint8(rgb).double() - torch.round(rgb_to_gray(rgb))
    assert diff.abs().max() <= 1 and (diff == 0).double().mean() > 0.99


def test_gt_mean_alignment_matches_the_gray_mean_and_is_explicit():
    x, y = noisy_pair(5, (2, 3, 16, 16))
    pred = y * 0.3
    aligned = gt_mean_align(pred, x)
    weights = torch.tensor(GRAY_WEIGHTS["bt601"], dtype=torch.float64).view(3, 1, 1)
    gray_mean = (x * weights).sum(1).mean((1, 2))
    assert torch.allclose(aligned.mean((1, 2, 3)), gray_mean, atol=1e-12)
    swapped = gt_mean_align(pred, x, weights="reference_swapped")
    assert not torch.allclose(swapped, aligned)
    assert torch.allclose(gt_mean_align(pred, x, weights=(0.114, 0.587, 0.299)), swapped)
    # Never on unless asked for: the defaults score the prediction as it is.
    assert torch.equal(reference_metrics(pred, x)["psnr"], reference_metrics(pred, x, gt_mean=False)["psnr"])
    assert (reference_metrics(pred, x, gt_mean=True)["psnr"] > reference_metrics(pred, x)["psnr"]).all()


@pytest.mark.parametrize("gt_mean, weights", [(False, "bt601"), (True, "bt601"), (True, "reference_swapped")])
def test_reference_protocol_matches_a_numpy_skimage_rendition(gt_mean, weights):
    x, y = noisy_pair(6, (2, 3, 30, 36), noise=0.08)
    sr = (y * 0.8 + 0.05).float()  # a raw output, partly outside [0, 1] after alignment
    ours = reference_metrics(sr, x, gt_mean=gt_mean, gt_mean_weights=weights)
    for i in range(2):
        expected = reference_protocol_numpy(sr[i], to_hwc_uint8(x[i]), gt_mean, GRAY_WEIGHTS[weights])
        # The float32 alignment factor can differ in its last bit (summation order), moving a few
        # pixels of these tiny images across a truncation step (measured: at most 1.3e-3).
        tol = 5e-3 if gt_mean else TIGHT
        for key, value in expected.items():
            assert ours[key][i].item() == pytest.approx(value, abs=tol), key


def test_truncation_is_what_the_reference_protocol_scores():
    target = torch.full((1, 3, 8, 8), 100 / 255, dtype=torch.float64)
    almost = torch.full((1, 3, 8, 8), 100.9 / 255)
    # Truncation scores 100.9 as 100 (a perfect match); rounding would make it 101.
    assert torch.isinf(reference_metrics(almost, target)["psnr"]).all()
    assert psnr(almost, target.float()).item() < 60


def test_real_lol_image_metrics_match_skimage_and_published_facts(shared_dir):
    lol = shared_dir / "data" / "LOL"
    gt = read_image(lol / "eval15" / "high" / "778.png", dtype=torch.float64)
    gt_u8 = to_hwc_uint8(gt)
    for name, low, high in [("LLFlow_official", 23.35, 23.45), ("LLFlow-S-SKF", 23.55, 23.85),
                            ("DRBN-SKF", 23.55, 23.85)]:
        out = read_image(lol / "eval15_reference_outputs" / name / "778.png", dtype=torch.float64)
        ours_psnr = psnr(out, gt).item()
        # data/README.md: LLFlow's output scores 23.4 dB against this GT, the SKF outputs 23.6-23.8.
        assert low < ours_psnr < high, (name, ours_psnr)
        out_u8 = to_hwc_uint8(out)
        assert ours_psnr == pytest.approx(sk_psnr(gt_u8, out_u8), abs=TIGHT)
        expected_ssim = sk_ssim(out.numpy(), gt.numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1)
        assert ssim(out, gt).item() == pytest.approx(expected_ssim, abs=TIGHT)
    ours = reference_metrics(out[None], gt[None])
    expected = reference_protocol_numpy(out, gt_u8, False, None)
    for key, value in expected.items():
        assert ours[key].item() == pytest.approx(value, abs=TIGHT), key
    # data/README.md: the GT's (BT.601) grey mean is 89.07.
    assert rgb_to_gray(gt).mean().item() * 255 == pytest.approx(89.07, abs=0.005)


def test_score_enhancement_scores_the_saved_image_and_the_published_protocol():
    x, y = noisy_pair(8, (2, 3, 30, 36), noise=0.08)
    raw = (y * 0.7 - 0.02).float()  # a raw output, partly below 0
    scores = score_enhancement(raw, x, perceptual=False)
    assert list(scores) == ["psnr", "ssim", "gtmean_psnr", "gtmean_ssim", "paper_psnr", "paper_ssim_gray",
                            "paper_gtmean_psnr", "paper_gtmean_ssim_gray"]
    for i in range(2):
        # Standard: the PNG a user saves (clamped, rounded to 8 bits) against the float GT.
        saved = np.round(np.clip(raw[i].double().numpy(), 0, 1) * 255) / 255
        assert scores["psnr"][i].item() == pytest.approx(sk_psnr(x[i].numpy(), saved, data_range=1), abs=TIGHT)
        assert scores["ssim"][i].item() == pytest.approx(
            sk_ssim(saved, x[i].numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
                    use_sample_covariance=False, data_range=1), abs=TIGHT)
        # Paper: the reference's numbers, its published (column) gray SSIM and swapped GT-mean weights.
        plain = reference_protocol_numpy(raw[i], to_hwc_uint8(x[i]), False, None)
        aligned = reference_protocol_numpy(raw[i], to_hwc_uint8(x[i]), True, GRAY_WEIGHTS["reference_swapped"])
        assert scores["paper_psnr"][i].item() == pytest.approx(plain["psnr"], abs=TIGHT)
        assert scores["paper_ssim_gray"][i].item() == pytest.approx(plain["ssim_gray_columns"], abs=TIGHT)
        assert scores["paper_gtmean_psnr"][i].item() == pytest.approx(aligned["psnr"], abs=5e-3)
        assert scores["paper_gtmean_ssim_gray"][i].item() == pytest.approx(aligned["ssim_gray_columns"], abs=5e-3)
    assert (scores["gtmean_psnr"] > scores["psnr"]).all()
    with pytest.raises(ValueError, match="expects the model's float output, got dtype torch.uint8"):
        score_enhancement(torch.zeros(1, 3, 30, 36, dtype=torch.uint8), x[:1])
