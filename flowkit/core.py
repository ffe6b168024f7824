"""The layer contract, :class:`Flow` (checked by :func:`flowkit.testing.check_flow`), and composition."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["Flow", "Inverse", "Pick", "Sequential", "WithCond"]


class Flow(nn.Module):
    r"""Base class of every invertible layer.

    Direction convention: :meth:`forward` maps **data to latent** (the direction in which a
    density is evaluated, as in Glow, SRFlow, FrEIA and nflows); :meth:`inverse` maps latent to
    data (sampling, enhancement). Both return a pair ``(output, logdet)``:

    * ``forward(x, cond=None) -> (y, logdet)`` with ``logdet = log|det dy/dx|`` per sample,
    * ``inverse(y, cond=None) -> (x, logdet)`` with ``logdet = log|det dx/dy|``, the negative of
      the forward log-determinant at the matching point.

    ``logdet`` has shape ``(B,)`` and is float32 or wider (zeros for a volume-preserving layer). A
    layer that needs ``cond`` and does not get it, or gets the wrong shape, raises a
    :class:`ValueError` saying what it expected. Composites hand ``cond`` only to members whose
    :attr:`conditional` is true, and unconditional layers reject one.

    Subclasses implement :meth:`forward` and :meth:`inverse`. With a latent prior :math:`p_Z`,

    .. math:: \log p_X(x) = \log p_Z(f(x)) + \log \left| \det \frac{\partial f}{\partial x} \right|.

    Example:
        >>> import torch, flowkit
        >>> flow = flowkit.layers.ActNorm(3)
        >>> x = torch.randn(2, 3, 4, 4)
        >>> y, logdet = flow(x)
        >>> x_back, inv_logdet = flow.inverse(y)
        >>> torch.allclose(x, x_back, atol=1e-6), logdet.shape
        (True, torch.Size([2]))
    """

    conditional: bool = True
    """Whether the flow uses ``cond`` (``True`` unless a layer says otherwise)."""

    def __init__(self) -> None:  # no arguments: sizes belong to the subclasses' constructors
        super().__init__()

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data ``x`` to latent ``y``; returns ``(y, logdet)`` with ``logdet = log|det dy/dx|``, shape ``(B,)``."""
        raise NotImplementedError

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map latent ``y`` back to data ``x``; returns ``(x, logdet)``, the negative of :meth:`forward`'s logdet."""
        raise NotImplementedError


def zero_logdet(x: Tensor) -> Tensor:
    """A ``(B,)`` zero log-determinant matching ``x``'s batch, device and (at least float32) dtype."""
    return x.new_zeros(x.shape[0], dtype=torch.promote_types(x.dtype, torch.float32))


def _add_logdet(total: Tensor | None, logdet: Tensor, given: Tensor) -> Tensor:
    """``total + logdet``, ``None`` standing for zeros; a first ``(B,)`` logdet is returned as is."""
    if total is None:
        if logdet.shape == given.shape[:1] and logdet.dtype == torch.promote_types(given.dtype, torch.float32):
            return logdet
        total = zero_logdet(given)
    return total + logdet


class Sequential(Flow):
    """A chain of flows applied in order; the inverse runs them in reverse order.

    Log-determinants add up. ``cond`` goes unchanged to every conditional member (wrap one in
    :class:`WithCond` to transform it); a chain without conditional members rejects a ``cond``.
    A slice gives a sub-chain (a negative step, the inverse sub-chain).

    Args:
        flows: the members, each a :class:`Flow`, in forward order.

    Example:
        >>> import torch, flowkit
        >>> from flowkit.layers import ActNorm, InvConv1x1
        >>> flow = flowkit.Sequential(ActNorm(4), InvConv1x1(4))
        >>> y, logdet = flow(torch.randn(2, 4, 3, 3))
        >>> len(flow), type(flow[1:]).__name__
        (2, 'Sequential')
    """

    def __init__(self, *flows: Flow) -> None:
        super().__init__()
        for index, flow in enumerate(flows):
            if not isinstance(flow, Flow):
                raise TypeError(f"Sequential expects flowkit.Flow members; member {index} is {type(flow).__name__}")
        self.flows = nn.ModuleList(flows)

    def __len__(self) -> int:
        return len(self.flows)

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        return any(flow.conditional for flow in self.flows)

    def __iter__(self) -> Iterator[Flow]:
        return iter(self.flows)

    def __getitem__(self, index: int | slice) -> Flow:
        if isinstance(index, slice):
            members = list(self.flows)[index]
            if index.step is not None and index.step < 0:
                # A reversed slice of a chain is the inverse of the sub-chain, as in FrEIA.
                return Sequential(*(Inverse(flow) for flow in members))
            return Sequential(*members)
        return self.flows[index]

    def _reject_unused_cond(self, cond: Tensor | None) -> None:
        if cond is not None and not self.conditional:
            raise ValueError(
                f"{type(self).__name__} has no conditional member but was given a conditioning tensor of "
                f"shape {tuple(cond.shape)}"
            )

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._reject_unused_cond(cond)
        given, total = x, None
        for flow in self.flows:
            x, logdet = flow(x, cond if flow.conditional else None)
            total = _add_logdet(total, logdet, given)
        return x, zero_logdet(given) if total is None else total

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._reject_unused_cond(cond)
        given, total = y, None
        for flow in reversed(self.flows):
            y, logdet = flow.inverse(y, cond if flow.conditional else None)
            total = _add_logdet(total, logdet, given)
        return y, zero_logdet(given) if total is None else total

    @property
    def inverse_flow(self) -> Inverse:
        """This chain with its directions swapped."""
        return Inverse(self)


