"""``LLFlowConfig``: every size of an LLFlow model, with the reference's presets."""

from __future__ import annotations

from dataclasses import dataclass, field

from flowkit.memory import MEMORY_MODES

__all__ = ["LLFlowConfig"]


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"LLFlowConfig.{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class LLFlowConfig:
    """The sizes of an LLFlow model: its conditional encoder, its flow and its training prior.

    The flow always has 3 levels (``H/2``, ``H/4``, ``H/8``, the encoder's scales); the latent is
    ``(B, 192, H/8, W/8)``.

    Args:
        encoder_channels: channel width ``nf`` of the RRDB encoder.
        encoder_blocks: number of RRDB blocks ``nb`` in the encoder's trunk.
        growth_channels: growth channels ``gc`` of each dense block.
        stack_blocks: sorted, distinct 0-based indices of the trunk blocks whose outputs join every
            level's conditioning (the reference's ``stackRRDB.blocks``), possibly none.
        steps_per_level: conditional coupling steps ``K`` per level.
        transition_steps: unconditional steps after each level's squeeze (``additionalFlowNoAffine``).
        hidden_channels: hidden width of the coupling and injector sub-networks.
        affine_eps: the ``eps`` in ``scale = sigmoid(raw + 2) + eps`` (the reference's ``1e-4``): the
            scale's floor, so that no coupling or injector inverse amplifies by more than ``1 / eps``.
        train_gt_ratio: probability, drawn once per batch, that the training prior uses the ground
            truth's colour map instead of the encoder's.
        memory: ``"standard"`` or ``"invertible"`` backpropagation (:mod:`flowkit.memory`).

    Example:
        >>> from flowkit.models import LLFlowConfig
        >>> config = LLFlowConfig.lol_small()
        >>> config.cond_channels, config.steps_per_level
        (64, 4)
        >>> LLFlowConfig(stack_blocks=(30,))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: LLFlowConfig.stack_blocks must be sorted, distinct indices in [0, 24) ..., got (30,)
    """

    encoder_channels: int = 64
    encoder_blocks: int = 24
    growth_channels: int = 32
    stack_blocks: tuple[int, ...] = field(default=(1, 3, 5, 7))
    steps_per_level: int = 12
    transition_steps: int = 2
    hidden_channels: int = 64
    affine_eps: float = 1e-4
    train_gt_ratio: float = 0.2
    memory: str = "standard"

    def __post_init__(self) -> None:
        for name in ("encoder_channels", "encoder_blocks", "growth_channels", "steps_per_level",
                     "hidden_channels"):
            _positive(name, getattr(self, name))
        if isinstance(self.transition_steps, bool) or not isinstance(self.transition_steps, int) \
                or self.transition_steps < 0:
            raise ValueError(
                f"LLFlowConfig.transition_steps must be an int >= 0, got {self.transition_steps!r}"
            )
        blocks = self.stack_blocks
        if not isinstance(blocks, (tuple, list)) or not all(
            isinstance(b, int) and not isinstance(b, bool) for b in blocks
        ):
            raise ValueError(f"LLFlowConfig.stack_blocks must be a tuple of ints, got {blocks!r}")
        blocks = tuple(blocks)
        if list(blocks) != sorted(set(blocks)) or any(not 0 <= b < self.encoder_blocks for b in blocks):
            raise ValueError(
                f"LLFlowConfig.stack_blocks must be sorted, distinct indices in [0, {self.encoder_blocks}) "
                f"(encoder_blocks={self.encoder_blocks}), got {blocks!r}"
            )
        object.__setattr__(self, "stack_blocks", blocks)
        if not isinstance(self.affine_eps, (int, float)) or not self.affine_eps > 0:
            raise ValueError(f"LLFlowConfig.affine_eps must be a number > 0, got {self.affine_eps!r}")
        if not isinstance(self.train_gt_ratio, (int, float)) or not 0.0 <= self.train_gt_ratio <= 1.0:
            raise ValueError(
                f"LLFlowConfig.train_gt_ratio must be a probability in [0, 1], got {self.train_gt_ratio!r}"
            )
        if self.memory not in MEMORY_MODES:
            raise ValueError(f"LLFlowConfig.memory must be one of {MEMORY_MODES}, got {self.memory!r}")

    @property
    def cond_channels(self) -> int:
        """Channels of each level's conditioning (the level feature plus the stacked block outputs)."""
        return self.encoder_channels * (1 + len(self.stack_blocks))

    @classmethod
    def lol(cls) -> LLFlowConfig:
        """The reference's ``LOL-pc`` configuration (nf 64, 24 RRDBs, K = 12).

        Example:
            >>> from flowkit.models import LLFlowConfig
            >>> LLFlowConfig.lol().cond_channels
            320
        """
        return cls()

    @classmethod
    def lol_small(cls) -> LLFlowConfig:
        """The reference's ``LOL_smallNet`` configuration (nf 32, 4 RRDBs, K = 4).

        Example:
            >>> from flowkit.models import LLFlowConfig
            >>> LLFlowConfig.lol_small().stack_blocks
            (1,)
        """
        return cls(encoder_channels=32, encoder_blocks=4, growth_channels=32, stack_blocks=(1,),
                   steps_per_level=4)

    @classmethod
    def lol_v2(cls) -> LLFlowConfig:
        """The reference's ``LOLv2-pc`` configuration: ``lol()`` with ``train_gt_ratio`` 0.5.

        Example:
            >>> from flowkit.models import LLFlowConfig
            >>> LLFlowConfig.lol_v2().train_gt_ratio
            0.5
        """
        return cls(train_gt_ratio=0.5)
