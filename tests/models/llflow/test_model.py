"""LLFlow's public API: shapes, padding, temperatures, the loss's selector, histeq input, bad input."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from flowkit.models import LLFlow
from flowkit.models.llflow.encoder import color_map
from flowkit.models.llflow.histeq import histeq_image

from .conftest import perturbed, relative_error, toy_config


def images(b: int = 2, h: int = 16, w: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, h, w, generator=generator) * 0.25
    high = torch.rand(b, 3, h, w, generator=generator)
    return low, high


def test_shapes(toy_model):
    low, high = images()
    z, logdet = toy_model.encode(high, low)
    assert z.shape == (2, 192, 2, 3) and logdet.shape == (2,)
    x, inverse_logdet = toy_model.decode(z, low)
    assert x.shape == high.shape and inverse_logdet.shape == (2,)
    assert toy_model.nll(low, high).shape == (2,)
    assert toy_model.loss(low, high).shape == ()
    assert toy_model.enhance(low).shape == low.shape


def test_nll_is_bits_per_pixel_of_the_gaussian_around_the_color_map(toy_model):
    low, high = images()
    z, logdet = toy_model.encode(high, low)
    for prior, colors in (("encoder", toy_model.condition(low).color_map), ("gt", color_map(high))):
        mean = F.pixel_unshuffle(colors, 8)  # (B, 3*64, H/8, W/8); channel c*64 + i*8 + j
        log_p = (-0.5 * ((z - mean) ** 2 + math.log(2 * math.pi))).sum((1, 2, 3))
        expected = -(logdet + log_p) / (math.log(2) * 16 * 24)
        assert torch.allclose(toy_model.nll(low, high, prior=prior), expected, rtol=1e-5)


@pytest.mark.parametrize("size", [(13, 10), (8, 17), (5, 3), (1, 1), (16, 24)])
def test_enhance_pads_and_crops_any_size(toy_model, size):
    low = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(3)) * 0.3
    out = toy_model.enhance(low)
    assert out.shape == low.shape and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


def test_enhance_is_the_crop_of_the_reflect_padded_image(toy_model):
    low = torch.rand(2, 3, 13, 10, generator=torch.Generator().manual_seed(4)) * 0.3
    histeq = histeq_image(low)  # equalized before padding, over the real pixels only
    padded = F.pad(low, (0, 6, 0, 3), mode="reflect")
    padded_histeq = F.pad(histeq, (0, 6, 0, 3), mode="reflect")
    expected = toy_model.enhance(padded, histeq=padded_histeq, clamp=False)[:, :, :13, :10]
    assert torch.equal(toy_model.enhance(low, clamp=False), expected)


def test_temperature_zero_decodes_the_prior_mean(toy_model):
    low, _ = images()
    mean = toy_model.prior_mean(toy_model.condition(low).color_map)
    x, _ = toy_model.decode(mean, low)
    # Not bit for bit: enhance runs channels-last on CPU, whose convolutions sum in another order.
    torch.testing.assert_close(toy_model.enhance(low, clamp=False), x.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(toy_model.enhance(low), x.detach().clamp(0, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_enhance_is_finite_at_temperatures_0_to_1(toy_model, temperature):
    low, _ = images()
    out = toy_model.enhance(low, temperature=temperature, clamp=False, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()


def test_sampling_is_reproducible_and_centred_on_the_mean(toy_model):
    low, _ = images()
    first = toy_model.enhance(low, temperature=0.8, generator=torch.Generator().manual_seed(5), clamp=False)
    again = toy_model.enhance(low, temperature=0.8, generator=torch.Generator().manual_seed(5), clamp=False)
    other = toy_model.enhance(low, temperature=0.8, generator=torch.Generator().manual_seed(6), clamp=False)
    assert torch.equal(first, again) and not torch.equal(first, other)
    eps = torch.randn(2, 192, 2, 3, generator=torch.Generator().manual_seed(5))
    mean = toy_model.prior_mean(toy_model.condition(low).color_map)
    # enhance runs channels-last on CPU: the same values summed in another order, which also
    # depends on the thread count (1.3e-5 apart on one thread, within 1e-5 on two).
    decoded = toy_model.decode(mean + 0.8 * eps, low)[0].detach()
    torch.testing.assert_close(first, decoded, rtol=3e-5, atol=3e-5)


def test_average_is_the_mean_of_antithetic_decodes(toy_model):
    model = toy_model
    low, _ = images()
    mean = model.prior_mean(model.condition(low).color_map)
    draws = torch.Generator().manual_seed(7)
    eps = [torch.randn(2, 192, 2, 3, generator=draws) for _ in range(2)]
    latents = [mean + 0.9 * eps[0], mean - 0.9 * eps[0], mean + 0.9 * eps[1]]
    decoded = [model.decode(z, low)[0].detach() for z in latents]
    for n in (2, 3):
        out = model.enhance(low, temperature=0.9, average=n, generator=torch.Generator().manual_seed(7), clamp=False)
        torch.testing.assert_close(out, sum(decoded[:n]) / n, rtol=3e-5, atol=3e-5)
    # A pair is not its first decode: the average moved (by more than the channels-last tolerance).
    assert (decoded[0] - (decoded[0] + decoded[1]) / 2).abs().max() > 1e-3


def _blowing_up(model, monkeypatch, blow_up):
    """Make the flow's inverse return 1e19 in a corner of item 0 of the calls ``blow_up(z)`` picks."""
    inverse, calls = model.flow.inverse, []

    def inverse_that_blows_up(z, conditions):
        x, logdet = inverse(z, conditions)
        calls.append(z.shape[0])
        if blow_up(z, len(calls)):
            x = x.clone()
            x[0, :, :4, :4] = 1e19  # as an inverse coupling dividing by a vanishing scale leaves it
        return x, logdet

    monkeypatch.setattr(model.flow, "inverse", inverse_that_blows_up)
    return calls


