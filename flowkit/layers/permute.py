"""Fixed channel permutations: reversal, swapping the halves, or a random shuffle."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from flowkit._validation import check_channels, check_no_cond
from flowkit.core import Flow, zero_logdet

__all__ = ["Permute"]


class Permute(Flow):
    r"""Reorders channels by a fixed permutation (volume preserving, logdet 0).

    :math:`y_{:, k} = x_{:, \pi(k)}`, with :math:`\pi` the buffer ``permutation``. Use it between
    couplings when a fixed reordering is enough; for a learned mixing use
    :class:`~flowkit.layers.InvConv1x1`.

    Args:
        channels: number of channels ``C`` (dimension 1; any trailing dimensions).
        mode: ``"reverse"`` (:math:`\pi(k) = C - 1 - k`), ``"swap"`` (the halves swapped,
            :math:`\pi(k) = (k + \lfloor C/2 \rfloor) \bmod C`) or ``"shuffle"`` (random, drawn once).
        generator: the random generator for ``"shuffle"``.

    Example:
        >>> import torch
        >>> from flowkit.layers import Permute
        >>> y, _ = Permute(3)(torch.tensor([[1., 2., 3.]]))
        >>> y.tolist()
        [[3.0, 2.0, 1.0]]
        >>> Permute(5, mode="swap")(torch.arange(5.).view(1, 5))[0].tolist()
        [[2.0, 3.0, 4.0, 0.0, 1.0]]
    """

    permutation: Tensor
    inverse_permutation: Tensor

    conditional = False

    def __init__(
        self,
        channels: int,
        *,
        mode: Literal["reverse", "swap", "shuffle"] = "reverse",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"Permute: channels must be a positive int, got {channels!r}")
        if mode == "reverse":
            perm = torch.arange(channels - 1, -1, -1)
        elif mode == "swap":
            perm = torch.roll(torch.arange(channels), -(channels // 2))
        elif mode == "shuffle":
            perm = torch.randperm(channels, generator=generator)
        else:
            raise ValueError(f"Permute mode must be 'reverse', 'swap' or 'shuffle', got {mode!r}")
        self.channels = channels
        self.mode = mode
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm))

    def extra_repr(self) -> str:
        return f"{self.channels}, mode={self.mode!r}"

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_cond("Permute", cond)
        check_channels("Permute", x, self.channels)
        return x[:, self.permutation], zero_logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_cond("Permute", cond)
        check_channels("Permute", y, self.channels)
        return y[:, self.inverse_permutation], zero_logdet(y)
