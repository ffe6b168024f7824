"""LLFlow's conditional flow: three Glow-style levels of flowkit layers, each with its own conditioning."""

from __future__ import annotations

from typing import Any

from torch import nn

from flowkit.core import Pick, Sequential, WithCond
from flowkit.layers import ActNorm, AffineCoupling, AffineInjector, InvConv1x1, Squeeze
from flowkit.memory import MEMORY_MODES, invertible
from flowkit.nn.subnets import conv_subnet

__all__ = ["ConditionalFlow", "FlowStep"]


class FlowStep(Sequential):
    r"""One step, a :class:`flowkit.Sequential`: ActNorm, a 1x1 convolution, then optionally a conditional affine pair.

    With ``cond_channels > 0`` the step continues with SRFlow/LLFlow's conditional pair, an
    :class:`~flowkit.layers.AffineInjector` and an :class:`~flowkit.layers.AffineCoupling`, both
    sigmoid-scaled with :func:`flowkit.nn.conv_subnet` sub-networks; with 0 it is a "transition"
    step. The 1x1 convolution is a full matrix (no LU), as in the reference.

    Args:
        channels: channels ``C`` of the flowing tensor.
        cond_channels: channels of the conditioning; 0 for a transition step.
        hidden_channels: hidden width of the two sub-networks.
        eps: the ``eps`` of the scale.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.flow import FlowStep
        >>> step = FlowStep(4, cond_channels=3, hidden_channels=8)
        >>> x, c = torch.randn(2, 4, 5, 5), torch.randn(2, 3, 5, 5)
        >>> y, logdet = step(x, c)
        >>> torch.allclose(step.inverse(y, c)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self, channels: int, cond_channels: int = 0, hidden_channels: int = 64, eps: float = 1e-4
    ) -> None:
        flows = [ActNorm(channels), InvConv1x1(channels, lu=False)]
        if cond_channels > 0:
            active = channels - channels // 2
            hidden = (hidden_channels, hidden_channels)
            flows.append(AffineInjector(
                channels, cond_channels, subnet=conv_subnet(cond_channels, 2 * channels, hidden), eps=eps
            ))
            flows.append(AffineCoupling(
                channels, cond_channels, subnet=conv_subnet(channels // 2 + cond_channels, 2 * active, hidden), eps=eps
            ))
        super().__init__(*flows)
        self.channels = channels
        self.cond_channels = cond_channels

    def extra_repr(self) -> str:
        return f"{self.channels}, cond_channels={self.cond_channels}"


# Module names of flowkit before FlowStep and ConditionalFlow were Sequentials: the shipped weights
# and the checkpoints of older versions use them (ConditionalFlow upgrades them when loading).
_LEGACY_MEMBERS = {"actnorm": 0, "invconv": 1, "injector": 2, "coupling": 3}


def _upgrade_legacy_keys(module: nn.Module, state: dict[str, Any], prefix: str, *_: Any) -> None:
    """Renames ``levels.{l}.flows.{p}.{name}.*`` to ``flows.{l}.flow.flows.{p}.flows.{i}.*`` in place."""
    for key in [k for k in state if k.startswith(prefix + "levels.")]:
        _, level, _, step, name, rest = key[len(prefix):].split(".", 5)
        state[f"{prefix}flows.{level}.flow.flows.{step}.flows.{_LEGACY_MEMBERS[name]}.{rest}"] = state.pop(key)


class ConditionalFlow(Sequential):
    """LLFlow's flow: 3 levels of ``Squeeze(2)``, transition steps and conditional coupling steps.

    Level ``l`` works at ``H / 2^(l+1)`` with ``C = 3 * 4^(l+1)`` channels and is the
    :class:`flowkit.Sequential` ``[Squeeze(2), transition_steps x FlowStep(C), steps_per_level x
    FlowStep(C, cond_channels)]`` (:attr:`levels`), numbered as the reference's layers. There is no
    factor-out: the latent is ``(B, 192, H/8, W/8)``. ``cond`` is a list of one tensor per level, at
    its resolution (each level is a ``WithCond(level, Pick(l))``). State dicts of older flowkit
    versions (as in the shipped weights) are upgraded when loaded.

    ``memory="invertible"`` makes each level a :class:`flowkit.memory.InvertibleSequential`, so
    activation memory no longer grows with ``steps_per_level``; it can be switched on a built model
    and changes neither the parameters nor the state dict.

    Args:
        cond_channels: channels of every level's conditioning.
        steps_per_level: conditional coupling steps per level.
        transition_steps: unconditional steps after each squeeze.
        hidden_channels: hidden width of the coupling sub-networks.
        eps: the ``eps`` of the affine scales.
        in_channels: channels of the data (3 for RGB).
        levels: number of levels.
        memory: ``"standard"`` or ``"invertible"`` backpropagation.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.flow import ConditionalFlow
        >>> flow = ConditionalFlow(cond_channels=2, steps_per_level=1, transition_steps=1, hidden_channels=8)
        >>> x = torch.rand(1, 3, 16, 16)
        >>> cond = [torch.randn(1, 2, 16 // 2 ** (l + 1), 16 // 2 ** (l + 1)) for l in range(3)]
        >>> z, logdet = flow(x, cond)
        >>> z.shape, torch.allclose(flow.inverse(z, cond)[0], x, atol=1e-4)
        (torch.Size([1, 192, 2, 2]), True)
    """

    def __init__(
        self,
        cond_channels: int,
        steps_per_level: int,
        transition_steps: int = 2,
        hidden_channels: int = 64,
        eps: float = 1e-4,
        in_channels: int = 3,
        levels: int = 3,
        memory: str = "standard",
    ) -> None:
        members = []
        channels = in_channels
        for index in range(levels):
            channels *= 4
            level = [Squeeze(2)]
            level += [FlowStep(channels) for _ in range(transition_steps)]
            level += [FlowStep(channels, cond_channels, hidden_channels, eps) for _ in range(steps_per_level)]
            members.append(WithCond(Sequential(*level), Pick(index)))
        super().__init__(*members)
        self.memory = memory
        self.cond_channels = cond_channels
        self.in_channels = in_channels
        self.latent_channels = channels
        self.register_load_state_dict_pre_hook(_upgrade_legacy_keys)

    @property
    def levels(self) -> list[Sequential]:
        """The levels' chains, coarsest last (without their :class:`~flowkit.WithCond` wrappers)."""
        return [member.flow for member in self.flows]

    @property
    def memory(self) -> str:
        """How the forward pass is backpropagated, ``"standard"`` or ``"invertible"``."""
        return self._memory

    @memory.setter
    def memory(self, mode: str) -> None:
        if mode not in MEMORY_MODES:
            raise ValueError(f"ConditionalFlow: memory must be one of {MEMORY_MODES}, got {mode!r}")
        self._memory = mode
        for member in self.flows:  # the same members (and state-dict keys) in either chain class
            member.flow = invertible(member.flow) if mode == "invertible" else Sequential(*member.flow)
