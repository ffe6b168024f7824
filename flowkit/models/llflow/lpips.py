r"""LPIPS, the learned perceptual image patch similarity (Zhang et al., CVPR 2018), AlexNet v0.1.

.. math::

    d(x, y) = \sum_{l=1}^{5} \frac{1}{H_l W_l} \sum_{h, w}
        \big\| w_l \odot \big(\hat f^l_{hw}(x) - \hat f^l_{hw}(y)\big) \big\|_2^2,
    \qquad \hat f^l_{hw} = \frac{f^l_{hw}}{\|f^l_{hw}\|_2 + 10^{-10}},

with :math:`f^l` AlexNet's activations after the ReLU of convolution :math:`l` and :math:`w_l`
the v0.1 per-channel weights. The shipped weights (torchvision's AlexNet, BSD-3-Clause, and the
LPIPS v0.1 heads, BSD-2-Clause; notices in ``weights/``) reproduce the published distances.

References:
    Zhang, Isola, Efros, Shechtman, Wang. "The Unreasonable Effectiveness of Deep Features as a
    Perceptual Metric." CVPR 2018, arXiv:1801.03924.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from flowkit.models.llflow._weights import load_checked

__all__ = ["LPIPS"]

WEIGHTS = Path(__file__).parent / "weights" / "lpips_alex_v0.1.safetensors"
WEIGHTS_SHA256 = "20c431552e74d3054b9482611fba4c5a5df439dcf49603334abcdc7b64421781"

# AlexNet's convolutions: (in, out, kernel, stride, padding); a 3/2 max-pool follows the first two.
_ALEXNET = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
# Their indices in torchvision's ``alexnet.features`` (the weight file's keys).
_FEATURE_INDEX = (0, 3, 6, 8, 10)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10


class LPIPS(nn.Module):
    """LPIPS distance with the AlexNet backbone and v0.1 linear heads (the published ``net='alex'``).

    ``LPIPS.pretrained()`` loads the shipped weights; ``LPIPS()`` has random ones, for loading
    your own. The parameters are frozen, but the distance is differentiable in its inputs, so it
    can serve as a loss.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.lpips import LPIPS
        >>> metric = LPIPS.pretrained()
        >>> x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        >>> d = metric(x, x.flip(-1))
        >>> d.shape, bool((d > 0).all()), metric(x, x).abs().max().item()
        (torch.Size([2]), True, 0.0)
    """

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, stride=s, padding=p) for i, o, k, s, p in _ALEXNET)
        self.heads = nn.ModuleList(nn.Conv2d(conv.out_channels, 1, 1, bias=False) for conv in self.convs)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    @classmethod
    def pretrained(cls) -> LPIPS:
        """The published LPIPS-alex v0.1 weights, shipped in the package, in eval mode.

        Example:
            >>> from flowkit.models.llflow.lpips import LPIPS
            >>> LPIPS.pretrained().heads[0].weight.shape
            torch.Size([1, 64, 1, 1])
        """
        tensors, _ = load_checked(WEIGHTS, WEIGHTS_SHA256)
        model = cls()
        model.load_published(tensors)
        return model.eval()

    def load_published(self, state: dict[str, Tensor]) -> None:
        """Load weights in the published layout: ``features.{0,3,6,8,10}.{weight,bias}``, ``lin{0..4}.weight``.

        Example:
            >>> from flowkit.models.llflow.lpips import LPIPS
            >>> LPIPS().load_published({})  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: LPIPS weights are missing ['features.0.bias', ...]
        """
        expected = {f"features.{i}.{kind}" for i in _FEATURE_INDEX for kind in ("weight", "bias")}
        expected |= {f"lin{i}.weight" for i in range(5)}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"LPIPS weights are missing {missing}" + (f" and have unexpected {unexpected}"
                                                                         if unexpected else ""))
        mapped = {}
        for layer, index in enumerate(_FEATURE_INDEX):
            mapped[f"convs.{layer}.weight"] = state[f"features.{index}.weight"]
            mapped[f"convs.{layer}.bias"] = state[f"features.{index}.bias"]
            mapped[f"heads.{layer}.weight"] = state[f"lin{layer}.weight"]
        self.load_state_dict(mapped)

    def _features(self, x: Tensor) -> list[Tensor]:
        out, features = (x - self.shift) / self.scale, []
        for layer, conv in enumerate(self.convs):
            if layer in (1, 2):
                out = nn.functional.max_pool2d(out, 3, stride=2)
            out = torch.relu(conv(out))
            features.append(out / (out.pow(2).sum(1, keepdim=True).sqrt() + _EPS))
        return features

    def forward(self, x: Tensor, y: Tensor, *, normalize: bool = True) -> Tensor:
        """The distance between ``x`` and ``y``, one value per pair.

        ``x`` and ``y`` are RGB images ``(B, 3, H, W)``, at least 32x32, in ``[0, 1]`` (or in
        ``[-1, 1]`` with ``normalize=False``, the LPIPS package's). Returns shape ``(B,)``.
        """
        for name, image in (("x", x), ("y", y)):
            if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3:
                shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                raise ValueError(f"LPIPS: {name} must be an RGB batch (B, 3, H, W), got {shape}")
        if x.shape != y.shape:
            raise ValueError(f"LPIPS: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[2:]) < 32:
            raise ValueError(f"LPIPS needs images of at least 32x32 pixels, got {tuple(x.shape[2:])}")
        weight = self.convs[0].weight
        x, y = x.to(weight), y.to(weight)
        if normalize:
            x, y = 2 * x - 1, 2 * y - 1
        total = torch.zeros(x.shape[0], dtype=weight.dtype, device=weight.device)
        for head, fx, fy in zip(self.heads, self._features(x), self._features(y)):
            total = total + head((fx - fy) ** 2).mean((1, 2, 3))
        return total