def _redrawn_pairs(model, draws: int, temperature: float) -> torch.Tensor:
    """The two images' pair sums when image 0's pair is drawn ``draws`` times, the last at ``temperature``."""
    low, _ = images()
    mean = model.prior_mean(model.condition(low).color_map)
    generator = torch.Generator().manual_seed(7)
    eps = torch.randn(2, 192, 2, 3, generator=generator)
    for _ in range(draws - 1):  # image 0's redraws, for both decodes of its pair
        again = torch.randn(1, 192, 2, 3, generator=generator)
    with torch.no_grad():
        return torch.cat([sum(model.decode(m + sign * t * e, x)[0] for sign in (1, -1))
                          for m, t, e, x in ((mean[:1], temperature, again, low[:1]), (mean[1:], 0.9, eps[1:], low[1:]))])


def test_a_diverged_pair_is_drawn_again_for_that_image(toy_model, monkeypatch):
    model = toy_model
    low, _ = images()
    expected = _redrawn_pairs(model, 2, 0.9)
    calls = _blowing_up(model, monkeypatch, lambda z, call: call == 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a redraw at the temperature asked for is not worth a warning
        out = model.enhance(low, temperature=0.9, average=2, generator=torch.Generator().manual_seed(7), clamp=False)
    assert calls == [2, 2, 1, 1]  # the pair, then image 0's pair again: antithetic still
    torch.testing.assert_close(out, expected / 2, rtol=3e-5, atol=3e-5)


def test_a_pair_that_keeps_diverging_is_drawn_at_a_lower_temperature(toy_model, monkeypatch):
    model = toy_model
    low, _ = images()
    expected = _redrawn_pairs(model, 3, 0.8 * 0.9)  # the redraw at 0.9 diverges too
    calls = _blowing_up(model, monkeypatch, lambda z, call: call <= 4)  # the first pair and its redraw
    with pytest.warns(RuntimeWarning, match=r"temperature 0.9 diverged for 1 of 2 images; decoded instead: "
                                            r"image 0 at temperature 0.72$"):
        out = model.enhance(low, temperature=0.9, average=2, generator=torch.Generator().manual_seed(7), clamp=False)
    assert calls == [2, 2, 1, 1, 1, 1]
    torch.testing.assert_close(out, expected / 2, rtol=3e-5, atol=3e-5)


def test_an_image_whose_decodes_keep_diverging_gets_the_prior_mean(toy_model, monkeypatch):
    model = toy_model
    low, _ = images()
    mean = model.prior_mean(model.condition(low).color_map)
    with torch.no_grad():
        prior = model.decode(mean[:1], low[:1])[0]
    pair = model.enhance(low, temperature=0.9, average=2, generator=torch.Generator().manual_seed(7), clamp=False)
    calls = _blowing_up(model, monkeypatch, lambda z, call: call < 9)  # every draw; not the prior mean
    with pytest.warns(RuntimeWarning, match=r"temperature 0.9 diverged for 1 of 2 images; decoded instead: "
                                            r"image 0 at the prior mean \(temperature 0\)$"):
        out = model.enhance(low, temperature=0.9, average=2, generator=torch.Generator().manual_seed(7), clamp=False)
    assert calls == [2, 2, 1, 1, 1, 1, 1, 1, 1]  # the pair, image 0's pair drawn 3 more times, the prior mean
    torch.testing.assert_close(out[:1], prior, rtol=3e-5, atol=3e-5)
    torch.testing.assert_close(out[1:], pair[1:], rtol=0, atol=0)  # the other image is left as it was
    assert (prior - pair[:1]).abs().max() > 1e-3  # the fallback is not what the pair would have given


def test_enhance_defaults_fill_in_the_options_a_call_leaves_out(toy_model):
    low, _ = images()
    reference = toy_model.enhance(low, clamp=False)
    torch.testing.assert_close(reference, toy_model.enhance(low, temperature=0.0, clamp=False), rtol=0, atol=0)
    toy_model.enhance_defaults = {"temperature": 1.0, "average": 2, "seed": 5}
    default = toy_model.enhance(low, clamp=False)
    explicit = toy_model.enhance(low, temperature=1.0, average=2, generator=torch.Generator().manual_seed(5),
                                 clamp=False)
    torch.testing.assert_close(default, explicit, rtol=0, atol=0)
    torch.testing.assert_close(toy_model.enhance(low, clamp=False), default, rtol=0, atol=0)  # seeded: repeatable
    # A temperature alone is one decode: of the prior mean at 0 (not an error), else one sample.
    torch.testing.assert_close(toy_model.enhance(low, temperature=0.0, clamp=False), reference, rtol=0, atol=0)
    sample = toy_model.enhance(low, temperature=1.0, generator=torch.Generator().manual_seed(5), clamp=False)
    torch.testing.assert_close(sample, toy_model.enhance(low, temperature=1.0, average=1, clamp=False,
                                                         generator=torch.Generator().manual_seed(5)), rtol=0, atol=0)
    # An average alone takes the default temperature.
    torch.testing.assert_close(toy_model.enhance(low, average=2, clamp=False), default, rtol=0, atol=0)
    assert not torch.allclose(default, reference, atol=1e-3)


def test_shipped_model_enhances_with_the_mean_of_a_pair():
    # v3 decodes its pair at 0.8 (the model card: fewer real photographs diverge, same scores), and so does v4
    for name in ("llflow-synthetic-v4", "llflow-synthetic-v3"):
        assert LLFlow.from_pretrained(name).enhance_defaults == {"temperature": 0.8, "average": 2, "seed": 0}
    for name in ("llflow-synthetic-v2", "llflow-small-synthetic"):
        assert LLFlow.from_pretrained(name).enhance_defaults == {"temperature": 1.0, "average": 2, "seed": 0}
    assert LLFlow(toy_config()).enhance_defaults == {"temperature": 0.0, "average": 1, "seed": None}


def test_loss_selects_the_prior_once_per_batch_with_probability_train_gt_ratio():
    torch.manual_seed(0)
    low, high = images()
    for ratio, prior in ((0.0, "encoder"), (1.0, "gt")):
        model = perturbed(LLFlow(toy_config(train_gt_ratio=ratio))).eval()
        assert torch.allclose(model.loss(low, high), model.nll(low, high, prior=prior).mean())
    model = perturbed(LLFlow(toy_config(train_gt_ratio=0.3))).eval()
    encoder, gt = model.nll(low, high).mean(), model.nll(low, high, prior="gt").mean()
    assert not torch.allclose(encoder, gt)
    generator, draws = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    picks = []
    for _ in range(40):
        loss = model.loss(low, high, generator)
        use_gt = bool(torch.rand((), generator=draws) < 0.3)  # the same stream, drawn once per call
        assert torch.allclose(loss, gt if use_gt else encoder)
        picks.append(use_gt)
    assert 0 < sum(picks) < 40


def _pair_distance(model, low, high, eps, temperature, power=1):
    """mean |x_bar - high| ** power for the antithetic pair decoded through the public decode and prior_mean."""
    mean = model.prior_mean(model.condition(low).color_map)
    pair = [model.decode(mean + sign * temperature * eps, low)[0] for sign in (1.0, -1.0)]
    return ((pair[0] + pair[1]) / 2 - high).abs().pow(power).mean()


@pytest.mark.parametrize(("weight", "temperature", "distance"),
                         [(2.5, 0.7, "l1"), (0.5, 0.0, "l1"), (6.0, 0.7, "l2")])
def test_decode_term_adds_the_weighted_distance_of_the_enhanced_pair(weight, temperature, distance):
    torch.manual_seed(0)
    model = perturbed(LLFlow(toy_config(train_gt_ratio=0.0))).eval()
    low, high = images()
    nll = model.nll(low, high).mean()
    generator, draws = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    loss = model.loss(low, high, generator, decode_weight=weight, decode_temperature=temperature,
                      decode_distance=distance)
    torch.rand((), generator=draws)  # the prior's choice comes first in the stream
    eps = torch.randn(2, 192, 2, 3, generator=draws)
    term = _pair_distance(model, low, high, eps, temperature, power=1 if distance == "l1" else 2)
    assert term > 0.05  # a term that matters, not a rounding residue
    assert torch.allclose(loss, nll + weight * term, rtol=1e-5, atol=1e-6)
    # the reference's objective, and its random stream, when the weight is 0
    generator, plain = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(model.loss(low, high, generator, decode_weight=0.0), model.loss(low, high, plain))
    assert torch.equal(generator.get_state(), plain.get_state())


def test_decode_term_trains_the_flow_toward_the_ground_truth():
    torch.manual_seed(0)
    model = perturbed(LLFlow(toy_config(train_gt_ratio=0.0)))
    low, high = images()
    model.eval()
    eps = torch.randn(2, 192, 2, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = float(_pair_distance(model, low, high, eps, 0.5))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        optimizer.zero_grad()
        # the L1 term alone (its weight dwarfs the likelihood), each step with fresh noise
        (model.loss(low, high, torch.Generator().manual_seed(0), decode_weight=1e3, decode_temperature=0.5)
         / 1e3).backward()
        optimizer.step()
    with torch.no_grad():
        assert float(_pair_distance(model, low, high, eps, 0.5)) < 0.8 * before


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "1"])
def test_decode_term_rejects_bad_weights_and_temperatures(toy_model, bad):
    low, high = images()
    for name in ("decode_weight", "decode_temperature"):
        with pytest.raises(ValueError, match=f"LLFlow.loss: {name} must be a finite number >= 0, got "):
            toy_model.loss(low, high, **{name: bad})
    with pytest.raises(ValueError, match=r"LLFlow.loss: decode_distance must be one of \['l1', 'l2'\], got 'L2'"):
        toy_model.loss(low, high, decode_weight=1.0, decode_distance="L2")


