from __future__ import annotations

import dataclasses

import pytest
import torch

from flowkit.models import LLFlowConfig
from flowkit.models.llflow.data import LowLightMixture, LowLightSynthesizer
from flowkit.models.llflow.train import load_config, shipped_configs, warmup_multistep


def _rates(warmup, milestones, steps):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=5e-4)
    sched = warmup_multistep(opt, warmup=warmup, milestones=milestones)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_warm_up_is_linear_then_halves_at_each_milestone():
    rates = _rates(4, [6, 8], 10)
    expected = [0.0, 1.25e-4, 2.5e-4, 3.75e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 1.25e-4, 1.25e-4]
    assert rates == pytest.approx(expected)


def test_shipped_configs_follow_the_reference_training_table():
    # SPEC section 6: niter, milestones, warm-up, batch, patch, optimiser per config.
    assert shipped_configs() == ["default", "lol", "lol_small", "lol_v2", "synthetic_v2", "synthetic_v4", "tiny"]
    lol, small, v2 = load_config("lol"), load_config("lol_small"), load_config("lol_v2")
    assert (lol.run.iterations, lol.optim.milestones, lol.optim.warmup) == (40000, (20000, 30000, 36000, 38000), 3000)
    assert (small.run.iterations, small.optim.milestones, small.optim.warmup) == (
        45000, (22500, 33750, 40500, 42750), 0)
    assert (v2.run.iterations, v2.optim.milestones, v2.optim.warmup) == (40000, (20000, 30000, 36000, 38000), 200)
    for config in (lol, small, v2):
        assert (config.data.batch_size, config.data.patch_size) == (16, 160)
        assert (config.optim.lr, config.optim.betas, config.optim.weight_decay) == (5e-4, (0.9, 0.999), 0.0)
        assert config.run.amp == "fp16" and config.optim.grad_clip == 0.0
    assert lol.llflow_config() == LLFlowConfig.lol()
    assert small.llflow_config() == LLFlowConfig.lol_small()
    assert v2.llflow_config().train_gt_ratio == 0.5


def test_unknown_keys_and_sections_are_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\niterations = 10\nitterations = 3\n[data]\nroot = 'x'\n")
    with pytest.raises(ValueError, match="itterations"):
        load_config(bad)
    bad.write_text("[trian]\n")
    with pytest.raises(ValueError, match="trian"):
        load_config(bad)
    bad.write_text("[model]\npreset = 'tiny'\nencoder_chanels = 3\n[data]\nroot = 'x'\n")
    with pytest.raises(ValueError, match="encoder_chanels"):
        load_config(bad).llflow_config()


def test_loss_section_defaults_to_the_likelihood_and_is_validated(tmp_path):
    config = load_config("synthetic_v2")
    assert (config.loss.decode_weight, config.loss.decode_temperature, config.loss.decode_distance) == (0.0, 1.0, "l1")
    good = tmp_path / "good.toml"
    good.write_text("[data]\nroot = 'x'\n[loss]\ndecode_weight = 4\ndecode_temperature = 0.8\ndecode_distance = 'l2'\n")
    loss = load_config(good).loss
    assert (loss.decode_weight, loss.decode_temperature, loss.decode_distance) == (4.0, 0.8, "l2")
    for line, message in (("decode_weight = -1.0", r"\[loss\] decode_weight must be a finite number >= 0, got -1.0"),
                          ("decode_temperature = nan", r"\[loss\] decode_temperature must be a finite number >= 0"),
                          ("decode_wieght = 1.0", "decode_wieght"),
                          ("decode_distance = 'l3'", r"\[loss\] decode_distance must be one of \['l1', 'l2'\], got 'l3'"),
                          ("decode_distance = 2", r"\[loss\] decode_distance must be a str"),
                          ("decode_weight = 'big'", r"\[loss\] decode_weight must be a number, got 'big'")):
        good.write_text(f"[data]\nroot = 'x'\n[loss]\n{line}\n")
        with pytest.raises(ValueError, match=message):
            load_config(good)


def test_missing_config_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="lol_small"):
        load_config("nonexistent")


