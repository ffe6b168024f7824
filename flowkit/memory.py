r"""Invertible backpropagation: train a chain of flows without storing its activations.

A flow's layers rebuild their inputs from their outputs (Gomez et al., 2017), so
:func:`invertible_forward` keeps only the chain's output; in backward it rebuilds each member's
input, last member first, and differentiates a rerun of that member. Activation memory is one
member's, whatever the depth, for about one more inverse and forward per step. Outputs are
bit-identical; gradients are exact up to the members' inversion error
(:func:`reconstruction_errors`; :ref:`measured-design-choices`). It composes with ``cond``,
ActNorm's initialisation, autocast and DDP.

Members must be deterministic (dropout in training mode is rejected) and keep the number of
elements. No higher-order gradients; batch-norm statistics would update twice per step.

References:
    Gomez, Ren, Urtasun, Grosse, "The Reversible Residual Network: Backpropagation Without Storing
    Activations", NeurIPS 2017, arXiv:1707.04585.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowkit.core import Flow, Sequential, _add_logdet, zero_logdet
from flowkit.nn.normalization import ActivationNorm

__all__ = ["MEMORY_MODES", "InvertibleSequential", "invertible", "invertible_forward", "reconstruction_errors"]

MEMORY_MODES = ("standard", "invertible")
"""The names of the two ways to backpropagate a flow, as configs spell them (e.g. ``LLFlowConfig.memory``)."""


def _members(flow: Flow, cond: Tensor | None) -> list[Flow]:
    if not isinstance(flow, Flow):
        raise TypeError(f"invertible_forward expects a flowkit.Flow, got {type(flow).__name__}")
    if cond is not None and not isinstance(cond, Tensor):
        raise TypeError(
            f"invertible_forward expects cond to be a tensor or None, got {type(cond).__name__}; "
            "give each sub-chain its own tensor (as LLFlow's ConditionalFlow does with WithCond and Pick)"
        )
    if isinstance(flow, Sequential):
        flow._reject_unused_cond(cond)
        return list(flow.flows)
    return [flow]


def _member_cond(member: Flow, cond: Tensor | None) -> Tensor | None:
    return cond if member.conditional else None


def _needs_standard_path(members: Sequence[Flow]) -> bool:
    """Whether an ActNorm must still initialise from data; rejects dropout in training mode."""
    pending = False
    for member in members:
        for module in member.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd) and module.training and module.p > 0:
                raise ValueError(
                    f"invertible backpropagation needs deterministic members, but {type(member).__name__} "
                    f"contains {module!r} in training mode: the rebuilt activations would not match"
                )
            # ActNorm's Python-side mirror of its buffer avoids a device sync once it is known.
            if isinstance(module, ActivationNorm) and module.training and not getattr(module, "_known_initialized", False):
                pending = pending or not bool(module.initialized)
    return pending


def _rebuild_dtype(member: Flow, y: Tensor) -> torch.dtype:
    # Under autocast the activations may be bfloat16 while the parameters are float32: invert in
    # the wider dtype, which loses less than inverting at the activation's precision.
    for param in member.parameters():
        if param.is_floating_point():
            return torch.promote_types(y.dtype, param.dtype)
    return y.dtype


def _rebuild_input(member: Flow, y: Tensor, cond: Tensor | None, device_type: str) -> Tensor:
    dtype = _rebuild_dtype(member, y)
    with torch.autocast(device_type, enabled=False):
        return member.inverse(y.to(dtype), None if cond is None else cond.to(dtype))[0]


class _Handover:
    """Hands a member's rebuilt input to the previous member's node (which runs after it)."""

    def __init__(self) -> None:
        self.tensor: Tensor | None = None

    def take(self, index: int) -> Tensor:
        tensor, self.tensor = self.tensor, None
        if tensor is None:
            raise RuntimeError(f"invertible backpropagation: the output of member {index} was not rebuilt "
                               "before its backward ran")
        return tensor


class _InvertibleStep(torch.autograd.Function):
    # One node per member (not per chain): parameter gradients are accumulated member by member,
    # and DDP sees every parameter as an input of the graph.

    @staticmethod
    def forward(ctx: Any, x: Tensor, cond: Tensor | None, member: Flow, index: int, handover: _Handover,
                last: bool, *params: Tensor) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        device_type = x.device.type
        ctx.device_type = device_type
        ctx.autocast = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type),
                        torch.is_autocast_cache_enabled())
        ctx.member, ctx.index, ctx.handover, ctx.last = member, index, handover, last
        ctx.input_meta = (x.shape, x.dtype)
        y, logdet = member(x, _member_cond(member, cond))
        if y.numel() != x.numel():
            raise ValueError(
                f"invertible backpropagation needs bijective members; member {index} "
                f"({type(member).__name__}) maps {tuple(x.shape)} to {tuple(y.shape)}"
            )
        # Only the chain's last output is stored; every other one is rebuilt by the next member.
        ctx.save_for_backward(y if last else None, cond, *params)
        return y, logdet

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor | None, grad_logdet: Tensor | None) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError("invertible backpropagation does not support higher-order gradients "
                               "(backward with create_graph=True)")
        saved_y, cond, *params = ctx.saved_tensors
        member, index = ctx.member, ctx.index
        y = saved_y if ctx.last else ctx.handover.take(index)
        member_cond = _member_cond(member, cond)
        shape, dtype = ctx.input_meta
        with torch.no_grad():
            x = _rebuild_input(member, y, member_cond, ctx.device_type).to(dtype).detach()
        del y
        if x.shape != shape:
            raise RuntimeError(
                f"invertible backpropagation: member {index} ({type(member).__name__}) rebuilt an input "
                f"of shape {tuple(x.shape)} from its output, expected {tuple(shape)}"
            )
        if index > 0:
            ctx.handover.tensor = x.detach()
        want_x, want_cond = ctx.needs_input_grad[0], member_cond is not None and ctx.needs_input_grad[1]
        inputs = ([x.requires_grad_(True)] if want_x else []) + list(params)
        if want_cond:
            member_cond = member_cond.detach().requires_grad_(True)
            inputs.append(member_cond)
        enabled, autocast_dtype, cache = ctx.autocast
        with torch.enable_grad(), torch.autocast(ctx.device_type, dtype=autocast_dtype, enabled=enabled,
                                                 cache_enabled=cache):
            out, logdet = member(x, member_cond)
        outputs, grads = [], []
        for tensor, grad in ((out, grad_y), (logdet, grad_logdet)):
            if grad is not None and tensor.requires_grad:
                outputs.append(tensor)
                grads.append(grad.to(tensor.dtype))
        found: list[Tensor | None] = [None] * len(inputs)
        if outputs and inputs:
            found = list(torch.autograd.grad(outputs, inputs, grads, allow_unused=True))
        grad_x = found.pop(0) if want_x else None
        grad_cond = found.pop() if want_cond else None
        return (grad_x, grad_cond, None, None, None, None, *found)


def _run_invertible(members: Sequence[Flow], x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
    handover, given, total = _Handover(), x, None
    for index, member in enumerate(members):
        params = [p for p in member.parameters() if p.requires_grad]
        x, logdet = _InvertibleStep.apply(x, cond, member, index, handover, index == len(members) - 1, *params)
        total = _add_logdet(total, logdet, given)
    return x, zero_logdet(given) if total is None else total


def invertible_forward(flow: Flow, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``flow(x, cond)``, backpropagated by inversion instead of through stored activations.

    When autograd is off, nothing requires a gradient, or an ActNorm still has to initialise, it
    simply runs ``flow(x, cond)``. A :class:`~flowkit.Sequential` is rebuilt member by member, any
    other :class:`~flowkit.Flow` as one unit.

    Example:
        >>> import torch, flowkit
        >>> from flowkit.layers import ActNorm, AffineCoupling, InvConv1x1
        >>> from flowkit.memory import invertible_forward
        >>> flow = flowkit.Sequential(*[layer for _ in range(4) for layer in
        ...                             (ActNorm(4), InvConv1x1(4), AffineCoupling(4, cond_channels=2))])
        >>> x, c = torch.randn(8, 4, 6, 6), torch.randn(8, 2, 6, 6)
        >>> with torch.no_grad():
        ...     _ = flow(x, c)                  # ActNorm's data-dependent initialisation
        >>> y, logdet = invertible_forward(flow, x, c)
        >>> torch.equal(y, flow(x, c)[0])
        True
        >>> (y.square().mean() - logdet.mean()).backward()
        >>> grad = flow[2].subnet[-1].weight.grad.clone()
        >>> flow.zero_grad()
        >>> y, logdet = flow(x, c)              # standard backpropagation, for comparison
        >>> (y.square().mean() - logdet.mean()).backward()
        >>> torch.allclose(grad, flow[2].subnet[-1].weight.grad, rtol=1e-4, atol=1e-6)
        True
    """
    members = _members(flow, cond)
    params = [p for p in flow.parameters() if p.requires_grad]
    tracked = torch.is_grad_enabled() and (
        x.requires_grad or (cond is not None and cond.requires_grad) or bool(params)
    )
    if not members or not tracked or _needs_standard_path(members):
        # Sequential's own forward (an InvertibleSequential's forward would come back here).
        return Sequential.forward(flow, x, cond) if isinstance(flow, Sequential) else flow(x, cond)
    return _run_invertible(members, x, cond)


