"""Convolutional and dense sub-networks for coupling layers, Glow/SRFlow style.

The last layer of each is zero-initialised, so a fresh coupling starts from a constant
shift and scale instead of a random transformation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from flowkit.nn.normalization import ActivationNorm

__all__ = ["MLP", "Conv2dActNorm", "ZeroConv2d", "ZeroLinear", "conv_subnet"]


def _widths(name: str, hidden: Sequence[int]) -> tuple[int, ...]:
    """``hidden`` as a tuple of positive widths, or a :class:`ValueError` that shows the form expected."""
    if isinstance(hidden, Sequence) and all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in hidden):
        return tuple(hidden)
    raise ValueError(f"{name}: the hidden widths must be a sequence of positive ints, e.g. (64, 64), got {hidden!r}")


def _check_same_kernel(name: str, kernel_size: int) -> None:
    # An even kernel cannot be padded symmetrically to keep the size: the output would grow by one
    # row and column, and the flow layer using it would fail later with a puzzling shape error.
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{name}: kernel_size must be an odd positive int (a 'same' convolution), "
                         f"got {kernel_size!r}")


class Conv2dActNorm(nn.Conv2d):
    """A bias-free "same" convolution followed by an :class:`ActivationNorm` (Glow's ``Conv2d``).

    Weights start from N(0, 0.05^2). The normalisation's bias replaces the convolution's, and it
    is initialised from the first batch seen in training mode. The hidden layers of
    :func:`conv_subnet`.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output (and of the ActNorm).
        kernel_size: the square kernel's size, odd (default 3), padded by ``kernel_size // 2`` so
            that the spatial size is kept; an even size raises a :class:`ValueError`.

    Example:
        >>> import torch
        >>> from flowkit.nn import Conv2dActNorm
        >>> Conv2dActNorm(3, 8, kernel_size=3)(torch.randn(2, 3, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        _check_same_kernel("Conv2dActNorm", kernel_size)
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.normal_(self.weight, 0.0, 0.05)
        self.actnorm = ActivationNorm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.actnorm(super().forward(x))


class ZeroConv2d(nn.Conv2d):
    r"""A zero-initialised "same" convolution whose output is scaled by ``exp(logscale_factor * logs)``.

    Glow's ``Conv2dZeros``: with :math:`\lambda` = ``logscale_factor``, output channel :math:`k` is

    .. math:: \left( (W * x)_k + b_k \right) e^{\lambda\, \text{logs}_k},

    and weight :math:`W`, bias :math:`b` and the per-channel ``logs`` (shape ``(C_out, 1, 1)``)
    all start at zero, so the sub-network it ends outputs zeros until trained: a coupling built on
    it starts as the identity (or a constant scale), a prior predicted by it as the standard
    normal. The factor :math:`\lambda` sets how far one step on ``logs`` moves the output's
    log-scale. Use it as the last layer of any image sub-network that feeds a flow's
    parameters; :class:`ZeroLinear` is the version for vectors.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: the square kernel's size, odd (default 3), padded by ``kernel_size // 2`` so
            that the spatial size is kept; an even size raises a :class:`ValueError`.
        logscale_factor: :math:`\lambda`, the multiplier of ``logs`` in the exponent (default 3).

    Example:
        >>> import torch
        >>> from flowkit.nn import ZeroConv2d
        >>> ZeroConv2d(3, 4)(torch.randn(1, 3, 5, 5)).abs().max().item()
        0.0
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, *, logscale_factor: float = 3.0
    ) -> None:
        _check_same_kernel("ZeroConv2d", kernel_size)
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.logscale_factor = logscale_factor
        self.logs = nn.Parameter(torch.zeros(out_channels, 1, 1))
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * torch.exp(self.logs * self.logscale_factor)


class ZeroLinear(nn.Linear):
    r"""A zero-initialised linear layer: the dense counterpart of :class:`ZeroConv2d` (no ``logs``).

    :math:`y = W x + b` with :math:`W` and :math:`b` zero at construction, so a flow layer or
    prior whose sub-network ends in it starts from zero parameters (for most transforms, the
    identity). The last layer of :class:`MLP`; use it to end any sub-network on vectors,
    e.g. the ``cond_net`` of a :class:`~flowkit.distributions.GaussianMixture`.

    Args:
        in_features: size of the input's last dimension.
        out_features: size of the output's last dimension.

    Example:
        >>> import torch
        >>> from flowkit.nn import ZeroLinear
        >>> ZeroLinear(3, 2)(torch.randn(4, 3)).abs().max().item()
        0.0
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


def conv_subnet(
    in_channels: int,
    out_channels: int,
    hidden_channels: Sequence[int] = (64, 64),
    *,
    kernel_size: int = 3,
    hidden_kernel_size: int = 1,
) -> nn.Sequential:
    """Glow/SRFlow's coupling network: conv-ActNorm-ReLU layers, then a zero-initialised conv.

    The first hidden layer has a ``kernel_size`` kernel, the others ``hidden_kernel_size``; the last
    layer is a :class:`ZeroConv2d` of ``kernel_size``, so the network outputs zeros until trained.
    With the defaults this is exactly the sub-network of SRFlow and LLFlow's couplings (3x3, 1x1,
    zero 3x3), with their module indices (``0``, ``2``, ``4``). Every convolution keeps the spatial
    size. The image counterpart of :class:`MLP`: pass it, or a ``functools.partial`` of it with
    other widths, as the ``subnet`` of a coupling.

    Args:
        in_channels: channels of the input (a coupling's passive channels plus ``cond``'s).
        out_channels: channels of the output (the coupling's parameters).
        hidden_channels: widths of the hidden layers (default ``(64, 64)``).
        kernel_size: odd size of the first and last convolutions (default 3).
        hidden_kernel_size: odd size of the other hidden convolutions (default 1).

    Example:
        >>> import torch
        >>> from flowkit.nn import conv_subnet
        >>> net = conv_subnet(6, 12, hidden_channels=(16, 16))
        >>> net(torch.randn(2, 6, 8, 8)).shape
        torch.Size([2, 12, 8, 8])
    """
    layers: list[nn.Module] = []
    for index, width in enumerate(_widths("conv_subnet", hidden_channels)):
        layers += [Conv2dActNorm(in_channels, width, kernel_size if index == 0 else hidden_kernel_size), nn.ReLU()]
        in_channels = width
    layers.append(ZeroConv2d(in_channels, out_channels, kernel_size))
    return nn.Sequential(*layers)


class MLP(nn.Sequential):
    """A multi-layer perceptron: Linear-activation layers of ``hidden_features`` widths, then a Linear.

    The last layer is a :class:`ZeroLinear` (``zero_last=True``), so a flow layer whose parameters
    it computes starts from zero parameters (the identity for most transforms). The vector
    counterpart of :func:`conv_subnet`: pass the class itself as the ``subnet`` of a coupling (it
    is a constructor ``(in_features, out_features) -> nn.Module``), or a ``functools.partial`` of
    it with other widths.

    Args:
        in_features: size of the input (a coupling's passive features plus ``cond``'s).
        out_features: size of the output (the coupling's parameters).
        hidden_features: widths of the hidden layers, each positive (default ``(64, 64)``; ``()``
            for a single linear layer).
        activation: constructor of the nonlinearity after each hidden layer (default
            :class:`torch.nn.ReLU`).
        zero_last: zero-initialise the last layer (default ``True``); ``False`` keeps PyTorch's
            default initialisation there too.

    Example:
        >>> import functools, torch
        >>> from flowkit.layers import AffineCoupling
        >>> from flowkit.nn import MLP
        >>> MLP(3, 4, (16,))(torch.randn(5, 3)).shape
        torch.Size([5, 4])
        >>> layer = AffineCoupling(4, subnet=functools.partial(MLP, hidden_features=(32, 32)))
        >>> layer.subnet[0]
        Linear(in_features=2, out_features=32, bias=True)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: Sequence[int] = (64, 64),
        *,
        activation: Callable[[], nn.Module] = nn.ReLU,
        zero_last: bool = True,
    ) -> None:
        layers: list[nn.Module] = []
        for width in _widths("MLP", hidden_features):
            layers += [nn.Linear(in_features, width), activation()]
            in_features = width
        layers.append((ZeroLinear if zero_last else nn.Linear)(in_features, out_features))
        super().__init__(*layers)