class Inverse(Flow):
    """The flow ``flow`` with its directions swapped (parameters shared).

    Use it to put the cheap direction of an autoregressive layer where the flow runs most often.

    Args:
        flow: the flow to turn around (not copied).

    Example:
        >>> import torch, flowkit
        >>> from flowkit.layers import ActNorm
        >>> norm = ActNorm(3)
        >>> flipped = flowkit.Inverse(norm)
        >>> x = torch.randn(1, 3, 2, 2)
        >>> torch.equal(flipped(x)[0], norm.inverse(x)[0])
        True
    """

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        if not isinstance(flow, Flow):
            raise TypeError(f"Inverse expects a flowkit.Flow, got {type(flow).__name__}")
        self.flow = flow

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        return self.flow.conditional

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.flow.inverse(x, cond)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.flow(y, cond)


class WithCond(Flow):
    """Feeds ``cond_net(cond)`` instead of ``cond`` to ``flow``.

    Use it to give a sub-flow a conditioning at its own resolution (a multi-scale flow's levels),
    or to share one conditioning encoder between layers.

    Args:
        flow: the flow that receives the transformed conditioning.
        cond_net: any module (a pooling, a small CNN), applied in both directions and trained with the flow.

    Example:
        >>> import torch, flowkit
        >>> from torch import nn
        >>> from flowkit.layers import AffineInjector, Squeeze
        >>> level = flowkit.Sequential(Squeeze(), AffineInjector(12, cond_channels=3))
        >>> flow = flowkit.WithCond(level, nn.AvgPool2d(2))
        >>> y, logdet = flow(torch.randn(2, 3, 8, 8), cond=torch.randn(2, 3, 8, 8))
        >>> y.shape
        torch.Size([2, 12, 4, 4])
    """

    def __init__(self, flow: Flow, cond_net: nn.Module) -> None:
        super().__init__()
        self.flow = flow
        self.cond_net = cond_net

    def _cond(self, cond: Tensor | None) -> Tensor:
        if cond is None:
            raise ValueError(f"WithCond({type(self.cond_net).__name__}) expects a conditioning tensor, got None")
        return self.cond_net(cond)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.flow(x, self._cond(cond))

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.flow.inverse(y, self._cond(cond))


class Pick(nn.Module):
    """A ``cond_net`` for :class:`WithCond` that picks item ``index`` of a sequence of conditionings.

    Use it when a model's ``cond`` is a list with one conditioning per level (LLFlow's encoder):
    ``WithCond(level, Pick(l))`` hands level ``l`` its own tensor.

    Example:
        >>> import torch, flowkit
        >>> from flowkit.layers import AffineInjector
        >>> flow = flowkit.Sequential(*(flowkit.WithCond(AffineInjector(2, c), flowkit.Pick(i))
        ...                             for i, c in enumerate((1, 3))))
        >>> cond = [torch.randn(4, 1, 5, 5), torch.randn(4, 3, 5, 5)]
        >>> flow(torch.randn(4, 2, 5, 5), cond)[0].shape
        torch.Size([4, 2, 5, 5])
    """

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def extra_repr(self) -> str:
        return str(self.index)

    def forward(self, cond: Sequence[Tensor]) -> Tensor:
        if isinstance(cond, Tensor) or not isinstance(cond, Sequence) or len(cond) <= self.index:
            got = f"a tensor of shape {tuple(cond.shape)}" if isinstance(cond, Tensor) else (
                f"{len(cond)} items" if isinstance(cond, Sequence) else type(cond).__name__)
            raise ValueError(
                f"Pick({self.index}) expects a list or tuple of at least {self.index + 1} conditioning "
                f"tensors (one per level), got {got}"
            )
        return cond[self.index]
