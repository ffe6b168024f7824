"""Sub-networks for coupling layers, zero at the output so that a fresh coupling starts at constant parameters."""

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

    Weights start from N(0, 0.05^2); the normalisation initialises from the first training batch.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output (and of the ActNorm).
        kernel_size: the square kernel's size, odd (default 3), so that the spatial size is kept.

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

    with :math:`W`, :math:`b` and ``logs`` starting at zero. Use it as the last layer of an image
    sub-network that feeds a flow's parameters (:class:`ZeroLinear` for vectors).

    Args:
        in_channels, out_channels, kernel_size: as for :class:`Conv2dActNorm`.
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

    Use it to end a sub-network on vectors, e.g. the ``cond_net`` of a
    :class:`~flowkit.distributions.GaussianMixture`.

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

    With the defaults it is the sub-network of SRFlow and LLFlow's couplings (3x3, 1x1, zero 3x3,
    module indices ``0``, ``2``, ``4``). Pass it, or a ``functools.partial`` with other widths, as
    a coupling's ``subnet``.

    Args:
        in_channels: channels of the input (a coupling's passive channels plus ``cond``'s).
        out_channels: channels of the output (the coupling's parameters).
        hidden_channels: widths of the hidden layers.
        kernel_size: odd size of the first and last convolutions.
        hidden_kernel_size: odd size of the other hidden convolutions.

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

    The vector counterpart of :func:`conv_subnet`: pass the class (or a ``functools.partial`` of
    it) as a coupling's ``subnet``.

    Args:
        in_features: size of the input (a coupling's passive features plus ``cond``'s).
        out_features: size of the output (the coupling's parameters).
        hidden_features: widths of the hidden layers (``()`` for a single linear layer).
        activation: constructor of the nonlinearity after each hidden layer.
        zero_last: make the last layer a :class:`ZeroLinear` (default), else PyTorch's initialisation.

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