def test_default_recipe_trains_the_slim_small_net_on_calibrated_online_synthetic_pairs():
    config = load_config("default")
    model = config.llflow_config()
    assert (model.encoder_channels, model.growth_channels, model.hidden_channels) == (24, 16, 32)
    assert (model.encoder_blocks, model.steps_per_level, model.stack_blocks) == (4, 4, (1,))
    data = config.data
    assert data.synthetic_online and data.synthesizer == "lol" and data.real_train_repeat == 10
    assert data.path(data.synthetic_source) == "../shared/data/photos/BSDS500"
    assert data.path("/abs/photos") == "/abs/photos" and data.path("scenes") == "scenes"
    assert config.run.amp == "none" and config.optim.milestones[-1] < config.run.iterations == 1400


def test_new_data_keys_are_validated_with_their_names(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\nsynthetic_source = 'photos'\nsynthesizer = 'lool'\n")
    with pytest.raises(ValueError, match=r"\[data\] synthesizer must be one of \['default', 'lol', 'lol_wide'\]"):
        load_config(bad)
    bad.write_text("[data]\nsynthetic_source = 'photos'\nreal_train_repeat = 0\n")
    with pytest.raises(ValueError, match="real_train_repeat must be a positive int"):
        load_config(bad)
    bad.write_text("[data]\nsynthetic_source = 'scenes'\nsynthetic_online = true\n")
    with pytest.raises(ValueError, match="synthetic_online needs synthetic_source to be a folder"):
        load_config(bad)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("synthetic_source = ['a', 'b']\nsynthetic_val_source = 'c'",
         r"a list of folders only with synthetic_online, got \['a', 'b'\]"),
        ("synthetic_source = ['a', 'b']\nsynthetic_online = true", "needs synthetic_val_source"),
        ("synthetic_source = ['a', 3]\nsynthetic_online = true", "synthetic_source must be a string or a list of strings"),
    ],
)
def test_a_list_of_photograph_folders_is_checked(tmp_path, data, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(f"[data]\n{data}\n")
    with pytest.raises(ValueError, match=message):
        load_config(bad)


def test_a_list_of_photograph_folders_is_taken_from_base(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("[data]\nbase = '/data'\nsynthetic_source = ['a', '/b']\nsynthetic_online = true\n"
                    "synthetic_val_source = 'c'\nsynthesizer = 'lol_wide'\n")
    data = load_config(good).data
    assert data.path(data.synthetic_source) == ("/data/a", "/b") and data.synthesizer == "lol_wide"


def test_synthesizer_ranges_replace_the_presets_gamma_and_scale(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("[data]\nsynthetic_source = 'photos'\nsynthesizer = 'lol_wide'\n"
                    "synthesizer_gamma = [1, 2.89]\nsynthesizer_scale = [0.08, 0.7]\n")
    synth = load_config(good).data.low_light_synthesizer()
    assert synth.gamma == (1.0, 2.89) and synth.scale == (0.08, 0.7)
    # The other ranges stay the preset's: the noise and colour cast fitted to LOL.
    wide = LowLightSynthesizer.lol_wide()
    assert (synth.read_noise, synth.red_gain, synth.blue_noise) == (wide.read_noise, wide.red_gain, wide.blue_noise)


def test_a_mild_fraction_mixes_a_second_pair_of_ranges_into_the_preset(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("[data]\nsynthetic_source = 'photos'\nsynthesizer = 'lol_wide'\nsynthesizer_mild_fraction = 0.3\n"
                    "synthesizer_mild_gamma = [1, 1.6]\nsynthesizer_mild_scale = [0.4, 1]\n")
    synth = load_config(good).data.low_light_synthesizer()
    assert isinstance(synth, LowLightMixture) and synth.weights == pytest.approx((0.7, 0.3))
    wide, mild = synth.components
    assert wide == LowLightSynthesizer.lol_wide()
    assert (mild.gamma, mild.scale, mild.read_noise) == ((1.0, 1.6), (0.4, 1.0), wide.read_noise)
    assert (mild.red_gain, mild.blue_gain) == (wide.red_gain, wide.blue_gain) != ((1.0, 1.0), (1.0, 1.0))
    # A colour-neutral mild share: its gains replaced, the preset's share keeps LOL's casts.
    good.write_text(good.read_text() + "synthesizer_mild_red_gain = [1, 1]\nsynthesizer_mild_blue_gain = [0.9, 1.1]\n")
    wide, mild = load_config(good).data.low_light_synthesizer().components
    assert (mild.red_gain, mild.blue_gain, mild.scale) == ((1.0, 1.0), (0.9, 1.1), (0.4, 1.0))
    assert wide == LowLightSynthesizer.lol_wide()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("synthesizer_scale = [0.5, 1.5]", r"\[data\] synthesizer_scale: scale must stay within \(0, 1\]"),
        ("synthesizer_gamma = [2.0, 1.0]", r"\[data\] synthesizer_gamma: gamma must be a range"),
        ("synthesizer_gamma = [1.0]", r"\[data\] synthesizer_gamma must be a list of 2 numbers"),
        ("synthesizer_mild_fraction = 1.0", r"\[data\] synthesizer_mild_fraction must be in \[0, 1\), got 1.0"),
        ("synthesizer_mild_fraction = 0.2\nsynthesizer_mild_gamma = [1, 1.5]",
         r"synthesizer_mild_fraction = 0.2 needs both synthesizer_mild_gamma and synthesizer_mild_scale"),
        ("synthesizer_mild_scale = [0.5, 1]", r"synthesizer_mild_scale needs synthesizer_mild_fraction above 0"),
        ("synthesizer_mild_red_gain = [1, 1]", r"synthesizer_mild_red_gain needs synthesizer_mild_fraction above 0"),
        ("synthesizer_mild_fraction = 0.1\nsynthesizer_mild_gamma = [1, 1.3]\nsynthesizer_mild_scale = [0.6, 1]\n"
         "synthesizer_mild_blue_gain = [0, 1]", r"\[data\] synthesizer_mild_blue_gain: blue_gain must be a range"),
        ("synthesizer_mild_fraction = 0.2\nsynthesizer_mild_gamma = [1, 1.5]\nsynthesizer_mild_scale = [0.5, 2]",
         r"\[data\] synthesizer_mild_scale: scale must stay within \(0, 1\]"),
    ],
)
def test_bad_synthesizer_settings_name_their_key(tmp_path, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(f"[data]\nsynthetic_source = 'photos'\n{text}\n")
    with pytest.raises(ValueError, match=message):
        load_config(bad)


def test_synthetic_v2_recipe_is_ten_times_v1_on_the_widened_darkening():
    v1, v2 = load_config("default"), load_config("synthetic_v2")
    patches = {name: c.run.iterations * c.data.batch_size * c.data.patch_size**2 / 128**2 for name, c in
               (("v1", v1), ("v2", v2))}
    assert patches["v2"] >= 10 * patches["v1"] >= 112_000
    assert v2.llflow_config() == v1.llflow_config()  # the slim width (the pilot's choice)
    data = v2.data
    assert data.synthesizer == "lol_wide" and data.synthetic_online and data.real_train == "LOL/our485_subset"
    assert data.path(data.synthetic_source) == tuple(
        f"../shared/data/photos/{name}" for name in ("BSDS500", "CSun_Hays80", "Urban100_half"))
    # Kodak24 validates and is never trained on.
    assert data.synthetic_val_source == "photos/Kodak24" and "photos/Kodak24" not in data.synthetic_source
    assert v2.optim.milestones[-1] < v2.run.iterations


def test_synthetic_v4_recipe_fine_tunes_v3_with_a_mild_share_of_v2s_data():
    v2, v4 = load_config("synthetic_v2"), load_config("synthetic_v4")
    assert v4.run.init == "llflow-synthetic-v3" and v4.llflow_config() == v2.llflow_config()
    # The same photographs, validation pairs and real pairs; only the darkening's mixture differs.
    changed = {name for name in dataclasses.asdict(v2.data) if getattr(v2.data, name) != getattr(v4.data, name)}
    assert changed == {f"synthesizer_mild_{name}" for name in ("fraction", "gamma", "scale", "red_gain", "blue_gain")}
    mixture = v4.data.low_light_synthesizer()
    assert mixture.weights == pytest.approx((0.93, 0.07))
    preset, mild = mixture.components
    assert preset == LowLightSynthesizer.lol_wide()
    assert (mild.gamma, mild.scale, mild.red_gain, mild.blue_gain) == ((1.0, 1.3), (0.6, 1.0), (1.0, 1.0), (1.0, 1.0))
    assert mild.read_noise == preset.read_noise
    assert v4.optim.milestones[-1] < v4.run.iterations == 800
