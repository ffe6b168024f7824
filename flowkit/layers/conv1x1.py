"""Invertible 1x1 convolution (Glow): a learned channel mixing, plain or LU-parametrised."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._validation import check_channels, check_no_cond
from flowkit.core import Flow

__all__ = ["InvConv1x1"]


class InvConv1x1(Flow):
    r"""Invertible 1x1 convolution ``y[:, i] = sum_j W[i, j] x[:, j]`` at every position.

    .. math:: y_p = W x_p, \qquad \log|\det J| = H W \log|\det W|

    at each of the ``H * W`` positions. ``W`` starts as a random orthogonal matrix; the inverse is
    computed in float64 and cached in eval mode. Use it between couplings to mix all channels
    (Glow); a :class:`~flowkit.layers.Permute` only reorders.

    Args:
        channels: number of channels ``C``, at least 1.
        lu: learn ``W = P L (U + diag(sign * exp(log_s)))`` (Glow's LU form; ``P`` and ``sign``
            fixed), so that ``log|det W| = sum(log_s)``. ``False`` learns the full matrix ``weight``.

    Example:
        >>> import torch
        >>> from flowkit.layers import InvConv1x1
        >>> mix = InvConv1x1(4, lu=True)
        >>> x = torch.randn(2, 4, 3, 3)
        >>> y, logdet = mix(x)
        >>> torch.allclose(mix.inverse(y)[0], x, atol=1e-5)
        True
    """

    conditional = False

    def __init__(self, channels: int, *, lu: bool = False) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"InvConv1x1 expects a positive channel count, got {channels}")
        self.channels = channels
        self.lu = lu
        q, _ = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))
        if lu:
            self.register_buffer("permutation", torch.empty(channels, channels))
            self.register_buffer("sign_s", torch.empty(channels))
            self.lower = nn.Parameter(torch.empty(channels, channels))
            self.upper = nn.Parameter(torch.empty(channels, channels))
            self.log_s = nn.Parameter(torch.empty(channels))
            self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
            self.set_matrix(q)
        else:
            self.weight = nn.Parameter(q.to(torch.float32))
        self._inverse_cache: tuple[tuple, tuple[Tensor, Tensor]] | None = None

    def extra_repr(self) -> str:
        return f"{self.channels}, lu={self.lu}"

    @torch.no_grad()
    def set_matrix(self, matrix: Tensor) -> None:
        """Set the layer to multiply by the invertible ``(C, C)`` ``matrix`` (decomposed if ``lu``)."""
        if tuple(matrix.shape) != (self.channels, self.channels):
            raise ValueError(
                f"InvConv1x1 expects a ({self.channels}, {self.channels}) matrix, "
                f"got {tuple(matrix.shape)}"
            )
        matrix = matrix.to(torch.float64)
        if not self.lu:
            if int(torch.linalg.matrix_rank(matrix)) < self.channels:  # SVD-based: robust to rounding
                raise ValueError("InvConv1x1.set_matrix: the matrix is singular (rank below its size)")
            self.weight.copy_(matrix)
            return
        p, lower, upper = torch.linalg.lu(matrix)
        diag = torch.diagonal(upper)
        if bool((diag == 0).any()):
            raise ValueError("InvConv1x1.set_matrix: the matrix is singular (zero pivot in its LU)")
        self.permutation.copy_(p)
        self.sign_s.copy_(torch.sign(diag))
        self.log_s.copy_(torch.log(diag.abs()))
        self.lower.copy_(torch.tril(lower, -1))
        self.upper.copy_(torch.triu(upper, 1))

    def matrix(self, dtype: torch.dtype | None = None) -> Tensor:
        """The ``(C, C)`` matrix ``W`` (differentiable), in ``dtype`` (default: the parameters')."""
        if not self.lu:
            return self.weight if dtype is None else self.weight.to(dtype)
        dtype = dtype or self.log_s.dtype
        eye = torch.eye(self.channels, dtype=dtype, device=self.log_s.device)
        mask = self.lower_mask.to(dtype)
        lower = self.lower.to(dtype) * mask + eye
        upper = self.upper.to(dtype) * mask.T + torch.diag(self.sign_s.to(dtype) * torch.exp(self.log_s.to(dtype)))
        return self.permutation.to(dtype) @ lower @ upper

    def log_abs_det(self) -> Tensor:
        """``log|det W|`` as a float64 scalar (differentiable)."""
        if self.lu:
            return self.log_s.to(torch.float64).sum()
        return torch.linalg.slogdet(self.weight.to(torch.float64))[1]

    def _cache_key(self) -> tuple:
        return tuple((p._version, p.data_ptr()) for p in self.parameters())

    def inverse_matrix(self) -> Tensor:
        """``W^{-1}`` in float64. Cached in eval mode without autograd, until a parameter changes."""
        return self._inverse_parts()[0]

    def _inverse_parts(self) -> tuple[Tensor, Tensor]:
        # W^{-1} and log|det W|, cached together: at inference every inverse call needs both, and
        # recomputing them (an LU factorisation each) costs more than the 1x1 convolution itself.
        if torch.compiler.is_compiling():
            # The cache key reads data pointers, which compiled graphs cannot; recompute instead.
            return torch.linalg.inv(self.matrix(torch.float64)), self.log_abs_det()
        cacheable = not self.training and not torch.is_grad_enabled()
        key = self._cache_key()
        if cacheable and self._inverse_cache is not None and self._inverse_cache[0] == key:
            return self._inverse_cache[1]
        w64 = self.matrix(torch.float64)
        self._check_invertible(w64.detach())
        parts = torch.linalg.inv(w64), self.log_abs_det()
        if cacheable:
            self._inverse_cache = (key, parts)
        return parts

    def _check_invertible(self, w64: Tensor) -> None:
        sign, logabs = torch.linalg.slogdet(w64)
        # Singular in practice: |det W| is negligible next to the scale of W's entries.
        scale = w64.abs().max().clamp_min(1e-300)
        if float(sign) == 0.0 or float(logabs - self.channels * torch.log(scale)) < -30 * 2.302585:
            raise ValueError(
                f"InvConv1x1({self.channels}) cannot invert its weight: it is singular "
                f"(log|det W| = {float(logabs):.4g}); re-initialise or regularise the layer"
            )

    def train(self, mode: bool = True) -> InvConv1x1:
        self._inverse_cache = None
        return super().train(mode)

    @staticmethod
    def _mix(x: Tensor, w: Tensor) -> Tensor:
        w = w.to(x.dtype)
        if x.dim() == 2:
            return x @ w.T
        return F.conv2d(x, w.view(*w.shape, 1, 1)) if x.dim() == 4 else torch.einsum("ij,bj...->bi...", w, x)

    def _logdet(self, x: Tensor, log_abs_det: Tensor | None = None) -> Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        positions = math.prod(x.shape[2:])   # not x[0, 0].numel(): an empty batch has no x[0]
        if log_abs_det is None:
            log_abs_det = self.log_abs_det()
        return (log_abs_det * positions).to(dtype).expand(x.shape[0])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_cond("InvConv1x1", cond)
        check_channels("InvConv1x1", x, self.channels)
        return self._mix(x, self.matrix()), self._logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_cond("InvConv1x1", cond)
        check_channels("InvConv1x1", y, self.channels)
        inv, log_abs_det = self._inverse_parts()
        # Cast through the parameter dtype first, as the reference does (inverse(W.double()).float()).
        inv = inv.to(self.log_s.dtype if self.lu else self.weight.dtype)
        return self._mix(y, inv), -self._logdet(y, log_abs_det)
