"""Synthetic low-light pairs: darker, noisy as the Poisson-Gaussian model says, reproducible."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from flowkit.models.llflow.data import (
    DatasetError,
    ImageReadError,
    LowLightMixture,
    LowLightParams,
    LowLightSynthesizer,
    PairedImageDataset,
    darken,
    make_scene,
    read_image,
    write_scenes,
    write_synthetic_pairs,
)
from flowkit.models.llflow.data.synthetic import main

from .helpers import random_rgb, save_rgb


def test_noise_free_darkening_is_the_gamma_and_scale_curve():
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    low = darken(x, LowLightParams(gamma=2.2, scale=0.3, shot_noise=0.0, read_noise=0.0))
    expected = np.round(np.clip(0.3 * x.numpy() ** 2.2, 0, 1) * 255).astype(np.uint8)
    assert low.dtype == torch.uint8 and np.array_equal(low.numpy(), expected)
    # uint8 input means value / 255.
    as_uint8 = (x * 255).round().to(torch.uint8)
    low_u8 = darken(as_uint8, LowLightParams(2.2, 0.3, 0.0, 0.0))
    expected_u8 = np.round(0.3 * (as_uint8.numpy() / 255) ** 2.2 * 255).astype(np.uint8)
    assert np.array_equal(low_u8.numpy(), expected_u8)


def test_noise_variance_follows_the_poisson_gaussian_model():
    generator = torch.Generator().manual_seed(0)
    flat = torch.full((3, 256, 256), 0.5, dtype=torch.float64)
    params = LowLightParams(gamma=2.0, scale=0.4, shot_noise=1e-3, read_noise=5e-3)
    low = darken(flat, params, generator=generator).double() / 255
    signal = 0.4 * 0.5**2
    # shot variance a*d, read variance sigma^2, plus uniform quantisation of one 8-bit step
    expected_var = 1e-3 * signal + 5e-3**2 + 1 / (12 * 255**2)
    assert abs(low.mean().item() - signal) < 1e-3
    assert low.var().item() == pytest.approx(expected_var, rel=0.03)


def test_shot_noise_grows_with_the_signal():
    generator = torch.Generator().manual_seed(1)
    params = LowLightParams(gamma=1.0, scale=1.0, shot_noise=2e-3, read_noise=0.0)
    variances = []
    for level in (0.1, 0.4):
        low = darken(torch.full((3, 128, 128), level), params, generator=generator).double() / 255
        variances.append(low.var().item() - 1 / (12 * 255**2))
    assert variances[1] / variances[0] == pytest.approx(4.0, rel=0.1)


def test_synthesizer_darkens_adds_noise_and_is_deterministic():
    scene = make_scene(64, 96, seed=4)
    synth = LowLightSynthesizer()
    low, params = synth(scene, seed=11)
    again, params_again = synth(scene, seed=11)
    other, _ = synth(scene, seed=12)
    assert torch.equal(low, again) and params == params_again
    assert not torch.equal(low, other)
    assert low.float().mean() < 0.5 * scene.float().mean()
    clean = darken(scene, LowLightParams(params.gamma, params.scale, 0.0, 0.0))
    residual = (low.double() - clean.double()) / 255
    # The added noise has roughly the model's strength (at the mean signal level).
    model_std = math.sqrt(params.shot_noise * clean.double().mean().item() / 255 + params.read_noise**2)
    assert 0.5 * model_std < residual.std().item() < 2 * model_std


def test_parameters_stay_in_their_ranges_and_noise_is_log_uniform():
    synth = LowLightSynthesizer()
    generator = torch.Generator().manual_seed(0)
    draws = [synth.sample_params(generator) for _ in range(400)]
    for name in ("gamma", "scale", "shot_noise", "read_noise"):
        low, high = getattr(synth, name)
        assert all(low <= getattr(p, name) <= high for p in draws)
    # Log-uniform: half the draws fall below the geometric mean of the range.
    geometric = math.sqrt(synth.shot_noise[0] * synth.shot_noise[1])
    below = sum(p.shot_noise < geometric for p in draws)
    assert 160 <= below <= 240


def test_mixture_draws_each_component_in_proportion_from_its_own_ranges():
    dark = LowLightSynthesizer(gamma=(2.0, 2.5), scale=(0.1, 0.2))
    mild = LowLightSynthesizer(gamma=(1.0, 1.2), scale=(0.6, 0.9))
    mixture = LowLightMixture((dark, mild), weights=(3, 1))
    generator = torch.Generator().manual_seed(5)
    draws = [mixture.sample_params(generator) for _ in range(800)]
    from_dark = [p for p in draws if 2.0 <= p.gamma <= 2.5 and 0.1 <= p.scale <= 0.2]
    from_mild = [p for p in draws if 1.0 <= p.gamma <= 1.2 and 0.6 <= p.scale <= 0.9]
    assert len(from_dark) + len(from_mild) == 800  # every draw lies wholly in one component's ranges
    assert 160 <= len(from_mild) <= 240  # a quarter: binomial(800, 1/4) has sd 12
    scene = make_scene(32, 32, seed=1)
    low, params = mixture(scene, seed=9)
    again, params_again = mixture(scene, seed=9)
    assert torch.equal(low, again) and params == params_again
    with pytest.raises(ValueError, match="weights must be 2 positive numbers"):
        LowLightMixture((dark, mild), weights=(1, 0))
    with pytest.raises(ValueError, match="weights must be 2 positive numbers"):
        LowLightMixture((dark, mild), weights=(1,))
    with pytest.raises(ValueError, match="components must be one or more LowLightSynthesizers"):
        LowLightMixture((), weights=())


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="scale"):
        LowLightSynthesizer(scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="gamma"):
        LowLightSynthesizer(gamma=(3.0, 2.0))
    with pytest.raises(ValueError, match="gamma > 0"):
        darken(torch.zeros(3, 2, 2), LowLightParams(0.0, 0.5, 0.0, 0.0))
    with pytest.raises(ValueError, match="seed or a generator"):
        LowLightSynthesizer()(torch.zeros(3, 2, 2), seed=1, generator=torch.Generator())


def test_pair_folder_from_scenes_is_loadable_darker_and_reproducible(tmp_path):
    write_scenes(tmp_path / "normal", 3, 20, 30, seed=2)
    pairs = write_synthetic_pairs(tmp_path / "normal", tmp_path / "a", seed=5, multiple_of=8)
    assert [p.name for p in pairs] == ["scene_0000", "scene_0001", "scene_0002"]
    data = PairedImageDataset.from_root(tmp_path / "a", histeq=False)
    for pair, item in zip(pairs, data):
        assert item["low"].shape == item["high"].shape == (3, 16, 24)
        assert item["low"].mean() < 0.5 * item["high"].mean()
        source = read_image(tmp_path / "normal" / f"{pair.name}.png")
        assert torch.equal(item["high"], source[:, 2:18, 3:27])  # the centre crop
    with open(tmp_path / "a" / "params.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == [p.name for p in pairs]
    assert all(1.8 <= float(r["gamma"]) <= 3.0 for r in rows)
    # Same seed, same files; one image's pair does not depend on the others being there.
    write_synthetic_pairs(tmp_path / "normal", tmp_path / "b", seed=5, multiple_of=8)
    write_synthetic_pairs(tmp_path / "normal", tmp_path / "c", seed=5, multiple_of=8, limit=1)
    write_synthetic_pairs(tmp_path / "normal", tmp_path / "d", seed=6, multiple_of=8, limit=1)
    first = read_image(tmp_path / "a" / "low" / "scene_0000.png", dtype=torch.uint8)
    assert torch.equal(read_image(tmp_path / "b" / "low" / "scene_0001.png"), data[1]["low"])
    assert torch.equal(read_image(tmp_path / "c" / "low" / "scene_0000.png", dtype=torch.uint8), first)
    assert not torch.equal(read_image(tmp_path / "d" / "low" / "scene_0000.png", dtype=torch.uint8), first)


def test_writer_refuses_to_overwrite_and_names_problems(tmp_path):
    write_scenes(tmp_path / "normal", 1, 8, 8)
    write_synthetic_pairs(tmp_path / "normal", tmp_path / "out")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_synthetic_pairs(tmp_path / "normal", tmp_path / "out")
    write_synthetic_pairs(tmp_path / "normal", tmp_path / "out", overwrite=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        write_synthetic_pairs(tmp_path / "empty", tmp_path / "out2")
    (tmp_path / "normal" / "bad.png").write_bytes(b"nope")
    with pytest.raises(ImageReadError, match="bad.png"):
        write_synthetic_pairs(tmp_path / "normal", tmp_path / "out3")


def test_recursive_sources_are_named_by_relative_path(tmp_path):
    rng = np.random.default_rng(0)
    save_rgb(tmp_path / "src" / "train" / "1.jpg", random_rgb(rng, 8, 8))
    save_rgb(tmp_path / "src" / "test" / "1.jpg", random_rgb(rng, 8, 8))
    pairs = write_synthetic_pairs(tmp_path / "src", tmp_path / "out", recursive=True)
    assert [p.name for p in pairs] == ["test_1", "train_1"]


def test_command_line_makes_pairs_from_generated_scenes(tmp_path, capsys):
    assert main(["--scenes", "2", "--size", "16", "24", "--seed", "3", str(tmp_path / "out")]) == 0
    assert "wrote 2 pairs" in capsys.readouterr().out
    assert len(PairedImageDataset.from_root(tmp_path / "out", histeq=False)) == 2
    with pytest.raises(SystemExit):
        main([str(tmp_path / "out")])


def test_real_photographs_become_lol_like_low_light_images(shared_dir, tmp_path):
    source = shared_dir / "data" / "photos" / "BSDS500" / "train"
    pairs = write_synthetic_pairs(source, tmp_path / "out", limit=3, multiple_of=8, seed=0)
    for pair in pairs:
        low, high = read_image(pair.low), read_image(pair.high)
        assert high.shape == (3, 320, 480)
        # LOL's low images have means of a few 8-bit levels up to a few tens.
        assert 1 / 255 < low.mean() < 0.25 and low.mean() < 0.5 * high.mean()


def test_scenes_are_deterministic_and_varied(tmp_path):
    scene = make_scene(96, 128, seed=0)
    assert torch.equal(scene, make_scene(96, 128, seed=0))
    assert not torch.equal(scene, make_scene(96, 128, seed=1))
    values = scene.float() / 255
    assert 0.15 < values.mean() < 0.85  # a normal-light image
    assert len(torch.unique(scene.reshape(3, -1), dim=1).T) > 200  # many colours
    steps = (values[:, :, 1:] - values[:, :, :-1]).abs().amax(0)
    assert (steps > 0.2).any()  # sharp edges
    assert (steps < 0.01).float().mean() > 0.2  # and smooth or flat regions
    paths = write_scenes(tmp_path, 2, 10, 12, seed=4)
    assert torch.equal(read_image(paths[1], dtype=torch.uint8), make_scene(10, 12, seed=4 * 1_000_003 + 1))
    with pytest.raises(ValueError, match="positive size"):
        make_scene(0, 4)


def test_channel_gains_cast_colour_and_noise_ratios_scale_each_channel():
    flat = torch.full((3, 192, 192), 0.6, dtype=torch.float64)
    params = LowLightParams(gamma=2.0, scale=0.3, shot_noise=0.0, read_noise=0.004,
                            gains=(0.5, 1.0, 1.5), noise_ratios=(2.0, 1.0, 0.5))
    low = darken(flat, params, generator=torch.Generator().manual_seed(0)).double() / 255
    means, stds = low.mean((1, 2)), low.std((1, 2))
    clean = 0.3 * 0.6**2
    assert means.tolist() == pytest.approx([0.5 * clean, clean, 1.5 * clean], abs=1.5e-3)
    quantisation = 1 / (12 * 255**2)
    expected = [math.sqrt((0.004 * r) ** 2 + quantisation) for r in (2.0, 1.0, 0.5)]
    assert stds.tolist() == pytest.approx(expected, rel=0.05)


def test_gains_saturate_at_full_scale_before_the_noise():
    params = LowLightParams(gamma=1.0, scale=1.0, shot_noise=0.0, read_noise=0.0, gains=(3.0, 1.0, 1.0))
    assert darken(torch.full((3, 2, 2), 0.9), params)[0].max().item() == 255


def test_large_photon_counts_use_the_normal_approximation_with_the_poisson_variance():
    # a = 1e-5 at d = 0.2 is 20000 expected photons (normal branch); at d = 1e-4, 10 (exact branch).
    from flowkit.models.llflow.data.synthetic import _add_noise

    generator = torch.Generator().manual_seed(5)
    for level, expected_var in ((0.2, 1e-5 * 0.2), (1e-4, 1e-5 * 1e-4)):
        x = torch.full((3, 256, 256), level, dtype=torch.float64)
        # Measured before the 8-bit rounding, which would hide variances this small.
        noisy = _add_noise(x, 1e-5, 0.0, generator)
        assert noisy.mean().item() == pytest.approx(level, rel=0.01)
        assert noisy.var().item() == pytest.approx(expected_var, rel=0.05)
    with pytest.raises(ValueError, match="RGB images"):
        darken(torch.rand(2, 8, 8), LowLightParams(2.0, 0.3, 0.0, 0.0, gains=(0.5, 1.0, 1.0)))
    with pytest.raises(ValueError, match="3 positive gains"):
        darken(torch.rand(3, 8, 8), LowLightParams(2.0, 0.3, 0.0, 0.0, gains=(0.0, 1.0, 1.0)))


def test_lol_preset_draws_casts_and_noise_ratios_within_its_ranges():
    synth = LowLightSynthesizer.lol()
    generator = torch.Generator().manual_seed(0)
    draws = [synth.sample_params(generator) for _ in range(200)]
    assert all(synth.red_gain[0] <= p.gains[0] <= synth.red_gain[1] and p.gains[1] == 1.0 for p in draws)
    assert all(synth.blue_noise[0] <= p.noise_ratios[2] <= synth.blue_noise[1] for p in draws)
    # The first four draws keep their meaning: the default synthesizer draws the same gamma.
    first = LowLightSynthesizer().sample_params(torch.Generator().manual_seed(1))
    wider = LowLightSynthesizer(red_gain=(0.5, 1.0)).sample_params(torch.Generator().manual_seed(1))
    assert (first.gamma, first.scale, first.read_noise) == (wider.gamma, wider.scale, wider.read_noise)
    with pytest.raises(ValueError, match="red_gain"):
        LowLightSynthesizer(red_gain=(1.2, 1.0))


def test_lol_wide_darkens_further_than_lol_with_the_refitted_noise():
    """Same photograph, same seeds: lol_wide reaches the 20x and darker ratios real pairs have."""
    from flowkit.models.llflow.data.synthetic import LOL_FIT

    photo = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    ratios = {}
    for name in ("lol", "lol_wide"):
        synth = getattr(LowLightSynthesizer, name)()
        lows = [synth(photo, seed=seed)[0].float().mean() / 255 for seed in range(200)]
        ratios[name] = torch.tensor([photo.mean() / max(low, 1e-4) for low in lows])
    assert ratios["lol_wide"].quantile(0.9) > 1.2 * ratios["lol"].quantile(0.9)
    assert ratios["lol_wide"].max() > 20 > ratios["lol_wide"].min()
    wide = LowLightSynthesizer.lol_wide()
    # Only the exposure and the refitted red/blue read-noise ranges change.
    unchanged = {k: v for k, v in LOL_FIT.items() if k not in ("scale", "red_noise", "blue_noise")}
    assert all(getattr(wide, k) == v for k, v in unchanged.items())
    assert wide.scale[1] == LOL_FIT["scale"][1] and wide.scale[0] < LOL_FIT["scale"][0]
