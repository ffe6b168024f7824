"""Loading checkpoints of the reference LLFlow implementation into flowkit's module layout.

The reference's ``RRDB.*`` and ``flowUpsamplerNet.layers.{i}.*`` are flowkit's ``encoder.*`` and
``flow.flows.{level}.flow.flows.{position}.flows.{member}.*``, one rule per module kind
(:func:`official_name`); the reference's never-used parameters (:data:`DEAD_PREFIXES`) are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from flowkit.models.llflow.checkpoint import load_checkpoint
from flowkit.models.llflow.config import LLFlowConfig
from flowkit.nn import ActivationNorm

__all__ = ["DEAD_PREFIXES", "from_official", "infer_config", "official_name", "to_official"]

DEAD_PREFIXES: tuple[str, ...] = (
    "RRDB.downconv3.",
    "RRDB.HRconv.",
    "RRDB.conv_last.",
    "RRDB.awb_para.",
    "flowUpsamplerNet.f.",
)
"""Parameters present in every reference checkpoint but never used by its forward pass."""

_LEVELS = 3
_ENCODER_RENAMES = {
    "conv_first": "conv_first",
    "conv_second": "conv_second",
    "trunk_conv": "trunk_conv",
    "down_conv1": "downconv1",
    "down_conv2": "downconv2",
    "color_head": "fine_tune_color_map.0",
}
_TRUNK = re.compile(r"encoder\.trunk\.(\d+)\.rdb([123])\.(conv[1-5]\.(?:weight|bias))")
_ENCODER = re.compile(r"encoder\.(\w+)\.(weight|bias)")
# A step's members: 0 ActNorm, 1 the 1x1 convolution, 2 the injector, 3 the coupling.
_FLOW = re.compile(r"flow\.flows\.(\d+)\.flow\.flows\.(\d+)\.flows\.(?:0\.(bias|logs)|1\.(weight)|"
                   r"2\.subnet\.(.+)|3\.subnet\.(.+))")


def official_name(key: str, layers_per_level: int) -> str | None:
    """The reference checkpoint's name of flowkit parameter ``key``; ``None`` for flowkit-only buffers.

    Args:
        key: a key of an :class:`~flowkit.models.LLFlow` state dict.
        layers_per_level: ``1 + transition_steps + steps_per_level`` (the reference counts the squeeze).

    Example:
        >>> from flowkit.models.llflow.convert import official_name
        >>> official_name("flow.flows.1.flow.flows.3.flows.2.subnet.4.logs", 7)
        'flowUpsamplerNet.layers.10.affine.fFeatures.4.logs'
        >>> official_name("encoder.trunk.2.rdb3.conv5.bias", 7)
        'RRDB.RRDB_trunk.2.RDB3.conv5.bias'
    """
    if key.endswith(".initialized"):
        return None
    match = _TRUNK.fullmatch(key)
    if match:
        return f"RRDB.RRDB_trunk.{match[1]}.RDB{match[2]}.{match[3]}"
    match = _ENCODER.fullmatch(key)
    if match and match[1] in _ENCODER_RENAMES:
        return f"RRDB.{_ENCODER_RENAMES[match[1]]}.{match[2]}"
    match = _FLOW.fullmatch(key)
    if match:
        index = int(match[1]) * layers_per_level + int(match[2])
        if match[5] is not None:
            rest = f"affine.fFeatures.{match[5]}"
        elif match[6] is not None:
            rest = f"affine.fAffine.{match[6]}"
        else:
            rest = f"actnorm.{match[3]}" if match[3] else f"invconv.{match[4]}"
        return f"flowUpsamplerNet.layers.{index}.{rest}"
    raise ValueError(f"official_name: flowkit key {key!r} has no counterpart in the reference layout")


def _shape(state: Mapping[str, Tensor], key: str) -> torch.Size:
    if key not in state:
        raise ValueError(f"cannot infer the LLFlow config: the checkpoint has no {key!r}")
    return state[key].shape


def _layer_indices(state: Mapping[str, Tensor], suffix: str) -> list[int]:
    pattern = re.compile(r"flowUpsamplerNet\.layers\.(\d+)\." + re.escape(suffix))
    return sorted(int(m[1]) for key in state if (m := pattern.fullmatch(key)))


def infer_config(state: Mapping[str, Tensor]) -> LLFlowConfig:
    """The :class:`LLFlowConfig` of a reference state dict, from its tensor shapes.

    What shapes cannot tell comes from the released configs: stacked blocks ``1, 3, 5, ...``, and
    the ``LOL`` ``affine_eps`` and ``train_gt_ratio``. ``state`` has no ``module.`` prefix.

    Example:
        >>> from flowkit.models import LLFlow, LLFlowConfig
        >>> from flowkit.models.llflow.convert import infer_config, to_official
        >>> config = LLFlowConfig(encoder_channels=4, encoder_blocks=2, growth_channels=4,
        ...                       stack_blocks=(1,), steps_per_level=2, hidden_channels=4)
        >>> infer_config(to_official(LLFlow(config))) == config
        True
    """
    channels = _shape(state, "RRDB.conv_first.weight")[0]
    growth = _shape(state, "RRDB.RRDB_trunk.0.RDB1.conv1.weight")[0]
    trunk = {int(m[1]) for k in state if (m := re.match(r"RRDB\.RRDB_trunk\.(\d+)\.", k))}
    steps = _layer_indices(state, "actnorm.bias")
    couplings = _layer_indices(state, "affine.fFeatures.0.weight")
    if not couplings or len(steps) % _LEVELS or len(couplings) % _LEVELS:
        raise ValueError(
            f"cannot infer the LLFlow config: expected {_LEVELS} levels of flow steps, found "
            f"{len(steps)} steps and {len(couplings)} coupling steps in 'flowUpsamplerNet.layers.*'"
        )
    per_level = len(couplings) // _LEVELS
    transitions = len(steps) // _LEVELS - per_level
    hidden, cond = _shape(state, f"flowUpsamplerNet.layers.{couplings[0]}.affine.fFeatures.0.weight")[:2]
    if cond % channels:
        raise ValueError(
            f"cannot infer the LLFlow config: conditioning width {cond} is not a multiple of the "
            f"encoder width {channels}; pass config= explicitly"
        )
    stacked = tuple(range(1, 2 * (cond // channels - 1), 2))
    if stacked and stacked[-1] >= len(trunk):
        raise ValueError(
            f"cannot infer the LLFlow config: {len(stacked)} stacked blocks do not fit the pattern "
            f"1, 3, 5, ... in {len(trunk)} trunk blocks; pass config= explicitly"
        )
    return LLFlowConfig(
        encoder_channels=channels, encoder_blocks=len(trunk), growth_channels=growth,
        stack_blocks=stacked, steps_per_level=per_level, transition_steps=transitions,
        hidden_channels=hidden,
    )


def _load(checkpoint: str | Path | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(checkpoint, (str, Path)):
        # weights_only loading (a checkpoint file never runs code), errors that name the file.
        checkpoint = load_checkpoint(checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"from_official expects a path or a state dict, got {type(checkpoint).__name__}")
    state = {}
    for key, value in checkpoint.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise TypeError(f"from_official: entry {key!r} is not a (str, Tensor) pair ({type(value).__name__})")
        state[key.removeprefix("module.")] = value
    return state


def _layers_per_level(config: LLFlowConfig) -> int:
    return 1 + config.transition_steps + config.steps_per_level


def from_official(
    checkpoint: str | Path | Mapping[str, Tensor], config: LLFlowConfig | None = None, *,
    model_class: Callable[[LLFlowConfig], nn.Module],
) -> nn.Module:
    """Build an :class:`~flowkit.models.LLFlow` holding the weights of a reference checkpoint.

    Missing, unexpected (apart from :data:`DEAD_PREFIXES`) or mis-shaped keys raise a
    :class:`ValueError` naming them. ActNorms are marked initialised.

    Args:
        checkpoint: a path to a state dict, or the state dict; keys may carry a ``module.`` prefix.
        config: the model's config; ``None`` infers it (:func:`infer_config`).
        model_class: what builds the model from its config (:class:`~flowkit.models.LLFlow`).

    Example:
        >>> from flowkit.models import LLFlow, LLFlowConfig
        >>> from flowkit.models.llflow.convert import from_official, to_official
        >>> config = LLFlowConfig(encoder_channels=4, encoder_blocks=2, growth_channels=4,
        ...                       stack_blocks=(1,), steps_per_level=1, hidden_channels=4)
        >>> official = to_official(LLFlow(config))
        >>> official["RRDB.HRconv.weight"] = official["RRDB.trunk_conv.weight"]   # dead: ignored
        >>> model = from_official({"module." + k: v for k, v in official.items()}, model_class=LLFlow)
        >>> del official["RRDB.conv_first.bias"]
        >>> from_official(official, config, model_class=LLFlow)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: from_official: the checkpoint does not match ...: missing keys: ['RRDB.conv_first.bias']
    """
    state = _load(checkpoint)
    config = infer_config(state) if config is None else config
    model = model_class(config)
    per_level = _layers_per_level(config)
    target = model.state_dict()
    expected = {name: key for key in target if (name := official_name(key, per_level)) is not None}
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected and not k.startswith(DEAD_PREFIXES))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(target[expected[k]].shape)}"
        for k in expected if k in state and state[k].shape != target[expected[k]].shape
    )
    problems = [
        f"{what}: {items[:20]}" + (f" and {len(items) - 20} more" if len(items) > 20 else "")
        for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("mis-shaped keys", mismatched)) if items
    ]
    if problems:
        raise ValueError(f"from_official: the checkpoint does not match LLFlow({config}): " + "; ".join(problems))
    for name, key in expected.items():
        target[key] = state[name].to(target[key].dtype)
    model.load_state_dict(target, strict=True)
    for module in model.modules():
        if isinstance(module, ActivationNorm):
            module.initialized.fill_(True)
    return model


def to_official(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s parameters as a reference-layout state dict (without the reference's dead ones).

    Returns detached copies, on the model's device and in its dtype.

    Example:
        >>> from flowkit.models import LLFlow, LLFlowConfig
        >>> from flowkit.models.llflow.convert import to_official
        >>> config = LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4,
        ...                       stack_blocks=(), steps_per_level=1, hidden_channels=4)
        >>> official = to_official(LLFlow(config))
        >>> official["flowUpsamplerNet.layers.3.affine.fAffine.4.logs"].shape
        torch.Size([12, 1, 1])
    """
    per_level = _layers_per_level(model.config)
    return {name: value.detach().clone() for key, value in model.state_dict().items()
            if (name := official_name(key, per_level)) is not None}