class InvertibleSequential(Sequential):
    """A :class:`~flowkit.Sequential` that backpropagates by inversion (see :mod:`flowkit.memory`).

    Same parameters, state-dict keys and results as the plain chain; slices stay invertible chains.

    Example:
        >>> import torch
        >>> from flowkit.layers import ActNorm, AffineCoupling, InvConv1x1
        >>> from flowkit.memory import InvertibleSequential
        >>> flow = InvertibleSequential(ActNorm(4), InvConv1x1(4), AffineCoupling(4))
        >>> x = torch.randn(8, 4, 5, 5)
        >>> y, logdet = flow(x)        # first call in training mode: ActNorm initialises (standard path)
        >>> y, logdet = flow(x)        # from now on only y is kept for backward
        >>> type(y.grad_fn).__name__
        '_InvertibleStepBackward'
        >>> (y.square().sum() - logdet.sum()).backward()
        >>> flow[0].bias.grad.shape
        torch.Size([1, 4, 1, 1])
    """

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return invertible_forward(self, x, cond)

    def __getitem__(self, index: int | slice) -> Flow:
        item = super().__getitem__(index)
        if isinstance(index, slice) and type(item) is Sequential:
            return InvertibleSequential(*item.flows)
        return item


def invertible(flow: Flow) -> InvertibleSequential:
    """``flow`` as an :class:`InvertibleSequential` that shares its members and parameters.

    A :class:`~flowkit.Sequential` keeps its members and state-dict keys; any other flow becomes
    a one-member chain (keys prefixed ``flows.0.``). Nothing is copied.

    Example:
        >>> import flowkit
        >>> from flowkit.layers import ActNorm, InvConv1x1
        >>> from flowkit.memory import invertible
        >>> chain = flowkit.Sequential(ActNorm(3), InvConv1x1(3))
        >>> fast = invertible(chain)
        >>> fast[1] is chain[1], list(fast.state_dict()) == list(chain.state_dict())
        (True, True)
    """
    if isinstance(flow, InvertibleSequential):
        return flow
    if isinstance(flow, Sequential):
        return InvertibleSequential(*flow.flows)
    if not isinstance(flow, Flow):
        raise TypeError(f"invertible expects a flowkit.Flow, got {type(flow).__name__}")
    return InvertibleSequential(flow)