def test_loss_trains_the_encoder_color_head_and_the_flow():
    torch.manual_seed(0)
    model = perturbed(LLFlow(toy_config(train_gt_ratio=0.0)))
    low, high = images()
    model.loss(low, high).backward()
    assert model.encoder.color_head.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.flow.parameters())


def test_first_training_forward_initialises_actnorms_from_data():
    torch.manual_seed(0)
    model = LLFlow(toy_config())
    low, high = images(b=4)
    model.loss(low, high)
    model.encode(high, low)
    assert all(bool(m.initialized) for m in model.modules() if hasattr(m, "initialized"))
    # after initialisation the first ActNorm's output is standardised per channel
    first = model.flow.levels[0][1][0]  # level 0, step 1, its ActNorm
    squeezed = F.pixel_unshuffle(high, 2)
    out = first(squeezed)[0]
    assert out.mean((0, 2, 3)).abs().max() < 1e-5 and (out.std((0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3


def test_histeq_argument_is_used_and_defaults_to_the_equalized_low(toy_model):
    low, high = images()
    assert torch.equal(toy_model.nll(low, high), toy_model.nll(low, high, histeq=histeq_image(low)))
    assert not torch.equal(toy_model.nll(low, high), toy_model.nll(low, high, histeq=torch.full_like(low, 0.5)))
    z, _ = toy_model.encode(high, low, histeq=torch.full_like(low, 0.5))
    assert torch.allclose(toy_model.decode(z, low, histeq=torch.full_like(low, 0.5))[0], high, atol=1e-4)
    assert toy_model.preprocess(low, histeq=torch.full_like(low, 0.5))[:, 3:].eq(0.5).all()


def test_state_dict_round_trips():
    torch.manual_seed(0)
    model = perturbed(LLFlow(toy_config())).eval()
    torch.manual_seed(1)
    copy = LLFlow(toy_config()).eval()
    copy.load_state_dict(model.state_dict())
    low, high = images()
    assert torch.equal(copy.nll(low, high), model.nll(low, high))
    assert torch.equal(copy.enhance(low), model.enhance(low))
    assert all(bool(m.initialized) for m in copy.modules() if hasattr(m, "initialized"))


def test_float64_model_accepts_float32_input(toy_model):
    low, high = images()
    model = toy_model.to(torch.float64)
    assert model.nll(low, high).dtype == torch.float64
    assert model.enhance(low).dtype == torch.float32


@pytest.mark.parametrize(
    ("method", "make", "error", "message"),
    [
        ("enhance", lambda low, high: (torch.rand(1, 4, 8, 8),), ValueError, r"\(B, 3, H, W\)"),
        ("enhance", lambda low, high: (torch.rand(3, 8, 8),), ValueError, r"\(B, 3, H, W\)"),
        ("enhance", lambda low, high: (low * 5,), ValueError, r"values in \[0, 1\]"),
        ("enhance", lambda low, high: (low - 0.5,), ValueError, r"values in \[0, 1\]"),
        ("enhance", lambda low, high: (low.masked_fill(low > 0.2, float("nan")),), ValueError, "NaN"),
        ("enhance", lambda low, high: ((low * 255).to(torch.uint8),), TypeError, "uint8"),
        ("enhance", lambda low, high: (low.numpy(),), TypeError, "torch.Tensor"),
        ("nll", lambda low, high: (low, high[:, :, :8]), ValueError, "high must have the shape of low"),
        ("nll", lambda low, high: (low, high.to(torch.int64)), TypeError, "floating-point"),
        ("nll", lambda low, high: (low[:, :, :12], high[:, :, :12]), ValueError, "divisible by 8"),
        ("encode", lambda low, high: (high, low[:1]), ValueError, "high must have the shape of low"),
        ("loss", lambda low, high: (low, high * float("inf")), ValueError, "NaN or infinite"),
        ("decode", lambda low, high: (torch.zeros(2, 192, 2, 2), low), ValueError, r"z must have shape \(2, 192, 2, 3\)"),
    ],
)
def test_bad_input_is_a_clear_error(toy_model, method, make, error, message):
    low, high = images()
    with pytest.raises(error, match=message):
        getattr(toy_model, method)(*make(low, high))


def test_bad_options_are_clear_errors(toy_model):
    low, high = images()
    with pytest.raises(ValueError, match="prior must be 'encoder' or 'gt'"):
        toy_model.nll(low, high, prior="mean")
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        toy_model.enhance(low, temperature=-0.1)
    for average in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"average must be an integer >= 1, got {average!r}"):
            toy_model.enhance(low, temperature=1.0, average=average)
    with pytest.raises(ValueError, match="average > 1 needs temperature > 0"):
        toy_model.enhance(low, temperature=0.0, average=2)
    with pytest.raises(ValueError, match="histeq must have the shape of low"):
        toy_model.enhance(low, histeq=low[:, :, :8])
    with pytest.raises(ValueError, match=r"histeq must have values in \[0, 1\]"):
        toy_model.nll(low, high, histeq=low + 2)


def test_bfloat16_enhancement_is_close_to_float32(toy_model):
    # Under autocast only the convolutions run in bfloat16 (8-bit mantissa, relative error ~4e-3
    # each); the prior mean and the affine maps stay float32. Through this perturbed toy model's
    # 9 flow steps that gives a relative error of ~1.7e-2 (the trained model: 59 dB PSNR on LOL).
    low, _ = images(1, 24, 32, seed=7)
    exact = toy_model.enhance(low, clamp=False)
    fast = toy_model.enhance(low, clamp=False, precision="bfloat16")
    assert fast.dtype == torch.float32 and fast.shape == exact.shape and fast.is_contiguous()
    assert 1e-4 < relative_error(fast, exact) < 5e-2   # close, and really computed in bfloat16


def test_enhance_rejects_an_unknown_precision(toy_model):
    with pytest.raises(ValueError, match=r"precision must be one of \('float32', 'bfloat16'\), got 'fp16'"):
        toy_model.enhance(images()[0], precision="fp16")
