"""LLFlowConfig: presets match the reference configs (SPEC.md section 6) and bad values fail early."""

from __future__ import annotations

import dataclasses

import pytest

from flowkit.models import LLFlow, LLFlowConfig

# SPEC.md section 7, "used" parameters: what the reference trains (its dead modules excluded).
USED_PARAMETERS = {"lol": 37_677_395, "lol_small": 4_967_635, "lol_v2": 37_677_395}
USED_ENCODER_PARAMETERS = {"lol": 17_421_059, "lol_small": 1_701_379, "lol_v2": 17_421_059}


def test_presets_match_the_reference_configs():
    lol, small, v2 = LLFlowConfig.lol(), LLFlowConfig.lol_small(), LLFlowConfig.lol_v2()
    assert (lol.encoder_channels, lol.encoder_blocks, lol.growth_channels) == (64, 24, 32)
    assert lol.stack_blocks == (1, 3, 5, 7) and lol.cond_channels == 320
    assert (lol.steps_per_level, lol.transition_steps, lol.hidden_channels) == (12, 2, 64)
    assert (lol.affine_eps, lol.train_gt_ratio) == (1e-4, 0.2)
    assert (small.encoder_channels, small.encoder_blocks, small.growth_channels) == (32, 4, 32)
    assert small.stack_blocks == (1,) and small.cond_channels == 64
    assert (small.steps_per_level, small.transition_steps, small.hidden_channels) == (4, 2, 64)
    assert (small.affine_eps, small.train_gt_ratio) == (1e-4, 0.2)
    assert dataclasses.replace(v2, train_gt_ratio=0.2) == lol and v2.train_gt_ratio == 0.5


@pytest.mark.parametrize("preset", sorted(USED_PARAMETERS))
def test_parameter_counts_match_the_reference(preset):
    model = LLFlow(getattr(LLFlowConfig, preset)())
    assert sum(p.numel() for p in model.parameters()) == USED_PARAMETERS[preset]
    assert sum(p.numel() for p in model.encoder.parameters()) == USED_ENCODER_PARAMETERS[preset]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"encoder_channels": 0}, "encoder_channels must be a positive int"),
        ({"encoder_blocks": 2.5}, "encoder_blocks must be a positive int"),
        ({"growth_channels": True}, "growth_channels must be a positive int"),
        ({"steps_per_level": 0}, "steps_per_level must be a positive int"),
        ({"hidden_channels": -1}, "hidden_channels must be a positive int"),
        ({"transition_steps": -1}, "transition_steps must be an int >= 0"),
        ({"stack_blocks": (3, 1)}, "stack_blocks must be sorted, distinct"),
        ({"stack_blocks": (1, 1)}, "stack_blocks must be sorted, distinct"),
        ({"stack_blocks": (24,)}, r"indices in \[0, 24\)"),
        ({"stack_blocks": "1"}, "stack_blocks must be a tuple of ints"),
        ({"affine_eps": 0.0}, "affine_eps must be a number > 0"),
        ({"train_gt_ratio": 1.5}, r"train_gt_ratio must be a probability in \[0, 1\]"),
    ],
)
def test_invalid_configs_fail_at_construction(changes, message):
    with pytest.raises(ValueError, match=message):
        LLFlowConfig(**changes)


def test_stack_blocks_given_as_a_list_become_a_tuple_and_may_be_empty():
    assert LLFlowConfig(stack_blocks=[0, 2]).stack_blocks == (0, 2)
    config = LLFlowConfig(encoder_channels=16, stack_blocks=())
    assert config.cond_channels == 16


def test_llflow_rejects_a_non_config():
    with pytest.raises(TypeError, match="LLFlowConfig"):
        LLFlow({"encoder_channels": 8})
