"""Building a layer's sub-network from a module or a constructor (FrEIA's ``subnet_constructor``)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from flowkit.nn.subnets import conv_subnet

SubnetSpec = nn.Module | Callable[[int, int], nn.Module] | None


def build_subnet(layer: str, subnet: SubnetSpec, in_channels: int, out_channels: int) -> nn.Module:
    """``subnet`` itself if it is a module, ``subnet(in, out)`` if callable, else :func:`conv_subnet`."""
    if subnet is None:
        return conv_subnet(in_channels, out_channels)
    if isinstance(subnet, nn.Module):
        return subnet
    if callable(subnet):
        built = subnet(in_channels, out_channels)
        if not isinstance(built, nn.Module):
            raise TypeError(
                f"{layer}: the subnet constructor must return an nn.Module, got {type(built).__name__}"
            )
        return built
    raise TypeError(
        f"{layer}: subnet must be an nn.Module, a callable (in_channels, out_channels) -> nn.Module, "
        f"or None; got {type(subnet).__name__}"
    )


def run_subnet(layer: str, subnet: nn.Module, inputs: Tensor, out_channels: int, like: Tensor) -> Tensor:
    """Run ``subnet`` and check that its output is ``(B, out_channels, *spatial of like)``."""
    h = subnet(inputs)
    expected = (like.shape[0], out_channels, *like.shape[2:])
    if tuple(h.shape) != expected:
        raise ValueError(
            f"{layer}: its subnet must output shape {expected}, got {tuple(h.shape)}"
        )
    return h
