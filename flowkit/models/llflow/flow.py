"""LLFlow's conditional flow: three Glow-style levels of flowkit layers, each with its own conditioning."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from flowkit.core import Flow, Sequential, zero_logdet
from flowkit.layers import ActNorm, AffineCoupling, AffineInjector, InvConv1x1, Squeeze
from flowkit.memory import MEMORY_MODES, invertible_forward
from flowkit.nn.subnets import conv_subnet

__all__ = ["ConditionalFlow", "FlowStep"]


class FlowStep(Flow):
    r"""One step: ActNorm, an invertible 1x1 convolution, then optionally a conditional affine pair.

    With ``cond_channels > 0`` the step continues with SRFlow/LLFlow's conditional pair: an
    :class:`~flowkit.layers.AffineInjector` (shift and scale of every channel from ``cond`` alone),
    then an :class:`~flowkit.layers.AffineCoupling` of ``x[:, C//2:]`` given ``cat[x[:, :C//2], cond]``.
    Both use interleaved (``"cross"``) shift/scale channels and
    :math:`s = \sigma(\text{raw} + 2) + \epsilon`; their sub-networks are
    :func:`flowkit.nn.conv_subnet` (3x3, 1x1, zero-initialised 3x3). The 1x1 convolution is a full
    matrix (no LU), as in the reference. With ``cond_channels = 0`` the step is only ActNorm and the
    1x1 convolution (a "transition" step) and ignores ``cond``.

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
        super().__init__()
        self.channels = channels
        self.cond_channels = cond_channels
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv1x1(channels, lu=False)
        self.injector: AffineInjector | None = None
        self.coupling: AffineCoupling | None = None
        if cond_channels > 0:
            active = channels - channels // 2
            self.injector = AffineInjector(
                channels, cond_channels, subnet=conv_subnet(cond_channels, 2 * channels, hidden_channels),
                layout="cross", eps=eps,
            )
            self.coupling = AffineCoupling(
                channels, subnet=conv_subnet(channels // 2 + cond_channels, 2 * active, hidden_channels),
                cond_channels=cond_channels, layout="cross", eps=eps,
            )

    def extra_repr(self) -> str:
        return f"{self.channels}, cond_channels={self.cond_channels}"

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        return self.cond_channels > 0

    def _reject_unused_cond(self, cond: Tensor | None) -> None:
        if cond is not None and not self.conditional:
            raise ValueError(
                f"FlowStep({self.channels}) is a transition step (cond_channels=0) but was given a "
                f"conditioning tensor of shape {tuple(cond.shape)}"
            )

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._reject_unused_cond(cond)
        x, logdet = self.actnorm(x)
        x, ld = self.invconv(x)
        logdet = logdet + ld
        if self.injector is not None and self.coupling is not None:
            x, ld = self.injector(x, cond)
            logdet = logdet + ld
            x, ld = self.coupling(x, cond)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._reject_unused_cond(cond)
        logdet = zero_logdet(y)
        if self.injector is not None and self.coupling is not None:
            y, ld = self.coupling.inverse(y, cond)
            logdet = logdet + ld
            y, ld = self.injector.inverse(y, cond)
            logdet = logdet + ld
        y, ld = self.invconv.inverse(y)
        logdet = logdet + ld
        y, ld = self.actnorm.inverse(y)
        return y, logdet + ld


class ConditionalFlow(Flow):
    """LLFlow's flow: 3 levels of ``Squeeze(2)``, transition steps and conditional coupling steps.

    Level ``l`` (0-based) works at resolution ``H / 2^(l+1)`` with ``C = 3 * 4^(l+1)`` channels
    (12, 48, 192) and is the :class:`flowkit.Sequential` ``[Squeeze(2), transition_steps x
    FlowStep(C), steps_per_level x FlowStep(C, cond_channels)]``. There is no factor-out: the
    latent is ``(B, 192, H/8, W/8)``. The numbering of a level's members (0 the squeeze, then the
    steps) is the reference's layer numbering within the level.

    ``cond`` is a sequence of 3 tensors, one per level, each ``(B, cond_channels, H_l, W_l)`` at
    its level's resolution: the caller (:class:`~flowkit.models.LLFlow`) passes the encoder's
    multi-resolution features explicitly.

    ``memory`` says how gradients are computed in training: ``"standard"`` stores every activation;
    ``"invertible"`` runs each level with :func:`flowkit.memory.invertible_forward`, which keeps
    only the levels' outputs and rebuilds each step's input from its output in backward, so the
    flow's activation memory no longer grows with ``steps_per_level`` (at the cost of about one
    inverse and one extra forward of the flow per training step). Results are the same, and the
    gradients agree up to rounding (see :mod:`flowkit.memory`). It can be switched on a built model
    (``model.flow.memory = "invertible"``); it changes neither the parameters nor the state dict.

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
        super().__init__()
        self.memory = memory
        self.cond_channels = cond_channels
        self.in_channels = in_channels
        members = []
        channels = in_channels
        for _ in range(levels):
            channels *= 4
            level = [Squeeze(2)]
            level += [FlowStep(channels) for _ in range(transition_steps)]
            level += [FlowStep(channels, cond_channels, hidden_channels, eps) for _ in range(steps_per_level)]
            members.append(Sequential(*level))
        self.levels = nn.ModuleList(members)
        self.latent_channels = channels

    @property
    def memory(self) -> str:
        """How the forward pass is backpropagated, ``"standard"`` or ``"invertible"``."""
        return self._memory

    @memory.setter
    def memory(self, mode: str) -> None:
        if mode not in MEMORY_MODES:
            raise ValueError(f"ConditionalFlow: memory must be one of {MEMORY_MODES}, got {mode!r}")
        self._memory = mode

    def _check_cond(self, cond: Sequence[Tensor] | None) -> Sequence[Tensor]:
        if cond is None or isinstance(cond, Tensor) or len(cond) != len(self.levels):
            got = "None" if cond is None else (
                f"a single tensor of shape {tuple(cond.shape)}" if isinstance(cond, Tensor)
                else f"{len(cond)} tensors"
            )
            raise ValueError(
                f"ConditionalFlow expects a sequence of {len(self.levels)} conditioning tensors "
                f"(one per level), got {got}"
            )
        return cond

    def forward(  # type: ignore[override]
        self, x: Tensor, cond: Sequence[Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        cond = self._check_cond(cond)
        total = zero_logdet(x)
        invertible = self._memory == "invertible"
        for level, c in zip(self.levels, cond):
            x, logdet = invertible_forward(level, x, c) if invertible else level(x, c)
            total = total + logdet
        return x, total

    def inverse(  # type: ignore[override]
        self, y: Tensor, cond: Sequence[Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        cond = self._check_cond(cond)
        total = zero_logdet(y)
        for level, c in zip(reversed(self.levels), reversed(list(cond))):
            y, logdet = level.inverse(y, c)
            total = total + logdet
        return y, total