@torch.no_grad()
def reconstruction_errors(flow: Flow, x: Tensor, cond: Tensor | None = None) -> list[float]:
    """How exactly the backward pass of :func:`invertible_forward` would rebuild each member's input.

    Returns, per member in chain order, ``max |rebuilt - true| / max(1, max |true|)``. Use it to
    check that your own layer inverts accurately enough at your data's scale and dtype.

    Example:
        >>> import torch, flowkit
        >>> from flowkit.layers import AffineCoupling, InvConv1x1
        >>> from flowkit.memory import reconstruction_errors
        >>> flow = flowkit.Sequential(InvConv1x1(4), AffineCoupling(4), InvConv1x1(4))
        >>> errors = reconstruction_errors(flow, torch.randn(2, 4, 3, 3))
        >>> len(errors), max(errors) < 1e-5
        (3, True)
    """
    members = _members(flow, cond)
    inputs = []
    for member in members:
        inputs.append(x)
        x, _ = member(x, _member_cond(member, cond))
    errors = []
    for member, true in zip(reversed(members), reversed(inputs)):
        x = _rebuild_input(member, x, _member_cond(member, cond), x.device.type).to(true.dtype)
        scale = max(1.0, float(true.abs().max()))
        errors.append(float((x.to(torch.float64) - true.to(torch.float64)).abs().max()) / scale)
    return errors[::-1]
