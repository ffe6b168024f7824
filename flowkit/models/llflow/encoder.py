"""LLFlow's conditional encoder: per-level conditioning features and the colour map of the prior."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit.models.llflow.rrdb import RRDB, leaky_relu_when_no_grad_in_place

__all__ = ["ConditionEncoder", "EncoderOutput", "color_map", "encoder_input", "noise_map"]

# Added to the low image before the log, and to the channel sum of colour maps (reference values).
LOG_OFFSET = 1e-3
COLOR_EPS = 1e-4


def encoder_input(low: Tensor, histeq: Tensor) -> Tensor:
    """The 6-channel network input ``cat[log(low + 1e-3), histeq]`` of ``(B, 3, H, W)`` images in ``[0, 1]``.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.encoder import encoder_input
        >>> encoder_input(torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)).shape
        torch.Size([1, 6, 2, 2])
    """
    return torch.cat([torch.log(low + LOG_OFFSET), histeq], dim=1)


def color_map(image: Tensor) -> Tensor:
    """``image / (sum over channels + 1e-4)``: the colour map (values about 1/3 for grey pixels).

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.encoder import color_map
        >>> color_map(torch.tensor([1.0, 2.0, 5.0]).view(1, 3, 1, 1)).flatten().round(decimals=4)
        tensor([0.1250, 0.2500, 0.6250])
    """
    return image / (image.sum(dim=1, keepdim=True) + COLOR_EPS)


def _central_difference(x: Tensor, dim: int) -> Tensor:
    # g[i] = (x[i+1] - x[i-1]) / 2 with zeros outside the image.
    pad = [0, 0, 0, 0]
    pad[(3 - dim) * 2: (3 - dim) * 2 + 2] = [1, 1]
    padded = F.pad(x, pad)
    n = x.shape[dim]
    return 0.5 * (padded.narrow(dim, 2, n) - padded.narrow(dim, 0, n))


def noise_map(colors: Tensor) -> Tensor:
    """``max(|d/dH|, |d/dW|)`` of a colour map, per channel, with zero-padded central differences.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.encoder import noise_map
        >>> noise_map(torch.tensor([[[[0.0, 2.0, 0.0]]]])).tolist()
        [[[[1.0, 0.0, 1.0]]]]
    """
    return torch.maximum(_central_difference(colors, 2).abs(), _central_difference(colors, 3).abs())


def _half(x: Tensor) -> Tensor:
    # The reference's bilinear x0.5 resize (equal to a 2x2 average on even sizes).
    return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False,
                         recompute_scale_factor=True)


class EncoderOutput(NamedTuple):
    """What :class:`ConditionEncoder` computes (the reference's names in brackets).

    Feature maps have the encoder's ``channels``; ``H`` and ``W`` are the input's.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.encoder import ConditionEncoder, encoder_input
        >>> out = ConditionEncoder(channels=4, blocks=1, growth=2, stack_blocks=())(
        ...     encoder_input(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)))
        >>> out.down2.shape, out.down4.shape, out.down8.shape, len(out.conditions)
        (torch.Size([1, 4, 4, 4]), torch.Size([1, 4, 2, 2]), torch.Size([1, 4, 1, 1]), 3)
    """

    conditions: tuple[Tensor, ...]
    """One per flow level (``H/2``, ``H/4``, ``H/8``), its features with the stacked block outputs."""
    color_map: Tensor
    """The predicted colour map ``(B, 3, H, W)``, in ``(0, 1)`` (``color_map``)."""
    head: Tensor
    """Features after the stem, ``H/2`` (``fea_up4``)."""
    down2: Tensor
    """``H/2`` features after the trunk (``fea_up2``)."""
    down4: Tensor
    """``H/4`` features, after their LeakyReLU (``fea_up1`` and ``last_lr_fea``)."""
    down8: Tensor
    """``H/8`` features (``fea_up0``)."""
    blocks: tuple[Tensor, ...]
    """The outputs of the trunk blocks listed in ``stack_blocks``, at ``H/2`` (``block_{i}``)."""


class ConditionEncoder(nn.Module):
    r"""LLFlow's RRDB conditional encoder (the reference's ``ConEncoder1``) and colour-map head.

    Input: the 6-channel ``x = cat[log(low + 1e-3), histeq]`` (:func:`encoder_input`), ``H`` and
    ``W`` multiples of 8. Computed, in order:

    * ``raw = exp(x[:, :3])``, its :func:`color_map` ``c`` and :func:`noise_map` ``n``;
    * stem: ``conv_second(lrelu(conv_first(cat[x, c, n])))``, then a 2x2 max-pool (``head``);
    * trunk: ``blocks`` RRDBs; ``down2 = head + trunk_conv(trunk(head))``;
    * ``down4 = lrelu(down_conv1(half(down2)))``, ``down8 = down_conv2(half(down4))``, where
      ``half`` is a bilinear x0.5 resize;
    * colour map: ``sigmoid(color_head(nearest_x2(down2)))``.

    Each level's conditioning is its feature with the ``stack_blocks`` outputs, nearest-resized to it.

    Args:
        channels: feature width ``nf``.
        blocks: number of RRDBs in the trunk.
        growth: growth channels of the dense blocks.
        stack_blocks: 0-based indices of the trunk blocks stacked into the conditioning.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.encoder import ConditionEncoder, encoder_input
        >>> encoder = ConditionEncoder(channels=8, blocks=2, growth=4, stack_blocks=(1,))
        >>> low = torch.rand(1, 3, 16, 24)
        >>> out = encoder(encoder_input(low, low))
        >>> [tuple(c.shape) for c in out.conditions]
        [(1, 16, 8, 12), (1, 16, 4, 6), (1, 16, 2, 3)]
    """

    def __init__(
        self,
        channels: int = 64,
        blocks: int = 24,
        growth: int = 32,
        stack_blocks: tuple[int, ...] = (1, 3, 5, 7),
    ) -> None:
        super().__init__()
        if any(not 0 <= b < blocks for b in stack_blocks):
            raise ValueError(f"ConditionEncoder: stack_blocks must index the {blocks} trunk blocks, "
                             f"got {tuple(stack_blocks)}")
        self.channels = channels
        self.stack_blocks = tuple(stack_blocks)
        self.conv_first = nn.Conv2d(12, channels, 3, padding=1)
        self.conv_second = nn.Conv2d(channels, channels, 3, padding=1)
        self.trunk = nn.ModuleList(RRDB(channels, growth) for _ in range(blocks))
        self.trunk_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.down_conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.down_conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.color_head = nn.Conv2d(channels, 3, 1)
        self.lrelu = nn.LeakyReLU(0.2)

    @property
    def cond_channels(self) -> int:
        """Channels of each level's conditioning."""
        return self.channels * (1 + len(self.stack_blocks))

    def forward(self, x: Tensor) -> EncoderOutput:
        if x.dim() != 4 or x.shape[1] != 6:
            raise ValueError(f"ConditionEncoder expects a (B, 6, H, W) input, got shape {tuple(x.shape)}")
        if x.shape[2] % 8 or x.shape[3] % 8:
            raise ValueError(
                f"ConditionEncoder expects H and W divisible by 8, got H={x.shape[2]}, W={x.shape[3]}"
            )
        colors = color_map(torch.exp(x[:, :3]))
        # One expression, so that no full-resolution temporary outlives the stem: they are the
        # largest tensors of the whole network at inference (the reference keeps one alive).
        head = F.max_pool2d(self.conv_second(leaky_relu_when_no_grad_in_place(
            self.conv_first(torch.cat([x, colors, noise_map(colors)], dim=1)), self.lrelu.negative_slope)), 2)
        del colors
        f, stacked = head, []
        for index, block in enumerate(self.trunk):
            f = block(f)
            if index in self.stack_blocks:
                stacked.append(f)
        down2 = head + self.trunk_conv(f)
        down4 = self.lrelu(self.down_conv1(_half(down2)))
        down8 = self.down_conv2(_half(down4))
        # color_head is 1x1 and sigmoid pointwise, so both commute with the nearest x2 upsampling:
        # the same values as upsampling first, without a full-resolution copy of down2.
        predicted = F.interpolate(torch.sigmoid(self.color_head(down2)), scale_factor=2, mode="nearest")
        conditions = [down2, down4, down8]
        if stacked:
            stack = torch.cat(stacked, dim=1)
            # nearest resize: at H/4 this keeps every other pixel, at H/8 every fourth
            conditions = [
                torch.cat([f, F.interpolate(stack, size=f.shape[2:], mode="nearest")], dim=1)
                for f in conditions
            ]
        return EncoderOutput(tuple(conditions), predicted, head, down2, down4, down8, tuple(stacked))
