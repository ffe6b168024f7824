"""LLFlow reproduces the reference implementation's numbers (../shared/llflow/oracle_smallnet.pt).

The oracle was produced by the reference code itself (SPEC.md section 9): its inputs, weights and
every intermediate tensor. Tolerance: max-norm relative error <= 1e-4 in float32 and <= 1e-5 in
float64 (the reference ran in float32, so both should land near 1e-6).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from flowkit.models import LLFlow
from flowkit.models.llflow.histeq import equalize_hist

from .conftest import relative_error

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-5}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
_MODELS: dict[tuple[int, torch.dtype, float], LLFlow] = {}


def oracle_model(oracle: dict, dtype: torch.dtype, train_gt_ratio: float = 0.2) -> LLFlow:
    key = (id(oracle), dtype, train_gt_ratio)
    if key not in _MODELS:
        model = LLFlow.from_official(oracle["state_dict"])
        if train_gt_ratio != model.config.train_gt_ratio:
            config = dataclasses.replace(model.config, train_gt_ratio=train_gt_ratio)
            model = LLFlow.from_official(oracle["state_dict"], config)
        _MODELS[key] = model.to(dtype).eval()
    return _MODELS[key]


def images(oracle: dict, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    low = oracle["low_uint8"].permute(0, 3, 1, 2).to(dtype) / 255
    high = oracle["gt_uint8"].permute(0, 3, 1, 2).to(dtype) / 255
    return low, high


def check(name: str, actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    error = relative_error(actual, expected)
    assert error <= TOLERANCE[dtype], f"{name}: relative error {error:.3g} > {TOLERANCE[dtype]:g}"


def test_oracle_config_is_inferred_as_lol_small(oracle):
    config = LLFlow.from_official(oracle["state_dict"]).config
    reference = oracle["config"]
    assert (config.encoder_channels, config.encoder_blocks, config.growth_channels) == (
        reference["nf"], reference["nb"], reference["gc"])
    assert list(config.stack_blocks) == list(reference["stackRRDB_blocks"])
    assert config.cond_channels == reference["conditionInFeaDim"]
    assert (config.steps_per_level, config.transition_steps) == (reference["K"], reference["additionalFlowNoAffine"])
    assert config.hidden_channels == reference["coupling_hidden_channels"]
    assert config.affine_eps == reference["affine_eps"]
    assert config.train_gt_ratio == reference["train_gt_ratio"]


def test_histeq_matches_opencv_bit_for_bit(oracle):
    low = oracle["low_uint8"].permute(0, 3, 1, 2)
    equalized = equalize_hist(low).permute(0, 2, 3, 1)
    assert torch.equal(equalized, oracle["histeq_uint8"])


@DTYPES
def test_preprocessing(oracle, dtype):
    model = oracle_model(oracle, dtype)
    low, high = images(oracle, dtype)
    check("gt", high, oracle["gt"], dtype)
    check("lq", model.preprocess(low), oracle["lq"], dtype)
    histeq = oracle["histeq_uint8"].permute(0, 3, 1, 2).to(dtype) / 255
    check("lq (given histeq)", model.preprocess(low, histeq=histeq), oracle["lq"], dtype)


@DTYPES
def test_encoder_features_and_color_maps(oracle, dtype):
    model = oracle_model(oracle, dtype)
    low, high = images(oracle, dtype)
    with torch.no_grad():
        out = model.condition(low)
    raw, stacked = oracle["encoder_raw"], oracle["lr_enc"]
    check("fea_up0", out.down8, raw["fea_up0"], dtype)
    check("fea_up1 (post-activation)", out.down4, raw["fea_up1"], dtype)
    check("last_lr_fea", out.down4, raw["last_lr_fea"], dtype)
    check("fea_up2", out.down2, raw["fea_up2"], dtype)
    check("fea_up4", out.head, raw["fea_up4"], dtype)
    check("block_1", out.blocks[0], raw["block_1"], dtype)
    check("color_map", out.color_map, raw["color_map"], dtype)
    for name, condition in zip(("fea_up2", "fea_up1", "fea_up0"), out.conditions):
        check(f"lr_enc[{name}]", condition, stacked[name], dtype)
    check("mean_encoder", model.prior_mean(out.color_map), oracle["mean_encoder"], dtype)
    gt_colors = high / (high.sum(1, keepdim=True) + 1e-4)
    check("mean_gt", model.prior_mean(gt_colors), oracle["mean_gt"], dtype)


@DTYPES
def test_forward_latent_logdet_and_nll(oracle, dtype):
    model = oracle_model(oracle, dtype)
    low, high = images(oracle, dtype)
    with torch.no_grad():
        z, logdet = model.encode(high, low)
        check("z", z, oracle["z"], dtype)
        check("logdet", logdet, oracle["logdet"], dtype)
        check("nll_encoder_mean", model.nll(low, high), oracle["nll_encoder_mean"], dtype)
        check("nll_gt_mean", model.nll(low, high, prior="gt"), oracle["nll_gt_mean"], dtype)
        # The loss's random selector, forced each way through train_gt_ratio.
        check("loss_encoder_mean", oracle_model(oracle, dtype, 0.0).loss(low, high), oracle["loss_encoder_mean"], dtype)
        check("loss_gt_mean", oracle_model(oracle, dtype, 1.0).loss(low, high), oracle["loss_gt_mean"], dtype)


@DTYPES
def test_forward_with_dequantisation_noise(oracle, dtype):
    # Not part of LLFlow's training, but it checks the flow on inputs off the 8-bit grid.
    model = oracle_model(oracle, dtype)
    low, high = images(oracle, dtype)
    with torch.no_grad():
        conditions = model.condition(low).conditions
        z, logdet = model.flow(high + oracle["dequant_noise"].to(dtype), conditions)
    pixels = high.shape[2] * high.shape[3]
    check("z_noise", z, oracle["z_noise"], dtype)
    check("logdet_noise", logdet - math.log(32) * pixels, oracle["logdet_noise"], dtype)


@DTYPES
@pytest.mark.parametrize("case", ["mean", "zero", "temp", "forward_z"])
def test_reverse_outputs(oracle, dtype, case):
    model = oracle_model(oracle, dtype)
    low, _ = images(oracle, dtype)
    z = {
        "mean": oracle["mean_encoder"],
        "zero": torch.zeros_like(oracle["z"]),
        "temp": oracle["mean_encoder"] + oracle["temperature"] * oracle["eps"],
        "forward_z": oracle["z"],
    }[case]
    if case == "temp":
        check("z_temp", z, oracle["z_temp"], dtype)
    with torch.no_grad():
        x, logdet = model.decode(z.to(dtype), low)
    check(f"x_from_{case}", x, oracle[f"x_from_{case}"], dtype)
    if case != "forward_z":
        check(f"logdet_from_{case}", logdet, oracle[f"logdet_from_{case}"], dtype)


@DTYPES
def test_enhance_is_the_reference_enhancement(oracle, dtype):
    model = oracle_model(oracle, dtype)
    low, _ = images(oracle, dtype)
    check("sr_official", model.enhance(low, clamp=False), oracle["sr_official"], dtype)
    check("sr_official (clamped)", model.enhance(low), oracle["sr_official"].clamp(0, 1), dtype)


@DTYPES
def test_per_layer_outputs(oracle, dtype):
    """Each of the 21 reference layers, forward from gt and reverse from the encoder mean."""
    model = oracle_model(oracle, dtype)
    low, high = images(oracle, dtype)
    layers = [(member, level) for level, chain in enumerate(model.flow.levels) for member in chain]
    assert len(layers) == len(oracle["forward_layers"]) == 21
    with torch.no_grad():
        conditions = model.condition(low).conditions
        x, total = high, torch.zeros(2, dtype=dtype)
        for (index, name, output, logdet), (layer, level) in zip(oracle["forward_layers"], layers):
            x, ld = layer(x, conditions[level] if layer.conditional else None)
            total = total + ld
            check(f"forward layer {index} ({name}) output", x, output, dtype)
            check(f"forward layer {index} ({name}) logdet", total, logdet, dtype)
        y, total = oracle["mean_encoder"].to(dtype), torch.zeros(2, dtype=dtype)
        for index, name, output, logdet in oracle["reverse_layers_from_mean"]:
            layer, level = layers[index]
            y, ld = layer.inverse(y, conditions[level] if layer.conditional else None)
            total = total + ld
            check(f"reverse layer {index} ({name}) output", y, output, dtype)
            check(f"reverse layer {index} ({name}) logdet", total, logdet, dtype)
