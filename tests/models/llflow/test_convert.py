"""Loading reference checkpoints: layout, config inference, and errors that name the bad key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from flowkit.models import LLFlow, LLFlowConfig
from flowkit.nn import ActivationNorm

DEAD = ("RRDB.downconv3.", "RRDB.HRconv.", "RRDB.conv_last.", "RRDB.awb_para.", "flowUpsamplerNet.f.")
# SPEC.md section 8: the dead 3x3 conv flowUpsamplerNet.f.0 has 384 outputs and these inputs.
DEAD_F_INPUTS = {"lol": 320, "lol_small": 128}


def official_layout(preset: str) -> dict[str, tuple[int, ...]]:
    """The reference checkpoint's keys and shapes, written out from SPEC.md section 8's patterns."""
    config = getattr(LLFlowConfig, preset)()
    nf, gc, cond, hidden = config.encoder_channels, config.growth_channels, config.cond_channels, config.hidden_channels
    layout: dict[str, tuple[int, ...]] = {}

    def conv(name: str, out: int, inp: int, k: int = 3) -> None:
        layout[f"{name}.weight"], layout[f"{name}.bias"] = (out, inp, k, k), (out,)

    conv("RRDB.conv_first", nf, 12)
    conv("RRDB.conv_second", nf, nf)
    for block in range(config.encoder_blocks):
        for rdb in (1, 2, 3):
            for m in range(1, 6):
                conv(f"RRDB.RRDB_trunk.{block}.RDB{rdb}.conv{m}", gc if m < 5 else nf, nf + (m - 1) * gc)
    for name in ("trunk_conv", "downconv1", "downconv2", "downconv3", "HRconv"):
        conv(f"RRDB.{name}", nf, nf)
    conv("RRDB.conv_last", 3, nf)
    layout["RRDB.awb_para.weight"], layout["RRDB.awb_para.bias"] = (3, nf), (3,)
    conv("RRDB.fine_tune_color_map.0", 3, nf, k=1)
    per_level = 1 + config.transition_steps + config.steps_per_level
    for level in range(3):
        c = 12 * 4**level
        for position in range(1, per_level):
            prefix = f"flowUpsamplerNet.layers.{level * per_level + position}"
            layout[f"{prefix}.actnorm.bias"] = layout[f"{prefix}.actnorm.logs"] = (1, c, 1, 1)
            layout[f"{prefix}.invconv.weight"] = (c, c)
            if position <= config.transition_steps:
                continue
            for net, inp, out in (("fAffine", c // 2 + cond, 2 * (c - c // 2)), ("fFeatures", cond, 2 * c)):
                p = f"{prefix}.affine.{net}"
                layout[f"{p}.0.weight"], layout[f"{p}.2.weight"] = (hidden, inp, 3, 3), (hidden, hidden, 1, 1)
                for i in (0, 2):
                    layout[f"{p}.{i}.actnorm.bias"] = layout[f"{p}.{i}.actnorm.logs"] = (1, hidden, 1, 1)
                layout[f"{p}.4.weight"], layout[f"{p}.4.bias"], layout[f"{p}.4.logs"] = (out, hidden, 3, 3), (out,), (out, 1, 1)
    conv("flowUpsamplerNet.f.0", 384, DEAD_F_INPUTS[preset])
    return layout


def read_key_file(path: Path) -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, shape, _dtype = line.split("\t")
            layout[key] = tuple(int(s) for s in re.findall(r"\d+", shape))
    return layout


def random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) for key, shape in layout.items()}


def fingerprint(t: torch.Tensor) -> tuple:
    return (tuple(t.shape), round(float(t.double().sum()), 6), float(t.flatten()[0]))


def check_loaded(model: LLFlow, state: dict[str, torch.Tensor], per_level: int) -> None:
    params = dict(model.named_parameters())
    # Hand-written spot checks of where reference tensors land.
    spots = {
        "RRDB.conv_first.weight": "encoder.conv_first.weight",
        "RRDB.RRDB_trunk.1.RDB3.conv5.bias": "encoder.trunk.1.rdb3.conv5.bias",
        "RRDB.downconv2.weight": "encoder.down_conv2.weight",
        "RRDB.fine_tune_color_map.0.weight": "encoder.color_head.weight",
        "flowUpsamplerNet.layers.1.actnorm.logs": "flow.flows.0.flow.flows.1.flows.0.logs",
        f"flowUpsamplerNet.layers.{per_level + 2}.invconv.weight": "flow.flows.1.flow.flows.2.flows.1.weight",
        f"flowUpsamplerNet.layers.{per_level + 3}.affine.fFeatures.4.logs": "flow.flows.1.flow.flows.3.flows.2.subnet.4.logs",
        f"flowUpsamplerNet.layers.{2 * per_level + 3}.affine.fAffine.0.actnorm.bias":
            "flow.flows.2.flow.flows.3.flows.3.subnet.0.actnorm.bias",
        f"flowUpsamplerNet.layers.{3 * per_level - 1}.affine.fAffine.2.weight":
            f"flow.flows.2.flow.flows.{per_level - 1}.flows.3.subnet.2.weight",
    }
    for official, ours in spots.items():
        assert torch.equal(params[ours], state[official]), f"{official} did not land in {ours}"
    # Every used reference tensor is in the model exactly once, and the model holds nothing else.
    used = sorted(fingerprint(t) for k, t in state.items() if not k.startswith(DEAD))
    assert sorted(fingerprint(p.detach()) for p in params.values()) == used
    assert all(bool(m.initialized) for m in model.modules() if isinstance(m, ActivationNorm))


@pytest.mark.parametrize(("preset", "file"), [("lol_small", "official_keys_small.txt"), ("lol", "official_keys_lol.txt")])
def test_key_files_load(shared_dir, preset, file):
    layout = read_key_file(shared_dir / "llflow" / file)
    assert layout == official_layout(preset), "SPEC's key patterns disagree with the key file"
    state = random_state(layout)
    model = LLFlow.from_official(state)
    assert model.config == getattr(LLFlowConfig, preset)()
    check_loaded(model, state, 1 + model.config.transition_steps + model.config.steps_per_level)


@pytest.mark.parametrize("preset", ["lol_small", "lol"])
def test_synthetic_official_state_dicts_load(preset):
    state = random_state(official_layout(preset), seed=1)
    model = LLFlow.from_official(state)
    assert model.config == getattr(LLFlowConfig, preset)()
    check_loaded(model, state, 1 + model.config.transition_steps + model.config.steps_per_level)


@pytest.fixture(scope="module")
def small_state() -> dict[str, torch.Tensor]:
    return random_state(official_layout("lol_small"), seed=2)


def test_export_returns_the_loaded_tensors(small_state):
    from flowkit.models.llflow.convert import to_official

    exported = to_official(LLFlow.from_official(small_state))
    used = {k: v for k, v in small_state.items() if not k.startswith(DEAD)}
    assert exported.keys() == used.keys()
    assert all(torch.equal(exported[k], used[k]) for k in used)


def test_module_prefix_dead_keys_and_files(small_state, tmp_path):
    prefixed = {f"module.{k}": v for k, v in small_state.items() if not k.startswith(DEAD)}
    path = tmp_path / "llflow_small.pth"
    torch.save(prefixed, path)
    for source in (path, str(path), prefixed):
        model = LLFlow.from_official(source, LLFlowConfig.lol_small())
        assert torch.equal(model.encoder.conv_first.weight, small_state["RRDB.conv_first.weight"])


def test_explicit_config_overrides_what_shapes_cannot_tell(small_state):
    config = dataclasses.replace(LLFlowConfig.lol_small(), train_gt_ratio=0.5)
    assert LLFlow.from_official(small_state, config).config.train_gt_ratio == 0.5


def test_missing_key_is_named(small_state):
    state = dict(small_state)
    del state["flowUpsamplerNet.layers.10.affine.fFeatures.2.actnorm.logs"]
    with pytest.raises(ValueError, match=r"missing keys: \['flowUpsamplerNet.layers.10.affine.fFeatures.2.actnorm.logs'\]"):
        LLFlow.from_official(state, LLFlowConfig.lol_small())


def test_unexpected_key_is_named(small_state):
    state = {**small_state, "RRDB.extra_head.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"unexpected keys: \['RRDB.extra_head.weight'\]"):
        LLFlow.from_official(state)


def test_mis_shaped_key_is_named(small_state):
    state = {**small_state, "flowUpsamplerNet.layers.3.invconv.weight": torch.zeros(12, 13)}
    with pytest.raises(ValueError, match=r"mis-shaped keys: \['flowUpsamplerNet.layers.3.invconv.weight: checkpoint \(12, 13\), model \(12, 12\)'\]"):
        LLFlow.from_official(state)


def test_wrong_config_is_reported_by_key(small_state):
    wrong = dataclasses.replace(LLFlowConfig.lol_small(), steps_per_level=3)
    with pytest.raises(ValueError, match="unexpected keys: .*flowUpsamplerNet.layers"):
        LLFlow.from_official(small_state, wrong)


def test_uninferable_or_malformed_checkpoints(small_state):
    with pytest.raises(ValueError, match="has no 'RRDB.conv_first.weight'"):
        LLFlow.from_official({k: v for k, v in small_state.items() if k != "RRDB.conv_first.weight"})
    with pytest.raises(TypeError, match="is not a \\(str, Tensor\\) pair"):
        LLFlow.from_official({**small_state, "RRDB.note": "trained on LOL"})
    with pytest.raises(TypeError, match="a path or a state dict"):
        LLFlow.from_official([1, 2, 3])
